"""
Tests for L{twistproxy.upstream.balancers}, the built-in balancer dropin and
the balancer helpers of L{twistproxy.testing}.
"""

from __future__ import annotations

import sys
from typing import List, Sequence

from twisted.plugin import IPlugin, getPlugins
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

import twistproxy.plugins
from twistproxy.config import ConfigError
from twistproxy.interfaces import (
    IBackend,
    IBalancer,
    IBalancerFactory,
    IRequestInfo,
)
from twistproxy.plugins import twistproxy_builtins
from twistproxy.testing import BalancerContractMixin, FakeRequestInfo
from twistproxy.upstream import balancers
from twistproxy.upstream.backend import Backend
from twistproxy.upstream.balancers import (
    RoundRobinFactory,
    SmoothWeightedRoundRobin,
    build_balancer,
    find_balancer_factory,
)


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
            balancers,
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
