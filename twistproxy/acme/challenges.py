# -*- test-case-name: tests.test_acme -*-
"""
The challenge answers an order is waiting to have checked, and which
challenge type each name is validated by.

HTTP-01 (RFC 8555 8.3): the CA asks for
C{http://NAME/.well-known/acme-challenge/TOKEN} on port 80; every HTTP
listener of the proxy (L{HTTPServerFactory.challenges
<twistproxy.http.listener.HTTPServerFactory>}) looks the path up here
before redirecting or routing the request, and answers the key
authorization itself.

TLS-ALPN-01 (RFC 8737): the CA opens a TLS connection to port 443 with the
name in SNI, offering only the ALPN protocol C{acme-tls/1}, and expects a
self-signed certificate for the name carrying the SHA-256 digest of the
key authorization in a critical C{acmeIdentifier} extension.  The TLS
listeners (L{twistproxy.tls}) look the name up here (L{Challenges.
certificate}) during such handshakes only; other clients are served as
before.

With workers (L{twistproxy.workers}) the master orders and renews the
certificates, while the CA's requests reach whichever worker accepts
them: the answers are then files in a directory that the master and its
workers share (L{ChallengeFiles}), each written whole before the CA is
told to check, so that every worker, one started since included, finds
it.

Nothing here needs the C{acme} library, so that the listeners carry it
whether or not the C{acme} extra is installed.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
from typing import Dict, Optional, Tuple

from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier
from twisted.internet.interfaces import IReactorTime

from twistproxy.acme.store import new_key, self_signed, write_atomically

# Where HTTP-01 answers are asked for.
CHALLENGE_PREFIX = b"/.well-known/acme-challenge/"

# What a token (base64url, RFC 8555 8.1) or a name may be to become part of
# a file name: nothing that could leave the directory.
_TOKEN = re.compile(rb"[A-Za-z0-9_-]{1,256}\Z")
_NAME = re.compile(r"[a-z0-9_-][a-z0-9._-]{0,252}\Z")

# id-pe-acmeIdentifier (RFC 8737 6.1).
ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")


def tls_alpn_certificate(name: str, key_authorization: str,
                         now: datetime.datetime) -> Tuple[x509.Certificate, object]:
    """
    The self-signed certificate (and its new key) that answers a
    TLS-ALPN-01 challenge for C{name}: C{name} its only subjectAltName,
    the SHA-256 digest of C{key_authorization} in a critical
    C{acmeIdentifier} extension (RFC 8737 3).
    """
    key = new_key("ecdsa-p256")
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    # The extension's value is the DER OCTET STRING of the digest.
    cert = self_signed([name], key, now, (x509.UnrecognizedExtension(
        ACME_IDENTIFIER, b"\x04" + bytes([len(digest)]) + digest), True))
    return cert, key


class Challenges:
    """
    The answers being asked for: HTTP-01 tokens to their key
    authorizations, and TLS-ALPN-01 names to their challenge certificates.
    The plain HTTP listeners look requests for
    C{/.well-known/acme-challenge/TOKEN} up here before routing them; the
    TLS listeners look up the names of handshakes that offer
    C{acme-tls/1}.
    """

    def __init__(self) -> None:
        self._answers: Dict[bytes, bytes] = {}
        self._certificates: Dict[str, Tuple[x509.Certificate, object]] = {}

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

    def add_certificate(self, name: str, key_authorization: str,
                        now: datetime.datetime) -> None:
        """
        Answer TLS-ALPN-01 handshakes for C{name} (lower-case) with a
        challenge certificate for C{key_authorization}.
        """
        self._certificates[name] = tls_alpn_certificate(name, key_authorization, now)

    def discard_certificate(self, name: str) -> None:
        self._certificates.pop(name, None)

    def certificate(self, name: str) -> Optional[Tuple[x509.Certificate, object]]:
        """
        The challenge certificate and key for C{name} (lower-case, as
        L{twistproxy.tls.ChallengeLookup} asks), or C{None}.
        """
        return self._certificates.get(name)


class ChallengeFiles:
    """
    The answers of L{Challenges}, kept as files in C{directory}: what one
    process adds, any process with the same directory answers (the
    workers' master orders, its workers answer).  A file is written whole
    before C{add} returns, and read when the CA asks, which is rare.
    """

    def __init__(self, directory: str, clock: IReactorTime) -> None:
        """
        @param clock: The wall clock that dates the TLS-ALPN-01 challenge
            certificates.
        """
        self.directory = directory
        self._clock = clock
        # A worker makes each challenge certificate once: (name, key
        # authorization) -> certificate and key.
        self._made: Dict[Tuple[str, str], Tuple[x509.Certificate, object]] = {}

    def _file(self, kind: str, what: str) -> str:
        return os.path.join(self.directory, f"{kind}.{what}")

    def _write(self, kind: str, what: str, data: bytes) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        write_atomically(self._file(kind, what), data)

    def _read(self, kind: str, what: str) -> Optional[bytes]:
        try:
            with open(self._file(kind, what), "rb") as f:
                return f.read()
        except OSError:
            return None

    def _remove(self, kind: str, what: str) -> None:
        try:
            os.unlink(self._file(kind, what))
        except FileNotFoundError:
            pass

    def add(self, token: bytes, answer: bytes) -> None:
        if not _TOKEN.match(token):
            raise ValueError(f"not an ACME token: {token!r}")
        self._write("http-01", token.decode("ascii"), answer)

    def discard(self, token: bytes) -> None:
        if _TOKEN.match(token):
            self._remove("http-01", token.decode("ascii"))

    def answer(self, path: bytes) -> Optional[bytes]:
        """
        The body to answer a request for C{path} with, or C{None} when it
        is not a pending challenge's.
        """
        token = path[len(CHALLENGE_PREFIX):]
        if not path.startswith(CHALLENGE_PREFIX) or not _TOKEN.match(token):
            return None
        return self._read("http-01", token.decode("ascii"))

    def add_certificate(self, name: str, key_authorization: str,
                        now: datetime.datetime) -> None:
        """
        Have every process answer TLS-ALPN-01 handshakes for C{name}
        (lower-case) with a challenge certificate for
        C{key_authorization}, which each makes itself.
        """
        if not _NAME.match(name):
            raise ValueError(f"not a name to answer TLS-ALPN-01 for: {name!r}")
        self._write("tls-alpn-01", name, key_authorization.encode("ascii"))

    def discard_certificate(self, name: str) -> None:
        if _NAME.match(name):
            self._remove("tls-alpn-01", name)

    def certificate(self, name: str) -> Optional[Tuple[x509.Certificate, object]]:
        """
        The challenge certificate and key for C{name} (lower-case), or
        C{None}.
        """
        stored = self._read("tls-alpn-01", name) if _NAME.match(name) else None
        if stored is None:
            return None
        key_authorization = stored.decode("ascii", "replace")
        made = self._made.get((name, key_authorization))
        if made is None:
            now = datetime.datetime.fromtimestamp(self._clock.seconds(), datetime.timezone.utc)
            made = tls_alpn_certificate(name, key_authorization, now)
            # Only the latest of each name: challenges come and go.
            self._made = {k: v for k, v in self._made.items() if k[0] != name}
            self._made[name, key_authorization] = made
        return made
