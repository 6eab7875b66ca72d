"""
Tests for retries on another backend, circuit breaking, stickiness and
draining, through the whole proxy on in-memory transports.
"""

from __future__ import annotations

from OpenSSL import SSL
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twistproxy.config import (
    Listener,
    ProxyConfig,
    Route,
    Sticky,
    Timeouts,
    UpstreamGroup,
    server,
)
from twistproxy.http.headers import sticky_cookie
from twistproxy.testing import MemoryProxy

GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def _proxy(**group) -> MemoryProxy:
    group.setdefault("servers", (server("http://127.0.0.1:8001"), server("http://127.0.0.1:8002")))
    return MemoryProxy(ProxyConfig(
        listeners=(Listener("main", "tcp:8080"),),
        upstreams={"app": UpstreamGroup("app", **group)},
        routes=(Route("app"),),
    ))


class RetryTests(SynchronousTestCase):
    """
    A request that failed on one backend goes to another when that is safe.
    """

    def test_connect_failure_retried_elsewhere(self):
        """
        A backend that refuses the connection costs the client nothing: the
        request goes to the next backend, for any method.
        """
        proxy = _proxy()
        client = proxy.connect_client()
        client.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
        self.assertEqual(proxy.backend_attempts(), [("127.0.0.1", 8001)])
        proxy.refuse_backend()
        self.assertEqual(proxy.backend_attempts(), [("127.0.0.1", 8002)])
        backend = proxy.accept_backend()
        self.assertTrue(backend.received().endswith(b"\r\n\r\nhi"))
        backend.send(OK)
        self.assertTrue(client.received().startswith(b"HTTP/1.1 200"))
        [x] = proxy.exchanges
        self.assertEqual((x.backend.name, x.attempts, x.reason), ("127.0.0.1:8002", 2, ""))
        group = proxy.forwarder.groups["app"]
        self.assertEqual([b.failures for b in group.backends], [1, 0])
        self.assertEqual((group.in_flight, group.retries_in_flight), (0, 0))
        self.assertEqual([b.in_flight for b in group.backends], [0, 0])

    def test_reset_before_response_retried_for_idempotent(self):
        """
        A GET whose fresh connection is reset before any response byte goes
        to another backend.
        """
        proxy = _proxy()
        client = proxy.connect_client()
        client.send(GET)
        proxy.accept_backend().close()
        backend = proxy.accept_backend()
        self.assertEqual(backend.transport.getPeer().port, 8002)
        backend.send(OK)
        self.assertTrue(client.received().startswith(b"HTTP/1.1 200"))

    def test_reset_not_retried_for_post(self):
        """
        A POST whose backend reset before answering is never sent twice:
        the client gets 502.
        """
        proxy = _proxy()
        client = proxy.connect_client()
        client.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
        proxy.accept_backend().close()
        self.assertEqual(proxy.backend_attempts(), [])
        self.assertTrue(client.received().startswith(b"HTTP/1.1 502"))

    def test_tls_failure_retried_for_idempotent(self):
        """
        A GET whose backend failed the TLS handshake (an untrusted or
        mismatched certificate) goes to another backend, as a reset one
        would; the failed backend is reported.
        """
        proxy = _proxy()
        client = proxy.connect_client()
        client.send(GET)
        error = SSL.Error([("SSL routines", "", "certificate verify failed")])
        proxy.accept_backend().protocol.connectionLost(Failure(error))
        backend = proxy.accept_backend()
        self.assertEqual(backend.transport.getPeer().port, 8002)
        backend.send(OK)
        self.assertTrue(client.received().startswith(b"HTTP/1.1 200"))
        group = proxy.forwarder.groups["app"]
        self.assertEqual([b.failures for b in group.backends], [1, 0])

    def test_tls_failure_not_retried_for_post(self):
        """
        A POST whose backend connection failed with a TLS error is not sent
        again (the error may have come after the request was written): the
        client gets 502 upstream_tls_failed.
        """
        proxy = _proxy()
        client = proxy.connect_client()
        client.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
        error = SSL.Error([("SSL routines", "", "certificate verify failed")])
        proxy.accept_backend().protocol.connectionLost(Failure(error))
        self.assertEqual(proxy.backend_attempts(), [])
        self.assertTrue(client.received().startswith(b"HTTP/1.1 502"))
        self.assertEqual(proxy.exchanges[-1].reason, "upstream_tls_failed")

    def test_retry_limit(self):
        """
        With retries = 1, a request that may have reached its backend (the
        backend reset before answering) is tried on two backends at most.
        """
        proxy = _proxy(servers=tuple(server(f"http://127.0.0.1:{p}") for p in (8001, 8002, 8003)))
        client = proxy.connect_client()
        client.send(GET)
        proxy.accept_backend().close()
        proxy.accept_backend().close()
        self.assertEqual(proxy.backend_attempts(), [])
        self.assertTrue(client.received().startswith(b"HTTP/1.1 502"))
        self.assertEqual(proxy.exchanges[-1].reason, "upstream_closed")

    def test_refused_connections_not_counted(self):
        """
        A refused connection sent nothing, so it does not count against
        retries: with retries = 1 a request goes on through every backend
        that refuses, once each, until one answers.
        """
        ports = (8001, 8002, 8003)
        proxy = _proxy(servers=tuple(server(f"http://127.0.0.1:{p}") for p in ports))
        client = proxy.connect_client()
        client.send(GET)
        proxy.refuse_backend()
        proxy.refuse_backend()
        [(_, port)] = proxy.backend_attempts()
        self.assertEqual(port, 8003)
        proxy.accept_backend().send(OK)
        self.assertTrue(client.received().startswith(b"HTTP/1.1 200"))
        [x] = proxy.exchanges
        self.assertEqual((x.attempts, x.counted_retries), (3, 0))

    def test_every_backend_refused(self):
        """
        A request that every backend refused gets 502 after trying each
        once.
        """
        ports = (8001, 8002, 8003)
        proxy = _proxy(servers=tuple(server(f"http://127.0.0.1:{p}") for p in ports))
        other = proxy.connect_client()
        other.send(GET)
        tried = []
        while proxy.backend_attempts():
            tried.append(proxy.backend_attempts()[0][1])
            proxy.refuse_backend()
        self.assertEqual(sorted(tried), list(ports))
        self.assertTrue(other.received().startswith(b"HTTP/1.1 502"))
        self.assertEqual(proxy.exchanges[-1].reason, "upstream_connect_failed")

    def test_counted_after_refused(self):
        """
        A request redispatched after a refused connection still has its
        retries: the backend it reaches resets, and it goes to a third one.
        """
        ports = (8001, 8002, 8003)
        proxy = _proxy(servers=tuple(server(f"http://127.0.0.1:{p}") for p in ports))
        client = proxy.connect_client()
        client.send(GET)
        proxy.refuse_backend()
        proxy.accept_backend().close()
        proxy.accept_backend().send(OK)
        self.assertTrue(client.received().startswith(b"HTTP/1.1 200"))
        [x] = proxy.exchanges
        self.assertEqual((x.attempts, x.counted_retries), (3, 1))

    def test_no_retries(self):
        """
        With retries = 0 the first failure is the answer.
        """
        proxy = _proxy(retries=0)
        client = proxy.connect_client()
        client.send(GET)
        proxy.refuse_backend()
        self.assertEqual(proxy.backend_attempts(), [])
        self.assertTrue(client.received().startswith(b"HTTP/1.1 502"))

    def test_retry_budget(self):
        """
        Beyond the retry budget (here the minimum of three concurrent
        retries), failures are answered instead of retried.
        """
        proxy = _proxy(retries=1, retry_budget=0.0)
        group = proxy.forwarder.groups["app"]
        clients = [proxy.connect_client(port=40000 + i) for i in range(4)]
        for client in clients:
            client.send(GET)
        for _ in range(4):
            proxy.accept_backend().close()
        # Three retries are under way; the fourth failure is answered.
        answered = [c for c in clients if c.received().startswith(b"HTTP/1.1 502")]
        self.assertEqual(len(answered), 1)
        self.assertEqual(len(proxy.backend_attempts()), 3)
        self.assertEqual(group.retries_in_flight, 3)
        for _ in range(3):
            proxy.accept_backend().send(OK)
        self.assertEqual((group.in_flight, group.retries_in_flight), (0, 0))

    def test_stale_connection_of_known_bad_backend(self):
        """
        A GET whose reused connection dies before any response byte is
        sent again on a fresh connection to the same backend, unless that
        backend is known bad by then (here drained): it then goes straight
        to another backend.
        """
        proxy = _proxy()
        group = proxy.forwarder.groups["app"]
        peers = []
        for i in range(2):
            client = proxy.connect_client(port=40000 + i)
            client.send(GET)
            peers.append(proxy.accept_backend())
            peers[-1].send(OK)
            self.assertTrue(client.received().startswith(b"HTTP/1.1 200"))
        first, second = peers
        client = proxy.connect_client(port=40002)
        client.send(GET)
        self.assertEqual(first.received().count(b"GET /"), 2)
        group.set_draining(group.backends[0], True)
        first.close()
        self.assertEqual(proxy.backend_attempts(), [])
        self.assertEqual(second.received().count(b"GET /"), 2)
        second.send(OK)
        self.assertTrue(client.received().startswith(b"HTTP/1.1 200"))

    def _fill_budget(self, proxy, clients):
        """
        Take the budget's three places (retry_budget = 0): three requests
        whose backends reset, each retried on a connection that is open
        and waiting for the answer.
        """
        for client in clients:
            client.send(GET)
            proxy.accept_backend().close()
            self.retried.append(proxy.accept_backend())
        self.assertEqual(proxy.forwarder.groups["app"].retries_in_flight, 3)

    def test_refused_spends_no_budget(self):
        """
        Refused connections are redispatched beyond the budget: with the
        budget's three places taken, the new requests whose connections
        are refused all go to the other backend, and take no place.
        """
        proxy = _proxy(retries=1, retry_budget=0.0)
        clients = [proxy.connect_client(port=40000 + i) for i in range(7)]
        self.retried = []
        self._fill_budget(proxy, clients[:3])
        for client in clients[3:]:
            client.send(GET)
        refused = 0
        while proxy.backend_attempts():
            if proxy.backend_attempts()[0][1] == 8001:
                proxy.refuse_backend()
                refused += 1
            else:
                proxy.accept_backend()
        self.assertEqual(refused, 2)
        self.assertFalse([c for c in clients if c.received().startswith(b"HTTP/1.1 502")])
        self.assertEqual(proxy.forwarder.groups["app"].retries_in_flight, 3)

    def test_known_bad_backend_spends_no_budget(self):
        """
        A request whose backend was already known bad (here drained) when
        it reset is placed again without a place in the budget, even when
        the budget is full.
        """
        proxy = _proxy(retries=1, retry_budget=0.0)
        group = proxy.forwarder.groups["app"]
        clients = [proxy.connect_client(port=40000 + i) for i in range(4)]
        self.retried = []
        self._fill_budget(proxy, clients[:3])
        clients[3].send(GET)
        [(_, port)] = proxy.backend_attempts()
        backend = proxy.accept_backend()
        group.set_draining(group.find(f"127.0.0.1:{port}"), True)
        backend.close()
        self.assertEqual([p for _, p in proxy.backend_attempts()], [16003 - port])
        self.assertFalse([c for c in clients if c.received().startswith(b"HTTP/1.1 502")])
        self.assertEqual(group.retries_in_flight, 3)

    def test_known_bad_backend_not_spared_when_healthy(self):
        """
        The same reset from a backend that is still available is a counted
        retry, which the full budget refuses: the client gets 502.
        """
        proxy = _proxy(retries=1, retry_budget=0.0)
        clients = [proxy.connect_client(port=40000 + i) for i in range(4)]
        self.retried = []
        self._fill_budget(proxy, clients[:3])
        clients[3].send(GET)
        proxy.accept_backend().close()
        self.assertEqual(proxy.backend_attempts(), [])
        self.assertTrue(clients[3].received().startswith(b"HTTP/1.1 502"))


