# -*- test-case-name: tests.test_faults_routing -*-
"""
Fault tests of routing: a mirror's shadow backend that never answers or
is dead, and a JWKS server that goes down behind the C{jwt} filter.

Each test runs the installed proxy (C{twistd twistproxy}) in front of
origins in the test process, injects the fault over loopback and counts
what the clients see.  The promises are those of the section "Mirrors and
key servers failing" of docs/faults.rst, and each test's docstring states
its promise in the words used there.
"""

from __future__ import annotations

import time

from twisted.internet import defer

from tests.e2e_support import HOST, E2ETestCase, get_request, unused_port
from tests.test_e2e_balancing import _BalancingTestCase, _servers
from tests.test_e2e_routing import (
    ROTATED, RSA, _JWTTestCase, send_all, token, upstreams_status,
)

# Requests each client batch sends.
_BATCH = 40
# The mirror's in-flight cap in these tests.
_CAP = 5


class MirrorFaultTests(_BalancingTestCase):
    """
    One origin behind two routes, C{/plain/} and C{/mirrored/}, the second
    with a mirror to a shadow group; the same client sends a batch of
    requests to each, so that each test compares the two in one run.
    """

    timeout = 60

    @defer.inlineCallbacks
    def start(self, shadow_port: int):
        origin = yield self.start_origin("app")
        self.admin_port = unused_port()
        proxy = yield self.start_proxy(
            "[upstreams.app]\n" + _servers({"app": origin}) + "\n"
            f'[upstreams.shadow]\nservers = ["http://{HOST}:{shadow_port}"]\n\n'
            '[[routes]]\nname = "plain"\npath_prefix = "/plain/"\nupstream = "app"\n\n'
            '[[routes]]\nname = "mirrored"\npath_prefix = "/mirrored/"\nupstream = "app"\n'
            f'mirror = {{ upstream = "shadow", max_in_flight = {_CAP} }}\n\n'
            f'[admin]\nendpoint = "tcp:{self.admin_port}:interface={HOST}"\n')
        return proxy

    @defer.inlineCallbacks
    def batches(self, port: int):
        """
        Send a batch to C{/plain/}, then one to C{/mirrored/}, each on its
        own keep-alive connection; check that every request is answered
        200 by the origin, and that the mirrored batch takes no more than
        a few times the plain one (generous: a loaded machine).

        @return: The L{Deferred} of the mirror's counters after.
        """
        took = {}
        for prefix in (b"plain", b"mirrored"):
            requests = [get_request(b"/%s/%d" % (prefix, i)) for i in range(_BATCH)]
            started = time.monotonic()
            responses = yield self.in_thread(send_all, port, requests)
            took[prefix] = time.monotonic() - started
            self.assertEqual([r.status for r in responses], [200] * _BATCH)
            self.assertEqual({r.headers[b"x-origin"] for r in responses}, {b"app"})
        self.assertLess(took[b"mirrored"], 3 * took[b"plain"] + 2.0, took)
        status = yield self.in_thread(upstreams_status, self.admin_port)
        return status["mirrors"]["mirrored"]

    @defer.inlineCallbacks
    def test_shadow_never_answers(self):
        """
        A shadow backend that never answers neither delays nor fails the
        clients: every request of the mirrored route is answered 200, in
        about the time of the same requests on a route without a mirror;
        the copies stop at C{max_in_flight}, the shadow receives exactly
        that many, and the rest are counted as dropped.
        """
        # (E2ETestCase's origin: a fixed port is not needed here.)
        shadow = E2ETestCase.start_origin(self, lambda proto, req: None)
        proxy = yield self.start(shadow.port)
        counters = yield self.batches(proxy.port)
        self.assertEqual(
            (counters["copied"], counters["dropped"], counters["in_flight"]),
            (_CAP, _BATCH - _CAP, _CAP))
        yield self.wait_for(lambda: len(shadow.requests) == _CAP, 10, "the copies to arrive")

    @defer.inlineCallbacks
    def test_shadow_dead(self):
        """
        A dead shadow backend (its port refuses connections) neither
        delays nor fails the clients: every request of the mirrored route
        is answered 200, in about the time of the same requests on a route
        without a mirror, and every copy is counted as unanswered.
        """
        proxy = yield self.start(unused_port())
        counters = yield self.batches(proxy.port)
        self.assertEqual(counters["copied"] + counters["dropped"], _BATCH)
        for _ in range(40):
            counters = yield self.in_thread(upstreams_status, self.admin_port)
            counters = counters["mirrors"]["mirrored"]
            if counters["in_flight"] == 0:
                break
            yield self.sleep(0.25)
        self.assertEqual((counters["in_flight"], counters["unanswered"] > 0),
                         (0, True), counters)
        self.assertEqual(counters["unanswered"], counters["copied"])


class JWKSDownFaultTests(_JWTTestCase):
    """
    A route behind the C{jwt} filter whose JWKS server goes away.
    """

    @defer.inlineCallbacks
    def test_jwks_down_serves_stale_keys(self):
        """
        While the JWKS server fails (answers 503), the keys fetched before go on being
        used past their C{jwks_max_age}: a token signed with one is still
        answered 200, and a token naming a key the proxy never fetched is
        still refused with 401.
        """
        proxy = yield self.start(jwks_max_age="1")
        (first,) = yield self.ask(proxy.port, token(RSA))
        self.assertEqual(first.status, 200)
        self.jwks.down = True
        # Past the max age: the proxy tries to fetch again, and fails.
        yield self.sleep(1.5)
        stale, unknown = yield self.ask(proxy.port, token(RSA), token(ROTATED))
        yield self.sleep(0.5)
        (again,) = yield self.ask(proxy.port, token(RSA))
        self.assertEqual((stale.status, unknown.status, again.status), (200, 401, 200))
        # It did try again.
        self.assertGreater(self.jwks.fetches, 1)
