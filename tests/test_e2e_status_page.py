"""
End-to-end tests of the status page in a real browser: headless Chromium
loads the page from a running proxy over loopback (two origins behind it),
and the test reads the document as the page's script left it.

Skipped where no C{chromium} is installed (C{.ci/run} installs Debian's).
Each Chromium run is bounded by a timeout, and uses a profile of its own in
the test's directory.  With C{TWISTPROXY_SCREENSHOT_DIR} set, the screenshot
the test takes is copied there (how docs/_static/status-page.png was made).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import List

from twisted.internet import defer, reactor, task, threads

from tests.e2e_support import HOST, unused_port
from tests.test_e2e_balancing import _BalancingTestCase, _get, _servers
from tests.test_e2e_workers import _admin, _requests

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(profile: str, *args: str) -> str:
    """
    In a thread: run headless Chromium with C{args}, give the page five
    seconds of its own time to poll, and return what it printed.
    """
    command: List[str] = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        "--no-first-run", "--disable-extensions", "--disable-background-networking",
        f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args,
    ]
    done = subprocess.run(command, capture_output=True, timeout=90, check=False)
    return done.stdout.decode("utf-8", "replace")


class StatusPageTests(_BalancingTestCase):
    """
    The page, as a browser shows it.
    """

    timeout = 150

    def setUp(self):
        if CHROMIUM is None:
            raise self.skipTest("no chromium to load the page with")

    @defer.inlineCallbacks
    def start(self, token: str = ""):
        """
        Two origins, and a proxy in front of them with a health check each
        second and an admin listener (with C{token}).
        """
        origins = yield self.start_origins("one", "two")
        admin_port = unused_port()
        proxy = yield self.start_proxy(
            "[upstreams.app]\n" + _servers(origins)
            + '[upstreams.app.health]\ntype = "http"\npath = "/healthz"\ninterval = 1\n'
            'rise = 1\nfall = 1\n\n'
            '[[routes]]\nname = "site"\nupstream = "app"\n\n'
            f'[admin]\nendpoint = "tcp:{admin_port}:interface={HOST}"\n'
            + (f'token = "{token}"\n' if token else ""))
        self.url = f"http://{HOST}:{admin_port}/"
        self.admin_port = admin_port
        return origins, proxy

    def browse(self, *args: str) -> defer.Deferred:
        profile = os.path.abspath(self.mktemp())
        return threads.deferToThread(_chromium, profile, *args, self.url)

    @defer.inlineCallbacks
    def backend_state(self, name: str, want: str, deadline: float = 30.0):
        """
        Wait until the admin API says backend C{name} is C{want}.
        """
        for _ in range(int(deadline * 4)):
            code, body = yield threads.deferToThread(_admin, self.admin_port, "GET", "/history")
            states = {b["backend"]: b["state"]
                      for b in json.loads(body)["backends"].values()} if code == 200 else {}
            if states.get(name) == want:
                return
            yield task.deferLater(reactor, 0.25, lambda: None)
        self.fail(f"{name} never became {want}: {states}")

    @defer.inlineCallbacks
    def test_backends_and_states(self):
        """
        The page shows every backend by name with its state in words, the
        route, and the traffic counted; a backend that stopped answering
        is shown unhealthy, with the health check's reason.
        """
        origins, proxy = yield self.start()
        statuses = yield threads.deferToThread(_requests, proxy.port, 6)
        self.assertEqual(statuses, [200] * 6)
        yield origins["two"].stop()
        two = f"{HOST}:{origins['two'].port}"
        yield self.backend_state(two, "unhealthy")
        dom = yield self.browse("--dump-dom")
        for name in (f"{HOST}:{origins['one'].port}", two, "site", "Upstream groups"):
            self.assertIn(name, dom)
        self.assertIn('class="state state-unhealthy">unhealthy<', dom)
        self.assertIn('class="state state-healthy">healthy<', dom)
        self.assertIn("Live, every two seconds.", dom)
        # A screenshot, for a person to look at (and for the docs).
        shot = os.path.abspath(self.mktemp()) + ".png"
        yield self.browse("--window-size=1100,1500", f"--screenshot={shot}")
        self.assertTrue(os.path.getsize(shot) > 10_000)
        target = os.environ.get("TWISTPROXY_SCREENSHOT_DIR")
        if target:
            shutil.copy(shot, os.path.join(target, "status-page.png"))

    @defer.inlineCallbacks
    def test_token(self):
        """
        With a token configured, the page shows no data without it: it
        asks for the token, and no backend's name appears.
        """
        origins, proxy = yield self.start(token="e2e-secret")
        yield threads.deferToThread(_requests, proxy.port, 1)
        dom = yield self.browse("--dump-dom")
        self.assertIn('<form id="login">', dom)
        self.assertIn('<main id="main" hidden="">', dom)
        self.assertIn("The admin API needs a token.", dom)
        for origin in origins.values():
            self.assertNotIn(f"{HOST}:{origin.port}", dom)
