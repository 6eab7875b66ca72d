# -*- test-case-name: tests.test_acme -*-
"""
The HTTP-01 answers (RFC 8555 8.3) an order is waiting to have fetched.

The CA asks for C{http://NAME/.well-known/acme-challenge/TOKEN} on port
80; every HTTP listener of the proxy (L{HTTPServerFactory.challenges
<twistproxy.http.listener.HTTPServerFactory>}) looks the path up here
before redirecting or routing the request, and answers the key
authorization itself.  Nothing here needs the C{acme} library, so that the
listeners carry it whether or not the C{acme} extra is installed.
"""

from __future__ import annotations

from typing import Dict, Optional

# Where HTTP-01 answers are asked for.
CHALLENGE_PREFIX = b"/.well-known/acme-challenge/"


class Challenges:
    """
    The HTTP-01 answers being asked for: token to key authorization.
    The plain HTTP listeners look requests for
    C{/.well-known/acme-challenge/TOKEN} up here before routing them.
    """

    def __init__(self) -> None:
        self._answers: Dict[bytes, bytes] = {}

    def add(self, token: bytes, answer: bytes) -> None:
        self._answers[token] = answer

    def discard(self, token: bytes) -> None:
        self._answers.pop(token, None)

    def answer(self, path: bytes) -> Optional[bytes]:
        """
        The body to answer a request for C{path} with, or C{None} when it
        is not a pending challenge's.
        """
        if not path.startswith(CHALLENGE_PREFIX):
            return None
        return self._answers.get(path[len(CHALLENGE_PREFIX):])
