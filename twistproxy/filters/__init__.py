# -*- test-case-name: tests.test_filters_chain -*-
"""
Filters: what a listener or a route does to requests and responses on
their way through, beyond forwarding them.

A listener's C{filters} run before routing, a route's after it, in the
declared order.  A request filter (L{IRequestFilter
<twistproxy.interfaces.IRequestFilter>}) lets a request through or answers
it (an L{Answer}: 403, 429, a CORS preflight); a response filter
(L{IResponseFilter <twistproxy.interfaces.IResponseFilter>}) wraps the
response sink to change what goes back (fields, compression); a connection
filter (L{IConnectionFilter <twistproxy.interfaces.IConnectionFilter>})
refuses connections by the client's address, the only kind a C{tcp} or
C{udp} listener takes.  The built-in filters live in one module per family
(L{access}, L{ratelimit}, L{rules}, L{auth}, L{headers}, L{cors},
L{compress}) and are found by name like any plugin; docs/filters.rst shows
how to write one, with what this package gives a filter's author: the
L{Answer}, L{SinkWrapper} and the option checks (L{OptionReader},
L{read_options}).
"""

from __future__ import annotations

from twistproxy.filters.chain import FilterChain, build_chain, client_ip
from twistproxy.filters.options import OptionReader, read_options
from twistproxy.http.answers import Answer, respond
from twistproxy.http.headers import with_fields
from twistproxy.http.sinks import SinkWrapper

__all__ = ["Answer", "FilterChain", "OptionReader", "SinkWrapper", "build_chain", "client_ip",
           "read_options", "respond", "with_fields"]
