# -*- test-case-name: tests.test_e2e_abuse -*-
"""
End-to-end abuse tests: the installed proxy under twistd, attacked over
loopback by clients that send slowly, read nothing, open too many
connections or ask for too much at once, while a well-behaved "canary"
client checks that normal traffic is still served quickly.

Each test is bounded in time (C{timeout}, socket timeouts, short proxy
timeouts set in its configuration) and in count (a few dozen attacking
sockets, a few hundred at most for the flood).  Clients are blocking or
non-blocking sockets in threads, so that they send exactly these bytes.
"""

from __future__ import annotations

import errno
import select
import socket
import time

from twisted.internet import defer, reactor
from twisted.internet.threads import blockingCallFromThread

from tests.e2e_support import HOST, ConnectionClosed, RawClient, app_config
from tests.test_e2e import _Generator, _ok, _ProxyTestCase, _RSSSampler

MIB = 1 << 20
# What a canary request may take while the proxy is under attack: far
# above the few milliseconds it normally takes, far below any timeout.
CANARY_LIMIT = 1.0


def _get(path: bytes = b"/") -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: abuse.test\r\n\r\n" % path


def _canary(port: int, seconds: float, pause: float = 0.05):
    """
    In a thread: keep-alive GETs on one connection for C{seconds}.

    @return: (statuses, slowest request in seconds).
    """
    client = RawClient(port, timeout=10)
    statuses, slowest = [], 0.0
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.monotonic()
            client.send(_get(b"/canary"))
            statuses.append(client.read_response().status)
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(pause)
    finally:
        client.close()
    return statuses, slowest


def _timed_get(port: int, path: bytes):
    """
    In a thread: one GET on a new connection.

    @return: (response, seconds it took).
    """
    client = RawClient(port, timeout=10)
    try:
        started = time.monotonic()
        client.send(_get(path))
        resp = client.read_response()
        return resp, time.monotonic() - started
    finally:
        client.close()


def _closed(sock: socket.socket) -> bool:
    """
    Whether the peer closed C{sock} (EOF or reset); reads what came.
    """
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
            sock.received += data
    except BlockingIOError:
        return False
    except OSError:
        return True


class _AbuseSocket(socket.socket):
    """
    A non-blocking client socket that keeps what it received.
    """

    received = b""
    closed_after = None


def _open(port: int, count: int):
    """
    C{count} connected non-blocking sockets.
    """
    socks = []
    for _ in range(count):
        s = _AbuseSocket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect((HOST, port))
        s.setblocking(False)
        socks.append(s)
    return socks


class _AbuseTestCase(_ProxyTestCase):
    timeout = 60

    def ok_origin(self):
        return self.start_origin(lambda proto, req: proto.transport.write(_ok(b"ok")))

    def start_config(self, origin_port: int, extra: str, listener: str = "") -> defer.Deferred:
        """
        Run C{twistd twistproxy --config} in front of C{origin_port} with
        C{extra} configuration (timeouts and limits).
        """
        return self.start_configured_proxy(app_config(origin_port, listener) + extra)


