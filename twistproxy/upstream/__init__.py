# -*- test-case-name: tests.test_balancers -*-
"""
Upstream groups: the backend servers a route forwards to, their state, and
the balancers that choose among them.

L{twistproxy.upstream.backend} holds the per-server state that the proxy
keeps up to date (availability, requests in flight, counters), and
L{twistproxy.upstream.balancers} the built-in balancing algorithms and the
lookup of balancer plugins by name.  Everything here is pure logic: nothing
opens a connection or touches a reactor.
"""
