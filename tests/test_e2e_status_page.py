"""
End-to-end tests of the status page in a real browser: headless Chromium
loads the page from a running proxy over loopback (two origins behind it),
and the test reads the document as the page's script left it, or drives
the page through the DevTools protocol (over a pipe: L{_Browser}).

Skipped where no C{chromium} is installed (C{.ci/run} installs Debian's).
Each Chromium run is bounded by a timeout, and uses a profile of its own in
the test's directory.  With C{TWISTPROXY_SCREENSHOT_DIR} set, the screenshot
the test takes is copied there (how docs/_static/status-page.png was made).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
from typing import Any, Dict, List

from twisted.internet import defer, reactor, task, threads

from tests.e2e_support import HOST, unused_port
from tests.test_e2e_balancing import _BalancingTestCase, _servers
from tests.test_e2e_workers import _admin, _requests, wait_for_workers

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


# Run a program with the descriptors given first as its 3 and 4 (a shell
# takes only one digit in a redirection).
_ON_3_AND_4 = """
import fcntl, os, sys
ends = [fcntl.fcntl(int(fd), fcntl.F_DUPFD, 10) for fd in sys.argv[1:3]]
for number, end in ((3, ends[0]), (4, ends[1])):
    os.dup2(end, number)
    os.set_inheritable(number, True)
os.execv(sys.argv[3], sys.argv[3:])
"""


class _Browser:
    """
    Headless Chromium driven over the DevTools protocol on a pipe
    (C{--remote-debugging-pipe}: commands in on its descriptor 3, answers
    out on 4, each a JSON text ending with a NUL byte).  Blocking: use it
    in a thread.  Every wait is bounded.
    """

    def __init__(self, profile: str):
        commands, self._out = os.pipe()
        self._in, answers = os.pipe()
        self._process = subprocess.Popen(
            [sys.executable, "-c", _ON_3_AND_4, str(commands), str(answers),
             CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-extensions", "--disable-background-networking",
             f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            pass_fds=(commands, answers), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(commands)
        os.close(answers)
        self._buffer = b""
        self._last = 0
        self._session = ""

    def send(self, method: str, session: bool = True, **params: Any) -> Dict[str, Any]:
        self._last += 1
        message: Dict[str, Any] = {"id": self._last, "method": method, "params": params}
        if session and self._session:
            message["sessionId"] = self._session
        os.write(self._out, json.dumps(message).encode("utf-8") + b"\0")
        deadline = time.monotonic() + 30
        while True:
            while b"\0" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._in], [], [], left)[0]:
                    raise TimeoutError(f"no answer to {method}")
                chunk = os.read(self._in, 65536)
                if not chunk:
                    raise EOFError("chromium went away")
                self._buffer += chunk
            text, _, self._buffer = self._buffer.partition(b"\0")
            answer = json.loads(text)
            if answer.get("id") == self._last:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", url=url)["targetId"]
        self._session = self.send("Target.attachToTarget", targetId=target,
                                  flatten=True)["sessionId"]

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """
        Evaluate C{expression} every quarter of a second until it is true.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.25)
        raise TimeoutError(f"never true: {expression}; the page says:\n"
                           + str(self.evaluate("document.body.innerText")))

    def close(self) -> None:
        try:
            self.send("Browser.close", session=False)
            self._process.wait(timeout=10)
        except Exception:
            self._process.kill()
            self._process.wait(timeout=10)
        finally:
            os.close(self._out)
            os.close(self._in)


