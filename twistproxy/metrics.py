# -*- test-case-name: tests.test_metrics -*-
"""
Prometheus metrics of a running proxy.

Two kinds of figures are exposed.  Per-request figures (how many requests,
how they ended, how long they took, how many bytes went back) are counted as
exchanges finish: L{ProxyMetrics.observe} is called with every finished
L{Exchange}, and L{ProxyMetrics.observe_connection} with every relayed TCP
connection or UDP session that ends (where its access log line is written,
so that relaying bytes costs nothing more).  State figures (which backends are up, healthy, ejected or
draining, how many requests are in flight, how many connections are open
or pooled) are not counted at all: they are
read from the service's status when Prometheus scrapes, by a custom
collector, so that they can never drift from what the proxy really does.

Every L{ProxyMetrics} has a C{CollectorRegistry} of its own, never
C{prometheus_client}'s global one: two proxies in one process (or two
tests) must not share, or refuse to register, the same metric names.

C{observe} runs once per request, on the hot path.  Looking a label set up
in a metric costs a lock and a tuple build each time, so the children of
each label combination are looked up once and kept in a dict.

With several worker processes (L{twistproxy.workers}) each worker counts
its own requests, and the master adds the workers' expositions up with
L{combine}.
"""

from __future__ import annotations

import math
import operator
from bisect import bisect_left
from typing import Any, Callable, Dict, Iterable, Iterator, Mapping, Optional, Sequence, Tuple

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.interfaces import IReactorTime

from twistproxy.http.exchange import Exchange

# Seconds; the upper buckets cover the default upstream_response timeout.
DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)

# Where each bucket's upper bound (its C{le} label) is in a row of
# L{ProxyMetrics.counts}, the last one without a bound.
_BUCKET_INDEX = {bound: i for i, bound in enumerate(DURATION_BUCKETS + (math.inf,))}

# Label value for a route with no name, or an exchange with no route or group.
NONE = "-"

_STATUS_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


