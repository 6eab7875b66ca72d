# -*- test-case-name: tests.test_discovery -*-
"""
DNS service discovery: the backends of an upstream group, found in DNS
and kept up to date.

Instead of a fixed list of servers, an upstream group can name its backends
in DNS, in one of two ways:

  - C{kind="a"} (or C{"dns"}, the configuration's word for it): a host
    name, such as C{api.internal}, whose A and AAAA records are the
    backends' addresses.  Every address becomes a backend on the configured
    port, with the configured weight (1 by default) and priority 0.

  - C{kind="srv"}: an SRV record name, such as C{_http._tcp.api.internal}
    (RFC 2782).  Each SRV record names a target host, a port, a priority and
    a weight; every address of the target host becomes a backend on that
    port, with that priority and weight.  Lower priorities are preferred, as
    in the RFC: it is up to the upstream group to send traffic to a higher
    priority only when every backend of the lower ones is unavailable.

A L{DnsDiscovery} resolves the name when it is started and then every
C{interval} seconds, and reports each I{change} of the answer, as a sorted
tuple of L{Target}s, to its C{on_change} callback.  The upstream group adds
and removes backends from there; L{diff_targets} tells it which.

DNS fails, and a failed lookup must not take every backend away from a
proxy that was working a moment ago.  So a lookup that fails (no such name,
server failure, timeout) I{or that succeeds with no usable address} does not
change the targets: the last good answer is kept, a warning is logged, and
the next lookup happens at the next interval as usual.  An empty answer is
treated as a failure on purpose: a name briefly missing during a DNS
deployment is far more common than an operator removing every backend by
emptying DNS, and the latter is better done by changing the configuration.

Lookups are bounded: every query is given up when the lookup's deadline,
C{timeout} seconds after it started, passes (on top of the resolver's own
retry timeouts, which are much longer).  A lookup never overlaps the next
one: if one is still running when the next interval comes, that tick is
skipped.  The re-resolution period is C{interval}, whatever the records'
TTLs; a caching resolver in front of the proxy honours TTLs.

Nothing here imports the global reactor: the clock and the resolver (any
L{IResolver}, usually L{default_resolver}) are passed in, so that tests run
on a fake clock with a fake resolver.
"""

from __future__ import annotations

import ipaddress
from typing import (
    Any,
    Callable,
    Coroutine,
    Dict,
    Iterable,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import attr
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    TimeoutError,
    succeed,
)
from twisted.internet.interfaces import IReactorTime, IResolver
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.names import dns, error
from twisted.python.failure import Failure

from twistproxy.net import authority

__all__ = [
    "DnsDiscovery",
    "NoTargets",
    "Target",
    "TargetChanges",
    "default_resolver",
    "diff_targets",
]

_Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def _canonical_ip(value: str) -> str:
    """
    The canonical text form of an IP address literal, so that equal
    addresses compare equal (C{'::0001'} and C{'::1'}).

    @raises ValueError: if C{value} is not an IP address literal.
    """
    return str(ipaddress.ip_address(value))


