# -*- test-case-name: tests.test_config -*-
"""
The configuration's value objects: frozen, built once by
L{twistproxy.config.parse} from a TOML file or directly by an application
that embeds twistproxy.
"""

from __future__ import annotations

import ipaddress as _ipaddress
import re as _re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from twistproxy.config.checks import (
    ConfigError, _DNS_LABEL, _KEY_PARTS, _KIND, _PROTOCOLS, _array, _boolean, _cached_method,
    _endpoint, _field_value, _fraction, _index, _is_ip, _key_part, _label,
    _listener_endpoint, _log_path, _lower_token, _method, _nameserver, _network, _options,
    _overprovisioning, _path_prefix, _proxy_protocol_version, _pseudonym, _regions,
    _route_hosts, check_server_name, _server_url, _string, _strings, _table, _tls_version,
    _token, wrong_type, key_path,
)
from twistproxy.config.schema import (
    array, build, either, integer, nonempty, one_of, others, read, reader, rule, seconds,
    section, sections, setting, size, token,
)


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

    url: str = setting(check=_string)
    scheme: str
    host: str
    port: int
    weight: int = setting(1, check=integer(1))
    region: str = setting("", check=_label)
    zone: str = setting("", check=_label)
    drain: bool = setting(False, check=_boolean)


@reader(Server)
def _server(value: object, path: str) -> Server:
    # A URL alone, or a table with the URL and the server's settings.
    if isinstance(value, dict):
        kwargs = read(Server, value, path)
        url_path, url = key_path(path, "url"), kwargs.pop("url")
    elif isinstance(value, str):
        url_path, url, kwargs = path, value, {}
    else:
        raise wrong_type(
            path, "a URL string, a table {url, weight, region, zone, drain}, "
            "or a DNS entry {dns, port} / {srv}", value)
    canonical, scheme, host, port = _server_url(url, url_path)
    return Server(url=canonical, scheme=scheme, host=host, port=port, **kwargs)


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
    port: int = setting(0, check=integer(1, 65535))
    scheme: str = "http"
    interval: float = setting(30.0, check=seconds())
    weight: int = setting(1, check=integer(1))
    region: str = setting("", check=_label)
    zone: str = setting("", check=_label)


def _discovery(table: Dict[str, Any], path: str) -> Discovery:
    # A DNS entry of a group's servers: {dns, port} or {srv}; an SRV record
    # names its own ports and weights.
    kind = "srv" if "srv" in table else "dns"
    if kind == "srv":
        _table(table, path, ("srv", "interval", "region", "zone"))
    else:
        _table(table, path, ("dns", "port", "interval", "weight", "region", "zone"))
    name = _string(table[kind], key_path(path, kind))
    labels = name.rstrip(".").split(".")
    if not name or any(not l or not _DNS_LABEL(l) for l in labels):
        raise ConfigError(key_path(path, kind), f"{name!r} is not a DNS name")
    if kind == "dns" and "port" not in table:
        raise ConfigError(key_path(path, "port"), "is required with dns")
    settings = read(Discovery, {k: v for k, v in table.items() if k != kind}, path)
    return Discovery(kind=kind, name=name, **settings)


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

    nameservers: Tuple[Tuple[str, int], ...] = setting((), check=array(
        _nameserver, empty="must list at least one name server (leave it out for the system's)"))


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

    type: str = setting("http", check=nonempty)
    interval: float = setting(5.0, check=seconds())
    jitter: float = setting(0.1, check=_fraction)
    rise: int = setting(2, check=integer(1))
    fall: int = setting(3, check=integer(1))
    options: Mapping[str, Any] = others()


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

    consecutive_failures: int = setting(5, check=integer(1))
    base_ejection: float = setting(30.0, check=seconds())
    max_ejection: float = setting(300.0, check=seconds())
    max_ejected_share: float = setting(0.5, check=_fraction)
    on_5xx: bool = setting(False, check=_boolean)


@rule(Outlier)
def _ejections(outlier: Outlier, table: Mapping[str, Any], path: str) -> None:
    if outlier.max_ejection < outlier.base_ejection:
        raise ConfigError(key_path(path, "max_ejection"), "must be at least base_ejection")


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

    cookie: str = setting("twistproxy_server", check=token("cookie name"))
    secret: str = setting("", check=_string)
    max_age: int = setting(0, check=integer(0))
    path: str = setting("/", check=_path_prefix)
    secure: bool = setting(False, check=_boolean)


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

    ca: str = setting("", check=_string)
    client_cert: str = setting("", check=_string)
    client_key: str = setting("", check=_string)
    server_name: str = setting("", check=_string)


@rule(UpstreamTLS)
def _client_pair(tls: UpstreamTLS, table: Mapping[str, Any], path: str) -> None:
    if tls.client_key and not tls.client_cert:
        raise ConfigError(key_path(path, "client_key"), "needs client_cert")


def _servers(value: object, path: str) -> Tuple[Any, ...]:
    """
    A group's C{servers}: the L{Server}s listed and the L{Discovery}
    entries, in order.  The servers listed are of one kind and each listed
    once.
    """
    items = _array(value, path)
    if not items:
        raise ConfigError(path, "must list at least one server")
    result: List[Any] = []
    seen: Dict[Tuple[str, str, int], int] = {}
    first: Optional[Server] = None
    for i, item in enumerate(items):
        where = _index(path, i)
        if isinstance(item, dict) and ("dns" in item or "srv" in item):
            result.append(_discovery(item, where))
            continue
        server = build(Server, item, where)
        address = (server.scheme, server.host, server.port)
        if address in seen:
            raise ConfigError(where, f"duplicate of {_index(path, seen[address])}; "
                                     f"use weight to send it more requests")
        seen[address] = i
        if first is None:
            first = server
        elif _KIND[server.scheme] != _KIND[first.scheme]:
            raise ConfigError(
                where, f"a {server.scheme}:// server in a group of {first.scheme}:// servers")
        if server.scheme == "udp" and not _is_ip(server.host):
            raise ConfigError(where, f"a udp:// server must be an IP address "
                                     f"(got {server.host!r})")
        result.append(server)
    return tuple(result)


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
    servers: Tuple[Server, ...] = setting(
        check=_servers, required="is required (an array of backend URLs)")
    balancer: str = setting("round_robin", check=nonempty)
    balancer_options: Mapping[str, Any] = setting(check=_options, factory=dict)
    max_connections: int = setting(256, check=integer(1))
    max_idle: int = setting(256, check=integer(0))
    max_pending: int = setting(256, check=integer(0))
    max_requests: int = setting(0, check=integer(0))
    retries: int = setting(1, check=integer(0))
    retry_budget: float = setting(0.2, check=_fraction)
    slow_start: float = setting(0.0, check=seconds(zero=True))
    health: Optional[HealthCheck] = setting(None, check=section(HealthCheck))
    outlier: Optional[Outlier] = setting(None, check=section(Outlier))
    sticky: Optional[Sticky] = setting(None, check=section(Sticky))
    discovery: Tuple[Discovery, ...] = ()
    tls: UpstreamTLS = setting(UpstreamTLS(), check=section(UpstreamTLS))
    proxy_protocol: str = setting("", check=_proxy_protocol_version)

    @property
    def kind(self) -> str:
        """
        C{'http'} for groups of C{http://} and C{https://} servers (and of
        servers found in DNS only), C{'tcp'} or C{'udp'} for the others.
        """
        for server in self.servers:
            return _KIND[server.scheme]
        return "http"


