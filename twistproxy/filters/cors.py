# -*- test-case-name: tests.test_filters_cors -*-
"""
CORS (cross-origin resource sharing, the Fetch standard): which web pages
of other origins may call the routes behind the proxy from a browser.

A preflight request (C{OPTIONS} with C{Origin} and
C{Access-Control-Request-Method}) is answered by the proxy itself: 204
with the C{Access-Control-Allow-*} fields when the origin, the method and
every requested header are allowed, 403 otherwise; it never reaches a
backend.  An actual request from an allowed origin gets
C{Access-Control-Allow-Origin} (and C{-Allow-Credentials},
C{-Expose-Headers}) on its response, replacing whatever the backend said
in those fields; the response to another origin loses those fields, so
that a backend echoing every origin cannot widen the list.
C{origins = ["*"]} allows every origin; with
C{credentials = true} the origin is then echoed, since browsers refuse
C{*} with credentials.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, FrozenSet, List, Mapping, Optional, Tuple

from twisted.plugin import IPlugin
from zope.interface import implementer

from twistproxy.components import factory_repr
from twistproxy.config import ConfigError
from twistproxy.http.answers import Answer
from twistproxy.http.headers import with_fields
from twistproxy.http.sinks import SinkWrapper
from twistproxy.config.schema import setting
from twistproxy.filters.options import count, flag, needs, read_options, texts, tokens
from twistproxy.interfaces import IFilterFactory, IRequestFilter, IResponseFilter

_OWN = frozenset([b"access-control-allow-origin", b"access-control-allow-credentials",
                  b"access-control-expose-headers"])
_SAFE_METHODS = ("GET", "HEAD", "POST")


class _CORSFields(SinkWrapper):
    __slots__ = ("_fields",)

    def __init__(self, sink, fields):
        super().__init__(sink)
        self._fields = fields

    def response_head(self, exchange, resp, has_body: bool, extra=None) -> None:
        fields = [f for f in resp.headers if f[0].lower() not in _OWN] + self._fields
        self.sink.response_head(exchange, with_fields(resp, fields), has_body, extra)


@implementer(IRequestFilter, IResponseFilter)
class CORSFilter:
    """
    Answers preflights and marks the responses to allowed origins.
    """

    def __init__(self, origins: FrozenSet[str], methods: List[str], headers: List[str],
                 expose: List[str], credentials: bool, max_age: int):
        self._any = "*" in origins
        self._origins = origins
        self._methods = frozenset(m.upper() for m in methods)
        self._allow_methods = ", ".join(methods).encode("ascii")
        self._headers = frozenset(h.lower() for h in headers)
        self._credentials = credentials
        self._common: List[Tuple[bytes, bytes]] = []
        if credentials:
            self._common.append((b"Access-Control-Allow-Credentials", b"true"))
        self._expose = [(b"Access-Control-Expose-Headers", ", ".join(expose).encode("ascii"))] \
            if expose else []
        self._max_age = (b"Access-Control-Max-Age", b"%d" % max_age)
        self._refused = Answer(403, reason="cors_refused")

    def _allow_origin(self, origin: str) -> Optional[List[Tuple[bytes, bytes]]]:
        """
        The fields that allow C{origin}, or C{None} when it is not allowed.
        """
        if origin in self._origins:
            return [(b"Access-Control-Allow-Origin", origin.encode("latin-1")),
                    (b"Vary", b"Origin")] + self._common
        if self._any:
            if self._credentials:
                return [(b"Access-Control-Allow-Origin", origin.encode("latin-1")),
                        (b"Vary", b"Origin")] + self._common
            return [(b"Access-Control-Allow-Origin", b"*")]
        return None

    def filter_request(self, exchange) -> Optional[Answer]:
        if exchange.request.method != b"OPTIONS":
            return None
        origin = exchange.header("Origin")
        wanted = exchange.header("Access-Control-Request-Method")
        if origin is None or wanted is None:
            # Not a preflight: an ordinary OPTIONS request.
            return None
        allowed = self._allow_origin(origin)
        if allowed is None or wanted not in self._methods and wanted not in _SAFE_METHODS:
            return self._refused
        asked = [h.strip() for h in (exchange.header("Access-Control-Request-Headers") or "").split(",")
                 if h.strip()]
        if any(h.lower() not in self._headers for h in asked):
            return self._refused
        fields = allowed + [(b"Access-Control-Allow-Methods", self._allow_methods),
                            self._max_age]
        if asked:
            fields.append((b"Access-Control-Allow-Headers", ", ".join(asked).encode("latin-1")))
        return Answer(204, fields, b"", reason="cors_preflight")

    def wrap_response(self, exchange, sink):
        origin = exchange.header("Origin")
        if origin is None:
            return None
        allowed = self._allow_origin(origin)
        if allowed is None:
            return _CORSFields(sink, [])
        return _CORSFields(sink, allowed + self._expose)


def _origins(value: object, path: str) -> List[str]:
    origins = texts()(value, path)
    for i, origin in enumerate(origins):
        if origin != "*" and ("://" not in origin or origin.endswith("/")):
            raise ConfigError(f"{path}[{i}]",
                              f"must be an origin such as 'https://app.example' (no "
                              f"path) or '*', not {origin!r}")
    return origins


def _methods(value: object, path: str) -> List[str]:
    # An empty list means the default, as leaving the option out does.
    return tokens("method")(value, path) or list(_SAFE_METHODS)


@dataclass(frozen=True)
class CORSOptions:
    """
    The options of the C{cors} filter.
    """

    origins: List[str] = setting(check=_origins, required=needs("cors"))
    methods: List[str] = setting(check=_methods, factory=lambda: list(_SAFE_METHODS))
    headers: List[str] = setting(check=tokens("header name"), factory=list)
    expose_headers: List[str] = setting(check=tokens("header name"), factory=list)
    credentials: bool = setting(False, check=flag)
    max_age: int = setting(600, check=count(0))


@implementer(IPlugin, IFilterFactory)
class CORSFactory:
    name = "cors"
    help = "Answer CORS preflights and allow configured origins."

    def fromConfig(self, reactor, options: Mapping[str, Any], path: str) -> CORSFilter:
        settings = read_options(CORSOptions, options, path, self.name)
        return CORSFilter(frozenset(settings.origins), settings.methods, settings.headers,
                          settings.expose_headers, settings.credentials, settings.max_age)

    __repr__ = factory_repr
