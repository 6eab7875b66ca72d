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

    def informational(self, x, resp) -> None:
        self.sink.informational(x, resp)

    def response_head(self, x, resp, has_body: bool, extra=None) -> None:
        self.sink.response_head(x, resp, has_body, extra)

    def response_body(self, x, data: bytes) -> None:
        self.sink.response_body(x, data)

    def flush(self) -> None:
        self.sink.flush()

    def response_end(self, x) -> None:
        self.sink.response_end(x)

    def upstream_failed(self, x, status: int, reason: str) -> None:
        self.sink.upstream_failed(x, status, reason)
