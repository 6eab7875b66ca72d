"""
Tests for L{twistproxy.upstream.locality}: priority levels by region and
zone, spill-over by health, failover and return.
"""

from __future__ import annotations

import ipaddress
import random
from collections import Counter
from typing import Dict, List, Optional, Sequence

from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from twistproxy.interfaces import IBackend, IBalancer, IRetryBalancer
from twistproxy.testing import BalancerContractMixin, FakeRequestInfo
from twistproxy.upstream.backend import Backend
from twistproxy.upstream.balancers import SmoothWeightedRoundRobin
from twistproxy.upstream.locality import LocalityBalancer, LocalityPicker
from twistproxy.upstream.locators import CIDRLocator

_REQUEST = FakeRequestInfo()


def _backend(name: str, region: str = "", zone: str = "", weight: int = 1) -> Backend:
    return Backend(name, "http", "127.0.0.1", 8000, weight, region=region, zone=zone)


def _names(levels: Sequence[Sequence[IBackend]]) -> List[List[str]]:
    return [[b.name for b in level] for level in levels]


def _picker(
    backends: Sequence[IBackend],
    regions: Sequence[str] = (),
    overprovisioning: float = 1.4,
    seed: int = 1,
) -> LocalityPicker:
    return LocalityPicker(
        backends,
        regions,
        SmoothWeightedRoundRobin,
        overprovisioning,
        random=random.Random(seed).random,
    )


def _two_regions() -> Dict[str, Backend]:
    """
    Four backends of weight 1 in each of C{eu-west} (two per zone) and
    C{us-east}.
    """
    backends = {}
    for i in range(4):
        zone = "eu-west-1a" if i < 2 else "eu-west-1b"
        backends[f"eu{i}"] = _backend(f"eu{i}", "eu-west", zone)
    for i in range(4):
        backends[f"us{i}"] = _backend(f"us{i}", "us-east", f"us-east-1{'ab'[i % 2]}")
    return backends


class _Recorder:
    """
    A C{make_balancer} that records the levels it is asked to build
    balancers for.
    """

    def __init__(self) -> None:
        self.built: List[List[str]] = []

    def __call__(self, backends: List[IBackend]) -> IBalancer:
        self.built.append([b.name for b in backends])
        return SmoothWeightedRoundRobin(backends)


