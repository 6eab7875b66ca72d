# -*- test-case-name: tests.test_admin_history -*-
"""
The status page's memory: what the proxy did over the last minutes, kept
in the process, so that a person can see it without Prometheus.

Once a second, on the injected clock, a L{History} reads running totals
that are counted anyway (L{twistproxy.metrics.ProxyMetrics.counts}, each
backend's C{requests}, C{failures} and C{durations}, the cache's counts)
and keeps what changed since the second before: per route and per
upstream group, the requests, the 5xx answers and a duration histogram
(the Prometheus buckets, which add up across processes where percentiles
would not); per backend, requests, failures and its duration histogram; the proxy's own answers by reason; the
cache's events.  Nothing more is done per request.  It also compares each
backend's state (L{backend_state}) with the second before and keeps the
changes of the last hour, as a timeline; a change and its return within
one second are not seen.

Memory is bounded: one sample per second for L{SECONDS} seconds, each
holding only the series that moved in that second, and at most
L{MAX_EVENTS} state changes.

What a process knows is given as a I{digest} (L{History.digest}) of the
seconds before a given end, in a form that adds up: the master of several
workers (L{twistproxy.workers}) asks every worker for its digest of the
same seconds and adds them up with L{combine}.  L{view} turns a digest
into what the page shows: rates, error ratios, percentiles.
"""

from __future__ import annotations

import copy
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Sequence, Tuple

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from twistproxy.interfaces import IMeasuredCacheStore
from twistproxy.metrics import DURATION_BUCKETS

# Seconds of traffic kept, one sample a second.
SECONDS = 900
# Seconds per point of the latency chart and of the small charts of each
# route, group and backend; and the last minute, for the figures "now".
SLOT = 10
MINUTE = 60
# Seconds of backend state changes kept, and how many at most.
TIMELINE = 3600
MAX_EVENTS = 1000

# A backend's states, from the least to the most worrying: with several
# workers, the page shows the most worrying one any worker sees.
STATES = ("healthy", "slow start", "draining", "ejected", "unhealthy")

Key = Tuple[str, ...]

# A backend's durations before the metrics counted any.
_NO_DURATIONS = (0,) * (len(DURATION_BUCKETS) + 1)


@dataclass(frozen=True)
class Reading:
    """
    The running totals and states of one moment.

    @ivar counts: Running totals by series: C{("route", name)} and
        C{("upstream", name)} have requests, 5xx answers, then one count
        per duration bucket (L{twistproxy.metrics.ProxyMetrics.counts});
        C{("backend", group, name)} has requests, failures, then one
        count per duration bucket (L{twistproxy.upstream.backend.Backend.durations});
        C{("reason", reason)} and C{("cache", event)} have one count.
    @ivar states: C{(state, detail, in flight)} by C{(group, backend)}.
    @ivar connections: Client connections open now.
    @ivar cache_size: The cache's entries, bytes and budget in bytes now,
        when its store can tell cheaply (L{cache_size}); C{None} otherwise.
    @ivar has_cache: Whether a cache is configured at all.
    @ivar places: C{(region, zone)} by C{(group, backend)}, for backends
        that have either.
    """

    counts: Mapping[Key, Sequence[float]]
    states: Mapping[Tuple[str, str], Tuple[str, str, int]] = field(default_factory=dict)
    connections: int = 0
    cache_size: Optional[Tuple[int, int, int]] = None
    places: Mapping[Tuple[str, str], Tuple[str, str]] = field(default_factory=dict)
    has_cache: bool = False


def cache_size(store) -> Optional[Tuple[int, int, int]]:
    """
    How much a cache store holds: entries, bytes and its budget in bytes,
    for a store that counts them as it goes (an L{IMeasuredCacheStore},
    such as L{twistproxy.cache.memory.MemoryStore}); C{None} for one that
    would have to be asked (Redis: its memory is shared with other data,
    and counting its keys means a scan).
    """
    if not IMeasuredCacheStore.providedBy(store):
        return None
    return len(store), store.used, store.max_bytes


