# -*- test-case-name: tests.test_hardening -*-
"""
Admission control: how much work the proxy takes on at once.

A proxy on the open internet must not accept more than it can hold.  Every
client connection and every request forwarded to a backend holds a file
descriptor and memory; past the process's open-file limit, C{accept()}
fails in a tight loop and backends cannot be reached at all.  So the proxy
counts both against a L{Quota}:

  - client connections, over all listeners (C{limits.max_connections}) and
    per listener (C{listeners.NAME.max_connections}).  When a quota is full
    the listening sockets under it stop accepting, as HAProxy does with
    C{maxconn}: new connections wait in the kernel's accept queue (and
    beyond it, SYNs are dropped and retried by the client) at no cost to
    the proxy, while the connections already accepted are served as usual.
    Those accepted in the same burst before the pause took effect are
    closed at once.  Accepting resumes by itself as soon as connections
    close.

  - requests in flight (C{limits.max_in_flight}): beyond it the codecs
    answer 503 with C{Retry-After} at once, instead of queueing work
    without end, and serve again as soon as requests finish.

The default for both limits is derived from the open-file limit, as
HAProxy derives its C{maxconn} (L{file_budget}).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

# File descriptors kept for everything but clients and backends: log
# files, listening sockets, health checks, the admin listener.
RESERVED_FILES = 100
# At most one "limit reached" line per quota in this many seconds.
LOG_INTERVAL = 60.0


class Emptied:
    """
    Who waits for a listener's open connections to end (graceful
    shutdown): the factory calls L{wait} to drain and L{check} whenever a
    connection has ended.
    """

    __slots__ = ("_connections", "_waiting")

    def __init__(self, connections: set):
        """
        @param connections: The factory's set of open connections (it
            adds and discards them; this only reads it).
        """
        self._connections = connections
        self._waiting: List[Deferred] = []

    def wait(self) -> Deferred:
        """
        @return: A Deferred that fires when no connection is open (at once
            when none is).
        """
        if not self._connections:
            return succeed(None)
        d: Deferred = Deferred()
        self._waiting.append(d)
        return d

    def check(self) -> None:
        """
        Fire the waits if the last connection has ended.
        """
        if not self._connections and self._waiting:
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(None)


def file_budget() -> int:
    """
    The default for C{limits.max_connections} and C{limits.max_in_flight}:
    the process's open-file limit less L{RESERVED_FILES}, halved (each
    client connection may need a backend connection as well); 462 with the
    common limit of 1024.
    """
    try:
        import resource
    except ImportError:  # Not a Unix: no limit to read, a generous default.
        return 10000
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(1, (soft - RESERVED_FILES) // 2)


def quotas(limits, clock: IReactorTime) -> Tuple[Quota, Quota]:
    """
    The quotas of client connections and of requests in flight that
    C{limits} (a L{twistproxy.config.Limits}) set.
    """
    budget = 0 if limits.max_connections and limits.max_in_flight else file_budget()
    return (
        Quota("client connections", limits.max_connections or budget, clock),
        Quota("requests in flight", limits.max_in_flight or budget, clock),
    )


class Refused(Protocol):
    """
    What a listener builds for a connection it cannot take: it is closed at
    once, without reading anything.
    """

    def connectionMade(self) -> None:
        self.transport.abortConnection()


class Quota:
    """
    A count of things held (connections, requests) against a limit, with
    an optional parent quota that every acquisition also counts against.

    While the quota, or one of its parents, is full, the listening ports
    given to L{watch} do not accept.

    @ivar name: What is counted, for the log (C{'connections on listener
        web'}).
    @ivar limit: The most held at once; C{0} means no limit.
    @ivar count: How many are held now.
    @ivar refused: How many were refused since the start (because this
        quota, or one of its parents, was full).
    """

    log = Logger()

    def __init__(self, name: str, limit: int, clock: IReactorTime,
                 parent: Optional[Quota] = None):
        self.name = name
        self.limit = limit
        self.count = 0
        self.refused = 0
        self.parent = parent
        self._clock = clock
        self._children: List[Quota] = []
        self._ports: list = []
        self._paused = False
        # When each of the two lines (limit reached, excess refused) was
        # last logged.
        self._logged = [-LOG_INTERVAL, -LOG_INTERVAL]
        if parent is not None:
            parent._children.append(self)

    def full(self) -> bool:
        """
        Whether nothing more can be acquired here.
        """
        quota: Optional[Quota] = self
        while quota is not None:
            if quota.limit and quota.count >= quota.limit:
                return True
            quota = quota.parent
        return False

    def acquire(self) -> bool:
        """
        Hold one more, if this quota and its parents allow.

        @return: Whether it was acquired; if not, it was counted as refused.
        """
        quota: Optional[Quota] = self
        # full(), without a call: this runs for every request.
        while quota is not None:
            if quota.limit and quota.count >= quota.limit:
                self._refuse()
                return False
            quota = quota.parent
        quota = self
        while quota is not None:
            quota.count += 1
            if quota.count == quota.limit:
                quota._changed()
            quota = quota.parent
        return True

    def release(self) -> None:
        """
        Give back one held by L{acquire}.
        """
        quota: Optional[Quota] = self
        while quota is not None:
            quota.count -= 1
            if quota.count == quota.limit - 1:
                quota._changed()
            quota = quota.parent

    def set_limit(self, limit: int) -> None:
        """
        Change the limit (a reloaded configuration).
        """
        self.limit = limit
        self._changed()

    def watch(self, port) -> None:
        """
        Pause accepting on C{port} (a listening port) whenever this quota
        is full.
        """
        self._ports.append(port)
        if self._paused:
            port.stopReading()

    def unwatch(self, port) -> None:
        """
        Stop pausing C{port}: it is going to stop listening.
        """
        if port in self._ports:
            self._ports.remove(port)
            if self._paused:
                port.startReading()

    def _refuse(self) -> None:
        # Counted here and by each parent up to the full one, which logs
        # it: the count it logs includes this refusal.
        quota: Optional[Quota] = self
        full = self
        while quota is not None:
            quota.refused += 1
            if quota.limit and quota.count >= quota.limit:
                full = quota
                break
            quota = quota.parent
        if full._may_log(1):
            full.log.warn(
                "limit of {limit} {name} reached: the excess is refused until "
                "some finish ({refused} refused since the start)",
                limit=full.limit, name=full.name, refused=full.refused,
            )

    def _may_log(self, line: int) -> bool:
        """
        Whether log line C{line} (0: limit reached, 1: excess refused) was
        not logged in the last L{LOG_INTERVAL} seconds; if so, it counts
        as logged now.
        """
        now = self._clock.seconds()
        if now - self._logged[line] < LOG_INTERVAL:
            return False
        self._logged[line] = now
        return True

    def _changed(self) -> None:
        """
        This quota became full or not full: pause or resume accepting on
        the ports under it.
        """
        paused = self.full()
        if paused != self._paused:
            self._paused = paused
            for port in self._ports:
                if paused:
                    port.stopReading()
                else:
                    port.startReading()
            if paused and self.limit and self.count >= self.limit and self._may_log(0):
                self.log.warn("limit of {limit} {name} reached: no more are taken until "
                              "some finish", limit=self.limit, name=self.name)
        for child in self._children:
            child._changed()