class LevelTests(SynchronousTestCase):
    """
    L{LocalityPicker.levels}: the priority levels of clients in various
    places.
    """

    def setUp(self) -> None:
        self.recorder = _Recorder()
        self.picker = LocalityPicker(
            [
                _backend("a1", "eu-west", "eu-west-1a"),
                _backend("u1", "us-east", "us-east-1a"),
                _backend("p1", "ap-south"),
                _backend("a2", "eu-west", "eu-west-1a"),
                _backend("n1"),
                _backend("b1", "eu-west", "eu-west-1b"),
                _backend("u2", "us-east", "us-east-1b"),
            ],
            ["nowhere", "us-east", "eu-west", "us-east"],
            self.recorder,
        )

    def test_region_order(self) -> None:
        """
        Regions are in the priority order (names without backends
        ignored, duplicates once), then unlisted regions in configuration
        order, then backends without a region.
        """
        self.assertEqual(self.picker.regions, ("us-east", "eu-west", "ap-south", ""))

    def test_client_zone_known(self) -> None:
        """
        A client in a known zone: its zone, the rest of its region, then
        the other regions in order.
        """
        self.assertEqual(
            _names(self.picker.levels("eu-west", "eu-west-1a")),
            [["a1", "a2"], ["b1"], ["u1", "u2"], ["p1"], ["n1"]],
        )

    def test_client_region_known(self) -> None:
        """
        A client whose zone is unknown, or has no backends, gets its whole
        region first.
        """
        expected = [["a1", "a2", "b1"], ["u1", "u2"], ["p1"], ["n1"]]
        self.assertEqual(_names(self.picker.levels("eu-west", "")), expected)
        self.assertEqual(_names(self.picker.levels("eu-west", "eu-west-1z")), expected)

    def test_unlisted_region_client(self) -> None:
        """
        A client in a region the priority order does not list still gets
        its own region first, then the order.
        """
        self.assertEqual(
            _names(self.picker.levels("ap-south", "")),
            [["p1"], ["u1", "u2"], ["a1", "a2", "b1"], ["n1"]],
        )

    def test_unknown_client(self) -> None:
        """
        A client with no region, or one no backend is in, or only a zone,
        gets the regions in priority order.
        """
        expected = [["u1", "u2"], ["a1", "a2", "b1"], ["p1"], ["n1"]]
        for region, zone in [("", ""), ("mars", "mars-1a"), ("nowhere", ""), ("", "eu-west-1a")]:
            self.assertEqual(
                _names(self.picker.levels(region, zone)), expected, (region, zone)
            )

    def test_zone_without_other_zones(self) -> None:
        """
        A level is never empty: a zone that is its region's only one is
        followed directly by the next region.
        """
        picker = LocalityPicker(
            [_backend("a", "eu", "eu-1"), _backend("b", "us", "us-1")],
            ["eu", "us"],
            SmoothWeightedRoundRobin,
        )
        self.assertEqual(_names(picker.levels("eu", "eu-1")), [["a"], ["b"]])

    def test_one_balancer_per_composition(self) -> None:
        """
        One balancer is built for each distinct set of backends, however
        many clients' levels share it, and all of them are built up front.
        """
        self.assertEqual(
            sorted(self.recorder.built),
            sorted(
                [
                    ["u1", "u2"], ["a1", "a2", "b1"], ["p1"], ["n1"],
                    ["a1", "a2"], ["b1"], ["u1"], ["u2"],
                ]
            ),
        )
        for region, zone in [("eu-west", "eu-west-1a"), ("", ""), ("x", "y")]:
            self.picker.pick(_REQUEST, region, zone)
        self.assertEqual(len(self.recorder.built), 8)

    def test_no_regions(self) -> None:
        """
        Without regions on the backends, every client has one level of all
        backends, whatever the priority order says.
        """
        picker = LocalityPicker(
            [_backend("a"), _backend("b"), _backend("c")],
            ["eu-west"],
            SmoothWeightedRoundRobin,
        )
        for region, zone in [("", ""), ("eu-west", "eu-west-1a")]:
            self.assertEqual(_names(picker.levels(region, zone)), [["a", "b", "c"]])
        self.assertEqual(picker.regions, ("",))


