# -*- test-case-name: tests.test_health -*-
"""
Connections the proxy opens on its own behalf, without log lines.

A Twisted factory logs "Starting factory" and "Stopping factory" whenever
it starts and stops, unless its C{noisy} attribute is false.  That suits a
listener, started once; it does not suit the short connections the proxy
makes by itself, one or more per health check, per forward-auth
connection, per question the workers' master asks a worker: two lines each,
every few seconds per backend, drowning what the log is for.  Their
factories here are the same with C{noisy = False}.

This module imports Twisted's web client: import it where that is
imported anyway (the plugin listing keeps away from it).
"""

from __future__ import annotations

from twisted.web.client import HTTPConnectionPool


class QuietPool(HTTPConnectionPool):
    """
    An L{HTTPConnectionPool} whose connections' factory does not log.
    """

    class _factory(HTTPConnectionPool._factory):  # type: ignore[name-defined]
        noisy = False
