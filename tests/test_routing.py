"""
Tests for L{twistproxy.routing}.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

import io
import json
import random
import re
from collections import Counter
from types import SimpleNamespace
from typing import Dict, Optional, Sequence

from twistproxy.accesslog import AccessLogWriter
from twistproxy.config import (
    FixedResponse, Forwarding, HeaderRules, Listener, PathRewrite, ProxyConfig, QueryRules,
    Redirect, Route, RouteMatch, RouteSplit, Server, UpstreamGroup,
)
from twistproxy import build
from twistproxy.routing import DirectAnswer, PathRewriter, QueryEditor, Router, Splitter
from twistproxy.testing import MemoryPeer, MemoryProxy

from tests.filter_support import field, request, status
from tests.test_h2 import H2Client, _request as _h2_request


class FakeRequest:
    """
    The parts of a request view the router's further conditions read.
    """

    def __init__(self, target: str = "/", headers: Optional[Dict[str, str]] = None,
                 cookies: Optional[Dict[str, str]] = None,
                 client_address: str = "192.0.2.1") -> None:
        self.path = target
        self._headers = {k.lower(): v for k, v in (headers or {}).items()}
        self._cookies = cookies or {}
        self.client_address = client_address

    def header(self, name: str) -> Optional[str]:
        return self._headers.get(name.lower())

    def cookie(self, name: str) -> Optional[str]:
        return self._cookies.get(name)


def matches(route: Route, request: FakeRequest, host: str = "h", path: str = "",
            method: str = "GET") -> bool:
    """
    Whether C{route} alone takes C{request} (its path taken from its target
    when not given).
    """
    path = path or request.path.split("?")[0]
    return Router([route]).match(host, path, method, request) is route


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


class MatchRequestTests(SynchronousTestCase):
    """
    L{Router.match_request} routes a request as parsed: path and method as
    bytes, the host read from the request only when a route asks for it.
    """

    class Exchange(FakeRequest):
        # A request view that counts how often its host is read.
        reads = 0

        @property
        def host(self) -> str:
            self.reads += 1
            return "api.test"

    def test_host_read_only_when_asked(self) -> None:
        """
        A route that names neither hosts nor further conditions takes the
        request without reading its host; one that names hosts, or has a
        host condition, reads it once, however many routes look at it.
        """
        anywhere = Route(upstream="a", path_prefix="/v1/", methods=("GET",))
        exchange = self.Exchange()
        self.assertIs(Router([anywhere]).match_request(b"/v1/x", b"GET", exchange), anywhere)
        self.assertEqual(exchange.reads, 0)
        other = Route(upstream="b", hosts=("www.test",))
        api = Route(upstream="c", hosts=("*.test",), host_regex="^api")
        router = Router([other, api])
        self.assertIs(router.match_request(b"/", b"GET", exchange), api)
        self.assertEqual(exchange.reads, 1)

    def test_conditions_read_host_and_path(self) -> None:
        """
        A route without hosts whose further conditions look at the host
        and the path gets both as strings.
        """
        route = Route(upstream="a", host_regex=r"^api\.", path_regex=r"^/users/[0-9]+$")
        exchange = self.Exchange()
        router = Router([route])
        self.assertIs(router.match_request(b"/users/42", b"GET", exchange), route)
        self.assertIsNone(router.match_request(b"/users/me", b"GET", exchange))
        self.assertEqual(exchange.reads, 2)

    def test_bytes_compare_as_strings(self) -> None:
        """
        Prefix and methods compare as the strings of L{Router.match}: a
        prefix outside ASCII takes no request path, which is ASCII.
        """
        route = Route(upstream="a", path_prefix="/caf\u00e9/", methods=("PATCH",))
        router = Router([route])
        self.assertIs(router.match("h", "/caf\u00e9/x", "PATCH"), route)
        self.assertIsNone(router.match_request(b"/caf%C3%A9/x", b"PATCH", self.Exchange()))
        self.assertIsNone(router.match("h", "/caf\u00e9/x", "GET"))


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

    def test_values(self) -> None:
        """
        Given C{values}, a match returns the matching route's value, in
        the routes' order, in place of the route; still C{None} for no
        match.
        """
        api = Route(upstream="api", path_prefix="/api")
        default = Route(upstream="web")
        router = Router([api, default], values=["api value", "web value"])
        self.assertEqual(router.match("h", "/api/x", "GET"), "api value")
        self.assertEqual(router.match("h", "/x", "GET"), "web value")
        self.assertEqual(router.match_request(b"/api", b"GET", None, "h"), "api value")
        self.assertIsNone(Router([api], values=["api value"]).match("h", "/x", "GET"))

    def test_routes_attribute(self) -> None:
        """
        The router keeps its routes, in order, as a tuple.
        """
        routes = [Route(upstream="a", path_prefix="/a"), Route(upstream="b")]
        self.assertEqual(Router(routes).routes, tuple(routes))


class FurtherConditionTests(SynchronousTestCase):
    """
    Routes match on the exact path, regular expressions on path and host,
    header fields, query parameters, cookies and the client's network.
    """

    def test_path_exact(self) -> None:
        """
        C{path_exact} takes that normalised path only.
        """
        route = Route(upstream="a", path_exact="/login")
        self.assertTrue(matches(route, FakeRequest("/login?next=/")))
        self.assertFalse(matches(route, FakeRequest("/login/")))
        self.assertFalse(matches(route, FakeRequest("/log")))

    def test_path_regex(self) -> None:
        """
        C{path_regex} is searched in the normalised path; anchors anchor.
        """
        route = Route(upstream="a", path_regex=r"^/users/[0-9]+$")
        self.assertTrue(matches(route, FakeRequest("/users/42")))
        self.assertFalse(matches(route, FakeRequest("/users/42/x")))
        self.assertFalse(matches(route, FakeRequest("/users/me")))
        unanchored = Route(upstream="a", path_regex=r"\.php")
        self.assertTrue(matches(unanchored, FakeRequest("/a/index.php")))

    def test_host_regex(self) -> None:
        """
        C{host_regex} is searched in the lower-cased host without port.
        """
        route = Route(upstream="a", host_regex=r"^api-[a-z]+\.example\.com$")
        self.assertTrue(matches(route, FakeRequest(), host="api-eu.example.com"))
        self.assertFalse(matches(route, FakeRequest(), host="www.example.com"))

    def test_header_present_absent(self) -> None:
        """
        A header match without value takes requests with the field; with
        C{present = false}, requests without it.
        """
        present = Route(upstream="a", headers=(RouteMatch(name="x-canary"),))
        absent = Route(upstream="a", headers=(RouteMatch(name="x-canary", present=False),))
        with_it = FakeRequest(headers={"X-Canary": ""})
        self.assertTrue(matches(present, with_it))
        self.assertFalse(matches(present, FakeRequest()))
        self.assertFalse(matches(absent, with_it))
        self.assertTrue(matches(absent, FakeRequest()))

    def test_header_exact_and_regex(self) -> None:
        """
        C{value} must equal the field's value; C{regex} must be found in it.
        """
        exact = Route(upstream="a", headers=(RouteMatch(name="x-env", value="beta"),))
        self.assertTrue(matches(exact, FakeRequest(headers={"X-Env": "beta"})))
        self.assertFalse(matches(exact, FakeRequest(headers={"X-Env": "beta2"})))
        self.assertFalse(matches(exact, FakeRequest()))
        regex = Route(upstream="a", headers=(RouteMatch(name="user-agent", regex="(?i)mobile"),))
        self.assertTrue(matches(regex, FakeRequest(headers={"User-Agent": "X Mobile/1"})))
        self.assertFalse(matches(regex, FakeRequest(headers={"User-Agent": "Desktop"})))
        self.assertFalse(matches(regex, FakeRequest()))

    def test_query(self) -> None:
        """
        Query parameters are read from the target, percent-decoded: present,
        exact and regex.
        """
        present = Route(upstream="a", query=(RouteMatch(name="debug"),))
        self.assertTrue(matches(present, FakeRequest("/x?a=1&debug")))
        self.assertFalse(matches(present, FakeRequest("/x?a=1")))
        self.assertFalse(matches(present, FakeRequest("/x")))
        exact = Route(upstream="a", query=(RouteMatch(name="v", value="a b"),))
        self.assertTrue(matches(exact, FakeRequest("/x?v=a%20b")))
        self.assertFalse(matches(exact, FakeRequest("/x?v=ab")))
        regex = Route(upstream="a", query=(RouteMatch(name="id", regex="^[0-9]+$"),))
        self.assertTrue(matches(regex, FakeRequest("/x?id=12")))
        self.assertFalse(matches(regex, FakeRequest("/x?id=1x")))

    def test_cookie(self) -> None:
        """
        Cookie matches read the named cookie.
        """
        route = Route(upstream="a", cookies=(RouteMatch(name="beta", value="on"),))
        self.assertTrue(matches(route, FakeRequest(cookies={"beta": "on"})))
        self.assertFalse(matches(route, FakeRequest(cookies={"beta": "off"})))
        self.assertFalse(matches(route, FakeRequest()))

    def test_networks(self) -> None:
        """
        C{networks} takes clients whose address is in one of them, IPv4 or
        IPv6; an address that is not an IP address matches none.
        """
        route = Route(upstream="a", networks=("10.0.0.0/8", "2001:db8::/32"))
        self.assertTrue(matches(route, FakeRequest(client_address="10.1.2.3")))
        self.assertTrue(matches(route, FakeRequest(client_address="2001:db8::7")))
        self.assertFalse(matches(route, FakeRequest(client_address="192.0.2.1")))
        self.assertFalse(matches(route, FakeRequest(client_address="")))

    def test_networks_ipv4_mapped(self) -> None:
        """
        On a dual-stack listener an IPv4 client's address is IPv4-mapped
        (C{::ffff:10.1.2.3}): it is in the IPv4 networks it stands for, as
        for trusted proxies and access filters.
        """
        route = Route(upstream="a", networks=("10.0.0.0/8",))
        self.assertTrue(matches(route, FakeRequest(client_address="::ffff:10.1.2.3")))
        self.assertFalse(matches(route, FakeRequest(client_address="::ffff:192.0.2.1")))

    def test_networks_through_client_function(self) -> None:
        """
        The router asks its C{client} function for the address, which is how
        the forwarder applies the trusted-proxy rules.
        """
        route = Route(upstream="a", networks=("10.0.0.0/8",))
        router = Router([route], client=lambda x: x.header("x-real"))
        request = FakeRequest(headers={"X-Real": "10.9.9.9"}, client_address="192.0.2.1")
        self.assertIs(router.match("h", "/", "GET", request), route)

    def test_all_must_hold_and_order(self) -> None:
        """
        Every condition of a route must hold; a route whose further
        conditions fail lets the next route try.
        """
        canary = Route(upstream="canary", name="c", path_prefix="/api/",
                       headers=(RouteMatch(name="x-canary", value="1"),),
                       cookies=(RouteMatch(name="beta"),))
        main = Route(upstream="main", name="m", path_prefix="/api/")
        router = Router([canary, main])
        both = FakeRequest("/api/x", headers={"X-Canary": "1"}, cookies={"beta": "y"})
        one = FakeRequest("/api/x", headers={"X-Canary": "1"})
        self.assertIs(router.match("h", "/api/x", "GET", both), canary)
        self.assertIs(router.match("h", "/api/x", "GET", one), main)
        self.assertIs(router.match("h", "/other", "GET", both), None)


    def test_first_of_repeated(self) -> None:
        """
        When a header field or a query parameter is repeated, its first
        occurrence is the one compared.
        """
        route = Route("app", headers=(RouteMatch(name="x-env", value="beta"),),
                      query=(RouteMatch(name="v", value="1"),))
        for head, expected in (
                (b"GET /?v=1&v=2 HTTP/1.1\r\nHost: a\r\nX-Env: beta\r\nX-Env: prod\r\n\r\n", 200),
                (b"GET /?v=1 HTTP/1.1\r\nHost: a\r\nX-Env: prod\r\nX-Env: beta\r\n\r\n", 404),
                (b"GET /?v=2&v=1 HTTP/1.1\r\nHost: a\r\nX-Env: beta\r\n\r\n", 404)):
            got, _ = request(_proxy(route), head)
            self.assertEqual(status(got), expected, head)

    def test_regexes_compiled_once(self) -> None:
        """
        The router compiles a route's regular expressions when it is made,
        and matching requests compiles none.
        """
        # Every use of a pattern given as a string (re.compile, re.search,
        # re.sub ...) goes through re._compile, cached or not.
        compiled = []
        compile_ = re._compile  # type: ignore[attr-defined]
        self.patch(re, "_compile", lambda *a: compiled.append(a) or compile_(*a))
        router = Router([Route(upstream="a", path_regex="^/u/[0-9]+$", host_regex="^api",
                               headers=(RouteMatch(name="x", regex="b"),),
                               query=(RouteMatch(name="q", regex="c"),),
                               cookies=(RouteMatch(name="k", regex="d"),))])
        self.assertEqual(len(compiled), 5)
        request = FakeRequest("/u/1?q=c", headers={"x": "b"}, cookies={"k": "d"})
        for _ in range(100):
            self.assertIsNotNone(router.match("api.test", "/u/1", "GET", request))
            self.assertIsNone(router.match("www.test", "/u/1", "GET", request))
        self.assertEqual(len(compiled), 5)

    def test_conditions_tried_last(self) -> None:
        """
        A route's further conditions look at the request only once its
        host, prefix and methods matched, and a route without any never
        looks at it: the common prefix case costs what it did.
        """
        class Untouchable:
            def __getattr__(self, name):
                raise AssertionError(f"the router read {name}")

        guarded = Route(upstream="g", hosts=("api.test",), path_prefix="/api/",
                        methods=("GET",), headers=(RouteMatch(name="x"),),
                        networks=("10.0.0.0/8",))
        plain = Route(upstream="p", path_prefix="/")
        router = Router([guarded, plain])
        for host, path, method in (("www.test", "/api/x", "GET"), ("api.test", "/x", "GET"),
                                   ("api.test", "/api/x", "POST")):
            self.assertIs(router.match(host, path, method, Untouchable()), plain)
        self.assertRaises(AssertionError, router.match, "api.test", "/api/x", "GET",
                          Untouchable())


def _proxy(route: Route, trusted: Sequence[str] = (), servers: int = 1,
           **group) -> MemoryProxy:
    """
    An in-memory proxy with C{servers} backends (ports 8001, 8002 ...) in
    group C{app} and one C{route}.
    """
    return MemoryProxy(ProxyConfig(
        listeners=(Listener("main", "tcp:8080"),),
        upstreams={"app": UpstreamGroup("app", tuple(
            Server(f"http://127.0.0.1:{p}", "http", "127.0.0.1", p)
            for p in range(8001, 8001 + servers)), **group)},
        routes=(route,),
        forwarding=Forwarding(trusted_proxies=tuple(trusted)),
    ))


class ProxyRoutingTests(SynchronousTestCase):
    """
    The proxy routes on the conditions of its routes.
    """

    def test_networks_through_trusted_proxies(self) -> None:
        """
        C{networks} sees the client a trusted proxy names, and the peer's own
        address otherwise; a request no route takes is answered 404.
        """
        via_proxy = b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.1.1.1\r\n\r\n"
        plain = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        for head, client, expected in ((via_proxy, "192.0.2.7", 200),
                                       (via_proxy, "198.51.100.9", 404),
                                       (plain, "10.2.2.2", 200)):
            # A new proxy each time: no pooled backend connection to reuse.
            proxy = _proxy(Route("app", networks=("10.0.0.0/8",)), trusted=("192.0.2.0/24",))
            got, _ = request(proxy, head, client=client)
            self.assertEqual(status(got), expected, client)

    def test_header_and_query(self) -> None:
        """
        Header and query conditions read the request as the client sent it.
        """
        route = Route("app", headers=(RouteMatch(name="x-env", value="beta"),),
                      query=(RouteMatch(name="v", regex="^2"),))
        for query, expected in ((b"v=2.1", 200), (b"v=1", 404)):
            head = b"GET /a?%s HTTP/1.1\r\nHost: a\r\nX-Env: beta\r\n\r\n" % query
            got, _ = request(_proxy(route), head)
            self.assertEqual(status(got), expected, query)

    def test_exact_and_regex_on_normalised_path(self) -> None:
        """
        C{path_exact} and C{path_regex} see the normalised path: dot
        segments resolved, slashes merged, C{%2F} read as C{/}.
        """
        for route in (Route("app", path_exact="/a/login"),
                      Route("app", path_regex="^/users/[0-9]+$")):
            for target, expected in ((b"/a/x/../login", 200), (b"/a//login", 200),
                                     (b"/users/./7", 200), (b"/users%2F7", 200),
                                     (b"/a/login/", 404), (b"/users/7/", 404)):
                wanted = expected if target.startswith(
                    b"/a" if route.path_exact else b"/users") else 404
                got, _ = request(_proxy(route), b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % target)
                self.assertEqual(status(got), wanted, (route, target))

    def test_listeners(self) -> None:
        """
        A route with C{listeners} takes only the requests of the listeners
        it names, over HTTP/1.1 and HTTP/2 alike; the others go on to the
        next route.
        """
        config = ProxyConfig(
            listeners=(Listener("public", "tcp:8080"), Listener("internal", "tcp:8081", h2c=True)),
            upstreams={name: UpstreamGroup(name, (
                Server(f"http://127.0.0.1:{port}", "http", "127.0.0.1", port),))
                for name, port in (("admin", 8001), ("app", 8002))},
            routes=(Route("admin", listeners=("internal",)), Route("app")))
        reactor = MemoryReactorClock()
        _, forwarder = build.pipeline(config, reactor, None)
        builder = build.ListenerBuilder(reactor, config, forwarder)
        public, internal = (builder.http(listener) for listener in config.listeners)
        self.assertEqual((public.listener, internal.listener), ("public", "internal"))
        for factory, port in ((public, 8002), (internal, 8001)):
            peer = MemoryPeer(factory.buildProtocol(None), IPv4Address("TCP", "192.0.2.7", 4000))
            peer.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            self.assertEqual(reactor.tcpClients[-1][1], port, factory.listener)
        # The same over HTTP/2 (an HTTP/2 stream asks its connection).
        H2Client(SimpleNamespace(factory=internal)).request(_h2_request())
        self.assertEqual([c[1] for c in reactor.tcpClients], [8002, 8001, 8001])


class DirectAnswerTests(SynchronousTestCase):
    """
    A route's redirect or fixed response, made per request.
    """

    def test_redirect_template(self) -> None:
        """
        C{{host}}, C{{path}} and C{{query}} (with its C{?}, or nothing) are
        filled in from the request.
        """
        answer = DirectAnswer(Route(redirect=Redirect(to="https://{host}{path}{query}",
                                                      status=308)))
        self.assertEqual(answer.make("a.test", "/x/y", "/x//y?q=1"),
                         (308, ((b"Location", b"https://a.test/x/y?q=1"),), None))
        self.assertEqual(answer.make("a.test", "/", "/")[1],
                         ((b"Location", b"https://a.test/"),))
        self.assertEqual(answer.reason, "redirect")

    def test_redirect_captures(self) -> None:
        """
        Numbered and named captures of C{path_regex} fill the target; a group
        that took part in no match is empty.
        """
        answer = DirectAnswer(Route(path_regex=r"^/old/(?P<rest>.*?)(\.html)?$",
                                    redirect=Redirect(to="/new/{rest}{2}|{1}")))
        self.assertEqual(answer.make("h", "/old/a/b", "/old/a/b")[1],
                         ((b"Location", b"/new/a/b|a/b"),))
        self.assertEqual(answer.make("h", "/old/c.html", "/old/c.html")[1],
                         ((b"Location", b"/new/c.html|c"),))

    def test_fixed_response(self) -> None:
        """
        A fixed response has its status, headers and UTF-8 body, with a
        plain-text type when a body has none.
        """
        answer = DirectAnswer(Route(respond=FixedResponse(
            503, (("Retry-After", "60"),), "en panne \u2014 bientôt")))
        self.assertEqual(answer.make("h", "/", "/"), (
            503, ((b"Retry-After", b"60"), (b"Content-Type", b"text/plain; charset=utf-8")),
            "en panne \u2014 bientôt".encode("utf-8")))
        self.assertEqual(answer.reason, "fixed_response")
        typed = DirectAnswer(Route(respond=FixedResponse(
            200, (("content-type", "application/json"),), "{}")))
        self.assertEqual(typed.make("h", "/", "/")[1], ((b"content-type", b"application/json"),))
        empty = DirectAnswer(Route(respond=FixedResponse(204)))
        self.assertEqual(empty.make("h", "/", "/"), (204, (), b""))

    def test_route_without_answer(self) -> None:
        """
        A route that answers nothing itself makes no direct answer.
        """
        self.assertRaises(ValueError, DirectAnswer, Route(upstream="a"))


class ProxyDirectAnswerTests(SynchronousTestCase):
    """
    The proxy answers a redirect or fixed-response route itself, without a
    backend.
    """

    def test_redirect(self) -> None:
        """
        A redirect route answers with its status and Location; no backend is
        called.
        """
        proxy = _proxy(Route(path_regex="^/docs/(.*)$",
                             redirect=Redirect(to="https://{host}/manual/{1}{query}",
                                               status=301)))
        got, sent = request(proxy, b"GET /docs/a/../b?x=1 HTTP/1.1\r\nHost: www.test\r\n\r\n")
        self.assertEqual((status(got), sent), (301, None))
        self.assertEqual(field(got, b"Location"), b"https://www.test/manual/b?x=1")
        self.assertEqual(proxy.backend_attempts(), [])

    def test_fixed_response(self) -> None:
        """
        A fixed-response route sends its status, fields and body; a HEAD gets
        the head only.
        """
        route = Route(respond=FixedResponse(200, (("X-Health", "ok"),), "healthy\n"))
        got, sent = request(_proxy(route), b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual((status(got), sent), (200, None))
        self.assertEqual(field(got, b"X-Health"), b"ok")
        self.assertEqual(field(got, b"Content-Length"), b"8")
        self.assertTrue(got.endswith(b"\r\n\r\nhealthy\n"))
        got, _ = request(_proxy(route), b"HEAD /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertTrue(got.endswith(b"\r\n\r\n"))


class PathRewriterTests(SynchronousTestCase):
    """
    The path a route sends upstream: prefix stripped, regex replaced,
    prefix added, query kept.
    """

    def rewrite(self, path: bytes, target: bytes = b"", **settings) -> bytes:
        return PathRewriter(Route(upstream="a", **settings))(path, target or path)

    def test_strip_prefix(self) -> None:
        """
        C{strip_prefix} is removed when the path starts with it; what is left
        always starts with C{/}.
        """
        self.assertEqual(self.rewrite(b"/api/items", strip_prefix="/api"), b"/items")
        self.assertEqual(self.rewrite(b"/api/items", strip_prefix="/api/"), b"/items")
        self.assertEqual(self.rewrite(b"/api", strip_prefix="/api"), b"/")
        self.assertEqual(self.rewrite(b"/other", strip_prefix="/api"), b"/other")

    def test_add_prefix(self) -> None:
        """
        C{add_prefix} goes before the path, without a doubled slash.
        """
        self.assertEqual(self.rewrite(b"/items", add_prefix="/v2"), b"/v2/items")
        self.assertEqual(self.rewrite(b"/items", add_prefix="/v2/"), b"/v2/items")

    def test_regex(self) -> None:
        """
        Every match of the regex is replaced, with numbered and named
        captures.
        """
        rewrite = PathRewrite(regex=r"^/users/(?P<id>[0-9]+)/(\w+)$", to="/{2}?/u/{id}")
        self.assertEqual(self.rewrite(b"/users/7/posts", rewrite=rewrite), b"/posts?/u/7")
        every = PathRewrite(regex="_", to="-")
        self.assertEqual(self.rewrite(b"/a_b_c", rewrite=every), b"/a-b-c")
        relative = PathRewrite(regex="^/old", to="")
        self.assertEqual(self.rewrite(b"/oldx", rewrite=relative), b"/x")

    def test_order_and_query(self) -> None:
        """
        Strip, then replace, then add; the query as received follows.
        """
        self.assertEqual(
            self.rewrite(b"/api/v1/items", b"/api//v1/items?a=%20", strip_prefix="/api",
                         rewrite=PathRewrite(regex="^/v1/", to="/"), add_prefix="/svc"),
            b"/svc/items?a=%20")

    def test_asterisk(self) -> None:
        """
        C{OPTIONS *} is sent as it is.
        """
        self.assertEqual(self.rewrite(b"*", add_prefix="/x"), b"*")
        self.assertEqual(self.rewrite(b"*", rewrite_query=QueryRules(add=(("a", "1"),))), b"*")

    def test_query_only(self) -> None:
        """
        A route that edits only the query sends the path as received, not
        normalised.
        """
        rules = QueryRules(add=(("v", "2"),))
        self.assertEqual(self.rewrite(b"/a/b%2Fc", b"/a//b%2Fc?x=1", rewrite_query=rules),
                         b"/a//b%2Fc?x=1&v=2")
        self.assertEqual(self.rewrite(b"/a", b"/a", rewrite_query=rules), b"/a?v=2")

    def test_path_and_query(self) -> None:
        """
        Path and query rewrites combine.
        """
        self.assertEqual(
            self.rewrite(b"/api/items", b"/api/items?debug=1&x=2", strip_prefix="/api",
                         rewrite_query=QueryRules(remove=("debug",))),
            b"/items?x=2")


class QueryEditorTests(SynchronousTestCase):
    """
    A route's C{rewrite_query}: remove, then set, then add.
    """

    def edit(self, query: str, **rules) -> str:
        return QueryEditor(QueryRules(**rules))(query)

    def test_remove(self) -> None:
        """
        Every occurrence of a removed name goes, its name compared
        percent-decoded; a query left empty goes with its C{?}.
        """
        self.assertEqual(self.edit("?a=1&debug=x&b=2&debug", remove=("debug",)), "?a=1&b=2")
        self.assertEqual(self.edit("?de%62ug=1&my+key=2&a", remove=("debug", "my key")), "?a")
        self.assertEqual(self.edit("?debug=1", remove=("debug",)), "")
        self.assertEqual(self.edit("", remove=("debug",)), "")

    def test_set(self) -> None:
        """
        A set parameter replaces every occurrence of its name, in the place
        of the first, or is appended; its value is percent-encoded.
        """
        self.assertEqual(self.edit("?v=1&a=%20&v=3", set=(("v", "2"),)), "?v=2&a=%20")
        self.assertEqual(self.edit("?a=1", set=(("v", "a b/&"),)), "?a=1&v=a%20b%2F%26")
        self.assertEqual(self.edit("", set=(("v", ""),)), "?v=")

    def test_add_and_order(self) -> None:
        """
        An added parameter is appended even when the name is there; remove
        comes before set, and set before add.
        """
        self.assertEqual(self.edit("?tag=a", add=(("tag", "b"),)), "?tag=a&tag=b")
        self.assertEqual(
            self.edit("?x=1&y=2", remove=("x", "y"), set=(("y", "3"),), add=(("x", "4"),)),
            "?y=3&x=4")

    def test_spelling_kept(self) -> None:
        """
        The parameters left alone keep the client's spelling, empty pieces
        included.
        """
        self.assertEqual(self.edit("?q=a+b%2Fc&&r=%7e", add=(("z", "1"),)),
                         "?q=a+b%2Fc&&r=%7e&z=1")


class ProxyRewriteTests(SynchronousTestCase):
    """
    The backend gets the rewritten target and the Host the route sets; the
    access log keeps the client's target.
    """

    def test_rewritten_target_and_host(self) -> None:
        """
        The request line carries the rewritten path; C{request_headers}'
        C{set.Host} is the Host sent; the access log names the original target.
        """
        route = Route("app", strip_prefix="/api", add_prefix="/internal",
                      request_headers=HeaderRules(set=(("Host", "svc.internal"),)))
        proxy = _proxy(route)
        got, sent = request(proxy, b"GET /api/items?x=1 HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(status(got), 200)
        self.assertTrue(sent.startswith(
            b"GET /internal/items?x=1 HTTP/1.1\r\nHost: svc.internal\r\n"), sent)
        [x] = proxy.exchanges
        stream = io.BytesIO()
        AccessLogWriter(stream, "combined", proxy.reactor)(x)
        self.assertIn(b'"GET /api/items?x=1 HTTP/1.1"', stream.getvalue())

    def log_lines(self, route: Route, head: bytes):
        """
        The combined and JSON access log lines of one request C{head} on a
        proxy with C{route}.
        """
        proxy = _proxy(route)
        got, _ = request(proxy, head)
        self.assertEqual(status(got), 200)
        [exchange] = proxy.exchanges
        lines = []
        for format in ("combined", "json"):
            stream = io.BytesIO()
            AccessLogWriter(stream, format, proxy.reactor)(exchange)
            lines.append(stream.getvalue())
        return lines[0], json.loads(lines[1])

    def test_access_log_rewritten(self) -> None:
        """
        The access log shows the client's target in the request line and,
        when the route sent another, that one after C{rewritten=} (C{json}:
        the key C{rewritten}).
        """
        combined, record = self.log_lines(
            Route("app", strip_prefix="/api", rewrite_query=QueryRules(add=(("v", "2"),))),
            b"GET /api/items?x=1 HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertIn(b'"GET /api/items?x=1 HTTP/1.1"', combined)
        self.assertTrue(combined.endswith(b" reason=- rewritten=/items?x=1&v=2\n"), combined)
        self.assertEqual((record["target"], record["rewritten"]),
                         ("/api/items?x=1", "/items?x=1&v=2"))

    def test_access_log_not_rewritten(self) -> None:
        """
        A route whose rewrite leaves the target as it was, and a route
        without one, add nothing to the line.
        """
        head = b"GET /items?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"
        for route in (Route("app", strip_prefix="/api"), Route("app")):
            combined, record = self.log_lines(route, head)
            self.assertTrue(combined.endswith(b" reason=-\n"), combined)
            self.assertNotIn("rewritten", record)

    def test_rewrite_sends_normalised_path(self) -> None:
        """
        Under C{escaped_slashes = "keep"} (the default), a route that
        rewrites the path sends the normalised path, C{%2F} read as C{/}
        (what the route matched and rewrote); a route that edits only the
        query, or none, sends the path as the client did.
        """
        head = b"GET /api/a%2Fb/./c?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"
        for route, line in (
                (Route("app", strip_prefix="/api"), b"GET /a/b/c?x=1 HTTP/1.1"),
                (Route("app", rewrite_query=QueryRules(remove=("x",))),
                 b"GET /api/a%2Fb/./c HTTP/1.1"),
                (Route("app"), b"GET /api/a%2Fb/./c?x=1 HTTP/1.1")):
            got, sent = request(_proxy(route), head)
            self.assertEqual(status(got), 200)
            self.assertTrue(sent.startswith(line + b"\r\n"), sent)


    def test_rewritten_query(self) -> None:
        """
        The request line carries the query as C{rewrite_query} edits it,
        and the path as the client sent it.
        """
        proxy = _proxy(Route("app", rewrite_query=QueryRules(
            remove=("debug",), set=(("v", "2"),), add=(("src", "edge"),))))
        got, sent = request(proxy, b"GET /a?debug=1&v=1&q=x HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(status(got), 200)
        self.assertTrue(sent.startswith(b"GET /a?v=2&q=x&src=edge HTTP/1.1\r\n"), sent)


class RouteOverrideTests(SynchronousTestCase):
    """
    A route's own C{retries}, C{retry_budget} and C{response_timeout}
    replace its group's and the proxy's.
    """

    def test_fewer_retries(self) -> None:
        """
        C{retries = 0} on the route: a refused connection is the answer,
        though the group would retry.
        """
        proxy = _proxy(Route("app", retries=0), servers=2, retries=1)
        client = proxy.connect_client()
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        proxy.refuse_backend()
        self.assertEqual(proxy.backend_attempts(), [])
        self.assertTrue(client.received().startswith(b"HTTP/1.1 502"))

    def test_more_retries(self) -> None:
        """
        C{retries = 2} on the route: a request whose backends reset goes to
        three of them, though the group would allow two.
        """
        proxy = _proxy(Route("app", retries=2), servers=3, retries=1)
        client = proxy.connect_client()
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        proxy.accept_backend().close()
        proxy.accept_backend().close()
        backend = proxy.accept_backend()
        backend.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertTrue(client.received().startswith(b"HTTP/1.1 200"))
        self.assertEqual(proxy.exchanges[-1].attempts, 3)

    def retries_allowed(self, route: Route, group_budget: float) -> bool:
        """
        Whether a fourth request may retry while three others hold the
        three retries always allowed: four GETs, each backend resetting
        its connection before answering, with the group's C{retry_budget}
        at C{group_budget}.
        """
        proxy = _proxy(route, servers=2, retries=1, retry_budget=group_budget)
        clients = [proxy.connect_client(port=40000 + i) for i in range(4)]
        for client in clients:
            client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        for _ in clients:
            proxy.accept_backend().close()
        self.assertEqual([c.received() for c in clients[:3]], [b""] * 3)
        return clients[3].received() == b""

    def test_retry_budget(self) -> None:
        """
        The route's C{retry_budget} replaces its group's: with 4 requests in
        flight and 3 retries under way, a share of 0 allows no fourth retry
        though the group's 1 would (its request gets 502), and a share of 1
        allows it though the group's 0 would not; without one, the group's
        applies.
        """
        self.assertFalse(self.retries_allowed(Route("app", retry_budget=0.0), 1.0))
        self.assertTrue(self.retries_allowed(Route("app", retry_budget=1.0), 0.0))
        self.assertTrue(self.retries_allowed(Route("app"), 1.0))
        self.assertFalse(self.retries_allowed(Route("app"), 0.0))

    def test_response_timeout(self) -> None:
        """
        The route's C{response_timeout} bounds the wait for the backend's
        answer instead of C{timeouts.upstream_response}.
        """
        proxy = _proxy(Route("app", response_timeout=2.0))
        client = proxy.connect_client()
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        proxy.accept_backend()
        proxy.reactor.advance(1.9)
        self.assertEqual(client.received(), b"")
        proxy.reactor.advance(0.2)
        self.assertTrue(client.received().startswith(b"HTTP/1.1 504"))
        self.assertEqual(proxy.exchanges[-1].reason, "upstream_timeout")


class SplitterTests(SynchronousTestCase):
    """
    A split route shares its requests among its sides by weight, keeping
    each stickiness key on one side.
    """

    def shares(self, splitter: Splitter[str], requests: Sequence[FakeRequest]) -> Dict[str, float]:
        counts = Counter(splitter.choose(x) for x in requests)
        return {side: n / len(requests) for side, n in counts.items()}

    def test_keys_spread_by_weight(self) -> None:
        """
        Over 10,000 distinct keys (cookie, header or client address), each
        side's share is within one per cent of its weight's.
        """
        for sticky, make in (
                ("cookie:user", lambda i: FakeRequest(cookies={"user": f"u{i}"})),
                ("header:x-user", lambda i: FakeRequest(headers={"X-User": f"u{i}"})),
                ("client", lambda i: FakeRequest(client_address=f"10.{i >> 8}.{i & 255}.1"))):
            splitter = Splitter([("stable", 95), ("canary", 5)], sticky)
            shares = self.shares(splitter, [make(i) for i in range(10000)])
            self.assertLessEqual(abs(shares["stable"] - 0.95), 0.01, msg=sticky)
            self.assertLessEqual(abs(shares["canary"] - 0.05), 0.01, msg=sticky)

    def test_sticky(self) -> None:
        """
        The same key lands on the same side every time, in every splitter
        with the same weights (another process, a reload): it is a hash of
        the key, not a draw.
        """
        requests = [FakeRequest(cookies={"user": f"u{i}"}) for i in range(200)]
        first = [Splitter([("a", 50), ("b", 50)], "cookie:user").choose(x) for x in requests]
        again = Splitter([("a", 50), ("b", 50)], "cookie:user", rng=random.Random(1))
        for _ in range(3):
            self.assertEqual([again.choose(x) for x in requests], first)
        self.assertEqual(set(first), {"a", "b"})

    def test_new_weights_move_few_keys(self) -> None:
        """
        New weights move only the keys whose hash falls between the old and
        the new boundary: from 95/5 to 90/10, every key on the canary stays
        there, and about 5 % of the keys move to it.
        """
        requests = [FakeRequest(cookies={"user": f"u{i}"}) for i in range(10000)]
        before = [Splitter([("stable", 95), ("canary", 5)], "cookie:user").choose(x)
                  for x in requests]
        after = [Splitter([("stable", 90), ("canary", 10)], "cookie:user").choose(x)
                 for x in requests]
        moved = [(b, a) for b, a in zip(before, after) if b != a]
        self.assertEqual({pair for pair in moved}, {("stable", "canary")})
        self.assertLessEqual(abs(len(moved) / len(requests) - 0.05), 0.01)

    def test_no_key_weighted_random(self) -> None:
        """
        A request without the key (or a route without C{sticky}) goes to a
        side drawn by weight from the injected random source; a side of
        weight 0 gets nothing.
        """
        splitter = Splitter([("a", 3), ("off", 0), ("b", 1)], "cookie:user",
                            rng=random.Random(7))
        shares = self.shares(splitter, [FakeRequest()] * 10000)
        self.assertLessEqual(abs(shares["a"] - 0.75), 0.02)
        self.assertLessEqual(abs(shares["b"] - 0.25), 0.02)
        self.assertNotIn("off", shares)
        plain = Splitter([("a", 1), ("b", 1)], rng=random.Random(7))
        same = Splitter([("a", 1), ("b", 1)], rng=random.Random(7))
        requests = [FakeRequest(cookies={"user": "u1"})] * 50
        self.assertEqual([plain.choose(x) for x in requests],
                         [same.choose(x) for x in requests])
        self.assertEqual(len(set(plain.choose(x) for x in requests)), 2)


def _split_config(stable: int, canary: int) -> ProxyConfig:
    # Groups stable (port 8001) and canary (8002), one route split by the
    # cookie 'user'.
    return ProxyConfig(
        listeners=(Listener("main", "tcp:8080"),),
        upstreams={name: UpstreamGroup(name, (
            Server(f"http://127.0.0.1:{port}", "http", "127.0.0.1", port),))
            for name, port in (("stable", 8001), ("canary", 8002))},
        routes=(Route(split=(RouteSplit("stable", stable), RouteSplit("canary", canary)),
                      sticky="cookie:user"),),
    )


class ProxySplitTests(SynchronousTestCase):
    """
    The proxy sends each request of a split route to the group its split
    chooses.
    """

    def test_by_weight_and_reload(self) -> None:
        """
        A route weighted all to one side sends there; new weights (a reload)
        apply to the next request, while the one in flight finishes on its
        side, answered as usual.
        """
        proxy = MemoryProxy(_split_config(100, 0))
        head = b"GET / HTTP/1.1\r\nHost: a\r\nCookie: user=u1\r\n\r\n"
        peer = proxy.connect_client()
        peer.send(head)
        self.assertEqual(proxy.backend_attempts(), [("127.0.0.1", 8001)])
        in_flight = proxy.accept_backend()
        new = _split_config(0, 100)
        _, forwarder = build.pipeline(new, proxy.reactor)
        proxy.factory.configure(new, forwarder)
        in_flight.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(status(peer.received()), 200)
        got, _ = request(proxy, head)
        self.assertEqual(status(got), 200)
        self.assertEqual(proxy.reactor.tcpClients[-1][:2], ("127.0.0.1", 8002))

    def test_retry_stays_in_side(self) -> None:
        """
        A retry of a split route's request goes to another server of the
        side's group, not to the other side.
        """
        def user_on(side: str) -> str:
            splitter = Splitter([("stable", 1), ("canary", 1)], "cookie:user")
            return next(f"u{i}" for i in range(100)
                        if splitter.choose(FakeRequest(cookies={"user": f"u{i}"})) == side)

        ports = {"stable": (8001, 8003), "canary": (8002,)}
        proxy = MemoryProxy(ProxyConfig(
            listeners=(Listener("main", "tcp:8080"),),
            upstreams={name: UpstreamGroup(name, tuple(
                Server(f"http://127.0.0.1:{port}", "http", "127.0.0.1", port) for port in group),
                retries=1) for name, group in ports.items()},
            routes=(Route(split=(RouteSplit("stable", 1), RouteSplit("canary", 1)),
                          sticky="cookie:user"),)))
        peer = proxy.connect_client()
        peer.send(b"GET / HTTP/1.1\r\nHost: a\r\nCookie: user=%s\r\n\r\n"
                  % user_on("stable").encode())
        proxy.accept_backend().close()
        proxy.accept_backend().send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(status(peer.received()), 200)
        self.assertEqual(sorted(c[1] for c in proxy.reactor.tcpClients), [8001, 8003])
