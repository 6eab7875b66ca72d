# -*- test-case-name: tests.test_proxy -*-
"""
One request's trip through the proxy.

An L{Exchange} is created by the downstream (client-facing) protocol when a
request head has been parsed, and ties together everything that request
touches: the client connection, the route and backend chosen for it, the
upstream connection that carries it, and the figures the access log reports.
It is also what plugins see of a request: balancers and locators the
L{IRequestInfo} part, filters, response sinks and caches the
L{IRequestView} part.  The exchange provides those views itself, as
properties read on demand, so that a request no plugin looks at costs
nothing more; the rest of its slots are the proxy's own.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

from zope.interface import implementer

from twistproxy.interfaces import IRequestView
from twistproxy.http.headers import find_cookie
from twistproxy.http.parser import RequestHead, host_name

# Methods that may be sent twice without changing the outcome (RFC 9110 9.2.2).
IDEMPOTENT = frozenset([b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"])


@implementer(IRequestView)
class Exchange:
    """
    @ivar request: The parsed request head.
    @ivar client_address: The peer's IP address.
    @ivar downstream: The client-facing protocol.
    @ivar upstream: The upstream protocol carrying the request, once one is
        attached.
    @ivar backend: The backend chosen, or C{None}.
    @ivar pool: The upstream pool the request was submitted to, or C{None}.
    @ivar head: The request head as it will be sent to the backend.
    @ivar route: The matched route's runtime data.
    @ivar started: When the request head was parsed (reactor seconds).
    @ivar upstream_started: When the request was handed to a connection.
    @ivar upstream_ended: When the backend's response ended.
    @ivar status: The status sent to the client, 0 until then.
    @ivar body_bytes: Response body bytes sent to the client.
    @ivar reason: Why the proxy answered by itself (C{'upstream_timeout'}),
        or C{''} when the backend answered.
    @ivar retried: Whether the request was already sent again on a fresh
        connection to the same backend (the stale connection race); set
        back when it moves to another backend.
    @ivar body_started: Whether any request body byte went upstream.
    @ivar group: The upstream group chosen, or C{None}.
    @ivar forwarder: The forwarder that placed it, told of failures.
    @ivar attempts: How many backends it has been sent to.
    @ivar counted_retries: Of those after the first, how many count against
        the group's C{retries} (all but those after a refused connection or
        a failure of a backend already known bad); while there is one, the
        exchange holds a place in the group's retry budget.
    @ivar tried: The backends that failed it, or C{None}.
    @ivar response_fields: (name, value) fields to add to the response
        (a stickiness cookie), or C{None}.
    @ivar pinned: The backend the request's stickiness cookie named, if it
        was available.
    @ivar request_rules: The header rules (L{CompiledRules}) that build the
        head sent upstream in place of the route's, or C{None}; the cache
        sets them to add its validators.
    @ivar on_end: Called with the exchange when it is over, however it
        ended (answered, failed, or abandoned by its client), or C{None};
        the cache uses it to stop the requests collapsed on this one from
        waiting.
    @ivar sink: Where the response goes (an L{IResponseSink}): the
        downstream protocol itself, or a cache or response filter wrapping
        it.
    @ivar admitted: Whether it holds a place among the requests in flight
        (L{twistproxy.admission}), given back when it ends.
    @ivar upstream_target: The request target sent upstream when the route
        rewrites it (its path or query), or C{None}: the access log shows
        it beside the client's when they differ.
    @ivar body_copy: What keeps a copy of the request body as it goes
        upstream (a mirror's: C{write(data)}, C{end(exchange)}), or C{None}.
    """

    __slots__ = (
        "request", "client_address", "downstream", "upstream", "backend",
        "pool", "head", "route", "started", "upstream_started",
        "upstream_ended", "status", "body_bytes", "reason", "retried",
        "body_started", "wait_timer", "group", "forwarder", "attempts",
        "counted_retries", "tried", "response_fields", "pinned", "sink", "admitted",
        "request_rules", "on_end", "body_copy", "upstream_target",
    )

    def __init__(self, request: RequestHead, client_address: str, downstream, started: float):
        self.request = request
        self.client_address = client_address
        self.downstream = downstream
        self.upstream = None
        self.backend = None
        self.pool = None
        self.head = b""
        self.route = None
        self.started = started
        self.upstream_started = 0.0
        self.upstream_ended = 0.0
        self.status = 0
        self.body_bytes = 0
        self.reason = ""
        self.retried = False
        self.body_started = False
        self.wait_timer = None
        self.group = None
        self.forwarder = None
        self.attempts = 1
        self.counted_retries = 0
        self.tried = None
        self.response_fields = None
        self.pinned = None
        self.sink = downstream
        self.admitted = False
        self.request_rules = None
        self.on_end = None
        self.body_copy = None
        self.upstream_target = None

    @property
    def method(self) -> str:
        return self.request.method.decode("ascii")

    @property
    def path(self) -> str:
        return self.request.target.decode("ascii")

    @property
    def host(self) -> str:
        return host_name(self.request.host).decode("ascii").lower()

    def header(self, name: str) -> Optional[str]:
        wanted = name.lower().encode("ascii")
        for key, value in self.request.headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    def cookie(self, name: str) -> Optional[str]:
        return find_cookie(
            (v.decode("latin-1") for k, v in self.request.headers if k.lower() == b"cookie"),
            name,
        )

    @property
    def normalised_path(self) -> str:
        return self.request.path.decode("ascii")

    @property
    def headers(self) -> Sequence[Tuple[bytes, bytes]]:
        # A copy, so that a plugin cannot edit the fields behind the
        # proxy's back (replace_headers is the way).
        return tuple(self.request.headers)

    def replace_headers(self, fields: Sequence[Tuple[bytes, bytes]]) -> None:
        self.request.headers = list(fields)

    @property
    def scheme(self) -> str:
        return self.downstream.proto.decode("ascii")

    @property
    def trusted(self) -> bool:
        return self.downstream.trusted

    @property
    def route_name(self) -> Optional[str]:
        route = self.route
        return route.route.name if route is not None else None

    @property
    def retryable_elsewhere(self) -> bool:
        """
        Whether the request may be sent to another backend after its
        backend reset before answering: it is idempotent and none of its
        body has been consumed.
        """
        return (
            not self.body_started
            and self.request.method in IDEMPOTENT
            and not self.request.has_body
        )
