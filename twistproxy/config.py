# -*- test-case-name: tests.test_config -*-
"""
Configuration: a TOML file parsed once into frozen value objects.

Everything the proxy does is decided by a L{ProxyConfig}.  It is built from a
TOML file by L{load} (or from a string by L{parse}), or directly by calling
the constructors below when embedding twistproxy in an application.  The
objects are immutable, so a running proxy can hold on to one while a reload
builds the next.

Parsing is strict: an unknown key, a value of the wrong type or an
inconsistent setting raises L{ConfigError}, whose message names the file, the
path of the setting inside it (C{upstreams.api.servers[2].url}) and what is
wrong.  Nothing is silently ignored.
"""

from __future__ import annotations

import datetime as _datetime
import difflib as _difflib
import hashlib as _hashlib
import ipaddress as _ipaddress
import json as _json
import os as _os
import re as _re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Collection, Dict, List, Mapping, Optional, Sequence, Tuple, TypeVar
from urllib.parse import urlsplit as _urlsplit

try:
    import tomllib as _toml
except ImportError:  # Python < 3.11
    import tomli as _toml  # type: ignore[no-redef]


class ConfigError(Exception):
    """
    A configuration is invalid.

    @ivar source: The file name (or C{'<string>'}), or C{None}.
    @ivar path: The dotted path of the offending setting inside the file,
        for example C{'upstreams.api.servers[2].url'}; empty for the file as
        a whole.
    @ivar problem: What is wrong, as a sentence fragment.
    """

    def __init__(self, path: str, problem: str, source: Optional[str] = None):
        self.source = source
        self.path = path
        self.problem = problem
        super().__init__(path, problem, source)

    def __str__(self) -> str:
        where = ": ".join(p for p in (self.source, self.path) if p)
        return f"{where}: {self.problem}" if where else self.problem


@dataclass(frozen=True)
class Server:
    """
    One backend server of an upstream group.

    @ivar url: C{http://host[:port]}; the port defaults to 80 (https: 443).
        Groups behind C{tcp} and C{udp} listeners use C{tcp://host:port}
        and C{udp://host:port}, with the port required.
    @ivar scheme: C{'http'}, C{'https'}, C{'tcp'} or C{'udp'}.
    @ivar host: Host name or IP address literal (IPv6 without brackets).
    @ivar port: TCP port.
    @ivar weight: Positive integer weight.
    """

    url: str
    scheme: str
    host: str
    port: int
    weight: int = 1
    region: str = ""
    zone: str = ""
    drain: bool = False


@dataclass(frozen=True)
class Discovery:
    """
    Backends found in DNS instead of listed: every address of a name (A
    and AAAA records) at one port, or the targets of an SRV record with
    their priorities, weights and ports.  Re-resolved every C{interval}
    seconds; the last good answer is kept while DNS fails.

    @ivar kind: C{'dns'} (addresses of C{name}) or C{'srv'}.
    @ivar name: The DNS name, e.g. C{'api.internal'} or
        C{'_http._tcp.api.internal'}.
    @ivar port: The port for C{'dns'}; C{0} for C{'srv'} (the record says).
    @ivar scheme: C{'http'}.
    @ivar weight: The weight of each address found (C{'dns'} only).
    """

    kind: str
    name: str
    port: int = 0
    scheme: str = "http"
    interval: float = 30.0
    weight: int = 1
    region: str = ""
    zone: str = ""


@dataclass(frozen=True)
class Resolver:
    """
    Where DNS discovery (L{Discovery}) sends its queries.

    @ivar nameservers: C{(address, port)} pairs of the name servers to ask,
        in order, e.g. C{(("127.0.0.1", 5353), ("::1", 53))}; the address
        is an IP address literal (IPv6 without brackets).  Empty: the
        system's configuration, the hosts file first, then the name
        servers of C{/etc/resolv.conf}.
    """

    nameservers: Tuple[Tuple[str, int], ...] = ()


@dataclass(frozen=True)
class HealthCheck:
    """
    An active health check of every server of a group.

    @ivar type: Name of an L{twistproxy.interfaces.IHealthCheckFactory}
        plugin (C{'http'}, C{'tcp'}) or a dotted path to one.
    @ivar interval: Seconds between two checks of a server.
    @ivar jitter: Up to this fraction of C{interval} is added at random to
        each wait, so that checks of many servers spread out.
    @ivar rise: Consecutive successes that bring a server back.
    @ivar fall: Consecutive failures that take it out.
    @ivar options: The check's own settings (C{path}, C{timeout} ...),
        checked by its factory.
    """

    type: str = "http"
    interval: float = 5.0
    jitter: float = 0.1
    rise: int = 2
    fall: int = 3
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outlier:
    """
    Passive outlier detection: servers that keep failing real requests are
    ejected for a while.

    @ivar consecutive_failures: Failures in a row that eject a server.
    @ivar base_ejection: Seconds of the first ejection; each further one
        doubles, up to C{max_ejection}.
    @ivar max_ejected_share: The largest share of a group ejected at once.
    @ivar on_5xx: Whether a 5xx response counts as a failure (connection
        errors, resets and timeouts always do).
    """

    consecutive_failures: int = 5
    base_ejection: float = 30.0
    max_ejection: float = 300.0
    max_ejected_share: float = 0.5
    on_5xx: bool = False


@dataclass(frozen=True)
class Sticky:
    """
    Cookie-based session stickiness.

    @ivar cookie: The cookie's name.
    @ivar secret: Key of the HMAC that makes the cookie's value opaque and
        unforgeable; set the same secret on every proxy that shares
        clients.  Empty: a hash of the server's name, still opaque and only
        ever naming a server of the group.
    @ivar max_age: Cookie lifetime in seconds, or C{0} for a session cookie.
    """

    cookie: str = "twistproxy_server"
    secret: str = ""
    max_age: int = 0
    path: str = "/"
    secure: bool = False


@dataclass(frozen=True)
class UpstreamTLS:
    """
    How the proxy talks TLS to a group's C{https://} servers.  The
    server's certificate is always verified (service_identity), against the
    system's trusted CAs or C{ca}; there is no way to turn that off.

    @ivar ca: A PEM file of CA certificates to trust instead of the
        system's, or C{''}.
    @ivar client_cert: A PEM file with a client certificate (and its key,
        unless C{client_key}) to present to the servers, or C{''}.
    @ivar client_key: A PEM file with the client certificate's key, or C{''}.
    @ivar server_name: The name sent in SNI and expected in the servers'
        certificates, when it is not the host of their URLs.
    """

    ca: str = ""
    client_cert: str = ""
    client_key: str = ""
    server_name: str = ""


@dataclass(frozen=True)
class UpstreamGroup:
    """
    A named set of interchangeable backend servers.

    @ivar balancer: Name of an L{twistproxy.interfaces.IBalancerFactory}
        plugin, or a dotted path to one.
    @ivar balancer_options: Settings passed to the balancer factory.
    @ivar max_connections: Most connections open to each server at once;
        further requests wait for one to become free.
    @ivar max_idle: Most idle keep-alive connections kept per server.
    @ivar max_pending: Most requests waiting for a connection to one
        server; beyond, an immediate 503 (circuit breaking).
    @ivar max_requests: Most requests in flight to the whole group; beyond,
        an immediate 503.  0: no limit.
    @ivar retries: How many times a failed request may be sent to another
        server (only when it is safe: the connection failed, or an
        idempotent request's server reset before answering).
    @ivar retry_budget: Retries may add at most this share of the requests
        in flight to the group.
    @ivar slow_start: Seconds over which a server that comes back ramps up
        to its full weight; 0 disables.
    @ivar health: The active health check, or C{None}.
    @ivar outlier: Passive outlier detection, or C{None}.
    @ivar sticky: Cookie stickiness, or C{None}.
    @ivar discovery: Servers found in DNS, in addition to C{servers}.
    @ivar tls: TLS settings for C{https://} servers.
    @ivar proxy_protocol: C{'v1'} or C{'v2'} to open every connection to
        the servers with a PROXY protocol header naming the client, or
        C{''} for none.
    """

    name: str
    servers: Tuple[Server, ...]
    balancer: str = "round_robin"
    balancer_options: Mapping[str, Any] = field(default_factory=dict)
    max_connections: int = 256
    max_idle: int = 256
    max_pending: int = 256
    max_requests: int = 0
    retries: int = 1
    retry_budget: float = 0.2
    slow_start: float = 0.0
    health: Optional[HealthCheck] = None
    outlier: Optional[Outlier] = None
    sticky: Optional[Sticky] = None
    discovery: Tuple[Discovery, ...] = ()
    tls: UpstreamTLS = UpstreamTLS()
    proxy_protocol: str = ""

    @property
    def kind(self) -> str:
        """
        C{'http'} for groups of C{http://} and C{https://} servers (and of
        servers found in DNS only), C{'tcp'} or C{'udp'} for the others.
        """
        for server in self.servers:
            return _KIND[server.scheme]
        return "http"


