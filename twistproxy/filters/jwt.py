# -*- test-case-name: tests.test_filters_jwt -*-
"""
JWT validation (RFC 7519): the C{jwt} request filter.

A request must carry a JSON Web Token, in C{Authorization: Bearer} or in
a named cookie, signed with one of the configured public keys by an
asymmetric algorithm (RS256, ES256, EdDSA ... never C{none}, never an HMAC),
with the algorithm the key declares (or, for a key that declares none, one
of its type and curve): so a token signed with HS256 and the RSA public key
as its secret is refused.  Its C{iss}, C{aud}, C{exp} and C{nbf} are
checked, times with a leeway, on the proxy's clock.  Chosen claims go to
the backend as fields, replacing whatever the client sent under those
names.  A request without a token gets 401 with C{WWW-Authenticate:
Bearer}; one with a bad token 401 with C{Bearer error="invalid_token"}.

Keys come from files (JWK, JWKS or PEM, read again when they change) or
from a JWKS URL, fetched with treq on the proxy's reactor and cached: a
token naming a C{kid} the cache does not hold makes it fetch again (at
most once per C{jwks_min_refresh} seconds, the requests waiting on one
fetch), the keys are fetched again in the background once C{jwks_max_age}
has passed, and while the JWKS endpoint fails the keys last fetched are
used.

The JOSE work is joserfc's: it is maintained, typed, has no dependency but
cryptography (which twistproxy has already), and checks that a key fits the
algorithm it is used with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from twistproxy.components import factory_repr
from twistproxy.config import ConfigError, key_path
from twistproxy.config.checks import wrong_type
from twistproxy.config.schema import setting
from twistproxy.filters.files import WatchedFile
from twistproxy.filters.options import (
    field_name, http_url, number, read_options, text, texts,
)
from twistproxy.http.answers import Answer
from twistproxy.interfaces import IClosable, IFilterFactory, IRequestFilter

# The algorithms accepted: asymmetric signatures only (no none, no HMAC).
ALGORITHMS = frozenset(["RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                        "ES256", "ES384", "ES512", "EdDSA", "Ed25519"])
# The most of a JWKS document read.
MAX_JWKS_BODY = 1 << 20
LOG = Logger()
_NO_TOKEN = Answer(401, [(b"WWW-Authenticate", b"Bearer")], reason="jwt_missing")
_BAD_TOKEN = Answer(401, [(b"WWW-Authenticate", b'Bearer error="invalid_token"')],
                    reason="jwt_invalid")


def read_keys(data: str, where: str) -> List[Any]:
    """
    The public keys of C{data}, a JWKS, a JWK or a PEM public key: the
    asymmetric ones meant for signatures.  Keys of other types (C{oct}
    secrets, types joserfc does not know) and those whose C{use} is C{enc}
    are left out.

    @raises ConfigError: when C{data} is none of those.
    """
    from joserfc.jwk import import_key

    try:
        if not data.lstrip().startswith("{"):
            return [_pem_key(data)]
        doc = json.loads(data)
        items = doc["keys"] if "keys" in doc else [doc]
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(where, f"is not a JWKS, JWK or PEM public key: {e}") from None
    found = []
    for item in items:
        if not isinstance(item, dict) or item.get("kty") not in ("RSA", "EC", "OKP") \
                or item.get("use") not in (None, "sig"):
            continue
        try:
            found.append(import_key(item, item["kty"]))
        except Exception as e:
            LOG.warn("{where}: key {kid} left out: {error}", where=where,
                     kid=item.get("kid"), error=e)
    return found


def _pem_key(data: str) -> Any:
    from joserfc.jwk import import_key

    for kind in ("RSA", "EC", "OKP"):
        try:
            return import_key(data, kind)
        except Exception:
            pass
    raise ValueError("not a PEM public key of RSA, EC or OKP")


def _read_file(name: str) -> List[Any]:
    with open(name, encoding="utf-8") as f:
        keys = read_keys(f.read(), name)
    if not keys:
        raise ConfigError(name, "holds no public signature keys")
    return keys


class FileKeys:
    """
    Keys read from files, read again when they change.
    """

    def __init__(self, files: Sequence[WatchedFile]):
        self._files = files

    def find(self, kid: Optional[str]) -> List[Any]:
        keys = [k for f in self._files for k in f.value]
        return [k for k in keys if kid is None or k.kid == kid]

    def close(self) -> None:
        pass


class JWKSKeys:
    """
    Keys fetched from a JWKS URL and cached.
    """

    log = Logger()

    def __init__(self, reactor, url: str, max_age: float, min_refresh: float,
                 timeout: float, client: Any = None):
        """
        @param client: What fetches the JWKS: a treq C{HTTPClient} (a
            L{treq.testing.StubTreq} in tests).  By default, one over a
            persistent connection pool on C{reactor}.
        """
        self._reactor = reactor
        self._url = url
        self._max_age = max_age
        self._min_refresh = min_refresh
        self._timeout = timeout
        self._pool = None
        if client is None:
            from twisted.web.client import Agent

            from twistproxy.quiet import QuietPool, cookieless_client

            self._pool = QuietPool(reactor, persistent=True)
            client = cookieless_client(Agent(reactor, pool=self._pool))
        self._client = client
        self._keys: List[Any] = []
        self._fetched: Optional[float] = None
        self._tried: Optional[float] = None
        self._fetching = False
        self._waiting: List[Deferred] = []

    def _matching(self, kid: Optional[str]) -> List[Any]:
        return [k for k in self._keys if kid is None or k.kid == kid]

    def find(self, kid: Optional[str]):
        """
        The keys named C{kid} (all, for C{None}), or a Deferred firing with
        them when they must be fetched first.
        """
        now = self._reactor.seconds()
        found = self._matching(kid)
        may_fetch = self._tried is None or now - self._tried >= self._min_refresh
        if found:
            if may_fetch and now - (self._fetched or 0) >= self._max_age:
                self._fetch()
            return found
        if not (self._fetching or may_fetch):
            return found
        done: Deferred = Deferred()
        done.addCallback(lambda _: self._matching(kid))
        self._waiting.append(done)
        self._fetch()
        return done

    def _fetch(self) -> None:
        if self._fetching:
            return
        self._fetching = True
        self._tried = self._reactor.seconds()
        d = self._client.get(self._url, reactor=self._reactor)
        d.addCallback(self._read)
        d.addTimeout(self._timeout, self._reactor)
        d.addCallback(self._got)
        d.addErrback(self._failed)
        d.addBoth(self._fetched_all)

    def _fetched_all(self, _) -> None:
        self._fetching = False
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def _read(self, response) -> Deferred:
        if response.code != 200:
            raise ValueError(f"status {response.code}")
        from twistproxy.quiet import read_body

        return read_body(response, MAX_JWKS_BODY, "JWKS")

    def _got(self, body: bytes) -> None:
        keys = read_keys(body.decode("utf-8", "replace"), self._url)
        if not keys:
            raise ConfigError(self._url, "holds no usable keys")
        self._keys = keys
        self._fetched = self._reactor.seconds()

    def _failed(self, failure) -> None:
        self.log.warn("fetching the JWKS {url} failed: {error}; keeping the {n} keys "
                      "fetched before", url=self._url, error=failure.getErrorMessage(),
                      n=len(self._keys))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.closeCachedConnections()


def _claim_value(value: Any) -> Optional[bytes]:
    # A claim as a field value: strings as they are, arrays of strings
    # joined with commas, anything else as JSON; None when it cannot be sent.
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = ", ".join(value)
    if not isinstance(value, str):
        value = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if any(c in value for c in "\r\n\0"):
        return None
    return value.encode("utf-8")


@implementer(IRequestFilter, IClosable)
class JWTFilter:
    """
    Lets through the requests with a valid JWT.
    """

    log = Logger()

    def __init__(self, reactor, keys: Any, algorithms: Sequence[str], issuer: str = "",
                 audience: Sequence[str] = (), leeway: float = 0.0, cookie: str = "",
                 claim_headers: Optional[Mapping[str, str]] = None):
        from joserfc import jwt
        from joserfc.errors import JoseError
        from joserfc.jws import extract_compact

        self._decode = jwt.decode
        self._extract = extract_compact
        self._errors = (JoseError, ValueError, UnicodeError)
        self._keys = keys
        self._algorithms = frozenset(algorithms)
        self._cookie = cookie
        claims: Dict[str, Any] = {"exp": {"essential": True}}
        if issuer:
            claims["iss"] = {"essential": True, "value": issuer}
        if audience:
            claims["aud"] = {"essential": True, "values": list(audience)}
        self._claims = jwt.JWTClaimsRegistry(now=lambda: int(reactor.seconds()),
                                         leeway=int(leeway), **claims)
        self._headers = [(claim, name.encode("ascii"))
                         for claim, name in (claim_headers or {}).items()]
        self._drop = {name.lower() for _, name in self._headers}

    def _token(self, exchange) -> Optional[str]:
        value = exchange.header("Authorization")
        if value is not None:
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        if self._cookie:
            return exchange.cookie(self._cookie) or None
        return None

    def filter_request(self, exchange):
        token = self._token(exchange)
        if token is None:
            return _NO_TOKEN
        try:
            header = self._extract(token.encode("ascii")).headers()
        except self._errors:
            return _BAD_TOKEN
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in self._algorithms or not isinstance(kid, (str, type(None))):
            return _BAD_TOKEN
        found = self._keys.find(kid)
        if isinstance(found, Deferred):
            return found.addCallback(lambda keys: self._verify(exchange, token, alg, keys))
        return self._verify(exchange, token, alg, found)

    def _verify(self, exchange, token: str, alg: str, keys: List[Any]) -> Optional[Answer]:
        # joserfc refuses a key whose type, curve or declared alg does not
        # fit alg.
        for key in keys:
            try:
                claims = self._decode(token, key, algorithms=[alg]).claims
            except self._errors:
                continue
            if not isinstance(claims, dict):
                return _BAD_TOKEN
            try:
                self._claims.validate(claims)
            except self._errors + (TypeError,) as e:
                self.log.debug("JWT refused: {error}", error=e)
                return _BAD_TOKEN
            self._passed(exchange, claims)
            return None
        return _BAD_TOKEN

    def _passed(self, exchange, claims: Mapping[str, Any]) -> None:
        if not self._headers:
            return
        fields = [f for f in exchange.headers if f[0].lower() not in self._drop]
        for claim, name in self._headers:
            value = _claim_value(claims[claim]) if claim in claims else None
            if value is not None:
                fields.append((name, value))
        exchange.replace_headers(fields)

    def close(self) -> None:
        self._keys.close()


def _algorithms(value: object, path: str) -> List[str]:
    names = texts()(value, path)
    for i, name in enumerate(names):
        if name not in ALGORITHMS:
            raise ConfigError(f"{path}[{i}]", f"{name!r} is not an asymmetric signature "
                              f"algorithm (one of {', '.join(sorted(ALGORITHMS))})")
    return names


def _claim_headers(value: object, path: str) -> Dict[str, str]:
    if not isinstance(value, dict):
        raise wrong_type(path, "a table of claim = field name", value)
    for claim, name in value.items():
        field_name(name, key_path(path, claim))
        if not claim:
            raise ConfigError(key_path(path, claim), "must name a claim")
    return dict(value)


@dataclass(frozen=True)
class JWTOptions:
    """
    The options of the C{jwt} filter.
    """

    jwks_url: str = setting("", check=http_url)
    key_files: List[str] = setting(check=texts(), factory=list)
    algorithms: List[str] = setting(check=_algorithms,
                                    factory=lambda: ["RS256", "ES256", "EdDSA"])
    issuer: str = setting("", check=text())
    audience: List[str] = setting(check=texts(), factory=list)
    leeway: float = setting(30.0, check=number(above=False))
    cookie: str = setting("", check=text())
    claim_headers: Dict[str, str] = setting(check=_claim_headers, factory=dict)
    jwks_max_age: float = setting(300.0, check=number())
    jwks_min_refresh: float = setting(30.0, check=number(above=False))
    timeout: float = setting(5.0, check=number())
    reload_interval: float = setting(5.0, check=number())


@implementer(IPlugin, IFilterFactory)
class JWTFactory:
    name = "jwt"
    help = "Require a valid JWT (Bearer or cookie), keys from a JWKS URL or files."

    def fromConfig(self, reactor, options: Mapping[str, Any], path: str,
                   client: Any = None) -> JWTFilter:
        """
        @param client: What fetches the JWKS, for tests (see L{JWKSKeys}).
        """
        s = read_options(JWTOptions, options, path, self.name)
        if bool(s.jwks_url) == bool(s.key_files):
            raise ConfigError(path, "the jwt filter needs either jwks_url or key_files")
        try:
            import joserfc  # noqa: F401
        except ImportError:
            raise ConfigError(path, "the jwt filter needs the joserfc package: "
                                    "pip install 'twistproxy[jwt]'") from None
        keys: Any
        if s.jwks_url:
            keys = JWKSKeys(reactor, s.jwks_url, s.jwks_max_age, s.jwks_min_refresh,
                            s.timeout, client)
        else:
            keys = FileKeys([WatchedFile(reactor, name, _read_file, s.reload_interval,
                                         key_path(path, "key_files"), "JWT key file")
                             for name in s.key_files])
        return JWTFilter(reactor, keys, s.algorithms, s.issuer, s.audience, s.leeway,
                         s.cookie, s.claim_headers)

    __repr__ = factory_repr
