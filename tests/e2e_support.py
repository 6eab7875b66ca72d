# -*- test-case-name: tests.test_e2e -*-
"""
Helpers for the end-to-end tests (L{tests.test_e2e}, the other
C{tests.test_e2e_*} and the C{tests.test_faults_*} modules).

Those tests run the installed proxy the way an operator does, as a C{twistd}
child process, and talk to it over real loopback sockets.  Three pieces
surround it:

  - L{ProxyProcess} starts C{twistd -n twistproxy ...}, learns its
    ephemeral port from the "listening on" log line, samples its resident
    memory from C{/proc}, and stops it by PID;

  - L{OriginFactory} is a small HTTP/1.1 origin server running in the test
    process on the real reactor.  It parses just enough of each request to
    call a handler, and counts what the proxy does to it: connections made
    and lost, bytes received;

  - L{RawClient} is a blocking socket client, meant to run in a thread
    (C{deferToThread}), that sends exactly the bytes it is given and reads
    responses byte-exactly, so that truncated or smuggled messages are
    visible as such.  Every socket operation has a timeout, so a thread can
    never outlive its test by much;

  - L{E2ETestCase}, the base of those tests, starts origins and proxies
    (from a configuration text, or in quick mode) for one test and stops
    them after it; L{app_config} and L{listener_config} write the
    configuration most of them need;

  - L{PebbleMixin} starts Debian's C{pebble}, an ACME test CA, for the
    tests of automatic certificates.

Only 127.0.0.1 is used.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Set, Tuple

from twisted.internet import defer, protocol
from twisted.internet import error as _error, reactor as _reactor, task as _task
from twisted.internet import threads as _threads
from twisted.logger import Logger
from twisted.trial.unittest import SkipTest, TestCase as _TestCase

from twistproxy.testing.certificates import cert_pem, issue_certificate, key_pem

HOST = "127.0.0.1"


def _twistd() -> List[str]:
    """
    The installed C{twistd} script next to the interpreter running the
    tests, run by that interpreter; or, where there is none (an unusual
    layout), the same entry point through C{-c}.
    """
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.isfile(script):
        return [sys.executable, script]
    return [
        sys.executable, "-c",
        "import sys; sys.argv[0] = 'twistd'; "
        "from twisted.scripts.twistd import run; run()",
    ]


# How the tests run twistd.
TWISTD = tuple(_twistd())

_LISTENING = re.compile(
    rb"twistproxy listener (\S+) listening on 127\.0\.0\.1:(\d+)"
)


def child_env() -> Dict[str, str]:
    """
    The environment for child processes: the installed twistproxy, not the
    source tree, and unbuffered output so log lines arrive as written.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _ephemeral_ports() -> Tuple[int, int]:
    # The range the kernel picks outgoing connections' local ports from.
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(word) for word in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def _free(port: int) -> bool:
    # Nothing bound to this loopback port, over TCP or UDP.
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


# Ports this process has handed out: two picks in one test, or in two
# tests one after the other, never get the same port.
_GIVEN: Set[int] = set()


def _worker_slice(low: int, high: int) -> Tuple[int, int]:
    # "trial -jN" runs worker K in the directory _trial_temp/K, and the
    # workers start processes at the same time: each picks from its own
    # slice of the range, so two workers never choose the same port.
    name = os.path.basename(os.getcwd())
    if not name.isdigit():
        return low, high
    slices = 8
    width = (high - low) // slices
    start = low + (int(name) % slices) * width
    return start, start + width


