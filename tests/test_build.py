"""
Tests for L{twistproxy.build}, the one assembler: what it builds of a
configuration, and that L{validate} checks without running a proxy.
"""

from __future__ import annotations

from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from twistproxy import build, service
from twistproxy.config import ConfigError, Listener, ProxyConfig, Route, UpstreamGroup, server
from twistproxy.http.listener import HTTPServerFactory, ServerSettings
from twistproxy.testing import MemoryProxy


def _config(*listeners: Listener, **kw) -> ProxyConfig:
    return ProxyConfig(
        listeners=listeners or (Listener("main", "tcp:8080"),),
        upstreams={"app": UpstreamGroup("app", (server("http://127.0.0.1:8001"),))},
        routes=(Route("app"),), **kw)


def _builder(config: ProxyConfig) -> build.ListenerBuilder:
    reactor = MemoryReactorClock()
    _, forwarder = build.pipeline(config, reactor)
    return build.ListenerBuilder(reactor, config, forwarder)


class ListenerBuilderTests(SynchronousTestCase):
    """
    L{build.ListenerBuilder} gives each listener the factory its settings
    call for.
    """

    def test_plain_listeners_share_a_factory(self):
        """
        Listeners with nothing of their own share one HTTP factory, which
        tells backends C{http}; an C{ssl:} listener gets one that tells
        them C{https}.
        """
        config = _config(Listener("a", "tcp:8080"), Listener("b", "tcp:8081"))
        builder = _builder(config)
        (a, _), (b, _) = builder.factory(config.listeners[0]), builder.factory(config.listeners[1])
        self.assertIs(a, builder.plain)
        self.assertIs(b, builder.plain)
        self.assertEqual(a.scheme, b"http")
        self.assertEqual(builder.http(Listener("s", "ssl:8443")).scheme, b"https")

    def test_listener_option_gets_own_factory(self):
        """
        A listener whose settings differ from the shared ones (here
        C{escaped_slashes}) gets a factory of its own, set to them.
        """
        listener = Listener("own", "tcp:8080", escaped_slashes="reject")
        builder = _builder(_config(listener))
        factory = builder.http(listener)
        self.assertIsNot(factory, builder.plain)
        self.assertEqual(factory.escaped_slashes, "reject")
        self.assertEqual(builder.settings(b"http", listener).escaped_slashes, "reject")

    def test_redirect_listener(self):
        """
        A listener that redirects to https gets a factory that redirects to
        its C{https_port}.
        """
        listener = Listener("r", "tcp:8080", redirect_https=True, https_port=8443)
        factory = _builder(_config(listener)).http(listener)
        self.assertEqual(factory.redirect_port, 8443)

    def test_settings_unpacked(self):
        """
        L{HTTPServerFactory} reads its L{ServerSettings} into the
        attributes its protocols use.
        """
        factory = HTTPServerFactory(
            MemoryReactorClock(), None,
            ServerSettings(via="edge", hsts=60, identity_header="X-Client", h2c=True))
        self.assertEqual(factory.via, b"edge")
        self.assertEqual(factory.hsts, (b"Strict-Transport-Security", b"max-age=60"))
        self.assertEqual(factory.identity_header, b"X-Client")
        self.assertTrue(factory.h2c)

    def test_saved_undoes(self):
        """
        What L{build.ListenerBuilder.saved} returns forgets every factory
        built since, as a reload that fails half-way needs.
        """
        listener = Listener("own", "tcp:8080", h2c=True)
        builder = _builder(_config(listener))
        undo = builder.saved()
        builder.factory(listener)
        self.assertEqual(len(builder.http_factories), 2)
        undo()
        self.assertEqual(builder.http_factories, [builder.plain])


class MemoryProxyTests(SynchronousTestCase):
    """
    L{MemoryProxy} runs the assembler's wiring.
    """

    def test_listener_settings(self):
        """
        The first listener's settings reach the memory proxy's factory as
        they would a running proxy's.
        """
        proxy = MemoryProxy(_config(Listener("main", "tcp:8080", h2c=True)))
        self.assertTrue(proxy.factory.h2c)

    def test_listener_connection_limit(self):
        """
        The first listener's own C{max_connections} holds in the memory
        proxy as in a running one: a connection beyond it is closed at once
        and ends as a C{max_connections} refusal.
        """
        proxy = MemoryProxy(_config(Listener("main", "tcp:8080", max_connections=1)))
        first = proxy.connect_client()
        second = proxy.connect_client(port=40001)
        self.assertFalse(first.closed)
        self.assertTrue(second.closed)
        self.assertEqual([x.reason for x in proxy.exchanges], ["max_connections"])


class ValidateTests(SynchronousTestCase):
    """
    L{build.validate} checks a configuration without building a proxy.
    """

    def test_no_service(self):
        """
        A valid configuration passes without a L{service.ProxyService}
        being made.
        """
        def refuse(*args, **kwargs):
            raise AssertionError("validate built a ProxyService")

        self.patch(service, "ProxyService", refuse)
        build.validate(_config(admin=None))

    def test_endpoint(self):
        """
        A listener endpoint string that does not parse is refused with its
        path.
        """
        e = self.assertRaises(ConfigError, build.validate,
                              _config(Listener("main", "nonsense:1")))
        self.assertEqual(e.path, "listeners.main.endpoint")

    def test_route_target(self):
        """
        A route to an upstream group that does not exist is refused with its
        path.
        """
        config = _config()
        config = ProxyConfig(listeners=config.listeners, upstreams=config.upstreams,
                             routes=(Route("app"), Route("missing")))
        e = self.assertRaises(ConfigError, build.validate, config)
        self.assertEqual(e.path, "routes[1].upstream")


class EndpointTests(SynchronousTestCase):
    """
    L{build.endpoint} is where a listener listens, as its settings say.
    """

    def test_backlog(self):
        """
        A listener's C{backlog} reaches the endpoint (and so the listening
        socket), one process's or the workers' master's
        (L{build.endpoint_string}); without it, the endpoint string's own
        backlog stands.
        """
        config = _config(Listener("a", "tcp:8080", backlog=1024),
                         Listener("b", "tcp:8081:backlog=7"))
        reactor = MemoryReactorClock()
        for listener in config.listeners:
            build.endpoint(reactor, listener, config).listen(Factory())
        self.assertEqual([(port, backlog) for port, _, backlog, _ in reactor.tcpServers],
                         [(8080, 1024), (8081, 7)])
        self.assertEqual([build.endpoint_string(l) for l in config.listeners],
                         ["tcp:8080:backlog=1024", "tcp:8081:backlog=7"])
