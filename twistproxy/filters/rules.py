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
from typing import Any, List, Mapping, Optional, Pattern, Tuple
from urllib.parse import unquote

from twisted.plugin import IPlugin
from zope.interface import implementer

from twistproxy.components import factory_repr
from twistproxy.config import ConfigError, describe_value, is_token, key_path
from twistproxy.filters.chain import Answer
from twistproxy.filters.options import Options
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

    def filter_request(self, x) -> Optional[Answer]:
        req = x.request
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


@implementer(IPlugin, IFilterFactory)
class BlockFactory:
    name = "block"
    help = "Refuse requests by method, path, header or user agent."

    def fromConfig(self, reactor, options: Mapping[str, Any], path: str) -> BlockFilter:
        o = Options(options, path, self.name,
                    optional=("methods", "paths", "headers", "user_agents", "status"))
        methods = o.tokens("methods", "method")
        paths = [_compile(p, f"{o.where('paths')}[{i}]")
                 for i, p in enumerate(o.strings("paths"))]
        headers = [(b"user-agent", _compile(p, f"{o.where('user_agents')}[{i}]"))
                   for i, p in enumerate(o.strings("user_agents"))]
        table = o.get("headers", {})
        if not isinstance(table, dict):
            raise ConfigError(o.where("headers"), f"must be a table of header names to "
                                                  f"expressions, not {describe_value(table)}")
        for name, pattern in table.items():
            where = key_path(o.where("headers"), name)
            if not is_token(name):
                raise ConfigError(where, f"{name!r} is not a header name")
            if not isinstance(pattern, str):
                raise ConfigError(where, f"must be a regular expression, not "
                                         f"{describe_value(pattern)}")
            headers.append((name.lower().encode("ascii"), _compile(pattern, where)))
        if not (methods or paths or headers):
            raise ConfigError(path, "the block filter needs methods, paths, headers "
                                    "or user_agents")
        return BlockFilter(frozenset(m.upper().encode("ascii") for m in methods),
                           paths, headers, o.status("status", 403))

    __repr__ = factory_repr
