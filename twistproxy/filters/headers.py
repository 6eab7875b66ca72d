# -*- test-case-name: tests.test_filters_headers -*-
"""
Header rules on requests and responses, and hiding the backends' banners.

The C{headers} filter edits fields the way a route's C{request_headers}
and C{response_headers} do (C{remove}, then C{set}, then C{add}; see
L{HeaderRules <twistproxy.config.HeaderRules>}), on a listener (every
route) or a route, and C{hide_banners = true} removes the fields by which
backends announce their software and version (C{Server}, C{X-Powered-By}
and the like), which tell an attacker which exploits to try.

The answers the proxy gives by itself never name a backend, and the
proxy sends no C{Server} field of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence, Tuple

from twisted.plugin import IPlugin
from zope.interface import implementer

from twistproxy.components import factory_repr
from twistproxy.config import ConfigError, HeaderRules, key_path
from twistproxy.config.schema import section, setting
from twistproxy.http.headers import with_fields
from twistproxy.http.sinks import SinkWrapper
from twistproxy.filters.options import flag, read_options
from twistproxy.http import headers as H
from twistproxy.interfaces import IFilterFactory, IRequestFilter, IResponseFilter

# Fields that name the backend's software (and often its version), or the
# backend itself (X-Backend-Server, X-Server: a host name or address).
BANNERS = ("Server", "X-Powered-By", "X-AspNet-Version", "X-AspNetMvc-Version",
           "X-Generator", "X-Runtime", "X-Backend-Server", "X-Server")

Fields = List[Tuple[bytes, bytes]]


class FieldEdits:
    """
    L{HeaderRules} as edits of a list of fields.
    """

    __slots__ = ("drop", "append")

    def __init__(self, rules: HeaderRules, path: str):
        try:
            # Refuses framing fields, as for routes.
            H.CompiledRules(rules)
        except ValueError as e:
            raise ConfigError(path, str(e)) from None
        if any(n.lower() == "host" for n, _ in rules.set):
            raise ConfigError(path, "set Host with a route's request_headers")
        self.drop = frozenset(
            n.lower().encode("ascii") for n in list(rules.remove) + [n for n, _ in rules.set])
        self.append = [(n.encode("ascii"), v.encode("latin-1"))
                       for n, v in list(rules.set) + list(rules.add)]

    def __call__(self, fields: Sequence[Tuple[bytes, bytes]]) -> Fields:
        """
        A new list: C{fields} edited.
        """
        drop = self.drop
        return [f for f in fields if f[0].lower() not in drop] + self.append


class _EditedResponse(SinkWrapper):
    __slots__ = ("_edit",)

    def __init__(self, sink, edit: FieldEdits):
        super().__init__(sink)
        self._edit = edit

    def informational(self, exchange, resp) -> None:
        # Removals (banners included) apply to interim heads too; the
        # fields set or added are for the final one.
        drop = self._edit.drop
        self.sink.informational(
            exchange, with_fields(resp, [f for f in resp.headers if f[0].lower() not in drop]))

    def response_head(self, exchange, resp, has_body: bool, extra=None) -> None:
        self.sink.response_head(exchange, with_fields(resp, self._edit(resp.headers)), has_body, extra)


@implementer(IRequestFilter, IResponseFilter)
class HeadersFilter:
    """
    Edits request and response fields.
    """

    def __init__(self, request: Optional[FieldEdits], response: Optional[FieldEdits]):
        self._request = request
        self._response = response

    def filter_request(self, exchange) -> None:
        if self._request is not None:
            exchange.request.headers = self._request(exchange.request.headers)
        return None

    def wrap_response(self, exchange, sink):
        if self._response is None:
            return None
        return _EditedResponse(sink, self._response)


@dataclass(frozen=True)
class HeadersOptions:
    """
    The options of the C{headers} filter: edits of requests and responses
    (as a route's C{request_headers} and C{response_headers}).
    """

    request: Optional[HeaderRules] = setting(None, check=section(HeaderRules))
    response: HeaderRules = setting(HeaderRules(), check=section(HeaderRules))
    hide_banners: bool = setting(False, check=flag)


@implementer(IPlugin, IFilterFactory)
class HeadersFactory:
    name = "headers"
    help = "Add, set and remove request and response fields; hide backend banners."

    def fromConfig(self, reactor, options: Mapping[str, Any], path: str) -> HeadersFilter:
        settings = read_options(HeadersOptions, options, path, self.name)
        request = response = None
        if settings.request is not None:
            request = FieldEdits(settings.request, key_path(path, "request"))
        rules = settings.response
        if settings.hide_banners:
            rules = HeaderRules(remove=rules.remove + BANNERS, set=rules.set, add=rules.add)
        if rules != HeaderRules():
            response = FieldEdits(rules, key_path(path, "response"))
        if request is None and response is None:
            raise ConfigError(path, "the headers filter needs request, response or "
                                    "hide_banners = true")
        return HeadersFilter(request, response)

    __repr__ = factory_repr
