"""
A throwaway Redis server for the tests of the Redis-backed stores.

Each test that needs Redis starts its own C{redis-server} on a free
loopback port, with persistence off (it is ready in a few milliseconds), and
stops it (by its PID) when the test is done: see L{start_redis}.  Where C{redis-server} is not installed the tests skip and
say how to get it; C{.ci/run} installs it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

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

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SkipTest(SKIP_REASON)
        port = unused_port()
        self.address = RedisAddress(HOST, port)
        self._process = subprocess.Popen(
            [binary, "--bind", HOST, "--port", str(port), "--save", "",
             "--appendonly", "no", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        self._wait_ready(10.0)

    @property
    def url(self) -> str:
        return f"redis://{self.address.host}:{self.address.port}"

    def _wait_ready(self, limit: float) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._process.returncode}")
            try:
                with socket.create_connection((HOST, self.address.port), 0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer within {limit} s")

    def command(self, *args: str) -> bytes:
        """
        Send one command synchronously (for test set-up and checks) and
        return the raw reply.
        """
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            data = a.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        with socket.create_connection((HOST, self.address.port), 2.0) as s:
            s.sendall(b"".join(parts))
            return s.recv(65536)

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            self._process.wait(10)


def start_redis(case) -> RedisServer:
    """
    A fresh Redis server for the test C{case}, stopped when it ends.
    """
    server = RedisServer()
    case.addCleanup(server.stop)
    return server
