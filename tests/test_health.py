"""
Tests for L{twistproxy.upstream.health}: the built-in health checks and their
factories, finding factories by name, L{HealthMonitor} and L{SlowStart}.

Everything runs on a fake clock (L{Clock}, L{MemoryReactorClock}); the HTTP
check talks to in-memory resources through L{StubTreq} or to a
L{StringTransport}.
"""

from __future__ import annotations

from itertools import chain, repeat
from typing import Any, List, Optional, Tuple

from service_identity import VerificationError
from service_identity.exceptions import DNSMismatch
from service_identity.hazmat import DNS_ID
from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger, globalLogPublisher
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone, ResponseNeverReceived
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer
from zope.interface.verify import verifyObject

from twistproxy.config import ConfigError
from twistproxy.interfaces import (
    IBackend,
    IHealthCheck,
    IHealthCheckFactory,
    IProbingHealthCheck,
)
from twistproxy.plugins import twistproxy_health
from twistproxy import components
from twistproxy.upstream.backend import Backend
from twistproxy.upstream.health import (
    MAX_BODY,
    HealthMonitor,
    HTTPHealthCheck,
    HTTPHealthCheckFactory,
    SlowStart,
    TCPHealthCheck,
    TCPHealthCheckFactory,
    _BodyProbe,
    build_health_check,
    find_health_check_factory,
    parse_status_ranges,
)


def _backend(index: int = 0, host: str = "127.0.0.1", weight: int = 1, scheme: str = "http") -> Backend:
    port = 8001 + index
    name = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return Backend(name, scheme, host, port, weight)


# Factories and finding them


@implementer(IHealthCheckFactory)
class _AlwaysFactory:
    """
    A third-party factory that is not a dropin, found by its dotted path.
    """

    name = "always"
    help = "Always passes."

    def fromConfig(self, reactor, options, path):
        return _FakeCheck([True] * 1000)


alwaysFactory = _AlwaysFactory()
notAFactory = object()


