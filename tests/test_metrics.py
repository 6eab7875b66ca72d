"""
Tests for L{twistproxy.metrics}: what finished exchanges and the service's
status look like in the Prometheus exposition.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Dict, Optional

from prometheus_client import REGISTRY
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twistproxy.config import Route
from twistproxy.http.exchange import Exchange
from twistproxy.forwarder import RouteRuntime
from twistproxy.http.parser import parse_request_head
from twistproxy.metrics import DURATION_BUCKETS, ProxyMetrics, combine, status_class


def _exchange(clock: Clock, status: int = 200, route: Optional[str] = "api",
              group: Optional[str] = "app", backend: Optional[str] = "127.0.0.1:8001",
              body_bytes: int = 0, reason: str = "", attempts: int = 1) -> Exchange:
    x = Exchange(parse_request_head(b"GET / HTTP/1.1\r\nHost: a"), "192.0.2.1", None,
                 clock.seconds())
    if route is not None:
        x.route = RouteRuntime(Route(group or "app", name=route), SimpleNamespace(name=group))
        if group is not None:
            x.group = x.route.group
    if backend is not None:
        x.backend = SimpleNamespace(name=backend, durations=None)
    x.status = status
    x.body_bytes = body_bytes
    x.reason = reason
    x.attempts = attempts
    return x


def _samples(metrics: ProxyMetrics) -> Dict:
    """
    Every sample of the exposition, as {(name, sorted labels): value}.
    """
    text = metrics.exposition().decode("utf-8")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _status() -> Dict:
    backend = dict(name="10.0.0.1:80", available=True, healthy=True, ejected=False,
                   draining=False, in_flight=3, requests=120, failures=4)
    return {"groups": [{
        "name": "app", "balancer": "round_robin", "in_flight": 5, "retries_in_flight": 0,
        "backends": [
            backend,
            dict(backend, name="10.0.0.2:80", available=False, healthy=False, ejected=True,
                 draining=True, in_flight=0, requests=7, failures=7),
        ],
    }]}


class ObserveTests(SynchronousTestCase):
    """
    L{ProxyMetrics.observe} counts finished exchanges.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.metrics = ProxyMetrics(self.clock)

    def test_requests_by_route_status_class_upstream(self):
        """
        Each exchange adds one to C{twistproxy_requests_total} under its
        route, status class and upstream group.
        """
        self.metrics.observe(_exchange(self.clock, 200))
        self.metrics.observe(_exchange(self.clock, 204))
        self.metrics.observe(_exchange(self.clock, 503))
        samples = _samples(self.metrics)
        labels = lambda c: (("route", "api"), ("status_class", c), ("upstream", "app"))
        self.assertEqual(samples[("twistproxy_requests_total", labels("2xx"))], 2)
        self.assertEqual(samples[("twistproxy_requests_total", labels("5xx"))], 1)
        self.assertNotIn(("twistproxy_requests_total", labels("4xx")), samples)

    def test_no_route(self):
        """
        An exchange that matched no route is counted under C{-} for route
        and upstream, and its reason code under
        C{twistproxy_proxy_answers_total}.
        """
        self.metrics.observe(_exchange(self.clock, 404, route=None, group=None, backend=None,
                                       reason="no_route"))
        samples = _samples(self.metrics)
        self.assertEqual(samples[("twistproxy_requests_total",
                                  (("route", "-"), ("status_class", "4xx"), ("upstream", "-")))], 1)
        self.assertEqual(samples[("twistproxy_proxy_answers_total", (("reason", "no_route"),))], 1)

    def test_unnamed_route(self):
        """
        A route without a name is labelled C{-}.
        """
        self.metrics.observe(_exchange(self.clock, route=""))
        samples = _samples(self.metrics)
        self.assertEqual(samples[("twistproxy_requests_total",
                                  (("route", "-"), ("status_class", "2xx"), ("upstream", "app")))], 1)

    def test_durations(self):
        """
        The request duration runs from C{started} to the clock's now; the
        upstream duration from C{upstream_started} to C{upstream_ended}.
        """
        x = _exchange(self.clock)
        x.upstream_started = self.clock.seconds() + 0.1
        x.upstream_ended = self.clock.seconds() + 0.3
        self.clock.advance(0.4)
        self.metrics.observe(x)
        samples = _samples(self.metrics)
        route = (("route", "api"),)
        self.assertAlmostEqual(samples[("twistproxy_request_duration_seconds_sum", route)], 0.4)
        self.assertEqual(samples[("twistproxy_request_duration_seconds_count", route)], 1)
        self.assertEqual(samples[("twistproxy_request_duration_seconds_bucket",
                                  (("le", "0.25"),) + route)], 0)
        self.assertEqual(samples[("twistproxy_request_duration_seconds_bucket",
                                  (("le", "0.5"),) + route)], 1)
        upstream = (("upstream", "app"),)
        self.assertAlmostEqual(samples[("twistproxy_upstream_duration_seconds_sum", upstream)], 0.2)
        self.assertEqual(samples[("twistproxy_upstream_duration_seconds_count", upstream)], 1)

    def test_backend_durations(self):
        """
        The upstream duration is counted on the backend too, in the bucket
        of the same bounds (at most 0.25 s here), for the status page.
        """
        x = _exchange(self.clock)
        x.upstream_started = self.clock.seconds()
        x.upstream_ended = self.clock.seconds() + 0.2
        self.metrics.observe(x)
        self.metrics.observe(x)
        want = [0] * (len(DURATION_BUCKETS) + 1)
        want[DURATION_BUCKETS.index(0.25)] = 2
        self.assertEqual(x.backend.durations, want)

    def test_no_upstream_duration_without_backend(self):
        """
        An exchange the proxy answered without reaching a backend adds no
        upstream duration.
        """
        self.metrics.observe(_exchange(self.clock, 502, backend=None,
                                       reason="upstream_connect_failed"))
        samples = _samples(self.metrics)
        self.assertNotIn(("twistproxy_upstream_duration_seconds_count", (("upstream", "app"),)),
                         samples)
        self.assertEqual(samples[("twistproxy_proxy_answers_total",
                                  (("reason", "upstream_connect_failed"),))], 1)

    def test_bytes_and_retries(self):
        """
        Body bytes add up per route; retries count the attempts beyond the
        first per upstream group.
        """
        self.metrics.observe(_exchange(self.clock, body_bytes=100))
        self.metrics.observe(_exchange(self.clock, body_bytes=50, attempts=3))
        samples = _samples(self.metrics)
        self.assertEqual(samples[("twistproxy_response_bytes_total", (("route", "api"),))], 150)
        self.assertEqual(samples[("twistproxy_retries_total", (("upstream", "app"),))], 2)

    def test_labels_memoized(self):
        """
        The labelled children of a combination are looked up once: the
        second exchange with the same labels reuses them.
        """
        self.metrics.observe(_exchange(self.clock))
        self.metrics.observe(_exchange(self.clock))
        self.assertEqual(list(self.metrics._by_request), [("api", "2xx", "app")])

    def test_status_class(self):
        """
        Status codes map to their class; 0 (no response) to C{none}.
        """
        self.assertEqual([status_class(s) for s in (101, 200, 308, 499, 504, 0)],
                         ["1xx", "2xx", "3xx", "4xx", "5xx", "none"])

    def test_own_registry(self):
        """
        Two instances do not collide (each has its own registry), and
        neither registers in the global default registry.
        """
        other = ProxyMetrics(self.clock)
        self.metrics.observe(_exchange(self.clock))
        self.assertNotIn(("twistproxy_requests_total",
                          (("route", "api"), ("status_class", "2xx"), ("upstream", "app"))),
                         _samples(other))
        self.assertIsNone(REGISTRY.get_sample_value(
            "twistproxy_requests_total", {"route": "api", "status_class": "2xx", "upstream": "app"}))

    def test_content_type(self):
        """
        The exposition is announced as the Prometheus text format that
        C{prometheus_client} writes.
        """
        self.assertEqual(self.metrics.content_type, CONTENT_TYPE_LATEST)
        self.assertTrue(self.metrics.content_type.startswith("text/plain; version="))


