"""
Tests for L{twistproxy.admin}: the admin API, driven in memory with
C{treq.testing.StubTreq} against a fake service.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from types import SimpleNamespace
from typing import Any, Dict, List, Optional

from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twistproxy import __version__
from twistproxy.admin import AdminResource, admin_site
from twistproxy.config import (
    AccessLog, Admin, ConfigError, Filter, FixedResponse, HeaderRules, Listener, ProxyConfig,
    QueryRules, Route, RouteMatch, RouteMirror, RouteSplit, UpstreamGroup, load,
    server,
)
from twistproxy.metrics import ProxyMetrics

from tests.config_support import proxy_toml

URL = "http://admin.invalid"


def _config(source: Optional[str] = None) -> ProxyConfig:
    return ProxyConfig(
        listeners=(Listener("main", "tcp:8080"), Listener("alt", "tcp:8081")),
        upstreams={"app": UpstreamGroup("app", (server("http://127.0.0.1:8001"),))},
        routes=(
            Route("app", name="api", hosts=("api.example.com",), path_prefix="/v1/",
                  methods=("GET",)),
            Route("app"),
        ),
        access_log=AccessLog(path=""),
        source=source,
    )


class FakeService:
    """
    What the admin API uses of a L{twistproxy.service.ProxyService}.
    """

    def __init__(self, config: ProxyConfig):
        self.config = config
        self.listeners: Dict[str, Any] = {}
        self.drained: List[tuple] = []
        self.certificate_problems: List[str] = []
        self.backends = {"app": {"127.0.0.1:8001"}}

    def status(self) -> Dict[str, Any]:
        return {"groups": [{"name": "app", "in_flight": 0, "backends": [
            {"name": "127.0.0.1:8001", "available": True},
        ]}]}

    def drain(self, group: str, backend: str, draining: bool = True) -> None:
        # The messages of ProxyService.drain.
        if group not in self.backends:
            raise KeyError(f"no upstream group {group!r}")
        if backend not in self.backends[group]:
            raise KeyError(f"no backend {backend!r} in upstream group {group!r}")
        self.drained.append((group, backend, draining))

    def reload_certificates(self) -> List[str]:
        return self.certificate_problems


class AdminTestCase(SynchronousTestCase):
    token = ""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(100)
        self.service = FakeService(_config())
        self.metrics = ProxyMetrics(self.clock, status=self.service.status)
        self.resource = AdminResource(self.service, self.token, self.metrics, self.clock)
        self.treq = StubTreq(self.resource)

    def request(self, method: str, path: str, headers=None):
        response = self.successResultOf(self.treq.request(method, URL + path, headers=headers))
        body = self.successResultOf(self.treq.content(response))
        return response, body

    def json(self, method: str, path: str, code: int = 200, headers=None):
        response, body = self.request(method, path, headers)
        self.assertEqual(response.code, code, body)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        return response, json.loads(body)


class EndpointTests(AdminTestCase):
    """
    Each endpoint, without a token.
    """

    def test_status(self):
        """
        C{GET /status} gives the version, the uptime on the clock, the
        configuration's source and digest, the listeners and the routes.
        """
        self.clock.advance(42.5)
        _, body = self.json("GET", "/status")
        self.assertEqual(body["version"], __version__)
        self.assertEqual(body["uptime"], 42.5)
        self.assertEqual(body["config"]["source"], None)
        self.assertEqual(
            body["config"]["digest"],
            "sha256:" + hashlib.sha256(repr(self.service.config).encode()).hexdigest())
        self.assertEqual(body["listeners"], [
            {"name": "main", "endpoint": "tcp:8080", "address": None, "tls": False},
            {"name": "alt", "endpoint": "tcp:8081", "address": None, "tls": False},
        ])
        self.assertEqual(body["routes"], [
            {"name": "api", "hosts": ["api.example.com"], "path_prefix": "/v1/",
             "methods": ["GET"], "upstream": "app"},
            {"name": None, "hosts": [], "path_prefix": "/", "methods": [], "upstream": "app"},
        ])

    def test_status_split_route(self):
        """
        A route that splits its requests shows its sides and their weights
        (as the configuration now loaded has them) and its stickiness key.
        """
        self.service.config = replace(self.service.config, routes=(
            Route(split=(RouteSplit("app", 95), RouteSplit("canary", 5)), sticky="client"),))
        _, body = self.json("GET", "/status")
        self.assertEqual(body["routes"], [
            {"name": None, "hosts": [], "path_prefix": "/", "methods": [], "upstream": "",
             "split": [{"upstream": "app", "weight": 95}, {"upstream": "canary", "weight": 5}],
             "sticky": "client"},
        ])

    def test_status_route_settings(self):
        """
        A route shows every setting it gives beyond the defaults: further
        conditions, listeners, rewrites, overrides (C{retries},
        C{retry_budget}, C{response_timeout}), mirror, a fixed response;
        of its filters and header edits only the names, whose options and
        values may hold credentials.
        """
        self.service.config = replace(self.service.config, routes=(
            Route("app", name="api", path_regex="^/v[0-9]/",
                  headers=(RouteMatch(name="x-canary", value="1"),),
                  networks=("10.0.0.0/8",), listeners=("alt",), strip_prefix="/api",
                  rewrite_query=QueryRules(set=(("v", "2"),)), retries=0, retry_budget=0.5,
                  response_timeout=30.0, mirror=RouteMirror("shadow", percent=10),
                  filters=(Filter("jwt", {"jwks_url": "http://idp/keys"}),),
                  request_headers=HeaderRules(set=(("Authorization", "Basic c2VjcmV0"),)),
                  preserve_host=False),
            Route(name="down", respond=FixedResponse(503, (("Retry-After", "60"),), "Later")),
        ))
        _, body = self.json("GET", "/status")
        self.assertEqual(body["routes"], [
            {"name": "api", "hosts": [], "path_prefix": "/", "methods": [], "upstream": "app",
             "path_regex": "^/v[0-9]/",
             "headers": [{"name": "x-canary", "present": True, "value": "1", "regex": ""}],
             "networks": ["10.0.0.0/8"], "listeners": ["alt"], "preserve_host": False,
             "request_headers": {"remove": [], "set": ["Authorization"], "add": []},
             "filters": ["jwt"], "strip_prefix": "/api",
             "rewrite_query": {"remove": [], "set": {"v": "2"}, "add": {}},
             "retries": 0, "retry_budget": 0.5, "response_timeout": 30.0,
             "mirror": {"upstream": "shadow", "percent": 10, "max_in_flight": 10,
                        "max_body_size": 65536}},
            {"name": "down", "hosts": [], "path_prefix": "/", "methods": [], "upstream": "",
             "respond": {"status": 503, "headers": {"Retry-After": "60"}, "body": "Later"}},
        ])
        self.assertNotIn("c2VjcmV0", json.dumps(body))
        self.assertNotIn("idp", json.dumps(body))

    def test_status_bound_address(self):
        """
        A listener that listens shows the address it is bound to.
        """
        port = SimpleNamespace(getHost=lambda: IPv4Address("TCP", "127.0.0.1", 8080))
        self.service.listeners["main"] = SimpleNamespace(port=port)
        self.service.listeners["alt"] = SimpleNamespace(port=None)
        _, body = self.json("GET", "/status")
        self.assertEqual([l["address"] for l in body["listeners"]], ["127.0.0.1:8080", None])

    def test_status_digest_of_file(self):
        """
        When the configuration came from a file, the digest is the
        SHA-256 of the bytes it was read from: editing the file without
        reloading it does not change it, even before the first C{/status}.
        """
        path = self.mktemp()
        data = ("# the configuration\n" + proxy_toml()).encode("ascii")
        with open(path, "wb") as f:
            f.write(data)
        self.service.config = load(path)
        with open(path, "ab") as f:
            f.write(b"# edited, not reloaded\n")
        _, body = self.json("GET", "/status")
        self.assertEqual(body["config"]["source"], path)
        self.assertEqual(body["config"]["digest"], "sha256:" + hashlib.sha256(data).hexdigest())

    def test_upstreams(self):
        """
        C{GET /upstreams} is the service's status.
        """
        _, body = self.json("GET", "/upstreams")
        self.assertEqual(body, self.service.status())

    def test_drain_and_undrain(self):
        """
        C{POST .../drain} and C{.../undrain} drain a backend and take it
        back, by group and backend name.
        """
        _, body = self.json("POST", "/upstreams/app/127.0.0.1:8001/drain")
        self.assertEqual(body, {"upstream": "app", "backend": "127.0.0.1:8001", "draining": True})
        _, body = self.json("POST", "/upstreams/app/127.0.0.1%3A8001/undrain")
        self.assertEqual(body["draining"], False)
        self.assertEqual(self.service.drained, [
            ("app", "127.0.0.1:8001", True), ("app", "127.0.0.1:8001", False)])

    def test_drain_unknown(self):
        """
        Draining a backend or group the service does not know is 404, and
        the error names what is missing: the backend, or the group.
        """
        _, body = self.json("POST", "/upstreams/app/10.9.9.9:80/drain", 404)
        self.assertIn("10.9.9.9:80", body["error"])
        _, body = self.json("POST", "/upstreams/nope/127.0.0.1:8001/drain", 404)
        self.assertEqual(body["error"], "no upstream group 'nope'")
        self.assertEqual(self.service.drained, [])

    def test_reload_certificates(self):
        """
        Without C{service.hangup}, C{POST /reload} reloads the certificates
        and lists the problems: C{200} without any, C{409} (not a success)
        with some.
        """
        _, body = self.json("POST", "/reload")
        self.assertEqual(body, {"reloaded": "certificates", "ok": True, "problems": []})
        self.service.certificate_problems = ["listeners.tls.tls: bad certificate"]
        _, body = self.json("POST", "/reload", 409)
        self.assertEqual(body, {"reloaded": "certificates", "ok": False,
                                "problems": ["listeners.tls.tls: bad certificate"]})

    def test_reload_configuration(self):
        """
        With C{service.hangup} (configuration and certificates), C{POST
        /reload} calls it, and the answer waits for the Deferred it may
        return.
        """
        pending = Deferred()
        self.service.hangup = lambda: pending
        d = self.treq.request("POST", URL + "/reload")
        self.assertNoResult(d)
        pending.callback([])
        self.treq.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 200)
        body = json.loads(self.successResultOf(self.treq.content(response)))
        self.assertEqual(body, {"reloaded": "configuration", "ok": True, "problems": []})

    def test_reload_fails(self):
        """
        A reload that raises is a 500 naming the problem.
        """
        def reload():
            raise ConfigError("routes[0].upstream", "no upstream group named 'x'", "proxy.toml")

        self.service.hangup = reload
        _, body = self.json("POST", "/reload", 500)
        self.assertEqual(body["ok"], False)
        self.assertIn("routes[0].upstream", body["problems"][0])
        self.flushLoggedErrors(ConfigError)

    def test_metrics(self):
        """
        C{GET /metrics} is the Prometheus exposition, with its content type.
        """
        response, body = self.request("GET", "/metrics")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"),
                         [self.metrics.content_type])
        names = {f.name for f in text_string_to_metric_families(body.decode())}
        self.assertIn("twistproxy_backend_up", names)

    def test_no_metrics(self):
        """
        Without metrics, C{/metrics} is not found.
        """
        self.treq = StubTreq(AdminResource(self.service, "", None, self.clock))
        self.json("GET", "/metrics", 404)

    def test_unknown_path(self):
        """
        An unknown path is a JSON 404.
        """
        _, body = self.json("GET", "/nope", 404)
        self.assertEqual(body["path"], "/nope")
        self.json("GET", "/static/nope.js", 404)
        self.json("POST", "/upstreams/app/127.0.0.1:8001/explode", 404)

    def test_wrong_method(self):
        """
        A known path with the wrong method is 405 with C{Allow}.
        """
        response, _ = self.json("POST", "/status", 405)
        self.assertEqual(response.headers.getRawHeaders("allow"), ["GET, HEAD"])
        response, _ = self.json("GET", "/reload", 405)
        self.assertEqual(response.headers.getRawHeaders("allow"), ["POST"])
        response, _ = self.json("GET", "/upstreams/app/127.0.0.1:8001/drain", 405)
        self.assertEqual(self.service.drained, [])

    def test_service_error(self):
        """
        An unexpected exception is a JSON 500, and is logged.
        """
        def status():
            raise RuntimeError("boom")

        self.service.status = status
        _, body = self.json("GET", "/upstreams", 500)
        self.assertNotIn("boom", json.dumps(body))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class TokenTests(AdminTestCase):
    """
    With a token, every request must carry it as a bearer token.
    """

    token = "s3cret"

    def test_required(self):
        """
        A request without a token is 401 with C{WWW-Authenticate: Bearer},
        whatever the path: unknown paths are not told apart.
        """
        for path in ("/status", "/nope"):
            response, body = self.json("GET", path, 401)
            [challenge] = response.headers.getRawHeaders("www-authenticate")
            self.assertTrue(challenge.startswith("Bearer"))

    def test_wrong(self):
        """
        A wrong token, or the right one under another scheme, is 401, and
        nothing is done.
        """
        for value in ("Bearer nope", "Basic s3cret", "Bearer s3cret2", "s3cret"):
            self.json("POST", "/upstreams/app/127.0.0.1:8001/drain", 401,
                      headers={"Authorization": value})
        self.assertEqual(self.service.drained, [])

    def test_accepted(self):
        """
        The right bearer token is accepted, on every endpoint.
        """
        headers = {"Authorization": "Bearer s3cret"}
        self.json("GET", "/status", headers=headers)
        self.json("POST", "/upstreams/app/127.0.0.1:8001/drain", headers=headers)
        response, _ = self.request("GET", "/metrics", headers={"Authorization": "bearer s3cret"})
        self.assertEqual(response.code, 200)


class AdminSiteTests(SynchronousTestCase):
    """
    L{admin_site} builds the factory to listen with.
    """

    def test_site(self):
        """
        The site serves an L{AdminResource} with the configured token, and
        writes no access log.
        """
        clock = Clock()
        service = FakeService(_config())
        site = admin_site(service, Admin(token="t"), clock, None)
        self.assertIsInstance(site.resource, AdminResource)
        self.assertEqual(site.resource._token, b"t")
        self.assertIsNone(site.log(object()))
        self.assertFalse(site.noisy)
