# -*- test-case-name: tests.test_routing -*-
"""
Routing: which route a request takes, and what a route changes or answers.

The configuration lists L{Route}s in order; a L{Router} returns the first
one that matches a request.  A route matches when all of its conditions
hold:

  - host: the route lists no hosts (any host), or the request's host is one
    of them, or it matches one of its wildcards.  C{'*.example.com'} matches
    any name below C{example.com} (C{'a.example.com'},
    C{'a.b.example.com'}) but not C{'example.com'} itself;

  - path: the request path, normalised (L{twistproxy.http.paths}: dot
    segments resolved, slashes merged, unreserved characters decoded,
    C{%2F} read as C{/}) and without query string, starts with the route's
    C{path_prefix}, so C{'/'} matches every path.  The prefix is compared as
    a string: C{'/api'} matches C{'/api/items'} and also C{'/apiary'}; write
    C{'/api/'} to mean the directory only;

  - method: the route lists no methods (any method), or the request's method
    is one of them;

  - and whatever else the route asks (docs/routing.rst): an exact path
    (C{path_exact}), regular expressions searched in the normalised path
    and in the host (C{path_regex}, C{host_regex}), request header fields,
    query parameters and cookies (each present, absent, equal to a value
    or containing a match of a regular expression), the client's
    network (the address derived through the listener's trusted proxies)
    and the listener that took the request (its codec's C{listener}).

A route sends the request to its upstream group, or to one of several by
weight (a L{Splitter}), with the path rewritten by a L{PathRewriter} when it
asks, or answers it itself (a L{DirectAnswer}: a redirect or a fixed
response).

The router runs for every request, so each route is compiled once into sets,
suffix tuples and compiled regular expressions, and a match is a short loop
of cheap tests; the further conditions are one L{_Conditions} per route that
has any, tried last.  This module knows nothing of HTTP parsing or of
Twisted.
"""

from __future__ import annotations

import bisect
import hashlib
import random
import re
from typing import (
    Any, Callable, Dict, FrozenSet, Generic, List, Match, Optional, Pattern, Sequence, Tuple,
    TypeVar,
)
from urllib.parse import parse_qsl, quote, unquote_plus

from twistproxy.config import QueryRules, Route, RouteMatch
from twistproxy.config.values import PLACEHOLDER
from twistproxy.net import NetworkSet


def _value_test(match: RouteMatch) -> Callable[[Optional[str]], bool]:
    # What a header, parameter or cookie value (None: absent) must be.
    if not match.present:
        return lambda value: value is None
    if match.regex:
        search = re.compile(match.regex).search
        return lambda value: value is not None and search(value) is not None
    if match.value:
        wanted = match.value
        return lambda value: value == wanted
    return lambda value: value is not None


def _query_value(exchange: Any, name: str) -> Optional[str]:
    # The first value of the query parameter, percent-decoded.
    target = exchange.path
    mark = target.find("?")
    if mark < 0:
        return None
    for key, value in parse_qsl(target[mark + 1:], keep_blank_values=True):
        if key == name:
            return value
    return None


class _Conditions:
    """
    The conditions of a route beyond host, prefix and method, each a
    C{test(host, path, exchange)}; all must hold.
    """

    __slots__ = ("_tests",)

    def __init__(self, route: Route, client: Callable[[Any], str]) -> None:
        tests: List[Callable[[str, str, Any], bool]] = []
        if route.path_exact:
            exact = route.path_exact
            tests.append(lambda host, path, exchange: path == exact)
        for regex, on_host in ((route.path_regex, False), (route.host_regex, True)):
            if regex:
                tests.append(_searcher(re.compile(regex), on_host))
        for matches, lookup in ((route.headers, _header), (route.query, _query_value),
                                (route.cookies, _cookie)):
            for match in matches:
                tests.append(_field_test(lookup, match))
        if route.networks:
            networks = NetworkSet(route.networks)
            tests.append(lambda host, path, exchange: client(exchange) in networks)
        if route.listeners:
            listeners = frozenset(route.listeners)
            tests.append(lambda host, path, exchange: exchange.downstream.listener in listeners)
        self._tests = tuple(tests)

    def __call__(self, host: str, path: str, exchange: Any) -> bool:
        for test in self._tests:
            if not test(host, path, exchange):
                return False
        return True


