# -*- test-case-name: tests.test_mirror -*-
"""
Mirroring: a copy of a share of a route's requests goes to a shadow group.

A route with a C{mirror} table sends, besides each request it forwards, a
copy of C{percent} per cent of them to a backend of the shadow group, with
the same head the real backend gets.  The copy is a request of its own: the
shadow's answer is read and dropped, its failures (refused, reset, slow past
the response timeout) end it and nothing else, and the client's request
never waits for it.  Copies are bounded: at most C{max_in_flight} at once
per route, the excess dropped and counted; requests that upgrade the
connection are not copied (counted too).

A request body is copied when it is at most C{max_body_size} bytes: its
pieces are kept (a L{_BodyCopy} on the exchange, fed by the upstream
connection as it sends them) and the copy leaves once the whole body has
gone to the real backend, with the body at once.  So the client's body is
never paced by the shadow, and the memory held is bounded by the limit; a
body that declares a larger length, or grows past it, is not copied
(counted as C{too_large}).

It sits beside the forwarder, which asks L{Mirror.chosen} before it sends
the request on its way (so that no body byte goes by unseen) and calls
L{Mirror.copy} after.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Dict, List, Optional

from twistproxy.cache.runtime import Background
from twistproxy.config import RouteMirror
from twistproxy.http.exchange import Exchange
from twistproxy.upstream.group import UpstreamGroupRuntime


class _Shadow(Background):
    """
    The client side of a copy: like the cache's background requests', it
    drops the response, and tells the mirror when the copy is over.  It
    also gives the original's client connection, which a pool with PROXY
    headers describes and keeps its connections apart by, and sends the
    copied body once a connection to the shadow takes the copy.
    """

    def __init__(self, downstream: Any, mirror: "Mirror", body: bytes) -> None:
        super().__init__(downstream.proto)
        self.connection = downstream.connection
        self._mirror = mirror
        self._body = body

    def upstream_attached(self, exchange: Exchange) -> None:
        if exchange.request.has_body:
            upstream = exchange.upstream
            if self._body:
                upstream.write_body(self._body)
            upstream.end_body()

    def _end(self, exchange: Exchange) -> None:
        self._mirror.done(exchange, True)


class _BodyCopy:
    """
    The pieces of a request body on their way to the real backend, kept
    for the copy until the body ends or grows past the limit.
    """

    __slots__ = ("_mirror", "_pieces", "_left")

    def __init__(self, mirror: "Mirror", limit: int) -> None:
        self._mirror = mirror
        self._pieces: Optional[List[bytes]] = []
        self._left = limit

    def write(self, data: bytes) -> None:
        if self._pieces is None:
            return
        self._left -= len(data)
        if self._left < 0:
            self._pieces = None
            self._mirror.too_large += 1
            return
        self._pieces.append(data)

    def end(self, exchange: Exchange) -> None:
        if self._pieces is not None:
            self._mirror.copy(exchange, b"".join(self._pieces))


class Mirror:
    """
    The mirror of one route.

    @ivar copied: Copies sent.
    @ivar unanswered: Copies the shadow did not answer (or no backend
        took).
    @ivar dropped: Copies not sent because C{max_in_flight} were in flight.
    @ivar skipped: Requests chosen but not copied because they upgrade the
        connection.
    @ivar too_large: Requests chosen but not copied because their body is
        larger than C{max_body_size}.
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
        self.copied = self.unanswered = self.dropped = self.skipped = self.too_large = 0
        self.in_flight = 0

    def chosen(self, exchange: Exchange) -> bool:
        """
        Whether to L{copy} C{exchange}, about to be forwarded, once it has
        been: it is among the share mirrored and can be copied.  A request
        with a body that may be copied is given a L{_BodyCopy}, which copies
        it when its body has gone upstream: then C{False}.
        """
        config = self.config
        if config.percent < 100 and self._random.randrange(100) >= config.percent:
            return False
        req = exchange.request
        if req.upgrade is not None:
            self.skipped += 1
            return False
        if not req.has_body:
            return True
        length = req.content_length
        if not config.max_body_size or length is not None and length > config.max_body_size:
            self.too_large += 1
        else:
            exchange.body_copy = _BodyCopy(self, config.max_body_size)
        return False

    def copy(self, exchange: Exchange, body: bytes = b"") -> None:
        """
        Send a copy of C{exchange}, the request just forwarded (with
        C{body}, the whole of its body), when the bounds allow.
        """
        if self.in_flight >= self.config.max_in_flight:
            self.dropped += 1
            return
        req = exchange.request
        group = self.group
        copy = Exchange(req, exchange.client_address, _Shadow(exchange.downstream, self, body),
                        exchange.started)
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
                "skipped": self.skipped, "too_large": self.too_large,
                "in_flight": self.in_flight}
