"""
Tests for C{python -m twistproxy check}.
"""

from __future__ import annotations

import io
import sys

from twisted.trial.unittest import SynchronousTestCase

from twistproxy import service
from twistproxy.__main__ import main

from tests.config_support import proxy_toml


class CheckTests(SynchronousTestCase):
    """
    C{check} validates a configuration without running it.
    """

    def run_main(self, *args: str):
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        return main(list(args)), out.getvalue(), err.getvalue()

    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_valid(self):
        """
        A valid file prints OK and exits 0.
        """
        path = self.write(proxy_toml())
        self.assertEqual(self.run_main("check", path), (0, f"{path}: OK\n", ""))

    def test_invalid_names_file_and_path(self):
        """
        An invalid file exits 1 with the file, the path inside it and the
        problem.
        """
        path = self.write('[listeners.main]\nendpoint = "tcp:8080"\n'
                          '[upstreams.app]\nservers = ["http://127.0.0.1:8001", "http://x:99999"]\n')
        code, out, err = self.run_main("check", path)
        self.assertEqual(code, 1)
        self.assertTrue(err.startswith(f"{path}: upstreams.app.servers[1]: "), err)

    def test_unknown_balancer(self):
        """
        Components are checked too: an unknown balancer name is reported
        at its path.
        """
        path = self.write(proxy_toml() + 'balancer = "nope"\n')
        code, out, err = self.run_main("check", path)
        self.assertEqual(code, 1)
        self.assertIn("upstreams.app.balancer: unknown balancer 'nope'", err)

    def test_split_unknown_group(self):
        """
        A route's split naming a group that does not exist is reported at
        the side's path.
        """
        path = self.write(proxy_toml() + "[[routes]]\nsplit = [{upstream = 'app', weight = 9}, "
                                         "{upstream = 'canary', weight = 1}]\n")
        code, out, err = self.run_main("check", path)
        self.assertEqual(code, 1)
        self.assertIn(f"{path}: routes[0].split[1].upstream: no upstream group named "
                      f"'canary'", err)

    def test_bad_endpoint(self):
        """
        An endpoint string Twisted cannot parse is reported at its path.
        """
        path = self.write(proxy_toml(endpoint="bogus:8080"))
        code, out, err = self.run_main("check", path)
        self.assertEqual(code, 1)
        self.assertIn(f"{path}: listeners.main.endpoint: invalid endpoint", err)

    def test_unusable_ciphers(self):
        """
        A TLS listener whose cipher list OpenSSL accepts but no TLS 1.2
        client could connect with (C{NULL-MD5}) fails the check at its
        path, rather than every TLS 1.2 handshake later.
        """
        from twistproxy.testing import issue_certificate, pem_bundle

        certificate = self.mktemp()
        with open(certificate, "wb") as f:
            f.write(pem_bundle(issue_certificate("a.test", ("a.test",))))
        path = self.write(proxy_toml(
            f'tls = {{ certificates = ["{certificate}"], ciphers = "NULL-MD5" }}\n',
            endpoint="tcp:8443"))
        code, out, err = self.run_main("check", path)
        self.assertEqual(code, 1)
        self.assertTrue(err.startswith(f"{path}: listeners.main.tls.ciphers: "), err)
        self.assertIn("NULL-MD5", err)

    def test_header_rule_on_framing_field(self):
        """
        A header rule that would rewrite message framing is refused at the
        route's path, not at the first request.
        """
        path = self.write(proxy_toml(
            route='response_headers = { set = { "Content-Length" = "0" } }\n'))
        code, out, err = self.run_main("check", path)
        self.assertEqual(code, 1)
        self.assertIn(f"{path}: routes[0].response_headers: header rules cannot set", err)

    def test_missing_file(self):
        """
        A missing file is an error naming it.
        """
        code, out, err = self.run_main("check", "/nonexistent/proxy.toml")
        self.assertEqual(code, 1)
        self.assertIn("/nonexistent/proxy.toml", err)

    def test_usage(self):
        """
        Anything but C{check FILE} prints usage and exits 2.
        """
        self.assertEqual(self.run_main("frobnicate")[0], 2)

    def test_config_option(self):
        """
        The file may be given with C{--config}, C{--config=} or C{-c}, as to
        C{twistd twistproxy}; an invalid one is reported the same way.
        """
        path = self.write(proxy_toml())
        for args in (["--config", path], [f"--config={path}"], ["-c", path]):
            self.assertEqual(self.run_main("check", *args), (0, f"{path}: OK\n", ""), args)
        bad = self.write("[listeners.main]\n")
        code, out, err = self.run_main("check", "--config", bad)
        self.assertEqual(code, 1)
        self.assertTrue(err.startswith(f"{bad}: listeners.main"), err)

    def test_one_file_only(self):
        """
        No file, two files, or a file both alone and with C{--config}
        prints usage and exits 2.
        """
        for args in ([], ["a.toml", "b.toml"], ["--config", "a.toml", "b.toml"]):
            code, out, err = self.run_main("check", *args)
            self.assertEqual(code, 2, args)
            self.assertTrue(err.startswith("usage: python -m twistproxy check"), err)

    def test_systemd_endpoint_without_socket(self):
        """
        A C{systemd:} endpoint in a process that was passed no socket (or
        passed them without C{LISTEN_FDNAMES}, which Twisted needs) is
        reported as such, naming what socket activation must set, instead
        of Twisted's bare C{list index out of range}.
        """
        for where in ("index=0", "name=web"):
            path = self.write(proxy_toml(endpoint=f"systemd:domain=INET:{where}"))
            code, out, err = self.run_main("check", path)
            self.assertEqual(code, 1)
            self.assertIn("listeners.main.endpoint: invalid endpoint 'systemd:domain=INET:"
                          f"{where}': this process was not passed that socket", err)
            self.assertIn("LISTEN_FDNAMES", err)
            self.assertIn("--fdname=NAME", err)

    def test_plugin_options(self):
        """
        C{check} reads every plugin's options, of each kind: a misspelt
        one is reported as C{file: path: problem}, with the option it may
        have meant and what the plugin takes.
        """
        cases = [
            (proxy_toml('[[listeners.main.filters]]\nname = "rate_limit"\nrat = 10\n'),
             "listeners.main.filters[0].rat: unknown option 'rat' (did you mean 'rate'?); "
             "the rate_limit filter takes rate, burst"),
            (proxy_toml(route='[[routes.filters]]\nname = "cors"\norigin = ["https://a"]\n'),
             "routes[0].filters[0].origin: unknown option 'origin' (did you mean "
             "'origins'?); the cors filter takes origins"),
            (proxy_toml() + 'balancer = "maglev"\nbalancer_options = { tabel_size = 7 }\n',
             "upstreams.app.balancer_options.tabel_size: unknown option 'tabel_size' (did "
             "you mean 'table_size'?); the maglev balancer takes key, table_size"),
            (proxy_toml() + '[upstreams.app.health]\npth = "/h"\n',
             "upstreams.app.health.pth: unknown option 'pth' (did you mean 'path'?); "
             "the http health check takes path"),
            (proxy_toml(route="cache = true") + '[cache]\nsise = "1m"\n',
             "cache.sise: unknown option 'sise' (did you mean 'size'?); the memory store "
             "takes size"),
            (proxy_toml() + '[locator]\ntype = "cidr"\nnetwork = {}\n',
             "locator.network: unknown option 'network' (did you mean 'networks'?); "
             "the cidr locator takes networks"),
        ]
        for text, problem in cases:
            path = self.write(text)
            code, out, err = self.run_main("check", path)
            self.assertEqual((code, out), (1, ""), err)
            self.assertTrue(err.startswith(f"{path}: {problem}"), err)

    def test_builds_no_proxy(self):
        """
        C{check} makes no L{service.ProxyService}, and nothing listens,
        connects or waits on the global reactor, even for a file with every
        kind of listener, plugin and side service.
        """
        from twisted.internet import reactor

        def refuse(*args, **kwargs):
            self.fail("check ran the proxy")

        self.patch(service.ProxyService, "__init__", refuse)
        for name in ("listenTCP", "listenUDP", "listenUNIX", "listenSSL", "connectTCP",
                     "callLater", "run"):
            self.patch(reactor, name, refuse)
        path = self.write(proxy_toml(
            '[[listeners.main.filters]]\nname = "rate_limit"\nrate = 5\n')
            + 'balancer = "maglev"\n[upstreams.app.health]\npath = "/h"\n'
            '[[routes]]\nupstream = "app"\ncache = true\n'
            '[upstreams.db]\nservers = ["tcp://127.0.0.1:5432"]\n'
            '[upstreams.names]\nservers = ["udp://127.0.0.1:53"]\n'
            '[listeners.raw]\nendpoint = "tcp:9000"\nprotocol = "tcp"\nupstream = "db"\n'
            '[listeners.datagrams]\nendpoint = "udp:9001"\nprotocol = "udp"\n'
            'upstream = "names"\n'
            '[locator]\ntype = "cidr"\nnetworks = { "10.0.0.0/8" = "eu" }\n'
            '[cache]\nsize = "1m"\n[admin]\nendpoint = "tcp:9901"\n')
        self.assertEqual(self.run_main("check", path), (0, f"{path}: OK\n", ""))