def upstream_group(name: str, value: object, path: str) -> UpstreamGroup:
    """
    Read the group C{name}: its servers, listed and found in DNS, all of
    one kind, and the settings that depend on that kind.
    """
    kwargs = read(UpstreamGroup, value, path)
    listed = kwargs.pop("servers")
    servers = tuple(item for item in listed if isinstance(item, Server))
    discovery = tuple(item for item in listed if isinstance(item, Discovery))
    scheme = servers[0].scheme if servers else "http"
    if _KIND[scheme] == "tcp" and "health" in kwargs and "type" not in value["health"]:
        # A TCP service is checked by connecting, unless told otherwise.
        kwargs["health"] = replace(kwargs["health"], type="tcp")
    if kwargs.get("proxy_protocol") and scheme == "udp":
        raise ConfigError(key_path(path, "proxy_protocol"), "not for udp:// servers")
    if _KIND[scheme] != "http":
        # Addresses found in DNS are servers of the same kind.
        discovery = tuple(replace(d, scheme=scheme) for d in discovery)
    return UpstreamGroup(name=name, servers=servers, discovery=discovery, **kwargs)


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


@reader(HeaderRules)
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
            key_path(path, "remove"),
            lambda name, p: _token(name, p, "header name"),
        )
    pairs = {}
    for kind in ("set", "add"):
        kind_path = key_path(path, kind)
        table = rules.get(kind, {})
        if not isinstance(table, dict):
            raise wrong_type(kind_path, "a table of header names to values", table)
        seen: Dict[str, str] = {}
        result = []
        for name, field_value in table.items():
            name_path = key_path(kind_path, name)
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


@dataclass(frozen=True)
class Filter:
    """
    One filter of a listener or a route (see L{twistproxy.filters}).

    @ivar name: The filter factory's name (C{'rate_limit'}) or the dotted
        path of a factory object.
    @ivar options: The filter's other settings, checked by its factory.
    """

    name: str = setting(check=nonempty,
                        required="is required (the filter's name, or a dotted path)")
    options: Mapping[str, Any] = others()


@reader(Filter)
def _filter(value: object, path: str) -> Filter:
    if not isinstance(value, dict):
        raise wrong_type(path, "a table with a name (a filter)", value)
    # The keys besides the name are the filter's, checked by its factory.
    return Filter(**read(Filter, value, path))


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

    enabled: bool = setting(True, check=_boolean)
    key: Tuple[str, ...] = setting(_KEY_PARTS, check=array(_key_part))
    key_headers: Tuple[str, ...] = setting((), check=array(_lower_token))
    default_ttl: float = setting(0.0, check=seconds(zero=True))
    max_ttl: float = setting(0.0, check=seconds(zero=True))
    client_no_cache: str = setting("honour", check=either("honour", "ignore"))
    max_object_size: int = setting(1024 * 1024, check=size(1))
    methods: Tuple[str, ...] = setting(("GET", "HEAD"), check=array(_cached_method))
    lock_timeout: float = setting(5.0, check=seconds())
    set_cookie: str = setting("pass", check=either("pass", "strip"))
    stale_if_error: float = setting(3600.0, check=seconds(zero=True))
    stale_on_5xx: bool = setting(False, check=_boolean)


@reader(RouteCache)
def _route_cache(value: object, path: str) -> Optional[RouteCache]:
    # A route's cache: true, false, or a table of settings.
    if isinstance(value, bool):
        return RouteCache() if value else None
    cache = RouteCache(**read(RouteCache, value, path))
    if "path" not in cache.key:
        raise ConfigError(key_path(path, "key"), "the key must include the path")
    if "GET" not in cache.methods:
        raise ConfigError(key_path(path, "methods"), "must include GET")
    return cache


def _regex(value: object, path: str) -> str:
    # Compiled here to report a bad pattern at its place; the router
    # compiles it again, once, when it is built.
    pattern = nonempty(value, path)
    try:
        _re.compile(pattern)
    except _re.error as e:
        raise ConfigError(path, f"is not a regular expression: {e}") from None
    return pattern


@dataclass(frozen=True)
class RouteMatch:
    """
    One condition of a route on a request header, query parameter or
    cookie (see docs/routing.rst).

    @ivar name: The header's (lower-cased), parameter's or cookie's name.
    @ivar present: C{False} to match requests without it.
    @ivar value: Its value must be exactly this (C{''}: any value).
    @ivar regex: Its value must contain a match of this regular expression
        (C{''}: any value).
    """

    name: str = setting(check=nonempty, required="is required (what to look at)")
    present: bool = setting(True, check=_boolean)
    value: str = setting("", check=_string)
    regex: str = setting("", check=_regex)


@rule(RouteMatch)
def _one_test(match: RouteMatch, table: Mapping[str, Any], path: str) -> None:
    if "value" in table and "regex" in table:
        raise ConfigError(path, "takes value or regex, not both")
    if not match.present and ("value" in table or "regex" in table):
        raise ConfigError(path, "present = false takes no value or regex")


# The names a redirect's target may use besides the path_regex captures,
# and how the target names them.
_TEMPLATE_NAMES = ("host", "path", "query")
PLACEHOLDER = _re.compile(r"\{([^{}]*)\}")


def _template(value: object, path: str) -> str:
    target = nonempty(value, path)
    if not target.isascii():
        raise ConfigError(path, "must be ASCII (percent-encode other characters)")
    if any(c.isspace() or ord(c) < 32 or c == "\x7f" for c in target):
        raise ConfigError(path, "must not contain whitespace or control characters")
    for name in PLACEHOLDER.findall(target):
        if not _re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+", name):
            raise ConfigError(path, f"{{{name}}} is no placeholder: use {{host}}, {{path}}, "
                                    f"{{query}}, or a capture of path_regex ({{1}}, {{name}})")
    return target


def _redirect_status(value: object, path: str) -> int:
    status = integer(300, 399)(value, path)
    if status not in (301, 302, 303, 307, 308):
        raise ConfigError(path, "must be 301, 302, 303, 307 or 308")
    return status