class SpillOverTests(SynchronousTestCase):
    """
    Each level receives C{min(1, 1.4 * available share)} of what the
    levels before it could not take.
    """

    picks = 10000
    tolerance = 0.02

    def setUp(self) -> None:
        self.backends = _two_regions()

    def _down(self, *names: str) -> None:
        for name in names:
            self.backends[name].available = False

    def _shares(self, picker: LocalityPicker, zone: str = "") -> Dict[str, float]:
        """
        The share of C{picks} requests from a client in C{eu-west} (and
        C{zone}) that each zone's backends receive.
        """
        counts: Counter = Counter()
        for _ in range(self.picks):
            backend = picker.pick(_REQUEST, "eu-west", zone)
            self.assertIsNotNone(backend)
            self.assertTrue(backend.available, backend)
            counts[backend.zone] += 1
        return {zone: count / self.picks for zone, count in counts.items()}

    def _assertShares(
        self, picker: LocalityPicker, expected: Dict[str, float], zone: str = ""
    ) -> None:
        shares = self._shares(picker, zone)
        for key in set(shares) | set(expected):
            self.assertTrue(
                abs(shares.get(key, 0.0) - expected.get(key, 0.0)) <= self.tolerance,
                f"{key}: got {shares.get(key, 0.0):.4f}, expected "
                f"{expected.get(key, 0.0):.4f} ({shares})",
            )

    def _region_shares(self, expected_eu: float, zone: str = "") -> None:
        picker = _picker(list(self.backends.values()), ["eu-west", "us-east"])
        loads = picker.loads("eu-west", zone)
        self.assertAlmostEqual(loads[0], expected_eu)
        self.assertAlmostEqual(sum(loads), 1.0)
        shares = self._shares(picker, zone)
        eu = shares.get("eu-west-1a", 0.0) + shares.get("eu-west-1b", 0.0)
        self.assertTrue(
            abs(eu - expected_eu) <= self.tolerance,
            f"eu-west got {eu:.4f}, expected {expected_eu} ({shares})",
        )

    def test_all_healthy_stays_local(self) -> None:
        """
        While every backend is up, all requests stay in the client's region,
        and no other region is even looked at.
        """
        self._region_shares(1.0)

    def test_overprovisioned_loss_stays_local(self) -> None:
        """
        With one backend of four down the region's health is
        C{min(1, 0.75 * 1.4)}, so it still takes everything.
        """
        self._down("eu0")
        self._region_shares(1.0)

    def test_half_down_spills_30_percent(self) -> None:
        """
        With half the region down, its health is C{0.5 * 1.4 = 0.7}: 70 %
        stays, 30 % goes to the next region.
        """
        self._down("eu0", "eu2")
        self._region_shares(0.7)

    def test_three_quarters_down_spills_65_percent(self) -> None:
        """
        With one backend of four up, health is C{0.25 * 1.4 = 0.35}.
        """
        self._down("eu0", "eu1", "eu2")
        self._region_shares(0.35)

    def test_total_health_below_one_is_normalised(self) -> None:
        """
        When all levels together are less than fully healthy (here 0.35
        each), loads are scaled up in proportion, so every request still
        goes to an available backend: half and half.
        """
        self._down("eu0", "eu1", "eu2", "us0", "us1", "us2")
        self._region_shares(0.5)

    def test_normalised_unequal(self) -> None:
        """
        Normalisation keeps the levels' proportions: healths 0.35 and
        0.175 (one backend of four up, at half its weight) give two thirds
        and one third.
        """
        self._down("eu0", "eu1", "eu2", "us0", "us1", "us2")
        self.backends["us3"].effective_weight = 0.5
        self._region_shares(2 / 3)

    def test_no_normalisation_at_one(self) -> None:
        """
        Healths 0.35 and 0.7 add up to more than 1, so they are not scaled:
        the first level keeps 35 % and the second takes the rest.
        """
        self._down("eu0", "eu1", "eu2", "us0", "us1")
        self._region_shares(0.35)

    def test_weights_count(self) -> None:
        """
        Health is measured by weight, not by the number of backends: losing
        the heavy backend of a region loses most of its health.
        """
        backends = [
            _backend("big", "eu-west", weight=3),
            _backend("small", "eu-west", weight=1),
            _backend("us", "us-east"),
        ]
        backends[0].available = False
        picker = _picker(backends, ["eu-west", "us-east"])
        self.assertEqual(picker.loads("eu-west", ""), [0.35, 0.65])

    def test_zone_preference(self) -> None:
        """
        A client in a zone stays in its zone while the zone is healthy.
        """
        picker = _picker(list(self.backends.values()), ["eu-west", "us-east"])
        self._assertShares(picker, {"eu-west-1a": 1.0}, "eu-west-1a")
        self._assertShares(picker, {"eu-west-1b": 1.0}, "eu-west-1b")

    def test_zone_spills_to_region_first(self) -> None:
        """
        When the client's zone is half down, 70 % stays in the zone and the
        other 30 % goes to the other zone of the region, not to another
        region.
        """
        self._down("eu0")
        picker = _picker(list(self.backends.values()), ["eu-west", "us-east"])
        self.assertEqual(
            [round(x, 9) for x in picker.loads("eu-west", "eu-west-1a")],
            [0.7, 0.3, 0.0],
        )
        self._assertShares(
            picker, {"eu-west-1a": 0.7, "eu-west-1b": 0.3}, "eu-west-1a"
        )

    def test_cascade_over_three_levels(self) -> None:
        """
        What the zone and then the region cannot take goes on to the next
        region: healths 0.7 and 0.7 leave level 2 nothing, healths 0.7 and
        0 leave it 30 %.
        """
        self._down("eu0", "eu2", "eu3")
        picker = _picker(list(self.backends.values()), ["eu-west", "us-east"])
        self.assertEqual(
            [round(x, 9) for x in picker.loads("eu-west", "eu-west-1a")],
            [0.7, 0.0, 0.3],
        )
        self._assertShares(
            picker, {"eu-west-1a": 0.7, "us-east-1a": 0.15, "us-east-1b": 0.15},
            "eu-west-1a",
        )

    def test_overprovisioning_factor(self) -> None:
        """
        With an overprovisioning factor of 1, a region that lost one
        backend of four keeps exactly 75 %.
        """
        self._down("eu0")
        picker = _picker(list(self.backends.values()), ["eu-west"], 1.0)
        self.assertEqual(picker.loads("eu-west", ""), [0.75, 0.25])
        self.assertEqual(picker.loads("us-east", ""), [1.0, 0.0])

    def test_seeded_random_is_used(self) -> None:
        """
        The level is chosen with the C{random} given: the same seed gives
        the same sequence of picks.
        """
        self._down("eu0", "eu2")
        runs = []
        for _ in range(2):
            picker = _picker(list(self.backends.values()), ["eu-west"], seed=42)
            runs.append([picker.pick(_REQUEST, "eu-west", "").name for _ in range(50)])
        self.assertEqual(runs[0], runs[1])
        self.assertEqual({n[:2] for n in runs[0]}, {"eu", "us"})


