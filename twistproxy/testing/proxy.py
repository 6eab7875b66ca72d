# -*- test-case-name: tests.test_proxy -*-
"""
A whole proxy in memory: L{MemoryProxy} runs the assembler's wiring
(L{twistproxy.build}) on a fake clock and memory transports, and
L{MemoryPeer} is one end of a connection to it, a client or a backend.
"""

from __future__ import annotations



class MemoryProxy:
    """
    A whole proxy on a fake clock and in-memory transports, for testing
    what crosses it byte by byte: write raw bytes as a client, read what
    the backend receives, answer as the backend, read what the client gets.

    Nothing touches the network or the global reactor::

        proxy = MemoryProxy()
        client = proxy.connect_client()
        client.send(b"GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n")
        backend = proxy.accept_backend()
        backend.send(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nhi")
        assert client.received().endswith(b"hi")

    @ivar reactor: The L{MemoryReactorClock} everything runs on; advance it
        to fire timeouts.
    @ivar factory: The L{HTTPServerFactory}.
    @ivar forwarder: The L{Forwarder}.
    @ivar exchanges: Every finished exchange, in order (what the access log
        would see).
    @ivar cache: The shared cache (L{twistproxy.cache.runtime.HTTPCache})
        when a route of the configuration has one, else C{None}.
    """

    def __init__(self, config=None):
        from twisted.internet.testing import MemoryReactorClock

        from twistproxy import build
        from twistproxy.config import (
            Listener, ProxyConfig, Route, Server, UpstreamGroup,
        )

        if config is None:
            config = ProxyConfig(
                listeners=(Listener("main", "tcp:8080"),),
                upstreams={"app": UpstreamGroup(
                    "app", (Server("http://127.0.0.1:8001", "http", "127.0.0.1", 8001),),
                )},
                routes=(Route("app"),),
            )
        self.config = config
        self.reactor = MemoryReactorClock()
        # The assembler's own wiring, up to the HTTP factory of the first
        # listener (inside whatever TLS or PROXY header reader would wrap
        # it: memory transports speak the protocol itself).
        self.cache = build.cache(config, self.reactor)
        _, self.forwarder = build.pipeline(config, self.reactor, self.cache)
        self.exchanges: list = []
        listeners = build.ListenerBuilder(
            self.reactor, config, self.forwarder, on_exchange_end=self.exchanges.append)
        listener = config.listeners[0]
        self.factory = listeners.http(
            listener, listeners.filters(listener), listeners.own_quota(listener))
        self._accepted = 0

    def connect_client(self, host: str = "192.0.2.7", port: int = 40000) -> "MemoryPeer":
        """
        Connect a client to the proxy.
        """
        from twisted.internet.address import IPv4Address, IPv6Address

        cls = IPv6Address if ":" in host else IPv4Address
        protocol = self.factory.buildProtocol(None)
        return MemoryPeer(protocol, peer=cls("TCP", host, port))

    def backend_attempts(self) -> list:
        """
        The backend connection attempts not yet accepted, as
        C{(host, port)} pairs.
        """
        return [(c[0], c[1]) for c in self.reactor.tcpClients[self._accepted:]]

    def accept_backend(self) -> "MemoryPeer":
        """
        Complete the oldest pending backend connection attempt.
        """
        host, port, factory, timeout, bind = self.reactor.tcpClients[self._accepted]
        self._accepted += 1
        from twisted.internet.address import IPv4Address

        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        peer = MemoryPeer(protocol, peer=IPv4Address("TCP", host, port))
        peer.connector_factory = factory
        return peer

    def refuse_backend(self, reason=None) -> None:
        """
        Fail the oldest pending backend connection attempt.
        """
        from twisted.internet.error import ConnectionRefusedError
        from twisted.python.failure import Failure

        host, port, factory, timeout, bind = self.reactor.tcpClients[self._accepted]
        self._accepted += 1
        factory.clientConnectionFailed(None, Failure(reason or ConnectionRefusedError()))


class MemoryPeer:
    """
    One end of an in-memory connection to the proxy: the proxy's protocol
    and the transport it writes to.
    """

    def __init__(self, protocol, peer):
        from twisted.internet.testing import StringTransport

        self.protocol = protocol
        self.transport = StringTransport(peerAddress=peer, lenient=True)
        self._read = 0
        protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        """
        Deliver bytes to the proxy as if they came from this peer.
        """
        self.protocol.dataReceived(data)

    def received(self) -> bytes:
        """
        The bytes the proxy wrote to this peer since the last call.
        """
        value = self.transport.value()
        new, self._read = value[self._read:], len(value)
        return new

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting

    def close(self) -> None:
        """
        The peer closes the connection.
        """
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        self.transport.disconnecting = True
        self.protocol.connectionLost(Failure(ConnectionDone()))
