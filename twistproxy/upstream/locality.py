# -*- test-case-name: tests.test_locality -*-
"""
Locality-aware selection: nearby backends first, the rest as they are needed.

Backends may be labelled with a I{region} (C{'eu-west'}) and a I{zone}
within it (C{'eu-west-1a'}); a locator (L{twistproxy.upstream.locators})
places each client in a region and zone the same way.  For every client the
backends of an upstream group are then arranged in I{priority levels}, as in
Envoy's priority load balancing:

  - level 0: the backends in the client's own zone (when the client's zone
    is known and has backends);

  - level 1: the other backends of the client's region (all of the region
    when the zone is unknown: it is then level 0);

  - then one level per other region, in the configured region priority
    order (C{[locality] regions}); regions of backends that the order does
    not list come after it, in configuration order, and backends without a
    region come last.

A client whose region is unknown, or has no backends in this group, gets
one level per region in that same order.  A group with no regions at all is
a single level of all its backends, so a L{LocalityPicker} can always be
used.

Traffic spills from one level to the next gradually, by each level's
I{health}::

    health = min(1, overprovisioning * available weight / total weight)

where the available weight adds up the C{effective_weight} of the level's
available backends and the total weight the configured C{weight} of all of
them.  Level 0 receives C{health0} of the requests; what it cannot take goes
to level 1, which receives at most C{health1}, and so on.  With the default
overprovisioning factor of 1.4 a level keeps all its traffic until fewer
than 1/1.4 (about 71 %) of its weight is available: a region that lost one
backend of four still serves all of its clients, one that lost half serves
70 % of them and sends 30 % to the next region.  When the health of all
levels together is below 1, the loads are scaled up in proportion so that
every request still goes to an available backend.  A region that goes down
entirely sends all its clients to the next; when it comes back, its health
rises and its traffic returns by the same rule, with no separate failback
step.

A I{retry} (a request sent again after it failed on a backend) is placed
by the same rule, with the backends it has already tried counted as
unavailable, as Envoy does for retries over priority levels: a level whose
backends have all failed the request has no health left for it, and the
retry spills over to the next level, from the client's zone to its region
and on to the other regions, while the level's balancer places it among
the untried backends of its level.  So a retry leaves a failed zone or
region even before any health check notices, and a request may try every
backend of the group, nearest first.

Dividing the I{effective} weight (which is lower during slow start) by the
I{configured} weight makes a recovering region take its traffic back as its
backends warm up rather than all at once; without slow start the two weights
are equal and health is simply the available share of the level's weight.

Within the chosen level, a balancer (an L{IBalancer} built by the group's
own balancer factory over that level's backends) picks the backend.  One
balancer is built per distinct set of backends, so a level that several
kinds of client share (a region is level 0 for its own clients and level 2
for others) shares its balancer's state too.

Cost: the levels of every known C{(region, zone)} are computed once, when
the picker is built, and looked up with one or two dictionary probes per
pick.  Health is not cached: each pick reads the C{available} flags and
weights of the levels' backends, from level 0 on, until the healths add up
to 1, so that a backend marked down is noticed at once with no
notification.  In the common, healthy case that is level 0 alone,
C{O(backends in level 0)}; when the group is badly degraded it is every
backend of the group, once.  That is cheap for the tens of backends a group
has (well under 100); a group of thousands would want health kept
incrementally instead.
"""

from __future__ import annotations

import math
import random as _random
from typing import Callable, Collection, Dict, List, Optional, Sequence, Tuple

from zope.interface import implementer

from twistproxy.interfaces import (
    IBackend,
    IBalancer,
    ILocator,
    IRequestInfo,
    IRetryBalancer,
)
from twistproxy.upstream.balancers import pick_untried

DEFAULT_OVERPROVISIONING = 1.4