class CircuitBreakingTests(SynchronousTestCase):
    """
    Limits answer 503 at once instead of queueing without end.
    """

    def test_group_max_requests(self):
        """
        Past max_requests in flight to the group, a request gets 503 at
        once; when one finishes, requests are admitted again.
        """
        proxy = _proxy(max_requests=1)
        first = proxy.connect_client()
        first.send(GET)
        second = proxy.connect_client()
        second.send(GET)
        self.assertTrue(second.received().startswith(b"HTTP/1.1 503"))
        self.assertEqual(proxy.exchanges[-1].reason, "group_overloaded")
        proxy.accept_backend().send(OK)
        third = proxy.connect_client()
        third.send(GET)
        self.assertEqual(third.received(), b"")

    def test_backend_max_pending(self):
        """
        With every connection busy and max_pending requests already
        waiting, the next request gets 503 at once.
        """
        proxy = _proxy(servers=(server("http://127.0.0.1:8001"),), max_connections=1,
                       max_pending=1)
        clients = [proxy.connect_client(port=40000 + i) for i in range(3)]
        for client in clients:
            client.send(GET)
        self.assertEqual([c.received()[:12] for c in clients],
                         [b"", b"", b"HTTP/1.1 503"])
        self.assertEqual(proxy.exchanges[-1].reason, "upstream_queue_full")
        group = proxy.forwarder.groups["app"]
        self.assertEqual(group.backends[0].failures, 0)


