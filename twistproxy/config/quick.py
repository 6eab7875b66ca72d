# -*- test-case-name: tests.test_config -*-
"""
Configurations made without a file: quick mode's (C{--listen} and
C{--upstream}) and single servers for configurations built in code.
"""

from __future__ import annotations

from typing import Optional, Sequence

from twistproxy.config.checks import ConfigError, _integer, _server_url, _size, _string
from twistproxy.config.values import (
    _server, AccessLog, Cache, Listener, ProxyConfig, Route, RouteCache, Server, UpstreamGroup,
)


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