def _in_range(low: int, high: int) -> Callable[[Any, attr.Attribute, int], None]:
    """
    An attrs validator for an integer in C{[low, high]}.
    """

    def validate(instance: Any, attribute: attr.Attribute, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{attribute.name} must be an int, not {value!r}")
        if not low <= value <= high:
            raise ValueError(
                f"{attribute.name} must be between {low} and {high}, not {value!r}"
            )

    return validate


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Target:
    """
    One address that DNS gave for an upstream group: a backend to be.

    @ivar host: An IP address literal in canonical form (IPv6 without
        brackets), for example C{'10.0.0.7'} or C{'2001:db8::7'}.
    @ivar port: The TCP port, from the configuration (C{kind="a"}) or from
        the SRV record.
    @ivar weight: A positive weight: the configured one for C{kind="a"},
        the SRV weight otherwise (an SRV weight of 0 becomes 1, see
        L{DnsDiscovery}).
    @ivar priority: 0 for C{kind="a"}, the SRV priority otherwise; lower is
        preferred.
    """

    host: str = attr.ib(converter=_canonical_ip)
    port: int = attr.ib(validator=_in_range(1, 65535))
    weight: int = attr.ib(default=1, validator=_in_range(1, 2**31 - 1))
    priority: int = attr.ib(default=0, validator=_in_range(0, 65535))

    @property
    def address(self) -> Tuple[str, int]:
        """
        C{(host, port)}: what identifies the backend.  Within one answer no
        two targets share it.
        """
        return (self.host, self.port)

    def __str__(self) -> str:
        return authority(self.host, self.port)


def _sort_key(target: Target) -> Tuple[int, int, bytes, int]:
    """
    The canonical order of targets: by priority, then IPv4 before IPv6,
    then numerically by address, then by port.
    """
    ip = ipaddress.ip_address(target.host)
    return (target.priority, ip.version, ip.packed, target.port)


def _sorted(targets: Iterable[Target]) -> Tuple[Target, ...]:
    return tuple(sorted(targets, key=_sort_key))


@attr.s(frozen=True, slots=True, auto_attribs=True)
class TargetChanges:
    """
    How one answer differs from the previous one, by C{(host, port)}.

    @ivar added: Targets whose address is new.
    @ivar removed: Targets whose address is gone.
    @ivar updated: Targets whose address was there before with another
        weight or priority; they carry the new weight and priority.
    """

    added: Tuple[Target, ...]
    removed: Tuple[Target, ...]
    updated: Tuple[Target, ...]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.updated)


def diff_targets(old: Sequence[Target], new: Sequence[Target]) -> TargetChanges:
    """
    Compare two answers, so that an upstream group can add, remove and
    re-weight its backends instead of rebuilding them all.

    @param old: The previous targets.
    @param new: The current targets.
    @return: The differences, each tuple in canonical order.
    """
    before = {t.address: t for t in old}
    after = {t.address: t for t in new}
    return TargetChanges(
        added=_sorted(t for a, t in after.items() if a not in before),
        removed=_sorted(t for a, t in before.items() if a not in after),
        updated=_sorted(
            t for a, t in after.items() if a in before and before[a] != t
        ),
    )


class NoTargets(Exception):
    """
    A lookup succeeded but gave no usable address; the last good answer is
    kept, as after any other failure.
    """


# Error messages for the log, most specific first (DNSNameError is a
# DomainError).
_ERRORS = (
    (error.DNSNameError, "no such name (NXDOMAIN)"),
    (error.DNSServerError, "server failure (SERVFAIL)"),
    (error.DNSQueryRefusedError, "query refused (REFUSED)"),
    (error.DNSFormatError, "format error (FORMERR)"),
    (error.DNSNotImplementedError, "query not implemented (NOTIMP)"),
    (error.DNSQueryTimeoutError, "the resolver timed out"),
    (error.DomainError, "no answer"),
)


def _describe(failure: Failure, timeout: float) -> str:
    """
    A short, human-readable reason for a failed lookup.  Twisted's DNS
    errors carry whole messages, which are no use in a log line.
    """
    if failure.check(TimeoutError):
        return f"no answer within {timeout:g} s"
    if failure.check(NoTargets):
        return str(failure.value)
    for kind, text in _ERRORS:
        if failure.check(kind):
            return text
    return f"{type(failure.value).__name__}: {failure.value}"


def _addresses_in(records: Iterable[dns.RRHeader], name: Optional[str] = None) -> List[str]:
    """
    The addresses of the A and AAAA records among C{records}.

    @param name: If given, only records for that name count (used for the
        additional section of an SRV answer).  Otherwise every record
        counts, so that the records of a CNAME chain's final name do.
    """
    wanted = None if name is None else dns.Name(name)
    found = []
    for record in records:
        if wanted is not None and record.name != wanted:
            continue
        if record.type == dns.A:
            found.append(str(ipaddress.IPv4Address(record.payload.address)))
        elif record.type == dns.AAAA:
            found.append(str(ipaddress.IPv6Address(record.payload.address)))
    return found