class StickyTests(SynchronousTestCase):
    """
    Cookie stickiness pins a client to a backend while it is available.
    """

    def setUp(self):
        self.proxy = _proxy(sticky=Sticky(cookie="srv", secret="k"))
        self.group = self.proxy.forwarder.groups["app"]

    def request(self, cookie: bytes = b""):
        client = self.proxy.connect_client()
        extra = b"Cookie: " + cookie + b"\r\n" if cookie else b""
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\n" + extra + b"\r\n")
        if self.proxy.backend_attempts():
            backend = self.proxy.accept_backend()
            self.backends[backend.transport.getPeer().port] = backend
        x = len(self.proxy.exchanges)
        return client, x

    def respond(self, port: int, client):
        self.backends[port].send(OK)
        return client.received()

    def test_cookie_pins_backend(self):
        """
        The first response sets an opaque cookie; requests carrying it go to
        the same backend although round robin would alternate.
        """
        self.backends = {}
        client, _ = self.request()
        got = self.respond(8001, client)
        [cookie] = [line for line in got.split(b"\r\n") if line.startswith(b"Set-Cookie: ")]
        value = cookie[len(b"Set-Cookie: "):].split(b";")[0]
        self.assertTrue(value.startswith(b"srv="))
        self.assertNotIn(b"8001", value)
        self.assertIn(b"HttpOnly", cookie)
        for _ in range(3):
            client, _ = self.request(b"a=1; " + value)
            got = self.respond(8001, client)
            self.assertNotIn(b"Set-Cookie", got)
        self.assertEqual([b.requests for b in self.group.backends], [4, 0])

    def test_repinned_when_unavailable(self):
        """
        When the pinned backend is unavailable the request goes elsewhere
        and the cookie is replaced.
        """
        self.backends = {}
        client, _ = self.request()
        value = [l for l in self.respond(8001, client).split(b"\r\n")
                 if l.startswith(b"Set-Cookie")][0].split(b": ", 1)[1].split(b";")[0]
        self.group.backends[0].ejected = True
        self.group.changed(self.group.backends[0], "ejected")
        client, _ = self.request(value)
        got = self.respond(8002, client)
        self.assertIn(b"Set-Cookie: srv=", got)
        self.assertNotIn(value, got)

    def test_forged_cookie_ignored(self):
        """
        A cookie value the proxy did not issue is ignored.
        """
        self.backends = {}
        client, _ = self.request(b"srv=127.0.0.1:8002")
        got = self.respond(8001, client)
        self.assertIn(b"Set-Cookie: srv=", got)

    def test_token_depends_on_secret(self):
        """
        Different secrets give different tokens for the same backend.
        """
        other = _proxy(sticky=Sticky(cookie="srv", secret="other")).forwarder.groups["app"]
        backend = self.group.backends[0]
        self.assertNotEqual(self.group.sticky_token(backend),
                            other.sticky_token(other.backends[0]))


