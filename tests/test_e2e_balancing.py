# -*- test-case-name: tests.test_e2e_balancing -*-
"""
End-to-end tests of load balancing and failover: the installed proxy, run
by C{twistd} from a configuration file, in front of several real origins
that the tests stop and restart while clients keep sending requests.

The unit tests (L{tests.test_health}, L{tests.test_outlier},
L{tests.test_locality}, L{tests.test_failover}) drive each piece on a fake
clock.  These check what only the assembled proxy on real sockets shows:
that clients see no errors while an origin dies and comes back, that the
proxy notices a dead origin and a revived one within the time its health
check settings promise, that passive outlier detection ejects and returns
an origin, that cookie stickiness survives the loss of an origin, and that
a region's clients fail over to the next region and come back.

Every origin is an L{OriginFactory} in the test process, on trial's real
reactor, listening on an ephemeral loopback port that it keeps across a
restart (L{RestartableOrigin}).  Each origin names itself in an
C{X-Origin} response header and in its body, and answers the health check
path C{/healthz} with C{200 ok}.  Clients are blocking sockets in threads
(L{RawClient}).  Intervals are short (a few tenths of a second), so that
each test takes a few seconds; every test is bounded by C{timeout}.

Discovery of servers in DNS is not tested here: there is no DNS server to
talk to.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Dict, List, Optional, Tuple

from twisted.internet import defer, reactor, threads

from tests.e2e_support import (
    HOST,
    ConnectionClosed,
    E2ETestCase,
    OriginFactory,
    RawClient,
    RestartableOrigin,
    get_request,
    listener_config,
    unused_port,
)

# Headroom for measured times: the proxy's log line has to cross a pipe,
# and both processes share a small, possibly busy machine.
SLACK = 0.35


# The name these tests (and tests.test_e2e_workers) have always used.
_get = get_request


def _response(status: int, name: bytes, body: bytes) -> bytes:
    reason = {200: b"OK", 500: b"Internal Server Error"}.get(status, b"Other")
    return (
        b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\nX-Origin: %s\r\n\r\n%s"
        % (status, reason, len(body), name, body)
    )


class _Outcome:
    """
    What one client request led to.

    @ivar sent: When it was sent (C{time.monotonic()}).
    @ivar received: When its response (or error) arrived.
    @ivar status: The response's status, or C{None} after an error.
    @ivar origin: The origin that answered (its C{X-Origin}), or C{None}.
    @ivar cookie: The response's C{Set-Cookie}, or C{None}.
    @ivar error: What went wrong instead of a response, or C{None}.
    """

    def __init__(self, sent: float, status: Optional[int] = None,
                 origin: Optional[str] = None, cookie: Optional[bytes] = None,
                 error: Optional[str] = None):
        self.sent = sent
        self.received = time.monotonic()
        self.status = status
        self.origin = origin
        self.cookie = cookie
        self.error = error

    def __repr__(self) -> str:
        what = self.error or f"{self.status} from {self.origin}"
        return f"<{what} at {self.sent:.3f}>"


class _Load:
    """
    A client that sends C{GET /} requests one after the other, from a
    thread, until told to stop: on one keep-alive connection (opened again
    only if the proxy closes it), or on a new connection for each request.

    @ivar outcomes: One L{_Outcome} per request, in order.
    """

    # A pause between two requests, so that the clients do not starve the
    # proxy's timers of CPU on a small machine.
    pause = 0.004

    def __init__(self, port: int, keep_alive: bool):
        self.port = port
        self.keep_alive = keep_alive
        self.outcomes: List[_Outcome] = []
        self._stop = threading.Event()

    def start(self) -> defer.Deferred:
        return threads.deferToThread(self._run)

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        client: Optional[RawClient] = None
        try:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    if client is None:
                        client = RawClient(self.port, timeout=5.0)
                    client.send(_get())
                    resp = client.read_response()
                    origin = resp.headers.get(b"x-origin")
                    self.outcomes.append(_Outcome(
                        sent, resp.status, origin.decode("ascii") if origin else None))
                    if not resp.complete:
                        raise ConnectionClosed("response truncated")
                    if not self.keep_alive or resp.headers.get(b"connection") == b"close":
                        client.close()
                        client = None
                except (OSError, ConnectionClosed, ValueError) as e:
                    self.outcomes.append(_Outcome(sent, error=repr(e)))
                    if client is not None:
                        client.close()
                        client = None
                self._stop.wait(self.pause)
        finally:
            if client is not None:
                client.close()


class _BalancingTestCase(E2ETestCase):
    """
    Starts restartable origins and a proxy configured from a TOML text,
    and stops them after the test.
    """

    timeout = 20

    def start_origin(self, name: str, status: Optional[Dict[str, int]] = None) -> defer.Deferred:
        """
        Start an origin that names itself C{name}.  (Unlike
        L{E2ETestCase.start_origin}, a L{RestartableOrigin}, which these
        tests stop and start again.)

        @param status: A mutable C{{"status": code}} the origin answers
            ordinary requests with (200 when not given); the health check
            path C{/healthz} is always answered C{200 ok}.
        @return: A L{Deferred} firing with the L{RestartableOrigin}.
        """
        label = name.encode("ascii")

        def handler(proto, req):
            if req.target == b"/healthz":
                proto.transport.write(_response(200, label, b"ok"))
            else:
                code = status["status"] if status is not None else 200
                proto.transport.write(_response(code, label, b"served by " + label))

        origin = RestartableOrigin(reactor, OriginFactory(handler), name)
        self.addCleanup(self._stop_origin, origin)
        return origin.start().addCallback(lambda _: origin)

    @staticmethod
    def _stop_origin(origin: RestartableOrigin) -> defer.Deferred:
        return origin.stop()

    @defer.inlineCallbacks
    def start_origins(self, *names: str):
        origins = {}
        for name in names:
            origins[name] = yield self.start_origin(name)
        return origins

    def start_proxy(self, config: str, *args: str) -> defer.Deferred:
        """
        Run C{twistd twistproxy --config} with C{config}, to which a
        loopback listener C{main} on an ephemeral port and "no access log"
        are added, and the other options C{args}.

        @return: A L{Deferred} firing with the L{WatchedProxyProcess}.
        """
        return self.start_configured_proxy(listener_config() + config, *args)

    def request(self, port: int, cookie: Optional[bytes] = None) -> defer.Deferred:
        """
        In a thread: one C{GET /} on a new connection, with C{cookie} as its
        C{Cookie} header if given.

        @return: A L{Deferred} firing with an L{_Outcome}.
        """
        def exchange():
            sent = time.monotonic()
            client = RawClient(port, timeout=5.0)
            try:
                client.send(_get(extra=b"Cookie: %s\r\n" % cookie if cookie else b""))
                resp = client.read_response()
            finally:
                client.close()
            origin = resp.headers.get(b"x-origin")
            return _Outcome(sent, resp.status, origin.decode("ascii") if origin else None,
                            resp.headers.get(b"set-cookie"))

        return self.in_thread(exchange)

    @defer.inlineCallbacks
    def under_load(self, port: int, scenario, minimum: int):
        """
        Run C{scenario()} (returning a Deferred) while two clients send
        requests to C{port}, one on a keep-alive connection and one on a
        new connection each time; then check that every request succeeded
        and that each client made more than C{minimum}.

        @return: A Deferred firing with the two L{_Load}s.
        """
        loads = [_Load(port, keep_alive=True), _Load(port, keep_alive=False)]
        yield self.run_loads(loads, scenario)
        for load in loads:
            self.assert_no_errors(load.outcomes)
            self.assertGreater(len(load.outcomes), minimum)
        return loads

    @staticmethod
    @defer.inlineCallbacks
    def run_loads(loads: List[_Load], scenario):
        """
        Run C{scenario()} (returning a Deferred) while C{loads} send
        requests; stop them when it ends, and wait for their threads.
        """
        done = [load.start() for load in loads]
        try:
            yield scenario()
        finally:
            for load in loads:
                load.stop()
            yield defer.gatherResults(done)

    def assert_no_errors(self, outcomes: List[_Outcome]) -> None:
        """
        Every request of C{outcomes} was answered 200: none failed, and no
        connection was refused (a refused one is an outcome with an error).
        """
        bad = [o for o in outcomes if o.status != 200]
        refused = [o for o in bad if o.error and "ConnectionRefused" in o.error]
        self.assertEqual(bad, [], f"{len(bad)} of {len(outcomes)} requests failed, "
                                  f"{len(refused)} of them on a refused connection")


def _servers(origins: Dict[str, RestartableOrigin],
             regions: Optional[Dict[str, str]] = None) -> str:
    """
    The C{servers} array for C{origins}, with a region for each origin
    that C{regions} maps to one.
    """
    items = []
    for name, origin in origins.items():
        url = f"http://{HOST}:{origin.port}"
        region = (regions or {}).get(name)
        items.append(f'{{ url = "{url}", region = "{region}" }}' if region else f'"{url}"')
    return "servers = [" + ", ".join(items) + "]\n"


def _health(interval: float, rise: int, fall: int, type: str = "http") -> str:
    """
    The group's C{health} table: a check of C{type} without jitter (an
    C{http} check asks for C{/healthz}).
    """
    return (
        "\n[upstreams.app.health]\n"
        f'type = "{type}"\n'
        + ('path = "/healthz"\n' if type == "http" else "")
        + f"interval = {interval}\nrise = {rise}\nfall = {fall}\n"
        "jitter = 0\ntimeout = 0.5\n"
    )


def _backend(origin: RestartableOrigin) -> str:
    """
    A regular expression for the proxy's name of C{origin}'s backend.
    """
    return re.escape(f"{HOST}:{origin.port}")


def _state_line(origin: RestartableOrigin, what: str) -> str:
    """
    A regular expression for the log line of a change of C{origin}'s state
    (C{healthy}, C{unhealthy}, C{ejected}, C{returned}).
    """
    return rf"upstream app backend {_backend(origin)} {what}\b"


class ZeroErrorTests(_BalancingTestCase):
    """
    Clients see no errors while origins die and come back, as long as one
    healthy origin remains.
    """

    @defer.inlineCallbacks
    def test_origins_stop_and_restart_under_load(self):
        """
        Three origins behind round robin, with an HTTP health check and one
        retry.  Two clients (one on a keep-alive connection, one opening a
        connection per request) send requests without a break while one
        origin is stopped, then (once the proxy has marked the first one
        down) a second one, and then both are restarted.  Every single
        response is a 200: a request that meets a refused or reset
        connection before the health check notices is retried on another
        origin.  After the restart, the revived origins serve again.
        """
        origins = yield self.start_origins("a", "b", "c")
        interval = 0.3
        proxy = yield self.start_proxy(
            "[upstreams.app]\n" + _servers(origins) + "retries = 1\n"
            + _health(interval, rise=2, fall=2))
        a, b, c = origins["a"], origins["b"], origins["c"]
        served_before = {}

        @defer.inlineCallbacks
        def scenario():
            yield self.sleep(0.4)
            stopped = time.monotonic()
            yield a.stop()
            yield proxy.wait_for_line(_state_line(a, "unhealthy"), stopped, 3)
            yield self.sleep(0.2)
            stopped = time.monotonic()
            yield b.stop()
            yield proxy.wait_for_line(_state_line(b, "unhealthy"), stopped, 3)
            yield self.sleep(0.4)
            restarted = time.monotonic()
            yield a.start()
            yield b.start()
            yield proxy.wait_for_line(_state_line(a, "healthy"), restarted, 3)
            yield proxy.wait_for_line(_state_line(b, "healthy"), restarted, 3)
            served_before.update({name: self._served(o) for name, o in origins.items()})
            yield self.sleep(0.5)

        loads = yield self.under_load(proxy.port, scenario, 100)
        # Back in rotation: each revived origin served requests again.
        for name in ("a", "b"):
            self.assertGreater(self._served(origins[name]), served_before[name])
        self.assertGreater(self._served(c), 0)
        self.log.info("zero errors: {counts} requests, all 200",
                      counts=[len(load.outcomes) for load in loads])

    @staticmethod
    def _served(origin: RestartableOrigin) -> int:
        return sum(1 for r in origin.factory.requests if r.target != b"/healthz")


class DetectionTimeTests(_BalancingTestCase):
    """
    The proxy takes a dead origin out, and a revived one back, within the
    time its settings promise.
    """

    @defer.inlineCallbacks
    def test_health_check_eject_and_restore(self):
        """
        With a health check every I = 0.3 s (no jitter), fall F = 3 and
        rise R = 2, the proxy logs an origin as unhealthy between (F - 1) I
        and F I + I after it stops (the first failed check comes within an
        interval, then F - 1 more intervals pass), and as healthy between
        (R - 1) I and R I + I after it is back.  The other origin is never
        marked down.

        The check is C{tcp}, whose failed check ends as soon as the
        connection is refused, so that a check takes no noticeable time and
        the bounds hold as stated.
        """
        interval, rise, fall = 0.3, 2, 3
        origins = yield self.start_origins("a", "b")
        a, b = origins["a"], origins["b"]
        proxy = yield self.start_proxy(
            "[upstreams.app]\n" + _servers(origins)
            + _health(interval, rise, fall, type="tcp"))
        # Let the first checks pass, and stop the origin half-way between
        # two checks.
        yield self.sleep(interval * 1.5)

        stopped = time.monotonic()
        yield a.stop()
        arrived, _ = yield proxy.wait_for_line(_state_line(a, "unhealthy"), stopped, 5)
        eject = arrived - stopped
        self.assertGreaterEqual(eject, (fall - 1) * interval - 0.02)
        self.assertLessEqual(eject, fall * interval + interval + SLACK)

        yield self.sleep(interval / 2)
        restarted = time.monotonic()
        yield a.start()
        arrived, _ = yield proxy.wait_for_line(_state_line(a, "healthy"), restarted, 5)
        restore = arrived - restarted
        self.assertGreaterEqual(restore, (rise - 1) * interval - 0.02)
        self.assertLessEqual(restore, rise * interval + interval + SLACK)

        self.assertIsNone(proxy.find_line(_state_line(b, "unhealthy")))
        self.log.info(
            "health check: unhealthy after {eject:.3f}s (bounds {lo1:.2f}-{hi1:.2f}), "
            "healthy after {restore:.3f}s (bounds {lo2:.2f}-{hi2:.2f})",
            eject=eject, restore=restore,
            lo1=(fall - 1) * interval, hi1=(fall + 1) * interval + SLACK,
            lo2=(rise - 1) * interval, hi2=(rise + 1) * interval + SLACK,
        )

    @defer.inlineCallbacks
    def test_outlier_eject_and_return(self):
        """
        Without an active check, passive outlier detection with
        C{consecutive_failures = 2}, C{base_ejection = 1} and C{on_5xx =
        true} ejects an origin that answers 500 once it has answered two
        requests in a row so (the log says "ejected"); while it is out the
        other origin serves every request; it returns about one second
        later (the log says "returned") and then receives requests again.
        """
        base = 1.0
        failing = {"status": 500}
        bad = yield self.start_origin("bad", failing)
        good = yield self.start_origin("good")
        proxy = yield self.start_proxy(
            "[upstreams.app]\n" + _servers({"bad": bad, "good": good})
            + "\n[upstreams.app.outlier]\n"
            f"consecutive_failures = 2\nbase_ejection = {base}\non_5xx = true\n")

        began = time.monotonic()
        statuses = []
        while statuses.count(500) < 2 and len(statuses) < 6:
            outcome = yield self.request(proxy.port)
            statuses.append((outcome.status, outcome.origin))
        self.assertEqual(statuses.count((500, "bad")), 2, statuses)
        self.assertEqual([s for s in statuses if s[0] != 500],
                         [(200, "good")] * (len(statuses) - 2))
        ejected, _ = yield proxy.wait_for_line(_state_line(bad, "ejected"), began, 2)

        # Ejected: the good origin takes everything.
        load = _Load(proxy.port, keep_alive=True)
        running = load.start()
        yield self.sleep(base * 0.6)
        load.stop()
        yield running
        self.assert_no_errors(load.outcomes)
        self.assertGreater(len(load.outcomes), 20)
        self.assertEqual({o.origin for o in load.outcomes}, {"good"})
        self.assertEqual(len(bad.factory.requests), 2)

        returned, _ = yield proxy.wait_for_line(_state_line(bad, "returned"), ejected, 3)
        self.assertGreaterEqual(returned - ejected, base - 0.1)
        self.assertLessEqual(returned - ejected, base + SLACK)

        # Back in the rotation.
        failing["status"] = 200
        origins = []
        for _ in range(4):
            outcome = yield self.request(proxy.port)
            self.assertEqual(outcome.status, 200)
            origins.append(outcome.origin)
        self.assertIn("bad", origins)
        self.log.info("outlier: returned {gap:.3f}s after ejected (base_ejection {base})",
                      gap=returned - ejected, base=base)


def _cookie(set_cookie: bytes) -> bytes:
    """
    The C{name=value} part of a C{Set-Cookie} value, as a client sends it
    back.
    """
    return set_cookie.split(b";", 1)[0].strip()


class StickyTests(_BalancingTestCase):
    """
    Cookie stickiness keeps each client on one origin, and moves it, once,
    when that origin goes away.
    """

    @defer.inlineCallbacks
    def test_clients_stay_put_and_move_once(self):
        """
        Three origins with cookie stickiness.  Five clients each get a
        C{Set-Cookie} on their first request, and their next ten requests,
        sent with that cookie, all reach the same origin without a new
        cookie.  Then one client's origin stops, with no health check or
        outlier detection to tell the proxy: that client's very next
        request is retried on another origin and comes back with a new
        C{Set-Cookie} naming that origin, and its next ten requests stay
        there; clients of the other origins are not moved.  A new client
        whose first request the balancer places on the stopped origin is
        served by another one, and its cookie names the origin that served
        it, not the stopped one.
        """
        origins = yield self.start_origins("a", "b", "c")
        proxy = yield self.start_proxy(
            "[upstreams.app]\n" + _servers(origins) + "retries = 1\n"
            + '\n[upstreams.app.sticky]\nsecret = "x"\n')

        clients: List[Tuple[bytes, str]] = []
        for _ in range(5):
            first = yield self.request(proxy.port)
            self.assertEqual(first.status, 200)
            self.assertIsNotNone(first.cookie)
            clients.append((_cookie(first.cookie), first.origin))
        # The first requests were balanced, not all sent to one origin.
        self.assertEqual({origin for _, origin in clients}, {"a", "b", "c"})
        names = dict(clients)
        yield self._stay(proxy.port, clients, 10)

        lost = clients[0][1]
        yield origins[lost].stop()
        moved = []
        for i, (cookie, origin) in enumerate(clients):
            outcome = yield self.request(proxy.port, cookie)
            self.assertEqual(outcome.status, 200)
            if origin == lost:
                self.assertNotEqual(outcome.origin, lost)
                self.assertIsNotNone(outcome.cookie, "no new cookie for a moved client")
                self.assertNotEqual(_cookie(outcome.cookie), cookie)
                clients[i] = (_cookie(outcome.cookie), outcome.origin)
                moved.append(i)
            else:
                self.assertEqual((outcome.origin, outcome.cookie), (origin, None))
        self.assertIn(0, moved)
        yield self._stay(proxy.port, clients, 10)

        # New clients: nothing told the proxy that the origin stopped, and
        # round robin offers every origin in turn, so at least two of these
        # six are first placed on the stopped origin and retried elsewhere.
        names.update(clients)
        for _ in range(6):
            first = yield self.request(proxy.port)
            self.assertEqual(first.status, 200)
            self.assertNotEqual(first.origin, lost)
            self.assertIsNotNone(first.cookie)
            self.assertEqual(names.get(_cookie(first.cookie)), first.origin)

    @defer.inlineCallbacks
    def _stay(self, port: int, clients: List[Tuple[bytes, str]], rounds: int):
        """
        Send C{rounds} requests for each client, interleaved, with its
        cookie; each must reach the client's origin and set no new cookie.
        """
        for _ in range(rounds):
            for cookie, origin in clients:
                outcome = yield self.request(port, cookie)
                self.assertEqual((outcome.status, outcome.origin, outcome.cookie),
                                 (200, origin, None))


class RegionalFailoverTests(_BalancingTestCase):
    """
    A region's clients fail over to the next region when every origin of
    theirs is down, and come back when they are up.
    """

    @defer.inlineCallbacks
    def test_failover_and_return(self):
        """
        Origins eu-1 and eu-2 in region eu-west and us-1 in us-east; the
        C{cidr} locator places 127.0.0.1 clients in eu-west, and
        C{[locality] regions} prefers eu-west, then us-east.  Two clients
        send requests without a break.  All of them reach eu origins; both
        eu origins are stopped together, and once the health check has
        marked both down every request reaches us-1; they are restarted,
        and once both are healthy again every request reaches eu again.
        No client sees an error at any point: C{retries = 2} lets a request
        that meets both dead eu origins before the health check notices
        reach us-1.
        """
        origins = yield self.start_origins("eu-1", "eu-2", "us-1")
        interval = 0.25
        proxy = yield self.start_proxy(
            "[upstreams.app]\n"
            + _servers(origins, {"eu-1": "eu-west", "eu-2": "eu-west", "us-1": "us-east"})
            + "retries = 2\n"
            + _health(interval, rise=2, fall=2)
            + '\n[locator]\ntype = "cidr"\nnetworks = { "127.0.0.0/8" = "eu-west" }\n'
            + '\n[locality]\nregions = ["eu-west", "us-east"]\n')
        eu = [origins["eu-1"], origins["eu-2"]]
        times = {}

        @defer.inlineCallbacks
        def scenario():
            yield self.sleep(0.4)
            times["stopped"] = time.monotonic()
            yield defer.gatherResults([o.stop() for o in eu])
            times["down"] = yield defer.gatherResults([
                proxy.wait_for_line(_state_line(o, "unhealthy"), times["stopped"], 3)
                for o in eu])
            yield self.sleep(0.5)
            times["restarted"] = time.monotonic()
            yield defer.gatherResults([o.start() for o in eu])
            times["up"] = yield defer.gatherResults([
                proxy.wait_for_line(_state_line(o, "healthy"), times["restarted"], 3)
                for o in eu])
            yield self.sleep(0.5)

        loads = yield self.under_load(proxy.port, scenario, 0)
        stopped, restarted = times["stopped"], times["restarted"]
        outcomes = sorted((o for load in loads for o in load.outcomes), key=lambda o: o.sent)
        self.assert_no_errors(outcomes)
        all_down = max(t for t, _ in times["down"])
        all_up = max(t for t, _ in times["up"])
        before = [o.origin for o in outcomes if o.received < stopped]
        failed_over = [o.origin for o in outcomes if all_down <= o.sent < restarted]
        returned = [o.origin for o in outcomes if o.sent >= all_up]
        for phase, seen, wanted in [
            ("before the stop", before, {"eu-1", "eu-2"}),
            ("while eu is down", failed_over, {"us-1"}),
            ("after eu is back", returned, {"eu-1", "eu-2"}),
        ]:
            self.assertGreater(len(seen), 20, phase)
            self.assertEqual(set(seen), wanted, phase)
        self.log.info(
            "failover: {n} requests, all 200; eu down after {down:.3f}s, back after "
            "{up:.3f}s; {a} to eu before, {b} to us-1 while down, {c} to eu after",
            n=len(outcomes), down=all_down - stopped, up=all_up - restarted,
            a=len(before), b=len(failed_over), c=len(returned))


class ReloadTests(_BalancingTestCase):
    """
    SIGHUP reloads the configuration without losing a request.

    @cvar reloaded: The log line that says a reload is done.
    """

    reloaded = "configuration reloaded"

    @defer.inlineCallbacks
    def test_ten_reloads_under_load(self):
        """
        While two clients (keep-alive, and a new connection per request)
        send requests, the group alternates between two origins through
        ten SIGHUP reloads: every request succeeds (no error, no refused
        connection), and both origins serve.
        """
        origins = yield self.start_origins("a", "b")
        proxy = yield self.start_proxy(
            "[upstreams.app]\n" + _servers(origins))
        text = self.config_text(proxy)

        @defer.inlineCallbacks
        def scenario():
            for i in range(10):
                target = origins["b" if i % 2 == 0 else "a"]
                yield self.reload(proxy, re.sub(
                    r"servers = \[.*\]", f'servers = ["http://{HOST}:{target.port}"]', text),
                    self.reloaded)
                yield self.sleep(0.15)

        loads = yield self.under_load(proxy.port, scenario, 50)
        served = {o.origin for load in loads for o in load.outcomes}
        self.assertEqual(served, {"a", "b"})


class ListenerReloadTests(_BalancingTestCase):
    """
    SIGHUP applies listener changes (in a single process).
    """

    @defer.inlineCallbacks
    def test_listener_added_and_removed(self):
        """
        A listener added to the file is listening once SIGHUP has reloaded
        it, and serves; removed again, it stops listening (connections to
        it are refused) while the first listener keeps serving.
        """
        origins = yield self.start_origins("a")
        proxy = yield self.start_proxy(
            "[upstreams.app]\n" + _servers(origins))
        text = self.config_text(proxy)
        port = unused_port()
        yield self.reload(
            proxy, text + f'\n[listeners.extra]\nendpoint = "tcp:{port}:interface={HOST}"\n')
        outcome = yield self.request(port)
        self.assertEqual(outcome.status, 200)
        yield self.reload(proxy, text)
        yield self.assertFailure(self.request(port), ConnectionRefusedError)
        outcome = yield self.request(proxy.port)
        self.assertEqual(outcome.status, 200)
