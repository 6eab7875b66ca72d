# -*- test-case-name: tests.test_e2e -*-
"""
End-to-end tests: the installed proxy, run by C{twistd} as a child process,
between a real client socket and a real origin server on 127.0.0.1.

The unit tests in L{tests.test_proxy} check the codecs byte by byte on
memory transports; these check what only real sockets show: that pooled
upstream connections are really reused, that a 1 GiB body streams through
in bounded memory when one side is slow, that closing or killing either
side closes the other, that malformed requests never reach the origin, and
that the packaged twistd plugin is found.

The origin runs in the test process on trial's real reactor
(L{tests.e2e_support.OriginFactory}); clients are blocking sockets in
threads (L{tests.e2e_support.RawClient}), so that they send exactly the
bytes written here.  Every test is bounded by C{timeout}, every socket
operation by a socket timeout, and each proxy process is stopped by its PID
in cleanup.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time

from twisted.internet import defer, reactor, task
from twisted.internet.interfaces import IPullProducer
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tests.e2e_support import (
    HOST,
    TWISTD,
    E2ETestCase,
    ProxyProcess,
    RawClient,
    Response,
    child_env,
    completes,
    get_request,
    ok_response,
    unused_port,
)

GIB = 1 << 30
MIB = 1 << 20
# How much the proxy's resident memory may grow over its idle size while
# 1 GiB streams (a bound on growth, so that it holds for interpreters whose
# idle size differs: about 57 MB under CPython, 117 MB under PyPy).
RSS_GROWTH_LIMIT_KIB = 48 * 1024


# The names these tests have always used.
_ok = ok_response
_get = get_request


class _ProxyTestCase(E2ETestCase):
    """
    Starts origins and quick-mode proxies for a test and stops them after
    it.
    """

    start_proxy = E2ETestCase.start_quick_proxy
    # The names of the helpers before they moved to E2ETestCase, which
    # test modules may still use.
    _close_origin_connections = E2ETestCase.close_origin_connections
    _wait_for = E2ETestCase.wait_for

    def exchange(self, port: int, request: bytes, method: bytes = b"GET") -> Response:
        """
        In a thread: send C{request} on a new connection and read one
        response, then whether the proxy closed the connection.
        """
        client = RawClient(port)
        try:
            client.send(request)
            resp = client.read_response(method)
            resp.closed = client.at_eof(wait=2.0)
            return resp
        finally:
            client.close()


class KeepAliveTests(_ProxyTestCase):
    """
    Upstream connections are pooled and reused, whoever the client is.
    """

    def _origin(self):
        count = [0]

        def handler(proto, req):
            count[0] += 1
            proto.transport.write(_ok(b"response %d" % count[0]))

        return self.start_origin(handler)

    @staticmethod
    def _requests(port: int, connections: int, per_connection: int):
        """
        In a thread: C{connections} client connections one after the other,
        each sending C{per_connection} requests one after the other.
        """
        bodies = []
        for _ in range(connections):
            client = RawClient(port)
            try:
                for _ in range(per_connection):
                    client.send(_get(b"/ka"))
                    resp = client.read_response()
                    bodies.append((resp.status, resp.body))
            finally:
                client.close()
        return bodies

    @defer.inlineCallbacks
    def test_one_client_connection(self):
        """
        Twenty sequential requests on one client connection all travel on
        one upstream connection: the origin accepts exactly one.  (On the
        proxy's own reactor, which twistd installs when none is chosen.)
        """
        origin = self._origin()
        proxy = yield self.start_proxy(origin.port)
        bodies = yield self.in_thread(self._requests, proxy.port, 1, 20)
        self.assertEqual(bodies, [(200, b"response %d" % i) for i in range(1, 21)])
        self.assertIn(b"reactor class: twistproxy.reactor.EPollReactor", proxy.output)
        self.assertEqual(origin.connections_made, 1)
        self.assertEqual(len(origin.requests), 20)

    @defer.inlineCallbacks
    def test_several_client_connections(self):
        """
        Twenty sequential requests spread over four client connections
        opened one after the other still use a single upstream connection:
        the pooled connection outlives each client connection.
        """
        origin = self._origin()
        proxy = yield self.start_proxy(origin.port)
        bodies = yield self.in_thread(self._requests, proxy.port, 4, 5)
        self.assertEqual(bodies, [(200, b"response %d" % i) for i in range(1, 21)])
        self.assertEqual(origin.connections_made, 1)


@implementer(IPullProducer)
class _Generator:
    """
    Writes C{total} bytes of a repeated block to a transport as fast as the
    transport takes them, without ever holding more than one block.
    """

    def __init__(self, transport, total: int, block: bytes):
        self.transport = transport
        self.remaining = total
        self.block = block
        self.sent = 0

    def resumeProducing(self) -> None:
        n = min(self.remaining, len(self.block))
        if n:
            self.transport.write(self.block if n == len(self.block) else self.block[:n])
            self.remaining -= n
            self.sent += n
        if not self.remaining:
            self.transport.unregisterProducer()

    def stopProducing(self) -> None:
        self.remaining = 0


class _RSSSampler:
    """
    Records the VmRSS of a proxy process, sampled on the reactor, and kills
    the process if it grows past C{kill_above_kib}: a proxy that buffers a
    whole 1 GiB body must fail the test, not exhaust the machine.
    """

    def __init__(self, proxy: ProxyProcess, kill_above_kib: int, interval: float = 0.05):
        self.proxy = proxy
        self.kill_above_kib = kill_above_kib
        self.samples = []
        self._loop = task.LoopingCall(self._sample)
        self._loop.start(interval, now=True)

    def _sample(self) -> None:
        try:
            rss = self.proxy.rss_kib()
        except (OSError, ValueError):
            # The process has exited (or is exiting).
            return
        self.samples.append(rss)
        if rss > self.kill_above_kib:
            self.proxy.kill()

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()
        self._sample()

    @property
    def max_kib(self) -> int:
        return max(self.samples, default=0)


class StreamingTests(_ProxyTestCase):
    """
    A 1 GiB body goes through the proxy in either direction, with the far
    side slow, while the proxy's memory stays bounded.
    """

    timeout = 60
    # Slow reader: this many bytes, then a pause of PAUSE seconds.
    BURST = 32 * MIB
    PAUSE = 0.1

    @staticmethod
    def _slow_download(port: int, burst: int, pause: float):
        """
        In a thread: GET /big and read the body in bursts of C{burst} bytes
        separated by pauses, counting bytes without keeping them.
        """
        client = RawClient(port, timeout=30)
        try:
            started = time.monotonic()
            client.send(_get(b"/big"))
            head = client.read_head()
            resp = Response(head)
            length = int(resp.headers[b"content-length"])
            received = len(client._buffer)
            client._buffer = b""
            since_pause = received
            buf = bytearray(MIB)
            sock = client.sock
            pauses = 0
            while received < length:
                try:
                    n = sock.recv_into(buf, min(len(buf), length - received))
                except OSError:
                    # The proxy went away (see _RSSSampler).
                    break
                if not n:
                    break
                received += n
                since_pause += n
                if since_pause >= burst:
                    since_pause = 0
                    pauses += 1
                    time.sleep(pause)
            elapsed = time.monotonic() - started
            # Nothing may follow the declared body.
            extra = client.unexpected_bytes(wait=0.2)
            return resp, received, elapsed, pauses, extra
        finally:
            client.close()

    @defer.inlineCallbacks
    def test_download_slow_client(self):
        """
        A 1 GiB response generated by the origin reaches a client that reads
        in bursts with pauses, byte for byte, and the proxy's resident
        memory grows by less than 48 MiB over its idle size throughout: the proxy stops reading from
        the origin while the client is not reading.
        """
        generators = []

        def handler(proto, req):
            proto.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % GIB)
            gen = _Generator(proto.transport, GIB, b"\xa5" * (256 * 1024))
            generators.append(gen)
            proto.transport.registerProducer(gen, False)

        origin = self.start_origin(handler)
        proxy = yield self.start_proxy(origin.port)
        idle_kib = proxy.rss_kib()
        limit_kib = idle_kib + RSS_GROWTH_LIMIT_KIB
        sampler = _RSSSampler(proxy, kill_above_kib=2 * limit_kib)
        try:
            resp, received, elapsed, pauses, extra = yield self.in_thread(
                self._slow_download, proxy.port, self.BURST, self.PAUSE
            )
        finally:
            sampler.stop()
        peak_kib = proxy.peak_rss_kib() if proxy.running else sampler.max_kib
        self.log.info(
            "e2e download: {size} bytes in {elapsed:.1f}s ({rate:.0f} MiB/s), "
            "{pauses} pauses; proxy RSS idle {idle} KiB, max sampled {max} KiB "
            "over {n} samples, VmHWM {peak} KiB",
            size=received, elapsed=elapsed, rate=received / MIB / elapsed,
            pauses=pauses, idle=idle_kib, max=sampler.max_kib,
            n=len(sampler.samples), peak=peak_kib,
        )
        self.assertLess(sampler.max_kib, limit_kib)
        self.assertLess(peak_kib, limit_kib)
        self.assertGreater(len(sampler.samples), 10)
        self.assertEqual(resp.status, 200)
        self.assertEqual(received, GIB)
        self.assertEqual(generators[0].sent, GIB)
        self.assertEqual(extra, b"")

    @staticmethod
    def _upload(port: int, total: int):
        """
        In a thread: POST C{total} bytes as fast as the proxy accepts them,
        then read the response.
        """
        client = RawClient(port, timeout=30)
        try:
            started = time.monotonic()
            client.send(
                b"POST /up HTTP/1.1\r\nHost: e2e.test\r\nContent-Length: %d\r\n\r\n" % total
            )
            block = memoryview(b"\x5a" * MIB)
            sent = 0
            try:
                while sent < total:
                    n = min(len(block), total - sent)
                    client.sock.sendall(block[:n])
                    sent += n
                resp = client.read_response()
            except OSError:
                # The proxy went away (see _RSSSampler): report how far
                # the upload got.
                resp = None
            return resp, sent, time.monotonic() - started
        finally:
            client.close()

    @defer.inlineCallbacks
    def test_upload_slow_origin(self):
        """
        A 1 GiB request body reaches an origin that stops reading for a
        while after every 32 MiB, byte for byte, and the proxy's resident
        memory grows by less than 48 MiB over its idle size throughout: the
        proxy stops reading from the client while the origin is not reading.
        """
        stalls = []

        def on_body(proto, req, data):
            before = req.body_received - len(data)
            done = req.body_received == req.content_length
            if before // self.BURST != req.body_received // self.BURST and not done:
                stalls.append(req.body_received)
                proto.transport.pauseProducing()
                resume = reactor.callLater(self.PAUSE, proto.transport.resumeProducing)
                self.addCleanup(lambda: resume.active() and resume.cancel())

        def handler(proto, req):
            proto.transport.write(_ok(b"%d" % req.body_received))

        origin = self.start_origin(handler, on_body=on_body)
        proxy = yield self.start_proxy(origin.port)
        idle_kib = proxy.rss_kib()
        limit_kib = idle_kib + RSS_GROWTH_LIMIT_KIB
        sampler = _RSSSampler(proxy, kill_above_kib=2 * limit_kib)
        try:
            resp, sent, elapsed = yield self.in_thread(self._upload, proxy.port, GIB)
        finally:
            sampler.stop()
        peak_kib = proxy.peak_rss_kib() if proxy.running else sampler.max_kib
        self.log.info(
            "e2e upload: {size} bytes in {elapsed:.1f}s ({rate:.0f} MiB/s), "
            "{pauses} origin stalls; proxy RSS idle {idle} KiB, max sampled "
            "{max} KiB over {n} samples, VmHWM {peak} KiB",
            size=sent, elapsed=elapsed, rate=sent / MIB / elapsed,
            pauses=len(stalls), idle=idle_kib, max=sampler.max_kib,
            n=len(sampler.samples), peak=peak_kib,
        )
        self.assertLess(sampler.max_kib, limit_kib)
        self.assertLess(peak_kib, limit_kib)
        self.assertGreater(len(sampler.samples), 10)
        self.assertEqual(sent, GIB)
        self.assertEqual((resp.status, resp.body), (200, b"%d" % GIB))
        [req] = origin.requests
        self.assertEqual(req.body_received, GIB)
        self.assertEqual(len(stalls), GIB // self.BURST - 1)


class FailureTests(_ProxyTestCase):
    """
    When one side goes away, the proxy tells the other side.
    """

    @defer.inlineCallbacks
    def _client_leaves(self, origin_sends: bytes):
        """
        A client sends a request and, once the origin has it and has sent
        C{origin_sends}, reads those bytes and closes its connection.

        @return: A L{Deferred} firing with the seconds between the client
            closing and the origin's connection being closed.
        """
        answered = threading.Event()

        def handler(proto, req):
            proto.transport.write(origin_sends)
            answered.set()

        origin = self.start_origin(handler)
        proxy = yield self.start_proxy(origin.port)
        lost = origin.next_lost().addCallback(lambda _: time.monotonic())

        def client():
            c = RawClient(proxy.port)
            try:
                c.send(_get(b"/slow"))
                if not answered.wait(10):
                    raise AssertionError("the request never reached the origin")
                if origin_sends:
                    Response(c.read_head())
                    c.read_exactly(len(origin_sends.partition(b"\r\n\r\n")[2]))
                closed_at = time.monotonic()
            finally:
                c.close()
            return closed_at

        closed_at = yield self.in_thread(client)
        lost_at = yield lost.addTimeout(5, reactor)
        self.assertEqual(origin.connections_made, 1)
        # Closed because the client left, not before.
        self.assertGreaterEqual(lost_at, closed_at)
        self.log.info(
            "e2e client abort: origin connection closed {delay:.1f} ms after the client's",
            delay=(lost_at - closed_at) * 1000,
        )
        return lost_at - closed_at

    @defer.inlineCallbacks
    def test_client_abort_during_response(self):
        """
        When a client closes its connection while the origin is slowly
        sending a response (head and a few body bytes of a million), the
        proxy closes its connection to the origin within two seconds.
        """
        delay = yield self._client_leaves(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nfirst bytes"
        )
        self.assertLess(delay, 2.0)

    @defer.inlineCallbacks
    def test_client_abort_before_response(self):
        """
        When a client closes its connection while the origin has the request
        but has not answered yet, the proxy closes its connection to the
        origin within two seconds.
        """
        delay = yield self._client_leaves(b"")
        self.assertLess(delay, 2.0)

    @defer.inlineCallbacks
    def test_backend_down(self):
        """
        With nothing listening on the upstream port, the client gets a 502
        with a short body that names neither the backend's address nor its
        port.
        """
        port = unused_port()
        proxy = yield self.start_proxy(port)
        resp = yield self.in_thread(self.exchange, proxy.port, _get(b"/"))
        self.assertEqual(resp.status, 502)
        self.assertTrue(resp.complete)
        self.assertLess(len(resp.body), 100)
        for leak in (HOST.encode("ascii"), b"%d" % port):
            self.assertNotIn(leak, resp.head + resp.body)

    @defer.inlineCallbacks
    def _backend_dies(self, head: bytes, partial: bytes, body: bytes):
        """
        The origin sends C{head} and C{partial}; once the client has
        received the bytes of C{body} (one byte value that no head
        contains, repeated), the origin resets its connection.

        @return: A L{Deferred} firing with the client's L{Response}.
        """
        def handler(proto, req):
            proto.transport.write(head + partial)

        def origin_dies():
            for proto in list(origin.open):
                proto.transport.abortConnection()

        origin = self.start_origin(handler)
        proxy = yield self.start_proxy(origin.port)

        def client():
            c = RawClient(proxy.port)
            try:
                c.send(_get(b"/dies"))
                while c._buffer.count(body[:1]) < len(body):
                    c._fill()
                reactor.callFromThread(origin_dies)
                resp = c.read_response()
                resp.closed = c.at_eof(wait=2.0)
                return resp
            finally:
                c.close()

        resp = yield self.in_thread(client)
        return resp

    @defer.inlineCallbacks
    def test_backend_dies_content_length(self):
        """
        When the origin declares Content-Length: 1000, sends 100 bytes and
        dies, the client gets the 100 bytes and then a closed connection: a
        visibly truncated response, never a complete one.
        """
        body = b"\x00" * 100
        resp = yield self._backend_dies(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", body, body
        )
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.headers[b"content-length"], b"1000")
        self.assertFalse(resp.complete)
        self.assertEqual(resp.body, body)
        self.assertTrue(resp.closed)

    @defer.inlineCallbacks
    def test_backend_dies_chunked(self):
        """
        When the origin sends a chunked response and dies after one 100-byte
        chunk, the client gets that chunk and then a closed connection, with
        no terminating zero-length chunk.
        """
        body = b"\x01" * 100
        resp = yield self._backend_dies(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"64\r\n" + body + b"\r\n",
            body,
        )
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.headers[b"transfer-encoding"], b"chunked")
        self.assertFalse(resp.complete)
        self.assertEqual(resp.body, body)
        self.assertTrue(resp.closed)


# A request that an ambiguity would smuggle past the proxy.
_SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: e2e.test\r\n\r\n"


class ShutdownTests(_ProxyTestCase):
    """
    SIGTERM shuts down gracefully.
    """

    @defer.inlineCallbacks
    def test_slow_request_survives_sigterm(self):
        """
        A request in flight when SIGTERM arrives is answered completely,
        with Connection: close, and the proxy then exits; new connections
        are refused meanwhile.
        """
        def handler(proto, request):
            reactor.callLater(1.0, proto.transport.write, _ok(b"slow but complete"))

        origin = self.start_origin(handler)
        proxy = yield self.start_proxy(origin.port)
        answer = self.in_thread(self.exchange, proxy.port, b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        yield self.wait_for(lambda: origin.requests, 5, "the request to reach the origin")
        ended = proxy.stop(grace=10)

        def refused() -> bool:
            # Within the second the origin takes, once the signal landed.
            deadline = time.monotonic() + 0.8
            while time.monotonic() < deadline:
                try:
                    socket.create_connection((HOST, proxy.port), timeout=1.0).close()
                except ConnectionRefusedError:
                    return True
                except ConnectionResetError:
                    # Queued in the backlog just as the listening socket
                    # closed: try again, the next one must be refused.
                    pass
                time.sleep(0.02)
            return False

        self.assertTrue((yield self.in_thread(refused)), "still accepting after SIGTERM")
        response = yield answer
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, b"slow but complete")
        self.assertTrue(response.complete)
        self.assertEqual(response.headers.get(b"connection"), b"close")
        yield ended
        self.assertFalse(proxy.running)


    @defer.inlineCallbacks
    def test_second_sigterm_ends_drain(self):
        """
        A request the origin never answers keeps the proxy draining after
        SIGTERM (the drain time is 30 seconds); a second SIGTERM ends the
        proxy at once, cutting that request's connection.
        """
        origin = self.start_origin(lambda proto, request: None)
        proxy = yield self.start_proxy(origin.port)

        answer = self.in_thread(completes, proxy.port, b"GET /never HTTP/1.1\r\nHost: a\r\n\r\n")
        yield self.wait_for(lambda: origin.requests, 5, "the request to reach the origin")
        yield self.assert_second_term_ends_drain(proxy, answer)


class SmugglingTests(_ProxyTestCase):
    """
    Requests whose framing could be read two ways are answered 400 and the
    connection is closed; nothing of them reaches the origin.
    """

    @defer.inlineCallbacks
    def _all_rejected(self, requests):
        def handler(proto, req):
            proto.transport.write(_ok(b"origin"))

        origin = self.start_origin(handler)
        proxy = yield self.start_proxy(origin.port)
        for request in requests:
            resp = yield self.in_thread(self.exchange, proxy.port, request)
            self.assertEqual(
                (resp.status, resp.closed), (400, True), f"for {request!r}"
            )
        # Give a forwarded request time to arrive, were there one.
        yield self.sleep(0.2)
        self.assertEqual((origin.connections_made, origin.bytes_received), (0, 0))
        # The proxy itself still works.
        resp = yield self.in_thread(self.exchange, proxy.port, _get(b"/", b"Connection: close\r\n"))
        self.assertEqual((resp.status, resp.body), (200, b"origin"))

    def test_content_length_and_transfer_encoding(self):
        """
        A request with both Content-Length and Transfer-Encoding, in either
        order, is rejected.
        """
        return self._all_rejected([
            b"POST / HTTP/1.1\r\nHost: e2e.test\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + _SMUGGLED,
            b"POST / HTTP/1.1\r\nHost: e2e.test\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Length: 49\r\n\r\n0\r\n\r\n" + _SMUGGLED,
        ])

    def test_obfuscated_transfer_encoding(self):
        """
        A Transfer-Encoding field that some server might read as chunked
        and another not is rejected.
        """
        body = b"0\r\n\r\n" + _SMUGGLED
        return self._all_rejected([
            b"POST / HTTP/1.1\r\nHost: e2e.test\r\n" + te + b"\r\n\r\n" + body
            for te in [
                b"Transfer-Encoding : chunked",
                b"Transfer-Encoding: xchunked",
                b"Transfer-Encoding: chunked, identity",
                b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
                b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
                b"Transfer-Encoding:\x0bchunked",
                b"X: y\r\n Transfer-Encoding: chunked",
            ]
        ])

    def test_differing_content_lengths(self):
        """
        A request with two different Content-Length values, in two fields or
        in one, is rejected.
        """
        return self._all_rejected([
            b"POST / HTTP/1.1\r\nHost: e2e.test\r\nContent-Length: 0\r\n"
            b"Content-Length: 43\r\n\r\n" + _SMUGGLED,
            b"POST / HTTP/1.1\r\nHost: e2e.test\r\nContent-Length: 0, 43\r\n\r\n"
            + _SMUGGLED,
        ])

    def test_bare_line_feed(self):
        """
        A request head in which a line ends in a bare LF (or a bare CR) is
        rejected.
        """
        return self._all_rejected([
            b"GET / HTTP/1.1\nHost: e2e.test\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: e2e.test\nX: y\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: e2e.test\rX: y\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: e2e.test\r\nTransfer-Encoding: chunked\n"
            b"Content-Length: 43\r\n\r\n" + _SMUGGLED,
        ])


class UpgradeTests(_ProxyTestCase):
    """
    After a 101 the proxy relays bytes both ways untouched.
    """

    @defer.inlineCallbacks
    def test_websocket_echo(self):
        """
        The origin answers a WebSocket-style upgrade with 101 and echoes;
        bytes the client sends after the 101 come back unchanged, and the
        origin receives exactly those bytes.
        """
        tunnelled = []

        def handler(proto, req):
            proto.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                b"Upgrade: websocket\r\n\r\n"
            )
            proto.tunnel = True

        def on_tunnel(proto, data):
            tunnelled.append(data)
            proto.transport.write(data)

        origin = self.start_origin(handler, on_tunnel=on_tunnel)
        proxy = yield self.start_proxy(origin.port)
        messages = [b"hello", b"\x00\xff binary \r\n\r\n", b"x" * 100000]

        def client():
            c = RawClient(proxy.port)
            try:
                c.send(_get(b"/ws", b"Connection: Upgrade\r\nUpgrade: websocket\r\n"))
                resp = Response(c.read_head())
                echoed = []
                for m in messages:
                    c.send(m)
                    echoed.append(c.read_exactly(len(m)))
                return resp, echoed
            finally:
                c.close()

        resp, echoed = yield self.in_thread(client)
        self.assertEqual(resp.status, 101)
        self.assertEqual(resp.headers[b"upgrade"], b"websocket")
        self.assertEqual(resp.headers[b"connection"].lower(), b"upgrade")
        self.assertEqual(echoed, messages)
        self.assertEqual(b"".join(tunnelled), b"".join(messages))


class PackageListTests(SynchronousTestCase):
    """
    setup.cfg lists every package of the source tree (it names them one by
    one, so that the twisted.plugins dropin is kept).
    """

    def test_every_package_listed(self):
        """
        Each directory under C{twistproxy/} with an C{__init__.py} is in
        setup.cfg's C{packages}: a new subpackage left out would be missing
        from the installed proxy.
        """
        import configparser

        top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        setup = configparser.ConfigParser()
        setup.read(os.path.join(top, "setup.cfg"))
        listed = set(setup["options"]["packages"].split())
        found = {
            os.path.relpath(root, top).replace(os.sep, ".")
            for root, _, names in os.walk(os.path.join(top, "twistproxy"))
            if "__init__.py" in names
        }
        self.assertEqual(found - listed, set())


class PackagingTests(_ProxyTestCase):
    """
    The installed distribution is usable by twistd.
    """

    def _run_child(self, args):
        cwd = self.mktemp()
        os.makedirs(cwd)
        return getProcessOutputAndValue(args[0], args[1:], env=child_env(), path=cwd)

    @defer.inlineCallbacks
    def test_twistd_help_lists_plugin(self):
        """
        C{twistd --help}, run outside the source tree, lists the twistproxy
        plugin among its commands.
        """
        out, err, code = yield self._run_child(list(TWISTD) + ["--help"])
        self.assertEqual(code, 0, err)
        names = [line.split()[0] for line in out.splitlines() if line[:4] == b"    " and line.split()]
        self.assertIn(b"twistproxy", names)

    @defer.inlineCallbacks
    def test_distribution_ships_dropin(self):
        """
        The installed distribution's file list contains the twistd dropin
        C{twisted/plugins/twistproxy_plugin.py}, the file exists, and the
        distribution ships no C{__init__.py} under C{twisted/} (which would
        shadow Twisted itself).
        """
        script = (
            "import importlib.metadata as m, json\n"
            "files = m.files('twistproxy') or []\n"
            "print(json.dumps([[str(f), f.locate().exists()] for f in files]))\n"
        )
        out, err, code = yield self._run_child([sys.executable, "-c", script])
        self.assertEqual(code, 0, err)
        files = dict(json.loads(out))
        self.assertIs(files.get("twisted/plugins/twistproxy_plugin.py"), True)
        self.assertEqual(
            [f for f in files if f.startswith("twisted/") and f.endswith("__init__.py")], []
        )
