# -*- test-case-name: tests.test_examples -*-
"""
twistproxy embedded in a Twisted application, configured in code.

One process runs a tiny twisted.web "origin" server on 127.0.0.1:8001 and a
twistproxy L{ProxyService} in front of it on 127.0.0.1:8080; no TOML file,
no twistd.  Run it, then ask the proxy::

    python3 examples/embedded.py
    curl -i http://127.0.0.1:8080/hello

L{build} only builds services; nothing listens until they are started, so
an application can add the result to its own service tree (or to the
C{application} object of a C{.tac} file for C{twistd -y}).
"""

from __future__ import annotations

from twisted.application.service import MultiService
from twisted.application.strports import service as endpoint_service
from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.server import Site

from twistproxy.config import (
    AccessLog, Listener, ProxyConfig, Route, UpstreamGroup, server,
)
from twistproxy.service import ProxyService


class Hello(Resource):
    """
    The origin: answers every request with a line of text.
    """

    isLeaf = True

    def render_GET(self, request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"Hello from the origin: you asked for " + request.uri + b"\n"


def build(
    reactor,
    origin_port: int = 8001,
    proxy_endpoint: str = "tcp:8080:interface=127.0.0.1",
    access_log: str = "stdout",
) -> MultiService:
    """
    Build the origin and the proxy in front of it, as one service.

    @param reactor: The reactor both run on; the proxy takes it as an
        argument, like all of twistproxy, instead of importing the global one.
    @param origin_port: The origin's TCP port on 127.0.0.1.
    @param proxy_endpoint: Where the proxy listens: any Twisted server
        endpoint string.
    @param access_log: C{'stdout'}, a file name, or C{''} for none.
    @return: A service with two children, named C{'origin'} and C{'proxy'}.
    """
    root = MultiService()

    origin = endpoint_service(
        f"tcp:{origin_port}:interface=127.0.0.1", Site(Hello()), reactor=reactor
    )
    origin.setName("origin")
    origin.setServiceParent(root)

    # The same value objects that a TOML file is parsed into.  server()
    # validates a URL as the file parser would.
    config = ProxyConfig(
        listeners=(Listener("main", proxy_endpoint),),
        upstreams={
            "origin": UpstreamGroup(
                "origin", (server(f"http://127.0.0.1:{origin_port}"),)
            ),
        },
        routes=(Route("origin"),),
        access_log=AccessLog(path=access_log),
    )
    # Balancer names and endpoint strings are checked here: a mistake
    # raises ConfigError before anything listens.
    proxy = ProxyService(config, reactor)
    proxy.setName("proxy")
    proxy.setServiceParent(root)
    return root


def main(reactor) -> Deferred:
    service = build(reactor)
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    print("Try: curl -i http://127.0.0.1:8080/hello  (Ctrl-C to stop)")
    # Never fires: run until Ctrl-C stops the reactor.
    return Deferred()


if __name__ == "__main__":
    from twisted.internet.task import react

    react(main)
