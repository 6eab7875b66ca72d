# -*- test-case-name: tests.test_health -*-
"""
The dropin that exports twistproxy's built-in health check factories:
C{type = "http"} and C{type = "tcp"} in an upstream group's C{health} table.

Like every dropin, this module only creates factory instances and must stay
cheap to import: L{twistproxy.upstream.health} imports the HTTP client only
when the first HTTP check is built.
"""

from __future__ import annotations

from twistproxy.upstream.health import HTTPHealthCheckFactory, TCPHealthCheckFactory

httpHealthCheck = HTTPHealthCheckFactory()
tcpHealthCheck = TCPHealthCheckFactory()
