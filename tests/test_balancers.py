"""
Tests for L{twistproxy.upstream.balancers}, the built-in balancer dropin and
the balancer helpers of L{twistproxy.testing}.
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from typing import Dict, List, Sequence

from twisted.plugin import IPlugin, getPlugins
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

import twistproxy.plugins
from twistproxy import components
from twistproxy.config import ConfigError
from twistproxy.interfaces import (
    IBackend,
    IBalancer,
    IBalancerFactory,
    IRequestInfo,
    IRetryBalancer,
)
from twistproxy.plugins import twistproxy_builtins
from twistproxy.testing import BalancerContractMixin, FakeRequestInfo
from twistproxy.upstream.backend import Backend
from twistproxy.upstream.balancers import (
    DEFAULT_POINTS_PER_WEIGHT,
    MAX_RING_POINTS,
    ClientIPHashFactory,
    LeastConnections,
    LeastConnectionsFactory,
    Maglev,
    MaglevFactory,
    OnlyBackend,
    PowerOfTwoChoices,
    PowerOfTwoChoicesFactory,
    RandomFactory,
    RingHash,
    RingHashFactory,
    RoundRobinFactory,
    SmoothWeightedRoundRobin,
    WeightedRandom,
    build_balancer,
    find_balancer_factory,
)
from twistproxy.upstream.hashing import DEFAULT_TABLE_SIZE, RequestKey


@implementer(IBalancer)
class _FirstAvailable:
    """
    A balancer for the dotted-path tests: the first available backend.
    """

    def __init__(self, backends: Sequence[IBackend]) -> None:
        self.backends = list(backends)

    def pick(self, request):
        for backend in self.backends:
            if backend.available:
                return backend
        return None


@implementer(IBalancerFactory)
class _FirstAvailableFactory:
    """
    A third-party factory that is not a dropin, found by its dotted path.
    """

    name = "first_available"
    help = "The first available backend."

    def fromConfig(self, backends, options, path):
        return _FirstAvailable(backends)


firstAvailable = _FirstAvailableFactory()
notAFactory = object()


def _backends(*weights: int) -> List[Backend]:
    return [
        Backend(name, "http", "127.0.0.1", 8001 + i, weight)
        for i, (name, weight) in enumerate(zip("abcdefgh", weights))
    ]


def _names(balancer: IBalancer, count: int) -> str:
    request = FakeRequestInfo()
    return "".join(balancer.pick(request).name for _ in range(count))


class SmoothWeightedRoundRobinContractTests(
    BalancerContractMixin, SynchronousTestCase
):
    """
    L{SmoothWeightedRoundRobin} fulfils the L{IBalancer} contract.
    """

    def makeBalancer(self, backends):
        return SmoothWeightedRoundRobin(backends)


class RoundRobinFactoryContractTests(BalancerContractMixin, SynchronousTestCase):
    """
    The balancer that C{build_balancer("round_robin", ...)} builds fulfils
    the L{IBalancer} contract.
    """

    def makeBalancer(self, backends):
        return build_balancer("round_robin", backends, {}, "upstreams.test")


class SmoothWeightedRoundRobinTests(SynchronousTestCase):
    """
    L{SmoothWeightedRoundRobin} picks in nginx's smooth order.
    """

    def test_nginx_sequence(self) -> None:
        """
        Weights 5, 1, 1 give nginx's documented sequence a a b a c a a, and
        then the same sequence again.
        """
        balancer = SmoothWeightedRoundRobin(_backends(5, 1, 1))
        self.assertEqual(_names(balancer, 14), "aabacaa" * 2)

    def test_equal_weights_rotate(self) -> None:
        """
        Backends of equal weight are picked in turn, in configuration order.
        """
        balancer = SmoothWeightedRoundRobin(_backends(1, 1, 1))
        self.assertEqual(_names(balancer, 7), "abcabca")

    def test_exact_share_per_cycle(self) -> None:
        """
        In every run of C{sum(weights)} consecutive picks, each backend is
        picked exactly C{weight} times.
        """
        weights = (4, 3, 2, 1)
        balancer = SmoothWeightedRoundRobin(_backends(*weights))
        for _ in range(5):
            cycle = _names(balancer, sum(weights))
            self.assertEqual(
                [cycle.count(name) for name in "abcd"], list(weights)
            )

    def test_unavailable_skipped_others_keep_ratio(self) -> None:
        """
        While a backend is unavailable the others share the requests by
        their own weights.
        """
        backends = _backends(2, 5, 1)
        backends[1].available = False
        balancer = SmoothWeightedRoundRobin(backends)
        picks = _names(balancer, 30)
        self.assertEqual((picks.count("a"), picks.count("c")), (20, 10))
        self.assertNotIn("b", picks)

    def test_weight_change_takes_effect(self) -> None:
        """
        Weights are read on every pick, so changing a backend's weight
        changes its share from then on.
        """
        backends = _backends(1, 1)
        balancer = SmoothWeightedRoundRobin(backends)
        self.assertEqual(_names(balancer, 4), "abab")
        backends[0].effective_weight = 3
        picks = _names(balancer, 40)
        self.assertEqual((picks.count("a"), picks.count("b")), (30, 10))

    def test_single_backend(self) -> None:
        """
        A group of one backend always gets that backend.
        """
        balancer = SmoothWeightedRoundRobin(_backends(7))
        self.assertEqual(_names(balancer, 5), "aaaaa")

    def _firsts(self, balancer, failing: str, count: int) -> Counter:
        """
        Place C{count} requests, retrying each one whose backend is
        C{failing} with L{pick_other}; count the first backends and the
        retries' backends (as C{'a'} and C{'>b'}).
        """
        request = FakeRequestInfo()
        seen: Counter = Counter()
        for _ in range(count):
            first = balancer.pick(request)
            seen[first.name] += 1
            if first.name == failing:
                seen[">" + balancer.pick_other(request, [first]).name] += 1
        return seen

    def test_retry_takes_no_turn(self) -> None:
        """
        A retry does not take the next backend's turn: with two backends,
        one of which fails every request, new requests still alternate
        between them, so the failing one is tried first by half of them,
        not by nearly all.
        """
        balancer = SmoothWeightedRoundRobin(_backends(1, 1))
        request = FakeRequestInfo()
        firsts = ""
        for _ in range(8):
            first = balancer.pick(request)
            firsts += first.name
            if first.name == "a":
                self.assertEqual(balancer.pick_other(request, [first]).name, "b")
        self.assertEqual(firsts, "abababab")

    def test_failing_backend_keeps_its_share(self) -> None:
        """
        With weights 2, 1, 1 and the first backend failing every request,
        it is still tried first by exactly its weight's share of new
        requests, and its retries are shared by the others by weight (to
        within a few).
        """
        balancer = SmoothWeightedRoundRobin(_backends(2, 1, 1))
        seen = self._firsts(balancer, "a", 400)
        self.assertEqual((seen["a"], seen["b"], seen["c"]), (200, 100, 100))
        self.assertLessEqual(abs(seen[">b"] - 100), 3)
        self.assertEqual(seen[">b"] + seen[">c"], 200)

    def test_retry_skips_tried_and_unavailable(self) -> None:
        """
        A retry is never placed on a tried or unavailable backend, and
        finds none when all available ones were tried.
        """
        backends = _backends(1, 1, 1)
        backends[2].available = False
        balancer = SmoothWeightedRoundRobin(backends)
        request = FakeRequestInfo()
        self.assertEqual(balancer.pick_other(request, [backends[0]]), backends[1])
        self.assertIsNone(balancer.pick_other(request, backends[:2]))


class RoundRobinFactoryTests(SynchronousTestCase):
    """
    L{RoundRobinFactory} is the named plugin for L{SmoothWeightedRoundRobin}.
    """

    def test_interfaces(self) -> None:
        """
        The factory provides L{IBalancerFactory} and L{IPlugin}.
        """
        factory = RoundRobinFactory()
        self.assertTrue(verifyObject(IBalancerFactory, factory))
        self.assertTrue(verifyObject(IPlugin, factory))

    def test_name_and_help(self) -> None:
        """
        The factory is named C{round_robin} and has a one-line help text.
        """
        factory = RoundRobinFactory()
        self.assertEqual(factory.name, "round_robin")
        self.assertTrue(factory.help)
        self.assertNotIn("\n", factory.help)

    def test_from_config(self) -> None:
        """
        C{fromConfig} with no options builds a L{SmoothWeightedRoundRobin}
        over the given backends.
        """
        backends = _backends(1, 1)
        balancer = RoundRobinFactory().fromConfig(backends, {}, "x")
        self.assertIsInstance(balancer, SmoothWeightedRoundRobin)
        self.assertEqual(_names(balancer, 2), "ab")

    def test_options_rejected(self) -> None:
        """
        Any option is a L{ConfigError} whose path names the option.
        """
        error = self.assertRaises(
            ConfigError,
            RoundRobinFactory().fromConfig,
            _backends(1),
            {"zeta": 1, "alpha": 2},
            "upstreams.api.balancer_options",
        )
        self.assertEqual(error.path, "upstreams.api.balancer_options.alpha")
        self.assertIn("unknown option 'alpha'", error.problem)

    def test_dropin_exports_instance(self) -> None:
        """
        The built-in dropin exports a L{RoundRobinFactory} instance, and
        L{getPlugins} finds it in L{twistproxy.plugins}.
        """
        self.assertIsInstance(twistproxy_builtins.roundRobin, RoundRobinFactory)
        found = [
            f
            for f in getPlugins(IBalancerFactory, twistproxy.plugins)
            if f.name == "round_robin"
        ]
        self.assertEqual(len(found), 1)
        self.assertIsInstance(found[0], RoundRobinFactory)


class FindBalancerFactoryTests(SynchronousTestCase):
    """
    L{find_balancer_factory} finds factories by plugin name or dotted path,
    and L{build_balancer} builds balancers with them.
    """

    def test_by_name(self) -> None:
        """
        A built-in factory is found by its name among the plugins.
        """
        factory = find_balancer_factory("round_robin", "upstreams.api.balancer")
        self.assertIsInstance(factory, RoundRobinFactory)
        self.assertTrue(verifyObject(IBalancerFactory, factory))

    def test_unknown_name(self) -> None:
        """
        An unknown name is a L{ConfigError} at the given path that lists the
        known names.
        """
        error = self.assertRaises(
            ConfigError,
            find_balancer_factory,
            "nope",
            "upstreams.api.balancer",
        )
        self.assertEqual(error.path, "upstreams.api.balancer")
        self.assertTrue(
            error.problem.startswith("unknown balancer 'nope'; known: "),
            error.problem,
        )
        self.assertIn("round_robin", error.problem)
        self.assertEqual(
            str(error),
            f"upstreams.api.balancer: {error.problem}",
        )

    def test_ambiguous_name(self) -> None:
        """
        When several plugins claim a name, the lookup fails and names both,
        instead of choosing one by chance.
        """
        self.patch(
            components,
            "getPlugins",
            lambda interface, package: [RoundRobinFactory(), RoundRobinFactory()],
        )
        error = self.assertRaises(
            ConfigError, find_balancer_factory, "round_robin", "p"
        )
        self.assertEqual(error.path, "p")
        self.assertIn("ambiguous", error.problem)
        self.assertIn("RoundRobinFactory", error.problem)

    def test_dotted_path(self) -> None:
        """
        A name with a dot is imported as the dotted path of a factory object.
        """
        self.assertIs(
            find_balancer_factory(
                "twistproxy.plugins.twistproxy_builtins.roundRobin", "p"
            ),
            twistproxy_builtins.roundRobin,
        )
        self.assertIs(
            find_balancer_factory("tests.test_balancers.firstAvailable", "p"),
            firstAvailable,
        )

    def test_dotted_path_missing(self) -> None:
        """
        A dotted path naming a module or an attribute that does not exist is
        a L{ConfigError} at the given path.
        """
        for name in ("no_such_module_x.factory", "tests.test_balancers.nothing"):
            error = self.assertRaises(
                ConfigError, find_balancer_factory, name, "upstreams.a.balancer"
            )
            self.assertEqual(error.path, "upstreams.a.balancer")
            self.assertIn(f"cannot find balancer {name!r}", error.problem)

    def test_dotted_path_import_fails(self) -> None:
        """
        A dotted path to a module that raises when imported is a
        L{ConfigError} that says what was raised.
        """
        directory = FilePath(self.mktemp())
        directory.makedirs()
        directory.child("broken_balancer_xyz.py").setContent(
            b"raise RuntimeError('boom')\n"
        )
        self.patch(sys, "path", [directory.path] + sys.path)
        self.addCleanup(sys.modules.pop, "broken_balancer_xyz", None)
        error = self.assertRaises(
            ConfigError,
            find_balancer_factory,
            "broken_balancer_xyz.factory",
            "p",
        )
        self.assertEqual(error.path, "p")
        self.assertIn("RuntimeError: boom", error.problem)

    def test_dotted_path_not_a_factory(self) -> None:
        """
        A dotted path to an object that does not provide L{IBalancerFactory}
        is a L{ConfigError}.
        """
        error = self.assertRaises(
            ConfigError,
            find_balancer_factory,
            "tests.test_balancers.notAFactory",
            "p",
        )
        self.assertIn("is not a balancer factory", error.problem)

    def test_dotted_path_class(self) -> None:
        """
        A dotted path to a factory I{class} is an error that says to name an
        instance.
        """
        error = self.assertRaises(
            ConfigError,
            find_balancer_factory,
            "twistproxy.upstream.balancers.RoundRobinFactory",
            "p",
        )
        self.assertIn("name an instance", error.problem)

    def test_build_balancer(self) -> None:
        """
        L{build_balancer} finds the factory and builds a balancer over the
        backends, also for a factory named by dotted path.
        """
        backends = _backends(1, 1)
        balancer = build_balancer("round_robin", backends, {}, "upstreams.api")
        self.assertEqual(_names(balancer, 2), "ab")
        balancer = build_balancer(
            "tests.test_balancers.firstAvailable", backends, {}, "upstreams.api"
        )
        self.assertIsInstance(balancer, _FirstAvailable)

    def test_build_balancer_paths(self) -> None:
        """
        L{build_balancer} reports a bad name at C{<group>.balancer} and a bad
        option at C{<group>.balancer_options.<key>}.
        """
        error = self.assertRaises(
            ConfigError, build_balancer, "nope", _backends(1), {}, "upstreams.api"
        )
        self.assertEqual(error.path, "upstreams.api.balancer")
        error = self.assertRaises(
            ConfigError,
            build_balancer,
            "round_robin",
            _backends(1),
            {"sticky": True},
            "upstreams.api",
        )
        self.assertEqual(error.path, "upstreams.api.balancer_options.sticky")


class FakeRequestInfoTests(SynchronousTestCase):
    """
    L{FakeRequestInfo} is an L{IRequestInfo} made of plain values.
    """

    def test_interface(self) -> None:
        """
        L{FakeRequestInfo} provides L{IRequestInfo}, with the documented
        defaults.
        """
        request = FakeRequestInfo()
        self.assertTrue(verifyObject(IRequestInfo, request))
        self.assertEqual(
            (request.method, request.path, request.host, request.client_address),
            ("GET", "/", "example.com", "127.0.0.1"),
        )

    def test_header_mapping(self) -> None:
        """
        Headers given as a mapping are looked up in any case; a missing one
        is C{None}.
        """
        request = FakeRequestInfo(headers={"X-Tenant": "blue"})
        self.assertEqual(request.header("x-tenant"), "blue")
        self.assertEqual(request.header("X-TENANT"), "blue")
        self.assertIsNone(request.header("cookie"))

    def test_header_pairs_first_value(self) -> None:
        """
        Headers given as pairs may repeat a field; C{header} returns the
        first value.
        """
        request = FakeRequestInfo(
            headers=[("Accept", "text/html"), ("accept", "*/*")]
        )
        self.assertEqual(request.header("Accept"), "text/html")


class _ScriptedRandom(random.Random):
    """
    A L{random.Random} whose C{random()} returns the given values in turn,
    to steer a randomised balancer.
    """

    def __init__(self, *values: float) -> None:
        super().__init__(0)
        self._values = list(values)

    def random(self) -> float:
        return self._values.pop(0)


def _clients(count: int) -> List[FakeRequestInfo]:
    """
    C{count} requests from distinct client addresses.
    """
    return [
        FakeRequestInfo(client_address=f"198.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
        for i in range(count)
    ]


def _moved(before: Sequence[str], after: Sequence[str]) -> int:
    """
    How many requests two placements put on different backends (counted
    rather than compared, so that a failure does not diff long lists).
    """
    return sum(1 for b, a in zip(before, after) if b != a)


def _placement(balancer: IBalancer, requests: Sequence[IRequestInfo]) -> List[str]:
    """
    The name of the backend each request goes to.
    """
    placed = []
    for request in requests:
        backend = balancer.pick(request)
        placed.append("-" if backend is None else backend.name)
    return placed


# The contract, for every built-in balancer: once for the class itself
# (seeded where it is random) and once as its factory builds it by name.


class LeastConnectionsContractTests(BalancerContractMixin, SynchronousTestCase):
    """
    L{LeastConnections} fulfils the L{IBalancer} contract.  Under load its
    shares lean slightly to heavier backends (the C{+ 1} of the request
    being placed), within the default tolerance.
    """

    def makeBalancer(self, backends):
        return LeastConnections(backends)


class WeightedRandomContractTests(BalancerContractMixin, SynchronousTestCase):
    """
    L{WeightedRandom} with a seeded source fulfils the L{IBalancer}
    contract.
    """

    weightTolerance = 0.02

    def makeBalancer(self, backends):
        return WeightedRandom(backends, random.Random(2024))


class PowerOfTwoChoicesContractTests(BalancerContractMixin, SynchronousTestCase):
    """
    L{PowerOfTwoChoices} with a seeded source fulfils the L{IBalancer}
    contract; like least connections it leans a little to heavier backends.
    """

    weightTolerance = 0.025

    def makeBalancer(self, backends):
        return PowerOfTwoChoices(backends, random.Random(2024))


class RingHashContractTests(BalancerContractMixin, SynchronousTestCase):
    """
    L{RingHash} with its default 160 points a weight fulfils the
    L{IBalancer} contract; the shares of many client addresses are only as
    even as that many random points make them.
    """

    weightTolerance = 0.07

    def makeBalancer(self, backends):
        return RingHash(backends)


class DenseRingHashContractTests(BalancerContractMixin, SynchronousTestCase):
    """
    With 2000 points a weight, L{RingHash} follows weights closely.
    """

    weightTolerance = 0.025

    def makeBalancer(self, backends):
        return RingHash(backends, points_per_weight=2000)


class HeaderRingHashContractTests(BalancerContractMixin, SynchronousTestCase):
    """
    L{RingHash} keyed on a header fulfils the L{IBalancer} contract when
    all requests come from one client address and differ in the header.
    """

    weightTolerance = 0.07

    def makeBalancer(self, backends):
        return RingHash(backends, RequestKey("header", "X-User"))

    def makeRequest(self, index):
        return FakeRequestInfo(
            client_address="192.0.2.1", headers={"X-User": f"user{index}"}
        )


class MaglevContractTests(BalancerContractMixin, SynchronousTestCase):
    """
    L{Maglev} fulfils the L{IBalancer} contract, with shares close to the
    weights even in a small table.
    """

    weightTolerance = 0.015

    def makeBalancer(self, backends):
        return Maglev(backends, table_size=4099)


class CookieMaglevContractTests(BalancerContractMixin, SynchronousTestCase):
    """
    L{Maglev} keyed on a cookie fulfils the L{IBalancer} contract when
    requests differ only in the cookie.
    """

    weightTolerance = 0.015

    def makeBalancer(self, backends):
        return Maglev(backends, RequestKey("cookie", "sid"), table_size=4099)

    def makeRequest(self, index):
        return FakeRequestInfo(headers={"Cookie": f"theme=dark; sid=s{index}"})


class _FactoryContract(BalancerContractMixin):
    """
    The contract for the balancer that C{build_balancer(balancerName, ...)}
    builds with no options.
    """

    balancerName = ""

    def makeBalancer(self, backends):
        return build_balancer(self.balancerName, backends, {}, "upstreams.test")


class LeastConnectionsFactoryContractTests(_FactoryContract, SynchronousTestCase):
    """
    The C{least_connections} balancer fulfils the L{IBalancer} contract.
    """

    balancerName = "least_connections"


class PowerOfTwoChoicesFactoryContractTests(_FactoryContract, SynchronousTestCase):
    """
    The C{p2c} balancer fulfils the L{IBalancer} contract.  It draws from an
    unseeded source, so the tolerance allows for chance: about five
    standard deviations of 6000 draws on top of its lean.
    """

    balancerName = "p2c"
    weightTolerance = 0.045


class RandomFactoryContractTests(_FactoryContract, SynchronousTestCase):
    """
    The C{random} balancer fulfils the L{IBalancer} contract.  It draws from
    an unseeded source, so the tolerance is about five standard deviations
    of 6000 draws.
    """

    balancerName = "random"
    weightTolerance = 0.035


class RingHashFactoryContractTests(_FactoryContract, SynchronousTestCase):
    """
    The C{ring_hash} balancer fulfils the L{IBalancer} contract.
    """

    balancerName = "ring_hash"
    weightTolerance = 0.07


class ClientIPHashFactoryContractTests(_FactoryContract, SynchronousTestCase):
    """
    The C{client_ip_hash} balancer fulfils the L{IBalancer} contract.
    """

    balancerName = "client_ip_hash"
    weightTolerance = 0.07


class MaglevFactoryContractTests(_FactoryContract, SynchronousTestCase):
    """
    The C{maglev} balancer, with its default table of 65537 slots, fulfils
    the L{IBalancer} contract.
    """

    balancerName = "maglev"
    weightTolerance = 0.01


class BalancerContractMixinTests(SynchronousTestCase):
    """
    L{BalancerContractMixin} places requests the way the proxy does.
    """

    def test_in_flight_raised_then_lowered(self) -> None:
        """
        While the mixin places a batch of requests, each backend's
        C{in_flight} counts the last C{concurrency} requests sent to it, and
        all are back to 0 afterwards.
        """
        seen: List[int] = []

        @implementer(IBalancer)
        class Recorder:
            def __init__(self, backends):
                self.backends = backends

            def pick(self, request):
                seen.append(sum(b.in_flight for b in self.backends))
                return self.backends[0]

        class Contract(BalancerContractMixin):
            concurrency = 3

        backends = _backends(1, 1)
        Contract()._pickMany(Recorder(backends), 6)
        self.assertEqual(seen, [0, 1, 2, 3, 3, 3])
        self.assertEqual([b.in_flight for b in backends], [0, 0])


# What each algorithm does beyond the contract.


class LeastConnectionsTests(SynchronousTestCase):
    """
    L{LeastConnections} picks the backend with the fewest requests in flight
    for its weight.
    """

    def test_prefers_least_loaded(self) -> None:
        """
        Of backends of equal weight, the one with the fewest requests in
        flight is picked.
        """
        backends = _backends(1, 1, 1)
        for backend, load in zip(backends, (5, 0, 3)):
            backend.in_flight = load
        balancer = LeastConnections(backends)
        self.assertEqual(_names(balancer, 3), "bbb")
        backends[1].in_flight = 4
        self.assertEqual(_names(balancer, 1), "c")

    def test_respects_weights(self) -> None:
        """
        Load is measured as C{(in_flight + 1) / effective_weight}: a backend
        of weight 3 with 4 requests (5/3) beats one of weight 1 with 2
        (3/1), and loses to it once it has 9 (10/3).
        """
        backends = _backends(1, 3)
        backends[0].in_flight = 2
        backends[1].in_flight = 4
        balancer = LeastConnections(backends)
        self.assertEqual(_names(balancer, 1), "b")
        backends[1].in_flight = 9
        self.assertEqual(_names(balancer, 1), "a")

    def test_idle_prefers_heavier(self) -> None:
        """
        Of idle backends the heavier one is picked: the request being placed
        counts.
        """
        balancer = LeastConnections(_backends(1, 2))
        self.assertEqual(_names(balancer, 3), "bbb")

    def test_effective_weight(self) -> None:
        """
        Load is relative to C{effective_weight}: of two backends of weight
        2 with the same load, the one ramping up (effective weight 0.5) is
        not picked.
        """
        backends = _backends(2, 2)
        backends[0].effective_weight = 0.5
        self.assertEqual(_names(LeastConnections(backends), 3), "bbb")

    def test_ties_rotate(self) -> None:
        """
        Equally loaded backends take turns, skipping unavailable ones, rather
        than the first one getting every request.
        """
        backends = _backends(1, 1, 1, 1)
        balancer = LeastConnections(backends)
        self.assertEqual(_names(balancer, 6), "abcdab")
        backends[2].available = False
        self.assertEqual(_names(balancer, 6), "dabdab")

    def test_shares_load_under_concurrency(self) -> None:
        """
        With requests completing in the order they were sent, a backend
        that is slower (its requests stay in flight three times as long)
        gets fewer requests.
        """
        backends = _backends(1, 1)
        balancer = LeastConnections(backends)
        pending: List[List[Backend]] = []
        counts: Counter = Counter()
        for tick in range(3000):
            backend = balancer.pick(FakeRequestInfo())
            counts[backend.name] += 1
            backend.in_flight += 1
            pending.append([backend, 30 if backend.name == "a" else 10])
            for entry in pending:
                entry[1] -= 1
                if not entry[1]:
                    entry[0].in_flight -= 1
            pending = [entry for entry in pending if entry[1]]
        self.assertTrue(
            counts["a"] * 2 < counts["b"], f"slow a got {counts['a']}, b {counts['b']}"
        )

    def test_zero_weight_last_resort(self) -> None:
        """
        A backend whose effective weight is 0 is picked only when no other
        is available.
        """
        backends = _backends(1, 1)
        backends[0].effective_weight = 0
        balancer = LeastConnections(backends)
        self.assertEqual(_names(balancer, 3), "bbb")
        backends[1].available = False
        self.assertEqual(_names(balancer, 2), "aa")


class WeightedRandomTests(SynchronousTestCase):
    """
    L{WeightedRandom} maps a uniform draw onto the backends' weights.
    """

    def test_draw_maps_to_weight_intervals(self) -> None:
        """
        A draw falls into the backends' weights laid end to end, skipping
        unavailable backends: with weights 1, 2 (down) and 3, draws below
        1/4 pick the first and the rest the third.
        """
        backends = _backends(1, 2, 3)
        backends[1].available = False
        balancer = WeightedRandom(backends, _ScriptedRandom(0.0, 0.24, 0.26, 0.999))
        self.assertEqual(_names(balancer, 4), "aacc")

    def test_effective_weight(self) -> None:
        """
        The draw is over effective weights.
        """
        backends = _backends(1, 1)
        backends[0].effective_weight = 0.25
        balancer = WeightedRandom(backends, _ScriptedRandom(0.1, 0.3))
        self.assertEqual(_names(balancer, 2), "ab")

    def test_seeded_reproducible(self) -> None:
        """
        Two balancers with equally seeded sources make the same picks.
        """
        one = WeightedRandom(_backends(1, 2, 3), random.Random(5))
        two = WeightedRandom(_backends(1, 2, 3), random.Random(5))
        self.assertEqual(_names(one, 50), _names(two, 50))
        self.assertEqual(len(set(_names(one, 50))), 3)


class PowerOfTwoChoicesTests(SynchronousTestCase):
    """
    L{PowerOfTwoChoices} draws two distinct backends by weight and picks
    the less loaded.
    """

    def test_less_loaded_of_two(self) -> None:
        """
        Of the two backends drawn, the one with fewer requests in flight is
        picked, whichever was drawn first.
        """
        backends = _backends(1, 1, 1)
        backends[0].in_flight = 4
        # 0.0 draws a; then 0.99 of the remaining weight draws c.
        balancer = PowerOfTwoChoices(backends, _ScriptedRandom(0.0, 0.99, 0.99, 0.0))
        self.assertEqual(_names(balancer, 1), "c")
        # 0.99 draws c; then 0.0 of the remaining draws a: c again.
        self.assertEqual(_names(balancer, 1), "c")

    def test_distinct(self) -> None:
        """
        The second backend is drawn among the others: the same draw twice
        gives two different backends.
        """
        backends = _backends(1, 1)
        backends[0].in_flight = 1
        balancer = PowerOfTwoChoices(backends, _ScriptedRandom(0.0, 0.0))
        self.assertEqual(_names(balancer, 1), "b")

    def test_tie_goes_to_first_drawn(self) -> None:
        """
        When both are equally loaded for their weight, the first drawn is
        picked: C{(2 + 1) / 3} equals C{(0 + 1) / 1}.
        """
        backends = _backends(3, 1)
        backends[0].in_flight = 2
        balancer = PowerOfTwoChoices(backends, _ScriptedRandom(0.9, 0.5, 0.0, 0.5))
        self.assertEqual(_names(balancer, 2), "ba")

    def test_weights_in_comparison(self) -> None:
        """
        Load is compared relative to effective weight: 4 requests on a
        backend of effective weight 10 is less than 1 on one of 1.
        """
        backends = _backends(1, 1)
        backends[0].effective_weight = 10
        backends[0].in_flight = 4
        backends[1].in_flight = 1
        balancer = PowerOfTwoChoices(backends, _ScriptedRandom(0.99, 0.0))
        self.assertEqual(_names(balancer, 1), "a")

    def test_most_loaded_never_picked(self) -> None:
        """
        With three distinctly loaded backends, the most loaded never wins a
        comparison, and the least loaded wins every one it is in (2/3 of
        them).
        """
        backends = _backends(1, 1, 1)
        for backend, load in zip(backends, (0, 5, 10)):
            backend.in_flight = load
        balancer = PowerOfTwoChoices(backends, random.Random(7))
        picks = _names(balancer, 3000)
        self.assertNotIn("c", picks)
        self.assertTrue(0.62 < picks.count("a") / 3000 < 0.72, picks.count("a"))

    def test_one_available(self) -> None:
        """
        With a single available backend there is nothing to draw: it is
        picked without consulting the source.
        """
        backends = _backends(1, 1)
        backends[0].available = False
        balancer = PowerOfTwoChoices(backends, _ScriptedRandom())
        self.assertEqual(_names(balancer, 2), "bb")

    def test_seeded_reproducible(self) -> None:
        """
        Two balancers with equally seeded sources make the same picks.
        """
        one = PowerOfTwoChoices(_backends(1, 2, 3), random.Random(5))
        two = PowerOfTwoChoices(_backends(1, 2, 3), random.Random(5))
        self.assertEqual(_names(one, 50), _names(two, 50))


def _named_backends(count: int, weight: int = 1) -> List[Backend]:
    """
    Backends named like real ones, C{10.0.0.1:80} and so on.
    """
    return [
        Backend(f"10.0.0.{i + 1}:80", "http", f"10.0.0.{i + 1}", 80, weight)
        for i in range(count)
    ]


class _ConsistentHashingTests:
    """
    What every consistent-hashing balancer does, for L{RingHash} and
    L{Maglev}.

    @cvar extraMoves: The largest fraction of keys that may move between
        backends that stayed, when one backend goes or comes.
    """

    extraMoves = 0.0

    def makeHashBalancer(
        self,
        backends: Sequence[IBackend],
        key: RequestKey = RequestKey("client_address"),
    ) -> IBalancer:
        raise NotImplementedError()

    def test_sticky(self) -> None:
        """
        Requests with the same key go to the same backend, whatever else
        they carry.
        """
        balancer = self.makeHashBalancer(_named_backends(5))
        first = balancer.pick(FakeRequestInfo(client_address="203.0.113.9"))
        for i in range(50):
            request = FakeRequestInfo(
                client_address="203.0.113.9", path=f"/{i}", headers={"X-User": str(i)}
            )
            self.assertIs(balancer.pick(request), first)

    def test_same_placement_in_new_balancer(self) -> None:
        """
        Placement depends on backend names, not on the balancer instance or
        the configuration order: another balancer over the same backends,
        listed in another order, places every key the same way.
        """
        requests = _clients(2000)
        backends = _named_backends(5)
        one = _placement(self.makeHashBalancer(backends), requests)
        two = _placement(self.makeHashBalancer(backends[::-1]), requests)
        self.assertEqual(_moved(one, two), 0)

    def test_spread(self) -> None:
        """
        Distinct keys spread over all backends, roughly evenly.
        """
        balancer = self.makeHashBalancer(_named_backends(4))
        counts = Counter(_placement(balancer, _clients(4000)))
        self.assertEqual(len(counts), 4)
        for count in counts.values():
            self.assertTrue(700 < count < 1300, counts)

    def test_down_moves_only_its_keys(self) -> None:
        """
        When one of five backends goes down, only its keys (about 1/5 of
        10,000) move, spread over the others; the rest stay, but for
        C{extraMoves}.  When it comes back its keys return.
        """
        backends = _named_backends(5)
        balancer = self.makeHashBalancer(backends)
        requests = _clients(10000)
        before = _placement(balancer, requests)
        down = backends[2]
        down.available = False
        during = _placement(balancer, requests)
        mine = [i for i, name in enumerate(before) if name == down.name]
        self.assertTrue(0.14 < len(mine) / 10000 < 0.26, len(mine))
        self.assertNotIn(down.name, during)
        self.assertEqual(len({during[i] for i in mine}), 4)
        others_moved = sum(
            1 for b, d in zip(before, during) if b != down.name and b != d
        )
        self.assertLessEqual(others_moved / 10000, self.extraMoves)
        down.available = True
        after = _placement(balancer, requests)
        self.assertEqual(_moved(before, after), 0)

    def test_added_backend_takes_only(self) -> None:
        """
        A sixth backend added to the group (a new balancer, as a
        configuration reload makes) takes about 1/6 of the keys, and hardly
        any other key moves.
        """
        backends = _named_backends(6)
        requests = _clients(10000)
        before = _placement(self.makeHashBalancer(backends[:5]), requests)
        after = _placement(self.makeHashBalancer(backends), requests)
        new = backends[5].name
        taken = sum(1 for a in after if a == new)
        self.assertTrue(0.11 < taken / 10000 < 0.23, taken)
        others_moved = sum(1 for b, a in zip(before, after) if a != new and b != a)
        self.assertLessEqual(others_moved / 10000, self.extraMoves)

    def test_keys(self) -> None:
        """
        The key may be the path, a header or a cookie: requests that agree
        on it go to the same backend, whichever client sends them, and
        different values spread.
        """
        backends = _named_backends(5)
        for key, make in [
            (
                RequestKey("path"),
                lambda v, c: FakeRequestInfo(path=v, client_address=c),
            ),
            (
                RequestKey("header", "X-User"),
                lambda v, c: FakeRequestInfo(client_address=c, headers={"x-user": v}),
            ),
            (
                RequestKey("cookie", "sid"),
                lambda v, c: FakeRequestInfo(
                    client_address=c, headers={"Cookie": f"sid={v}"}
                ),
            ),
        ]:
            balancer = self.makeHashBalancer(backends, key)
            for value in ("/a", "/b", "alice"):
                picked = {balancer.pick(make(value, f"192.0.2.{i}")) for i in range(30)}
                self.assertEqual(len(picked), 1, (key, value))
            spread = {balancer.pick(make(f"v{i}", "192.0.2.1")) for i in range(200)}
            self.assertEqual(len(spread), 5, key)

    def test_missing_key_falls_back_to_client_address(self) -> None:
        """
        A request without the header or cookie is placed by its client's
        address, as if the key were C{client_address}.
        """
        backends = _named_backends(5)
        by_address = self.makeHashBalancer(backends)
        for key in (RequestKey("header", "X-User"), RequestKey("cookie", "sid")):
            balancer = self.makeHashBalancer(backends, key)
            for request in _clients(300):
                self.assertIs(balancer.pick(request), by_address.pick(request))

    def test_ramping_weight_moves_keys_to_it_only(self) -> None:
        """
        As a backend's effective weight grows (slow start), keys move to it
        and not between the others, and its share grows with its weight.
        """
        backends = _named_backends(4)
        balancer = self.makeHashBalancer(backends)
        requests = _clients(8000)
        ramping = backends[0]
        ramping.effective_weight = 0.25
        before = _placement(balancer, requests)
        ramping.effective_weight = 1
        after = _placement(balancer, requests)
        moved = [(b, a) for b, a in zip(before, after) if b != a]
        stray = [m for m in moved if m[1] != ramping.name]
        self.assertLessEqual(len(stray) / 8000, self.extraMoves)
        self.assertGreater(
            after.count(ramping.name), 2 * before.count(ramping.name)
        )


class RingHashTests(_ConsistentHashingTests, SynchronousTestCase):
    """
    L{RingHash} is a consistent-hashing balancer; on a ring no key moves
    between backends that stay.
    """

    extraMoves = 0.0

    def makeHashBalancer(self, backends, key=RequestKey("client_address")):
        return RingHash(backends, key)

    def test_defaults(self) -> None:
        """
        By default the key is the client's address, with 160 points a unit
        of weight.
        """
        balancer = RingHash(_backends(1))
        self.assertEqual(balancer.key, RequestKey("client_address"))
        self.assertEqual(DEFAULT_POINTS_PER_WEIGHT, 160)
        # The default is what the ring is built with: the same placement
        # as 160 points given explicitly, and not that of 159.
        backends = _named_backends(4)
        requests = _clients(2000)
        default = _placement(RingHash(backends), requests)
        self.assertEqual(
            _moved(default, _placement(RingHash(backends, points_per_weight=160), requests)),
            0,
        )
        self.assertGreater(
            _moved(default, _placement(RingHash(backends, points_per_weight=159), requests)),
            0,
        )

    def test_invalid_points(self) -> None:
        """
        Fewer than one point a weight is a L{ValueError}.
        """
        self.assertRaises(ValueError, RingHash, _backends(1), points_per_weight=0)


class MaglevTests(_ConsistentHashingTests, SynchronousTestCase):
    """
    L{Maglev} is a consistent-hashing balancer; a change moves a few other
    keys too.
    """

    extraMoves = 0.02

    def makeHashBalancer(self, backends, key=RequestKey("client_address")):
        return Maglev(backends, key, table_size=16381)

    def test_defaults(self) -> None:
        """
        By default the key is the client's address and the table has 65537
        slots.
        """
        balancer = Maglev(_backends(1, 1))
        self.assertEqual(balancer.key, RequestKey("client_address"))
        self.assertEqual(len(balancer.table), DEFAULT_TABLE_SIZE)

    def test_table_shares(self) -> None:
        """
        Each available backend has its effective weight's share of the
        table's slots, within a few slots; an unavailable one has none.
        """
        backends = _backends(1, 2, 3, 4)
        backends[3].available = False
        backends[2].effective_weight = 1.5
        balancer = Maglev(backends, table_size=10007)
        counts = Counter(b.name for b in balancer.table)
        self.assertEqual(sorted(counts), ["a", "b", "c"])
        for name, weight in zip("abc", (1, 2, 1.5)):
            self.assertTrue(
                abs(counts[name] - 10007 * weight / 4.5) < 10, (name, counts)
            )

    def test_rebuilt_lazily(self) -> None:
        """
        The table is built once and kept while nothing changes, and rebuilt
        on the first pick after availability changed.
        """
        backends = _backends(1, 1, 1)
        balancer = Maglev(backends, table_size=1009)
        table = balancer.table
        _names(balancer, 5)
        self.assertIs(balancer.table, table)
        backends[1].available = False
        self.assertIsNot(balancer.table, table)
        self.assertNotIn(backends[1], balancer.table)

    def test_weight_steps(self) -> None:
        """
        An effective weight is followed in steps of 1/16 of the configured
        weight, so a slow start does not rebuild the table on every small
        change: a change of less than half a step keeps the table.
        """
        backends = _backends(16, 16)
        balancer = Maglev(backends, table_size=1009)
        backends[0].effective_weight = 8.0
        table = balancer.table
        backends[0].effective_weight = 8.4
        self.assertIs(balancer.table, table)
        backends[0].effective_weight = 9.0
        self.assertIsNot(balancer.table, table)

    def test_invalid_table_size(self) -> None:
        """
        A table size that is not a prime, or is smaller than the number of
        backends, is a L{ValueError}.
        """
        self.assertRaises(ValueError, Maglev, _backends(1), table_size=1000)
        self.assertRaises(ValueError, Maglev, _backends(1, 1, 1), table_size=2)


class ClientIPHashTests(SynchronousTestCase):
    """
    The C{client_ip_hash} balancer sticks each client address to a backend.
    """

    def test_whole_address(self) -> None:
        """
        Each client address, IPv4 or IPv6, always goes to the same backend,
        whatever its path or headers; the whole address counts, not only
        its first three bytes as in nginx's C{ip_hash}.
        """
        balancer = ClientIPHashFactory().fromConfig(_named_backends(4), {}, "p")
        for address in ("192.0.2.1", "2001:db8::5"):
            picked = {
                balancer.pick(
                    FakeRequestInfo(
                        client_address=address, path=f"/{i}", headers={"X": str(i)}
                    )
                )
                for i in range(20)
            }
            self.assertEqual(len(picked), 1)
        same_24 = {
            balancer.pick(FakeRequestInfo(client_address=f"192.0.2.{i}"))
            for i in range(100)
        }
        self.assertEqual(len(same_24), 4)

    def test_same_as_ring_hash_by_address(self) -> None:
        """
        It places clients exactly as C{ring_hash} with its default key.
        """
        backends = _named_backends(3)
        requests = _clients(500)
        by_ip = ClientIPHashFactory().fromConfig(backends, {}, "p")
        by_ring = RingHashFactory().fromConfig(backends, {}, "p")
        self.assertEqual(
            _moved(_placement(by_ip, requests), _placement(by_ring, requests)), 0
        )


# The factories.

FACTORIES: Dict[str, type] = {
    "round_robin": RoundRobinFactory,
    "least_connections": LeastConnectionsFactory,
    "p2c": PowerOfTwoChoicesFactory,
    "random": RandomFactory,
    "ring_hash": RingHashFactory,
    "client_ip_hash": ClientIPHashFactory,
    "maglev": MaglevFactory,
}

BALANCER_TYPES: Dict[str, type] = {
    "round_robin": SmoothWeightedRoundRobin,
    "least_connections": LeastConnections,
    "p2c": PowerOfTwoChoices,
    "random": WeightedRandom,
    "ring_hash": RingHash,
    "client_ip_hash": RingHash,
    "maglev": Maglev,
}

OPTIONS: Dict[str, Sequence[str]] = {
    "round_robin": (),
    "least_connections": (),
    "p2c": (),
    "random": (),
    "ring_hash": ("key", "points_per_weight"),
    "client_ip_hash": ("points_per_weight",),
    "maglev": ("key", "table_size"),
}


class BuiltinFactoriesTests(SynchronousTestCase):
    """
    Every built-in balancer is a named plugin, exported by the dropin and
    found by name like C{round_robin}.
    """

    def test_interfaces(self) -> None:
        """
        Every factory provides L{IBalancerFactory} and L{IPlugin}, and has
        its name and a one-line help text.
        """
        for name, cls in FACTORIES.items():
            factory = cls()
            self.assertTrue(verifyObject(IBalancerFactory, factory))
            self.assertTrue(verifyObject(IPlugin, factory))
            self.assertEqual(factory.name, name)
            self.assertTrue(factory.help)
            self.assertNotIn("\n", factory.help)
            self.assertEqual(repr(factory), f"<{cls.__name__} {name!r}>")

    def test_found_by_name(self) -> None:
        """
        L{find_balancer_factory} finds each of them among the plugins, as
        the instance the dropin exports, exactly once.
        """
        exported = {
            f.name: f
            for f in vars(twistproxy_builtins).values()
            if IBalancerFactory.providedBy(f)
        }
        self.assertEqual(sorted(exported), sorted(FACTORIES))
        plugins = Counter(
            f.name for f in getPlugins(IBalancerFactory, twistproxy.plugins)
        )
        for name, cls in FACTORIES.items():
            self.assertEqual(plugins[name], 1)
            factory = find_balancer_factory(name, "upstreams.api.balancer")
            self.assertIsInstance(factory, cls)
            self.assertIs(factory, exported[name])

    def test_builds(self) -> None:
        """
        With no options each factory builds its balancer over the backends.
        """
        backends = _backends(1, 1)
        for name, cls in BALANCER_TYPES.items():
            balancer = build_balancer(name, backends, {}, "upstreams.api")
            self.assertIsInstance(balancer, cls)
            self.assertIn(balancer.pick(FakeRequestInfo()), backends)

    def test_one_backend(self) -> None:
        """
        Over a single backend, C{round_robin} and C{least_connections}
        build an L{OnlyBackend}, which picks it while it is available and
        not tried, and provides L{IRetryBalancer}.
        """
        request = FakeRequestInfo()
        for name in ("round_robin", "least_connections"):
            [backend] = _backends(2)
            balancer = build_balancer(name, [backend], {}, "upstreams.api")
            self.assertIsInstance(balancer, OnlyBackend)
            self.assertTrue(verifyObject(IRetryBalancer, balancer))
            self.assertEqual(repr(balancer), "<OnlyBackend a>")
            self.assertIs(balancer.pick(request), backend)
            self.assertIs(balancer.pick_other(request, []), backend)
            self.assertIsNone(balancer.pick_other(request, [backend]))
            backend.available = False
            self.assertIsNone(balancer.pick(request))

    def test_unknown_options(self) -> None:
        """
        An unknown option is a L{ConfigError} at its path (quoted as TOML
        would when it is not a bare key) that names the options the
        balancer takes, and suggests a near miss.
        """
        for name, allowed in OPTIONS.items():
            error = self.assertRaises(
                ConfigError,
                build_balancer,
                name,
                _backends(1),
                {"zeta": 1, "colour": 2},
                "upstreams.api",
            )
            self.assertEqual(error.path, "upstreams.api.balancer_options.colour")
            self.assertIn("unknown option 'colour'", error.problem)
            if allowed:
                self.assertIn(
                    f"the {name} balancer takes " + ", ".join(allowed),
                    error.problem,
                )
            else:
                self.assertIn(f"the {name} balancer takes no options", error.problem)
        error = self.assertRaises(
            ConfigError, build_balancer, "maglev", _backends(1), {"tablesize": 7}, "g"
        )
        self.assertIn("(did you mean 'table_size'?)", error.problem)
        error = self.assertRaises(
            ConfigError, build_balancer, "maglev", _backends(1), {"table.size": 7}, "g"
        )
        self.assertEqual(error.path, 'g.balancer_options."table.size"')

    def _error(
        self, name: str, options: Dict[str, object], backends=None
    ) -> ConfigError:
        """
        The L{ConfigError} of building balancer C{name} with C{options} in
        group C{upstreams.api}.
        """
        return self.assertRaises(
            ConfigError,
            build_balancer,
            name,
            _backends(1, 1) if backends is None else backends,
            options,
            "upstreams.api",
        )

    def test_key(self) -> None:
        """
        C{ring_hash} and C{maglev} take a C{key}, C{client_address} by
        default.
        """
        for name in ("ring_hash", "maglev"):
            backends = _backends(1)
            self.assertEqual(
                build_balancer(name, backends, {}, "g").key,
                RequestKey("client_address"),
            )
            for spec in ("client_address", "path", "header:X-User", "cookie:sid"):
                balancer = build_balancer(name, backends, {"key": spec}, "g")
                self.assertEqual(balancer.key, RequestKey.parse(spec))

    def test_bad_key(self) -> None:
        """
        A C{key} that is not a string or not one of the forms is a
        L{ConfigError} at C{.key} that says what is wrong.
        """
        for name in ("ring_hash", "maglev"):
            for value, message in [
                (42, "must be a string (client_address, path, header:NAME, "
                     "cookie:NAME), not an integer"),
                ("query", "unknown key 'query'"),
                ("header", "header needs a name"),
                ("header:", "'' is not a valid header name"),
                ("cookie:a b", "'a b' is not a valid cookie name"),
            ]:
                error = self._error(name, {"key": value})
                self.assertEqual(error.path, "upstreams.api.balancer_options.key")
                self.assertIn(message, error.problem)

    def test_client_ip_hash_takes_no_key(self) -> None:
        """
        C{client_ip_hash} rejects a C{key}, pointing to C{ring_hash}.
        """
        error = self._error("client_ip_hash", {"key": "path"})
        self.assertEqual(error.path, "upstreams.api.balancer_options.key")
        self.assertIn('use balancer = "ring_hash"', error.problem)

    def test_points_per_weight(self) -> None:
        """
        C{points_per_weight} is a positive integer, and the ring it makes
        may not exceed L{MAX_RING_POINTS} points.
        """
        for name in ("ring_hash", "client_ip_hash"):
            build_balancer(name, _backends(1), {"points_per_weight": 1}, "g")
            for value, message in [
                (True, "must be an integer, not a boolean"),
                (1.5, "must be an integer, not a float"),
                ("100", "must be an integer, not a string"),
                (0, f"must be between 1 and {MAX_RING_POINTS} (got 0)"),
            ]:
                error = self._error(name, {"points_per_weight": value})
                self.assertEqual(
                    error.path, "upstreams.api.balancer_options.points_per_weight"
                )
                self.assertIn(message, error.problem)
            error = self._error(
                name, {"points_per_weight": 1000}, _backends(600, 600)
            )
            self.assertIn("the ring would have 1200000 points", error.problem)

    def test_table_size(self) -> None:
        """
        C{table_size} is a prime, at least the number of backends and at
        most L{MAX_TABLE_SIZE}.
        """
        balancer = build_balancer("maglev", _backends(1, 1), {"table_size": 7}, "g")
        self.assertEqual(len(balancer.table), 7)
        for value, message in [
            (65536, "must be a prime number (got 65536)"),
            (False, "must be an integer, not a boolean"),
            (1, "must be between 2 and 1048576 (got 1)"),
            (1048583, "must be between 2 and 1048576"),
            (3, "must be between 5 and 1048576 (got 3)"),
        ]:
            backends = _backends(1, 1, 1, 1, 1) if value == 3 else None
            error = self._error("maglev", {"table_size": value}, backends)
            self.assertEqual(error.path, "upstreams.api.balancer_options.table_size")
            self.assertIn(message, error.problem)
