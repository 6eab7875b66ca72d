"""
Tests for L{twistproxy.upstream.outlier}: passive outlier detection on a fake
clock.
"""

from __future__ import annotations

from typing import Any, List, Tuple

from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from twistproxy.upstream.backend import Backend
from twistproxy.upstream.health import SlowStart
from twistproxy.upstream.outlier import OutlierDetector


def _backends(count: int, weight: int = 1) -> List[Backend]:
    return [
        Backend(f"127.0.0.1:{8001 + i}", "http", "127.0.0.1", 8001 + i, weight)
        for i in range(count)
    ]


class OutlierDetectorTests(SynchronousTestCase):
    """
    Tests for L{OutlierDetector}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.changes: List[Tuple[str, str, str]] = []

    def detector(self, backends, **kwargs: Any) -> OutlierDetector:
        kwargs.setdefault(
            "on_change", lambda b, what, detail: self.changes.append((b.name, what, detail))
        )
        detector = OutlierDetector(self.clock, backends, **kwargs)
        self.addCleanup(detector.stop)
        return detector

    def fail_times(self, detector: OutlierDetector, backend: Backend, count: int) -> None:
        for _ in range(count):
            detector.failure(backend)

    def eject_and_return(self, detector: OutlierDetector, backend: Backend) -> float:
        """
        Eject C{backend} and let it come back; return how long it was out.
        """
        self.fail_times(detector, backend, detector.consecutive_failures)
        self.assertTrue(backend.ejected)
        duration = detector.status(backend)["ejected_until"] - self.clock.seconds()
        self.clock.advance(duration)
        self.assertFalse(backend.ejected)
        return duration

    def test_validation(self) -> None:
        """
        Nonsensical settings are L{ValueError}s.
        """
        for kwargs in [dict(consecutive_failures=0), dict(base_ejection=0),
                       dict(base_ejection=10, max_ejection=5), dict(max_ejected_share=1.5),
                       dict(max_ejected_share=-0.1)]:
            self.assertRaises(ValueError, OutlierDetector, self.clock, [], **kwargs)

    def test_ejects_after_consecutive_failures(self) -> None:
        """
        A backend is ejected by its C{consecutive_failures}th failure in a
        row, and not before.
        """
        backends = _backends(3)
        detector = self.detector(backends, consecutive_failures=5)
        self.fail_times(detector, backends[0], 4)
        self.assertTrue(backends[0].available)
        self.assertEqual(self.changes, [])
        detector.failure(backends[0])
        self.assertTrue(backends[0].ejected)
        self.assertFalse(backends[0].available)
        self.assertEqual(
            self.changes,
            [("127.0.0.1:8001", "ejected",
              "5 requests in a row failed; ejected for 30s (ejection 1)")],
        )

    def test_success_resets(self) -> None:
        """
        A success ends the run of failures: failures that are not
        consecutive never eject.
        """
        backends = _backends(3)
        detector = self.detector(backends, consecutive_failures=3)
        for _ in range(10):
            self.fail_times(detector, backends[0], 2)
            detector.success(backends[0])
        self.assertFalse(backends[0].ejected)
        self.assertEqual(detector.status(backends[0])["consecutive_failures"], 0)

    def test_automatic_return(self) -> None:
        """
        An ejected backend comes back by itself after C{base_ejection}
        seconds, with its run of failures forgotten.
        """
        backends = _backends(2)
        detector = self.detector(backends, consecutive_failures=2, base_ejection=30)
        self.fail_times(detector, backends[0], 2)
        self.clock.advance(29.9)
        self.assertTrue(backends[0].ejected)
        self.clock.advance(0.1)
        self.assertFalse(backends[0].ejected)
        self.assertTrue(backends[0].available)
        self.assertEqual(self.changes[-1], ("127.0.0.1:8001", "returned", "ejection of 30s over"))
        self.assertEqual(detector.status(backends[0])["consecutive_failures"], 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        detector.failure(backends[0])
        self.assertFalse(backends[0].ejected)

    def test_outcomes_while_ejected_ignored(self) -> None:
        """
        Outcomes of requests that were under way when the backend was
        ejected neither extend the ejection nor count towards the next.
        """
        backends = _backends(2)
        detector = self.detector(backends, consecutive_failures=2, base_ejection=10)
        self.fail_times(detector, backends[0], 2)
        until = detector.status(backends[0])["ejected_until"]
        self.fail_times(detector, backends[0], 5)
        detector.success(backends[0])
        self.assertEqual(detector.status(backends[0])["ejected_until"], until)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(10)
        detector.failure(backends[0])
        self.assertFalse(backends[0].ejected)

    def test_exponential_backoff_and_cap(self) -> None:
        """
        Each further ejection lasts twice as long as the one before, up to
        C{max_ejection}.
        """
        backends = _backends(2)
        detector = self.detector(backends, consecutive_failures=1, base_ejection=30, max_ejection=300)
        durations = [self.eject_and_return(detector, backends[0]) for _ in range(7)]
        self.assertEqual(durations, [30, 60, 120, 240, 300, 300, 300])

    def test_count_forgiven(self) -> None:
        """
        Once a backend has stayed in for C{max_ejection} seconds since it
        came back, its next ejection is a first one again; a shorter stay is
        not enough.
        """
        backends = _backends(2)
        detector = self.detector(backends, consecutive_failures=1, base_ejection=10, max_ejection=100)
        self.assertEqual(self.eject_and_return(detector, backends[0]), 10)
        self.clock.advance(99)
        self.assertEqual(detector.status(backends[0])["next_ejection"], 20)
        self.assertEqual(self.eject_and_return(detector, backends[0]), 20)
        self.clock.advance(100)
        self.assertEqual(detector.status(backends[0])["ejections"], 0)
        self.assertEqual(detector.status(backends[0])["next_ejection"], 10)
        self.assertEqual(self.eject_and_return(detector, backends[0]), 10)

    def test_huge_count(self) -> None:
        """
        However many ejections, the duration stays at the cap.
        """
        backends = _backends(2)
        detector = self.detector(backends, consecutive_failures=1, base_ejection=1, max_ejection=5)
        for _ in range(2000):
            self.eject_and_return(detector, backends[0])
        self.assertEqual(detector.status(backends[0])["next_ejection"], 5)

    def test_max_ejected_share(self) -> None:
        """
        No more than C{max_ejected_share} of the group is ejected at once;
        a backend refused for that is ejected by a later failure once
        another has come back, and the refusal is logged once.
        """
        backends = _backends(4)
        detector = self.detector(backends, consecutive_failures=2, base_ejection=10,
                                 max_ejected_share=0.5)
        events: List[dict] = []
        self.patch(detector, "log", Logger(observer=events.append))
        self.fail_times(detector, backends[0], 2)
        self.clock.advance(1)
        self.fail_times(detector, backends[1], 2)
        self.fail_times(detector, backends[2], 5)
        self.assertEqual([b.ejected for b in backends], [True, True, False, False])
        self.assertEqual(detector.ejected_count(), 2)
        refusals = [e for e in events if "stays in" in e["log_format"]]
        self.assertEqual(len(refusals), 1)
        self.assertIn("2 of 4 backends are ejected already", refusals[0]["why"])
        self.clock.advance(9)
        self.assertFalse(backends[0].ejected)
        detector.failure(backends[2])
        self.assertTrue(backends[2].ejected)

    def test_ejection_limit(self) -> None:
        """
        The limit is C{floor(share * N)}, at least one when the group has
        two backends or more and the share is above 0; a lone backend is
        never ejected.
        """
        for count, share, limit in [(1, 1.0, 0), (2, 0.1, 1), (2, 0.5, 1), (3, 0.5, 1),
                                    (4, 0.5, 2), (10, 0.7, 7), (10, 0.29, 2), (5, 1.0, 5),
                                    (5, 0.0, 0)]:
            detector = OutlierDetector(self.clock, _backends(count), max_ejected_share=share)
            self.assertEqual(detector.ejection_limit(), limit, (count, share))

    def test_lone_backend_never_ejected(self) -> None:
        """
        A backend alone in its group stays in however often it fails.
        """
        backends = _backends(1)
        detector = self.detector(backends, consecutive_failures=1, max_ejected_share=1.0)
        self.fail_times(detector, backends[0], 10)
        self.assertFalse(backends[0].ejected)

    def test_zero_share_disables(self) -> None:
        """
        C{max_ejected_share = 0} never ejects.
        """
        backends = _backends(3)
        detector = self.detector(backends, consecutive_failures=1, max_ejected_share=0)
        self.fail_times(detector, backends[0], 10)
        self.assertFalse(backends[0].ejected)

    def test_last_available_stays(self) -> None:
        """
        The only available backend of a group is not ejected, even when
        the share would allow it.
        """
        backends = _backends(3)
        detector = self.detector(backends, consecutive_failures=1, max_ejected_share=1.0)
        backends[1].healthy = False
        backends[1].refresh()
        detector.failure(backends[0])
        self.assertTrue(backends[0].ejected)
        detector.failure(backends[2])
        self.assertFalse(backends[2].ejected)
        self.assertTrue(backends[2].available)

    def test_slow_start_on_return(self) -> None:
        """
        A backend that returns ramps up through slow start.
        """
        backends = _backends(2, weight=10)
        slow = SlowStart(self.clock, window=20)
        self.addCleanup(slow.stop)
        detector = self.detector(backends, consecutive_failures=1, base_ejection=5, slow_start=slow)
        detector.failure(backends[0])
        self.clock.advance(5)
        self.assertEqual(backends[0].effective_weight, 1.0)
        self.clock.advance(10)
        self.assertAlmostEqual(backends[0].effective_weight, 5.5)

    def test_ejection_ends_ramp(self) -> None:
        """
        A backend ejected while it ramps up stops ramping, and ramps again
        from the start when it returns.
        """
        backends = _backends(2, weight=10)
        slow = SlowStart(self.clock, window=20)
        self.addCleanup(slow.stop)
        detector = self.detector(backends, consecutive_failures=1, base_ejection=5, slow_start=slow)
        slow.begin(backends[0])
        self.clock.advance(10)
        detector.failure(backends[0])
        self.assertFalse(slow.ramping(backends[0]))
        self.assertEqual(backends[0].effective_weight, 10)
        self.clock.advance(5)
        self.assertTrue(slow.ramping(backends[0]))
        self.assertEqual(backends[0].effective_weight, 1.0)

    def test_no_slow_start_while_unhealthy(self) -> None:
        """
        A backend that returns from ejection while its health check holds
        it down is not available, so its ramp does not start.
        """
        backends = _backends(2, weight=10)
        slow = SlowStart(self.clock, window=20)
        self.addCleanup(slow.stop)
        detector = self.detector(backends, consecutive_failures=1, base_ejection=5, slow_start=slow)
        detector.failure(backends[0])
        backends[0].healthy = False
        self.clock.advance(5)
        self.assertFalse(slow.ramping(backends[0]))
        self.assertEqual(backends[0].effective_weight, 10)

    def test_status(self) -> None:
        """
        C{status} reports the state of one backend as plain data.
        """
        backends = _backends(2)
        detector = self.detector(backends, consecutive_failures=3, base_ejection=10)
        self.assertEqual(
            detector.status(backends[0]),
            {"ejected": False, "consecutive_failures": 0, "ejections": 0,
             "ejected_until": None, "last_ejection": None, "last_return": None,
             "next_ejection": 10.0},
        )
        self.clock.advance(100)
        self.fail_times(detector, backends[0], 3)
        self.assertEqual(
            detector.status(backends[0]),
            {"ejected": True, "consecutive_failures": 3, "ejections": 1,
             "ejected_until": 110.0, "last_ejection": 100.0, "last_return": None,
             "next_ejection": 20.0},
        )
        self.assertRaises(KeyError, detector.status, _backends(5)[4])

    def test_stop(self) -> None:
        """
        L{OutlierDetector.stop} brings every ejected backend back and leaves
        no timer on the clock.
        """
        backends = _backends(4)
        detector = self.detector(backends, consecutive_failures=1)
        detector.failure(backends[0])
        detector.failure(backends[1])
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)
        detector.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertTrue(all(b.available for b in backends))
        self.assertEqual(detector.ejected_count(), 0)
        self.assertEqual(
            self.changes[-1], ("127.0.0.1:8002", "returned", "outlier detection stopped")
        )

    def test_add_and_remove(self) -> None:
        """
        Backends can join and leave; one that leaves while ejected comes
        back first, and its timer is cancelled; the limit follows the
        group's size.
        """
        backends = _backends(2)
        detector = self.detector(backends[:1], consecutive_failures=1)
        self.assertEqual(detector.ejection_limit(), 0)
        detector.add_backend(backends[1])
        detector.add_backend(backends[1])
        self.assertEqual(detector.backends, backends)
        self.assertEqual(detector.ejection_limit(), 1)
        detector.failure(backends[1])
        self.assertTrue(backends[1].ejected)
        detector.remove_backend(backends[1])
        detector.remove_backend(backends[1])
        self.assertFalse(backends[1].ejected)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(detector.ejected_count(), 0)
        self.assertEqual(detector.backends, backends[:1])

    def test_unknown_backend_ignored(self) -> None:
        """
        Outcomes for a backend the detector does not watch are ignored (the
        forwarder's calls never raise).
        """
        detector = self.detector(_backends(2), consecutive_failures=1)
        stranger = _backends(3)[2]
        detector.failure(stranger)
        detector.success(stranger)
        self.assertFalse(stranger.ejected)

    def test_on_change_raising(self) -> None:
        """
        An C{on_change} that raises is logged; the ejection happens all the
        same.
        """
        backends = _backends(2)

        def on_change(backend, what, detail):
            raise ZeroDivisionError()

        detector = self.detector(backends, consecutive_failures=1, on_change=on_change)
        detector.failure(backends[0])
        self.assertTrue(backends[0].ejected)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        detector.stop()
        self.flushLoggedErrors(ZeroDivisionError)
