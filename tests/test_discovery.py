"""
Tests for L{twistproxy.upstream.discovery}: DNS re-resolution on a fake
clock, against a fake resolver whose answers the tests give by hand; and
the configured name servers, asked in memory and, once, on loopback.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
from twisted.internet.interfaces import IResolver
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.names import dns, error
from twisted.names.common import ResolverBase
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from twistproxy.upstream.discovery import (
    DnsDiscovery,
    Target,
    TargetChanges,
    default_resolver,
    diff_targets,
)
from twistproxy.config import parse
from twistproxy.service import ProxyService

from tests.e2e_support import dns_server_factory

_TYPES = {"A": dns.A, "AAAA": dns.AAAA, "SRV": dns.SRV}


class FakeResolver(ResolverBase):
    """
    An L{IResolver} that records every query and answers only when a test
    says so.

    @ivar queries: C{(type, name, Deferred)} for every query, in order;
        C{type} is C{'A'}, C{'AAAA'} or C{'SRV'}, C{name} a L{str}.
    @ivar cancelled: C{(type, name)} of every query cancelled, in order.
    """

    def __init__(self) -> None:
        super().__init__()
        self.queries: List[Tuple[str, str, Deferred[Any]]] = []
        self.cancelled: List[Tuple[str, str]] = []

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> Deferred[Any]:
        kind = {v: k for k, v in _TYPES.items()}[type]
        text = name.decode("ascii")
        query: Deferred[Any] = Deferred(
            lambda d: self.cancelled.append((kind, text))
        )
        self.queries.append((kind, text, query))
        return query

    def asked(self) -> List[Tuple[str, str]]:
        """
        C{(type, name)} of every query so far.
        """
        return [(kind, name) for kind, name, _ in self.queries]

    def pending(self, kind: str, name: str) -> Deferred[Any]:
        """
        The one unanswered query of C{kind} for C{name}.
        """
        found = [
            d for k, n, d in self.queries if (k, n) == (kind, name) and not d.called
        ]
        assert len(found) == 1, (kind, name, self.asked())
        return found[0]

    def answer(
        self,
        kind: str,
        name: str,
        records: Sequence[dns.RRHeader],
        additional: Sequence[dns.RRHeader] = (),
    ) -> None:
        """
        Answer the pending query of C{kind} for C{name}.
        """
        self.pending(kind, name).callback((list(records), [], list(additional)))

    def fail(self, kind: str, name: str, exception: Exception) -> None:
        """
        Fail the pending query of C{kind} for C{name}.
        """
        self.pending(kind, name).errback(Failure(exception))

    def answer_host(self, name: str, v4: Sequence[str] = (), v6: Sequence[str] = ()) -> None:
        """
        Answer the pending A and AAAA queries for C{name}.
        """
        self.answer("A", name, [a(name, address) for address in v4])
        self.answer("AAAA", name, [aaaa(name, address) for address in v6])


def a(name: str, address: str) -> dns.RRHeader:
    return dns.RRHeader(name, dns.A, dns.IN, 60, dns.Record_A(address, 60))


def aaaa(name: str, address: str) -> dns.RRHeader:
    return dns.RRHeader(name, dns.AAAA, dns.IN, 60, dns.Record_AAAA(address, 60))


def srv(name: str, priority: int, weight: int, port: int, target: str) -> dns.RRHeader:
    return dns.RRHeader(
        name, dns.SRV, dns.IN, 60, dns.Record_SRV(priority, weight, port, target, 60)
    )


def cname(name: str, alias: str) -> dns.RRHeader:
    return dns.RRHeader(name, dns.CNAME, dns.IN, 60, dns.Record_CNAME(alias, 60))


def nxdomain() -> Exception:
    return error.DNSNameError(dns.Message(rCode=dns.ENAME))


NAME = "api.test"
SERVICE = "_http._tcp.api.test"


class DiscoveryTestMixin:
    """
    A fake clock, a fake resolver, a record of C{on_change} calls and of
    the log events of L{DnsDiscovery}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.resolver = FakeResolver()
        self.changes: List[Tuple[Target, ...]] = []
        self.events: List[Dict[str, Any]] = []
        self.patch(DnsDiscovery, "log", Logger(observer=self.events.append))

    def discovery(self, name: str = NAME, port: Optional[int] = 8080, kind: str = "a", **kwargs: Any) -> DnsDiscovery:
        """
        A started L{DnsDiscovery} (C{interval=30}), stopped at clean-up.
        """
        kwargs.setdefault("interval", 30.0)
        kwargs.setdefault("on_change", self.changes.append)
        found = DnsDiscovery(self.clock, self.resolver, name, port, kind, **kwargs)
        found.start()
        self.addCleanup(found.stop)
        return found

    def messages(self, level: LogLevel) -> List[str]:
        return [formatEvent(e) for e in self.events if e["log_level"] == level]


