"""
twistproxy: a multi-protocol reverse proxy framework on Twisted.

The public API for applications that embed the proxy::

    from twistproxy import ProxyService, load
    ProxyService(load("proxy.toml"), reactor).setServiceParent(application)

or that build a configuration in code with L{ProxyConfig}, L{Listener},
L{UpstreamGroup}, L{Route}, L{server}, and L{Filter}, L{RouteCache} and
L{Cache} for filters and the cache.  Plugin interfaces are in
L{twistproxy.interfaces}, test helpers in L{twistproxy.testing}.
"""

from twistproxy._version import __version__
from twistproxy.config import (
    AccessLog,
    Cache,
    ConfigError,
    Filter,
    Forwarding,
    HeaderRules,
    Limits,
    Listener,
    ProxyConfig,
    Route,
    RouteCache,
    Server,
    SNIRoute,
    Timeouts,
    UpstreamGroup,
    load,
    parse,
    quick_config,
    server,
)
from twistproxy.build import validate
from twistproxy.service import ProxyService

__all__ = [
    "__version__",
    "AccessLog",
    "Cache",
    "ConfigError",
    "Filter",
    "Forwarding",
    "HeaderRules",
    "Limits",
    "Listener",
    "ProxyConfig",
    "ProxyService",
    "Route",
    "RouteCache",
    "Server",
    "SNIRoute",
    "Timeouts",
    "UpstreamGroup",
    "load",
    "parse",
    "quick_config",
    "server",
    "validate",
]
