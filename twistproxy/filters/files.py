# -*- test-case-name: tests.test_filters_access -*-
"""
Files that filters read at start-up and again when they change (access
lists, htpasswd files).

A L{WatchedFile} looks at its file's modification time and size at most
once every C{interval} seconds of the injected clock, when it is asked for
its contents (no timer runs), and reads it again when either changed.  A
file that became unreadable or bad keeps its last good contents, and the
log says so: a half-written file never changes what a filter decides.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Generic, Tuple, TypeVar

from twisted.logger import Logger

from twistproxy.config import ConfigError

_T = TypeVar("_T")


def _stamp(path: str) -> Tuple[float, int]:
    st = os.stat(path)
    return st.st_mtime, st.st_size


class WatchedFile(Generic[_T]):
    """
    The parsed contents of a file, kept up to date.

    @ivar version: Counts the reads, so that users can tell a change.
    """

    log = Logger()

    def __init__(self, clock, name: str, parse: Callable[[str], _T], interval: float,
                 path: str, what: str):
        """
        @param parse: Reads the file at the path it is given; raises
            L{ConfigError} (naming the file and line) or L{OSError}.
        @param path: The configuration path naming the file, for errors.
        @param what: What the file is, for the log: C{'access list'}.
        @raises ConfigError: when the file cannot be read or is bad now.
        """
        self._clock = clock
        self.name = name
        self._parse = parse
        self._interval = interval
        self._what = what
        self._next_look = clock.seconds() + interval
        try:
            self._stamp = _stamp(name)
            self._value = parse(name)
        except OSError as e:
            raise ConfigError(path, f"cannot read {name!r}: {e.strerror}") from None
        self.version = 0

    @property
    def value(self) -> _T:
        self.fresh()
        return self._value

    def fresh(self) -> int:
        """
        Look at the file if the interval since the last look is over.

        @return: L{version}.
        """
        now = self._clock.seconds()
        if now >= self._next_look:
            self._next_look = now + self._interval
            self._look()
        return self.version

    def _look(self) -> None:
        try:
            stamp = _stamp(self.name)
            if stamp == self._stamp:
                return
            value = self._parse(self.name)
        except (OSError, ConfigError) as e:
            self.log.error("{what} {file} not reloaded, the old contents stay: {problem}",
                           what=self._what, file=self.name, problem=str(e))
            return
        self._stamp, self._value = stamp, value
        self.version += 1
        self.log.info("{what} {file} reloaded", what=self._what, file=self.name)


def read_lines(name: str, parse_line: Callable[[str, str], Any]) -> list:
    """
    The parsed lines of a text file, blank lines and C{#} comments left
    out.

    @param parse_line: Called with each line and its place
        (C{'file:line'}); raises L{ConfigError} for a bad line.
    """
    out = []
    with open(name, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if line:
                out.append(parse_line(line, f"{name}:{number}"))
    return out
