# -*- test-case-name: tests.test_mirror -*-
"""
Mirroring: a copy of a share of a route's requests goes to a shadow group.

A route with a C{mirror} table sends, besides each request it forwards, a
copy of C{percent} per cent of them to a backend of the shadow group, with
the same head the real backend gets.  The copy is a request of its own: the
shadow's answer is read and dropped, its failures (refused, reset, slow past
the response timeout) end it and nothing else, and the client's request
never waits for it.  Copies are bounded: at most C{max_in_flight} at once
per route, the excess dropped and counted; requests with a body, or that
upgrade the connection, are not copied (counted too).

It sits beside the forwarder, which calls L{Mirror.copy} once it has sent
the request on its way.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Dict, Optional

from twistproxy.cache.runtime import Background
from twistproxy.config import RouteMirror
from twistproxy.http.exchange import Exchange
from twistproxy.upstream.group import UpstreamGroupRuntime


class _Shadow(Background):
    """
    The client side of a copy: like the cache's background requests', it
    drops the response, and tells the mirror when the copy is over.  It
    also gives the original's client connection, which a pool with PROXY
    headers describes and keeps its connections apart by.
    """

    def __init__(self, downstream: Any, mirror: "Mirror") -> None:
        super().__init__(downstream.proto)
        self.connection = downstream.connection
        self._mirror = mirror

    def _end(self, exchange: Exchange) -> None:
        self._mirror.done(exchange, True)


class Mirror:
    """
    The mirror of one route.

    @ivar copied: Copies sent.
    @ivar unanswered: Copies the shadow did not answer (or no backend
        took).
    @ivar dropped: Copies not sent because C{max_in_flight} were in flight.
    @ivar skipped: Requests chosen but not copied (a body, an upgrade).
    @ivar in_flight: Copies under way.
    """

    def __init__(self, config: RouteMirror, group: UpstreamGroupRuntime,
                 head: Callable[[Exchange, UpstreamGroupRuntime, Any], bytes],
                 rng: Optional[random.Random] = None) -> None:
        """
        @param group: The shadow group.
        @param head: Builds the head a backend of a group gets for a request
            (the forwarder's, so that the copy is the same).
        @param rng: Chooses the requests mirrored.
        """
        self.config = config
        self.group = group
        self._head = head
        self._random = rng if rng is not None else random.Random()
        self.copied = self.unanswered = self.dropped = self.skipped = self.in_flight = 0

    def copy(self, exchange: Exchange) -> None:
        """
        Send a copy of C{exchange}, the request just forwarded, when it is among
        the share mirrored and the bounds allow.
        """
        config = self.config
        if config.percent < 100 and self._random.randrange(100) >= config.percent:
            return
        req = exchange.request
        if req.has_body or req.upgrade is not None:
            self.skipped += 1
            return
        if self.in_flight >= config.max_in_flight:
            self.dropped += 1
            return
        group = self.group
        copy = Exchange(
            req, exchange.client_address, _Shadow(exchange.downstream, self), exchange.started)
        copy.route = exchange.route
        copy.forwarder = self
        copy.group = group
        backend = group.pick(copy)
        if backend is None:
            self.unanswered += 1
            return
        self.in_flight += 1
        self.copied += 1
        copy.backend = backend
        backend.in_flight += 1
        copy.head = self._head(exchange, group, backend)
        group.pools[backend].submit(copy)

    def failed(self, exchange: Exchange, status: int, reason: str) -> None:
        """
        The copy C{exchange} failed (the pool and the upstream protocol tell the
        exchange's forwarder): it is over, never retried.
        """
        self.done(exchange, False)

    def done(self, exchange: Exchange, answered: bool) -> None:
        """
        The copy C{exchange} is over: answered, or failed.
        """
        if exchange.upstream is not None:
            exchange.pool.cancel(exchange)
        backend, exchange.backend = exchange.backend, None
        self.in_flight -= 1
        if not answered:
            self.unanswered += 1
        backend.in_flight -= 1
        self.group.check_drained(backend)

    def status(self) -> Dict[str, int]:
        """
        The mirror's counters, for the status API.
        """
        return {"copied": self.copied, "unanswered": self.unanswered, "dropped": self.dropped,
                "skipped": self.skipped, "in_flight": self.in_flight}