def backend_state(group, backend, now: float) -> Tuple[str, str]:
    """
    A backend's state in words (one of L{STATES}), and why.

    @param group: Its L{twistproxy.upstream.group.UpstreamGroupRuntime}.
    @param backend: The L{twistproxy.upstream.backend.Backend}.
    """
    if backend.draining:
        return "draining", "taken out of rotation by an operator"
    if backend.ejected:
        until = _watched(group.outlier, backend).get("ejected_until")
        return "ejected", (f"back in {max(0.0, until - now):.0f} s" if until else "")
    if not backend.healthy:
        return "unhealthy", _watched(group.monitor, backend).get("last_detail") or ""
    if backend.effective_weight < backend.weight:
        share = backend.effective_weight / backend.weight
        return "slow start", f"at {share:.0%} of its weight"
    return "healthy", ""


def _watched(watcher, backend) -> Dict[str, Any]:
    # What a health monitor or outlier detector knows of the backend; a
    # backend found by DNS may not be watched yet.
    if watcher is None:
        return {}
    try:
        return watcher.status(backend)
    except KeyError:
        return {}


def service_reader(service, metrics, clock: IReactorTime) -> Callable[[], Reading]:
    """
    What a L{History} reads of a L{twistproxy.service.ProxyService}.

    @param metrics: The service's L{twistproxy.metrics.ProxyMetrics}.
    """
    def read() -> Reading:
        now = clock.seconds()
        counts: Dict[Key, Sequence[float]] = dict(metrics.counts())
        states: Dict[Tuple[str, str], Tuple[str, str, int]] = {}
        places: Dict[Tuple[str, str], Tuple[str, str]] = {}
        for group in service.forwarder.groups.values():
            for backend in group.backends:
                counts[("backend", group.name, backend.name)] = (
                    backend.requests, backend.failures, *(backend.durations or _NO_DURATIONS))
                states[(group.name, backend.name)] = (
                    *backend_state(group, backend, now), backend.in_flight)
                if backend.region or backend.zone:
                    places[(group.name, backend.name)] = (backend.region, backend.zone)
        cache = getattr(service, "cache", None)
        size = None
        if cache is not None:
            for event, count in cache.counts.items():
                counts[("cache", event)] = (count,)
            size = cache_size(cache.store)
        connections = metrics.connections() if metrics.connections is not None else 0
        return Reading(counts, states, connections, size, places, cache is not None)

    return read


