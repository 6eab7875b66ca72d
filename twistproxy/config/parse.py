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
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

try:
    import tomllib as _toml
except ImportError:  # Python < 3.11
    import tomli as _toml  # type: ignore[no-redef]

from twistproxy.config.checks import (
    ConfigError, _index, _is_ip, _name, _table, wrong_type, key_path, workers_count,
)
from twistproxy.config.schema import build, section
from twistproxy.config.values import (
    ACME, DNS, AccessLog, Admin, Cache, Forwarding, Limits, Listener, Locality, Locator, ProxyConfig,
    Resolver, Route, Shutdown, Timeouts, UpstreamGroup, upstream_group,
)


def _upstreams(value: object, path: str) -> Dict[str, UpstreamGroup]:
    if not isinstance(value, dict):
        raise wrong_type(path, "a table of upstream groups", value)
    if not value:
        raise ConfigError(
            path, "at least one upstream group is required ([upstreams.NAME])"
        )
    groups = {}
    for name, group in value.items():
        group_path = key_path(path, name)
        _name(name, group_path, "upstream group")
        groups[name] = upstream_group(name, group, group_path)
    return groups


def _listeners(value: object, path: str) -> Tuple[Listener, ...]:
    if not isinstance(value, dict):
        raise wrong_type(path, "a table of listeners", value)
    if not value:
        raise ConfigError(path, "at least one listener is required ([listeners.NAME])")
    listeners = []
    for name, listener in value.items():
        listener_path = key_path(path, name)
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
        path = key_path("listeners", listener.name)
        named = [(key_path(path, "upstream"), listener.upstream, listener.protocol)]
        named += [(key_path(_index(key_path(path, "sni"), i), "upstream"), route.upstream, "tcp")
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


def _check_dns(listeners: Sequence[Listener], groups: Mapping[str, UpstreamGroup],
               dns: Optional[DNS]) -> None:
    """
    A dns listener has zones to serve, and the groups of GSLB records
    exist and list servers by IP address (they are what is answered).
    """
    for listener in listeners:
        if listener.protocol == "dns" and dns is None:
            raise ConfigError("dns", f"is required by the dns listener {listener.name!r} "
                                     f"([dns] with zones)")
    for i, zone in enumerate(dns.zones if dns is not None else ()):
        for j, record in enumerate(zone.records):
            if record.type != "GSLB":
                continue
            upath = key_path(_index(key_path(_index("dns.zones", i), "records"), j), "upstream")
            group = groups.get(record.upstream)
            if group is None:
                raise ConfigError(upath, f"no upstream group named {record.upstream!r} "
                                         f"(defined: {', '.join(sorted(groups))})")
            if group.discovery or not all(_is_ip(s.host) for s in group.servers):
                raise ConfigError(upath, f"the servers of upstream group {record.upstream!r} "
                                         f"must be IP addresses (they are the answers)")


def in_zones(name: str, zones: Iterable[str]) -> bool:
    """
    Whether one of C{zones} (C{'example.com'}) holds C{name}
    (C{'example.com'}, C{'www.example.com'}, C{'*.example.com'}).
    """
    bare = name[2:] if name.startswith("*.") else name
    return any(bare == zone or bare.endswith("." + zone) for zone in zones)


def _dns01_zones(acme: ACME, dns: Optional[DNS]) -> Tuple[str, ...]:
    # The zones DNS-01 can set records in: the DNS front's, the provider's.
    return (tuple(zone.name for zone in dns.zones) if dns is not None else ()) + (
        acme.dns.zones if acme.dns is not None else ())


def acme_challenge_types(name: str, listeners: Sequence[Listener], acme: ACME,
                         dns: Optional[DNS]) -> Tuple[str, ...]:
    """
    The challenge types that can validate C{name} (C{*.example.com} for a
    wildcard), in the order of C{acme.challenges}: C{http-01} when a plain
    HTTP listener exists (the CA asks on port 80), C{tls-alpn-01} when a
    TLS listener does (on port 443), C{dns-01} when a zone of C{[dns]}
    or of C{[acme.dns]} (a DNS provider) holds the name; a wildcard only by
    C{dns-01}.
    """
    wildcard = name.startswith("*.")
    fits = {
        "http-01": not wildcard and any(l.protocol == "http" and l.tls is None
                                        for l in listeners),
        "tls-alpn-01": not wildcard and any(l.tls is not None for l in listeners),
        "dns-01": in_zones(name, _dns01_zones(acme, dns)),
    }
    return tuple(kind for kind in acme.challenges if fits[kind])


def acme_certificates(listeners: Sequence[Listener], routes: Sequence[Route]
                      ) -> List[Tuple[str, Tuple[str, ...], Tuple[str, ...]]]:
    """
    The ACME certificates a configuration names, each once, as C{(path,
    names, listeners)}: the path of the setting that names it first, its
    names, and the listeners that serve it.  A listener's C{tls.acme}
    names one, served by that listener; a route with C{acme} names one for
    its C{hosts}, served by the TLS listeners it applies on.
    """
    tls = [listener.name for listener in listeners if listener.tls is not None]
    named = [(f"listeners.{listener.name}.tls.acme", listener.tls.acme, (listener.name,))
             for listener in listeners if listener.tls is not None and listener.tls.acme]
    named += [(f"routes[{i}].hosts", route.hosts,
               tuple(n for n in tls if not route.listeners or n in route.listeners))
              for i, route in enumerate(routes) if route.acme]
    certificates: Dict[Tuple[str, ...], Tuple[str, Tuple[str, ...]]] = {}
    for path, names, served_by in named:
        first, before = certificates.get(names, (path, ()))
        certificates[names] = (first, before + tuple(n for n in served_by if n not in before))
    return [(path, names, served_by) for names, (path, served_by) in certificates.items()]


def _check_acme(listeners: Sequence[Listener], routes: Sequence[Route], acme: Optional[ACME],
                dns: Optional[DNS]) -> None:
    """
    The ACME certificates of listeners and routes have an C{[acme]}
    section, each a TLS listener to serve it (a route's: one it applies
    on) and each name a challenge type of C{acme.challenges} that can
    validate it (L{acme_challenge_types}).
    """
    for i, route in enumerate(routes):
        if route.acme and not route.hosts:
            raise ConfigError(f"routes[{i}].acme", "needs hosts (the names of the certificate)")
    for path, names, served_by in acme_certificates(listeners, routes):
        if acme is None:
            raise ConfigError("acme", f"is required by {path} ([acme] with email and storage)")
        if not served_by:
            raise ConfigError(path.rsplit(".", 1)[0] + ".acme",  # a route's
                              "the route applies on no listener with tls to serve it")
        for i, name in enumerate(names):
            if acme_challenge_types(name, listeners, acme, dns):
                continue
            ways = {"http-01": "a plain http listener (HTTP-01)",
                    "tls-alpn-01": "a TLS listener (TLS-ALPN-01)",
                    "dns-01": "a zone of [dns] or of acme.dns that holds it (DNS-01)"}
            usable = [ways[kind] for kind in acme.challenges
                      if kind == "dns-01" or not name.startswith("*.")]
            how = " or ".join(usable) if usable else (
                "dns-01 in acme.challenges and a zone of [dns] or of acme.dns that holds it")
            raise ConfigError(_index(path, i), f"{name!r} needs {how}")


def _route(value: object, path: str, index: int, groups: Mapping[str, UpstreamGroup]) -> Route:
    route = build(Route, value, path)
    for key, name in route.upstreams:
        if name not in groups:
            raise ConfigError(f"{path}.{key}", f"no upstream group named {name!r} (defined: "
                                               f"{', '.join(sorted(groups))})")
    if not route.name:
        route = replace(route, name=_index("routes", index))
    return route


def _check_route_listeners(routes: Sequence[Route], listeners: Sequence[Listener]) -> None:
    # A route's listeners are HTTP listeners of the file.
    http = [listener.name for listener in listeners if listener.protocol == "http"]
    for i, route in enumerate(routes):
        for j, name in enumerate(route.listeners):
            if name not in http:
                raise ConfigError(_index(key_path(_index("routes", i), "listeners"), j),
                                  f"no http listener named {name!r} (defined: "
                                  f"{', '.join(sorted(http)) or 'none'})")


def _is_catch_all(route: Route) -> bool:
    return (not route.hosts and route.path_prefix == "/" and not route.methods
            and not route.has_conditions)


def _host_covered(host: str, hosts: Tuple[str, ...]) -> bool:
    # Whether every name host (a name or a wildcard) stands for is one of
    # hosts or below one of its wildcards.
    if host in hosts:
        return True
    name = host[1:] if host.startswith("*.") else host
    return any(h.startswith("*.") and name.endswith(h[1:]) and len(name) > len(h) - 1
               for h in hosts)


def _shadows(earlier: Route, later: Route) -> bool:
    """
    Whether C{earlier} takes every request C{later} matches, as far as the
    file tells: C{earlier} asks nothing beyond host, path prefix and
    method, and asks less of each.  (Regular expressions and the other
    further conditions are not compared: a route with them is never
    reported.)
    """
    if earlier.has_conditions:
        return False
    if not (later.path_exact or later.path_prefix).startswith(earlier.path_prefix):
        return False
    if earlier.methods and not (later.methods and set(later.methods) <= set(earlier.methods)):
        return False
    return not earlier.hosts or bool(later.hosts) and all(
        _host_covered(host, earlier.hosts) for host in later.hosts)


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
        raise wrong_type(path, "an array of tables ([[routes]])", value)
    for i, item in enumerate(value):
        route_path = _index(path, i)
        if not isinstance(item, dict):
            raise wrong_type(route_path, "a table ([[routes]])", item)
        if catch_all is not None:
            raise ConfigError(
                route_path,
                f"unreachable: {_index(path, catch_all)} above matches every request",
            )
        route = _route(item, route_path, i, groups)
        for j, earlier in enumerate(routes):
            if _shadows(earlier, route):
                raise ConfigError(route_path, f"unreachable: {_index(path, j)} above takes "
                                              f"every request this route matches")
        if route.name in names:
            raise ConfigError(
                key_path(route_path, "name"),
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
    "dns",
    "acme",
)


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
        _check_route_listeners(routes, listeners)
    sections: Dict[str, Callable[[object, str], Any]] = {
        "timeouts": section(Timeouts),
        "limits": section(Limits),
        "forwarding": section(Forwarding),
        "access_log": section(AccessLog),
        "locator": section(Locator),
        "locality": section(Locality),
        "admin": section(Admin),
        "shutdown": section(Shutdown),
        "workers": workers_count,
        "cache": section(Cache),
        "resolver": section(Resolver),
        "dns": section(DNS),
        "acme": section(ACME),
    }
    kwargs = {
        name: build(document[name], name)
        for name, build in sections.items()
        if name in document
    }
    _check_dns(listeners, upstreams, kwargs.get("dns"))
    _check_acme(listeners, routes, kwargs.get("acme"), kwargs.get("dns"))
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
