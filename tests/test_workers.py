"""
Tests for L{twistproxy.workers}: the master process of a proxy with several
workers, driven on a memory reactor with a fake C{spawnProcess}, fake
sockets and a fake admin API of the workers.  What only real processes
show is in L{tests.test_e2e_workers}.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from dataclasses import replace
from typing import Any, Dict, List, Tuple

from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.testing import MemoryReactor, MemoryReactorClock
from twisted.logger import Logger, eventAsJSON, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface.verify import verifyObject

from twistproxy.admin import AdminResource
from twistproxy.config import ConfigError, parse
from twistproxy.signals import check_shareable, reactor_name
from twistproxy.workers import master as master_module
from twistproxy.workers.master import (
    KILL_GRACE,
    MAX_DELAY,
    MIN_DELAY,
    READY_TIMEOUT,
    PYPY_GC_NURSERY,
    STABLE,
    Master,
    _UnixSocket,
    bind,
)
from twistproxy.workers.worker import InheritedEndpoint, _parse_worker_args

CONFIG = (
    "workers = 2\n"
    "[listeners.main]\n"
    'endpoint = "tcp:8080:interface=127.0.0.1"\n'
    "[listeners.alt]\n"
    'endpoint = "tcp6:8443"\n'
    "[upstreams.app]\n"
    'servers = ["http://127.0.0.1:8001"]\n'
    "[shutdown]\n"
    "drain = 10\n"
)


class FakeProcess:
    """
    A process the fake reactor spawned: records its signals, ends when told.
    """

    def __init__(self, pid: int, protocol, args, child_fds):
        self.pid = pid
        self.protocol = protocol
        self.args = args
        self.child_fds = child_fds
        self.signals: List[int] = []
        self.ended = False

    def signalProcess(self, number: int) -> None:
        self.signals.append(number)

    def end(self, reason=None) -> None:
        self.ended = True
        self.protocol.processEnded(Failure(reason or ProcessTerminated(signal=9)))


class ProcessReactor(MemoryReactorClock):
    """
    A memory reactor that "spawns" L{FakeProcess}es.
    """

    def __init__(self):
        super().__init__()
        self.processes: List[FakeProcess] = []

    def spawnProcess(self, protocol, executable, args=(), env=None, path=None,
                     uid=None, gid=None, usePTY=0, childFDs=None):
        process = FakeProcess(1000 + len(self.processes), protocol, list(args), childFDs)
        process.env = env
        protocol.makeConnection(process)
        self.processes.append(process)
        return process


class FakeSocket:
    """
    A bound listening socket, as far as the master looks at it.
    """

    def __init__(self, fd: int, address: Tuple[str, int], family=socket.AF_INET):
        self.fd = fd
        self.address = address
        self.family = family
        self.closed = False

    def fileno(self) -> int:
        return self.fd

    def getsockname(self):
        return self.address

    def close(self) -> None:
        self.closed = True


class MasterTestCase(SynchronousTestCase):
    """
    A master of two workers for the configuration C{CONFIG} (as a file),
    whose workers' admin API answers from C{self.answers}.
    """

    config_text = CONFIG

    def setUp(self):
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.path = os.path.join(self.directory, "proxy.toml")
        self.write(self.config_text)
        self.reactor = ProcessReactor()
        self.sockets: Dict[str, FakeSocket] = {}
        self.asked: List[Tuple[str, bytes, bytes]] = []
        # (method, path) -> answer, or a function of the socket path.
        self.answers: Dict[Tuple[bytes, bytes], Any] = {}
        self.events: List[dict] = []
        self.master = self.make_master()

    def write(self, text: str) -> None:
        with open(self.path, "w") as f:
            f.write(text)

    def bind(self, endpoint: str) -> FakeSocket:
        sock = FakeSocket(10 + len(self.sockets), ("127.0.0.1", 8080 + len(self.sockets)))
        self.sockets[endpoint] = sock
        return sock

    def ask(self, path: str, method: bytes, what: bytes) -> defer.Deferred:
        self.asked.append((path, method, what))
        answer = self.answers.get((method, what), (404, {"error": "not found"}))
        if callable(answer):
            answer = answer(path)
        if isinstance(answer, Exception):
            return defer.fail(answer)
        code, body = answer
        return defer.succeed((code, body if isinstance(body, bytes) else json.dumps(body).encode()))

    def make_master(self, config=None, count: int = 2, worker_args=None) -> Master:
        master = Master(config or parse(self.config_text, self.path), self.reactor, count,
                        worker_args, bind=self.bind, ask=self.ask, executable="/bin/python")
        master.log = Logger(observer=self.events.append)
        self.addCleanup(self.stop, master)
        return master

    def stop(self, master: Master) -> None:
        # Every process ends, so that a stop the test began finishes too
        # (and removes the master's directory).
        d = master.stopService() if master.running else None
        for process in self.reactor.processes:
            if not process.ended:
                process.end(ProcessDone(0))
        if d is not None:
            self.successResultOf(d)

    def start(self) -> None:
        self.master.startService()
        # The workers' log relay publishes to the test too.
        for process in self.reactor.processes:
            process.protocol.log = Logger(observer=self.events.append)

    def messages(self) -> List[str]:
        return [formatEvent(e) for e in self.events]


class StartTests(MasterTestCase):
    """
    The master binds the listeners and starts the workers with them.
    """

    def test_backlog(self):
        """
        A listener's C{backlog} is in the endpoint string the master binds.
        """
        self.master = self.make_master(parse(CONFIG.replace(
            'endpoint = "tcp6:8443"\n', 'endpoint = "tcp6:8443"\nbacklog = 2048\n'), self.path))
        self.start()
        self.assertEqual(sorted(self.sockets),
                         ["tcp6:8443:backlog=2048", "tcp:8080:interface=127.0.0.1"])

    def test_binds_and_spawns(self):
        """
        Each listener's endpoint is bound once, and logged with the same
        words as a single process; each of the two workers gets every
        socket as a file descriptor from 3 on, named by C{--inherit}, its
        own admin socket, and the master's copy of the configuration.
        """
        self.start()
        self.assertEqual(sorted(self.sockets), ["tcp6:8443", "tcp:8080:interface=127.0.0.1"])
        self.assertIn("twistproxy listener main listening on 127.0.0.1:8080", self.messages())
        self.assertEqual(len(self.reactor.processes), 2)
        for index, process in enumerate(self.reactor.processes, 1):
            self.assertEqual(process.child_fds, {0: "w", 1: 1, 2: "r", 3: 10, 4: 11})
            index_arg, admin, inherited, rest, _ = _parse_worker_args(process.args[3:])
            self.assertEqual(process.args[:3], ["/bin/python", "-m", "twistproxy.workers"])
            self.assertEqual(index_arg, index)
            self.assertEqual(inherited, {"main": 3, "alt": 4})
            self.assertTrue(admin.endswith(f"worker-{index}.sock"))
            self.assertEqual(rest[0], "--config")
            with open(rest[1]) as f:
                self.assertEqual(f.read(), self.config_text)
            self.assertEqual(os.stat(os.path.dirname(rest[1])).st_mode & 0o077, 0)

    def test_reactor_passed_on(self):
        """
        Workers run on the master's reactor: one chosen with C{twistd
        --reactor} is named to them with C{--reactor}, and the proxy's own
        (which they install anyway) is not.
        """
        self.start()
        name = reactor_name(self.reactor)
        self.assertEqual([_parse_worker_args(p.args[3:])[4] for p in self.reactor.processes],
                         [name, name])
        self.patch(master_module, "OWN_REACTOR", name)
        self.reactor.processes[0].end()
        self.reactor.advance(MIN_DELAY)
        self.assertEqual(len(self.reactor.processes), 3)
        self.assertIsNone(_parse_worker_args(self.reactor.processes[-1].args[3:])[4])

    def test_pypy_nursery(self):
        """
        Workers that run on PyPy start with C{PYPY_GC_NURSERY} set to the
        size measured to keep PyPy's tail latency down; on CPython nothing
        is added.
        """
        self.patch(os, "environ", {"PATH": "/bin"})
        self.master.pypy = True
        self.start()
        self.assertEqual([p.env for p in self.reactor.processes],
                         [{"PATH": "/bin", "PYPY_GC_NURSERY": PYPY_GC_NURSERY}] * 2)
        cpython = self.make_master(count=1)
        cpython.pypy = False
        cpython.startService()
        self.assertEqual(self.reactor.processes[-1].env, {"PATH": "/bin"})

    def test_pypy_nursery_operator(self):
        """
        A C{PYPY_GC_NURSERY} in the master's environment reaches PyPy
        workers unchanged: the operator's choice wins.
        """
        self.patch(os, "environ", {"PYPY_GC_NURSERY": "8M"})
        self.master.pypy = True
        self.start()
        self.assertEqual([p.env for p in self.reactor.processes],
                         [{"PYPY_GC_NURSERY": "8M"}] * 2)

    def test_quick_mode_worker_args(self):
        """
        A configuration not read from a file (quick mode) reaches the
        workers as the options given to the master.
        """
        config = replace(parse(self.config_text), source=None)
        self.master = self.make_master(config, worker_args=["--upstream", "http://a:1"])
        self.start()
        self.assertEqual(_parse_worker_args(self.reactor.processes[0].args[3:])[3],
                         ["--upstream", "http://a:1"])

    def test_bind_failure(self):
        """
        A socket that cannot be bound fails the start-up (and so twistd)
        with the endpoint in the message; sockets bound so far are closed.
        """
        def bind(endpoint):
            if endpoint.startswith("tcp6"):
                raise OSError(98, "Address already in use")
            return self.bind(endpoint)

        self.master._bind = bind
        e = self.assertRaises(RuntimeError, self.master.startService)
        self.assertIn("tcp6:8443", str(e))
        self.assertTrue(all(s.closed for s in self.sockets.values()))
        self.assertEqual(self.reactor.processes, [])

    def test_worker_status(self):
        """
        The admin API's status lists every worker with its pid and restarts.
        """
        self.start()
        self.assertEqual(self.master.worker_status(), [
            {"index": 1, "pid": 1000, "restarts": 0},
            {"index": 2, "pid": 1001, "restarts": 0},
        ])


class RestartTests(MasterTestCase):
    """
    A worker that dies is started again, after a pause that grows while
    workers die young.
    """

    def test_restarted_after_pause(self):
        """
        A dead worker is replaced after L{MIN_DELAY}, not before; the other
        one is left alone; the restart is counted and logged with the pid
        and the reason.
        """
        self.start()
        first, other = self.reactor.processes
        self.reactor.advance(STABLE)
        first.end()
        self.assertEqual(len(self.reactor.processes), 2)
        self.assertEqual(self.master.worker_status()[0]["pid"], None)
        self.reactor.advance(MIN_DELAY)
        self.assertEqual(len(self.reactor.processes), 3)
        self.assertEqual(self.master.worker_status(), [
            {"index": 1, "pid": 1002, "restarts": 1},
            {"index": 2, "pid": 1001, "restarts": 0},
        ])
        self.assertEqual(other.signals, [])
        self.assertTrue(any("worker 1 (pid 1000) ended" in m and "signal 9" in m
                            for m in self.messages()), self.messages())

    def test_back_off(self):
        """
        Each time the worker dies before it has run for L{STABLE} seconds,
        the pause doubles, up to L{MAX_DELAY}; once one has run that long,
        the pause is short again.
        """
        self.start()
        delays = []
        for _ in range(12):
            self.master.workers[0].process.end()
            delays.append(self.master.workers[0].delay)
            self.reactor.advance(self.master.workers[0].delay)
        self.assertEqual(delays[:4], [MIN_DELAY, 2 * MIN_DELAY, 4 * MIN_DELAY, 8 * MIN_DELAY])
        self.assertEqual(delays[-1], MAX_DELAY)
        self.reactor.advance(STABLE)
        self.master.workers[0].process.end()
        self.assertEqual(self.master.workers[0].delay, MIN_DELAY)

    def test_log_relayed(self):
        """
        A worker's log events (JSON lines on its standard error) are
        published in the master's log with the worker as their system;
        other lines (a traceback before logging started) as warnings.
        """
        self.start()
        line = eventAsJSON({"log_format": "hello {who}", "who": "world",
                            "log_level": None, "log_namespace": "x"}).encode()
        protocol = self.reactor.processes[1].protocol
        protocol.childDataReceived(2, line[:10])
        protocol.childDataReceived(2, line[10:] + b"\nTraceback (most recent call last):\n")
        relayed = [e for e in self.events if e.get("log_system") == "worker-2"]
        self.assertEqual([formatEvent(e) for e in relayed], ["hello world"])
        self.assertEqual(relayed[0]["worker_pid"], 1001)
        self.assertIn("worker-2: Traceback (most recent call last):", self.messages())


class SignalTests(MasterTestCase):
    """
    The master forwards signals to its workers.
    """

    def test_usr1(self):
        """
        SIGUSR1 (reopen the access log) goes to every worker.
        """
        self.start()
        self.master.reopen_access_log()
        self.assertEqual([p.signals for p in self.reactor.processes],
                         [[signal.SIGUSR1], [signal.SIGUSR1]])

    def test_graceful_stop(self):
        """
        Stopping sends SIGTERM to every worker, closes the master's
        sockets, starts no worker again, and finishes once every worker
        has exited, removing the private directory.
        """
        self.start()
        directory = self.master._directory
        d = self.master.stopService()
        self.assertTrue(all(s.closed for s in self.sockets.values()))
        first, second = self.reactor.processes
        self.assertEqual([first.signals, second.signals], [[signal.SIGTERM]] * 2)
        first.end(ProcessDone(0))
        self.reactor.advance(MAX_DELAY)
        self.assertEqual(len(self.reactor.processes), 2)
        self.assertNoResult(d)
        second.end(ProcessDone(0))
        self.successResultOf(d)
        self.assertFalse(os.path.exists(directory))

    def test_second_term(self):
        """
        A second SIGTERM (L{Master.stop_now}) sends the workers a second
        SIGTERM, which ends their drain at once.
        """
        self.start()
        self.master.stopService()
        self.master.stop_now()
        self.assertEqual(self.reactor.processes[0].signals, [signal.SIGTERM] * 2)

    def test_drain_deadline(self):
        """
        Workers still there C{shutdown.drain} plus L{KILL_GRACE} seconds
        after the stop began are killed.
        """
        self.start()
        d = self.master.stopService()
        self.reactor.advance(10 + KILL_GRACE - 0.1)
        self.assertNotIn(signal.SIGKILL, self.reactor.processes[0].signals)
        self.reactor.advance(0.1)
        self.assertEqual(self.reactor.processes[0].signals, [signal.SIGTERM, signal.SIGKILL])
        for process in self.reactor.processes:
            process.end()
        self.successResultOf(d)

    def test_stop_cancels_restart(self):
        """
        A worker waiting to be started again when the stop comes is not.
        """
        self.start()
        self.reactor.processes[0].end()
        d = self.master.stopService()
        self.reactor.processes[1].end(ProcessDone(0))
        self.successResultOf(d)
        self.reactor.advance(MAX_DELAY)
        self.assertEqual(len(self.reactor.processes), 2)


class RotationTests(MasterTestCase):
    """
    The master rotates the workers' access log by size.
    """

    def test_rotated_by_size(self):
        """
        Checked every second: once the file has C{max_size} bytes, it is
        moved to C{path.1} and every worker is told to reopen it (SIGUSR1);
        the workers themselves do not rotate.
        """
        log = os.path.join(self.directory, "access.log")
        self.config_text = CONFIG + f'[access_log]\npath = "{log}"\nmax_size = 4096\n'
        self.write(self.config_text)
        self.master = self.make_master()
        self.start()
        with open(log, "wb") as f:
            f.write(b"x" * 4095)
        self.reactor.advance(1.0)
        self.assertEqual([p.signals for p in self.reactor.processes], [[], []])
        with open(log, "ab") as f:
            f.write(b"x")
        self.reactor.advance(1.0)
        self.assertEqual(os.path.getsize(log + ".1"), 4096)
        self.assertEqual([p.signals for p in self.reactor.processes],
                         [[signal.SIGUSR1], [signal.SIGUSR1]])


class ReloadTests(MasterTestCase):
    """
    SIGHUP and C{POST /reload}: the master checks the file, the workers
    reload it.
    """

    def test_valid(self):
        """
        A valid file replaces the master's copy and every worker is asked
        to reload; no problem is reported.
        """
        self.start()
        self.answers[b"POST", b"/reload"] = (200, {"ok": True, "problems": []})
        new = self.config_text.replace("8001", "8002")
        self.write(new)
        self.assertEqual(self.successResultOf(self.master.hangup()), [])
        self.assertEqual([a[1:] for a in self.asked], [(b"POST", b"/reload")] * 2)
        self.assertEqual(self.master.config.upstreams["app"].servers[0].port, 8002)
        with open(os.path.join(self.master._directory, "config.toml")) as f:
            self.assertEqual(f.read(), new)

    def test_invalid_refused(self):
        """
        A file that fails validation never reaches the workers: the
        problem is returned and logged, and the running configuration and
        the workers' copy stay.
        """
        self.start()
        self.write(self.config_text.replace("[upstreams.app]", "[upstreams.app]\nbogus = 1"))
        problems = self.successResultOf(self.master.hangup())
        self.assertEqual(len(problems), 1)
        self.assertIn("upstreams.app.bogus", problems[0])
        self.assertEqual(self.asked, [])
        self.assertTrue(any("configuration reload refused" in m for m in self.messages()))
        with open(os.path.join(self.master._directory, "config.toml")) as f:
            self.assertEqual(f.read(), self.config_text)

    def test_worker_problems(self):
        """
        Problems a worker reports (certificates, say: its admin API
        answers C{409} with them) are returned once each; a worker that
        cannot be reached is named.
        """
        self.start()

        def answer(path):
            if path.endswith("worker-2.sock"):
                return ConnectionRefusedError("refused")
            return 409, {"ok": False, "problems": ["bad certificate"]}

        self.answers[b"POST", b"/reload"] = answer
        problems = self.successResultOf(self.master.hangup())
        self.assertEqual(problems[0], "bad certificate")
        self.assertIn("worker 2", problems[1])


class ListenerChangeTests(MasterTestCase):
    """
    A reload that changes listeners starts a new generation of workers
    with the new sockets, then drains the old one.
    """

    def setUp(self):
        super().setUp()
        self.start()
        self.old = list(self.reactor.processes)
        self.write(self.config_text.replace("tcp6:8443", "tcp6:9443"))

    def test_new_generation(self):
        """
        The moved listener's socket is bound; two new workers start with
        the kept socket and the new one; once both answer, the old workers
        get SIGTERM (and are not started again when they exit), the old
        socket is closed and the kept one is not.
        """
        d = self.master.hangup()
        self.assertEqual(len(self.reactor.processes), 4)
        new = self.reactor.processes[2:]
        kept, moved = self.sockets["tcp:8080:interface=127.0.0.1"], self.sockets["tcp6:8443"]
        self.assertEqual(new[0].child_fds, {0: "w", 1: 1, 2: "r", 3: 10, 4: 12})
        self.assertTrue(_parse_worker_args(new[0].args[3:])[1].endswith("worker-1.1.sock"))
        self.assertNoResult(d)
        self.assertEqual([p.signals for p in self.old], [[], []])
        self.answers[b"GET", b"/status"] = (200, {})
        self.reactor.advance(0.1)
        self.assertEqual(self.successResultOf(d), [])
        self.assertEqual([p.signals for p in self.old], [[signal.SIGTERM]] * 2)
        self.assertEqual([p.signals for p in new], [[], []])
        self.assertEqual((kept.closed, moved.closed), (False, True))
        self.assertEqual([w["pid"] for w in self.master.worker_status()], [1002, 1003])
        self.assertEqual(self.master.config.listeners[1].endpoint, "tcp6:9443")
        for process in self.old:
            process.end(ProcessDone(0))
        self.reactor.advance(MAX_DELAY)
        self.assertEqual(len(self.reactor.processes), 4)
        self.assertTrue(any("twistproxy listener alt listening on" in m
                            for m in self.messages()[-4:]), self.messages())

    def test_one_at_a_time(self):
        """
        A reload while the new workers of the previous one are starting is
        refused; once they answer, reloads are possible again.
        """
        d = self.master.hangup()
        [problem] = self.successResultOf(self.master.hangup())
        self.assertIn("new workers are still starting", problem)
        self.assertEqual(len(self.reactor.processes), 4)
        self.answers[b"GET", b"/status"] = (200, {})
        self.answers[b"POST", b"/reload"] = (200, {"ok": True, "problems": []})
        self.reactor.advance(0.1)
        self.assertEqual(self.successResultOf(d), [])
        self.assertEqual(self.successResultOf(self.master.hangup()), [])

    def test_bind_failure(self):
        """
        A new listener that cannot be bound refuses the reload: no worker
        starts, the running configuration stays.
        """
        def bind(endpoint):
            raise OSError(98, "Address already in use")

        self.master._bind = bind
        config = self.master.config
        [problem] = self.successResultOf(self.master.hangup())
        self.assertIn("listeners.alt.endpoint: cannot listen on 'tcp6:9443'", problem)
        self.assertEqual(len(self.reactor.processes), 2)
        self.assertIs(self.master.config, config)

    def test_new_workers_never_answer(self):
        """
        New workers that do not answer within L{READY_TIMEOUT} are
        stopped, the old ones go on with the old configuration and
        sockets, and the reload reports the problem.
        """
        d = self.master.hangup()
        self.reactor.advance(READY_TIMEOUT + 0.1)
        [problem] = self.successResultOf(d)
        self.assertIn("the new workers did not start", problem)
        self.assertEqual([p.signals for p in self.old], [[], []])
        self.assertEqual([p.signals for p in self.reactor.processes[2:]], [[signal.SIGTERM]] * 2)
        self.assertTrue(self.sockets["tcp6:9443"].closed)
        self.assertFalse(self.sockets["tcp6:8443"].closed)
        self.assertEqual(self.master.config.listeners[1].endpoint, "tcp6:8443")
        self.assertEqual([w["pid"] for w in self.master.worker_status()], [1000, 1001])

    def test_stop_waits_for_retiring(self):
        """
        A stop during the old generation's drain waits for it too.
        """
        self.answers[b"GET", b"/status"] = (200, {})
        self.assertEqual(self.successResultOf(self.master.hangup()), [])
        self.assertFalse(self.master._replacing)
        d = self.master.stopService()
        for process in self.reactor.processes[2:]:
            process.end(ProcessDone(0))
        self.assertNoResult(d)
        for process in self.old:
            process.end(ProcessDone(0))
        self.successResultOf(d)


class AdminTests(MasterTestCase):
    """
    The admin API of the master asks every worker and sums up.
    """

    def setUp(self):
        super().setUp()
        self.start()
        self.treq = StubTreq(AdminResource(self.master, "", self.master, self.reactor))

    def get(self, path: str, method: str = "GET"):
        response = self.successResultOf(self.treq.request(method, "http://admin.invalid" + path))
        body = self.successResultOf(response.content())
        return response.code, body

    def test_status_lists_workers(self):
        """
        C{/status} has the listeners' bound addresses and the workers.
        """
        code, body = self.get("/status")
        status = json.loads(body)
        self.assertEqual(code, 200)
        self.assertEqual(status["listeners"][0]["address"], "127.0.0.1:8080")
        self.assertEqual([w["pid"] for w in status["workers"]], [1000, 1001])

    def test_certificates_from_a_worker(self):
        """
        C{/status} has the TLS certificates of the first worker that
        answers, which the master does not load; with no worker
        answering, they are not known (C{null}).
        """
        served = [{"listener": "web", "names": ["a.example"], "not_after": "2030-01-01"}]
        self.answers[b"GET", b"/status"] = lambda path: (
            (503, {"error": "starting"}) if "worker-1" in path
            else (200, {"certificates": served}))
        code, body = self.get("/status")
        self.assertEqual((code, json.loads(body)["certificates"]), (200, served))
        self.answers[b"GET", b"/status"] = (503, {"error": "starting"})
        code, body = self.get("/status")
        self.assertEqual((code, json.loads(body)["certificates"]), (200, None))

    def test_upstreams_per_worker(self):
        """
        C{/upstreams} shows each worker's view of the groups.
        """
        self.answers[b"GET", b"/upstreams"] = (200, {"groups": [{"name": "app"}]})
        code, body = self.get("/upstreams")
        self.assertEqual(json.loads(body), {"workers": [
            {"index": 1, "pid": 1000, "groups": [{"name": "app"}]},
            {"index": 2, "pid": 1001, "groups": [{"name": "app"}]},
        ]})

    def test_drain_everywhere(self):
        """
        Draining a backend asks every worker; an unknown one is a 404.
        """
        path = b"/upstreams/app/127.0.0.1:8001/drain"
        self.answers[b"POST", path] = (200, {"draining": True})
        code, body = self.get(path.decode(), "POST")
        self.assertEqual(code, 200)
        self.assertEqual([a[2] for a in self.asked], [path, path])
        code, body = self.get("/upstreams/app/nope/drain", "POST")
        self.assertEqual(code, 404)
        self.assertIn("nope", json.loads(body)["error"])

    def test_drain_failure_is_an_error(self):
        """
        A worker that could not drain the backend makes the answer an
        error, not a success.
        """
        path = b"/upstreams/app/127.0.0.1:8001/drain"
        self.answers[b"POST", path] = (
            lambda socket: (200, {"draining": True}) if "worker-1" in socket
            else (500, {"error": "internal error"}))
        code, _ = self.get(path.decode(), "POST")
        self.assertEqual(code, 500)
        [failure] = self.flushLoggedErrors(RuntimeError)
        self.assertEqual(str(failure.value), "worker 2: internal error")

    def test_reload(self):
        """
        C{POST /reload} reports the workers' outcome.
        """
        self.answers[b"POST", b"/reload"] = (200, {"ok": True, "problems": []})
        code, body = self.get("/reload", "POST")
        self.assertEqual(json.loads(body), {"reloaded": "configuration", "ok": True,
                                            "problems": []})

    def test_metrics_summed(self):
        """
        C{/metrics} is the sum of the workers' metrics, with the number of
        workers and of restarts; a worker that does not answer is left
        out.
        """
        pages = {
            "worker-1.sock": b'twistproxy_requests_total{route="-"} 3\n',
            "worker-2.sock": b'twistproxy_requests_total{route="-"} 4\n',
        }
        self.answers[b"GET", b"/metrics"] = lambda path: (200, pages[os.path.basename(path)])
        self.reactor.processes[0].end()
        self.reactor.advance(MIN_DELAY)
        pages["worker-1.sock"] = b'twistproxy_requests_total{route="-"} 1\n'
        code, body = self.get("/metrics")
        values = {s.name: s.value for f in text_string_to_metric_families(body.decode())
                  for s in f.samples}
        self.assertEqual(values, {"twistproxy_requests_total": 5.0, "twistproxy_workers": 2.0,
                                  "twistproxy_worker_restarts_total": 1.0})
        self.answers[b"GET", b"/metrics"] = lambda path: (
            ConnectionRefusedError() if "worker-1" in path else (200, pages["worker-2.sock"]))
        code, body = self.get("/metrics")
        self.assertIn(b"twistproxy_requests_total{route=\"-\"} 4.0", body)


class CachePurgeTests(MasterTestCase):
    """
    C{POST /cache/purge} on the master purges in every worker.
    """

    config_text = CONFIG + '[[routes]]\nupstream = "app"\ncache = true\n'

    def setUp(self):
        super().setUp()
        self.start()
        self.treq = StubTreq(AdminResource(self.master, "", self.master, self.reactor))

    def purge(self, query: str):
        response = self.successResultOf(
            self.treq.post("http://admin.invalid/cache/purge?" + query))
        return response.code, json.loads(self.successResultOf(response.content()))

    def test_every_worker_purges(self):
        """
        Every worker is asked with the same query, and the answer adds up
        what each removed.
        """
        purged = {"worker-1.sock": 2, "worker-2.sock": 3}
        self.answers[b"POST", b"/cache/purge?prefix=http%3A%2F%2Fa%2Fstatic%2F"] = (
            lambda path: (200, {"purged": purged[os.path.basename(path)]}))
        code, body = self.purge("prefix=http://a/static/")
        self.assertEqual((code, body), (200, {"purged": 5, "prefix": "http://a/static/"}))
        self.assertEqual(len(self.asked), 2)

    def test_worker_failure_is_an_error(self):
        """
        A worker that could not purge makes the answer an error, not a
        partial success.
        """
        self.answers[b"POST", b"/cache/purge?tag=t"] = (
            lambda path: (200, {"purged": 1}) if "worker-1" in path
            else (500, {"error": "store down"}))
        code, body = self.purge("tag=t")
        self.assertEqual(code, 500)
        self.flushLoggedErrors(RuntimeError)

    def test_not_found_without_cached_route(self):
        """
        Without a route that caches there is nothing to purge: C{404}.
        """
        self.master.config = parse(CONFIG, self.path)
        code, _ = self.purge("url=http://a/")
        self.assertEqual(code, 404)


class HistoryTests(MasterTestCase):
    """
    C{GET /history} on the master adds every worker's history up.
    """

    def setUp(self):
        super().setUp()
        self.start()
        self.reactor.advance(7000)
        self.treq = StubTreq(AdminResource(self.master, "", self.master, self.reactor))

    def test_adds_up(self):
        """
        Every worker is asked for its digest of the same seconds; the page
        gets their sum, each state change saying which worker saw it, and
        a worker that does not answer counts for nothing.
        """
        from twistproxy.admin.history import empty_digest

        def digest(path):
            if "worker-2" in path:
                return 503, {"error": "starting"}
            body = empty_digest(7000)
            body["total"]["requests"][-1] = 5
            body["events"] = [{"time": 6990.0, "upstream": "app", "backend": "b",
                               "from": "healthy", "to": "unhealthy", "detail": ""}]
            return 200, body

        self.answers[b"GET", b"/history/raw?end=7000"] = digest
        response = self.successResultOf(self.treq.get("http://admin.invalid/history"))
        self.assertEqual(response.code, 200)
        shown = json.loads(self.successResultOf(response.content()))
        self.assertEqual([a[2] for a in self.asked][-2:], [b"/history/raw?end=7000"] * 2)
        self.assertEqual(sum(shown["requests"]), 5)
        self.assertEqual([e["worker"] for e in shown["timeline"]], [1])


class ShareableTests(SynchronousTestCase):
    """
    Which listeners workers can share, and how they are bound and adopted.
    """

    def test_refused_endpoints(self):
        """
        Only tcp:, tcp6: and systemd: listeners can be shared; others are refused
        with the listener's path and the way out.
        """
        for endpoint in ("unix:/tmp/x.sock", "ssl:443:privateKey=k.pem"):
            config = parse(CONFIG.replace("tcp6:8443", endpoint))
            e = self.assertRaises(ConfigError, check_shareable, config)
            self.assertEqual(e.path, "listeners.alt.endpoint")
            self.assertIn("workers = 1", e.problem)
        check_shareable(parse(CONFIG))
        check_shareable(parse(CONFIG.replace("tcp6:8443", "systemd:domain=INET:index=0")))

    def test_bind(self):
        """
        L{bind} gives a listening, non-blocking socket on the endpoint's
        interface and port, with its backlog.
        """
        sock = bind("tcp:0:interface=127.0.0.1:backlog=7")
        self.addCleanup(sock.close)
        self.assertEqual(sock.getsockname()[0], "127.0.0.1")
        self.assertFalse(sock.getblocking())
        self.assertEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN), 1)

    def test_inherited_endpoint(self):
        """
        An inherited socket listens by being adopted, with its family; the
        inherited descriptor is open while the reactor adopts it (the
        probe of its family did not close it) and closed once it has (the
        port listens on a copy), so that the socket stops listening when
        the port does, not when the worker exits.
        """
        sock = socket.socket(socket.AF_INET6)
        self.addCleanup(sock.close)
        inherited = os.dup(sock.fileno())
        opened = []

        class Adopting(MemoryReactor):
            def adoptStreamPort(self, fd, family, factory):
                opened.append(os.fstat(fd) is not None)
                return MemoryReactor.adoptStreamPort(self, fd, family, factory)

        reactor = Adopting()
        endpoint = InheritedEndpoint(reactor, inherited)
        verifyObject(IStreamServerEndpoint, endpoint)
        factory = object()
        endpoint.listen(factory)
        self.assertEqual(reactor.adoptedPorts, [(inherited, socket.AF_INET6, factory)])
        self.assertEqual(opened, [True])
        self.assertRaises(OSError, os.fstat, inherited)
        self.assertEqual(sock.family, socket.AF_INET6)

    def test_inherited_socket_stays_non_blocking(self):
        """
        The listening socket the master and every worker share stays
        non-blocking while a new worker adopts it, not only afterwards,
        even where making a socket object of the descriptor sets the
        socket's blocking mode from the default timeout (PyPy: blocking
        with none, CPython leaves it alone): the other workers accept()
        from it meanwhile, and one that blocked there would leave the
        connection it had just accepted unanswered.  The default timeout
        is the program's again afterwards.
        """
        sock = socket.socket()
        self.addCleanup(sock.close)
        sock.setblocking(False)
        shared = []

        class PyPyLike(MemoryReactor):
            def adoptStreamPort(self, fd, family, factory):
                # What PyPy's socket.fromfd does to the descriptor.
                os.set_blocking(fd, socket.getdefaulttimeout() != 0)
                # What a worker accepting from the socket now would meet.
                shared.append(os.get_blocking(sock.fileno()))
                return MemoryReactor.adoptStreamPort(self, fd, family, factory)

        default = socket.getdefaulttimeout()
        InheritedEndpoint(PyPyLike(), os.dup(sock.fileno())).listen(object())
        self.assertEqual(shared, [False])
        self.assertFalse(os.get_blocking(sock.fileno()))
        self.assertEqual(socket.getdefaulttimeout(), default)

    def test_admin_socket_agent(self):
        """
        The master reaches a worker's admin API through an agent endpoint
        factory that maps every URI to the worker's Unix socket.
        """
        factory = _UnixSocket(MemoryReactor(), "/run/w.sock")
        verifyObject(IAgentEndpointFactory, factory)
        endpoint = factory.endpointForURI(None)
        self.assertIsInstance(endpoint, UNIXClientEndpoint)
        self.assertEqual(endpoint._path, "/run/w.sock")

    def test_worker_args(self):
        """
        The worker's own options come before C{--}, twistproxy's after.
        """
        self.assertEqual(
            _parse_worker_args(["--index", "2", "--admin", "/r/w.sock", "--inherit", "a=3",
                                "--inherit", "b=4", "--", "--config", "c.toml"]),
            (2, "/r/w.sock", {"a": 3, "b": 4}, ["--config", "c.toml"], None))
        self.assertEqual(
            _parse_worker_args(["--index", "1", "--admin", "/r/w.sock",
                                "--reactor", "a.B", "--", "--demo"]),
            (1, "/r/w.sock", {}, ["--demo"], "a.B"))
        self.assertRaises(SystemExit, _parse_worker_args, ["--bogus", "1", "--"])


class ACMETests(MasterTestCase):
    """
    With ACME certificates the master orders and renews them once for all
    workers: the challenge answers go into a directory every worker reads,
    and every worker reloads its certificates after each one installed.
    """

    def setUp(self):
        storage = os.path.join(os.path.abspath(self.mktemp()), "acme")
        self.config_text = CONFIG + (
            "[listeners.main.tls]\n"
            'acme = ["www.example.com"]\n'
            "[acme]\n"
            'email = "ops@example.com"\n'
            f'storage = "{storage}"\n')
        super().setUp()

    def test_renewals_start_once_workers_answer(self):
        """
        The master's renewal of the certificate (a stand-in, so due at
        once) is planned only once every worker's admin API answers, so
        that one is there to answer the CA; the workers renew nothing
        themselves (they are given the master's answers directory).
        """
        self.start()
        [renewal] = self.master.renewals
        self.assertEqual(renewal.names, ("www.example.com",))
        self.reactor.advance(1)
        self.assertEqual((renewal._call, renewal.renewing), (None, False))
        self.answers[b"GET", b"/status"] = (200, {})
        self.reactor.advance(0.1)
        self.reactor.advance(0)
        self.assertTrue(renewal.renewing)

    def test_answers_shared_with_workers(self):
        """
        An HTTP-01 answer the master's orderer adds is found by a worker's
        answers read from the directory beside its admin socket.
        """
        from twistproxy.acme.challenges import ChallengeFiles
        from twistproxy.workers.worker import CHALLENGES

        self.start()
        [renewal] = self.master.renewals
        issuer = renewal._obtain.func.__self__._issuer
        issuer.challenges.add(b"tok", b"tok.thumb")
        _, admin, _, _, _ = _parse_worker_args(self.reactor.processes[0].args[3:])
        worker = ChallengeFiles(os.path.join(os.path.dirname(admin), CHALLENGES), self.reactor)
        self.assertEqual(worker.answer(b"/.well-known/acme-challenge/tok"), b"tok.thumb")

    def test_installed_reloads_every_worker(self):
        """
        Once a certificate is renewed, every worker is asked to reload
        (which reads the certificates again); one that refuses is logged.
        """
        self.start()
        self.answers[b"GET", b"/status"] = (200, {})
        self.reactor.advance(0.1)
        [renewal] = self.master.renewals
        renewal._obtain = lambda: defer.succeed(None)

        def answer(path):
            if path.endswith("worker-2.sock"):
                return 409, {"ok": False, "problems": ["bad certificate"]}
            return 200, {"ok": True, "problems": []}

        self.answers[b"POST", b"/reload"] = answer
        self.asked.clear()
        self.successResultOf(renewal.renew())
        self.assertEqual([a[1:] for a in self.asked], [(b"POST", b"/reload")] * 2)
        self.assertTrue(any("worker 2 did not take the new certificates" in m
                            for m in self.messages()), self.messages())

    def test_reload_follows_names(self):
        """
        A reload that changes the ACME names renews the new ones in the
        master, in place of the old.
        """
        self.start()
        self.answers[b"GET", b"/status"] = (200, {})
        self.answers[b"POST", b"/reload"] = (200, {"ok": True, "problems": []})
        self.reactor.advance(0.1)
        [old] = self.master.renewals
        self.write(self.config_text.replace("www.example.com", "api.example.com"))
        self.assertEqual(self.successResultOf(self.master.hangup()), [])
        self.assertEqual([r.names for r in self.master.renewals], [("api.example.com",)])
        self.assertIsNone(old._call)
        self.reactor.advance(0.1)
        self.reactor.advance(0)
        self.assertTrue(self.master.renewals[0].renewing)
