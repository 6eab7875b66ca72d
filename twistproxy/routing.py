# -*- test-case-name: tests.test_routing -*-
"""
Routing: which upstream group a request goes to.

The configuration lists L{Route}s in order; a L{Router} returns the first
one that matches a request's host, path and method.  A route matches when
all three of its conditions hold:

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
    is one of them.

The router runs for every request, so each route is compiled once into sets
and suffix tuples, and a match is a short loop of cheap tests.  This module
is pure logic: it knows nothing of HTTP parsing or of Twisted.
"""

from __future__ import annotations

from typing import FrozenSet, List, Optional, Sequence, Tuple

from twistproxy.config import Route

# One compiled route: (any_host, exact_hosts, wildcard_suffixes, path_prefix,
# methods, route).  A plain tuple unpacks faster than attribute lookups.
_Compiled = Tuple[
    bool, FrozenSet[str], Tuple[str, ...], str, FrozenSet[str], Route
]


def _compile(route: Route) -> _Compiled:
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
        route.path_prefix,
        frozenset(route.methods),
        route,
    )


class Router:
    """
    Chooses the route of each request: the first that matches wins.

    @ivar routes: The routes, in the order they are tried.
    """

    __slots__ = ("routes", "_compiled")

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes: Tuple[Route, ...] = tuple(routes)
        self._compiled: List[_Compiled] = [_compile(r) for r in self.routes]

    def match(self, host: str, path: str, method: str) -> Optional[Route]:
        """
        Find the route of a request.

        @param host: The requested host, lower-cased, without port.
        @param path: The request path, normalised, without query string.
        @param method: The request method, e.g. C{'GET'}.
        @return: The first matching route, or C{None} when none matches
            (which the proxy answers with 404 Not Found).
        """
        for any_host, exact, suffixes, prefix, methods, route in self._compiled:
            if methods and method not in methods:
                continue
            if not path.startswith(prefix):
                continue
            if any_host or host in exact:
                return route
            for suffix in suffixes:
                # At least one label must precede the suffix.
                if len(host) > len(suffix) and host.endswith(suffix):
                    return route
        return None

    def __repr__(self) -> str:
        return f"<Router {len(self.routes)} routes>"
