# -*- test-case-name: tests.test_outlier -*-
"""
Passive outlier detection: backends that keep failing real requests are
taken out of their group for a while, without waiting for an active health
check to notice.

The forwarder tells the L{OutlierDetector} the outcome of every exchange
with a backend (L{OutlierDetector.success}, L{OutlierDetector.failure});
which outcomes count as failures (refused or reset connections, timeouts,
malformed responses, perhaps 5xx statuses) is the forwarder's decision.
After C{consecutive_failures} failures in a row a backend is I{ejected}: its
C{ejected} flag is set, so that balancers skip it, and a timer on the clock
brings it back by itself.  This is what Envoy calls outlier detection and
nginx C{max_fails}/C{fail_timeout}.

The rules, chosen to keep a group serving:

  - B{Backoff.}  The first ejection lasts C{base_ejection} seconds; each
    further one twice as long as the one before, up to C{max_ejection}:
    30, 60, 120, 240, 300, 300 ... seconds with the defaults.  A backend
    that keeps failing stays out longer and longer and costs fewer and
    fewer failed requests.

  - B{Forgiveness.}  The count of ejections is reset once the backend has
    been back for C{max_ejection} seconds without being ejected again: its
    next ejection is a first one again.  A backend that failed last week
    is not punished for it today.

  - B{A cap.}  At most C{max_ejected_share} of the group's backends are
    ejected at once, rounded down, but at least one in a group of two or
    more when the share is above 0: C{floor(share * N)}, at least 1 when
    C{N > 1}.  A backend alone in its group is never ejected (there is no
    other to send its requests to), and C{max_ejected_share = 0} disables
    ejection.  When a backend reaches the threshold but the cap is reached,
    it stays in; each further failure tries again.

  - B{The last one stays.}  A backend is not ejected while it is the only
    available backend of its group (the others being down, draining or
    ejected): ejecting it would answer every request with 503 instead of
    some with 502.

Outcomes reported while a backend is ejected (requests that were already
under way) are ignored.  The detector owns the C{ejected} flag: L{stop} and
L{OutlierDetector.remove_backend} bring ejected backends back, since no
timer would do it afterwards.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Iterable, List, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from twistproxy.interfaces import IBackend
from twistproxy.upstream.health import SlowStart, notify


class _Outlier:
    """
    What an L{OutlierDetector} knows of one backend.
    """

    __slots__ = (
        "backend", "failures", "times", "ejected_until", "last_ejection",
        "last_return", "timer", "refused",
    )

    def __init__(self, backend: IBackend) -> None:
        self.backend = backend
        self.failures = 0
        # Ejections so far, before forgiveness.
        self.times = 0
        self.ejected_until: Optional[float] = None
        self.last_ejection: Optional[float] = None
        self.last_return: Optional[float] = None
        self.timer: Optional[IDelayedCall] = None
        # Whether an ejection was refused (cap) during the current run of
        # failures, so that the refusal is logged once.
        self.refused = False


class OutlierDetector:
    """
    Ejects the backends of one group that fail too many requests in a row,
    and brings them back after a while that doubles with each ejection.

    See the module's documentation for the rules.

    @ivar consecutive_failures: Failures in a row that eject a backend.
    @ivar base_ejection: Seconds the first ejection lasts.
    @ivar max_ejection: The longest ejection, in seconds; also how long a
        backend must stay in for its count of ejections to be forgiven.
    @ivar max_ejected_share: The largest share of the group ejected at
        once, from 0 to 1.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        backends: Iterable[IBackend],
        consecutive_failures: int = 5,
        base_ejection: float = 30.0,
        max_ejection: float = 300.0,
        max_ejected_share: float = 0.5,
        on_change: Optional[Callable[[IBackend, str, str], object]] = None,
        slow_start: Optional[SlowStart] = None,
    ) -> None:
        """
        @param clock: The clock of the ejection timers.
        @param backends: The group's backends; more may be added later.
        @param on_change: Called with the backend, C{'ejected'} or
            C{'returned'} and a sentence saying why, after each change.
        @param slow_start: Ramps up the backends that return, or C{None}.
        @raises ValueError: when C{consecutive_failures} is less than 1,
            C{base_ejection} is not positive, C{max_ejection} is less than
            C{base_ejection}, or C{max_ejected_share} is not between 0 and
            1.
        """
        if consecutive_failures < 1:
            raise ValueError(f"consecutive_failures must be at least 1 (got {consecutive_failures})")
        if not base_ejection > 0:
            raise ValueError(f"base_ejection must be positive (got {base_ejection})")
        if not max_ejection >= base_ejection:
            raise ValueError(
                f"max_ejection ({max_ejection}) must be at least base_ejection ({base_ejection})")
        if not 0 <= max_ejected_share <= 1:
            raise ValueError(f"max_ejected_share must be between 0 and 1 (got {max_ejected_share})")
        self._clock = clock
        self.consecutive_failures = consecutive_failures
        self.base_ejection = float(base_ejection)
        self.max_ejection = float(max_ejection)
        self.max_ejected_share = float(max_ejected_share)
        self._on_change = on_change
        self._slow_start = slow_start
        self._states: Dict[IBackend, _Outlier] = {}
        for backend in backends:
            self.add_backend(backend)

    @property
    def backends(self) -> List[IBackend]:
        """
        The backends watched, in the order they were added.
        """
        return list(self._states)

    # The forwarder's calls: cheap, and never raising.

    def success(self, backend: IBackend) -> None:
        """
        An exchange with C{backend} succeeded: its run of failures ends.
        """
        state = self._states.get(backend)
        if state is not None and state.ejected_until is None:
            state.failures = 0
            state.refused = False

    def failure(self, backend: IBackend) -> None:
        """
        An exchange with C{backend} failed; eject it if that makes
        C{consecutive_failures} in a row and the rules allow.
        """
        state = self._states.get(backend)
        if state is None or state.ejected_until is not None:
            return
        state.failures += 1
        if state.failures >= self.consecutive_failures:
            self._eject(state)

    # Membership

    def add_backend(self, backend: IBackend) -> None:
        """
        Watch one more backend.  Does nothing when it is watched already.
        """
        if backend not in self._states:
            self._states[backend] = _Outlier(backend)

    def remove_backend(self, backend: IBackend) -> None:
        """
        Stop watching a backend, bringing it back first if it is ejected.
        Does nothing when it is not watched.
        """
        state = self._states.get(backend)
        if state is None:
            return
        if state.ejected_until is not None:
            self._return(state, "no longer watched by outlier detection", slow_start=False)
        del self._states[backend]

    def stop(self) -> None:
        """
        Cancel every timer and bring every ejected backend back now.
        """
        for state in self._states.values():
            if state.ejected_until is not None:
                self._return(state, "outlier detection stopped", slow_start=False)

    def ejection_limit(self) -> int:
        """
        How many of the group's backends may be ejected at once.
        """
        count = len(self._states)
        if count <= 1 or self.max_ejected_share <= 0:
            return 0
        # The epsilon keeps 0.7 * 10 (6.9999...) from rounding down to 6.
        return max(1, math.floor(self.max_ejected_share * count + 1e-9))

    def ejected_count(self) -> int:
        """
        How many of the group's backends are ejected now.
        """
        return sum(1 for state in self._states.values() if state.ejected_until is not None)

    def status(self, backend: IBackend) -> Dict[str, Any]:
        """
        What the detector knows of one backend, as plain data.

        @raises KeyError: when C{backend} is not watched by this detector.
        @return: A dictionary with C{ejected}, C{consecutive_failures},
            C{ejections} (ejections that count towards the next one's
            length), C{ejected_until}, C{last_ejection} and C{last_return}
            (clock times in seconds, or C{None}), and C{next_ejection} (how
            long the next ejection would last, in seconds).
        """
        state = self._states[backend]
        times = self._times(state, self._clock.seconds())
        return {
            "ejected": state.ejected_until is not None,
            "consecutive_failures": state.failures,
            "ejections": times,
            "ejected_until": state.ejected_until,
            "last_ejection": state.last_ejection,
            "last_return": state.last_return,
            "next_ejection": self._duration(times),
        }

    # The rules

    def _times(self, state: _Outlier, now: float) -> int:
        """
        The ejections that count, after forgiveness.
        """
        if (
            state.ejected_until is None
            and state.last_return is not None
            and now - state.last_return >= self.max_ejection
        ):
            return 0
        return state.times

    def _duration(self, times: int) -> float:
        # min() before the power: 2 ** times must not grow without bound.
        return min(self.base_ejection * 2 ** min(times, 64), self.max_ejection)

    def _refuse(self, state: _Outlier, why: str) -> None:
        if not state.refused:
            state.refused = True
            self.log.warn(
                "Backend {backend} failed {failures} requests in a row but "
                "stays in: {why}",
                backend=state.backend.name, failures=state.failures, why=why,
            )

    def _eject(self, state: _Outlier) -> None:
        backend = state.backend
        ejected = self.ejected_count()
        if ejected >= self.ejection_limit():
            self._refuse(
                state,
                f"{ejected} of {len(self._states)} backends are ejected "
                f"already, the most allowed (max_ejected_share "
                f"{self.max_ejected_share:g})",
            )
            return
        if not any(
            other.available for other in self._states if other is not backend
        ):
            self._refuse(state, "it is the only available backend of its group")
            return
        now = self._clock.seconds()
        state.times = self._times(state, now)
        duration = self._duration(state.times)
        state.times += 1
        state.ejected_until = now + duration
        state.last_ejection = now
        state.refused = False
        backend.ejected = True  # type: ignore[attr-defined]
        backend.refresh()  # type: ignore[attr-defined]
        if self._slow_start is not None:
            self._slow_start.cancel(backend)
        state.timer = self._clock.callLater(duration, self._return, state, f"ejection of {duration:g}s over")
        detail = (
            f"{state.failures} requests in a row failed; ejected for "
            f"{duration:g}s (ejection {state.times})"
        )
        self.log.warn("Backend {backend} ejected: {detail}", backend=backend.name,
                      detail=detail, duration=duration, ejections=state.times)
        notify(self.log, self._on_change, backend, "ejected", detail)

    def _return(self, state: _Outlier, detail: str, slow_start: bool = True) -> None:
        timer, state.timer = state.timer, None
        if timer is not None and timer.active():
            timer.cancel()
        backend = state.backend
        state.ejected_until = None
        state.failures = 0
        state.refused = False
        state.last_return = self._clock.seconds()
        backend.ejected = False  # type: ignore[attr-defined]
        backend.refresh()  # type: ignore[attr-defined]
        if slow_start and self._slow_start is not None and backend.available:
            self._slow_start.begin(backend)
        self.log.info("Backend {backend} returned: {detail}", backend=backend.name, detail=detail)
        notify(self.log, self._on_change, backend, "returned", detail)

    def __repr__(self) -> str:
        return (
            f"<OutlierDetector {self.ejected_count()}/{len(self._states)} ejected,"
            f" after {self.consecutive_failures} failures>"
        )