class FailoverTests(SynchronousTestCase):
    """
    A region that goes down sends all its traffic to the next region, and
    gets it back when it recovers.
    """

    def setUp(self) -> None:
        self.backends = _two_regions()
        self.picker = _picker(list(self.backends.values()), ["eu-west", "us-east"])

    def _regions(self, region: str, count: int = 500) -> Counter:
        return Counter(
            self.picker.pick(_REQUEST, region, "").region for _ in range(count)
        )

    def test_failover_and_return(self) -> None:
        """
        When every backend of C{eu-west} is down its clients go to
        C{us-east}; when they are back, the clients come back.
        """
        self.assertEqual(self._regions("eu-west"), {"eu-west": 500})
        for name in ("eu0", "eu1", "eu2", "eu3"):
            self.backends[name].available = False
        self.assertEqual(self._regions("eu-west"), {"us-east": 500})
        self.assertEqual(self._regions("us-east"), {"us-east": 500})
        for name in ("eu0", "eu1", "eu2", "eu3"):
            self.backends[name].available = True
        self.assertEqual(self._regions("eu-west"), {"eu-west": 500})

    def test_return_follows_slow_start(self) -> None:
        """
        While recovering backends ramp up (C{effective_weight} a quarter of
        C{weight}), only part of the traffic returns: health is
        C{0.25 * 1.4 = 0.35}.  At full weight all of it returns.
        """
        for name in ("eu0", "eu1", "eu2", "eu3"):
            self.backends[name].effective_weight = 0.25
        self.assertAlmostEqual(self.picker.loads("eu-west", "")[0], 0.35)
        counts = self._regions("eu-west", 4000)
        self.assertTrue(abs(counts["eu-west"] / 4000 - 0.35) < 0.03, counts)
        for name in ("eu0", "eu1", "eu2", "eu3"):
            self.backends[name].effective_weight = 1
        self.assertEqual(self._regions("eu-west"), {"eu-west": 500})

    def test_none_when_all_down(self) -> None:
        """
        When no backend at all is available, every client gets C{None},
        and the loads are all zero.
        """
        for backend in self.backends.values():
            backend.available = False
        for region, zone in [("eu-west", "eu-west-1a"), ("us-east", ""), ("", "")]:
            self.assertIsNone(self.picker.pick(_REQUEST, region, zone))
            self.assertEqual(set(self.picker.loads(region, zone)), {0.0})

    def test_last_backend_standing(self) -> None:
        """
        A single available backend anywhere gets every request, from
        clients everywhere.
        """
        for backend in self.backends.values():
            backend.available = False
        self.backends["us3"].available = True
        for region, zone in [("eu-west", "eu-west-1a"), ("us-east", "us-east-1a"), ("", "")]:
            for _ in range(50):
                self.assertIs(
                    self.picker.pick(_REQUEST, region, zone), self.backends["us3"]
                )