def unused_port() -> int:
    """
    A loopback port that nothing is bound to, over TCP or UDP, chosen at
    random below the kernel's ephemeral range: a port from that range may
    be taken by any outgoing connection between this choice and the bind
    of the process the test starts, which on a busy machine happens
    ("Address already in use").  No port is given twice in one process,
    and each C{trial -j} worker picks from its own slice.
    """
    low, high = _worker_slice(10000, max(_ephemeral_ports()[0], 10001))
    for _ in range(200):
        port = random.randrange(low, high)
        if port not in _GIVEN and _free(port):
            _GIVEN.add(port)
            return port
    s = socket.socket()
    try:
        s.bind((HOST, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def read_status_kib(pid: int, field: str) -> int:
    """
    A memory figure of process C{pid} from C{/proc/PID/status}, in KiB.

    @param field: C{'VmRSS'} (resident now) or C{'VmHWM'} (peak resident).
    """
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(field.encode("ascii") + b":"):
                return int(line.split()[1])
    raise ValueError(f"no {field} for process {pid}")


class _ProxyProcessProtocol(protocol.ProcessProtocol):
    def __init__(self, owner: ProxyProcess):
        self.owner = owner

    def outReceived(self, data: bytes) -> None:
        self.owner._output(data)

    def errReceived(self, data: bytes) -> None:
        self.owner._output(data)

    def processEnded(self, reason) -> None:
        self.owner._ended(reason)


class ProxyProcess:
    """
    One C{twistd -n twistproxy} child process.

    @ivar port: The port the first listener got, once started.
    @ivar pid: The child's process id.
    @ivar output: Everything it wrote to stdout and stderr so far.
    @ivar exit_reason: The L{Failure} it ended with, once it has.
    """

    def __init__(self, reactor, args: List[str], cwd: str, activated=None):
        """
        @param activated: A listening socket to hand the child as systemd
            does with socket activation (descriptor 3, C{LISTEN_FDS},
            C{LISTEN_PID}), or C{None}.
        """
        self._reactor = reactor
        self._args = args
        self._cwd = cwd
        self._activated = activated
        self._started: Optional[defer.Deferred] = None
        self._ended_waiters: List[defer.Deferred] = []
        self._transport = None
        self.port: Optional[int] = None
        self.pid: Optional[int] = None
        self.output = b""
        self.exit_reason = None

    def start(self, timeout: float = 15.0) -> defer.Deferred:
        """
        Spawn the child.

        @return: A L{Deferred} that fires with the listening port, or fails
            (with the child's output) if it exits or takes longer than
            C{timeout} seconds.
        """
        self._started = defer.Deferred()
        argv = list(TWISTD) + ["-n", "--pidfile=", "twistproxy"] + self._args
        env, fds = child_env(), None
        if self._activated is not None:
            # LISTEN_PID must be the child's own pid: a shell learns it
            # and execs twistd in its place.
            argv = ["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$0" "$@"'] + argv
            env.update(LISTEN_FDS="1", LISTEN_FDNAMES="proxy")
            fds = {0: "w", 1: "r", 2: "r", 3: self._activated.fileno()}
        self._transport = self._reactor.spawnProcess(
            _ProxyProcessProtocol(self), argv[0], argv, env=env,
            path=self._cwd, childFDs=fds,
        )
        self.pid = self._transport.pid
        timer = self._reactor.callLater(timeout, self._fail_start, "startup timed out")
        started = self._started

        def stop_timer(result):
            if timer.active():
                timer.cancel()
            return result

        return started.addBoth(stop_timer)

    def _fail_start(self, why: str) -> None:
        d, self._started = self._started, None
        if d is not None:
            d.errback(RuntimeError(f"twistd {why}; output:\n{self.output.decode('utf-8', 'replace')}"))

    def _output(self, data: bytes) -> None:
        self.output += data
        if self._started is not None:
            m = _LISTENING.search(self.output)
            if m is not None:
                self.port = int(m.group(2))
                d, self._started = self._started, None
                d.callback(self.port)

    def _ended(self, reason) -> None:
        self.exit_reason = reason
        self._transport = None
        self._fail_start("exited before listening")
        waiters, self._ended_waiters = self._ended_waiters, []
        for d in waiters:
            d.callback(None)

    @property
    def running(self) -> bool:
        return self._transport is not None

    def rss_kib(self) -> int:
        return read_status_kib(self.pid, "VmRSS")

    def peak_rss_kib(self) -> int:
        return read_status_kib(self.pid, "VmHWM")

    def stop(self, grace: float = 5.0) -> defer.Deferred:
        """
        Send SIGTERM, and SIGKILL if the child is still there after
        C{grace} seconds.

        @return: A L{Deferred} that fires once the child has been reaped.
        """
        if self._transport is None:
            return defer.succeed(None)
        d = defer.Deferred()
        self._ended_waiters.append(d)
        self._transport.signalProcess("TERM")

        def kill():
            if self._transport is not None:
                self._transport.signalProcess("KILL")

        timer = self._reactor.callLater(grace, kill)

        def done(result):
            if timer.active():
                timer.cancel()
            return result

        return d.addBoth(done)

    def kill(self) -> None:
        """
        Send SIGKILL now.
        """
        self.signal("KILL")

    def signal(self, name: str) -> None:
        """
        Send the signal C{name} (C{"HUP"}, C{"KILL"} ...) if still running.
        """
        if self._transport is not None:
            self._transport.signalProcess(name)


class Request:
    """
    A request as the origin saw it.

    @ivar head: The raw head, without its final empty line.
    @ivar method: The method.
    @ivar target: The request target.
    @ivar headers: Lower-cased field names to their last value.
    @ivar content_length: The declared body length (0 when absent).
    @ivar body_received: Body bytes received so far.
    """

    def __init__(self, head: bytes):
        self.head = head
        lines = head.split(b"\r\n")
        self.method, self.target, _ = lines[0].split(b" ", 2)
        self.headers: Dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            self.headers[name.strip().lower()] = value.strip()
        self.content_length = int(self.headers.get(b"content-length", b"0"))
        self.body_received = 0


class OriginProtocol(protocol.Protocol):
    """
    One connection from the proxy to the origin.

    Calls C{factory.handler(self, request)} once a request head and its
    whole (Content-Length) body have arrived, and
    C{factory.on_body(self, request, data)}, if set, for every piece of
    body.  After a protocol switch every byte goes to C{factory.on_tunnel}.

    @ivar tunnel: Set by a handler that answered 101.
    """

    def __init__(self):
        self._buffer = b""
        self._request: Optional[Request] = None
        self.tunnel = False

    def connectionMade(self) -> None:
        self.factory.connections_made += 1
        self.factory.open.append(self)

    def connectionLost(self, reason=None) -> None:
        self.factory.connections_lost += 1
        self.factory.open.remove(self)
        waiters, self.factory.lost_waiters = self.factory.lost_waiters, []
        for d in waiters:
            d.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.factory.bytes_received += len(data)
        if self.tunnel:
            self.factory.on_tunnel(self, data)
            return
        while data:
            req = self._request
            if req is None:
                self._buffer += data
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                req = self._request = Request(self._buffer[:end])
                self.factory.requests.append(req)
                data, self._buffer = self._buffer[end + 4:], b""
                if not req.content_length:
                    self._request = None
                    self.factory.handler(self, req)
                    continue
            need = req.content_length - req.body_received
            piece, data = data[:need], data[need:]
            req.body_received += len(piece)
            if self.factory.on_body is not None:
                self.factory.on_body(self, req, piece)
            if req.body_received == req.content_length:
                self._request = None
                self.factory.handler(self, req)


class OriginFactory(protocol.Factory):
    """
    An origin server with counters.

    @ivar connections_made: Connections accepted.
    @ivar connections_lost: Connections closed (by either side).
    @ivar bytes_received: Every byte received on any connection.
    @ivar requests: Every request received, in order.
    @ivar open: The connections currently open.
    """

    protocol = OriginProtocol
    noisy = False

    def __init__(
        self,
        handler: Callable[[OriginProtocol, Request], None],
        on_body=None,
        on_tunnel=None,
    ):
        self.handler = handler
        self.on_body = on_body
        self.on_tunnel = on_tunnel
        self.connections_made = 0
        self.connections_lost = 0
        self.bytes_received = 0
        self.requests: List[Request] = []
        self.open: List[OriginProtocol] = []
        self.lost_waiters: List[defer.Deferred] = []

    def next_lost(self) -> defer.Deferred:
        """
        A L{Deferred} that fires when the next origin connection closes.
        """
        d = defer.Deferred()
        self.lost_waiters.append(d)
        return d


class Response:
    """
    A response as the client read it.

    @ivar head: The raw head, without its final empty line.
    @ivar status: The status code.
    @ivar headers: Lower-cased field names to their last value.
    @ivar body: The body bytes read (decoded, for a chunked response).
    @ivar complete: Whether the body's framing said it ended; C{False}
        when the connection closed first.
    @ivar closed: Whether the server closed the connection after the
        response (set by the test that reads it).
    """

    def __init__(self, head: bytes):
        self.head = head
        lines = head.split(b"\r\n")
        self.status = int(lines[0].split(b" ", 2)[1])
        self.headers: Dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            self.headers[name.strip().lower()] = value.strip()
        self.body = b""
        self.complete = False
        self.closed = False


class ConnectionClosed(Exception):
    """
    The peer closed the connection where more bytes were expected.
    """


class RawClient:
    """
    A blocking HTTP/1.1 client on one socket, for use in a thread.
    """

    def __init__(self, port: int, timeout: float = 20.0):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, size: int = 65536) -> None:
        data = self.sock.recv(size)
        if not data:
            raise ConnectionClosed()
        self._buffer += data

    def read_head(self) -> bytes:
        """
        Read up to and including the empty line ending a head.

        @return: The head without its empty line.
        @raises ConnectionClosed: If the connection closes first.
        """
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end >= 0:
                head, self._buffer = self._buffer[:end], self._buffer[end + 4:]
                return head
            self._fill()

    def read_exactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            self._fill()
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def _read_line(self) -> bytes:
        while True:
            end = self._buffer.find(b"\r\n")
            if end >= 0:
                line, self._buffer = self._buffer[:end], self._buffer[end + 2:]
                return line
            self._fill()

    def read_response(self, method: bytes = b"GET") -> Response:
        """
        Read one response, stopping quietly (C{complete=False}) if the
        connection closes inside its body.
        """
        resp = Response(self.read_head())
        chunked = resp.headers.get(b"transfer-encoding", b"").lower() == b"chunked"
        try:
            if method == b"HEAD" or resp.status in (204, 304) or resp.status < 200:
                resp.complete = True
            elif chunked:
                self._read_chunked(resp)
            elif b"content-length" in resp.headers:
                n = int(resp.headers[b"content-length"])
                while len(self._buffer) < n:
                    self._fill()
                resp.body, self._buffer = self._buffer[:n], self._buffer[n:]
                resp.complete = True
            else:
                resp.body = self.read_until_close()
                resp.complete = True
        except ConnectionClosed:
            if not chunked:
                resp.body = self._buffer
            self._buffer = b""
        return resp

    def _read_chunked(self, resp: Response) -> None:
        pieces = []
        try:
            while True:
                size = int(self._read_line().split(b";")[0], 16)
                if size == 0:
                    while self._read_line():
                        pass
                    resp.complete = True
                    return
                pieces.append(self.read_exactly(size))
                if self.read_exactly(2) != b"\r\n":
                    raise ValueError("bad chunk end")
        finally:
            resp.body = b"".join(pieces)

    def read_until_close(self) -> bytes:
        """
        Read everything until the peer closes the connection.
        """
        while True:
            try:
                self._fill()
            except ConnectionClosed:
                data, self._buffer = self._buffer, b""
                return data

    def unexpected_bytes(self, wait: float) -> bytes:
        """
        Whatever arrives within C{wait} seconds when nothing should, on a
        connection that stays open: C{b''} if nothing does.
        """
        if self._buffer:
            return self._buffer
        self.sock.settimeout(wait)
        try:
            return self.sock.recv(65536) or b""
        except socket.timeout:
            return b""

    def at_eof(self, wait: float = 5.0) -> bool:
        """
        Whether the peer has closed the connection (and sent nothing more)
        within C{wait} seconds.
        """
        if self._buffer:
            return False
        self.sock.settimeout(wait)
        try:
            return self.sock.recv(1) == b""
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True


def completes(port: int, request: bytes, timeout: float = 10.0) -> bool:
    """
    In a thread: whether C{request}, sent on a new connection, gets a whole
    response (C{False} when the connection fails or closes first).
    """
    client = RawClient(port, timeout=timeout)
    try:
        client.send(request)
        return client.read_response().complete
    except (OSError, ValueError, ConnectionClosed):
        return False
    finally:
        client.close()


# Helpers for the load-balancing tests in tests.test_e2e_balancing: origins
# that go away and come back on the same port, and a proxy whose log lines
# carry the time they arrived, so that tests can measure how long the proxy
# takes to notice.


class RestartableOrigin:
    """
    An L{OriginFactory} listening on a loopback port that a test can take
    away (L{stop}) and bring back (L{start}) on the same port number, as
    when an origin process dies and is restarted.

    @ivar factory: The origin's factory, with its counters.
    @ivar port: The port number, fixed by the first L{start}.
    @ivar name: A name for messages.
    """

    def __init__(self, reactor, factory: OriginFactory, name: str = "origin"):
        self._reactor = reactor
        self.factory = factory
        self.name = name
        self.port = 0
        self._listening = None

    @property
    def running(self) -> bool:
        return self._listening is not None

    def start(self, attempts: int = 50) -> defer.Deferred:
        """
        Listen on C{self.port} (an ephemeral port the first time).  A
        restart retries for a while if the kernel has lent the port number
        to an outgoing connection meanwhile.

        @return: A L{Deferred} that fires once listening.
        """
        def listen(left: int):
            try:
                self._listening = self._reactor.listenTCP(
                    self.port, self.factory, interface=HOST)
            except _error.CannotListenError:
                if left <= 1:
                    raise
                return _task.deferLater(self._reactor, 0.02, listen, left - 1)
            self.port = self._listening.getHost().port
            return None

        return defer.maybeDeferred(listen, attempts)

    def stop(self, timeout: float = 5.0) -> defer.Deferred:
        """
        Stop listening, then abort every open connection (the proxy's pooled
        ones included), as a crashed process would.

        @return: A L{Deferred} that fires once the listening socket is
            closed and no connection is left open.
        """
        listening, self._listening = self._listening, None
        stopped = (defer.maybeDeferred(listening.stopListening) if listening
                   else defer.succeed(None))
        deadline = time.monotonic() + timeout

        def abort(_):
            for proto in list(self.factory.open):
                proto.transport.abortConnection()
            return wait()

        def wait():
            if not self.factory.open:
                return None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: connections still open after {timeout}s")
            return _task.deferLater(self._reactor, 0.005, wait)

        return stopped.addCallback(abort)


class WatchedProxyProcess(ProxyProcess):
    """
    A L{ProxyProcess} that also keeps each complete output line with the
    time (C{time.monotonic()}) it arrived, so that a test can tell when the
    proxy logged something.

    @ivar lines: C{(arrival time, text)} for every complete line so far.
    """

    def __init__(self, reactor, args: List[str], cwd: str, activated=None):
        super().__init__(reactor, args, cwd, activated)
        self.lines: List[Tuple[float, str]] = []
        self._partial = b""

    def _output(self, data: bytes) -> None:
        now = time.monotonic()
        super()._output(data)
        *complete, self._partial = (self._partial + data).split(b"\n")
        for line in complete:
            self.lines.append((now, line.decode("utf-8", "replace")))

    def find_line(self, pattern: str, since: float = 0.0) -> Optional[Tuple[float, str]]:
        """
        The first line that arrived at or after C{since} and matches the
        regular expression C{pattern}, or C{None}.
        """
        regex = re.compile(pattern)
        for arrived, text in self.lines:
            if arrived >= since and regex.search(text):
                return arrived, text
        return None

    def wait_for_line(self, pattern: str, since: float = 0.0,
                      timeout: float = 10.0) -> defer.Deferred:
        """
        Wait for a line as L{find_line} finds it, polling every 5 ms.

        @return: A L{Deferred} firing with C{(arrival time, text)}, or
            failing with the output so far after C{timeout} seconds.
        """
        deadline = time.monotonic() + timeout

        def poll():
            found = self.find_line(pattern, since)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no log line matching {pattern!r} within {timeout}s; output:\n"
                    + self.output.decode("utf-8", "replace"))
            return _task.deferLater(self._reactor, 0.005, poll)

        return defer.maybeDeferred(poll)


def write_config(directory: str, text: str) -> str:
    """
    Write a proxy configuration file into C{directory}.

    @return: Its path.
    """
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "proxy.toml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def dns_server_factory():
    """
    An authoritative twisted.names server factory for the zone
    C{example.test} of C{tests/dns_zone.py}; give it to a
    L{twisted.names.dns.DNSDatagramProtocol} to serve over UDP.
    """
    from twisted.names.authority import PySourceAuthority
    from twisted.names.server import DNSServerFactory

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dns_zone.py")
    factory = DNSServerFactory(authorities=[PySourceAuthority(path)])
    factory.noisy = False
    return factory


# Helpers for the fault tests (tests.test_faults_*): the TCP sockets a
# process holds, read from /proc as ss(8) would show them.


# The states of /proc/net/tcp, by their hexadecimal code.
_TCP_STATES = {
    "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
    "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
    "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING",
}


@dataclass(frozen=True)
class TCPSocket:
    """
    One TCP socket a process holds: its state (C{"CLOSE_WAIT"} ...) and
    ports.
    """

    state: str
    local_port: int
    remote_port: int


def proxy_sockets(pid: int) -> List[TCPSocket]:
    """
    The TCP sockets (IPv4 and IPv6) that process C{pid} holds open now.
    """
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[9] in inodes:
                    found.append(TCPSocket(_TCP_STATES.get(fields[3], fields[3]),
                                           int(fields[1].rsplit(":", 1)[1], 16),
                                           int(fields[2].rsplit(":", 1)[1], 16)))
    return found


# The base of the end-to-end test cases (tests.test_e2e*, tests.test_faults_*):
# requests and configuration they all write, and a TestCase that starts
# origins and proxies for one test and stops them after it.  (Imported here
# for the same reason as above.)



def ok_response(body: bytes) -> bytes:
    """
    A whole C{200 OK} response with C{body}, as an origin writes it.
    """
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def get_request(path: bytes = b"/", extra: bytes = b"", host: bytes = b"e2e.test") -> bytes:
    """
    A C{GET} request head for C{path}, with the C{extra} header lines.
    """
    return b"GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (path, host, extra)


def listener_config(name: str = "main", extra: str = "") -> str:
    """
    The TOML of a listener C{name} on an ephemeral loopback port (the port
    L{ProxyProcess} learns if it is the first), with the C{extra} lines in
    its table.
    """
    return f'[listeners.{name}]\nendpoint = "tcp:0:interface={HOST}"\n{extra}\n'


def app_config(origin_port: int, listener: str = "", route: str = "") -> str:
    """
    The TOML of the simplest proxy: the listener C{main} (with the
    C{listener} lines), one upstream group C{app} of the origin on
    C{origin_port}, and one route to it (with the C{route} lines).
    """
    return (
        listener_config("main", listener)
        + f'[upstreams.app]\nservers = ["http://{HOST}:{origin_port}"]\n\n'
        + f'[[routes]]\nupstream = "app"\n{route}\n'
    )


def one_per_connection(port: int, request: bytes, count: int) -> List[Response]:
    """
    In a thread: send C{request} C{count} times, each on a new connection,
    and return the responses read.
    """
    responses = []
    for _ in range(count):
        client = RawClient(port)
        try:
            client.send(request)
            responses.append(client.read_response())
        finally:
            client.close()
    return responses


def read_access_log(proxy: ProxyProcess) -> bytes:
    """
    What C{proxy}, started by L{E2ETestCase.start_configured_proxy} with an
    C{access_log} file, has written to it.
    """
    with open(os.path.join(proxy.cwd, proxy.access_log), "rb") as f:
        return f.read()


class E2ETestCase(_TestCase):
    """
    Starts origins and proxies for a test, on the real reactor, and stops
    them after it: every origin's connections are aborted, every proxy
    process is stopped by its PID.
    """

    timeout = 30
    log = Logger()

    def start_origin(self, handler, on_body=None, on_tunnel=None,
                     tls_options=None) -> OriginFactory:
        """
        An L{OriginFactory} with these callbacks listening on a loopback
        port (its C{port}), over TLS when given C{tls_options}.
        """
        factory = OriginFactory(handler, on_body=on_body, on_tunnel=on_tunnel)
        if tls_options is None:
            port = _reactor.listenTCP(0, factory, interface=HOST)
        else:
            port = _reactor.listenSSL(0, factory, tls_options, interface=HOST)
        factory.port = port.getHost().port
        self.addCleanup(port.stopListening)
        self.addCleanup(self.close_origin_connections, factory)
        return factory

    def close_origin_connections(self, factory: OriginFactory) -> defer.Deferred:
        """
        Abort every open connection of C{factory}.

        @return: A L{Deferred} that fires once none is left.
        """
        for proto in list(factory.open):
            proto.transport.abortConnection()
        return self.wait_for(lambda: not factory.open, 5, "origin connections to close")

    @defer.inlineCallbacks
    def start_quick_proxy(self, *upstream_ports: int, extra=()):
        """
        Run C{twistd twistproxy} in quick mode in front of the given
        origin ports, with the C{extra} arguments and no access log.

        @return: A L{Deferred} firing with the L{ProxyProcess}, listening.
        """
        args = ["--listen", f"tcp:0:interface={HOST}", "--access-log", "off", *extra]
        for port in upstream_ports:
            args += ["--upstream", f"http://{HOST}:{port}"]
        cwd = self.mktemp()
        os.makedirs(cwd)
        proxy = ProxyProcess(_reactor, args, cwd)
        self.addCleanup(proxy.stop)
        yield proxy.start()
        return proxy

    @defer.inlineCallbacks
    def start_configured_proxy(self, config: str, *args: str, access_log: str = "",
                               activated=None):
        """
        Run C{twistd twistproxy --config} with C{config}, the other options
        C{args}, and an access log written to the file C{access_log} in
        the proxy's directory (none when empty).

        @param activated: A listening socket handed over as systemd does;
            see L{ProxyProcess}.
        @return: A L{Deferred} firing with the L{WatchedProxyProcess},
            whose C{port} is the first listener's, C{cwd} its directory and
            C{config_path} its configuration file.
        """
        cwd = os.path.abspath(self.mktemp())
        path = write_config(cwd, f'[access_log]\npath = "{access_log}"\n\n' + config)
        proxy = WatchedProxyProcess(_reactor, ["--config", path, *args], cwd, activated)
        proxy.cwd, proxy.config_path, proxy.access_log = cwd, path, access_log
        self.addCleanup(proxy.stop)
        yield proxy.start()
        return proxy

    def in_thread(self, f, *args, **kwargs) -> defer.Deferred:
        """
        Call C{f} (a blocking client) in a thread.
        """
        return _threads.deferToThread(f, *args, **kwargs)

    def wait_for(self, predicate, seconds: float, what: str = "the condition") -> defer.Deferred:
        """
        Poll C{predicate} every 10 ms; fail after C{seconds}.
        """
        deadline = time.monotonic() + seconds

        def check():
            if predicate():
                loop.stop()
            elif time.monotonic() > deadline:
                raise self.failureException(f"timed out waiting for {what}")

        loop = _task.LoopingCall(check)
        return loop.start(0.01, now=True).addCallback(lambda _: None)

    @staticmethod
    def sleep(seconds: float) -> defer.Deferred:
        """
        A L{Deferred} that fires after C{seconds}.
        """
        return _task.deferLater(_reactor, seconds, lambda: None)

    @defer.inlineCallbacks
    def assert_second_term_ends_drain(self, proxy: ProxyProcess, answer: defer.Deferred):
        """
        Stop C{proxy} while the request of C{answer} (a L{Deferred} of
        L{completes}) is in flight: after SIGTERM it keeps draining; a
        second SIGTERM ends it within 5 seconds, and the request never
        completes.
        """
        ended = proxy.stop(grace=20)
        yield self.sleep(0.5)
        self.assertTrue(proxy.running, "the first SIGTERM should drain, not exit")
        second = time.monotonic()
        proxy.signal("TERM")
        yield ended
        self.assertLess(time.monotonic() - second, 5)
        self.assertFalse((yield answer))

    @staticmethod
    def config_text(proxy: WatchedProxyProcess) -> str:
        """
        C{proxy}'s configuration file, as it is now.
        """
        with open(proxy.config_path) as f:
            return f.read()

    @staticmethod
    def reload(proxy: WatchedProxyProcess, config: Optional[str] = None,
               done: str = "configuration reloaded", timeout: float = 10) -> defer.Deferred:
        """
        Write C{config}, if given, as C{proxy}'s configuration file, send
        SIGHUP and wait for a log line matching C{done}.

        @return: A L{Deferred} firing with that line, as
            L{WatchedProxyProcess.wait_for_line} finds it.
        """
        if config is not None:
            with open(proxy.config_path, "w") as f:
                f.write(config)
        since = time.monotonic()
        proxy.signal("HUP")
        return proxy.wait_for_line(done, since=since, timeout=timeout)


class PebbleMixin:
    """
    For test cases of automatic certificates: starts Debian's C{pebble}, an
    RFC 8555 test CA, on loopback with a configuration of its own (its
    HTTP-01 and TLS-ALPN-01 ports and its resolver given as
    C{ports['http']}, C{ports['tlsalpn']} and C{ports['dns']}, for the
    proxy's listeners to take), and stops it after the test.

    @ivar cwd: The test's directory (pebble's files, its log).
    @ivar ca_file: The PEM file of the CA of pebble's own HTTPS certificate
        (the proxy's C{[acme] ca}).
    @ivar ports: Pebble's ports (C{pebble}: its directory; C{management})
        and those its configuration points at (C{http}, C{https},
        C{dns}, C{tlsalpn}).
    """

    def start_pebble(self, **options) -> defer.Deferred:
        """
        Start pebble with C{options} added to its configuration; fires once
        it listens.  Skips the test when pebble is not installed.
        """
        pebble = shutil.which("pebble")
        if pebble is None:
            raise SkipTest("pebble is not installed (apt-get install pebble)")
        self.cwd = os.path.abspath(self.mktemp())
        os.makedirs(self.cwd)
        ca = issue_certificate("pebble test CA", ca=True)
        server = issue_certificate("localhost", sans=["localhost", HOST], issuer=ca)
        self.ca_file = self.write("ca.pem", cert_pem(ca[1]))
        self.ports = {name: unused_port() for name in
                      ("pebble", "management", "http", "https", "dns", "tlsalpn")}
        config = {"pebble": {
            "listenAddress": f"{HOST}:{self.ports['pebble']}",
            "managementListenAddress": f"{HOST}:{self.ports['management']}",
            "certificate": self.write("server.pem", cert_pem(server[1])),
            "privateKey": self.write("server.key", key_pem(server[0])),
            "httpPort": self.ports["http"], "tlsPort": self.ports["tlsalpn"],
            "ocspResponderURL": "", "externalAccountBindingRequired": False,
            **options,
        }}
        path = self.write("pebble.json", json.dumps(config).encode())
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
        self.pebble_log = open(os.path.join(self.cwd, "pebble.log"), "wb")
        self.addCleanup(self.pebble_log.close)
        self.pebble = subprocess.Popen(
            [pebble, "-config", path, "-dnsserver", f"{HOST}:{self.ports['dns']}"],
            env=env, cwd=self.cwd, stdout=self.pebble_log, stderr=subprocess.STDOUT)
        self.addCleanup(self.stop_pebble)
        return self.until(lambda: self.connects(self.ports["pebble"]), "pebble listening")

    def write(self, name: str, data: bytes) -> str:
        """
        Write C{data} into the file C{name} of the test's directory; its path.
        """
        path = os.path.join(self.cwd, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def stop_pebble(self) -> None:
        self.pebble.terminate()
        try:
            self.pebble.wait(10)
        except subprocess.TimeoutExpired:
            self.pebble.kill()
            self.pebble.wait()

    @staticmethod
    def connects(port: int) -> bool:
        """
        Whether something accepts connections on C{port} of L{HOST}.
        """
        try:
            socket.create_connection((HOST, port), timeout=1).close()
        except OSError:
            return False
        return True

    @defer.inlineCallbacks
    def until(self, check, what: str, seconds: float = 30.0):
        """
        Call C{check} every 0.5 s until it returns something true (at most
        C{seconds}); that value.  On failure, the test's message shows the
        end of pebble's log and of C{self.proxy}'s output.
        """
        deadline = time.monotonic() + seconds
        while True:
            found = check()
            if found:
                return found
            if time.monotonic() > deadline:
                with open(os.path.join(self.cwd, "pebble.log"), "rb") as f:
                    log = f.read().decode("utf-8", "replace")[-3000:]
                proxy = getattr(self, "proxy", None)
                said = proxy.output.decode("utf-8", "replace")[-3000:] if proxy else ""
                self.fail(f"no {what} within {seconds} s; pebble said:\n{log}\n"
                          f"the proxy said:\n{said}")
            yield _task.deferLater(_reactor, 0.5, lambda: None)

    def pebble_root(self) -> str:
        """
        The PEM root that pebble's certificates chain to (it makes a new one
        each run).
        """
        context = ssl.create_default_context(cafile=self.ca_file)
        url = f"https://{HOST}:{self.ports['management']}/roots/0"
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            return response.read().decode("ascii")
