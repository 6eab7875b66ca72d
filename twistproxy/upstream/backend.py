# -*- test-case-name: tests.test_backend -*-
"""
The state of one backend server, as the proxy and its balancers share it.

A L{Backend} is a small mutable record.  The proxy creates one per configured
server of an upstream group and keeps its fields current: a health check
flips C{available}, the forwarder raises and lowers C{in_flight} around each
request and counts C{requests} and C{failures}.  Balancers only read it.

It is read on every request, so it is a plain class with C{__slots__} and no
behaviour: attribute access is as cheap as Python allows, and a process with
many thousands of backends stays small.
"""

from __future__ import annotations

from zope.interface import implementer

from twistproxy.interfaces import IBackend


@implementer(IBackend)
class Backend:
    """
    One server of an upstream group.

    @ivar name: A short, stable name for logs and metrics, for example
        C{'127.0.0.1:8001'}.
    @ivar scheme: C{'http'} or C{'https'}.
    @ivar host: Host name or IP address literal (IPv6 without brackets).
    @ivar port: TCP port.
    @ivar weight: Positive integer weight, read by weighted balancers.
    @ivar available: C{False} while the backend is marked down; balancers
        never pick it then.
    @ivar in_flight: Requests currently being forwarded to this backend.
    @ivar requests: Requests forwarded to this backend since it was created;
        counted by the forwarder, not by balancers.
    @ivar failures: Of those, how many failed (connection refused or reset,
        timeout, malformed response).
    """

    __slots__ = (
        "name",
        "scheme",
        "host",
        "port",
        "weight",
        "available",
        "in_flight",
        "requests",
        "failures",
    )

    def __init__(
        self, name: str, scheme: str, host: str, port: int, weight: int = 1
    ) -> None:
        self.name = name
        self.scheme = scheme
        self.host = host
        self.port = port
        self.weight = weight
        self.available = True
        self.in_flight = 0
        self.requests = 0
        self.failures = 0

    def __repr__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (
            f"<Backend {self.name!r} {self.scheme}://{host}:{self.port}"
            f" weight={self.weight}"
            f" {'up' if self.available else 'down'}"
            f" in_flight={self.in_flight}>"
        )
