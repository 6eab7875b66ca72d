# -*- test-case-name: tests.test_e2e_filters -*-
"""
End-to-end tests of the filters: the installed proxy, run by C{twistd}
with a configuration file, between real client sockets and a real origin
on 127.0.0.1.  One test per filter family, and the abuse tests: a client
cannot get past a deny list or a rate limit by what it writes in
forwarding fields.  Every test is bounded in requests and time.
"""

from __future__ import annotations

import json
import os
import socket
import time

from twisted.internet import defer, reactor
from twisted.trial.unittest import SkipTest

from tests.e2e_support import HOST, ConnectionClosed, RawClient, app_config, unused_port
from tests.test_e2e import _ProxyTestCase, _get, _ok


class _FilterTestCase(_ProxyTestCase):

    def origin(self):
        def handler(proto, req):
            proto.transport.write(_ok(b"origin says hi"))

        return self.start_origin(handler)

    def start_filtered(self, origin_port: int, listener: str = "",
                       route: str = "") -> defer.Deferred:
        """
        Run the proxy with C{listener} lines in its listener table and
        C{route} lines in its one route.
        """
        return self.start_configured_proxy(app_config(origin_port, listener, route))

    @staticmethod
    def statuses(port: int, heads, keep_alive: bool = True):
        """
        In a thread: send each request head, on one connection or each on
        a new one, and return the responses.
        """
        responses = []
        client = RawClient(port, timeout=5)
        try:
            for head in heads:
                if not keep_alive:
                    client.close()
                    client = RawClient(port, timeout=5)
                client.send(head)
                responses.append(client.read_response())
        finally:
            client.close()
        return responses


class AccessAbuseTests(_FilterTestCase):
    """
    A deny-listed address is refused whatever forwarding fields it sends.
    """

    @defer.inlineCallbacks
    def test_denied_whatever_headers(self):
        """
        Fifty requests from a denied address (127.0.0.1), each claiming
        another client in C{Forwarded}, C{X-Forwarded-For} and
        C{X-Real-IP}, all get 403; none reaches the origin, and no answer
        names the backend.
        """
        origin = self.origin()
        proxy = yield self.start_filtered(
            origin.port, listener='filters = [{ name = "access", deny = ["127.0.0.0/8"] }]')
        heads = [
            _get(b"/", b"Forwarded: for=198.51.100.%d\r\nX-Forwarded-For: 203.0.113.%d\r\n"
                       b"X-Real-IP: 192.0.2.%d\r\n" % (i, i, i))
            for i in range(50)
        ]
        responses = yield self.in_thread(self.statuses, proxy.port, heads)
        self.assertEqual([r.status for r in responses], [403] * 50)
        self.assertEqual(len(origin.requests), 0)
        self.assertFalse(any(str(origin.port).encode() in r.head + r.body for r in responses))


class _IPv6Client(RawClient):
    """
    A L{RawClient} connected to C{::1}.
    """

    def __init__(self, port: int, timeout: float = 5.0):
        self.sock = socket.create_connection(("::1", port), timeout=timeout)
        self._buffer = b""


class AccessIPv6Tests(_FilterTestCase):
    """
    Access lists match IPv6 clients.
    """

    @defer.inlineCallbacks
    def test_ipv6_client_denied(self):
        """
        With C{::1/128} denied on both listeners, a client on C{::1} gets
        403 and one on 127.0.0.1 is served.
        """
        try:
            with socket.socket(socket.AF_INET6) as s:
                s.bind(("::1", 0))
                v6_port = s.getsockname()[1]
        except OSError:
            raise SkipTest("no IPv6 loopback")
        origin = self.origin()
        deny = 'filters = [{ name = "access", deny = ["::1/128"] }]'
        proxy = yield self.start_configured_proxy(
            app_config(origin.port, deny)
            + f'[listeners.six]\nendpoint = "tcp6:{v6_port}:interface=\\\\:\\\\:1"\n{deny}\n')

        def over_ipv6():
            # The second listener may start a moment after the first one,
            # whose port the proxy reported: retry, at most 50 times.
            for _ in range(49):
                try:
                    client = _IPv6Client(v6_port)
                    break
                except ConnectionRefusedError:
                    time.sleep(0.1)
            else:
                client = _IPv6Client(v6_port)
            try:
                client.send(_get())
                return client.read_response()
            finally:
                client.close()

        answer = yield self.in_thread(over_ipv6)
        self.assertEqual(answer.status, 403)
        [served] = yield self.in_thread(self.statuses, proxy.port, [_get()])
        self.assertEqual(served.status, 200)
        self.assertEqual(len(origin.requests), 1)


