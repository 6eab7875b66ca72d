"""
Tests for the protections that need no filter: timeouts against slow
clients, size and count limits, connection and in-flight quotas
(L{twistproxy.admission}), on in-memory transports and a fake clock.
"""

from __future__ import annotations

from h2.errors import ErrorCodes
from h2.events import ResponseReceived
from hyperframe.frame import DataFrame, GoAwayFrame, HeadersFrame, RstStreamFrame
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.config_support import proxy_toml
from tests.test_h2 import H2Client, _frames, _request
from tests.test_proxy import GET, OK, _config
from twistproxy import admission
from twistproxy.admission import Emptied, Quota, Refused, file_budget
from twistproxy.config import ConfigError, Limits, Listener, Timeouts, parse
from twistproxy.http.negotiate import Negotiating
from twistproxy.http.parser import target_too_long
from twistproxy.http.listener import HTTPServerFactory, ServerSettings
from twistproxy.http.server import HTTPServerProtocol
from twistproxy.service import ProxyService
from twistproxy.testing import MemoryPeer, MemoryProxy, make_exchange, run_filters

_MINIMAL = proxy_toml(route="")


class _Port:
    """
    A listening port that records whether it accepts.
    """

    def __init__(self):
        self.reading = True

    def stopReading(self):
        self.reading = False

    def startReading(self):
        self.reading = True

    def getHost(self):
        return IPv4Address("TCP", "127.0.0.1", 8080)

    def stopListening(self):
        return None


class ConfigTests(SynchronousTestCase):
    """
    The hardening settings, their defaults and their checks.
    """

    def test_defaults(self):
        """
        The defaults are those documented in docs/security.rst.
        """
        self.assertEqual(Timeouts().send, 60.0)
        self.assertEqual(Timeouts().request_head, 10.0)
        limits = Limits()
        self.assertEqual(
            (limits.max_uri_length, limits.max_requests_per_connection,
             limits.max_connections, limits.max_in_flight, limits.min_body_rate),
            (8192, 1000, 0, 0, 0),
        )
        self.assertEqual(Listener("a", "tcp:1").max_connections, 0)

    def test_documented_defaults(self):
        """
        Every default docs/security.rst gives is the code's: a
        configuration without those keys gets them.
        """
        import dataclasses
        import inspect

        from twisted.internet.task import Clock

        from twistproxy.config import ListenerTLS
        from twistproxy.filters.access import AccessFactory
        from twistproxy.filters.ratelimit import RateLimitFactory
        from twistproxy.http import client, h2, parser, server

        config = parse(_MINIMAL)
        t, lim = config.timeouts, config.limits
        self.assertEqual((t.request_head, t.request_body, t.send, t.idle, t.connect,
                          t.upstream_response, t.upstream_idle),
                         (10, 60, 60, 60, 5, 60, 30))
        self.assertEqual((lim.max_head_size, lim.max_header_count, lim.max_uri_length,
                          lim.max_body_size, lim.max_requests_per_connection,
                          lim.min_body_rate), (64 * 1024, 100, 8192, 1 << 30, 1000, 0))
        self.assertEqual(config.listeners[0].max_connections, 0)
        group = config.upstreams["app"]
        self.assertEqual((group.max_pending, group.max_requests), (256, 0))
        self.assertEqual(config.forwarding.trusted_proxies, ())
        [handshake] = [f for f in dataclasses.fields(ListenerTLS)
                       if f.name == "handshake_timeout"]
        self.assertEqual(handshake.default, 10)
        self.assertEqual((h2.MAX_CONCURRENT_STREAMS, server.BUFFER_LIMIT), (100, 64 * 1024))
        self.assertEqual(client.MAX_RESPONSE_HEAD, 128 * 1024)
        self.assertEqual(inspect.signature(parser.parse_response_head)
                         .parameters["max_header_count"].default, 200)
        access = AccessFactory().fromConfig(None, {"deny": []}, "f")
        self.assertIsNone(access.allow)
        self.assertEqual(access.refusal.status, 403)
        rate = RateLimitFactory().fromConfig(Clock(), {"rate": 2.5}, "f")
        self.assertEqual([run_filters([rate], make_exchange()) for _ in range(4)],
                         [True, True, True, False])
        self.assertEqual(rate.refusal.status, 429)

    def test_parsed(self):
        """
        Every new key is read from the file.
        """
        config = parse(_MINIMAL.replace('endpoint = "tcp:8080"', (
            'endpoint = "tcp:8080"\nmax_connections = 50'
        )) + """
[timeouts]
send = 5
[limits]
max_uri_length = "4k"
max_requests_per_connection = 10
max_connections = 300
max_in_flight = 200
min_body_rate = 500
""")
        self.assertEqual(config.timeouts.send, 5.0)
        self.assertEqual(
            (config.limits.max_uri_length, config.limits.max_requests_per_connection,
             config.limits.max_connections, config.limits.max_in_flight,
             config.limits.min_body_rate),
            (4096, 10, 300, 200, 500),
        )
        self.assertEqual(config.listeners[0].max_connections, 50)

    def test_bad_values(self):
        """
        Bad values are refused with the path of the key.
        """
        for extra, path in [
            ("[timeouts]\nsend = 0", "timeouts.send"),
            ("[limits]\nmax_uri_length = 10", "limits.max_uri_length"),
            ("[limits]\nmax_connections = -1", "limits.max_connections"),
            ("[limits]\nmax_in_flight = true", "limits.max_in_flight"),
            ("[limits]\nmax_requests_per_connection = 1.5",
             "limits.max_requests_per_connection"),
        ]:
            with self.assertRaises(ConfigError) as e:
                parse(_MINIMAL + extra)
            self.assertEqual(e.exception.path, path)
        with self.assertRaises(ConfigError) as e:
            parse(_MINIMAL.replace('endpoint = "tcp:8080"',
                                   'endpoint = "tcp:8080"\nmax_connections = "x"'))
        self.assertEqual(e.exception.path, "listeners.main.max_connections")


