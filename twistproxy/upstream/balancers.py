# -*- test-case-name: tests.test_balancers -*-
"""
Balancers: how an upstream group chooses the backend for each request.

A balancer (L{IBalancer}) is built once per upstream group by a named
factory (L{IBalancerFactory}) and asked to C{pick} a backend for every
request.  Factories are plugins: the built-in ones are dropins of
L{twistproxy.plugins} exactly like third-party ones, and a configuration file
names one either by its C{name} (C{balancer = "round_robin"}) or by the
dotted path of a factory object (C{balancer = "mypkg.balancers.factory"}).
L{find_balancer_factory} does that lookup and L{build_balancer} also builds
the balancer, so a mistake is reported at start-up with its configuration
path.

The built-in algorithm is nginx's I{smooth weighted round robin}: every
backend has a current weight, initially 0.  On each pick, every available
backend's current weight grows by its configured weight, the backend with the
largest current weight is chosen, and the sum of the available backends'
weights is taken off the chosen one.  Over any run of C{sum(weights)} picks
each backend is chosen C{weight} times, and the picks of a heavy backend are
spread out instead of bunched together: weights 5, 1, 1 give
C{a a b a c a a}, not C{a a a a a b c}.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence

from twisted.plugin import IPlugin, getPlugins
from twisted.python.reflect import InvalidName, fullyQualifiedName, namedAny
from zope.interface import implementer

import twistproxy.plugins
from twistproxy.config import ConfigError
from twistproxy.interfaces import (
    IBackend,
    IBalancer,
    IBalancerFactory,
    IRequestInfo,
)


@implementer(IBalancer)
class SmoothWeightedRoundRobin:
    """
    nginx's smooth weighted round robin over a fixed list of backends.

    Each pick is one pass over the backends with no allocation beyond the
    integers themselves.  A backend that is not available is skipped and its
    current weight left as it was, so that it resumes its share where it
    left off when it comes back.  C{effective_weight} is read on every pick, so a
    changed weight takes effect at once.  Ties go to the backend listed
    first, as in nginx.
    """

    __slots__ = ("_backends", "_current", "_count")

    def __init__(self, backends: Sequence[IBackend]) -> None:
        self._backends: List[IBackend] = list(backends)
        self._current: List[int] = [0] * len(self._backends)
        self._count = len(self._backends)

    def pick(self, request: IRequestInfo) -> Optional[IBackend]:
        backends = self._backends
        current = self._current
        best = -1
        best_weight = 0
        total = 0
        for i in range(self._count):
            backend = backends[i]
            if not backend.available:
                continue
            weight = backend.effective_weight
            total += weight
            value = current[i] + weight
            current[i] = value
            if best < 0 or value > best_weight:
                best = i
                best_weight = value
        if best < 0:
            return None
        current[best] = best_weight - total
        return backends[best]

    def __repr__(self) -> str:
        names = ", ".join(b.name for b in self._backends)
        return f"<SmoothWeightedRoundRobin [{names}]>"


@implementer(IBalancerFactory, IPlugin)
class RoundRobinFactory:
    """
    The factory of L{SmoothWeightedRoundRobin}, the default balancer.

    It takes no options: any key in C{balancer_options} is an error.
    """

    name = "round_robin"
    help = (
        "Smooth weighted round robin (as in nginx): each backend gets its "
        "weight's share of requests, evenly interleaved."
    )

    def fromConfig(
        self,
        backends: Sequence[IBackend],
        options: Mapping[str, Any],
        path: str,
    ) -> IBalancer:
        if options:
            key = sorted(options)[0]
            raise ConfigError(
                f"{path}.{key}",
                f"unknown option {key!r}; the {self.name} balancer takes no "
                f"options",
            )
        return SmoothWeightedRoundRobin(backends)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def _describe(factory: object) -> str:
    """
    Name where a factory object comes from, for error messages.
    """
    return fullyQualifiedName(type(factory))


def _factory_from_dotted_path(name: str, path: str) -> IBalancerFactory:
    """
    Import the object named by the dotted path C{name} and check that it is a
    balancer factory.
    """
    try:
        found = namedAny(name)
    except (InvalidName, AttributeError) as e:
        # InvalidName: no such module; AttributeError: the module has no
        # such attribute.
        raise ConfigError(path, f"cannot find balancer {name!r}: {e}") from e
    except Exception as e:
        # A plugin module that fails to import is a start-up error to report
        # with its configuration path, whatever it raised.
        raise ConfigError(
            path,
            f"importing balancer {name!r} failed: {type(e).__name__}: {e}",
        ) from e
    if IBalancerFactory.providedBy(found):
        return found
    if isinstance(found, type) and IBalancerFactory.implementedBy(found):
        raise ConfigError(
            path,
            f"{name!r} is a class whose instances are balancer factories; "
            f"name an instance of it instead",
        )
    raise ConfigError(
        path,
        f"{name!r} is not a balancer factory (it does not provide "
        f"IBalancerFactory)",
    )


def find_balancer_factory(name: str, path: str) -> IBalancerFactory:
    """
    Find the balancer factory that a configuration file names.

    @param name: The C{name} of a factory exported by a dropin of
        L{twistproxy.plugins} (for example C{'round_robin'}), or, when it
        contains a dot, the dotted path of a factory object (for example
        C{'mypkg.balancers.factory'}).
    @param path: Where C{name} came from in the configuration, for error
        messages; for example C{'upstreams.api.balancer'}.
    @raises ConfigError: when no factory has that name, when several
        plugins claim it, or when a dotted path cannot be imported or does
        not name an L{IBalancerFactory} provider.
    @return: The factory.
    """
    if "." in name:
        return _factory_from_dotted_path(name, path)
    known = set()
    matches = []
    for factory in getPlugins(IBalancerFactory, twistproxy.plugins):
        known.add(factory.name)
        if factory.name == name:
            matches.append(factory)
    if len(matches) == 1:
        return matches[0]
    if matches:
        providers = ", ".join(sorted(_describe(f) for f in matches))
        raise ConfigError(
            path,
            f"balancer {name!r} is ambiguous: several plugins provide it "
            f"({providers}); name one by its dotted path",
        )
    raise ConfigError(
        path,
        f"unknown balancer {name!r}; known: {', '.join(sorted(known))}",
    )


def build_balancer(
    name: str,
    backends: Sequence[IBackend],
    options: Mapping[str, Any],
    path: str,
) -> IBalancer:
    """
    Find a balancer factory by name and build a balancer with it.

    @param name: As for L{find_balancer_factory}.
    @param backends: The upstream group's backends, in configuration order.
    @param options: The group's C{balancer_options}.
    @param path: The configuration path of the upstream group, for example
        C{'upstreams.api'}.  A bad name is reported at
        C{'upstreams.api.balancer'}, a bad option at
        C{'upstreams.api.balancer_options.<key>'}.
    @raises ConfigError: when the factory cannot be found or rejects the
        options.
    @return: A new balancer.
    """
    factory = find_balancer_factory(name, f"{path}.balancer")
    return factory.fromConfig(backends, options, f"{path}.balancer_options")
