# -*- test-case-name: tests.test_balancers -*-
"""
The plugin package of twistproxy: where balancers, caches, filters, health
checks and locators are found by name.

This is a L{twisted.plugin} package.  Every module in it (a I{dropin})
exports factory objects at module level, such as an L{IBalancerFactory
<twistproxy.interfaces.IBalancerFactory>} provider, and
C{twisted.plugin.getPlugins(IBalancerFactory, twistproxy.plugins)} finds
them.  The built-in factories are dropins here too
(L{twistproxy.plugins.twistproxy_builtins}), so they are found exactly the
way third-party ones are.

A third-party package adds its own dropins by shipping a
C{twistproxy/plugins/} directory I{without} an C{__init__.py}; the
C{__path__} extension below makes every such directory on C{sys.path} part
of this package.  Dropins must be cheap to import and must not do work at
import time: they are imported whenever plugins are listed.

Twisted caches what it found in a C{dropin.cache} file next to the dropins;
it is rebuilt when a dropin changes.
"""

from __future__ import annotations

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))  # type: ignore[name-defined]
__all__ = []  # type: ignore[var-annotated]
