"""
Tests for L{twistproxy.admin.page} and the status page's JSON endpoints of
L{twistproxy.admin.api}: the static files, their headers, the token, the
history as the page and as the master of several workers ask it.
"""

from __future__ import annotations

import json
import re

from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twistproxy.admin import AdminResource, admin_site
from twistproxy.admin.history import SECONDS, History, Reading, empty_digest
from twistproxy.admin.page import ASSETS
from twistproxy.config import Admin
from twistproxy.metrics import ProxyMetrics

from .test_admin import URL, FakeService, _config


class PageTestCase(SynchronousTestCase):
    token = ""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(5000)
        self.service = FakeService(_config())
        self.counts = {("route", "api"): (0,) * 16}
        self.history = History(self.clock, lambda: Reading(
            dict(self.counts), {("app", "127.0.0.1:8001"): ("healthy", "", 0)}, 1))
        self.history.start()
        self.addCleanup(self.history.stop)
        self.resource = AdminResource(self.service, self.token, None, self.clock, self.history)
        self.treq = StubTreq(self.resource)

    def get(self, path: str, headers=None, method: str = "GET"):
        response = self.successResultOf(self.treq.request(method, URL + path, headers=headers))
        return response, self.successResultOf(self.treq.content(response))


class AssetTests(PageTestCase):
    """
    The page and its files are served from the package, with their types
    and headers that keep them fresh and confined.
    """

    def test_page(self):
        """
        C{GET /} is the page: HTML that loads only its own files, by paths
        the admin listener serves.
        """
        response, body = self.get("/")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"),
                         ["text/html; charset=utf-8"])
        self.assertIn(b"<main", body)
        sources = re.findall(rb'(?:src|href)="([^"]+)"', body)
        self.assertEqual(sorted(sources), [b"static/status.css", b"static/status.js"])
        for source in sources:
            self.assertIn(source, ASSETS)
            self.assertFalse(source.startswith((b"http:", b"https:", b"//")))

    def test_types_and_headers(self):
        """
        Each file has its content type, no-cache with an ETag, nosniff, no
        referrer, and a content security policy without inline scripts or
        other origins.
        """
        types = {"/": "text/html", "/static/status.css": "text/css",
                 "/static/status.js": "text/javascript"}
        for path, content_type in types.items():
            response, body = self.get(path)
            self.assertEqual(response.code, 200, path)
            self.assertTrue(body)
            headers = response.headers
            self.assertTrue(headers.getRawHeaders("content-type")[0].startswith(content_type))
            self.assertEqual(headers.getRawHeaders("cache-control"), ["no-cache"])
            self.assertEqual(headers.getRawHeaders("x-content-type-options"), ["nosniff"])
            self.assertEqual(headers.getRawHeaders("referrer-policy"), ["no-referrer"])
            [policy] = headers.getRawHeaders("content-security-policy")
            self.assertIn("default-src 'none'", policy)
            self.assertIn("script-src 'self';", policy)
            self.assertNotIn("unsafe-inline", policy)

    def test_not_modified(self):
        """
        A request with the file's ETag is answered C{304} without a body.
        """
        response, _ = self.get("/static/status.js")
        [etag] = response.headers.getRawHeaders("etag")
        response, body = self.get("/static/status.js", {"If-None-Match": f'"x", {etag}'})
        self.assertEqual((response.code, body), (304, b""))
        response, body = self.get("/static/status.js", {"If-None-Match": '"other"'})
        self.assertEqual(response.code, 200)

    def test_head(self):
        """
        C{HEAD} has the headers and no body.
        """
        response, body = self.get("/", method="HEAD")
        self.assertEqual((response.code, body), (200, b""))

    def test_no_other_method(self):
        """
        Only C{GET} and C{HEAD} are the page: C{POST /} is a JSON 404.
        """
        response, body = self.get("/", method="POST")
        self.assertEqual(response.code, 404)
        self.assertIn("error", json.loads(body))

    def test_small_and_offline(self):
        """
        The files are small, and name no other origin (no CDN).
        """
        total = 0
        for path in ("/", "/static/status.css", "/static/status.js"):
            _, body = self.get(path)
            total += len(body)
            self.assertNotRegex(body.decode("utf-8"), r"https?://(?!www\.w3\.org/2000/svg)")
        self.assertLess(total, 40_000)


class TokenTests(PageTestCase):
    """
    With a token, the files are served without it (they hold no data);
    everything else needs it.
    """

    token = "s3cret"

    def test_files_without_token(self):
        """
        The page and its files are served without the token.
        """
        for path in ASSETS:
            response, _ = self.get("/" + path.decode())
            self.assertEqual(response.code, 200, path)

    def test_data_needs_token(self):
        """
        The history, and any other path under C{/static/}, need the
        token; with it, the history is served.
        """
        for path in ("/history", "/history/raw", "/static/other.js", "/static/"):
            response, _ = self.get(path)
            self.assertEqual(response.code, 401, path)
        response, _ = self.get("/history", {"Authorization": "Bearer s3cret"})
        self.assertEqual(response.code, 200)

    def test_token_not_in_page(self):
        """
        The page keeps the token in the tab's session storage and sends it
        as a header, never in a URL.
        """
        _, script = self.get("/static/status.js")
        self.assertIn(b"sessionStorage", script)
        self.assertIn(b'headers.Authorization = "Bearer " + token', script)
        self.assertNotRegex(script, rb"[?&]token=")