class RetrySpillTests(SynchronousTestCase):
    """
    L{LocalityPicker.pick_other}: a retry counts the backends it was tried
    on as unavailable, so it leaves a level whose backends all failed it,
    from the client's zone to its region and on to the other regions.
    """

    def setUp(self) -> None:
        self.backends = _two_regions()
        self.picker = _picker(list(self.backends.values()), ["eu-west", "us-east"])

    def _walk(self, region: str, zone: str) -> List[str]:
        """
        The backends one request reaches when every backend fails it.
        """
        tried: List[IBackend] = [self.picker.pick(_REQUEST, region, zone)]
        while True:
            other = self.picker.pick_other(_REQUEST, region, zone, tried)
            if other is None:
                return [b.name for b in tried]
            tried.append(other)

    def test_every_backend_once(self) -> None:
        """
        A request from C{eu-west-1a} that every backend fails reaches each
        backend of the group once, starting in its zone.
        """
        for _ in range(20):
            walked = self._walk("eu-west", "eu-west-1a")
            self.assertIn(walked[0], ("eu0", "eu1"))
            self.assertEqual(sorted(walked), sorted(self.backends))

    def test_leaves_failed_levels_before_health_checks(self) -> None:
        """
        With every backend still marked available, a retry of a request
        that failed on both backends of its zone goes to the other zone,
        and one that failed on all of its region goes to C{us-east}.
        """
        eu = [self.backends[f"eu{i}"] for i in range(4)]
        for _ in range(50):
            other = self.picker.pick_other(_REQUEST, "eu-west", "eu-west-1a", eu[:2])
            self.assertEqual(other.zone, "eu-west-1b")
            other = self.picker.pick_other(_REQUEST, "eu-west", "eu-west-1a", eu)
            self.assertEqual(other.region, "us-east")

    def test_half_tried_level_spills_by_health(self) -> None:
        """
        After one of the two backends of its zone failed a request, the
        zone has half its weight left for the retry (health 0.5 * 1.4 =
        0.7): about 70 % of such retries stay in the zone, on the other
        backend, and the rest go to the other zone, as for new requests
        when a backend is down.
        """
        tried = [self.backends["eu0"]]
        counts = Counter(
            self.picker.pick_other(_REQUEST, "eu-west", "eu-west-1a", tried).name
            for _ in range(4000)
        )
        self.assertNotIn("eu0", counts)
        self.assertTrue(abs(counts["eu1"] / 4000 - 0.7) < 0.03, counts)
        self.assertEqual(set(counts), {"eu1", "eu2", "eu3"})

    def test_unavailable_and_tried(self) -> None:
        """
        Backends marked down and backends tried both count as gone: with
        C{eu-west} down and two of C{us-east} tried, the retry goes to one
        of the two others; with all of them tried, there is none.
        """
        for i in range(4):
            self.backends[f"eu{i}"].available = False
        us = [self.backends[f"us{i}"] for i in range(4)]
        for _ in range(20):
            other = self.picker.pick_other(_REQUEST, "eu-west", "", us[:2])
            self.assertIn(other, us[2:])
        self.assertIsNone(self.picker.pick_other(_REQUEST, "eu-west", "", us))

    def test_locality_balancer_retries(self) -> None:
        """
        L{LocalityBalancer} provides L{IRetryBalancer}: it locates the
        request and spills its retry over as the picker does.
        """
        locator = CIDRLocator(
            [(ipaddress.ip_network("10.1.0.0/16"), ("eu-west", "eu-west-1a"))]
        )
        balancer = LocalityBalancer(self.picker, locator)
        self.assertTrue(verifyObject(IRetryBalancer, balancer))
        request = FakeRequestInfo(client_address="10.1.0.1")
        eu = [self.backends[f"eu{i}"] for i in range(4)]
        self.assertEqual(balancer.pick_other(request, eu).region, "us-east")
        self.assertEqual(balancer.pick_other(request, eu[:2]).zone, "eu-west-1b")