class StatusPageTests(_BalancingTestCase):
    """
    The page, as a browser shows it.
    """

    timeout = 150

    def setUp(self):
        if CHROMIUM is None:
            raise self.skipTest("no chromium to load the page with")

    @defer.inlineCallbacks
    def start(self, token: str = "", *args: str, cache: bool = False):
        """
        Two origins, and a proxy in front of them with a health check each
        second and an admin listener (with C{token}); its route caches
        with C{cache}.
        """
        origins = yield self.start_origins("one", "two")
        admin_port = unused_port()
        proxy = yield self.start_proxy(
            "[upstreams.app]\n" + _servers(origins)
            + '[upstreams.app.health]\ntype = "http"\npath = "/healthz"\ninterval = 1\n'
            'rise = 1\nfall = 1\n\n'
            '[[routes]]\nname = "site"\nupstream = "app"\nlisteners = ["main"]\n'
            + ("cache = true\n" if cache else "") + "\n"
            f'[admin]\nendpoint = "tcp:{admin_port}:interface={HOST}"\n'
            + (f'token = "{token}"\n' if token else ""), *args)
        self.url = f"http://{HOST}:{admin_port}/"
        self.admin_port = admin_port
        return origins, proxy

    def browse(self, *args: str) -> defer.Deferred:
        profile = os.path.abspath(self.mktemp())
        return threads.deferToThread(_chromium, profile, *args, self.url)

    def browser(self) -> _Browser:
        browser = _Browser(os.path.abspath(self.mktemp()))
        self.addCleanup(threads.deferToThread, browser.close)
        return browser

    def text(self, name: str) -> str:
        """
        A JavaScript test that the page's text has C{name}.
        """
        return f"document.body.innerText.includes({json.dumps(name)})"

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
        is shown unhealthy, with the health check's reason; the route shows
        its settings beyond host and path (its C{listeners}).
        """
        origins, proxy = yield self.start()
        statuses = yield threads.deferToThread(_requests, proxy.port, 6)
        self.assertEqual(statuses, [200] * 6)
        yield origins["two"].stop()
        two = f"{HOST}:{origins['two'].port}"
        yield self.backend_state(two, "unhealthy")
        dom = yield self.browse("--dump-dom")
        for name in (f"{HOST}:{origins['one'].port}", two, "site", "Upstream groups",
                     '<div class="setting">listeners ["main"]</div>',
                     "Configuration loaded", "Size now", ">p50 / p99</th>"):
            self.assertIn(name, dom)
        self.assertIn('class="state state-unhealthy">unhealthy<', dom)
        self.assertIn('class="state state-healthy">healthy<', dom)
        self.assertIn("Live, every two seconds.", dom)
        # No cache is configured: its size is not "not known for this store".
        self.assertIn("no cache configured", dom)
        self.assertNotIn("not known for this store", dom)
        # Nor is there anything to purge.
        self.assertIn('<form id="purge" hidden="">', dom)
        # Each chart has its axis and its numbers as a table.
        self.assertIn("<span>15 min ago</span><span>now</span>", dom)
        self.assertIn("<caption>Requests per second, mean per minute</caption>", dom)
        self.assertIn("<caption>Latency p99 and p50, mean per minute</caption>", dom)
        # A screenshot, for a person to look at (and for the docs).
        shot = os.path.abspath(self.mktemp()) + ".png"
        yield self.browse("--window-size=1100,1500", f"--screenshot={shot}")
        self.assertTrue(os.path.getsize(shot) > 10_000)
        target = os.environ.get("TWISTPROXY_SCREENSHOT_DIR")
        if target:
            shutil.copy(shot, os.path.join(target, "status-page.png"))

    @defer.inlineCallbacks
    def test_cache(self):
        """
        With a cache in memory, the page shows its size and offers the
        purge form.
        """
        yield self.start(cache=True)
        dom = yield self.browse("--dump-dom")
        self.assertIn("0 entries, ", dom)
        self.assertNotIn("no cache configured", dom)
        self.assertIn('<form id="purge">', dom)

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

    @defer.inlineCallbacks
    def test_live_and_drain(self):
        """
        The page updates itself: a backend killed after the page was
        loaded is shown unhealthy without reloading it; a drain clicked in
        the page (and confirmed) drains the backend, as the JSON API
        confirms, and the page says so.
        """
        origins, proxy = yield self.start()
        one = f"{HOST}:{origins['one'].port}"
        two = f"{HOST}:{origins['two'].port}"
        browser = self.browser()
        yield threads.deferToThread(browser.open, self.url)
        yield threads.deferToThread(
            browser.wait_for, self.text(two) + " && !" + self.text("unhealthy"))
        yield origins["two"].stop()
        yield threads.deferToThread(
            browser.wait_for, "[...document.querySelectorAll('#groups tr')].some(r => "
            f"r.innerText.includes({json.dumps(two)}) && r.innerText.includes('unhealthy'))")
        yield threads.deferToThread(browser.evaluate, "window.confirm = () => true")
        clicked = yield threads.deferToThread(
            browser.evaluate,
            f"(b => b && (b.click(), true))(document.querySelector("
            f"'[data-key={json.dumps('drain app/' + one)}]'))")
        self.assertTrue(clicked)
        said = yield threads.deferToThread(
            browser.wait_for, "document.getElementById('result').innerText.includes('is draining')"
            " && document.getElementById('result').innerText")
        self.assertIn(one, said)
        code, body = yield threads.deferToThread(_admin, self.admin_port, "GET", "/upstreams")
        [group] = json.loads(body)["groups"]
        self.assertEqual({b["name"]: b["draining"] for b in group["backends"]},
                         {one: True, two: False})

    @defer.inlineCallbacks
    def test_token_asked_once(self):
        """
        With a token, the page asks for it, then shows the backends; the
        token stays in the tab's session storage, out of the page's URL.
        """
        origins, proxy = yield self.start(token="e2e-secret")
        browser = self.browser()
        yield threads.deferToThread(browser.open, self.url)
        yield threads.deferToThread(browser.wait_for, "!document.getElementById('login').hidden")
        yield threads.deferToThread(
            browser.evaluate, "document.getElementById('token').value = 'e2e-secret';"
            "document.getElementById('login').requestSubmit()")
        yield threads.deferToThread(browser.wait_for, self.text(f"{HOST}:{origins['one'].port}"))
        stored = yield threads.deferToThread(
            browser.evaluate, "[sessionStorage.getItem('twistproxy-admin-token'), location.href]")
        self.assertEqual(stored, ["e2e-secret", self.url])

    @defer.inlineCallbacks
    def test_workers(self):
        """
        With two workers, the page shows what both did: the master adds
        their histories of the same seconds up, lists the workers, and
        has the certificates a worker presents.
        """
        origins, proxy = yield self.start("", "--workers", "2")
        yield wait_for_workers(proxy)
        statuses = yield threads.deferToThread(_requests, proxy.port, 20)
        self.assertEqual(statuses, [200] * 20)
        for _ in range(40):
            yield task.deferLater(reactor, 0.25, lambda: None)
            code, body = yield threads.deferToThread(_admin, self.admin_port, "GET", "/history")
            self.assertEqual(code, 200, body)
            shown = json.loads(body)
            if sum(shown["requests"]) == 20:
                break
        self.assertEqual(sum(shown["requests"]), 20)
        self.assertEqual(sum(sum(b["requests"]) for b in shown["backends"].values()), 20)
        dom = yield self.browse("--dump-dom")
        self.assertIn("2 of 2 running", dom)
        self.assertIn("Worker 2: process", dom)
        # The master asked a worker for its certificates: it has none.
        self.assertIn("<li>No TLS listener.</li>", dom)
        for origin in origins.values():
            self.assertIn(f"{HOST}:{origin.port}", dom)
