# -*- test-case-name: tests.test_workers -*-
"""
The master process of a proxy with workers (see L{twistproxy.workers}): it
binds the listeners' sockets, starts and restarts the workers, forwards
signals and reloads to them, and serves the admin API and the metrics for
all of them.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, List, Optional, Sequence
from urllib.parse import urlencode

from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.endpoints import (
    AdoptedStreamServerEndpoint,
    UNIXClientEndpoint,
    serverFromString,
)
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.internet.task import LoopingCall, deferLater
from twisted.internet.testing import MemoryReactor
from twisted.logger import Logger, eventFromJSON
from twisted.python.failure import Failure
from twisted.web.client import Agent, readBody
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from twistproxy import build
from twistproxy.accesslog import rotate
from twistproxy.acme import store as acme_store
from twistproxy.acme.challenges import ChallengeFiles
from twistproxy.admin.history import combine as combine_history
from twistproxy.config import ConfigError, ProxyConfig, load
from twistproxy.config.parse import acme_certificates
from twistproxy.metrics import combine
from twistproxy.net import authority
from twistproxy.quiet import QuietPool
from twistproxy.service import ListenerService, check_reloadable
from twistproxy.signals import OWN_REACTOR, check_shareable, reactor_name
from twistproxy.workers.worker import CHALLENGES

# Pause before starting a worker again: doubled each time one dies within
# STABLE seconds of its start, up to MAX_DELAY.
MIN_DELAY = 0.1
MAX_DELAY = 30.0
STABLE = 10.0

# Seconds a worker gets past shutdown.drain before it is killed.
KILL_GRACE = 5.0

# Seconds the master waits for a worker's admin API to answer.
ASK_TIMEOUT = 30.0

# Seconds new workers get to answer before a reload gives up on them.
READY_TIMEOUT = 20.0

_CONFIG_COPY = "config.toml"

# PyPy's garbage collector reads the size of its nursery when the
# interpreter starts.  Measured, 32 MiB instead of its default took PyPy's
# p99 from six to ten times nginx's to about nginx's (docs/performance.rst);
# PyPy workers get it unless the operator set one.
PYPY_GC_NURSERY = "32M"


def bind(endpoint: str) -> socket.socket:
    """
    A listening, non-blocking socket for a C{tcp:} or C{tcp6:} endpoint
    string, bound as C{reactor.listenTCP} would bind it (port, interface,
    backlog); for a C{systemd:} one, a copy of the socket systemd passed.

    @raises OSError: if it cannot be bound.
    """
    # The endpoint parser works out port, interface and backlog (or which
    # inherited descriptor); a memory reactor records what it would listen
    # on without listening.
    recorder = MemoryReactor()
    parsed = serverFromString(recorder, endpoint)
    if isinstance(parsed, AdoptedStreamServerEndpoint):
        # Not listened with: that would close the descriptor.
        sock = socket.socket(parsed.addressFamily, socket.SOCK_STREAM,
                             fileno=os.dup(parsed.fileno))
        sock.setblocking(False)
        return sock
    parsed.listen(Factory())
    port, _, backlog, interface = recorder.tcpServers[0]
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((interface, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _address(sock: socket.socket) -> str:
    return authority(*sock.getsockname()[:2])


class _SharedListener:
    """
    A listening socket the master bound for its workers.  It answers the
    admin API's questions as a listener service does (C{port.getHost()}).
    """

    def __init__(self, name: str, sock: socket.socket):
        self.name = name
        self.socket = sock
        self.port = self

    def getHost(self):
        host, port = self.socket.getsockname()[:2]
        if self.socket.family == socket.AF_INET6:
            return IPv6Address("TCP", host, port)
        return IPv4Address("TCP", host, port)


@dataclass(eq=False)
class _Worker:
    """
    One worker slot: the process now in it, and its history.
    """

    index: int
    generation: int = 0
    process: Any = None
    pid: Optional[int] = None
    started: float = 0.0
    restarts: int = 0
    delay: float = 0.0
    restart: Any = None
    ended: Optional[defer.Deferred] = None


class _WorkerProtocol(ProcessProtocol):
    """
    The master's end of one worker process: relays its log, reports its
    end.
    """

    log = Logger()

    def __init__(self, master: Master, worker: _Worker):
        self._master = master
        self._worker = worker
        self._partial = b""

    def childDataReceived(self, fd: int, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line.strip():
                self._relay(line)

    def _relay(self, line: bytes) -> None:
        system = f"worker-{self._worker.index}"
        try:
            event = eventFromJSON(line.decode("utf-8"))
        except ValueError:
            # Not an event: what Python writes before logging starts (an
            # import error, a traceback).
            self.log.warn("{system}: {line}", system=system,
                          line=line.decode("utf-8", "replace"))
            return
        event["log_system"] = system
        event["worker_pid"] = self._worker.pid
        self.log.observer(event)

    def processEnded(self, reason: Failure) -> None:
        if self._partial.strip():
            self._relay(self._partial)
        self._master._ended(self._worker, reason)


@implementer(IAgentEndpointFactory)
class _UnixSocket:
    """
    Every URI is the Unix socket at C{path}.
    """

    def __init__(self, reactor, path: str):
        self._reactor = reactor
        self._path = path

    def endpointForURI(self, uri):
        return UNIXClientEndpoint(self._reactor, self._path, timeout=10)


def _http_ask(reactor, path: str, method: bytes, what: bytes) -> defer.Deferred:
    """
    Ask a worker's admin API on its Unix socket.

    @return: A L{Deferred} firing with C{(status code, body)}.
    """
    pool = QuietPool(reactor, persistent=False)
    agent = Agent.usingEndpointFactory(reactor, _UnixSocket(reactor, path), pool=pool)
    d = agent.request(method, b"http://worker" + what)
    d.addCallback(lambda response: readBody(response).addCallback(
        lambda body: (response.code, body)))
    return d.addTimeout(ASK_TIMEOUT, reactor)


def _all_done(answers) -> None:
    """
    Check the answers of L{Master._ask_all} to a change every worker must
    make.

    @raises RuntimeError: naming every worker that did not answer C{200}.
    """
    failed = [f"worker {w.index}: {body.get('error')}"
              for w, (code, body) in answers if code != 200]
    if failed:
        raise RuntimeError("; ".join(failed))


class _WorkersCache:
    """
    The purges of C{POST /cache/purge}, made by every worker: each keeps its
    own in-memory store, and with a shared (Redis) store the first worker
    removes the entries and the others find none.
    """

    def __init__(self, ask_all: Callable[[bytes, bytes], defer.Deferred]):
        self._ask_all = ask_all

    def _purge(self, kind: bytes, value: bytes) -> defer.Deferred:
        def total(answers) -> int:
            _all_done(answers)
            return sum(body.get("purged", 0) for _, (_, body) in answers)

        query = urlencode({kind: value}).encode("ascii")
        return self._ask_all(b"POST", b"/cache/purge?" + query).addCallback(total)

    def purge_url(self, url: bytes) -> defer.Deferred:
        return self._purge(b"url", url)

    def purge(self, prefix: bytes) -> defer.Deferred:
        return self._purge(b"prefix", prefix)

    def purge_tag(self, tag: bytes) -> defer.Deferred:
        return self._purge(b"tag", tag)


class Master(MultiService):
    """
    The master process of a proxy with several workers: it owns the
    listening sockets and keeps C{count} workers running.

    It orders and renews the ACME certificates for all of them
    (L{renewals}), and has what the admin API asks a
    L{twistproxy.service.ProxyService} (C{config}, C{listeners}, C{status},
    C{drain}, C{hangup}, C{history}, C{renewals}), what the
    signals call (C{hangup}, C{reopen_access_log}, C{stop_now}), and it is
    the metrics page of its admin API (C{content_type}, L{exposition}).
    """

    content_type = CONTENT_TYPE_LATEST

    log = Logger()

    # Whether the workers run on PyPy: they run on the master's interpreter.
    pypy = sys.implementation.name == "pypy"

    def __init__(
        self,
        config: ProxyConfig,
        reactor,
        count: int,
        worker_args: Optional[Sequence[str]] = None,
        bind: Callable[[str], socket.socket] = bind,
        ask: Optional[Callable[[str, bytes, bytes], defer.Deferred]] = None,
        executable: str = sys.executable,
    ):
        """
        @param count: How many workers to run.
        @param worker_args: The C{twistd twistproxy} options a worker runs
            with, for a configuration that was not read from a file (quick
            mode); C{None} for a file, which the workers read from the
            master's copy.
        @param bind: Binds a listener's socket (L{bind}).
        @param ask: Asks a worker's admin API C{(socket path, method,
            path)}, firing with C{(code, body)}; over HTTP by default.
        @param executable: The Python interpreter that runs the workers.
        """
        super().__init__()
        self.config = config
        self.reactor = reactor
        self._worker_args = worker_args
        self._bind = bind
        self._ask = ask or (lambda path, method, what: _http_ask(reactor, path, method, what))
        self._executable = executable
        self._stopping = False
        # Whether a reload waits for a new generation of workers.
        self._replacing = False
        self._directory: Optional[str] = None
        self.workers = [_Worker(i) for i in range(1, count + 1)]
        # Workers of an earlier generation, draining.
        self._retiring: List[_Worker] = []
        self._rotation = LoopingCall(self._rotate_access_log)
        self._rotation.clock = reactor
        self.listeners: Dict[str, _SharedListener] = {}
        # The ACME certificates' renewals, made at the start (they write
        # into the master's directory), and what they order with.
        self.renewals: List[Any] = []
        self._acme_shared: Optional[Any] = None
        self._dns_texts = build.dns_texts(config, reactor)
        admin = build.admin(reactor, config, self, self)
        if admin is not None:
            ListenerService("admin", config.admin.endpoint, *admin).setServiceParent(self)

    # -- starting and keeping workers ---------------------------------------

    def startService(self) -> None:
        self._directory = tempfile.mkdtemp(prefix="twistproxy-")
        self._write_config(self.config)
        try:
            for listener in self.config.listeners:
                sock = self._bind(build.endpoint_string(listener))
                self.listeners[listener.name] = _SharedListener(listener.name, sock)
                # The same words as a single process, for the tools that
                # wait for them.
                self.log.info("twistproxy listener {name} listening on {address}",
                              name=listener.name, address=_address(sock))
        except OSError as e:
            self._close()
            raise RuntimeError(f"cannot listen on {listener.endpoint!r}: {e}") from None
        super().startService()
        for worker in self.workers:
            self._spawn(worker)
        self._rotation.start(1.0, now=False)
        self._dns_texts.start()
        self._renew_acme()

    # -- ACME certificates, ordered here for every worker -------------------

    def _renew_acme(self) -> None:
        """
        Order and renew the ACME certificates of the running configuration
        here, once for all workers, in place of those renewed so far: the
        challenge answers go into the directory every worker reads them
        from (L{ChallengeFiles}), and each certificate installed makes
        every worker read its certificates again
        (L{reload_certificates}).  The renewals start once the workers
        answer (or could not within L{READY_TIMEOUT}), so that one is
        there when the CA checks.
        """
        for renewal in self.renewals:
            renewal.stop()
        if self._acme_shared is not None:
            self._acme_shared.close()
        config = self.config
        self._acme_shared = build.acme_shared(config, self.reactor)
        acme = build.ACMECertificates(
            config, self.reactor, self._dns_texts,
            ChallengeFiles(os.path.join(self._directory, CHALLENGES), self.reactor),
            self.reload_certificates, self._acme_shared)
        renewals = self.renewals = acme.renewals
        if not renewals:
            return
        now = datetime.datetime.fromtimestamp(self.reactor.seconds(), datetime.timezone.utc)
        for renewal in renewals:
            # What a renewal reads first, should no worker have written it.
            acme_store.ensure(config.acme, renewal.names, "acme", now)

        def start(_):
            if self.running and self.renewals is renewals:
                for renewal in renewals:
                    renewal.start()

        self._ready(self.workers).addBoth(start)

    def reload_certificates(self) -> defer.Deferred:
        """
        Have every worker read its certificates again (a new ACME one);
        what goes wrong is logged.
        """
        def reloaded(answers) -> None:
            for worker, (code, body) in answers:
                if code != 200:
                    self.log.error("worker {index} did not take the new certificates: {why}",
                                   index=worker.index, why=body.get("error") or body.get(
                                       "problems"))

        return self._ask_all(b"POST", b"/reload").addCallback(reloaded)

    def _rotate_access_log(self) -> None:
        """
        Rotate the workers' access log once it is C{max_size} bytes long:
        move the files, then have every worker reopen it.
        """
        settings = self.config.access_log
        if not settings.max_size:
            return
        try:
            if os.stat(settings.path).st_size < settings.max_size:
                return
            rotate(settings.path, settings.keep)
        except OSError as e:
            self.log.error("cannot rotate the access log {path}: {error}",
                           path=settings.path, error=e.strerror or str(e))
            return
        self.reopen_access_log()

    def _write_config(self, config: ProxyConfig) -> None:
        # Written aside then renamed, so that a worker starting now reads
        # either the old copy or the new one.
        if self._worker_args is not None:
            return
        with open(config.source, "rb") as f:
            data = f.read()
        path = os.path.join(self._directory, _CONFIG_COPY)
        with open(path + ".new", "wb") as f:
            f.write(data)
        os.replace(path + ".new", path)

    def _socket_path(self, worker: _Worker) -> str:
        # Workers of a new generation start while the old ones still run.
        suffix = f".{worker.generation}" if worker.generation else ""
        return os.path.join(self._directory, f"worker-{worker.index}{suffix}.sock")

    def _spawn(self, worker: _Worker) -> None:
        worker.restart = None
        # A worker killed outright leaves its socket file behind.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._socket_path(worker))
        fds: Dict[int, Any] = {0: "w", 1: 1, 2: "r"}
        args = [self._executable, "-m", "twistproxy.workers",
                "--index", str(worker.index), "--admin", self._socket_path(worker)]
        for fd, listener in enumerate(self.listeners.values(), 3):
            fds[fd] = listener.socket.fileno()
            args += ["--inherit", f"{listener.name}={fd}"]
        reactor = reactor_name(self.reactor)
        if reactor != OWN_REACTOR:
            # Chosen with twistd --reactor: the workers run on the same.
            args += ["--reactor", reactor]
        args.append("--")
        if self._worker_args is None:
            args += ["--config", os.path.join(self._directory, _CONFIG_COPY)]
        else:
            args += list(self._worker_args)
        worker.started = self.reactor.seconds()
        # Socket activation is the master's: its sockets reach the workers
        # as --inherit descriptors.
        env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
        if self.pypy:
            env.setdefault("PYPY_GC_NURSERY", PYPY_GC_NURSERY)
        worker.process = self.reactor.spawnProcess(
            _WorkerProtocol(self, worker), self._executable, args, env=env, childFDs=fds)
        worker.pid = worker.process.pid
        self.log.info("worker {index} started, pid {pid}", index=worker.index, pid=worker.pid)

    def _ended(self, worker: _Worker, reason: Failure) -> None:
        pid, worker.process, worker.pid = worker.pid, None, None
        if self._stopping or worker in self._retiring:
            self.log.info("worker {index} (pid {pid}) exited", index=worker.index, pid=pid)
            if worker in self._retiring:
                self._retiring.remove(worker)
            if worker.ended is not None:
                ended, worker.ended = worker.ended, None
                ended.callback(None)
            return
        if self.reactor.seconds() - worker.started >= STABLE:
            worker.delay = MIN_DELAY
        else:
            worker.delay = min(max(worker.delay * 2, MIN_DELAY), MAX_DELAY)
        worker.restarts += 1
        self.log.warn(
            "worker {index} (pid {pid}) ended: {why}; starting another in {delay:.1f}s",
            index=worker.index, pid=pid, why=reason.getErrorMessage(), delay=worker.delay)
        worker.restart = self.reactor.callLater(worker.delay, self._spawn, worker)

    def worker_status(self) -> List[Dict[str, Any]]:
        """
        Every worker's number, process id (C{None} while it is being
        started again) and how many times it was restarted.
        """
        return [{"index": w.index, "pid": w.pid, "restarts": w.restarts} for w in self.workers]

    # -- signals ------------------------------------------------------------

    def _signal_all(self, number: int) -> None:
        self._signal(self.workers + self._retiring, number)

    @staticmethod
    def _signal(workers: Sequence[_Worker], number: int) -> None:
        for worker in workers:
            if worker.process is not None:
                try:
                    worker.process.signalProcess(number)
                except OSError:
                    pass  # It has just died; its end is being reported.

    def reopen_access_log(self) -> None:
        """
        What SIGUSR1 does: every worker reopens its access log.
        """
        self._signal_all(signal.SIGUSR1)

    def hangup(self) -> defer.Deferred:
        """
        What SIGHUP and C{POST /reload} do: read the configuration file
        again and check it as a single process would; a valid one goes to
        every worker, which reloads it and its certificates.

        @return: A L{Deferred} firing with the problems found (empty when
            every worker reloaded).
        """
        if self._replacing:
            return self._refused(RuntimeError(
                "new workers are still starting for the previous reload; try again"))
        previous = self.config
        try:
            if self.config.source:
                # The number of workers is the master's (the file's, or
                # --workers): it changes with a restart only.
                new = replace(load(self.config.source), workers=self.config.workers)
                check_reloadable(self.config, new)
                check_shareable(new)
                build.validate(new)
                if new.listeners != self.config.listeners:
                    return self._replace_workers(new).addCallback(self._follow_acme, previous)
                self._write_config(new)
                self.config = new
        except (ConfigError, OSError) as e:
            return self._refused(e)

        def reloaded(answers):
            problems: List[str] = []
            for worker, (code, body) in answers:
                # 409: the worker refused part of the reload, and says why.
                if code not in (200, 409):
                    problems.append(f"worker {worker.index}: {body.get('error', code)}")
                    continue
                for problem in body.get("problems", ()):
                    if problem not in problems:
                        problems.append(problem)
            if not problems:
                self.log.info("configuration reloaded by {n} workers", n=len(answers))
            return problems

        return self._ask_all(b"POST", b"/reload").addCallback(reloaded).addCallback(
            self._follow_acme, previous)

    def _follow_acme(self, problems: List[str], previous: ProxyConfig) -> List[str]:
        """
        Renew the ACME certificates of the configuration now running when
        its C{[acme]} section or its names differ from C{previous}'s (the
        workers have written the stand-ins of new names by now).

        @return: C{problems}.
        """
        def acme(config: ProxyConfig):
            return config.acme, acme_certificates(config.listeners, config.routes)

        if acme(self.config) != acme(previous):
            try:
                self._renew_acme()
            except ConfigError as e:
                problems = problems + [str(e)]
        return problems

    def _refused(self, problem: Exception) -> defer.Deferred:
        self.log.error("configuration reload refused, the running one stays: {problem}",
                       problem=str(problem))
        return defer.succeed([str(problem)])

    def _replace_workers(self, new: ProxyConfig) -> defer.Deferred:
        """
        Apply listener changes: bind the sockets of added and moved
        listeners (one that cannot be bound refuses the reload), start a
        new generation of workers with the new sockets and configuration,
        and once they all answer, drain the old ones and close the sockets
        nobody uses any more.  Listeners whose endpoint stays keep their
        socket, which both generations share meanwhile: no connection is
        refused.  New workers that do not answer within L{READY_TIMEOUT}
        are stopped, and the old ones go on.

        @return: A L{Deferred} firing with the problems (empty on success).
        """
        running = {listener.name: listener for listener in self.config.listeners}
        listeners: Dict[str, _SharedListener] = {}
        bound: List[socket.socket] = []
        for listener in new.listeners:
            old = running.get(listener.name)
            if old is not None and old.endpoint == listener.endpoint:
                listeners[listener.name] = self.listeners[listener.name]
                continue
            try:
                sock = self._bind(build.endpoint_string(listener))
            except OSError as e:
                for sock in bound:
                    sock.close()
                return self._refused(ConfigError(
                    f"listeners.{listener.name}.endpoint",
                    f"cannot listen on {listener.endpoint!r}: {e}", new.source))
            bound.append(sock)
            listeners[listener.name] = _SharedListener(listener.name, sock)
        previous = (self.config, self.listeners, self.workers)
        self._write_config(new)
        self.config, self.listeners = new, listeners
        generation = self.workers[0].generation + 1
        self.workers = [_Worker(w.index, generation) for w in self.workers]
        for worker in self.workers:
            self._spawn(worker)
        self.log.info("listeners changed: {n} new workers start", n=len(self.workers))

        def ready(_):
            self._retire(previous[2])
            for listener in previous[1].values():
                if listener not in listeners.values():
                    listener.socket.close()
            for listener in listeners.values():
                if listener not in previous[1].values():
                    self.log.info("twistproxy listener {name} listening on {address}",
                                  name=listener.name, address=_address(listener.socket))
            self.log.info("configuration reloaded by {n} new workers; the old ones drain",
                          n=len(self.workers))
            return []

        def failed(f: Failure):
            new_workers = self.workers
            self.config, self.listeners, self.workers = previous
            self._write_config(self.config)
            self._retire(new_workers)
            for sock in bound:
                sock.close()
            return self._refused(RuntimeError(
                f"the new workers did not start: {f.getErrorMessage()}"))

        def done(result):
            self._replacing = False
            return result

        self._replacing = True
        return self._ready(self.workers).addCallbacks(ready, failed).addBoth(done)

    def _retire(self, workers: Sequence[_Worker]) -> None:
        """
        Drain C{workers} (SIGTERM), which are not started again.
        """
        for worker in workers:
            if worker.restart is not None:
                worker.restart.cancel()
                worker.restart = None
            if worker.process is not None:
                self._retiring.append(worker)
        self._signal(workers, signal.SIGTERM)

    def _ready(self, workers: Sequence[_Worker]) -> defer.Deferred:
        """
        Poll C{workers}' admin API until each answers.

        @return: A L{Deferred} that fails after L{READY_TIMEOUT} seconds.
        """
        deadline = self.reactor.seconds() + READY_TIMEOUT

        def poll(_=None):
            asked = [self._ask(self._socket_path(w), b"GET", b"/status")
                     .addCallback(lambda answer: answer[0] == 200)
                     .addErrback(lambda f: False) for w in workers]
            return defer.gatherResults(asked).addCallback(check)

        def check(answers):
            if all(answers) and all(w.process is not None for w in workers):
                return None
            if self.reactor.seconds() >= deadline:
                raise RuntimeError(f"no answer within {READY_TIMEOUT:.0f}s")
            return deferLater(self.reactor, 0.1, poll)

        return poll()

    def stop_now(self) -> None:
        """
        What a second SIGTERM does: every worker ends its graceful
        shutdown at once.
        """
        self._signal_all(signal.SIGTERM)

    def stopService(self):
        """
        Graceful shutdown: close the master's listening sockets, tell every
        worker to stop (they stop accepting and drain), and wait for them,
        killing those still there after C{shutdown.drain} and
        L{KILL_GRACE} seconds.
        """
        self._stopping = True
        if self._rotation.running:
            self._rotation.stop()
        for renewal in self.renewals:
            renewal.stop()
        self._dns_texts.stop()
        if self._acme_shared is not None:
            self._acme_shared.close()
        stopped = super().stopService()
        waits = []
        for worker in self.workers + self._retiring:
            if worker.restart is not None:
                worker.restart.cancel()
                worker.restart = None
            if worker.process is not None:
                worker.ended = defer.Deferred()
                waits.append(worker.ended)
        # Workers that have stopped accepting must not leave connections
        # queued on a socket nobody will accept from.
        for listener in self.listeners.values():
            listener.socket.close()
        self._signal_all(signal.SIGTERM)
        deadline = self.reactor.callLater(
            self.config.shutdown.drain + KILL_GRACE, self._signal_all, signal.SIGKILL)

        def finish(_):
            if deadline.active():
                deadline.cancel()
            self._close()
            return stopped

        return defer.gatherResults(waits).addBoth(finish)

    def _close(self) -> None:
        for listener in self.listeners.values():
            listener.socket.close()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)

    # -- the admin API, across workers --------------------------------------

    def _running(self) -> List[_Worker]:
        return [w for w in self.workers if w.process is not None]

    def _ask_all(self, method: bytes, what: bytes) -> defer.Deferred:
        """
        Ask every running worker's admin API.

        @return: A L{Deferred} firing with C{[(worker, (code, body))]}, the
            body decoded from JSON (C{{"error": ...}} when the worker did
            not answer).
        """
        def decoded(answer):
            code, body = answer
            return code, json.loads(body)

        def unanswered(f: Failure):
            return 503, {"error": f"no answer: {f.getErrorMessage()}"}

        running = self._running()
        asked = [self._ask(self._socket_path(w), method, what).addCallback(decoded)
                 .addErrback(unanswered) for w in running]
        return defer.gatherResults(asked).addCallback(lambda answers: list(zip(running, answers)))

    def status(self) -> defer.Deferred:
        """
        What C{GET /upstreams} shows: every worker's view of the upstream
        groups (each checks the backends' health itself).
        """
        def collect(answers):
            return {"workers": [
                {"index": worker.index, "pid": worker.pid, **body}
                for worker, (code, body) in answers
            ]}

        return self._ask_all(b"GET", b"/upstreams").addCallback(collect)

    @property
    def cache(self) -> Optional["_WorkersCache"]:
        """
        Cache purges for every worker, when a route caches (C{None}
        otherwise, as for a single process).
        """
        if not any(r.cache is not None and r.cache.enabled for r in self.config.routes):
            return None
        return _WorkersCache(self._ask_all)

    def drain(self, group: str, backend: str, draining: bool = True) -> defer.Deferred:
        """
        Drain a backend in every worker, or take it back.

        @return: A L{Deferred} that fails with L{KeyError} when there is no
            such group or backend.
        """
        what = b"/upstreams/%s/%s/%s" % (group.encode("utf-8"), backend.encode("utf-8"),
                                         b"drain" if draining else b"undrain")

        def check(answers):
            codes = {code for _, (code, _) in answers}
            if 404 in codes:
                raise KeyError(f"no backend {backend!r} in upstream group {group!r}")
            _all_done(answers)

        return self._ask_all(b"POST", what).addCallback(check)

    def certificates(self) -> defer.Deferred:
        """
        What the status page shows of the TLS certificates: those of the
        first worker that answers (every worker loads the same files), or
        C{None} when none does; the master loads none.
        """
        def first(answers):
            for _, (code, body) in answers:
                if code == 200 and "certificates" in body:
                    return body["certificates"]
            return None

        return self._ask_all(b"GET", b"/status").addCallback(first)

    def history(self, end: int) -> defer.Deferred:
        """
        What the status page shows: every worker's history of the same
        seconds, before C{end}, added up; each state change says which
        worker saw it.
        """
        def combined(answers):
            digests = []
            for worker, (code, body) in answers:
                if code == 200:
                    for event in body["events"]:
                        event["worker"] = worker.index
                    digests.append(body)
            return combine_history(digests, end)

        return self._ask_all(b"GET", b"/history/raw?end=%d" % end).addCallback(combined)

    def exposition(self) -> defer.Deferred:
        """
        Every worker's metrics, summed up, and the master's own.
        """
        running = self._running()
        asked = [self._ask(self._socket_path(w), b"GET", b"/metrics")
                 .addErrback(lambda f: None) for w in running]

        def combined(answers):
            workers = GaugeMetricFamily("twistproxy_workers", "Worker processes running now.")
            workers.add_metric((), len(running))
            restarts = CounterMetricFamily(
                "twistproxy_worker_restarts", "Worker processes started again after dying.")
            restarts.add_metric((), sum(w.restarts for w in self.workers))
            pages = [body for code, body in filter(None, answers) if code == 200]
            return combine(pages, [workers, restarts])

        return defer.gatherResults(asked).addCallback(combined)
