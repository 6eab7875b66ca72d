"""
Helpers shared by the filter tests: a L{MemoryProxy} whose listener and
route have filters, and requests sent through it.
"""

from __future__ import annotations

from typing import Any, Dict, Sequence

from twistproxy.config import (
    Filter, Forwarding, Listener, ProxyConfig, Route, Server, UpstreamGroup,
)
from twistproxy.testing import MemoryProxy

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


def filters(*specs: Dict[str, Any]) -> tuple:
    """
    C{Filter}s from tables as a configuration file has them.
    """
    out = []
    for spec in specs:
        spec = dict(spec)
        out.append(Filter(spec.pop("name"), spec))
    return tuple(out)


def filtered_proxy(listener: Sequence[Dict[str, Any]] = (),
                   route: Sequence[Dict[str, Any]] = (),
                   trusted: Sequence[str] = ()) -> MemoryProxy:
    """
    A proxy with one backend, the given listener and route filters, and
    C{trusted} proxies.
    """
    return MemoryProxy(ProxyConfig(
        listeners=(Listener("main", "tcp:8080", filters=filters(*listener)),),
        upstreams={"app": UpstreamGroup(
            "app", (Server("http://127.0.0.1:8001", "http", "127.0.0.1", 8001),))},
        routes=(Route("app", name="api", filters=filters(*route)),),
        forwarding=Forwarding(trusted_proxies=tuple(trusted)),
    ))


def request(proxy: MemoryProxy, head: bytes = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            client: str = "192.0.2.7", answer: bytes = OK):
    """
    Send one request from C{client}; if it reaches the backend, answer it
    with C{answer}.

    @return: C{(what the client received, what the backend received or
        None)}.
    """
    peer = proxy.connect_client(client)
    peer.send(head)
    if proxy.backend_attempts():
        backend = proxy.accept_backend()
        sent = backend.received()
        backend.send(answer)
        return peer.received(), sent
    return peer.received(), None


def status(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


def field(data: bytes, name: bytes):
    """
    The value of field C{name} in the response head C{data}, or C{None}.
    """
    head = data.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b": ")
        if key.lower() == name.lower():
            return value
    return None
