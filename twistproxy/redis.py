# -*- test-case-name: tests.test_redis -*-
"""
Redis, where several proxy processes and machines keep what they share.

One proxy process keeps its cache and its rate-limit counters in memory.
Several workers, or several machines behind an L4 balancer, must agree on
them instead: the stores that do so keep their state in Redis, the
existing engine for exactly this, through txredisapi (a Twisted-native
client, installed with the C{redis} extra: C{pip install
'twistproxy[redis]'}).

A store's configuration names its server with a URL,
C{redis://[[user]:password@]host[:port][/db]}; L{parse_url} checks it when
the configuration is read, and L{connect} opens a pool of connections that
reconnects by itself when the server goes away and comes back, whether it
was killed, restarted or stalled.

A store reaches Redis through a L{RedisLink}: the pool, opened on first
use, behind a L{Circuit}.  While Redis is out a store must cost a request
next to nothing: after a failure the circuit I{opens}, and the store's
commands are not sent at all (the store does without: a cache miss, a rate
limit counted in this process) until a background C{PING}, sent at most
once every L{RETRY} seconds, is answered.  The log says once that Redis is
out and once that it is back, not a line per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional
from urllib.parse import unquote, urlsplit

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twistproxy.config import ConfigError

DEFAULT_PORT = 6379
# Seconds between two probes of a Redis that is out.
RETRY = 1.0


@dataclass(frozen=True)
class RedisAddress:
    """
    Where a Redis server is, and how to log in to it.

    @ivar db: The database number (C{SELECT}), 0 unless the URL's path
        names one.
    """

    host: str
    port: int = DEFAULT_PORT
    db: int = 0
    username: Optional[str] = None
    password: Optional[str] = None


def parse_url(url: object, path: str) -> RedisAddress:
    """
    Read a C{redis://} URL.

    @param path: Where the URL sits in the configuration, for errors.
    @raise ConfigError: If it is not a usable Redis URL.
    """
    if not isinstance(url, str):
        raise ConfigError(path, "expected a redis:// URL as a string")
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise ConfigError(path, f"expected a redis:// URL, got {url!r}")
    if parts.query or parts.fragment:
        raise ConfigError(path, f"a Redis URL takes no query or fragment: {url!r}")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ConfigError(path, f"bad port in {url!r}") from None
    if not parts.hostname:
        raise ConfigError(path, f"no host in {url!r}")
    db_text = parts.path.lstrip("/")
    if db_text and not (db_text.isdigit() and db_text.isascii()):
        raise ConfigError(path, f"the database after the host must be a number: {url!r}")
    return RedisAddress(
        host=parts.hostname,
        port=port,
        db=int(db_text or 0),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def connect(address: RedisAddress, timeout: float = 1.0, size: int = 4):
    """
    A pool of connections to C{address} that connects in the background
    and reconnects when lost, or when logging in (C{AUTH}, C{SELECT})
    fails or times out.

    Replies are bytes, never converted: the callers store bodies and
    counters and decode what they need themselves.

    @param timeout: Seconds to wait for a connection or a reply; a store
        must treat a late answer as a failure (and serve without Redis)
        rather than hold requests.
    @param size: How many connections to keep.
    @return: A C{txredisapi} connection handler; its commands return
        L{Deferred}s.
    """
    # txredisapi is an optional dependency: imported only by a
    # configuration that names Redis.
    from twistproxy._redis_pool import open_pool

    return open_pool(address, timeout, size)


class Circuit:
    """
    Whether a store sends its commands to Redis now, or does without.

    I{Closed}, commands go to Redis, each bounded by the timeout.  The
    first failure (an error, no answer in time, no connection) I{opens}
    it: commands are not sent, and L{call} answers C{None} at once, so that
    the caller takes its fallback.  The first call at least L{RETRY}
    seconds later starts one probe in the background (I{half-open}); its
    answer closes the circuit, its failure opens it for another while.  No
    request ever waits for a probe.  Opening and closing are logged, once
    each way.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, probe: Callable[[], Deferred], timeout: float,
                 what: str, fallback: str, retry: float = RETRY):
        """
        @param probe: Sends a command whose answer says Redis is back.
        @param what: The user and the server, for the log, e.g.
            C{"cache store (Redis at 10.0.0.5:6379)"}.
        @param fallback: What the user does meanwhile, for the log, e.g.
            C{"every lookup is a miss"}.
        """
        self._clock = clock
        self._probe = probe
        self._timeout = timeout
        self._what = what
        self._fallback = fallback
        self._retry = retry
        self._state = _CLOSED
        self._retry_at = 0.0

    @property
    def closed(self) -> bool:
        """
        Whether commands go to Redis.
        """
        return self._state is _CLOSED

    def call(self, command: Callable[[], Deferred]) -> Optional[Deferred]:
        """
        Run C{command} if the circuit is closed.

        @return: C{command}'s L{Deferred}, bounded by the timeout, or
            C{None} when the circuit is open: do without Redis.
        """
        if self._state is _CLOSED:
            return self._watch(maybeDeferred(command))
        if self._state is _OPEN and self._clock.seconds() >= self._retry_at:
            self._state = _HALF_OPEN
            self._watch(maybeDeferred(self._probe)).addErrback(lambda _: None)
        return None

    def _watch(self, d: Deferred) -> Deferred:
        d.addTimeout(self._timeout, self._clock)
        d.addErrback(self._failed)
        d.addCallback(self._answered)
        return d

    def _answered(self, result):
        # An answer to a command sent before the circuit opened says
        # nothing of Redis now; only the probe's closes it.
        if self._state is _HALF_OPEN:
            self._state = _CLOSED
            self.log.info("{what}: Redis answers again", what=self._what)
        return result

    def _failed(self, failure):
        if self._state is _CLOSED:
            self.log.error("{what}: Redis is out ({error}); {fallback} until it answers",
                           what=self._what, error=failure.getErrorMessage(),
                           fallback=self._fallback)
        self._state = _OPEN
        self._retry_at = self._clock.seconds() + self._retry
        return failure


_CLOSED, _OPEN, _HALF_OPEN = "closed", "open", "half-open"


class RedisLink:
    """
    A store's way to Redis: a pool, opened on first use (checking a
    configuration must not connect), behind a L{Circuit}.
    """

    def __init__(self, clock: IReactorTime, address: RedisAddress, timeout: float,
                 user: str, fallback: str):
        """
        @param user: Who uses it, for the log, e.g. C{"cache store"}.
        @param fallback: What the user does while Redis is out, for the
            log (see L{Circuit}).
        """
        self._address = address
        self._timeout = timeout
        self._pool: Any = None
        self.circuit = Circuit(
            clock, lambda: self._connected().ping(), timeout,
            f"{user} (Redis at {address.host}:{address.port})", fallback)

    def _connected(self):
        if self._pool is None:
            self._pool = connect(self._address, self._timeout)
        return self._pool

    def call(self, command: Callable[[Any], Deferred]) -> Optional[Deferred]:
        """
        C{command(pool)}, unless Redis is known to be out.

        @return: Its L{Deferred} (failing on a Redis failure or timeout),
            or C{None} when the circuit is open: do without Redis.
        """
        return self.circuit.call(lambda: command(self._connected()))

    def close(self) -> Deferred:
        """
        Close the pool's connections.
        """
        if self._pool is None:
            return succeed(None)
        pool, self._pool = self._pool, None
        return pool.disconnect()
