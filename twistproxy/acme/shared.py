# -*- test-case-name: tests.test_acme_shared -*-
"""
One ACME account and one certificate per name for a whole fleet, kept in
Redis (C{[acme] store = "redis://..."}).

Without it each instance orders its own certificates into its own storage
directory: a fleet of ten asks the CA ten times for the same name, and
meets its rate limits.  With it, every instance and worker that names the
same Redis shares:

    - the account key (L{ACCOUNT}), written once with C{SET NX}: the first
      instance to need it makes it, the others take that one;
    - the certificate with its key, one value per certificate (named after
      its first name), which the instance that ordered it writes;
    - a lock per certificate: C{SET NX PX} with a random token of the
      instance, renewed (compare-and-expire) while the order goes on and
      released (compare-and-delete) at the end, so that an instance that
      dies holding it frees it within L{LOCK_TTL} seconds.

When a renewal is due (L{twistproxy.acme.schedule.Renewal} calls
L{SharedCertificates.obtain}), an instance first looks in Redis: a
certificate there that differs from the one it serves and is not due
itself was renewed by another instance, and is written into the storage
directory, where the listeners' reload reads it.  Otherwise the instance
takes the lock and orders; while another holds it, it waits and looks
again every L{POLL} seconds, and picks the other's result up.  A forced
renewal (the admin API's) skips the first look.

The storage directory stays each instance's own copy, which its listeners
read: while Redis is out an instance serves what it holds, and a renewal
due meanwhile fails (L{SharedStoreUnavailable}) and is retried with the
renewal's back-off, logged as any failed renewal is.  Keys start with
C{twistproxy:acme:} and a digest of the CA's directory URL, so that a
staging and a production CA can share one Redis.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from typing import Callable, Optional, Sequence

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet.defer import Deferred, ensureDeferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger

from twistproxy.acme.schedule import renewal_time
from twistproxy.acme.store import (
    account_file, certificate_file, key_pem, write_atomically,
)
from twistproxy.config.values import ACME
from twistproxy.redis import RedisAddress, RedisLink

#: Seconds a lock lives unless its holder renews it.
LOCK_TTL = 30.0
#: Seconds between two looks of an instance waiting for another's order.
POLL = 2.0
#: The key (after the prefix) of the account key.
ACCOUNT = b"account"
# Seconds to wait for Redis before doing without it.
_TIMEOUT = 2.0
# Renew or release the lock only if it is still this instance's.
_EXTEND = b"""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = b"""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class SharedStoreUnavailable(Exception):
    """
    Redis is out or failed: nothing shared could be read or written.
    """


class RedisKeys:
    """
    The few Redis commands the shared store needs, behind a
    L{twistproxy.redis.RedisLink}; each fails with L{SharedStoreUnavailable}
    while Redis is out.
    """

    def __init__(self, clock: IReactorTime, address: RedisAddress) -> None:
        self._link = RedisLink(clock, address, _TIMEOUT, "ACME store",
                               "certificates are served as held and renewals wait")

    def _call(self, command) -> Deferred:
        d = self._link.call(command)
        if d is None:
            return fail(SharedStoreUnavailable("the shared ACME store (Redis) is out"))

        def failed(failure):
            raise SharedStoreUnavailable(
                f"the shared ACME store (Redis) failed: {failure.getErrorMessage()}")

        return d.addErrback(failed)

    def get(self, key: bytes) -> "Deferred[Optional[bytes]]":
        return self._call(lambda redis: redis.get(key))

    def put(self, key: bytes, value: bytes) -> Deferred:
        return self._call(lambda redis: redis.set(key, value))

    def put_new(self, key: bytes, value: bytes) -> "Deferred[bool]":
        """
        Set C{key} unless it is set; fires with whether it was.
        """
        return self._call(lambda redis: redis.set(key, value, only_if_not_exists=True)
                          ).addCallback(lambda reply: reply is not None)

    def lock(self, key: bytes, token: bytes, ttl: float) -> "Deferred[bool]":
        """
        Take the lock C{key} for C{ttl} seconds unless someone holds it.
        """
        return self._call(lambda redis: redis.set(
            key, token, pexpire=int(ttl * 1000), only_if_not_exists=True)
        ).addCallback(lambda reply: reply is not None)

    def extend(self, key: bytes, token: bytes, ttl: float) -> "Deferred[bool]":
        """
        Give the lock C{ttl} more seconds if C{token} still holds it.
        """
        return self._call(lambda redis: redis.eval(_EXTEND, [key], [token, int(ttl * 1000)])
                          ).addCallback(lambda reply: bool(int(reply)))

    def unlock(self, key: bytes, token: bytes) -> "Deferred[bool]":
        """
        Release the lock C{key} if C{token} still holds it.
        """
        return self._call(lambda redis: redis.eval(_RELEASE, [key], [token])
                          ).addCallback(lambda reply: bool(int(reply)))

    def close(self) -> Deferred:
        return self._link.close()


class SharedCertificates:
    """
    The certificates of one C{[acme]} section, shared through C{keys}
    (L{RedisKeys}, or a fake in the tests).
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, acme: ACME, keys, token: Optional[bytes] = None,
                 lock_ttl: float = LOCK_TTL, poll: float = POLL) -> None:
        """
        @param token: This instance's lock token (random by default).
        """
        self.clock = clock
        self.acme = acme
        self.keys = keys
        self._token = token or secrets.token_hex(16).encode("ascii")
        self._lock_ttl = lock_ttl
        self._poll = poll
        self._prefix = (b"twistproxy:acme:" +
                        hashlib.sha256(acme.directory.encode("utf-8")).hexdigest()[:12].encode()
                        + b":")

    def obtain(self, names: Sequence[str], issue: Callable[[], Deferred],
               forced: bool = False) -> Deferred:
        """
        Renew the certificate for C{names}: pick up another instance's
        renewal, or order one with C{issue} under the lock and share it.

        @param issue: Orders it (with the shared account), writing the
            storage file; fires with the file's name.
        @param forced: Order even when Redis holds a renewed certificate.
        @return: Fires with C{None} once the storage file holds the new
            certificate; fails with L{SharedStoreUnavailable} when Redis
            is out, or with C{issue}'s failure.
        """
        return ensureDeferred(self._obtain(tuple(names), issue, forced))

    async def _obtain(self, names: Sequence[str], issue: Callable[[], Deferred],
                      forced: bool) -> None:
        filename = certificate_file(self.acme, names)
        key = self._prefix + b"cert:" + names[0].encode("idna")
        lock = self._prefix + b"lock:" + names[0].encode("idna")
        held = _read(filename)
        if not forced and await self._picked_up(key, filename, held):
            return
        waited = False
        while not await self.keys.lock(lock, self._token, self._lock_ttl):
            if not waited:
                self.log.info("ACME: another instance orders {name}; waiting for it",
                              name=names[0])
                waited = True
            await deferLater(self.clock, self._poll, lambda: None)
            if await self._picked_up(key, filename, held):
                return
        keeper = LoopingCall(self._extend, lock)
        keeper.clock = self.clock
        keeper.start(self._lock_ttl / 3, now=False)
        try:
            # The holder before may have finished just as the lock came free.
            if not forced and await self._picked_up(key, filename, held):
                return
            await self._account()
            await issue()
            try:
                await self.keys.put(key, _read(filename))
            except SharedStoreUnavailable as e:
                # Served here all the same; the others order when due.
                self.log.error("ACME: the certificate for {name} could not be shared: {error}",
                               name=names[0], error=str(e))
        finally:
            keeper.stop()
            self.keys.unlock(lock, self._token).addErrback(lambda _: None)

    def _extend(self, lock: bytes) -> Deferred:
        def lost(held: bool) -> None:
            if not held:
                self.log.warn("ACME: the lock {lock} expired while ordering", lock=lock)

        return self.keys.extend(lock, self._token, self._lock_ttl).addCallbacks(
            lost, lambda _: None)

    async def _picked_up(self, key: bytes, filename: str, held: Optional[bytes]) -> bool:
        shared = await self.keys.get(key)
        if not shared or shared == held or _due(shared, self.clock.seconds()):
            return False
        write_atomically(filename, shared)
        self.log.info("ACME: took the certificate {file} that another instance renewed",
                      file=os.path.basename(filename))
        return True

    async def _account(self) -> None:
        # The one account key: Redis's, or this instance's made shared.
        filename = account_file(self.acme)
        shared = await self.keys.get(self._prefix + ACCOUNT)
        if shared is None:
            mine = _read(filename) or key_pem(ec.generate_private_key(ec.SECP256R1()))
            if await self.keys.put_new(self._prefix + ACCOUNT, mine):
                shared = mine
            else:
                shared = await self.keys.get(self._prefix + ACCOUNT)
        if shared and shared != _read(filename):
            os.makedirs(self.acme.storage, mode=0o700, exist_ok=True)
            write_atomically(filename, shared)

    def close(self) -> Deferred:
        return self.keys.close()


def _due(pem: bytes, now: float) -> bool:
    # Whether a shared certificate needs renewing itself (or is unreadable).
    try:
        cert = x509.load_pem_x509_certificates(pem)[0]
    except ValueError:
        return True
    return renewal_time(cert, 0.0) <= now  # a stand-in's is 0


def _read(filename: str) -> Optional[bytes]:
    try:
        with open(filename, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
