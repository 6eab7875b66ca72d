# -*- test-case-name: tests.test_redis -*-
"""
Redis, where several proxy processes and machines keep what they share.

One proxy process keeps its cache and its rate-limit counters in memory.
Several workers, or several machines behind an L4 balancer, must agree on
them instead: the stores that do so keep their state in Redis, the
existing engine for exactly this, through txredisapi (a Twisted-native
client, installed with the C{redis} extra: C{pip install
'twistproxy[redis]'}).

A store's configuration names its server with a URL,
C{redis://[[user]:password@]host[:port][/db]}; L{parse_url} checks it when
the configuration is read, and L{connect} opens a pool of connections that
reconnects by itself when the server goes away and comes back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional
from urllib.parse import unquote, urlsplit

from twistproxy.config import ConfigError

DEFAULT_PORT = 6379


@dataclass(frozen=True)
class RedisAddress:
    """
    Where a Redis server is, and how to log in to it.

    @ivar db: The database number (C{SELECT}), 0 unless the URL's path
        names one.
    """

    host: str
    port: int = DEFAULT_PORT
    db: int = 0
    username: Optional[str] = None
    password: Optional[str] = None


def parse_url(url: object, path: str) -> RedisAddress:
    """
    Read a C{redis://} URL.

    @param path: Where the URL sits in the configuration, for errors.
    @raise ConfigError: If it is not a usable Redis URL.
    """
    if not isinstance(url, str):
        raise ConfigError(path, "expected a redis:// URL as a string")
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise ConfigError(path, f"expected a redis:// URL, got {url!r}")
    if parts.query or parts.fragment:
        raise ConfigError(path, f"a Redis URL takes no query or fragment: {url!r}")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ConfigError(path, f"bad port in {url!r}") from None
    if not parts.hostname:
        raise ConfigError(path, f"no host in {url!r}")
    db_text = parts.path.lstrip("/")
    if db_text and not (db_text.isdigit() and db_text.isascii()):
        raise ConfigError(path, f"the database after the host must be a number: {url!r}")
    return RedisAddress(
        host=parts.hostname,
        port=port,
        db=int(db_text or 0),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def connect(address: RedisAddress, timeout: float = 1.0, size: int = 4):
    """
    A pool of connections to C{address} that connects in the background
    and reconnects when lost.

    Replies are bytes, never converted: the callers store bodies and
    counters and decode what they need themselves.

    @param timeout: Seconds to wait for a connection or a reply; a store
        must treat a late answer as a failure (and serve without Redis)
        rather than hold requests.
    @param size: How many connections to keep.
    @return: A C{txredisapi} connection handler; its commands return
        L{Deferred}s.
    """
    import txredisapi

    return txredisapi.lazyConnectionPool(
        host=address.host, port=address.port, dbid=address.db, poolsize=size,
        reconnect=True, charset=None, password=address.password,
        username=address.username, connectTimeout=timeout, replyTimeout=timeout,
        convertNumbers=False,
    )
