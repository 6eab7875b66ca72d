"""
Tests for the filter plumbing: configuration, lookup by name, the chain's
order and verdicts (direct and deferred), answers, the testing helpers,
and the custom filter example of docs/filters.rst.
"""

from __future__ import annotations

import os
import sys

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.config_support import proxy_toml
from tests.filter_support import OK, field, filtered_proxy, request, status
from twistproxy.config import ConfigError, Filter, parse as loads
from twistproxy.filters import Answer, SinkWrapper, build_chain, client_ip
from twistproxy.interfaces import (
    IClosable,
    IFilterFactory,
    IRequestFilter,
    IResponseFilter,
    IResponseSink,
)
from twistproxy.testing import make_exchange, run_filters, send_response

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


class _Stamp(SinkWrapper):
    def __init__(self, sink, label):
        super().__init__(sink)
        self.label = label

    def response_head(self, x, resp, has_body, extra=None):
        extra = list(extra or ()) + [(b"X-Stamp", self.label)]
        self.sink.response_head(x, resp, has_body, extra)


@implementer(IRequestFilter, IResponseFilter)
class Recorder:
    """
    A filter that records when it runs and answers what it is told to.
    """

    log: list = []

    def __init__(self, label, verdict=None):
        self.label = label
        self.verdict = verdict

    def filter_request(self, x):
        self.log.append(self.label)
        verdict = self.verdict
        if callable(verdict):
            return verdict(x)
        return verdict

    def wrap_response(self, x, sink):
        return _Stamp(sink, self.label.encode("ascii"))


@implementer(IFilterFactory)
class RecorderFactory:
    name = "recorder"
    help = "Records."
    pending: list = []

    def fromConfig(self, reactor, options, path):
        verdict = options.get("answer")
        if verdict == "later":
            def verdict(x):
                d = Deferred()
                self.pending.append(d)
                return d
        elif verdict == "raise":
            def verdict(x):
                raise RuntimeError("boom")
        elif verdict is not None:
            verdict = Answer(verdict, [(b"X-Why", b"test")], reason="test")
        return Recorder(options["label"], verdict)


recorder = RecorderFactory()
NAME = "tests.test_filters_chain.recorder"


def _rec(label, **kw):
    return dict(name=NAME, label=label, **kw)