class SlowClientTests(_AbuseTestCase):
    """
    Clients that send or read too slowly are cut off on time, and do not
    slow anyone else down.
    """

    @staticmethod
    def _slowloris(port: int, count: int, seconds: float):
        """
        In a thread: C{count} connections that each send a request head
        one byte every 0.2 s and never finish it, for at most C{seconds}.

        @return: The sockets, with C{closed_after} (seconds) set on those
            the proxy closed.
        """
        socks = _open(port, count)
        started = time.monotonic()
        line = b"GET / HTTP/1.1\r\nHost: abuse.test\r\nX-Slow: " + b"a" * 1000
        sent = 0
        try:
            while time.monotonic() - started < seconds:
                open_socks = [s for s in socks if s.closed_after is None]
                if not open_socks:
                    break
                for s in open_socks:
                    try:
                        s.send(line[sent:sent + 1])
                    except OSError:
                        pass
                sent += 1
                deadline = time.monotonic() + 0.2
                while time.monotonic() < deadline:
                    readable, _, _ = select.select(open_socks, [], [], 0.05)
                    for s in readable:
                        if s.closed_after is None and _closed(s):
                            s.closed_after = time.monotonic() - started
        finally:
            for s in socks:
                s.close()
        return socks

    @defer.inlineCallbacks
    def test_slowloris(self):
        """
        Thirty clients trickling request heads byte by byte are each
        answered 408 and cut off when the head deadline (2 s here) has
        passed since they connected, however steadily they send; meanwhile
        a canary client on a keep-alive connection keeps getting fast 200s.
        """
        origin = self.ok_origin()
        proxy = yield self.start_config(origin.port, "[timeouts]\nrequest_head = 2\n")
        attack = self.in_thread(self._slowloris, proxy.port, 30, 8.0)
        statuses, slowest = yield self.in_thread(_canary, proxy.port, 3.0)
        socks = yield attack
        self.log.info("slowloris: closed after {times}; canary {n} requests, slowest {slow:.3f}s",
                      times=sorted(round(s.closed_after or -1, 2) for s in socks),
                      n=len(statuses), slow=slowest)
        for s in socks:
            self.assertIsNotNone(s.closed_after)
            self.assertGreater(s.closed_after, 1.5)
            self.assertLess(s.closed_after, 6.0)
            self.assertTrue(s.received.startswith(b"HTTP/1.1 408 "), s.received[:40])
        self.assertGreater(len(statuses), 10)
        self.assertEqual(set(statuses), {200})
        self.assertLess(slowest, CANARY_LIMIT)
        # None of the trickled heads reached the origin.
        self.assertEqual([r.target for r in origin.requests], [b"/canary"] * len(statuses))

    @staticmethod
    def _slow_post(port: int):
        """
        In a thread: a POST that declares 100000 bytes, sends 1000 and
        stalls.

        @return: (response, seconds until it came).
        """
        client = RawClient(port, timeout=10)
        try:
            client.send(b"POST /up HTTP/1.1\r\nHost: abuse.test\r\n"
                        b"Content-Length: 100000\r\n\r\n" + b"x" * 1000)
            started = time.monotonic()
            resp = client.read_response()
            return resp, time.monotonic() - started, client.at_eof(wait=2.0)
        finally:
            client.close()

    @defer.inlineCallbacks
    def test_slow_post(self):
        """
        A request body that stalls is answered 408 when the body timeout
        (2 s here) passes, the connection is closed and so is the backend
        request it had started; a canary is served throughout.
        """
        origin = self.start_origin(lambda proto, req: proto.transport.write(_ok(b"ok")))
        proxy = yield self.start_config(origin.port, "[timeouts]\nrequest_body = 2\n")
        posts = [self.in_thread(self._slow_post, proxy.port) for _ in range(10)]
        statuses, slowest = yield self.in_thread(_canary, proxy.port, 2.5)
        results = yield defer.gatherResults(posts)
        for resp, elapsed, closed in results:
            self.assertEqual(resp.status, 408)
            self.assertGreater(elapsed, 1.5)
            self.assertLess(elapsed, 6.0)
            self.assertTrue(closed)
        self.assertEqual(set(statuses), {200})
        self.assertLess(slowest, CANARY_LIMIT)
        # The uploads had reached the origin; each was aborted there.
        self.assertEqual(len([r for r in origin.requests if r.target == b"/up"]), 10)
        yield self._wait_for(lambda: origin.connections_lost >= 10, 5,
                             "the origin connections of the stalled uploads to close")

    @staticmethod
    def _dribbled_post(port: int):
        """
        In a thread: a POST whose 100000 bytes come 10 every 0.1 s.

        @return: (response or None, seconds until the proxy answered).
        """
        client = RawClient(port, timeout=10)
        try:
            client.send(b"POST /up HTTP/1.1\r\nHost: abuse.test\r\n"
                        b"Content-Length: 100000\r\n\r\n")
            started = time.monotonic()
            client.sock.settimeout(0.1)
            while time.monotonic() - started < 10:
                try:
                    client.send(b"x" * 10)
                    client._fill()
                    break
                except socket.timeout:
                    continue
                except OSError:
                    return None, time.monotonic() - started
            elapsed = time.monotonic() - started
            client.sock.settimeout(5)
            return client.read_response(), elapsed
        finally:
            client.close()

    @defer.inlineCallbacks
    def test_dribbled_post(self):
        """
        With limits.min_body_rate = 1000, a body trickled in at 100 bytes
        a second is answered 408 about when the body timeout (2 s here)
        runs out, although it never stalls.
        """
        origin = self.ok_origin()
        proxy = yield self.start_config(
            origin.port, "[timeouts]\nrequest_body = 2\n[limits]\nmin_body_rate = 1000\n")
        resp, elapsed = yield self.in_thread(self._dribbled_post, proxy.port)
        self.assertIsNotNone(resp)
        self.assertEqual(resp.status, 408)
        self.assertGreater(elapsed, 1.5)
        self.assertLess(elapsed, 6.0)

    @defer.inlineCallbacks
    def test_body_too_large_never_reaches_origin(self):
        """
        A Content-Length above limits.max_body_size gets 413 at once and
        nothing of the request reaches the origin.
        """
        origin = self.ok_origin()
        proxy = yield self.start_config(origin.port, '[limits]\nmax_body_size = "1m"\n')
        resp = yield self.in_thread(
            self.exchange, proxy.port,
            b"POST / HTTP/1.1\r\nHost: abuse.test\r\nContent-Length: %d\r\n\r\n" % (MIB + 1),
        )
        self.assertEqual(resp.status, 413)
        self.assertTrue(resp.closed)
        self.assertEqual(origin.connections_made, 0)

    @staticmethod
    def _never_read(port: int, wait: float):
        """
        In a thread: ask for a huge response, read none of it, and after
        C{wait} seconds report whether the proxy has cut the connection.
        """
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.settimeout(10)
        try:
            s.connect((HOST, port))
            s.sendall(_get(b"/huge"))
            time.sleep(wait)
            s.settimeout(0.5)
            try:
                while s.recv(1 << 20):
                    pass
                return True
            except socket.timeout:
                return False
            except OSError:
                return True
        finally:
            s.close()

    @defer.inlineCallbacks
    def test_client_never_reads(self):
        """
        A client that asks for a 1 GiB response and never reads it: the
        proxy stops reading from the origin once the client's buffers are
        full, so its memory stays flat, and cuts the client off (and the
        origin connection with it) once its send buffer has been full for
        the send timeout (2 s here).
        """
        generators = []

        def handler(proto, req):
            proto.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (1 << 30))
            gen = _Generator(proto.transport, 1 << 30, b"\xa5" * (256 * 1024))
            generators.append(gen)
            proto.transport.registerProducer(gen, False)

        origin = self.start_origin(handler)
        proxy = yield self.start_config(origin.port, "[timeouts]\nsend = 2\n")
        idle_kib = proxy.rss_kib()
        sampler = _RSSSampler(proxy, kill_above_kib=idle_kib + 200 * 1024)
        try:
            cut = yield self.in_thread(self._never_read, proxy.port, 5.0)
        finally:
            sampler.stop()
        self.log.info("never-read client: origin sent {sent} bytes; proxy RSS idle {idle} KiB, "
                      "max {max} KiB", sent=generators[0].sent, idle=idle_kib,
                      max=sampler.max_kib)
        self.assertTrue(cut)
        self.assertLess(sampler.max_kib - idle_kib, 30 * 1024)
        self.assertLess(generators[0].sent, 64 * MIB)
        yield self._wait_for(lambda: not origin.open, 5, "the origin connection to close")