class DrainingTests(SynchronousTestCase):
    """
    A draining backend takes no new requests and lets go when idle.
    """

    def test_drain(self):
        """
        Draining a backend with a request in flight lets the request finish,
        sends new requests elsewhere, then closes its pooled connections.
        """
        proxy = _proxy()
        group = proxy.forwarder.groups["app"]
        client = proxy.connect_client()
        client.send(GET)
        backend = proxy.accept_backend()
        group.set_draining(group.backends[0], True)
        self.assertFalse(group.backends[0].available)
        for i in range(2):
            other = proxy.connect_client(port=41000 + i)
            other.send(GET)
        self.assertEqual(proxy.backend_attempts(), [("127.0.0.1", 8002)] * 2)
        backend.send(OK)
        self.assertTrue(client.received().endswith(b"ok"))
        self.assertTrue(backend.transport.disconnected)
        status = group.status()
        self.assertEqual(status["backends"][0]["draining"], True)
        self.assertEqual(status["backends"][0]["in_flight"], 0)

    def test_drained_in_config(self):
        """
        A server marked drain = true in the configuration starts drained.
        """
        from twistproxy.config import Server

        drained = Server("http://127.0.0.1:8001", "http", "127.0.0.1", 8001, drain=True)
        proxy = _proxy(servers=(drained, server("http://127.0.0.1:8002")))
        proxy.connect_client().send(GET)
        self.assertEqual(proxy.backend_attempts(), [("127.0.0.1", 8002)])


