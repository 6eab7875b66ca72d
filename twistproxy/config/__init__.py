# -*- test-case-name: tests.test_config -*-
"""
Configuration: a TOML file parsed once into frozen value objects.

Everything the proxy does is decided by a L{ProxyConfig}.  It is built from a
TOML file by L{load} (or from a string by L{parse}), or directly by calling
the constructors below when embedding twistproxy in an application.  The
objects are immutable, so a running proxy can hold on to one while a reload
builds the next.

Parsing is strict: an unknown key, a value of the wrong type or an
inconsistent setting raises L{ConfigError}, whose message names the file, the
path of the setting inside it (C{upstreams.api.servers[2].url}) and what is
wrong.  Nothing is silently ignored.

The package's rooms: L{values <twistproxy.config.values>} (the value
classes, each setting declared once with its check), L{schema
<twistproxy.config.schema>} (the reader that walks those declarations),
L{checks <twistproxy.config.checks>} (what a value may be),
L{parse <twistproxy.config.parse>} (the sections and the rules between
settings) and L{quick <twistproxy.config.quick>} (configurations made
without a file).
"""

from __future__ import annotations

from twistproxy.config.checks import (
    ConfigError, check_option_names, describe_value, did_you_mean, is_label, is_token, key_path,
    workers_count, wrong_type,
)
from twistproxy.config.parse import load, parse
from twistproxy.config.quick import quick_config, server
from twistproxy.config.values import (
    ACME, DNS, ESCAPED_SLASHES, AccessLog, Admin, Cache, Certificate, Discovery, DNSRecord,
    DNSZone, FixedResponse, Filter, Forwarding, HeaderRules, HealthCheck, Limits, Listener,
    ListenerTLS, Locality, Locator, Outlier, PathRewrite, ProxyConfig, QueryRules, Redirect,
    Resolver, Route, RouteCache, RouteMatch, RouteMirror, RouteSplit, Server, Shutdown, SNIRoute,
    Sticky, Timeouts, UpstreamGroup, UpstreamTLS, header_rules,
)

__all__ = [
    "ACME", "AccessLog", "Admin", "Cache", "Certificate", "ConfigError", "DNS", "DNSRecord",
    "DNSZone", "Discovery", "ESCAPED_SLASHES", "Filter", "FixedResponse", "Forwarding",
    "HeaderRules", "HealthCheck", "Limits", "Listener", "ListenerTLS", "Locality", "Locator",
    "Outlier", "PathRewrite", "ProxyConfig", "QueryRules", "Redirect", "Resolver", "Route", "RouteCache",
    "RouteMatch", "RouteMirror", "RouteSplit", "SNIRoute", "Server", "Shutdown", "Sticky",
    "Timeouts", "UpstreamGroup", "UpstreamTLS", "check_option_names", "describe_value",
    "did_you_mean",
    "header_rules", "is_label", "is_token", "key_path", "load", "parse", "quick_config",
    "server", "workers_count", "wrong_type",
]