def _ordered_addresses(addresses: Iterable[str]) -> Tuple[str, ...]:
    """
    Distinct addresses, IPv4 first, numerically.
    """
    ips = {ipaddress.ip_address(a) for a in addresses}
    return tuple(str(ip) for ip in sorted(ips, key=lambda ip: (ip.version, ip.packed)))


def _name_text(name: dns.Name) -> str:
    return name.name.decode("ascii", "backslashreplace")


class _Attempt:
    """
    One lookup in progress: its deadline, and whether L{DnsDiscovery.stop}
    abandoned it.  Cancelling a coroutine's Deferred only cancels what it
    awaits, and a L{DeferredList} turns that into an ordinary result, so
    the lookup checks this after each wait instead of carrying on.
    """

    __slots__ = ("deadline", "cancelled")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.cancelled = False

    def check(self) -> None:
        """
        @raises CancelledError: if the lookup was abandoned.
        """
        if self.cancelled:
            raise CancelledError()


class DnsDiscovery:
    """
    Periodic DNS resolution of an upstream group's backends.

    Semantics, for whoever wires it:

      - L{start} resolves at once, then every C{interval} seconds.  L{stop}
        cancels the schedule and any lookup in progress and leaves no
        delayed call on the clock; a later L{start} starts over.

      - L{targets} is the last good answer, in canonical order (priority,
        then IPv4 before IPv6, numerically, then port); C{()} before the
        first good answer.  No two targets share a C{(host, port)}.

      - C{on_change(targets)} is called after each lookup whose answer
        differs from L{targets} (order does not matter), after L{targets}
        was updated.  It is never called because of a failure, and so never
        with C{()}.  An exception it raises is logged and otherwise ignored.

      - L{first_answer} fires once the first lookup has finished: with its
        targets, or with C{()} if it failed (the failure is logged, and the
        targets arrive through C{on_change} once a later lookup succeeds).

    C{kind="a"} queries A and AAAA at the same time and uses every address
    of both.  If one family fails (or times out) and the other gives
    addresses, the addresses are used; the lookup fails only when neither
    gives any.

    C{kind="srv"} queries the SRV records, then the A and AAAA records of
    each distinct target host, all at the same time, unless the SRV
    answer's additional section already holds addresses for that host.
    Records whose target is C{.} (RFC 2782: "service decidedly not
    available") or whose port is 0 are ignored.  An SRV weight of 0
    becomes 1, the smallest positive weight: such a target gets a small
    share next to heavy ones and an equal share when all weights are 0, as
    RFC 2782 asks.  (Next to weight-1 records it gets an equal share, more
    than the RFC's "very small chance".)  Each address of a target gets the
    record's full weight.  Should two records lead to the same address and
    port, the lower priority wins, and the weights of records at that
    priority add up.  A target host that cannot be resolved keeps the
    addresses it had in the last lookup, if any, and is left out otherwise;
    the lookup fails only when no target gives any address.

    @ivar log: Where warnings (failed lookups, skipped ticks) and changes
        are logged; each event has C{name} and C{kind} fields.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        resolver: IResolver,
        name: str,
        port: Optional[int] = None,
        kind: str = "a",
        interval: float = 30.0,
        on_change: Optional[Callable[[Tuple[Target, ...]], object]] = None,
        *,
        timeout: float = 5.0,
        weight: int = 1,
    ) -> None:
        """
        @param clock: The clock for the schedule and the timeouts.
        @param resolver: The resolver to query; see L{default_resolver}.
        @param name: The host name (C{kind="a"}) or the SRV record name
            (C{kind="srv"}), e.g. C{'_http._tcp.api.internal'}.
        @param port: The backends' port for C{kind="a"}; L{None} or C{0}
            for C{kind="srv"}, whose records give the ports.
        @param kind: C{'a'} (A and AAAA records; C{'dns'} is accepted as
            another name for it) or C{'srv'}.
        @param interval: Seconds between the starts of two lookups.
        @param on_change: Called with the new targets when they change.
        @param timeout: Seconds after which a lookup gives up on the
            queries it still waits for.
        @param weight: The weight of every target, for C{kind="a"}; must be
            1 for C{kind="srv"}, whose records give the weights.
        @raises ValueError: on an invalid argument.
        """
        if kind == "dns":
            kind = "a"
        if kind not in ("a", "srv"):
            raise ValueError(f"kind must be 'a', 'dns' or 'srv', not {kind!r}")
        if not name:
            raise ValueError("name must not be empty")
        if kind == "a":
            if port is None:
                raise ValueError("kind 'a' needs a port")
            if not 1 <= port <= 65535:
                raise ValueError(f"port must be between 1 and 65535, not {port!r}")
            if not 1 <= weight:
                raise ValueError(f"weight must be at least 1, not {weight!r}")
        else:
            if port:
                raise ValueError("kind 'srv' takes its ports from the SRV records")
            if weight != 1:
                raise ValueError("kind 'srv' takes its weights from the SRV records")
            port = None
        if not interval > 0:
            raise ValueError(f"interval must be positive, not {interval!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        self._clock = clock
        self._resolver = resolver
        self._name = name
        self._port = port
        self._weight = weight
        self._kind = kind
        self._interval = interval
        self._timeout = timeout
        self._on_change = on_change
        self._targets: Tuple[Target, ...] = ()
        self._loop: Optional[LoopingCall] = None
        self._lookup: Optional[Deferred[Tuple[Target, ...]]] = None
        self._attempt: Optional[_Attempt] = None
        self._answered = False
        self._waiters: List[Deferred[Tuple[Target, ...]]] = []
        # SRV target host -> its addresses in the last lookup that resolved
        # it, used when resolving it fails.
        self._srv_hosts: Dict[str, Tuple[str, ...]] = {}

    @property
    def name(self) -> str:
        """
        The name being resolved.
        """
        return self._name

    @property
    def kind(self) -> str:
        """
        C{'a'} (also when built with C{'dns'}) or C{'srv'}.
        """
        return self._kind

    @property
    def targets(self) -> Tuple[Target, ...]:
        """
        The last good answer, in canonical order; C{()} until there is one.
        """
        return self._targets

    @property
    def running(self) -> bool:
        """
        Whether L{start} was called and L{stop} was not since.
        """
        return self._loop is not None

    def start(self) -> None:
        """
        Resolve the name now, then every C{interval} seconds.

        @raises RuntimeError: if already running.
        """
        if self._loop is not None:
            raise RuntimeError(f"discovery of {self._name!r} is already running")
        loop = self._loop = LoopingCall(self._tick)
        loop.clock = self._clock
        loop.start(self._interval, now=True).addErrback(
            lambda failure: self.log.failure(
                "DNS discovery of {name} stopped", failure, name=self._name
            )
        )

    def stop(self) -> None:
        """
        Stop resolving: cancel the schedule and any lookup in progress.
        Nothing of this object stays scheduled on the clock.  Pending
        L{first_answer} Deferreds fire with the current targets.  Does
        nothing when not running.
        """
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()
        lookup, self._lookup = self._lookup, None
        if self._attempt is not None:
            self._attempt.cancelled = True
            self._attempt = None
        if lookup is not None:
            # Reaches every query the lookup waits for, whose timeouts then
            # leave the clock too.
            lookup.cancel()
        self._release_waiters()

    def first_answer(self) -> Deferred[Tuple[Target, ...]]:
        """
        Wait for the first lookup to finish.

        @return: A Deferred that fires with the targets once the first
            lookup has finished, with C{()} if it failed or L{stop} came
            first; at once if that already happened.  Cancelling it only
            stops the waiting.
        """
        if self._answered:
            return succeed(self._targets)
        waiter: Deferred[Tuple[Target, ...]] = Deferred(self._waiters.remove)
        self._waiters.append(waiter)
        return waiter

    def _release_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(self._targets)

    def _tick(self) -> None:
        """
        Start a lookup, unless the previous one is still running.
        """
        if self._lookup is not None:
            self.log.warn(
                "DNS lookup of {name} ({kind}) still running after {interval:g} s;"
                " skipping this one",
                name=self._name,
                kind=self._kind,
                interval=self._interval,
            )
            return
        attempt = self._attempt = _Attempt(self._clock.seconds() + self._timeout)
        resolve: Coroutine[Any, Any, Tuple[Target, ...]]
        if self._kind == "a":
            resolve = self._resolve_addresses(attempt)
        else:
            resolve = self._resolve_service(attempt)
        lookup = self._lookup = Deferred.fromCoroutine(resolve)
        # The lookup may already have finished (a resolver answering from a
        # hosts file or a cache), so this runs only after self._lookup is set.
        lookup.addBoth(self._finished, lookup)

    def _finished(
        self,
        result: Union[Tuple[Target, ...], Failure],
        lookup: Deferred[Tuple[Target, ...]],
    ) -> None:
        if lookup is not self._lookup:
            # Cancelled by stop(): nobody wants this result any more.
            return None
        self._lookup = self._attempt = None
        if isinstance(result, Failure):
            self.log.warn(
                "DNS lookup of {name} ({kind}) failed: {error}; keeping the"
                " last good answer ({count} targets)",
                name=self._name,
                kind=self._kind,
                error=_describe(result, self._timeout),
                count=len(self._targets),
            )
        else:
            self._update(result)
        self._answered = True
        self._release_waiters()
        return None

    def _update(self, targets: Tuple[Target, ...]) -> None:
        changes = diff_targets(self._targets, targets)
        if not changes:
            return
        self._targets = targets
        self.log.info(
            "DNS targets of {name} ({kind}) changed: added {added},"
            " removed {removed}, updated {updated}; now {count} targets",
            name=self._name,
            kind=self._kind,
            added=[str(t) for t in changes.added],
            removed=[str(t) for t in changes.removed],
            updated=[str(t) for t in changes.updated],
            count=len(targets),
            targets=targets,
        )
        if self._on_change is not None:
            try:
                self._on_change(targets)
            except Exception:
                self.log.failure(
                    "on_change callback for DNS targets of {name} failed",
                    name=self._name,
                )

    def _query(
        self,
        lookup: Callable[[str], Deferred[Any]],
        name: str,
        attempt: _Attempt,
    ) -> Deferred[Any]:
        """
        Send one query, bounded by the lookup's deadline.
        """
        attempt.check()
        remaining = attempt.deadline - self._clock.seconds()
        if remaining <= 0:
            raise TimeoutError()
        return lookup(name).addTimeout(remaining, self._clock)

    async def _addresses(self, name: str, attempt: _Attempt) -> Tuple[str, ...]:
        """
        The A and AAAA addresses of C{name}, distinct and ordered.

        @raises Exception: the first family's error when neither family
            gave an address, or L{NoTargets} when both answered with none.
        """
        results = await DeferredList(
            [
                self._query(self._resolver.lookupAddress, name, attempt),
                self._query(self._resolver.lookupIPV6Address, name, attempt),
            ],
            consumeErrors=True,
        )
        attempt.check()
        found: List[str] = []
        failures: List[Failure] = []
        for ok, value in results:
            if ok:
                found.extend(_addresses_in(value[0]))
            else:
                failures.append(value)
        if found:
            return _ordered_addresses(found)
        if failures:
            failures[0].raiseException()
        raise NoTargets(f"no A or AAAA records for {name}")

    async def _resolve_addresses(self, attempt: _Attempt) -> Tuple[Target, ...]:
        assert self._port is not None
        addresses = await self._addresses(self._name, attempt)
        return _sorted(
            Target(address, self._port, weight=self._weight) for address in addresses
        )

    async def _resolve_service(self, attempt: _Attempt) -> Tuple[Target, ...]:
        answers, _authority, additional = await self._query(
            self._resolver.lookupService, self._name, attempt
        )
        records = [
            r.payload
            for r in answers
            if r.type == dns.SRV and r.payload.target.name and r.payload.port
        ]
        if not records:
            raise NoTargets(f"no usable SRV records for {self._name}")

        hosts = sorted({_name_text(r.target).lower() for r in records})
        results = await DeferredList(
            [
                Deferred.fromCoroutine(self._srv_host(host, additional, attempt))
                for host in hosts
            ],
            consumeErrors=True,
        )
        attempt.check()
        addresses: Dict[str, Tuple[str, ...]] = {}
        first_failure: Optional[Failure] = None
        for host, (ok, value) in zip(hosts, results):
            if ok:
                addresses[host] = self._srv_hosts[host] = value
                continue
            first_failure = first_failure or value
            kept = self._srv_hosts.get(host, ())
            addresses[host] = kept
            self.log.warn(
                "Resolving SRV target {target} of {name} failed: {error};"
                " keeping its {count} last known addresses",
                target=host,
                name=self._name,
                kind=self._kind,
                error=_describe(value, self._timeout),
                count=len(kept),
            )
        for gone in set(self._srv_hosts) - set(hosts):
            del self._srv_hosts[gone]

        # (host, port) -> (priority, weight): lowest priority wins, weights
        # at the same priority add up.
        merged: Dict[Tuple[str, int], Tuple[int, int]] = {}
        for record in records:
            weight = max(record.weight, 1)
            for address in addresses[_name_text(record.target).lower()]:
                key = (address, record.port)
                seen = merged.get(key)
                if seen is None or record.priority < seen[0]:
                    merged[key] = (record.priority, weight)
                elif record.priority == seen[0]:
                    merged[key] = (seen[0], seen[1] + weight)
        if not merged:
            if first_failure is not None:
                first_failure.raiseException()
            raise NoTargets(f"no addresses for the SRV targets of {self._name}")
        return _sorted(
            Target(host, port, weight=weight, priority=priority)
            for (host, port), (priority, weight) in merged.items()
        )

    async def _srv_host(
        self, host: str, additional: Sequence[dns.RRHeader], attempt: _Attempt
    ) -> Tuple[str, ...]:
        """
        The addresses of one SRV target host: from the additional section
        of the SRV answer when it has some, otherwise from A and AAAA
        queries.
        """
        given = _addresses_in(additional, host)
        if given:
            return _ordered_addresses(given)
        return await self._addresses(host, attempt)


def default_resolver(
    reactor: Any,
    resolvconf: Optional[str] = None,
    hosts: Optional[str] = None,
    nameservers: Sequence[Tuple[str, int]] = (),
) -> IResolver:
    """
    The resolver Twisted would use, built on C{reactor} instead of the
    global one: the hosts file first, then the name servers of
    C{resolv.conf} (re-read when it changes).  Given C{nameservers}, only
    those are asked, neither file is read.

    Building it reads both files and schedules the next check of
    C{resolv.conf} on C{reactor}; it sends nothing.

    @param reactor: An L{IReactorTime} and L{IReactorUDP}/L{IReactorTCP}
        provider.
    @param resolvconf: The resolv.conf file; C{/etc/resolv.conf} by
        default.
    @param hosts: The hosts file; C{/etc/hosts} by default.
    @param nameservers: C{(address, port)} pairs of name servers to ask
        in order, IP address literals (IPv6 without brackets), e.g. a
        service registry's DNS interface at C{("127.0.0.1", 8600)}.
    """
    from twisted.names import cache, client, hosts as hostsmodule, resolve
    from twisted.python.runtime import platform

    if nameservers:
        return client.Resolver(servers=list(nameservers), reactor=reactor)
    if platform.getType() != "posix":
        # Twisted's Windows set-up bootstraps from the system resolver on
        # the global reactor; there is nothing to pass the reactor to.
        return client.createResolver(resolvconf=resolvconf, hosts=hosts)
    return resolve.ResolverChain(
        [
            hostsmodule.Resolver(hosts or b"/etc/hosts"),
            cache.CacheResolver(reactor=reactor),
            client.Resolver(resolv=resolvconf or "/etc/resolv.conf", reactor=reactor),
        ]
    )
