# -*- test-case-name: tests.test_proxy -*-
"""
Flow control between the two connections of a proxied exchange.

A proxy reads from one connection and writes to the other.  When the
writing side cannot keep up (its transport's buffer is full), the reading
side must stop reading, or the proxy's memory grows with the difference.
Twisted transports report a full buffer to a registered streaming producer
(L{IPushProducer}); a L{FullRelay} is that producer, and relays "full" and
"drained" to whoever must pause the other connection.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


@implementer(IPushProducer)
class FullRelay:
    """
    Registered on a transport, calls C{on_full(True)} when its write buffer
    fills up and C{on_full(False)} when it has drained.
    """

    __slots__ = ("_on_full",)

    def __init__(self, on_full: Callable[[bool], None]):
        self._on_full = on_full

    def pauseProducing(self) -> None:
        self._on_full(True)

    def resumeProducing(self) -> None:
        self._on_full(False)

    def stopProducing(self) -> None:
        # The connection is closing; its own connectionLost handles that.
        pass
