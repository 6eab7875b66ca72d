"""
Tests for the files in examples/: every configuration validates, and the
embedding example builds, listens and proxies.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import socket

from twisted.internet import defer, reactor, tcp
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody

from twistproxy.config import load
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
        self.assertTrue({"demo.toml", "proxy.toml"} <= names, names)

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
        self.addCleanup(self._stop, service, before)
        port = service.getServiceNamed("proxy").listeners["main"].port.getHost().port

        agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        response = yield agent.request(b"GET", b"http://127.0.0.1:%d/hello" % port)
        body = yield readBody(response)

        self.assertEqual(response.code, 200)
        self.assertEqual(body, b"Hello from the origin: you asked for /hello\n")
        self.assertEqual(response.headers.getRawHeaders(b"via"), [b"1.1 twistproxy"])

    @defer.inlineCallbacks
    def _stop(self, service, before):
        yield service.stopService()
        # The proxy aborts its pooled connection to the origin when it stops;
        # both ends of it close a few reactor turns later.
        for _ in range(200):
            if _sockets() <= before:
                break
            yield deferLater(reactor, 0.01, lambda: None)
