# -*- test-case-name: tests.test_workers -*-
"""
One worker process (see L{twistproxy.workers}): C{python -m
twistproxy.workers} runs L{worker_main}, which serves the proxy on the
sockets inherited from the master and stops when the master is gone.  It
serves the ACME certificates the master orders, and answers their
challenges from the master's directory (L{CHALLENGES}).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from dataclasses import replace
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from twisted.internet import defer
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger, jsonFileLogObserver
from zope.interface import implementer

from twistproxy.acme.challenges import ChallengeFiles
from twistproxy.config import Admin, ProxyConfig
from twistproxy.service import ProxyService
from twistproxy.signals import Options, Signals, choose_reactor

# Beside the admin sockets, in the master's directory: the ACME challenge
# answers the master writes and every worker serves.
CHALLENGES = "acme-challenges"


@implementer(IStreamServerEndpoint)
class InheritedEndpoint:
    """
    A listening socket this process inherited, as a server endpoint: it
    listens by adopting the socket.
    """

    def __init__(self, reactor, fd: int):
        self._reactor = reactor
        self._fd = fd

    def listen(self, factory) -> defer.Deferred:
        with _descriptors_stay_non_blocking():
            probe = socket.socket(fileno=self._fd)
            family = probe.family
            probe.detach()
            adopted = defer.maybeDeferred(
                self._reactor.adoptStreamPort, self._fd, family, factory)
        # The port listens on a duplicate of the descriptor, which
        # stopListening closes; the inherited one must not stay open
        # beside it, or the socket would go on taking connections (that
        # nobody accepts) until the worker exits.
        os.close(self._fd)
        return adopted


@contextlib.contextmanager
def _descriptors_stay_non_blocking() -> Iterator[None]:
    """
    While inside, a socket object made of a descriptor (C{socket(fileno=)},
    C{socket.fromfd}, which Twisted's C{adoptStreamPort} calls) leaves it
    non-blocking.

    PyPy gives such a socket object the default timeout, and with the
    usual default (none) clears C{O_NONBLOCK}; CPython leaves the flag
    alone.  The flag belongs to the listening socket the master and every
    worker share, not to one descriptor: each time a new worker started
    (a reload, a restart), the running workers' accept() blocked until the
    new one set the flag again.  A worker woken for a connection that
    accepts it then tries the next accept() (Twisted accepts in a loop),
    and there it stayed, the connection just accepted unanswered until
    another one came.  With a default timeout of 0, PyPy makes the socket
    object non-blocking instead, which leaves the flag as the master set
    it.
    """
    default = socket.getdefaulttimeout()
    socket.setdefaulttimeout(0)
    try:
        yield
    finally:
        socket.setdefaulttimeout(default)


class _MasterWatch:
    """
    Reads the worker's standard input, a pipe from the master, only to
    notice that it closes: then the master is gone, and the worker stops.
    """

    def __init__(self, reactor):
        self._reactor = reactor
        os.set_blocking(0, False)

    def fileno(self) -> int:
        return 0

    def logPrefix(self) -> str:
        return "master"

    def doRead(self):
        try:
            data = os.read(0, 4096)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if not data:
            self._reactor.removeReader(self)
            self._orphaned()
        return None

    def connectionLost(self, reason) -> None:
        # What the reactor calls instead of doRead when the pipe hangs up
        # with nothing left to read (epoll's EPOLLHUP).
        self._orphaned()

    def _orphaned(self) -> None:
        if self._reactor.running:
            self._reactor.stop()


class _WorkerOptions(Options):
    """
    The options of a worker: those of C{twistd twistproxy}, without the
    start-up check.  The master has checked the configuration, and the
    worker listens on inherited sockets rather than its endpoint strings
    (a C{systemd:} one would not even parse here: the sockets were the
    master's).
    """

    def check(self, config: ProxyConfig) -> None:
        pass


def _parse_worker_args(
        argv: Sequence[str]) -> Tuple[int, str, Dict[str, int], List[str], Optional[str]]:
    index, admin, inherited, reactor = 0, "", {}, None
    args = list(argv)
    while args and args[0] != "--":
        option, value = args[0], args[1]
        del args[:2]
        if option == "--index":
            index = int(value)
        elif option == "--admin":
            admin = value
        elif option == "--inherit":
            name, _, fd = value.partition("=")
            inherited[name] = int(fd)
        elif option == "--reactor":
            reactor = value
        else:
            raise SystemExit(f"twistproxy worker: unknown option {option}")
    return index, admin, inherited, args[1:], reactor


def worker_main(argv: Sequence[str]) -> None:
    """
    Run one worker: C{python -m twistproxy.workers --index N --admin PATH
    --inherit NAME=FD ... [--reactor CLASS] -- TWISTPROXY-OPTIONS}, as the
    master starts it.  C{--reactor} names the class of the master's reactor
    when it is not the proxy's own (C{twistd --reactor}).
    """
    index, admin, inherited, rest, reactor_class = _parse_worker_args(argv)
    # The global reactor and log only here: this is a program's main.
    choose_reactor(reactor_class)
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner

    globalLogBeginner.beginLoggingTo(
        [jsonFileLogObserver(sys.stderr, recordSeparator="")], redirectStandardIO=False)
    options = _WorkerOptions()
    options.parseOptions(rest)
    private = Admin(endpoint=f"unix:{admin}:mode=600:lockfile=0")

    def adjust(config: ProxyConfig) -> ProxyConfig:
        # The master rotates the shared access log by size.
        return replace(config, admin=private, workers=1,
                       access_log=replace(config.access_log, max_size=0))

    # The master orders and renews the ACME certificates; a worker answers
    # the challenges and serves the certificates.
    challenges = ChallengeFiles(os.path.join(os.path.dirname(admin), CHALLENGES), reactor)
    service = ProxyService(
        adjust(options.proxy_config), reactor,
        endpoints={name: InheritedEndpoint(reactor, fd) for name, fd in inherited.items()},
        adjust=adjust, challenges=challenges)
    Signals(reactor, service).setServiceParent(service)

    failed: List[bool] = []

    def start():
        # The master forwards what the terminal sends the process group.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            service.privilegedStartService()
            service.startService()
        except Exception:
            Logger().failure("worker {index} could not start", index=index)
            failed.append(True)
            reactor.stop()
            return
        reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
        reactor.addReader(_MasterWatch(reactor))

    reactor.callWhenRunning(start)
    reactor.run()
    if failed:
        sys.exit(1)