class AccessFileTests(_FilterTestCase):
    """
    A deny list in a file takes effect when the file changes, without a
    reload of the proxy.
    """

    @defer.inlineCallbacks
    def test_file_reloaded_on_change(self):
        """
        While the file denies another network, 127.0.0.1 is served; once
        the file is rewritten to deny 127.0.0.0/8, its requests get 403
        within a few looks (C{reload_interval = 0.1}), and none of them
        reaches the origin.
        """
        origin = self.origin()
        listed = os.path.abspath(self.mktemp())
        with open(listed, "w") as f:
            f.write("# others\n192.0.2.0/24\n")
        proxy = yield self.start_filtered(
            origin.port, listener='filters = [{ name = "access", deny_files = [%s], '
                                  'reload_interval = 0.1 }]' % json.dumps(listed))

        def run():
            before = self.statuses(proxy.port, [_get()])[0].status
            with open(listed, "w") as f:
                f.write("127.0.0.0/8\n")
            # Bounded: at most 40 requests, 50 ms apart.
            for tries in range(1, 41):
                if self.statuses(proxy.port, [_get()])[0].status == 403:
                    return before, tries
                time.sleep(0.05)
            return before, None

        before, tries = yield self.in_thread(run)
        self.assertEqual(before, 200)
        self.assertIsNotNone(tries)
        self.assertEqual(len(origin.requests), tries)


class RateLimitAbuseTests(_FilterTestCase):
    """
    Rate limits hold against clients that rotate forwarding fields.
    """

    @defer.inlineCallbacks
    def test_rotating_forwarded_for(self):
        """
        Forty requests, on one connection and then on new connections,
        each with a new C{X-Forwarded-For} (and C{Forwarded}) value: only
        the burst (5, plus at most one refilled over the test) reaches the
        origin; the rest get 429 with C{Retry-After} and C{RateLimit-*}.
        """
        origin = self.origin()
        proxy = yield self.start_filtered(
            origin.port,
            listener='filters = [{ name = "rate_limit", rate = 0.2, burst = 5 }]')
        heads = [
            _get(b"/", b"X-Forwarded-For: 198.51.100.%d\r\nForwarded: for=203.0.113.%d\r\n"
                 % (i, i))
            for i in range(20)
        ]
        first = yield self.in_thread(self.statuses, proxy.port, heads)
        second = yield self.in_thread(self.statuses, proxy.port, heads, False)
        statuses = [r.status for r in first + second]
        self.assertIn(statuses.count(200), (5, 6))
        self.assertEqual(statuses[:5], [200] * 5)
        self.assertEqual(statuses.count(429), 40 - statuses.count(200))
        refused = [r for r in first if r.status == 429][0]
        self.assertGreaterEqual(int(refused.headers[b"retry-after"]), 1)
        self.assertEqual(refused.headers[b"ratelimit-limit"], b"5")
        self.assertEqual(len(origin.requests), statuses.count(200))


class ConnectionLimitTests(_FilterTestCase):
    """
    Connections per client address are capped on a listener.
    """

    @defer.inlineCallbacks
    def test_third_connection_closed(self):
        """
        With C{max = 2}, two connections are served and a third is closed
        without an answer; once one closes, a new one is served.
        """
        origin = self.origin()
        proxy = yield self.start_filtered(
            origin.port, listener='filters = [{ name = "connection_limit", max = 2 }]')

        def run():
            a, b = RawClient(proxy.port, 5), RawClient(proxy.port, 5)
            try:
                for client in (a, b):
                    client.send(_get())
                    client.read_response()
                try:
                    c = RawClient(proxy.port, 5)
                    try:
                        c.send(_get())
                        refused = c.at_eof(wait=3.0)
                    finally:
                        c.close()
                except OSError:
                    # Reset by the proxy, even before connect() returned.
                    refused = True
                a.close()
                # The proxy notices the close a moment later: retry a few
                # times, 50 ms apart.
                for _ in range(40):
                    try:
                        d = RawClient(proxy.port, 5)
                        try:
                            d.send(_get())
                            return refused, d.read_response().status == 200
                        finally:
                            d.close()
                    except (OSError, ConnectionClosed):
                        time.sleep(0.05)
                return refused, False
            finally:
                a.close()
                b.close()

        refused, served_again = yield self.in_thread(run)
        self.assertTrue(refused)
        self.assertTrue(served_again)


