# -*- test-case-name: tests.test_proxy -*-
"""
The base of everything that stands between a backend's response and the
client.

The upstream connection hands the response to the exchange's sink
(L{twistproxy.interfaces.IResponseSink}); a cache or a response filter
stands in front of the client by wrapping the sink it finds there.  A
L{SinkWrapper} passes every call on unchanged, so that a wrapper overrides
only what it changes.
"""

from __future__ import annotations

from zope.interface import implementer

from twistproxy.interfaces import IResponseSink


@implementer(IResponseSink)
class SinkWrapper:
    """
    A response sink that passes every call on to the sink it wraps.

    @ivar sink: The wrapped sink.
    """

    __slots__ = ("sink",)

    def __init__(self, sink):
        self.sink = sink

    def informational(self, exchange, resp) -> None:
        self.sink.informational(exchange, resp)

    def response_head(self, exchange, resp, has_body: bool, extra=None) -> None:
        self.sink.response_head(exchange, resp, has_body, extra)

    def response_body(self, exchange, data: bytes) -> None:
        self.sink.response_body(exchange, data)

    def flush(self) -> None:
        self.sink.flush()

    def response_end(self, exchange) -> None:
        self.sink.response_end(exchange)

    def upstream_failed(self, exchange, status: int, reason: str) -> None:
        self.sink.upstream_failed(exchange, status, reason)