class FloodTests(_AbuseTestCase):
    """
    More connections than allowed: the excess waits or is refused, while
    those already accepted are served as usual.
    """

    @staticmethod
    def _flood(port: int, limit: int, flood: int, snapshot):
        """
        In a thread: a canary connection, then connections up to C{limit}
        held open, then C{flood} more (non-blocking connects); the canary
        makes requests during the flood, and each flood connection that
        connected sends a GET.

        @param snapshot: Called (in the reactor thread) before the
            connections close, for what the origin has received by then.
        @return: (canary statuses, slowest, flood connections answered,
            what C{snapshot} returned).
        """
        canary = RawClient(port, timeout=10)
        holders, floods = [], []
        try:
            canary.send(_get(b"/canary"))
            assert canary.read_response().status == 200
            holders = _open(port, limit - 1)
            for _ in range(flood):
                s = _AbuseSocket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                code = s.connect_ex((HOST, port))
                if code in (0, errno.EINPROGRESS):
                    floods.append(s)
                else:
                    s.close()
            statuses, slowest = [], 0.0
            unsent = list(floods)
            for _ in range(20):
                started = time.monotonic()
                canary.send(_get(b"/canary"))
                statuses.append(canary.read_response().status)
                slowest = max(slowest, time.monotonic() - started)
                for s in list(unsent):
                    try:
                        s.send(_get(b"/flood"))
                    except OSError:
                        # Not connected (yet): try again next round.
                        continue
                    unsent.remove(s)
            time.sleep(0.5)
            answered = 0
            for s in floods:
                _closed(s)
                if s.received.startswith(b"HTTP/1.1 "):
                    answered += 1
            return statuses, slowest, answered, blockingCallFromThread(reactor, snapshot)
        finally:
            canary.close()
            for s in holders + floods:
                s.close()

    @defer.inlineCallbacks
    def test_connection_flood(self):
        """
        With max_connections = 20 on the listener and 20 connections open,
        a flood of 300 more gets no service (accepting is paused; the
        kernel holds or drops them) while the canary's keep-alive
        connection is served as fast as usual; the limit is logged, and
        once the flood goes away new connections are served again.
        """
        origin = self.ok_origin()
        proxy = yield self.start_config(
            origin.port, "[timeouts]\nrequest_head = 30\n", listener="max_connections = 20\n")
        statuses, slowest, answered, received = yield self.in_thread(
            self._flood, proxy.port, 20, 300, lambda: [r.target for r in origin.requests])
        self.log.info("flood: canary slowest {slow:.3f}s, flood answered {n}",
                      slow=slowest, n=answered)
        self.assertEqual(statuses, [200] * 20)
        self.assertLess(slowest, CANARY_LIMIT)
        self.assertEqual(answered, 0)
        # (Once the flood closes, the proxy accepts what waited in the
        # kernel's queue, and may forward a request sent before the close.)
        self.assertEqual(received, [b"/canary"] * 21)
        self.assertIsNotNone(proxy.find_line(
            "limit of 20 client connections on listener main reached"))

        def after():
            # The flood's connections that waited in the kernel's queue are
            # accepted (and found closed) first; until then a new one can
            # come in the burst accepted at the limit, and be reset.  Try
            # again, at most 40 times, 50 ms apart.
            for _ in range(39):
                try:
                    return _timed_get(proxy.port, b"/after")[0]
                except (ConnectionResetError, ConnectionClosed):
                    time.sleep(0.05)
            return _timed_get(proxy.port, b"/after")[0]

        resp = yield self.in_thread(after)
        self.assertEqual(resp.status, 200)


