# -*- test-case-name: tests.test_faults_ops -*-
"""
Fault tests for deploys, workers and idle connections (docs/faults.rst,
"Deploys, workers and idle connections"): the installed proxy, run by
C{twistd} as a child process, with real loopback clients in threads.

  - SIGTERM to the master of two workers while requests are in flight;
  - a worker killed outright (SIGKILL) under load;
  - a TCP relay whose client reads nothing while its backend sends a lot,
    until the idle timeout.

Each test counts what its clients see and is bounded in time.
"""

from __future__ import annotations

import os
import signal
import select
import socket
import threading
import time
from typing import List, Tuple

from twisted.internet import defer, protocol, reactor, threads

from tests.e2e_support import (
    HOST,
    ConnectionClosed,
    OriginFactory,
    RawClient,
    RestartableOrigin,
    proxy_sockets,
)
from tests.test_e2e_balancing import _get, _response, _servers
from tests.test_e2e_stream import _Source, _StreamCase
from tests.test_e2e_workers import _WorkersTestCase

# Seconds the origin of the worker tests takes to answer.
SLOW = 4.0


def _connect(port: int, timeout: float = 3.0) -> Tuple[str, float]:
    """
    In a thread: what a new connection to C{port} meets, C{"refused"} or
    C{"accepted"}, and how long it took to learn it.
    """
    started = time.monotonic()
    try:
        sock = socket.create_connection((HOST, port), timeout=timeout)
    except ConnectionRefusedError:
        return "refused", time.monotonic() - started
    except OSError:
        return "timeout", time.monotonic() - started
    sock.close()
    return "accepted", time.monotonic() - started


class _Outcome:
    """
    One request of a load client: when it was sent, and its status (0 for
    a connection that failed or closed without a whole response).
    """

    def __init__(self, sent: float, status: int):
        self.sent = sent
        self.status = status


def _load(port: int, until: float, outcomes: List[_Outcome], lock: threading.Lock) -> None:
    """
    In a thread: requests one after the other, each on a new connection,
    until the monotonic time C{until}.
    """
    while time.monotonic() < until:
        sent = time.monotonic()
        status = 0
        try:
            client = RawClient(port, timeout=SLOW + 10)
            try:
                client.send(_get())
                response = client.read_response()
                status = response.status if response.complete else 0
            finally:
                client.close()
        except (OSError, ValueError, ConnectionClosed):
            pass
        with lock:
            outcomes.append(_Outcome(sent, status))


class WorkersFaultTests(_WorkersTestCase):
    """
    A master with two workers, in front of an origin that answers every
    request after L{SLOW} seconds.
    """

    timeout = 120

    @defer.inlineCallbacks
    def start_slow(self, drain: float = 30):
        """
        Start the slow origin and the proxy.

        @return: A L{Deferred} firing with C{(proxy, arrived)}, the targets
            of the requests the origin has received so far.
        """
        arrived: List[bytes] = []

        def handler(proto, request):
            arrived.append(request.target)
            reactor.callLater(SLOW, proto.transport.write, _response(200, b"slow", b"complete"))

        origin = RestartableOrigin(reactor, OriginFactory(handler), "slow")
        self.addCleanup(origin.stop)
        yield origin.start()
        proxy = yield self.start_workers(
            "[upstreams.app]\n" + _servers({"slow": origin}) +
            f"\n[shutdown]\ndrain = {drain}\n")
        return proxy, arrived

    @defer.inlineCallbacks
    def test_sigterm_refuses_new_connections(self):
        """
        On SIGTERM, the master and its workers stop accepting at once: a
        new connection half a second later is refused (not left waiting in
        a queue nobody accepts from), the requests in flight on both
        workers complete, and the master exits once they have, well
        before the drain time.
        """
        proxy, arrived = yield self.start_slow()

        def slow():
            client = RawClient(proxy.port, timeout=SLOW + 20)
            try:
                client.send(_get())
                return client.read_response()
            finally:
                client.close()

        answers = [threads.deferToThread(slow) for _ in range(4)]
        deadline = time.monotonic() + 10
        while len(arrived) < 4 and time.monotonic() < deadline:
            yield self.sleep(0.01)
        self.assertEqual(len(arrived), 4)
        started = time.monotonic()
        ended = proxy.stop(grace=40)
        yield self.sleep(0.5)
        probes = []
        for _ in range(5):
            probes.append((yield threads.deferToThread(_connect, proxy.port)))
            yield self.sleep(0.2)
        responses = yield defer.gatherResults(answers)
        yield ended
        took = time.monotonic() - started
        self.log.info("after SIGTERM: new connections {probes}; exited after {took:.1f}s",
                      probes=probes, took=took)
        self.assertEqual([outcome for outcome, _ in probes], ["refused"] * 5)
        self.assertLess(max(elapsed for _, elapsed in probes), 1.0)
        self.assertEqual([(r.status, r.body, r.complete) for r in responses],
                         [(200, b"complete", True)] * 4)
        self.assertFalse(proxy.running)
        self.assertLess(took, 20)

    @defer.inlineCallbacks
    def test_worker_killed_under_load(self):
        """
        A worker killed outright (SIGKILL) under load costs only the
        requests that were in flight on it: six clients sending request
        after request see failures only among the requests sent before the
        kill (at most one per client), every later one succeeds on the
        other worker, and the master starts a new worker in its place.
        """
        proxy, arrived = yield self.start_slow()
        pids = [w["pid"] for w in (yield self.admin(proxy, "/status"))["workers"]]
        outcomes: List[_Outcome] = []
        lock = threading.Lock()
        clients = 6
        until = time.monotonic() + 3 * SLOW
        loads = [threads.deferToThread(_load, proxy.port, until, outcomes, lock)
                 for _ in range(clients)]
        deadline = time.monotonic() + 10
        while len(arrived) < clients and time.monotonic() < deadline:
            yield self.sleep(0.01)
        yield self.sleep(SLOW / 2)
        victim = pids[0]
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        yield defer.gatherResults(loads)
        failed = [o for o in outcomes if o.status != 200]
        after = [o for o in outcomes if o.sent > killed]
        self.log.info("{n} requests, {failed} failed, {after} sent after the kill",
                      n=len(outcomes), failed=len(failed), after=len(after))
        self.assertLessEqual(len(failed), clients)
        self.assertEqual([o for o in failed if o.sent > killed], [])
        self.assertTrue(after)
        self.assertEqual({o.status for o in after}, {200})
        yield proxy.wait_for_line(rf"worker \d \(pid {victim}\) ended: .*signal 9")
        yield proxy.wait_for_line(r"\[worker-\d\] twistproxy listener admin listening",
                                  since=killed, timeout=15)
        workers = (yield self.admin(proxy, "/status"))["workers"]
        self.assertNotIn(victim, [w["pid"] for w in workers])
        self.assertEqual(sorted(w["restarts"] for w in workers), [0, 1])


