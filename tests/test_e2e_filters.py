# -*- test-case-name: tests.test_e2e_filters -*-
"""
End-to-end tests of the filters: the installed proxy, run by C{twistd}
with a configuration file, between real client sockets and a real origin
on 127.0.0.1.  One test per filter family, and the abuse tests: a client
cannot get past a deny list or a rate limit by what it writes in
forwarding fields.  Every test is bounded in requests and time.
"""

from __future__ import annotations

import os
import time

from twisted.internet import defer, reactor

from tests.e2e_support import HOST, ConnectionClosed, ProxyProcess, RawClient, write_config
from tests.test_e2e import _ProxyTestCase, _get, _ok


class _FilterTestCase(_ProxyTestCase):

    def origin(self):
        def handler(proto, req):
            proto.transport.write(_ok(b"origin says hi"))

        return self.start_origin(handler)

    @defer.inlineCallbacks
    def start_filtered(self, origin_port: int, listener: str = "", route: str = ""):
        """
        Run the proxy with C{listener} lines in its listener table and
        C{route} lines in its one route.
        """
        cwd = os.path.abspath(self.mktemp())
        path = write_config(cwd, (
            "[listeners.main]\n"
            f'endpoint = "tcp:0:interface={HOST}"\n{listener}\n'
            '[access_log]\npath = ""\n\n'
            f'[upstreams.app]\nservers = ["http://{HOST}:{origin_port}"]\n\n'
            f'[[routes]]\nupstream = "app"\n{route}\n'
        ))
        proxy = ProxyProcess(reactor, ["--config", path], cwd)
        self.addCleanup(proxy.stop)
        yield proxy.start()
        return proxy

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
                c = RawClient(proxy.port, 5)
                try:
                    c.send(_get())
                    refused = c.at_eof(wait=3.0)
                except OSError:
                    refused = True
                finally:
                    c.close()
                a.close()
                # The proxy notices the close a moment later: retry a few
                # times, 50 ms apart.
                for _ in range(40):
                    d = RawClient(proxy.port, 5)
                    try:
                        d.send(_get())
                        return refused, d.read_response().status == 200
                    except (OSError, ConnectionClosed):
                        time.sleep(0.05)
                    finally:
                        d.close()
                return refused, False
            finally:
                a.close()
                b.close()

        refused, served_again = yield self.in_thread(run)
        self.assertTrue(refused)
        self.assertTrue(served_again)