class HistoryEndpointTests(PageTestCase):
    """
    C{GET /history} is what the page shows; C{GET /history/raw} the digest
    a master adds up.
    """

    def test_view(self):
        """
        The page's JSON: charts, the last minute's figures, the backends
        with their states.
        """
        self.counts[("route", "api")] = (4, 1) + (4,) + (0,) * 13
        self.clock.advance(1)
        response, body = self.get("/history")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("cache-control"), ["no-store"])
        shown = json.loads(body)
        self.assertEqual(shown["end"], 5001)
        self.assertEqual(sum(shown["requests"]), 4)
        self.assertEqual(shown["minute"]["error_rate"], 0.25)
        self.assertEqual(shown["backends"]["app/127.0.0.1:8001"]["state"], "healthy")
        self.assertEqual(shown["connections"], 1)
        self.assertEqual(set(shown), {
            "end", "seconds", "slot", "requests", "errors", "p50", "p99", "minute",
            "connections", "routes", "upstreams", "backends", "timeline", "refusals", "cache",
            "cache_size", "has_cache", "places"})

    def test_raw(self):
        """
        The digest ends at the second asked for; a malformed one is C{400}.
        """
        _, body = self.get("/history/raw?end=4990")
        digest = json.loads(body)
        self.assertEqual((digest["end"], digest["seconds"]), (4990, SECONDS))
        response, _ = self.get("/history/raw?end=soon")
        self.assertEqual(response.code, 400)

    def test_without_history(self):
        """
        A service with no history and no workers to ask has no C{/history}.
        """
        treq = StubTreq(AdminResource(self.service, "", None, self.clock))
        for path in ("/history", "/history/raw"):
            response = self.successResultOf(treq.get(URL + path))
            self.assertEqual(response.code, 404)

    def test_workers(self):
        """
        Without a history of its own, C{/history} asks the service (the
        master of several workers) for the digest of the seconds before
        now, and shows it.
        """
        asked = []
        digest = empty_digest(5000)
        digest["total"]["requests"][-1] = 7

        def history(end):
            asked.append(end)
            return defer.succeed(digest)

        self.service.history = history
        treq = StubTreq(AdminResource(self.service, "", None, self.clock))
        response = self.successResultOf(treq.get(URL + "/history"))
        shown = json.loads(self.successResultOf(response.content()))
        self.assertEqual((asked, sum(shown["requests"])), ([5000], 7))


class CertificatesTests(PageTestCase):
    """
    C{GET /status} lists the TLS certificates, for the page, where the
    service knows them.
    """

    def test_certificates(self):
        """
        A service that lists its certificates has them in its status; one
        that does not (the master of several workers) has no such key.
        """
        _, body = self.get("/status")
        self.assertNotIn("certificates", json.loads(body))
        served = [{"listener": "web", "names": ["a.example"], "subject": "CN=a.example",
                   "source": "/etc/a.pem", "not_after": "2030-01-01T00:00:00+00:00"}]
        self.service.certificates = lambda: served
        _, body = self.get("/status")
        self.assertEqual(json.loads(body)["certificates"], served)

    def test_certificates_asked(self):
        """
        A service that has to ask for its certificates (the master of
        several workers asks a worker) is waited for.
        """
        asked = defer.Deferred()
        self.service.certificates = lambda: asked
        response = self.treq.get(URL + "/status")
        self.assertNoResult(response)
        asked.callback([])
        self.treq.flush()
        body = self.successResultOf(self.successResultOf(response).content())
        self.assertEqual(json.loads(body)["certificates"], [])


class ConfigLoadedTests(PageTestCase):
    """
    C{GET /status} says when the running configuration was read, beside
    its digest.
    """

    def test_service_says(self):
        """
        A service that knows when it read its configuration is believed.
        """
        self.service.config_loaded = 1234.5
        _, body = self.get("/status")
        self.assertEqual(json.loads(body)["config"]["loaded"], 1234.5)

    def test_first_seen(self):
        """
        Otherwise (the master of several workers) it is when the API
        started, then when it first saw a new configuration: that time
        stays while the configuration does.
        """
        self.clock.advance(10)
        _, body = self.get("/status")
        self.assertEqual(json.loads(body)["config"]["loaded"], 5000)
        self.service.config = _config("new.toml")
        self.clock.advance(7)
        _, body = self.get("/status")
        self.assertEqual(json.loads(body)["config"]["loaded"], 5017)
        self.clock.advance(3)
        _, body = self.get("/status")
        self.assertEqual(json.loads(body)["config"]["loaded"], 5017)


class SiteTests(SynchronousTestCase):
    """
    L{admin_site} keeps a history for a proxy that forwards, while it
    listens.
    """

    def test_history_while_listening(self):
        """
        The site of a service with a forwarder and metrics samples every
        second between its start and its stop; the master's (no forwarder)
        keeps none.
        """
        clock = Clock()
        service = FakeService(_config())
        service.forwarder = type("Forwarder", (), {"groups": {}})()
        site = admin_site(service, Admin(), clock, ProxyMetrics(clock))
        self.assertIsNotNone(site.history)
        self.assertIs(site.resource._history, site.history)
        site.doStart()
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        site.doStop()
        self.assertEqual(clock.getDelayedCalls(), [])
        del service.forwarder
        self.assertIsNone(admin_site(service, Admin(), clock, ProxyMetrics(clock)).history)