class TargetTests(SynchronousTestCase):
    """
    L{Target} is a validated value object.
    """

    def test_defaults(self) -> None:
        """
        A target defaults to weight 1 and priority 0, and its address is
        C{(host, port)}.
        """
        target = Target("10.0.0.1", 80)
        self.assertEqual((target.weight, target.priority), (1, 0))
        self.assertEqual(target.address, ("10.0.0.1", 80))

    def test_canonical_host(self) -> None:
        """
        The host is kept in canonical form, so equal addresses give equal
        targets.
        """
        self.assertEqual(Target("2001:DB8:0::0001", 80), Target("2001:db8::1", 80))
        self.assertEqual(Target("2001:db8::1", 80).host, "2001:db8::1")

    def test_str(self) -> None:
        """
        C{str()} gives C{host:port}, with brackets around IPv6 addresses.
        """
        self.assertEqual(str(Target("10.0.0.1", 80)), "10.0.0.1:80")
        self.assertEqual(str(Target("::1", 80)), "[::1]:80")

    def test_invalid(self) -> None:
        """
        A host that is not an IP address literal, a port outside 1..65535, a
        weight below 1 and a negative priority are rejected.
        """
        self.assertRaises(ValueError, Target, "api.test", 80)
        self.assertRaises(ValueError, Target, "10.0.0.1", 0)
        self.assertRaises(ValueError, Target, "10.0.0.1", 65536)
        self.assertRaises(TypeError, Target, "10.0.0.1", "80")
        self.assertRaises(ValueError, Target, "10.0.0.1", 80, weight=0)
        self.assertRaises(ValueError, Target, "10.0.0.1", 80, priority=-1)

    def test_frozen(self) -> None:
        """
        Targets cannot be changed, so they are safe to share and hash.
        """
        target = Target("10.0.0.1", 80)
        with self.assertRaises(Exception):
            target.port = 81  # type: ignore[misc]
        self.assertEqual(len({target, Target("10.0.0.1", 80)}), 1)


class DiffTargetsTests(SynchronousTestCase):
    """
    L{diff_targets} compares two answers by C{(host, port)}.
    """

    def test_diff(self) -> None:
        """
        New addresses are added, missing ones removed, and ones whose weight
        or priority changed are updated with the new values.
        """
        old = (Target("10.0.0.1", 80), Target("10.0.0.2", 80), Target("10.0.0.3", 80))
        new = (
            Target("10.0.0.3", 80, weight=5),
            Target("10.0.0.1", 80),
            Target("10.0.0.4", 80),
        )
        self.assertEqual(
            diff_targets(old, new),
            TargetChanges(
                added=(Target("10.0.0.4", 80),),
                removed=(Target("10.0.0.2", 80),),
                updated=(Target("10.0.0.3", 80, weight=5),),
            ),
        )

    def test_no_change(self) -> None:
        """
        The same targets in another order are no change, and a
        L{TargetChanges} without changes is false.
        """
        targets = (Target("10.0.0.1", 80), Target("::1", 80))
        changes = diff_targets(targets, targets[::-1])
        self.assertFalse(changes)
        self.assertTrue(diff_targets((), targets))


