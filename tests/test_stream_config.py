"""
Tests for the configuration of TCP and UDP listeners, TLS passthrough
routes and the PROXY protocol (L{twistproxy.config}).
"""

from __future__ import annotations

import os
import re

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from twistproxy.config import ConfigError, SNIRoute, parse
from twistproxy.service import ProxyService

TCP = """
[listeners.db]
endpoint = "tcp:5433"
protocol = "tcp"
upstream = "pg"
{listener}

[upstreams.pg]
servers = ["tcp://10.0.0.1:5432", "tcp://10.0.0.2:5432"]
{group}
"""


class StreamConfigTests(SynchronousTestCase):
    """
    What a tcp or udp listener accepts and refuses.
    """

    def error(self, text: str) -> ConfigError:
        with self.assertRaises(ConfigError) as caught:
            parse(text)
        return caught.exception

    def test_tcp_listener(self):
        """
        A tcp listener names a group of tcp:// servers; HTTP routes are
        not needed; the timeouts have defaults.
        """
        config = parse(TCP.format(listener="max_connections = 100",
                                  group='proxy_protocol = "v2"\nhealth = {type = "tcp"}'))
        (listener,) = config.listeners
        self.assertEqual((listener.protocol, listener.upstream, listener.max_connections),
                         ("tcp", "pg", 100))
        group = config.upstreams["pg"]
        self.assertEqual((group.kind, group.proxy_protocol), ("tcp", "v2"))
        self.assertEqual([(s.scheme, s.host, s.port) for s in group.servers],
                         [("tcp", "10.0.0.1", 5432), ("tcp", "10.0.0.2", 5432)])
        self.assertEqual(config.routes, ())
        self.assertEqual((config.timeouts.tcp_idle, config.timeouts.udp_idle), (600.0, 30.0))
        ProxyService(config, MemoryReactorClock())

    def test_tcp_listener_filters(self):
        """
        A tcp listener takes a C{filters} array, as an HTTP listener does
        (which filters it may hold is checked when they are built:
        L{tests.test_stream_filters}).
        """
        config = parse(TCP.format(
            listener='filters = [{ name = "access", deny = ["192.0.2.0/24"] }]', group=""))
        self.assertEqual([f.name for f in config.listeners[0].filters], ["access"])
        ProxyService(config, MemoryReactorClock())

    def test_tcp_health_default(self):
        """
        A group of tcp:// servers is health-checked by connecting (the
        C{tcp} check) unless its C{health} table names another type.
        """
        self.assertEqual(parse(TCP.format(listener="", group="health = {interval = 2}"))
                         .upstreams["pg"].health.type, "tcp")
        self.assertEqual(parse(TCP.format(listener="", group='health = {type = "http"}'))
                         .upstreams["pg"].health.type, "http")

    def test_errors(self):
        """
        Each mistake is named by its path.
        """
        cases = [
            (TCP.format(listener="", group="").replace('"tcp://10.0.0.1:5432"', '"tcp://10.0.0.1"'),
             "upstreams.pg.servers[0]", "must have a port"),
            (TCP.format(listener="", group="").replace('"tcp://10.0.0.2:5432"',
                                                       '"http://10.0.0.2"'),
             "upstreams.pg.servers[1]", "a http:// server in a group of tcp:// servers"),
            (TCP.format(listener="", group='proxy_protocol = "v3"'),
             "upstreams.pg.proxy_protocol", 'must be "v1" or "v2"'),
            (TCP.format(listener="", group="").replace('protocol = "tcp"', 'protocol = "sctp"'),
             "listeners.db.protocol", "must be one of"),
            (TCP.format(listener="h2c = true", group=""), "listeners.db.h2c",
             "not for tcp listeners"),
            (TCP.format(listener="max_sessions = 5", group=""), "listeners.db.max_sessions",
             "not for tcp listeners"),
            (TCP.format(listener="", group="").replace('upstream = "pg"', ""),
             "listeners.db.upstream", "is required on a tcp listener"),
            (TCP.format(listener="", group="").replace('upstream = "pg"', 'upstream = "no"'),
             "listeners.db.upstream", "no upstream group named 'no'"),
            (TCP.format(listener="", group="").replace('protocol = "tcp"', 'protocol = "udp"'),
             "listeners.db.upstream", "has tcp servers, not udp:// ones"),
            (TCP.format(listener='proxy_protocol = ["nonsense"]', group=""),
             "listeners.db.proxy_protocol[0]", "not an IP address or network"),
            (TCP.format(listener='sni = [{hosts = ["a.example"]}]', group=""),
             "listeners.db.sni[0].upstream", "is required"),
            (TCP.format(listener='sni = [{hosts = [], upstream = "pg"}]', group=""),
             "listeners.db.sni[0].hosts", "at least one"),
            (TCP.format(listener='sni = [{hosts = ["a.*.example"], upstream = "pg"}]', group=""),
             "listeners.db.sni[0].hosts[0]", "'*' is only allowed"),
        ]
        for text, path, problem in cases:
            e = self.error(text)
            self.assertEqual(e.path, path, (path, e))
            self.assertIn(problem, e.problem, (path, e))

    def test_sni_routes(self):
        """
        Passthrough routes on a tcp listener, with the listener's upstream
        as the default; on an HTTP listener they need TLS.
        """
        config = parse(TCP.format(
            listener='sni = [{hosts = ["DB.example", "*.pg.example"], upstream = "pg"}]',
            group=""))
        self.assertEqual(config.listeners[0].sni,
                         (SNIRoute(hosts=("db.example", "*.pg.example"), upstream="pg"),))
        e = self.error("""
[listeners.web]
endpoint = "tcp:8443"
sni = [{hosts = ["db.example"], upstream = "pg"}]
[upstreams.pg]
servers = ["tcp://10.0.0.1:5432"]
[upstreams.web]
servers = ["http://10.0.0.1:80"]
""")
        self.assertEqual(e.path, "listeners.web.sni")

    def test_http_routes_only_to_http_groups(self):
        """
        With an HTTP and a tcp listener, the default route goes to the only
        group of HTTP servers, and an HTTP route cannot name a tcp group.
        """
        text = """
[listeners.web]
endpoint = "tcp:8080"
[listeners.db]
endpoint = "tcp:5433"
protocol = "tcp"
upstream = "pg"
[upstreams.pg]
servers = ["tcp://10.0.0.1:5432"]
[upstreams.web]
servers = ["http://10.0.0.1:80"]
"""
        self.assertEqual([r.upstream for r in parse(text).routes], ["web"])
        e = self.error(text + '[[routes]]\nupstream = "pg"\n')
        self.assertEqual(e.path, "routes[0].upstream")

    def test_udp_listener(self):
        """
        A udp listener names a group of udp:// servers and may cap its
        sessions.
        """
        config = parse("""
[listeners.dns]
endpoint = "udp:5353"
protocol = "udp"
upstream = "resolvers"
max_sessions = 50
[upstreams.resolvers]
servers = ["udp://10.0.0.53:53"]
balancer = "ring_hash"
""")
        (listener,) = config.listeners
        self.assertEqual((listener.protocol, listener.max_sessions), ("udp", 50))
        self.assertEqual(config.upstreams["resolvers"].kind, "udp")


DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


def toml_examples(path: str):
    """
    The TOML configurations of a reST page, as (line, text): its
    C{code-block:: toml} blocks and the files its console examples write
    with C{cat > NAME.toml <<'EOF'}.
    """
    with open(path) as f:
        lines = f.read().splitlines()
    found = []
    i = 0
    while i < len(lines):
        line = lines[i]
        start = None
        if line.strip() == ".. code-block:: toml":
            start, end = i + 1, None
        elif re.search(r"cat > \S+\.toml <<'EOF'$", line):
            start, end = i + 1, "EOF"
        if start is None:
            i += 1
            continue
        block = []
        i = start
        while i < len(lines):
            text = lines[i]
            if end is not None and text.strip() == end:
                break
            if end is None and text and not text.startswith(" "):
                break
            block.append(text[4:])
            i += 1
        found.append((start, "\n".join(block)))
    return found


class DocsExampleTests(SynchronousTestCase):
    """
    The configurations docs/tcp-udp.rst shows are complete and valid.
    """

    def test_examples_parse(self):
        """
        Every TOML block of docs/tcp-udp.rst, and every file its console
        examples write, is a whole configuration that L{parse} accepts.
        """
        examples = toml_examples(os.path.join(DOCS, "tcp-udp.rst"))
        self.assertGreaterEqual(len(examples), 10)
        for line, text in examples:
            try:
                parse(text)
            except ConfigError as e:
                self.fail(f"docs/tcp-udp.rst, the example at line {line}: {e}")
