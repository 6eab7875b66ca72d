# -*- test-case-name: tests.test_health -*-
"""
Connections the proxy opens on its own behalf, without log lines.

A Twisted factory logs "Starting factory" and "Stopping factory" whenever
it starts and stops, unless its C{noisy} attribute is false.  That suits a
listener, started once; it does not suit the short connections the proxy
makes by itself, one or more per health check, per forward-auth
connection, per question the workers' master asks a worker: two lines each,
every few seconds per backend, drowning what the log is for.  Their
factories here are the same with C{noisy = False}.

The treq clients over them keep no cookie (L{cookieless_client}), and read
an answer's body with a bound (L{read_body}).

This module imports Twisted's web client: import it where that is
imported anyway (the plugin listing keeps away from it).
"""

from __future__ import annotations

from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, List

from twisted.internet.defer import Deferred
from twisted.web.client import HTTPConnectionPool


class QuietPool(HTTPConnectionPool):
    """
    An L{HTTPConnectionPool} whose connections' factory does not log.
    """

    class _factory(HTTPConnectionPool._factory):  # type: ignore[name-defined]
        noisy = False


def cookieless_client(agent: Any) -> Any:
    """
    A treq C{HTTPClient} over C{agent} that keeps no cookie: treq would
    otherwise keep the cookies of every answer and send them with later
    requests, so that what a service gave one client would vouch for the
    next.
    """
    from treq.client import HTTPClient

    return HTTPClient(agent, cookiejar=CookieJar(DefaultCookiePolicy(allowed_domains=())))


def read_body(response: Any, limit: int, what: str) -> "Deferred[bytes]":
    """
    The body of a treq C{response}, read whole (so that its connection can
    serve the next request), failing with L{ValueError} past C{limit}
    bytes.

    @param what: The body, for the error, e.g. C{"JWKS"}.
    """
    import treq

    pieces: List[bytes] = []
    size = [0]

    def collect(data: bytes) -> None:
        size[0] += len(data)
        if size[0] > limit:
            raise ValueError(f"{what} over {limit} bytes")
        pieces.append(data)

    return treq.collect(response, collect).addCallback(lambda _: b"".join(pieces))