class OverloadTests(_AbuseTestCase):
    """
    Too many requests in flight are answered 503 at once, and the proxy
    recovers by itself.
    """

    @defer.inlineCallbacks
    def test_overload_503_and_recovery(self):
        """
        With max_in_flight = 3 and three requests held by a slow origin, a
        fourth is answered 503 with Retry-After within a second; once the
        origin answers, the held requests complete and new ones are served.
        """
        held = []
        origin = self.start_origin(lambda proto, req: held.append(proto))
        proxy = yield self.start_config(origin.port, "[limits]\nmax_in_flight = 3\n")
        pending = [self.in_thread(self.exchange, proxy.port, _get(b"/held")) for _ in range(3)]
        yield self._wait_for(lambda: len(held) == 3, 10, "three requests at the origin")
        resp, elapsed = yield self.in_thread(_timed_get, proxy.port, b"/extra")
        self.assertLess(elapsed, CANARY_LIMIT)
        self.assertEqual(resp.status, 503)
        self.assertEqual(resp.headers[b"retry-after"], b"1")
        self.assertEqual(len(held), 3)
        for proto in held:
            proto.transport.write(_ok(b"late"))
        results = yield defer.gatherResults(pending)
        self.assertEqual([r.status for r in results], [200, 200, 200])
        origin.handler = lambda proto, req: proto.transport.write(_ok(b"ok"))
        resp, _ = yield self.in_thread(_timed_get, proxy.port, b"/again")
        self.assertEqual(resp.status, 200)