class ConstructorTests(DiscoveryTestMixin, SynchronousTestCase):
    """
    L{DnsDiscovery} checks its arguments when it is built.
    """

    def test_invalid(self) -> None:
        """
        An unknown kind, an empty name, a missing or invalid port for
        C{'a'}, a port for C{'srv'}, and a non-positive interval or timeout
        are rejected with L{ValueError}.
        """
        bad: List[Tuple[Any, ...]] = [
            (NAME, 80, "mx"),
            ("", 80, "a"),
            (NAME, None, "a"),
            (NAME, 0, "a"),
            (SERVICE, 80, "srv"),
        ]
        for args in bad:
            self.assertRaises(ValueError, DnsDiscovery, self.clock, self.resolver, *args)
        self.assertRaises(
            ValueError, DnsDiscovery, self.clock, self.resolver, NAME, 80, interval=0
        )
        self.assertRaises(
            ValueError, DnsDiscovery, self.clock, self.resolver, NAME, 80, timeout=0
        )
        self.assertRaises(
            ValueError, DnsDiscovery, self.clock, self.resolver, NAME, 80, weight=0
        )
        self.assertRaises(
            ValueError, DnsDiscovery, self.clock, self.resolver, SERVICE, None, "srv",
            weight=2,
        )

    def test_configuration_words(self) -> None:
        """
        As in the configuration, C{'dns'} is another name for C{'a'}, and an
        SRV discovery accepts port 0 for "no port".
        """
        self.assertEqual(DnsDiscovery(self.clock, self.resolver, NAME, 80, "dns").kind, "a")
        self.assertEqual(
            DnsDiscovery(self.clock, self.resolver, SERVICE, 0, "srv").kind, "srv"
        )

    def test_not_started(self) -> None:
        """
        Building a discovery sends no query and schedules nothing; its
        targets are empty until a lookup succeeds.
        """
        found = DnsDiscovery(self.clock, self.resolver, NAME, 80)
        self.assertEqual(self.resolver.queries, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(found.targets, ())
        self.assertFalse(found.running)
        self.assertEqual((found.name, found.kind), (NAME, "a"))


class AddressTests(DiscoveryTestMixin, SynchronousTestCase):
    """
    C{kind='a'}: the A and AAAA records of a host name.
    """

    def test_resolves_at_start(self) -> None:
        """
        L{DnsDiscovery.start} queries A and AAAA at once; the answer becomes
        the targets, every address on the configured port with weight 1,
        IPv4 first and numerically ordered, and C{on_change} and
        L{DnsDiscovery.first_answer} get it.
        """
        found = self.discovery()
        first = found.first_answer()
        self.assertEqual(self.resolver.asked(), [("A", NAME), ("AAAA", NAME)])
        self.assertNoResult(first)
        self.resolver.answer_host(
            NAME, v4=["10.0.0.10", "10.0.0.9"], v6=["2001:db8::2", "2001:db8::1"]
        )
        expected = (
            Target("10.0.0.9", 8080),
            Target("10.0.0.10", 8080),
            Target("2001:db8::1", 8080),
            Target("2001:db8::2", 8080),
        )
        self.assertEqual(found.targets, expected)
        self.assertEqual(self.changes, [expected])
        self.assertEqual(self.successResultOf(first), expected)
        self.assertEqual(self.successResultOf(found.first_answer()), expected)

    def test_weight(self) -> None:
        """
        Every target gets the configured weight.
        """
        found = self.discovery(weight=3)
        self.resolver.answer_host(NAME, v4=["10.0.0.1"], v6=["::1"])
        self.assertEqual(
            found.targets, (Target("10.0.0.1", 8080, weight=3), Target("::1", 8080, weight=3))
        )

    def test_duplicates(self) -> None:
        """
        An address given twice is one target.
        """
        found = self.discovery()
        self.resolver.answer_host(NAME, v4=["10.0.0.1", "10.0.0.1"])
        self.assertEqual(found.targets, (Target("10.0.0.1", 8080),))

    def test_cname(self) -> None:
        """
        In an answer that follows a CNAME, the addresses of the canonical
        name count and the CNAME record is ignored.
        """
        found = self.discovery()
        self.resolver.answer(
            "A", NAME, [cname(NAME, "real.test"), a("real.test", "10.0.0.1")]
        )
        self.resolver.answer("AAAA", NAME, [cname(NAME, "real.test")])
        self.assertEqual(found.targets, (Target("10.0.0.1", 8080),))

    def test_periodic(self) -> None:
        """
        The name is resolved again every C{interval} seconds, not sooner.
        """
        self.discovery()
        self.resolver.answer_host(NAME, v4=["10.0.0.1"])
        self.clock.advance(29.9)
        self.assertEqual(len(self.resolver.queries), 2)
        self.clock.advance(0.1)
        self.assertEqual(len(self.resolver.queries), 4)
        self.resolver.answer_host(NAME, v4=["10.0.0.1"])
        self.clock.advance(30)
        self.assertEqual(len(self.resolver.queries), 6)

    def test_unchanged(self) -> None:
        """
        An answer with the same addresses, in any order, is no change:
        C{on_change} is not called again and nothing is logged at info.
        """
        self.discovery()
        self.resolver.answer_host(NAME, v4=["10.0.0.1", "10.0.0.2"])
        del self.events[:]
        self.clock.advance(30)
        self.resolver.answer_host(NAME, v4=["10.0.0.2", "10.0.0.1"])
        self.assertEqual(len(self.changes), 1)
        self.assertEqual(self.messages(LogLevel.info), [])

    def test_changed(self) -> None:
        """
        A different answer replaces the targets, is passed to C{on_change},
        and is logged at info with what was added and removed.
        """
        found = self.discovery()
        self.resolver.answer_host(NAME, v4=["10.0.0.1", "10.0.0.2"])
        self.clock.advance(30)
        self.resolver.answer_host(NAME, v4=["10.0.0.2", "10.0.0.3"])
        expected = (Target("10.0.0.2", 8080), Target("10.0.0.3", 8080))
        self.assertEqual(found.targets, expected)
        self.assertEqual(self.changes[-1], expected)
        self.assertEqual(len(self.changes), 2)
        [_, line] = self.messages(LogLevel.info)
        self.assertIn(NAME, line)
        self.assertIn("added ['10.0.0.3:8080']", line)
        self.assertIn("removed ['10.0.0.1:8080']", line)

    def test_failure_keeps_last_good(self) -> None:
        """
        When both queries fail, the targets stay as they were, C{on_change}
        is not called, and a warning names the host and the error.
        """
        found = self.discovery()
        self.resolver.answer_host(NAME, v4=["10.0.0.1"])
        self.clock.advance(30)
        self.resolver.fail("A", NAME, nxdomain())
        self.resolver.fail("AAAA", NAME, nxdomain())
        self.assertEqual(found.targets, (Target("10.0.0.1", 8080),))
        self.assertEqual(len(self.changes), 1)
        [warning] = self.messages(LogLevel.warn)
        self.assertIn(NAME, warning)
        self.assertIn("NXDOMAIN", warning)
        self.assertIn("1 targets", warning)

    def test_empty_answer_keeps_last_good(self) -> None:
        """
        An answer without any address counts as a failure: the last good
        targets are kept and a warning is logged.
        """
        found = self.discovery()
        self.resolver.answer_host(NAME, v4=["10.0.0.1"])
        self.clock.advance(30)
        self.resolver.answer_host(NAME)
        self.assertEqual(found.targets, (Target("10.0.0.1", 8080),))
        self.assertEqual(self.changes, [(Target("10.0.0.1", 8080),)])
        [warning] = self.messages(LogLevel.warn)
        self.assertIn("no A or AAAA records for api.test", warning)

    def test_recovers_after_failure(self) -> None:
        """
        After a failure, the next lookup happens at the next interval and
        its answer is used.
        """
        found = self.discovery()
        self.resolver.answer_host(NAME, v4=["10.0.0.1"])
        self.clock.advance(30)
        self.resolver.fail("A", NAME, error.DNSServerError())
        self.resolver.fail("AAAA", NAME, error.DNSServerError())
        self.clock.advance(30)
        self.resolver.answer_host(NAME, v4=["10.0.0.2"])
        self.assertEqual(found.targets, (Target("10.0.0.2", 8080),))
        self.assertEqual(len(self.changes), 2)

    def test_first_lookup_fails(self) -> None:
        """
        If the first lookup fails, L{DnsDiscovery.first_answer} fires with
        no targets, C{on_change} is not called, and the targets come
        through C{on_change} when a later lookup succeeds.
        """
        found = self.discovery()
        first = found.first_answer()
        self.resolver.fail("A", NAME, nxdomain())
        self.resolver.fail("AAAA", NAME, nxdomain())
        self.assertEqual(self.successResultOf(first), ())
        self.assertEqual(self.changes, [])
        self.assertEqual(len(self.messages(LogLevel.warn)), 1)
        self.clock.advance(30)
        self.resolver.answer_host(NAME, v4=["10.0.0.1"])
        self.assertEqual(self.changes, [(Target("10.0.0.1", 8080),)])
        self.assertEqual(found.targets, (Target("10.0.0.1", 8080),))

    def test_one_family_fails(self) -> None:
        """
        When one of A and AAAA fails and the other gives addresses, those
        addresses are the targets, whichever family failed.
        """
        found = self.discovery()
        self.resolver.fail("A", NAME, error.DNSServerError())
        self.resolver.answer("AAAA", NAME, [aaaa(NAME, "2001:db8::1")])
        self.assertEqual(found.targets, (Target("2001:db8::1", 8080),))
        self.clock.advance(30)
        self.resolver.answer("A", NAME, [a(NAME, "10.0.0.1")])
        self.resolver.fail("AAAA", NAME, error.DNSServerError())
        self.assertEqual(found.targets, (Target("10.0.0.1", 8080),))

    def test_one_family_empty_other_fails(self) -> None:
        """
        An empty answer for one family and an error for the other is a
        failure, reported with that error.
        """
        found = self.discovery()
        self.resolver.answer("A", NAME, [])
        self.resolver.fail("AAAA", NAME, error.DNSServerError())
        self.assertEqual(found.targets, ())
        [warning] = self.messages(LogLevel.warn)
        self.assertIn("SERVFAIL", warning)

    def test_timeout(self) -> None:
        """
        When nothing answers, the queries are cancelled after C{timeout}
        seconds, the failure is logged, and only the next tick stays
        scheduled.
        """
        found = self.discovery(timeout=5)
        self.resolver.answer_host(NAME, v4=["10.0.0.1"])
        self.clock.advance(30)
        self.clock.advance(4.9)
        self.assertEqual(self.messages(LogLevel.warn), [])
        self.clock.advance(0.1)
        [warning] = self.messages(LogLevel.warn)
        self.assertIn("no answer within 5 s", warning)
        self.assertEqual(found.targets, (Target("10.0.0.1", 8080),))
        self.assertEqual(self.resolver.cancelled, [("A", NAME), ("AAAA", NAME)])
        self.assertEqual(
            [c.getTime() for c in self.clock.getDelayedCalls()], [60.0]
        )

    def test_timeout_one_family(self) -> None:
        """
        When only A answers, the addresses it gave are used once the AAAA
        query times out.
        """
        found = self.discovery(timeout=5)
        self.resolver.answer("A", NAME, [a(NAME, "10.0.0.1")])
        self.assertEqual(found.targets, ())
        self.clock.advance(5)
        self.assertEqual(found.targets, (Target("10.0.0.1", 8080),))
        self.assertEqual(self.messages(LogLevel.warn), [])

    def test_no_overlap(self) -> None:
        """
        A tick that comes while the previous lookup still runs sends no
        query and logs a warning; the next tick after the lookup ended does.
        """
        self.discovery(interval=2, timeout=3)
        self.clock.advance(2)
        self.assertEqual(len(self.resolver.queries), 2)
        [warning] = self.messages(LogLevel.warn)
        self.assertIn("still running", warning)
        self.clock.advance(1)  # t=3: the lookup times out
        self.clock.advance(1)  # t=4: the next tick
        self.assertEqual(len(self.resolver.queries), 4)

    def test_on_change_raises(self) -> None:
        """
        An exception from C{on_change} is logged; the targets are updated
        and the schedule goes on.
        """

        def broken(targets: Tuple[Target, ...]) -> None:
            raise RuntimeError("boom")

        found = self.discovery(on_change=broken)
        self.resolver.answer_host(NAME, v4=["10.0.0.1"])
        self.assertEqual(found.targets, (Target("10.0.0.1", 8080),))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 0)
        [critical] = [e for e in self.events if e["log_level"] == LogLevel.critical]
        self.assertIsInstance(critical["log_failure"].value, RuntimeError)
        self.clock.advance(30)
        self.assertEqual(len(self.resolver.queries), 4)

    def test_synchronous_resolver(self) -> None:
        """
        A resolver that answers at once (from a hosts file or a cache)
        works: the lookup finishes within L{DnsDiscovery.start}.
        """
        self.resolver._lookup = lambda name, cls, type, timeout: Deferred.fromCoroutine(
            _answer_now(name, type)
        )
        found = self.discovery()
        self.assertEqual(found.targets, (Target("10.0.0.1", 8080),))
        self.clock.advance(30)
        self.assertEqual(found.targets, (Target("10.0.0.1", 8080),))


