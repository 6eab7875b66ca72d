# -*- test-case-name: tests.test_filters_ratelimit -*-
"""
Rate limits and connection limits per client.

A rate limit lets each key (the client's address, a header's value, the
route, or a combination) make C{rate} requests per second on average,
with bursts of up to C{burst} at once.  It is the generic cell rate
algorithm (GCRA), a token bucket that keeps one number per key: the
I{theoretical arrival time} C{tat}, when the bucket will be full again.
A request at time C{now} is allowed when C{tat + T - burst * T <= now}
(C{T = 1 / rate}), and then moves C{tat} on by C{T}.  A refused request
gets 429 with C{Retry-After} and the C{RateLimit-Limit},
C{RateLimit-Remaining} and C{RateLimit-Reset} fields (IETF draft
I{RateLimit header fields for HTTP}).

The counters live in memory by default, one process's own.  With C{redis =
"redis://..."} they live in Redis, updated by one Lua script per request
(atomic, on Redis's own clock), so that every worker and machine sharing
the server shares the limit.  When Redis does not answer in time, the
process falls back on its own in-memory counters rather than holding or
refusing requests; after one failure it stops asking
(L{twistproxy.redis.Circuit}), so that requests do not wait for Redis
while it is out, and shares the limit again once Redis answers.

The client's address is the peer's unless the peer is a trusted proxy
(L{client_ip}): rotating C{X-Forwarded-For} values does not make a client
someone else.

A request without the header a key names (an API key, say) is not one
more value of it: by default (C{missing = "client"}) it is counted by its
client's address instead, so that clients without the header do not all
share one bucket; C{"shared"} gives them one bucket, and C{"skip"} leaves
them uncounted.

On a C{tcp} or C{udp} listener a rate limit keyed on the client alone
(the default key) counts new connections (or UDP sessions) instead of
requests: one beyond the rate is closed before any backend is connected
to (its datagrams dropped).  With Redis the connection waits for the
verdict, at most C{redis_timeout} seconds, before the in-memory fallback
decides.

A connection limit (C{connection_limit}) caps the connections one client
address holds open on a listener (on a C{udp} listener, its sessions);
the connections beyond are closed as soon as they are accepted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from twisted.internet.defer import Deferred
from twisted.plugin import IPlugin
from zope.interface import implementer

from twistproxy.components import factory_repr
from twistproxy.config import ConfigError, key_path
from twistproxy.filters.chain import client_ip
from twistproxy.http.answers import Answer
from twistproxy.config.schema import setting
from twistproxy.filters.options import count, needs, number, read_options, text, texts
from twistproxy.interfaces import (
    IClosable,
    IFilterFactory,
    IRefusingConnectionFilter,
    IRequestFilter,
)

# (allowed, seconds until allowed or further requests allowed now, seconds
# until the bucket is full again)
Decision = Tuple[bool, float, float]


class MemoryBuckets:
    """
    GCRA state for many keys, in this process's memory.

    Keys whose bucket is full again are forgotten when the table has
    doubled since the last sweep, so memory follows the number of active
    clients, not of all clients ever seen.
    """

    def __init__(self, clock, rate: float, burst: int):
        self._clock = clock
        self._interval = 1.0 / rate
        self._burst = burst
        self._tat: Dict[Any, float] = {}
        self._sweep_at = 1024

    def take(self, key) -> Decision:
        """
        Count one request of C{key}.
        """
        now = self._clock.seconds()
        interval = self._interval
        tats = self._tat
        tat = tats.get(key, now)
        if tat < now:
            tat = now
        new = tat + interval
        # new - burst * interval, written so that a bucket that is full
        # (tat == now) allows at once whatever the float rounding.
        allow_at = tat - (self._burst - 1) * interval
        if now < allow_at:
            return False, allow_at - now, tat - now
        tats[key] = new
        if len(tats) >= self._sweep_at:
            self._sweep(now)
        return True, now - allow_at, new - now

    def _sweep(self, now: float) -> None:
        self._tat = {k: t for k, t in self._tat.items() if t > now}
        self._sweep_at = max(1024, 2 * len(self._tat))


# KEYS[1]: the key.  ARGV: interval, burst, both as decimal strings.
# Replies strings, since Redis truncates Lua numbers to integers.
GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new = tat + interval
local allow_at = tat - (burst - 1) * interval
if now < allow_at then
  return {0, tostring(allow_at - now), tostring(tat - now)}
end
redis.call('SET', KEYS[1], tostring(new), 'PX', math.ceil((new - now) * 1000) + 1)
return {1, tostring(now - allow_at), tostring(new - now)}
"""


