# -*- test-case-name: tests.test_redis -*-
"""
The pool of connections to Redis, on txredisapi, that comes back by itself.

txredisapi keeps a pool of connections, each reconnected with a back-off
when lost.  But its connections log in (C{AUTH}, C{SELECT}) in a way that
stops the whole pool for good (C{stopTrying}) when the login fails, and a
Redis stalled for longer than the reply timeout (C{kill -STOP}, a long
fork or swap) makes it fail: the store was left without a connection,
ever, answering C{Not connected}.  Here a connection whose login fails
closes only itself, and its pool slot connects again after the back-off,
as after any lost connection.

This module imports txredisapi, an optional dependency: only
L{twistproxy.redis.connect} imports it, when a configuration names Redis.
"""

from __future__ import annotations

import txredisapi
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

# The longest wait of a pool slot between two attempts to reconnect
# (txredisapi's own is 10 s: a store would do without Redis for that long
# after it is back).
RECONNECT_MAX_DELAY = 2.0


class LoggingIn(txredisapi.RedisProtocol):
    """
    A connection that logs in (C{AUTH}, C{SELECT}) before it joins the pool,
    and on failure closes only itself.  A server that refuses the login (a
    wrong password, a database that does not exist) is logged each time it
    says something new.
    """

    log = Logger()

    def connectionMade(self) -> None:
        address = self.factory.address
        d: Deferred = succeed(None)
        if address.password is not None:
            d.addCallback(lambda _: self.auth(address.password, address.username))
        if address.db:
            d.addCallback(lambda _: self.select(address.db))
        # The base class, given no password nor database, only marks the
        # connection ready for the pool.
        d.addCallbacks(lambda _: txredisapi.RedisProtocol.connectionMade(self), self._refused)

    def _refused(self, failure) -> None:
        self.transport.abortConnection()
        factory = self.factory
        if failure.check(txredisapi.ResponseError):
            error = failure.getErrorMessage()
            if error != factory.refusal:
                factory.refusal = error
                self.log.error("Redis at {host}:{port} refused the login: {error}",
                               host=factory.address.host, port=factory.address.port,
                               error=error)


class PoolFactory(txredisapi.RedisFactory):
    """
    txredisapi's lazy pool, with connections that log in as L{LoggingIn}
    does.

    @ivar address: The L{twistproxy.redis.RedisAddress}.
    @ivar refusal: The server's last answer refusing the login.
    """

    protocol = LoggingIn
    maxDelay = RECONNECT_MAX_DELAY

    def __init__(self, address, timeout: float, size: int):
        # No dbid nor password for the base class: LoggingIn logs in.
        super().__init__(f"{address.host}:{address.port}", None, size, isLazy=True,
                         charset=None, replyTimeout=timeout, convertNumbers=False)
        self.address = address
        self.refusal = ""


def open_pool(address, timeout: float, size: int):
    """
    Start a pool of C{size} connections to C{address}.

    @return: Its txredisapi connection handler.
    """
    # txredisapi runs on the global reactor (its protocol and pool call it
    # directly), so its endpoint does too.
    from twisted.internet import reactor
    from twisted.internet.endpoints import HostnameEndpoint

    factory = PoolFactory(address, timeout, size)
    factory.startConnecting(HostnameEndpoint(reactor, address.host, address.port,
                                             timeout=timeout))
    return factory.handler