def _searcher(pattern: Pattern[str], on_host: bool) -> Callable[[str, str, Any], bool]:
    search = pattern.search
    if on_host:
        return lambda host, path, exchange: search(host) is not None
    return lambda host, path, exchange: search(path) is not None


def _header(exchange: Any, name: str) -> Optional[str]:
    return exchange.header(name)  # type: ignore[no-any-return]


def _cookie(exchange: Any, name: str) -> Optional[str]:
    return exchange.cookie(name)  # type: ignore[no-any-return]


def _field_test(lookup: Callable[[Any, str], Optional[str]],
                match: RouteMatch) -> Callable[[str, str, Any], bool]:
    name = match.name
    test = _value_test(match)
    return lambda host, path, exchange: test(lookup(exchange, name))


def _peer(exchange: Any) -> str:
    return exchange.client_address  # type: ignore[no-any-return]


# One compiled route: (any_host, exact_hosts, wildcard_suffixes, path_prefix,
# methods, conditions or None, what a match returns).  A plain tuple unpacks
# faster than attribute lookups.  The prefix and the methods are bytes, as
# the parser gives a request's path and method: nothing is decoded for them.
_Compiled = Tuple[
    bool, FrozenSet[str], Tuple[str, ...], bytes, FrozenSet[bytes], Optional[_Conditions], Any
]


def _utf8(text: str) -> bytes:
    # For a request's path and method (ASCII), the same bytes as ASCII;
    # and two strings compare (equal, prefix, suffix) as their UTF-8 do.
    return text.encode("utf-8", "surrogatepass")


def _compile(route: Route, client: Callable[[Any], str], value: Any) -> _Compiled:
    exact = set()
    suffixes = []
    for pattern in route.hosts:
        pattern = pattern.lower()
        if pattern.startswith("*."):
            # Keep the dot: '*.example.com' -> '.example.com', so that
            # 'badexample.com' does not match.
            suffixes.append(pattern[1:])
        else:
            exact.add(pattern)
    return (
        not route.hosts,
        frozenset(exact),
        tuple(suffixes),
        _utf8(route.path_prefix),
        frozenset(_utf8(m) for m in route.methods),
        _Conditions(route, client) if route.has_conditions else None,
        value,
    )


class Router:
    """
    Chooses the route of each request: the first that matches wins.

    @ivar routes: The routes, in the order they are tried.
    """

    __slots__ = ("routes", "_compiled")

    def __init__(self, routes: Sequence[Route],
                 client: Callable[[Any], str] = _peer,
                 values: Optional[Sequence[Any]] = None) -> None:
        """
        @param client: Gives a request's client address, for C{networks}
            (the forwarder's goes through the trusted proxies).
        @param values: What a match returns for each route, in order, in
            place of the route itself (the forwarder's prepared routes: no
            second lookup per request).
        """
        self.routes: Tuple[Route, ...] = tuple(routes)
        self._compiled: List[_Compiled] = [
            _compile(r, client, v)
            for r, v in zip(self.routes, self.routes if values is None else values)]

    def match(self, host: str, path: str, method: str, exchange: Any = None) -> Optional[Route]:
        """
        Find the route of a request.

        @param host: The requested host, lower-cased, without port.
        @param path: The request path, normalised, without query string.
        @param method: The request method, e.g. C{'GET'}.
        @param exchange: The request (an L{twistproxy.interfaces.IRequestView}),
            which routes with header, query, cookie or network conditions
            look at.
        @return: The first matching route (or its value, given C{values}),
            or C{None} when none matches (which the proxy answers with 404
            Not Found).
        """
        return self.match_request(_utf8(path), _utf8(method), exchange, host)

    def match_request(self, path: bytes, method: bytes, exchange: Any,
                      host: Optional[str] = None) -> Any:
        """
        L{match} for a request as parsed: its path and method as bytes, its
        host (C{None}: read from C{exchange.host}) and the path as a string
        made only when a route asks for them, so that a request routed by
        prefix and method alone decodes nothing.
        """
        # The path as a string, made once and only for further conditions.
        text = None
        for any_host, exact, suffixes, prefix, methods, more, value in self._compiled:
            if methods and method not in methods:
                continue
            if not path.startswith(prefix):
                continue
            if not any_host:
                if host is None:
                    host = exchange.host
                if host not in exact:
                    for suffix in suffixes:
                        # At least one label must precede the suffix.
                        if len(host) > len(suffix) and host.endswith(suffix):
                            break
                    else:
                        continue
            if more is None:
                return value
            if host is None:
                host = exchange.host
            if text is None:
                text = path.decode("utf-8", "surrogatepass")
            if more(host, text, exchange):
                return value
        return None

    def __repr__(self) -> str:
        return f"<Router {len(self.routes)} routes>"


