# -*- test-case-name: tests.test_cache_store -*-
"""
What a cache store keeps: one stored response, or the list of request
fields a URL's responses vary on.

A URL whose response has no C{Vary} is one L{Entry} under the URL's key.
A URL whose responses vary keeps, under the URL's key, an entry with
C{status == 0} naming the fields (a I{vary marker}), and each variant
under the URL's key plus the variant's secondary key, so that several
variants live side by side (RFC 9111 4.1).
"""

from __future__ import annotations

import json
from typing import List, Optional, Sequence, Tuple

from zope.interface import implementer

from twistproxy.interfaces import ICacheEntry


@implementer(ICacheEntry)
class Entry:
    """
    A stored response (or a vary marker).

    @ivar status: The status code, or C{0} for a vary marker.
    @ivar reason: The reason phrase.
    @ivar headers: The stored fields, (name, value) byte pairs.
    @ivar body: The whole body.
    @ivar request_time: When the request that fetched it left (POSIX
        seconds).
    @ivar response_time: When the response arrived.
    @ivar vary: The lower-cased field names the response varies on.
    """

    __slots__ = ("status", "reason", "headers", "body", "request_time", "response_time",
                 "vary", "cache_fields", "reusable")

    def __init__(self, status: int, reason: bytes, headers: List[Tuple[bytes, bytes]],
                 body: bytes, request_time: float, response_time: float,
                 vary: Sequence[bytes] = ()):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.request_time = request_time
        self.response_time = response_time
        self.vary = tuple(vary)
        # The parsed fields, and what every reuse of it shares
        # (twistproxy.cache.runtime.Reusable), filled in by the cache on
        # first use.
        self.cache_fields = None
        self.reusable = None

    @classmethod
    def marker(cls, vary: Sequence[bytes]) -> "Entry":
        """
        A vary marker naming C{vary}.
        """
        return cls(0, b"", [], b"", 0.0, 0.0, vary)

    @property
    def size(self) -> int:
        """
        Roughly how many bytes it occupies, for byte-bounded stores.
        """
        return 200 + len(self.body) + sum(len(k) + len(v) + 16 for k, v in self.headers)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Entry):
            return NotImplemented
        return self.to_bytes() == other.to_bytes()

    def __repr__(self) -> str:
        return f"<Entry {self.status} {len(self.body)} bytes vary={self.vary!r}>"

    def to_bytes(self) -> bytes:
        """
        The entry serialised, for stores outside the process: a JSON line
        of metadata, then the body.
        """
        meta = {
            "s": self.status, "r": self.reason.decode("latin-1"),
            "h": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in self.headers],
            "q": self.request_time, "t": self.response_time,
            "v": [n.decode("latin-1") for n in self.vary],
        }
        return json.dumps(meta, separators=(",", ":")).encode("latin-1") + b"\n" + self.body

    @classmethod
    def from_bytes(cls, data: bytes) -> Optional["Entry"]:
        """
        An entry from L{to_bytes}, or C{None} when C{data} is not one (a
        store shared with an incompatible version).
        """
        line, sep, body = data.partition(b"\n")
        try:
            meta = json.loads(line.decode("latin-1"))
            return cls(
                int(meta["s"]), meta["r"].encode("latin-1"),
                [(k.encode("latin-1"), v.encode("latin-1")) for k, v in meta["h"]],
                body, float(meta["q"]), float(meta["t"]),
                [n.encode("latin-1") for n in meta["v"]],
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