@dataclass(frozen=True)
class HeaderRules:
    """
    Header edits applied to a request before it is forwarded, or to a
    response before it is returned.  Applied in the order remove, set, add.

    @ivar remove: Field names to delete (case-insensitive).
    @ivar set: (name, value) pairs replacing every existing field of that name.
    @ivar add: (name, value) pairs appended, keeping existing fields.
    """

    remove: Tuple[str, ...] = ()
    set: Tuple[Tuple[str, str], ...] = ()
    add: Tuple[Tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Filter:
    """
    One filter of a listener or a route (see L{twistproxy.filters}).

    @ivar name: The filter factory's name (C{'rate_limit'}) or the dotted
        path of a factory object.
    @ivar options: The filter's other settings, checked by its factory.
    """

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RouteCache:
    """
    The shared HTTP cache on one route (see docs/caching.rst).

    @ivar enabled: Whether responses of this route are cached.
    @ivar key: The parts of the request URI the cache key is made of,
        among C{scheme}, C{host}, C{path} and C{query}.
    @ivar key_headers: Request field names (lower-cased) added to the key.
    @ivar default_ttl: Seconds of freshness for cacheable responses that
        give no explicit freshness and no C{Last-Modified}; 0 for none.
    @ivar max_ttl: The longest freshness any response gets, 0 for no limit.
    @ivar client_no_cache: C{'honour'} the client's C{no-cache} and
        C{max-age=0} (validate with the origin), or C{'ignore'} them.
    @ivar max_object_size: Responses larger than this are passed on but
        not stored.
    @ivar methods: The methods whose responses may be stored: C{GET}
        always; C{POST} only when listed (RFC 9110 9.3.3).
    @ivar lock_timeout: How long requests for a URL that is already being
        fetched wait for that response before going to the origin
        themselves.
    @ivar set_cookie: What becomes of a response with C{Set-Cookie}:
        C{'pass'}ed on and not stored, or stored with the field
        C{'strip'}ped from what is kept.
    @ivar stale_if_error: How long past its freshness a stored response
        may be served when the origin cannot be reached (RFC 5861
        C{stale-if-error} for every response that allows serving stale);
        0 for never.
    @ivar stale_on_5xx: Whether C{stale_if_error} also covers the
        origin's 5xx answers.
    """

    enabled: bool = True
    key: Tuple[str, ...] = ("scheme", "host", "path", "query")
    key_headers: Tuple[str, ...] = ()
    default_ttl: float = 0.0
    max_ttl: float = 0.0
    client_no_cache: str = "honour"
    max_object_size: int = 1024 * 1024
    methods: Tuple[str, ...] = ("GET", "HEAD")
    lock_timeout: float = 5.0
    set_cookie: str = "pass"
    stale_if_error: float = 3600.0
    stale_on_5xx: bool = False


@dataclass(frozen=True)
class Route:
    """
    Which requests go to which upstream group.  Routes are tried in order and
    the first that matches wins; a route with no C{hosts}, no C{path_prefix}
    and no C{methods} matches everything (the default route), so it may only
    be the last one.

    @ivar hosts: Exact host names (C{'example.com'}) or wildcards
        (C{'*.example.com'}, which matches C{'a.example.com'} and
        C{'a.b.example.com'} but not C{'example.com'}), lower-cased, no port.
        Empty matches any host.
    @ivar path_prefix: The request path must start with this; C{'/'} matches
        every path.
    @ivar methods: Upper-case method names; empty matches any method.
    @ivar upstream: Name of the L{UpstreamGroup}.
    @ivar preserve_host: Forward the client's Host header (C{True}), or set
        Host to the chosen server's C{host:port} (C{False}).
    @ivar filters: The route's filters, in order, run after routing.
    @ivar allow_trace: Forward C{TRACE} requests; by default they are
        answered 405 (a TRACE echoes the request, credentials included).
    """

    upstream: str
    name: str = ""
    hosts: Tuple[str, ...] = ()
    path_prefix: str = "/"
    methods: Tuple[str, ...] = ()
    preserve_host: bool = True
    request_headers: HeaderRules = HeaderRules()
    response_headers: HeaderRules = HeaderRules()
    filters: Tuple[Filter, ...] = ()
    cache: Optional[RouteCache] = None
    allow_trace: bool = False


@dataclass(frozen=True)
class Certificate:
    """
    One certificate a TLS listener can present.

    @ivar cert: A PEM file with the certificate and its chain (and the
        private key, when C{key} is empty).
    @ivar key: A PEM file with the private key, or C{''}.
    """

    cert: str
    key: str = ""


@dataclass(frozen=True)
class ListenerTLS:
    """
    TLS termination on a listener.  The certificate for each connection is
    chosen by SNI among the names in the certificates' subjectAltName:
    exact names first, then wildcards, then C{default}.

    @ivar certificates: The certificates, in order; a directory stands for
        every C{*.pem} file in it (each holding its key).
    @ivar default: Index in C{certificates} of the certificate for
        clients that send no name, or one no certificate has.
    @ivar min_version: C{'1.2'} or C{'1.3'}.
    @ivar ciphers: An OpenSSL cipher list for TLS 1.2, or C{''} for the
        built-in modern list.
    @ivar client_ca: A PEM file of CAs: when set, clients must present a
        certificate signed by one of them (mutual TLS).
    @ivar client_subject_header: The request field in which the verified
        client certificate's subject is passed to backends (and which is
        removed from what clients send).
    @ivar hsts: C{max-age} of a C{Strict-Transport-Security} field added to
        responses, or C{0} for none.
    @ivar handshake_timeout: Seconds a client has to complete its handshake.
    """

    certificates: Tuple[Certificate, ...]
    default: int = 0
    min_version: str = "1.2"
    ciphers: str = ""
    client_ca: str = ""
    client_subject_header: str = "X-Client-Subject"
    hsts: int = 0
    handshake_timeout: float = 10.0


@dataclass(frozen=True)
class Listener:
    """
    @ivar name: The listener's name, used in logs.
    @ivar endpoint: A Twisted server endpoint string, e.g. C{'tcp:8080'}.
    @ivar tls: TLS termination, or C{None} for plain HTTP.
    @ivar redirect_https: Answer every request on this plain listener with
        a 308 redirect to the same URL over https.
    @ivar https_port: The port in those redirects (443 is left out).
    @ivar h2c: On a plain listener, speak HTTP/2 to clients that open with
        its connection preface (prior knowledge).  TLS listeners always
        offer HTTP/2 by ALPN.
    @ivar protocol: C{'http'}, C{'tcp'} (every connection relayed byte
        for byte to a server of C{upstream}) or C{'udp'} (datagrams relayed
        per client address and port).
    @ivar upstream: The upstream group of a C{tcp} or C{udp} listener (on a
        C{tcp} listener with C{sni} routes: the group of the connections
        that no route matches), or C{''}.
    @ivar sni: TLS passthrough routes: connections whose ClientHello names
        one of a route's hosts are relayed, still encrypted, to its group.
    @ivar proxy_protocol: CIDRs of the peers (load balancers) that must
        open their connections with a PROXY protocol header, v1 or v2; the
        address it names is then the client's.  Empty: no PROXY protocol.
    @ivar max_connections: Most client connections open on this listener
        at once (within the global L{Limits.max_connections}); C{0} means
        only the global limit applies.  An HTTP listener stops accepting
        while it is full; a C{tcp} listener closes further connections.
    @ivar max_sessions: On a C{udp} listener, the most client sessions at
        once (datagrams from further clients are dropped).
    @ivar filters: The listener's filters, in order, run before routing.
    @ivar escaped_slashes: What C{%2F} and C{%5C} in request paths do
        (L{twistproxy.http.paths}): C{'keep'} (forwarded as sent; routes
        and rules read them as C{/}), C{'decode'} (the backend receives the
        normalised path, with them decoded) or C{'reject'} (400).
    """

    name: str
    endpoint: str
    tls: Optional[ListenerTLS] = None
    redirect_https: bool = False
    https_port: int = 443
    h2c: bool = False
    protocol: str = "http"
    upstream: str = ""
    sni: Tuple["SNIRoute", ...] = ()
    proxy_protocol: Tuple[str, ...] = ()
    max_connections: int = 0
    max_sessions: int = 10000
    filters: Tuple[Filter, ...] = ()
    escaped_slashes: str = "keep"


@dataclass(frozen=True)
class SNIRoute:
    """
    A TLS passthrough route: TLS connections for these server names are
    relayed to C{upstream} without being decrypted.

    @ivar hosts: Exact names (C{'db.example.com'}) or wildcards
        (C{'*.example.com'}, any name below C{example.com}), lower-cased.
    @ivar upstream: The name of a group of C{tcp://} servers.
    """

    hosts: Tuple[str, ...]
    upstream: str


@dataclass(frozen=True)
class Timeouts:
    """
    Every wait the proxy does, in seconds (floats greater than zero).

    @ivar connect: To open a connection to a backend.
    @ivar upstream_response: From the moment the request has been sent until
        the response head arrives, and between two reads of a response body.
    @ivar idle: A downstream keep-alive connection waiting for its next request.
    @ivar request_head: To receive a whole request head once it has started
        (and the first one, from the moment a client connects).
    @ivar request_body: Between two reads of a request body.
    @ivar upstream_idle: An idle pooled connection to a backend is closed
        after this long.
    @ivar tcp_idle: A relayed TCP connection with no byte in either
        direction is closed after this long.
    @ivar udp_idle: A UDP session with no datagram in either direction
        ends after this long.
    @ivar send: How long a client's send buffer may stay full (the client
        does not read what the proxy sends) before its connection is cut.
    """

    connect: float = 5.0
    upstream_response: float = 60.0
    idle: float = 60.0
    request_head: float = 10.0
    request_body: float = 60.0
    upstream_idle: float = 30.0
    tcp_idle: float = 600.0
    udp_idle: float = 30.0
    send: float = 60.0


@dataclass(frozen=True)
class Limits:
    """
    @ivar max_head_size: Bytes in a request head (request line and fields);
        above it the answer is 431 (414 when the request line alone is too long).
    @ivar max_header_count: Header fields in a request; above it, 431.
    @ivar max_body_size: Bytes in a request body; above it, 413.  0 means
        no limit.
    @ivar max_uri_length: Bytes in a request target; above it, 414.
    @ivar max_requests_per_connection: Requests served on one client
        connection (HTTP/1.1 keep-alive, or HTTP/2 streams) before the proxy
        closes it gracefully; 0 means no limit.
    @ivar max_connections: Client connections open at once over all
        listeners; beyond it the listeners stop accepting until some close.
        0 means derived from the open-file limit
        (L{twistproxy.admission.file_budget}).
    @ivar max_in_flight: Requests being forwarded at once; beyond it new
        requests are answered 503 at once.  0 means derived from the
        open-file limit, as for C{max_connections}.
    @ivar min_body_rate: Bytes per second a request body must average:
        each read then extends the body timeout only by the time its bytes
        earn at this rate (never beyond C{timeouts.request_body}).  0
        means none: the body timeout runs between two reads.
    """

    max_head_size: int = 65536
    max_header_count: int = 100
    max_body_size: int = 1 << 30
    max_uri_length: int = 8192
    max_requests_per_connection: int = 1000
    max_connections: int = 0
    max_in_flight: int = 0
    min_body_rate: int = 0


@dataclass(frozen=True)
class Forwarding:
    """
    How the proxy describes itself and the client to backends.

    @ivar trusted_proxies: CIDRs (C{'10.0.0.0/8'}, C{'::1/128'}) of peers
        whose C{Forwarded} and C{X-Forwarded-*} fields are extended; from any
        other peer those fields are replaced.
    @ivar via: The pseudonym used in the C{Via} field, or C{''} to not add one.
    """

    trusted_proxies: Tuple[str, ...] = ()
    via: str = "twistproxy"


@dataclass(frozen=True)
class AccessLog:
    """
    @ivar path: A file to append to, C{'stdout'}, or C{''} for no access log.
    @ivar format: C{'combined'} or C{'json'}.
    @ivar max_size: Rotate the file once it has this many bytes (C{0}:
        never; rotate with C{SIGUSR1} then).
    @ivar keep: How many rotated files to keep (C{path.1} the newest).
    """

    path: str = "stdout"
    format: str = "combined"
    max_size: int = 0
    keep: int = 5


@dataclass(frozen=True)
class Locator:
    """
    How clients are placed in a region and zone.

    @ivar type: Name of an L{twistproxy.interfaces.ILocatorFactory} plugin
        (C{'cidr'}, C{'header'}, C{'maxmind'}) or a dotted path to one.
    @ivar options: Its own settings, checked by its factory.
    """

    type: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Locality:
    """
    @ivar regions: Regions in order of preference for clients whose own
        region has no available server (and for clients not located).
    @ivar overprovisioning: How much a region's healthy share is trusted:
        a region keeps all its traffic while at least 1/overprovisioning of
        its weight is available, and spills over gradually below.
    """

    regions: Tuple[str, ...] = ()
    overprovisioning: float = 1.4


@dataclass(frozen=True)
class Admin:
    """
    The admin API and the Prometheus metrics, on a listener of their own.

    @ivar endpoint: A server endpoint string; loopback by default.
    @ivar token: When set, every admin request must carry
        C{Authorization: Bearer <token>}.
    """

    endpoint: str = "tcp:9901:interface=127.0.0.1"
    token: str = ""


@dataclass(frozen=True)
class Cache:
    """
    The shared HTTP cache's store and the settings every route shares.

    @ivar store: The name of an L{twistproxy.interfaces.ICacheStoreFactory}
        (C{'memory'}, C{'redis'}) or a dotted path to one.
    @ivar options: The store's own settings (C{size}, C{url}, ...).
    @ivar name: How the cache names itself in C{Cache-Status}.
    @ivar targeted_header: A response field (lower-cased) meant for this
        cache only, read before C{CDN-Cache-Control} and C{Cache-Control}
        (RFC 9213) and not passed on; C{''} for none.
    @ivar purge_from: CIDRs of the peers allowed to send C{PURGE}; empty
        refuses C{PURGE} to everyone.
    """

    store: str = "memory"
    options: Mapping[str, Any] = field(default_factory=dict)
    name: str = "twistproxy"
    targeted_header: str = ""
    purge_from: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Shutdown:
    """
    @ivar drain: Seconds that requests in flight get to finish after
        SIGTERM, before the proxy exits anyway.
    """

    drain: float = 30.0


@dataclass(frozen=True)
class ProxyConfig:
    """
    A whole proxy configuration.

    @ivar digest: C{'sha256:'} and the hex SHA-256 of the bytes L{load}
        read it from (what the admin API's C{/status} shows), or C{''}.
    """

    listeners: Tuple[Listener, ...]
    upstreams: Mapping[str, UpstreamGroup]
    routes: Tuple[Route, ...]
    timeouts: Timeouts = Timeouts()
    limits: Limits = Limits()
    forwarding: Forwarding = Forwarding()
    access_log: AccessLog = AccessLog()
    locator: Optional[Locator] = None
    locality: Locality = Locality()
    admin: Optional[Admin] = None
    shutdown: Shutdown = Shutdown()
    cache: Cache = Cache()
    resolver: Resolver = Resolver()
    source: Optional[str] = None
    workers: int = 1
    digest: str = field(default="", compare=False)


# ---------------------------------------------------------------------------
# Parsing
#
# Each _parse_* function takes the raw value that tomllib produced and the
# path of that value inside the file, and either returns a value object or
# raises ConfigError(path, problem).  parse() adds the source file name, so
# the helpers never need to know it.
# ---------------------------------------------------------------------------

_T = TypeVar("_T")

# RFC 9110 section 5.6.2: token = 1*tchar.  Field names and methods are tokens.
_TOKEN = _re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")


def is_token(value: str) -> bool:
    """
    Whether C{value} is an HTTP token (RFC 9110 5.6.2): a method, a field
    name, a cookie name.  For plugins that check their own options.
    """
    return _TOKEN.match(value) is not None
# Listener and upstream group names appear in logs and metrics labels, so
# they are kept to characters that need no quoting anywhere.
_NAME = _re.compile(r"[A-Za-z0-9_.\-]+\Z")
# A key that TOML accepts without quotes; any other key is shown quoted in a
# path, so that the path stays unambiguous ("upstreams."api.v2".servers").
_BARE_KEY = _re.compile(r"[A-Za-z0-9_\-]+\Z")
# One label of a host name: letters, digits, '-' and '_' (the underscore is
# not valid in host names but common in internal DNS, so it is tolerated).
_HOST_LABEL = _re.compile(r"[a-z0-9_\-]+\Z")
_LABEL = _re.compile(r"[A-Za-z0-9_.\-]+\Z").match
_DNS_LABEL = _re.compile(r"[A-Za-z0-9_\-]+\Z").match
_SIZE = _re.compile(r"([0-9]+)([kmg]?)\Z", _re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}

_ACCESS_LOG_FORMATS = ("combined", "json")
# Server URL schemes, and the kind of listener a group of them serves.
_KIND = {"http": "http", "https": "http", "tcp": "tcp", "udp": "udp"}
_PROTOCOLS = ("http", "tcp", "udp")
_PROXY_PROTOCOL_VERSIONS = ("v1", "v2")


def key_path(parent: str, key: str) -> str:
    """
    The path of C{key} inside the table at C{parent}, quoted as TOML would
    when it is not a bare key (C{'locator.networks."10.0.0.0/8"'}).  For
    plugin factories that check their own options.
    """
    if not _BARE_KEY.match(key):
        key = _json.dumps(key)
    return f"{parent}.{key}" if parent else key


_key = key_path


def is_label(value: str) -> bool:
    """
    Whether C{value} is a valid non-empty region or zone name: letters,
    digits, C{'.'}, C{'_'} and C{'-'}.  Locators use it so that they cannot
    produce a name that no backend could have.
    """
    return _LABEL(value) is not None


def _index(parent: str, i: int) -> str:
    """
    The path of item C{i} of the array at C{parent}.
    """
    return f"{parent}[{i}]"


def describe_value(value: object) -> str:
    """
    Name the TOML type of C{value} for an error message: C{"an integer"},
    C{"a table"} ...  For plugin factories that check their own options.
    """
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (_datetime.date, _datetime.time)):
        return "a date/time"
    return type(value).__name__  # pragma: no cover


