# -*- test-case-name: tests.test_filters_auth -*-
"""
Authentication: HTTP Basic against an htpasswd file, and forward-auth.

C{basic_auth} checks the C{Authorization: Basic} credentials of each
request against an htpasswd-style file of C{user:hash} lines, whose hashes
must be bcrypt (C{htpasswd -B}; C{$2y$}, C{$2b$} or C{$2a$}): the older
htpasswd formats (MD5-crypt, SHA-1, crypt) are too quick to guess and are
refused when the file is read.  A request without valid credentials gets
401 with C{WWW-Authenticate: Basic realm="..."}.  The file is read again
when it changes.  bcrypt is slow on purpose (tens of milliseconds a
check), so the checks run in the reactor's thread pool when it has one,
and a successful check is remembered (by a digest of the credentials and
the hash), so that a client's later requests cost a dictionary lookup.
The credentials are not passed on to the backend unless
C{keep_authorization} is set; C{user_header} names a field that tells the
backend who the user is (whatever a client sends in that field is
removed first).

C{forward_auth} asks an auth service: for each request it sends a GET to
C{url} with the request's fields and C{X-Forwarded-Method},
C{X-Forwarded-Proto}, C{X-Forwarded-Host}, C{X-Forwarded-Uri} and
C{X-Forwarded-For} saying what the request is.  A 2xx answer lets the
request through, with the fields named in C{copy_headers} copied from the
answer (replacing whatever the client sent under those names); any other
answer goes back to the client as it is (a 401 with its
C{WWW-Authenticate}, a 302 to a login page).  An auth service that fails
or does not answer within C{timeout} gets the client a 503.  The proxy
keeps no cookies of the auth service's answers: each question carries
only what its own client sent, so that no client can be taken for
another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from twistproxy.components import factory_repr
from twistproxy.config import ConfigError, key_path
from twistproxy.filters.chain import client_ip
from twistproxy.http.answers import Answer
from twistproxy.filters.files import WatchedFile, read_lines
from twistproxy.config.schema import setting
from twistproxy.filters.options import (
    field_name, flag, http_url, needs, number, read_options, text, tokens,
)
from twistproxy.interfaces import IClosable, IFilterFactory, IRequestFilter

_BCRYPT_PREFIXES = ("$2y$", "$2b$", "$2a$")
# A whole bcrypt hash: version, cost, 22 characters of salt and 31 of hash.
_BCRYPT = re.compile(r"\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}\Z")
# Successful checks remembered, at most.
_REMEMBERED = 4096
# The most of an auth service's answer body passed back to a client.
MAX_AUTH_BODY = 65536
_HOP_BY_HOP = frozenset([
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"content-length", b"host",
])


def _htpasswd_line(line: str, where: str) -> Tuple[str, bytes]:
    user, sep, hashed = line.partition(":")
    if not sep or not user:
        raise ConfigError(where, "must be user:hash")
    if not hashed.startswith(_BCRYPT_PREFIXES):
        raise ConfigError(where, f"the hash of {user!r} is not bcrypt (create it "
                                 f"with htpasswd -B)")
    if not _BCRYPT.match(hashed):
        raise ConfigError(where, f"the bcrypt hash of {user!r} is malformed")
    return user, hashed.encode("ascii")


def read_htpasswd(name: str) -> Dict[str, bytes]:
    """
    The users and bcrypt hashes of the htpasswd file C{name}.

    @raises ConfigError: naming the line of a bad entry.
    """
    return dict(read_lines(name, _htpasswd_line))


def _credentials(exchange) -> Optional[Tuple[str, str]]:
    value = exchange.header("Authorization")
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


@implementer(IRequestFilter)
class BasicAuthFilter:
    """
    Lets through the requests with valid Basic credentials.
    """

    def __init__(self, users: WatchedFile, realm: str, reactor=None,
                 keep_authorization: bool = False, user_header: str = ""):
        import bcrypt

        self._bcrypt = bcrypt
        self._users = users
        self._reactor = reactor
        realm = realm.replace("\\", "\\\\").replace('"', '\\"')
        self._refusal = Answer(401, [(b"WWW-Authenticate",
                                      b'Basic realm="%s", charset="UTF-8"' % realm.encode())],
                               reason="auth_required")
        self._keep = keep_authorization
        self._user_header = user_header.lower().encode("ascii")
        self._user_field = user_header.encode("ascii")
        self._good: "OrderedDict[bytes, None]" = OrderedDict()

    def filter_request(self, exchange):
        found = _credentials(exchange)
        if found is None:
            return self._refusal
        user, password = found
        hashed = self._users.value.get(user)
        if hashed is None:
            return self._refusal
        key = hashlib.sha256(b"%s\0%s\0%s" % (
            user.encode("utf-8"), password.encode("utf-8"), hashed)).digest()
        if key in self._good:
            self._good.move_to_end(key)
            self._passed(exchange, user)
            return None
        pool = getattr(self._reactor, "getThreadPool", None)
        if pool is None:
            return self._checked(self._check(password, hashed), exchange, user, key)
        from twisted.internet.threads import deferToThreadPool

        d = deferToThreadPool(self._reactor, pool(), self._check, password, hashed)
        return d.addCallback(self._checked, exchange, user, key)

    def _check(self, password: str, hashed: bytes) -> bool:
        return self._bcrypt.checkpw(password.encode("utf-8"), hashed)

    def _checked(self, ok: bool, exchange, user: str, key: bytes) -> Optional[Answer]:
        if not ok:
            return self._refusal
        self._good[key] = None
        if len(self._good) > _REMEMBERED:
            self._good.popitem(last=False)
        self._passed(exchange, user)
        return None

    def _passed(self, exchange, user: str) -> None:
        drop = set()
        if not self._keep:
            drop.add(b"authorization")
        if self._user_header:
            drop.add(self._user_header)
        if drop:
            fields = [f for f in exchange.request.headers if f[0].lower() not in drop]
            if self._user_header:
                fields.append((self._user_field, user.encode("utf-8")))
            exchange.request.headers = fields


@dataclass(frozen=True)
class BasicAuthOptions:
    """
    The options of the C{basic_auth} filter.
    """

    htpasswd: str = setting(check=text(), required=needs("basic_auth"))
    realm: str = setting("twistproxy", check=text())
    reload_interval: float = setting(5.0, check=number())
    keep_authorization: bool = setting(False, check=flag)
    user_header: str = setting("", check=field_name)


@implementer(IPlugin, IFilterFactory)
class BasicAuthFactory:
    name = "basic_auth"
    help = "HTTP Basic authentication against an htpasswd file of bcrypt hashes."

    def fromConfig(self, reactor, options: Mapping[str, Any], path: str) -> BasicAuthFilter:
        settings = read_options(BasicAuthOptions, options, path, self.name)
        try:
            import bcrypt  # noqa: F401
        except ImportError:
            raise ConfigError(path, "basic_auth needs the bcrypt package: "
                                    "pip install 'twistproxy[auth]'") from None
        users = WatchedFile(reactor, settings.htpasswd, read_htpasswd, settings.reload_interval,
                            key_path(path, "htpasswd"), "htpasswd file")
        return BasicAuthFilter(users, settings.realm, reactor, settings.keep_authorization,
                               settings.user_header)

    __repr__ = factory_repr


@implementer(IRequestFilter, IClosable)
class ForwardAuthFilter:
    """
    Asks an auth service about each request.
    """

    log = Logger()

    def __init__(self, reactor, url: str, copy_headers: List[str], timeout: float,
                 agent: Any = None):
        """
        @param agent: What makes the requests: an L{IAgent
            <twisted.web.iweb.IAgent>} (L{treq.testing.RequestTraversalAgent}
            in tests).  By default, an agent over a persistent connection
            pool on C{reactor}.
        """
        from twistproxy.quiet import QuietPool, cookieless_client

        self._reactor = reactor
        self._url = url
        self._copy = [n.encode("ascii") for n in copy_headers]
        self._timeout = timeout
        self._pool = None
        if agent is None:
            from twisted.web.client import Agent

            self._pool = QuietPool(reactor, persistent=True)
            agent = Agent(reactor, pool=self._pool)
        # No cookie kept: a session cookie the service gave one client
        # would vouch for the next one.
        self._client = cookieless_client(agent)

    def filter_request(self, exchange) -> "Deferred[Optional[Answer]]":
        from twisted.web.http_headers import Headers

        headers = Headers()
        for name, value in exchange.request.headers:
            if name.lower() not in _HOP_BY_HOP:
                headers.addRawHeader(name, value)
        req = exchange.request
        for name, value in ((b"X-Forwarded-Method", req.method),
                            (b"X-Forwarded-Proto", exchange.downstream.proto),
                            (b"X-Forwarded-Host", req.host),
                            (b"X-Forwarded-Uri", req.target),
                            (b"X-Forwarded-For", client_ip(exchange).encode("ascii"))):
            headers.setRawHeaders(name, [value])
        d = self._client.request("GET", self._url, headers=headers, allow_redirects=False,
                                 unbuffered=True, reactor=self._reactor)
        d.addCallback(self._answered, exchange)
        d.addTimeout(self._timeout, self._reactor)
        d.addErrback(self._failed)
        return d

    def _answered(self, response, exchange) -> "Deferred[Optional[Answer]]":
        from twistproxy.quiet import read_body

        # Read even a 2xx answer's body, so that the connection can serve
        # the next question.
        done = read_body(response, MAX_AUTH_BODY, "auth service answer body")
        return done.addCallback(lambda body: self._decide(response, body, exchange))

    def _decide(self, response, body: bytes, exchange) -> Optional[Answer]:
        if 200 <= response.code < 300:
            if self._copy:
                copied = [(name, value) for name in self._copy
                          for value in response.headers.getRawHeaders(name, [])]
                drop = {n.lower() for n in self._copy}
                exchange.request.headers = [f for f in exchange.request.headers
                                     if f[0].lower() not in drop] + copied
            return None
        # treq's gzip decoding leaves an empty Content-Encoding behind when
        # the answer had none: not the service's, not passed on.
        fields = [(name, value) for name, values in response.headers.getAllRawHeaders()
                  if name.lower() not in _HOP_BY_HOP for value in values
                  if value or name.lower() != b"content-encoding"]
        return Answer(response.code, fields, body, reason="auth_refused")

    def _failed(self, failure) -> Answer:
        self.log.warn("forward-auth to {url} failed: {error}", url=self._url,
                      error=failure.getErrorMessage())
        return Answer(503, reason="auth_unavailable")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.closeCachedConnections()


@dataclass(frozen=True)
class ForwardAuthOptions:
    """
    The options of the C{forward_auth} filter.
    """

    url: str = setting(check=http_url, required=needs("forward_auth"))
    copy_headers: List[str] = setting(check=tokens("header name"), factory=list)
    timeout: float = setting(5.0, check=number())


@implementer(IPlugin, IFilterFactory)
class ForwardAuthFactory:
    name = "forward_auth"
    help = "Ask an auth service about each request; 2xx lets it through."

    def fromConfig(self, reactor, options: Mapping[str, Any], path: str) -> ForwardAuthFilter:
        settings = read_options(ForwardAuthOptions, options, path, self.name)
        return ForwardAuthFilter(reactor, settings.url, settings.copy_headers, settings.timeout)

    __repr__ = factory_repr