class ConfigTests(SynchronousTestCase):
    """
    C{filters} lists in configuration files.
    """

    @staticmethod
    def parse(listener: str, route: str):
        """
        A configuration whose listener C{web} and only route have the
        C{listener} and C{route} lines.
        """
        return loads(proxy_toml(listener, route, name="web"))

    def test_listener_and_route_filters(self):
        """
        Listener and route C{filters} arrays of tables become L{Filter}s
        with the name apart from the options, in order.
        """
        config = self.parse(
            'filters = [{ name = "access", deny = ["10.0.0.0/8"] }, { name = "x.y" }]',
            'filters = [{ name = "rate_limit", rate = 5 }]')
        self.assertEqual(config.listeners[0].filters, (
            Filter("access", {"deny": ["10.0.0.0/8"]}), Filter("x.y", {})))
        self.assertEqual(config.routes[0].filters, (Filter("rate_limit", {"rate": 5}),))

    def test_errors_name_the_path(self):
        """
        A filter that is no table, has no name or an empty one is refused
        with its path.
        """
        for listener, route, where in [
            ("filters = [1]", "", "listeners.web.filters[0]"),
            ("", "filters = [{ rate = 5 }]", "routes[0].filters[0].name"),
            ('filters = [{ name = "" }]', "", "listeners.web.filters[0].name"),
            ('filters = "access"', "", "listeners.web.filters"),
        ]:
            with self.assertRaises(ConfigError) as e:
                self.parse(listener, route)
            self.assertEqual(e.exception.path, where)

    def test_not_on_redirecting_listener(self):
        """
        A listener that only redirects to https cannot have filters.
        """
        with self.assertRaises(ConfigError) as e:
            self.parse('redirect_https = true\nfilters = []', "")
        self.assertEqual(e.exception.path, "listeners.web.filters")

    def test_unknown_filter(self):
        """
        An unknown filter name is refused at build time, listing the known
        ones.
        """
        with self.assertRaises(ConfigError) as e:
            build_chain(None, [Filter("nope")], "routes[0].filters")
        self.assertEqual(e.exception.path, "routes[0].filters[0].name")
        self.assertIn("rate_limit", e.exception.problem)

    def test_bad_option(self):
        """
        A built-in filter refuses an unknown option, naming its path.
        """
        with self.assertRaises(ConfigError) as e:
            build_chain(None, [Filter("access", {"deny": [], "denny": []})], "f")
        self.assertEqual(e.exception.path, "f[0].denny")

    def test_option_errors_read_as_core_ones(self):
        """
        A mistake in a filter's option is worded exactly as the same
        mistake in one of the proxy's own settings: the filters' checks
        are the configuration schema's.
        """
        for core, (name, options), problem in [
            ("max_connections = 0", ("rate_limit", {"rate": 1, "burst": 0}),
             "must be at least 1 (got 0)"),
            ("max_connections = true", ("connection_limit", {"max": True}),
             "must be an integer, not a boolean"),
            ("[upstreams.app.sticky]\nsecure = 1", ("cors", {"origins": ["*"], "credentials": 1}),
             "must be a boolean (true or false), not an integer"),
            ("[[routes]]\nupstream = 'app'\nmethods = ['G T']", ("block", {"methods": "G T"}),
             "method 'G T' is not a valid HTTP token"),
        ]:
            with self.assertRaises(ConfigError) as e:
                loads(proxy_toml(route=None) + core)
            with self.assertRaises(ConfigError) as f:
                build_chain(None, [Filter(name, options)], "f")
            self.assertEqual([e.exception.problem, f.exception.problem], [problem] * 2)

    def test_connection_filter_on_route(self):
        """
        A connection filter is refused on a route: it has no connections.
        """
        with self.assertRaises(ConfigError) as e:
            build_chain(None, [Filter("connection_limit", {"max": 2})], "routes[0].filters")
        self.assertEqual(e.exception.path, "routes[0].filters[0].name")

    def test_no_filters_no_chain(self):
        """
        No filters, no chain: the hot path has nothing to run.
        """
        self.assertIsNone(build_chain(None, [], "f"))
        proxy = filtered_proxy()
        self.assertIsNone(proxy.factory.filters)

    def test_builtin_factories_provide_interface(self):
        """
        Every built-in filter factory provides L{IFilterFactory}.
        """
        from twisted.plugin import getPlugins

        import twistproxy.plugins

        names = set()
        for factory in getPlugins(IFilterFactory, twistproxy.plugins):
            verifyObject(IFilterFactory, factory)
            names.add(factory.name)
        self.assertTrue({"access", "rate_limit", "connection_limit"} <= names, names)


