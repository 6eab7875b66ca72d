# -*- test-case-name: tests.test_filters_access -*-
"""
Access rules: allow and deny lists of networks (IPv4 and IPv6).

A request whose client address is in a C{deny} network is refused (403 by
default); when there is an C{allow} list, so is one whose address is in
none of its networks.  Deny wins over allow, so a broad allow list can
have holes punched in it.

On a C{tcp} or C{udp} listener the same rules judge each connection (or
UDP session) as it starts, by the peer's address or the one its trusted
PROXY header gives: a refused connection is closed before any backend is
connected to, a refused session's datagrams are dropped.

The address is the connected peer's, unless the peer is a trusted proxy
(C{forwarding.trusted_proxies}), whose C{Forwarded} field is then believed
(L{client_ip}): a client cannot get past a deny list by writing someone
else's address in a header.

Networks are given inline or in files, one network (or address) per line,
C{#} starting a comment.  A file is looked at again, at most every
C{reload_interval} seconds, when a request is checked: when its
modification time or size changed it is read again; a file that cannot be
read or holds a bad line keeps the networks it had (and says so in the
log), so a half-written file never opens the door.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Mapping, Optional

from twisted.plugin import IPlugin
from zope.interface import implementer

from twistproxy.components import factory_repr
from twistproxy.config import ConfigError, key_path
from twistproxy.config.schema import setting
from twistproxy.filters.chain import client_ip
from twistproxy.http.answers import Answer
from twistproxy.filters.files import WatchedFile, read_lines
from twistproxy.filters.options import count, number, read_options, texts
from twistproxy.interfaces import IFilterFactory, IRefusingConnectionFilter, IRequestFilter
from twistproxy.net import PrefixTable, parse_network


def read_networks(name: str) -> list:
    """
    The networks listed in the file C{name}.

    @raises ConfigError: naming the file and line of a bad network.
    @raises OSError: when the file cannot be read.
    """
    return read_lines(name, parse_network)


class NetworkList:
    """
    A set of networks, given inline and in files that are read again when
    they change.
    """

    def __init__(self, clock, inline: list, files: List[str], interval: float, path: str):
        """
        @param inline: Networks (as L{parse_network} returns them).
        @param files: Names of files of networks, read now.
        @param interval: The least time between two looks at the files.
        @param path: The configuration path of the files, for errors.
        @raises ConfigError: when a file cannot be read or is bad.
        """
        self._inline = inline
        self._files = [WatchedFile(clock, name, read_networks, interval, f"{path}[{i}]",
                                   "access list")
                       for i, name in enumerate(files)]
        self._versions = self._current()
        self._table = self._build()

    def _current(self) -> list:
        return [f.fresh() for f in self._files]

    def _build(self) -> PrefixTable:
        networks = list(self._inline)
        for f in self._files:
            networks += f.value
        return PrefixTable((n, True) for n in networks)

    def __contains__(self, address: str) -> bool:
        if self._files:
            versions = self._current()
            if versions != self._versions:
                self._versions = versions
                self._table = self._build()
        return address in self._table


@implementer(IRequestFilter, IRefusingConnectionFilter)
class AccessFilter:
    """
    Refuses requests (on HTTP listeners) or connections (on C{tcp} and
    C{udp} listeners) by client address.

    @ivar allow: The networks allowed, or C{None} for all.
    @ivar deny: The networks refused, or C{None}.
    @ivar refusal: The answer to a refused request, and what the access log
        says of a refused connection.
    """

    def __init__(self, allow: Optional[NetworkList], deny: Optional[NetworkList],
                 status: int = 403):
        self.allow = allow
        self.deny = deny
        self.refusal = Answer(status, reason="access_denied")

    def filter_request(self, exchange) -> Optional[Answer]:
        return None if self.connection_made(client_ip(exchange)) else self.refusal

    def connection_made(self, address: str) -> bool:
        if self.deny is not None and address in self.deny:
            return False
        return self.allow is None or address in self.allow

    def connection_lost(self, address: str) -> None:
        pass


def _networks(value: object, path: str) -> list:
    return [parse_network(n, f"{path}[{i}]") for i, n in enumerate(texts()(value, path))]


@dataclass(frozen=True)
class AccessOptions:
    """
    The options of the C{access} filter: a list left out is C{None}.
    """

    allow: Optional[list] = setting(None, check=_networks)
    deny: Optional[list] = setting(None, check=_networks)
    allow_files: Optional[List[str]] = setting(None, check=texts())
    deny_files: Optional[List[str]] = setting(None, check=texts())
    status: int = setting(403, check=count(200, 599))
    reload_interval: float = setting(5.0, check=number())


@implementer(IPlugin, IFilterFactory)
class AccessFactory:
    name = "access"
    help = "Allow and deny lists of networks (inline or in files reloaded on change)."

    def fromConfig(self, reactor, options: Mapping[str, Any], path: str) -> AccessFilter:
        settings = read_options(AccessOptions, options, path, self.name)
        lists = []
        for inline, files, where in (
                (settings.allow, settings.allow_files, key_path(path, "allow_files")),
                (settings.deny, settings.deny_files, key_path(path, "deny_files"))):
            lists.append(
                NetworkList(reactor, inline or [], files or [], settings.reload_interval, where)
                if inline is not None or files is not None else None)
        if lists == [None, None]:
            raise ConfigError(path, "the access filter needs allow, deny, allow_files "
                                    "or deny_files")
        return AccessFilter(lists[0], lists[1], settings.status)

    __repr__ = factory_repr
