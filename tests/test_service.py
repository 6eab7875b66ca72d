"""
Tests for L{twistproxy.service.ProxyService} on a memory reactor.
"""

from __future__ import annotations

import os
from unittest import SkipTest

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from twistproxy.config import AccessLog, ConfigError, Listener, ProxyConfig, Route, UpstreamGroup, server
from twistproxy.service import ProxyService
from twistproxy.testing import MemoryPeer, issue_certificate, pem_bundle


def _config(**kw) -> ProxyConfig:
    base = dict(
        listeners=(Listener("main", "tcp:8080:interface=127.0.0.1"), Listener("alt", "tcp:8081")),
        upstreams={"app": UpstreamGroup("app", (server("http://127.0.0.1:8001"),))},
        routes=(Route("app"),),
        access_log=AccessLog(path=""),
    )
    base.update(kw)
    return ProxyConfig(**base)


class ProxyServiceTests(SynchronousTestCase):
    """
    Building, starting and stopping the proxy.
    """

    def test_listens_on_every_listener(self):
        """
        Starting the service listens on each configured endpoint with the
        proxy's factory; stopping stops listening.
        """
        reactor = MemoryReactorClock()
        service = ProxyService(_config(), reactor)
        service.startService()
        self.assertEqual(
            [(port, factory, interface) for port, factory, _, interface in reactor.tcpServers],
            [(8080, service.factory, "127.0.0.1"), (8081, service.factory, "")],
        )
        service.stopService()
        self.assertFalse(service.running)

    def test_tls_listener_tells_backends_https(self):
        """
        Requests arriving on an ssl: listener are forwarded with
        X-Forwarded-Proto https; plain listeners say http.
        """
        pem = self.mktemp()
        with open(pem, "wb") as f:
            f.write(pem_bundle(issue_certificate("localhost", sans=("localhost",))))
        config = _config(listeners=(
            Listener("plain", "tcp:8080"), Listener("tls", f"ssl:8443:privateKey={pem}"),
        ))
        service = ProxyService(config, MemoryReactorClock())
        self.assertEqual(service.listeners["plain"].factory.scheme, b"http")
        self.assertEqual(service.listeners["tls"].factory.scheme, b"https")

    def test_route_to_missing_group(self):
        """
        A configuration built in code whose route names no group is a
        ConfigError with the route's path, not a KeyError.
        """
        e = self.assertRaises(ConfigError, ProxyService, _config(routes=(Route("nope"),)), MemoryReactorClock())
        self.assertEqual(e.path, "routes[0].upstream")

    def test_access_log_written_and_flushed(self):
        """
        With an access log file, each finished request is written to it,
        flushed every second and at stop.
        """
        path = self.mktemp()
        reactor = MemoryReactorClock()
        service = ProxyService(_config(access_log=AccessLog(path=path, format="json")), reactor)
        service.startService()
        client = MemoryPeer(service.factory.buildProtocol(None), peer=None)
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        host, port, factory, timeout, bind = reactor.tcpClients[0]
        backend = MemoryPeer(factory.buildProtocol(None), peer=None)
        backend.send(b"HTTP/1.1 204 No Content\r\n\r\n")
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"")
        reactor.advance(1.0)
        with open(path, "rb") as f:
            self.assertIn(b'"status":204', f.read())
        service.stopService()

    def test_access_log_rotated_by_size(self):
        """
        Once the access log file reaches C{max_size}, the next flush moves
        it to C{path.1} and writes to a new file.
        """
        path = self.mktemp()
        reactor = MemoryReactorClock()
        service = ProxyService(_config(access_log=AccessLog(path=path, max_size=4096)), reactor)
        service.startService()
        self.addCleanup(service.stopService)
        with open(path, "ab") as f:
            f.write(b"x" * 4095)
        reactor.advance(1.0)
        self.assertFalse(os.path.exists(path + ".1"))
        with open(path, "ab") as f:
            f.write(b"x")
        reactor.advance(1.0)
        self.assertEqual(os.path.getsize(path + ".1"), 4096)
        self.assertEqual(os.path.getsize(path), 0)
        client = MemoryPeer(service.factory.buildProtocol(None), peer=None)
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        backend = MemoryPeer(reactor.tcpClients[0][2].buildProtocol(None), peer=None)
        backend.send(b"HTTP/1.1 204 No Content\r\n\r\n")
        reactor.advance(1.0)
        self.assertGreater(os.path.getsize(path), 0)

    def test_access_log_write_errors_do_not_stop_the_proxy(self):
        """
        An access log that cannot be written (a full disk: /dev/full) is
        reported, and requests and the periodic flush go on.
        """
        import os

        from twisted.logger import globalLogPublisher

        if not os.path.exists("/dev/full"):
            raise SkipTest("needs /dev/full")
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        reactor = MemoryReactorClock()
        service = ProxyService(_config(access_log=AccessLog(path="/dev/full")), reactor)
        service.startService()
        backend = None
        for i in range(3):
            client = MemoryPeer(service.factory.buildProtocol(None), peer=None)
            client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            if backend is None:
                backend = MemoryPeer(reactor.tcpClients[0][2].buildProtocol(None), peer=None)
            backend.send(b"HTTP/1.1 204 No Content\r\n\r\n")
            self.assertTrue(client.received().startswith(b"HTTP/1.1 204"))
            reactor.advance(1.0)
        self.assertTrue(service._flusher.running)
        errors = [e for e in events if "cannot write the access log" in e.get("log_format", "")]
        self.assertEqual(len(errors), 1)
        service.stopService()

    def test_stop_closes_idle_backend_connections(self):
        """
        Stopping the service closes idle client connections at once and,
        once they are gone, the pooled backend connections.
        """
        reactor = MemoryReactorClock()
        service = ProxyService(_config(), reactor)
        service.startService()
        client = MemoryPeer(service.factory.buildProtocol(None), peer=None)
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        factory = reactor.tcpClients[0][2]
        backend = MemoryPeer(factory.buildProtocol(None), peer=None)
        backend.send(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.assertFalse(backend.closed)
        d = service.stopService()
        self.assertTrue(client.closed)
        self.assertNoResult(d)
        client.close()
        self.successResultOf(d)
        self.assertTrue(backend.closed)

    def assert_answered_with_close(self, client: MemoryPeer, backend: MemoryPeer) -> None:
        """
        The backend answers; the client gets the response with
        C{Connection: close}, and its connection is closed.
        """
        backend.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        got = client.received()
        self.assertTrue(got.startswith(b"HTTP/1.1 200 OK"))
        self.assertIn(b"Connection: close\r\n", got)
        self.assertTrue(client.closed)
        client.close()

    def test_graceful_shutdown_finishes_requests(self):
        """
        A request in flight at shutdown is answered, with Connection: close;
        the shutdown completes when its connection has closed.
        """
        reactor = MemoryReactorClock()
        service = ProxyService(_config(), reactor)
        service.startService()
        client = MemoryPeer(service.factory.buildProtocol(None), peer=None)
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        backend = MemoryPeer(reactor.tcpClients[0][2].buildProtocol(None), peer=None)
        d = service.stopService()
        self.assertFalse(client.closed)
        self.assert_answered_with_close(client, backend)
        self.successResultOf(d)

    def test_graceful_shutdown_waits_for_first_request(self):
        """
        A connection accepted just before the shutdown, whose request has
        not arrived yet, is not closed as idle: its request is answered,
        with Connection: close.  One that stays silent is closed when
        C{timeouts.request_head} runs out.
        """
        reactor = MemoryReactorClock()
        service = ProxyService(_config(), reactor)
        service.startService()
        client = MemoryPeer(service.factory.buildProtocol(None), peer=None)
        silent = MemoryPeer(service.factory.buildProtocol(None), peer=None)
        d = service.stopService()
        self.assertFalse(client.closed)
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        backend = MemoryPeer(reactor.tcpClients[0][2].buildProtocol(None), peer=None)
        self.assert_answered_with_close(client, backend)
        self.assertFalse(silent.closed)
        reactor.advance(service.config.timeouts.request_head + 1)
        self.assertTrue(silent.closed)
        silent.close()
        self.successResultOf(d)

    def test_drain_deadline(self):
        """
        Requests still unanswered when shutdown.drain runs out are cut.
        """
        from twistproxy.config import Shutdown

        reactor = MemoryReactorClock()
        service = ProxyService(_config(shutdown=Shutdown(drain=5)), reactor)
        service.startService()
        client = MemoryPeer(service.factory.buildProtocol(None), peer=None)
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        d = service.stopService()
        reactor.advance(4)
        self.assertFalse(client.transport.disconnected)
        reactor.advance(1.5)
        self.assertTrue(client.transport.disconnected)
        client.close()
        self.successResultOf(d)

    def test_reopen_access_log(self):
        """
        reopen_access_log writes to the file at the configured path again
        after it was moved away.
        """
        import os

        path = self.mktemp()
        reactor = MemoryReactorClock()
        service = ProxyService(_config(access_log=AccessLog(path=path)), reactor)
        service.startService()
        os.rename(path, path + ".1")
        service.reopen_access_log()
        client = MemoryPeer(service.factory.buildProtocol(None), peer=None)
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        MemoryPeer(reactor.tcpClients[0][2].buildProtocol(None), peer=None).send(
            b"HTTP/1.1 204 No Content\r\n\r\n")
        reactor.advance(1.0)
        with open(path, "rb") as f:
            self.assertIn(b'"GET / HTTP/1.1" 204', f.read())
        client.close()
        service.stopService()


class OperationsTests(SynchronousTestCase):
    """
    Status and draining from the service object.
    """

    def test_status_and_drain(self):
        """
        status() reports every backend; drain() marks one draining, and an
        unknown name is a KeyError saying whether the group or the backend
        is missing.
        """
        service = ProxyService(_config(), MemoryReactorClock())
        service.drain("app", "127.0.0.1:8001")
        [group] = service.status()["groups"]
        self.assertEqual(group["name"], "app")
        self.assertEqual([(b["name"], b["draining"], b["available"]) for b in group["backends"]],
                         [("127.0.0.1:8001", True, False)])
        service.drain("app", "127.0.0.1:8001", False)
        self.assertTrue(service.status()["groups"][0]["backends"][0]["available"])
        self.assertRaises(KeyError, service.drain, "app", "127.0.0.1:9")
        missing = self.assertRaises(KeyError, service.drain, "nope", "127.0.0.1:8001")
        self.assertEqual(missing.args, ("no upstream group 'nope'",))


class TLSListenerTests(SynchronousTestCase):
    """
    Listeners with a tls table terminate TLS, and their certificates
    reload.
    """

    def service(self, tls_kwargs=None):
        from twistproxy.config import Certificate, ListenerTLS

        self.pem = self.mktemp()
        with open(self.pem, "wb") as f:
            f.write(pem_bundle(issue_certificate("www.example.com", sans=("www.example.com",))))
        tls = ListenerTLS(certificates=(Certificate(self.pem),), hsts=60, **(tls_kwargs or {}))
        config = _config(listeners=(
            Listener("web", "tcp:8443", tls=tls),
            Listener("plain", "tcp:8080", redirect_https=True, https_port=8443),
        ))
        return ProxyService(config, MemoryReactorClock())

    def test_wiring(self):
        """
        The TLS listener's factory wraps an https HTTP factory with HSTS and
        the client subject header; the plain one redirects.
        """
        from twistproxy.tls import TLSServerFactory

        service = self.service()
        tls_factory = service.listeners["web"].factory
        self.assertIsInstance(tls_factory, TLSServerFactory)
        http = tls_factory.wrappedFactory
        self.assertEqual((http.scheme, http.hsts, http.identity_header),
                         (b"https", (b"Strict-Transport-Security", b"max-age=60"),
                          b"X-Client-Subject"))
        self.assertEqual(service.listeners["plain"].factory.redirect_port, 8443)

    def test_certificates(self):
        """
        The certificates each TLS listener presents are listed with their
        names and expiry, for the admin API's status.
        """
        service = self.service()
        [served] = service.certificates()
        self.assertEqual((served["listener"], served["names"], served["source"]),
                         ("web", ["www.example.com"], self.pem))
        self.assertRegex(served["not_after"], r"^\d{4}-\d\d-\d\dT.*\+00:00$")

    def test_reload_keeps_old_on_error(self):
        """
        reload_certificates reads the files again; a broken file is
        reported and the old certificate stays.
        """
        service = self.service()
        self.assertEqual(service.reload_certificates(), [])
        with open(self.pem, "wb") as f:
            f.write(b"garbage")
        [problem] = service.reload_certificates()
        self.assertIn("listeners.web.tls.certificates[0]", problem)

    def test_bad_certificate_names_file(self):
        """
        A certificate file that cannot be used is a configuration error with
        the configuration file's name and the certificate's path.
        """
        from twistproxy.config import Certificate, ListenerTLS

        config = ProxyConfig(
            listeners=(Listener("web", "tcp:8443", tls=ListenerTLS(
                certificates=(Certificate("/nonexistent.pem"),))),),
            upstreams={"app": UpstreamGroup("app", (server("http://127.0.0.1:8001"),))},
            routes=(Route("app"),), source="proxy.toml",
        )
        e = self.assertRaises(ConfigError, ProxyService, config, MemoryReactorClock())
        self.assertEqual((e.source, e.path[:len("listeners.web.tls.certificates")]),
                         ("proxy.toml", "listeners.web.tls.certificates"))


class AdminWiringTests(SynchronousTestCase):
    """
    The admin listener and metrics are part of the service.
    """

    def test_admin_listener_and_metrics(self):
        """
        With an admin table the service listens on its endpoint too, and
        every finished request is counted in the metrics it serves.
        """
        from twistproxy.config import Admin

        reactor = MemoryReactorClock()
        service = ProxyService(_config(admin=Admin()), reactor)
        service.startService()
        self.assertIn((9901, "127.0.0.1"), [(p, i) for p, f, b, i in reactor.tcpServers])
        client = MemoryPeer(service.factory.buildProtocol(None), peer=None)
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        MemoryPeer(reactor.tcpClients[0][2].buildProtocol(None), peer=None).send(
            b"HTTP/1.1 204 No Content\r\n\r\n")
        text = service.metrics.exposition().decode("utf-8")
        self.assertIn('twistproxy_requests_total{', text)
        self.assertIn('status_class="2xx"', text)
        self.assertIn('upstream="app"', text)
        self.assertIn("twistproxy_open_connections 1.0", text)

    def test_no_metrics_without_admin(self):
        """
        Without an admin listener nothing could read the metrics, so none
        are counted (the request path stays free of them).
        """
        self.assertIsNone(ProxyService(_config(), MemoryReactorClock()).metrics)

    def test_bad_admin_endpoint(self):
        """
        An admin endpoint Twisted cannot parse is a configuration error.
        """
        from twistproxy.config import Admin

        e = self.assertRaises(ConfigError, ProxyService,
                              _config(admin=Admin(endpoint="bogus:1")), MemoryReactorClock())
        self.assertEqual(e.path, "admin.endpoint")


class ReloadTests(SynchronousTestCase):
    """
    ProxyService.reload() re-reads the configuration file.
    """

    BASE = """
[listeners.main]
endpoint = "tcp:8080"
[access_log]
path = ""
[upstreams.app]
servers = [{servers}]
"""

    def write(self, servers: str, extra: str = "") -> None:
        with open(self.path, "w") as f:
            f.write(self.BASE.format(servers=servers) + extra)

    def setUp(self):
        from twistproxy.config import load

        self.path = self.mktemp()
        self.write('"http://127.0.0.1:8001"')
        self.reactor = MemoryReactorClock()
        self.service = ProxyService(load(self.path), self.reactor)
        self.service.startService()

    def request(self):
        client = MemoryPeer(self.service.factory.buildProtocol(None), peer=None)
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        return client

    def test_config_loaded(self):
        """
        The service says when its configuration was read: at start, again
        after a reload, and not after a refused one.
        """
        self.assertEqual(self.service.config_loaded, 0)
        self.reactor.advance(30)
        self.write('"http://127.0.0.1:9001"')
        self.assertEqual(self.service.reload(), [])
        self.assertEqual(self.service.config_loaded, 30)
        self.reactor.advance(5)
        with open(self.path, "w") as f:
            f.write("not toml [")
        self.assertTrue(self.service.reload())
        self.assertEqual(self.service.config_loaded, 30)

    def test_new_backends_for_new_requests(self):
        """
        After a reload new requests go to the new backends while a request
        in flight finishes on the old one.
        """
        first = self.request()
        old_backend = MemoryPeer(self.reactor.tcpClients[0][2].buildProtocol(None), peer=None)
        self.write('"http://127.0.0.1:9001"')
        self.assertEqual(self.service.reload(), [])
        self.request()
        self.assertEqual(self.reactor.tcpClients[1][:2], ("127.0.0.1", 9001))
        old_backend.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertTrue(first.received().endswith(b"ok"))
        self.assertEqual([b["name"] for b in self.service.status()["groups"][0]["backends"]],
                         ["127.0.0.1:9001"])

    def test_invalid_file_keeps_running_config(self):
        """
        A file that does not validate is refused, with its problem, and
        the running configuration stays.
        """
        self.write('"ftp://nope"')
        [problem] = self.service.reload()
        self.assertIn("upstreams.app.servers[0]", problem)
        self.request()
        self.assertEqual(self.reactor.tcpClients[0][:2], ("127.0.0.1", 8001))

    def write_listeners(self, listeners: str) -> None:
        with open(self.path, "w") as f:
            f.write(self.BASE.replace('[listeners.main]\nendpoint = "tcp:8080"\n', listeners)
                    .format(servers='"http://127.0.0.1:8001"'))

    def test_listener_added_and_removed(self):
        """
        A listener added by a reload listens at once; one removed stops
        listening (its connections go on), and the admin API's view of the
        listeners follows.
        """
        self.write_listeners('[listeners.main]\nendpoint = "tcp:8080"\n'
                             '[listeners.extra]\nendpoint = "tcp:8090"\n')
        self.assertEqual(self.service.reload(), [])
        self.assertEqual(sorted(self.service.listeners), ["extra", "main"])
        extra = self.service.listeners["extra"]
        self.assertEqual(self.reactor.tcpServers[-1][0], 8090)
        self.assertIs(self.reactor.tcpServers[-1][1], extra.factory)
        main = self.service.listeners["main"]
        self.write_listeners('[listeners.extra]\nendpoint = "tcp:8090"\n')
        self.assertEqual(self.service.reload(), [])
        self.assertEqual(list(self.service.listeners), ["extra"])
        self.assertEqual((main.running, main.port), (False, None))
        self.assertNotIn(main, list(self.service))
        self.assertTrue(extra.running)

    def test_listener_moved(self):
        """
        A listener whose endpoint changes listens on the new one before the
        old one stops.
        """
        old = self.service.listeners["main"]
        self.write_listeners('[listeners.main]\nendpoint = "tcp:8081"\n')
        self.assertEqual(self.service.reload(), [])
        self.assertEqual((old.running, old.port), (False, None))
        new = self.service.listeners["main"]
        self.assertEqual(self.reactor.tcpServers[-1][0], 8081)
        self.assertTrue(new.running)
        self.assertIn(new, list(self.service))

    def test_listener_settings_changed_in_place(self):
        """
        A listener whose endpoint stays but whose settings change keeps its
        socket: new connections are built by a factory with the new
        settings.
        """
        port = self.service.listeners["main"].port
        self.write_listeners('[listeners.main]\nendpoint = "tcp:8080"\nh2c = true\n')
        self.assertEqual(self.service.reload(), [])
        self.assertIs(self.service.listeners["main"].port, port)
        self.assertTrue(self.service.listeners["main"].running)
        self.assertTrue(port.factory.h2c)
        self.assertEqual(len(self.reactor.tcpServers), 1)

    def test_route_by_listener_added(self):
        """
        A reload that brings the first route with C{listeners} gives each
        HTTP listener, unchanged though it is, a factory that names it, so
        that the route sees which listener took a request; and back.
        """
        port = self.service.listeners["main"].port
        self.assertEqual(self.service.listeners["main"].factory.listener, "")
        self.write('"http://127.0.0.1:8001"',
                   '[[routes]]\nlisteners = ["main"]\nupstream = "app"\n')
        self.assertEqual(self.service.reload(), [])
        self.assertIs(self.service.listeners["main"].port, port)
        self.assertEqual(port.factory.listener, "main")
        self.write('"http://127.0.0.1:8001"')
        self.assertEqual(self.service.reload(), [])
        self.assertEqual(port.factory.listener, "")

    def test_listener_that_cannot_listen_refused(self):
        """
        A new listener that cannot listen (its port is taken) makes the
        reload fail as a whole: the listeners started for it stop again and
        the running configuration stays.
        """
        def listen(port, factory, backlog=50, interface=""):
            if port == 8091:
                raise OSError(98, "Address already in use")
            return listen_tcp(port, factory, backlog, interface)

        listen_tcp, self.reactor.listenTCP = self.reactor.listenTCP, listen
        config = self.service.config
        self.write_listeners('[listeners.main]\nendpoint = "tcp:8080"\n'
                             '[listeners.a]\nendpoint = "tcp:8090"\n'
                             '[listeners.b]\nendpoint = "tcp:8091"\n')
        [problem] = self.service.reload()
        self.assertIn("listeners.b.endpoint: cannot listen on 'tcp:8091'", problem)
        self.assertIs(self.service.config, config)
        self.assertEqual(list(self.service.listeners), ["main"])
        started_a = [p for p in self.reactor.tcpServers if p[0] == 8090]
        self.assertEqual(len(started_a), 1)
        self.assertEqual(len([s for s in self.service if isinstance(s, type(
            self.service.listeners["main"]))]), 1)

    def test_admin_change_refused(self):
        """
        Admin listener changes still need a restart: such a file is
        refused.
        """
        with open(self.path, "a") as f:
            f.write('[admin]\nendpoint = "tcp:9901"\n')
        [problem] = self.service.reload()
        self.assertIn("admin: changed: needs a restart", problem)

    def test_drained_backend_stays_drained(self):
        """
        A backend the operator drained stays drained across a reload.
        """
        self.service.drain("app", "127.0.0.1:8001")
        self.write('"http://127.0.0.1:8001", "http://127.0.0.1:8002"')
        self.assertEqual(self.service.reload(), [])
        states = {b["name"]: b["draining"] for b in self.service.status()["groups"][0]["backends"]}
        self.assertEqual(states, {"127.0.0.1:8001": True, "127.0.0.1:8002": False})

    def test_timeouts_apply_to_new_requests(self):
        """
        Changed timeouts apply to the listeners' new requests.
        """
        self.write('"http://127.0.0.1:8001"', "[timeouts]\nupstream_response = 3\n")
        self.assertEqual(self.service.reload(), [])
        self.assertEqual(self.service.factory.timeouts.upstream_response, 3.0)


class StreamMetricsTests(SynchronousTestCase):
    """
    The metrics count the TCP and UDP listeners' connections and sessions,
    and the HTTP backends' pools.
    """

    def test_tcp_and_udp_listeners_counted(self):
        """
        A relayed TCP connection that ends is counted with its bytes; one
        over the listener's C{max_connections} is closed at once, counted
        as rejected and, once closed, as a connection with status 503; a
        UDP session is open, then counted when it ends; a datagram over
        C{max_sessions} is dropped.
        """
        from twisted.internet.address import IPv4Address
        from twisted.internet.error import ConnectionDone
        from twisted.internet.testing import StringTransport
        from twisted.python.failure import Failure

        from tests.test_stream_udp import UDPReactor
        from twistproxy.config import parse

        reactor = UDPReactor()
        service = ProxyService(parse(_COUNTED_TCP.format(1) + """
[listeners.dns]
endpoint = "udp:5353"
protocol = "udp"
upstream = "resolvers"
max_sessions = 1
[upstreams.resolvers]
servers = ["udp://10.0.0.1:53"]
"""), reactor)
        service.startService()
        relays = service.listeners["db"].factory
        client = IPv4Address("TCP", "192.0.2.7", 40000)
        relay = relays.buildProtocol(client)
        relay.makeConnection(StringTransport(peerAddress=client))
        refused = relays.buildProtocol(client)
        refused.makeConnection(StringTransport(peerAddress=client))
        self.assertTrue(refused.transport.disconnecting)
        refused.connectionLost(Failure(ConnectionDone()))
        _, _, connector, _, _ = reactor.tcpClients[-1]
        upstream = connector.buildProtocol(None)
        upstream.makeConnection(StringTransport())
        relay.dataReceived(b"ping")
        upstream.dataReceived(b"pong!")
        dns = service.listeners["dns"].factory
        dns.datagramReceived(b"query", ("192.0.2.8", 1000))
        dns.datagramReceived(b"other", ("192.0.2.9", 1000))
        samples = _samples(service)
        db, udp = (("listener", "db"),), (("listener", "dns"),)
        self.assertEqual(samples[("twistproxy_stream_open_connections",
                                  db + (("protocol", "tcp"),))], 1)
        self.assertEqual(samples[("twistproxy_stream_open_connections",
                                  udp + (("protocol", "udp"),))], 1)
        self.assertEqual(samples[("twistproxy_stream_rejected_connections_total", db)], 1)
        self.assertEqual(samples[("twistproxy_udp_dropped_datagrams_total", udp)], 1)
        upstream.connectionLost(Failure(ConnectionDone()))
        relay.connectionLost(Failure(ConnectionDone()))
        dns.abort_all()
        samples = _samples(service)
        self.assertEqual(samples[("twistproxy_stream_open_connections",
                                  db + (("protocol", "tcp"),))], 0)
        self.assertEqual(samples[("twistproxy_stream_connections_total",
                                  db + (("protocol", "tcp"), ("status", "200")))], 1)
        self.assertEqual(samples[("twistproxy_stream_connections_total",
                                  db + (("protocol", "tcp"), ("status", "503")))], 1)
        self.assertEqual(samples[("twistproxy_stream_connections_total",
                                  udp + (("protocol", "udp"), ("status", "200")))], 1)
        self.assertEqual(samples[("twistproxy_stream_received_bytes_total", db)], 4)
        self.assertEqual(samples[("twistproxy_stream_sent_bytes_total", db)], 5)
        self.assertEqual(samples[("twistproxy_stream_received_bytes_total", udp)], 5)

    def test_stream_counters_kept_over_reload(self):
        """
        A reload that replaces a TCP listener's factory (same endpoint, new
        C{max_connections}) keeps the old one's rejections in
        C{twistproxy_stream_rejected_connections_total}: a counter never
        goes down; the new factory's rejections add to them.
        """
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        from twistproxy.config import load

        path = self.mktemp()
        with open(path, "w") as f:
            f.write(_COUNTED_TCP.format(1))
        service = ProxyService(load(path), MemoryReactorClock())
        service.startService()
        client = IPv4Address("TCP", "192.0.2.7", 40000)

        def fill(relays, open_):
            for _ in range(open_):
                relays.buildProtocol(client).makeConnection(StringTransport(peerAddress=client))
            refused = relays.buildProtocol(client)
            refused.makeConnection(StringTransport(peerAddress=client))
            self.assertTrue(refused.transport.disconnecting)

        old = service.listeners["db"].factory
        fill(old, 1)
        with open(path, "w") as f:
            f.write(_COUNTED_TCP.format(2))
        self.assertEqual(service.reload(), [])
        new = service.listeners["db"].port.factory
        self.assertIsNot(new, old)
        rejected = ("twistproxy_stream_rejected_connections_total", (("listener", "db"),))
        self.assertEqual(_samples(service)[rejected], 1)
        fill(new, 2)
        self.assertEqual(_samples(service)[rejected], 2)

    def test_pool_sizes(self):
        """
        Each HTTP backend's pooled connections are
        C{twistproxy_backend_pool_connections}: one while a request is sent.
        """
        from twistproxy.config import Admin

        reactor = MemoryReactorClock()
        service = ProxyService(_config(admin=Admin()), reactor)
        service.startService()
        pool = (("backend", "127.0.0.1:8001"), ("upstream", "app"))
        self.assertEqual(_samples(service)[("twistproxy_backend_pool_connections", pool)], 0)
        MemoryPeer(service.factory.buildProtocol(None), peer=None).send(
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(_samples(service)[("twistproxy_backend_pool_connections", pool)], 1)


# With the metrics on, a tcp listener "db" whose max_connections is the
# format's argument.
_COUNTED_TCP = """
[admin]
[access_log]
path = ""
[listeners.db]
endpoint = "tcp:5433"
protocol = "tcp"
upstream = "pg"
max_connections = {}
[upstreams.pg]
servers = ["tcp://127.0.0.1:5432"]
"""


def _samples(service: ProxyService):
    from tests.test_metrics import _samples as samples

    return samples(service.metrics)


class RateLimitMetricsTests(SynchronousTestCase):
    """
    Rate-limit rejections show in the metrics.
    """

    def test_rate_limited_requests_counted(self):
        """
        A request over a listener's rate limit is answered 429 by the proxy
        and counted under C{twistproxy_proxy_answers_total} with reason
        C{rate_limited}, and as a 4xx request.
        """
        from twistproxy.config import parse

        reactor = MemoryReactorClock()
        service = ProxyService(parse("""
[admin]
[access_log]
path = ""
[listeners.web]
endpoint = "tcp:8080"
filters = [{ name = "rate_limit", rate = 1, burst = 1 }]
[upstreams.app]
servers = ["http://127.0.0.1:8001"]
[[routes]]
name = "all"
upstream = "app"
"""), reactor)
        service.startService()
        client = MemoryPeer(service.listeners["web"].factory.buildProtocol(None), peer=None)
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        MemoryPeer(reactor.tcpClients[0][2].buildProtocol(None), peer=None).send(
            b"HTTP/1.1 204 No Content\r\n\r\n")
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        samples = _samples(service)
        self.assertEqual(samples[("twistproxy_proxy_answers_total",
                                  (("reason", "rate_limited"),))], 1)
        self.assertEqual(samples[("twistproxy_requests_total",
                                  (("route", "-"), ("status_class", "4xx"), ("upstream", "-")))],
                         1)


class TLSOffloadedTests(SynchronousTestCase):
    """
    A plain listener with C{tls_offloaded}, behind a load balancer that
    terminates TLS.
    """

    def test_tells_backends_https(self):
        """
        Its requests are forwarded as an ssl: listener's are, with
        X-Forwarded-Proto https; the other plain listeners still say http.
        """
        config = _config(listeners=(
            Listener("plain", "tcp:8080"), Listener("behind", "tcp:8081", tls_offloaded=True),
        ))
        service = ProxyService(config, MemoryReactorClock())
        self.assertEqual(service.listeners["plain"].factory.scheme, b"http")
        self.assertEqual(service.listeners["behind"].factory.scheme, b"https")
