# -*- test-case-name: tests.test_deadlines -*-
"""
Coarse shared timeouts for connections.

Every connection of the proxy is waiting for something at any moment (a
request head, a body, a response, the next request) and every wait needs a
timeout.  One L{DelayedCall} per wait would cost an allocation and a heap
operation per request; worse, moving a timer earlier (from a 60 second idle
timeout to a 10 second head timeout, say) makes Twisted search its whole
list of timers.

Instead each connection just writes down when its current wait must end
(C{deadline}, in reactor seconds) and a L{Deadlines} checks every member a
few times a second, calling C{expired()} on those whose deadline has
passed.  Setting or changing a timeout is a float assignment.  The price is
precision: a timeout fires up to L{Deadlines.resolution} seconds late,
which for timeouts counted in seconds does not matter.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Optional

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

NEVER = float("inf")


class Wait(IntEnum):
    """
    What a connection's timer waits for, one kind for every codec: the
    kind names the timeout that applies and what happens when it expires.
    """

    NONE = 0  # no wait
    FIRST_BYTES = 1  # the first bytes, to choose a codec
    IDLE = 2  # the next request (client) or a reuse (pooled backend)
    HEAD = 3  # the rest of a request head
    BODY = 4  # more of a request body
    TUNNEL = 5  # either side of a tunnel
    RESPONSE = 6  # a backend's response


class Deadlines:
    """
    A set of objects with a C{deadline} attribute and an C{expired()}
    method, checked every C{resolution} seconds while the set is not empty.
    """

    def __init__(self, clock: IReactorTime, resolution: float = 0.25):
        self.clock = clock
        self.resolution = resolution
        self._members: set = set()
        self._loop = LoopingCall(self._check)
        self._loop.clock = clock

    def add(self, member) -> None:
        self._members.add(member)
        if not self._loop.running:
            self._loop.start(self.resolution, now=False)

    def discard(self, member) -> None:
        self._members.discard(member)
        if not self._members and self._loop.running:
            self._loop.stop()

    def __len__(self) -> int:
        return len(self._members)

    def _check(self) -> None:
        now = self.clock.seconds()
        members = self._members
        for member in [m for m in members if m.deadline <= now]:
            # An earlier expiry may have removed or renewed this one.
            if member.deadline <= now and member in members:
                member.deadline = NEVER
                member.expired()


class Waiting:
    """
    A mixin for members of L{Deadlines} that wait for one thing at a time:
    C{_set_timer(kind, seconds)} starts a wait of a L{Wait} kind
    (C{Wait.NONE} means none), and L{expired} calls C{_wait_expired(kind)}
    with the kind that timed out.  A caller that has just read the clock
    passes what it read as C{now}: one clock read per event, not per wait.
    Needs a C{_clock} attribute.
    """

    deadline = NEVER
    _timer_kind = Wait.NONE

    def _set_timer(self, kind: Wait, seconds: float, now: Optional[float] = None) -> None:
        self._timer_kind = kind
        # Wait.NONE is 0: a member looked up on the enum class would cost
        # more than the whole assignment.
        if not kind:
            self.deadline = NEVER
        else:
            self.deadline = (self._clock.seconds() if now is None else now) + seconds

    def _earn_time(self, kind: Wait, seconds: float, rate: int, size: int) -> None:
        """
        Renew the wait C{kind} after C{size} bytes arrived: for C{seconds}
        from now or, with a minimum C{rate} (bytes per second), by only
        the time those bytes earn at that rate, so that a client trickling
        bytes cannot keep the wait going for ever.  Either way it never
        ends later than C{seconds} from now.
        """
        if rate and self._timer_kind == kind:
            self.deadline = min(self._clock.seconds() + seconds, self.deadline + size / rate)
        else:
            self._set_timer(kind, seconds)

    def expired(self) -> None:
        kind = self._timer_kind
        self._timer_kind = Wait.NONE
        if kind:
            self._wait_expired(kind)

    def _wait_expired(self, kind: Wait) -> None:
        raise NotImplementedError()