async def _answer_now(name: bytes, type: int) -> Any:
    if type == dns.A:
        return ([a(name.decode(), "10.0.0.1")], [], [])
    return ([], [], [])


class StopTests(DiscoveryTestMixin, SynchronousTestCase):
    """
    L{DnsDiscovery.start} and L{DnsDiscovery.stop}.
    """

    def test_stop_idle(self) -> None:
        """
        Stopping between lookups leaves nothing on the clock, and no query
        is sent afterwards.
        """
        found = self.discovery()
        self.resolver.answer_host(NAME, v4=["10.0.0.1"])
        found.stop()
        self.assertFalse(found.running)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(100)
        self.assertEqual(len(self.resolver.queries), 2)

    def test_stop_during_lookup(self) -> None:
        """
        Stopping during a lookup cancels its queries and leaves nothing on
        the clock; nothing is logged at warning level and the targets stay.
        """
        found = self.discovery()
        self.resolver.answer_host(NAME, v4=["10.0.0.1"])
        self.clock.advance(30)
        found.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.resolver.cancelled, [("A", NAME), ("AAAA", NAME)])
        self.assertEqual(self.messages(LogLevel.warn), [])
        self.assertEqual(found.targets, (Target("10.0.0.1", 8080),))

    def test_stop_during_srv_lookup(self) -> None:
        """
        Stopping while SRV target hosts are being resolved cancels those
        queries, leaves nothing on the clock, and logs nothing at warning
        level.
        """
        found = self.discovery(SERVICE, None, "srv")
        self.resolver.answer(
            "SRV", SERVICE, [srv(SERVICE, 0, 1, 80, "a.test"), srv(SERVICE, 0, 1, 80, "b.test")]
        )
        self.resolver.answer("A", "a.test", [a("a.test", "10.0.0.1")])
        found.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(
            self.resolver.cancelled, [("AAAA", "a.test"), ("A", "b.test"), ("AAAA", "b.test")]
        )
        self.assertEqual(self.messages(LogLevel.warn), [])
        self.assertEqual(found.targets, ())
        self.assertEqual(self.changes, [])

    def test_stop_releases_first_answer(self) -> None:
        """
        A L{DnsDiscovery.first_answer} still waiting when the discovery is
        stopped fires with no targets.
        """
        found = self.discovery()
        first = found.first_answer()
        found.stop()
        self.assertEqual(self.successResultOf(first), ())

    def test_cancel_first_answer(self) -> None:
        """
        Cancelling a L{DnsDiscovery.first_answer} Deferred only stops that
        wait.
        """
        found = self.discovery()
        first = found.first_answer()
        other = found.first_answer()
        first.cancel()
        self.failureResultOf(first, CancelledError)
        self.resolver.answer_host(NAME, v4=["10.0.0.1"])
        self.assertEqual(self.successResultOf(other), (Target("10.0.0.1", 8080),))

    def test_restart(self) -> None:
        """
        A stopped discovery can be started again: the queries of the
        stopped lookup are cancelled and new ones sent at once.
        """
        found = self.discovery()
        found.stop()
        found.start()
        self.assertEqual(self.resolver.cancelled, [("A", NAME), ("AAAA", NAME)])
        self.assertEqual(len(self.resolver.queries), 4)
        self.resolver.answer_host(NAME, v4=["10.0.0.1"])
        self.assertEqual(found.targets, (Target("10.0.0.1", 8080),))
        self.assertEqual(self.changes, [(Target("10.0.0.1", 8080),)])

    def test_start_twice(self) -> None:
        """
        Starting a running discovery is an error.
        """
        found = self.discovery()
        self.assertRaises(RuntimeError, found.start)


