# -*- test-case-name: tests.test_service -*-
"""
The running proxy as a Twisted service.

L{ProxyService} has L{twistproxy.build} turn a L{ProxyConfig} into
listeners, upstream groups and an access log, and starts and stops them with
the application, drains them, and applies a reloaded configuration.  It is what
C{twistd twistproxy} runs and what an application that embeds twistproxy
adds to its own service hierarchy::

    from twistproxy import ProxyService, load
    ProxyService(load("proxy.toml"), reactor).setServiceParent(application)

Everything that can be checked without touching the network is checked in
the constructor, as the assembler builds (balancer names and options,
endpoint strings), so a bad configuration fails before anything listens,
with the configuration path of the mistake.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from twistproxy import build
from twistproxy.accesslog import AccessLogWriter, rotate
from twistproxy.acme.challenges import ChallengeFiles, Challenges
from twistproxy.acme.schedule import Renewal
from twistproxy.acme.shared import SharedCertificates
from twistproxy.admission import Quota, file_budget
from twistproxy.config import ConfigError, Listener, ProxyConfig, load
from twistproxy.config.parse import acme_certificates
from twistproxy.dns.server import DNSFront
from twistproxy.dns.texts import RunTimeTexts
from twistproxy.forwarder import Forwarder
from twistproxy.interfaces import IClosable
from twistproxy.metrics import ProxyMetrics
from twistproxy.stream.udp import UDPProxy


def _acme_names(config: ProxyConfig) -> List[Tuple[Tuple[str, ...], Tuple[str, ...]]]:
    # The names of each ACME certificate, and the listeners that serve it.
    return [(names, served_by) for _, names, served_by in acme_certificates(
        config.listeners, config.routes)]


def check_reloadable(running: ProxyConfig, new: ProxyConfig,
                     fixed: Tuple[str, ...] = ("admin", "workers", "cache")) -> None:
    """
    Refuse a configuration that a reload cannot apply: one whose admin
    listener, number of workers or cache store changed (or whatever else
    is C{fixed}).

    @raises ConfigError: naming the first such table.
    """
    for what in fixed:
        if getattr(new, what) != getattr(running, what):
            raise ConfigError(what, "changed: needs a restart (not reloadable yet)",
                              new.source)


class ListenerService(Service):
    """
    Listens on one endpoint while running, and says where.

    @ivar listener: The listener's name.  (Not the service's C{name}: a
        reload starts a listener's new endpoint before it stops the old
        one, and a parent service refuses two children of the same name.)
    @ivar quota: The connection quota whose fullness pauses accepting, or
        C{None}.
    """

    log = Logger()

    def __init__(self, listener: str, description: str, endpoint, factory,
                 quota: Optional[Quota] = None):
        self.listener = listener
        self.description = description
        self.endpoint = endpoint
        self.factory = factory
        self.quota = quota
        self.port = None

    def startService(self) -> None:
        Service.startService(self)
        failures: List = []
        d = self.endpoint.listen(self.factory)
        d.addCallbacks(self._listening, failures.append)
        if failures:
            # Fail start-up (and so twistd) instead of running deaf.
            failures[0].raiseException()

    def _listening(self, port) -> None:
        self.port = port
        self.watch()
        host = port.getHost()
        self.log.info(
            "twistproxy listener {name} listening on {address}",
            name=self.listener,
            address=f"{getattr(host, 'host', host)}:{getattr(host, 'port', '')}",
        )

    def stopService(self):
        Service.stopService(self)
        if self.port is not None:
            self.unwatch()
            port, self.port = self.port, None
            return port.stopListening()

    def watch(self) -> None:
        """
        Have the quota pause accepting on the port whenever it is full.
        """
        if self.quota is not None and hasattr(self.port, "stopReading"):
            # A reactor's own port: it can pause accepting when full.
            self.quota.watch(self.port)

    def unwatch(self) -> None:
        if self.quota is not None and self.port is not None:
            self.quota.unwatch(self.port)


class ProxyService(MultiService):
    """
    A whole reverse proxy.

    @ivar factory: The server protocol factory of the plain-TCP listeners; an
        application may also listen with it on endpoints of its own.  (TLS
        listeners get a factory of their own, which tells backends the
        client used https.)
    @ivar forwarder: The request pipeline.
    @ivar metrics: The Prometheus metrics, kept only when there is an
        admin listener to serve them, else C{None}.
    @ivar listeners: The listener services, by name.
    @ivar dns_texts: The L{RunTimeTexts} (TXT records set at run time: the
        admin API's C{/dns/txt}, ACME DNS-01 challenges), which every dns
        listener answers beside its zones; shared through Redis when the
        C{[dns]} section names one.
    @ivar built: The L{twistproxy.build.ListenerBuilder} that built the
        listeners' factories, and keeps them all (those a reload replaced
        too) to drain, abort, reconfigure and count.
    """

    log = Logger()

    def __init__(self, config: ProxyConfig, reactor=None,
                 endpoints: Optional[Mapping[str, IStreamServerEndpoint]] = None,
                 adjust: Optional[Callable[[ProxyConfig], ProxyConfig]] = None,
                 challenges: Optional[ChallengeFiles] = None):
        """
        @param endpoints: Where to listen instead of the configured
            endpoint strings, by listener name (a worker process's
            inherited sockets, L{twistproxy.workers}).
        @param adjust: Applied to every configuration read again by
            L{reload} before it is checked and used (a worker replaces the
            admin listener with its private one).
        @param challenges: Where the ACME challenge answers are, when
            another process orders and renews the ACME certificates (a
            worker's master, which writes them into
            L{twistproxy.acme.challenges.ChallengeFiles}); this service
            then only serves them, and renews nothing itself.
        """
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        self._adjust = adjust
        self.config = config
        self.reactor = reactor
        # When the running configuration was read, for the status page.
        self.config_loaded = reactor.seconds()
        self.cache = build.cache(config, reactor)
        self.locator, self.forwarder = build.pipeline(config, reactor, self.cache)
        self.access_log: Optional[AccessLogWriter] = None
        # Counted only where they can be read: on the admin listener.
        self.metrics: Optional[ProxyMetrics] = None
        if config.admin is not None:
            self.metrics = ProxyMetrics(
                reactor, status=self.status,
                connections=lambda: sum(len(f.connections) for f in self.built.http_factories),
                streams=self._stream_figures, pools=self._pool_sizes)
        # The TXT records set at run time (ACME DNS-01), beside the zones.
        self.dns_texts: RunTimeTexts = build.dns_texts(config, reactor)
        # The ACME HTTP-01 answers every HTTP listener serves before routing.
        self.challenges = (challenges or Challenges()) if config.acme is not None else None
        self._renews = challenges is None
        # Every listener factory and filter chain built, also those a reload
        # has replaced, until the service stops.  (An idle one costs a few
        # objects: its Deadlines loop is stopped.)
        self.built = build.ListenerBuilder(
            reactor, config, self.forwarder, on_exchange_end=self._exchange_ended,
            on_connection_end=self._connection_ended, locator=lambda: self.locator,
            dns_texts=self.dns_texts.records, challenges=self.challenges)
        self.factory = self.built.plain
        # Shared by every listener: the limits are the process's.
        self.connections, self.in_flight = self.built.connections, self.built.in_flight
        # The ACME certificates' renewals, from the configuration the
        # service started with.
        # Their store shared with other instances, if [acme] names one.
        self.acme_shared = build.acme_shared(config, reactor)
        self.acme = build.ACMECertificates(
            config, reactor, self.dns_texts, self.challenges, self.reload_certificates,
            self.acme_shared, self._on_demand_issued)
        self.renewals = self.acme.renewals
        self.built.on_demand = self.acme.on_demand
        self._endpoints = endpoints
        self.listeners: Dict[str, ListenerService] = {}
        for listener in config.listeners:
            service = self._listener(listener, config)
            service.setServiceParent(self)
            self.listeners[listener.name] = service
        self._flusher: Optional[LoopingCall] = None
        self._log_failing = False
        self.admin_listener: Optional[ListenerService] = None
        admin = build.admin(reactor, config, self, self.metrics)
        if admin is not None:
            self.admin_listener = ListenerService("admin", config.admin.endpoint, *admin)
            self.admin_listener.setServiceParent(self)

    def _listener(self, listener: Listener, config: ProxyConfig) -> ListenerService:
        """
        The service of one listener of C{config}, not started.

        @raises ConfigError: for a bad endpoint or TLS settings.
        """
        endpoint = build.endpoint(self.reactor, listener, config, self._endpoints)
        factory, quota = self.built.factory(listener)
        return ListenerService(listener.name, listener.endpoint, endpoint, factory, quota)

    def status(self) -> Dict[str, Any]:
        """
        The state of every upstream group and backend, as plain data (see
        L{twistproxy.upstream.group.UpstreamGroupRuntime.status}).
        """
        status: Dict[str, Any] = {
            "groups": [g.status() for g in self.forwarder.groups.values()]}
        if self.cache is not None:
            status["cache"] = dict(self.cache.counts)
        if self.renewals:
            status["acme"] = [renewal.status() for renewal in self.renewals]
        mirrors = self.forwarder.mirrors
        if mirrors:
            status["mirrors"] = {name: m.status() for name, m in mirrors.items()}
        return status

    def _stream_figures(self) -> List[Dict[str, Any]]:
        """
        What the metrics read of the TCP relays and UDP listeners (see
        L{ProxyMetrics}'s C{streams}).
        """
        rows: List[Dict[str, Any]] = []
        for f in self.built.stream_factories:
            if isinstance(f, UDPProxy):
                rows.append({"listener": f.listener, "protocol": "udp", "open": len(f.sessions),
                             "dropped": f.dropped, "refused": f.refused})
            elif isinstance(f, DNSFront):
                rows.extend(f.figures())
            else:
                rows.append({"listener": f.listener, "protocol": "tcp",
                             "open": len(f.connections), "rejected": f.rejected})
        return rows

    def _pool_sizes(self) -> Iterator[Tuple[str, str, int]]:
        """
        C{(upstream, backend, connections)} of every HTTP backend's pool.
        """
        for group in self.forwarder.groups.values():
            if group.config.kind == "http":
                for backend, pool in group.pools.items():
                    yield group.name, backend.name, pool.connections

    def drain(self, group: str, backend: str, draining: bool = True) -> None:
        """
        Drain a backend (no new requests; those in flight finish, then its
        connections close), or take it back with C{draining=False}.

        @param group: The upstream group's name.
        @param backend: The backend's name, C{host:port}.
        @raises KeyError: when there is no such group or backend, with a
            sentence naming the one that is missing.
        """
        runtime = self.forwarder.groups.get(group)
        if runtime is None:
            raise KeyError(f"no upstream group {group!r}")
        found = runtime.find(backend)
        if found is None:
            raise KeyError(f"no backend {backend!r} in upstream group {group!r}")
        runtime.set_draining(found, draining)

    def reload_certificates(self) -> List[str]:
        """
        Read every TLS listener's certificates again: new handshakes use
        the new ones, open connections go on.  A listener whose new
        certificates are broken keeps its old ones.

        @return: One message per listener that kept its old certificates.
        """
        problems = []
        for name, (factory, tls, path) in self.built.tls.items():
            try:
                factory.reload(tls, path)
            except ConfigError as e:
                problems.append(str(e))
                self.log.error(
                    "listener {name}: new certificates refused, the old ones stay: {problem}",
                    name=name, problem=str(e),
                )
            else:
                self.log.info("listener {name}: certificates reloaded", name=name)
        return problems

    def _on_demand_issued(self, name: str) -> None:
        # Served by every listener with ACME certificates, and renewed.
        self.built.refresh_acme()
        self.reload_certificates()
        renewal = self.acme.renewal((name,))
        self.renewals.append(renewal)
        self._start_renewals([renewal])

    def _start_renewals(self, renewals: List[Renewal]) -> None:
        if self.running and self._renews:
            for renewal in renewals:
                renewal.start()

    def certificates(self) -> List[Dict[str, Any]]:
        """
        The certificates every TLS listener presents now, for the admin
        API and the status page: listener, names, subject, file, and
        expiry (ISO 8601, UTC).
        """
        return [
            {"listener": name, "names": list(served.names), "subject": served.subject,
             "source": served.source, "not_after": served.not_after.isoformat()}
            for name, (factory, _, _) in self.built.tls.items()
            for served in factory.server_tls.store.certificates
        ]

    def _exchange_ended(self, exchange) -> None:
        if self.metrics is not None:
            self.metrics.observe(exchange)
        if self.access_log is not None:
            try:
                self.access_log(exchange)
            except OSError as e:
                self._access_log_failed(e)

    def _connection_ended(self, c) -> None:
        if self.metrics is not None:
            self.metrics.observe_connection(c)
        if self.access_log is not None:
            try:
                self.access_log.connection(c)
            except OSError as e:
                self._access_log_failed(e)

    def _flush_access_log(self) -> None:
        try:
            self.access_log.flush()
            limit = self.config.access_log
            if limit.max_size and self.access_log.size() >= limit.max_size:
                rotate(limit.path, limit.keep)
                self.reopen_access_log()
        except OSError as e:
            self._access_log_failed(e)
        else:
            self._log_failing = False

    def _access_log_failed(self, e: OSError) -> None:
        # A full disk must not take the proxy down with it: say so once per
        # episode, drop the lines, keep serving.
        if not self._log_failing:
            self._log_failing = True
            self.log.error(
                "cannot write the access log {path}: {error}; lines are lost "
                "until it can be written again",
                path=self.config.access_log.path, error=e.strerror or str(e),
            )

    def startService(self) -> None:
        if self.config.access_log.path:
            self.access_log = build.open_access_log(self.config, self.reactor)
        super().startService()
        self._start_groups(self.forwarder)
        self.dns_texts.start()
        self._start_renewals(self.renewals)
        if self.access_log is not None:
            self._flusher = LoopingCall(self._flush_access_log)
            self._flusher.clock = self.reactor
            self._flusher.start(1.0, now=False)

    def _start_groups(self, forwarder: Forwarder) -> None:
        resolver = None
        if any(g.config.discovery for g in forwarder.groups.values()):
            from twistproxy.upstream.discovery import default_resolver

            resolver = default_resolver(
                self.reactor, nameservers=self.config.resolver.nameservers)
        for group in forwarder.groups.values():
            group.start(self.reactor, resolver)

    def reload(self) -> List[str]:
        """
        Read the configuration file again and, if it is valid, use it for
        new requests; requests in flight finish with the old upstream
        groups, whose idle connections are then closed.  Backends keep
        their health, ejection and draining state across the reload.

        What can change now: upstream groups, routes, timeouts, limits,
        forwarding, the access log, the locator, locality, shutdown and
        listeners (L{_change_listeners}; not those of a worker, whose
        sockets are its master's).  Admin, workers and [cache] store changes
        still need a restart: such a file is refused as a whole (L{check_reloadable};
        certificates reload with C{SIGHUP}).

        @return: The problems that made the reload fail (empty on success).
        """
        source = self.config.source
        try:
            if not source:
                raise ConfigError("", "the configuration was not read from a file")
            new = load(source)
            if self._adjust is not None:
                new = self._adjust(new)
            # Inherited sockets (a worker's) are the master's to change.
            check_reloadable(self.config, new, ("admin", "workers", "cache") + (
                ("listeners",) if self._endpoints else ()))
            if getattr(new.dns, "redis", "") != getattr(self.config.dns, "redis", ""):
                # The records' store, like the cache's, outlives reloads.
                raise ConfigError("dns.redis", "changed: needs a restart (not reloadable yet)",
                                  new.source)
            # The store (and what it holds) outlives reloads.
            cache = self.cache if self.cache is not None else build.cache(new, self.reactor)
            locator, forwarder = build.pipeline(new, self.reactor, cache)
            acme = self._next_acme(new)
            retire = self._change_listeners(new, forwarder)
        except ConfigError as e:
            self.built.on_demand = self.acme.on_demand
            self.log.error("configuration reload refused, the running one stays: {problem}",
                           problem=str(e))
            return [str(e)]
        for name, group in forwarder.groups.items():
            old = self.forwarder.groups.get(name)
            if old is not None:
                group.take_state(old)
        old_forwarder, old_locator = self.forwarder, self.locator
        self.forwarder, self.locator, self.config = forwarder, locator, new
        self.config_loaded = self.reactor.seconds()
        self.cache = cache
        for factory in self.built.http_factories + self.built.stream_factories:
            factory.configure(new, forwarder)
        budget = file_budget()
        self.connections.set_limit(new.limits.max_connections or budget)
        self.in_flight.set_limit(new.limits.max_in_flight or budget)
        if self.running:
            self._start_groups(forwarder)
        retired = retire()
        if acme is not None:
            self._use_acme(*acme)
        old_forwarder.close()
        if IClosable.providedBy(old_locator):
            old_locator.close()
        if self.access_log is not None:
            self.reopen_access_log()
        # Said once the sockets of removed listeners are closed (a port
        # closes on the reactor's next turn): from then on, connections to
        # them are refused, not reset.
        retired.addCallback(lambda _: self.log.info(
            "configuration reloaded from {source}", source=source))
        return []

    def _next_acme(self, new: ProxyConfig):
        """
        The ACME certificates of C{new} when its C{[acme]} section or its
        listeners' C{tls.acme} names differ from the running ones, with
        their shared store; C{None} when nothing changes.  The listeners
        built from now on serve C{new}'s on-demand names (with those
        ordered so far).

        @raises ConfigError: When C{new} adds an C{[acme]} section (the
            HTTP listeners answer HTTP-01 only with one from the start),
            or as L{build.ACMECertificates}.
        """
        if new.acme == self.config.acme and _acme_names(new) == _acme_names(self.config):
            return None
        if self.challenges is None:
            raise ConfigError("acme", "added: needs a restart (the HTTP listeners answer "
                                      "ACME challenges only with [acme] from the start)",
                              new.source)
        same_store = getattr(new.acme, "store", "") == getattr(self.config.acme, "store", "")
        shared = self.acme_shared if same_store else build.acme_shared(new, self.reactor)
        acme = build.ACMECertificates(new, self.reactor, self.dns_texts, self.challenges,
                                      self.reload_certificates, shared, self._on_demand_issued)
        if acme.on_demand is not None and self.acme.on_demand is not None:
            acme.on_demand.names.extend(self.acme.on_demand.names)
        self.built.on_demand = acme.on_demand
        # The same CA, account and storage: renewals of the same names go on.
        same_ca = new.acme is not None and self.config.acme is not None and (
            replace(new.acme, on_demand=None) == replace(self.config.acme, on_demand=None))
        return acme, shared, same_ca

    def _use_acme(self, acme: build.ACMECertificates,
                  shared: Optional[SharedCertificates], same_ca: bool) -> None:
        """
        Renew C{acme}'s certificates from now on: with C{same_ca}, a
        renewal whose names stay goes on as it was (its failures, its next
        try); the others stop, and the new ones start.  Every listener
        with ACME certificates reads its certificates again.
        """
        old = self.renewals
        kept = {r.names: r for r in old} if same_ca else {}
        names = [r.names for r in acme.renewals] + [
            (name,) for name in (acme.on_demand.names if acme.on_demand else ())]
        acme.renewals[:] = [kept.get(n) or acme.renewal(n) for n in names]
        for renewal in old:
            if renewal not in acme.renewals:
                renewal.stop()
        # Stand-ins first: a new renewal reads what is stored.
        self.built.refresh_acme()
        self._start_renewals([r for r in acme.renewals if r not in old])
        if shared is not self.acme_shared and self.acme_shared is not None:
            self.acme_shared.close()
        self.acme, self.acme_shared, self.renewals = acme, shared, acme.renewals
        self.reload_certificates()
        self.log.info("ACME: {count} certificates managed after the reload",
                      count=len(self.renewals))

    def _change_listeners(self, new: ProxyConfig, forwarder: Forwarder) -> Callable[[], None]:
        """
        Start the listeners that C{new} adds or whose endpoint it changes;
        a listener whose endpoint stays keeps its socket and takes its new
        settings (TLS, redirect, h2c) for new connections.

        @return: What to call once C{new} is in use: it stops the listeners
            C{new} removes or moves (their open connections go on), and
            returns a L{Deferred} that fires when their sockets are closed.
        @raises ConfigError: when a new listener cannot be built or listen;
            then nothing has changed.
        """
        running = {listener.name: listener for listener in self.config.listeners}
        # Each HTTP listener's factory names it only when a route asks
        # which listener took a request: when that changes, all are rebuilt.
        renamed = self.config.routes_by_listener != new.routes_by_listener
        undo = self.built.saved()
        self.built.use(new, forwarder)
        started: List[ListenerService] = []
        swaps: List[Tuple[ListenerService, ListenerService]] = []
        try:
            for listener in new.listeners:
                old = running.get(listener.name)
                if old == listener and not (renamed and listener.protocol == "http"):
                    continue
                service = self._listener(listener, new)
                if (old is not None and old.endpoint == listener.endpoint
                        and old.protocol != listener.protocol
                        and "dns" in (old.protocol, listener.protocol)):
                    # A dns listener's sockets (UDP and TCP) are not another's.
                    raise ConfigError(f"listeners.{listener.name}.protocol",
                                      "cannot change to or from dns on the same endpoint; "
                                      "change the endpoint too", new.source)
                if old is not None and old.endpoint == listener.endpoint:
                    swaps.append((self.listeners[listener.name], service))
                    continue
                try:
                    service.setServiceParent(self)
                except Exception as e:
                    service.disownServiceParent()
                    raise ConfigError(f"listeners.{listener.name}.endpoint",
                                      f"cannot listen on {listener.endpoint!r}: {e}",
                                      new.source) from None
                started.append(service)
        except ConfigError:
            for service in started:
                service.disownServiceParent()
            undo()
            raise
        wanted = {listener.name for listener in new.listeners}
        moved = {service.listener for service in started}
        retired = [service for name, service in self.listeners.items()
                   if name not in wanted or name in moved]
        for old_service, service in swaps:
            old_service.factory = service.factory
            old_service.description = service.description
            port = old_service.port
            if isinstance(service.factory, UDPProxy) and port is not None:
                # A datagram port has a protocol, not a factory: the new
                # proxy takes new clients; the old one's sessions go on
                # until they end.
                port.protocol = service.factory
                service.factory.makeConnection(port)
            elif port is not None:
                # New connections are built by the new factory; the open
                # ones keep theirs.
                port.factory = service.factory
                if old_service.quota is not service.quota:
                    old_service.unwatch()
                    old_service.quota = service.quota
                    old_service.watch()
        for service in started:
            self.listeners[service.listener] = service
        for name in list(self.listeners):
            if name not in wanted:
                del self.listeners[name]

        def retire() -> Deferred:
            closed = []
            for service in retired:
                self.log.info("listener {name} on {endpoint} stops listening",
                              name=service.listener, endpoint=service.description)
                closed.append(maybeDeferred(service.disownServiceParent))
            return gatherResults(closed)

        return retire

    def hangup(self) -> List[str]:
        """
        What SIGHUP does: reload the configuration, then the certificates.

        @return: The problems found, if any.
        """
        return self.reload() + self.reload_certificates()

    def stopService(self):
        """
        Graceful shutdown: stop accepting, let requests in flight finish
        (keep-alive clients are told C{Connection: close}) for at most
        C{shutdown.drain} seconds, then close everything.
        """
        stopped = super().stopService()
        for renewal in self.renewals:
            renewal.stop()
        drained = gatherResults(
            [f.drain() for f in self.built.http_factories + self.built.stream_factories])
        deadline = self.reactor.callLater(self.config.shutdown.drain, self.stop_now)

        def finish(result):
            if deadline.active():
                deadline.cancel()
            self._close_all()
            return stopped

        return drained.addBoth(finish)

    def stop_now(self) -> None:
        """
        End the graceful shutdown at once: cut every client connection.
        """
        for factory in self.built.http_factories + self.built.stream_factories:
            factory.abort_all()

    def _close_all(self) -> None:
        self.forwarder.close()
        self.dns_texts.stop()
        if self.acme_shared is not None:
            self.acme_shared.close()
        for chain in self.built.filter_chains:
            chain.close()
        if self.cache is not None:
            self.cache.store.close()
        if IClosable.providedBy(self.locator):
            self.locator.close()
        if self._flusher is not None and self._flusher.running:
            self._flusher.stop()
        if self.access_log is not None:
            access_log, self.access_log = self.access_log, None
            try:
                access_log.close()
            except OSError as e:
                self._access_log_failed(e)

    def reopen_access_log(self) -> None:
        """
        Reopen the access log file (after it was rotated away).
        """
        if self.access_log is None or self.config.access_log.path == "stdout":
            return
        old = self.access_log
        try:
            self.access_log = build.open_access_log(self.config, self.reactor)
        except ConfigError as e:
            self.log.error("cannot reopen the access log: {problem}", problem=e.problem)
            return
        try:
            old.close()
        except OSError as e:
            self._access_log_failed(e)
        self.log.info("access log reopened")