def _ended(listener: str, protocol: str = "TCP", status: int = 200,
           received: int = 0, sent: int = 0) -> SimpleNamespace:
    """
    A relayed connection or UDP session that ended, as the metrics see it.
    """
    return SimpleNamespace(factory=SimpleNamespace(listener=listener), protocol=protocol,
                           status=status, bytes_received=received, bytes_sent=sent)


class ObserveConnectionTests(SynchronousTestCase):
    """
    L{ProxyMetrics.observe_connection} counts relayed TCP connections and
    UDP sessions that ended.
    """

    def test_by_listener_protocol_status(self):
        """
        Each ended connection or session adds one to
        C{twistproxy_stream_connections_total} under its listener, protocol
        (lower case) and status, and its bytes to the listener's received
        and sent counters.
        """
        metrics = ProxyMetrics(Clock())
        metrics.observe_connection(_ended("db", received=10, sent=100))
        metrics.observe_connection(_ended("db", received=5, sent=50))
        metrics.observe_connection(_ended("db", status=429))
        metrics.observe_connection(_ended("dns", "UDP", received=30, sent=60))
        samples = _samples(metrics)
        total = "twistproxy_stream_connections_total"
        labels = lambda listener, protocol, status: (
            ("listener", listener), ("protocol", protocol), ("status", status))
        self.assertEqual(samples[(total, labels("db", "tcp", "200"))], 2)
        self.assertEqual(samples[(total, labels("db", "tcp", "429"))], 1)
        self.assertEqual(samples[(total, labels("dns", "udp", "200"))], 1)
        self.assertEqual(samples[("twistproxy_stream_received_bytes_total",
                                  (("listener", "db"),))], 15)
        self.assertEqual(samples[("twistproxy_stream_sent_bytes_total",
                                  (("listener", "db"),))], 150)
        self.assertEqual(samples[("twistproxy_stream_received_bytes_total",
                                  (("listener", "dns"),))], 30)
        self.assertEqual(samples[("twistproxy_stream_sent_bytes_total",
                                  (("listener", "dns"),))], 60)

    def test_labels_memoized(self):
        """
        The children of a listener, protocol and status are looked up once.
        """
        metrics = ProxyMetrics(Clock())
        metrics.observe_connection(_ended("db"))
        metrics.observe_connection(_ended("db", received=1))
        self.assertEqual(list(metrics._by_connection), [("db", "TCP", 200)])