class ServiceTests(DiscoveryTestMixin, SynchronousTestCase):
    """
    C{kind='srv'}: SRV records and the addresses of their targets.
    """

    def service(
        self, records: List[dns.RRHeader], additional: Sequence[dns.RRHeader] = ()
    ) -> DnsDiscovery:
        """
        A started C{kind='srv'} discovery of C{SERVICE} whose SRV query has
        been answered with C{records} and C{additional}.
        """
        found = self.discovery(SERVICE, None, "srv")
        self.resolver.answer("SRV", SERVICE, records, additional=additional)
        return found

    def test_srv(self) -> None:
        """
        Each address of each SRV target becomes a target with the record's
        port, priority and weight; the target hosts are resolved with A and
        AAAA queries through the same resolver.
        """
        found = self.discovery(SERVICE, None, "srv")
        self.assertEqual(self.resolver.asked(), [("SRV", SERVICE)])
        self.resolver.answer(
            "SRV",
            SERVICE,
            [
                srv(SERVICE, 10, 60, 8001, "a.test"),
                srv(SERVICE, 10, 40, 8002, "b.test"),
                srv(SERVICE, 20, 5, 9000, "backup.test"),
            ],
        )
        self.assertEqual(
            sorted(self.resolver.asked()[1:]),
            [
                ("A", "a.test"), ("A", "b.test"), ("A", "backup.test"),
                ("AAAA", "a.test"), ("AAAA", "b.test"), ("AAAA", "backup.test"),
            ],
        )
        self.resolver.answer_host("a.test", v4=["10.0.0.1"], v6=["2001:db8::1"])
        self.resolver.answer_host("b.test", v4=["10.0.0.2"])
        self.assertEqual(found.targets, ())
        self.resolver.answer_host("backup.test", v4=["10.0.1.1"])
        expected = (
            Target("10.0.0.1", 8001, weight=60, priority=10),
            Target("10.0.0.2", 8002, weight=40, priority=10),
            Target("2001:db8::1", 8001, weight=60, priority=10),
            Target("10.0.1.1", 9000, weight=5, priority=20),
        )
        self.assertEqual(found.targets, expected)
        self.assertEqual(self.changes, [expected])

    def test_additional_records(self) -> None:
        """
        Addresses in the additional section of the SRV answer are used
        without querying for them; other target hosts are still queried.
        """
        found = self.service(
            [srv(SERVICE, 0, 1, 80, "a.test"), srv(SERVICE, 0, 1, 80, "b.test")],
            additional=[
                a("A.test", "10.0.0.1"),
                aaaa("a.test", "2001:db8::1"),
                a("unrelated.test", "10.0.0.99"),
            ],
        )
        self.assertEqual(
            self.resolver.asked(), [("SRV", SERVICE), ("A", "b.test"), ("AAAA", "b.test")]
        )
        self.resolver.answer_host("b.test", v4=["10.0.0.2"])
        self.assertEqual(
            [str(t) for t in found.targets],
            ["10.0.0.1:80", "10.0.0.2:80", "[2001:db8::1]:80"],
        )

    def test_weight_zero(self) -> None:
        """
        An SRV weight of 0 becomes 1.
        """
        found = self.discovery(SERVICE, None, "srv")
        self.resolver.answer(
            "SRV", SERVICE, [srv(SERVICE, 0, 0, 80, "a.test")],
            additional=[a("a.test", "10.0.0.1")],
        )
        self.assertEqual(found.targets, (Target("10.0.0.1", 80, weight=1),))

    def test_unusable_records(self) -> None:
        """
        Records whose target is C{.} or whose port is 0 are ignored; when
        no record is left, the lookup fails and the last good targets stay.
        """
        found = self.service(
            [srv(SERVICE, 0, 1, 80, "a.test"), srv(SERVICE, 0, 1, 80, "")],
            additional=[a("a.test", "10.0.0.1")],
        )
        self.assertEqual(found.targets, (Target("10.0.0.1", 80),))
        self.clock.advance(30)
        self.resolver.answer(
            "SRV",
            SERVICE,
            [srv(SERVICE, 0, 1, 80, ""), srv(SERVICE, 0, 1, 0, "a.test")],
            additional=[a("a.test", "10.0.0.1")],
        )
        self.assertEqual(found.targets, (Target("10.0.0.1", 80),))
        [warning] = self.messages(LogLevel.warn)
        self.assertIn("no usable SRV records for _http._tcp.api.test", warning)

    def test_same_address_merged(self) -> None:
        """
        Records that lead to the same address and port make one target:
        the lowest priority wins and the weights at that priority add up.
        """
        found = self.service(
            [
                srv(SERVICE, 1, 3, 80, "a.test"),
                srv(SERVICE, 1, 4, 80, "alias.test"),
                srv(SERVICE, 2, 50, 80, "a.test"),
                srv(SERVICE, 1, 2, 81, "a.test"),
            ],
            additional=[a("a.test", "10.0.0.1"), a("alias.test", "10.0.0.1")],
        )
        self.assertEqual(
            found.targets,
            (
                Target("10.0.0.1", 80, weight=7, priority=1),
                Target("10.0.0.1", 81, weight=2, priority=1),
            ),
        )

    def test_srv_failure_keeps_last_good(self) -> None:
        """
        When the SRV query fails or gives no records, the last good targets
        stay and a warning names the SRV name.
        """
        found = self.discovery(SERVICE, None, "srv")
        self.resolver.answer(
            "SRV", SERVICE, [srv(SERVICE, 0, 1, 80, "a.test")],
            additional=[a("a.test", "10.0.0.1")],
        )
        self.clock.advance(30)
        self.resolver.fail("SRV", SERVICE, nxdomain())
        self.clock.advance(30)
        self.resolver.answer("SRV", SERVICE, [])
        self.assertEqual(found.targets, (Target("10.0.0.1", 80),))
        self.assertEqual(len(self.changes), 1)
        warnings = self.messages(LogLevel.warn)
        self.assertEqual(len(warnings), 2)
        self.assertIn(SERVICE, warnings[0])
        self.assertIn("NXDOMAIN", warnings[0])
        self.assertIn("no usable SRV records", warnings[1])

    def test_target_host_fails(self) -> None:
        """
        A target host that cannot be resolved keeps the addresses it had in
        the last lookup, with a warning; one never resolved is left out;
        the others are used.
        """
        found = self.discovery(SERVICE, None, "srv")
        records = [srv(SERVICE, 0, 1, 80, "a.test"), srv(SERVICE, 0, 1, 80, "b.test")]
        self.resolver.answer("SRV", SERVICE, records)
        self.resolver.answer_host("a.test", v4=["10.0.0.1"])
        self.resolver.fail("A", "b.test", nxdomain())
        self.resolver.fail("AAAA", "b.test", nxdomain())
        self.assertEqual(found.targets, (Target("10.0.0.1", 80),))
        self.clock.advance(30)
        self.resolver.answer("SRV", SERVICE, records)
        self.resolver.answer_host("b.test", v4=["10.0.0.2"])
        self.resolver.fail("A", "a.test", error.DNSServerError())
        self.resolver.fail("AAAA", "a.test", error.DNSServerError())
        self.assertEqual(
            found.targets, (Target("10.0.0.1", 80), Target("10.0.0.2", 80))
        )
        warnings = self.messages(LogLevel.warn)
        self.assertEqual(len(warnings), 2)
        self.assertIn("b.test", warnings[0])
        self.assertIn("a.test", warnings[1])
        self.assertIn("1 last known", warnings[1])

    def test_all_target_hosts_fail(self) -> None:
        """
        When no target host gives an address, the lookup fails with the
        error and the last good targets stay.
        """
        found = self.discovery(SERVICE, None, "srv")
        self.resolver.answer("SRV", SERVICE, [srv(SERVICE, 0, 1, 80, "a.test")])
        self.resolver.fail("A", "a.test", nxdomain())
        self.resolver.fail("AAAA", "a.test", nxdomain())
        self.assertEqual(found.targets, ())
        self.assertEqual(self.changes, [])
        self.assertIn(
            "_http._tcp.api.test (srv) failed: no such name",
            self.messages(LogLevel.warn)[-1],
        )

    def test_timeout_covers_whole_lookup(self) -> None:
        """
        The timeout bounds the whole lookup: target host queries get what
        is left of it after the SRV answer.
        """
        found = self.discovery(SERVICE, None, "srv", timeout=5)
        self.clock.advance(4)
        self.resolver.answer("SRV", SERVICE, [srv(SERVICE, 0, 1, 80, "a.test")])
        self.clock.advance(0.9)
        self.assertEqual(self.messages(LogLevel.warn), [])
        self.clock.advance(0.1)
        self.assertIn("no answer within 5 s", self.messages(LogLevel.warn)[-1])
        self.assertEqual(found.targets, ())
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()], [30.0])