@implementer(IBackend)
class _CountingBackend:
    """
    An L{IBackend} that counts how often C{available} is read.
    """

    def __init__(self, name: str, region: str) -> None:
        self.name = name
        self.region = region
        self.zone = ""
        self.weight = 1
        self.effective_weight = 1
        self.in_flight = 0
        self.reads = 0

    @property
    def available(self) -> bool:
        self.reads += 1
        return True


@implementer(IBalancer)
class _Declining:
    """
    A balancer that never picks, as one with rules of its own might.
    """

    def __init__(self, backends):
        pass

    def pick(self, request):
        return None


class PickerTests(SynchronousTestCase):
    """
    Other properties of L{LocalityPicker.pick}.
    """

    def test_healthy_pick_reads_only_level_zero(self) -> None:
        """
        While the client's own level is healthy, a pick does not look at
        the other regions' backends at all.
        """
        near = [_CountingBackend(f"eu{i}", "eu-west") for i in range(3)]
        far = [_CountingBackend(f"us{i}", "us-east") for i in range(3)]
        self.assertTrue(verifyObject(IBackend, near[0]))
        picker = _picker(near + far, ["eu-west", "us-east"])
        for _ in range(10):
            self.assertIn(picker.pick(_REQUEST, "eu-west", ""), near)
        self.assertEqual([b.reads for b in far], [0, 0, 0])

    def test_declining_balancer_falls_back(self) -> None:
        """
        If a level's balancer declines although the level has available
        backends, another level's backend is picked rather than none.
        """
        backends = [_backend("eu", "eu-west"), _backend("us", "us-east")]

        def make(level: List[IBackend]) -> IBalancer:
            if level[0].region == "eu-west":
                return _Declining(level)
            return SmoothWeightedRoundRobin(level)

        picker = LocalityPicker(backends, ["eu-west"], make)
        self.assertIs(picker.pick(_REQUEST, "eu-west", ""), backends[1])
        picker = LocalityPicker(backends, ["eu-west"], _Declining)
        self.assertIsNone(picker.pick(_REQUEST, "eu-west", ""))

    def test_empty_group(self) -> None:
        """
        A picker over no backends picks C{None}.
        """
        picker = _picker([], ["eu-west"])
        self.assertEqual(picker.levels("eu-west", ""), [])
        self.assertIsNone(picker.pick(_REQUEST, "eu-west", ""))

    def test_bad_arguments(self) -> None:
        """
        An overprovisioning factor below 1 or not finite is a
        L{ValueError}; a single string as the priority order is a
        L{TypeError} (it would be read letter by letter).
        """
        for value in (0.5, 0, -1, float("inf"), float("nan")):
            self.assertRaises(
                ValueError, LocalityPicker, [], [], SmoothWeightedRoundRobin, value
            )
        self.assertRaises(
            TypeError, LocalityPicker, [], "eu-west", SmoothWeightedRoundRobin
        )


class LocalityBalancerTests(SynchronousTestCase):
    """
    L{LocalityBalancer} is the L{IBalancer} that locates each request and
    picks with a L{LocalityPicker}.
    """

    def setUp(self) -> None:
        self.backends = _two_regions()
        self.picker = _picker(list(self.backends.values()), ["us-east", "eu-west"])
        self.locator = CIDRLocator(
            [
                (ipaddress.ip_network("10.1.0.0/16"), ("eu-west", "eu-west-1b")),
                (ipaddress.ip_network("10.2.0.0/16"), ("us-east", "")),
            ]
        )

    def test_interface(self) -> None:
        """
        It provides L{IBalancer}.
        """
        self.assertTrue(verifyObject(IBalancer, LocalityBalancer(self.picker)))

    def test_located(self) -> None:
        """
        Each request goes to its client's place: zone, region, or the
        priority order for clients the locator cannot place.
        """
        balancer = LocalityBalancer(self.picker, self.locator)
        for address, zones in [
            ("10.1.0.1", {"eu-west-1b"}),
            ("::ffff:10.1.0.1", {"eu-west-1b"}),
            ("10.2.0.1", {"us-east-1a", "us-east-1b"}),
            ("192.0.2.1", {"us-east-1a", "us-east-1b"}),
        ]:
            request = FakeRequestInfo(client_address=address)
            picked = {balancer.pick(request).zone for _ in range(20)}
            self.assertEqual(picked, zones, address)

    def test_without_locator(self) -> None:
        """
        Without a locator every client is unknown: the first region of the
        priority order serves.
        """
        balancer = LocalityBalancer(self.picker)
        picked = {balancer.pick(_REQUEST).region for _ in range(20)}
        self.assertEqual(picked, {"us-east"})