def status_class(status: int) -> str:
    """
    The class of a status code, C{'2xx'} for C{204}; C{'none'} when no
    response was sent (the client went away first).
    """
    return _STATUS_CLASSES.get(status // 100, "none")


class ProxyMetrics:
    """
    The metrics of one proxy, in a registry of their own.

    @ivar registry: The C{CollectorRegistry} holding them all; an
        application may register metrics of its own in it.
    @ivar content_type: The C{Content-Type} of L{exposition}.
    @ivar connections: How many client connections are open, or C{None}
        (the C{connections} given).
    """

    content_type = CONTENT_TYPE_LATEST

    def __init__(
        self,
        clock: IReactorTime,
        status: Optional[Callable[[], Mapping[str, Any]]] = None,
        connections: Optional[Callable[[], int]] = None,
        registry: Optional[CollectorRegistry] = None,
        streams: Optional[Callable[[], Iterable[Mapping[str, Any]]]] = None,
        pools: Optional[Callable[[], Iterable[Tuple[str, str, int]]]] = None,
    ):
        """
        @param clock: Gives the time an exchange ended, to compute its
            duration (C{Exchange.started} is in this clock's seconds).
        @param status: Returns the service's status
            (L{twistproxy.service.ProxyService.status}); when given, the
            backend and upstream gauges are read from it at each scrape.
        @param connections: Returns how many client connections are open;
            when given, it is exposed as C{twistproxy_open_connections}.
        @param registry: Where to register; a new one by default.
        @param streams: Returns one mapping per TCP relay factory or UDP
            listener: C{listener}, C{protocol} (C{'tcp'} or C{'udp'}),
            C{open}, and C{rejected} (TCP connections closed at once) or
            C{dropped} and C{refused} (UDP datagrams); rows of the same
            listener are added up (a reload may leave several).
        @param pools: Returns C{(upstream, backend, connections)} for each
            HTTP backend's connection pool.
        """
        self._clock = clock
        self.connections = connections
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        r = self.registry
        self._requests = Counter(
            "twistproxy_requests", "Requests answered, by route, status class and upstream group.",
            ("route", "status_class", "upstream"), registry=r,
        )
        self._duration = Histogram(
            "twistproxy_request_duration_seconds",
            "Time from the request head to the end of the response, by route.",
            ("route",), buckets=DURATION_BUCKETS, registry=r,
        )
        self._upstream_duration = Histogram(
            "twistproxy_upstream_duration_seconds",
            "Time from handing the request to a backend to the end of its response.",
            ("upstream",), buckets=DURATION_BUCKETS, registry=r,
        )
        self._bytes = Counter(
            "twistproxy_response_bytes", "Response body bytes sent to clients, by route.",
            ("route",), registry=r,
        )
        self._retries = Counter(
            "twistproxy_retries", "Requests sent again to another backend of the group.",
            ("upstream",), registry=r,
        )
        self._answers = Counter(
            "twistproxy_proxy_answers",
            "Responses the proxy made itself instead of a backend, by reason code.",
            ("reason",), registry=r,
        )
        self._stream_connections = Counter(
            "twistproxy_stream_connections",
            "Relayed TCP connections and UDP sessions that ended, by listener, protocol "
            "and status.",
            ("listener", "protocol", "status"), registry=r,
        )
        self._stream_received = Counter(
            "twistproxy_stream_received_bytes",
            "Bytes received from clients on relayed connections and sessions that ended.",
            ("listener",), registry=r,
        )
        self._stream_sent = Counter(
            "twistproxy_stream_sent_bytes",
            "Bytes sent to clients on relayed connections and sessions that ended.",
            ("listener",), registry=r,
        )
        # (route, status class, upstream) -> (requests, duration, bytes) children.
        self._by_request: Dict[Tuple[str, str, str], Tuple[Any, Any, Any]] = {}
        # upstream -> (upstream duration, retries) children.
        self._by_upstream: Dict[str, Tuple[Any, Any]] = {}
        self._by_reason: Dict[str, Any] = {}
        # (listener, protocol, status) -> (connections, received, sent) children.
        self._by_connection: Dict[Tuple[str, str, int], Tuple[Any, Any, Any]] = {}
        if any(f is not None for f in (status, connections, streams, pools)):
            r.register(_StateCollector(status, connections, streams, pools))

    def observe(self, exchange: Exchange) -> None:
        """
        Count a finished exchange.
        """
        route_runtime = exchange.route
        group = exchange.group
        if group is None and route_runtime is not None:
            group = route_runtime.group
        route = (route_runtime.route.name or NONE) if route_runtime is not None else NONE
        upstream = group.name if group is not None else NONE
        key = (route, status_class(exchange.status), upstream)
        children = self._by_request.get(key)
        if children is None:
            children = self._by_request[key] = (
                self._requests.labels(*key),
                self._duration.labels(route),
                self._bytes.labels(route),
            )
        requests, duration, body_bytes = children
        requests.inc()
        duration.observe(max(0.0, self._clock.seconds() - exchange.started))
        if exchange.body_bytes:
            body_bytes.inc(exchange.body_bytes)
        if exchange.backend is not None or exchange.attempts > 1:
            by_upstream = self._by_upstream.get(upstream)
            if by_upstream is None:
                by_upstream = self._by_upstream[upstream] = (
                    self._upstream_duration.labels(upstream),
                    self._retries.labels(upstream),
                )
            if exchange.backend is not None and exchange.upstream_started and exchange.upstream_ended:
                took = max(0.0, exchange.upstream_ended - exchange.upstream_started)
                by_upstream[0].observe(took)
                # The backend's own latency, for the status page: one
                # integer added, the list made once per backend.
                durations = exchange.backend.durations
                if durations is None:
                    durations = exchange.backend.durations = [0] * (len(DURATION_BUCKETS) + 1)
                durations[bisect_left(DURATION_BUCKETS, took)] += 1
            if exchange.attempts > 1:
                by_upstream[1].inc(exchange.attempts - 1)
        if exchange.reason:
            answers = self._by_reason.get(exchange.reason)
            if answers is None:
                answers = self._by_reason[exchange.reason] = self._answers.labels(exchange.reason)
            answers.inc()

    def observe_connection(self, c) -> None:
        """
        Count a relayed TCP connection or UDP session that ended (a
        L{twistproxy.stream.tcp.TCPRelay} or L{twistproxy.stream.udp.Session}).
        """
        key = (c.factory.listener, c.protocol, c.status)
        children = self._by_connection.get(key)
        if children is None:
            children = self._by_connection[key] = (
                self._stream_connections.labels(key[0], key[1].lower(), str(key[2])),
                self._stream_received.labels(key[0]),
                self._stream_sent.labels(key[0]),
            )
        connections, received, sent = children
        connections.inc()
        if c.bytes_received:
            received.inc(c.bytes_received)
        if c.bytes_sent:
            sent.inc(c.bytes_sent)

    def exposition(self) -> bytes:
        """
        All the metrics in the Prometheus text format (L{content_type}).
        """
        return generate_latest(self.registry)

    def counts(self) -> Dict[Tuple[str, str], Tuple[float, ...]]:
        """
        The running totals the status page's history samples every second
        (L{twistproxy.admin.history}), read from the metrics (so that
        nothing more is counted per request).

        @return: By C{("route", name)} and C{("upstream", name)}: requests,
            those answered with a 5xx status, then how many took at most
            each of L{DURATION_BUCKETS} and more (one count per bucket, not
            cumulative; the route's whole duration, the group's time at its
            backends); by C{("reason", reason)}: the proxy's own answers.
        """
        counts: Dict[Tuple[str, str], list] = {}
        width = 2 + len(DURATION_BUCKETS) + 1

        def row(key: Tuple[str, str]) -> list:
            found = counts.get(key)
            if found is None:
                found = counts[key] = [0.0] * width
            return found

        for sample in self._requests.collect()[0].samples:
            if sample.name.endswith("_total"):
                errors = sample.value if sample.labels["status_class"] == "5xx" else 0.0
                for key in (("route", sample.labels["route"]),
                            ("upstream", sample.labels["upstream"])):
                    figures = row(key)
                    figures[0] += sample.value
                    figures[1] += errors
        for kind, histogram in (("route", self._duration), ("upstream", self._upstream_duration)):
            below: Dict[str, float] = {}
            for sample in histogram.collect()[0].samples:
                if sample.name.endswith("_bucket"):
                    # Cumulative counts, in the order of the buckets.
                    name = sample.labels[kind]
                    bucket = _BUCKET_INDEX[float(sample.labels["le"])]
                    row((kind, name))[2 + bucket] = sample.value - below.get(name, 0.0)
                    below[name] = sample.value
        for sample in self._answers.collect()[0].samples:
            if sample.name.endswith("_total"):
                counts[("reason", sample.labels["reason"])] = (sample.value,)
        return {key: tuple(figures) for key, figures in counts.items()}


# Backend gauges: (metric name, help, key in a backend's status).
_BACKEND_GAUGES = (
    ("twistproxy_backend_up", "Whether the backend receives new requests (1) or not (0).", "available"),
    ("twistproxy_backend_healthy", "Whether the backend passes its health checks.", "healthy"),
    ("twistproxy_backend_ejected", "Whether outlier detection has ejected the backend.", "ejected"),
    ("twistproxy_backend_draining", "Whether an operator is draining the backend.", "draining"),
    ("twistproxy_backend_in_flight", "Requests the backend is serving now.", "in_flight"),
)
_BACKEND_COUNTERS = (
    ("twistproxy_backend_requests", "Requests sent to the backend.", "requests"),
    ("twistproxy_backend_failures", "Requests the backend failed.", "failures"),
)
# Stream listener figures: (metric name, help, key in a row, type, label
# names); a row without the key has no such figure.
_STREAM_FAMILIES = (
    ("twistproxy_stream_open_connections",
     "Relayed TCP connections and UDP sessions open now.", "open", GaugeMetricFamily,
     ("listener", "protocol")),
    ("twistproxy_stream_rejected_connections",
     "TCP connections closed at once, at the listener's max_connections or the "
     "process's connection limit.", "rejected", CounterMetricFamily, ("listener",)),
    ("twistproxy_udp_dropped_datagrams",
     "Datagrams dropped because no session could be made (max_sessions, no backend, "
     "refused by a filter).", "dropped", CounterMetricFamily, ("listener",)),
    ("twistproxy_udp_refused_datagrams",
     "Datagrams of sessions the listener's filters refused.", "refused",
     CounterMetricFamily, ("listener",)),
    ("twistproxy_dns_responses",
     "Responses of the DNS front by zone ('' outside them), query type and rcode.",
     "responses", CounterMetricFamily, ("listener", "zone", "type", "rcode")),
    ("twistproxy_dns_gslb_answers",
     "How often each address was in an answer of a GSLB name.", "answers",
     CounterMetricFamily, ("listener", "name", "address")),
    ("twistproxy_dns_dropped_queries",
     "DNS queries not answered: undecodable, or over the rate limit.", "dropped_queries",
     CounterMetricFamily, ("listener",)),
)


class _StateCollector:
    """
    The state gauges, read from the service when scraped.
    """

    def __init__(self, status, connections, streams=None, pools=None):
        self._status = status
        self._connections = connections
        self._streams = streams
        self._pools = pools

    def _families(self):
        backend = ("upstream", "backend")
        families: Dict[str, Metric] = {}
        if self._status is not None:
            for name, doc, _ in _BACKEND_GAUGES:
                families[name] = GaugeMetricFamily(name, doc, labels=backend)
            for name, doc, _ in _BACKEND_COUNTERS:
                families[name] = CounterMetricFamily(name, doc, labels=backend)
            families["twistproxy_upstream_in_flight"] = GaugeMetricFamily(
                "twistproxy_upstream_in_flight", "Requests the upstream group is serving now.",
                labels=("upstream",),
            )
            families["twistproxy_certificate_days_to_expiry"] = GaugeMetricFamily(
                "twistproxy_certificate_days_to_expiry",
                "Days until the ACME certificate of each managed name expires.",
                labels=("name",),
            )
            families["twistproxy_cache_events"] = CounterMetricFamily(
                "twistproxy_cache_events",
                "What the shared cache did: hit, miss, stale (served stale), revalidated, "
                "stored, collapsed, invalidated, purged.",
                labels=("event",),
            )
        if self._connections is not None:
            families["twistproxy_open_connections"] = GaugeMetricFamily(
                "twistproxy_open_connections", "Client connections open now on HTTP listeners.")
        if self._streams is not None:
            for name, doc, _, kind, labels in _STREAM_FAMILIES:
                families[name] = kind(name, doc, labels=labels)
        if self._pools is not None:
            families["twistproxy_backend_pool_connections"] = GaugeMetricFamily(
                "twistproxy_backend_pool_connections",
                "Connections to the backend open or being opened (busy and idle).",
                labels=backend)
        return families

    def describe(self) -> Iterator[Metric]:
        # Lets the registry check names without calling the service.
        return iter(self._families().values())

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        if self._status is not None:
            status = self._status()
            for managed in status.get("acme", ()):
                for name in managed["names"]:
                    families["twistproxy_certificate_days_to_expiry"].add_metric(
                        (name,), managed["days_to_expiry"])
            for event, count in status.get("cache", {}).items():
                families["twistproxy_cache_events"].add_metric((event,), count)
            for group in status.get("groups", ()):
                upstream = group["name"]
                families["twistproxy_upstream_in_flight"].add_metric(
                    (upstream,), group.get("in_flight", 0))
                for b in group.get("backends", ()):
                    labels = (upstream, b["name"])
                    for name, _, key in _BACKEND_GAUGES + _BACKEND_COUNTERS:
                        families[name].add_metric(labels, float(b.get(key) or 0))
        if self._connections is not None:
            families["twistproxy_open_connections"].add_metric((), self._connections())
        if self._streams is not None:
            self._collect_streams(families)
        if self._pools is not None:
            pools = families["twistproxy_backend_pool_connections"]
            for upstream, name, connections in self._pools():
                pools.add_metric((upstream, name), connections)
        return iter(families.values())

    def _collect_streams(self, families: Dict[str, Metric]) -> None:
        # A reload that changes a listener leaves its old factory counting
        # the connections it still has: rows of one listener add up.
        totals: Dict[Tuple[str, Tuple[str, ...]], float] = {}
        for row in self._streams():
            for name, _, key, _, labels in _STREAM_FAMILIES:
                if key in row:
                    labelled = (name, tuple(row[label] for label in labels))
                    totals[labelled] = totals.get(labelled, 0) + row[key]
        for (name, labels), value in totals.items():
            families[name].add_metric(labels, value)


# How the workers' values of one sample make the master's: added up, but a
# backend is up and healthy only if every worker finds it so, and ejected or
# draining if any does; a creation time is the earliest.
_COMBINE: Dict[str, Callable[[float, float], float]] = {
    "twistproxy_backend_up": min,
    "twistproxy_backend_healthy": min,
    "twistproxy_backend_ejected": max,
    "twistproxy_backend_draining": max,
    # Every worker reads the same certificate files: the soonest expiry
    # is the one to alert on.
    "twistproxy_certificate_days_to_expiry": min,
}


class _Families:
    """
    A collector of ready-made metric families.
    """

    def __init__(self, families: Iterable[Metric]):
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def combine(expositions: Sequence[bytes], extra: Sequence[Metric] = ()) -> bytes:
    """
    The sum of several processes' expositions (in the Prometheus text
    format), as one exposition: the value of each sample (a name and its
    labels) is added up across them, except the backend state gauges and
    creation times (see C{_COMBINE}).

    @param extra: Families of the caller's own to expose after them.
    """
    families: Dict[str, Tuple[Metric, Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]]] = {}
    for text in expositions:
        for family in text_string_to_metric_families(text.decode("utf-8")):
            if family.name not in families:
                families[family.name] = (
                    Metric(family.name, family.documentation, family.type, family.unit), {})
            values = families[family.name][1]
            how = _COMBINE.get(family.name) or (
                min if family.name.endswith("_created") else operator.add)
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                old = values.get(key)
                values[key] = sample.value if old is None else how(old, sample.value)
    merged = []
    for metric, values in families.values():
        for (name, labels), value in values.items():
            metric.add_sample(name, dict(labels), value)
        merged.append(metric)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(merged + list(extra)))
    return generate_latest(registry)