@implementer(IClosable)
class RedisBuckets:
    """
    GCRA state in Redis, shared by every process that uses the same server
    and zone; while Redis is out (L{twistproxy.redis.Circuit}), this
    process's own counters decide at once.
    """

    def __init__(self, address, clock, rate: float, burst: int, zone: str,
                 fallback: MemoryBuckets, timeout: float):
        """
        @param address: The L{RedisAddress <twistproxy.redis.RedisAddress>},
            connected to on the first request (not when a configuration is
            only checked).
        """
        from twistproxy.redis import RedisLink

        self._redis = RedisLink(clock, address, timeout, f"rate limit zone {zone!r}",
                                "counting in this process")
        self._args = [repr(1.0 / rate), str(burst)]
        self._prefix = f"twistproxy:ratelimit:{zone}:"
        self._fallback = fallback

    def take(self, key) -> "Decision | Deferred[Decision]":
        d = self._redis.call(
            lambda redis: redis.eval(GCRA_SCRIPT, [self._prefix + _key_text(key)], self._args))
        if d is None:
            return self._fallback.take(key)
        return d.addCallbacks(_decision, lambda _: self._fallback.take(key))

    def close(self) -> None:
        self._redis.close()


def _decision(reply) -> Decision:
    allowed, a, b = reply
    return int(allowed) == 1, float(a), float(b)


def _key_text(key) -> str:
    return key if isinstance(key, str) else "\x1f".join(key)


# What a header part of a key stands for in a request without that header
# (or with it empty): the client's address, one value for all such
# requests, or nothing (the request is not counted).
_MISSING = ("client", "shared", "skip")


def _header_name(spec: str) -> Optional[str]:
    return spec[7:] if spec.startswith("header:") and len(spec) > 7 else None


def _key_part(spec: str, path: str, missing: str) -> Callable[[Any], str]:
    if spec == "client":
        return client_ip
    if spec == "route":
        return lambda exchange: exchange.route.route.name if exchange.route is not None else ""
    if spec == "host":
        return lambda exchange: exchange.host
    name = _header_name(spec)
    if name is None:
        raise ConfigError(
            path, f"must be 'client', 'route', 'host' or 'header:NAME', not {spec!r}")
    if missing == "client":
        # NUL cannot occur in a field value, so the address of a client
        # without the header is never mistaken for a value someone sent.
        return lambda exchange: exchange.header(name) or "\0" + client_ip(exchange)
    return lambda exchange: exchange.header(name) or ""


def _lacks_any(names: List[str]) -> Callable[[Any], bool]:
    """
    Whether a request lacks one of the fields C{names} (or has it empty).
    """
    return lambda exchange: not all(exchange.header(name) for name in names)


@implementer(IRequestFilter, IClosable)
class RateLimitFilter:
    """
    Refuses the requests of a key beyond its rate.
    """

    def __init__(self, buckets, parts: List[Callable[[Any], str]], burst: int,
                 status: int = 429, exempt: Optional[Callable[[Any], bool]] = None):
        """
        @param exempt: Tells which requests are not counted at all.
        """
        self._buckets = buckets
        self._parts = parts
        self._exempt = exempt
        self._one = parts[0] if len(parts) == 1 else None
        self._burst = burst
        self._status = status
        self.refusal = Answer(status, reason="rate_limited")

    def filter_request(self, exchange):
        if self._exempt is not None and self._exempt(exchange):
            return None
        one = self._one
        key = one(exchange) if one is not None else tuple(part(exchange) for part in self._parts)
        decision = self._buckets.take(key)
        if isinstance(decision, Deferred):
            return decision.addCallback(self._verdict)
        return self._verdict(decision)

    def _verdict(self, decision: Decision) -> Optional[Answer]:
        allowed, wait, reset = decision
        if allowed:
            return None
        retry = str(max(1, math.ceil(wait))).encode("ascii")
        return Answer(self._status, [
            (b"Retry-After", retry),
            (b"RateLimit-Limit", b"%d" % self._burst),
            (b"RateLimit-Remaining", b"0"),
            (b"RateLimit-Reset", retry),
        ], reason="rate_limited")

    def close(self) -> None:
        if IClosable.providedBy(self._buckets):
            self._buckets.close()