class LocalityTests(SynchronousTestCase):
    """
    With backends in regions and a locator, clients go to their nearest
    available backends, and fail over to the next region.
    """

    def test_nearest_region_then_failover_and_return(self):
        """
        A client located in us-east goes to the us-east backend; when it
        is down, to eu-west; when it is back, to us-east again.
        """
        from twistproxy.config import Locality, Locator, Server

        proxy = MemoryProxy(ProxyConfig(
            listeners=(Listener("main", "tcp:8080"),),
            upstreams={"app": UpstreamGroup("app", (
                Server("http://127.0.0.1:8001", "http", "127.0.0.1", 8001, region="eu-west"),
                Server("http://127.0.0.1:8002", "http", "127.0.0.1", 8002, region="us-east"),
            ))},
            routes=(Route("app"),),
            locator=Locator("cidr", {"networks": {"198.51.100.0/24": "us-east"}}),
            locality=Locality(regions=("eu-west", "us-east")),
        ))
        us = proxy.forwarder.groups["app"].backends[1]

        def port_for(client_ip: str) -> int:
            proxy.connect_client(client_ip).send(GET)
            [(host, port)] = proxy.backend_attempts()
            proxy.accept_backend()
            return port

        self.assertEqual(port_for("198.51.100.7"), 8002)
        self.assertEqual(port_for("192.0.2.1"), 8001)
        us.healthy = False
        proxy.forwarder.groups["app"].changed(us, "unhealthy")
        self.assertEqual(port_for("198.51.100.7"), 8001)
        us.healthy = True
        proxy.forwarder.groups["app"].changed(us, "healthy")
        self.assertEqual(port_for("198.51.100.7"), 8002)


class RetrySpillTests(SynchronousTestCase):
    """
    A retry leaves the failed locality level, so that no request is lost
    while one backend anywhere answers.
    """

    def test_zone_and_region_refusing(self):
        """
        Client in eu-west-1a; every backend of eu-west-1a and eu-west-1b
        refuses connections; one backend in us-east works.  With default
        settings every GET is answered by us-east, each having tried the
        refusing backends at most once each.
        """
        from twistproxy.config import Locality, Locator, Server

        places = [("eu-west", "eu-west-1a")] * 2 + [("eu-west", "eu-west-1b")] * 2
        servers = tuple(
            Server(f"http://127.0.0.1:{8001 + i}", "http", "127.0.0.1", 8001 + i,
                   region=region, zone=zone)
            for i, (region, zone) in enumerate(places)
        ) + (Server("http://127.0.0.1:9001", "http", "127.0.0.1", 9001, region="us-east"),)
        proxy = MemoryProxy(ProxyConfig(
            listeners=(Listener("main", "tcp:8080"),),
            upstreams={"app": UpstreamGroup("app", servers)},
            routes=(Route("app"),),
            locator=Locator("cidr", {"networks": {"192.0.2.0/24": "eu-west/eu-west-1a"}}),
            locality=Locality(regions=("eu-west", "us-east")),
        ))
        us = None
        for i in range(20):
            client = proxy.connect_client("192.0.2.7", port=41000 + i)
            client.send(GET)
            refused = []
            while proxy.backend_attempts() and proxy.backend_attempts()[0][1] != 9001:
                refused.append(proxy.backend_attempts()[0][1])
                proxy.refuse_backend()
            self.assertEqual(len(refused), len(set(refused)))
            self.assertTrue(refused)
            if proxy.backend_attempts():
                us = proxy.accept_backend()
            us.send(OK)
            self.assertTrue(client.received().startswith(b"HTTP/1.1 200"), i)
        self.assertEqual({x.backend.name for x in proxy.exchanges}, {"127.0.0.1:9001"})


