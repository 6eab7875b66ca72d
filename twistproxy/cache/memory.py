# -*- test-case-name: tests.test_cache_store -*-
"""
The default cache store: entries in this process's memory, within a byte
budget, the least recently used dropped first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Set

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.plugin import IPlugin
from zope.interface import implementer

from twistproxy.cache.entry import Entry
from twistproxy.components import factory_repr
from twistproxy.config.schema import build, setting, size
from twistproxy.interfaces import ICacheStoreFactory, IMeasuredCacheStore, ISynchronousCacheStore

DEFAULT_SIZE = 64 * 1024 * 1024


@implementer(ISynchronousCacheStore, IMeasuredCacheStore)
class MemoryStore:
    """
    An LRU store bounded by bytes (L{Entry.size}).

    @ivar max_bytes: The budget.
    @ivar used: Bytes the entries occupy now.
    """

    def __init__(self, clock: IReactorTime, max_bytes: int = DEFAULT_SIZE):
        self._clock = clock
        self.max_bytes = max_bytes
        self.used = 0
        # key -> (entry, expiry time, size, tags)
        self._entries: "OrderedDict[bytes, tuple]" = OrderedDict()
        self._tags: Dict[bytes, Set[bytes]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: bytes) -> Optional[Entry]:
        """
        L{get} without the L{Deferred}, for the hot path of the cache in
        this process.
        """
        item = self._entries.get(key)
        if item is None:
            return None
        if item[1] <= self._clock.seconds():
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return item[0]

    def get(self, key: bytes) -> "Deferred[Optional[Entry]]":
        return succeed(self.lookup(key))

    def put(self, key: bytes, entry: Entry, ttl: float, tags: Sequence[bytes] = ()) -> Deferred:
        size = entry.size + len(key)
        if key in self._entries:
            self._remove(key)
        if size > self.max_bytes or ttl <= 0:
            return succeed(None)
        self._entries[key] = (entry, self._clock.seconds() + ttl, size, tuple(tags))
        self.used += size
        for tag in tags:
            self._tags.setdefault(tag, set()).add(key)
        while self.used > self.max_bytes:
            self._remove(next(iter(self._entries)))
        return succeed(None)

    def _remove(self, key: bytes) -> None:
        _, _, size, tags = self._entries.pop(key)
        self.used -= size
        for tag in tags:
            keys = self._tags.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._tags[tag]

    def delete(self, key: bytes) -> Deferred:
        if key in self._entries:
            self._remove(key)
        return succeed(None)

    def purge(self, prefix: bytes) -> "Deferred[int]":
        keys = [k for k in self._entries if k.startswith(prefix)]
        for key in keys:
            self._remove(key)
        return succeed(len(keys))

    def purge_tag(self, tag: bytes) -> "Deferred[int]":
        keys = list(self._tags.get(tag, ()))
        for key in keys:
            self._remove(key)
        return succeed(len(keys))

    def close(self) -> Deferred:
        return succeed(None)


@dataclass(frozen=True)
class MemoryStoreOptions:
    """
    The options of the C{memory} store.

    @ivar size: The byte budget, an integer or a size such as C{"256m"}.
    """

    size: int = setting(DEFAULT_SIZE, check=size(1024))


@implementer(ICacheStoreFactory, IPlugin)
class MemoryStoreFactory:
    """
    The factory of L{MemoryStore}::

        [cache]
        store = "memory"
        size = "256m"
    """

    name = "memory"
    help = "In this process's memory, least recently used first out, within a byte budget."
    __repr__ = factory_repr

    def fromConfig(self, reactor: Any, options: Mapping[str, Any], path: str) -> MemoryStore:
        settings = build(MemoryStoreOptions, options, path, takes="the memory store takes size")
        return MemoryStore(reactor, settings.size)