@dataclass(frozen=True)
class Redirect:
    """
    A route's redirect: the proxy answers with C{status} and a
    C{Location} made from C{to}, and calls no backend.

    @ivar status: 301, 302, 303, 307 or 308.
    @ivar to: The target, with C{{host}}, C{{path}} (normalised),
        C{{query}} (C{'?'} and the query string, or nothing) and the
        captures of the route's C{path_regex} (C{{1}}, C{{name}}).
    """

    to: str = setting(check=_template, required="is required (the target URL)")
    status: int = setting(302, check=_redirect_status)


def _fields(value: object, path: str) -> Tuple[Tuple[str, str], ...]:
    # A table of header names to values, in file order.
    if not isinstance(value, dict):
        raise wrong_type(path, "a table of header names to values", value)
    return tuple((_token(name, key_path(path, name), "header name"),
                  _field_value(text, key_path(path, name))) for name, text in value.items())


@dataclass(frozen=True)
class FixedResponse:
    """
    A route's own answer: the proxy sends it and calls no backend.

    @ivar status: The status code.
    @ivar headers: (name, value) pairs; a body without C{Content-Type}
        is sent as C{text/plain; charset=utf-8}.
    @ivar body: The body, sent as UTF-8.
    """

    status: int = setting(200, check=integer(200, 599))
    headers: Tuple[Tuple[str, str], ...] = setting((), check=_fields)
    body: str = setting("", check=_string)


@dataclass(frozen=True)
class PathRewrite:
    """
    A regular expression replacement in the path a route sends upstream.

    @ivar regex: Searched in the path; every match is replaced.
    @ivar to: The replacement, with the match's captures (C{{1}},
        C{{name}}).
    """

    regex: str = setting(check=_regex, required="is required (what to replace)")
    to: str = setting(check=_template, required="is required (the replacement)")


def _params(value: object, path: str) -> Tuple[Tuple[str, str], ...]:
    # A table of query parameter names to values, in file order.
    if not isinstance(value, dict):
        raise wrong_type(path, "a table of query parameter names to values", value)
    return tuple((nonempty(name, path), _string(text, key_path(path, name)))
                 for name, text in value.items())


@dataclass(frozen=True)
class QueryRules:
    """
    Edits of the query string a route sends upstream, applied in the order
    remove, set, add.  Names are compared percent-decoded; the parameters
    left alone are sent as the client spelled them.

    @ivar remove: Parameter names to delete (every occurrence).
    @ivar set: (name, value) pairs: each replaces every occurrence of its
        name (in the place of the first), or is appended when there is none.
    @ivar add: (name, value) pairs appended, keeping existing ones.
    """

    remove: Tuple[str, ...] = setting((), check=array(nonempty))
    set: Tuple[Tuple[str, str], ...] = setting((), check=_params)
    add: Tuple[Tuple[str, str], ...] = setting((), check=_params)


@dataclass(frozen=True)
class RouteSplit:
    """
    One side of a route's weighted split (see docs/routing.rst).

    @ivar upstream: Name of the L{UpstreamGroup}.
    @ivar weight: Its share of the route's requests, relative to the other
        sides' (0: none, e.g. a canary switched off).
    """

    upstream: str = setting(check=nonempty, required="is required (the name of an upstream "
                                                      "group)")
    weight: int = setting(1, check=integer(0))


@dataclass(frozen=True)
class RouteMirror:
    """
    A route's mirror (see docs/routing.rst): a copy of a share of its
    requests goes to a shadow group, whose answers are dropped.

    @ivar upstream: Name of the shadow L{UpstreamGroup}.
    @ivar percent: The share of requests copied, 1 to 100.
    @ivar max_in_flight: At most this many copies under way at once; more
        are dropped (and counted).
    @ivar max_body_size: Request bodies up to this many bytes are copied
        (kept in memory until the client has sent the whole body); larger
        ones are not (and counted).  C{0}: no request with a body is
        copied.
    """

    upstream: str = setting(check=nonempty, required="is required (the name of the shadow "
                                                      "group)")
    percent: int = setting(100, check=integer(1, 100))
    max_in_flight: int = setting(10, check=integer(1))
    max_body_size: int = setting(65536, check=size(0))


def _split_key(value: object, path: str) -> str:
    # 'cookie:NAME', 'header:NAME' or 'client'.
    text = _string(value, path)
    kind, colon, name = text.partition(":")
    if text == "client" or (kind in ("cookie", "header") and colon and name):
        return text.lower() if kind == "header" else text
    raise ConfigError(path, f"must be 'cookie:NAME', 'header:NAME' or 'client' (got {text!r})")


