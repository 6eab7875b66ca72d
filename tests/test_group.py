"""
Tests for L{twistproxy.upstream.group}: backends from configuration and
from DNS, failover tiers, status.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twistproxy.config import Discovery, UpstreamGroup, server
from twistproxy.testing import FakeRequestInfo
from twistproxy.upstream.discovery import Target
from twistproxy.upstream.group import UpstreamGroupRuntime


class _Pool:
    def __init__(self, backend):
        self.backend = backend
        self.closed = False

    def close(self):
        self.closed = True


def _group(*servers, **kw) -> UpstreamGroupRuntime:
    return UpstreamGroupRuntime(UpstreamGroup("g", tuple(servers), **kw), _Pool)


class DiscoveredBackendsTests(SynchronousTestCase):
    """
    Backends come and go with DNS answers.
    """

    def setUp(self):
        self.entry = Discovery(kind="dns", name="api.internal", port=8000)
        self.group = _group(server("http://10.0.0.1:80"), discovery=(self.entry,))

    def names(self):
        return [b.name for b in self.group.backends]

    def test_added_and_removed(self):
        """
        New addresses become backends, vanished ones are dropped and their
        pools closed; listed servers stay, and the balancer covers them all.
        """
        self.group.set_discovered(self.entry, (Target("10.0.1.1", 8000), Target("10.0.1.2", 8000)))
        self.assertEqual(self.names(), ["10.0.0.1:80", "10.0.1.1:8000", "10.0.1.2:8000"])
        gone = self.group.backends[1]
        pool = self.group.pools[gone]
        self.group.set_discovered(self.entry, (Target("10.0.1.2", 8000), Target("10.0.1.3", 8000)))
        self.assertEqual(self.names(), ["10.0.0.1:80", "10.0.1.2:8000", "10.0.1.3:8000"])
        self.assertTrue(pool.closed)
        picks = {self.group.pick(FakeRequestInfo()).name for _ in range(6)}
        self.assertEqual(picks, set(self.names()))

    def test_region_from_entry(self):
        """
        Backends found through an entry with a region are in that region,
        and so preferred by the locality picker for clients that are not
        located (regions with backends before backends without one).
        """
        entry = Discovery(kind="dns", name="eu.api.internal", port=8000, region="eu", zone="eu-1")
        group = _group(server("http://10.0.0.1:80"), discovery=(entry,))
        group.set_discovered(entry, (Target("10.0.2.1", 8000),))
        backend = group.backends[1]
        self.assertEqual((backend.region, backend.zone), ("eu", "eu-1"))
        self.assertEqual({group.pick(FakeRequestInfo()) for _ in range(4)}, {backend})

    def test_weight_updated_in_place(self):
        """
        A changed weight updates the existing backend rather than replacing
        it.
        """
        self.group.set_discovered(self.entry, (Target("10.0.1.1", 8000),))
        backend = self.group.backends[1]
        self.group.set_discovered(self.entry, (Target("10.0.1.1", 8000, weight=5),))
        self.assertIs(self.group.backends[1], backend)
        self.assertEqual((backend.weight, backend.effective_weight), (5, 5))


class TierTests(SynchronousTestCase):
    """
    SRV priorities are failover tiers.
    """

    def test_lowest_available_tier_serves(self):
        """
        Requests go to the lowest-priority tier with an available backend,
        and come back when it recovers.
        """
        entry = Discovery(kind="srv", name="_http._tcp.api.internal")
        group = _group(discovery=(entry,))
        group.set_discovered(entry, (
            Target("10.0.0.1", 80, priority=10), Target("10.0.0.2", 80, priority=20),
        ))
        first, second = group.backends
        request = FakeRequestInfo()
        self.assertEqual({group.pick(request) for _ in range(4)}, {first})
        first.healthy = False
        group.changed(first, "unhealthy")
        self.assertEqual({group.pick(request) for _ in range(4)}, {second})
        first.healthy = True
        group.changed(first, "healthy")
        self.assertIs(group.pick(request), first)

    def test_no_backends_yet(self):
        """
        A group waiting for its first DNS answer has nothing to pick.
        """
        group = _group(discovery=(Discovery(kind="dns", name="a.b", port=1),))
        self.assertIsNone(group.pick(FakeRequestInfo()))


class StatusTests(SynchronousTestCase):
    """
    The group's state as data.
    """

    def test_status(self):
        """
        status() lists every backend with its flags and counters.
        """
        group = _group(server("http://10.0.0.1:80"))
        group.set_draining(group.backends[0], True)
        [backend] = group.status()["backends"]
        self.assertEqual(
            {k: backend[k] for k in ("name", "available", "healthy", "ejected", "draining")},
            {"name": "10.0.0.1:80", "available": False, "healthy": True, "ejected": False,
             "draining": True},
        )


class _Resolver:
    """
    Answers A queries for one name; no AAAA.
    """

    def __init__(self, addresses):
        self.addresses = addresses

    def lookupAddress(self, name, timeout=None):
        from twisted.internet import defer
        from twisted.names import dns

        answers = [dns.RRHeader(name=name, type=dns.A, payload=dns.Record_A(a))
                   for a in self.addresses]
        return defer.succeed((answers, [], []))

    def lookupIPV6Address(self, name, timeout=None):
        from twisted.internet import defer
        from twisted.names import error

        return defer.fail(error.DomainError(name))


class StartTests(SynchronousTestCase):
    """
    start() runs DNS discovery on the given clock and resolver.
    """

    def test_discovery_runs(self):
        """
        Starting the group resolves its DNS entries at once and again every
        interval; stop() leaves no timer behind.
        """
        from twisted.internet.task import Clock

        clock = Clock()
        entry = Discovery(kind="dns", name="api.internal", port=8000, interval=10.0)
        group = _group(discovery=(entry,))
        resolver = _Resolver(["10.0.0.1"])
        group.start(clock, resolver)
        self.assertEqual([b.name for b in group.backends], ["10.0.0.1:8000"])
        resolver.addresses = ["10.0.0.1", "10.0.0.2"]
        clock.advance(10)
        self.assertEqual([b.name for b in group.backends], ["10.0.0.1:8000", "10.0.0.2:8000"])
        group.stop()
        self.assertEqual(clock.getDelayedCalls(), [])


class DiscoveryCornerTests(SynchronousTestCase):
    """
    DNS answers the group cannot or need not use.
    """

    def test_answer_the_balancer_refuses_is_not_used(self):
        """
        An answer with more backends than a maglev table has slots is
        refused as a whole: the group keeps its previous backends.
        """
        entry = Discovery(kind="dns", name="api.internal", port=80)
        group = _group(discovery=(entry,), balancer="maglev", balancer_options={"table_size": 3})
        group.set_discovered(entry, tuple(Target(f"10.0.0.{i}", 80) for i in range(1, 3)))
        self.assertEqual(len(group.backends), 2)
        group.set_discovered(entry, tuple(Target(f"10.0.0.{i}", 80) for i in range(1, 6)))
        self.assertEqual([b.name for b in group.backends], ["10.0.0.1:80", "10.0.0.2:80"])
        self.assertIsNotNone(group.pick(FakeRequestInfo()))

    def test_listed_address_not_duplicated(self):
        """
        An address both listed and found in DNS stays one backend.
        """
        entry = Discovery(kind="dns", name="api.internal", port=80)
        group = _group(server("http://10.0.0.1:80"), discovery=(entry,))
        group.set_discovered(entry, (Target("10.0.0.1", 80), Target("10.0.0.2", 80)))
        self.assertEqual([b.name for b in group.backends], ["10.0.0.1:80", "10.0.0.2:80"])

    def test_removed_while_draining(self):
        """
        A draining backend that disappears from DNS while a request is in
        flight lets that request finish without error.
        """
        entry = Discovery(kind="dns", name="api.internal", port=80)
        group = _group(discovery=(entry,))
        group.set_discovered(entry, (Target("10.0.0.1", 80), Target("10.0.0.2", 80)))
        backend = group.backends[0]
        backend.in_flight = 1
        group.set_draining(backend, True)
        group.set_discovered(entry, (Target("10.0.0.2", 80),))
        backend.in_flight = 0
        group.check_drained(backend)
