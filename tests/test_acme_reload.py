"""
Tests for reloading a configuration whose C{[acme]} section or listeners'
C{tls.acme} names changed (L{twistproxy.service.ProxyService.reload}): the
names added are served (a stand-in first) and renewed, those removed are
no longer renewed, without a restart.
"""

from __future__ import annotations

import os

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tests.test_acme import acme_toml
from twistproxy.config import load
from twistproxy.service import ProxyService


class ACMEReloadTests(SynchronousTestCase):
    """
    A reload takes the new ACME settings and names.
    """

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.storage = os.path.join(self.directory, "acme")
        self.path = os.path.join(self.directory, "proxy.toml")

    def write(self, text: str) -> None:
        with open(self.path, "w") as f:
            f.write(text)

    def service(self, text: str) -> ProxyService:
        self.write(text)
        service = ProxyService(load(self.path), MemoryReactorClock())
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def names(self, service):
        return [renewal.names for renewal in service.renewals]

    def served(self, service):
        return sorted(name for c in service.certificates() for name in c["names"])

    def test_names_added_and_removed(self):
        """
        A reload that replaces a listener's names renews the new ones
        (planned at once for their stand-in, served already) and stops
        the renewal of the old ones.
        """
        service = self.service(acme_toml(self.storage))
        [old] = service.renewals
        self.assertEqual(service.reload(), [])
        self.assertEqual(service.renewals, [old])
        self.write(acme_toml(self.storage, '["api.example.com", "www.example.com"]'))
        self.assertEqual(service.reload(), [])
        self.assertEqual(self.names(service), [("api.example.com", "www.example.com")])
        self.assertIsNone(old._call)
        [new] = service.renewals
        self.assertIsNotNone(new._call)
        self.assertIn("api.example.com", self.served(service))
        self.write(acme_toml(self.storage, '["api.example.com"]'))
        self.assertEqual(service.reload(), [])
        self.assertNotIn("www.example.com", self.served(service))

    def test_route_certificate_added(self):
        """
        A reload that gives a route C{acme = true} serves its hosts' new
        certificate (a stand-in first) and renews it; the listener's goes
        on as it was.  One that takes it away stops both.
        """
        service = self.service(acme_toml(self.storage))
        [old] = service.renewals
        self.write(acme_toml(self.storage) + '[[routes]]\nhosts = ["shop.example.com"]\n'
                   'upstream = "app"\nacme = true\n[[routes]]\nupstream = "app"\n')
        self.assertEqual(service.reload(), [])
        self.assertEqual(self.names(service), [("www.example.com",), ("shop.example.com",)])
        self.assertIs(service.renewals[0], old)
        self.assertIsNotNone(service.renewals[1]._call)
        self.assertIn("shop.example.com", self.served(service))
        self.write(acme_toml(self.storage))
        self.assertEqual(service.reload(), [])
        self.assertEqual(self.names(service), [("www.example.com",)])
        self.assertNotIn("shop.example.com", self.served(service))

    def test_same_names_go_on(self):
        """
        A reload that changes other ACME names but not these keeps their
        renewal as it was (its failures, its next try).
        """
        two = acme_toml(self.storage) + """
[listeners.other]
endpoint = "tcp:9443"
tls.acme = ["other.example.com"]
"""
        service = self.service(acme_toml(self.storage))
        [www] = service.renewals
        www.failures = 3
        self.write(two)
        self.assertEqual(service.reload(), [])
        self.assertIs(service.renewals[0], www)
        self.assertEqual(self.names(service), [("www.example.com",), ("other.example.com",)])

    def test_ca_settings_changed(self):
        """
        New CA settings (here the retry) replace every renewal, so that
        each orders with them.
        """
        service = self.service(acme_toml(self.storage))
        [old] = service.renewals
        self.write(acme_toml(self.storage, extra="retry = 5"))
        self.assertEqual(service.reload(), [])
        [new] = service.renewals
        self.assertIsNot(new, old)
        self.assertEqual(new._retry, 5.0)
        self.assertIsNone(old._call)

    def test_on_demand_turned_on(self):
        """
        A reload that adds C{[acme.on_demand]} has the running TLS
        listener report unknown names to it.
        """
        service = self.service(acme_toml(self.storage))
        self.assertIsNone(service.acme.on_demand)
        self.write(acme_toml(self.storage, extra='on_demand = { allow = ["a.example.org"] }'))
        self.assertEqual(service.reload(), [])
        seen = []
        service.acme.on_demand.seen = seen.append
        factory, _, _ = service.built.tls["secure"]
        factory.server_tls.store.unknown(b"a.example.org")
        self.assertEqual(seen, [b"a.example.org"])

    def test_acme_added_needs_restart(self):
        """
        Adding C{[acme]} to a running proxy without one is refused (its
        HTTP listeners were built without the challenge answers), and the
        running configuration stays.
        """
        plain = acme_toml(self.storage).split("[listeners.web]")[1]
        service = self.service("[listeners.web]" + plain.split("[listeners.secure]")[0] + """
[upstreams.app]
servers = ["http://127.0.0.1:8001"]
""")
        self.write(acme_toml(self.storage))
        [problem] = service.reload()
        self.assertIn("acme", problem)
        self.assertIn("restart", problem)
        self.assertEqual(service.renewals, [])


class NamesChangedTests(SynchronousTestCase):
    """
    A certificate stored for other names than those configured now is
    renewed at once; a stand-in for them is made anew, the CA's is served
    until its renewal lands.
    """

    def test_renewal_due_at_once(self):
        """
        A renewal whose certificate lacks a name, or has one more, is due
        at once; one for exactly its names (in any case) at two thirds.
        """
        from twisted.internet.task import Clock

        from tests.test_acme import DAY, START, issued
        from twistproxy.acme.schedule import Renewal

        clock = Clock()
        clock.advance(START.timestamp())
        for names, due in [(("www.example.com",), START.timestamp() + 60 * DAY),
                           (("WWW.example.com",), START.timestamp() + 60 * DAY),
                           (("www.example.com", "api.example.com"), clock.seconds()),
                           (("api.example.com",), clock.seconds())]:
            renewal = Renewal(clock, names, issued, lambda: None, lambda: None, 60.0,
                              random_jitter=lambda: 0.0)
            renewal.start()
            self.assertEqual(renewal.due, due, names)
            renewal.stop()

    def test_stand_in_made_anew(self):
        """
        L{store.ensure} replaces a stand-in for other names, and keeps a
        certificate from the CA whatever its names.
        """
        import datetime

        from cryptography.hazmat.primitives import serialization

        from tests.test_acme import START, issued
        from twistproxy.acme import store
        from twistproxy.config import ACME

        acme = ACME(email="ops@example.com", storage=self.mktemp())
        filename = store.ensure(acme, ("www.example.com",), "p", START).cert
        store.ensure(acme, ("www.example.com", "api.example.com"), "p", START)
        self.assertTrue(store.holds_exactly(store.read_certificate(filename),
                                            ("api.example.com", "www.example.com")))
        ca = issued(start=START - datetime.timedelta(days=1))
        store.write_atomically(filename, store.key_pem(store.new_key("ecdsa-p256")) +
                               ca.public_bytes(serialization.Encoding.PEM))
        store.ensure(acme, ("www.example.com", "api.example.com"), "p", START)
        self.assertEqual(store.read_certificate(filename), ca)