class _Level:
    """
    One priority level: its backends, the balancer that picks among them and
    the constant part of its health.

    @ivar scale: C{overprovisioning / total configured weight}, so that
        C{health = min(1, available effective weight * scale)}.
    """

    __slots__ = ("backends", "balancer", "scale")

    def __init__(
        self,
        backends: Tuple[IBackend, ...],
        balancer: IBalancer,
        overprovisioning: float,
    ) -> None:
        self.backends = backends
        self.balancer = balancer
        total = sum(b.weight for b in backends)
        self.scale = overprovisioning / total if total > 0 else 0.0

    def health(self, tried: Collection[IBackend] = ()) -> float:
        """
        The level's health for a request that has failed on the backends
        in C{tried}: they count as unavailable.
        """
        available = 0.0
        for backend in self.backends:
            if backend.available and backend not in tried:
                available += backend.effective_weight
        health = available * self.scale
        return 1.0 if health > 1.0 else health


class LocalityPicker:
    """
    Picks a backend for a client at a known place: the client's zone first,
    then its region, then the other regions in priority order, spilling
    over by health as described in L{twistproxy.upstream.locality}.
    """

    def __init__(
        self,
        backends: Sequence[IBackend],
        region_priority: Sequence[str],
        make_balancer: Callable[[List[IBackend]], IBalancer],
        overprovisioning: float = DEFAULT_OVERPROVISIONING,
        random: Callable[[], float] = _random.random,
    ) -> None:
        """
        @param backends: The upstream group's backends, in configuration
            order; their C{region} and C{zone} are read once, here.
        @param region_priority: Region names, most preferred first (the
            C{[locality] regions} setting).  Names that no backend has are
            ignored.
        @param make_balancer: Builds the balancer of one level from the
            list of its backends (in configuration order); for example
            C{lambda level: SmoothWeightedRoundRobin(level)}.
        @param overprovisioning: How much a level's available weight is
            multiplied by to get its health; at least 1.  1 spills traffic
            as soon as any backend is down; 1.4 (Envoy's default) only once
            less than about 71 % of a level's weight is available.
        @param random: Returns a float in [0, 1) for each pick; replace it
            with a seeded generator's C{random} in tests.
        @raises ValueError: when C{overprovisioning} is below 1 or not
            finite.
        """
        if not (
            isinstance(overprovisioning, (int, float))
            and math.isfinite(overprovisioning)
            and overprovisioning >= 1
        ):
            raise ValueError(
                f"overprovisioning must be a finite number of at least 1, "
                f"not {overprovisioning!r}"
            )
        if isinstance(region_priority, str):
            raise TypeError(
                f"region_priority must be a sequence of region names, not "
                f"the string {region_priority!r}"
            )
        self._backends: Tuple[IBackend, ...] = tuple(backends)
        self._random = random
        self._overprovisioning = float(overprovisioning)
        self._make_balancer = make_balancer
        self._levels: Dict[Tuple[int, ...], _Level] = {}

        by_region: Dict[str, List[int]] = {}
        for index, backend in enumerate(self._backends):
            by_region.setdefault(backend.region or "", []).append(index)
        listed = [r for r in dict.fromkeys(region_priority) if r and r in by_region]
        unlisted = [r for r in by_region if r and r not in listed]
        order = listed + unlisted + ([""] if "" in by_region else [])
        self._regions: Tuple[str, ...] = tuple(order)

        plans: Dict[Tuple[str, str], Tuple[_Level, ...]] = {}
        unknown = tuple(self._level(by_region[r]) for r in order)
        plans[("", "")] = unknown
        for region in order:
            if not region:
                continue
            members = by_region[region]
            rest = tuple(
                level for r, level in zip(order, unknown) if r != region
            )
            plans[(region, "")] = (self._level(members),) + rest
            zones = dict.fromkeys(
                self._backends[i].zone for i in members if self._backends[i].zone
            )
            for zone in zones:
                same = [i for i in members if self._backends[i].zone == zone]
                other = [i for i in members if self._backends[i].zone != zone]
                head = (self._level(same),)
                if other:
                    head += (self._level(other),)
                plans[(region, zone)] = head + rest
        self._plans = plans
        self._unknown = unknown

    def _level(self, indices: List[int]) -> _Level:
        """
        The level over these backends, built once per distinct set.
        """
        key = tuple(indices)
        level = self._levels.get(key)
        if level is None:
            members = [self._backends[i] for i in indices]
            level = _Level(
                tuple(members),
                self._make_balancer(members),
                self._overprovisioning,
            )
            self._levels[key] = level
        return level

    def _plan(self, region: str, zone: str) -> Tuple[_Level, ...]:
        plan = self._plans.get((region, zone))
        if plan is None:
            # An unknown zone is ignored, and so is an unknown region; the
            # plans stay bounded by the backends' own places, whatever
            # names clients come with.
            plan = self._plans.get((region, ""), self._unknown)
        return plan

    @property
    def regions(self) -> Tuple[str, ...]:
        """
        The regions of the backends in priority order, C{''} (backends
        with no region) last when present.
        """
        return self._regions

    def levels(self, region: str, zone: str) -> List[List[IBackend]]:
        """
        The priority levels of a client at C{(region, zone)}, for tests,
        diagnostics and the admin interface.

        @return: The backends of each level, first level first.
        """
        return [list(level.backends) for level in self._plan(region, zone)]

    def loads(self, region: str, zone: str) -> List[float]:
        """
        The share of a client's requests that each of its levels receives
        now, from the backends' current state.

        @return: One fraction per level of L{levels}, adding up to 1, or all
            zero when no backend is available.
        """
        healths = [level.health() for level in self._plan(region, zone)]
        total = sum(healths)
        if total <= 0:
            return [0.0] * len(healths)
        scale = 1.0 / total if total < 1.0 else 1.0
        remaining = 1.0
        loads = []
        for health in healths:
            load = min(remaining, health * scale)
            loads.append(load)
            remaining -= load
        return loads

    def pick(
        self, request: IRequestInfo, region: str, zone: str
    ) -> Optional[IBackend]:
        """
        Choose a backend for a request from a client at C{(region, zone)}.

        @param request: The request, passed on to the level's balancer.
        @param region: The client's region, or C{''} when unknown.
        @param zone: The client's zone, or C{''} when unknown.
        @return: An available backend, or C{None} when no backend of the
            group is available.
        """
        plan = self._plan(region, zone)
        if len(plan) == 1:
            # One level (a group without regions) takes everything there
            # is: the picker costs nothing over the level's balancer.
            return plan[0].balancer.pick(request)
        if not plan:
            return None
        point = self._random()
        health = plan[0].health()
        if health >= 1.0:
            # The common case: the nearest level is healthy enough to take
            # everything, and no other level needs looking at.
            chosen: Optional[_Level] = plan[0]
        else:
            chosen = self._spill(plan, health, point, ())
            if chosen is None:
                return None
        picked = chosen.balancer.pick(request)
        if picked is not None:
            return picked
        # Only reached when a level's balancer declined although its level
        # has an available backend (a balancer with rules of its own).
        for level in plan:
            picked = level.balancer.pick(request)
            if picked is not None:
                return picked
        return None

    def nearest(self, region: str, zone: str, count: int) -> List[IBackend]:
        """
        Up to C{count} available backends for a client at C{(region,
        zone)}, for an answer that names several (a DNS answer): the level
        that L{pick} would choose by the levels' healths, its available
        backends in a random order weighted by their effective weights,
        then, when it has fewer than C{count}, those of the other levels,
        nearest first, in the same way.

        @return: Distinct available backends, nearest first; empty when no
            backend of the group is available.
        """
        plan = self._plan(region, zone)
        if not plan:
            return []
        first = self._spill(plan, plan[0].health(), self._random(), ())
        if first is None:
            return []
        chosen: List[IBackend] = []
        for level in (first,) + tuple(level for level in plan if level is not first):
            members = [b for b in level.backends if b.available and b.effective_weight > 0]
            # Weighted sampling without replacement (Efraimidis and
            # Spirakis): the largest random() ** (1 / weight) first.
            members.sort(key=lambda b: self._random() ** (1.0 / b.effective_weight),
                         reverse=True)
            chosen.extend(members[:count - len(chosen)])
            if len(chosen) >= count:
                break
        return chosen

    def pick_other(
        self,
        request: IRequestInfo,
        region: str,
        zone: str,
        tried: Collection[IBackend],
    ) -> Optional[IBackend]:
        """
        Choose a backend for a retry of a request from a client at
        C{(region, zone)}, as L{pick} does but with the backends in
        C{tried} counted as unavailable: once they are all of a level, the
        retry spills over to the next.

        @param tried: The backends the request has failed on.
        @return: An available backend not in C{tried}, or C{None} when
            there is none in the group.
        """
        plan = self._plan(region, zone)
        if not plan:
            return None
        chosen = self._spill(plan, plan[0].health(tried), self._random(), tried)
        if chosen is not None:
            picked = pick_untried(chosen.balancer, chosen.backends, request, tried)
            if picked is not None:
                return picked
        for level in plan:
            picked = pick_untried(level.balancer, level.backends, request, tried)
            if picked is not None:
                return picked
        return None

    def _spill(
        self,
        plan: Tuple[_Level, ...],
        health: float,
        point: float,
        tried: Collection[IBackend],
    ) -> Optional[_Level]:
        """
        The level that receives the request at C{point} (in [0, 1)), when
        the first level's health is C{health}; C{None} when no level has
        any health.

        Level i receives the requests whose point falls between the
        cumulative healths of levels i - 1 and i, cut off at 1.  Once the
        cumulative health reaches 1 later levels receive nothing, so they
        are not looked at.  Below 1 in total, the loads are scaled up to
        add up to 1: the point is scaled down instead.
        """
        cumulative = health
        bounds = [cumulative]
        for index in range(1, len(plan)):
            if cumulative >= 1.0:
                break
            cumulative += plan[index].health(tried)
            bounds.append(cumulative)
        if cumulative <= 0.0:
            return None
        if cumulative < 1.0:
            point *= cumulative
        for index, bound in enumerate(bounds):
            if point < bound:
                break
        else:
            # Rounding put the point on the total: the last level with any
            # health is the one.
            index = bounds.index(cumulative)
        return plan[index]

    def __repr__(self) -> str:
        return (
            f"<LocalityPicker regions={list(self._regions)!r}"
            f" overprovisioning={self._overprovisioning}>"
        )


@implementer(IRetryBalancer)
class LocalityBalancer:
    """
    An L{IBalancer} that places each request with a locator and picks with
    a L{LocalityPicker}: what an upstream group uses when locality is on.
    Retries spill over from level to level (L{LocalityPicker.pick_other}).
    """

    __slots__ = ("_picker", "_locator")

    def __init__(
        self, picker: LocalityPicker, locator: Optional[ILocator] = None
    ) -> None:
        """
        @param picker: The group's picker.
        @param locator: Places clients; with C{None} every client is
            unknown, so the region priority order alone decides.
        """
        self._picker = picker
        self._locator = locator

    def pick(self, request: IRequestInfo) -> Optional[IBackend]:
        if self._locator is None:
            return self._picker.pick(request, "", "")
        region, zone = self._locator.locate(request)
        return self._picker.pick(request, region, zone)

    def pick_other(
        self, request: IRequestInfo, tried: Collection[IBackend]
    ) -> Optional[IBackend]:
        if self._locator is None:
            return self._picker.pick_other(request, "", "", tried)
        region, zone = self._locator.locate(request)
        return self._picker.pick_other(request, region, zone, tried)

    def __repr__(self) -> str:
        return f"<LocalityBalancer {self._picker!r} {self._locator!r}>"