class History:
    """
    The samples of the last L{SECONDS} seconds and the state changes of
    the last L{TIMELINE} seconds of one process.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, read: Callable[[], Reading],
                 seconds: int = SECONDS, max_events: int = MAX_EVENTS):
        """
        @param read: Returns the totals and states of now (L{service_reader}).
        @param seconds: How many seconds of samples are kept; a multiple of
            L{SLOT}.
        """
        self._clock = clock
        self._read = read
        self.seconds = seconds
        # (second, {series: what changed in that second}), oldest first.
        self._samples: Deque[Tuple[int, Dict[Key, Tuple[int, ...]]]] = deque(maxlen=seconds)
        self._events: Deque[Dict[str, Any]] = deque(maxlen=max_events)
        # When each backend entered its state, as far as this history saw.
        self._since: Dict[Tuple[str, str], float] = {}
        self._last: Optional[Reading] = None
        self._loop = LoopingCall(self.sample)
        self._loop.clock = clock

    def start(self) -> None:
        """
        Sample every second from now on.
        """
        if not self._loop.running:
            self._loop.start(1.0, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def sample(self) -> None:
        """
        Keep what changed since the last reading.
        """
        try:
            reading = self._read()
        except Exception:
            self.log.failure("status history: reading the proxy's totals failed")
            return
        now = self._clock.seconds()
        last, self._last = self._last, reading
        if last is None:
            self._since.update(dict.fromkeys(reading.states, now))
            return
        moved: Dict[Key, Tuple[int, ...]] = {}
        for key, totals in reading.counts.items():
            before = last.counts.get(key, ())
            # A total that went down belongs to a new object (a backend
            # made again by a reload): count from zero.
            delta = tuple(int(total if total < old else total - old)
                          for total, old in zip(totals, tuple(before) + (0,) * len(totals)))
            if any(delta):
                moved[key] = delta
        # What moved since the last reading, a second ago: the second
        # before this one, which a digest ending now includes.
        second = int(now) - 1
        if self._samples and self._samples[-1][0] == second:
            _add_rows(self._samples[-1][1], moved)
        elif moved:
            self._samples.append((second, moved))
        for backend, (state, detail, _) in reading.states.items():
            old = last.states.get(backend)
            if old is None:
                self._since[backend] = now
            elif old[0] != state:
                self._since[backend] = now
                self._events.append({
                    "time": now, "upstream": backend[0], "backend": backend[1],
                    "from": old[0], "to": state, "detail": detail,
                })
        for gone in set(self._since) - set(reading.states):
            del self._since[gone]

    def digest(self, end: Optional[int] = None) -> Dict[str, Any]:
        """
        What happened in the L{seconds} seconds before C{end}, in a form
        that adds up across processes (L{combine}).

        @param end: A second of the clock, by default the current one
            (which is not complete yet, so not included).
        """
        if end is None:
            end = int(self._clock.seconds())
        digest = empty_digest(end, self.seconds)
        start = end - self.seconds
        total, series = digest["total"], digest["series"]
        for second, moved in self._samples:
            if not start <= second < end:
                continue
            offset = second - start
            slot = offset // SLOT
            recent = offset >= self.seconds - MINUTE
            for key, delta in moved.items():
                kind, name = key[0], "/".join(key[1:])
                found = series.setdefault(kind, {}).get(name)
                if found is None:
                    found = series[kind][name] = _empty_series(self.seconds, len(delta) > 2)
                found["requests"][slot] += delta[0]
                if len(delta) > 1:
                    found["errors"][slot] += delta[1]
                if recent and len(delta) > 2:
                    _add_into(found["latency"], delta[2:])
                if kind == "route":
                    total["requests"][offset] += delta[0]
                    total["errors"][offset] += delta[1]
                    _add_into(total["latency"][slot], delta[2:])
        last = self._last
        if last is not None:
            digest["connections"] = last.connections
            digest["has_cache"] = last.has_cache
            if last.cache_size is not None:
                digest["cache_size"] = dict(zip(("entries", "bytes", "max_bytes"),
                                                last.cache_size))
            digest["backends"] = {
                f"{group}/{name}": {
                    "upstream": group, "backend": name, "state": state, "detail": detail,
                    "in_flight": in_flight, "since": self._since.get((group, name)),
                    **dict(zip(("region", "zone"), last.places.get((group, name), ()))),
                }
                for (group, name), (state, detail, in_flight) in last.states.items()
            }
        digest["events"] = [e for e in self._events if e["time"] >= end - TIMELINE]
        return digest


def _empty_series(seconds: int, latency: bool) -> Dict[str, Any]:
    slots = seconds // SLOT
    return {"requests": [0] * slots, "errors": [0] * slots,
            "latency": [0] * (len(DURATION_BUCKETS) + 1) if latency else []}


def empty_digest(end: int, seconds: int = SECONDS) -> Dict[str, Any]:
    """
    The digest of a process that saw nothing in the C{seconds} before C{end}.
    """
    return {
        "end": end,
        "seconds": seconds,
        "slot": SLOT,
        "bounds": list(DURATION_BUCKETS),
        "total": {
            "requests": [0] * seconds,
            "errors": [0] * seconds,
            "latency": [[0] * (len(DURATION_BUCKETS) + 1) for _ in range(seconds // SLOT)],
        },
        "series": {},
        "backends": {},
        "events": [],
        "connections": 0,
        "cache_size": None,
        "has_cache": False,
    }


def _add_rows(into: Dict[Key, Tuple[int, ...]], more: Mapping[Key, Sequence[int]]) -> None:
    for key, delta in more.items():
        before = into.get(key)
        into[key] = tuple(delta) if before is None else tuple(a + b for a, b in zip(before, delta))


def _add_into(into: List[Any], more: Sequence[Any]) -> None:
    """
    Add C{more} to C{into}, element by element (lists of numbers, or of
    such lists).
    """
    for i, value in enumerate(more):
        if isinstance(value, list):
            _add_into(into[i], value)
        else:
            into[i] += value


def combine(digests: Sequence[Mapping[str, Any]], end: int, seconds: int = SECONDS,
            ) -> Dict[str, Any]:
    """
    Several processes' digests of the same seconds, as one: traffic, open
    connections and the sizes of their caches add up; a backend has the
    most worrying state any process sees (L{STATES}), and the requests in
    flight of all; the state changes are all kept, in time order.
    """
    combined = empty_digest(end, seconds)
    for digest in digests:
        if digest["end"] != end or digest["seconds"] != seconds:
            raise ValueError(f"a digest of other seconds: {digest['end']}, {digest['seconds']}")
        total = combined["total"]
        for what in ("requests", "errors", "latency"):
            _add_into(total[what], digest["total"][what])
        for kind, named in digest["series"].items():
            into = combined["series"].setdefault(kind, {})
            for name, series in named.items():
                if name in into:
                    for what in ("requests", "errors", "latency"):
                        _add_into(into[name][what], series[what])
                else:
                    into[name] = copy.deepcopy(series)
        for name, backend in digest["backends"].items():
            found = combined["backends"].get(name)
            if found is None:
                combined["backends"][name] = dict(backend)
                continue
            in_flight = found["in_flight"] + backend["in_flight"]
            if _rank(backend["state"]) > _rank(found["state"]):
                found.update(backend)
            found["in_flight"] = in_flight
        combined["events"].extend(digest["events"])
        combined["connections"] += digest["connections"]
        combined["has_cache"] = combined["has_cache"] or digest.get("has_cache", False)
        size = digest.get("cache_size")
        if size is not None:
            # Each worker has a store of its own.
            into = combined["cache_size"] = combined["cache_size"] or dict.fromkeys(size, 0)
            for name, value in size.items():
                into[name] += value
    combined["events"].sort(key=lambda e: e["time"])
    return combined


def _rank(state: str) -> int:
    return STATES.index(state) if state in STATES else len(STATES)


def percentile(counts: Sequence[float], q: float,
               bounds: Sequence[float] = DURATION_BUCKETS) -> Optional[float]:
    """
    The C{q}-quantile (C{0.99} for the 99th percentile) of durations
    counted in buckets, interpolated within its bucket as Prometheus's
    C{histogram_quantile} does; C{None} without any.

    @param counts: How many fell in each bucket (at most C{bounds[i]},
        and above the previous bound), the last one above every bound.
    """
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    below = 0.0
    for i, count in enumerate(counts):
        if count and below + count >= rank:
            if i >= len(bounds):
                return bounds[-1]  # beyond the last bound: say the bound
            lower = bounds[i - 1] if i else 0.0
            return lower + (bounds[i] - lower) * (rank - below) / count
        below += count
    return bounds[-1]


def _figures(requests: float, errors: float, latency: Sequence[float], seconds: int,
             ) -> Dict[str, Any]:
    return {
        "requests_per_second": round(requests / seconds, 3),
        "error_rate": round(errors / requests, 4) if requests else None,
        "p50": _rounded(percentile(latency, 0.5)) if latency else None,
        "p99": _rounded(percentile(latency, 0.99)) if latency else None,
    }


def _rounded(seconds: Optional[float]) -> Optional[float]:
    return None if seconds is None else round(seconds, 4)


def view(digest: Mapping[str, Any]) -> Dict[str, Any]:
    """
    What the status page shows of a digest: the charts (requests and 5xx
    answers per second, p50 and p99 per L{SLOT} seconds), the figures of
    the last minute for the whole proxy and for each route, upstream group
    and backend (with a small chart of its requests), the backends' states,
    the state changes, the proxy's own answers by reason, the cache's
    events over the whole window and its size now (C{None} when its store
    cannot tell), and for groups with regions or zones, what each
    receives (L{_places}).
    """
    seconds, total = digest["seconds"], digest["total"]
    minute_slots = MINUTE // SLOT
    minute = [0] * (len(DURATION_BUCKETS) + 1)
    for counts in total["latency"][-minute_slots:]:
        _add_into(minute, counts)
    series = digest["series"]

    def rows(kind: str) -> Dict[str, Dict[str, Any]]:
        return {
            name: {
                **_figures(sum(s["requests"][-minute_slots:]), sum(s["errors"][-minute_slots:]),
                           s["latency"], MINUTE),
                "requests": s["requests"],
            }
            for name, s in sorted(series.get(kind, {}).items())
        }

    backends = rows("backend")
    for name, state in digest["backends"].items():
        backends.setdefault(name, {**_figures(0, 0, (), MINUTE), "requests": []}).update(state)
    places = _places(digest, minute_slots)
    return {
        "end": digest["end"],
        "seconds": seconds,
        "slot": SLOT,
        "requests": total["requests"],
        "errors": total["errors"],
        "p50": [_rounded(percentile(c, 0.5)) for c in total["latency"]],
        "p99": [_rounded(percentile(c, 0.99)) for c in total["latency"]],
        "minute": _figures(sum(total["requests"][-MINUTE:]), sum(total["errors"][-MINUTE:]),
                           minute, MINUTE),
        "connections": digest["connections"],
        "routes": rows("route"),
        "upstreams": rows("upstream"),
        "backends": backends,
        "timeline": digest["events"],
        "refusals": {name: sum(s["requests"]) for name, s in series.get("reason", {}).items()},
        "cache": {name: sum(s["requests"]) for name, s in series.get("cache", {}).items()},
        "cache_size": digest["cache_size"],
        "has_cache": digest["has_cache"],
        "places": places,
    }


def _places(digest: Mapping[str, Any], slots: int) -> Dict[str, List[Dict[str, Any]]]:
    """
    For each upstream group whose backends have a region or zone (GSLB,
    locality), what each region and zone received in the last C{slots}:
    requests per second and their share of the group's, regions with the
    most first.
    """
    counted: Dict[str, Dict[str, Dict[str, int]]] = {}
    for name, backend in digest["backends"].items():
        group = backend["upstream"]
        region, zone = backend.get("region"), backend.get("zone")
        if region is None:
            continue  # a backend without a place, or gone since
        series = digest["series"].get("backend", {}).get(name)
        requests = sum(series["requests"][-slots:]) if series else 0
        zones = counted.setdefault(group, {}).setdefault(region, {})
        zones[zone] = zones.get(zone, 0) + requests
    seconds = slots * SLOT
    out: Dict[str, List[Dict[str, Any]]] = {}
    for group, regions in sorted(counted.items()):
        total = sum(sum(zones.values()) for zones in regions.values())
        rows = []
        for region, zones in regions.items():
            requests = sum(zones.values())
            rows.append({
                "region": region,
                **_share(requests, total, seconds),
                "zones": [{"zone": zone, **_share(n, total, seconds)}
                          for zone, n in sorted(zones.items())],
            })
        out[group] = sorted(rows, key=lambda r: (-r["requests_per_second"], r["region"]))
    return out


def _share(requests: int, total: int, seconds: int) -> Dict[str, Any]:
    return {"requests_per_second": round(requests / seconds, 3),
            "share": round(requests / total, 4) if total else None}
