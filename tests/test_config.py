# -*- test-case-name: tests.test_config -*-
"""
Tests for L{twistproxy.config}: TOML text in, frozen value objects or a
L{ConfigError} naming the offending setting out.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Optional

from twisted.trial.unittest import SynchronousTestCase

from twistproxy.config import (
    AccessLog,
    ConfigError,
    Discovery,
    FixedResponse,
    Forwarding,
    HeaderRules,
    HealthCheck,
    Limits,
    Listener,
    Locality,
    Locator,
    Outlier,
    PathRewrite,
    Resolver,
    Sticky,
    ProxyConfig,
    QueryRules,
    Redirect,
    Route,
    RouteMatch,
    RouteMirror,
    RouteSplit,
    Server,
    Timeouts,
    UpstreamGroup,
    load,
    parse,
)

# The smallest valid configuration; tests append sections to it.
MINIMAL = """
[listeners.main]
endpoint = "tcp:8080"

[upstreams.api]
servers = ["http://127.0.0.1:8001"]
"""

# Two groups, so that routes are required.
TWO_GROUPS = MINIMAL + """
[upstreams.static]
servers = ["http://127.0.0.1:9001"]
"""

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


class _ConfigTestMixin:
    """
    Helpers shared by the test cases below.
    """

    def assert_config_error(
        self, text: str, path: str, problem: Optional[str] = None, contains: Optional[str] = None
    ) -> ConfigError:
        """
        Parsing C{text} raises L{ConfigError} at C{path}, with exactly
        C{problem} or a problem containing C{contains}.
        """
        with self.assertRaises(ConfigError) as raised:  # type: ignore[attr-defined]
            parse(text, "proxy.toml")
        error = raised.exception
        self.assertEqual(error.path, path, str(error))  # type: ignore[attr-defined]
        self.assertEqual(error.source, "proxy.toml")  # type: ignore[attr-defined]
        if problem is not None:
            self.assertEqual(error.problem, problem)  # type: ignore[attr-defined]
        if contains is not None:
            self.assertIn(contains, error.problem)  # type: ignore[attr-defined]
        return error

    def server(self, url: str) -> Server:
        """
        Parse a configuration whose only server has URL C{url} and return it.
        """
        text = f"""
[listeners.main]
endpoint = "tcp:8080"
[upstreams.api]
servers = [{url!r}]
"""
        return parse(text).upstreams["api"].servers[0]

    def route(self, body: str) -> Route:
        """
        Parse L{MINIMAL} with one route whose settings are C{body} (C{upstream}
        is filled in) and return that route.
        """
        return parse(MINIMAL + '[[routes]]\nupstream = "api"\n' + body).routes[0]

    def route_error(self, body: str, path: str, problem: Optional[str] = None,
                   contains: Optional[str] = None) -> ConfigError:
        """
        A route whose settings are C{body} is rejected at C{path}.
        """
        return self.assert_config_error(
            MINIMAL + '[[routes]]\nupstream = "api"\n' + body, path, problem, contains
        )


class ConfigErrorTests(SynchronousTestCase):
    """
    Tests for L{ConfigError}.
    """

    def test_str(self) -> None:
        """
        The string form is C{source: path: problem}.
        """
        error = ConfigError(
            "upstreams.api.servers[2].url",
            "must be an http:// or https:// URL",
            "proxy.toml",
        )
        self.assertEqual(
            str(error),
            "proxy.toml: upstreams.api.servers[2].url: must be an http:// or https:// URL",
        )

    def test_str_without_path_or_source(self) -> None:
        """
        Missing parts are left out of the string form, with their separators.
        """
        self.assertEqual(str(ConfigError("", "broken", "proxy.toml")), "proxy.toml: broken")
        self.assertEqual(str(ConfigError("a.b", "broken")), "a.b: broken")
        self.assertEqual(str(ConfigError("", "broken")), "broken")

    def test_error_from_parse_has_source(self) -> None:
        """
        An error from L{parse} carries the source given to it, and the string
        form names source, path and problem.
        """
        with self.assertRaises(ConfigError) as raised:
            parse(MINIMAL + "[timeouts]\nconnect = 0\n", "proxy.toml")
        self.assertEqual(
            str(raised.exception), "proxy.toml: timeouts.connect: must be greater than 0 (got 0)"
        )

    def test_default_source(self) -> None:
        """
        Without a source, L{parse} reports C{<string>}.
        """
        with self.assertRaises(ConfigError) as raised:
            parse("")
        self.assertEqual(raised.exception.source, "<string>")


class MinimalConfigTests(SynchronousTestCase):
    """
    The defaults filled in for a minimal configuration.
    """

    def setUp(self) -> None:
        self.config = parse(MINIMAL, "proxy.toml")

    def test_type(self) -> None:
        """
        L{parse} returns a L{ProxyConfig} whose source is the name given.
        """
        self.assertIsInstance(self.config, ProxyConfig)
        self.assertEqual(self.config.source, "proxy.toml")

    def test_listener(self) -> None:
        """
        A listener keeps its name and endpoint string.
        """
        self.assertEqual(self.config.listeners, (Listener(name="main", endpoint="tcp:8080"),))

    def test_upstream_defaults(self) -> None:
        """
        A group without settings gets the defaults of L{UpstreamGroup}, and a
        server URL without a port gets the scheme's port and weight 1.
        """
        self.assertEqual(
            dict(self.config.upstreams),
            {
                "api": UpstreamGroup(
                    name="api",
                    servers=(
                        Server(
                            url="http://127.0.0.1:8001",
                            scheme="http",
                            host="127.0.0.1",
                            port=8001,
                            weight=1,
                        ),
                    ),
                    balancer="round_robin",
                    balancer_options={},
                    max_connections=256,
                    max_idle=256,
                )
            },
        )

    def test_default_route(self) -> None:
        """
        Without routes and with exactly one group, a single default route
        sends everything to that group.
        """
        self.assertEqual(self.config.routes, (Route(upstream="api"),))

    def test_section_defaults(self) -> None:
        """
        Absent sections get their classes' defaults.
        """
        self.assertEqual(self.config.timeouts, Timeouts())
        self.assertEqual(self.config.limits, Limits())
        self.assertEqual(self.config.forwarding, Forwarding())
        self.assertEqual(self.config.access_log, AccessLog())
        self.assertEqual(self.config.access_log, AccessLog(path="stdout", format="combined"))

    def test_empty_routes_array(self) -> None:
        """
        An empty C{routes} array is treated like an absent one.
        """
        self.assertEqual(parse("routes = []\n" + MINIMAL).routes, (Route(upstream="api"),))


class TopLevelTests(_ConfigTestMixin, SynchronousTestCase):
    """
    Required sections and unknown keys at the top level.
    """

    def test_unknown_top_level_key(self) -> None:
        """
        An unknown top-level key is rejected at its own path.
        """
        self.assert_config_error("foo = 1\n" + MINIMAL, "foo", "unknown key 'foo'")

    def test_unknown_top_level_table(self) -> None:
        """
        An unknown top-level table is rejected at its own path.
        """
        self.assert_config_error(MINIMAL + "[stash]\nsize = 1\n", "stash", "unknown key 'stash'")

    def test_unknown_key_suggestion(self) -> None:
        """
        A misspelt key is reported with the closest known key.
        """
        self.assert_config_error(
            MINIMAL + "[timeout]\n", "timeout", "unknown key 'timeout' (did you mean 'timeouts'?)"
        )

    def test_quoted_unknown_key(self) -> None:
        """
        A key that TOML needs quoted is shown quoted in the path.
        """
        self.assert_config_error('"a b" = 1\n' + MINIMAL, '"a b"', "unknown key 'a b'")

    def test_empty(self) -> None:
        """
        An empty file lacks listeners.
        """
        self.assert_config_error(
            "", "listeners", "at least one listener is required ([listeners.NAME] with an endpoint)"
        )

    def test_workers(self) -> None:
        """
        C{workers} is a number of at least 1, or C{"auto"} for one per CPU
        core; 1 by default.
        """
        self.assertEqual(parse(MINIMAL).workers, 1)
        self.assertEqual(parse("workers = 3\n" + MINIMAL).workers, 3)
        self.assertEqual(parse('workers = "auto"\n' + MINIMAL).workers, os.cpu_count() or 1)
        self.assert_config_error("workers = 0\n" + MINIMAL, "workers", "must be at least 1 (got 0)")
        self.assert_config_error('workers = "2"\n' + MINIMAL, "workers",
                               'must be an integer or "auto", not a string')
        self.assert_config_error("workers = true\n" + MINIMAL, "workers",
                               'must be an integer or "auto", not a boolean')

    def test_no_upstreams(self) -> None:
        """
        A file without upstream groups is rejected at C{upstreams}.
        """
        self.assert_config_error(
            '[listeners.main]\nendpoint = "tcp:8080"\n',
            "upstreams",
            "at least one upstream group is required ([upstreams.NAME] with servers)",
        )

    def test_unknown_key_part_of_known_keys(self) -> None:
        """
        An unknown key that begins a known key, or one of its words, is
        reported with it, next to the near spellings, at most three, the
        closest spelling first.
        """
        self.assert_config_error(
            MINIMAL + "[upstreams.api.budget]\n", "upstreams.api.budget",
            "unknown key 'budget' (did you mean 'retry_budget'?)")
        self.assert_config_error(
            MINIMAL + "[upstreams.api.max]\n", "upstreams.api.max",
            "unknown key 'max' (did you mean 'max_connections', 'max_idle' or 'max_pending'?)")
        self.assert_config_error(
            MINIMAL + "[timeout]\n", "timeout",
            "unknown key 'timeout' (did you mean 'timeouts'?)")

    def test_short_unknown_key_no_part_suggestion(self) -> None:
        """
        A key of fewer than three characters is not matched against the
        words of known keys, which would name nearly any of them.
        """
        self.assert_config_error(
            MINIMAL + "[upstreams.api.ma]\n", "upstreams.api.ma", "unknown key 'ma'")


class ListenerTests(_ConfigTestMixin, SynchronousTestCase):
    """
    The C{[listeners.NAME]} tables.
    """

    def test_several(self) -> None:
        """
        Several listeners are kept in file order.
        """
        config = parse(
            """