class TCPIdleFaultTests(_StreamCase):
    """
    A C{protocol = "tcp"} listener with C{timeouts.tcp_idle = 3}, a
    backend that sends 32 MiB, a client that reads nothing.
    """

    timeout = 90

    @defer.inlineCallbacks
    def test_idle_timeout_closes_both_sides(self):
        """
        Once nothing has moved for C{tcp_idle} seconds, the proxy closes
        both connections for good, even with data buffered for a client
        that does not read: the client sees its connection end, the proxy
        holds no socket to the client or the backend, none is left in
        CLOSE-WAIT after the client closes, and the access-log line is
        written when the connection ends, not at shutdown.
        """
        backend = self.listen(protocol.Factory.forProtocol(_Source))
        proxy = yield self.start_proxy(
            self.tcp_config(backend, extra="\n[timeouts]\ntcp_idle = 3\n"))
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        client.connect((HOST, proxy.port))
        self.addCleanup(client.close)
        mine = client.getsockname()[1]

        def held():
            # The proxy's sockets to this client and to the backend.
            return [s for s in proxy_sockets(proxy.pid)
                    if s.remote_port in (mine, backend)]

        def arrived():
            # The backend's bytes reached the client: the relay connected.
            return bool(select.select([client], [], [], 0)[0])

        # Not held() here: on a loaded machine the idle timeout may already
        # have closed the relay by the time this process looks.
        deadline = time.monotonic() + 15
        while not arrived() and time.monotonic() < deadline:
            yield self.sleep(0.05)
        self.assertTrue(arrived(), "the relay never connected")
        deadline = time.monotonic() + 3 + 15
        while held() and time.monotonic() < deadline:
            yield self.sleep(0.1)
        self.assertEqual(held(), [])

        def drain():
            # What the client sees: some bytes, then the end.
            client.settimeout(10)
            total = 0
            try:
                while True:
                    chunk = client.recv(1 << 20)
                    if not chunk:
                        return total, "eof"
                    total += len(chunk)
            except ConnectionResetError:
                return total, "reset"
            except socket.timeout:
                return total, "open"

        got, end = yield threads.deferToThread(drain)
        self.assertIn(end, ("eof", "reset"))
        self.assertLess(got, 32 * 1024 * 1024)
        client.close()
        yield self.sleep(0.5)
        states = [s.state for s in proxy_sockets(proxy.pid)]
        self.assertNotIn("CLOSE_WAIT", states)
        log_path = os.path.join(proxy.cwd, "access.log")
        deadline = time.monotonic() + 10
        lines: List[str] = []
        while not lines and time.monotonic() < deadline:
            if os.path.exists(log_path):
                with open(log_path) as f:
                    lines = [line for line in f if "idle_timeout" in line]
            if not lines:
                yield self.sleep(0.1)
        self.assertTrue(proxy.running)
        self.assertEqual(len(lines), 1, lines)