@dataclass(frozen=True)
class Route:
    """
    Which requests go to which upstream group.  Routes are tried in order and
    the first that matches wins; a route with no C{hosts}, no C{path_prefix},
    no C{methods} and no other condition matches everything (the default
    route), so it may only be the last one.  A route sends requests to its
    C{upstream}, or shares them among the groups of its C{split}, or
    answers them itself (C{redirect}, C{respond}).

    @ivar hosts: Exact host names (C{'example.com'}) or wildcards
        (C{'*.example.com'}, which matches C{'a.example.com'} and
        C{'a.b.example.com'} but not C{'example.com'}), lower-cased, no port.
        Empty matches any host.
    @ivar path_prefix: The request path must start with this; C{'/'} matches
        every path.
    @ivar methods: Upper-case method names; empty matches any method.
    @ivar path_exact: The normalised path must be this, or C{''}.
    @ivar path_regex: The normalised path must contain a match of this, or
        C{''}.
    @ivar host_regex: The host (lower-cased, no port) must contain a match
        of this, or C{''}.
    @ivar headers: L{RouteMatch}es on request header fields, all required.
    @ivar query: L{RouteMatch}es on query parameters, all required.
    @ivar cookies: L{RouteMatch}es on cookies, all required.
    @ivar networks: The client's address (the one derived through the
        listener's trusted proxies) must be in one of these networks;
        empty matches any client.
    @ivar listeners: The names of the listeners the route applies on;
        empty: all of them.
    @ivar upstream: Name of the L{UpstreamGroup}.
    @ivar preserve_host: Forward the client's Host header (C{True}), or set
        Host to the chosen server's C{host:port} (C{False}).
    @ivar filters: The route's filters, in order, run after routing.
    @ivar allow_trace: Forward C{TRACE} requests; by default they are
        answered 405 (a TRACE echoes the request, credentials included).
    @ivar strip_prefix: Removed from the start of the path sent upstream
        when it starts with it, or C{''}.
    @ivar rewrite: A L{PathRewrite} of the path sent upstream, or C{None}.
    @ivar add_prefix: Put before the path sent upstream, or C{''}.
    @ivar rewrite_query: L{QueryRules} for the query string sent upstream,
        or C{None}.
    @ivar retries: The route's own C{retries} (see L{UpstreamGroup}), or
        C{None} for its group's.
    @ivar retry_budget: The route's own C{retry_budget} (see
        L{UpstreamGroup}): its requests may have a counted retry while the
        group's counted retries in flight are below this share of the
        group's requests in flight; or C{None} for its group's.
    @ivar response_timeout: The route's own C{upstream_response} timeout
        (see L{Timeouts}), or C{None} for the proxy's.
    @ivar redirect: The L{Redirect} the route answers with, or C{None}.
    @ivar respond: The L{FixedResponse} the route answers with, or C{None}.
        A route with either has no C{upstream} (C{''}).
    @ivar split: The L{RouteSplit}s among which the route shares its
        requests by weight, instead of one C{upstream} (C{''}); or C{()}.
    @ivar mirror: The route's L{RouteMirror}, or C{None}.
    @ivar sticky: What keeps a client on one side of the split:
        C{'cookie:NAME'}, C{'header:NAME'} or C{'client'} (its address), or
        C{''} for a weighted random choice per request.
    @ivar acme: Obtain one certificate for the route's C{hosts} from the
        C{[acme]} section's CA, and serve it on the TLS listeners the route
        applies on (after their own certificates).
    """

    upstream: str = setting("", check=_string)
    name: str = setting("", check=nonempty)
    hosts: Tuple[str, ...] = setting((), check=_route_hosts)
    path_prefix: str = setting("/", check=_path_prefix)
    methods: Tuple[str, ...] = setting((), check=array(_method))
    path_exact: str = setting("", check=_path_prefix)
    path_regex: str = setting("", check=_regex)
    host_regex: str = setting("", check=_regex)
    headers: Tuple[RouteMatch, ...] = setting((), check=sections(RouteMatch))
    query: Tuple[RouteMatch, ...] = setting((), check=sections(RouteMatch))
    cookies: Tuple[RouteMatch, ...] = setting((), check=sections(RouteMatch))
    networks: Tuple[str, ...] = setting((), check=array(_network))
    listeners: Tuple[str, ...] = setting((), check=array(nonempty))
    preserve_host: bool = setting(True, check=_boolean)
    request_headers: HeaderRules = setting(HeaderRules(), check=section(HeaderRules))
    response_headers: HeaderRules = setting(HeaderRules(), check=section(HeaderRules))
    filters: Tuple[Filter, ...] = setting((), check=sections(Filter))
    cache: Optional[RouteCache] = setting(None, check=section(RouteCache))
    allow_trace: bool = setting(False, check=_boolean)
    strip_prefix: str = setting("", check=_path_prefix)
    rewrite: Optional[PathRewrite] = setting(None, check=section(PathRewrite))
    add_prefix: str = setting("", check=_path_prefix)
    rewrite_query: Optional[QueryRules] = setting(None, check=section(QueryRules))
    retries: Optional[int] = setting(None, check=integer(0))
    retry_budget: Optional[float] = setting(None, check=_fraction)
    response_timeout: Optional[float] = setting(None, check=seconds())
    redirect: Optional[Redirect] = setting(None, check=section(Redirect))
    respond: Optional[FixedResponse] = setting(None, check=section(FixedResponse))
    split: Tuple[RouteSplit, ...] = setting((), check=sections(RouteSplit, "is empty"))
    sticky: str = setting("", check=_split_key)
    mirror: Optional[RouteMirror] = setting(None, check=section(RouteMirror))
    acme: bool = setting(False, check=_boolean)

    @property
    def has_conditions(self) -> bool:
        """
        Whether the route asks more of a request than host, path prefix and
        method.
        """
        return bool(self.path_exact or self.path_regex or self.host_regex or self.headers
                    or self.query or self.cookies or self.networks or self.listeners)


    @property
    def upstreams(self) -> Tuple[Tuple[str, str], ...]:
        """
        The groups the route sends requests to, each as C{(key, name)}, the
        key being where the file names it (C{'upstream'},
        C{'split[1].upstream'}, C{'mirror.upstream'}).
        """
        mirror = (("mirror.upstream", self.mirror.upstream),) if self.mirror else ()
        if self.split:
            return tuple((f"split[{i}].upstream", side.upstream)
                         for i, side in enumerate(self.split)) + mirror
        return () if self.answers_itself else (("upstream", self.upstream),) + mirror

    @property
    def answers_itself(self) -> bool:
        """
        Whether the route answers with a redirect or a fixed response
        instead of calling an upstream group.
        """
        return self.redirect is not None or self.respond is not None

    @property
    def rewrites_path(self) -> bool:
        """
        Whether the route changes the path it sends upstream.
        """
        return bool(self.strip_prefix or self.add_prefix or self.rewrite is not None)

    @property
    def rewrites_target(self) -> bool:
        """
        Whether the route changes the path or the query it sends upstream.
        """
        return self.rewrites_path or self.rewrite_query is not None


@rule(Route)
def _destination(route: Route, table: Mapping[str, Any], path: str) -> None:
    given = [key for key in ("upstream", "split", "redirect", "respond") if key in table]
    if not given:
        raise ConfigError(key_path(path, "upstream"), "is required (the name of an upstream "
                                                      "group, a split, or a redirect or "
                                                      "respond table)")
    if len(given) > 1:
        raise ConfigError(path, f"takes one of upstream, split, redirect and respond "
                                f"(got {' and '.join(given)})")
    if route.split and not any(side.weight for side in route.split):
        raise ConfigError(key_path(path, "split"), "needs a side with a weight above 0")
    if route.sticky and not route.split:
        raise ConfigError(key_path(path, "sticky"), "is for routes with a split")
    if route.redirect is not None:
        _captures(route.redirect.to, route.path_regex, _TEMPLATE_NAMES,
                  key_path(key_path(path, "redirect"), "to"), "path_regex")
    rewrites = [k for k in ("strip_prefix", "add_prefix", "rewrite", "rewrite_query",
                            "retries", "retry_budget", "response_timeout", "mirror")
                if k in table]
    if rewrites and route.answers_itself:
        raise ConfigError(key_path(path, rewrites[0]), "is for routes with an upstream")
    if route.rewrite is not None:
        _captures(route.rewrite.to, route.rewrite.regex, (),
                  key_path(key_path(path, "rewrite"), "to"), "rewrite.regex")


def _captures(template: str, regex: str, names: Tuple[str, ...], path: str, what: str) -> None:
    # Every placeholder of template is one of names or a capture of regex.
    pattern = _re.compile(regex) if regex else None
    for name in PLACEHOLDER.findall(template):
        if name in names:
            continue
        known = pattern is not None and (
            int(name) <= pattern.groups if name.isdigit() else name in pattern.groupindex)
        if not known:
            raise ConfigError(path, f"{{{name}}} is not a capture of {what}")


@dataclass(frozen=True)
class Certificate:
    """
    One certificate a TLS listener can present.

    @ivar cert: A PEM file with the certificate and its chain (and the
        private key, when C{key} is empty).
    @ivar key: A PEM file with the private key, or C{''}.
    """

    cert: str = setting(check=_string)
    key: str = setting("", check=_string)


