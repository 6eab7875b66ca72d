"""
Tests for L{twistproxy.reactor}: Twisted's own reactor tests for TCP, TLS,
descriptors and system events, run against L{EPollReactor} (over loopback,
each test on a reactor of its own), and what its dispatch does besides.
"""

from __future__ import annotations

import select
import sys

from twisted.internet import main
from twisted.internet.protocol import ClientFactory, Protocol, ServerFactory
from twisted.python import context, log
from twisted.python.log import ILogContext
from twisted.python.reflect import namedAny
from twisted.trial.unittest import SynchronousTestCase

from twistproxy import signals

if hasattr(select, "epoll"):
    from twisted.internet.test import test_core, test_fdset, test_tcp, test_tls
    from twisted.internet.test.reactormixins import ReactorBuilder

    from twistproxy.reactor import EPollReactor

    OURS = ["twistproxy.reactor.EPollReactor"]

    def _ours(builder):
        attributes = {"_reactors": OURS, "__module__": __name__}
        if hasattr(builder, "test_logPrefix"):
            # The one documented difference: plain reads and writes run
            # without the connection's legacy log context.
            def test_logPrefix(self):
                pass

            test_logPrefix.skip = "EPollReactor dispatches plain events without a log context"
            attributes["test_logPrefix"] = test_logPrefix
        return type(builder.__name__, (builder,), attributes)

    for _builder in (
        test_tcp.TCP4ClientTestsBuilder,
        test_tcp.TCPPortTestsBuilder,
        test_tcp.TCPConnectionTestsBuilder,
        test_tcp.TCPTransportTestsBuilder,
        test_tcp.AbortConnectionTests,
        test_fdset.ReactorFDSetTestsBuilder,
        test_core.SystemEventTestsBuilder,
        test_tls.TLSPortTestsBuilder,
        test_tls.AbortSSLConnectionTests,
    ):
        globals().update(_ours(_builder).makeTestCaseClasses())
    del _builder

    class _Broken(Protocol):
        """
        Raises from C{dataReceived}, and writes down the log system its
        C{connectionLost} runs in.
        """

        def __init__(self, lost):
            self.lost = lost

        def dataReceived(self, data):
            raise ZeroDivisionError("broken protocol")

        def connectionLost(self, reason):
            self.lost.append(context.get(ILogContext)["system"])

    class DispatchTestsBuilder(ReactorBuilder):
        """
        What L{EPollReactor} does for an event it does not dispatch
        directly.
        """

        _reactors = OURS

        def test_exception_logged_with_prefix(self):
            """
            An exception raised by C{dataReceived} is logged with the
            connection's log prefix, as Twisted's epoll reactor logs it,
            and the connection is dropped, its C{connectionLost} running in
            the connection's log context.
            """
            reactor = self.buildReactor()
            self.assertIsInstance(reactor, EPollReactor)
            lost = []
            systems = []

            def observe(event):
                if event.get("isError"):
                    systems.append(event["system"])

            log.addObserver(observe)
            self.addCleanup(log.removeObserver, observe)
            factory = ServerFactory.forProtocol(lambda: _Broken(lost))
            port = reactor.listenTCP(0, factory, interface="127.0.0.1")

            class Sender(Protocol):
                def connectionMade(self):
                    self.transport.write(b"x")

                def connectionLost(self, reason):
                    reactor.stop()

            reactor.connectTCP("127.0.0.1", port.getHost().port, ClientFactory.forProtocol(Sender))
            self.runReactor(reactor, timeout=10)
            self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
            self.assertEqual(len(systems), 1)
            self.assertIn("_Broken", systems[0])
            self.assertEqual(lost, systems)

    globals().update(DispatchTestsBuilder.makeTestCaseClasses())


class _Named:
    """
    Stands in for a reactor class chosen by name.
    """


class ChooseReactorTests(SynchronousTestCase):
    """
    L{signals.choose_reactor} installs the proxy's reactor only when none
    is installed yet.
    """

    def setUp(self):
        self.installed = []
        import twistproxy.reactor

        self.patch(twistproxy.reactor, "install", lambda: self.installed.append(True))

    def test_installs_when_none(self):
        modules = dict(sys.modules)
        modules.pop("twisted.internet.reactor", None)
        self.patch(sys, "modules", modules)
        signals.choose_reactor()
        self.assertEqual(self.installed, [True])

    def test_leaves_a_chosen_one(self):
        """
        A reactor installed already (by C{twistd --reactor}, or here by
        trial) stays.
        """
        self.assertIn("twisted.internet.reactor", sys.modules)
        signals.choose_reactor()
        self.assertEqual(self.installed, [])

    def test_not_without_epoll(self):
        modules = dict(sys.modules)
        modules.pop("twisted.internet.reactor", None)
        self.patch(sys, "modules", modules)
        self.patch(signals, "select", object())
        signals.choose_reactor()
        self.assertEqual(self.installed, [])

    def test_named(self):
        """
        A reactor class named (the master's, for its workers) is installed
        instead of the proxy's own.
        """
        modules = dict(sys.modules)
        modules.pop("twisted.internet.reactor", None)
        self.patch(sys, "modules", modules)
        installed = []
        self.patch(main, "installReactor", installed.append)
        signals.choose_reactor(signals.reactor_name(_Named()))
        self.assertEqual(self.installed, [])
        self.assertEqual([type(r) for r in installed], [_Named])

    def test_own_named(self):
        """
        L{signals.OWN_REACTOR} names the proxy's reactor class, which is how
        a master tells that its workers need no C{--reactor}.
        """
        from twistproxy.reactor import EPollReactor

        self.assertIs(namedAny(signals.OWN_REACTOR), EPollReactor)

    if not hasattr(select, "epoll"):
        skip = "no epoll on this platform"
