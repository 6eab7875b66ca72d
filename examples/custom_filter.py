"""
A custom filter, as docs/filters.rst explains: requests must carry one of
the configured API keys in a header, and responses say which key served
them.  Name it in a configuration by its dotted path::

    [listeners.web]
    endpoint = "tcp:8080"
    filters = [
        { name = "custom_filter.require_key", header = "X-Api-Key", keys = ["s3cret"] },
    ]

(with this directory on C{PYTHONPATH}), or export it from a dropin module
in C{twistproxy/plugins/} to name it C{"require_key"}.
"""

# No "from __future__ import annotations" here: the tests load this file
# without registering it as a module, and dataclasses then need real
# annotations.
from dataclasses import dataclass
from typing import List

from twisted.plugin import IPlugin
from zope.interface import implementer

from twistproxy.config.schema import setting
from twistproxy.filters import Answer, SinkWrapper
from twistproxy.filters.options import needs, read_options, text, texts
from twistproxy.interfaces import IFilterFactory, IRequestFilter, IResponseFilter


class _KeyStamp(SinkWrapper):
    """
    Adds the field C{X-Api-Key-Seen: yes} to the response head.
    """

    def response_head(self, exchange, resp, has_body, extra=None):
        extra = list(extra or ()) + [(b"X-Api-Key-Seen", b"yes")]
        self.sink.response_head(exchange, resp, has_body, extra)


@implementer(IRequestFilter, IResponseFilter)
class RequireKey:
    def __init__(self, header, keys):
        self.header = header
        self.keys = frozenset(keys)

    def filter_request(self, request):
        if request.header(self.header) in self.keys:
            return None  # let it through
        return Answer(401, [(b"WWW-Authenticate", b"ApiKey")], reason="no_api_key")

    def wrap_response(self, request, sink):
        return _KeyStamp(sink)


@dataclass(frozen=True)
class RequireKeyOptions:
    keys: List[str] = setting(check=texts(), required=needs("require_key"))
    header: str = setting("X-Api-Key", check=text())


@implementer(IPlugin, IFilterFactory)
class RequireKeyFactory:
    name = "require_key"
    help = "Requests must carry one of the API keys in a header."

    def fromConfig(self, reactor, options, path):
        settings = read_options(RequireKeyOptions, options, path, self.name)
        return RequireKey(settings.header, settings.keys)


require_key = RequireKeyFactory()
