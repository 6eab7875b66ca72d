"""
Tests for L{twistproxy.admin.history}: the status page's in-memory history,
sampled on a fake clock, its digests, how they add up across workers, and
what the page is shown of them.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import Dict, List

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from twistproxy.admin.history import (
    MAX_EVENTS, SECONDS, SLOT, History, Reading, backend_state, cache_size, combine,
    empty_digest, percentile, view,
)
from twistproxy.cache.entry import Entry
from twistproxy.cache.memory import MemoryStore
from twistproxy.config import Admin, AccessLog, Listener, ProxyConfig, Route, UpstreamGroup, server
from twistproxy.metrics import DURATION_BUCKETS
from twistproxy.service import ProxyService
from twistproxy.testing import MemoryPeer

WIDTH = len(DURATION_BUCKETS) + 1


def _route(requests: int, errors: int = 0, fast: int = 0, slow: int = 0) -> tuple:
    """
    A route's running totals: C{fast} requests took at most 5 ms, C{slow}
    ones between 0.25 and 0.5 s.
    """
    buckets = [0] * WIDTH
    buckets[0], buckets[6] = fast, slow
    return (requests, errors, *buckets)


class Totals:
    """
    What a L{History} reads, set by the test.
    """

    def __init__(self):
        self.counts: Dict[tuple, tuple] = {}
        self.states: Dict[tuple, tuple] = {}
        self.connections = 0

    def __call__(self) -> Reading:
        return Reading(dict(self.counts), dict(self.states), self.connections)


class HistoryTests(SynchronousTestCase):
    """
    L{History} keeps what changed each second.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.totals = Totals()
        self.history = History(self.clock, self.totals)
        self.addCleanup(self.history.stop)

    def tick(self, seconds: int = 1) -> None:
        for _ in range(seconds):
            self.clock.advance(1)

    def test_samples_each_second(self):
        """
        Each second's requests, 5xx answers and durations land at that
        second's place in the digest, for the route and for the whole
        proxy; what was there before the history started is not counted.
        """
        self.totals.counts[("route", "api")] = _route(5, 1, fast=5)
        self.history.start()
        self.history.sample()  # a second reading in the same second: nothing new
        self.tick()
        self.totals.counts[("route", "api")] = _route(8, 2, fast=7, slow=1)
        self.tick()
        digest = self.history.digest()
        self.assertEqual(digest["end"], 1002)
        self.assertEqual(len(digest["total"]["requests"]), SECONDS)
        self.assertEqual(digest["total"]["requests"][-3:], [0, 0, 3])
        self.assertEqual(digest["total"]["errors"][-3:], [0, 0, 1])
        # What was there before the history started is not counted; a
        # series that appears later (a route's first request) counts whole.
        self.totals.counts[("route", "web")] = _route(2, fast=2)
        self.tick()
        self.assertEqual(self.history.digest()["total"]["requests"][-3:], [0, 3, 2])
        [slot] = [s for s in digest["total"]["latency"] if any(s)]
        self.assertEqual((slot[0], slot[6]), (2, 1))
        api = digest["series"]["route"]["api"]
        self.assertEqual(len(api["requests"]), SECONDS // SLOT)
        self.assertEqual((sum(api["requests"]), sum(api["errors"])), (3, 1))
        self.assertEqual(sum(api["latency"]), 3)

    def test_series_without_latency(self):
        """
        A backend's series has requests and failures, and no latency; it
        does not count in the whole proxy's requests (the routes do).
        """
        self.totals.counts[("backend", "app", "10.0.0.1:80")] = (0, 0)
        self.history.start()
        self.tick()
        self.totals.counts[("backend", "app", "10.0.0.1:80")] = (4, 1)
        self.tick()
        series = self.history.digest()["series"]["backend"]["app/10.0.0.1:80"]
        self.assertEqual((sum(series["requests"]), sum(series["errors"]), series["latency"]),
                         (4, 1, []))
        self.assertEqual(sum(self.history.digest()["total"]["requests"]), 0)

    def test_backend_latency(self):
        """
        A backend's durations, counted per bucket, give its p50 and p99 of
        the last minute, not of before.
        """
        self.history.start()
        self.totals.counts[("backend", "app", "b")] = _route(100, 0, slow=100)
        self.tick(61)
        self.totals.counts[("backend", "app", "b")] = _route(110, 1, fast=10, slow=100)
        self.tick()
        backend = view(self.history.digest())["backends"]["app/b"]
        self.assertEqual((backend["requests_per_second"], backend["p50"]), (round(10 / 60, 3),
                                                                            0.0025))

    def test_total_going_down(self):
        """
        A total that goes down (a backend made again by a reload) counts
        from zero instead of going negative.
        """
        self.totals.counts[("backend", "app", "b")] = (10, 0)
        self.history.start()
        self.tick()
        self.totals.counts[("backend", "app", "b")] = (3, 0)
        self.tick()
        series = self.history.digest()["series"]["backend"]["app/b"]
        self.assertEqual(sum(series["requests"]), 3)

    def test_bounded(self):
        """
        Only the last L{SECONDS} seconds are kept and shown: older samples
        go, in memory and in the digest.
        """
        self.totals.counts[("route", "api")] = _route(0)
        self.history.start()
        for n in range(1, SECONDS + 101):
            self.totals.counts[("route", "api")] = _route(n)
            self.tick()
        self.assertEqual(len(self.history._samples), SECONDS)
        digest = self.history.digest()
        self.assertEqual(sum(digest["total"]["requests"]), SECONDS)
        # A digest that ends earlier has nothing of what came later.
        self.assertEqual(sum(self.history.digest(1000)["total"]["requests"]), 0)

    def test_idle_seconds_cost_nothing(self):
        """
        A second in which nothing moved keeps no sample.
        """
        self.totals.counts[("route", "api")] = _route(1)
        self.history.start()
        self.tick(30)
        self.assertEqual(len(self.history._samples), 0)

    def test_state_changes(self):
        """
        A backend's change of state is kept with when it happened and why,
        and its state says since when it holds.
        """
        self.totals.states[("app", "b")] = ("healthy", "", 0)
        self.history.start()
        self.tick(5)
        self.totals.states[("app", "b")] = ("unhealthy", "3 checks in a row failed", 2)
        self.tick()
        digest = self.history.digest()
        self.assertEqual(digest["events"], [{
            "time": 1006.0, "upstream": "app", "backend": "b", "from": "healthy",
            "to": "unhealthy", "detail": "3 checks in a row failed"}])
        self.assertEqual(digest["backends"]["app/b"], {
            "upstream": "app", "backend": "b", "state": "unhealthy",
            "detail": "3 checks in a row failed", "in_flight": 2, "since": 1006.0})

    def test_state_changes_of_the_last_hour(self):
        """
        Changes older than an hour are not shown, and at most
        L{MAX_EVENTS} are kept.
        """
        self.history.start()
        for n in range(MAX_EVENTS + 10):
            self.totals.states[("app", "b")] = ("healthy" if n % 2 else "draining", "", 0)
            self.tick()
        self.assertEqual(len(self.history._events), MAX_EVENTS)
        self.tick(3600 - MAX_EVENTS // 2)
        events = self.history.digest()["events"]
        self.assertTrue(0 < len(events) < MAX_EVENTS, len(events))
        self.assertTrue(all(e["time"] >= self.clock.seconds() - 3600 for e in events))

    def test_gone_backend(self):
        """
        A backend gone from the readings (removed by a reload or DNS) is no
        longer shown.
        """
        self.totals.states[("app", "b")] = ("healthy", "", 0)
        self.history.start()
        self.tick()
        del self.totals.states[("app", "b")]
        self.tick()
        self.assertEqual(self.history.digest()["backends"], {})
        self.assertEqual(self.history._since, {})

    def test_reading_fails(self):
        """
        A reading that raises is logged, and sampling goes on.
        """
        def broken():
            raise RuntimeError("boom")

        history = History(self.clock, broken)
        history.start()
        self.addCleanup(history.stop)
        self.tick(3)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 4)

    def test_stop(self):
        """
        A stopped history samples no more.
        """
        self.history.start()
        self.history.stop()
        self.totals.counts[("route", "api")] = _route(3)
        self.tick(3)
        self.assertEqual(len(self.clock.getDelayedCalls()), 0)


class CombineTests(SynchronousTestCase):
    """
    L{combine} adds workers' digests of the same seconds up.
    """

    def digest(self, requests: int, state: str, in_flight: int, events: List[dict]):
        digest = empty_digest(2000)
        digest["total"]["requests"][-1] = requests
        digest["total"]["latency"][-1][0] = requests
        digest["series"]["route"] = {"api": {
            "requests": [0] * 89 + [requests], "errors": [0] * 90,
            "latency": [requests] + [0] * (WIDTH - 1)}}
        digest["backends"]["app/b"] = {
            "upstream": "app", "backend": "b", "state": state, "detail": state,
            "in_flight": in_flight, "since": 1.0}
        digest["events"] = events
        digest["connections"] = 2
        return digest

    def test_adds_up(self):
        """
        Traffic, latency counts, requests in flight and connections add up;
        a backend shows the most worrying state any worker sees; every
        worker's state changes are kept, in time order.
        """
        one = self.digest(3, "healthy", 1, [{"time": 20.0}])
        two = self.digest(4, "unhealthy", 2, [{"time": 10.0}])
        combined = combine([one, two], 2000)
        self.assertEqual(combined["total"]["requests"][-1], 7)
        self.assertEqual(combined["total"]["latency"][-1][0], 7)
        self.assertEqual(combined["series"]["route"]["api"]["requests"][-1], 7)
        self.assertEqual(combined["series"]["route"]["api"]["latency"][0], 7)
        self.assertEqual(combined["backends"]["app/b"]["state"], "unhealthy")
        self.assertEqual(combined["backends"]["app/b"]["in_flight"], 3)
        self.assertEqual([e["time"] for e in combined["events"]], [10.0, 20.0])
        self.assertEqual(combined["connections"], 4)
        # The inputs are left alone.
        self.assertEqual(one["series"]["route"]["api"]["requests"][-1], 3)

    def test_none(self):
        """
        With no worker answering, the digest is empty.
        """
        self.assertEqual(combine([], 2000), empty_digest(2000))

    def test_other_seconds(self):
        """
        Digests of other seconds do not add up: refused.
        """
        self.assertRaises(ValueError, combine, [empty_digest(1999)], 2000)


class CacheSizeTests(SynchronousTestCase):
    """
    The cache's size is kept beside its events, where its store can tell.
    """

    def test_memory_store(self):
        """
        A memory store tells its entries, bytes and budget; a store that
        does not count (Redis) tells nothing, nor one that has such
        attributes without declaring L{IMeasuredCacheStore}.
        """
        store = MemoryStore(Clock(), max_bytes=10_000)
        self.assertEqual(cache_size(store), (0, 0, 10_000))
        entry = Entry(200, b"OK", [], b"x" * 100, 0.0, 0.0)
        store.put(b"k", entry, 60)
        self.assertEqual(cache_size(store), (1, entry.size + 1, 10_000))
        self.assertIsNone(cache_size(object()))

        class Undeclared:
            used, max_bytes = 1, 2

            def __len__(self) -> int:
                return 3

        self.assertIsNone(cache_size(Undeclared()))

    def test_digest_view_combine(self):
        """
        The size of the last reading is in the digest and the view; with
        workers, each one's store adds up; with no store that can tell, it
        is C{None}.
        """
        clock = Clock()
        totals = Totals()
        history = History(clock, lambda: Reading({}, {}, 0, (3, 300, 1000)))
        history.start()
        self.addCleanup(history.stop)
        size = {"entries": 3, "bytes": 300, "max_bytes": 1000}
        digest = history.digest()
        self.assertEqual(view(digest)["cache_size"], size)
        self.assertEqual(combine([digest, digest], digest["end"])["cache_size"],
                         {"entries": 6, "bytes": 600, "max_bytes": 2000})
        unknown = History(clock, totals)
        unknown.sample()
        self.assertIsNone(view(unknown.digest())["cache_size"])
        self.assertIsNone(combine([unknown.digest()], digest["end"])["cache_size"])

    def test_has_cache(self):
        """
        Whether a cache is configured is in the digest and the view, so the
        page can tell a store that cannot say its size from no cache at
        all; with workers, any one's cache counts.
        """
        clock = Clock()
        cached = History(clock, lambda: Reading({}, has_cache=True))
        cached.sample()
        uncached = History(clock, lambda: Reading({}))
        uncached.sample()
        end = cached.digest()["end"]
        self.assertIs(view(cached.digest())["has_cache"], True)
        self.assertIs(view(uncached.digest())["has_cache"], False)
        self.assertIs(view(combine([uncached.digest()], end))["has_cache"], False)
        self.assertIs(view(combine([uncached.digest(), cached.digest()], end))["has_cache"],
                      True)


class PercentileTests(SynchronousTestCase):
    """
    L{percentile} reads a quantile from bucket counts.
    """

    def test_within_bucket(self):
        """
        The quantile is interpolated within its bucket, as Prometheus's
        C{histogram_quantile} does.
        """
        counts = [0] * WIDTH
        counts[1] = 10  # 5 to 10 ms
        self.assertAlmostEqual(percentile(counts, 0.5), 0.0075)
        counts[0] = 10  # up to 5 ms
        self.assertAlmostEqual(percentile(counts, 0.25), 0.0025)
        self.assertAlmostEqual(percentile(counts, 0.99), 0.005 + 0.005 * 0.98)

    def test_beyond_last_bound(self):
        """
        Beyond the last bound the quantile is said to be that bound.
        """
        counts = [0] * WIDTH
        counts[-1] = 1
        self.assertEqual(percentile(counts, 0.5), DURATION_BUCKETS[-1])

    def test_nothing(self):
        """
        Without any duration there is no quantile.
        """
        self.assertIsNone(percentile([0] * WIDTH, 0.5))


class ViewTests(SynchronousTestCase):
    """
    L{view} is what the page is shown.
    """

    def test_view(self):
        """
        The charts per second and per slot, and the figures of the last
        minute: requests per second, error rate, p50 and p99; backends
        have their state and their traffic; refusals and cache events are
        counted over the window.
        """
        digest = empty_digest(2000)
        digest["total"]["requests"][-60:] = [2] * 60
        digest["total"]["errors"][-1] = 12
        digest["total"]["latency"][-1][1] = 120
        digest["series"] = {
            "route": {"api": {"requests": [0] * 89 + [120], "errors": [0] * 89 + [12],
                              "latency": [0, 120] + [0] * (WIDTH - 2)}},
            "backend": {"app/b": {"requests": [0] * 89 + [60], "errors": [0] * 90,
                                  "latency": []}},
            "reason": {"no_backend": {"requests": [0] * 88 + [1, 2], "errors": [0] * 90,
                                      "latency": []}},
            "cache": {"hit": {"requests": [0] * 89 + [3], "errors": [0] * 90, "latency": []}},
        }
        digest["backends"]["app/b"] = {"upstream": "app", "backend": "b", "state": "healthy",
                                       "detail": "", "in_flight": 0, "since": 1.0}
        shown = view(digest)
        self.assertEqual(len(shown["requests"]), SECONDS)
        self.assertEqual(len(shown["p50"]), SECONDS // SLOT)
        self.assertIsNone(shown["p50"][0])
        self.assertAlmostEqual(shown["p50"][-1], 0.0075)
        self.assertEqual(shown["minute"]["requests_per_second"], 2.0)
        self.assertEqual(shown["minute"]["error_rate"], 0.1)
        self.assertEqual(shown["routes"]["api"]["requests_per_second"], 2.0)
        self.assertAlmostEqual(shown["routes"]["api"]["p99"], 0.00995, places=4)
        backend = shown["backends"]["app/b"]
        self.assertEqual((backend["state"], backend["requests_per_second"], backend["p50"]),
                         ("healthy", 1.0, None))
        self.assertEqual(shown["refusals"], {"no_backend": 3})
        self.assertEqual(shown["cache"], {"hit": 3})


class PlacesTests(SynchronousTestCase):
    """
    For GSLB and locality, the view says what each region and zone of a
    group's backends received in the last minute.
    """

    def test_shares(self):
        """
        A group whose backends have regions and zones gets, per region
        (the busiest first) and per zone, requests per second and the
        share of the group's requests of the last minute, not before; a
        group without places gets nothing.
        """
        clock = Clock()
        clock.advance(1000)
        totals = Totals()
        states = {("app", b): ("healthy", "", 0) for b in ("a", "b", "c")}
        states[("plain", "p")] = ("healthy", "", 0)
        places = {("app", "a"): ("eu", "eu-1"), ("app", "b"): ("eu", "eu-2"),
                  ("app", "c"): ("us", "")}
        history = History(clock, lambda: Reading(dict(totals.counts), states, 0, None, places))
        history.start()
        self.addCleanup(history.stop)
        # Before the last minute: not counted.
        totals.counts[("backend", "app", "c")] = (600, 0)
        clock.advance(1)
        clock.advance(60)
        totals.counts.update({("backend", "app", "a"): (60, 0), ("backend", "app", "b"): (180, 0),
                              ("backend", "app", "c"): (660, 0), ("backend", "plain", "p"): (5, 0)})
        clock.advance(1)
        digest = history.digest()
        self.assertEqual((digest["backends"]["app/a"]["region"],
                          digest["backends"]["app/a"]["zone"]), ("eu", "eu-1"))
        self.assertNotIn("region", digest["backends"]["plain/p"])
        shown = view(digest)["places"]
        self.assertEqual(list(shown), ["app"])
        self.assertEqual(shown["app"], [
            {"region": "eu", "requests_per_second": 4.0, "share": 0.8, "zones": [
                {"zone": "eu-1", "requests_per_second": 1.0, "share": 0.2},
                {"zone": "eu-2", "requests_per_second": 3.0, "share": 0.6}]},
            {"region": "us", "requests_per_second": 1.0, "share": 0.2, "zones": [
                {"zone": "", "requests_per_second": 1.0, "share": 0.2}]},
        ])

    def test_no_traffic(self):
        """
        Without requests in the last minute, shares are C{None}.
        """
        digest = empty_digest(2000)
        digest["backends"]["app/a"] = {"upstream": "app", "backend": "a", "state": "healthy",
                                       "detail": "", "in_flight": 0, "since": 1.0,
                                       "region": "eu", "zone": ""}
        self.assertEqual(view(digest)["places"], {"app": [
            {"region": "eu", "requests_per_second": 0.0, "share": None,
             "zones": [{"zone": "", "requests_per_second": 0.0, "share": None}]}]})


class BackendStateTests(SynchronousTestCase):
    """
    L{backend_state} says a backend's state in words, and why.
    """

    def state(self, monitor=None, outlier=None, **flags):
        backend = SimpleNamespace(**{**dict(
            draining=False, ejected=False, healthy=True, weight=10, effective_weight=10),
            **flags})
        return backend_state(SimpleNamespace(monitor=monitor, outlier=outlier), backend, 100.0)

    def test_states(self):
        """
        Draining comes first, then ejected (with the time left), unhealthy
        (with the last check's reason), slow start (with its share), and
        healthy.
        """
        outlier = SimpleNamespace(status=lambda b: {"ejected_until": 130.0})
        monitor = SimpleNamespace(status=lambda b: {"last_detail": "connection refused"})
        self.assertEqual(self.state(draining=True, ejected=True)[0], "draining")
        self.assertEqual(self.state(outlier=outlier, ejected=True, healthy=False),
                         ("ejected", "back in 30 s"))
        self.assertEqual(self.state(monitor=monitor, healthy=False),
                         ("unhealthy", "connection refused"))
        self.assertEqual(self.state(effective_weight=3), ("slow start", "at 30% of its weight"))
        self.assertEqual(self.state(), ("healthy", ""))

    def test_not_watched(self):
        """
        A backend its monitor does not know (just found by DNS) has no
        reason, and no error.
        """
        def unknown(backend):
            raise KeyError(backend)

        self.assertEqual(self.state(monitor=SimpleNamespace(status=unknown), healthy=False),
                         ("unhealthy", ""))


class ServiceTests(SynchronousTestCase):
    """
    A L{ProxyService} with an admin listener keeps a history of its own
    traffic and backends, while the admin listener listens.
    """

    def test_service_history(self):
        """
        A request through the proxy shows in the history of its route,
        its group and its backend, and the backend's state and region are
        there.
        """
        config = ProxyConfig(
            listeners=(Listener("main", "tcp:8080"),),
            upstreams={"app": UpstreamGroup("app", (
                replace(server("http://127.0.0.1:8001"), region="eu", zone="eu-1"),))},
            routes=(Route("app", name="api"),),
            access_log=AccessLog(path=""), admin=Admin(),
        )
        reactor = MemoryReactorClock()
        reactor.advance(5000)
        service = ProxyService(config, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        [site] = [f for port, f, _, _ in reactor.tcpServers if port == 9901]
        site.doStart()
        self.addCleanup(site.doStop)
        history = site.history
        client = MemoryPeer(service.factory.buildProtocol(None), peer=None)
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        MemoryPeer(reactor.tcpClients[0][2].buildProtocol(None), peer=None).send(
            b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
        reactor.advance(1)
        shown = view(history.digest())
        self.assertEqual(sum(shown["requests"]), 1)
        self.assertEqual(sum(shown["errors"]), 1)
        self.assertEqual(sum(shown["routes"]["api"]["requests"]), 1)
        self.assertEqual(sum(shown["upstreams"]["app"]["requests"]), 1)
        backend = shown["backends"]["app/127.0.0.1:8001"]
        self.assertEqual((sum(backend["requests"]), backend["state"]), (1, "healthy"))
        # Its time to answer was counted (at once, on this clock).
        self.assertEqual(backend["p99"], 0.005)
        self.assertEqual(shown["connections"], 1)
        self.assertEqual([(r["region"], r["share"]) for r in shown["places"]["app"]],
                         [("eu", 1.0)])
        site.doStop()
        self.assertFalse(history._loop.running)
