# -*- test-case-name: tests.test_build -*-
"""
The one assembler: a L{ProxyConfig} turned into running objects.

A configuration is parsed once into frozen values (L{twistproxy.config});
this module is the only code that makes objects of them, in this order:

  1. the shared cache of the routes that cache (L{cache});
  2. the locator, the upstream groups (HTTP, TCP and UDP; L{make_group})
     and the L{Forwarder} with its routes and their filters
     (L{pipeline});
  3. each listener's endpoint (L{endpoint}) and protocol factory
     (L{ListenerBuilder}): HTTP, TLS termination, TCP relays, TLS
     passthrough, UDP, the DNS front, behind a PROXY header reader when
     asked;
  4. the admin API (L{admin}), the access log (L{open_access_log}),
     the TXT records set at run time (L{dns_texts}), the ACME
     certificates' shared store (L{acme_shared}), renewals and on-demand
     orders (L{ACMECertificates}).

Nothing here listens or starts a group, a health check or a log file
writer: that is the lifecycle's (L{twistproxy.service.ProxyService} starts
and stops what it is given).  So the same functions serve the service,
L{twistproxy.testing.MemoryProxy} (the production wiring on memory
transports), the workers' master (its admin listener), and L{validate},
which is what C{python -m twistproxy check} runs, on a memory reactor:
every mistake they find is a L{ConfigError} naming the file and the path.

Adding an HTTP listener option takes its declaration in the configuration,
its field in L{ServerSettings}, and one line here, in
L{ListenerBuilder.settings}, where the listener's values become the
settings its factory reads.
"""

from __future__ import annotations

import datetime
import os
import time
from dataclasses import replace
from functools import partial
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint

from twistproxy.accesslog import AccessLogWriter
from twistproxy.acme import store as acme_store
from twistproxy.acme.challenges import Challenges
from twistproxy.acme.ondemand import OnDemand
from twistproxy.acme.schedule import Renewal
from twistproxy.acme.shared import RedisKeys, SharedCertificates
from twistproxy.admission import Quota, quotas
from twistproxy.cache.runtime import HTTPCache, build_cache
from twistproxy.components import find_factory
from twistproxy.config import (
    ACME, Certificate, ConfigError, Listener, ProxyConfig, Timeouts, UpstreamGroup,
)
from twistproxy.config.parse import acme_certificates, acme_challenge_types, in_zones
from twistproxy.dns.server import DNSEndpoint, DNSFront
from twistproxy.dns.texts import RunTimeTexts
from twistproxy.dns.zone import TXTRecords
from twistproxy.filters.chain import FilterChain, build_chain
from twistproxy.forwarder import Forwarder
from twistproxy.http.client import UpstreamPool
from twistproxy.http.listener import HTTPServerFactory, ServerSettings
from twistproxy.interfaces import IDNSProviderFactory
from twistproxy.net import TrustedProxies
from twistproxy.proxyproto import ProxyHeaderFactory
from twistproxy.redis import parse_url
from twistproxy.stream.sni import SNIFactory, SNIRouter
from twistproxy.stream.tcp import TCPRelayFactory
from twistproxy.stream.udp import UDPEndpoint, UDPProxy
from twistproxy.tls import client_creator, peer_subject, wrap_listener_factory
from twistproxy.upstream.backend import Backend
from twistproxy.upstream.group import UpstreamGroupRuntime
from twistproxy.upstream.locators import build_locator


def _located(config: ProxyConfig, error: ConfigError) -> ConfigError:
    """
    C{error} naming C{config}'s file when it names none of its own.
    """
    return ConfigError(error.path, error.problem, error.source or config.source)


class _NoPool:
    def close(self) -> None:
        pass


_NO_POOL = _NoPool()


def make_group(reactor, config: UpstreamGroup, timeouts: Timeouts,
               **options) -> UpstreamGroupRuntime:
    """
    An upstream group whose HTTP backends get HTTP/1.1 connection pools
    (those of TCP and UDP groups get none: relayed connections and
    sessions are not pooled).

    @param options: C{locality} and C{locator}, passed to the group.
    """
    def make_pool(backend: Backend) -> UpstreamPool:
        if config.kind != "http":
            return _NO_POOL
        tls = None
        if backend.scheme == "https":
            tls = client_creator(config.tls, backend.host, f"upstreams.{config.name}.tls")
        return UpstreamPool(
            reactor, backend, timeouts, config.max_connections, config.max_idle,
            config.max_pending, tls, config.proxy_protocol,
        )

    return UpstreamGroupRuntime(config, make_pool, reactor=reactor, **options)