[listeners.b]
endpoint = "tcp:8081"
[listeners.a]
endpoint = "ssl:8443:privateKey=key.pem"
[upstreams.api]
servers = ["http://x"]
"""
        )
        self.assertEqual(
            config.listeners,
            (
                Listener(name="b", endpoint="tcp:8081"),
                Listener(name="a", endpoint="ssl:8443:privateKey=key.pem"),
            ),
        )

    def test_name_characters(self) -> None:
        """
        Listener names may use letters, digits, C{_}, C{.} and C{-}; a dotted
        name is shown quoted in paths.
        """
        config = parse(MINIMAL + '[listeners."a.B_1-x"]\nendpoint = "tcp:1"\n')
        self.assertEqual(config.listeners[1].name, "a.B_1-x")

    def test_bad_name(self) -> None:
        """
        A listener name with other characters is rejected.
        """
        self.assert_config_error(
            MINIMAL + '[listeners."a b"]\nendpoint = "tcp:1"\n',
            'listeners."a b"',
            "invalid listener name 'a b': use only letters, digits, '_', '.' and '-'",
        )

    def test_empty_name(self) -> None:
        """
        An empty listener name is rejected.
        """
        self.assert_config_error(
            MINIMAL + '[listeners.""]\nendpoint = "tcp:1"\n',
            'listeners.""',
            contains="invalid listener name ''",
        )

    def test_no_listeners(self) -> None:
        """
        An empty C{listeners} table is rejected.
        """
        self.assert_config_error(
            'listeners = {}\n[upstreams.api]\nservers = ["http://x"]\n',
            "listeners",
            "at least one listener is required ([listeners.NAME])",
        )

    def test_listeners_not_a_table(self) -> None:
        """
        C{listeners} must be a table.
        """
        self.assert_config_error(
            'listeners = ["tcp:8080"]\n[upstreams.api]\nservers = ["http://x"]\n',
            "listeners",
            "must be a table of listeners, not an array",
        )

    def test_listener_not_a_table(self) -> None:
        """
        Each listener must be a table.
        """
        self.assert_config_error(
            'listeners = { main = "tcp:8080" }\n[upstreams.api]\nservers = ["http://x"]\n',
            "listeners.main",
            "must be a table, not a string",
        )

    def test_endpoint_required(self) -> None:
        """
        A listener without an endpoint is rejected at its C{endpoint} path.
        """
        self.assert_config_error(
            MINIMAL + "[listeners.other]\n",
            "listeners.other.endpoint",
            'is required (an endpoint string such as "tcp:8080")',
        )

    def test_endpoint_type(self) -> None:
        """
        An endpoint must be a string.
        """
        self.assert_config_error(
            MINIMAL + "[listeners.other]\nendpoint = 8080\n",
            "listeners.other.endpoint",
            "must be a string, not an integer",
        )

    def test_endpoint_empty(self) -> None:
        """
        An empty (or blank) endpoint is rejected.
        """
        for endpoint in ('""', '"  "'):
            self.assert_config_error(
                MINIMAL + f"[listeners.other]\nendpoint = {endpoint}\n",
                "listeners.other.endpoint",
                "must not be empty",
            )

    def test_endpoint_nul(self) -> None:
        """
        An endpoint with a NUL character is rejected.
        """
        self.assert_config_error(
            MINIMAL + '[listeners.other]\nendpoint = "tcp:80\\u0000"\n',
            "listeners.other.endpoint",
            "must not contain NUL",
        )

    def test_unknown_key(self) -> None:
        """
        An unknown key in a listener is rejected at its path.
        """
        self.assert_config_error(
            MINIMAL + '[listeners.other]\nendpoint = "tcp:1"\ncolour = 5\n',
            "listeners.other.colour",
            "unknown key 'colour'",
        )

    def test_backlog(self) -> None:
        """
        C{backlog} is the length of a stream listener's accept queue, 0
        (the endpoint's own) when not given; it is refused where the
        endpoint takes none, where the endpoint string sets one, on udp
        listeners, and out of range.
        """
        config = parse(MINIMAL + '[listeners.other]\nendpoint = "unix:/run/p.sock"\n'
                                 'backlog = 1024\n')
        self.assertEqual([l.backlog for l in config.listeners], [0, 1024])
        for table, problem in [
            ('endpoint = "systemd:domain=INET:index=0"\nbacklog = 5',
             "not for systemd: endpoints (only tcp:, tcp6:, ssl: and unix:)"),
            ('endpoint = "tcp:1:backlog=7"\nbacklog = 5',
             "the endpoint string sets backlog= already; give it once"),
            ('endpoint = "udp:1"\nprotocol = "udp"\nupstream = "app"\nbacklog = 5',
             "not for udp: endpoints (only tcp:, tcp6:, ssl: and unix:)"),
            ('endpoint = "tcp:1"\nprotocol = "udp"\nupstream = "app"\nbacklog = 5',
             "not for udp listeners (only http and tcp)"),
            ('endpoint = "tcp:1"\nbacklog = 0', "must be at least 1 (got 0)"),
            ('endpoint = "tcp:1"\nbacklog = 70000', "must be at most 65535 (got 70000)"),
        ]:
            self.assert_config_error(MINIMAL + f"[listeners.other]\n{table}\n",
                                     "listeners.other.backlog", problem)


class UpstreamGroupTests(_ConfigTestMixin, SynchronousTestCase):
    """
    The C{[upstreams.NAME]} tables.
    """

    def test_every_key(self) -> None:
        """
        Every key of a group is read.
        """
        config = parse(
            """
[listeners.main]
endpoint = "tcp:8080"
[upstreams.api]
servers = ["http://a:1", { url = "https://b", weight = 3 }]
balancer = "least_connections"
max_connections = 10
max_idle = 0
[upstreams.api.balancer_options]
choices = 2
nested = { x = [1, 2] }
"""
        )
        self.assertEqual(
            config.upstreams["api"],
            UpstreamGroup(
                name="api",
                servers=(
                    Server(url="http://a:1", scheme="http", host="a", port=1, weight=1),
                    Server(url="https://b", scheme="https", host="b", port=443, weight=3),
                ),
                balancer="least_connections",
                balancer_options={"choices": 2, "nested": {"x": [1, 2]}},
                max_connections=10,
                max_idle=0,
            ),
        )
        self.assertIs(type(config.upstreams["api"].balancer_options), dict)

    def test_group_order(self) -> None:
        """
        Groups are kept in file order.
        """
        config = parse(TWO_GROUPS + '[[routes]]\nupstream = "api"\n')
        self.assertEqual(list(config.upstreams), ["api", "static"])
        self.assertEqual(config.upstreams["static"].name, "static")

    def test_upstreams_not_a_table(self) -> None:
        """
        C{upstreams} must be a table.
        """
        self.assert_config_error(
            '[listeners.main]\nendpoint = "tcp:8080"\n[[upstreams]]\nservers = []\n',
            "upstreams",
            "must be a table of upstream groups, not an array",
        )

    def test_no_groups(self) -> None:
        """
        An empty C{upstreams} table is rejected.
        """
        self.assert_config_error(
            '[listeners.main]\nendpoint = "tcp:8080"\n[upstreams]\n',
            "upstreams",
            "at least one upstream group is required ([upstreams.NAME])",
        )

    def test_bad_name(self) -> None:
        """
        A group name with characters outside C{[A-Za-z0-9_.-]} is rejected.
        """
        self.assert_config_error(
            MINIMAL + '[upstreams."api/v2"]\nservers = ["http://x"]\n',
            'upstreams."api/v2"',
            "invalid upstream group name 'api/v2': use only letters, digits, '_', '.' and '-'",
        )

    def test_group_not_a_table(self) -> None:
        """
        A group must be a table.
        """
        self.assert_config_error(
            '[listeners.main]\nendpoint = "tcp:8080"\n[upstreams]\napi = "http://x"\n',
            "upstreams.api",
            "must be a table, not a string",
        )

    def test_servers_required(self) -> None:
        """
        A group without servers is rejected at its C{servers} path.
        """
        self.assert_config_error(
            MINIMAL + "[upstreams.other]\nbalancer = 'random'\n",
            "upstreams.other.servers",
            "is required (an array of backend URLs)",
        )

    def test_servers_empty(self) -> None:
        """
        A group with an empty server list is rejected.
        """
        self.assert_config_error(
            MINIMAL + "[upstreams.other]\nservers = []\n",
            "upstreams.other.servers",
            "must list at least one server",
        )

    def test_servers_not_an_array(self) -> None:
        """
        C{servers} must be an array, even for one server.
        """
        self.assert_config_error(
            MINIMAL + "[upstreams.other]\nservers = 'http://x'\n",
            "upstreams.other.servers",
            "must be an array, not a string",
        )

    def test_server_wrong_type(self) -> None:
        """
        A server must be a string or a table.
        """
        self.assert_config_error(
            MINIMAL + "[upstreams.other]\nservers = ['http://x', 8080]\n",
            "upstreams.other.servers[1]",
            "must be a URL string, a table {url, weight, region, zone, drain}, "
            "or a DNS entry {dns, port} / {srv}, not an integer",
        )

    def test_server_table_url_required(self) -> None:
        """
        A server table without C{url} is rejected at its C{url} path.
        """
        self.assert_config_error(
            MINIMAL + "[upstreams.other]\nservers = [{ weight = 2 }]\n",
            "upstreams.other.servers[0].url",
            "is required",
        )

    def test_server_table_unknown_key(self) -> None:
        """
        An unknown key in a server table is rejected at its path.
        """
        self.assert_config_error(
            MINIMAL + "[upstreams.other]\nservers = [{ url = 'http://x', wieght = 2 }]\n",
            "upstreams.other.servers[0].wieght",
            "unknown key 'wieght' (did you mean 'weight'?)",
        )

    def test_bad_url_in_table(self) -> None:
        """
        A bad URL in a server table is reported at the C{url} path.
        """
        self.assert_config_error(
            MINIMAL
            + "[upstreams.other]\nservers = ['http://a', 'http://b', { url = 'ftp://c' }]\n",
            "upstreams.other.servers[2].url",
            "must be an http:// or https:// URL",
        )

    def test_bad_url_string(self) -> None:
        """
        A bad URL given as a string is reported at the item's path.
        """
        self.assert_config_error(
            MINIMAL + "[upstreams.other]\nservers = ['http://a', 'c:8080']\n",
            "upstreams.other.servers[1]",
            "must be an http:// or https:// URL",
        )

    def test_url_type(self) -> None:
        """
        C{url} must be a string.
        """
        self.assert_config_error(
            MINIMAL + "[upstreams.other]\nservers = [{ url = 8080 }]\n",
            "upstreams.other.servers[0].url",
            "must be a string, not an integer",
        )

    def test_weight(self) -> None:
        """
        C{weight} must be an integer of at least 1; a boolean is not one.
        """
        for value, problem in [
            ("0", "must be at least 1 (got 0)"),
            ("-2", "must be at least 1 (got -2)"),
            ("1.5", "must be an integer, not a float"),
            ("true", "must be an integer, not a boolean"),
            ("'2'", "must be an integer, not a string"),
        ]:
            self.assert_config_error(
                MINIMAL + f"[upstreams.other]\nservers = [{{ url = 'http://x', weight = {value} }}]\n",
                "upstreams.other.servers[0].weight",
                problem,
            )

    def test_duplicate_server(self) -> None:
        """
        The same scheme, host and port twice in a group is rejected, even if
        written differently.
        """
        self.assert_config_error(
            MINIMAL + "[upstreams.other]\nservers = ['http://x', 'http://y', 'HTTP://X:80/']\n",
            "upstreams.other.servers[2]",
            "duplicate of upstreams.other.servers[0]; use weight to send it more requests",
        )

    def test_same_host_other_scheme(self) -> None:
        """
        The same host over http and https are different servers.
        """
        config = parse(
            MINIMAL
            + "[upstreams.other]\nservers = ['http://x:443', 'https://x']\n"
            + "[[routes]]\nupstream = 'other'\n"
        )
        self.assertEqual(len(config.upstreams["other"].servers), 2)

    def test_balancer(self) -> None:
        """
        C{balancer} must be a non-empty string.
        """
        self.assert_config_error(
            MINIMAL + "[upstreams.other]\nservers = ['http://x']\nbalancer = 1\n",
            "upstreams.other.balancer",
            "must be a string, not an integer",
        )
        self.assert_config_error(
            MINIMAL + "[upstreams.other]\nservers = ['http://x']\nbalancer = ''\n",
            "upstreams.other.balancer",
            "must not be empty",
        )

    def test_balancer_dotted_path(self) -> None:
        """
        C{balancer} may be a dotted path; it is not resolved here.
        """
        config = parse(
            MINIMAL
            + "[upstreams.other]\nservers = ['http://x']\nbalancer = 'my.module.Factory'\n"
            + "[[routes]]\nupstream = 'other'\n"
        )
        self.assertEqual(config.upstreams["other"].balancer, "my.module.Factory")

    def test_balancer_options_type(self) -> None:
        """
        C{balancer_options} must be a table.
        """
        self.assert_config_error(
            MINIMAL + "[upstreams.other]\nservers = ['http://x']\nbalancer_options = [1]\n",
            "upstreams.other.balancer_options",
            "must be a table, not an array",
        )

    def test_max_connections(self) -> None:
        """
        C{max_connections} must be an integer of at least 1.
        """
        for value, problem in [
            ("0", "must be at least 1 (got 0)"),
            ("true", "must be an integer, not a boolean"),
            ("2.0", "must be an integer, not a float"),
        ]:
            self.assert_config_error(
                MINIMAL + f"[upstreams.other]\nservers = ['http://x']\nmax_connections = {value}\n",
                "upstreams.other.max_connections",
                problem,
            )

    def test_max_idle(self) -> None:
        """
        C{max_idle} must be an integer of at least 0.
        """
        for value, problem in [
            ("-1", "must be at least 0 (got -1)"),
            ("false", "must be an integer, not a boolean"),
        ]:
            self.assert_config_error(
                MINIMAL + f"[upstreams.other]\nservers = ['http://x']\nmax_idle = {value}\n",
                "upstreams.other.max_idle",
                problem,
            )

    def test_unknown_key(self) -> None:
        """
        An unknown key in a group is rejected at its path.
        """
        self.assert_config_error(
            MINIMAL + "[upstreams.other]\nservers = ['http://x']\nfrobnicate = 1\n",
            "upstreams.other.frobnicate",
            "unknown key 'frobnicate'",
        )


class ServerURLTests(_ConfigTestMixin, SynchronousTestCase):
    """
    Backend server URLs.
    """

    def test_default_ports(self) -> None:
        """
        The port defaults to 80 for http and 443 for https.
        """
        self.assertEqual(self.server("http://example.com").port, 80)
        self.assertEqual(self.server("https://example.com").port, 443)
        self.assertEqual(self.server("https://example.com").scheme, "https")

    def test_explicit_port(self) -> None:
        """
        An explicit port is used and kept in the canonical URL.
        """
        server = self.server("https://example.com:8443")
        self.assertEqual((server.host, server.port), ("example.com", 8443))
        self.assertEqual(server.url, "https://example.com:8443")

    def test_canonical(self) -> None:
        """
        Scheme and host are lower-cased and a trailing slash dropped.
        """
        self.assertEqual(
            self.server("HTTP://Example.COM:0080/"),
            Server(url="http://example.com:80", scheme="http", host="example.com", port=80),
        )

    def test_ipv6(self) -> None:
        """
        An IPv6 literal is written in brackets; the host is stored without
        them and the URL with them.
        """
        self.assertEqual(
            self.server("http://[::1]:8080"),
            Server(url="http://[::1]:8080", scheme="http", host="::1", port=8080),
        )
        self.assertEqual(self.server("https://[2001:DB8::1]/").host, "2001:db8::1")
        self.assertEqual(self.server("https://[2001:DB8::1]/").port, 443)

    def test_ipv6_without_brackets(self) -> None:
        """
        An IPv6 literal without brackets is rejected with a hint.
        """
        self.assert_config_error(
            MINIMAL + "[upstreams.other]\nservers = ['http://::1']\n",
            "upstreams.other.servers[0]",
            "write the IPv6 address in 'http://::1' in brackets, as in 'http://[::1]:8080'",
        )

    def test_bad_ipv6(self) -> None:
        """
        Brackets must hold an IPv6 address.
        """
        self.assert_config_error(
            MINIMAL + "[upstreams.other]\nservers = ['http://[example.com]']\n",
            "upstreams.other.servers[0]",
            "invalid host in 'http://[example.com]': not an IPv6 address",
        )
        self.assert_config_error(
            MINIMAL + "[upstreams.other]\nservers = ['http://[::1]x']\n",
            "upstreams.other.servers[0]",
            "invalid host in 'http://[::1]x': only ':port' may follow ']'",
        )
        self.assert_config_error(
            MINIMAL + "[upstreams.other]\nservers = ['http://[::1']\n",
            "upstreams.other.servers[0]",
            "invalid host in 'http://[::1': missing ']'",
        )

    def test_ipv4(self) -> None:
        """
        An IPv4 address is a host.
        """
        self.assertEqual(self.server("http://10.1.2.3:81").host, "10.1.2.3")

    def test_rejected(self) -> None:
        """
        Each malformed or unsupported URL is rejected with a specific problem.
        """
        cases = [
            ("ftp://x", "must be an http:// or https:// URL"),
            ("x:8080", "must be an http:// or https:// URL"),
            ("http:x", "must be an http:// or https:// URL"),
            ("", "must be an http:// or https:// URL"),
            ("http://", "'http://' must name a host"),
            ("http://:80", "'http://:80' must name a host"),
            ("http://x/api", "'http://x/api' must not have a path ('/api'); "
             "requests are forwarded with their own path"),
            ("http://x?a=1", "'http://x?a=1' must not have a query or fragment"),
            ("http://x/?", "'http://x/?' must not have a query or fragment"),
            ("http://x#f", "'http://x#f' must not have a query or fragment"),
            ("http://u:p@x", "'http://u:p@x' must not contain a user name or password"),
            ("http://x:0", "invalid port in 'http://x:0': must be a number from 1 to 65535"),
            ("http://x:65536",
             "invalid port in 'http://x:65536': must be a number from 1 to 65535"),
            ("http://x:http",
             "invalid port in 'http://x:http': must be a number from 1 to 65535"),
            ("http://x:", "invalid port in 'http://x:': the port is empty"),
            ("http://a b", "'http://a b' must not contain whitespace or control characters"),
            ("http://a\tb", "'http://a\\tb' must not contain whitespace or control characters"),
            ("http://a\x00b", "'http://a\\x00b' must not contain whitespace or control characters"),
            ("http://a..b", "invalid host 'a..b': empty label between dots"),
            ("http://*.a", "invalid host '*.a': a server cannot be a wildcard"),
            ("http://a$b", "invalid host 'a$b': only letters, digits, '-', '_' and '.' are allowed"),
        ]
        for url, problem in cases:
            # A JSON string is also a TOML basic string.
            self.assert_config_error(
                MINIMAL + f"[upstreams.other]\nservers = [{{ url = {json.dumps(url)} }}]\n",
                "upstreams.other.servers[0].url",
                problem,
            )

    def test_highest_port(self) -> None:
        """
        Port 65535 is allowed.
        """
        self.assertEqual(self.server("http://x:65535").port, 65535)


class RouteTests(_ConfigTestMixin, SynchronousTestCase):
    """
    The C{[[routes]]} array.
    """

    def test_every_key(self) -> None:
        """
        Every key of a route is read.
        """
        config = parse(
            TWO_GROUPS
            + """
[[routes]]
name = "static files"
hosts = ["Static.Example.com", "*.CDN.example.com"]
path_prefix = "/static/"
methods = ["get", "HEAD"]
upstream = "static"
preserve_host = false
request_headers = { remove = ["X-Debug"], set = { "X-Env" = "prod", "X-A" = "1" }, add = { "X-Tag" = "a" } }
[routes.response_headers]
remove = ["Server", "X-Powered-By"]
add = { "Cache-Control" = "public, max-age=60" }

[[routes]]
upstream = "api"
"""
        )
        self.assertEqual(
            config.routes,
            (
                Route(
                    name="static files",
                    hosts=("static.example.com", "*.cdn.example.com"),
                    path_prefix="/static/",
                    methods=("GET", "HEAD"),
                    upstream="static",
                    preserve_host=False,
                    request_headers=HeaderRules(
                        remove=("X-Debug",),
                        set=(("X-Env", "prod"), ("X-A", "1")),
                        add=(("X-Tag", "a"),),
                    ),
                    response_headers=HeaderRules(
                        remove=("Server", "X-Powered-By"),
                        add=(("Cache-Control", "public, max-age=60"),),
                    ),
                ),
                Route(name="routes[1]", upstream="api"),
            ),
        )

    def test_defaults(self) -> None:
        """
        A route with only C{upstream} gets its index as name, matches every
        host, path and method, preserves Host and edits no headers.
        """
        self.assertEqual(
            self.route(""),
            Route(
                upstream="api",
                name="routes[0]",
                hosts=(),
                path_prefix="/",
                methods=(),
                preserve_host=True,
                request_headers=HeaderRules(),
                response_headers=HeaderRules(),
            ),
        )

    def test_routes_required_with_several_groups(self) -> None:
        """
        Without routes and with several groups, the file is rejected at
        C{routes}.
        """
        self.assert_config_error(
            TWO_GROUPS,
            "routes",
            "routes are required when there are several upstream groups "
            "(api, static); add [[routes]] with an upstream",
        )

    def test_routes_not_an_array(self) -> None:
        """
        C{routes} must be an array of tables.
        """
        self.assert_config_error(
            MINIMAL + "[routes]\nupstream = 'api'\n",
            "routes",
            "must be an array of tables ([[routes]]), not a table",
        )

    def test_route_not_a_table(self) -> None:
        """
        Each route must be a table.
        """
        self.assert_config_error(
            "routes = ['api']\n" + MINIMAL,
            "routes[0]",
            "must be a table ([[routes]]), not a string",
        )

    def test_upstream_required(self) -> None:
        """
        A route without C{upstream} (nor a redirect or a fixed response) is
        rejected at its C{upstream} path.
        """
        self.assert_config_error(
            MINIMAL + "[[routes]]\npath_prefix = '/a'\nupstream = 'api'\n[[routes]]\nname = 'x'\n",
            "routes[1].upstream",
            "is required (the name of an upstream group, a split, or a redirect or respond "
            "table)",
        )

    def test_upstream_unknown(self) -> None:
        """
        A route naming a group that does not exist is rejected, listing the
        groups that do.
        """
        self.assert_config_error(
            TWO_GROUPS + "[[routes]]\nupstream = 'apl'\n",
            "routes[0].upstream",
            "no upstream group named 'apl' (defined: api, static)",
        )

    def test_upstream_type(self) -> None:
        """
        C{upstream} must be a string.
        """
        self.assert_config_error(
            MINIMAL + "[[routes]]\nupstream = ['api']\n",
            "routes[0].upstream",
            "must be a string, not an array",
        )

    def test_name(self) -> None:
        """
        C{name} must be a non-empty string.
        """
        self.route_error("name = 3\n", "routes[0].name", "must be a string, not an integer")
        self.route_error("name = ''\n", "routes[0].name", "must not be empty")

    def test_duplicate_name(self) -> None:
        """
        Two routes with the same name are rejected at the second.
        """
        self.assert_config_error(
            MINIMAL
            + "[[routes]]\nname = 'a'\nupstream = 'api'\nmethods = ['GET']\n"
            + "[[routes]]\nname = 'a'\nupstream = 'api'\n",
            "routes[1].name",
            "duplicate route name 'a' (also routes[0])",
        )

    def test_unknown_key(self) -> None:
        """
        An unknown key in a route is rejected at its path.
        """
        self.route_error("prefix = '/a'\n", "routes[0].prefix", contains="unknown key 'prefix'")

    def test_preserve_host(self) -> None:
        """
        C{preserve_host} must be a real boolean.
        """
        self.assertFalse(self.route("preserve_host = false\n").preserve_host)
        self.route_error(
            "preserve_host = 'false'\n",
            "routes[0].preserve_host",
            "must be a boolean (true or false), not a string",
        )
        self.route_error(
            "preserve_host = 1\n",
            "routes[0].preserve_host",
            "must be a boolean (true or false), not an integer",
        )

    def test_unknown_key_path_suggests_path_prefix(self) -> None:
        """
        C{path}, a word of C{path_prefix} but not a near spelling of it, is
        reported with C{path_prefix}.
        """
        self.route_error("path = '/a'\n", "routes[0].path",
                        "unknown key 'path' (did you mean 'path_prefix', 'path_exact' or "
                        "'path_regex'?)")
        self.route_error("prefix = '/a'\n", "routes[0].prefix",
                        "unknown key 'prefix' (did you mean 'add_prefix', 'path_prefix' or "
                        "'strip_prefix'?)")


class RouteHostTests(_ConfigTestMixin, SynchronousTestCase):
    """
    The C{hosts} of a route.
    """

    def test_single_string(self) -> None:
        """
        A single string is accepted as one host.
        """
        self.assertEqual(self.route("hosts = 'Example.com'\n").hosts, ("example.com",))

    def test_empty_array(self) -> None:
        """
        An empty array matches any host.
        """
        self.assertEqual(self.route("hosts = []\npath_prefix = '/a'\n").hosts, ())

    def test_accepted(self) -> None:
        """
        Names, wildcards, IPv4 and bracketed IPv6 addresses are accepted and
        lower-cased.
        """
        self.assertEqual(
            self.route(
                "hosts = ['a-b.example.com', '*.Example.COM', 'localhost', '10.0.0.1', "
                "'[2001:DB8::1]', 'under_score.internal']\n"
            ).hosts,
            (
                "a-b.example.com",
                "*.example.com",
                "localhost",
                "10.0.0.1",
                "[2001:db8::1]",
                "under_score.internal",
            ),
        )

    def test_rejected(self) -> None:
        """
        Each bad host is rejected at its index with a specific problem.
        """
        cases = [
            ("", "host must not be empty"),
            ("example.com:8080",
             "invalid host 'example.com:8080': a route matches host names without a port; "
             "remove the port"),
            ("[::1]:8080",
             "invalid host '[::1]:8080': a route matches host names without a port; "
             "remove the port"),
            ("::1", "invalid host '::1': write an IPv6 address in brackets, as in '[::1]'"),
            ("[nope]", "invalid host '[nope]': not an IPv6 address"),
            (" example.com", "invalid host ' example.com': must not contain whitespace"),
            ("exa mple.com", "invalid host 'exa mple.com': must not contain whitespace"),
            ("*", "invalid host '*': a wildcard needs a domain after it, as in '*.example.com'"),
            ("a.*.com",
             "invalid host 'a.*.com': '*' is only allowed as the whole first label, "
             "as in '*.example.com'"),
            ("*example.com",
             "invalid host '*example.com': '*' is only allowed as the whole first label, "
             "as in '*.example.com'"),
            ("a..b", "invalid host 'a..b': empty label between dots"),
            ("example.com.", "invalid host 'example.com.': empty label between dots"),
            ("ex/ample", "invalid host 'ex/ample': only letters, digits, '-', '_' and '.' "
             "are allowed"),
        ]
        for host, problem in cases:
            self.route_error(f"hosts = ['ok.example', {host!r}]\n", "routes[0].hosts[1]", problem)

    def test_single_string_rejected(self) -> None:
        """
        A bad single-string host is reported at C{hosts}.
        """
        self.route_error("hosts = 'a:1'\n", "routes[0].hosts", contains="remove the port")

    def test_type(self) -> None:
        """
        C{hosts} must be a string or an array of strings.
        """
        self.route_error(
            "hosts = 1\n", "routes[0].hosts", "must be a string or an array of strings, not an integer"
        )
        self.route_error("hosts = ['a', 1]\n", "routes[0].hosts[1]", "must be a string, not an integer")


class RoutePathAndMethodTests(_ConfigTestMixin, SynchronousTestCase):
    """
    The C{path_prefix} and C{methods} of a route.
    """

    def test_path_prefix(self) -> None:
        """
        C{path_prefix} is kept as written.
        """
        self.assertEqual(self.route("path_prefix = '/api/v1'\n").path_prefix, "/api/v1")

    def test_path_prefix_rejected(self) -> None:
        """
        C{path_prefix} must be a string starting with C{/}, without
        whitespace, control characters, query or fragment.
        """
        cases = [
            ("'api/'", "must start with '/' (got 'api/')"),
            ("''", "must start with '/' (got '')"),
            ("'/a b'", "must not contain whitespace or control characters (got '/a b')"),
            ('"/a\\u0000"', "must not contain whitespace or control characters (got '/a\\x00')"),
            ("'/a?b=1'", "must be a path without '?' or '#' (got '/a?b=1')"),
            ("'/a#b'", "must be a path without '?' or '#' (got '/a#b')"),
            ("1", "must be a string, not an integer"),
        ]
        for value, problem in cases:
            self.route_error(f"path_prefix = {value}\n", "routes[0].path_prefix", problem)

    def test_methods(self) -> None:
        """
        Methods are upper-cased; extension methods are allowed.
        """
        self.assertEqual(
            self.route("methods = ['get', 'Post', 'PROPFIND']\n").methods,
            ("GET", "POST", "PROPFIND"),
        )

    def test_methods_rejected(self) -> None:
        """
        Each method must be an HTTP token, and C{methods} an array.
        """
        self.route_error(
            "methods = ['GET', 'GE T']\n",
            "routes[0].methods[1]",
            "method 'GE T' is not a valid HTTP token",
        )
        self.route_error(
            "methods = ['']\n", "routes[0].methods[0]", "method '' is not a valid HTTP token"
        )
        self.route_error("methods = 'GET'\n", "routes[0].methods", "must be an array, not a string")
        self.route_error(
            "methods = [true]\n", "routes[0].methods[0]", "must be a string, not a boolean"
        )


class HeaderRulesTests(_ConfigTestMixin, SynchronousTestCase):
    """
    C{request_headers} and C{response_headers}.
    """

    def test_file_order(self) -> None:
        """
        C{set} and C{add} become (name, value) pairs in file order, with the
        names' case kept.
        """
        rules = self.route(
            "[routes.request_headers.set]\nX-B = '2'\nX-A = '1'\n"
            "[routes.request_headers.add]\nvia-x = ''\n"
        ).request_headers
        self.assertEqual(rules, HeaderRules(set=(("X-B", "2"), ("X-A", "1")), add=(("via-x", ""),)))

    def test_both(self) -> None:
        """
        Request and response rules are read independently.
        """
        route = self.route(
            "request_headers = { remove = ['a'] }\nresponse_headers = { remove = ['b'] }\n"
        )
        self.assertEqual(route.request_headers, HeaderRules(remove=("a",)))
        self.assertEqual(route.response_headers, HeaderRules(remove=("b",)))

    def test_rejected(self) -> None:
        """
        Each bad header rule is rejected at its path.
        """
        for which in ("request_headers", "response_headers"):
            p = f"routes[0].{which}"
            cases = [
                (f"{which} = 1\n", p, "must be a table, not an integer"),
                (f"{which} = {{ delete = [] }}\n", f"{p}.delete", "unknown key 'delete'"),
                (f"{which} = {{ remove = 'X' }}\n", f"{p}.remove", "must be an array, not a string"),
                (f"{which} = {{ remove = ['X', 'A B'] }}\n", f"{p}.remove[1]",
                 "header name 'A B' is not a valid HTTP token"),
                (f"{which} = {{ remove = ['X', 1] }}\n", f"{p}.remove[1]",
                 "must be a string, not an integer"),
                (f"{which} = {{ set = ['X'] }}\n", f"{p}.set",
                 "must be a table of header names to values, not an array"),
                (f"{which} = {{ add = 'X' }}\n", f"{p}.add",
                 "must be a table of header names to values, not a string"),
                (f"{which} = {{ set = {{ 'X:Y' = '1' }} }}\n", f'{p}.set."X:Y"',
                 "header name 'X:Y' is not a valid HTTP token"),
                (f"{which} = {{ add = {{ '' = '1' }} }}\n", f'{p}.add.""',
                 "header name '' is not a valid HTTP token"),
                (f"{which} = {{ set = {{ X = 1 }} }}\n", f"{p}.set.X",
                 "must be a string, not an integer"),
                (f'{which} = {{ set = {{ X = "a\\r\\nB: c" }} }}\n', f"{p}.set.X",
                 "header value must not contain CR, LF or NUL"),
                (f'{which} = {{ add = {{ X = "a\\nb" }} }}\n', f"{p}.add.X",
                 "header value must not contain CR, LF or NUL"),
                (f'{which} = {{ add = {{ X = "a\\u0000" }} }}\n', f"{p}.add.X",
                 "header value must not contain CR, LF or NUL"),
                (f'{which} = {{ add = {{ X = "5 \u20ac" }} }}\n', f"{p}.add.X",
                 "header value must be ASCII (or Latin-1): HTTP/1.1 carries bytes"),
                (f"{which} = {{ set = {{ X-A = '1', x-a = '2' }} }}\n", f"{p}.set.x-a",
                 "header 'x-a' is listed twice (as 'X-A'); header names are case-insensitive"),
            ]
            for body, path, problem in cases:
                self.route_error(body, path, problem)


class UnreachableRouteTests(_ConfigTestMixin, SynchronousTestCase):
    """
    A catch-all route must be the last one, and no route may come after
    one that takes every request it matches.
    """

    def test_after_catch_all(self) -> None:
        """
        A route after one with no hosts, the C{/} prefix and no methods is
        rejected at its own path.
        """
        self.assert_config_error(
            TWO_GROUPS
            + "[[routes]]\nupstream = 'api'\nhosts = 'a.example'\n"
            + "[[routes]]\nupstream = 'api'\npath_prefix = '/'\nhosts = []\nmethods = []\n"
            + "[[routes]]\nupstream = 'static'\npath_prefix = '/static/'\n",
            "routes[2]",
            "unreachable: routes[1] above matches every request",
        )

    def test_catch_all_last(self) -> None:
        """
        A catch-all route in the last place is accepted.
        """
        config = parse(
            TWO_GROUPS
            + "[[routes]]\nupstream = 'static'\npath_prefix = '/static/'\n"
            + "[[routes]]\nupstream = 'api'\n"
        )
        self.assertEqual([r.upstream for r in config.routes], ["static", "api"])

    def test_narrow_routes_not_catch_all(self) -> None:
        """
        A route restricted by host, path or method alone does not make later
        routes unreachable.
        """
        config = parse(
            MINIMAL
            + "[[routes]]\nupstream = 'api'\nhosts = ['a']\n"
            + "[[routes]]\nupstream = 'api'\npath_prefix = '/x'\n"
            + "[[routes]]\nupstream = 'api'\nmethods = ['GET']\n"
            + "[[routes]]\nupstream = 'api'\n"
        )
        self.assertEqual(len(config.routes), 4)

    def test_shadowed(self) -> None:
        """
        A route is rejected at its own path when an earlier route without
        further conditions takes every request it matches: a shorter prefix,
        no methods or more of them, no hosts or hosts (and wildcards) that
        cover its own.
        """
        problem = "unreachable: routes[0] above takes every request this route matches"
        for earlier, later in (
                ("path_prefix = '/api'", "path_prefix = '/api/v2/'"),
                ("path_prefix = '/api/'", "path_exact = '/api/login'"),
                ("methods = ['GET', 'HEAD']", "methods = ['GET']\npath_prefix = '/x'"),
                ("hosts = ['a.test', '*.b.test']", "hosts = ['a.test', 'x.b.test', '*.c.b.test']"),
                ("hosts = ['a.test']\npath_prefix = '/s'",
                 "hosts = ['a.test']\npath_prefix = '/s/'\nheaders = [{name = 'x'}]")):
            self.assert_config_error(
                MINIMAL + f"[[routes]]\nupstream = 'api'\n{earlier}\n"
                f"[[routes]]\nupstream = 'api'\n{later}\n", "routes[1]", problem)

    def test_not_shadowed(self) -> None:
        """
        A route that may take a request the earlier ones leave is accepted:
        a wider prefix, methods or hosts than an earlier route's, or an
        earlier route with a further condition.
        """
        for earlier, later in (
                ("path_prefix = '/api/v2/'", "path_prefix = '/api'"),
                ("methods = ['GET']", "methods = ['GET', 'POST']"),
                ("methods = ['GET']", "path_prefix = '/x'"),
                ("hosts = ['*.b.test']", "hosts = ['b.test']"),
                ("hosts = ['a.test']", "hosts = ['*.a.test']"),
                ("hosts = ['a.test']", "path_prefix = '/x'"),
                ("path_prefix = '/api'\nlisteners = ['main']", "path_prefix = '/api/v2'"),
                ("path_prefix = '/api'\npath_regex = 'x'", "path_prefix = '/api/v2'")):
            config = parse(MINIMAL + f"[[routes]]\nupstream = 'api'\n{earlier}\n"
                           f"[[routes]]\nupstream = 'api'\n{later}\n")
            self.assertEqual(len(config.routes), 2, (earlier, later))


class RouteConditionTests(_ConfigTestMixin, SynchronousTestCase):
    """
    A route's further conditions: exact path, regular expressions, header,
    query and cookie matches, client networks.
    """

    def test_read(self) -> None:
        """
        Every condition is read into the route, header names lower-cased
        where the router compares them without case anyway.
        """
        route = self.route(
            "path_exact = '/a'\npath_regex = '^/a'\nhost_regex = 'x'\n"
            "networks = ['10.1.2.3/8']\n"
            "headers = [{name = 'X-A'}, {name = 'x-b', present = false}]\n"
            "query = [{name = 'q', value = '1'}]\n"
            "cookies = [{name = 'c', regex = '^b'}]\n"
        )
        self.assertEqual(route.path_exact, "/a")
        self.assertEqual(route.path_regex, "^/a")
        self.assertEqual(route.host_regex, "x")
        self.assertEqual(route.networks, ("10.0.0.0/8",))
        self.assertEqual(route.headers, (RouteMatch(name="X-A"),
                                         RouteMatch(name="x-b", present=False)))
        self.assertEqual(route.query, (RouteMatch(name="q", value="1"),))
        self.assertEqual(route.cookies, (RouteMatch(name="c", regex="^b"),))
        self.assertTrue(route.has_conditions)

    def test_bad_regex(self) -> None:
        """
        A regular expression that does not compile is refused at its place.
        """
        self.route_error("path_regex = '(a'\n", "routes[0].path_regex",
                         contains="is not a regular expression")
        self.route_error("headers = [{name = 'a', regex = '['}]\n",
                         "routes[0].headers[0].regex", contains="is not a regular expression")

    def test_match_rules(self) -> None:
        """
        A match takes a value or a regex, not both, and neither when it asks
        for an absent field; its name is required.
        """
        self.route_error("query = [{name = 'a', value = 'b', regex = 'c'}]\n",
                         "routes[0].query[0]", "takes value or regex, not both")
        self.route_error("cookies = [{name = 'a', present = false, value = 'b'}]\n",
                         "routes[0].cookies[0]", "present = false takes no value or regex")
        self.route_error("headers = [{value = 'b'}]\n", "routes[0].headers[0].name",
                         contains="is required")

    def test_bad_network(self) -> None:
        """
        C{networks} takes IP networks only.
        """
        self.route_error("networks = ['ten']\n", "routes[0].networks[0]",
                         contains="is not an IP address or network")

    def test_condition_is_not_catch_all(self) -> None:
        """
        A route with only further conditions does not make later routes
        unreachable; one without any still does.
        """
        for condition in ("path_exact = '/a'", "path_regex = 'a'", "host_regex = 'a'",
                          "headers = [{name = 'a'}]", "query = [{name = 'a'}]",
                          "cookies = [{name = 'a'}]", "networks = ['10.0.0.0/8']",
                          "listeners = ['main']"):
            config = parse(MINIMAL + f"[[routes]]\nupstream = 'api'\n{condition}\n"
                           + "[[routes]]\nupstream = 'api'\n")
            self.assertEqual(len(config.routes), 2, condition)
        self.assert_config_error(
            MINIMAL + "[[routes]]\nupstream = 'api'\n[[routes]]\nupstream = 'api'\n"
            "path_regex = 'a'\n", "routes[1]", "unreachable: routes[0] above matches every request")


class DirectAnswerConfigTests(_ConfigTestMixin, SynchronousTestCase):
    """
    A route's C{redirect} and C{respond} tables.
    """

    def answer_route(self, body: str) -> Route:
        return parse(MINIMAL + "[[routes]]\npath_prefix = '/old/'\n" + body).routes[0]

    def answer_error(self, body: str, path: str, problem: Optional[str] = None,
                     contains: Optional[str] = None) -> ConfigError:
        return self.assert_config_error(
            MINIMAL + "[[routes]]\npath_prefix = '/old/'\n" + body, path, problem, contains)

    def test_read(self) -> None:
        """
        Both tables are read with their defaults; such a route has no
        upstream and answers itself.
        """
        route = self.answer_route("redirect = {to = 'https://{host}{path}{query}'}\n")
        self.assertEqual(route.redirect, Redirect(to="https://{host}{path}{query}", status=302))
        self.assertEqual(route.upstream, "")
        self.assertTrue(route.answers_itself)
        route = self.answer_route(
            "respond = {status = 503, body = 'down', headers = {Retry-After = '60'}}\n")
        self.assertEqual(route.respond, FixedResponse(503, (("Retry-After", "60"),), "down"))
        self.assertFalse(self.route("").answers_itself)

    def test_one_destination(self) -> None:
        """
        A route takes one of upstream, split, redirect and respond.
        """
        self.answer_error("upstream = 'api'\nrespond = {}\n", "routes[0]",
                          "takes one of upstream, split, redirect and respond "
                          "(got upstream and respond)")

    def test_redirect_checks(self) -> None:
        """
        The status is a redirect status; the target is required and names
        only known placeholders and captures of C{path_regex}.
        """
        self.answer_error("redirect = {to = '/x', status = 300}\n", "routes[0].redirect.status",
                          "must be 301, 302, 303, 307 or 308")
        self.answer_error("redirect = {status = 301}\n", "routes[0].redirect.to",
                          contains="is required")
        self.answer_error("redirect = {to = '/{a-b}'}\n", "routes[0].redirect.to",
                          contains="{a-b} is no placeholder")
        self.answer_error("redirect = {to = '/{1}'}\n", "routes[0].redirect.to",
                          "{1} is not a capture of path_regex")
        self.answer_error("path_regex = '^/old/(?P<rest>.*)'\nredirect = {to = '/{2}'}\n",
                          "routes[0].redirect.to", "{2} is not a capture of path_regex")
        route = self.answer_route("path_regex = '^/old/(?P<rest>.*)'\n"
                                  "redirect = {to = '/{1}/{rest}'}\n")
        self.assertEqual(route.redirect.to, "/{1}/{rest}")

    def test_respond_checks(self) -> None:
        """
        A fixed response's status is 200 to 599 and its header names and
        values are valid.
        """
        self.answer_error("respond = {status = 101}\n", "routes[0].respond.status",
                          contains="at least 200")
        self.answer_error("respond = {headers = {'a b' = 'c'}}\n",
                          "routes[0].respond.headers.\"a b\"", contains="header name")


class RewriteConfigTests(_ConfigTestMixin, SynchronousTestCase):
    """
    A route's C{strip_prefix}, C{rewrite} and C{add_prefix}.
    """

    def test_read(self) -> None:
        """
        The three are read into the route.
        """
        route = self.route("strip_prefix = '/api'\nadd_prefix = '/v2'\n"
                           "rewrite = {regex = '^/users/(?P<id>[0-9]+)', to = '/u/{id}'}\n")
        self.assertEqual((route.strip_prefix, route.add_prefix), ("/api", "/v2"))
        self.assertEqual(route.rewrite, PathRewrite(regex="^/users/(?P<id>[0-9]+)", to="/u/{id}"))
        self.assertTrue(route.rewrites_path)
        self.assertFalse(self.route("").rewrites_path)

    def test_refused(self) -> None:
        """
        Prefixes are paths; the replacement names captures of its regex only
        and is ASCII; a route that answers itself takes no rewrite.
        """
        self.route_error("strip_prefix = 'api'\n", "routes[0].strip_prefix",
                         contains="must start with '/'")
        self.route_error("rewrite = {regex = '^/a', to = '/{1}'}\n", "routes[0].rewrite.to",
                         "{1} is not a capture of rewrite.regex")
        self.route_error("rewrite = {regex = '^/a', to = '/\u00e9'}\n", "routes[0].rewrite.to",
                         contains="must be ASCII")
        self.assert_config_error(
            MINIMAL + "[[routes]]\nrespond = {}\nadd_prefix = '/x'\n", "routes[0].add_prefix",
            "is for routes with an upstream")

    def test_rewrite_query(self) -> None:
        """
        C{rewrite_query} is read into L{QueryRules}, in file order; a bad
        entry is refused at its path, and a route that answers itself
        takes none.
        """
        route = self.route("rewrite_query = {remove = ['debug'], set = {v = '2', w = ''}, "
                           "add = {src = 'edge'}}\n")
        self.assertEqual(route.rewrite_query, QueryRules(
            remove=("debug",), set=(("v", "2"), ("w", "")), add=(("src", "edge"),)))
        self.assertTrue(route.rewrites_target)
        self.assertFalse(route.rewrites_path)
        self.route_error("rewrite_query = {set = {v = 2}}\n", "routes[0].rewrite_query.set.v",
                         contains="must be a string")
        self.route_error("rewrite_query = {remove = ['']}\n",
                         "routes[0].rewrite_query.remove[0]", contains="must not be empty")
        self.route_error("rewrite_query = {set = ['v']}\n", "routes[0].rewrite_query.set",
                         contains="table of query parameter names")
        self.assert_config_error(
            MINIMAL + "[[routes]]\nrespond = {}\nrewrite_query = {add = {a = '1'}}\n",
            "routes[0].rewrite_query", "is for routes with an upstream")


class RouteOverrideConfigTests(_ConfigTestMixin, SynchronousTestCase):
    """
    A route's own C{retries}, C{retry_budget} and C{response_timeout}.
    """

    def test_read(self) -> None:
        """
        The three are read; absent, they are C{None} (the group's and the
        proxy's apply).
        """
        route = self.route("retries = 0\nretry_budget = 0.5\nresponse_timeout = 2.5\n")
        self.assertEqual((route.retries, route.retry_budget, route.response_timeout),
                         (0, 0.5, 2.5))
        route = self.route("")
        self.assertEqual((route.retries, route.retry_budget, route.response_timeout),
                         (None, None, None))

    def test_refused(self) -> None:
        """
        Retries are a count, the budget a share, the timeout a positive
        number of seconds; a route that answers itself takes none.
        """
        self.route_error("retries = -1\n", "routes[0].retries", contains="at least 0")
        self.route_error("response_timeout = 0\n", "routes[0].response_timeout")
        self.route_error("retry_budget = 1.5\n", "routes[0].retry_budget",
                         contains="between 0 and 1")
        self.assert_config_error(
            MINIMAL + "[[routes]]\nrespond = {}\nretry_budget = 0.1\n", "routes[0].retry_budget",
            "is for routes with an upstream")
        self.assert_config_error(
            MINIMAL + "[[routes]]\nrespond = {}\nretries = 1\n", "routes[0].retries",
            "is for routes with an upstream")


class RouteSplitConfigTests(_ConfigTestMixin, SynchronousTestCase):
    """
    A route's C{split} among groups and its C{sticky} key.
    """

    SPLIT = ("[[routes]]\nsplit = [{upstream = 'api', weight = 95}, "
             "{upstream = 'static', weight = 5}]\n")

    def test_read(self) -> None:
        """
        The sides are read in order, weights default to 1, and C{sticky}
        takes a cookie, a header (lower-cased) or the client.
        """
        route = parse(TWO_GROUPS + self.SPLIT + "sticky = 'header:X-User'\n").routes[0]
        self.assertEqual(route.split, (RouteSplit("api", 95), RouteSplit("static", 5)))
        self.assertEqual((route.upstream, route.sticky), ("", "header:x-user"))
        self.assertEqual(route.upstreams, (("split[0].upstream", "api"),
                                           ("split[1].upstream", "static")))
        route = parse(TWO_GROUPS + "[[routes]]\nsplit = [{upstream = 'api'}]\n"
                      "sticky = 'client'\n").routes[0]
        self.assertEqual((route.split[0].weight, route.sticky), (1, "client"))

    def test_refused(self) -> None:
        """
        Errors name their path: a side's unknown group or bad weight, a
        split with an upstream too, no weight above 0, an empty split, a
        bad C{sticky} or one without a split.
        """
        cases = [
            ("[[routes]]\nsplit = [{upstream = 'api'}, {upstream = 'nope'}]\n",
             "routes[0].split[1].upstream", "no upstream group named 'nope'"),
            ("[[routes]]\nsplit = [{upstream = 'api', weight = -1}]\n",
             "routes[0].split[0].weight", "at least 0"),
            ("[[routes]]\nsplit = [{weight = 2}]\n", "routes[0].split[0].upstream",
             "is required"),
            (self.SPLIT + "upstream = 'api'\n", "routes[0]",
             "takes one of upstream, split, redirect and respond (got upstream and split)"),
            ("[[routes]]\nsplit = [{upstream = 'api', weight = 0}]\n", "routes[0].split",
             "needs a side with a weight above 0"),
            ("[[routes]]\nsplit = []\n", "routes[0].split", "is empty"),
            (self.SPLIT + "sticky = 'cookie:'\n", "routes[0].sticky", "'cookie:NAME'"),
            (self.SPLIT + "sticky = 'ip'\n", "routes[0].sticky", "'client'"),
            ("[[routes]]\nupstream = 'api'\nsticky = 'client'\n", "routes[0].sticky",
             "is for routes with a split"),
        ]
        for body, path, problem in cases:
            self.assert_config_error(TWO_GROUPS + body, path, contains=problem)


class RouteListenersConfigTests(_ConfigTestMixin, SynchronousTestCase):
    """
    A route's C{listeners}.
    """

    def test_read(self) -> None:
        """
        The names are read into the route, which is then no catch-all: a
        route after it is reachable, and the configuration says it names
        listeners.
        """
        config = parse(MINIMAL + "[[routes]]\nlisteners = ['main']\nupstream = 'api'\n"
                       "[[routes]]\nupstream = 'api'\n")
        self.assertEqual(config.routes[0].listeners, ("main",))
        self.assertTrue(config.routes_by_listener)
        self.assertFalse(parse(MINIMAL).routes_by_listener)

    def test_unknown_listener(self) -> None:
        """
        A name that is no HTTP listener's is refused at its place, with the
        names there are.
        """
        self.assert_config_error(
            MINIMAL + "[[routes]]\nlisteners = ['main', 'mian']\nupstream = 'api'\n",
            "routes[0].listeners[1]", "no http listener named 'mian' (defined: main)")
        self.assert_config_error(
            MINIMAL + "[listeners.db]\nendpoint = 'tcp:5432'\nprotocol = 'tcp'\n"
            "upstream = 'db'\n[upstreams.db]\nservers = ['tcp://127.0.0.1:5432']\n"
            "[[routes]]\nlisteners = ['db']\nupstream = 'api'\n",
            "routes[0].listeners[0]", contains="no http listener named 'db'")


class RouteMirrorConfigTests(_ConfigTestMixin, SynchronousTestCase):
    """
    A route's C{mirror} table.
    """

    def test_read(self) -> None:
        """
        The shadow group is named; C{percent} defaults to 100 and
        C{max_in_flight} to 10.
        """
        route = parse(TWO_GROUPS + "[[routes]]\nupstream = 'api'\n"
                      "mirror = {upstream = 'static', percent = 10}\n").routes[0]
        self.assertEqual(route.mirror, RouteMirror("static", 10, 10))
        self.assertEqual(route.upstreams, (("upstream", "api"),
                                           ("mirror.upstream", "static")))
        self.assertEqual(RouteMirror("static").percent, 100)

    def test_max_body_size(self) -> None:
        """
        C{max_body_size} defaults to 64 KiB and takes a size string; a
        negative one is refused at its path.
        """
        self.assertEqual(RouteMirror("static").max_body_size, 65536)
        route = parse(TWO_GROUPS + "[[routes]]\nupstream = 'api'\n"
                      "mirror = {upstream = 'static', max_body_size = '1m'}\n").routes[0]
        self.assertEqual(route.mirror.max_body_size, 1 << 20)
        self.assert_config_error(
            TWO_GROUPS + "[[routes]]\nupstream = 'api'\n"
            "mirror = {upstream = 'static', max_body_size = -1}\n",
            "routes[0].mirror.max_body_size", contains="at least 0")

    def test_refused(self) -> None:
        """
        Errors name their path: an unknown shadow group, a share out of
        1..100, a cap below 1, a mirror on a route that answers itself.
        """
        cases = [
            ("[[routes]]\nupstream = 'api'\nmirror = {upstream = 'nope'}\n",
             "routes[0].mirror.upstream", "no upstream group named 'nope'"),
            ("[[routes]]\nsplit = [{upstream = 'api'}]\nmirror = {upstream = 'nope'}\n",
             "routes[0].mirror.upstream", "no upstream group named 'nope'"),
            ("[[routes]]\nupstream = 'api'\nmirror = {upstream = 'static', percent = 0}\n",
             "routes[0].mirror.percent", "at least 1"),
            ("[[routes]]\nupstream = 'api'\nmirror = {upstream = 'static', percent = 101}\n",
             "routes[0].mirror.percent", "at most 100"),
            ("[[routes]]\nupstream = 'api'\n"
             "mirror = {upstream = 'static', max_in_flight = 0}\n",
             "routes[0].mirror.max_in_flight", "at least 1"),
            ("[[routes]]\nrespond = {}\nmirror = {upstream = 'static'}\n",
             "routes[0].mirror", "is for routes with an upstream"),
        ]
        for body, path, problem in cases:
            self.assert_config_error(TWO_GROUPS + body, path, contains=problem)


class TimeoutsTests(_ConfigTestMixin, SynchronousTestCase):
    """
    The C{[timeouts]} table.
    """

    def test_every_key(self) -> None:
        """
        Every timeout is read; integers become floats.
        """
        config = parse(
            MINIMAL
            + "[timeouts]\nconnect = 1\nupstream_response = 2.5\nidle = 3\n"
            + "request_head = 4\nrequest_body = 5\nupstream_idle = 0.25\n"
        )
        self.assertEqual(
            config.timeouts,
            Timeouts(
                connect=1.0,
                upstream_response=2.5,
                idle=3.0,
                request_head=4.0,
                request_body=5.0,
                upstream_idle=0.25,
            ),
        )
        self.assertIs(type(config.timeouts.connect), float)

    def test_partial(self) -> None:
        """
        Timeouts not given keep their defaults.
        """
        config = parse(MINIMAL + "[timeouts]\nidle = 7\n")
        self.assertEqual(config.timeouts, Timeouts(idle=7.0))

    def test_rejected(self) -> None:
        """
        A timeout must be a finite number greater than zero.
        """
        cases = [
            ("0", "must be greater than 0 (got 0)"),
            ("-1.5", "must be greater than 0 (got -1.5)"),
            ("inf", "must be a finite number of seconds (got inf)"),
            ("nan", "must be a finite number of seconds (got nan)"),
            ("'5'", "must be a number of seconds, not a string"),
            ("true", "must be a number of seconds, not a boolean"),
            ("12:00:00", "must be a number of seconds, not a date/time"),
        ]
        for value, problem in cases:
            self.assert_config_error(
                MINIMAL + f"[timeouts]\nrequest_body = {value}\n", "timeouts.request_body", problem
            )

    def test_unknown_key(self) -> None:
        """
        An unknown timeout is rejected at its path.
        """
        self.assert_config_error(
            MINIMAL + "[timeouts]\nread = 1\n", "timeouts.read", contains="unknown key 'read'"
        )

    def test_not_a_table(self) -> None:
        """
        C{timeouts} must be a table.
        """
        self.assert_config_error("timeouts = 5\n" + MINIMAL, "timeouts", "must be a table, not an integer")


class LimitsTests(_ConfigTestMixin, SynchronousTestCase):
    """
    The C{[limits]} table.
    """

    def test_every_key(self) -> None:
        """
        Every limit is read.
        """
        config = parse(
            MINIMAL + "[limits]\nmax_head_size = 2048\nmax_header_count = 1\nmax_body_size = 0\n"
        )
        self.assertEqual(
            config.limits, Limits(max_head_size=2048, max_header_count=1, max_body_size=0)
        )

    def test_size_suffixes(self) -> None:
        """
        Sizes accept a string of digits with a binary k, m or g suffix in
        either case, or no suffix.
        """
        for value, expected in [
            ("'64k'", 64 * 1024),
            ("'64K'", 64 * 1024),
            ("'10m'", 10 * 1024 * 1024),
            ("'1g'", 1024 ** 3),
            ("'1G'", 1024 ** 3),
            ("'5000'", 5000),
            ("'0'", 0),
        ]:
            config = parse(MINIMAL + f"[limits]\nmax_body_size = {value}\n")
            self.assertEqual(config.limits.max_body_size, expected, value)
        config = parse(MINIMAL + "[limits]\nmax_head_size = '1k'\n")
        self.assertEqual(config.limits.max_head_size, 1024)

    def test_size_rejected(self) -> None:
        """
        Malformed sizes, other types and values below the minimum are
        rejected.
        """
        cases = [
            ("max_body_size", "'10 m'",
             "must be a number of bytes or a size like \"64k\", \"10m\" or \"1g\" (got '10 m')"),
            ("max_body_size", "'10mb'",
             "must be a number of bytes or a size like \"64k\", \"10m\" or \"1g\" (got '10mb')"),
            ("max_body_size", "'1.5m'",
             "must be a number of bytes or a size like \"64k\", \"10m\" or \"1g\" (got '1.5m')"),
            ("max_body_size", "'-1'",
             "must be a number of bytes or a size like \"64k\", \"10m\" or \"1g\" (got '-1')"),
            ("max_body_size", "''",
             "must be a number of bytes or a size like \"64k\", \"10m\" or \"1g\" (got '')"),
            ("max_body_size", "-1", "must be at least 0 bytes (got -1)"),
            ("max_body_size", "1.0",
             "must be a number of bytes or a size string like \"64k\", not a float"),
            ("max_body_size", "true",
             "must be a number of bytes or a size string like \"64k\", not a boolean"),
            ("max_head_size", "1023", "must be at least 1024 bytes (got 1023)"),
            ("max_head_size", "'0k'", "must be at least 1024 bytes (got 0)"),
        ]
        for key, value, problem in cases:
            self.assert_config_error(MINIMAL + f"[limits]\n{key} = {value}\n", f"limits.{key}", problem)

    def test_header_count(self) -> None:
        """
        C{max_header_count} is a plain integer of at least 1; a size string is
        not accepted.
        """
        for value, problem in [
            ("0", "must be at least 1 (got 0)"),
            ("'1k'", "must be an integer, not a string"),
            ("true", "must be an integer, not a boolean"),
        ]:
            self.assert_config_error(
                MINIMAL + f"[limits]\nmax_header_count = {value}\n", "limits.max_header_count", problem
            )

    def test_unknown_key(self) -> None:
        """
        An unknown limit is rejected at its path.
        """
        self.assert_config_error(
            MINIMAL + "[limits]\nmax_body = 1\n",
            "limits.max_body",
            contains="unknown key 'max_body'",
        )


class ForwardingTests(_ConfigTestMixin, SynchronousTestCase):
    """
    The C{[forwarding]} table.
    """

    def test_every_key(self) -> None:
        """
        Trusted proxies are normalised to network form; C{via} is kept.
        """
        config = parse(
            MINIMAL
            + "[forwarding]\ntrusted_proxies = ['10.0.0.0/8', '::1', '192.168.1.7/24', "
            + "'2001:DB8::/32', '127.0.0.1']\nvia = 'edge-1'\n"
        )
        self.assertEqual(
            config.forwarding,
            Forwarding(
                trusted_proxies=(
                    "10.0.0.0/8",
                    "::1/128",
                    "192.168.1.0/24",
                    "2001:db8::/32",
                    "127.0.0.1/32",
                ),
                via="edge-1",
            ),
        )

    def test_via_disabled(self) -> None:
        """
        An empty C{via} disables the Via field.
        """
        self.assertEqual(parse(MINIMAL + "[forwarding]\nvia = ''\n").forwarding.via, "")

    def test_rejected(self) -> None:
        """
        Bad networks, a non-token C{via} and wrong types are rejected.
        """
        cases = [
            ("trusted_proxies = ['10.0.0.0/8', 'intranet']", "forwarding.trusted_proxies[1]",
             "'intranet' is not an IP address or network (such as '10.0.0.0/8' or '::1')"),
            ("trusted_proxies = ['10.0.0.0/33']", "forwarding.trusted_proxies[0]",
             "'10.0.0.0/33' is not an IP address or network (such as '10.0.0.0/8' or '::1')"),
            ("trusted_proxies = '10.0.0.0/8'", "forwarding.trusted_proxies",
             "must be an array, not a string"),
            ("trusted_proxies = [10]", "forwarding.trusted_proxies[0]",
             "must be a string, not an integer"),
            ("via = 'my proxy'", "forwarding.via", "pseudonym 'my proxy' is not a valid HTTP token"),
            ("via = false", "forwarding.via", "must be a string, not a boolean"),
            ("hide_server = true", "forwarding.hide_server", "unknown key 'hide_server'"),
        ]
        for body, path, problem in cases:
            self.assert_config_error(MINIMAL + f"[forwarding]\n{body}\n", path, problem)


class AccessLogTests(_ConfigTestMixin, SynchronousTestCase):
    """
    The C{[access_log]} table.
    """

    def test_every_key(self) -> None:
        """
        C{path} and C{format} are read.
        """
        config = parse(
            MINIMAL + "[access_log]\npath = '/var/log/twistproxy/access.log'\nformat = 'json'\n"
        )
        self.assertEqual(
            config.access_log, AccessLog(path="/var/log/twistproxy/access.log", format="json")
        )

    def test_rotation_by_size(self) -> None:
        """
        C{max_size} (a size, at least 4k) and C{keep} (at least 1, 5 by
        default) rotate a file by size; there is nothing to rotate on
        standard output.
        """
        config = parse(MINIMAL + "[access_log]\npath = 'a.log'\nmax_size = '100m'\n")
        self.assertEqual((config.access_log.max_size, config.access_log.keep), (100 << 20, 5))
        self.assertEqual(parse(MINIMAL + "[access_log]\npath = 'a.log'\nkeep = 2\n")
                         .access_log.keep, 2)
        self.assert_config_error(MINIMAL + "[access_log]\nmax_size = '1m'\n",
                               "access_log.max_size", "needs a file path to rotate")
        self.assert_config_error(MINIMAL + "[access_log]\npath = 'a.log'\nmax_size = 10\n",
                               "access_log.max_size", "must be at least 4096 bytes (got 10)")
        self.assert_config_error(MINIMAL + "[access_log]\npath = 'a.log'\nkeep = 0\n",
                               "access_log.keep", "must be at least 1 (got 0)")

    def test_disabled(self) -> None:
        """
        An empty path disables the access log.
        """
        self.assertEqual(parse(MINIMAL + "[access_log]\npath = ''\n").access_log.path, "")

    def test_rejected(self) -> None:
        """
        Unknown formats, wrong types, NUL in the path and unknown keys are
        rejected.
        """
        cases = [
            ("format = 'common'", "access_log.format",
             "must be one of 'combined', 'json' (got 'common')"),
            ("format = 1", "access_log.format", "must be a string, not an integer"),
            ("path = true", "access_log.path", "must be a string, not a boolean"),
            ('path = "a\\u0000b"', "access_log.path", "must not contain NUL"),
            ("buffer = 1", "access_log.buffer", "unknown key 'buffer'"),
        ]
        for body, path, problem in cases:
            self.assert_config_error(MINIMAL + f"[access_log]\n{body}\n", path, problem)


class TOMLErrorTests(_ConfigTestMixin, SynchronousTestCase):
    """
    Text that is not TOML.
    """

    def test_syntax_error(self) -> None:
        """
        A TOML syntax error is a L{ConfigError} for the whole file, with the
        line number.
        """
        error = self.assert_config_error(
            MINIMAL + "[timeouts]\nconnect 5\n", "", contains="invalid TOML: "
        )
        self.assertIn("line 8", error.problem)
        self.assertTrue(str(error).startswith("proxy.toml: invalid TOML: "))

    def test_duplicate_key(self) -> None:
        """
        A key given twice is a TOML error.
        """
        self.assert_config_error(
            MINIMAL + "[listeners.main]\nendpoint = 'tcp:1'\n", "", contains="invalid TOML"
        )


class LoadTests(SynchronousTestCase):
    """
    Tests for L{load}.
    """

    def write(self, data: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_load(self) -> None:
        """
        L{load} parses a file and records its name as the source.
        """
        path = self.write(MINIMAL.encode("utf-8"))
        config = load(path)
        self.assertEqual(config.source, path)
        self.assertEqual(config.listeners, (Listener(name="main", endpoint="tcp:8080"),))

    def test_utf8(self) -> None:
        """
        The file is read as UTF-8.
        """
        path = self.write((MINIMAL + "[[routes]]\nname = 'caf\u00e9'\nupstream = 'api'\n").encode())
        self.assertEqual(load(path).routes[0].name, "caf\u00e9")

    def test_missing(self) -> None:
        """
        A missing file is a L{ConfigError} naming the file.
        """
        path = self.mktemp()
        with self.assertRaises(ConfigError) as raised:
            load(path)
        self.assertEqual(raised.exception.source, path)
        self.assertEqual(raised.exception.path, "")
        self.assertEqual(raised.exception.problem, "cannot read file: No such file or directory")
        self.assertEqual(str(raised.exception), f"{path}: cannot read file: No such file or directory")

    def test_directory(self) -> None:
        """
        A directory is not a readable configuration file.
        """
        path = self.mktemp()
        os.mkdir(path)
        with self.assertRaises(ConfigError) as raised:
            load(path)
        self.assertEqual(raised.exception.source, path)
        self.assertTrue(raised.exception.problem.startswith("cannot read file: "))

    def test_not_utf8(self) -> None:
        """
        A file that is not UTF-8 is rejected with the byte offset.
        """
        path = self.write(b"# \xff\n" + MINIMAL.encode())
        with self.assertRaises(ConfigError) as raised:
            load(path)
        self.assertEqual(raised.exception.source, path)
        self.assertEqual(raised.exception.problem, "not valid UTF-8 (byte offset 2)")

    def test_syntax_error(self) -> None:
        """
        A TOML syntax error in a file names the file and the line.
        """
        path = self.write(b'[listeners.main]\nendpoint = "tcp:8080\n')
        with self.assertRaises(ConfigError) as raised:
            load(path)
        self.assertEqual(raised.exception.source, path)
        self.assertIn("invalid TOML", raised.exception.problem)
        self.assertIn("line 2", raised.exception.problem)

    def test_validation_error(self) -> None:
        """
        A validation error in a file names the file and the path.
        """
        path = self.write(MINIMAL.replace("http://", "ftp://").encode())
        with self.assertRaises(ConfigError) as raised:
            load(path)
        self.assertEqual(
            str(raised.exception),
            f"{path}: upstreams.api.servers[0]: must be an http:// or https:// URL",
        )


class ExamplesTests(SynchronousTestCase):
    """
    The configurations shipped in C{examples/}.
    """

    def test_examples_parse(self) -> None:
        """
        Every C{examples/*.toml} file is a valid configuration.
        """
        paths = sorted(glob.glob(os.path.join(EXAMPLES, "*.toml")))
        self.assertIn(os.path.join(EXAMPLES, "demo.toml"), paths)
        self.assertIn(os.path.join(EXAMPLES, "proxy.toml"), paths)
        for path in paths:
            config = load(path)
            self.assertEqual(config.source, path)

    def test_demo(self) -> None:
        """
        The demo configuration listens on port 8080 and balances over two
        local backends.
        """
        config = load(os.path.join(EXAMPLES, "demo.toml"))
        self.assertEqual([l.endpoint for l in config.listeners], ["tcp:8080"])
        self.assertEqual(
            [s.url for s in config.upstreams["demo"].servers],
            ["http://127.0.0.1:8081", "http://127.0.0.1:8082"],
        )
        self.assertEqual(config.routes, (Route(upstream="demo"),))

    def test_proxy_uses_every_section(self) -> None:
        """
        The full example sets every section, so that it documents them all.
        """
        config = load(os.path.join(EXAMPLES, "proxy.toml"))
        self.assertEqual(len(config.upstreams), 3)
        groups = config.upstreams.values()
        for attribute in ("health", "outlier", "sticky"):
            self.assertTrue(any(getattr(g, attribute) is not None for g in groups), attribute)
        self.assertNotEqual(config.timeouts, Timeouts())
        self.assertNotEqual(config.limits, Limits())
        self.assertNotEqual(config.forwarding, Forwarding())
        self.assertEqual(
            config.access_log, AccessLog(path="/var/log/twistproxy/access.log", format="json")
        )
        self.assertTrue(any(r.hosts for r in config.routes))
        self.assertTrue(any(r.path_prefix != "/" for r in config.routes))
        self.assertTrue(any(r.request_headers != HeaderRules() for r in config.routes))
        self.assertTrue(any(r.response_headers != HeaderRules() for r in config.routes))


class LoadBalancingConfigTests(_ConfigTestMixin, SynchronousTestCase):
    """
    Group settings for health, outliers, stickiness, retries and limits,
    servers with a region, DNS discovery, and the locator and locality
    tables.
    """

    GROUP = '[listeners.main]\nendpoint = "tcp:8080"\n[upstreams.api]\n'

    def test_every_key(self) -> None:
        """
        Every load-balancing key of a group and of a server is read.
        """
        config = parse(self.GROUP + """
servers = [
    { url = "http://10.0.0.1:80", region = "eu-west", zone = "eu-west-1a", drain = true },
    { dns = "api.internal", port = 8000, interval = 10, weight = 2, region = "us" },
    { srv = "_http._tcp.api.internal" },
]
max_pending = 10
max_requests = 100
retries = 2
retry_budget = 0.5
slow_start = 30
[upstreams.api.health]
type = "tcp"
interval = 2
jitter = 0.5
rise = 1
fall = 2
timeout = 1
[upstreams.api.outlier]
consecutive_failures = 3
base_ejection = 10
max_ejection = 60
max_ejected_share = 0.25
on_5xx = true
[upstreams.api.sticky]
cookie = "srv"
secret = "s3cret"
max_age = 3600
path = "/app"
secure = true
[locator]
type = "cidr"
networks = { "10.0.0.0/8" = "eu-west" }
[locality]
regions = ["eu-west", "us"]
overprovisioning = 2
""")
        group = config.upstreams["api"]
        [server] = group.servers
        self.assertEqual((server.region, server.zone, server.drain), ("eu-west", "eu-west-1a", True))
        self.assertEqual(group.discovery, (
            Discovery(kind="dns", name="api.internal", port=8000, interval=10.0, weight=2, region="us"),
            Discovery(kind="srv", name="_http._tcp.api.internal"),
        ))
        self.assertEqual(
            (group.max_pending, group.max_requests, group.retries, group.retry_budget, group.slow_start),
            (10, 100, 2, 0.5, 30.0),
        )
        self.assertEqual(group.health, HealthCheck(
            type="tcp", interval=2.0, jitter=0.5, rise=1, fall=2, options={"timeout": 1}))
        self.assertEqual(group.outlier, Outlier(3, 10.0, 60.0, 0.25, True))
        self.assertEqual(group.sticky, Sticky("srv", "s3cret", 3600, "/app", True))
        self.assertEqual(config.locator, Locator("cidr", {"networks": {"10.0.0.0/8": "eu-west"}}))
        self.assertEqual(config.locality, Locality(("eu-west", "us"), 2.0))

    def test_defaults(self) -> None:
        """
        Without them, a group has no health check, outlier detection or
        stickiness, one retry, and no slow start.
        """
        group = parse(MINIMAL).upstreams["api"]
        self.assertEqual(
            (group.health, group.outlier, group.sticky, group.retries, group.slow_start, group.discovery),
            (None, None, None, 1, 0.0, ()),
        )
        self.assertIsNone(parse(MINIMAL).locator)

    def test_locality_default_matches_picker(self) -> None:
        """
        C{[locality] overprovisioning} defaults to the picker's own default,
        1.4, as docs/configuration.rst says, and 1 and 100 are accepted.
        """
        from twistproxy.upstream.locality import DEFAULT_OVERPROVISIONING

        self.assertEqual(parse(MINIMAL).locality, Locality())
        self.assertEqual(Locality().overprovisioning, DEFAULT_OVERPROVISIONING)
        self.assertEqual(DEFAULT_OVERPROVISIONING, 1.4)
        for factor in ("1", "100"):
            config = parse(MINIMAL + f"[locality]\noverprovisioning = {factor}\n")
            self.assertEqual(config.locality.overprovisioning, float(factor))

    def test_rejections(self) -> None:
        """
        Bad values are rejected at their paths.
        """
        cases = [
            ('servers = [{ url = "http://a", region = "eu west" }]\n',
             "upstreams.api.servers[0].region", "'eu west' is not a valid name"),
            ('servers = [{ dns = "api..internal", port = 1 }]\n',
             "upstreams.api.servers[0].dns", "'api..internal' is not a DNS name"),
            ('servers = [{ dns = "api.internal" }]\n',
             "upstreams.api.servers[0].port", "is required with dns"),
            ('servers = [{ srv = "_x._tcp.a", port = 1 }]\n',
             "upstreams.api.servers[0].port", None),
            ('servers = ["http://a"]\nretry_budget = 2\n',
             "upstreams.api.retry_budget", "must be between 0 and 1 (got 2)"),
            ('servers = ["http://a"]\n[upstreams.api.outlier]\nbase_ejection = 10\nmax_ejection = 5\n',
             "upstreams.api.outlier.max_ejection", "must be at least base_ejection"),
            ('servers = ["http://a"]\n[upstreams.api.outlier]\nejections = 1\n',
             "upstreams.api.outlier.ejections", None),
            ('servers = ["http://a"]\n[upstreams.api.health]\nrise = 0\n',
             "upstreams.api.health.rise", "must be at least 1 (got 0)"),
            ('servers = ["http://a"]\n[upstreams.api.sticky]\ncookie = "a b"\n',
             "upstreams.api.sticky.cookie", None),
        ]
        for body, path, problem in cases:
            self.assert_config_error(self.GROUP + body, path, contains=problem)
        self.assert_config_error(MINIMAL + "[locator]\nnetworks = {}\n", "locator.type")
        self.assert_config_error(
            MINIMAL + "[locality]\noverprovisioning = 0.5\n", "locality.overprovisioning",
            "must be between 1 and 100 (got 0.5)")
        self.assert_config_error(
            MINIMAL + "[locality]\noverprovisioning = 101\n", "locality.overprovisioning",
            "must be between 1 and 100 (got 101)")
        self.assert_config_error(
            MINIMAL + "[locality]\noverprovisioning = true\n", "locality.overprovisioning",
            "must be a number of at least 1, not a boolean")
        self.assert_config_error(
            MINIMAL + '[locality]\nregions = ["eu", "us", "eu"]\n', "locality.regions[2]",
            "'eu' is listed twice")
        self.assert_config_error(
            MINIMAL + '[locality]\nregions = [""]\n', "locality.regions[0]",
            "must not be empty")


class ListenerTLSConfigTests(_ConfigTestMixin, SynchronousTestCase):
    """
    The tls table, https redirects and h2c on listeners.
    """

    def test_every_key(self) -> None:
        """
        Every key of a listener's tls table is read; certificates may be
        paths or {cert, key} tables.
        """
        from twistproxy.config import Certificate, ListenerTLS

        config = parse("""
[listeners.web]
endpoint = "tcp:8443"
[listeners.web.tls]
certificates = ["/a.pem", { cert = "/b.crt", key = "/b.key" }]
default = 1
min_version = "1.3"
ciphers = "ECDHE+AESGCM"
client_ca = "/ca.pem"
client_subject_header = "X-Subject"
hsts = 60
handshake_timeout = 3
[listeners.plain]
endpoint = "tcp:8080"
redirect_https = true
https_port = 8443
[listeners.h2c]
endpoint = "tcp:8081"
h2c = true
[upstreams.api]
servers = ["http://127.0.0.1:8001"]
""")
        web, plain, h2c = config.listeners
        self.assertEqual(web.tls, ListenerTLS(
            certificates=(Certificate("/a.pem"), Certificate("/b.crt", "/b.key")),
            default=1, min_version="1.3", ciphers="ECDHE+AESGCM", client_ca="/ca.pem",
            client_subject_header="X-Subject", hsts=60, handshake_timeout=3.0,
        ))
        self.assertEqual((plain.redirect_https, plain.https_port), (True, 8443))
        self.assertTrue(h2c.h2c)

    def test_rejections(self) -> None:
        """
        Inconsistent listener settings are rejected at their paths.
        """
        base = '[upstreams.api]\nservers = ["http://127.0.0.1:8001"]\n[listeners.web]\nendpoint = "tcp:1"\n'
        self.assert_config_error(base + "tls = { certificates = [] }\n",
                               "listeners.web.tls.certificates", "must list at least one certificate")
        self.assert_config_error(base + 'tls = { certificates = ["/a"], default = 1 }\n',
                               "listeners.web.tls.default", contains="index of a certificate")
        self.assert_config_error(base + 'tls = { certificates = ["/a"], min_version = "1.1" }\n',
                               "listeners.web.tls.min_version", 'must be "1.2" or "1.3"')
        self.assert_config_error(base + 'tls = { certificates = ["/a"] }\nredirect_https = true\n',
                               "listeners.web.redirect_https", contains="only for plain listeners")
        self.assert_config_error(base + 'tls = { certificates = ["/a"] }\nh2c = true\n',
                               "listeners.web.h2c", contains="only for plain listeners")


class ResolverTests(_ConfigTestMixin, SynchronousTestCase):
    """
    C{[resolver]}: the name servers DNS discovery asks.
    """

    def test_default_system(self) -> None:
        """
        Without the table, or without C{nameservers}, no name server is
        configured: the system's configuration is used.
        """
        self.assertEqual(parse(MINIMAL).resolver, Resolver())
        self.assertEqual(parse(MINIMAL + "[resolver]\n").resolver.nameservers, ())

    def test_nameservers(self) -> None:
        """
        Name servers are IPv4 addresses or bracketed IPv6 addresses, with a
        port (53 by default), kept in order and in canonical form.
        """
        config = parse(MINIMAL + '[resolver]\nnameservers = ["127.0.0.1:5353", "[::1]:53",'
                                 ' "10.0.0.2", "[2001:DB8:0::1]"]\n')
        self.assertEqual(config.resolver.nameservers, (
            ("127.0.0.1", 5353), ("::1", 53), ("10.0.0.2", 53), ("2001:db8::1", 53)))

    def test_rejections(self) -> None:
        """
        Anything but a non-empty array of IP addresses with optional ports
        is rejected at its path, saying how to write it.
        """
        p = "resolver.nameservers"
        for value, path, problem in [
            ('"127.0.0.1"', p, "must be an array, not a string"),
            ("[]", p, "must list at least one name server (leave it out for the system's)"),
            ("[53]", f"{p}[0]", "must be a string, not an integer"),
            ('["::1"]', f"{p}[0]", "write the IPv6 address '::1' in brackets, "
                                   "as in '[::1]' or '[::1]:53'"),
            ('["ns.example.test:53"]', f"{p}[0]",
             "'ns.example.test' is not an IP address (name servers are given by address)"),
            ('["[10.0.0.1]:53"]', f"{p}[0]", "'10.0.0.1' is not an IPv6 address"),
            ('["127.0.0.1:0"]', f"{p}[0]", "port must be from 1 to 65535 (got 0)"),
            ('["127.0.0.1:65536"]', f"{p}[0]", "port must be from 1 to 65535 (got 65536)"),
            ('["127.0.0.1:", "[::1"]', f"{p}[0]",
             "'127.0.0.1:' is not an IP address with an optional port "
             "('127.0.0.1:5353', '[::1]:53', '10.0.0.2')"),
        ]:
            self.assert_config_error(MINIMAL + f"[resolver]\nnameservers = {value}\n",
                                   path, problem)
        self.assert_config_error(MINIMAL + '[resolver]\nservers = ["127.0.0.1"]\n',
                               "resolver.servers",
                               "unknown key 'servers' (did you mean 'nameservers'?)")


class EdgeStrictnessConfigTests(_ConfigTestMixin, SynchronousTestCase):
    """
    A listener's C{escaped_slashes} and a route's C{allow_trace} (issue 19).
    """

    def test_defaults_and_values(self) -> None:
        """
        By default escaped slashes are kept and TRACE is refused; both
        keys are read.
        """
        config = parse(MINIMAL)
        self.assertEqual((config.listeners[0].escaped_slashes, config.routes[0].allow_trace),
                         ("keep", False))
        config = parse("""
[listeners.web]
endpoint = "tcp:8080"
escaped_slashes = "reject"
[upstreams.api]
servers = ["http://127.0.0.1:8001"]
[[routes]]
upstream = "api"
allow_trace = true
""")
        self.assertEqual((config.listeners[0].escaped_slashes, config.routes[0].allow_trace),
                         ("reject", True))

    def test_rejections(self) -> None:
        """
        An unknown setting, a setting on a tcp listener, a TRACE switch
        that is not a boolean are refused at their paths.
        """
        base = '[upstreams.api]\nservers = ["http://127.0.0.1:8001"]\n[listeners.web]\n'
        self.assert_config_error(base + 'endpoint = "tcp:1"\nescaped_slashes = "merge"\n',
                               "listeners.web.escaped_slashes",
                               "must be one of 'keep', 'decode', 'reject' (got 'merge')")
        self.assert_config_error(
            base + 'endpoint = "tcp:1"\nprotocol = "tcp"\nupstream = "api"\n'
                   'escaped_slashes = "keep"\n',
            "listeners.web.escaped_slashes", contains="not for tcp listeners")
        self.assert_config_error(
            base + 'endpoint = "tcp:1"\n[[routes]]\nupstream = "api"\nallow_trace = "yes"\n',
            "routes[0].allow_trace", contains="boolean")


class TLSOffloadedConfigTests(SynchronousTestCase):
    """
    A listener's C{tls_offloaded}: clients came over https to a load
    balancer in front.
    """

    def test_read(self) -> None:
        """
        It is off by default, and read on an http listener.
        """
        self.assertFalse(parse(MINIMAL).listeners[0].tls_offloaded)
        config = parse(MINIMAL.replace('endpoint = "tcp:8080"',
                                       'endpoint = "tcp:8080"\ntls_offloaded = true'))
        self.assertTrue(config.listeners[0].tls_offloaded)

    def test_refused(self) -> None:
        """
        It is a boolean, for http listeners only, and not with a redirect
        to https (which would send the clients round in circles).
        """
        base = ('[upstreams.api]\nservers = ["http://127.0.0.1:8001"]\n'
                '[listeners.web]\nendpoint = "tcp:1"\n')
        for extra, problem in [
                ("tls_offloaded = 1", "must be a boolean (true or false), not an integer"),
                ('protocol = "tcp"\nupstream = "api"\ntls_offloaded = true',
                 "not for tcp listeners (only http)"),
                ("redirect_https = true\ntls_offloaded = true",
                 "clients that came over https cannot be redirected to https")]:
            with self.assertRaises(ConfigError) as raised:
                parse(base + extra, "proxy.toml")
            self.assertEqual(str(raised.exception),
                             f"proxy.toml: listeners.web.tls_offloaded: {problem}")


class SchemaTests(SynchronousTestCase):
    """
    L{twistproxy.config.schema}: a section declared once, as a dataclass
    of settings, and read by one reader.
    """

    def setUp(self) -> None:
        from dataclasses import dataclass

        from twistproxy.config import schema

        @dataclass(frozen=True)
        class Pool:
            name: str = schema.setting(check=schema.nonempty, required="is required (a name)")
            size: int = schema.setting(4, check=schema.integer(1, 64))
            grace: float = schema.setting(0.0, check=schema.seconds(zero=True))

        @schema.rule(Pool)
        def _grace(pool: Pool, table: object, path: str) -> None:
            if pool.grace and pool.size == 1:
                raise ConfigError(path + ".grace", "needs more than one member")

        @dataclass(frozen=True)
        class Plugin:
            timeout: float = schema.setting(1.0, check=schema.seconds())
            options: dict = schema.others()

        self.schema, self.Pool, self.Plugin = schema, Pool, Plugin

    def error(self, value: object, **kwargs: object) -> str:
        with self.assertRaises(ConfigError) as caught:
            self.schema.build(self.Pool, value, "pools[1]", **kwargs)
        return str(caught.exception)

    def test_defaults_and_values(self) -> None:
        """
        Keys left out take their declared defaults; the keys given are
        checked and converted.
        """
        self.assertEqual(self.schema.build(self.Pool, {"name": "a"}, "p"),
                         self.Pool(name="a", size=4, grace=0.0))
        self.assertEqual(self.schema.build(self.Pool, {"name": "a", "size": 2, "grace": 1}, "p"),
                         self.Pool(name="a", size=2, grace=1.0))

    def test_located_errors(self) -> None:
        """
        Every mistake is reported at its path: an unknown key with
        suggestions, a missing one with its declared message, a bad value
        with its check's message, and a broken rule.
        """
        self.assertEqual(self.error({"name": "a", "sise": 2}),
                         "pools[1].sise: unknown key 'sise' (did you mean 'size'?)")
        self.assertEqual(self.error({}), "pools[1].name: is required (a name)")
        self.assertEqual(self.error({"name": "a", "size": True}),
                         "pools[1].size: must be an integer, not a boolean")
        self.assertEqual(self.error({"name": "a", "size": 65}),
                         "pools[1].size: must be at most 64 (got 65)")
        self.assertEqual(self.error({"name": "a", "size": 1, "grace": 2}),
                         "pools[1].grace: needs more than one member")
        self.assertEqual(self.error([]), "pools[1]: must be a table, not an array")

    def test_plugin_options(self) -> None:
        """
        A plugin's options are read the same way: with C{takes}, an
        unknown option is refused in the plugin's words; a section with a
        field for the others passes them on instead.
        """
        with self.assertRaises(ConfigError) as caught:
            self.schema.read(self.Pool, {"name": "a", "szie": 1}, "x", takes="the pool takes name")
        self.assertEqual(str(caught.exception),
                         "x.szie: unknown option 'szie' (did you mean 'size'?); "
                         "the pool takes name")
        self.assertEqual(self.schema.build(self.Plugin, {"timeout": 2, "path": "/"}, "x"),
                         self.Plugin(timeout=2.0, options={"path": "/"}))
        self.assertEqual(self.schema.names(self.Pool), ("name", "size", "grace"))

    def test_sections_declare_every_key(self) -> None:
        """
        The keys a section takes are the settings declared on its class.
        """
        from twistproxy.config import Listener, Outlier, Timeouts, schema

        self.assertEqual(schema.names(Timeouts), (
            "connect", "upstream_response", "idle", "request_head", "request_body",
            "upstream_idle", "tcp_idle", "udp_idle", "send"))
        self.assertEqual(schema.names(Outlier), (
            "consecutive_failures", "base_ejection", "max_ejection", "max_ejected_share",
            "on_5xx"))
        self.assertNotIn("name", schema.names(Listener))
        self.assertIn("tls_offloaded", schema.names(Listener))