@reader(Certificate)
def _certificate(value: object, path: str) -> Certificate:
    # A file name alone, or a table {cert, key}.
    if isinstance(value, str):
        if not value:
            raise ConfigError(path, "must not be empty")
        return Certificate(cert=value)
    return Certificate(**read(Certificate, value, path))


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
    @ivar acme: Names (C{example.com}, C{*.example.com}) of one certificate
        obtained and renewed from the C{[acme]} section's CA, presented
        after C{certificates}; empty: none.
    """

    certificates: Tuple[Certificate, ...] = setting((), check=sections(Certificate))
    default: int = setting(0, check=integer(0))
    min_version: str = setting("1.2", check=_tls_version)
    ciphers: str = setting("", check=_string)
    client_ca: str = setting("", check=_string)
    client_subject_header: str = setting("X-Client-Subject", check=token("header name"))
    hsts: int = setting(0, check=integer(0))
    handshake_timeout: float = setting(10.0, check=seconds())
    acme: Tuple[str, ...] = setting((), check=array(check_server_name))


@rule(ListenerTLS)
def _default_certificate(tls: ListenerTLS, table: Mapping[str, Any], path: str) -> None:
    count = len(tls.certificates) + bool(tls.acme)
    if not count:
        raise ConfigError(key_path(path, "certificates"),
                          "must list at least one certificate" if "certificates" in table
                          else "is required (PEM files or directories), or acme names")
    if tls.default >= count:
        raise ConfigError(key_path(path, "default"), f"must be the index of a certificate "
                                                     f"(0 to {count - 1})")


# The directories of ACME CAs known by name.
ACME_DIRECTORIES = {
    "letsencrypt": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
}


# The challenge types ([acme] challenges), in their default order.
ACME_CHALLENGES = ("http-01", "tls-alpn-01", "dns-01")


def _acme_directory(value: object, path: str) -> str:
    # A CA by name, or the https URL of its directory.
    text = _string(value, path)
    if text in ACME_DIRECTORIES:
        return ACME_DIRECTORIES[text]
    if not text.startswith("https://") or len(text) <= len("https://"):
        raise ConfigError(path, f"must be {' or '.join(map(repr, ACME_DIRECTORIES))}, or the "
                                f"https:// URL of an ACME directory (got {text!r})")
    return text


def _email(value: object, path: str) -> str:
    text = _string(value, path)
    if not _re.match(r"[^@\s:]+@[^@\s:]+\.[^@\s:]+\Z", text):
        raise ConfigError(path, f"must be an email address (got {text!r})")
    return text


def _mac_key(value: object, path: str) -> str:
    # A MAC key as CAs give them: base64url, padded or not.
    text = nonempty(value, path)
    if not _re.match(r"[A-Za-z0-9_-]+=*\Z", text) or len(text.rstrip("=")) % 4 == 1:
        raise ConfigError(path, "must be the MAC key the CA gave, base64url-encoded")
    return text


def _ask_url(value: object, path: str) -> str:
    text = _string(value, path)
    if text and not text.startswith(("http://", "https://")):
        raise ConfigError(path, f"must be an http:// or https:// URL (got {text!r})")
    return text


@dataclass(frozen=True)
class ExternalAccount:
    """
    The C{[acme] external_account} table: external account binding (RFC
    8555 7.3.4), which ties the ACME account to an account the CA already
    knows, for CAs that require it.

    @ivar key_id: The key identifier the CA gave.
    @ivar hmac_key: The MAC key the CA gave, base64url-encoded.
    """

    key_id: str = setting(check=nonempty, required="is required (the key identifier "
                                                   "the CA gave)")
    hmac_key: str = setting(check=_mac_key, required="is required (the MAC key the CA "
                                                     "gave, base64url)")


@dataclass(frozen=True)
class OnDemand:
    """
    The C{[acme.on_demand]} table: certificates ordered for names first
    seen in SNI (L{twistproxy.acme.ondemand}), only those it allows.

    @ivar allow: Names and wildcards (C{*.example.com}) that may be
        ordered without asking.
    @ivar ask: A URL asked C{GET ?domain=NAME} about any other name; C{200}
        allows it.  C{''}: only C{allow} decides.
    @ivar ask_timeout: Seconds to wait for the ask URL's answer.
    @ivar ask_cache: Seconds an answer (or a refusal) is kept.
    @ivar rate: Orders started per hour at most.
    """

    allow: Tuple[str, ...] = setting((), check=array(check_server_name))
    ask: str = setting("", check=_ask_url)
    ask_timeout: float = setting(5.0, check=seconds())
    ask_cache: float = setting(300.0, check=seconds())
    rate: int = setting(10, check=integer(1))


@rule(OnDemand)
def _limited(on_demand: OnDemand, table: Mapping[str, Any], path: str) -> None:
    # Without either, any name a client sends would be ordered.
    if not on_demand.allow and not on_demand.ask:
        raise ConfigError(path, "needs allow (names or wildcards) or ask (a URL), or both: "
                                "otherwise any client could have any name ordered")


@dataclass(frozen=True)
class ACMEDNS:
    """
    The C{[acme.dns]} table: DNS-01 challenges for zones that another DNS
    server answers, through a provider plugin
    (L{twistproxy.interfaces.IDNSProviderFactory}).

    @ivar provider: The name of an C{IDNSProviderFactory}, or the dotted
        path of one.
    @ivar zones: The zones whose TXT records it sets
        (C{'example.org'}: that name and every name below it).
    @ivar options: The provider's own settings, checked by its factory.
    """

    provider: str = setting(check=nonempty, required="is required (the name of a DNS "
                                                     "provider plugin, or its dotted path)")
    zones: Tuple[str, ...] = setting(
        check=array(check_server_name, empty="must list at least one zone"),
        required="is required (the zones whose records the provider sets)")
    options: Mapping[str, Any] = others()


@dataclass(frozen=True)
class ACME:
    """
    The C{[acme]} section: where the certificates named by the listeners'
    C{tls.acme} come from (RFC 8555), and where they are kept.

    @ivar directory: The CA's directory URL (C{"letsencrypt"} and
        C{"letsencrypt-staging"} stand for Let's Encrypt's).
    @ivar ca: A PEM file of the CAs that sign the directory's own HTTPS
        certificate (a private CA), or C{''} for the system's.
    @ivar email: The contact address of the account.
    @ivar key_type: The certificates' key: C{"ecdsa-p256"} or C{"rsa-2048"}.
    @ivar storage: The directory of the account key and of the
        certificates with their keys (created, mode 0700; files 0600).
    @ivar retry: Seconds before the first retry after a CA error; each
        further failure doubles it, up to a day.
    @ivar challenges: The challenge types to use, most preferred first;
        each name is validated by the first that can validate it (see
        L{twistproxy.config.parse.acme_challenge_types}).
    @ivar external_account: The external account binding, or C{None}.
    @ivar store: The C{redis://} URL of the store that every instance
        naming it shares (L{twistproxy.acme.shared}; read by
        L{twistproxy.redis.parse_url}), or C{''}: each instance orders for
        itself.
    @ivar on_demand: Certificates for names seen in SNI, or C{None} (off).
    @ivar dns: The DNS provider for DNS-01 in zones that the proxy's own
        DNS front does not serve, or C{None}.
    """

    email: str = setting(check=_email, required="is required (the account's contact address)")
    storage: str = setting(check=nonempty, required="is required (a directory)")
    directory: str = setting(ACME_DIRECTORIES["letsencrypt"], check=_acme_directory)
    ca: str = setting("", check=_string)
    key_type: str = setting("ecdsa-p256", check=one_of("ecdsa-p256", "rsa-2048"))
    retry: float = setting(60.0, check=seconds())
    challenges: Tuple[str, ...] = setting(
        ACME_CHALLENGES, check=array(one_of(*ACME_CHALLENGES),
                                     empty="must list at least one challenge type"))
    external_account: Optional[ExternalAccount] = setting(None, check=section(ExternalAccount))
    store: str = setting("", check=_string)
    on_demand: Optional[OnDemand] = setting(None, check=section(OnDemand))
    dns: Optional[ACMEDNS] = setting(None, check=section(ACMEDNS))


# What a listener's escaped_slashes may say (twistproxy.http.paths does it).
ESCAPED_SLASHES = ("keep", "decode", "reject")


def _for(*protocols: str) -> Callable[[Mapping[str, Any], str], Optional[str]]:
    """
    The condition of a listener setting that only listeners of these
    protocols take.
    """
    def only(table: Mapping[str, Any], path: str) -> Optional[str]:
        protocol = one_of(*_PROTOCOLS)(table.get("protocol", "http"), key_path(path, "protocol"))
        if protocol in protocols:
            return None
        named = (", ".join(protocols[:-1]) + " and " if len(protocols) > 1 else "") + protocols[-1]
        return f"not for {protocol} listeners (only {named})"
    return only


def _listen_queue(table: Mapping[str, Any], path: str) -> Optional[str]:
    """
    Why a listener may not set C{backlog}: it is not an C{http} or C{tcp}
    one, its endpoint type takes none (a C{systemd:} socket comes with its
    own), or its endpoint string sets one already.
    """
    words = str(table.get("endpoint", "")).lower().split(":")
    kind = words[1] if words[0] == "haproxy" and len(words) > 1 else words[0]
    if kind not in ("tcp", "tcp6", "ssl", "unix"):
        return f"not for {kind}: endpoints (only tcp:, tcp6:, ssl: and unix:)"
    if any(word.strip().startswith("backlog=") for word in words):
        return "the endpoint string sets backlog= already; give it once"
    return _for("http", "tcp")(table, path)


@dataclass(frozen=True)
class SNIRoute:
    """
    A TLS passthrough route: TLS connections for these server names are
    relayed to C{upstream} without being decrypted.

    @ivar hosts: Exact names (C{'db.example.com'}) or wildcards
        (C{'*.example.com'}, any name below C{example.com}), lower-cased.
    @ivar upstream: The name of a group of C{tcp://} servers.
    """

    hosts: Tuple[str, ...] = setting(
        check=array(check_server_name, empty="must list at least one server name"))
    upstream: str = setting(check=_string)


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
        for byte to a server of C{upstream}), C{'udp'} (datagrams relayed
        per client address and port) or C{'dns'} (the authoritative name
        server of the L{DNS} zones, on UDP and TCP at one port).
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
    @ivar tls_offloaded: On a plain listener behind a load balancer that
        terminates TLS: backends (C{X-Forwarded-Proto}, C{Forwarded}) and
        the cache are told that clients came over https.
    @ivar backlog: How many connections the kernel queues for this
        listener before the proxy accepts them (C{listen(2)}); C{0}: the
        endpoint's (Twisted's 50, or its string's C{backlog=}).
    """

    name: str
    endpoint: str = setting(
        check=_listener_endpoint, required='is required (an endpoint string such as "tcp:8080")')
    tls: Optional[ListenerTLS] = setting(None, check=section(ListenerTLS), only=_for("http"))
    redirect_https: bool = setting(False, check=_boolean, only=_for("http"))
    https_port: int = setting(443, check=integer(1, 65535), only=_for("http"))
    h2c: bool = setting(False, check=_boolean, only=_for("http"))
    protocol: str = setting("http", check=one_of(*_PROTOCOLS))
    upstream: str = setting("", check=_string, only=_for("tcp", "udp"))
    sni: Tuple[SNIRoute, ...] = setting((), check=sections(SNIRoute), only=_for("http", "tcp"))
    proxy_protocol: Tuple[str, ...] = setting((), check=array(_network), only=_for("http", "tcp"))
    max_connections: int = setting(0, check=integer(0), only=_for("http", "tcp"))
    max_sessions: int = setting(10000, check=integer(1), only=_for("udp"))
    filters: Tuple[Filter, ...] = setting((), check=sections(Filter),
                                          only=_for("http", "tcp", "udp"))
    escaped_slashes: str = setting("keep", check=one_of(*ESCAPED_SLASHES), only=_for("http"))
    tls_offloaded: bool = setting(False, check=_boolean, only=_for("http"))
    backlog: int = setting(0, check=integer(1, 65535), only=_listen_queue)


@rule(Listener)
def _plain_listener(listener: Listener, table: Mapping[str, Any], path: str) -> None:
    # What only a plain listener does, and what a redirecting one cannot.
    if listener.redirect_https and listener.tls is not None:
        raise ConfigError(key_path(path, "redirect_https"),
                          "only for plain listeners (this one has tls)")
    if listener.h2c and (listener.tls is not None or listener.redirect_https):
        raise ConfigError(key_path(path, "h2c"), "only for plain listeners that do not redirect")
    if listener.tls_offloaded and listener.redirect_https:
        raise ConfigError(key_path(path, "tls_offloaded"), "clients that came over https "
                                                           "cannot be redirected to https")
    if "filters" in table and listener.redirect_https:
        raise ConfigError(key_path(path, "filters"),
                          "a listener that redirects to https forwards nothing to filter")


@rule(Listener)
def _relayed_to(listener: Listener, table: Mapping[str, Any], path: str) -> None:
    # Where a tcp or udp listener's connections go.
    if (listener.protocol not in ("http", "dns")
            and "upstream" not in table and "sni" not in table):
        raise ConfigError(key_path(path, "upstream"), f"is required on a {listener.protocol} "
                                                      f"listener (the name of an upstream group)")
    if "sni" in table and listener.protocol == "http" and listener.tls is None:
        raise ConfigError(key_path(path, "sni"), "passthrough routes need tls on an http "
                          "listener (the names that are not passed through are terminated)")


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

    connect: float = setting(5.0, check=seconds())
    upstream_response: float = setting(60.0, check=seconds())
    idle: float = setting(60.0, check=seconds())
    request_head: float = setting(10.0, check=seconds())
    request_body: float = setting(60.0, check=seconds())
    upstream_idle: float = setting(30.0, check=seconds())
    tcp_idle: float = setting(600.0, check=seconds())
    udp_idle: float = setting(30.0, check=seconds())
    send: float = setting(60.0, check=seconds())


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

    max_head_size: int = setting(65536, check=size(1024))
    max_header_count: int = setting(100, check=integer(1))
    max_body_size: int = setting(1 << 30, check=size(0))
    max_uri_length: int = setting(8192, check=size(256))
    max_requests_per_connection: int = setting(1000, check=integer(0))
    max_connections: int = setting(0, check=integer(0))
    max_in_flight: int = setting(0, check=integer(0))
    min_body_rate: int = setting(0, check=integer(0))


@dataclass(frozen=True)
class Forwarding:
    """
    How the proxy describes itself and the client to backends.

    @ivar trusted_proxies: CIDRs (C{'10.0.0.0/8'}, C{'::1/128'}) of peers
        whose C{Forwarded} and C{X-Forwarded-*} fields are extended; from any
        other peer those fields are replaced.
    @ivar via: The pseudonym used in the C{Via} field, or C{''} to not add one.
    """

    trusted_proxies: Tuple[str, ...] = setting((), check=array(_network))
    via: str = setting("twistproxy", check=_pseudonym)


@dataclass(frozen=True)
class AccessLog:
    """
    @ivar path: A file to append to, C{'stdout'}, or C{''} for no access log.
    @ivar format: C{'combined'} or C{'json'}.
    @ivar max_size: Rotate the file once it has this many bytes (C{0}:
        never; rotate with C{SIGUSR1} then).
    @ivar keep: How many rotated files to keep (C{path.1} the newest).
    """

    path: str = setting("stdout", check=_log_path)
    format: str = setting("combined", check=one_of("combined", "json"))
    max_size: int = setting(0, check=size(4096))
    keep: int = setting(5, check=integer(1))


@rule(AccessLog)
def _rotated_file(log: AccessLog, table: Mapping[str, Any], path: str) -> None:
    if log.max_size and log.path in ("stdout", ""):
        raise ConfigError(key_path(path, "max_size"), "needs a file path to rotate")


@dataclass(frozen=True)
class Locator:
    """
    How clients are placed in a region and zone.

    @ivar type: Name of an L{twistproxy.interfaces.ILocatorFactory} plugin
        (C{'cidr'}, C{'header'}, C{'maxmind'}) or a dotted path to one.
    @ivar options: Its own settings, checked by its factory.
    """

    type: str = setting(check=nonempty,
                        required="is required (cidr, header, maxmind, or a dotted path)")
    options: Mapping[str, Any] = others()


@dataclass(frozen=True)
class Locality:
    """
    @ivar regions: Regions in order of preference for clients whose own
        region has no available server (and for clients not located).
    @ivar overprovisioning: How much a region's healthy share is trusted:
        a region keeps all its traffic while at least 1/overprovisioning of
        its weight is available, and spills over gradually below.
    """

    regions: Tuple[str, ...] = setting((), check=_regions)
    overprovisioning: float = setting(1.4, check=_overprovisioning)


@dataclass(frozen=True)
class Admin:
    """
    The admin API and the Prometheus metrics, on a listener of their own.

    @ivar endpoint: A server endpoint string; loopback by default.
    @ivar token: When set, every admin request must carry
        C{Authorization: Bearer <token>}.
    """

    endpoint: str = setting("tcp:9901:interface=127.0.0.1", check=_endpoint)
    token: str = setting("", check=_string)


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

    store: str = setting("memory", check=nonempty)
    options: Mapping[str, Any] = others()
    name: str = setting("twistproxy", check=token("cache name"))
    targeted_header: str = setting("", check=_lower_token)
    purge_from: Tuple[str, ...] = setting((), check=array(_network))


@dataclass(frozen=True)
class Shutdown:
    """
    @ivar drain: Seconds that requests in flight get to finish after
        SIGTERM, before the proxy exits anyway.
    """

    drain: float = setting(30.0, check=seconds())


# The DNS front's record types.  A GSLB record's addresses are chosen from
# an upstream group; TTLs and SOA timers are at most 2**31 - 1 (RFC 2181
# section 8), an SOA serial is 32 bits.
DNS_TYPES = ("A", "AAAA", "CNAME", "NS", "MX", "TXT", "CAA", "GSLB")
_DNS_TTL = integer(0, 2**31 - 1)
_CAA = _re.compile(r'([0-9]{1,3})\s+([A-Za-z0-9]+)\s+"?([^"]*)"?\Z')


@dataclass(frozen=True)
class DNSRecord:
    """
    One record of a zone of the DNS front (L{twistproxy.dns}).

    @ivar name: The owner name, absolute, lower-cased, without the final
        dot (C{'www.example.com'}).
    @ivar type: One of L{DNS_TYPES}; C{'GSLB'}: addresses chosen from
        C{upstream}.
    @ivar ttl: Seconds resolvers may keep the answer.
    @ivar data: The record's fields in presentation form: C{('192.0.2.7',)}
        for an A record, C{('10', 'mail.example.com')} for MX, the strings
        of a TXT record, C{('0', 'issue', 'letsencrypt.org')} for CAA;
        names are absolute, without the final dot.  Empty for C{GSLB}.
    @ivar upstream: The group a C{GSLB} record answers from.
    @ivar answers: How many addresses a C{GSLB} answer holds at most.
    """

    name: str
    type: str
    ttl: int
    data: Tuple[str, ...] = ()
    upstream: str = ""
    answers: int = 1


def _dns_name(value: object, path: str, origin: str) -> str:
    """
    A domain name of a zone, absolute, lower-cased, without the final dot:
    C{'@'} is the zone's apex, a name ending in C{'.'} is absolute, any
    other is relative to the apex C{origin}.
    """
    name = _string(value, path).strip().lower()
    if name == "@":
        return origin
    if name.endswith("."):
        name = name[:-1]
    elif origin:
        name = f"{name}.{origin}"
    if not name or len(name) > 253 or not all(
            label and len(label) <= 63 and _DNS_LABEL(label) for label in name.split(".")):
        raise ConfigError(path, f"{value!r} is not a domain name")
    return name


def _dns_data(kind: str, value: object, path: str, origin: str) -> Tuple[str, ...]:
    # The value of a record of this type, in the form of DNSRecord.data.
    if kind == "TXT":
        texts = (value,) if isinstance(value, str) else _strings(value, path, lambda v, p: v)
        if not texts:
            raise ConfigError(path, "must list at least one string")
        return texts
    text = _string(value, path).strip()
    if kind in ("A", "AAAA"):
        family = _ipaddress.IPv4Address if kind == "A" else _ipaddress.IPv6Address
        if not _is_ip(text, family):
            raise ConfigError(path, f"{value!r} is not an IPv{4 if kind == 'A' else 6} address")
        return (str(family(text)),)
    if kind in ("CNAME", "NS"):
        return (_dns_name(text, path, origin),)
    if kind == "MX":
        preference, _, host = text.partition(" ")
        if not preference.isdigit() or int(preference) > 65535:
            raise ConfigError(path, f"{value!r} is not 'PREFERENCE HOST' (as '10 mail')")
        return (preference, _dns_name(host, path, origin))
    match = _CAA.match(text)
    if match is None or int(match.group(1)) > 255:
        raise ConfigError(path, f"{value!r} is not 'FLAGS TAG VALUE' "
                                f"(as '0 issue \"letsencrypt.org\"')")
    return match.groups()


def _dns_record(value: object, path: str, origin: str, ttl: int) -> DNSRecord:
    # A record of the zone origin, whose TTL is ttl unless it says otherwise.
    table = _table(value, path, ("name", "type", "value", "ttl", "upstream", "answers"))
    for key in ("name", "type"):
        if key not in table:
            raise ConfigError(key_path(path, key), "is required")
    name = _dns_name(table["name"], key_path(path, "name"), origin)
    if name != origin and not name.endswith("." + origin):
        raise ConfigError(key_path(path, "name"), f"{name!r} is not in the zone {origin!r}")
    kind = _string(table["type"], key_path(path, "type")).upper()
    one_of(*DNS_TYPES)(kind, key_path(path, "type"))
    gslb = kind == "GSLB"
    for key in ("upstream", "answers") if not gslb else ("value",):
        if key in table:
            raise ConfigError(key_path(path, key), "only for GSLB records" if not gslb
                              else "not for GSLB records (they name an upstream)")
    needed = "upstream" if gslb else "value"
    if needed not in table:
        raise ConfigError(key_path(path, needed), f"is required on a {kind} record")
    record = DNSRecord(name=name, type=kind, ttl=_DNS_TTL(table.get("ttl", 30 if gslb else ttl),
                                                          key_path(path, "ttl")))
    if not gslb:
        return replace(record, data=_dns_data(kind, table["value"], key_path(path, "value"),
                                              origin))
    return replace(record, upstream=_string(table["upstream"], key_path(path, "upstream")),
                   answers=integer(1, 64)(table.get("answers", 1), key_path(path, "answers")))


@dataclass(frozen=True)
class DNSZone:
    """
    A zone the DNS front is authoritative for.

    @ivar name: The apex, lower-cased, without the final dot.
    @ivar soa: The SOA record's fields: C{(mname, rname, serial, refresh,
        retry, expire, minimum)}; C{minimum} is also the TTL of negative
        answers (RFC 2308).
    @ivar records: The zone's other records.
    """

    name: str
    soa: Tuple[Any, ...]
    records: Tuple[DNSRecord, ...] = ()


# The SOA's numbers and their defaults, in the record's order.
_SOA_NUMBERS = (("serial", 1), ("refresh", 3600), ("retry", 600), ("expire", 604800),
                ("minimum", 60))


@reader(DNSZone)
def _dns_zone(value: object, path: str) -> DNSZone:
    # Not a plain table: the names of its records and SOA are relative to
    # its own, and its ttl is only their default.
    table = _table(value, path, ("name", "ttl", "soa", "records"))
    for key in ("name", "soa"):
        if key not in table:
            raise ConfigError(key_path(path, key), "is required")
    name = _dns_name(table["name"], key_path(path, "name"), "")
    ttl = _DNS_TTL(table.get("ttl", 3600), key_path(path, "ttl"))
    spath = key_path(path, "soa")
    soa = _table(table["soa"], spath, ("mname", "rname") + tuple(k for k, _ in _SOA_NUMBERS))
    for key in ("mname", "rname"):
        if key not in soa:
            raise ConfigError(key_path(spath, key), "is required")
    fields = tuple(_dns_name(soa[key], key_path(spath, key), name) for key in ("mname", "rname"))
    fields += tuple(integer(0, 2**32 - 1 if key == "serial" else 2**31 - 1)(
        soa.get(key, default), key_path(spath, key)) for key, default in _SOA_NUMBERS)
    rpath = key_path(path, "records")
    records = tuple(_dns_record(item, _index(rpath, i), name, ttl)
                    for i, item in enumerate(_array(table.get("records", []), rpath)))
    kinds: Dict[str, set] = {}
    for i, record in enumerate(records):
        here = kinds.setdefault(record.name, set())
        alone = {"CNAME", "GSLB"}
        if (record.type in alone and here) or (here & alone):
            raise ConfigError(_index(rpath, i), f"{record.name!r} has a {record.type} record "
                                                f"and others: a CNAME or GSLB name has no others")
        if record.type == "CNAME" and record.name == name:
            raise ConfigError(_index(rpath, i), "a zone's apex cannot be a CNAME")
        here.add(record.type)
    return DNSZone(name=name, soa=fields, records=records)


@dataclass(frozen=True)
class DNS:
    """
    The C{[dns]} section: what every C{protocol = "dns"} listener serves.

    @ivar zones: The zones, answered from memory.
    @ivar allow_transfer: Networks allowed a zone transfer (AXFR, over TCP);
        empty: nobody.
    @ivar rate_limit: Responses per second to one client network (an IPv4
        /24, an IPv6 /56) before further queries are dropped; C{0}: no limit.
    @ivar max_udp_size: The largest UDP response, whatever larger size a
        client's EDNS0 offers; a larger answer is truncated (TC) so that
        the client asks again over TCP.
    @ivar redis: The C{redis://} URL of the shared store of the TXT records
        set at run time (ACME DNS-01; read by L{twistproxy.redis.parse_url}
        when the service is built); C{''}: each process keeps its own.
    """

    zones: Tuple[DNSZone, ...] = setting(
        check=sections(DNSZone), required="is required ([[dns.zones]] with a name and soa)")
    allow_transfer: Tuple[str, ...] = setting((), check=array(_network))
    rate_limit: int = setting(100, check=integer(0))
    max_udp_size: int = setting(1232, check=integer(512, 65535))
    redis: str = setting("", check=_string)


@rule(DNS)
def _distinct_zones(dns: DNS, table: Mapping[str, Any], path: str) -> None:
    names = [zone.name for zone in dns.zones]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(key_path(_index(key_path(path, "zones"), i), "name"),
                              f"{name!r} is listed twice")


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
    dns: Optional[DNS] = None
    acme: Optional[ACME] = None
    source: Optional[str] = None
    workers: int = 1
    digest: str = field(default="", compare=False)

    @property
    def routes_by_listener(self) -> bool:
        """
        Whether a route applies on named listeners only (C{listeners}): then
        each HTTP listener's requests say which listener took them.
        """
        return any(route.listeners for route in self.routes)
