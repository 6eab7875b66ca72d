# -*- test-case-name: tests.test_proxy -*-
"""
The pipeline between the two codecs: route, pick, rewrite, send.

For each request the downstream protocol parsed, the L{Forwarder} finds the
route, asks the route's upstream group's balancer for a backend, builds the
head the backend will receive, and submits the exchange to that backend's
connection pool.  It answers 404 itself when no route matches and 503 when
the balancer has no backend to offer.

It is built from configuration value objects, or from plain constructor
calls when embedding (see L{UpstreamGroupRuntime} and L{RouteRuntime}).
"""

from __future__ import annotations

from typing import Dict, Mapping, Sequence

from twistproxy.config import ConfigError, Route, Timeouts, UpstreamGroup
from twistproxy.http import headers as H
from twistproxy.http.client import UpstreamPool
from twistproxy.http.exchange import Exchange
from twistproxy.interfaces import IBalancer
from twistproxy.routing import Router
from twistproxy.upstream.backend import Backend
from twistproxy.upstream.balancers import build_balancer


class UpstreamGroupRuntime:
    """
    A running upstream group: its backends, its balancer and one connection
    pool per backend.
    """

    def __init__(self, reactor, config: UpstreamGroup, timeouts: Timeouts):
        self.name = config.name
        self.backends = [
            Backend(
                _authority(s.host, s.port), s.scheme, s.host, s.port, s.weight
            )
            for s in config.servers
        ]
        self.balancer: IBalancer = build_balancer(
            config.balancer, self.backends, config.balancer_options,
            f"upstreams.{config.name}",
        )
        self.pools: Dict[Backend, UpstreamPool] = {
            b: UpstreamPool(reactor, b, timeouts, config.max_connections, config.max_idle)
            for b in self.backends
        }
        # The Host sent when a route does not preserve the client's.
        self.host_headers: Dict[Backend, bytes] = {
            b: (
                b.host if (s.scheme, s.port) in (("http", 80), ("https", 443))
                else b.name
            ).encode("ascii")
            for b, s in zip(self.backends, config.servers)
        }

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class RouteRuntime:
    """
    A route prepared for the hot path.
    """

    __slots__ = ("route", "group", "request_rules", "response_rules", "preserve_host")

    def __init__(self, route: Route, group: UpstreamGroupRuntime, path: str = "route"):
        self.route = route
        self.group = group
        self.request_rules = _compile(route.request_headers, f"{path}.request_headers")
        self.response_rules = _compile(route.response_headers, f"{path}.response_headers")
        self.preserve_host = route.preserve_host


def _compile(rules, path: str) -> H.CompiledRules:
    try:
        return H.CompiledRules(rules)
    except ValueError as e:
        raise ConfigError(path, str(e)) from None


class Forwarder:
    """
    Places each exchange on a backend connection.
    """

    def __init__(
        self,
        routes: Sequence[Route],
        groups: Mapping[str, UpstreamGroupRuntime],
        via: str = "twistproxy",
    ):
        self._router = Router(routes)
        self._routes = {
            id(r): RouteRuntime(r, groups[r.upstream], f"routes[{i}]")
            for i, r in enumerate(routes)
        }
        self.groups = groups
        self._via = via.encode("ascii")

    def forward(self, x: Exchange) -> None:
        req = x.request
        route = self._router.match(x.host, req.path.decode("ascii"), req.method.decode("ascii"))
        if route is None:
            x.downstream.upstream_failed(x, 404, "no_route")
            return
        rt = self._routes[id(route)]
        x.route = rt
        group = rt.group
        backend = group.balancer.pick(x)
        if backend is None:
            x.downstream.upstream_failed(x, 503, "no_backend")
            return
        x.backend = backend
        backend.in_flight += 1
        backend.requests += 1
        downstream = x.downstream
        x.head = H.request_head(
            req,
            host=req.host if rt.preserve_host and req.host else group.host_headers[backend],
            client_address=x.client_address,
            trusted=downstream.trusted,
            proto=downstream.proto,
            via=self._via,
            rules=rt.request_rules,
        )
        group.pools[backend].submit(x)

    def cancel(self, x: Exchange) -> None:
        """
        Abandon whatever upstream work C{x} has in progress.
        """
        if x.pool is not None:
            x.pool.cancel(x)

    def release(self, x: Exchange) -> None:
        """
        C{x} is over.
        """
        if x.backend is not None:
            x.backend.in_flight -= 1
            if x.reason.startswith("upstream_"):
                x.backend.failures += 1
        if x.upstream is not None:
            self.cancel(x)

    def close(self) -> None:
        for group in self.groups.values():
            group.close()
