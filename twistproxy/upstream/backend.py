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

from typing import List, Optional

from zope.interface import implementer

from twistproxy.interfaces import IBackendAddress
from twistproxy.net import authority


@implementer(IBackendAddress)
class Backend:
    """
    One server of an upstream group.

    Its availability is the conjunction of three independent opinions, each
    kept by its own component: the active health check (C{healthy}), passive
    outlier detection (C{ejected}), and the operator (C{draining}).  Each
    component sets its flag and calls L{refresh}, which recomputes
    C{available}, the only thing balancers read.

    @ivar name: A short, stable name for logs and metrics, for example
        C{'127.0.0.1:8001'}.
    @ivar scheme: C{'http'} or C{'https'}.
    @ivar host: Host name or IP address literal (IPv6 without brackets).
    @ivar port: TCP port.
    @ivar weight: Configured positive integer weight.
    @ivar effective_weight: The weight balancers use: C{weight}, except
        while the backend ramps up after coming back (slow start), when it
        grows from a fraction of C{weight} to C{weight}.
    @ivar region: The region the backend is in (C{'eu-west'}), or C{''}.
    @ivar zone: The zone within the region (C{'eu-west-1a'}), or C{''}.
    @ivar priority: Failover tier from a DNS SRV record: requests go to the
        lowest tier that has an available backend.  0 for listed servers.
    @ivar healthy: The active health check's verdict (C{True} when there is
        no check).
    @ivar ejected: Whether outlier detection has taken it out for now.
    @ivar draining: Whether the operator is draining it: no new requests.
    @ivar available: C{healthy and not ejected and not draining}; balancers
        never pick a backend that is not available.
    @ivar in_flight: Requests currently being forwarded to this backend.
    @ivar requests: Requests forwarded to this backend since it was created;
        counted by the forwarder, not by balancers.
    @ivar failures: Of those, how many failed (connection refused or reset,
        timeout, malformed response).
    @ivar durations: How many of its answered requests took at most each
        of L{twistproxy.metrics.DURATION_BUCKETS} seconds, and more (one
        count per bucket), for the status page; counted by the metrics
        when there are any, C{None} until then.
    """

    __slots__ = (
        "name",
        "scheme",
        "host",
        "port",
        "weight",
        "effective_weight",
        "region",
        "zone",
        "priority",
        "healthy",
        "ejected",
        "draining",
        "available",
        "in_flight",
        "requests",
        "failures",
        "durations",
    )

    def __init__(
        self,
        name: str,
        scheme: str,
        host: str,
        port: int,
        weight: int = 1,
        region: str = "",
        zone: str = "",
        priority: int = 0,
    ) -> None:
        self.name = name
        self.scheme = scheme
        self.host = host
        self.port = port
        self.weight = weight
        self.effective_weight = weight
        self.region = region
        self.zone = zone
        self.priority = priority
        self.healthy = True
        self.ejected = False
        self.draining = False
        self.available = True
        self.in_flight = 0
        self.requests = 0
        self.failures = 0
        self.durations: Optional[List[int]] = None

    def refresh(self) -> bool:
        """
        Recompute C{available} from the three flags.

        @return: Whether C{available} changed.
        """
        available = self.healthy and not self.ejected and not self.draining
        changed = available != self.available
        self.available = available
        return changed

    def __repr__(self) -> str:
        return (
            f"<Backend {self.name!r} {self.scheme}://{authority(self.host, self.port)}"
            f" weight={self.weight}"
            f" {'up' if self.available else 'down'}"
            f" in_flight={self.in_flight}>"
        )