class DefaultResolverTests(DiscoveryTestMixin, SynchronousTestCase):
    """
    L{default_resolver} builds Twisted's resolver on a given reactor.
    """

    def files(self) -> Tuple[str, str]:
        hosts = self.mktemp()
        with open(hosts, "w") as f:
            f.write("10.0.0.1 backend.test\n2001:db8::1 backend.test\n")
        resolvconf = self.mktemp()
        with open(resolvconf, "w") as f:
            f.write("nameserver 127.0.0.1\n")
        return hosts, resolvconf

    def test_no_network(self) -> None:
        """
        The resolver provides L{IResolver}, and building it and answering
        from the hosts file opens no connection on the reactor.
        """
        hosts, resolvconf = self.files()
        reactor = MemoryReactorClock()
        resolver = default_resolver(reactor, resolvconf=resolvconf, hosts=hosts)
        self.assertTrue(verifyObject(IResolver, resolver))
        found = DnsDiscovery(reactor, resolver, "backend.test", 80)
        found.start()
        self.addCleanup(found.stop)
        self.assertEqual(
            found.targets, (Target("10.0.0.1", 80), Target("2001:db8::1", 80))
        )
        self.assertEqual(reactor.tcpClients, [])
        self.assertEqual(reactor.tcpServers, [])


