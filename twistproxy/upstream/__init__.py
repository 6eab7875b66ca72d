# -*- test-case-name: tests.test_balancers -*-
"""
Upstream groups: the backend servers a route forwards to, their state, and
the balancers that choose among them.

L{twistproxy.upstream.backend} holds the per-server state that the proxy
keeps up to date (availability, requests in flight, counters);
L{twistproxy.upstream.group} a running group.  The balancers
(C{balancers}, C{hashing}), the locality picker (C{locality}) and the
locators (C{locators}) are pure logic: no connection, no reactor.  The
watchers take a reactor and talk to backends or DNS on the proxy's own
behalf: active health checks (C{health}), passive outlier detection
(C{outlier}) and DNS discovery (C{discovery}).  Nothing here knows HTTP
framing: connection pools are made by the caller.
"""