def _start_stop_events(factory) -> List[dict]:
    """
    The log events of starting and stopping C{factory}, as the reactor
    does around each connection attempt.
    """
    events: List[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        factory.doStart()
        factory.doStop()
    finally:
        globalLogPublisher.removeObserver(events.append)
    return events


class FindHealthCheckFactoryTests(SynchronousTestCase):
    """
    Tests for L{find_health_check_factory} and L{build_health_check}.
    """

    def test_builtins_by_name(self) -> None:
        """
        C{'http'} and C{'tcp'} name the built-in factories, found among the
        dropins of L{twistproxy.plugins}.
        """
        self.assertIsInstance(find_health_check_factory("http", "p"), HTTPHealthCheckFactory)
        self.assertIsInstance(find_health_check_factory("tcp", "p"), TCPHealthCheckFactory)

    def test_dropin_exports_factories(self) -> None:
        """
        The health dropin exports one provider of L{IHealthCheckFactory} and
        L{IPlugin} per built-in check, each with a name and a help line.
        """
        for factory, name in [
            (twistproxy_health.httpHealthCheck, "http"),
            (twistproxy_health.tcpHealthCheck, "tcp"),
        ]:
            self.assertTrue(verifyObject(IHealthCheckFactory, factory))
            self.assertTrue(IPlugin.providedBy(factory))
            self.assertEqual(factory.name, name)
            self.assertTrue(factory.help)

    def test_unknown_name(self) -> None:
        """
        An unknown name is a L{ConfigError} at the given path that lists
        the known names.
        """
        e = self.assertRaises(ConfigError, find_health_check_factory, "icmp", "upstreams.api.health.type")
        self.assertEqual(e.path, "upstreams.api.health.type")
        self.assertIn("unknown health check 'icmp'", e.problem)
        self.assertIn("http, tcp", e.problem)

    def test_ambiguous_name(self) -> None:
        """
        When several plugins claim a name, the error says so and names
        them.
        """
        self.patch(components, "getPlugins", lambda iface, package: [alwaysFactory, alwaysFactory])
        e = self.assertRaises(ConfigError, find_health_check_factory, "always", "x.type")
        self.assertIn("ambiguous", e.problem)
        self.assertIn("_AlwaysFactory", e.problem)

    def test_dotted_path(self) -> None:
        """
        A name with a dot is the dotted path of a factory object.
        """
        self.assertIs(
            find_health_check_factory("tests.test_health.alwaysFactory", "p"), alwaysFactory
        )

    def test_dotted_path_errors(self) -> None:
        """
        A dotted path that names nothing, a class instead of an instance,
        or an object that is not a factory is a L{ConfigError} at the path.
        """
        for name, problem in [
            ("tests.test_health.missing", "cannot find health check"),
            ("tests.no_such_module.factory", "cannot find health check"),
            ("tests.test_health._AlwaysFactory", "name an instance of it instead"),
            ("tests.test_health.notAFactory", "is not a health check factory"),
        ]:
            e = self.assertRaises(ConfigError, find_health_check_factory, name, "h.type")
            self.assertEqual(e.path, "h.type")
            self.assertIn(problem, e.problem)

    def test_build_reports_paths(self) -> None:
        """
        L{build_health_check} reports a bad name at C{<path>.type} and a bad
        option at C{<path>.<key>}, and otherwise returns a check.
        """
        e = self.assertRaises(ConfigError, build_health_check, "nope", Clock(), {}, "upstreams.api.health")
        self.assertEqual(e.path, "upstreams.api.health.type")
        e = self.assertRaises(
            ConfigError, build_health_check, "tcp", Clock(), {"path": "/"}, "upstreams.api.health"
        )
        self.assertEqual(e.path, "upstreams.api.health.path")
        check = build_health_check("tcp", MemoryReactorClock(), {"timeout": 1}, "upstreams.api.health")
        self.assertTrue(verifyObject(IHealthCheck, check))


class HTTPHealthCheckFactoryTests(SynchronousTestCase):
    """
    Tests for the options of C{type = "http"}.
    """

    def build(self, **options: Any) -> HTTPHealthCheck:
        return HTTPHealthCheckFactory().fromConfig(MemoryReactorClock(), options, "upstreams.api.health")

    def error(self, **options: Any) -> ConfigError:
        return self.assertRaises(ConfigError, self.build, **options)

    def test_defaults(self) -> None:
        """
        Without options the check is C{GET /}, passes on 200-399, has a
        2-second timeout and no body, Host or extra header expectations.
        """
        check = self.build()
        self.assertTrue(verifyObject(IHealthCheck, check))
        self.assertEqual(
            (check.method, check.path, check.expect_status, check.expect_body,
             check.host, check.timeout, check.headers, check.port),
            ("GET", "/", ((200, 399),), None, None, 2.0, (), None),
        )

    def test_all_options(self) -> None:
        """
        Every option is taken, and the method is upper-cased.
        """
        check = self.build(
            path="/healthz?full=1", method="head", expect_status=["200-299", 418],
            expect_body="ok", host="api.example", timeout=0.5,
            headers={"X-Check": "1"}, port=9000,
        )
        self.assertEqual(
            (check.method, check.path, check.expect_status, check.expect_body,
             check.host, check.timeout, check.headers, check.port),
            ("HEAD", "/healthz?full=1", ((200, 299), (418, 418)), b"ok",
             "api.example", 0.5, (("X-Check", "1"),), 9000),
        )

    def test_unknown_option(self) -> None:
        """
        An unknown option is reported at its path, with the allowed keys.
        """
        e = self.error(url="/")
        self.assertEqual(e.path, "upstreams.api.health.url")
        self.assertIn("path, method, expect_status, expect_body, host, timeout, headers, port", e.problem)

    def test_unknown_option_near_miss(self) -> None:
        """
        An unknown option close to a real one is suggested, as for the
        balancers' options.
        """
        e = self.error(expect_statuses="200")
        self.assertEqual(e.path, "upstreams.api.health.expect_statuses")
        self.assertIn("(did you mean 'expect_status'?)", e.problem)

    def test_bad_values(self) -> None:
        """
        Each option of the wrong type or out of range is reported at its
        own path.
        """
        for options, path in [
            ({"path": "healthz"}, "path"),
            ({"path": "/a b"}, "path"),
            ({"path": "/caf\u00e9"}, "path"),
            ({"path": 1}, "path"),
            ({"method": "GE T"}, "method"),
            ({"method": "GET\n"}, "method"),
            ({"expect_status": "ok"}, "expect_status"),
            ({"expect_status": ["200", "x"]}, "expect_status[1]"),
            ({"expect_body": 1}, "expect_body"),
            ({"host": "a b"}, "host"),
            ({"host": ""}, "host"),
            ({"timeout": 0}, "timeout"),
            ({"timeout": -1}, "timeout"),
            ({"timeout": "2"}, "timeout"),
            ({"timeout": True}, "timeout"),
            ({"port": 0}, "port"),
            ({"port": 70000}, "port"),
            ({"headers": "X: 1"}, "headers"),
            ({"headers": {"Host": "x"}}, "headers.Host"),
            ({"headers": {"connection": "keep-alive"}}, "headers.connection"),
            ({"headers": {"X-A": "1\r\nX-B: 2"}}, "headers.X-A"),
            ({"headers": {"X A": "1"}}, "headers.X A"),
            ({"headers": {"X-A\n": "1"}}, "headers.X-A\n"),
            ({"headers": {"X-A": 1}}, "headers.X-A"),
        ]:
            e = self.error(**options)
            self.assertEqual(e.path, f"upstreams.api.health.{path}", options)

    def test_host_header_hint(self) -> None:
        """
        Setting Host in C{headers} points to the C{host} option.
        """
        self.assertIn("use the host option", self.error(headers={"host": "x"}).problem)


class StatusRangeTests(SynchronousTestCase):
    """
    Tests for L{parse_status_ranges}.
    """

    def test_forms(self) -> None:
        """
        A code (as text or integer), a range, and a list of those.
        """
        self.assertEqual(parse_status_ranges("200", "p"), ((200, 200),))
        self.assertEqual(parse_status_ranges(204, "p"), ((204, 204),))
        self.assertEqual(parse_status_ranges("200-299", "p"), ((200, 299),))
        self.assertEqual(parse_status_ranges(" 200 - 299 ", "p"), ((200, 299),))
        self.assertEqual(parse_status_ranges(["200", "301-302"], "p"), ((200, 200), (301, 302)))

    def test_errors(self) -> None:
        """
        Codes outside 100-599, backwards ranges, empty lists and other types
        are errors at the path (of the list item, in a list).
        """
        for value, path, problem in [
            ("99", "p", "must be a status code"),
            ("600", "p", "between 100 and 599"),
            ("300-200", "p", "backwards"),
            ([], "p", "at least one"),
            (["200", True], "p[1]", "must be a status code"),
            ("2xx", "p", "must be a status code"),
            (2.5, "p", "must be a status code"),
        ]:
            e = self.assertRaises(ConfigError, parse_status_ranges, value, "p")
            self.assertEqual(e.path, path)
            self.assertIn(problem, e.problem)


class TCPHealthCheckFactoryTests(SynchronousTestCase):
    """
    Tests for the options of C{type = "tcp"}.
    """

    def test_options(self) -> None:
        """
        C{timeout} defaults to 2 seconds and C{port} to the backend's.
        """
        factory = TCPHealthCheckFactory()
        check = factory.fromConfig(MemoryReactorClock(), {}, "h")
        self.assertEqual((check.timeout, check.port), (2.0, None))
        check = factory.fromConfig(MemoryReactorClock(), {"timeout": 5, "port": 22}, "h")
        self.assertEqual((check.timeout, check.port), (5.0, 22))

    def test_errors(self) -> None:
        """
        Unknown options and bad values are errors at their path.
        """
        factory = TCPHealthCheckFactory()
        e = self.assertRaises(ConfigError, factory.fromConfig, Clock(), {"path": "/"}, "h")
        self.assertEqual(e.path, "h.path")
        self.assertIn("takes timeout, port", e.problem)
        e = self.assertRaises(ConfigError, factory.fromConfig, Clock(), {"timeout": "x"}, "h")
        self.assertEqual(e.path, "h.timeout")


# The HTTP check


class _Site(Resource):
    """
    A backend's resource tree: records requests, answers with C{code},
    C{body} and C{headers}.
    """

    isLeaf = True

    def __init__(self, code: int = 200, body: bytes = b"ok", headers=None) -> None:
        super().__init__()
        self.code = code
        self.body = body
        self.headers = headers or {}
        self.requests: List[Any] = []

    def render(self, request):
        self.requests.append(request)
        request.setResponseCode(self.code)
        for name, value in self.headers.items():
            request.setHeader(name, value)
        return self.body


class _SlowSite(Resource):
    """
    Sends the head and part of the body, then nothing more.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: List[Any] = []
        self.finished: List[Any] = []

    def render(self, request):
        self.requests.append(request)
        request.notifyFinish().addBoth(self.finished.append)
        request.write(b"partial ")
        return NOT_DONE_YET


class _RecordingClient:
    """
    An HTTP client whose requests never answer unless told to.
    """

    def __init__(self) -> None:
        self.requests: List[Tuple[str, str, dict]] = []
        self.deferreds: List[Deferred] = []
        self.cancelled: List[str] = []

    def request(self, method, url, **kwargs):
        self.requests.append((method, url, kwargs))
        d: Deferred = Deferred(lambda d: self.cancelled.append(url))
        self.deferreds.append(d)
        return d


class _Producer:
    """
    The transport of a response body: only stopProducing.
    """

    stopped = False

    def stopProducing(self) -> None:
        self.stopped = True


class _StrictProducer(_Producer):
    """
    A body transport that, like a real one, cannot be resumed once stopped.
    """

    def resumeProducing(self) -> None:
        if self.stopped:
            raise RuntimeError("Cannot resume a stopped producer")


class HTTPHealthCheckTests(SynchronousTestCase):
    """
    Tests for L{HTTPHealthCheck} through L{StubTreq} and fake clients.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.site = _Site()
        self.backend = _backend()

    def probe(self, backend: Optional[Backend] = None, **kwargs: Any) -> Tuple[bool, str]:
        check = HTTPHealthCheck(self.clock, client=StubTreq(self.site), **kwargs)
        return self.successResultOf(check.probe(backend or self.backend))

    def test_provides_interface(self) -> None:
        """
        The check provides L{IHealthCheck}.
        """
        self.assertTrue(verifyObject(IHealthCheck, HTTPHealthCheck(self.clock, client=StubTreq(self.site))))

    def test_check_fires_with_bool(self) -> None:
        """
        C{check} fires with C{True} or C{False}, nothing else.
        """
        check = HTTPHealthCheck(self.clock, client=StubTreq(self.site))
        self.assertIs(self.successResultOf(check.check(self.backend)), True)
        self.site.code = 500
        self.assertIs(self.successResultOf(check.check(self.backend)), False)

    def test_default_status_range(self) -> None:
        """
        By default 200 to 399 pass and everything else fails, with the
        status in the detail.
        """
        for code, passed in [(200, True), (204, True), (302, True), (399, True),
                             (400, False), (404, False), (503, False)]:
            self.site.code = code
            self.assertEqual(self.probe(), (passed, f"status {code}"), code)

    def test_expect_status_ranges(self) -> None:
        """
        C{expect_status} decides which statuses pass.
        """
        ranges = ((200, 299), (418, 418))
        for code, passed in [(200, True), (299, True), (302, False), (418, True), (419, False)]:
            self.site.code = code
            self.assertEqual(self.probe(expect_status=ranges)[0], passed, code)

    def test_no_redirects_followed(self) -> None:
        """
        A redirect is judged by its own status; the check does not follow
        it.
        """
        self.site.code = 302
        self.site.headers = {b"location": b"/elsewhere"}
        self.assertEqual(self.probe(expect_status=((302, 302),)), (True, "status 302"))
        self.assertEqual(len(self.site.requests), 1)

    def test_request(self) -> None:
        """
        The check asks the backend's address for C{path} with C{method},
        C{User-Agent: twistproxy-health}, C{Connection: close}, Host the
        backend's host and port, and any extra headers.
        """
        self.probe(path="/healthz?deep=1", method="POST", headers={"X-Check": "yes"})
        request = self.site.requests[0]
        self.assertEqual(request.method, b"POST")
        self.assertEqual(request.uri, b"/healthz?deep=1")
        headers = request.requestHeaders
        self.assertEqual(headers.getRawHeaders(b"host"), [b"127.0.0.1:8001"])
        self.assertEqual(headers.getRawHeaders(b"user-agent"), [b"twistproxy-health"])
        self.assertEqual(headers.getRawHeaders(b"connection"), [b"close"])
        self.assertEqual(headers.getRawHeaders(b"x-check"), [b"yes"])

    def test_host_option(self) -> None:
        """
        The C{host} option replaces the Host header.
        """
        self.probe(host="api.example.com")
        self.assertEqual(
            self.site.requests[0].requestHeaders.getRawHeaders(b"host"), [b"api.example.com"]
        )

    def test_head(self) -> None:
        """
        A HEAD check passes on the status alone.
        """
        self.assertEqual(self.probe(method="HEAD"), (True, "status 200"))
        self.assertEqual(self.site.requests[0].method, b"HEAD")

    def test_url(self) -> None:
        """
        The URL is built from the backend's scheme, host (IPv6 in brackets)
        and port, or the C{port} option, and C{path}.
        """
        client = _RecordingClient()
        check = HTTPHealthCheck(self.clock, client=client, path="/h", port=9000)
        check.probe(_backend(0, host="::1", scheme="https"))
        check = HTTPHealthCheck(self.clock, client=client)
        check.probe(_backend(1, host="backend.internal"))
        self.assertEqual(
            [(method, url) for method, url, kwargs in client.requests],
            [("GET", "https://[::1]:9000/h"), ("GET", "http://backend.internal:8002/")],
        )
        kwargs = client.requests[0][2]
        self.assertIs(kwargs["allow_redirects"], False)
        self.assertIs(kwargs["reactor"], self.clock)

    def test_expect_body(self) -> None:
        """
        With C{expect_body}, the body must contain the text.
        """
        self.site.body = b"status: ok\n"
        self.assertEqual(self.probe(expect_body="ok"), (True, "status 200"))
        passed, detail = self.probe(expect_body="healthy")
        self.assertFalse(passed)
        self.assertIn("status 200, body does not contain the expected text", detail)

    def test_expect_body_utf8(self) -> None:
        """
        C{expect_body} is matched as UTF-8.
        """
        self.site.body = "\u00e9tat: pr\u00eat".encode("utf-8")
        self.assertTrue(self.probe(expect_body="pr\u00eat")[0])

    def test_expect_body_wrong_status(self) -> None:
        """
        A wrong status fails even when the body matches.
        """
        self.site.code = 500
        self.assertEqual(self.probe(expect_body="ok"), (False, "status 500"))

    def test_expect_body_bounded(self) -> None:
        """
        Only the first L{MAX_BODY} bytes are searched.
        """
        self.site.body = b"x" * MAX_BODY + b"ok"
        passed, detail = self.probe(expect_body="ok")
        self.assertFalse(passed)
        self.assertIn(f"first {MAX_BODY} bytes", detail)
        self.site.body = b"x" * (MAX_BODY - 2) + b"ok" + b"x" * 1000
        self.assertTrue(self.probe(expect_body="ok")[0])

    def test_client_raises(self) -> None:
        """
        A client that raises makes the check fail, not errback.
        """

        class _Broken:
            def request(self, method, url, **kwargs):
                raise ValueError("bad url")

        check = HTTPHealthCheck(self.clock, client=_Broken())
        self.assertEqual(
            self.successResultOf(check.probe(self.backend)),
            (False, "request failed: ValueError: bad url"),
        )

    def test_connection_refused(self) -> None:
        """
        A request that errbacks makes the check fail with the reason.
        """

        class _Refused:
            def request(self, method, url, **kwargs):
                return fail(ConnectionRefusedError())

        check = HTTPHealthCheck(self.clock, client=_Refused())
        passed, detail = self.successResultOf(check.probe(self.backend))
        self.assertFalse(passed)
        self.assertIn("ConnectionRefusedError", detail)

    def test_certificate_for_another_host(self) -> None:
        """
        A backend whose certificate is for another host fails the check,
        and the detail says so in words (as the web client reports it,
        wrapped in ResponseNeverReceived).
        """
        mismatch = Failure(VerificationError(errors=[DNSMismatch(DNS_ID("api.internal"))]))

        class _Mismatch:
            def request(self, method, url, **kwargs):
                return fail(ResponseNeverReceived([mismatch]))

        check = HTTPHealthCheck(self.clock, client=_Mismatch())
        self.assertEqual(self.successResultOf(check.probe(self.backend)),
                         (False, "TLS failed: the certificate is not for api.internal"))

    def test_timeout(self) -> None:
        """
        A request that does not answer within C{timeout} is cancelled and
        the check fails, leaving no timer behind.
        """
        client = _RecordingClient()
        check = HTTPHealthCheck(self.clock, client=client, timeout=2.0)
        d = check.probe(self.backend)
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(d), (False, "timed out after 2s"))
        self.assertEqual(client.cancelled, ["http://127.0.0.1:8001/"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timeout_covers_body(self) -> None:
        """
        The timeout covers reading the body too: a backend that sends a
        head and stalls fails the check, and its connection is dropped.
        """
        site = _SlowSite()
        stub = StubTreq(site)
        check = HTTPHealthCheck(self.clock, client=stub, expect_body="ok", timeout=3.0)
        d = check.probe(self.backend)
        stub.flush()
        self.assertEqual(len(site.requests), 1)
        self.assertNoResult(d)
        self.clock.advance(3.0)
        self.assertEqual(self.successResultOf(d), (False, "timed out after 3s"))
        stub.flush()
        self.assertEqual(len(site.finished), 1)
        self.assertIsInstance(site.finished[0], Failure)

    def test_answer_in_time_cancels_timer(self) -> None:
        """
        An answer within the timeout leaves no timer behind.
        """
        self.probe()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_body_buffered_before_delivery(self) -> None:
        """
        When the body (or the part that decides) arrived before the check
        asked for it, the check answers and stops the transport only after
        the response has finished handing the body over, as
        L{IResponse.deliverBody} requires.
        """
        transport = _StrictProducer()

        class _Response:
            code = 200

            def deliverBody(self, protocol):
                # As twisted.web's Response does in its initial state.
                protocol.makeConnection(transport)
                protocol.dataReceived(b"all ok")
                transport.resumeProducing()

        class _Client:
            def request(self, method, url, **kwargs):
                return succeed(_Response())

        for expect in ["ok", None]:
            transport.stopped = False
            check = HTTPHealthCheck(self.clock, client=_Client(), expect_body=expect)
            self.assertEqual(self.successResultOf(check.probe(self.backend)), (True, "status 200"))
            self.assertTrue(transport.stopped)

    def test_default_client(self) -> None:
        """
        Without a client, the check connects with the reactor it is given,
        sends one C{Connection: close} request, and reads the answer.
        """
        reactor = MemoryReactorClock()
        check = HTTPHealthCheck(reactor, path="/healthz", expect_body="ok", timeout=1.5)
        d = check.probe(self.backend)
        host, port, factory, timeout, bind = reactor.tcpClients[0]
        self.assertEqual((host, port, timeout), ("127.0.0.1", 8001, 1.5))
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = StringTransport()
        protocol.makeConnection(transport)
        head = transport.value()
        self.assertTrue(head.startswith(b"GET /healthz HTTP/1.1\r\n"), head)
        self.assertEqual(head.lower().count(b"\r\nconnection: close\r\n"), 1, head)
        self.assertIn(b"\r\nUser-Agent: twistproxy-health\r\n", head)
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nall ok")
        self.assertEqual(self.successResultOf(d), (True, "status 200"))
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_default_client_drops_unwanted_body(self) -> None:
        """
        Without C{expect_body}, the check answers on the head and stops the
        connection from producing (which closes a real socket) instead of
        reading the body.
        """
        reactor = MemoryReactorClock()
        d = HTTPHealthCheck(reactor).probe(self.backend)
        protocol = reactor.tcpClients[0][2].buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nabc")
        self.assertEqual(self.successResultOf(d), (True, "status 200"))
        self.assertEqual(transport.producerState, "stopped")
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_default_client_quiet(self) -> None:
        """
        The connection of each check does not log its factory's start and
        stop (two lines per check every few seconds otherwise).
        """
        reactor = MemoryReactorClock()
        HTTPHealthCheck(reactor).probe(self.backend)
        self.assertEqual(_start_stop_events(reactor.tcpClients[0][2]), [])


class BodyProbeTests(SynchronousTestCase):
    """
    Tests for L{_BodyProbe}, which reads a bounded body.
    """

    def setUp(self) -> None:
        self.finished: Deferred = Deferred()
        self.transport = _Producer()

    def probe(self, expect: Optional[bytes], limit: int = 100) -> _BodyProbe:
        probe = _BodyProbe(expect, limit, self.finished)
        probe.makeConnection(self.transport)
        return probe

    def test_nothing_expected(self) -> None:
        """
        Without an expectation the probe passes at once and stops the body.
        """
        self.probe(None)
        self.assertEqual(self.successResultOf(self.finished), (True, ""))
        self.assertTrue(self.transport.stopped)

    def test_match_across_chunks(self) -> None:
        """
        The text is found even when split between two chunks, and the rest
        of the body is not read.
        """
        probe = self.probe(b"healthy")
        probe.dataReceived(b"I am heal")
        self.assertNoResult(self.finished)
        self.assertFalse(self.transport.stopped)
        probe.dataReceived(b"thy, thanks")
        self.assertEqual(self.successResultOf(self.finished), (True, ""))
        self.assertTrue(self.transport.stopped)
        probe.dataReceived(b"more")
        probe.connectionLost(Failure(ResponseDone()))

    def test_limit(self) -> None:
        """
        After C{limit} bytes without the text, the probe fails and stops.
        """
        probe = self.probe(b"ok", limit=10)
        probe.dataReceived(b"123456")
        probe.dataReceived(b"7890ok")
        passed, detail = self.successResultOf(self.finished)
        self.assertFalse(passed)
        self.assertIn("first 10 bytes", detail)
        self.assertTrue(self.transport.stopped)

    def test_body_ends_without_match(self) -> None:
        """
        A complete body without the text fails.
        """
        probe = self.probe(b"ok")
        probe.dataReceived(b"nope")
        probe.connectionLost(Failure(ResponseDone()))
        self.assertEqual(
            self.successResultOf(self.finished), (False, "body does not contain the expected text")
        )

    def test_body_broken(self) -> None:
        """
        A body cut short fails with the reason.
        """
        probe = self.probe(b"ok")
        probe.connectionLost(Failure(ConnectionLost()))
        passed, detail = self.successResultOf(self.finished)
        self.assertFalse(passed)
        self.assertIn("reading the body failed: ConnectionLost", detail)


# The TCP check


class TCPHealthCheckTests(SynchronousTestCase):
    """
    Tests for L{TCPHealthCheck} on a L{MemoryReactorClock}.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.check = TCPHealthCheck(self.reactor, timeout=3.0)

    def test_provides_interface(self) -> None:
        """
        The check provides L{IHealthCheck}.
        """
        self.assertTrue(verifyObject(IHealthCheck, self.check))

    def test_connects_to_backend(self) -> None:
        """
        The check connects to the backend's address with its timeout, or
        to the C{port} option.
        """
        self.check.probe(_backend(0, host="192.0.2.1"))
        self.check.probe(_backend(0, host="2001:db8::1"))
        TCPHealthCheck(self.reactor, port=22).probe(_backend(0, host="192.0.2.2"))
        self.assertEqual(
            [(host, port, timeout) for host, port, factory, timeout, bind in self.reactor.tcpClients],
            [("192.0.2.1", 8001, 3.0), ("2001:db8::1", 8001, 3.0), ("192.0.2.2", 22, 2.0)],
        )

    def test_quiet(self) -> None:
        """
        The connection of each check does not log its factory's start and
        stop (two lines per check every few seconds otherwise).
        """
        self.check.probe(_backend())
        self.assertEqual(_start_stop_events(self.reactor.tcpClients[0][2]), [])

    def test_success(self) -> None:
        """
        A connection made passes the check and is closed at once.
        """
        d = self.check.check(_backend())
        factory = self.reactor.tcpClients[0][2]
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 8001))
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertIs(self.successResultOf(d), True)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_refused(self) -> None:
        """
        A refused connection fails the check, with the reason.
        """
        d = self.check.probe(_backend())
        factory = self.reactor.tcpClients[0][2]
        factory.clientConnectionFailed(self.reactor.connectors[0], Failure(ConnectionRefusedError()))
        passed, detail = self.successResultOf(d)
        self.assertFalse(passed)
        self.assertIn("ConnectionRefusedError", detail)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_timeout(self) -> None:
        """
        A connection not made within the timeout is abandoned and the check
        fails.
        """
        d = self.check.probe(_backend())
        self.reactor.advance(2.9)
        self.assertNoResult(d)
        self.reactor.advance(0.1)
        self.assertEqual(self.successResultOf(d), (False, "timed out after 3s"))
        self.assertTrue(self.reactor.connectors[0].stoppedConnecting)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_host_name(self) -> None:
        """
        A backend named by a host name is resolved with the reactor's
        resolver, then connected to; a timeout leaves nothing behind.
        """
        d = self.check.probe(_backend(host="backend.internal"))
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.reactor.advance(3.0)
        self.assertEqual(self.successResultOf(d), (False, "timed out after 3s"))
        self.assertEqual(self.reactor.getDelayedCalls(), [])


# The monitor


@implementer(IHealthCheck)
class _FakeCheck:
    """
    A check that answers from a script of results; past its end, its
    answers wait until the test gives them with L{answer}.

    @ivar calls: C{(time, backend, deferred)} for each check.
    """

    def __init__(self, script=(), clock: Optional[Clock] = None) -> None:
        self.script = list(script)
        self.clock = clock
        self.calls: List[Tuple[float, IBackend, Deferred]] = []
        self.cancelled: List[IBackend] = []

    def check(self, backend: IBackend) -> Deferred:
        if self.script:
            d = succeed(self.script.pop(0))
        else:
            d = Deferred(lambda d: self.cancelled.append(backend))
        self.calls.append((self.clock.seconds() if self.clock else 0.0, backend, d))
        return d

    def answer(self, ok: bool) -> None:
        self.calls[-1][2].callback(ok)


@implementer(IProbingHealthCheck)
class _ExplainingCheck(_FakeCheck):
    """
    A fake check that also explains its answers, like the built-in ones.
    """

    def probe(self, backend):
        return self.check(backend).addCallback(lambda ok: (ok, "it said so"))


class HealthMonitorTests(SynchronousTestCase):
    """
    Tests for L{HealthMonitor} on a L{Clock}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.changes: List[Tuple[str, str, str]] = []

    def monitor(self, check, backends, **kwargs: Any) -> HealthMonitor:
        kwargs.setdefault("interval", 10.0)
        kwargs.setdefault("on_change", lambda b, what, detail: self.changes.append((b.name, what, detail)))
        monitor = HealthMonitor(self.clock, check, backends, **kwargs)
        self.addCleanup(monitor.stop)
        return monitor

    def run_checks(self, count: int, interval: float = 10.0) -> None:
        """
        Let C{count} rounds of checks happen (the first at once).
        """
        self.clock.advance(0)
        for _ in range(count - 1):
            self.clock.advance(interval)

    def test_validation(self) -> None:
        """
        Nonsensical settings are L{ValueError}s.
        """
        check = _FakeCheck()
        for kwargs in [dict(interval=0), dict(interval=1, jitter=1.5),
                       dict(interval=1, jitter=-0.1), dict(interval=1, rise=0),
                       dict(interval=1, fall=0)]:
            self.assertRaises(ValueError, HealthMonitor, self.clock, check, [], **kwargs)

    def test_starts_healthy(self) -> None:
        """
        Backends are up until proven otherwise: nothing is checked or
        changed before L{start}, and the first check comes at once when
        there is no jitter.
        """
        backend = _backend()
        check = _FakeCheck([False], self.clock)
        monitor = self.monitor(check, [backend], fall=1)
        self.assertTrue(backend.healthy and backend.available)
        self.clock.advance(100)
        self.assertEqual(check.calls, [])
        monitor.start()
        self.clock.advance(0)
        self.assertEqual(len(check.calls), 1)
        self.assertFalse(backend.available)

    def test_fall_threshold(self) -> None:
        """
        A backend goes down only after C{fall} failed checks in a row: it
        stays up through fewer, and a success in between starts the count
        again.
        """
        backend = _backend()
        check = _FakeCheck([False, False, True, False, False, False], self.clock)
        monitor = self.monitor(check, [backend], fall=3)
        monitor.start()
        self.run_checks(5)
        self.assertTrue(backend.healthy)
        self.assertTrue(backend.available)
        self.assertEqual(self.changes, [])
        self.clock.advance(10)
        self.assertFalse(backend.healthy)
        self.assertFalse(backend.available)
        self.assertEqual(
            self.changes, [("127.0.0.1:8001", "unhealthy", "3 checks in a row failed (failed)")]
        )

    def test_rise_threshold(self) -> None:
        """
        A backend that is down comes back only after C{rise} passed checks
        in a row; a flapping backend stays down.
        """
        backend = _backend()
        check = _FakeCheck([False, True, False, True, False, True, True], self.clock)
        monitor = self.monitor(check, [backend], rise=2, fall=1)
        monitor.start()
        self.run_checks(6)
        self.assertFalse(backend.available)
        self.assertEqual([what for name, what, detail in self.changes], ["unhealthy"])
        self.clock.advance(10)
        self.assertTrue(backend.healthy)
        self.assertTrue(backend.available)
        self.assertEqual(
            self.changes[-1], ("127.0.0.1:8001", "healthy", "2 checks in a row passed (passed)")
        )

    def test_adopts_backend_state(self) -> None:
        """
        A backend that is already marked unhealthy (say, by the monitor
        before a reload) needs C{rise} passes to come back.
        """
        backend = _backend()
        backend.healthy = False
        backend.refresh()
        check = _FakeCheck([True, True], self.clock)
        self.monitor(check, [backend], rise=2).start()
        self.run_checks(1)
        self.assertFalse(backend.available)
        self.clock.advance(10)
        self.assertTrue(backend.available)

    def test_probe_detail(self) -> None:
        """
        A check with C{probe} explains its answers; the explanation is in
        C{on_change} and in the status.
        """
        backend = _backend()
        check = _ExplainingCheck([False], self.clock)
        monitor = self.monitor(check, [backend], fall=1)
        monitor.start()
        self.run_checks(1)
        self.assertEqual(self.changes, [("127.0.0.1:8001", "unhealthy", "1 checks in a row failed (it said so)")])
        self.assertEqual(monitor.status(backend)["last_detail"], "it said so")

    def test_interval(self) -> None:
        """
        Without jitter each check comes C{interval} seconds after the
        previous one finished.
        """
        check = _FakeCheck([True] * 10, self.clock)
        self.monitor(check, [_backend()], interval=7.0).start()
        self.clock.pump([0] + [7] * 3)
        self.assertEqual([t for t, b, d in check.calls], [0, 7, 14, 21])

    def test_jitter_spreads_checks(self) -> None:
        """
        Each backend's first check comes a random fraction of C{jitter *
        interval} after start, and each later wait is C{interval} plus such
        a fraction, so checks of many backends spread out.
        """
        randoms = chain([0.0, 0.25, 0.5, 0.75, 0.5, 0.0, 1.0, 0.25], repeat(0.0))
        backends = [_backend(i) for i in range(4)]
        check = _FakeCheck([True] * 8, self.clock)
        monitor = self.monitor(check, backends, interval=10.0, jitter=0.2, random=lambda: next(randoms))
        monitor.start()
        self.clock.pump([0] + [0.5] * 30)
        first = [(t, b.name) for t, b, d in check.calls[:4]]
        self.assertEqual(first, [(0.0, "127.0.0.1:8001"), (0.5, "127.0.0.1:8002"),
                                 (1.0, "127.0.0.1:8003"), (1.5, "127.0.0.1:8004")])
        # Second checks: 10 * (1 + 0.2 * r) after the first, r = 0.5, 0.0,
        # 1.0, 0.25.
        second = [(t, b.name) for t, b, d in check.calls[4:8]]
        self.assertEqual(second, [(10.5, "127.0.0.1:8002"), (11.0, "127.0.0.1:8001"),
                                  (12.0, "127.0.0.1:8004"), (13.0, "127.0.0.1:8003")])

    def test_no_overlapping_checks(self) -> None:
        """
        A check that has not answered is never joined by another of the
        same backend, however long it takes; the next one comes an interval
        after it answers.
        """
        backend = _backend()
        check = _FakeCheck([], self.clock)
        monitor = self.monitor(check, [backend])
        monitor.start()
        self.clock.pump([0] + [10] * 20)
        self.assertEqual(len(check.calls), 1)
        self.assertTrue(monitor.status(backend)["checking"])
        check.answer(True)
        self.assertFalse(monitor.status(backend)["checking"])
        self.clock.advance(9.9)
        self.assertEqual(len(check.calls), 1)
        self.clock.advance(0.1)
        self.assertEqual(len(check.calls), 2)
        self.assertEqual(check.calls[1][0], 210.0)

    def test_check_errback_is_failure(self) -> None:
        """
        A check that raises or errbacks (breaking its contract) counts as a
        failed check, is logged, and does not stop the monitor.
        """
        backend = _backend()

        @implementer(IHealthCheck)
        class _Broken:
            calls = 0

            def check(self, backend):
                self.calls += 1
                if self.calls == 1:
                    raise RuntimeError("boom")
                return fail(RuntimeError("bang"))

        broken = _Broken()
        monitor = self.monitor(broken, [backend], fall=2)
        monitor.start()
        self.run_checks(2)
        self.assertEqual(broken.calls, 2)
        self.assertFalse(backend.available)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        self.assertIn("RuntimeError: bang", monitor.status(backend)["last_detail"])

    def test_status(self) -> None:
        """
        C{status} reports the counts, the last answer and the time of the
        last change.
        """
        backend = _backend()
        check = _FakeCheck([True, False, False], self.clock)
        monitor = self.monitor(check, [backend], fall=2)
        self.assertEqual(
            monitor.status(backend),
            {"healthy": True, "consecutive_successes": 0, "consecutive_failures": 0,
             "last_result": None, "last_detail": "", "last_check": None,
             "last_change": None, "checks": 0, "checking": False},
        )
        monitor.start()
        self.clock.advance(5)
        self.assertEqual(monitor.status(backend)["consecutive_successes"], 1)
        self.run_checks(3)
        status = monitor.status(backend)
        self.assertEqual(
            (status["healthy"], status["consecutive_successes"], status["consecutive_failures"],
             status["last_result"], status["last_check"], status["last_change"], status["checks"]),
            (False, 0, 2, False, 25.0, 25.0, 3),
        )
        self.assertRaises(KeyError, monitor.status, _backend(9))

    def test_stop_leaves_clock_clean(self) -> None:
        """
        L{stop} cancels every timer and every check under way, whose late
        answers are ignored; backends keep their state; L{start} resumes.
        """
        backends = [_backend(0), _backend(1)]
        check = _FakeCheck([False], self.clock)
        monitor = self.monitor(check, backends, fall=1)
        monitor.start()
        self.clock.advance(0)
        # The first backend's check answered (down), the second's waits.
        self.assertFalse(backends[0].available)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        monitor.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(check.cancelled, [backends[1]])
        self.assertTrue(backends[1].available)
        self.assertFalse(backends[0].available)
        self.assertFalse(monitor.status(backends[1])["checking"])
        monitor.start()
        self.clock.advance(0)
        self.assertEqual(len(check.calls), 4)

    def test_add_backend(self) -> None:
        """
        A backend added to a running monitor is checked from then on.
        """
        check = _FakeCheck([True] * 5, self.clock)
        monitor = self.monitor(check, [])
        monitor.start()
        backend = _backend()
        monitor.add_backend(backend)
        monitor.add_backend(backend)
        self.clock.advance(0)
        self.assertEqual([b for t, b, d in check.calls], [backend])
        self.assertEqual(monitor.backends, [backend])

    def test_remove_backend(self) -> None:
        """
        A removed backend is no longer checked, its timer is cancelled, and
        it is marked healthy again since nothing checks it any more.
        """
        backend = _backend()
        check = _FakeCheck([False, False], self.clock)
        monitor = self.monitor(check, [backend], fall=1)
        monitor.start()
        self.clock.advance(0)
        self.assertFalse(backend.available)
        monitor.remove_backend(backend)
        monitor.remove_backend(backend)
        self.assertTrue(backend.available)
        self.assertEqual(self.changes[-1], ("127.0.0.1:8001", "healthy", "no longer health-checked"))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(100)
        self.assertEqual(len(check.calls), 1)
        self.assertEqual(monitor.backends, [])

    def test_on_change_raising(self) -> None:
        """
        An C{on_change} that raises is logged; the state changes all the
        same.
        """
        backend = _backend()

        def on_change(backend, what, detail):
            raise ZeroDivisionError()

        self.monitor(_FakeCheck([False], self.clock), [backend], fall=1, on_change=on_change).start()
        self.clock.advance(0)
        self.assertFalse(backend.available)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_logs_transitions(self) -> None:
        """
        Every change is logged with the backend's name and the reason.
        """
        events: List[dict] = []
        backend = _backend()
        monitor = self.monitor(_FakeCheck([False, True], self.clock), [backend], rise=1, fall=1)
        self.patch(monitor, "log", Logger(observer=events.append))
        monitor.start()
        self.run_checks(2)
        self.assertEqual([(e["backend"], e["what"]) for e in events],
                         [("127.0.0.1:8001", "unhealthy"), ("127.0.0.1:8001", "healthy")])

    def test_slow_start_on_recovery(self) -> None:
        """
        A backend that comes back ramps up through slow start.
        """
        backend = _backend(weight=10)
        slow = SlowStart(self.clock, window=20.0)
        check = _FakeCheck([False, True], self.clock)
        monitor = self.monitor(check, [backend], rise=1, fall=1, slow_start=slow)
        monitor.start()
        self.run_checks(2)
        self.assertTrue(backend.available)
        self.assertEqual(backend.effective_weight, 1.0)
        self.clock.advance(10)
        self.assertEqual(backend.effective_weight, 5.5)
        monitor.stop()
        slow.stop()

    def test_slow_start_not_while_ejected(self) -> None:
        """
        A backend that passes its checks while ejected by outlier detection
        is healthy again but not available, so its ramp does not start.
        """
        backend = _backend(weight=10)
        slow = SlowStart(self.clock, window=20.0)
        monitor = self.monitor(_FakeCheck([False, True], self.clock), [backend], rise=1, fall=1,
                               slow_start=slow)
        monitor.start()
        self.clock.advance(0)
        backend.ejected = True
        self.clock.advance(10)
        self.assertTrue(backend.healthy)
        self.assertFalse(slow.ramping(backend))

    def test_with_http_check(self) -> None:
        """
        The monitor and the HTTP check together take a backend that answers
        503 out after C{fall} checks and bring it back after C{rise}.
        """
        site = _Site(code=503)
        backend = _backend()
        check = HTTPHealthCheck(self.clock, client=StubTreq(site), path="/healthz")
        monitor = self.monitor(check, [backend], rise=2, fall=3)
        monitor.start()
        self.run_checks(3)
        self.assertFalse(backend.available)
        self.assertIn("status 503", self.changes[-1][2])
        site.code = 200
        self.clock.advance(10)
        self.assertFalse(backend.available)
        self.clock.advance(10)
        self.assertTrue(backend.available)
        self.assertEqual(len(site.requests), 5)


class SlowStartTests(SynchronousTestCase):
    """
    Tests for L{SlowStart}.
    """

    def setUp(self) -> None:
        self.clock = Clock()

    def test_ramp(self) -> None:
        """
        The effective weight starts at a tenth of the weight and grows
        linearly to the weight over the window, updated every step; then
        the timer stops.
        """
        backend = _backend(weight=10)
        slow = SlowStart(self.clock, window=30.0, step=1.0)
        slow.begin(backend)
        self.assertEqual(backend.effective_weight, 1.0)
        self.assertTrue(slow.ramping(backend))
        self.clock.pump([1] * 10)
        self.assertAlmostEqual(backend.effective_weight, 4.0)
        self.clock.pump([1] * 5)
        self.assertAlmostEqual(backend.effective_weight, 5.5)
        self.clock.pump([1] * 14)
        self.assertAlmostEqual(backend.effective_weight, 9.7)
        self.clock.advance(1)
        self.assertEqual(backend.effective_weight, 10)
        self.assertFalse(slow.ramping(backend))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_coarse_step(self) -> None:
        """
        With a coarser step the weight changes only at each step, to the
        value for that time.
        """
        backend = _backend(weight=4)
        slow = SlowStart(self.clock, window=10.0, step=5.0)
        slow.begin(backend)
        self.assertAlmostEqual(backend.effective_weight, 0.4)
        self.clock.advance(4)
        self.assertAlmostEqual(backend.effective_weight, 0.4)
        self.clock.advance(1)
        self.assertAlmostEqual(backend.effective_weight, 2.2)
        self.clock.advance(5)
        self.assertEqual(backend.effective_weight, 4)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_one_timer(self) -> None:
        """
        One timer serves every ramping backend.
        """
        slow = SlowStart(self.clock, window=10.0)
        a, b = _backend(0, weight=10), _backend(1, weight=20)
        slow.begin(a)
        self.clock.advance(5)
        slow.begin(b)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(5)
        self.assertEqual(a.effective_weight, 10)
        self.assertAlmostEqual(b.effective_weight, 2 + 18 * 0.5)
        self.clock.advance(5)
        self.assertEqual(b.effective_weight, 20)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_restart(self) -> None:
        """
        Beginning again restarts the ramp from its start.
        """
        backend = _backend(weight=10)
        slow = SlowStart(self.clock, window=10.0)
        slow.begin(backend)
        self.clock.advance(8)
        slow.begin(backend)
        self.assertEqual(backend.effective_weight, 1.0)
        self.clock.advance(5)
        self.assertAlmostEqual(backend.effective_weight, 5.5)
        slow.stop()

    def test_cancel(self) -> None:
        """
        Cancelling gives the full weight back and stops the timer when no
        backend ramps.
        """
        backend = _backend(weight=10)
        slow = SlowStart(self.clock, window=10.0)
        slow.begin(backend)
        slow.cancel(backend)
        self.assertEqual(backend.effective_weight, 10)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        slow.cancel(backend)

    def test_stop(self) -> None:
        """
        L{SlowStart.stop} ends every ramp and leaves no timer.
        """
        a, b = _backend(0, weight=3), _backend(1, weight=5)
        slow = SlowStart(self.clock, window=10.0)
        slow.begin(a)
        slow.begin(b)
        slow.stop()
        self.assertEqual((a.effective_weight, b.effective_weight), (3, 5))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_disabled(self) -> None:
        """
        A window of 0 disables slow start.
        """
        backend = _backend(weight=10)
        slow = SlowStart(self.clock, window=0)
        slow.begin(backend)
        self.assertEqual(backend.effective_weight, 10)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_small_weight(self) -> None:
        """
        A weight of 1 starts at 0.1: positive, as balancers require.
        """
        backend = _backend(weight=1)
        slow = SlowStart(self.clock, window=10.0)
        slow.begin(backend)
        self.assertAlmostEqual(backend.effective_weight, 0.1)
        self.assertEqual(slow.weight_at(backend, 5.0), 0.55)
        slow.stop()

    def test_validation(self) -> None:
        """
        A negative window or a non-positive step is a L{ValueError}.
        """
        self.assertRaises(ValueError, SlowStart, self.clock, -1)
        self.assertRaises(ValueError, SlowStart, self.clock, 10, 0)


class AgentEndpointTests(SynchronousTestCase):
    """
    The HTTP check connects through plain TCP endpoints for addresses, so
    that a refused connection is reported at once.
    """

    def test_endpoints(self):
        """
        IPv4 and IPv6 literals get TCP4/TCP6 endpoints, names a
        HostnameEndpoint, and https URLs are wrapped in TLS.
        """
        from twisted.internet.endpoints import (
            HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint,
        )
        from twisted.internet.testing import MemoryReactorClock
        from twisted.web.client import URI

        from twistproxy.upstream.health import _AgentEndpoints

        endpoints = _AgentEndpoints(MemoryReactorClock(), 1.0)

        def endpoint(url: bytes):
            return endpoints.endpointForURI(URI.fromBytes(url))

        self.assertIsInstance(endpoint(b"http://127.0.0.1:8001/"), TCP4ClientEndpoint)
        self.assertIsInstance(endpoint(b"http://[::1]:8001/"), TCP6ClientEndpoint)
        self.assertIsInstance(endpoint(b"http://backend.internal:8001/"), HostnameEndpoint)
        wrapped = endpoint(b"https://127.0.0.1:8443/")
        self.assertNotIsInstance(wrapped, TCP4ClientEndpoint)
        self.assertIsInstance(wrapped._wrappedEndpoint, TCP4ClientEndpoint)


class HealthTLSTests(SynchronousTestCase):
    """
    HTTP checks of https backends use the group's TLS settings when given.
    """

    def test_use_tls(self):
        """
        After use_tls, https endpoints are built with the creator made for
        the backend's host (and plain http ones are not).
        """
        from twisted.internet.ssl import optionsForClientTLS
        from twisted.internet.testing import MemoryReactorClock
        from twisted.web.client import URI

        from twistproxy.upstream.health import HTTPHealthCheck

        check = HTTPHealthCheck(MemoryReactorClock())
        made = []
        check.use_tls(lambda host: made.append(host) or optionsForClientTLS("api.internal"))
        check._endpoints.endpointForURI(URI.fromBytes(b"http://10.0.0.1:8080/"))
        self.assertEqual(made, [])
        endpoint = check._endpoints.endpointForURI(URI.fromBytes(b"https://10.0.0.1:8443/"))
        self.assertEqual(made, ["10.0.0.1"])
        self.assertTrue(hasattr(endpoint, "_wrappedEndpoint"))