class BannerOrigin:
    """
    An origin answering with backend banners and a compressible body,
    recording the requests.
    """

    BODY = b"twistproxy " * 500

    @classmethod
    def handler(cls, proto, req):
        proto.transport.write(
            b"HTTP/1.1 200 OK\r\nServer: Apache/2.4.1\r\nX-Powered-By: PHP/5.3\r\n"
            b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
            % (len(cls.BODY), cls.BODY))


class FamilyTests(_FilterTestCase):
    """
    One end-to-end test per filter family over real sockets.
    """

    @defer.inlineCallbacks
    def test_block(self):
        """
        A blocked path gets the chosen status and never reaches the
        origin; another path does.
        """
        origin = self.origin()
        proxy = yield self.start_filtered(
            origin.port, route='filters = [{ name = "block", paths = ["^/admin"], '
                               'status = 404 }]')
        responses = yield self.in_thread(self.statuses, proxy.port,
                                         [_get(b"/admin/x"), _get(b"/shop")])
        self.assertEqual([r.status for r in responses], [404, 200])
        self.assertEqual([r.target for r in origin.requests], [b"/shop"])

    @defer.inlineCallbacks
    def test_headers(self):
        """
        Banners are hidden from the client; the origin gets the added
        request field.
        """
        origin = self.start_origin(BannerOrigin.handler)
        proxy = yield self.start_filtered(
            origin.port, listener='filters = [{ name = "headers", hide_banners = true, '
                                  'request = { set = { X-Env = "e2e" } } }]')
        [resp] = yield self.in_thread(self.statuses, proxy.port, [_get()])
        self.assertEqual(resp.status, 200)
        self.assertNotIn(b"server", resp.headers)
        self.assertNotIn(b"x-powered-by", resp.headers)
        self.assertEqual(origin.requests[0].headers[b"x-env"], b"e2e")

    @defer.inlineCallbacks
    def test_own_error_page(self):
        """
        With the backend down, the proxy's 502 names neither the backend's
        address nor any software in a C{Server} field.
        """
        closed_port = unused_port()
        proxy = yield self.start_filtered(
            closed_port, listener='filters = [{ name = "headers", hide_banners = true }]')
        [resp] = yield self.in_thread(self.statuses, proxy.port, [_get()])
        self.assertEqual(resp.status, 502)
        self.assertNotIn(b"server", resp.headers)
        self.assertNotIn(str(closed_port).encode(), resp.head + resp.body)
        self.assertNotIn(HOST.encode(), resp.head + resp.body)

    @defer.inlineCallbacks
    def test_basic_auth(self):
        """
        Without credentials 401; with the right ones the origin is reached
        (bcrypt checked in the thread pool), without the credentials.
        """
        import base64

        import bcrypt

        origin = self.origin()
        htpasswd = os.path.abspath(self.mktemp())
        with open(htpasswd, "w") as f:
            f.write("alice:%s\n" % bcrypt.hashpw(b"secret", bcrypt.gensalt(4)).decode())
        proxy = yield self.start_filtered(
            origin.port, route='filters = [{ name = "basic_auth", htpasswd = %s }]'
                               % json.dumps(htpasswd))
        good = b"Authorization: Basic %s\r\n" % base64.b64encode(b"alice:secret")
        responses = yield self.in_thread(self.statuses, proxy.port, [
            _get(), _get(b"/", b"Authorization: Basic %s\r\n" % base64.b64encode(b"alice:x")),
            _get(b"/", good)])
        self.assertEqual([r.status for r in responses], [401, 401, 200])
        self.assertIn(b"Basic realm=", responses[0].headers[b"www-authenticate"])
        self.assertEqual(len(origin.requests), 1)
        self.assertNotIn(b"authorization", origin.requests[0].headers)

    @defer.inlineCallbacks
    def test_forward_auth(self):
        """
        An auth service on loopback (twisted.web) is asked about each
        request: its 2xx lets the request through with the user copied,
        its 401 goes back to the client with its body.
        """
        from twisted.web.resource import Resource
        from twisted.web.server import Site

        class Check(Resource):
            isLeaf = True

            def render_GET(self, request):
                if request.getHeader("X-Token") == "good":
                    request.setHeader("X-User", "alice")
                    return b""
                request.setResponseCode(401)
                return b"log in first"

        site = Site(Check())
        site.noisy = False
        port = reactor.listenTCP(0, site, interface=HOST)
        self.addCleanup(port.stopListening)
        origin = self.origin()
        proxy = yield self.start_filtered(
            origin.port, listener='filters = [{ name = "forward_auth", url = '
                                  '"http://%s:%d/check", copy_headers = ["X-User"] }]'
                                  % (HOST, port.getHost().port))
        responses = yield self.in_thread(self.statuses, proxy.port, [
            _get(b"/", b"X-Token: bad\r\n"), _get(b"/", b"X-Token: good\r\nX-User: eve\r\n")])
        self.assertEqual([r.status for r in responses], [401, 200])
        self.assertEqual(responses[0].body, b"log in first")
        self.assertEqual(origin.requests[0].headers[b"x-user"], b"alice")

    @defer.inlineCallbacks
    def test_cors(self):
        """
        A preflight is answered by the proxy; the actual request's
        response allows the origin.
        """
        origin = self.origin()
        proxy = yield self.start_filtered(
            origin.port, route='filters = [{ name = "cors", origins = ["https://app.test"], '
                               'methods = ["PUT"] }]')
        preflight = (b"OPTIONS /x HTTP/1.1\r\nHost: e2e.test\r\nOrigin: https://app.test\r\n"
                     b"Access-Control-Request-Method: PUT\r\n\r\n")
        responses = yield self.in_thread(self.statuses, proxy.port, [
            preflight, _get(b"/x", b"Origin: https://app.test\r\n")])
        self.assertEqual([r.status for r in responses], [204, 200])
        self.assertEqual(responses[0].headers[b"access-control-allow-methods"], b"PUT")
        self.assertEqual(responses[1].headers[b"access-control-allow-origin"],
                         b"https://app.test")
        self.assertEqual(len(origin.requests), 1)

    @defer.inlineCallbacks
    def test_compress(self):
        """
        A client accepting gzip gets a chunked gzip body that decodes to
        the origin's; one that does not gets it as it was.
        """
        import zlib

        origin = self.start_origin(BannerOrigin.handler)
        proxy = yield self.start_filtered(
            origin.port, listener='filters = [{ name = "compress", encodings = ["gzip"] }]')
        responses = yield self.in_thread(self.statuses, proxy.port, [
            _get(b"/", b"Accept-Encoding: gzip\r\n"), _get()])
        zipped, plain = responses
        self.assertEqual(zipped.headers[b"content-encoding"], b"gzip")
        self.assertEqual(zipped.headers[b"transfer-encoding"], b"chunked")
        self.assertEqual(zlib.decompress(zipped.body, 31), BannerOrigin.BODY)
        self.assertLess(len(zipped.body), len(BannerOrigin.BODY) // 5)
        self.assertEqual(plain.body, BannerOrigin.BODY)
        self.assertNotIn(b"content-encoding", plain.headers)


class SharedRateLimitTests(_FilterTestCase):
    """
    Two proxy processes share one rate limit through Redis.
    """

    @defer.inlineCallbacks
    def test_two_processes_one_limit(self):
        """
        Requests alternating between two proxies with the same Redis zone
        are counted together: the burst (4) in all passes, the rest get
        429, and the origin sees only the burst.
        """
        from tests.redis_support import start_redis

        redis = start_redis(self)
        origin = self.origin()
        listener = ('filters = [{ name = "rate_limit", rate = 0.01, burst = 4, '
                    'redis = "%s", zone = "e2e" }]' % redis.url)
        first = yield self.start_filtered(origin.port, listener=listener)
        second = yield self.start_filtered(origin.port, listener=listener)

        def run():
            statuses = []
            for i in range(10):
                port = (first, second)[i % 2].port
                statuses += [r.status for r in self.statuses(port, [_get()])]
            return statuses

        statuses = yield self.in_thread(run)
        self.assertEqual(statuses, [200] * 4 + [429] * 6)
        self.assertEqual(len(origin.requests), 4)
