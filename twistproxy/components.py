# -*- test-case-name: tests.test_balancers -*-
"""
Finding pluggable components by the name a configuration file gives.

Every pluggable role (balancers, health checks, locators) has a factory
interface in L{twistproxy.interfaces}.  A configuration names a factory
either by its C{name} (C{balancer = "round_robin"}), looked up among the
Twisted plugin dropins of L{twistproxy.plugins} (built-in and third-party
alike, as C{twisted.cred.strcred} finds checkers), or by a dotted Python path
(C{balancer = "mypkg.balancers.factory"}).  Whatever goes wrong is a
L{ConfigError} with the configuration path, at start-up.
"""

from __future__ import annotations

from typing import Any

from twisted.plugin import getPlugins
from twisted.python.reflect import InvalidName, fullyQualifiedName, namedAny
from zope.interface.interface import InterfaceClass

import twistproxy.plugins
from twistproxy.config import ConfigError


def _describe(factory: object) -> str:
    return fullyQualifiedName(type(factory))


def factory_repr(factory: object) -> str:
    """
    The C{repr} of a named factory: C{<RoundRobinFactory 'round_robin'>}.
    Factories assign it as their C{__repr__}.
    """
    return f"<{type(factory).__name__} {getattr(factory, 'name', '?')!r}>"


def _from_dotted_path(interface: InterfaceClass, name: str, path: str, what: str) -> Any:
    try:
        found = namedAny(name)
    except (InvalidName, AttributeError) as e:
        # InvalidName: no such module; AttributeError: the module has no
        # such attribute.
        raise ConfigError(path, f"cannot find {what} {name!r}: {e}") from e
    except Exception as e:
        # A plugin module that fails to import is a start-up error to report
        # with its configuration path, whatever it raised.
        raise ConfigError(
            path, f"importing {what} {name!r} failed: {type(e).__name__}: {e}",
        ) from e
    if interface.providedBy(found):
        return found
    if isinstance(found, type) and interface.implementedBy(found):
        raise ConfigError(
            path,
            f"{name!r} is a class whose instances are {what} factories; "
            f"name an instance of it instead",
        )
    raise ConfigError(
        path,
        f"{name!r} is not a {what} factory (it does not provide "
        f"{interface.__name__})",
    )


def find_factory(interface: InterfaceClass, name: str, path: str, what: str) -> Any:
    """
    Find the factory providing C{interface} that a configuration names.

    @param name: The C{name} of a factory exported by a dropin of
        L{twistproxy.plugins}, or, when it contains a dot, the dotted path
        of a factory object.
    @param path: Where C{name} came from in the configuration, for error
        messages; for example C{'upstreams.api.balancer'}.
    @param what: What the factory makes, for error messages: C{'balancer'}.
    @raises ConfigError: when no factory has that name, when several
        plugins claim it, or when a dotted path cannot be imported or does
        not name a provider of C{interface}.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(path, f"must be the name of a {what}, not {name!r}")
    if "." in name:
        return _from_dotted_path(interface, name, path, what)
    known = set()
    matches = []
    for factory in getPlugins(interface, twistproxy.plugins):
        known.add(factory.name)
        if factory.name == name:
            matches.append(factory)
    if len(matches) == 1:
        return matches[0]
    if matches:
        providers = ", ".join(sorted(_describe(f) for f in matches))
        raise ConfigError(
            path,
            f"{what} {name!r} is ambiguous: several plugins provide it "
            f"({providers}); name one by its dotted path",
        )
    raise ConfigError(path, f"unknown {what} {name!r}; known: {', '.join(sorted(known))}")
