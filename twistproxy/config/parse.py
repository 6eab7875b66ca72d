# -*- test-case-name: tests.test_config -*-
"""
Reading a TOML document into a L{ProxyConfig}.

One reader per section turns the table that tomllib produced into a value
object of L{twistproxy.config.values}, with the checks of
L{twistproxy.config.checks}, and applies the rules that tie several
settings together (a route's group must exist, C{max_ejection} is at least
C{base_ejection} ...).  Every problem is a L{ConfigError} naming the path
of the setting.
"""

from __future__ import annotations

import hashlib as _hashlib
from dataclasses import replace
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

try:
    import tomllib as _toml
except ImportError:  # Python < 3.11
    import tomli as _toml  # type: ignore[no-redef]

from twistproxy.config.checks import (
    ConfigError, _DNS_LABEL, _KIND, _PROXY_PROTOCOL_VERSIONS,
    _key, _index, _wrong_type, _table, _string, _boolean, _integer, _seconds, _array,
    _strings, _name, _token, _is_ip, _server_url, _label, _fraction,
    _network, workers_count,
)
from twistproxy.config.schema import build, section
from twistproxy.config.values import (
    Server, Discovery, Resolver, HealthCheck, Outlier, Sticky, UpstreamTLS, UpstreamGroup,
    Route, Listener, Timeouts, Limits,
    Forwarding, AccessLog, Locator, Locality, Admin, Cache, Shutdown, ProxyConfig,
)


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
        "health": _health, "outlier": section(Outlier), "sticky": section(Sticky),
        "tls": section(UpstreamTLS),
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
        listeners.append(build(Listener, listener, listener_path, name=name))
    return tuple(listeners)


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


def _route(value: object, path: str, index: int, groups: Mapping[str, UpstreamGroup]) -> Route:
    route = build(Route, value, path)
    if route.upstream not in groups:
        raise ConfigError(
            _key(path, "upstream"),
            f"no upstream group named {route.upstream!r} (defined: "
            f"{', '.join(sorted(groups))})",
        )
    if not route.name:
        route = replace(route, name=_index("routes", index))
    return route


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
        "timeouts": section(Timeouts),
        "limits": section(Limits),
        "forwarding": section(Forwarding),
        "access_log": section(AccessLog),
        "locator": _locator,
        "locality": section(Locality),
        "admin": section(Admin),
        "shutdown": section(Shutdown),
        "workers": workers_count,
        "cache": _cache,
        "resolver": section(Resolver),
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
