# -*- test-case-name: tests.test_filters_access -*-
"""
Access rules: allow and deny lists of networks (IPv4 and IPv6).

A request whose client address is in a C{deny} network is refused (403 by
default); when there is an C{allow} list, so is one whose address is in
none of its networks.  Deny wins over allow, so a broad allow list can
have holes punched in it.

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

import os
from typing import Any, List, Mapping, Optional, Tuple

from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from twistproxy.components import factory_repr
from twistproxy.config import ConfigError
from twistproxy.filters.chain import Answer, client_ip
from twistproxy.filters.options import Options
from twistproxy.interfaces import IFilterFactory, IRequestFilter
from twistproxy.upstream.locators import PrefixTable, parse_network


def read_networks(path: str) -> list:
    """
    The networks listed in the file at C{path}.

    @raises ConfigError: naming the file and line of a bad network.
    @raises OSError: when the file cannot be read.
    """
    networks = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if line:
                networks.append(parse_network(line, f"{path}:{number}"))
    return networks


class NetworkList:
    """
    A set of networks, given inline and in files that are read again when
    they change.
    """

    log = Logger()

    def __init__(self, clock, inline: list, files: List[str], interval: float, path: str):
        """
        @param inline: Networks (as L{parse_network} returns them).
        @param files: Paths of files of networks, read now.
        @param interval: The least time between two looks at the files.
        @param path: The configuration path of the list, for errors.
        @raises ConfigError: when a file cannot be read or is bad.
        """
        self._clock = clock
        self._inline = inline
        self._interval = interval
        self._next_look = clock.seconds() + interval
        self._files: List[Tuple[str, Optional[Tuple[float, int]], list]] = []
        for i, name in enumerate(files):
            try:
                self._files.append((name, _stamp(name), read_networks(name)))
            except OSError as e:
                raise ConfigError(f"{path}[{i}]", f"cannot read {name!r}: {e.strerror}") from None
        self._table = self._build()

    def _build(self) -> PrefixTable:
        networks = list(self._inline)
        for _, _, listed in self._files:
            networks += listed
        return PrefixTable((n, True) for n in networks)

    def __contains__(self, address: str) -> bool:
        if self._files and self._clock.seconds() >= self._next_look:
            self._look()
        return address in self._table

    def __len__(self) -> int:
        return len(self._table)

    def _look(self) -> None:
        """
        Read again the files that changed since they were last read.
        """
        self._next_look = self._clock.seconds() + self._interval
        changed = False
        for i, (name, stamp, networks) in enumerate(self._files):
            try:
                now = _stamp(name)
                if now == stamp:
                    continue
                networks = read_networks(name)
            except (OSError, ConfigError) as e:
                self.log.error("access list {file} not reloaded, its old networks stay: "
                               "{problem}", file=name, problem=str(e))
                continue
            self._files[i] = (name, now, networks)
            changed = True
            self.log.info("access list {file} reloaded: {count} networks",
                          file=name, count=len(networks))
        if changed:
            self._table = self._build()


def _stamp(path: str) -> Tuple[float, int]:
    st = os.stat(path)
    return st.st_mtime, st.st_size


@implementer(IRequestFilter)
class AccessFilter:
    """
    Refuses requests by client address.

    @ivar allow: The networks allowed, or C{None} for all.
    @ivar deny: The networks refused, or C{None}.
    """

    def __init__(self, allow: Optional[NetworkList], deny: Optional[NetworkList],
                 status: int = 403):
        self.allow = allow
        self.deny = deny
        self._answer = Answer(status, reason="access_denied")

    def filter_request(self, x) -> Optional[Answer]:
        address = client_ip(x)
        if self.deny is not None and address in self.deny:
            return self._answer
        if self.allow is not None and address not in self.allow:
            return self._answer
        return None


@implementer(IPlugin, IFilterFactory)
class AccessFactory:
    name = "access"
    help = "Allow and deny lists of networks (inline or in files reloaded on change)."

    def fromConfig(self, reactor, options: Mapping[str, Any], path: str) -> AccessFilter:
        o = Options(options, path, self.name, optional=(
            "allow", "deny", "allow_files", "deny_files", "status", "reload_interval"))
        interval = o.number("reload_interval", 5.0)
        lists = []
        for which in ("allow", "deny"):
            inline = [parse_network(n, f"{o.where(which)}[{i}]")
                      for i, n in enumerate(o.strings(which))]
            files = o.strings(f"{which}_files")
            lists.append(
                NetworkList(reactor, inline, files, interval, o.where(f"{which}_files"))
                if which in o or f"{which}_files" in o else None)
        if lists == [None, None]:
            raise ConfigError(path, "the access filter needs allow, deny, allow_files "
                                    "or deny_files")
        return AccessFilter(lists[0], lists[1], o.status("status", 403))

    __repr__ = factory_repr
