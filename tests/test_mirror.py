"""
Tests for L{twistproxy.mirror}: routes that copy requests to a shadow group.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from twistproxy.config import (
    Listener, ProxyConfig, Route, RouteMirror, Server, UpstreamGroup,
)
from twistproxy.mirror import Mirror
from twistproxy.service import ProxyService
from twistproxy.testing import MemoryProxy

from tests.filter_support import OK, status
from tests.test_h2 import H2Client, _request

GET = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
APP = ("127.0.0.1", 8001)
SHADOW = ("127.0.0.1", 9001)


def _config(**mirror) -> ProxyConfig:
    """
    One route that sends to C{app} (port 8001) and mirrors to C{shadow}
    (port 9001) with the settings C{mirror}.
    """
    return ProxyConfig(
        listeners=(Listener("main", "tcp:8080"),),
        upstreams={name: UpstreamGroup(name, (
            Server(f"http://127.0.0.1:{port}", "http", "127.0.0.1", port),))
            for name, port in (("app", 8001), ("shadow", 9001))},
        routes=(Route("app", name="r", mirror=RouteMirror("shadow", **mirror)),),
    )


def _proxy(**mirror) -> MemoryProxy:
    return MemoryProxy(_config(**mirror))


class MirrorProxyTests(SynchronousTestCase):
    """
    A mirrored request reaches the shadow group too; whatever the shadow
    does, the client gets the real backend's answer, when it comes.
    """

    def send(self, proxy: MemoryProxy, head: bytes = GET):
        peer = proxy.connect_client()
        peer.send(head)
        return peer

    def test_copy_sent_and_answer_dropped(self) -> None:
        """
        The shadow gets the same request; its answer (a 500) is dropped and
        the client sees the real backend's.
        """
        proxy = _proxy()
        peer = self.send(proxy)
        self.assertEqual(proxy.backend_attempts(), [APP, SHADOW])
        app = proxy.accept_backend()
        shadow = proxy.accept_backend()
        real = app.received()
        self.assertEqual(shadow.received(), real)
        shadow.send(b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\nfail")
        self.assertEqual(peer.received(), b"")
        app.send(OK)
        got = peer.received()
        self.assertEqual(status(got), 200)
        self.assertNotIn(b"fail", got)
        mirror = proxy.forwarder.mirrors["r"]
        self.assertEqual(mirror.status(), {"copied": 1, "unanswered": 0, "dropped": 0,
                                           "skipped": 0, "too_large": 0, "in_flight": 0})

    def test_shadow_slow_or_dead(self) -> None:
        """
        A shadow that never answers does not delay the client; one that
        refuses the connection does not fail it.  Both are counted.
        """
        proxy = _proxy()
        peer = self.send(proxy)
        app = proxy.accept_backend()
        proxy.refuse_backend()
        app.send(OK)
        self.assertEqual(status(peer.received()), 200)
        peer = self.send(proxy)
        self.assertEqual(proxy.backend_attempts(), [SHADOW])
        shadow = proxy.accept_backend()
        self.assertIn(b"GET /a", shadow.received())
        app.received()
        app.send(OK)
        self.assertEqual(status(peer.received()), 200)
        mirror = proxy.forwarder.mirrors["r"]
        self.assertEqual((mirror.unanswered, mirror.in_flight), (1, 1))
        proxy.reactor.advance(proxy.config.timeouts.upstream_response + 1)
        self.assertEqual((mirror.unanswered, mirror.in_flight), (2, 0))

    def test_in_flight_cap(self) -> None:
        """
        Beyond C{max_in_flight} copies under way, requests are not copied
        but counted as dropped; the clients are answered all the same.
        """
        proxy = _proxy(max_in_flight=1)
        first = self.send(proxy)
        self.assertEqual(proxy.backend_attempts(), [APP, SHADOW])
        second = proxy.connect_client(port=40001)
        second.send(GET)
        self.assertEqual(proxy.backend_attempts(), [APP, SHADOW, APP])
        app = proxy.accept_backend()
        proxy.accept_backend()
        app.send(OK)
        self.assertEqual(status(first.received()), 200)
        proxy.accept_backend().send(OK)
        self.assertEqual(status(second.received()), 200)
        self.assertEqual(proxy.forwarder.mirrors["r"].dropped, 1)

    def test_body_copied(self) -> None:
        """
        A request body within C{max_body_size} is copied: the copy leaves
        once the whole body has gone to the real backend, and the shadow
        gets the same head and body; the client's answer does not wait for
        the shadow's.
        """
        proxy = _proxy()
        post = b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi"
        peer = self.send(proxy, post)
        self.assertEqual(proxy.backend_attempts(), [APP])
        app = proxy.accept_backend()
        self.assertEqual(proxy.backend_attempts(), [SHADOW])
        shadow = proxy.accept_backend()
        real = app.received()
        self.assertTrue(real.endswith(b"\r\n\r\nhi"))
        self.assertEqual(shadow.received(), real)
        app.send(OK)
        self.assertEqual(status(peer.received()), 200)
        mirror = proxy.forwarder.mirrors["r"]
        self.assertEqual((mirror.copied, mirror.in_flight, mirror.too_large), (1, 1, 0))

    def test_chunked_body_copied(self) -> None:
        """
        A chunked body is copied whole, in one chunk, once its last chunk
        has gone to the real backend.
        """
        proxy = _proxy()
        peer = self.send(proxy, b"POST /a HTTP/1.1\r\nHost: a\r\n"
                                b"Transfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n")
        app = proxy.accept_backend()
        self.assertEqual(proxy.backend_attempts(), [])
        peer.send(b"3\r\nllo\r\n0\r\n\r\n")
        self.assertEqual(proxy.backend_attempts(), [SHADOW])
        shadow = proxy.accept_backend()
        self.assertIn(b"2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n", app.received())
        got = shadow.received()
        self.assertIn(b"transfer-encoding: chunked\r\n", got.lower())
        self.assertTrue(got.endswith(b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), got)

    def test_http2_body_copied(self) -> None:
        """
        An HTTP/2 request's body is copied too (the backends get it
        chunked, having no length).
        """
        proxy = _proxy()
        client = H2Client(proxy)
        client.request(_request(method=b"POST", path=b"/a"), body=b"hello")
        app = proxy.accept_backend()
        self.assertEqual(proxy.backend_attempts(), [SHADOW])
        shadow = proxy.accept_backend()
        self.assertIn(b"5\r\nhello\r\n0\r\n\r\n", app.received())
        self.assertTrue(shadow.received().endswith(b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n"))

    def test_body_too_large(self) -> None:
        """
        A body larger than C{max_body_size}, by its declared length or as
        its chunks add up, is forwarded but not copied, and counted as
        C{too_large}; with C{max_body_size = 0} no body is copied.
        """
        for limit, request in [
                (4, b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"),
                (4, b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n"),
                (0, b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nh")]:
            proxy = _proxy(max_body_size=limit)
            peer = self.send(proxy, request)
            app = proxy.accept_backend()
            self.assertIn(b"POST /a", app.received())
            app.send(OK)
            self.assertEqual(status(peer.received()), 200)
            self.assertEqual(proxy.backend_attempts(), [])
            mirror = proxy.forwarder.mirrors["r"]
            self.assertEqual((mirror.copied, mirror.too_large), (0, 1))

    def test_upgrade_not_copied(self) -> None:
        """
        A request that upgrades the connection is forwarded but not
        copied (counted as skipped).
        """
        proxy = _proxy()
        self.send(proxy, b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
                         b"Upgrade: websocket\r\n\r\n")
        self.assertEqual(proxy.backend_attempts(), [APP])
        self.assertEqual(proxy.forwarder.mirrors["r"].skipped, 1)


class MirrorShareTests(SynchronousTestCase):
    """
    C{percent} of the requests are chosen, by the injected random source.
    """

    def test_percent(self) -> None:
        """
        With C{percent = 10}, about one request in ten is chosen.
        """
        mirror = Mirror(RouteMirror("shadow", percent=10), None, None, random.Random(5))
        exchange = SimpleNamespace(request=SimpleNamespace(has_body=False, upgrade=None))
        chosen = sum(mirror.chosen(exchange) for _ in range(10000))
        self.assertLessEqual(abs(chosen - 1000), 100)


class MirrorStatusTests(SynchronousTestCase):
    """
    The service's status (the status API's) shows each mirror's counters.
    """

    def test_status(self) -> None:
        """
        Under C{mirrors}, by route name; absent without a mirrored route.
        """
        service = ProxyService(_config(), MemoryReactorClock())
        service.forwarder.mirrors["r"].dropped = 3
        self.assertEqual(service.status()["mirrors"], {"r": {
            "copied": 0, "unanswered": 0, "dropped": 3, "skipped": 0, "too_large": 0,
            "in_flight": 0}})
        plain = ProxyService(ProxyConfig(
            listeners=(Listener("main", "tcp:8080"),),
            upstreams={"app": UpstreamGroup("app", (
                Server("http://127.0.0.1:8001", "http", "127.0.0.1", 8001),))},
            routes=(Route("app"),)), MemoryReactorClock())
        self.assertNotIn("mirrors", plain.status())