def _streams():
    return [
        {"listener": "db", "protocol": "tcp", "open": 3, "rejected": 2},
        # A listener's factory replaced by a reload, with its last relay.
        {"listener": "db", "protocol": "tcp", "open": 1, "rejected": 1},
        {"listener": "dns", "protocol": "udp", "open": 4, "dropped": 9, "refused": 5},
    ]


class StateCollectorTests(SynchronousTestCase):
    """
    The state gauges are read from the status callable at scrape time.
    """

    def test_backend_gauges(self):
        """
        Each backend's flags are 1/0 gauges labelled with upstream and
        backend; its counters are counters; the group's in-flight count is
        a gauge.
        """
        metrics = ProxyMetrics(Clock(), status=_status)
        samples = _samples(metrics)
        one = (("backend", "10.0.0.1:80"), ("upstream", "app"))
        two = (("backend", "10.0.0.2:80"), ("upstream", "app"))
        expected = {
            "twistproxy_backend_up": (1, 0),
            "twistproxy_backend_healthy": (1, 0),
            "twistproxy_backend_ejected": (0, 1),
            "twistproxy_backend_draining": (0, 1),
            "twistproxy_backend_in_flight": (3, 0),
            "twistproxy_backend_requests_total": (120, 7),
            "twistproxy_backend_failures_total": (4, 7),
        }
        for name, (a, b) in expected.items():
            self.assertEqual((samples[(name, one)], samples[(name, two)]), (a, b), name)
        self.assertEqual(samples[("twistproxy_upstream_in_flight", (("upstream", "app"),))], 5)
        self.assertNotIn(("twistproxy_open_connections", ()), samples)

    def test_types(self):
        """
        Backend requests and failures are exposed as counters, the flags as
        gauges.
        """
        text = ProxyMetrics(Clock(), status=_status).exposition().decode()
        types = {f.name: f.type for f in text_string_to_metric_families(text)}
        self.assertEqual(types["twistproxy_backend_requests"], "counter")
        self.assertEqual(types["twistproxy_backend_up"], "gauge")
        self.assertEqual(types["twistproxy_request_duration_seconds"], "histogram")

    def test_read_at_scrape(self):
        """
        The status is read at each scrape, not at construction.
        """
        calls = []

        def status():
            calls.append(None)
            return _status()

        metrics = ProxyMetrics(Clock(), status=status)
        self.assertEqual(calls, [])
        metrics.exposition()
        metrics.exposition()
        self.assertEqual(len(calls), 2)

    def test_open_connections(self):
        """
        With a C{connections} callable, its value is
        C{twistproxy_open_connections}.
        """
        metrics = ProxyMetrics(Clock(), connections=lambda: 17)
        self.assertEqual(_samples(metrics)[("twistproxy_open_connections", ())], 17)


    def test_stream_figures(self):
        """
        With a C{streams} callable, each stream listener's open connections
        or sessions are a gauge, its rejected TCP connections and dropped
        and refused UDP datagrams counters; rows of one listener add up.
        """
        metrics = ProxyMetrics(Clock(), streams=_streams)
        samples = _samples(metrics)
        self.assertEqual(samples[("twistproxy_stream_open_connections",
                                  (("listener", "db"), ("protocol", "tcp")))], 4)
        self.assertEqual(samples[("twistproxy_stream_open_connections",
                                  (("listener", "dns"), ("protocol", "udp")))], 4)
        self.assertEqual(samples[("twistproxy_stream_rejected_connections_total",
                                  (("listener", "db"),))], 3)
        self.assertEqual(samples[("twistproxy_udp_dropped_datagrams_total",
                                  (("listener", "dns"),))], 9)
        self.assertEqual(samples[("twistproxy_udp_refused_datagrams_total",
                                  (("listener", "dns"),))], 5)
        self.assertNotIn(("twistproxy_stream_rejected_connections_total",
                          (("listener", "dns"),)), samples)
        self.assertNotIn(("twistproxy_udp_dropped_datagrams_total", (("listener", "db"),)),
                         samples)
        text = metrics.exposition().decode()
        types = {f.name: f.type for f in text_string_to_metric_families(text)}
        self.assertEqual(types["twistproxy_stream_open_connections"], "gauge")
        self.assertEqual(types["twistproxy_stream_rejected_connections"], "counter")
        self.assertEqual(types["twistproxy_udp_dropped_datagrams"], "counter")
        self.assertEqual(types["twistproxy_udp_refused_datagrams"], "counter")

    def test_pool_sizes(self):
        """
        With a C{pools} callable, each backend's pooled connections are
        C{twistproxy_backend_pool_connections}.
        """
        metrics = ProxyMetrics(Clock(), pools=lambda: [("app", "10.0.0.1:80", 7),
                                                       ("app", "10.0.0.2:80", 0)])
        samples = _samples(metrics)
        self.assertEqual(samples[("twistproxy_backend_pool_connections",
                                  (("backend", "10.0.0.1:80"), ("upstream", "app")))], 7)
        self.assertEqual(samples[("twistproxy_backend_pool_connections",
                                  (("backend", "10.0.0.2:80"), ("upstream", "app")))], 0)


