# -*- test-case-name: tests.test_faults_failover -*-
"""
Fault tests: backends and regions failing under load, with the proxy's
default retry settings.

Each test runs the installed proxy (C{twistd twistproxy}) in front of
origins in the test process (L{tests.e2e_support.OriginFactory}), injects a
real fault over loopback (an origin that dies with its connections, zones
and regions that refuse connections, an origin that resets every request,
one that stalls in the middle of a body) and counts what the clients see.
The promises are those of the section "Backends and regions failing" of
docs/faults.rst, and each test's docstring states its promise in the words
used there.

No test configures retries, a retry budget, a health check or outlier
detection: what a client sees is what the defaults give.  Every test is
bounded by C{timeout}; clients are blocking sockets in threads, each with a
socket timeout.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Dict, List

from twisted.internet import defer, reactor, threads

from tests.e2e_support import (
    HOST,
    ConnectionClosed,
    OriginFactory,
    RawClient,
    RestartableOrigin,
)
from tests.test_e2e_balancing import _BalancingTestCase, _get, _Load, _Outcome, _servers


class _BusyLoad(_Load):
    """
    A keep-alive client that sends its next request as soon as it has the
    answer to the last, as a load generator does: several of them keep
    several requests in flight at every moment.
    """

    pause = 0


class _FailoverFaultTestCase(_BalancingTestCase):
    """
    Origins, a proxy and keep-alive clients, as in
    L{tests.test_e2e_balancing}, with several clients at once.
    """

    timeout = 40

    @defer.inlineCallbacks
    def loaded(self, port: int, scenario, clients: int = 6):
        """
        Run C{scenario()} while C{clients} clients send C{GET /} requests
        one after the other, each on its own keep-alive connection.

        @return: A L{Deferred} firing with every L{_Outcome}, in the order
            the requests were sent.
        """
        loads = [_BusyLoad(port, keep_alive=True) for _ in range(clients)]
        yield self.run_loads(loads, scenario)
        return sorted((o for load in loads for o in load.outcomes), key=lambda o: o.sent)

    @staticmethod
    def origins_in(outcomes: List[_Outcome], start: float, end: float) -> Counter:
        """
        How many of the requests sent at or after C{start} and answered
        before C{end} each origin answered.
        """
        return Counter(o.origin for o in outcomes if start <= o.sent and o.received < end)


class BackendKilledTests(_FailoverFaultTestCase):
    """
    A backend that dies with its connections costs the clients nothing.
    """

    @defer.inlineCallbacks
    def test_killed_under_keep_alive_load(self):
        """
        A killed backend costs no client an error while another backend
        remains (default settings; killed under keep-alive load: its
        listening socket and every open connection, pooled ones included).
        Requests on its dead pooled connections, and those that meet its
        refused port, are sent to the other backend.  Two origins, six
        keep-alive clients; origin a is killed, restarted and killed again.
        """
        origins = yield self.start_origins("a", "b")
        proxy = yield self.start_proxy("[upstreams.app]\n" + _servers(origins))
        a = origins["a"]
        times: Dict[str, float] = {}

        @defer.inlineCallbacks
        def scenario():
            yield self.sleep(0.5)
            times["killed"] = time.monotonic()
            yield a.stop()
            yield self.sleep(1.0)
            yield a.start()
            times["restarted"] = time.monotonic()
            yield self.sleep(0.7)
            times["killed again"] = time.monotonic()
            yield a.stop()
            yield self.sleep(1.0)

        outcomes = yield self.loaded(proxy.port, scenario)
        self.assert_no_errors(outcomes)
        before = self.origins_in(outcomes, 0, times["killed"])
        back = self.origins_in(outcomes, times["restarted"], times["killed again"])
        self.assertGreater(before["a"], 10)
        self.assertGreater(back["a"], 10)
        self.log.info("backend killed twice: {n} requests, all 200", n=len(outcomes))


class LocalityFailingTests(_FailoverFaultTestCase):
    """
    Retries leave a failed zone, then a failed region.
    """

    @defer.inlineCallbacks
    def test_zone_then_region_refusing(self):
        """
        With default settings and no health check, no idempotent request is
        lost while one healthy backend remains anywhere: a retry leaves the
        client's zone, then its region, when every backend there refuses
        connections.  Clients in eu-west-1a; two origins in each of
        eu-west-1a and eu-west-1b, one in us-east.  The zone's origins are
        stopped, then the other zone's: every GET gets 200, from the other
        zone, then from us-east.
        """
        names = ["1a-1", "1a-2", "1b-1", "1b-2", "us-1"]
        origins = yield self.start_origins(*names)
        servers = []
        for name, origin in origins.items():
            region = "us-east" if name.startswith("us") else "eu-west"
            zone = f', zone = "eu-west-{name[:2]}"' if region == "eu-west" else ""
            servers.append(
                f'{{ url = "http://{HOST}:{origin.port}", region = "{region}"{zone} }}')
        proxy = yield self.start_proxy(
            "[upstreams.app]\nservers = [" + ", ".join(servers) + "]\n"
            + '\n[locator]\ntype = "cidr"\n'
            + 'networks = { "127.0.0.0/8" = "eu-west/eu-west-1a" }\n'
            + '\n[locality]\nregions = ["eu-west", "us-east"]\n')
        times: Dict[str, float] = {}

        @defer.inlineCallbacks
        def scenario():
            yield self.sleep(0.5)
            times["zone"] = time.monotonic()
            yield defer.gatherResults([origins[n].stop() for n in ("1a-1", "1a-2")])
            times["zone down"] = time.monotonic()
            yield self.sleep(1.0)
            times["region"] = time.monotonic()
            yield defer.gatherResults([origins[n].stop() for n in ("1b-1", "1b-2")])
            times["region down"] = time.monotonic()
            yield self.sleep(1.0)

        outcomes = yield self.loaded(proxy.port, scenario, clients=4)
        self.assert_no_errors(outcomes)
        before = self.origins_in(outcomes, 0, times["zone"])
        zone_down = self.origins_in(outcomes, times["zone down"], times["region"])
        region_down = self.origins_in(outcomes, times["region down"], time.monotonic())
        for phase, seen, wanted in [
            ("before", before, {"1a-1", "1a-2"}),
            ("zone down", zone_down, {"1b-1", "1b-2"}),
            ("region down", region_down, {"us-1"}),
        ]:
            self.assertEqual(set(seen), wanted, phase)
            self.assertGreater(sum(seen.values()), 20, phase)
        self.log.info("zone then region refusing: {n} requests, all 200", n=len(outcomes))


class MisbehavingBackendTests(_FailoverFaultTestCase):
    """
    A backend that resets, or stalls, harms only its own requests.
    """

    @defer.inlineCallbacks
    def start_resetting_origin(self, name: str):
        """
        Start an origin that reads each request and resets its connection
        without answering.
        """
        def handler(proto, req):
            proto.transport.abortConnection()

        origin = RestartableOrigin(reactor, OriginFactory(handler), name)
        self.addCleanup(origin.stop)
        yield origin.start()
        return origin

    @defer.inlineCallbacks
    def test_backend_resets_every_request(self):
        """
        A backend that resets every request costs the clients nothing, and
        only its own share of the requests is tried on it (default
        settings): each GET it resets is sent to another backend, and the
        retry does not take that backend's turn in the round robin, so the
        resetting backend is tried first by about half of the requests with
        two backends, not by nearly every one.
        """
        good = yield self.start_origins("good")
        bad = yield self.start_resetting_origin("bad")
        origins = {"bad": bad, **good}
        proxy = yield self.start_proxy("[upstreams.app]\n" + _servers(origins))

        outcomes = yield self.loaded(proxy.port, lambda: self.sleep(2.0), clients=3)
        self.assert_no_errors(outcomes)
        tried_bad = len(bad.factory.requests)
        self.assertGreater(len(outcomes), 60)
        self.assertGreater(tried_bad, len(outcomes) * 0.4)
        self.assertLess(tried_bad, len(outcomes) * 0.6)
        self.log.info("resetting backend: {n} requests, all 200; {bad} tried on it first",
                      n=len(outcomes), bad=tried_bad)

    @defer.inlineCallbacks
    def test_backend_stalls_mid_body(self):
        """
        A backend that stalls mid-body gives its client a clean failure
        within the configured timeout, and the proxy does not wedge: the
        response ends short and its connection closes after
        C{timeouts.upstream_response} (1 s here) without a byte, and other
        requests to the same backend are answered meanwhile and afterwards.
        """
        stalled = []

        def handler(proto, req):
            if req.target == b"/stall":
                proto.transport.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
                stalled.append(proto)
            else:
                proto.transport.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Origin: a\r\n\r\nok")

        origin = RestartableOrigin(reactor, OriginFactory(handler), "a")
        self.addCleanup(origin.stop)
        yield origin.start()
        proxy = yield self.start_proxy(
            "[upstreams.app]\n" + _servers({"a": origin})
            + "\n[timeouts]\nupstream_response = 1\n")

        def stall():
            sent = time.monotonic()
            client = RawClient(proxy.port, timeout=15.0)
            try:
                client.send(_get(b"/stall"))
                response = client.read_response()
                closed = client.at_eof(wait=5.0)
            finally:
                client.close()
            return response, closed, time.monotonic() - sent

        results = []

        @defer.inlineCallbacks
        def scenario():
            yield self.sleep(0.3)
            results.extend((yield defer.gatherResults(
                [threads.deferToThread(stall) for _ in range(2)])))
            yield self.sleep(0.3)

        outcomes = yield self.loaded(proxy.port, scenario, clients=2)
        self.assert_no_errors(outcomes)
        self.assertGreater(len(outcomes), 20)
        for response, closed, took in results:
            self.assertEqual((response.status, response.complete), (200, False))
            self.assertEqual(len(response.body), 100)
            self.assertTrue(closed)
            self.assertGreater(took, 0.8)
            self.assertLess(took, 6.0)
        # And afterwards, the same backend still serves.
        after = yield threads.deferToThread(self._one, proxy.port)
        self.assertEqual(after, 200)
        self.log.info("stalled backend: clients cut after {took}s; {n} other requests, all 200",
                      took=[round(t, 2) for _, _, t in results], n=len(outcomes))

    @staticmethod
    def _one(port: int) -> int:
        client = RawClient(port, timeout=10.0)
        try:
            client.send(_get())
            return client.read_response().status
        except ConnectionClosed:
            return 0
        finally:
            client.close()