class DirectAnswer:
    """
    What a route with a C{redirect} or a C{respond} table answers, made
    for each request from the route's settings, compiled once.

    @ivar reason: What the access log says of it: C{'redirect'} or
        C{'fixed_response'}.
    """

    __slots__ = ("status", "reason", "_fields", "_body", "_to", "_regex")

    def __init__(self, route: Route) -> None:
        self._to = ""
        self._regex: Optional[Pattern[str]] = None
        self._body: Optional[bytes] = None
        redirect, fixed = route.redirect, route.respond
        if redirect is not None:
            self.status, self.reason, self._to = redirect.status, "redirect", redirect.to
            self._fields: Tuple[Tuple[bytes, bytes], ...] = ()
            if route.path_regex:
                self._regex = re.compile(route.path_regex)
        elif fixed is not None:
            self.status, self.reason = fixed.status, "fixed_response"
            fields = [(n.encode("ascii"), v.encode("latin-1")) for n, v in fixed.headers]
            self._body = fixed.body.encode("utf-8")
            if self._body and not any(n.lower() == b"content-type" for n, _ in fields):
                fields.append((b"Content-Type", b"text/plain; charset=utf-8"))
            self._fields = tuple(fields)
        else:
            raise ValueError(f"route {route.name!r} has no redirect or respond table")

    def make(self, host: str, path: str, target: str) -> Tuple[
            int, Tuple[Tuple[bytes, bytes], ...], Optional[bytes]]:
        """
        The answer to one request: C{(status, fields, body)}, a body of
        C{None} being the proxy's short page for the status.

        @param host: The requested host, lower-cased, without port.
        @param path: The normalised path.
        @param target: The request target as received (for its query).
        """
        if not self._to:
            return self.status, self._fields, self._body
        values = {"host": host, "path": path, "query": _query(target)}
        found = self._regex.search(path) if self._regex is not None else None
        location = _fill(self._to, found, values)
        return self.status, ((b"Location", location.encode("latin-1")),), None


def _query(target: str) -> str:
    # '?' and the query string, or nothing.
    mark = target.find("?")
    return target[mark:] if mark >= 0 else ""


def _fill(template: str, found: Optional[Match[str]], values: Dict[str, str]) -> str:
    """
    C{template} with its placeholders replaced: from C{values}, then the
    captures of C{found} (C{{1}}, C{{name}}; empty when they took part in
    no match).
    """
    if found is not None:
        values = dict(values)
        values.update((str(i), g or "") for i, g in enumerate(found.groups(), 1))
        values.update((k, g or "") for k, g in found.groupdict().items())
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), ""), template)


class PathRewriter:
    """
    The target a route sends upstream.  Its path, when the route rewrites
    the path, is the normalised path (under every C{escaped_slashes}: the
    one the route matched) with the route's C{strip_prefix} removed, then
    its C{rewrite} applied, then its C{add_prefix} put before it;
    otherwise the path as received.  Its query is the one received, edited
    by the route's C{rewrite_query} when it has one.  The client's request
    (and so the access log's request line) keeps the original target.
    """

    __slots__ = ("_path", "_strip", "_regex", "_to", "_add", "_query")

    def __init__(self, route: Route) -> None:
        self._path = route.rewrites_path
        self._strip = route.strip_prefix
        self._add = route.add_prefix
        self._regex = self._to = None
        if route.rewrite is not None:
            self._regex = re.compile(route.rewrite.regex)
            self._to = route.rewrite.to
        self._query = QueryEditor(route.rewrite_query) if route.rewrite_query else None

    def __call__(self, path: bytes, target: bytes) -> bytes:
        """
        @param path: The normalised path.
        @param target: The request target as received.
        @return: The target to send upstream.
        """
        text = target.decode("ascii")
        if not text.startswith("/"):
            # OPTIONS *: no path to rewrite.
            return target
        query = _query(text)
        if self._path:
            text = self._rewrite(path.decode("ascii"))
        elif query:
            text = text[:-len(query)]
        if self._query is not None:
            query = self._query(query)
        return (text + query).encode("ascii")

    def _rewrite(self, text: str) -> str:
        if self._strip and text.startswith(self._strip):
            text = text[len(self._strip):]
            if not text.startswith("/"):
                text = "/" + text
        if self._regex is not None:
            to = self._to
            text = self._regex.sub(lambda m: _fill(to, m, {}), text)
            if not text.startswith("/"):
                text = "/" + text
        if self._add:
            text = self._add.rstrip("/") + text
        return text


