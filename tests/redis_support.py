"""
A throwaway Redis server for the tests of the Redis-backed stores.

Each test that needs Redis starts its own C{redis-server} on a free
loopback port, with persistence off (it is ready in a few milliseconds), and
stops it (by its PID) when the test is done: see L{start_redis}.  The
fault tests also stall it (C{SIGSTOP}, C{SIGCONT}) and kill and restart it
on the same port.  Where C{redis-server} is not installed the tests skip
and say how to get it; C{.ci/run} installs it.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from typing import Optional

from twisted.trial.unittest import SkipTest

from tests.e2e_support import HOST, unused_port
from twistproxy.redis import RedisAddress

SKIP_REASON = (
    "redis-server is not installed (apt-get install redis-server; .ci/run does this)"
)


class RedisServer:
    """
    One C{redis-server} child process.

    @ivar address: Where it listens, for L{twistproxy.redis.connect}.
    """

    def __init__(self, password: Optional[str] = None, db: int = 0) -> None:
        """
        @param password: Required of clients (C{--requirepass}).
        @param db: The database that L{address} and L{url} name.
        """
        binary = shutil.which("redis-server")
        if binary is None:
            raise SkipTest(SKIP_REASON)
        port = unused_port()
        self.address = RedisAddress(HOST, port, db, password=password)
        self._argv = [binary, "--bind", HOST, "--port", str(port), "--save", "",
                      "--appendonly", "no", "--protected-mode", "no"]
        if password is not None:
            self._argv += ["--requirepass", password]
        self._start()

    def _start(self) -> None:
        self._process = subprocess.Popen(
            self._argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self._wait_ready(10.0)

    @property
    def url(self) -> str:
        a = self.address
        login = f":{a.password}@" if a.password is not None else ""
        return f"redis://{login}{a.host}:{a.port}/{a.db}"

    def _wait_ready(self, limit: float) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._process.returncode}")
            try:
                with socket.create_connection((HOST, self.address.port), 0.5) as s:
                    s.sendall(b"PING\r\n")
                    # Without the password, Redis refuses (-NOAUTH): alive.
                    if s.recv(16)[:1] in (b"+", b"-"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer within {limit} s")

    def command(self, *args: str) -> bytes:
        """
        Send one command synchronously (for test set-up and checks), in
        L{address}'s database and with its password, and return the raw
        reply (the last one).
        """
        a = self.address
        commands = [("SELECT", str(a.db)), args]
        if a.password is not None:
            commands.insert(0, ("AUTH", a.password))
        parts = []
        for command in commands:
            parts.append(b"*%d\r\n" % len(command))
            for arg in command:
                data = arg.encode()
                parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        with socket.create_connection((HOST, a.port), 2.0) as s:
            s.sendall(b"".join(parts))
            replies = b""
            # One reply line per set-up command, then the command's own.
            while replies.count(b"\r\n") < len(commands):
                data = s.recv(65536)
                if not data:
                    break
                replies += data
            return replies.split(b"\r\n", len(commands) - 1)[-1]

    def stat(self, name: str) -> int:
        """
        A number of C{INFO stats}, e.g. C{total_error_replies}.
        """
        info = self.command("INFO", "stats")
        return int(info.split(b"\r\n" + name.encode() + b":")[1].split(b"\r\n")[0])

    def pause(self) -> None:
        """
        Stall the server (C{SIGSTOP}): connections are still accepted by
        the kernel, and nothing is answered.
        """
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """
        Let a paused server go on (C{SIGCONT}).
        """
        self._process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """
        Kill the server (C{SIGKILL}) and start a new, empty one on the same
        port.
        """
        self._process.kill()
        self._process.wait(10)
        self._start()

    def stop(self) -> None:
        if self._process.poll() is None:
            # A paused server would not act on SIGTERM.
            self.resume()
            self._process.terminate()
            self._process.wait(10)


def start_redis(case, password: Optional[str] = None, db: int = 0) -> RedisServer:
    """
    A fresh Redis server for the test C{case}, stopped when it ends.
    """
    server = RedisServer(password, db)
    case.addCleanup(server.stop)
    return server
