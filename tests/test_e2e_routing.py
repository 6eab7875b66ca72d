# -*- test-case-name: tests.test_e2e_routing -*-
"""
End-to-end tests of routing like an API gateway: the installed proxy, run
by C{twistd} from a configuration file, in front of real origins on
loopback.

The unit tests (L{tests.test_routing}, L{tests.test_mirror},
L{tests.test_filters_jwt}) drive each piece on memory transports and a
fake clock.  These check what only the assembled proxy shows: that a
canary split with a cookie keeps each user on one side and shares users
by the weights, that a reload moves new requests to the new weights
without failing any, and that a route behind the C{jwt} filter fetches
its keys from a JWKS server over a real socket, picks up a rotated key
and passes the claims on, and that a mirror copies a small request body
to its shadow, byte for byte, and leaves out (and counts) a body over
its limit.  What holds when the mirror's backend or the
JWKS server fails is in L{tests.test_faults_routing}.

Origins name themselves in an C{X-Origin} response header
(L{tests.test_e2e_balancing}); clients are blocking sockets in threads.
Every test is bounded by C{timeout}.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import List, Sequence

from twisted.internet import defer, reactor
from twisted.web.server import Site

from tests.e2e_support import (
    HOST, E2ETestCase, RawClient, Response, app_config, get_request, listener_config,
    ok_response, unused_port,
)
from tests.test_e2e_balancing import _BalancingTestCase, _servers
from tests.test_filters_jwt import ROTATED, RSA, JWKSResource, _jwks, _token


def send_all(port: int, requests: Sequence[bytes]) -> List[Response]:
    """
    In a thread: send C{requests} one after the other on one keep-alive
    connection, and return the responses read.
    """
    client = RawClient(port, timeout=10.0)
    try:
        responses = []
        for request in requests:
            client.send(request)
            responses.append(client.read_response())
        return responses
    finally:
        client.close()


def upstreams_status(port: int) -> dict:
    """
    In a thread: the admin API's C{/upstreams} on C{port} (with the
    mirrors' counters).
    """
    with urllib.request.urlopen(f"http://{HOST}:{port}/upstreams", timeout=10) as answer:
        return json.loads(answer.read())


def _split(stable: int, canary: int) -> str:
    return (f'[[routes]]\nname = "api"\nsticky = "cookie:user"\n'
            f'split = [{{ upstream = "stable", weight = {stable} }}, '
            f'{{ upstream = "canary", weight = {canary} }}]\n')


class CanarySplitTests(_BalancingTestCase):
    """
    A route split between the groups C{stable} and C{canary}, each one
    origin that names itself.
    """

    timeout = 40

    @defer.inlineCallbacks
    def start(self, stable: int, canary: int):
        origins = yield self.start_origins("stable", "canary")
        self.groups = "".join(f"[upstreams.{name}]\n" + _servers({name: origin}) + "\n"
                              for name, origin in origins.items())
        proxy = yield self.start_proxy(self.groups + _split(stable, canary))
        return proxy

    @defer.inlineCallbacks
    def test_cookie_canary(self):
        """
        With C{split} 90/10 and C{sticky = "cookie:user"}, each cookie value
        lands on the same side every time, and the canary gets near a tenth
        of 300 distinct users.
        """
        proxy = yield self.start(90, 10)
        users = [b"user=u%d" % i for i in range(300)]
        requests = [get_request(extra=b"Cookie: %s\r\n" % user) for user in users]
        responses = yield self.in_thread(send_all, proxy.port, requests + requests[::-1])
        self.assertEqual({r.status for r in responses}, {200})
        sides = [r.headers[b"x-origin"] for r in responses]
        first, again = sides[:300], sides[300:][::-1]
        self.assertEqual(first, again)
        canary = first.count(b"canary")
        self.assertEqual(canary + first.count(b"stable"), 300)
        # Expected 30; the hash is fixed, so this never wavers.
        self.assertTrue(15 <= canary <= 50, canary)

    @defer.inlineCallbacks
    def test_reload_changes_weights(self):
        """
        Weights changed by a reload take effect for the requests after it,
        and none of the requests sent around it fails.
        """
        proxy = yield self.start(1, 0)
        marks = {}

        @defer.inlineCallbacks
        def scenario():
            yield self.sleep(1.0)
            marks["before"] = time.monotonic()
            line = yield self.reload(proxy, listener_config() + self.groups + _split(0, 1))
            marks["after"] = line[0]
            yield self.sleep(1.0)

        loads = yield self.under_load(proxy.port, scenario, minimum=5)
        outcomes = [o for load in loads for o in load.outcomes]
        before = {o.origin for o in outcomes if o.received < marks["before"]}
        after = {o.origin for o in outcomes if o.sent > marks["after"] + 0.2}
        self.assertEqual((before, after), ({"stable"}, {"canary"}))


class _JWTTestCase(_BalancingTestCase):
    """
    A JWKS server on loopback (L{JWKSResource}, which the test changes) and
    a proxy whose route runs the C{jwt} filter with its URL.
    """

    timeout = 40

    @defer.inlineCallbacks
    def start(self, **options: str):
        self.jwks = JWKSResource(RSA)
        port = reactor.listenTCP(0, Site(self.jwks), interface=HOST)
        self.addCleanup(port.stopListening)
        origin = yield self.start_origin("app")
        self.origin = origin.factory
        settings = {"jwks_url": f'"http://{HOST}:{port.getHost().port}/jwks"',
                    "issuer": '"https://idp.example"', "audience": '["api"]',
                    "claim_headers": '{ sub = "X-User" }', "jwks_min_refresh": "0"}
        settings.update(options)
        jwt = ", ".join(f"{k} = {v}" for k, v in settings.items())
        proxy = yield self.start_proxy(
            "[upstreams.app]\n" + _servers({"app": origin}) + "\n"
            f'[[routes]]\nupstream = "app"\nfilters = [{{ name = "jwt", {jwt} }}]\n')
        return proxy

    def ask(self, port: int, *tokens: str, extra: bytes = b"") -> defer.Deferred:
        """
        In a thread: one request per token, with it as a bearer token.
        """
        return self.in_thread(send_all, port, [
            get_request(extra=b"Authorization: Bearer %s\r\n%s" % (t.encode(), extra))
            for t in tokens])


def token(key, **claims) -> str:
    """
    A token signed with C{key}, valid for five minutes from now unless
    C{claims} say otherwise.
    """
    claims.setdefault("exp", int(time.time()) + 300)
    return _token(key, **claims)


class JWTRouteTests(_JWTTestCase):
    """
    A route behind the C{jwt} filter, its keys from a JWKS server on
    loopback.
    """

    @defer.inlineCallbacks
    def test_valid_and_invalid(self):
        """
        A valid token reaches the backend with its C{sub} in C{X-User} (the
        client's own C{X-User} removed); an expired token and one for
        another audience get 401 with C{WWW-Authenticate: Bearer
        error="invalid_token"}, and the backend never sees them.
        """
        proxy = yield self.start()
        now = int(time.time())
        ok, expired, other = yield self.ask(
            proxy.port, token(RSA), token(RSA, exp=now - 600), token(RSA, aud="billing"),
            extra=b"X-User: root\r\n")
        self.assertEqual(ok.status, 200)
        self.assertEqual(len(self.origin.requests), 1)
        self.assertEqual(self.origin.requests[0].headers[b"x-user"], b"alice")
        self.assertNotIn(b"root", self.origin.requests[0].head)
        for refused in (expired, other):
            self.assertEqual(refused.status, 401)
            self.assertEqual(refused.headers[b"www-authenticate"],
                             b'Bearer error="invalid_token"')

    @defer.inlineCallbacks
    def test_key_rotation(self):
        """
        Once the JWKS server has a rotated key, a token signed with it (an
        unknown C{kid}) makes the proxy fetch the keys again, and passes.
        """
        proxy = yield self.start()
        (first,) = yield self.ask(proxy.port, token(RSA))
        self.assertEqual(first.status, 200)
        self.jwks.body = _jwks(ROTATED)
        (rotated,) = yield self.ask(proxy.port, token(ROTATED))
        self.assertEqual(rotated.status, 200)
        self.assertEqual(self.jwks.fetches, 2)


def _post(path: bytes, body: bytes) -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: e2e.test\r\nContent-Length: %d\r\n\r\n%s" % (
        path, len(body), body)


class MirrorBodyTests(E2ETestCase):
    """
    A route with a mirror whose C{max_body_size} is 1 KiB, in front of an
    origin and a shadow that both keep the bodies they receive.
    """

    timeout = 40

    @defer.inlineCallbacks
    def test_request_bodies(self):
        """
        A POST with a small body reaches the backend and the shadow with
        the same body; one over C{max_body_size} reaches the backend only,
        and the admin API counts it as C{too_large}.
        """
        bodies = {"app": {}, "shadow": {}}

        def origin(name):
            def on_body(proto, req, piece):
                bodies[name][req.target] = bodies[name].get(req.target, b"") + piece
            return self.start_origin(
                lambda proto, req: proto.transport.write(ok_response(name.encode())), on_body)

        app, shadow = origin("app"), origin("shadow")
        admin = unused_port()
        proxy = yield self.start_configured_proxy(
            app_config(app.port, route='name = "api"\n'
                       'mirror = { upstream = "shadow", max_body_size = "1k" }')
            + f'[upstreams.shadow]\nservers = ["http://{HOST}:{shadow.port}"]\n\n'
            f'[admin]\nendpoint = "tcp:{admin}:interface={HOST}"\n')
        small, large, last = b"name=alice&n=1", bytes(range(256)) * 8, b"x" * 1024
        responses = yield self.in_thread(send_all, proxy.port, [
            _post(b"/small", small), _post(b"/large", large), _post(b"/last", last)])
        self.assertEqual([(r.status, r.body) for r in responses], [(200, b"app")] * 3)
        self.assertEqual(bodies["app"], {b"/small": small, b"/large": large, b"/last": last})
        # The copies go out after the answers: wait for the last one.
        yield self.wait_for(lambda: b"/last" in bodies["shadow"], 10, "the copies")
        self.assertEqual(bodies["shadow"], {b"/small": small, b"/last": last})
        self.assertEqual([r.target for r in shadow.requests], [b"/small", b"/last"])
        counters = yield self.in_thread(upstreams_status, admin)
        mirror = counters["mirrors"]["api"]
        self.assertEqual((mirror["copied"], mirror["too_large"]), (2, 1), mirror)
