# -*- test-case-name: tests.test_cache_store -*-
"""
A cache store in Redis, which several proxy processes and machines share.

Each entry is one Redis string, C{<namespace><key>}, holding
L{Entry.to_bytes}, with Redis's own expiry as its time to live; each purge
tag is a Redis set, C{<namespace>tag:<tag>}, of the keys put with it.
Redis's C{maxmemory} policy (e.g. C{allkeys-lru}) bounds the size.  When
Redis is unreachable or slow the store answers misses and drops writes, so
the proxy keeps serving from the origins; after one failure it stops
asking (L{twistproxy.redis.Circuit}) until Redis answers a probe, so that
an outage costs a request nothing, and the store reconnects by itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from twisted.internet.defer import Deferred, inlineCallbacks, returnValue, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.plugin import IPlugin
from zope.interface import implementer

from twistproxy.cache.entry import Entry
from twistproxy.components import factory_repr
from twistproxy.config.schema import build, seconds, setting, string
from twistproxy.interfaces import ICacheStoreFactory, IFallibleCacheStore
from twistproxy.redis import RedisAddress, RedisLink, parse_url

DEFAULT_NAMESPACE = "twistproxy:cache:"
_GLOB = re.compile(rb"([\\*?\[\]])")


@implementer(IFallibleCacheStore)
class RedisStore:
    """
    Entries in Redis, through a reconnecting txredisapi pool behind a
    circuit (L{RedisLink}): while Redis is out, lookups are misses and
    writes are dropped at once, without a command sent.
    """

    def __init__(self, clock: IReactorTime, address: RedisAddress,
                 namespace: bytes = DEFAULT_NAMESPACE.encode(), timeout: float = 1.0):
        self._redis = RedisLink(clock, address, timeout, "cache store",
                                "every lookup is a miss and nothing is stored")
        self._ns = namespace
        self._tag_ns = namespace + b"tag:"

    def _call(self, command, default) -> Deferred:
        """
        C{command(pool)}, or C{default} when it fails or Redis is out.
        """
        d = self._redis.call(command)
        if d is None:
            return succeed(default)
        return d.addErrback(lambda _: default)

    def writable(self) -> bool:
        """
        Whether a write would be sent now: not while Redis is out.
        """
        return self._redis.circuit.closed

    def get(self, key: bytes) -> "Deferred[Optional[Entry]]":
        d = self._call(lambda redis: redis.get(self._ns + key), None)
        return d.addCallback(lambda data: Entry.from_bytes(data) if data else None)

    @inlineCallbacks
    def _put(self, redis, key: bytes, entry: Entry, ttl: float, tags: Sequence[bytes]):
        full = self._ns + key
        ms = max(int(ttl * 1000), 1)
        yield redis.set(full, entry.to_bytes(), pexpire=ms)
        for tag in tags:
            tag_key = self._tag_ns + tag
            yield redis.sadd(tag_key, full)
            # The tag set lives at least as long as its longest entry.
            left = yield redis.execute_command(b"PTTL", tag_key)
            if int(left) < ms:
                yield redis.execute_command(b"PEXPIRE", tag_key, ms)

    def put(self, key: bytes, entry: Entry, ttl: float, tags: Sequence[bytes] = ()) -> Deferred:
        if ttl <= 0:
            return self.delete(key)
        return self._call(lambda redis: self._put(redis, key, entry, ttl, tags), None)

    def delete(self, key: bytes) -> Deferred:
        return self._call(
            lambda redis: redis.delete(self._ns + key).addCallback(lambda _: None), None)

    @inlineCallbacks
    def _purge(self, redis, prefix: bytes):
        pattern = _GLOB.sub(rb"\\\1", self._ns + prefix) + b"*"
        cursor, removed = 0, 0
        while True:
            cursor, keys = yield redis.scan(cursor, pattern, 1000)
            if keys:
                removed += yield redis.delete(keys)
            if int(cursor) == 0:
                returnValue(int(removed))

    def purge(self, prefix: bytes) -> "Deferred[int]":
        return self._call(lambda redis: self._purge(redis, prefix), 0)

    @inlineCallbacks
    def _purge_tag(self, redis, tag: bytes):
        tag_key = self._tag_ns + tag
        keys = yield redis.smembers(tag_key)
        removed = 0
        if keys:
            removed = yield redis.delete(list(keys))
        yield redis.delete(tag_key)
        returnValue(int(removed))

    def purge_tag(self, tag: bytes) -> "Deferred[int]":
        return self._call(lambda redis: self._purge_tag(redis, tag), 0)

    def close(self) -> Deferred:
        return self._redis.close()


@dataclass(frozen=True)
class RedisStoreOptions:
    """
    The options of the C{redis} store.

    @ivar url: The server's address, from a C{redis://} URL.
    @ivar namespace: The prefix of every key the store writes.
    @ivar timeout: Seconds a command may take before the store answers
        as if it missed.
    """

    url: Any = setting(check=parse_url, required="the redis store needs a redis:// URL")
    namespace: str = setting(DEFAULT_NAMESPACE, check=string)
    timeout: float = setting(1.0, check=seconds())


@implementer(ICacheStoreFactory, IPlugin)
class RedisStoreFactory:
    """
    The factory of L{RedisStore}::

        [cache]
        store = "redis"
        url = "redis://cache.internal:6379/2"
        namespace = "twistproxy:cache:"
        timeout = 0.5
    """

    name = "redis"
    help = "In Redis, shared by every proxy process and machine that names the same server."
    __repr__ = factory_repr

    def fromConfig(self, reactor: Any, options: Mapping[str, Any], path: str) -> RedisStore:
        settings = build(RedisStoreOptions, options, path,
                         takes="the redis store takes url, namespace, timeout")
        return RedisStore(reactor, settings.url, settings.namespace.encode("utf-8"),
                          settings.timeout)
