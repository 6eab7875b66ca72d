# -*- test-case-name: tests.test_filters_rules -*-
"""
Request rules: refuse requests by method, path, header or user agent.

The C{block} filter refuses (403 by default, or the status it is given) a
request that matches any of its rules: a method in C{methods}, a path (the
target, query included) matched by one of the regular expressions of
C{paths}, a header whose value one of C{headers}' expressions matches, or a
C{User-Agent} matched by one of C{user_agents}.  Expressions are Python
regular expressions searched anywhere in the value; anchor them (C{^}) to
match from the start.

A path expression is matched against the target as it is forwarded (as
the client sent it, unless the listener decodes escaped slashes), and
against the target with its path normalised as routes see it
(L{twistproxy.http.paths}: unreserved characters decoded, C{%2F}, C{%5C}
and C{\\} read as C{/}, no C{.} or C{..} segments, no doubled slashes),
also decoded once when it still has escapes: the request is refused when
any of them matches, so neither C{/%61dmin} nor C{/%2fadmin} nor
C{/public/../admin} dodges C{^/admin}.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Pattern, Tuple
from urllib.parse import unquote

from twisted.plugin import IPlugin
from zope.interface import implementer

from twistproxy.components import factory_repr
from twistproxy.config import ConfigError, describe_value, is_token, key_path
from twistproxy.http.answers import Answer
from twistproxy.config.schema import setting
from twistproxy.filters.options import count, read_options, texts, tokens
from twistproxy.interfaces import IFilterFactory, IRequestFilter


def _compile(pattern: str, path: str) -> Pattern:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise ConfigError(path, f"{pattern!r} is not a regular expression: {e}") from None


def _readings(req) -> Tuple[str, ...]:
    """
    The spellings of a request's target that path expressions are matched
    against: as forwarded, with its path normalised, and that decoded
    once.
    """
    target = req.target
    q = target.find(b"?")
    normal = req.path if q < 0 else req.path + target[q:]
    sent = target.decode("ascii")
    if normal == target:
        return (sent, unquote(sent)) if b"%" in target else (sent,)
    normal_text = normal.decode("ascii")
    if b"%" in normal:
        return sent, normal_text, unquote(normal_text)
    return sent, normal_text


@implementer(IRequestFilter)
class BlockFilter:
    """
    Refuses the requests that match one of its rules.
    """

    def __init__(self, methods: frozenset, paths: List[Pattern],
                 headers: List[Tuple[bytes, Pattern]], status: int = 403):
        self._methods = methods
        self._paths = paths
        self._headers = headers
        self._answer = Answer(status, reason="request_blocked")

    def filter_request(self, exchange) -> Optional[Answer]:
        req = exchange.request
        if req.method in self._methods:
            return self._answer
        if self._paths:
            paths = _readings(req)
            for pattern in self._paths:
                for candidate in paths:
                    if pattern.search(candidate):
                        return self._answer
        for name, pattern in self._headers:
            for key, value in req.headers:
                if key.lower() == name and pattern.search(value.decode("latin-1")):
                    return self._answer
        return None


def _patterns(value: object, path: str) -> List[Pattern[str]]:
    return [_compile(p, f"{path}[{i}]") for i, p in enumerate(texts()(value, path))]


def _user_agents(value: object, path: str) -> List[Tuple[bytes, Pattern[str]]]:
    return [(b"user-agent", pattern) for pattern in _patterns(value, path)]


def _header_patterns(table: object, path: str) -> List[Tuple[bytes, Pattern[str]]]:
    if not isinstance(table, dict):
        raise ConfigError(path, f"must be a table of header names to "
                                f"expressions, not {describe_value(table)}")
    headers = []
    for name, pattern in table.items():
        where = key_path(path, name)
        if not is_token(name):
            raise ConfigError(where, f"{name!r} is not a header name")
        if not isinstance(pattern, str):
            raise ConfigError(where, f"must be a regular expression, not "
                                     f"{describe_value(pattern)}")
        headers.append((name.lower().encode("ascii"), _compile(pattern, where)))
    return headers


@dataclass(frozen=True)
class BlockOptions:
    """
    The options of the C{block} filter.
    """

    methods: List[str] = setting(check=tokens("method"), factory=list)
    paths: List[Pattern[str]] = setting(check=_patterns, factory=list)
    headers: List[Tuple[bytes, Pattern[str]]] = setting(check=_header_patterns, factory=list)
    user_agents: List[Tuple[bytes, Pattern[str]]] = setting(check=_user_agents, factory=list)
    status: int = setting(403, check=count(200, 599))


@implementer(IPlugin, IFilterFactory)
class BlockFactory:
    name = "block"
    help = "Refuse requests by method, path, header or user agent."

    def fromConfig(self, reactor, options: Mapping[str, Any], path: str) -> BlockFilter:
        settings = read_options(BlockOptions, options, path, self.name)
        headers = settings.user_agents + settings.headers
        if not (settings.methods or settings.paths or headers):
            raise ConfigError(path, "the block filter needs methods, paths, headers "
                                    "or user_agents")
        return BlockFilter(frozenset(m.upper().encode("ascii") for m in settings.methods),
                           settings.paths, headers, settings.status)

    __repr__ = factory_repr