def pipeline(config: ProxyConfig, reactor,
             cache: Optional[HTTPCache] = None) -> Tuple[Any, Forwarder]:
    """
    The locator (or C{None}) and the forwarder, with its upstream groups
    and routes, of C{config}.

    @param cache: The shared cache, for the routes that cache.
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
        raise _located(config, e) from None
    for i, route in enumerate(config.routes):
        for key, name in route.upstreams:
            if name not in groups:
                raise ConfigError(f"routes[{i}].{key}", f"no upstream group named {name!r}",
                                  config.source)
    try:
        return locator, Forwarder(config.routes, groups, config.forwarding.via, reactor, cache)
    except ConfigError as e:
        raise ConfigError(e.path, e.problem, config.source) from None


def cache(config: ProxyConfig, reactor) -> Optional[HTTPCache]:
    """
    The shared cache of C{config}, or C{None} when no route caches.
    """
    try:
        return build_cache(reactor, config)
    except ConfigError as e:
        raise ConfigError(e.path, e.problem, config.source) from None


def dns_texts(config: ProxyConfig, reactor) -> RunTimeTexts:
    """
    The TXT records set at run time, shared through the C{[dns]} section's
    Redis when it names one.
    """
    url = config.dns.redis if config.dns is not None else ""
    if not url:
        return RunTimeTexts(reactor)
    try:
        return RunTimeTexts(reactor, parse_url(url, "dns.redis"))
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


def _server_endpoint(reactor, description: str, path: str, config: ProxyConfig):
    """
    The server endpoint of the string C{description}, found at C{path}.

    @raises ConfigError: when the string is refused.
    """
    try:
        return serverFromString(reactor, description)
    except Exception as e:
        raise ConfigError(path, _endpoint_problem(description, e), config.source)


def endpoint_string(listener: Listener) -> str:
    """
    The endpoint string a stream C{listener} listens with: its own, with
    what the listener's settings add to it (what the workers' master binds
    too).
    """
    return listener.endpoint + (f":backlog={listener.backlog}" if listener.backlog else "")


def endpoint(reactor, listener: Listener, config: ProxyConfig,
             inherited: Optional[Mapping[str, IStreamServerEndpoint]] = None):
    """
    Where C{listener} listens: the socket it inherited, else its endpoint
    string parsed (not listened on).

    @param inherited: Endpoints by listener name (a worker's sockets).
    @raises ConfigError: for an endpoint string that does not parse.
    """
    found = (inherited or {}).get(listener.name)
    if found is not None:
        return found
    path = f"listeners.{listener.name}.endpoint"
    if listener.protocol in ("udp", "dns"):
        # A dns listener's udp:PORT listens on UDP and TCP at that port.
        kind = UDPEndpoint if listener.protocol == "udp" else DNSEndpoint
        try:
            return kind(reactor, listener.endpoint)
        except Exception as e:
            raise ConfigError(path, _endpoint_problem(listener.endpoint, e), config.source)
    return _server_endpoint(reactor, endpoint_string(listener), path, config)


def admin(reactor, config: ProxyConfig, target, metrics=None):
    """
    The admin API's endpoint and site, or C{None} without an admin table.

    @param target: What the API reports on and acts on (a service, or a
        workers' master).
    @raises ConfigError: for an endpoint string that does not parse.
    """
    if config.admin is None:
        return None
    from twistproxy.admin import admin_site

    where = _server_endpoint(reactor, config.admin.endpoint, "admin.endpoint", config)
    return where, admin_site(target, config.admin, reactor, metrics)


def open_access_log(config: ProxyConfig, reactor) -> AccessLogWriter:
    """
    The access log C{config} asks for, its file opened for appending.

    @raises ConfigError: when the file cannot be opened.
    """
    path = config.access_log.path
    try:
        if path == "stdout":
            stream = os.fdopen(os.dup(1), "ab", buffering=65536)
        else:
            stream = open(path, "ab", buffering=65536)
    except OSError as e:
        raise ConfigError("access_log.path", f"cannot open {path!r}: {e.strerror}", config.source)
    return AccessLogWriter(stream, config.access_log.format, reactor)


class ListenerBuilder:
    """
    Builds the protocol factories of listeners, and keeps every one it
    built for the lifecycle: a replaced factory still serves its open
    connections (so it takes each new forwarder, is drained and aborted at
    shutdown), and its counters (rejected, dropped) stay in the metrics'
    sums, which must never go down.

    @ivar http_factories: Every L{HTTPServerFactory} built.
    @ivar stream_factories: Every TCP relay, UDP proxy and DNS front built.
    @ivar filter_chains: Every listener's L{FilterChain} (the routes'
        belong to the forwarder).
    @ivar tls: C{(factory, tls table, path)} by listener name, of the
        listeners that terminate TLS: what a certificate reload goes
        through.
    @ivar plain: The HTTP factory that listeners without options of their
        own share (C{ProxyService.factory}).
    @ivar connections: The process's client connection quota, set by
        C{[limits]} (whoever runs the factories changes it on reload).
    @ivar in_flight: The process's quota of requests in flight, likewise.
    """

    def __init__(self, reactor, config: ProxyConfig, forwarder: Forwarder, *,
                 on_exchange_end: Optional[Callable] = None,
                 on_connection_end: Optional[Callable] = None,
                 locator: Callable[[], Any] = lambda: None,
                 dns_texts: Optional[TXTRecords] = None,
                 challenges: Optional[Challenges] = None):
        """
        @param config: The configuration whose process-wide values (timeouts,
            limits, forwarding) the factories take.
        @param on_exchange_end: Called with each finished exchange.
        @param on_connection_end: Called with each finished TCP relay or
            UDP session.
        @param locator: Returns the locator in use (the DNS fronts locate
            their clients with it), or C{None}.
        @param dns_texts: The TXT records set at run time, which every DNS
            front answers beside its zones.
        @param challenges: The ACME HTTP-01 answers every HTTP factory
            serves before routing and the TLS-ALPN-01 certificates every
            TLS listener presents to validation handshakes, or C{None}.
        """
        self.reactor = reactor
        self.config = config
        self.forwarder = forwarder
        self.connections, self.in_flight = quotas(config.limits, reactor)
        self._on_exchange_end = on_exchange_end
        self._on_connection_end = on_connection_end
        self._locator = locator
        self._dns_texts = dns_texts
        self._challenges = challenges
        self.http_factories: List[HTTPServerFactory] = []
        self.stream_factories: List[Any] = []
        self.filter_chains: List[FilterChain] = []
        self.tls: Dict[str, Any] = {}
        # The names ordered on demand, served by every listener with ACME
        # certificates (set by the service when [acme.on_demand] is on).
        self.on_demand: Optional[OnDemand] = None
        self._https: Optional[HTTPServerFactory] = None
        self.plain = self._http(self.settings(b"http"))

    def use(self, config: ProxyConfig, forwarder: Forwarder) -> None:
        """
        Build what comes next from C{config} and C{forwarder} (a reload).
        """
        self.config, self.forwarder = config, forwarder

    def saved(self) -> Callable[[], None]:
        """
        @return: What undoes whatever is built from now on (a reload that
            fails half-way).
        """
        lists = [(kept, list(kept)) for kept in
                 (self.http_factories, self.stream_factories, self.filter_chains)]
        tls, https = dict(self.tls), self._https
        config, forwarder = self.config, self.forwarder

        def undo() -> None:
            for kept, before in lists:
                kept[:] = before
            self.tls, self._https = tls, https
            self.config, self.forwarder = config, forwarder

        return undo

    def settings(self, scheme: bytes, listener: Optional[Listener] = None) -> ServerSettings:
        """
        What an HTTP factory of C{listener} (or of none: the shared one)
        is set to: the process-wide values, and the listener's own.
        """
        config = self.config
        own: Dict[str, Any] = {}
        if listener is not None:
            own["escaped_slashes"] = listener.escaped_slashes
            if config.routes_by_listener:
                own["listener"] = listener.name
            if listener.tls is not None:
                own.update(hsts=listener.tls.hsts, http2=True,
                           identity_header=listener.tls.client_subject_header)
            elif listener.redirect_https:
                own["redirect_port"] = listener.https_port
            else:
                own["h2c"] = listener.h2c
        return ServerSettings(
            timeouts=config.timeouts, limits=config.limits,
            trusted_proxies=config.forwarding.trusted_proxies, via=config.forwarding.via,
            scheme=scheme, **own)

    def _http(self, settings: ServerSettings, **options) -> HTTPServerFactory:
        options.setdefault("connections", self.connections)
        factory = HTTPServerFactory(
            self.reactor, self.forwarder, settings, on_exchange_end=self._on_exchange_end,
            in_flight=self.in_flight, **options)
        factory.challenges = self._challenges
        self.http_factories.append(factory)
        return factory

    def filters(self, listener: Listener) -> Optional[FilterChain]:
        """
        The L{FilterChain} of C{listener}'s filters, or C{None}.
        """
        try:
            chain = build_chain(self.reactor, listener.filters,
                                f"listeners.{listener.name}.filters", connections=True,
                                stream="" if listener.protocol == "http" else listener.protocol)
        except ConfigError as e:
            raise ConfigError(e.path, e.problem, self.config.source) from None
        if chain is not None:
            self.filter_chains.append(chain)
        return chain

    def own_quota(self, listener: Listener) -> Optional[Quota]:
        """
        The quota C{listener}'s connections are counted against: its own
        (within the process's) when it has a C{max_connections}, none for
        UDP (sessions, not connections: C{max_sessions}), else the
        process's.  A DNS front counts no connections either.
        """
        if listener.protocol in ("udp", "dns"):
            return None
        if listener.protocol == "http" and listener.max_connections:
            return Quota(f"client connections on listener {listener.name}",
                         listener.max_connections, self.reactor, parent=self.connections)
        # A tcp listener's own max_connections is the relays' to count.
        return self.connections

    def http(self, listener: Listener, filters: Optional[FilterChain] = None,
             quota: Optional[Quota] = None) -> HTTPServerFactory:
        """
        The HTTP factory of an C{http} listener (inside its TLS, when it
        terminates TLS): the shared one when nothing sets it apart.
        """
        # Backends are told the client came over https: on a TLS endpoint,
        # or behind a load balancer that terminated TLS (tls_offloaded).
        tls_endpoint = (listener.tls_offloaded
                        or listener.endpoint.split(":", 1)[0] in _TLS_ENDPOINTS)
        options: Dict[str, Any] = {}
        if filters is not None:
            options["filters"] = filters
        if quota is not None and quota is not self.connections:
            options["connections"] = quota
        if listener.tls is not None:
            return self._http(self.settings(b"https", listener),
                              peer_identity=peer_subject, **options)
        if listener.redirect_https:
            return self._http(self.settings(b"http", listener), **options)
        scheme = b"https" if tls_endpoint else b"http"
        if options or self.settings(scheme, listener) != self.settings(scheme):
            # A factory of its own: its settings, filters or connection
            # count are not the other listeners'.
            return self._http(self.settings(scheme, listener), **options)
        if tls_endpoint:
            # Backends are told the client came over https.
            if self._https is None:
                self._https = self._http(self.settings(b"https"))
            return self._https
        return self.plain

    def factory(self, listener: Listener) -> Tuple[Any, Optional[Quota]]:
        """
        The protocol factory of C{listener}, and the quota whose fullness
        pauses accepting on it (or C{None}).

        @raises ConfigError: for bad filters or TLS settings.
        """
        filters = self.filters(listener)
        quota = self.own_quota(listener)
        if listener.protocol == "udp":
            factory = UDPProxy(
                self.reactor, listener.name, listener.upstream, self.forwarder.groups,
                self.config.timeouts, listener.max_sessions,
                on_end=self._on_connection_end, filters=filters)
            self.stream_factories.append(factory)
        elif listener.protocol == "dns":
            factory = DNSFront(self.reactor, listener.name, self.config.dns,
                               self.forwarder.groups, self.config.locality, self._locator,
                               texts=self._dns_texts)
            self.stream_factories.append(factory)
        elif listener.protocol == "tcp":
            factory = self._relays(listener, filters, quota)
            if listener.sni:
                factory = SNIFactory(SNIRouter(listener.sni, listener.upstream), factory, None,
                                     self.config.timeouts.request_head)
        else:
            factory = self.http(listener, filters, quota)
            if listener.tls is not None:
                factory = self._terminate_tls(listener, factory)
            if listener.sni:
                factory = self._passthrough(listener, factory, filters, quota)
        if listener.proxy_protocol:
            factory = ProxyHeaderFactory(
                factory, TrustedProxies(listener.proxy_protocol).__contains__,
                self.reactor, self.config.timeouts.request_head)
        return factory, quota

    def _relays(self, listener: Listener, filters, quota: Optional[Quota]) -> TCPRelayFactory:
        relays = TCPRelayFactory(
            self.reactor, listener.name, listener.upstream, self.forwarder.groups,
            self.config.timeouts, listener.max_connections, on_end=self._on_connection_end,
            filters=filters, quota=quota)
        self.stream_factories.append(relays)
        return relays

    def _terminate_tls(self, listener: Listener, http_factory: HTTPServerFactory):
        """
        C{http_factory} inside TLS terminated with the listener's
        certificates.
        """
        path = f"listeners.{listener.name}.tls"
        tls = listener.tls
        try:
            served = self._with_acme(listener.name, tls, path)
            factory, _ = wrap_listener_factory(
                self.reactor, served, path, http_factory,
                challenge=None if self._challenges is None else self._challenges.certificate)
        except ConfigError as e:
            raise ConfigError(e.path, e.problem, self.config.source) from None
        if tls.acme:
            factory.server_tls.store.unknown = self._seen
        self.tls[listener.name] = (factory, served, path)
        return factory

    def _acme_served(self, name: str) -> List[Tuple[str, Tuple[str, ...]]]:
        # The ACME certificates listener name serves: (path, names) of each.
        return [(path, names) for path, names, served_by in acme_certificates(
            self.config.listeners, self.config.routes) if name in served_by]

    def _with_acme(self, name: str, tls, path: str):
        """
        The TLS settings C{tls} of listener C{name} with its ACME
        certificates after the listed ones: the files the renewals write
        (its own C{tls.acme}'s, then those of the routes that apply on
        it), then those ordered on demand (with its own C{tls.acme}).
        """
        served = self._acme_served(name)
        if not served:
            return tls
        acme = self.config.acme
        now = datetime.datetime.fromtimestamp(time.time(), datetime.timezone.utc)
        managed = tuple(acme_store.ensure(acme, names, where, now) for where, names in served)
        ordered = self.on_demand.names if self.on_demand is not None and tls.acme else ()
        on_demand = tuple(Certificate(cert=acme_store.certificate_file(acme, (name,)))
                          for name in ordered)
        return replace(tls, certificates=tls.certificates + managed + on_demand)

    def _seen(self, server_name: bytes) -> None:
        # Through the builder: a reload may turn on-demand orders on or off.
        if self.on_demand is not None:
            self.on_demand.seen(server_name)

    def refresh_acme(self) -> None:
        """
        Have every TLS listener take the ACME certificates of the running
        configuration (writing stand-ins for new ones) and those ordered on
        demand so far (at their next certificate reload).
        """
        for listener in self.config.listeners:
            if listener.name in self.tls and listener.tls is not None:
                factory, _, path = self.tls[listener.name]
                self.tls[listener.name] = (
                    factory, self._with_acme(listener.name, listener.tls, path), path)

    def _passthrough(self, listener: Listener, terminate, filters, quota: Optional[Quota]):
        """
        The factory of an HTTP listener with TLS and passthrough routes:
        the names they list are relayed (judged by the connection filters
        among the listener's C{filters}, counted against C{quota}), the
        others terminated.
        """
        relays = self._relays(listener, filters and filters.for_relays(), quota)
        factory = SNIFactory(SNIRouter(listener.sni), relays, terminate,
                             self.config.timeouts.request_head)
        if listener.name in self.tls:
            # Certificate reloads reach the terminating factory through it.
            _, tls, path = self.tls[listener.name]
            self.tls[listener.name] = (factory, tls, path)
        return factory


class ACMECertificates:
    """
    The ACME certificates of a configuration: the renewal of each
    listener's (L{renewals}, not started) and, with C{[acme.on_demand]},
    the orders for names seen in SNI (L{on_demand}).  Each orders from
    C{config.acme}'s CA (HTTP-01 and TLS-ALPN-01 answers through C{challenges}, which is
    set whenever C{config} has C{[acme]}; DNS-01 as L{dns01_records} says), through
    C{shared} when given (L{acme_shared}), and calls C{installed} once a
    renewed certificate is stored.
    """

    def __init__(self, config: ProxyConfig, reactor, texts: RunTimeTexts,
                 challenges: Optional[Challenges], installed: Callable[[], Any],
                 shared: Optional[SharedCertificates] = None,
                 on_demand: Callable[[str], Any] = lambda name: None):
        """
        @param on_demand: Called with each name whose certificate was
            ordered on demand (or found stored), to serve and renew it.
        @raises ConfigError: At C{acme} when the C{acme} extra is not
            installed, at C{acme.ca} when that file cannot be read or
            holds no certificate, or as L{dns01_records}.
        """
        self.renewals: List[Renewal] = []
        self.on_demand: Optional[OnDemand] = None
        wanted = [names for _, names, _ in acme_certificates(config.listeners, config.routes)]
        if not wanted:
            return
        try:
            from twistproxy.acme.client import Issuer
        except ImportError as e:
            raise ConfigError("acme", f"needs the acme extra (pip install 'twistproxy[acme]'): "
                                      f"{e}", config.source) from None
        acme = config.acme
        try:
            self._issuer = Issuer(reactor, acme, challenges, *dns01_records(acme, reactor, texts),
                                  types=lambda name: acme_challenge_types(
                                      name, config.listeners, acme, config.dns))
        except ConfigError as e:
            raise ConfigError(e.path, e.problem, config.source) from None
        self._reactor, self._acme, self._shared = reactor, acme, shared
        self._installed = installed
        self.renewals = [self.renewal(names) for names in wanted]
        if acme.on_demand is not None:
            self.on_demand = OnDemand(reactor, acme, self._obtain, on_demand)

    def _obtain(self, names: Tuple[str, ...], forced: bool = False) -> Deferred:
        def issue() -> Deferred:
            return self._issuer.issue(names)

        if self._shared is None:
            return issue()
        return self._shared.obtain(names, issue, forced)

    def renewal(self, names: Tuple[str, ...]) -> Renewal:
        """
        The renewal of the certificate for C{names}, not started.
        """
        acme = self._acme
        return Renewal(self._reactor, names, lambda: acme_store.read_certificate(
            acme_store.certificate_file(acme, names)), partial(self._obtain, names),
            self._installed, acme.retry, window=self._issuer.renewal_window,
            force=partial(self._obtain, names, forced=True))


def dns01_records(acme: ACME, reactor, texts: RunTimeTexts) -> Tuple[
        Callable[[str, List[str]], Deferred], Callable[[str], Deferred]]:
    """
    Where the TXT records of DNS-01 challenges go: those of names in a zone
    of C{[acme.dns]} through its provider plugin
    (L{twistproxy.interfaces.IDNSProvider}), the others through the DNS
    front's run-time records (C{texts}).

    @return: The functions that set and remove them.
    @raises ConfigError: At C{acme.dns.provider} when no plugin has that
        name, or at C{acme.dns} when the provider refuses its options.
    """
    settings = acme.dns
    if settings is None:
        return texts.set, texts.remove
    factory = find_factory(IDNSProviderFactory, settings.provider, "acme.dns.provider",
                           "DNS provider")
    provider = factory.fromConfig(reactor, settings.options, "acme.dns")

    def set_txt(name: str, values: List[str]) -> Deferred:
        if in_zones(name, settings.zones):
            return provider.set_txt(name, values)
        return texts.set(name, values)

    def remove_txt(name: str) -> Deferred:
        if in_zones(name, settings.zones):
            return provider.remove_txt(name)
        return texts.remove(name)

    return set_txt, remove_txt


def acme_shared(config: ProxyConfig, reactor) -> Optional[SharedCertificates]:
    """
    The store the ACME certificates of C{config} share with other
    instances (not connected yet), or C{None} when C{[acme]} names none.
    """
    if config.acme is None or not config.acme.store:
        return None
    try:
        address = parse_url(config.acme.store, "acme.store")
    except ConfigError as e:
        raise ConfigError(e.path, e.problem, config.source) from None
    return SharedCertificates(reactor, config.acme, RedisKeys(reactor, address))


def validate(config: ProxyConfig) -> None:
    """
    Check everything about C{config} that can be checked without running
    it, with the assembler's own functions on a memory reactor (nothing
    listens, connects or starts): the cache store and its options, the
    locator, the upstream groups and their balancers and checks, the route
    targets and filters, every listener's endpoint string, filters and TLS
    settings, the admin endpoint, the DNS front's shared store URL and the
    ACME settings with the DNS provider's options (writing a stand-in
    certificate into the ACME storage when it holds none yet).

    @raises ConfigError: naming the file and the path of the first problem.
    """
    from twisted.internet.testing import MemoryReactorClock

    reactor = MemoryReactorClock()
    _, forwarder = pipeline(config, reactor, cache(config, reactor))
    listeners = ListenerBuilder(reactor, config, forwarder)
    for listener in config.listeners:
        endpoint(reactor, listener, config)
        listeners.factory(listener)
    admin(reactor, config, None)
    ACMECertificates(config, reactor, dns_texts(config, reactor), Challenges(), lambda: None,
                     acme_shared(config, reactor))