def _encode(name: str, value: str) -> str:
    return f"{quote(name, safe='')}={quote(value, safe='')}"


class QueryEditor:
    """
    A route's C{rewrite_query}: remove, then set, then add query
    parameters.  Parameters are compared by their percent-decoded names
    (C{+} read as a space); those left alone keep the client's spelling,
    and the values set or added are percent-encoded.
    """

    __slots__ = ("_remove", "_set", "_add")

    def __init__(self, rules: QueryRules) -> None:
        self._remove = frozenset(rules.remove)
        self._set = {name: _encode(name, value) for name, value in rules.set}
        self._add = tuple(_encode(name, value) for name, value in rules.add)

    def __call__(self, query: str) -> str:
        """
        @param query: C{'?'} and a query string, or C{''}.
        @return: The same, edited (C{''} when no parameter is left).
        """
        remove, replace = self._remove, self._set
        kept: List[str] = []
        placed = set()
        for piece in query[1:].split("&") if query else ():
            name = unquote_plus(piece.partition("=")[0])
            if name in remove:
                continue
            if name in replace:
                if name not in placed:
                    placed.add(name)
                    kept.append(replace[name])
                continue
            kept.append(piece)
        kept.extend(pair for name, pair in replace.items() if name not in placed)
        kept.extend(self._add)
        return "?" + "&".join(kept) if kept else ""


_Side = TypeVar("_Side")


def _sticky_key(sticky: str, client: Callable[[Any], str]) -> Callable[[Any], Optional[str]]:
    # What gives a request's stickiness key (None: it has none).
    if sticky == "client":
        return client
    kind, _, name = sticky.partition(":")
    if kind == "cookie":
        return lambda exchange: _cookie(exchange, name)
    return lambda exchange: _header(exchange, name)


class Splitter(Generic[_Side]):
    """
    Chooses the side of a route's weighted split for each request.

    A request with a stickiness key (the route's C{sticky}: a cookie, a
    header field, the client's address) goes to the side its key hashes
    to, the same for the same key and weights in every process; one
    without goes to a side drawn at random by weight.
    """

    __slots__ = ("_sides", "_bounds", "_total", "_key", "_random")

    def __init__(self, sides: Sequence[Tuple[_Side, int]], sticky: str = "",
                 client: Callable[[Any], str] = _peer,
                 rng: Optional[random.Random] = None) -> None:
        """
        @param sides: C{(side, weight)} pairs, at least one weight above 0.
        @param sticky: The route's C{sticky} (C{''}: none).
        @param client: Gives a request's client address, for C{'client'}.
        @param rng: The random choice of requests without a key.
        """
        self._sides = tuple(side for side, weight in sides if weight > 0)
        bounds = []
        total = 0
        for _, weight in sides:
            if weight > 0:
                total += weight
                bounds.append(total)
        self._bounds = tuple(bounds)
        self._total = total
        self._key = _sticky_key(sticky, client) if sticky else None
        self._random = rng if rng is not None else random.Random()

    def choose(self, exchange: Any) -> _Side:
        """
        The side of request C{exchange}.
        """
        key = self._key(exchange) if self._key is not None else None
        if key is None:
            point = self._random.randrange(self._total)
        else:
            digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8)
            point = int.from_bytes(digest.digest(), "big") % self._total
        return self._sides[bisect.bisect_right(self._bounds, point)]