def _wrong_type(path: str, expected: str, value: object) -> ConfigError:
    return ConfigError(path, f"must be {expected}, not {describe_value(value)}")


def _table(value: object, path: str, known: Tuple[str, ...]) -> Dict[str, Any]:
    """
    Check that C{value} is a table whose keys are all in C{known}.
    """
    if not isinstance(value, dict):
        raise _wrong_type(path, "a table", value)
    for key in value:
        if key not in known:
            raise ConfigError(_key(path, key), f"unknown key {key!r}{did_you_mean(key, known)}")
    return value


def did_you_mean(key: str, known: Collection[str]) -> str:
    """
    The end of an "unknown key" message: the known keys that C{key} may
    have meant, as C{" (did you mean 'path_prefix'?)"}, or C{""} when none
    is near.  For plugin factories that check their own options.

    A known key is near when it is spelt nearly the same (C{'wieght'}:
    C{'weight'}), or when C{key}, three characters or more, begins it or
    one of its words (C{'path'} and C{'prefix'}: C{'path_prefix'};
    C{'budget'}: C{'retry_budget'}).  At most three are named, the closest
    spellings first.
    """
    names = [str(name) for name in known]
    near = _difflib.get_close_matches(key, names, n=3)
    if len(key) >= 3:
        start = key.lower()
        near += [
            name for name in names
            if name not in near
            and any(word.startswith(start) for word in [name] + _re.split(r"[_\-]", name))
        ]
    if not near:
        return ""
    quoted = [repr(name) for name in near[:3]]
    if len(quoted) > 1:
        quoted[-2:] = [f"{quoted[-2]} or {quoted[-1]}"]
    return f" (did you mean {', '.join(quoted)}?)"