class QuotaTests(SynchronousTestCase):
    """
    L{Quota} counts against a limit and pauses the ports under it.
    """

    def setUp(self):
        self.clock = MemoryReactorClock()

    def test_limit(self):
        """
        Acquisitions succeed up to the limit, are refused (and counted)
        beyond it, and succeed again once one is released.
        """
        quota = Quota("things", 2, self.clock)
        self.assertEqual([quota.acquire() for _ in range(3)], [True, True, False])
        self.assertEqual((quota.count, quota.refused), (2, 1))
        quota.release()
        self.assertTrue(quota.acquire())

    def test_no_limit(self):
        """
        A limit of 0 never refuses.
        """
        quota = Quota("things", 0, self.clock)
        self.assertTrue(all(quota.acquire() for _ in range(1000)))

    def test_ports_paused_while_full(self):
        """
        The ports watched stop accepting while the quota is full and
        accept again as soon as it is not; a port watched while full is
        paused at once, and unwatching resumes it.
        """
        quota = Quota("things", 2, self.clock)
        port = _Port()
        quota.watch(port)
        quota.acquire()
        self.assertTrue(port.reading)
        quota.acquire()
        self.assertFalse(port.reading)
        late = _Port()
        quota.watch(late)
        self.assertFalse(late.reading)
        quota.release()
        self.assertTrue(port.reading)
        self.assertTrue(late.reading)
        quota.acquire()
        quota.unwatch(late)
        self.assertTrue(late.reading)
        self.assertFalse(port.reading)

    def test_parent(self):
        """
        A child quota counts against its parent too: the child's ports
        pause when either is full, and resume only when neither is.
        """
        parent = Quota("all", 3, self.clock)
        a = Quota("a", 2, self.clock, parent=parent)
        b = Quota("b", 0, self.clock, parent=parent)
        port_a, port_b = _Port(), _Port()
        a.watch(port_a)
        b.watch(port_b)
        self.assertTrue(a.acquire())
        self.assertTrue(a.acquire())
        self.assertFalse(a.acquire())
        self.assertEqual((port_a.reading, port_b.reading), (False, True))
        self.assertTrue(b.acquire())
        self.assertEqual(parent.count, 3)
        self.assertEqual((port_a.reading, port_b.reading), (False, False))
        self.assertFalse(b.acquire())
        b.release()
        self.assertEqual((port_a.reading, port_b.reading), (False, True))
        a.release()
        self.assertEqual((port_a.reading, port_b.reading), (True, True))

    def test_set_limit(self):
        """
        Lowering the limit below the count pauses at once; raising it
        resumes.
        """
        quota = Quota("things", 10, self.clock)
        port = _Port()
        quota.watch(port)
        quota.acquire()
        quota.acquire()
        quota.set_limit(2)
        self.assertFalse(port.reading)
        quota.set_limit(3)
        self.assertTrue(port.reading)

    def test_logged_once_per_interval(self):
        """
        Reaching the limit is logged, and so is the first refusal (its
        count includes it: "1 refused since the start"), then each at
        most once a minute however many are refused.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        def mine():
            return [e for e in events
                    if e.get("log_namespace", "").startswith("twistproxy.admission")]

        quota = Quota("things", 1, self.clock)
        quota.acquire()
        self.assertEqual(len(mine()), 1)
        self.assertNotIn("refused", mine()[0])
        for _ in range(5):
            quota.acquire()
        self.assertEqual(len(mine()), 2)
        self.assertEqual(mine()[1]["refused"], 1)
        self.clock.advance(61)
        quota.acquire()
        self.assertEqual(len(mine()), 3)
        self.assertEqual(mine()[2]["refused"], 6)

    def test_refused_by_parent_counted(self):
        """
        A refusal because the parent quota is full is logged by the parent
        with a count that includes it, and counted by the child too.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        parent = Quota("all", 1, self.clock)
        child = Quota("mine", 5, self.clock, parent=parent)
        self.assertTrue(child.acquire())
        self.assertFalse(child.acquire())
        [refusal] = [e for e in events if "refused" in e]
        self.assertEqual((refusal["name"], refusal["refused"]), ("all", 1))
        self.assertEqual((parent.refused, child.refused), (1, 1))

    def test_file_budget(self):
        """
        The default limits are the open-file limit less a reserve of 100,
        halved: 462 for 1024, as docs/security.rst says.
        """
        import resource

        self.patch(resource, "getrlimit", lambda which: (1024, 4096))
        self.assertEqual(file_budget(), (1024 - admission.RESERVED_FILES) // 2)
        self.assertEqual(file_budget(), 462)
        self.patch(resource, "getrlimit", lambda which: (10, 4096))
        self.assertEqual(file_budget(), 1)


class EmptiedTests(SynchronousTestCase):
    """
    L{Emptied}: waiting for a factory's open connections to end.
    """

    def test_none_open(self):
        """
        With no connection open, the wait is over at once.
        """
        self.assertIsNone(self.successResultOf(Emptied(set()).wait()))

    def test_last_ends(self):
        """
        Every wait (each its own Deferred) fires when the last connection
        has ended, not before; a check with none waiting does nothing.
        """
        connections = {"a", "b"}
        emptied = Emptied(connections)
        emptied.check()
        first, second = emptied.wait(), emptied.wait()
        connections.discard("a")
        emptied.check()
        self.assertNoResult(first)
        self.assertNoResult(second)
        connections.discard("b")
        emptied.check()
        self.assertIsNone(self.successResultOf(first))
        self.assertIsNone(self.successResultOf(second))
        emptied.check()


class _HTTPCase(SynchronousTestCase):
    """
    A memory proxy with the given limits and timeouts.
    """

    def proxy(self, **kw) -> MemoryProxy:
        self.p = MemoryProxy(_config(**kw))
        return self.p


class SlowClientTests(_HTTPCase):
    """
    Timeouts against clients that send or read slowly.
    """

    def test_head_deadline_not_reset_by_bytes(self):
        """
        The request head deadline covers the whole head: a client sending
        one byte a second is answered 408 when it expires, not later.
        """
        p = self.proxy(timeouts=Timeouts(request_head=10))
        client = p.connect_client()
        for byte in b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: aaaaaaa":
            if p.reactor.seconds() >= 9:
                break
            client.send(bytes([byte]))
            p.reactor.advance(1)
        self.assertFalse(client.closed)
        p.reactor.advance(1.5)
        self.assertTrue(client.received().startswith(b"HTTP/1.1 408 "))
        self.assertTrue(client.closed)
        self.assertEqual(p.exchanges[0].reason, "request_head_timeout")

    def test_head_deadline_starts_with_first_byte_after_idle(self):
        """
        On a keep-alive connection the next head's deadline starts with its
        first byte, and bytes after that do not extend it.
        """
        p = self.proxy(timeouts=Timeouts(request_head=5, idle=30))
        client = p.connect_client()
        client.send(GET)
        p.accept_backend().send(OK)
        client.received()
        p.reactor.advance(20)
        client.send(b"GET / HTTP/1.1\r\n")
        p.reactor.advance(3)
        client.send(b"Host: a\r\n")
        p.reactor.advance(2.5)
        self.assertTrue(client.received().startswith(b"HTTP/1.1 408 "))

    def _dribbled_body(self, p):
        """
        A POST whose 100000 bytes come 10 at a time, each second.
        """
        client = p.connect_client()
        client.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n")
        backend = p.accept_backend()
        for _ in range(100):
            if client.closed:
                break
            client.send(b"x" * 10)
            p.reactor.advance(1)
        return client, backend

    def test_min_body_rate(self):
        """
        With min_body_rate, a body trickling in slower than that rate is
        answered 408 once the time its bytes earned has run out, however
        regularly it comes.
        """
        p = self.proxy(timeouts=Timeouts(request_body=20), limits=Limits(min_body_rate=100))
        client, backend = self._dribbled_body(p)
        self.assertTrue(client.closed)
        # 20 s, plus 0.1 s earned by each read of 10 bytes.
        self.assertLess(p.reactor.seconds(), 24)
        self.assertTrue(client.received().startswith(b"HTTP/1.1 408 "))
        self.assertTrue(backend.transport.disconnecting)

    def test_no_min_body_rate(self):
        """
        Without min_body_rate (the default) the body timeout runs between
        two reads: a body trickling in regularly goes on.
        """
        p = self.proxy(timeouts=Timeouts(request_body=20))
        client, _ = self._dribbled_body(p)
        self.assertFalse(client.closed)

    def test_body_timeout_stops_while_backend_is_full(self):
        """
        While the backend does not take the body, the client is not timed
        out for not sending it; the body timeout starts again when the
        backend takes more.
        """
        p = self.proxy(timeouts=Timeouts(request_body=20))
        client = p.connect_client()
        client.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n123")
        backend = p.accept_backend()
        backend.transport.producer.pauseProducing()
        p.reactor.advance(100)
        self.assertFalse(client.closed)
        backend.transport.producer.resumeProducing()
        p.reactor.advance(19)
        self.assertFalse(client.closed)
        p.reactor.advance(2)
        self.assertTrue(client.received().startswith(b"HTTP/1.1 408 "))

    def _stuck_download(self, p):
        client = p.connect_client()
        client.send(GET)
        backend = p.accept_backend()
        backend.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000)
        # The client's send buffer fills up.
        client.transport.producer.pauseProducing()
        return client, backend

    def test_send_timeout(self):
        """
        A client whose send buffer stays full for timeouts.send is cut off
        (aborted, not closed gracefully), and its backend request with it.
        """
        p = self.proxy(timeouts=Timeouts(send=20, upstream_response=100))
        client, backend = self._stuck_download(p)
        self.assertTrue(backend.transport.producerState == "paused")
        p.reactor.advance(19)
        self.assertFalse(client.transport.disconnected)
        p.reactor.advance(1.5)
        self.assertTrue(client.transport.disconnected)
        client.close()
        self.assertTrue(backend.transport.disconnecting)
        self.assertEqual(p.exchanges[-1].reason, "send_timeout")

    def test_send_timeout_stops_when_client_reads(self):
        """
        The send timeout only runs while the buffer is full: a client that
        takes what was sent in time keeps its connection.
        """
        p = self.proxy(timeouts=Timeouts(send=20, upstream_response=100))
        client, backend = self._stuck_download(p)
        p.reactor.advance(15)
        client.transport.producer.resumeProducing()
        p.reactor.advance(15)
        client.transport.producer.pauseProducing()
        p.reactor.advance(15)
        self.assertFalse(client.transport.disconnected)
        self.assertEqual(len(p.factory.deadlines), 2)
        client.close()
        # The connection's own wait and its send watch are both gone.
        self.assertEqual(len(p.factory.deadlines), 0)

    def test_pipelined_requests_wait_for_a_reading_client(self):
        """
        While the client does not read, its next pipelined request is not
        read either, so that answers the proxy makes itself cannot pile
        up; it is served once the client reads.
        """
        p = self.proxy()
        client = p.connect_client()
        client.send(GET)
        p.accept_backend().send(OK)
        client.received()
        client.transport.producer.pauseProducing()
        client.send(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n" + GET)
        self.assertEqual(client.received(), b"")
        self.assertEqual(client.transport.producerState, "paused")
        client.transport.producer.resumeProducing()
        self.assertTrue(client.received().startswith(b"HTTP/1.1 414 "))


class LimitTests(_HTTPCase):
    """
    Size and count limits on HTTP/1.1 requests.
    """

    def test_target_too_long(self):
        """
        L{target_too_long} measures the target, also of a line not yet
        complete.
        """
        self.assertFalse(target_too_long(b"GET /" + b"a" * 9 + b" HTTP/1.1\r\n", 10))
        self.assertTrue(target_too_long(b"GET /" + b"a" * 10 + b" HTTP/1.1\r\n", 10))
        self.assertTrue(target_too_long(b"GET /" + b"a" * 10, 10))
        self.assertFalse(target_too_long(b"G" * 100, 10))

    def test_uri_too_long_414(self):
        """
        A request target longer than max_uri_length gets 414, before the
        head is complete, and nothing reaches a backend.
        """
        p = self.proxy(limits=Limits(max_uri_length=1024))
        client = p.connect_client()
        client.send(b"GET /" + b"a" * 1100)
        self.assertTrue(client.received().startswith(b"HTTP/1.1 414 "))
        self.assertTrue(client.closed)
        self.assertEqual(p.backend_attempts(), [])
        self.assertEqual(p.exchanges[0].reason, "uri_too_long")

    def test_uri_at_limit_passes(self):
        """
        A target of exactly max_uri_length bytes is forwarded.
        """
        p = self.proxy(limits=Limits(max_uri_length=1024))
        client = p.connect_client()
        client.send(b"GET /" + b"a" * 1023 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(len(p.backend_attempts()), 1)

    def test_max_requests_per_connection(self):
        """
        The response to the last request allowed on a connection says
        Connection: close, and the connection is closed after it.
        """
        p = self.proxy(limits=Limits(max_requests_per_connection=2))
        client = p.connect_client()
        client.send(GET)
        backend = p.accept_backend()
        backend.send(OK)
        first = client.received()
        self.assertNotIn(b"Connection: close", first)
        client.send(GET)
        backend.send(OK)
        second = client.received()
        self.assertIn(b"Connection: close", second)
        self.assertTrue(second.endswith(b"hello"))
        self.assertTrue(client.closed)


class AdmissionTests(_HTTPCase):
    """
    Connection and in-flight quotas on the HTTP/1.1 codec.
    """

    def test_connections_refused_beyond_limit(self):
        """
        Beyond max_connections the factory builds a protocol that closes
        the connection at once, and logs it as a request it could not
        read, answered 503 C{max_connections}; once a connection closes,
        the next is served.
        """
        p = self.proxy(limits=Limits(max_connections=2))
        a = p.connect_client()
        p.connect_client()
        refused = p.factory.buildProtocol(None)
        self.assertIsInstance(refused, Refused)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.9", 4000))
        refused.makeConnection(transport)
        self.assertTrue(transport.disconnected)
        self.assertEqual(p.factory.quota.refused, 1)
        [x] = p.exchanges
        self.assertEqual((x.client_address, x.request.method, x.status, x.reason),
                         ("192.0.2.9", b"-", 503, "max_connections"))
        a.close()
        self.assertEqual(p.factory.quota.count, 1)
        c = p.connect_client()
        c.send(GET)
        self.assertEqual(len(p.backend_attempts()), 1)

    def test_negotiating_connection_counted(self):
        """
        A connection still choosing its protocol counts, and is given
        back whether it closes before choosing or after.
        """
        reactor = MemoryReactorClock()
        factory = HTTPServerFactory(
            reactor, None, ServerSettings(limits=Limits(max_connections=5), h2c=True))
        early = factory.buildProtocol(None)
        self.assertIsInstance(early, Negotiating)
        early.makeConnection(StringTransport())
        late = factory.buildProtocol(None)
        late.makeConnection(StringTransport())
        self.assertEqual(factory.quota.count, 2)
        late.dataReceived(b"GET / HTTP/1.1\r\n")
        self.assertIsInstance(late.inner, HTTPServerProtocol)
        early.connectionLost(None)
        late.connectionLost(None)
        self.assertEqual(factory.quota.count, 0)

    def test_overload_503(self):
        """
        Beyond max_in_flight a request is answered 503 with Retry-After at
        once, without reaching a backend, on a connection that stays
        usable; once requests finish, new ones are served again.
        """
        p = self.proxy(limits=Limits(max_in_flight=1))
        busy = p.connect_client()
        busy.send(GET)
        backend = p.accept_backend()
        other = p.connect_client()
        other.send(GET)
        got = other.received()
        self.assertTrue(got.startswith(b"HTTP/1.1 503 "))
        self.assertIn(b"\r\nRetry-After: 1\r\n", got)
        self.assertFalse(other.closed)
        self.assertEqual(p.backend_attempts(), [])
        self.assertEqual(p.exchanges[-1].reason, "overloaded")
        backend.send(OK)
        self.assertTrue(busy.received().endswith(b"hello"))
        self.assertEqual(p.factory.in_flight.count, 0)
        other.send(GET)
        backend.send(OK)
        self.assertTrue(other.received().endswith(b"hello"))

    def test_in_flight_given_back_on_client_abort(self):
        """
        A request whose client goes away gives its place back.
        """
        p = self.proxy(limits=Limits(max_in_flight=1))
        client = p.connect_client()
        client.send(GET)
        self.assertEqual(p.factory.in_flight.count, 1)
        client.close()
        self.assertEqual(p.factory.in_flight.count, 0)


class BackendResponseTests(_HTTPCase):
    """
    What backends send is checked as strictly as what clients send.
    """

    def test_response_head_too_large_502(self):
        """
        A response head larger than the proxy takes gets 502.
        """
        p = self.proxy()
        client = p.connect_client()
        client.send(GET)
        p.accept_backend().send(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 200000)
        self.assertTrue(client.received().startswith(b"HTTP/1.1 502 "))
        self.assertEqual(p.exchanges[0].reason, "upstream_head_too_large")

    def test_too_many_response_fields_502(self):
        """
        A response with too many header fields gets 502.
        """
        p = self.proxy()
        client = p.connect_client()
        client.send(GET)
        p.accept_backend().send(
            b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 300 + b"Content-Length: 0\r\n\r\n")
        self.assertTrue(client.received().startswith(b"HTTP/1.1 502 "))


class H2Tests(SynchronousTestCase):
    """
    The same protections on the HTTP/2 codec.
    """

    def client(self, **kw) -> H2Client:
        self.p = MemoryProxy(_config(**kw))
        return H2Client(self.p)

    def test_uri_too_long_414(self):
        """
        A :path longer than max_uri_length gets 414 and reaches no backend.
        """
        c = self.client(limits=Limits(max_uri_length=1024))
        sid = c.request(_request(path=b"/" + b"a" * 1100))
        self.assertEqual(c.status(sid), b"414")
        self.assertEqual(self.p.backend_attempts(), [])

    def test_header_list_too_large(self):
        """
        A header list larger than max_head_size (advertised as
        SETTINGS_MAX_HEADER_LIST_SIZE) gets 431 and reaches no backend.
        """
        c = self.client(limits=Limits(max_head_size=4096))
        sid = c.request(_request(extra=[(b"x-big", b"a" * 4000)]))
        self.assertEqual(c.status(sid), b"431")
        self.assertEqual(self.p.backend_attempts(), [])

    def test_overload_503(self):
        """
        Beyond max_in_flight a stream is answered 503 with retry-after.
        """
        c = self.client(limits=Limits(max_in_flight=1))
        c.request(_request())
        sid = c.request(_request())
        self.assertEqual(c.status(sid), b"503")
        self.assertEqual(c.headers(sid)[b"retry-after"], b"1")
        self.assertEqual(len(self.p.backend_attempts()), 1)

    def test_pauses_reading_while_client_full(self):
        """
        While the client does not read, the proxy does not read its frames
        either (each could call for an answer: a PING flood must not pile
        answers up in memory).
        """
        c = self.client()
        c.transport.producer.pauseProducing()
        self.assertEqual(c.transport.producerState, "paused")
        c.transport.producer.resumeProducing()
        self.assertEqual(c.transport.producerState, "producing")

    def test_send_timeout(self):
        """
        An HTTP/2 client whose send buffer stays full for timeouts.send is
        cut off.
        """
        c = self.client(timeouts=Timeouts(send=20, upstream_response=100))
        c.request(_request())
        self.p.accept_backend()
        c.transport.producer.pauseProducing()
        self.p.reactor.advance(21)
        self.assertTrue(c.transport.disconnected)

    def test_min_body_rate(self):
        """
        With min_body_rate, a stream body trickling in slower than that
        rate is answered 408.
        """
        c = self.client(timeouts=Timeouts(request_body=20), limits=Limits(min_body_rate=100))
        sid = c.request(_request(method=b"POST"), body=b"x" * 10, end=False)
        self.p.accept_backend()
        for _ in range(40):
            c.conn.send_data(sid, b"x" * 10)
            c.send()
            self.p.reactor.advance(1)
            c.pump()
            if c.of(sid, ResponseReceived):
                break
        self.assertEqual(c.status(sid), b"408")
        self.assertLess(self.p.reactor.seconds(), 24)

    def test_rapid_reset_bounded(self):
        """
        A client that opens and at once resets stream after stream ("rapid
        reset") gets GOAWAY after max_requests_per_connection of them:
        no more are forwarded on that connection.
        """
        c = self.client(limits=Limits(max_requests_per_connection=50))
        for _ in range(60):
            sid = c.conn.get_next_available_stream_id()
            c.conn.send_headers(sid, _request(), end_stream=True)
            c.conn.reset_stream(sid)
        c.protocol.dataReceived(c.conn.data_to_send())
        frames = _frames(c.transport.value())
        [goaway] = [f for f in frames if isinstance(f, GoAwayFrame)]
        self.assertEqual(goaway.last_stream_id, 99)
        self.assertLessEqual(len(self.p.backend_attempts()), 50)
        self.assertEqual(c.protocol.requests, 50)

    def test_max_requests_per_connection(self):
        """
        After max_requests_per_connection streams the proxy sends GOAWAY:
        the streams it covers are served to the end, although the client
        keeps sending frames, and a stream opened after it is refused.
        """
        c = self.client(limits=Limits(max_requests_per_connection=2))
        first = c.request(_request())
        backend = self.p.accept_backend()
        backend.send(OK)
        c.pump()
        self.assertEqual(c.status(first), b"200")
        c.transport.clear()
        # The second request, then a stream the client opened before
        # seeing the GOAWAY, and a WINDOW_UPDATE: none may end the
        # connection.
        second = c.conn.get_next_available_stream_id()
        c.conn.send_headers(second, _request(), end_stream=True)
        third = c.conn.get_next_available_stream_id()
        c.conn.send_headers(third, _request(), end_stream=True)
        c.conn.increment_flow_control_window(1000)
        c.protocol.dataReceived(c.conn.data_to_send())
        self.assertFalse(c.transport.disconnecting)
        backend.send(OK)
        frames = _frames(c.transport.value())
        [goaway] = [f for f in frames if isinstance(f, GoAwayFrame)]
        self.assertEqual((goaway.last_stream_id, goaway.error_code), (second, 0))
        [reset] = [f for f in frames if isinstance(f, RstStreamFrame)]
        self.assertEqual((reset.stream_id, reset.error_code),
                         (third, ErrorCodes.REFUSED_STREAM))
        data = [f for f in frames if isinstance(f, DataFrame) and f.stream_id == second]
        self.assertEqual(b"".join(f.data for f in data), b"hello")
        self.assertIn("END_STREAM", data[-1].flags)
        self.assertTrue(any(isinstance(f, HeadersFrame) and f.stream_id == second
                            for f in frames))
        self.assertTrue(c.transport.disconnecting)
        self.assertEqual(len(self.p.backend_attempts()), 0)


class ServiceTests(SynchronousTestCase):
    """
    The service shares the global quotas between listeners and gives a
    listener with its own limit a quota of its own within them.
    """

    def test_quotas(self):
        """
        A listener with max_connections has its own factory and quota,
        whose parent is the global one; the others share the global one;
        every factory shares the in-flight quota.
        """
        config = parse(_MINIMAL.replace(
            'endpoint = "tcp:8080"',
            'endpoint = "tcp:8080"\nmax_connections = 7\n[listeners.other]\nendpoint = "tcp:8081"',
        ) + "[limits]\nmax_connections = 100\nmax_in_flight = 50\n")
        service = ProxyService(config, MemoryReactorClock())
        main = service.listeners["main"].factory
        other = service.listeners["other"].factory
        self.assertIsNot(main, other)
        self.assertEqual((main.quota.limit, main.quota.parent), (7, service.connections))
        self.assertIs(other.quota, service.connections)
        self.assertEqual(service.connections.limit, 100)
        self.assertIs(main.in_flight, other.in_flight)
        self.assertEqual(service.in_flight.limit, 50)

    def test_reload_changes_limits(self):
        """
        A reloaded configuration changes the global limits of the running
        service.
        """
        from twistproxy.config import load

        path = self.mktemp()
        with open(path, "w") as f:
            f.write(_MINIMAL + "[limits]\nmax_connections = 10\nmax_in_flight = 5\n")
        service = ProxyService(load(path), MemoryReactorClock())
        with open(path, "w") as f:
            f.write(_MINIMAL + "[limits]\nmax_connections = 20\nmax_in_flight = 7\n")
        self.assertEqual(service.reload(), [])
        self.assertEqual((service.connections.limit, service.in_flight.limit), (20, 7))

    def test_port_paused(self):
        """
        The listening port of a full listener stops accepting, and accepts
        again when a connection closes.
        """
        config = parse(_MINIMAL + "[limits]\nmax_connections = 1\n")
        service = ProxyService(config, MemoryReactorClock())
        listener = service.listeners["main"]
        port = _Port()
        listener._listening(port)
        client = MemoryPeer(listener.factory.buildProtocol(None), peer=None)
        self.assertFalse(port.reading)
        client.close()
        self.assertTrue(port.reading)
        client = MemoryPeer(listener.factory.buildProtocol(None), peer=None)
        listener.stopService()
        # No longer watched: a port that stopped listening is left alone.
        self.assertTrue(port.reading)
