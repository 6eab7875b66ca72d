"""
Tests for the files in examples/: every configuration validates, and the
embedding example builds, listens and proxies.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import socket
from dataclasses import replace

from twisted.internet import defer, reactor, tcp
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.server import Site
from twisted.web.static import Data

from twistproxy.config import load, parse
from twistproxy.service import ProxyService

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def _load_embedded():
    """
    Import examples/embedded.py, which is not in a package, from its path.
    """
    path = os.path.join(EXAMPLES, "embedded.py")
    spec = importlib.util.spec_from_file_location("twistproxy_example_embedded", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ConfigExampleTests(SynchronousTestCase):
    """
    Every examples/*.toml is a configuration the proxy accepts.
    """

    def test_examples_exist(self):
        """
        The examples directory holds configurations to test (a glob that
        matched nothing would make the next test pass vacuously).
        """
        names = {os.path.basename(p) for p in glob.glob(os.path.join(EXAMPLES, "*.toml"))}
        self.assertTrue({"demo.toml", "proxy.toml", "dns.toml"} <= names, names)

    def test_every_example_builds(self):
        """
        Each examples/*.toml loads, and a L{ProxyService} is built from it on
        a memory reactor (checking balancers and endpoint strings too),
        with one listener service per configured listener and nothing
        listening.
        """
        for path in sorted(glob.glob(os.path.join(EXAMPLES, "*.toml"))):
            config = load(path)
            clock = MemoryReactorClock()
            service = ProxyService(config, clock)
            self.assertEqual(
                sorted(service.listeners), sorted(l.name for l in config.listeners), path
            )
            self.assertEqual(clock.tcpServers, [], path)


class EmbeddedExampleTests(SynchronousTestCase):
    """
    examples/embedded.py on a memory reactor.
    """

    def test_import_has_no_side_effects(self):
        """
        Importing the example starts nothing: no socket is opened on the
        global reactor, and it offers L{build} to do the work.
        """
        before = _sockets()
        module = _load_embedded()
        self.assertEqual(_sockets(), before)
        self.assertTrue(callable(module.build))

    def test_build_listens_where_asked(self):
        """
        L{build} returns a service that, once started, listens for the
        origin and for the proxy on 127.0.0.1 at the given ports, and whose
        proxy sends every request to the origin.
        """
        module = _load_embedded()
        clock = MemoryReactorClock()
        service = module.build(clock, 8001, "tcp:8080:interface=127.0.0.1", access_log="")
        self.assertEqual(clock.tcpServers, [])
        service.startService()
        self.addCleanup(service.stopService)
        listening = [(port, interface) for port, _, _, interface in clock.tcpServers]
        self.assertEqual(listening, [(8001, "127.0.0.1"), (8080, "127.0.0.1")])
        proxy = service.getServiceNamed("proxy")
        self.assertIs(clock.tcpServers[1][1], proxy.factory)
        (group,) = proxy.config.upstreams.values()
        self.assertEqual([s.url for s in group.servers], ["http://127.0.0.1:8001"])


def _sockets() -> set:
    """
    The TCP connections and listening ports the reactor watches.
    """
    return {
        r for r in reactor.getReaders() + reactor.getWriters()
        if isinstance(r, (tcp.Connection, tcp.Port))
    }


def _free_port() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listens on right now.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@defer.inlineCallbacks
def _stop(service, before):
    """
    Stop C{service} and wait until the sockets the reactor watches are no
    more than C{before}.
    """
    yield service.stopService()
    # The proxy aborts its pooled connection to the origin when it stops;
    # both ends of it close a few reactor turns later.
    for _ in range(200):
        if _sockets() <= before:
            break
        yield deferLater(reactor, 0.01, lambda: None)


class EmbeddedExampleEndToEndTests(TestCase):
    """
    examples/embedded.py on the real reactor, over loopback sockets.
    """

    timeout = 10

    @defer.inlineCallbacks
    def test_proxies_a_request(self):
        """
        A request sent to the proxy that L{build} starts is answered by the
        origin, through the proxy (which adds itself to C{Via}).
        """
        module = _load_embedded()
        before = _sockets()
        service = module.build(
            reactor, _free_port(), "tcp:0:interface=127.0.0.1", access_log=""
        )
        service.startService()
        self.addCleanup(_stop, service, before)
        port = service.getServiceNamed("proxy").listeners["main"].port.getHost().port

        agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        response = yield agent.request(b"GET", b"http://127.0.0.1:%d/hello" % port)
        body = yield readBody(response)

        self.assertEqual(response.code, 200)
        self.assertEqual(body, b"Hello from the origin: you asked for /hello\n")
        self.assertEqual(response.headers.getRawHeaders(b"via"), [b"1.1 twistproxy"])


class TwoRegionExampleTests(TestCase):
    """
    examples/two-region.toml as written, but for its port numbers, on the
    real reactor: it listens on loopback only, and places IPv4 and IPv6
    clients in their regions.
    """

    timeout = 20

    def origin(self, name: bytes) -> int:
        """
        A web server on 127.0.0.1 that answers C{name} to every request.

        @return: Its port.
        """
        resource = Data(name, "text/plain")
        resource.isLeaf = True
        port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    @defer.inlineCallbacks
    def test_runs_on_loopback(self):
        """
        With its ports made free ones (8080 on ephemeral ports, the four
        backends on four origins), the example starts and listens on
        127.0.0.1 and ::1 only; IPv4 clients always reach the eu-west-1a
        backend, IPv6 clients the us-east ones.
        """
        with open(os.path.join(EXAMPLES, "two-region.toml"), encoding="utf-8") as f:
            text = f.read()
        self.assertEqual(text.count(":8080:"), 2)
        text = text.replace(":8080:", ":0:")
        for n in range(1, 5):
            name = b"%d" % (8000 + n)
            text = text.replace(f"127.0.0.1:{8000 + n}", f"127.0.0.1:{self.origin(name)}")
        before = _sockets()
        config = parse(text, "two-region.toml")
        # Its access log goes to standard output; not in a test run.
        config = replace(config, access_log=replace(config.access_log, path=""))
        service = ProxyService(config, reactor)
        service.startService()
        self.addCleanup(_stop, service, before)
        hosts = {name: listener.port.getHost() for name, listener in service.listeners.items()}
        self.assertEqual({name: host.host for name, host in hosts.items()},
                         {"ipv4": "127.0.0.1", "ipv6": "::1"})

        agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        answers = {}
        for name, url in [("ipv4", "http://127.0.0.1:%d/"), ("ipv6", "http://[::1]:%d/")]:
            answers[name] = set()
            for _ in range(4):
                response = yield agent.request(b"GET", (url % hosts[name].port).encode())
                answers[name].add((yield readBody(response)))
        self.assertEqual(answers, {"ipv4": {b"8001"}, "ipv6": {b"8003", b"8004"}})