class ChainTests(SynchronousTestCase):
    """
    Running filters over requests through a whole in-memory proxy.
    """

    def setUp(self):
        Recorder.log = []
        RecorderFactory.pending = []

    def test_order_listener_then_route(self):
        """
        The listener's filters run before the route's, each list in order;
        responses pass the route's wrappers first, so the first listener
        filter's field comes last.
        """
        proxy = filtered_proxy(listener=[_rec("a"), _rec("b")], route=[_rec("c")])
        got, sent = request(proxy)
        self.assertEqual(Recorder.log, ["a", "b", "c"])
        self.assertIsNotNone(sent)
        self.assertEqual(status(got), 200)
        head = got.split(b"\r\n\r\n")[0]
        self.assertLess(head.index(b"X-Stamp: c"), head.index(b"X-Stamp: a"))
        self.assertTrue(got.endswith(b"hello"))

    def test_answer_stops_the_chain(self):
        """
        A filter's answer reaches the client with its fields; later filters
        do not run, nothing goes to a backend, and the earlier filters'
        wrappers see the answer.  The access log has the reason.
        """
        proxy = filtered_proxy(listener=[_rec("a"), _rec("b", answer=403), _rec("c")])
        got, sent = request(proxy)
        self.assertIsNone(sent)
        self.assertEqual(Recorder.log, ["a", "b"])
        self.assertEqual(status(got), 403)
        self.assertEqual(field(got, b"X-Why"), b"test")
        self.assertEqual(field(got, b"X-Stamp"), b"a")
        self.assertTrue(got.endswith(b"403 Forbidden\n"))
        self.assertEqual(proxy.exchanges[-1].reason, "test")
        self.assertEqual(proxy.exchanges[-1].status, 403)

    def test_answer_keeps_connection(self):
        """
        After a filter's answer to a bodiless request, the connection
        serves the next request.
        """
        proxy = filtered_proxy(route=[_rec("a", answer=429)])
        peer = proxy.connect_client()
        peer.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n" * 2)
        got = peer.received()
        self.assertEqual(got.count(b"HTTP/1.1 429 Too Many Requests"), 2)
        self.assertFalse(peer.closed)

    def test_answer_to_head(self):
        """
        An answer to HEAD has its length but no body.
        """
        proxy = filtered_proxy(route=[_rec("a", answer=403)])
        got, _ = request(proxy, b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(status(got), 403)
        self.assertTrue(got.endswith(b"\r\n\r\n"))
        self.assertIsNotNone(field(got, b"Content-Length"))

    def test_answer_with_unread_body_closes(self):
        """
        An answer given before the request body was read closes the
        connection: the unread body cannot be told from a next request.
        """
        proxy = filtered_proxy(route=[_rec("a", answer=403)])
        got, _ = request(proxy, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n")
        self.assertEqual(status(got), 403)
        self.assertEqual(field(got, b"Connection"), b"close")

    def test_deferred_verdict(self):
        """
        A filter that returns a Deferred holds the request until it fires;
        C{None} lets it through to the next filter and the backend.
        """
        proxy = filtered_proxy(listener=[_rec("a", answer="later"), _rec("b")])
        peer = proxy.connect_client()
        peer.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(Recorder.log, ["a"])
        self.assertEqual(proxy.backend_attempts(), [])
        RecorderFactory.pending[0].callback(None)
        self.assertEqual(Recorder.log, ["a", "b"])
        backend = proxy.accept_backend()
        backend.send(OK)
        got = peer.received()
        self.assertIn(b"X-Stamp: a\r\n", got)
        self.assertIn(b"X-Stamp: b\r\n", got)

    def test_deferred_answer(self):
        """
        A Deferred firing with an L{Answer} answers the client.
        """
        proxy = filtered_proxy(route=[_rec("a", answer="later")])
        peer = proxy.connect_client()
        peer.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        RecorderFactory.pending[0].callback(Answer(401, reason="late"))
        self.assertEqual(status(peer.received()), 401)
        self.assertEqual(proxy.backend_attempts(), [])

    def test_client_gone_while_deciding(self):
        """
        When the client leaves while a filter decides, the request goes no
        further: no backend connection, no upstream group counted.
        """
        proxy = filtered_proxy(route=[_rec("a", answer="later")])
        peer = proxy.connect_client()
        peer.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        peer.close()
        RecorderFactory.pending[0].callback(None)
        self.assertEqual(proxy.backend_attempts(), [])
        self.assertEqual(proxy.forwarder.groups["app"].in_flight, 0)
        self.assertEqual(proxy.exchanges[-1].status, 499)

    def test_failing_filter(self):
        """
        A filter that raises, or whose Deferred fails, is answered with
        500 (closed, not open) and logged.
        """
        proxy = filtered_proxy(listener=[_rec("a", answer="raise")])
        got, sent = request(proxy)
        self.assertEqual((status(got), sent), (500, None))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        proxy = filtered_proxy(listener=[_rec("a", answer="later")])
        peer = proxy.connect_client()
        peer.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        RecorderFactory.pending[-1].errback(ValueError("late boom"))
        self.assertEqual(status(peer.received()), 500)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_no_route_passes_listener_wrappers(self):
        """
        The 404 for a request no route matches goes through the listener's
        response filters.
        """
        from twistproxy.config import Listener, ProxyConfig, Route, Server, UpstreamGroup
        from tests.filter_support import filters
        from twistproxy.testing import MemoryProxy

        proxy = MemoryProxy(ProxyConfig(
            listeners=(Listener("main", "tcp:8080", filters=filters(_rec("a"))),),
            upstreams={"app": UpstreamGroup(
                "app", (Server("http://127.0.0.1:8001", "http", "127.0.0.1", 8001),))},
            routes=(Route("app", path_prefix="/api"),),
        ))
        got, _ = request(proxy)
        self.assertEqual(status(got), 404)


class H2ChainTests(SynchronousTestCase):
    """
    Filters' answers over HTTP/2.
    """

    def test_answer_over_h2(self):
        """
        An HTTP/2 stream gets a filter's answer with its fields.
        """
        from tests.test_h2 import H2Client, _request

        Recorder.log = []
        client = H2Client(filtered_proxy(route=[_rec("a", answer=429)]))
        sid = client.request(_request())
        self.assertEqual(client.status(sid), b"429")
        self.assertEqual(client.headers(sid)[b"x-why"], b"test")
        self.assertEqual(client.body(sid), b"429 Too Many Requests\n")
        self.assertTrue(client.ended(sid))


def _load_example():
    """
    Import examples/custom_filter.py (not in a package) from its path.
    """
    import importlib.util

    path = os.path.join(EXAMPLES, "custom_filter.py")
    spec = importlib.util.spec_from_file_location("custom_filter", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class CustomFilterExampleTests(SynchronousTestCase):
    """
    The custom filter of docs/filters.rst (examples/custom_filter.py),
    tested the way the page tells authors to test theirs.
    """

    def setUp(self):
        self.module = _load_example()
        self.filter = self.module.require_key.fromConfig(None, {"keys": ["s3cret"]}, "f")

    def test_provides_interfaces(self):
        """
        The factory and the filter provide their interfaces.
        """
        verifyObject(IFilterFactory, self.module.require_key)
        verifyObject(IRequestFilter, self.filter)
        verifyObject(IResponseFilter, self.filter)

    def test_refuses_without_key(self):
        """
        Without the key, the request is answered with 401 and
        C{WWW-Authenticate}, through the testing helpers.
        """
        x = make_exchange(headers=[("X-Api-Key", "wrong")])
        self.assertFalse(run_filters([self.filter], x))
        self.assertEqual(x.downstream.status, 401)
        self.assertEqual(x.downstream.field(b"www-authenticate"), b"ApiKey")
        self.assertEqual(x.downstream.body, b"401 Unauthorized\n")

    def test_passes_with_key_and_stamps(self):
        """
        With the key the request passes, and the response gets the
        filter's field, body untouched.
        """
        x = make_exchange(headers=[("X-Api-Key", "s3cret")])
        self.assertTrue(run_filters([self.filter], x))
        send_response(x, 200, [("Content-Type", "text/plain")], [b"he", b"llo"], length=5)
        sink = x.downstream
        verifyObject(IResponseSink, sink)
        self.assertEqual((sink.status, sink.body, sink.ended), (200, b"hello", True))
        self.assertEqual(sink.field(b"X-Api-Key-Seen"), b"yes")

    def test_named_by_dotted_path(self):
        """
        A configuration names it by its dotted path, options checked.
        """
        sys.path.insert(0, EXAMPLES)
        self.addCleanup(sys.path.remove, EXAMPLES)
        self.addCleanup(sys.modules.pop, "custom_filter", None)
        chain = build_chain(None, [Filter("custom_filter.require_key", {"keys": ["k"]})], "f")
        self.assertEqual(chain.filters[0].keys, frozenset(["k"]))
        with self.assertRaises(ConfigError) as e:
            build_chain(None, [Filter("custom_filter.require_key", {})], "f")
        self.assertEqual(e.exception.path, "f[0].keys")


class ClientIPTests(SynchronousTestCase):
    """
    L{client_ip}: the address filters match and count by.
    """

    def test_untrusted_peer(self):
        """
        From an untrusted peer, forwarding fields are ignored.
        """
        x = make_exchange(headers=[("Forwarded", "for=198.51.100.1"),
                                   ("X-Forwarded-For", "198.51.100.2")])
        self.assertEqual(client_ip(x), "192.0.2.7")

    def test_trusted_forwarded(self):
        """
        From a trusted peer, the last C{Forwarded} element's C{for} counts
        (quoted IPv6 with a port, or IPv4 with a port, too).
        """
        for value, expected in [
            ("for=198.51.100.9, for=198.51.100.1;proto=https", "198.51.100.1"),
            ('for="[2001:db8::1]:4711"', "2001:db8::1"),
            ('for="198.51.100.3:80"', "198.51.100.3"),
        ]:
            x = make_exchange(headers=[("Forwarded", value)], trusted=True)
            self.assertEqual(client_ip(x), expected, value)

    def test_trusted_x_forwarded_for(self):
        """
        Without C{Forwarded}, the last C{X-Forwarded-For} entry counts.
        """
        x = make_exchange(headers=[("X-Forwarded-For", "198.51.100.9, 198.51.100.2")],
                          trusted=True)
        self.assertEqual(client_ip(x), "198.51.100.2")

    def test_trusted_garbage(self):
        """
        A trusted peer's unusable field (an obfuscated node) leaves the
        peer's own address.
        """
        for value in ["for=_hidden", "for=unknown", "proto=https"]:
            x = make_exchange(headers=[("Forwarded", value)], trusted=True)
            self.assertEqual(client_ip(x), "192.0.2.7", value)


@implementer(IRequestFilter, IClosable)
class Closable:
    """
    A filter that says when it is closed.
    """

    closed: list = []

    def __init__(self, label):
        self.label = label

    def filter_request(self, x):
        return None

    def close(self):
        self.closed.append(self.label)


@implementer(IFilterFactory)
class ClosableFactory:
    name = "closable"
    help = "Says when it is closed."

    def fromConfig(self, reactor, options, path):
        return Closable(options["label"])


closable = ClosableFactory()


class ServiceTests(SynchronousTestCase):
    """
    How L{ProxyService} builds, replaces and closes filters.
    """

    CONFIG = """
[listeners.plain]
endpoint = "tcp:8080"
[listeners.filtered]
endpoint = "tcp:8081"
filters = [{ name = "tests.test_filters_chain.closable", label = "listener" }]
[upstreams.app]
servers = ["http://127.0.0.1:8001"]
[[routes]]
upstream = "app"
filters = [{ name = "tests.test_filters_chain.closable", label = "%s" }]
"""

    def setUp(self):
        from twisted.internet.testing import MemoryReactorClock

        from twistproxy.service import ProxyService

        Closable.closed = []
        self.path = self.mktemp()
        self._write("route-1")
        from twistproxy.config import load

        self.service = ProxyService(load(self.path), MemoryReactorClock())

    def _write(self, label):
        with open(self.path, "w") as f:
            f.write(self.CONFIG % label)

    def test_listener_factories(self):
        """
        A listener with filters gets a factory of its own with its chain;
        one without keeps the shared factory, with no chain.
        """
        plain = self.service.listeners["plain"].factory
        filtered = self.service.listeners["filtered"].factory
        self.assertIsNone(plain.filters)
        self.assertIsNot(plain, filtered)
        self.assertEqual(filtered.filters.filters[0].label, "listener")

    def test_reload_closes_old_route_filters(self):
        """
        A reload builds the routes' filters anew and closes the old ones;
        the listener's stay.
        """
        self._write("route-2")
        self.assertEqual(self.service.reload(), [])
        self.assertEqual(Closable.closed, ["route-1"])
        labels = [rt.filters.filters[0].label for rt in self.service.forwarder._routes]
        self.assertEqual(labels, ["route-2"])

    def test_stop_closes_all(self):
        """
        Stopping the proxy closes the listeners' and the routes' filters.
        """
        self.service.startService()
        self.service.stopService()
        self.assertEqual(sorted(Closable.closed), ["listener", "route-1"])

    def test_bad_listener_filter_names_the_file(self):
        """
        A bad listener filter is a configuration error with the file and
        the path.
        """
        from twisted.internet.testing import MemoryReactorClock

        from twistproxy.config import load
        from twistproxy.service import ProxyService

        with open(self.path, "w") as f:
            f.write(self.CONFIG.replace("tests.test_filters_chain.closable\", label = "
                                        "\"listener\"", "nope\"") % "r")
        with self.assertRaises(ConfigError) as e:
            ProxyService(load(self.path), MemoryReactorClock())
        self.assertEqual((e.exception.path, e.exception.source),
                         ("listeners.filtered.filters[0].name", self.path))


class WithFieldsTests(SynchronousTestCase):
    def test_copy(self):
        """
        L{with_fields} gives a copy of a response head with other fields and
        leaves the head it was given as it was, so that a response filter
        never changes what other sinks saw.
        """
        from twistproxy.filters import with_fields
        from twistproxy.http.answers import own_head

        head = own_head(200, b"OK", [(b"A", b"1")], 5)
        edited = with_fields(head, [(b"B", b"2")])
        self.assertEqual(head.headers, [(b"A", b"1")])
        self.assertEqual(edited.headers, [(b"B", b"2")])
        self.assertEqual((edited.status, edited.reason, edited.content_length, edited.chunked,
                          edited.keep_alive, edited.version),
                         (200, b"OK", 5, False, True, (1, 1)))
