"""
Tests for L{twistproxy.routing}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twistproxy.config import Route
from twistproxy.routing import Router


class HostMatchTests(SynchronousTestCase):
    """
    A route's C{hosts} select requests by host name.
    """

    def test_exact(self) -> None:
        """
        An exact host matches that host only.
        """
        route = Route(upstream="a", hosts=("example.com",))
        router = Router([route])
        self.assertIs(router.match("example.com", "/", "GET"), route)
        self.assertIsNone(router.match("www.example.com", "/", "GET"))
        self.assertIsNone(router.match("example.org", "/", "GET"))

    def test_exact_case_insensitive_pattern(self) -> None:
        """
        A route host given in upper case still matches the lower-cased
        request host.
        """
        route = Route(upstream="a", hosts=("Example.COM",))
        self.assertIs(Router([route]).match("example.com", "/", "GET"), route)

    def test_several_hosts(self) -> None:
        """
        A route with several hosts matches any of them.
        """
        route = Route(upstream="a", hosts=("a.test", "b.test"))
        router = Router([route])
        self.assertIs(router.match("a.test", "/", "GET"), route)
        self.assertIs(router.match("b.test", "/", "GET"), route)
        self.assertIsNone(router.match("c.test", "/", "GET"))

    def test_wildcard(self) -> None:
        """
        C{*.example.com} matches names with one or more labels before
        C{example.com}, but not C{example.com} itself nor a name that merely
        ends with the same letters.
        """
        route = Route(upstream="a", hosts=("*.example.com",))
        router = Router([route])
        self.assertIs(router.match("a.example.com", "/", "GET"), route)
        self.assertIs(router.match("a.b.example.com", "/", "GET"), route)
        self.assertIsNone(router.match("example.com", "/", "GET"))
        self.assertIsNone(router.match("badexample.com", "/", "GET"))
        self.assertIsNone(router.match(".example.com", "/", "GET"))
        self.assertIsNone(router.match("a.example.org", "/", "GET"))

    def test_wildcard_and_exact(self) -> None:
        """
        A route may list a wildcard and the bare domain together to match
        both.
        """
        route = Route(upstream="a", hosts=("*.example.com", "example.com"))
        router = Router([route])
        self.assertIs(router.match("example.com", "/", "GET"), route)
        self.assertIs(router.match("www.example.com", "/", "GET"), route)

    def test_no_hosts_matches_any(self) -> None:
        """
        A route without hosts matches every host.
        """
        route = Route(upstream="a", path_prefix="/x")
        router = Router([route])
        self.assertIs(router.match("anything.test", "/x", "GET"), route)
        self.assertIs(router.match("", "/x", "GET"), route)


class PathAndMethodTests(SynchronousTestCase):
    """
    A route's C{path_prefix} and C{methods} select requests by path and
    method.
    """

    def test_prefix(self) -> None:
        """
        The path must start with the route's prefix, compared as a string.
        """
        route = Route(upstream="a", path_prefix="/api")
        router = Router([route])
        self.assertIs(router.match("h", "/api", "GET"), route)
        self.assertIs(router.match("h", "/api/items", "GET"), route)
        self.assertIs(router.match("h", "/apiary", "GET"), route)
        self.assertIsNone(router.match("h", "/ap", "GET"))
        self.assertIsNone(router.match("h", "/other/api", "GET"))

    def test_methods(self) -> None:
        """
        A route with methods matches only those methods; without, any.
        """
        writes = Route(upstream="w", methods=("POST", "PUT"), path_prefix="/")
        router = Router([writes])
        self.assertIs(router.match("h", "/", "POST"), writes)
        self.assertIs(router.match("h", "/", "PUT"), writes)
        self.assertIsNone(router.match("h", "/", "GET"))
        anyMethod = Route(upstream="a")
        self.assertIs(Router([anyMethod]).match("h", "/", "PATCH"), anyMethod)

    def test_all_conditions(self) -> None:
        """
        A route matches only when host, path and method all match.
        """
        route = Route(
            upstream="a",
            hosts=("api.test",),
            path_prefix="/v1/",
            methods=("GET",),
        )
        router = Router([route])
        self.assertIs(router.match("api.test", "/v1/x", "GET"), route)
        self.assertIsNone(router.match("www.test", "/v1/x", "GET"))
        self.assertIsNone(router.match("api.test", "/v2/x", "GET"))
        self.assertIsNone(router.match("api.test", "/v1/x", "POST"))


class OrderTests(SynchronousTestCase):
    """
    Routes are tried in order.
    """

    def test_first_match_wins(self) -> None:
        """
        When several routes match, the first listed is returned, even if a
        later one is more specific.
        """
        broad = Route(upstream="broad", path_prefix="/api")
        narrow = Route(upstream="narrow", path_prefix="/api/v2")
        self.assertIs(Router([broad, narrow]).match("h", "/api/v2/x", "GET"), broad)
        self.assertIs(Router([narrow, broad]).match("h", "/api/v2/x", "GET"), narrow)

    def test_default_route(self) -> None:
        """
        A last route with no conditions catches every request the others
        do not.
        """
        api = Route(upstream="api", hosts=("api.test",))
        static = Route(upstream="static", path_prefix="/static/")
        default = Route(upstream="web")
        router = Router([api, static, default])
        self.assertIs(router.match("api.test", "/anything", "DELETE"), api)
        self.assertIs(router.match("www.test", "/static/a.css", "GET"), static)
        self.assertIs(router.match("www.test", "/", "GET"), default)
        self.assertIs(router.match("other.test", "/x", "OPTIONS"), default)

    def test_no_match(self) -> None:
        """
        Without a default route, a request no route matches gives C{None},
        as does a router with no routes.
        """
        router = Router([Route(upstream="a", hosts=("a.test",))])
        self.assertIsNone(router.match("b.test", "/", "GET"))
        self.assertIsNone(Router([]).match("b.test", "/", "GET"))

    def test_routes_attribute(self) -> None:
        """
        The router keeps its routes, in order, as a tuple.
        """
        routes = [Route(upstream="a", path_prefix="/a"), Route(upstream="b")]
        self.assertEqual(Router(routes).routes, tuple(routes))