@implementer(IRefusingConnectionFilter)
class ClientRateLimitFilter(RateLimitFilter):
    """
    A rate limit keyed on the client's address alone, which can also
    count the new connections of a C{tcp} or C{udp} listener.
    """

    def connection_made(self, address: str):
        decision = self._buckets.take(address)
        if isinstance(decision, Deferred):
            return decision.addCallback(_allowed)
        return decision[0]

    def connection_lost(self, address: str) -> None:
        pass


def _allowed(decision: Decision) -> bool:
    return decision[0]


def _keys(value: object, path: str) -> List[str]:
    # An empty list means the client's address, as leaving it out does.
    return texts()(value, path) or ["client"]


def _missing(value: object, path: str) -> str:
    missing = text()(value, path)
    if missing not in _MISSING:
        raise ConfigError(path, f"must be 'client', 'shared' or 'skip', not {missing!r}")
    return missing


def _redis_url(value: object, path: str) -> Any:
    # Imported here: only a configuration that shares its counters needs it.
    from twistproxy.redis import parse_url

    return parse_url(value, path)


@dataclass(frozen=True)
class RateLimitOptions:
    """
    The options of the C{rate_limit} filter.

    @ivar burst: C{None} for the rate rounded up.
    @ivar zone: C{None} for the filter's configuration path.
    """

    rate: float = setting(check=number(), required=needs("rate_limit"))
    burst: Optional[int] = setting(None, check=count(1))
    key: List[str] = setting(check=_keys, factory=lambda: ["client"])
    missing: str = setting("client", check=_missing)
    status: int = setting(429, check=count(200, 599))
    redis: Any = setting(None, check=_redis_url)
    zone: Optional[str] = setting(None, check=text())
    redis_timeout: float = setting(0.25, check=number())


@implementer(IPlugin, IFilterFactory)
class RateLimitFactory:
    name = "rate_limit"
    help = "Requests per second per client, header, route or host (GCRA), in memory or Redis."

    def fromConfig(self, reactor, options: Mapping[str, Any], path: str) -> RateLimitFilter:
        settings = read_options(RateLimitOptions, options, path, self.name)
        rate, missing = settings.rate, settings.missing
        burst = settings.burst or max(1, math.ceil(rate))
        where = key_path(path, "key")
        parts = [_key_part(s, f"{where}[{i}]", missing) for i, s in enumerate(settings.key)]
        headers = [name for name in map(_header_name, settings.key) if name is not None]
        if "missing" in options and not headers:
            raise ConfigError(key_path(path, "missing"), "only with a 'header:NAME' key")
        buckets: Any = MemoryBuckets(reactor, rate, burst)
        if settings.redis is not None:
            zone = path if settings.zone is None else settings.zone
            buckets = RedisBuckets(settings.redis, reactor, rate, burst, zone, buckets,
                                   settings.redis_timeout)
        elif "zone" in options or "redis_timeout" in options:
            raise ConfigError(key_path(path, "zone" if "zone" in options else "redis_timeout"),
                              "only with redis")
        kind = ClientRateLimitFilter if settings.key == ["client"] else RateLimitFilter
        exempt = _lacks_any(headers) if missing == "skip" else None
        return kind(buckets, parts, burst, settings.status, exempt)

    __repr__ = factory_repr


@implementer(IRefusingConnectionFilter)
class ConnectionLimit:
    """
    At most C{limit} open connections per client address.
    """

    # What the access log says of a TCP connection it refused (nginx
    # stream's limit_conn status).
    refusal = Answer(503, reason="connection_limit")

    def __init__(self, limit: int):
        self._limit = limit
        self._open: Dict[str, int] = {}

    def connection_made(self, address: str) -> bool:
        count = self._open.get(address, 0)
        if count >= self._limit:
            return False
        self._open[address] = count + 1
        return True

    def connection_lost(self, address: str) -> None:
        count = self._open.get(address, 0) - 1
        if count > 0:
            self._open[address] = count
        else:
            self._open.pop(address, None)


@dataclass(frozen=True)
class ConnectionLimitOptions:
    """
    The options of C{connection_limit}.

    @ivar max: The most connections open at once per client address.
    """

    max: int = setting(check=count(1), required=needs("connection_limit"))


@implementer(IPlugin, IFilterFactory)
class ConnectionLimitFactory:
    name = "connection_limit"
    help = "At most so many open connections per client address (listeners only)."

    def fromConfig(self, reactor, options: Mapping[str, Any], path: str) -> ConnectionLimit:
        return ConnectionLimit(read_options(ConnectionLimitOptions, options, path, self.name).max)

    __repr__ = factory_repr