class DegenerateContractTests(BalancerContractMixin, SynchronousTestCase):
    """
    Over backends without regions, a L{LocalityBalancer} is just its level
    balancer: it fulfils the whole L{IBalancer} contract, weights included.
    """

    def makeBalancer(self, backends: Sequence[IBackend]) -> IBalancer:
        picker = LocalityPicker(backends, ["eu-west"], SmoothWeightedRoundRobin)
        return LocalityBalancer(
            picker,
            CIDRLocator([(ipaddress.ip_network("10.0.0.0/8"), ("eu-west", "z"))]),
        )


class DegenerateSequenceTests(SynchronousTestCase):
    """
    Without regions the picks are exactly those of the level balancer.
    """

    def test_same_sequence(self) -> None:
        """
        The picker gives nginx's smooth round-robin sequence for weights
        5, 1, 1, for any client place.
        """
        backends = [_backend(n, weight=w) for n, w in zip("abc", (5, 1, 1))]
        picker = _picker(backends, ["eu-west"])
        names = "".join(
            picker.pick(_REQUEST, region, "").name
            for region in ("eu-west", "", "x") * 7
        )
        self.assertEqual(names, "aabacaa" * 3)

    def test_no_random_draw(self) -> None:
        """
        With a single level there is nothing to draw: the level's balancer
        is asked directly, and C{random} is never called.
        """

        def random_() -> float:
            raise AssertionError("random drawn for a single level")

        backends = [_backend("a"), _backend("b")]
        picker = LocalityPicker(backends, [], SmoothWeightedRoundRobin, random=random_)
        self.assertEqual(
            [picker.pick(_REQUEST, "eu-west", "").name for _ in range(4)],
            ["a", "b", "a", "b"],
        )

    def test_unavailable_never_picked(self) -> None:
        """
        An unavailable backend is never picked, and with none available the
        picker returns C{None}.
        """
        backends = [_backend(n) for n in "abc"]
        picker = _picker(backends)
        backends[1].available = False
        picks: Optional[set] = {picker.pick(_REQUEST, "", "").name for _ in range(30)}
        self.assertEqual(picks, {"a", "c"})
        for backend in backends:
            backend.available = False
        self.assertIsNone(picker.pick(_REQUEST, "", ""))


class NearestTests(SynchronousTestCase):
    """
    L{LocalityPicker.nearest}: several backends for one answer (DNS).
    """

    def test_nearest_level_then_the_next(self) -> None:
        """
        The client's level comes first; when it has fewer available
        backends than asked for, the next levels fill the answer, and
        unavailable backends are left out.
        """
        backends = _two_regions()
        picker = _picker(list(backends.values()), ["eu-west", "us-east"])
        self.assertEqual(sorted(b.name for b in picker.nearest("eu-west", "eu-west-1a", 2)),
                         ["eu0", "eu1"])
        backends["eu1"].available = False
        for _ in range(10):
            names = [b.name for b in picker.nearest("eu-west", "eu-west-1a", 3)]
            # eu-west-1a has health 0.7: it comes first 70 % of the time.
            self.assertEqual(len(set(names)), 3)
            self.assertNotIn("eu1", names)
            self.assertTrue(all(n.startswith("eu") for n in names), names)
        for backend in backends.values():
            backend.available = False
        self.assertEqual(picker.nearest("eu-west", "", 2), [])

    def test_weighted_order(self) -> None:
        """
        Within a level, a backend comes first in proportion to its weight.
        """
        backends = [_backend("light"), _backend("heavy", weight=4)]
        picker = _picker(backends, seed=3)
        firsts = [picker.nearest("", "", 1)[0].name for _ in range(500)]
        self.assertTrue(0.72 < firsts.count("heavy") / 500 < 0.88, firsts.count("heavy"))
