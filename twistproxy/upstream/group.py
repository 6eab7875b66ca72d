# -*- test-case-name: tests.test_group -*-
"""
A running upstream group: the set of interchangeable backends one route
sends to, and everything that decides which of them gets a request.

The group owns its L{Backend}s and keeps, for each, a connection pool made
by the caller, so this module knows nothing of connections or of HTTP: the
forwarder turns a backend into a C{Host} field (the pool's) and a
stickiness token into a cookie.  It combines the
independent opinions about each backend that the load-balancing features
hold (health checks, outlier detection, the operator's draining) into the
backend's C{available} flag, builds the balancer, and reports every change
of a backend's state, so that the status of every backend can be logged
and served as data.

It also holds the group-wide limits a request must pass before it is
placed: the most requests in flight to the group (circuit breaking) and
the retry budget.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Callable, Collection, Dict, List, Optional, Tuple

from twisted.logger import Logger

from twistproxy.config import ConfigError, Discovery, Locality, UpstreamGroup
from twistproxy.interfaces import IBalancer, ILocator, IRequestInfo, ITLSHealthCheck
from twistproxy.net import authority
from twistproxy.upstream.backend import Backend
from twistproxy.upstream.balancers import build_balancer, pick_untried
from twistproxy.upstream.health import HealthMonitor, SlowStart, build_health_check
from twistproxy.upstream.locality import LocalityBalancer, LocalityPicker
from twistproxy.upstream.outlier import OutlierDetector

# Envoy's default: a retry budget never forbids this many concurrent
# retries, so that a quiet group can still retry at all.
MIN_RETRY_CONCURRENCY = 3

# A connection refused (or impossible) at once: nothing was sent.
REFUSED = "upstream_connect_failed"


class UpstreamGroupRuntime:
    """
    @ivar name: The group's name.
    @ivar config: Its configuration.
    @ivar backends: Its backends, in configuration (then discovery) order.
    @ivar pools: Each backend's connection pool.
    @ivar pick: C{pick(request)}: the backend for a new request, from the
        lowest failover tier that has one available, or C{None}.
    @ivar in_flight: Requests in flight to the group.
    @ivar retries_in_flight: Of those, how many hold a place in the retry
        budget: requests with a counted retry (see L{may_retry}).
    """

    log = Logger()

    def __init__(
        self,
        config: UpstreamGroup,
        make_pool: Callable[[Backend], Any],
        locality: Locality = Locality(),
        locator: Optional[ILocator] = None,
        reactor=None,
    ):
        self.name = config.name
        self.config = config
        self._locality = locality
        self._locator = locator
        self._make_pool = make_pool
        self.backends: List[Backend] = []
        self.pools: Dict[Backend, Any] = {}
        self.in_flight = 0
        self.retries_in_flight = 0
        self.outlier: Optional[OutlierDetector] = None
        self.monitor: Optional[HealthMonitor] = None
        self.slow_start: Optional[SlowStart] = None
        self._discovered: Dict[Any, Dict[Any, Backend]] = {}
        self._discoveries: List[Any] = []
        # Each failover tier's balancer, and the backends it balances.
        self._tiers: List[Tuple[IBalancer, List[Backend]]] = []
        self._tokens: Dict[str, Backend] = {}
        self._token_of: Dict[Backend, str] = {}
        for server in config.servers:
            backend = self._add(server.scheme, server.host, server.port, server.weight,
                                server.region, server.zone)
            backend.draining = server.drain
            backend.refresh()
        self._build_balancer()
        if reactor is not None:
            self._watch(reactor)

    def _watch(self, reactor) -> None:
        """
        Set up what watches the backends: slow start, the active health
        check, passive outlier detection.
        """
        config = self.config
        if config.slow_start:
            self.slow_start = SlowStart(reactor, config.slow_start)
        if config.health is not None:
            health = config.health
            check = build_health_check(
                health.type, reactor, health.options, f"upstreams.{self.name}.health")
            if ITLSHealthCheck.providedBy(check):
                # Health checks of https backends trust what requests do.
                from twistproxy.tls import client_creator

                tls_path = f"upstreams.{self.name}.tls"
                check.use_tls(lambda host: client_creator(config.tls, host, tls_path))
            self.monitor = HealthMonitor(
                reactor, check, list(self.backends), health.interval, health.jitter,
                health.rise, health.fall, on_change=self.changed,
                slow_start=self.slow_start,
            )
        if config.outlier is not None:
            outlier = config.outlier
            self.outlier = OutlierDetector(
                reactor, list(self.backends), outlier.consecutive_failures,
                outlier.base_ejection, outlier.max_ejection, outlier.max_ejected_share,
                on_change=self.changed, slow_start=self.slow_start,
            )

    # Backends

    def _add(self, scheme: str, host: str, port: int, weight: int, region: str, zone: str,
             priority: int = 0) -> Backend:
        backend = Backend(authority(host, port), scheme, host, port, weight, region, zone, priority)
        self.backends.append(backend)
        self.pools[backend] = self._make_pool(backend)
        token = self._token(backend)
        self._tokens[token] = backend
        self._token_of[backend] = token
        return backend

    def _build_balancer(self) -> None:
        """
        (Re)build the balancers after the set of backends changed: one per
        failover tier (backends from DNS SRV records carry a priority;
        listed servers are all in tier 0).
        """
        tiers: Dict[int, List[Backend]] = {}
        for backend in self.backends:
            tiers.setdefault(backend.priority, []).append(backend)
        self._tiers = [
            (self._balancer_for(tiers[priority]), tiers[priority])
            for priority in sorted(tiers)
        ]
        # With one tier (no DNS SRV priorities), the usual case, its
        # balancer picks for the group: one call per request, not two.
        self.pick = self._tiers[0][0].pick if len(self._tiers) == 1 else self._pick_tiers

    def _check_tiers(self, kept: List[Backend], added) -> None:
        """
        Build (and throw away) the balancers a new set of backends would
        need, so that an answer the balancer cannot take (a ring too big)
        is refused before anything changes.
        """
        tiers: Dict[int, List[Backend]] = {}
        for backend in kept:
            tiers.setdefault(backend.priority, []).append(backend)
        for target in added:
            tiers.setdefault(target.priority, []).append(Backend(
                authority(target.host, target.port), "http", target.host, target.port,
                target.weight, priority=target.priority,
            ))
        for level in tiers.values():
            self._balancer_for(level)

    def _balancer_for(self, backends: List[Backend]) -> IBalancer:
        def make(level: List[Backend]) -> IBalancer:
            return build_balancer(
                self.config.balancer, level, self.config.balancer_options,
                f"upstreams.{self.name}",
            )

        if not any(b.region for b in backends):
            return make(backends)
        # Backends in regions: nearest healthy first, spilling over
        # gradually (twistproxy.upstream.locality).
        picker = LocalityPicker(
            backends, self._locality.regions, make, self._locality.overprovisioning,
        )
        return LocalityBalancer(picker, self._locator)

    def _remove(self, backend: Backend) -> None:
        """
        Forget a backend (gone from DNS): no new requests; those in flight
        finish on their connections.
        """
        self.backends.remove(backend)
        self._tokens.pop(self._token_of.pop(backend), None)
        self.pools.pop(backend).close()
        if self.monitor is not None:
            self.monitor.remove_backend(backend)
        if self.outlier is not None:
            self.outlier.remove_backend(backend)

    def set_discovered(self, discovery: Discovery, targets) -> None:
        """
        The addresses DNS gives for one of the group's discovery entries
        changed: add and remove backends to match.

        @param targets: L{twistproxy.upstream.discovery.Target}s.
        """
        known = self._discovered.setdefault(discovery, {})
        listed = {(b.host, b.port) for b in self.backends if b not in known.values()}
        # An address also listed in the configuration is that backend.
        wanted = {(t.host, t.port): t for t in targets if (t.host, t.port) not in listed}
        try:
            self._check_tiers(
                [b for a, b in known.items() if a in wanted]
                + [b for b in self.backends if b not in known.values()],
                [t for a, t in wanted.items() if a not in known],
            )
        except ConfigError as e:
            self.log.error(
                "upstream {group}: DNS answer for {name} not used: {problem}",
                group=self.name, name=discovery.name, problem=e.problem,
            )
            return
        for address in [a for a in known if a not in wanted]:
            backend = known.pop(address)
            self._remove(backend)
            self.log.info("upstream {group} backend {backend} removed (gone from DNS)",
                          group=self.name, backend=backend.name)
        for address, target in wanted.items():
            backend = known.get(address)
            if backend is not None:
                if backend.weight != target.weight:
                    backend.weight = backend.effective_weight = target.weight
                backend.priority = target.priority
                continue
            backend = known[address] = self._add(
                discovery.scheme, target.host, target.port, target.weight,
                discovery.region, discovery.zone, target.priority,
            )
            if self.monitor is not None:
                self.monitor.add_backend(backend)
            if self.outlier is not None:
                self.outlier.add_backend(backend)
            self.log.info("upstream {group} backend {backend} added (from DNS)",
                          group=self.name, backend=backend.name)
        self._build_balancer()

    def take_state(self, old: "UpstreamGroupRuntime") -> None:
        """
        After a reload: backends that were already in the group keep what
        was known of them.  A backend found down by the health check stays
        down until the new check passes it (if the group still has one);
        one drained by the operator stays drained.  Ejections are not
        carried over: outlier detection starts afresh.
        """
        for backend in self.backends:
            previous = old.find(backend.name)
            if previous is None:
                continue
            if self.monitor is not None:
                backend.healthy = previous.healthy
            backend.draining = backend.draining or previous.draining
            backend.refresh()

    def find(self, name: str) -> Optional[Backend]:
        for backend in self.backends:
            if backend.name == name:
                return backend
        return None

    def changed(self, backend: Backend, what: str, detail: str = "") -> None:
        """
        One of C{backend}'s flags changed (C{what} says which way, e.g.
        C{'unhealthy'}, C{'ejected'}, C{'draining'}): recompute its
        availability, and log it.
        """
        backend.refresh()
        self.log.info(
            "upstream {group} backend {backend} {what}{detail}: now {state}",
            group=self.name, backend=backend.name, what=what,
            detail=f" ({detail})" if detail else "",
            state="available" if backend.available else "unavailable",
        )

    def set_draining(self, backend: Backend, draining: bool) -> None:
        """
        Drain a backend (no new requests; those in flight finish), or take
        it back.
        """
        if backend.draining != draining:
            backend.draining = draining
            self.changed(backend, "draining" if draining else "undrained")
            self.check_drained(backend)

    def check_drained(self, backend: Backend) -> None:
        """
        Release a draining backend's connections once its last request
        has finished.
        """
        if backend.draining and backend.in_flight == 0:
            pool = self.pools.get(backend)
            # A backend already removed (gone from DNS) has no pool left.
            if pool is not None:
                pool.close()

    def report(self, backend: Backend, ok: bool, status: int) -> None:
        """
        The outcome of one request to C{backend}, for passive outlier
        detection: C{ok} is C{False} for connection failures, resets,
        timeouts and malformed responses; C{status} is what the client got.
        """
        detector = self.outlier
        if detector is None:
            return
        if ok and not (status >= 500 and self.config.outlier.on_5xx):
            detector.success(backend)
        else:
            detector.failure(backend)

    # Placing requests

    def _pick_tiers(self, request: IRequestInfo) -> Optional[Backend]:
        # pick with more than one tier, or none.
        for balancer, _ in self._tiers:
            backend = balancer.pick(request)
            if backend is not None:
                return backend
        return None

    def pick_other(self, request: IRequestInfo, tried: Collection[Backend]) -> Optional[Backend]:
        """
        An available backend for a retry of C{request}, other than those
        in C{tried}, or C{None}: from the lowest tier that has one, by the
        tier's balancer (which, with regions, spills over from the levels
        the request failed in; L{twistproxy.upstream.locality}).
        """
        for balancer, backends in self._tiers:
            backend = pick_untried(balancer, backends, request, tried)
            if backend is not None:
                return backend
        return None

    def counted_retry(self, reason: str, backend: Backend) -> bool:
        """
        Whether sending a request (or a relayed connection) that failed
        on C{backend} for C{reason} to another backend counts against the
        group's C{retries} and retry budget.

        It does not when the connection was refused, which sent nothing and
        adds no work anywhere when sent on (HAProxy's redispatch), nor when
        the backend was already known bad (down, ejected or drained): the
        request is then placed again as if it had just arrived.  A connect
        timeout counts, since it may be a backend too busy to accept.
        """
        return reason != REFUSED and backend.available

    def may_retry(self, share: Optional[float] = None) -> bool:
        """
        Whether the retry budget allows one more concurrent retry.

        The budget holds back retries that may add work to the backends
        (a request that may have reached its backend, a connection that
        timed out), so that failures cannot multiply the load; a request
        whose connection was refused, or whose backend was already known
        bad, is placed again without asking it.

        @param share: The budget's share of the requests in flight, when
            not the group's C{retry_budget} (a route's own).
        """
        if share is None:
            share = self.config.retry_budget
        budget = max(MIN_RETRY_CONCURRENCY, share * self.in_flight)
        return self.retries_in_flight < budget

    # Stickiness

    def _token(self, backend: Backend) -> str:
        # Opaque, and with a secret unforgeable: a client can at most send
        # a token it was given, which names one of this group's backends.
        secret = (self.config.sticky.secret if self.config.sticky else "").encode("utf-8")
        message = f"{self.name}/{backend.name}".encode("utf-8")
        return hmac.new(secret, message, hashlib.sha256).hexdigest()[:20]

    def sticky_backend(self, token: Optional[str]) -> Optional[Backend]:
        """
        The available backend a stickiness cookie names, if any.
        """
        if token is None:
            return None
        backend = self._tokens.get(token)
        if backend is not None and backend.available:
            return backend
        return None

    def sticky_token(self, backend: Backend) -> str:
        """
        The stickiness token that names C{backend}: what a client sends
        back to be pinned to it (L{sticky_backend}).
        """
        return self._token_of[backend]

    # Visibility and lifetime

    def status(self) -> Dict[str, Any]:
        """
        The state of the group and of each backend, as plain data.
        """
        return {
            "name": self.name,
            "balancer": self.config.balancer,
            "in_flight": self.in_flight,
            "retries_in_flight": self.retries_in_flight,
            "backends": [
                {
                    "name": b.name,
                    "region": b.region,
                    "zone": b.zone,
                    "available": b.available,
                    "healthy": b.healthy,
                    "ejected": b.ejected,
                    "draining": b.draining,
                    "weight": b.weight,
                    "effective_weight": b.effective_weight,
                    "in_flight": b.in_flight,
                    "requests": b.requests,
                    "failures": b.failures,
                    "health": self.monitor.status(b) if self.monitor is not None else None,
                    "outlier": self.outlier.status(b) if self.outlier is not None else None,
                }
                for b in self.backends
            ],
        }

    def start(self, clock, resolver=None) -> None:
        """
        Start what runs in the background: health checks, and DNS
        discovery (with C{resolver}, an C{IResolver}).
        """
        if self.monitor is not None:
            self.monitor.start()
        if self.config.discovery and resolver is not None:
            from twistproxy.upstream.discovery import DnsDiscovery

            for entry in self.config.discovery:
                discovery = DnsDiscovery(
                    clock, resolver, entry.name,
                    port=entry.port or None, kind="srv" if entry.kind == "srv" else "a",
                    interval=entry.interval, weight=entry.weight,
                    on_change=lambda targets, entry=entry: self.set_discovered(entry, targets),
                )
                self._discoveries.append(discovery)
                discovery.start()

    def stop(self) -> None:
        for discovery in self._discoveries:
            discovery.stop()
        self._discoveries = []
        for watcher in (self.monitor, self.outlier, self.slow_start):
            if watcher is not None:
                watcher.stop()
        for pool in self.pools.values():
            pool.close()