class WatchedGroupTests(SynchronousTestCase):
    """
    Health checks and outlier detection act on the group's backends.
    """

    def test_outlier_ejects_after_consecutive_failures(self):
        """
        A backend that keeps refusing connections is ejected after
        consecutive_failures, gets no requests while ejected, and comes
        back after base_ejection.
        """
        from twistproxy.config import Outlier

        proxy = _proxy(outlier=Outlier(consecutive_failures=2, base_ejection=10, max_ejection=60),
                       retries=1)
        group = proxy.forwarder.groups["app"]
        bad = group.backends[0]
        good = None
        refused = 0
        for i in range(4):
            client = proxy.connect_client(port=42000 + i)
            client.send(GET)
            # Round robin sends every other request to 8001 first; it
            # refuses and the retry goes to 8002 (a new connection, then
            # the pooled one).
            if proxy.backend_attempts()[:1] == [("127.0.0.1", 8001)]:
                proxy.refuse_backend()
                refused += 1
            if proxy.backend_attempts():
                good = proxy.accept_backend()
            good.send(OK)
            self.assertTrue(client.received().startswith(b"HTTP/1.1 200"))
        self.assertEqual(refused, 2)
        self.assertTrue(bad.ejected)
        self.assertFalse(bad.available)
        for i in range(3):
            proxy.connect_client(port=43000 + i).send(GET)
        self.assertNotIn(("127.0.0.1", 8001), proxy.backend_attempts())
        proxy.reactor.advance(10.5)
        self.assertFalse(bad.ejected)
        self.assertTrue(bad.available)

    def test_tcp_health_check_marks_down_and_up(self):
        """
        An active TCP check that fails `fall` times takes a backend out;
        `rise` successes bring it back.
        """
        from twisted.internet.error import ConnectionRefusedError as Refused
        from twisted.python.failure import Failure
        from twistproxy.config import HealthCheck

        proxy = _proxy(health=HealthCheck(type="tcp", interval=1, jitter=0, rise=2, fall=2,
                                          options={"timeout": 0.5}))
        group = proxy.forwarder.groups["app"]
        group.start(proxy.reactor)
        self.addCleanup(group.stop)
        backend = group.backends[0]

        def answer(ok: bool):
            for host, port, factory, timeout, bind in list(proxy.reactor.tcpClients):
                if port == 8001 and not getattr(factory, "_answered", False):
                    factory._answered = True
                    if ok:
                        protocol = factory.buildProtocol(None)
                        from twisted.internet.testing import StringTransport
                        protocol.makeConnection(StringTransport())
                    else:
                        factory.clientConnectionFailed(None, Failure(Refused()))

        for _ in range(2):
            proxy.reactor.advance(1.0)
            answer(False)
        self.assertFalse(backend.healthy)
        self.assertEqual(group.status()["backends"][0]["health"]["consecutive_failures"], 2)
        for _ in range(2):
            proxy.reactor.advance(1.0)
            answer(True)
        self.assertTrue(backend.healthy)
        self.assertTrue(backend.available)


class FixesTests(SynchronousTestCase):
    """
    Corner cases of retries, stickiness and outlier reporting.
    """

    def test_sticky_cookie_follows_retry(self):
        """
        When a retry moves a request to another backend, the cookie pins
        the client to the backend that served it.
        """
        proxy = _proxy(sticky=Sticky(cookie="srv"))
        group = proxy.forwarder.groups["app"]
        client = proxy.connect_client()
        client.send(GET)
        proxy.refuse_backend()
        proxy.accept_backend().send(OK)
        got = client.received()
        expected = sticky_cookie(group.config.sticky, group.sticky_token(group.backends[1]))
        self.assertIn(b"Set-Cookie: " + expected + b"\r\n", got)

    def test_verdicts(self):
        """
        Only backend faults count as failures and only served requests as
        successes; overload and client-side endings say nothing.
        """
        from twistproxy.forwarder import _verdict

        self.assertEqual(
            [_verdict(r) for r in ("", "upstream_connect_failed", "upstream_timeout",
                                   "upstream_queue_full", "upstream_queue_timeout",
                                   "client_closed", "request_body_timeout")],
            [True, False, False, None, None, None, None],
        )

    def test_ipv6_backend_host_header(self):
        """
        An IPv6 backend on the default port gets a bracketed Host when the
        route does not keep the client's.
        """
        from twisted.internet.testing import MemoryReactorClock

        from twistproxy.build import make_group

        group = make_group(MemoryReactorClock(),
                           UpstreamGroup("g", (server("http://[2001:db8::1]"),)), Timeouts())
        self.assertEqual([pool.host for pool in group.pools.values()], [b"[2001:db8::1]"])
