# -*- test-case-name: tests.test_dns_texts -*-
"""
TXT records set and removed at run time: what an ACME DNS-01 challenge
needs (C{_acme-challenge.www.example.com}, also for a wildcard
certificate), through the admin API (C{PUT} and C{DELETE /dns/txt/NAME})
or in Python (L{RunTimeTexts.set}, L{RunTimeTexts.remove}).

Without a shared store they live in the process that was told.  With
C{redis = "redis://..."} in the C{[dns]} section, every instance that
names the same server shares them: a record is written to one Redis hash
(L{KEY}, a field per name holding its values, TTL and expiry as JSON)
before it is answered, and every instance reads the whole hash again every
L{SYNC} seconds, so that a record set or removed through any of them is
answered by all within that time.  The hash holds a few challenges at a
time, so reading it whole is cheap, and a read that replaces the local
copy needs no notification that could be missed.

While Redis is out (L{twistproxy.redis.Circuit}) the local copy keeps
answering as it was, and setting or removing a record fails at once
(L{SharedStoreUnavailable}: the admin API answers 503), since the other
instances would not see the change; the copy is read again once Redis
answers.

Every record has a lifetime (an hour by default) after which it is no
longer answered and is removed from the hash, so that a challenge an ACME
client forgot to remove does not stay forever.  Expiry is a wall-clock
time, the same for every instance.
"""

from __future__ import annotations

import json
from typing import Dict, Optional, Sequence, Tuple

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from twistproxy.dns.zone import TXTRecords, owner_name
from twistproxy.redis import RedisAddress, RedisLink

#: The Redis hash of the records, one field per (lower-case) name.
KEY = b"twistproxy:dns:txt"
#: Seconds between two reads of the shared records (and local expiries).
SYNC = 1.0
#: Seconds a record lives unless its setter says otherwise.
LIFETIME = 3600.0
# Seconds to wait for Redis before doing without it.
_TIMEOUT = 1.0
# Remove an expired field only if nobody has set it again since it was read.
_DELETE_IF_SAME = b"""
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""

# A record: its values, its TTL in answers, when it expires.
Entry = Tuple[Tuple[str, ...], int, float]


class SharedStoreUnavailable(Exception):
    """
    Redis did not take the change, so the other instances would not see
    it: nothing was changed, try again later.
    """


def _encode(entry: Entry) -> bytes:
    values, ttl, expires = entry
    return json.dumps({"values": list(values), "ttl": ttl, "expires": expires}).encode()


def _decode(data: bytes) -> Optional[Entry]:
    try:
        fields = json.loads(data)
        return tuple(fields["values"]), int(fields["ttl"]), float(fields["expires"])
    except (ValueError, TypeError, KeyError):
        return None


class RunTimeTexts:
    """
    The TXT records set at run time, as one process sees them: the table
    every DNS front answers from (L{records}), kept in step with Redis when
    one is given.

    @ivar records: The L{TXTRecords} that the DNS fronts read.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, redis: Optional[RedisAddress] = None,
                 key: bytes = KEY, sync: float = SYNC) -> None:
        """
        @param redis: The shared store, or C{None}: this process only.
        @param sync: Seconds between two reads of the shared records.
        """
        self.records = TXTRecords()
        self._clock = clock
        self._key = key
        self._entries: Dict[str, Entry] = {}
        self._redis: Optional[RedisLink] = None
        if redis is not None:
            self._redis = RedisLink(clock, redis, _TIMEOUT, "DNS TXT records",
                                    "the records stay as they were and cannot be changed")
        # Changes made here: a read sent before one was done is stale.
        self._writes = 0
        self._pending = 0
        self._reading = False
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock
        self._sync = sync

    def start(self) -> None:
        """
        Read the shared records now and every C{sync} seconds; expire
        records.
        """
        if not self._loop.running:
            self._loop.start(self._sync, now=True)

    def stop(self) -> Deferred:
        """
        Stop reading, and close the connections to Redis.
        """
        if self._loop.running:
            self._loop.stop()
        return self._redis.close() if self._redis is not None else succeed(None)

    def set(self, name: str, values: Sequence[str], ttl: int = 60,
            lifetime: float = LIFETIME) -> "Deferred[None]":
        """
        Answer TXT queries for C{name} with one record per value (replacing
        those set before), until L{remove}d or for C{lifetime} seconds.

        @param name: An absolute name, in any case, with or without the
            final dot.
        @return: Fires once every instance will answer it (within L{SYNC}
            seconds; this one at once), or fails with
            L{SharedStoreUnavailable}.
        """
        owner = owner_name(name)
        entry = (tuple(values), ttl, self._clock.seconds() + lifetime)
        return self._change(lambda redis: redis.hset(self._key, owner, _encode(entry)),
                            lambda _: self._put(owner, entry))

    def remove(self, name: str) -> "Deferred[bool]":
        """
        Forget the TXT records set for C{name}, in every instance.

        @return: Fires with whether there were any, or fails with
            L{SharedStoreUnavailable}.
        """
        owner = owner_name(name)
        return self._change(lambda redis: redis.hdel(self._key, owner),
                            lambda removed: self._drop(owner) or bool(removed))

    def items(self) -> Dict[str, Entry]:
        """
        The names with records set, with their values, TTL and expiry time.
        """
        return dict(self._entries)

    def _change(self, command, apply) -> Deferred:
        self._writes += 1
        if self._redis is None:
            return succeed(apply(False))
        d = self._redis.call(command)
        if d is None:
            return fail(SharedStoreUnavailable("the shared store (Redis) is out"))

        self._pending += 1

        def failed(failure):
            raise SharedStoreUnavailable(
                f"the shared store (Redis) failed: {failure.getErrorMessage()}")

        def done(result):
            self._pending -= 1
            return result

        return d.addBoth(done).addCallbacks(apply, failed)

    def _put(self, owner: str, entry: Entry) -> None:
        self._entries[owner] = entry
        self.records.set(owner, entry[0], entry[1])

    def _drop(self, owner: str) -> bool:
        self.records.remove(owner)
        return self._entries.pop(owner, None) is not None

    def _tick(self) -> None:
        now = self._clock.seconds()
        for owner, (_, _, expires) in list(self._entries.items()):
            if expires <= now:
                self._drop(owner)
        if self._redis is None or self._reading or self._pending:
            return
        d = self._redis.call(lambda redis: redis.hgetall(self._key))
        if d is None:
            return
        self._reading = True
        writes = self._writes

        def done(result):
            self._reading = False
            return result

        d.addBoth(done).addCallbacks(lambda fields: self._read(fields, writes), lambda _: None)

    def _read(self, fields: Dict[bytes, bytes], writes: int) -> None:
        if writes != self._writes:
            # A change made here since may be missing: the next read has it.
            return
        now = self._clock.seconds()
        shared: Dict[str, Entry] = {}
        for field, data in fields.items():
            entry = _decode(data)
            if entry is None or entry[2] <= now:
                self._expire(field, data)
                continue
            shared[field.decode("ascii", "replace")] = entry
        for owner in set(self._entries) - set(shared):
            self._drop(owner)
        for owner, entry in shared.items():
            if self._entries.get(owner) != entry:
                self._put(owner, entry)

    def _expire(self, field: bytes, data: bytes) -> None:
        assert self._redis is not None
        d = self._redis.call(lambda redis: redis.eval(_DELETE_IF_SAME, [self._key], [field, data]))
        if d is not None:
            d.addErrback(lambda _: None)
