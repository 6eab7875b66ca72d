"""
Tests for L{twistproxy.deadlines}.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twistproxy.deadlines import NEVER, Deadlines


class _Member:
    def __init__(self, deadline=NEVER):
        self.deadline = deadline
        self.expirations = 0

    def expired(self):
        self.expirations += 1


class DeadlinesTests(SynchronousTestCase):
    """
    Members expire once their deadline has passed, within the resolution.
    """

    def setUp(self):
        self.clock = Clock()
        self.deadlines = Deadlines(self.clock, resolution=0.5)

    def test_expires_after_deadline(self):
        """
        A member is told it expired at the first check at or after its
        deadline, once, and its deadline is cleared.
        """
        m = _Member(2.0)
        self.deadlines.add(m)
        self.clock.advance(1.5)
        self.assertEqual(m.expirations, 0)
        self.clock.advance(0.5)
        self.assertEqual((m.expirations, m.deadline), (1, NEVER))
        self.clock.advance(5)
        self.assertEqual(m.expirations, 1)

    def test_moved_deadline(self):
        """
        Moving the deadline later postpones expiry; NEVER disables it.
        """
        m = _Member(1.0)
        self.deadlines.add(m)
        m.deadline = 3.0
        self.clock.pump([0.5] * 5)
        self.assertEqual(m.expirations, 0)
        m.deadline = NEVER
        self.clock.pump([0.5] * 10)
        self.assertEqual(m.expirations, 0)

    def test_stops_when_empty(self):
        """
        No timer is left pending once the last member is discarded, and
        adding a member starts checking again.
        """
        m = _Member(1.0)
        self.deadlines.add(m)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.deadlines.discard(m)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.deadlines.add(m)
        self.clock.advance(1.0)
        self.assertEqual(m.expirations, 1)

    def test_expiry_may_discard_others(self):
        """
        A member's expiry may remove another member from the set; the
        removed one is not expired afterwards.
        """
        calls = []
        a, b = _Member(1.0), _Member(1.0)
        a.expired = lambda: (calls.append(a), self.deadlines.discard(b))
        b.expired = lambda: (calls.append(b), self.deadlines.discard(a))
        self.deadlines.add(a)
        self.deadlines.add(b)
        self.clock.advance(1.0)
        # Whichever is checked first removes the other, which then must not
        # be told it expired.
        self.assertEqual(len(calls), 1)
        self.assertEqual(len(self.deadlines), 1)
