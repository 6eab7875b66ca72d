# -*- test-case-name: tests.test_service -*-
"""
The running proxy as a Twisted service.

L{ProxyService} turns a L{ProxyConfig} into listeners, upstream groups and
an access log, and starts and stops them with the application.  It is what
C{twistd twistproxy} runs and what an application that embeds twistproxy
adds to its own service hierarchy::

    from twistproxy import ProxyService, load
    ProxyService(load("proxy.toml"), reactor).setServiceParent(application)

Everything that can be checked without touching the network is checked in
the constructor (balancer names and options, endpoint strings), so a bad
configuration fails before anything listens, with the configuration path of
the mistake.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

from twisted.application.service import MultiService, Service
from twisted.internet.defer import gatherResults
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from twistproxy.accesslog import AccessLog, rotate
from twistproxy.admission import Quota, file_budget, quotas
from twistproxy.admin import admin_site
from twistproxy.cache.runtime import HTTPCache, build_cache
from twistproxy.config import ConfigError, Listener, ProxyConfig, load
from twistproxy.filters.chain import FilterChain, build_chain
from twistproxy.http.forwarder import Forwarder, make_group
from twistproxy.http.headers import TrustedProxies
from twistproxy.http.paths import KEEP
from twistproxy.http.server import HTTPServerFactory
from twistproxy.metrics import ProxyMetrics
from twistproxy.stream.proxyproto import ProxyHeaderFactory
from twistproxy.stream.sni import SNIFactory, SNIRouter
from twistproxy.stream.tcp import TCPRelayFactory
from twistproxy.stream.udp import UDPEndpoint, UDPProxy
from twistproxy.tls import peer_subject, wrap_listener_factory
from twistproxy.upstream.locators import build_locator


def _pipeline(config: ProxyConfig, reactor, cache=None):
    """
    The locator and the forwarder (with its upstream groups) of C{config}.

    @param cache: The shared L{HTTPCache} for the routes that cache.

    @raises ConfigError: naming the file and the path of the problem.
    """
    try:
        locator = None
        if config.locator is not None:
            locator = build_locator(config.locator.type, config.locator.options, "locator")
        groups = {
            name: make_group(reactor, group, config.timeouts,
                             locality=config.locality, locator=locator)
            for name, group in config.upstreams.items()
        }
    except ConfigError as e:
        raise ConfigError(e.path, e.problem, e.source or config.source) from None
    for i, route in enumerate(config.routes):
        if route.upstream not in groups:
            raise ConfigError(
                f"routes[{i}].upstream",
                f"no upstream group named {route.upstream!r}",
                config.source,
            )
    try:
        return locator, Forwarder(config.routes, groups, config.forwarding.via, reactor, cache)
    except ConfigError as e:
        raise ConfigError(e.path, e.problem, config.source) from None


def _cache(config: ProxyConfig, reactor) -> Optional[HTTPCache]:
    """
    The shared cache of C{config}, or C{None} when no route caches.
    """
    try:
        return build_cache(reactor, config)
    except ConfigError as e:
        raise ConfigError(e.path, e.problem, config.source) from None


# Endpoint types whose connections are TLS.
_TLS_ENDPOINTS = frozenset(["ssl", "tls"])


def _endpoint_problem(endpoint: str, error: Exception) -> str:
    """
    Why the endpoint string C{endpoint} was refused with C{error}, in words
    an operator can act on.  Twisted's C{systemd:} parser says only
    C{list index out of range} (or the missing name) when it has no such
    socket, and it has none at all unless systemd named them: it takes the
    sockets of C{LISTEN_FDS} only with C{LISTEN_FDNAMES}, which systemd
    (227 or later) always sets and C{systemd-socket-activate} sets only with
    C{--fdname}.
    """
    problem = f"invalid endpoint {endpoint!r}: {error}"
    if endpoint.split(":", 1)[0].strip().lower() == "systemd" and isinstance(
            error, (IndexError, KeyError)):
        problem = (
            f"invalid endpoint {endpoint!r}: this process was not passed that socket; "
            f"it takes sockets only from socket activation, with LISTEN_FDS and "
            f"LISTEN_FDNAMES both set (systemd-socket-activate sets LISTEN_FDNAMES "
            f"only with --fdname=NAME)")
    return problem


def validate(config: ProxyConfig) -> None:
    """
    Check everything about C{config} that can be checked without running it
    (balancer names and options, endpoint strings, route targets), as the
    proxy would at start-up, on a memory reactor: nothing listens.

    @raises ConfigError: naming the file and the path of the first problem.
    """
    from twisted.internet.testing import MemoryReactorClock

    ProxyService(config, MemoryReactorClock())


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


class _ListenerService(Service):
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
    """

    log = Logger()

    def __init__(self, config: ProxyConfig, reactor=None,
                 endpoints: Optional[Mapping[str, IStreamServerEndpoint]] = None,
                 adjust: Optional[Callable[[ProxyConfig], ProxyConfig]] = None):
        """
        @param endpoints: Where to listen instead of the configured
            endpoint strings, by listener name (a worker process's
            inherited sockets, L{twistproxy.workers}).
        @param adjust: Applied to every configuration read again by
            L{reload} before it is checked and used (a worker replaces the
            admin listener with its private one).
        """
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        self._adjust = adjust
        self.config = config
        self.reactor = reactor
        self.cache = _cache(config, reactor)
        self.locator, self.forwarder = _pipeline(config, reactor, self.cache)
        self.access_log: Optional[AccessLog] = None
        # Every factory and listener filter chain built, also those a reload
        # has replaced, until the service stops: a replaced factory still
        # serves its open connections (so it takes each new forwarder, is
        # drained and aborted at shutdown), and its counters (rejected,
        # dropped) stay in the metrics' sums, which must never go down.
        # An idle one costs a few objects (its Deadlines loop is stopped).
        self._http_factories: List[HTTPServerFactory] = []
        self._stream_factories: List[Any] = []
        # The listeners' filters (the routes' belong to the forwarder).
        self._filter_chains: List[FilterChain] = []
        # Shared by every listener: the limits are the process's.
        self.connections, self.in_flight = quotas(config.limits, reactor)
        # Counted only where they can be read: on the admin listener.
        self.metrics: Optional[ProxyMetrics] = None
        if config.admin is not None:
            self.metrics = ProxyMetrics(
                reactor, status=self.status,
                connections=lambda: sum(len(f.connections) for f in self._http_factories),
                streams=self._stream_figures, pools=self._pool_sizes)
        self.factory = self._factory(b"http")
        self._https_factory: Optional[HTTPServerFactory] = None
        self._endpoints = endpoints
        self.listeners: Dict[str, _ListenerService] = {}
        self._tls: Dict[str, Any] = {}
        for listener in config.listeners:
            service = self._listener(listener, config)
            service.setServiceParent(self)
            self.listeners[listener.name] = service
        self._flusher: Optional[LoopingCall] = None
        self._log_failing = False
        self.admin_listener: Optional[_ListenerService] = None
        if config.admin is not None:
            try:
                endpoint = serverFromString(reactor, config.admin.endpoint)
            except Exception as e:
                raise ConfigError("admin.endpoint",
                                  _endpoint_problem(config.admin.endpoint, e), config.source)
            self.admin_listener = _ListenerService(
                "admin", config.admin.endpoint, endpoint,
                admin_site(self, config.admin, reactor, self.metrics))
            self.admin_listener.setServiceParent(self)

    def _listener(self, listener: Listener, config: ProxyConfig) -> _ListenerService:
        """
        The service of one listener of C{config}, not started.

        @raises ConfigError: for a bad endpoint or TLS settings.
        """
        try:
            endpoint = (self._endpoints or {}).get(listener.name)
            if endpoint is None and listener.protocol == "udp":
                endpoint = UDPEndpoint(self.reactor, listener.endpoint)
            elif endpoint is None:
                endpoint = serverFromString(self.reactor, listener.endpoint)
        except Exception as e:
            raise ConfigError(
                f"listeners.{listener.name}.endpoint",
                _endpoint_problem(listener.endpoint, e),
                config.source,
            )
        factory = self.factory
        options: Dict[str, Any] = {}
        filters = self._listener_filters(listener, config)
        if filters is not None:
            options["filters"] = filters
        if listener.escaped_slashes != KEEP:
            options["escaped_slashes"] = listener.escaped_slashes
        # A UDP listener has sessions, not connections (max_sessions); a
        # tcp listener's own max_connections is the relays' to count.
        quota = None if listener.protocol == "udp" else self.connections
        if listener.protocol == "http" and listener.max_connections:
            # A factory of its own, so that its connections are counted
            # apart (and within the global count).
            quota = options["connections"] = Quota(
                f"client connections on listener {listener.name}",
                listener.max_connections, self.reactor, parent=self.connections)
        tls_endpoint = (listener.tls_offloaded
                        or listener.endpoint.split(":", 1)[0] in _TLS_ENDPOINTS)
        if listener.protocol == "udp":
            factory = UDPProxy(
                self.reactor, listener.name, listener.upstream, self.forwarder.groups,
                config.timeouts, listener.max_sessions, on_end=self._connection_ended,
                filters=filters)
            self._stream_factories.append(factory)
        elif listener.protocol == "tcp":
            factory = self._relay(listener, config, filters, quota)
        elif listener.tls is not None:
            factory = self._terminate_tls(listener, config, options)
        elif listener.redirect_https:
            factory = self._factory(b"http", redirect_port=listener.https_port, **options)
        elif listener.h2c or options:
            # A factory of its own: its options, filters or connection
            # count are not the other listeners'.
            factory = self._factory(b"https" if tls_endpoint else b"http",
                                    h2c=listener.h2c, **options)
        elif tls_endpoint:
            # Backends are told the client came over https.
            if self._https_factory is None:
                self._https_factory = self._factory(b"https")
            factory = self._https_factory
        if listener.protocol == "http" and listener.sni:
            factory = self._passthrough(listener, factory, config, filters, quota)
        if listener.proxy_protocol:
            factory = ProxyHeaderFactory(
                factory, TrustedProxies(listener.proxy_protocol).__contains__,
                self.reactor, config.timeouts.request_head)
        return _ListenerService(listener.name, listener.endpoint, endpoint, factory, quota)

    def status(self) -> Dict[str, Any]:
        """
        The state of every upstream group and backend, as plain data (see
        L{twistproxy.upstream.group.UpstreamGroupRuntime.status}).
        """
        status: Dict[str, Any] = {
            "groups": [g.status() for g in self.forwarder.groups.values()]}
        if self.cache is not None:
            status["cache"] = dict(self.cache.counts)
        return status

    def _stream_figures(self) -> List[Dict[str, Any]]:
        """
        What the metrics read of the TCP relays and UDP listeners (see
        L{ProxyMetrics}'s C{streams}).
        """
        rows: List[Dict[str, Any]] = []
        for f in self._stream_factories:
            if isinstance(f, UDPProxy):
                rows.append({"listener": f.listener, "protocol": "udp", "open": len(f.sessions),
                             "dropped": f.dropped, "refused": f.refused})
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

    def _relays(self, listener: Listener, config: ProxyConfig, filters,
                quota: Optional[Quota]) -> TCPRelayFactory:
        relays = TCPRelayFactory(
            self.reactor, listener.name, listener.upstream, self.forwarder.groups,
            config.timeouts, listener.max_connections, on_end=self._connection_ended,
            filters=filters, quota=quota)
        self._stream_factories.append(relays)
        return relays

    def _relay(self, listener: Listener, config: ProxyConfig, filters,
               quota: Optional[Quota]):
        """
        The factory of a C{tcp} listener: relays (judged by the listener's
        C{filters}, counted against C{quota}), behind a ClientHello reader
        when it has passthrough routes.
        """
        relays = self._relays(listener, config, filters, quota)
        if not listener.sni:
            return relays
        return SNIFactory(SNIRouter(listener.sni, listener.upstream), relays, None,
                          config.timeouts.request_head)

    def _passthrough(self, listener: Listener, terminate, config: ProxyConfig, filters,
                     quota: Optional[Quota]):
        """
        The factory of an HTTP listener with TLS and passthrough routes:
        the names they list are relayed (judged by the connection filters
        among the listener's C{filters}, counted against C{quota}), the
        others terminated.
        """
        relays = self._relays(listener, config, filters and filters.for_relays(), quota)
        factory = SNIFactory(SNIRouter(listener.sni), relays, terminate,
                             config.timeouts.request_head)
        if listener.name in self._tls:
            # Certificate reloads reach the terminating factory through it.
            _, tls, path = self._tls[listener.name]
            self._tls[listener.name] = (factory, tls, path)
        return factory

    def _listener_filters(self, listener: Listener, config: ProxyConfig):
        """
        The L{FilterChain} of C{listener}'s filters, or C{None}.
        """
        try:
            chain = build_chain(self.reactor, listener.filters,
                                f"listeners.{listener.name}.filters", connections=True,
                                stream="" if listener.protocol == "http" else listener.protocol)
        except ConfigError as e:
            raise ConfigError(e.path, e.problem, config.source) from None
        if chain is not None:
            self._filter_chains.append(chain)
        return chain

    def _terminate_tls(self, listener: Listener, config: ProxyConfig, options):
        """
        The factory of a listener with a C{tls} table: HTTP inside TLS
        terminated with the listener's certificates.
        """
        tls = listener.tls
        path = f"listeners.{listener.name}.tls"
        http_factory = self._factory(
            b"https", hsts=tls.hsts, identity_header=tls.client_subject_header,
            peer_identity=peer_subject, http2=True, **options,
        )
        try:
            factory, _ = wrap_listener_factory(self.reactor, tls, path, http_factory)
        except ConfigError as e:
            raise ConfigError(e.path, e.problem, config.source) from None
        self._tls[listener.name] = (factory, tls, path)
        return factory

    def reload_certificates(self) -> List[str]:
        """
        Read every TLS listener's certificates again: new handshakes use
        the new ones, open connections go on.  A listener whose new
        certificates are broken keeps its old ones.

        @return: One message per listener that kept its old certificates.
        """
        problems = []
        for name, (factory, tls, path) in self._tls.items():
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

    def _factory(self, scheme: bytes, **options) -> HTTPServerFactory:
        config = self.config
        options.setdefault("connections", self.connections)
        factory = HTTPServerFactory(
            self.reactor,
            self.forwarder,
            timeouts=config.timeouts,
            limits=config.limits,
            trusted_proxies=config.forwarding.trusted_proxies,
            via=config.forwarding.via,
            on_exchange_end=self._exchange_ended,
            scheme=scheme,
            in_flight=self.in_flight,
            **options,
        )
        self._http_factories.append(factory)
        return factory

    def _exchange_ended(self, x) -> None:
        if self.metrics is not None:
            self.metrics.observe(x)
        if self.access_log is not None:
            try:
                self.access_log(x)
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

    def _open_access_log(self, config: ProxyConfig) -> AccessLog:
        path = config.access_log.path
        try:
            if path == "stdout":
                stream = os.fdopen(os.dup(1), "ab", buffering=65536)
            else:
                stream = open(path, "ab", buffering=65536)
        except OSError as e:
            raise ConfigError("access_log.path", f"cannot open {path!r}: {e.strerror}", config.source)
        return AccessLog(stream, config.access_log.format, self.reactor)

    def startService(self) -> None:
        if self.config.access_log.path:
            self.access_log = self._open_access_log(self.config)
        super().startService()
        self._start_groups(self.forwarder)
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
            # The store (and what it holds) outlives reloads.
            cache = self.cache if self.cache is not None else _cache(new, self.reactor)
            locator, forwarder = _pipeline(new, self.reactor, cache)
            retire = self._change_listeners(new)
        except ConfigError as e:
            self.log.error("configuration reload refused, the running one stays: {problem}",
                           problem=str(e))
            return [str(e)]
        for name, group in forwarder.groups.items():
            old = self.forwarder.groups.get(name)
            if old is not None:
                group.take_state(old)
        old_forwarder, old_locator = self.forwarder, self.locator
        self.forwarder, self.locator, self.config = forwarder, locator, new
        self.cache = cache
        for factory in self._http_factories + self._stream_factories:
            factory.configure(new, forwarder)
        budget = file_budget()
        self.connections.set_limit(new.limits.max_connections or budget)
        self.in_flight.set_limit(new.limits.max_in_flight or budget)
        if self.running:
            self._start_groups(forwarder)
        retire()
        old_forwarder.close()
        close = getattr(old_locator, "close", None)
        if close is not None:
            close()
        if self.access_log is not None:
            self.reopen_access_log()
        self.log.info("configuration reloaded from {source}", source=source)
        return []

    def _change_listeners(self, new: ProxyConfig) -> Callable[[], None]:
        """
        Start the listeners that C{new} adds or whose endpoint it changes;
        a listener whose endpoint stays keeps its socket and takes its new
        settings (TLS, redirect, h2c) for new connections.

        @return: What to call once C{new} is in use: it stops the listeners
            C{new} removes or moves (their open connections go on).
        @raises ConfigError: when a new listener cannot be built or listen;
            then nothing has changed.
        """
        running = {listener.name: listener for listener in self.config.listeners}
        factories, streams = list(self._http_factories), list(self._stream_factories)
        chains = list(self._filter_chains)
        tls, https = dict(self._tls), self._https_factory
        started: List[_ListenerService] = []
        swaps: List[Tuple[_ListenerService, _ListenerService]] = []
        try:
            for listener in new.listeners:
                old = running.get(listener.name)
                if old == listener:
                    continue
                service = self._listener(listener, new)
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
            self._http_factories[:] = factories
            self._stream_factories[:] = streams
            self._filter_chains[:] = chains
            self._tls, self._https_factory = tls, https
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

        def retire() -> None:
            for service in retired:
                self.log.info("listener {name} on {endpoint} stops listening",
                              name=service.listener, endpoint=service.description)
                service.disownServiceParent()

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
        drained = gatherResults(
            [f.drain() for f in self._http_factories + self._stream_factories])
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
        for factory in self._http_factories + self._stream_factories:
            factory.abort_all()

    def _close_all(self) -> None:
        self.forwarder.close()
        for chain in self._filter_chains:
            chain.close()
        if self.cache is not None:
            self.cache.store.close()
        close = getattr(self.locator, "close", None)
        if close is not None:
            close()
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
            self.access_log = self._open_access_log(self.config)
        except ConfigError as e:
            self.log.error("cannot reopen the access log: {problem}", problem=e.problem)
            return
        try:
            old.close()
        except OSError as e:
            self._access_log_failed(e)
        self.log.info("access log reopened")