class CombineTests(SynchronousTestCase):
    """
    L{combine} sums several workers' expositions up.
    """

    def test_sums_and_state(self):
        """
        Counters, histograms and in-flight gauges are added up sample by
        sample; a backend is up and healthy if it is on every worker,
        ejected and draining if it is on any; the caller's families come
        along.
        """
        clock = Clock()
        down = _status()
        down["groups"][0]["backends"][0].update(available=False, healthy=False)
        # The second worker finds the first backend down.
        first = ProxyMetrics(clock, status=_status)
        second = ProxyMetrics(clock, status=lambda: down)
        first.observe(_exchange(clock))
        second.observe(_exchange(clock))
        second.observe(_exchange(clock))
        extra = GaugeMetricFamily("twistproxy_workers", "Workers.")
        extra.add_metric((), 2)
        text = combine([first.exposition(), second.exposition()], [extra])
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode())
            for s in family.samples
        }
        requests = (("route", "api"), ("status_class", "2xx"), ("upstream", "app"))
        one = (("backend", "10.0.0.1:80"), ("upstream", "app"))
        two = (("backend", "10.0.0.2:80"), ("upstream", "app"))
        self.assertEqual(samples[("twistproxy_requests_total", requests)], 3)
        self.assertEqual(samples[("twistproxy_request_duration_seconds_count",
                                  (("route", "api"),))], 3)
        self.assertEqual(samples[("twistproxy_backend_requests_total", one)], 240)
        self.assertEqual(samples[("twistproxy_backend_in_flight", one)], 6)
        self.assertEqual(samples[("twistproxy_backend_up", one)], 0)
        self.assertEqual(samples[("twistproxy_backend_healthy", one)], 0)
        self.assertEqual(samples[("twistproxy_backend_up", two)], 0)
        self.assertEqual(samples[("twistproxy_backend_ejected", two)], 1)
        self.assertEqual(samples[("twistproxy_backend_draining", two)], 1)
        self.assertEqual(samples[("twistproxy_workers", ())], 2)

    def test_stream_figures_summed(self):
        """
        The stream listeners' counters and open gauges are added up across
        workers, like the requests.
        """
        clock = Clock()
        first = ProxyMetrics(clock, streams=_streams)
        second = ProxyMetrics(clock, streams=_streams)
        first.observe_connection(_ended("db", received=10, sent=100))
        second.observe_connection(_ended("db", received=5, sent=50))
        second.observe_connection(_ended("dns", "UDP", status=403))
        text = combine([first.exposition(), second.exposition()])
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode())
            for s in family.samples
        }
        db = (("listener", "db"),)
        self.assertEqual(samples[("twistproxy_stream_connections_total",
                                  db + (("protocol", "tcp"), ("status", "200")))], 2)
        self.assertEqual(samples[("twistproxy_stream_connections_total",
                                  (("listener", "dns"), ("protocol", "udp"),
                                   ("status", "403")))], 1)
        self.assertEqual(samples[("twistproxy_stream_received_bytes_total", db)], 15)
        self.assertEqual(samples[("twistproxy_stream_sent_bytes_total", db)], 150)
        self.assertEqual(samples[("twistproxy_stream_open_connections",
                                  db + (("protocol", "tcp"),))], 8)
        self.assertEqual(samples[("twistproxy_stream_rejected_connections_total", db)], 6)
        self.assertEqual(samples[("twistproxy_udp_dropped_datagrams_total",
                                  (("listener", "dns"),))], 18)

    def test_created_is_earliest(self):
        """
        A creation time is the earliest of the workers', not their sum.
        """
        pages = [b"# TYPE x_created gauge\nx_created 5\n",
                 b"# TYPE x_created gauge\nx_created 3\n"]
        self.assertIn(b"x_created 3.0", combine(pages))

    def test_days_to_expiry_not_summed(self):
        """
        The days until a certificate expires are the fewest any worker
        reports (each reads the same files), not their sum.
        """
        family = "twistproxy_certificate_days_to_expiry"
        pages = [f'# TYPE {family} gauge\n{family}{{name="a.example"}} {days}\n'.encode()
                 for days in (30.5, 29.5)]
        self.assertIn(f'{family}{{name="a.example"}} 29.5'.encode(), combine(pages))


class CountsTests(SynchronousTestCase):
    """
    L{ProxyMetrics.counts} gives the running totals the status page's
    history samples, read from the metrics.
    """

    def test_counts(self):
        """
        Each route and upstream group has its requests, its 5xx answers
        and one count per duration bucket; each reason of the proxy's own
        answers has its count.
        """
        clock = Clock()
        metrics = ProxyMetrics(clock)
        metrics.observe(_exchange(clock, 200))
        x = _exchange(clock, 503, reason="no_backend")
        clock.advance(0.3)
        metrics.observe(x)
        metrics.observe(_exchange(clock, 200, route="web", group="site"))
        counts = metrics.counts()
        buckets = [0] * 14
        buckets[0] = 1  # at most 5 ms: the one that took no time
        buckets[6] = 1  # 0.3 s: above 0.25, at most 0.5
        self.assertEqual(counts[("route", "api")], (2, 1, *buckets))
        self.assertEqual(counts[("route", "web")][:3], (1, 0, 1))
        self.assertEqual(counts[("upstream", "app")][:2], (2, 1))
        self.assertEqual(counts[("upstream", "site")][:2], (1, 0))
        self.assertEqual(counts[("reason", "no_backend")], (1,))