def _string(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise _wrong_type(path, "a string", value)
    return value


def _boolean(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise _wrong_type(path, "a boolean (true or false)", value)
    return value


def _integer(value: object, path: str, minimum: int) -> int:
    # bool is a subclass of int: "max_idle = true" must not mean 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(path, "an integer", value)
    if value < minimum:
        raise ConfigError(path, f"must be at least {minimum} (got {value})")
    return value


def _seconds(value: object, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _wrong_type(path, "a number of seconds", value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(path, f"must be a finite number of seconds (got {value})")
    if value <= 0:
        raise ConfigError(path, f"must be greater than 0 (got {value})")
    return float(value)


def _size(value: object, path: str, minimum: int) -> int:
    """
    A byte count: an integer, or a string of digits with an optional binary
    suffix C{k}, C{m} or C{g} (C{"64k"} is 65536).
    """
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match is None:
            raise ConfigError(
                path,
                f"must be a number of bytes or a size like \"64k\", \"10m\" "
                f"or \"1g\" (got {value!r})",
            )
        value = int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    elif isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(path, "a number of bytes or a size string like \"64k\"", value)
    if value < minimum:
        raise ConfigError(path, f"must be at least {minimum} bytes (got {value})")
    return value


def _array(value: object, path: str) -> List[Any]:
    if not isinstance(value, list):
        raise _wrong_type(path, "an array", value)
    return value


def _strings(value: object, path: str, check: Callable[[str, str], _T]) -> Tuple[_T, ...]:
    """
    An array of strings, each passed through C{check(string, path)}.
    """
    result = []
    for i, item in enumerate(_array(value, path)):
        item_path = _index(path, i)
        result.append(check(_string(item, item_path), item_path))
    return tuple(result)


def _name(value: str, path: str, what: str) -> str:
    if not _NAME.match(value):
        raise ConfigError(
            path,
            f"invalid {what} name {value!r}: use only letters, digits, "
            f"'_', '.' and '-'",
        )
    return value


def _token(value: str, path: str, what: str) -> str:
    if not _TOKEN.match(value):
        raise ConfigError(path, f"{what} {value!r} is not a valid HTTP token")
    return value


def _field_value(value: object, path: str) -> str:
    value = _string(value, path)
    if any(c in value for c in "\r\n\0"):
        raise ConfigError(path, "header value must not contain CR, LF or NUL")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ConfigError(
            path, "header value must be ASCII (or Latin-1): HTTP/1.1 carries bytes"
        ) from None
    return value


def header_rules(value: object, path: str) -> HeaderRules:
    """
    Read a table of header edits (C{remove}, C{set}, C{add}), as routes
    and the C{headers} filter have them.
    """
    rules = _table(value, path, ("remove", "set", "add"))
    remove: Tuple[str, ...] = ()
    if "remove" in rules:
        remove = _strings(
            rules["remove"],
            _key(path, "remove"),
            lambda name, p: _token(name, p, "header name"),
        )
    pairs = {}
    for kind in ("set", "add"):
        kind_path = _key(path, kind)
        table = rules.get(kind, {})
        if not isinstance(table, dict):
            raise _wrong_type(kind_path, "a table of header names to values", table)
        seen: Dict[str, str] = {}
        result = []
        for name, field_value in table.items():
            name_path = _key(kind_path, name)
            _token(name, name_path, "header name")
            folded = name.lower()
            if folded in seen:
                raise ConfigError(
                    name_path,
                    f"header {name!r} is listed twice (as {seen[folded]!r}); "
                    f"header names are case-insensitive",
                )
            seen[folded] = name
            result.append((name, _field_value(field_value, name_path)))
        pairs[kind] = tuple(result)
    return HeaderRules(remove=remove, set=pairs["set"], add=pairs["add"])


def _is_ip(host: str, kind: Callable[[str], Any] = _ipaddress.ip_address) -> bool:
    try:
        kind(host)
    except ValueError:
        return False
    return True


def _is_ipv6(host: str) -> bool:
    return _is_ip(host, _ipaddress.IPv6Address)


def _host_name(host: str, path: str, allow_wildcard: bool) -> str:
    """
    Check a DNS name or IPv4 address (already lower-cased).
    """
    labels = host.split(".")
    if allow_wildcard and labels[0] == "*":
        if len(labels) < 2:
            raise ConfigError(
                path,
                f"invalid host {host!r}: a wildcard needs a domain after it, "
                f"as in '*.example.com'",
            )
        labels = labels[1:]
    for label in labels:
        if not label:
            raise ConfigError(path, f"invalid host {host!r}: empty label between dots")
        if "*" in label:
            if not allow_wildcard:
                raise ConfigError(
                    path, f"invalid host {host!r}: a server cannot be a wildcard"
                )
            raise ConfigError(
                path,
                f"invalid host {host!r}: '*' is only allowed as the whole "
                f"first label, as in '*.example.com'",
            )
        if not _HOST_LABEL.match(label):
            raise ConfigError(
                path,
                f"invalid host {host!r}: only letters, digits, '-', '_' and "
                f"'.' are allowed",
            )
    return host


def _route_host(value: str, path: str) -> str:
    """
    A host of a route: a DNS name, a leading-label wildcard, an IPv4 address
    or a bracketed IPv6 address, matched against the host part of the
    request's Host field.
    """
    if not value:
        raise ConfigError(path, "host must not be empty")
    if any(c.isspace() for c in value):
        raise ConfigError(path, f"invalid host {value!r}: must not contain whitespace")
    host = value.lower()
    if host.startswith("["):
        if _re.search(r"\]:[0-9]*\Z", host):
            raise ConfigError(
                path,
                f"invalid host {value!r}: a route matches host names without a "
                f"port; remove the port",
            )
        if not (host.endswith("]") and _is_ipv6(host[1:-1])):
            raise ConfigError(path, f"invalid host {value!r}: not an IPv6 address")
        return host
    if ":" in host:
        if _is_ipv6(host):
            raise ConfigError(
                path,
                f"invalid host {value!r}: write an IPv6 address in brackets, "
                f"as in '[::1]'",
            )
        raise ConfigError(
            path,
            f"invalid host {value!r}: a route matches host names without a "
            f"port; remove the port",
        )
    return _host_name(host, path, allow_wildcard=True)


def _server_url(value: str, path: str) -> Tuple[str, str, str, int]:
    """
    Split a backend URL into (canonical url, scheme, host, port).

    The canonical URL is lower-cased and has no trailing C{/}; an explicit
    port is kept even when it is the scheme's default.
    """
    lowered = value.lower()
    for scheme in _KIND:
        if lowered.startswith(scheme + "://"):
            break
    else:
        raise ConfigError(path, "must be an http:// or https:// URL")
    if any(c.isspace() or ord(c) < 32 or c == "\x7f" for c in value):
        raise ConfigError(
            path, f"{value!r} must not contain whitespace or control characters"
        )
    authority = _re.split(r"[/?#]", value[len(scheme) + 3 :], maxsplit=1)[0]
    if authority.count(":") > 1 and not authority.startswith("["):
        raise ConfigError(
            path,
            f"write the IPv6 address in {value!r} in brackets, as in "
            f"'http://[::1]:8080'",
        )
    if authority.startswith("["):
        # Checked here because urlsplit's own check differs between Python
        # versions.
        if "]" not in authority:
            raise ConfigError(path, f"invalid host in {value!r}: missing ']'")
        literal, _, rest = authority[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ConfigError(
                path, f"invalid host in {value!r}: only ':port' may follow ']'"
            )
        if not _is_ipv6(literal):
            raise ConfigError(path, f"invalid host in {value!r}: not an IPv6 address")
    try:
        parts = _urlsplit(value)
        port = parts.port
    except ValueError as e:
        if "port" in str(e).lower():
            raise ConfigError(
                path, f"invalid port in {value!r}: must be a number from 1 to 65535"
            ) from None
        raise ConfigError(path, f"invalid URL {value!r}: {e}") from None
    netloc = parts.netloc
    if "@" in netloc:
        raise ConfigError(path, f"{value!r} must not contain a user name or password")
    if not parts.hostname:
        raise ConfigError(path, f"{value!r} must name a host")
    if netloc.endswith(":"):
        raise ConfigError(path, f"invalid port in {value!r}: the port is empty")
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(
            path, f"invalid port in {value!r}: must be a number from 1 to 65535"
        )
    if parts.path not in ("", "/"):
        raise ConfigError(
            path,
            f"{value!r} must not have a path ({parts.path!r}); requests are "
            f"forwarded with their own path",
        )
    if "?" in value or "#" in value:
        raise ConfigError(path, f"{value!r} must not have a query or fragment")
    # urlsplit has already lower-cased the host and removed the brackets.
    host = parts.hostname
    if netloc.startswith("["):
        shown = f"[{host}]"
    else:
        shown = _host_name(host, path, allow_wildcard=False)
    canonical = f"{scheme}://{shown}"
    if port is None:
        if _KIND[scheme] != "http":
            raise ConfigError(path, f"{value!r} must have a port: {scheme}:// has no default")
        port = 443 if scheme == "https" else 80
    else:
        canonical += f":{port}"
    return canonical, scheme, host, port


def _label(value: object, path: str) -> str:
    # Region and zone names: what a person would type, nothing that needs
    # quoting in logs.
    value = _string(value, path)
    if value and not _LABEL(value):
        raise ConfigError(path, f"{value!r} is not a valid name (letters, digits, '.', '_', '-')")
    return value


def _server(value: object, path: str) -> Server:
    weight = 1
    extra: Dict[str, Any] = {}
    if isinstance(value, dict):
        table = _table(value, path, ("url", "weight", "region", "zone", "drain"))
        if "url" not in table:
            raise ConfigError(_key(path, "url"), "is required")
        url_path = _key(path, "url")
        url = _string(table["url"], url_path)
        if "weight" in table:
            weight = _integer(table["weight"], _key(path, "weight"), 1)
        for key in ("region", "zone"):
            if key in table:
                extra[key] = _label(table[key], _key(path, key))
        if "drain" in table:
            extra["drain"] = _boolean(table["drain"], _key(path, "drain"))
    elif isinstance(value, str):
        url_path, url = path, value
    else:
        raise _wrong_type(
            path, "a URL string, a table {url, weight, region, zone, drain}, "
            "or a DNS entry {dns, port} / {srv}", value)
    canonical, scheme, host, port = _server_url(url, url_path)
    return Server(url=canonical, scheme=scheme, host=host, port=port, weight=weight, **extra)


def _discovery(table: Dict[str, Any], path: str) -> Discovery:
    kind = "srv" if "srv" in table else "dns"
    if kind == "srv":
        table = _table(table, path, ("srv", "interval", "region", "zone"))
    else:
        table = _table(table, path, ("dns", "port", "interval", "weight", "region", "zone"))
    name = _string(table[kind], _key(path, kind))
    labels = name.rstrip(".").split(".")
    if not name or any(not l or not _DNS_LABEL(l) for l in labels):
        raise ConfigError(_key(path, kind), f"{name!r} is not a DNS name")
    kwargs: Dict[str, Any] = {}
    if kind == "dns":
        if "port" not in table:
            raise ConfigError(_key(path, "port"), "is required with dns")
        kwargs["port"] = _integer(table["port"], _key(path, "port"), 1)
        if kwargs["port"] > 65535:
            raise ConfigError(_key(path, "port"), "must be at most 65535")
        if "weight" in table:
            kwargs["weight"] = _integer(table["weight"], _key(path, "weight"), 1)
    if "interval" in table:
        kwargs["interval"] = _seconds(table["interval"], _key(path, "interval"))
    for key in ("region", "zone"):
        if key in table:
            kwargs[key] = _label(table[key], _key(path, key))
    return Discovery(kind=kind, name=name, **kwargs)


# A name server: an IPv4 address, or an IPv6 address in brackets, with an
# optional port.
_NAMESERVER = _re.compile(r"(?:\[([^\]]*)\]|([^:\[\]]+))(?::([0-9]{1,5}))?\Z")


def _nameserver(value: str, path: str) -> Tuple[str, int]:
    match = _NAMESERVER.match(value)
    if match is None:
        if _is_ipv6(value):
            raise ConfigError(path, f"write the IPv6 address {value!r} in brackets, "
                                    f"as in '[{value}]' or '[{value}]:53'")
        raise ConfigError(path, f"{value!r} is not an IP address with an optional port "
                                f"('127.0.0.1:5353', '[::1]:53', '10.0.0.2')")
    v6, v4, port = match.groups()
    if v6 is not None and not _is_ipv6(v6):
        raise ConfigError(path, f"{v6!r} is not an IPv6 address")
    if v4 is not None and not _is_ip(v4, _ipaddress.IPv4Address):
        # A name server by name would need a resolver to find it.
        raise ConfigError(path, f"{v4!r} is not an IP address (name servers are "
                                f"given by address)")
    number = 53 if port is None else int(port)
    if not 1 <= number <= 65535:
        raise ConfigError(path, f"port must be from 1 to 65535 (got {number})")
    return (str(_ipaddress.ip_address(v6 if v6 is not None else v4)), number)


def _resolver(value: object, path: str) -> Resolver:
    table = _table(value, path, ("nameservers",))
    if "nameservers" not in table:
        return Resolver()
    servers = _strings(table["nameservers"], _key(path, "nameservers"), _nameserver)
    if not servers:
        raise ConfigError(_key(path, "nameservers"),
                          "must list at least one name server (leave it out for the system's)")
    return Resolver(nameservers=servers)


def _upstream_tls(value: object, path: str) -> UpstreamTLS:
    table = _table(value, path, ("ca", "client_cert", "client_key", "server_name"))
    kwargs = {key: _string(table[key], _key(path, key)) for key in table}
    if kwargs.get("client_key") and not kwargs.get("client_cert"):
        raise ConfigError(_key(path, "client_key"), "needs client_cert")
    return UpstreamTLS(**kwargs)


def _fraction(value: object, path: str, allow_zero: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _wrong_type(path, "a number between 0 and 1", value)
    if not (0 <= value <= 1) or (value == 0 and not allow_zero):
        raise ConfigError(path, f"must be between 0 and 1 (got {value})")
    return float(value)


def _health(value: object, path: str) -> HealthCheck:
    if not isinstance(value, dict):
        raise _wrong_type(path, "a table", value)
    kwargs: Dict[str, Any] = {}
    options = dict(value)
    if "type" in options:
        kwargs["type"] = _string(options.pop("type"), _key(path, "type"))
        if not kwargs["type"]:
            raise ConfigError(_key(path, "type"), "must not be empty")
    if "interval" in options:
        kwargs["interval"] = _seconds(options.pop("interval"), _key(path, "interval"))
    if "jitter" in options:
        kwargs["jitter"] = _fraction(options.pop("jitter"), _key(path, "jitter"))
    for key in ("rise", "fall"):
        if key in options:
            kwargs[key] = _integer(options.pop(key), _key(path, key), 1)
    # The rest belongs to the check type, whose factory validates it.
    return HealthCheck(options=options, **kwargs)


def _outlier(value: object, path: str) -> Outlier:
    table = _table(value, path, (
        "consecutive_failures", "base_ejection", "max_ejection",
        "max_ejected_share", "on_5xx",
    ))
    kwargs: Dict[str, Any] = {}
    if "consecutive_failures" in table:
        kwargs["consecutive_failures"] = _integer(
            table["consecutive_failures"], _key(path, "consecutive_failures"), 1)
    for key in ("base_ejection", "max_ejection"):
        if key in table:
            kwargs[key] = _seconds(table[key], _key(path, key))
    if "max_ejected_share" in table:
        kwargs["max_ejected_share"] = _fraction(
            table["max_ejected_share"], _key(path, "max_ejected_share"))
    if "on_5xx" in table:
        kwargs["on_5xx"] = _boolean(table["on_5xx"], _key(path, "on_5xx"))
    outlier = Outlier(**kwargs)
    if outlier.max_ejection < outlier.base_ejection:
        raise ConfigError(_key(path, "max_ejection"), "must be at least base_ejection")
    return outlier


def _sticky(value: object, path: str) -> Sticky:
    table = _table(value, path, ("cookie", "secret", "max_age", "path", "secure"))
    kwargs: Dict[str, Any] = {}
    if "cookie" in table:
        kwargs["cookie"] = _token(_string(table["cookie"], _key(path, "cookie")),
                                  _key(path, "cookie"), "cookie name")
    if "secret" in table:
        kwargs["secret"] = _string(table["secret"], _key(path, "secret"))
    if "max_age" in table:
        kwargs["max_age"] = _integer(table["max_age"], _key(path, "max_age"), 0)
    if "path" in table:
        kwargs["path"] = _path_prefix(table["path"], _key(path, "path"))
    if "secure" in table:
        kwargs["secure"] = _boolean(table["secure"], _key(path, "secure"))
    return Sticky(**kwargs)


def _upstream_group(name: str, value: object, path: str) -> UpstreamGroup:
    group = _table(
        value,
        path,
        ("servers", "balancer", "balancer_options", "max_connections", "max_idle",
         "max_pending", "max_requests", "retries", "retry_budget", "slow_start",
         "health", "outlier", "sticky", "tls", "proxy_protocol"),
    )
    servers_path = _key(path, "servers")
    if "servers" not in group:
        raise ConfigError(servers_path, "is required (an array of backend URLs)")
    items = _array(group["servers"], servers_path)
    if not items:
        raise ConfigError(servers_path, "must list at least one server")
    servers: List[Server] = []
    discovery: List[Discovery] = []
    seen: Dict[Tuple[str, str, int], int] = {}
    for i, item in enumerate(items):
        if isinstance(item, dict) and ("dns" in item or "srv" in item):
            discovery.append(_discovery(item, _index(servers_path, i)))
            continue
        server = _server(item, _index(servers_path, i))
        address = (server.scheme, server.host, server.port)
        if address in seen:
            raise ConfigError(
                _index(servers_path, i),
                f"duplicate of {_index(servers_path, seen[address])}; "
                f"use weight to send it more requests",
            )
        seen[address] = i
        if servers and _KIND[server.scheme] != _KIND[servers[0].scheme]:
            raise ConfigError(
                _index(servers_path, i),
                f"a {server.scheme}:// server in a group of {servers[0].scheme}:// servers",
            )
        servers.append(server)
    kwargs: Dict[str, Any] = {}
    if "balancer" in group:
        balancer = _string(group["balancer"], _key(path, "balancer"))
        if not balancer:
            raise ConfigError(_key(path, "balancer"), "must not be empty")
        kwargs["balancer"] = balancer
    if "balancer_options" in group:
        options = group["balancer_options"]
        if not isinstance(options, dict):
            raise _wrong_type(_key(path, "balancer_options"), "a table", options)
        kwargs["balancer_options"] = dict(options)
    if "max_connections" in group:
        kwargs["max_connections"] = _integer(
            group["max_connections"], _key(path, "max_connections"), 1
        )
    if "max_idle" in group:
        kwargs["max_idle"] = _integer(group["max_idle"], _key(path, "max_idle"), 0)
    for key, minimum in (("max_pending", 0), ("max_requests", 0), ("retries", 0)):
        if key in group:
            kwargs[key] = _integer(group[key], _key(path, key), minimum)
    if "retry_budget" in group:
        kwargs["retry_budget"] = _fraction(group["retry_budget"], _key(path, "retry_budget"))
    if "slow_start" in group:
        value = group["slow_start"]
        kwargs["slow_start"] = 0.0 if value == 0 and not isinstance(value, bool) else _seconds(
            value, _key(path, "slow_start"))
    builders: Dict[str, Callable[[object, str], Any]] = {
        "health": _health, "outlier": _outlier, "sticky": _sticky, "tls": _upstream_tls,
    }
    for key, build in builders.items():
        if key in group:
            kwargs[key] = build(group[key], _key(path, key))
    if (servers and _KIND[servers[0].scheme] == "tcp" and "health" in kwargs
            and "type" not in group["health"]):
        # A TCP service is checked by connecting, unless told otherwise.
        kwargs["health"] = replace(kwargs["health"], type="tcp")
    for i, server in enumerate(servers):
        if server.scheme == "udp" and not _is_ip(server.host):
            raise ConfigError(_index(servers_path, i),
                              f"a udp:// server must be an IP address (got {server.host!r})")
    if "proxy_protocol" in group:
        ppath = _key(path, "proxy_protocol")
        version = _string(group["proxy_protocol"], ppath)
        if version not in _PROXY_PROTOCOL_VERSIONS:
            raise ConfigError(ppath, f'must be "v1" or "v2" (got {version!r})')
        if servers and servers[0].scheme == "udp":
            raise ConfigError(ppath, "not for udp:// servers")
        kwargs["proxy_protocol"] = version
    if servers and _KIND[servers[0].scheme] != "http":
        # Addresses found in DNS are servers of the same kind.
        discovery = [replace(d, scheme=servers[0].scheme) for d in discovery]
    return UpstreamGroup(
        name=name, servers=tuple(servers), discovery=tuple(discovery), **kwargs
    )


def _upstreams(value: object, path: str) -> Dict[str, UpstreamGroup]:
    if not isinstance(value, dict):
        raise _wrong_type(path, "a table of upstream groups", value)
    if not value:
        raise ConfigError(
            path, "at least one upstream group is required ([upstreams.NAME])"
        )
    groups = {}
    for name, group in value.items():
        group_path = _key(path, name)
        _name(name, group_path, "upstream group")
        groups[name] = _upstream_group(name, group, group_path)
    return groups


def _listeners(value: object, path: str) -> Tuple[Listener, ...]:
    if not isinstance(value, dict):
        raise _wrong_type(path, "a table of listeners", value)
    if not value:
        raise ConfigError(path, "at least one listener is required ([listeners.NAME])")
    listeners = []
    for name, listener in value.items():
        listener_path = _key(path, name)
        _name(name, listener_path, "listener")
        table = _table(listener, listener_path,
                       ("endpoint", "tls", "redirect_https", "https_port", "h2c", "protocol",
                        "upstream", "sni", "proxy_protocol", "max_connections",
                        "max_sessions", "filters", "escaped_slashes"))
        endpoint_path = _key(listener_path, "endpoint")
        if "endpoint" not in table:
            raise ConfigError(
                endpoint_path, "is required (an endpoint string such as \"tcp:8080\")"
            )
        endpoint = _string(table["endpoint"], endpoint_path)
        if not endpoint.strip():
            raise ConfigError(endpoint_path, "must not be empty")
        if "\0" in endpoint:
            raise ConfigError(endpoint_path, "must not contain NUL")
        kwargs: Dict[str, Any] = {}
        if "tls" in table:
            kwargs["tls"] = _listener_tls(table["tls"], _key(listener_path, "tls"))
        if "redirect_https" in table:
            kwargs["redirect_https"] = _boolean(
                table["redirect_https"], _key(listener_path, "redirect_https"))
            if kwargs["redirect_https"] and "tls" in kwargs:
                raise ConfigError(_key(listener_path, "redirect_https"),
                                  "only for plain listeners (this one has tls)")
        if "h2c" in table:
            kwargs["h2c"] = _boolean(table["h2c"], _key(listener_path, "h2c"))
            if kwargs["h2c"] and ("tls" in kwargs or kwargs.get("redirect_https")):
                raise ConfigError(_key(listener_path, "h2c"),
                                  "only for plain listeners that do not redirect")
        if "https_port" in table:
            port_path = _key(listener_path, "https_port")
            kwargs["https_port"] = _integer(table["https_port"], port_path, 1)
            if kwargs["https_port"] > 65535:
                raise ConfigError(port_path, "must be at most 65535")
        kwargs.update(_stream_options(table, listener_path))
        if "escaped_slashes" in table:
            slashes_path = _key(listener_path, "escaped_slashes")
            kwargs["escaped_slashes"] = _string(table["escaped_slashes"], slashes_path)
            if kwargs["escaped_slashes"] not in ESCAPED_SLASHES:
                raise ConfigError(slashes_path, f"must be one of "
                                  f"{', '.join(map(repr, ESCAPED_SLASHES))} "
                                  f"(got {kwargs['escaped_slashes']!r})")
        if "filters" in table:
            filters_path = _key(listener_path, "filters")
            if kwargs.get("redirect_https"):
                raise ConfigError(filters_path, "a listener that redirects to https forwards "
                                                "nothing to filter")
            kwargs["filters"] = _filters(table["filters"], filters_path)
        listeners.append(Listener(name=name, endpoint=endpoint, **kwargs))
    return tuple(listeners)


# What a listener's escaped_slashes may say (twistproxy.http.paths does it).
ESCAPED_SLASHES = ("keep", "decode", "reject")

# The listener keys that only some protocols take.
_ONLY_FOR = {
    "tls": ("http",), "redirect_https": ("http",), "https_port": ("http",),
    "h2c": ("http",), "upstream": ("tcp", "udp"), "sni": ("http", "tcp"),
    "proxy_protocol": ("http", "tcp"), "max_connections": ("http", "tcp"),
    "max_sessions": ("udp",), "escaped_slashes": ("http",),
}


def _stream_options(table: Dict[str, Any], path: str) -> Dict[str, Any]:
    """
    The settings of a listener that concern its protocol, TLS passthrough
    and the PROXY protocol.
    """
    kwargs: Dict[str, Any] = {}
    protocol = "http"
    if "protocol" in table:
        protocol = _string(table["protocol"], _key(path, "protocol"))
        if protocol not in _PROTOCOLS:
            raise ConfigError(_key(path, "protocol"),
                              f"must be one of {', '.join(map(repr, _PROTOCOLS))} "
                              f"(got {protocol!r})")
        kwargs["protocol"] = protocol
    for key, protocols in _ONLY_FOR.items():
        if key in table and protocol not in protocols:
            raise ConfigError(_key(path, key),
                              f"not for {protocol} listeners (only {' and '.join(protocols)})")
    if "upstream" in table:
        kwargs["upstream"] = _string(table["upstream"], _key(path, "upstream"))
    elif protocol != "http" and "sni" not in table:
        raise ConfigError(_key(path, "upstream"),
                          f"is required on a {protocol} listener (the name of an upstream group)")
    if "sni" in table:
        spath = _key(path, "sni")
        if protocol == "http" and "tls" not in table:
            raise ConfigError(spath, "passthrough routes need tls on an http listener "
                                     "(the names that are not passed through are terminated)")
        items = _array(table["sni"], spath)
        kwargs["sni"] = tuple(_sni_route(item, _index(spath, i)) for i, item in enumerate(items))
    if "proxy_protocol" in table:
        kwargs["proxy_protocol"] = _strings(
            table["proxy_protocol"], _key(path, "proxy_protocol"), _network)
    for key in ("max_connections", "max_sessions"):
        if key in table:
            kwargs[key] = _integer(table[key], _key(path, key), 0 if key == "max_connections" else 1)
    return kwargs


def _sni_route(value: object, path: str) -> SNIRoute:
    table = _table(value, path, ("hosts", "upstream"))
    for key in ("hosts", "upstream"):
        if key not in table:
            raise ConfigError(_key(path, key), "is required")
    hosts_path = _key(path, "hosts")
    hosts = _strings(table["hosts"], hosts_path,
                     lambda host, p: _host_name(host.lower(), p, allow_wildcard=True))
    if not hosts:
        raise ConfigError(hosts_path, "must list at least one server name")
    return SNIRoute(hosts=hosts, upstream=_string(table["upstream"], _key(path, "upstream")))


def _check_listener_groups(listeners: Sequence[Listener],
                           groups: Mapping[str, UpstreamGroup]) -> None:
    """
    Every group a tcp or udp listener (or an SNI route) names exists and
    has servers of the listener's kind.
    """
    for listener in listeners:
        path = _key("listeners", listener.name)
        named = [(_key(path, "upstream"), listener.upstream, listener.protocol)]
        named += [(_key(_index(_key(path, "sni"), i), "upstream"), route.upstream, "tcp")
                  for i, route in enumerate(listener.sni)]
        for upath, name, kind in named:
            if not name:
                continue
            if name not in groups:
                raise ConfigError(upath, f"no upstream group named {name!r} (defined: "
                                         f"{', '.join(sorted(groups))})")
            if groups[name].kind != kind:
                raise ConfigError(upath, f"upstream group {name!r} has "
                                         f"{groups[name].kind} servers, not {kind}:// ones")


def _certificate(value: object, path: str) -> Certificate:
    if isinstance(value, str):
        if not value:
            raise ConfigError(path, "must not be empty")
        return Certificate(cert=value)
    table = _table(value, path, ("cert", "key"))
    if "cert" not in table:
        raise ConfigError(_key(path, "cert"), "is required")
    cert = _string(table["cert"], _key(path, "cert"))
    key = _string(table.get("key", ""), _key(path, "key"))
    return Certificate(cert=cert, key=key)


def _listener_tls(value: object, path: str) -> ListenerTLS:
    table = _table(value, path, (
        "certificates", "default", "min_version", "ciphers", "client_ca",
        "client_subject_header", "hsts", "handshake_timeout",
    ))
    certs_path = _key(path, "certificates")
    if "certificates" not in table:
        raise ConfigError(certs_path, "is required (PEM files or directories)")
    items = _array(table["certificates"], certs_path)
    if not items:
        raise ConfigError(certs_path, "must list at least one certificate")
    kwargs: Dict[str, Any] = {
        "certificates": tuple(_certificate(item, _index(certs_path, i))
                              for i, item in enumerate(items)),
    }
    if "default" in table:
        default = _integer(table["default"], _key(path, "default"), 0)
        if default >= len(items):
            raise ConfigError(_key(path, "default"),
                              f"must be the index of a certificate (0 to {len(items) - 1})")
        kwargs["default"] = default
    if "min_version" in table:
        version = _string(table["min_version"], _key(path, "min_version"))
        if version not in ("1.2", "1.3"):
            raise ConfigError(_key(path, "min_version"), 'must be "1.2" or "1.3"')
        kwargs["min_version"] = version
    for key in ("ciphers", "client_ca"):
        if key in table:
            kwargs[key] = _string(table[key], _key(path, key))
    if "client_subject_header" in table:
        hpath = _key(path, "client_subject_header")
        kwargs["client_subject_header"] = _token(_string(table["client_subject_header"], hpath),
                                                 hpath, "header name")
    if "hsts" in table:
        kwargs["hsts"] = _integer(table["hsts"], _key(path, "hsts"), 0)
    if "handshake_timeout" in table:
        kwargs["handshake_timeout"] = _seconds(table["handshake_timeout"],
                                               _key(path, "handshake_timeout"))
    return ListenerTLS(**kwargs)


def _path_prefix(value: object, path: str) -> str:
    prefix = _string(value, path)
    if not prefix.startswith("/"):
        raise ConfigError(path, f"must start with '/' (got {prefix!r})")
    if any(c.isspace() or ord(c) < 32 or c == "\x7f" for c in prefix):
        raise ConfigError(
            path, f"must not contain whitespace or control characters (got {prefix!r})"
        )
    if "?" in prefix or "#" in prefix:
        raise ConfigError(path, f"must be a path without '?' or '#' (got {prefix!r})")
    return prefix


def _route(value: object, path: str, index: int, groups: Mapping[str, UpstreamGroup]) -> Route:
    route = _table(
        value,
        path,
        (
            "name",
            "hosts",
            "path_prefix",
            "methods",
            "upstream",
            "preserve_host",
            "request_headers",
            "response_headers",
            "filters",
            "cache",
            "allow_trace",
        ),
    )
    upstream_path = _key(path, "upstream")
    if "upstream" not in route:
        raise ConfigError(upstream_path, "is required (the name of an upstream group)")
    upstream = _string(route["upstream"], upstream_path)
    if upstream not in groups:
        raise ConfigError(
            upstream_path,
            f"no upstream group named {upstream!r} (defined: "
            f"{', '.join(sorted(groups))})",
        )
    kwargs: Dict[str, Any] = {"upstream": upstream, "name": _index("routes", index)}
    if "name" in route:
        name = _string(route["name"], _key(path, "name"))
        if not name:
            raise ConfigError(_key(path, "name"), "must not be empty")
        kwargs["name"] = name
    if "hosts" in route:
        hosts_path = _key(path, "hosts")
        hosts = route["hosts"]
        if isinstance(hosts, str):
            kwargs["hosts"] = (_route_host(hosts, hosts_path),)
        elif isinstance(hosts, list):
            kwargs["hosts"] = _strings(hosts, hosts_path, _route_host)
        else:
            raise _wrong_type(hosts_path, "a string or an array of strings", hosts)
    if "path_prefix" in route:
        kwargs["path_prefix"] = _path_prefix(route["path_prefix"], _key(path, "path_prefix"))
    if "methods" in route:
        kwargs["methods"] = _strings(
            route["methods"],
            _key(path, "methods"),
            lambda method, p: _token(method, p, "method").upper(),
        )
    for flag in ("preserve_host", "allow_trace"):
        if flag in route:
            kwargs[flag] = _boolean(route[flag], _key(path, flag))
    for rules in ("request_headers", "response_headers"):
        if rules in route:
            kwargs[rules] = header_rules(route[rules], _key(path, rules))
    if "filters" in route:
        kwargs["filters"] = _filters(route["filters"], _key(path, "filters"))
    if "cache" in route:
        kwargs["cache"] = _route_cache(route["cache"], _key(path, "cache"))
    return Route(**kwargs)


_KEY_PARTS = ("scheme", "host", "path", "query")


def _route_cache(value: object, path: str) -> Optional[RouteCache]:
    """
    A route's C{cache}: C{true}, C{false}, or a table of settings.
    """
    if isinstance(value, bool):
        return RouteCache() if value else None
    table = _table(value, path, (
        "enabled", "key", "key_headers", "default_ttl", "max_ttl", "client_no_cache",
        "max_object_size", "methods", "lock_timeout", "set_cookie", "stale_if_error",
        "stale_on_5xx",
    ))
    kwargs: Dict[str, Any] = {}
    if "enabled" in table:
        kwargs["enabled"] = _boolean(table["enabled"], _key(path, "enabled"))
    if "key" in table:
        def part(name: str, p: str) -> str:
            if name not in _KEY_PARTS:
                raise ConfigError(p, f"unknown key part {name!r}; use {', '.join(_KEY_PARTS)}")
            return name
        kwargs["key"] = _strings(table["key"], _key(path, "key"), part)
        if "path" not in kwargs["key"]:
            raise ConfigError(_key(path, "key"), "the key must include the path")
    if "key_headers" in table:
        kwargs["key_headers"] = _strings(
            table["key_headers"], _key(path, "key_headers"),
            lambda name, p: _token(name, p, "header name").lower(),
        )
    for name in ("default_ttl", "max_ttl", "stale_if_error"):
        if name in table:
            value = table[name]
            if value == 0 and not isinstance(value, bool):
                kwargs[name] = 0.0
            else:
                kwargs[name] = _seconds(value, _key(path, name))
    if "lock_timeout" in table:
        kwargs["lock_timeout"] = _seconds(table["lock_timeout"], _key(path, "lock_timeout"))
    for name, modes in (("client_no_cache", ("honour", "ignore")),
                        ("set_cookie", ("pass", "strip"))):
        if name in table:
            mode = _string(table[name], _key(path, name))
            if mode not in modes:
                raise ConfigError(_key(path, name),
                                  f"must be {modes[0]!r} or {modes[1]!r} (got {mode!r})")
            kwargs[name] = mode
    if "stale_on_5xx" in table:
        kwargs["stale_on_5xx"] = _boolean(table["stale_on_5xx"], _key(path, "stale_on_5xx"))
    if "max_object_size" in table:
        kwargs["max_object_size"] = _size(
            table["max_object_size"], _key(path, "max_object_size"), 1)
    if "methods" in table:
        def method(name: str, p: str) -> str:
            if name.upper() not in ("GET", "HEAD", "POST"):
                raise ConfigError(p, f"only GET, HEAD and POST responses can be cached (got {name!r})")
            return name.upper()
        methods = _strings(table["methods"], _key(path, "methods"), method)
        if "GET" not in methods:
            raise ConfigError(_key(path, "methods"), "must include GET")
        kwargs["methods"] = methods
    return RouteCache(**kwargs)


def _cache(value: object, path: str) -> Cache:
    if not isinstance(value, dict):
        raise _wrong_type(path, "a table", value)
    options = dict(value)
    kwargs: Dict[str, Any] = {}
    if "store" in options:
        store = _string(options.pop("store"), _key(path, "store"))
        if not store:
            raise ConfigError(_key(path, "store"), "must not be empty")
        kwargs["store"] = store
    if "name" in options:
        name = _string(options.pop("name"), _key(path, "name"))
        kwargs["name"] = _token(name, _key(path, "name"), "cache name")
    if "targeted_header" in options:
        name = _string(options.pop("targeted_header"), _key(path, "targeted_header"))
        kwargs["targeted_header"] = _token(
            name, _key(path, "targeted_header"), "header name").lower()
    if "purge_from" in options:
        kwargs["purge_from"] = _strings(
            options.pop("purge_from"), _key(path, "purge_from"), _network)
    # What is left is the store's own; its factory checks it.
    kwargs["options"] = options
    return Cache(**kwargs)


def _is_catch_all(route: Route) -> bool:
    return not route.hosts and route.path_prefix == "/" and not route.methods


def _routes(value: object, path: str, groups: Mapping[str, UpstreamGroup]) -> Tuple[Route, ...]:
    if value is None or value == []:
        if len(groups) == 1:
            (only,) = groups
            return (Route(upstream=only),)
        raise ConfigError(
            path,
            f"routes are required when there are several upstream groups "
            f"({', '.join(groups)}); add [[routes]] with an upstream",
        )
    routes: List[Route] = []
    names: Dict[str, int] = {}
    catch_all: Optional[int] = None
    if not isinstance(value, list):
        raise _wrong_type(path, "an array of tables ([[routes]])", value)
    for i, item in enumerate(value):
        route_path = _index(path, i)
        if not isinstance(item, dict):
            raise _wrong_type(route_path, "a table ([[routes]])", item)
        if catch_all is not None:
            raise ConfigError(
                route_path,
                f"unreachable: {_index(path, catch_all)} above matches every request",
            )
        route = _route(item, route_path, i, groups)
        if route.name in names:
            raise ConfigError(
                _key(route_path, "name"),
                f"duplicate route name {route.name!r} (also "
                f"{_index(path, names[route.name])})",
            )
        names[route.name] = i
        if _is_catch_all(route):
            catch_all = i
        routes.append(route)
    return tuple(routes)


def _timeouts(value: object, path: str) -> Timeouts:
    known = (
        "connect",
        "upstream_response",
        "idle",
        "request_head",
        "request_body",
        "upstream_idle",
        "tcp_idle",
        "udp_idle",
        "send",
    )
    table = _table(value, path, known)
    return Timeouts(**{k: _seconds(v, _key(path, k)) for k, v in table.items()})


def _limits(value: object, path: str) -> Limits:
    table = _table(value, path, (
        "max_head_size", "max_header_count", "max_body_size", "max_uri_length",
        "max_requests_per_connection", "max_connections", "max_in_flight",
        "min_body_rate",
    ))
    kwargs = {}
    if "max_head_size" in table:
        kwargs["max_head_size"] = _size(
            table["max_head_size"], _key(path, "max_head_size"), 1024
        )
    if "max_header_count" in table:
        kwargs["max_header_count"] = _integer(
            table["max_header_count"], _key(path, "max_header_count"), 1
        )
    if "max_body_size" in table:
        kwargs["max_body_size"] = _size(
            table["max_body_size"], _key(path, "max_body_size"), 0
        )
    if "max_uri_length" in table:
        kwargs["max_uri_length"] = _size(
            table["max_uri_length"], _key(path, "max_uri_length"), 256
        )
    for name in ("max_requests_per_connection", "max_connections", "max_in_flight",
                 "min_body_rate"):
        if name in table:
            kwargs[name] = _integer(table[name], _key(path, name), 0)
    return Limits(**kwargs)


def _network(value: str, path: str) -> str:
    try:
        return str(_ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ConfigError(
            path,
            f"{value!r} is not an IP address or network (such as "
            f"'10.0.0.0/8' or '::1')",
        )


def _forwarding(value: object, path: str) -> Forwarding:
    table = _table(value, path, ("trusted_proxies", "via"))
    kwargs: Dict[str, Any] = {}
    if "trusted_proxies" in table:
        kwargs["trusted_proxies"] = _strings(
            table["trusted_proxies"], _key(path, "trusted_proxies"), _network
        )
    if "via" in table:
        via_path = _key(path, "via")
        via = _string(table["via"], via_path)
        if via:
            _token(via, via_path, "pseudonym")
        kwargs["via"] = via
    return Forwarding(**kwargs)


def _access_log(value: object, path: str) -> AccessLog:
    table = _table(value, path, ("path", "format", "max_size", "keep"))
    kwargs: Dict[str, Any] = {}
    if "path" in table:
        log_path = _string(table["path"], _key(path, "path"))
        if "\0" in log_path:
            raise ConfigError(_key(path, "path"), "must not contain NUL")
        kwargs["path"] = log_path
    if "format" in table:
        fmt = _string(table["format"], _key(path, "format"))
        if fmt not in _ACCESS_LOG_FORMATS:
            raise ConfigError(
                _key(path, "format"),
                f"must be one of {', '.join(map(repr, _ACCESS_LOG_FORMATS))} "
                f"(got {fmt!r})",
            )
        kwargs["format"] = fmt
    if "max_size" in table:
        kwargs["max_size"] = _size(table["max_size"], _key(path, "max_size"), 4096)
        if kwargs.get("path", "stdout") in ("stdout", ""):
            raise ConfigError(_key(path, "max_size"), "needs a file path to rotate")
    if "keep" in table:
        kwargs["keep"] = _integer(table["keep"], _key(path, "keep"), 1)
    return AccessLog(**kwargs)


_TOP_LEVEL = (
    "listeners",
    "upstreams",
    "routes",
    "timeouts",
    "limits",
    "forwarding",
    "access_log",
    "locator",
    "locality",
    "admin",
    "shutdown",
    "workers",
    "cache",
    "resolver",
)


def workers_count(value: object, path: str = "workers") -> int:
    """
    How many worker processes C{value} asks for: an integer of at least 1,
    or C{"auto"} for one per CPU core.  For the C{workers} key and the
    C{--workers} option.

    @raises ConfigError: naming C{path}.
    """
    if value == "auto":
        return _os.cpu_count() or 1
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(path, 'an integer or "auto"', value)
    return _integer(value, path, 1)


def _admin(value: object, path: str) -> Admin:
    table = _table(value, path, ("endpoint", "token"))
    kwargs: Dict[str, Any] = {}
    if "endpoint" in table:
        endpoint = _string(table["endpoint"], _key(path, "endpoint"))
        if not endpoint.strip() or "\0" in endpoint:
            raise ConfigError(_key(path, "endpoint"), "must be a non-empty endpoint string")
        kwargs["endpoint"] = endpoint
    if "token" in table:
        kwargs["token"] = _string(table["token"], _key(path, "token"))
    return Admin(**kwargs)


def _shutdown(value: object, path: str) -> Shutdown:
    table = _table(value, path, ("drain",))
    if "drain" in table:
        return Shutdown(drain=_seconds(table["drain"], _key(path, "drain")))
    return Shutdown()


def _filters(value: object, path: str) -> Tuple[Filter, ...]:
    """
    A C{filters} array: tables with a C{name} and the filter's options,
    which its factory checks when the proxy is built.
    """
    filters = []
    for i, item in enumerate(_array(value, path)):
        item_path = _index(path, i)
        if not isinstance(item, dict):
            raise _wrong_type(item_path, "a table with a name (a filter)", item)
        options = dict(item)
        name_path = _key(item_path, "name")
        if "name" not in options:
            raise ConfigError(name_path, "is required (the filter's name, or a dotted path)")
        name = _string(options.pop("name"), name_path)
        if not name:
            raise ConfigError(name_path, "must not be empty")
        filters.append(Filter(name=name, options=options))
    return tuple(filters)


def _locator(value: object, path: str) -> Locator:
    if not isinstance(value, dict):
        raise _wrong_type(path, "a table", value)
    options = dict(value)
    if "type" not in options:
        raise ConfigError(_key(path, "type"), "is required (cidr, header, maxmind, or a dotted path)")
    kind = _string(options.pop("type"), _key(path, "type"))
    if not kind:
        raise ConfigError(_key(path, "type"), "must not be empty")
    return Locator(type=kind, options=options)


def _locality(value: object, path: str) -> Locality:
    table = _table(value, path, ("regions", "overprovisioning"))
    kwargs: Dict[str, Any] = {}
    if "regions" in table:
        regions = _strings(table["regions"], _key(path, "regions"), _label)
        for i, region in enumerate(regions):
            if not region:
                raise ConfigError(_index(_key(path, "regions"), i), "must not be empty")
            if region in regions[:i]:
                raise ConfigError(_index(_key(path, "regions"), i), f"{region!r} is listed twice")
        kwargs["regions"] = regions
    if "overprovisioning" in table:
        factor = table["overprovisioning"]
        fpath = _key(path, "overprovisioning")
        if isinstance(factor, bool) or not isinstance(factor, (int, float)):
            raise _wrong_type(fpath, "a number of at least 1", factor)
        if not 1 <= factor <= 100:
            raise ConfigError(fpath, f"must be between 1 and 100 (got {factor})")
        kwargs["overprovisioning"] = float(factor)
    return Locality(**kwargs)


def _config(document: Dict[str, Any], source: str) -> ProxyConfig:
    _table(document, "", _TOP_LEVEL)
    if "listeners" not in document:
        raise ConfigError(
            "listeners",
            "at least one listener is required ([listeners.NAME] with an endpoint)",
        )
    listeners = _listeners(document["listeners"], "listeners")
    if "upstreams" not in document:
        raise ConfigError(
            "upstreams",
            "at least one upstream group is required ([upstreams.NAME] with servers)",
        )
    upstreams = _upstreams(document["upstreams"], "upstreams")
    _check_listener_groups(listeners, upstreams)
    routes: Tuple[Route, ...] = ()
    if "routes" in document or any(l.protocol == "http" for l in listeners):
        # Requests only go to groups of HTTP servers.
        http_groups = {n: g for n, g in upstreams.items() if g.kind == "http"}
        routes = _routes(document.get("routes"), "routes", http_groups)
    sections: Dict[str, Callable[[object, str], Any]] = {
        "timeouts": _timeouts,
        "limits": _limits,
        "forwarding": _forwarding,
        "access_log": _access_log,
        "locator": _locator,
        "locality": _locality,
        "admin": _admin,
        "shutdown": _shutdown,
        "workers": workers_count,
        "cache": _cache,
        "resolver": _resolver,
    }
    kwargs = {
        name: build(document[name], name)
        for name, build in sections.items()
        if name in document
    }
    return ProxyConfig(
        listeners=listeners,
        upstreams=upstreams,
        routes=routes,
        source=source,
        **kwargs,
    )


def parse(text: str, source: str = "<string>") -> ProxyConfig:
    """
    Parse and validate a configuration written in TOML.

    @param text: The TOML document.
    @param source: Where C{text} came from (a file name), used in error
        messages and stored as L{ProxyConfig.source}.
    @return: The validated configuration.
    @raises ConfigError: If C{text} is not valid TOML, or any setting is
        unknown, of the wrong type or inconsistent.  The error names C{source}
        and the path of the first offending setting.
    """
    try:
        document = _toml.loads(text)
    except _toml.TOMLDecodeError as e:
        raise ConfigError("", f"invalid TOML: {e}", source) from None
    try:
        return _config(document, source)
    except ConfigError as e:
        raise ConfigError(e.path, e.problem, source) from None


def load(path: str) -> ProxyConfig:
    """
    Read, parse and validate a TOML configuration file.

    @param path: The file name; it becomes L{ProxyConfig.source}.
    @return: The validated configuration.
    @raises ConfigError: If the file cannot be read or is not UTF-8, or for
        any of the reasons given for L{parse}.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError("", f"cannot read file: {e.strerror or e}", path) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            "", f"not valid UTF-8 (byte offset {e.start})", path
        ) from None
    # Hashed here, from the bytes parsed: the file may change before anyone
    # asks which configuration runs.
    return replace(parse(text, path), digest="sha256:" + _hashlib.sha256(data).hexdigest())


def server(url: str, weight: int = 1) -> Server:
    """
    A L{Server} from its URL, validated as in a configuration file; for
    building configurations in code.

    @raises ConfigError: If the URL is not an C{http://} or C{https://}
        URL of a server.
    """
    canonical, scheme, host, port = _server_url(url, "url")
    return Server(url=canonical, scheme=scheme, host=host, port=port,
                  weight=_integer(weight, "weight", 1))


def quick_config(
    listen: Sequence[str], upstreams: Sequence[str], access_log: str = "stdout",
    cache_size: Optional[object] = None,
) -> ProxyConfig:
    """
    The configuration of quick mode: listen on each endpoint string and send
    every request to one round-robin group of the given backend URLs.

    @param access_log: C{'stdout'}, a file path, or C{''} for none.
    @param cache_size: When not C{None}, the route caches in a memory store
        of this many bytes (a size such as C{"64m"}, as C{--cache-size}
        takes it).
    @raises ConfigError: naming the option at fault (C{--upstream[1]}).
    """
    servers = tuple(_server(url, f"--upstream[{i}]") for i, url in enumerate(upstreams))
    if not servers:
        raise ConfigError("--upstream", "at least one backend URL is required")
    listeners = tuple(
        Listener(f"listen{i}", _string(e, f"--listen[{i}]"))
        for i, e in enumerate(listen)
    )
    cache = None
    store = Cache()
    if cache_size is not None:
        cache = RouteCache()
        store = Cache(options={"size": _size(cache_size, "--cache-size", 1024)})
    return ProxyConfig(
        listeners=listeners,
        upstreams={"default": UpstreamGroup("default", servers)},
        routes=(Route("default", cache=cache),),
        access_log=AccessLog(path=access_log),
        cache=store,
    )