class _UDPPort:
    """
    A UDP port of L{_UDPMemoryReactor}: what is written to it is recorded
    by its reactor.
    """

    def __init__(self, reactor: "_UDPMemoryReactor", protocol: Any) -> None:
        self._reactor = reactor
        self.protocol = protocol

    def write(self, data: bytes, address: Tuple[str, int]) -> None:
        self._reactor.datagrams.append((data, address, self.protocol))

    def stopListening(self) -> None:
        self.protocol.doStop()


class _UDPMemoryReactor(MemoryReactorClock):
    """
    A memory reactor that also opens UDP ports, in memory.

    @ivar datagrams: C{(data, address, protocol)} of every datagram sent.
    """

    def __init__(self) -> None:
        super().__init__()
        self.datagrams: List[Tuple[bytes, Tuple[str, int], Any]] = []

    def listenUDP(self, port: int, protocol: Any, interface: str = "",
                  maxPacketSize: int = 8192) -> _UDPPort:
        udp = _UDPPort(self, protocol)
        protocol.makeConnection(udp)
        return udp


DISCOVERY_CONFIG = """
[listeners.main]
endpoint = "tcp:8080"

[upstreams.api]
servers = [{ dns = "www.example.test", port = 8000 }]
"""


class NameserverTests(SynchronousTestCase):
    """
    C{[resolver] nameservers}: discovery asks the configured name servers,
    at their ports, and nothing else.
    """

    def start(self, resolver: str) -> Tuple[_UDPMemoryReactor, Any]:
        """
        A started L{ProxyService} for L{DISCOVERY_CONFIG} with C{resolver}
        as its C{[resolver]} table, on a L{_UDPMemoryReactor}.
        """
        reactor = _UDPMemoryReactor()
        service = ProxyService(parse(DISCOVERY_CONFIG + "[resolver]\n" + resolver), reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return reactor, service

    def test_queries_go_to_the_configured_server(self) -> None:
        """
        The A and AAAA queries of a C{dns} entry go over UDP to the first
        configured name server at its port, and its answer becomes the
        group's backends.
        """
        reactor, service = self.start('nameservers = ["127.0.0.1:5353", "[::1]:53"]\n')
        asked = []
        for data, address, protocol in reactor.datagrams:
            message = dns.Message()
            message.fromStr(data)
            (query,) = message.queries
            asked.append((address, dns.QUERY_TYPES[query.type], str(query.name)))
            message.answer = 1
            if query.type == dns.A:
                message.answers = [a("www.example.test", "192.0.2.80")]
            protocol.datagramReceived(message.toStr(), address)
        self.assertEqual(sorted(asked), [
            (("127.0.0.1", 5353), "A", "www.example.test"),
            (("127.0.0.1", 5353), "AAAA", "www.example.test"),
        ])
        group = service.forwarder.groups["api"]
        self.assertEqual([b.name for b in group.backends], ["192.0.2.80:8000"])

    def test_next_server_after_a_timeout(self) -> None:
        """
        A query that the first name server leaves unanswered is sent again
        to the next one, an IPv6 address at port 53.
        """
        reactor, _ = self.start('nameservers = ["127.0.0.1:5353", "[::1]:53"]\n')
        self.assertEqual({address for _, address, _ in reactor.datagrams},
                         {("127.0.0.1", 5353)})
        reactor.advance(1)
        self.assertEqual({address for _, address, _ in reactor.datagrams[2:]},
                         {("::1", 53)})


class NameserverLoopbackTests(TestCase):
    """
    L{default_resolver} with C{nameservers} against a twisted.names server
    on a loopback port.
    """

    timeout = 20

    @inlineCallbacks
    def test_twisted_names_server(self) -> None:
        """
        Discovery through a resolver given a name server's address and
        port, IPv4 or IPv6, gets that server's answer.
        """
        from twisted.internet import reactor

        for host in ("127.0.0.1", "::1"):
            server = dns.DNSDatagramProtocol(dns_server_factory())
            port = reactor.listenUDP(0, server, interface=host)
            self.addCleanup(port.stopListening)
            resolver = default_resolver(reactor, nameservers=[(host, port.getHost().port)])
            found = DnsDiscovery(reactor, resolver, "www.example.test", 8000)
            found.start()
            self.addCleanup(found.stop)
            targets = yield found.first_answer()
            self.assertEqual(targets, (Target("192.0.2.80", 8000),), host)
