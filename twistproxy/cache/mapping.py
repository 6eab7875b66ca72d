# -*- test-case-name: tests.test_cache_store -*-
"""
A cache store over a mapping: what a simple store builds on.

L{MappingStore} keeps each entry, with its expiry time on the proxy's clock
and its purge tags, under its key in a table that has the mapping protocol:
a C{dict} by default, or whatever a store plugin gives it (an ordered
dictionary that drops its oldest items, an adapter over an in-process
key/value table).  It does the rest of L{ICacheStore} around the table:
expiry, purges by key prefix and by tag, and answers as L{Deferred}s.

Purges scan the keys, which suits the thousands of entries of a table in
the proxy's memory, not the millions of a shared cache (the C{memory} and
C{redis} stores keep indexes for that).
"""

from __future__ import annotations

from typing import Any, List, MutableMapping, Optional, Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from twistproxy.interfaces import ICacheEntry, ICacheStore


@implementer(ICacheStore)
class MappingStore:
    """
    An L{ICacheStore} whose entries live in C{table}.

    @ivar table: key -> (entry, expiry time, tags).
    """

    def __init__(self, clock: IReactorTime,
                 table: Optional[MutableMapping[bytes, Any]] = None):
        self._clock = clock
        self.table: MutableMapping[bytes, Any] = {} if table is None else table

    def get(self, key: bytes) -> "Deferred[Optional[ICacheEntry]]":
        item = self.table.get(key)
        if item is not None and item[1] <= self._clock.seconds():
            del self.table[key]
            item = None
        return succeed(None if item is None else item[0])

    def put(self, key: bytes, entry: ICacheEntry, ttl: float,
            tags: Sequence[bytes] = ()) -> "Deferred[None]":
        self.table[key] = (entry, self._clock.seconds() + ttl, tuple(tags))
        return succeed(None)

    def delete(self, key: bytes) -> "Deferred[None]":
        self.table.pop(key, None)
        return succeed(None)

    def purge(self, prefix: bytes) -> "Deferred[int]":
        return self._drop([key for key in self.table if key.startswith(prefix)])

    def purge_tag(self, tag: bytes) -> "Deferred[int]":
        return self._drop([key for key, item in self.table.items() if tag in item[2]])

    def _drop(self, keys: List[bytes]) -> "Deferred[int]":
        for key in keys:
            del self.table[key]
        return succeed(len(keys))

    def close(self) -> "Deferred[None]":
        return succeed(None)
