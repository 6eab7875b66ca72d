"""
Tests for L{twistproxy.acme.ondemand}: certificates ordered for names seen
in SNI, only as C{[acme.on_demand]} allows (an allow-list, an ask URL),
rate-limited, on a fake clock; the TLS listener's hook that reports names
no certificate holds; and the listeners serving what was ordered.
"""

from __future__ import annotations

import os
import time

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from tests.test_acme import acme_toml
from twistproxy import build
from twistproxy.acme import store
from twistproxy.acme.client import ACMEError
from twistproxy.acme.ondemand import OnDemand, allowed
from twistproxy.config import ACME, ConfigError, parse
from twistproxy.config.values import Certificate, ListenerTLS, OnDemand as OnDemandSettings
from twistproxy.testing import cert_pem, issue_certificate, key_pem, pem_bundle
from twistproxy.tls import CertificateStore

HOUR = 3600.0


class AskResource(Resource):
    """
    An ask URL: C{200} for the names in C{yes}, C{403} otherwise; counts
    the questions.
    """

    isLeaf = True

    def __init__(self, yes=()):
        super().__init__()
        self.yes = set(yes)
        self.asked = []

    def render_GET(self, request):
        name = request.args[b"domain"][0].decode()
        self.asked.append(name)
        request.setResponseCode(200 if name in self.yes else 403)
        return b"ok" if name in self.yes else b"no"


class OnDemandTests(SynchronousTestCase):
    """
    L{OnDemand.seen}: which names are ordered, how often.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(time.time())
        self.orders = []
        self.issued = []
        self.outcome = None

    def make(self, allow=(), ask="", rate=10, ask_resource=None):
        from treq.testing import StubTreq

        storage = self.mktemp()
        os.makedirs(storage)
        acme = ACME(email="ops@example.com", storage=storage, retry=60.0,
                    on_demand=OnDemandSettings(allow=tuple(allow), ask=ask, rate=rate))
        client = StubTreq(ask_resource) if ask_resource is not None else None
        return OnDemand(self.clock, acme, self.issue, self.issued.append, client)

    def issue(self, names):
        self.orders.append(names)
        if self.outcome == "fail":
            return fail(RuntimeError("the CA said no"))
        return self.outcome if self.outcome is not None else succeed("file")

    def test_patterns(self):
        """
        C{allow} holds names and wildcards of one label.
        """
        patterns = ("shop.example.net", "*.customers.example.com")
        self.assertTrue(allowed(patterns, "shop.example.net"))
        self.assertTrue(allowed(patterns, "a.customers.example.com"))
        self.assertFalse(allowed(patterns, "a.b.customers.example.com"))
        self.assertFalse(allowed(patterns, "customers.example.com"))
        self.assertFalse(allowed(patterns, "example.net"))

    def test_allowed_name_ordered_once(self):
        """
        A name in C{allow} is ordered at its first handshake, then served
        (installed); later handshakes order nothing more.
        """
        on_demand = self.make(allow=["*.example.com"])
        on_demand.seen(b"Shop.Example.com.")
        self.assertEqual(self.orders, [("shop.example.com",)])
        self.assertEqual(self.issued, ["shop.example.com"])
        self.assertEqual(on_demand.names, ["shop.example.com"])
        on_demand.seen(b"shop.example.com")
        self.assertEqual(len(self.orders), 1)

    def test_one_order_at_a_time(self):
        """
        Handshakes for a name whose order is under way order nothing more.
        """
        self.outcome = Deferred()
        on_demand = self.make(allow=["shop.example.com"])
        on_demand.seen(b"shop.example.com")
        on_demand.seen(b"shop.example.com")
        self.assertEqual(len(self.orders), 1)
        self.outcome.callback("file")
        self.assertEqual(self.issued, ["shop.example.com"])

    def test_not_allowed(self):
        """
        Without C{ask}, a name outside C{allow} is never ordered.
        """
        on_demand = self.make(allow=["shop.example.com"])
        for name in (b"evil.example.org", b"other.example.com"):
            on_demand.seen(name)
        self.clock.advance(HOUR)
        on_demand.seen(b"evil.example.org")
        self.assertEqual(self.orders, [])

    def test_bad_names(self):
        """
        SNI that is no host name (not ASCII, an empty label, a wildcard,
        odd characters) is ignored.
        """
        on_demand = self.make(allow=["*.example.com"])
        for name in (b"\xff.example.com", b"a..example.com", b"*.example.com",
                     b"a b.example.com", b""):
            on_demand.seen(name)
        self.assertEqual(self.orders, [])

    def test_ask(self):
        """
        A name outside C{allow} is ordered when the ask URL answers C{200}
        to C{GET ?domain=NAME}, not when it answers otherwise; answers are
        kept C{ask_cache} seconds, then asked again.
        """
        resource = AskResource(yes=["yes.example.org"])
        on_demand = self.make(ask="http://ask.invalid/check", ask_resource=resource)
        on_demand.seen(b"yes.example.org")
        on_demand.seen(b"no.example.org")
        self.assertEqual(self.orders, [("yes.example.org",)])
        self.assertEqual(resource.asked, ["yes.example.org", "no.example.org"])
        on_demand.seen(b"no.example.org")
        self.assertEqual(len(resource.asked), 2)
        self.clock.advance(301)
        resource.yes.add("no.example.org")
        on_demand.seen(b"no.example.org")
        self.assertEqual(self.orders, [("yes.example.org",), ("no.example.org",)])

    def test_ask_timeout(self):
        """
        An ask URL that does not answer within C{ask_timeout} seconds
        refuses the name for now; it is asked again after C{retry}.
        """
        class Silent:
            def get(self, url, **kwargs):
                self.url = url
                return Deferred()

        silent = Silent()
        on_demand = self.make(ask="http://ask.invalid/check?key=1")
        on_demand._client = silent
        on_demand.seen(b"slow.example.org")
        self.assertEqual(silent.url, "http://ask.invalid/check?key=1&domain=slow.example.org")
        self.clock.advance(5)
        self.assertEqual(self.orders, [])
        silent.url = None
        on_demand.seen(b"slow.example.org")
        self.assertIsNone(silent.url)
        self.clock.advance(60)
        on_demand.seen(b"slow.example.org")
        self.assertIsNotNone(silent.url)

    def test_rate(self):
        """
        At most C{rate} orders start per hour; a name past the limit is
        ordered when seen once the hour has passed.
        """
        on_demand = self.make(allow=["*.example.com"], rate=2)
        for name in (b"a.example.com", b"b.example.com", b"c.example.com"):
            on_demand.seen(name)
            self.clock.advance(60)
        self.assertEqual(len(self.orders), 2)
        on_demand.seen(b"c.example.com")
        self.assertEqual(len(self.orders), 2)
        self.clock.advance(HOUR)
        on_demand.seen(b"c.example.com")
        self.assertEqual(self.orders[-1], ("c.example.com",))

    def ordered_again_after(self, on_demand, wait: float) -> None:
        """
        Check that C{a.example.com}, seen again, is not ordered before
        C{wait} seconds from now, and is at C{wait}.
        """
        before = len(self.orders)
        self.clock.advance(wait - 1)
        on_demand.seen(b"a.example.com")
        self.assertEqual(len(self.orders), before)
        self.clock.advance(1)
        on_demand.seen(b"a.example.com")
        self.assertEqual(len(self.orders), before + 1)

    def test_failure_backs_off(self):
        """
        A failed order is not tried again for that name before C{retry}
        seconds, then twice as long; failed orders count in the rate.
        """
        self.outcome = "fail"
        on_demand = self.make(allow=["*.example.com"])
        on_demand.seen(b"a.example.com")
        self.ordered_again_after(on_demand, 60)
        self.ordered_again_after(on_demand, 120)
        self.assertEqual(self.issued, [])

    def test_failure_waits_as_the_ca_asked(self):
        """
        A failed order whose CA asked to wait longer than C{retry} (its
        C{Retry-After} on a rate limit) is not tried again for that name
        before then.
        """
        self.outcome = fail(ACMEError("rateLimited", retry_after=3600.0))
        on_demand = self.make(allow=["*.example.com"])
        on_demand.seen(b"a.example.com")
        self.outcome = None
        self.ordered_again_after(on_demand, 3600)

    def test_stored_served_without_order(self):
        """
        A valid certificate from the CA already in the storage directory
        (an earlier run's) is served without ordering.
        """
        on_demand = self.make(allow=["shop.example.com"])
        ca = issue_certificate("CA", ca=True)
        pair = issue_certificate("shop.example.com", sans=["shop.example.com"], issuer=ca)
        store.write_atomically(store.certificate_file(on_demand.acme, ("shop.example.com",)),
                               pem_bundle(pair))
        on_demand.seen(b"shop.example.com")
        self.assertEqual(self.orders, [])
        self.assertEqual(self.issued, ["shop.example.com"])


class OnDemandConfigTests(SynchronousTestCase):
    """
    The C{[acme.on_demand]} table.
    """

    def test_off_by_default(self):
        """
        Without the table nothing is ordered on demand.
        """
        self.assertIsNone(parse(acme_toml(self.mktemp())).acme.on_demand)

    def test_needs_allow_or_ask(self):
        """
        The table must say which names may be ordered.
        """
        with self.assertRaises(ConfigError) as raised:
            parse(acme_toml(self.mktemp(), extra="on_demand = { rate = 5 }"))
        self.assertIn("acme.on_demand", str(raised.exception))
        self.assertIn("allow", str(raised.exception))

    def test_settings(self):
        """
        Names, wildcards, an ask URL and the limits are read.
        """
        config = parse(acme_toml(self.mktemp(), extra=(
            'on_demand = { allow = ["*.Customers.example.com"], '
            'ask = "http://127.0.0.1:5555/ok", ask_timeout = 2, ask_cache = 60, rate = 3 }')))
        self.assertEqual(config.acme.on_demand, OnDemandSettings(
            allow=("*.customers.example.com",), ask="http://127.0.0.1:5555/ok",
            ask_timeout=2.0, ask_cache=60.0, rate=3))

    def test_ask_is_a_url(self):
        """
        C{ask} must be an http(s) URL.
        """
        with self.assertRaises(ConfigError) as raised:
            parse(acme_toml(self.mktemp(), extra='on_demand = { ask = "ask.example" }'))
        self.assertIn("acme.on_demand.ask", str(raised.exception))


class _Connection:
    # What the server-name callback uses of an OpenSSL connection.
    def __init__(self, name):
        self.name = name
        self.context = None

    def get_servername(self):
        return self.name

    def set_context(self, context):
        self.context = context


class UnknownNameHookTests(SynchronousTestCase):
    """
    L{CertificateStore.unknown} hears of the SNI names no certificate
    holds, and the listeners serve what was ordered on demand.
    """

    def write(self, name, data):
        path = os.path.join(self.directory, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def setUp(self):
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        pair = issue_certificate("www.example.com", sans=["www.example.com", "*.example.com"])
        self.tls = ListenerTLS(certificates=(Certificate(cert=self.write("a.pem",
                                                                         pem_bundle(pair))),))

    def test_unknown_names_reported(self):
        """
        A handshake for a name no certificate holds, exactly or by a
        wildcard, gets the default and is reported; others are not; a
        reloaded store keeps the hook.
        """
        from twistproxy.tls import ServerTLS

        server_tls = ServerTLS(CertificateStore.load(self.tls, "p"))
        heard = []
        server_tls.store.unknown = heard.append
        for name in (b"www.example.com", b"shop.example.com", b"other.example.org", None):
            connection = _Connection(name)
            server_tls.store._select(connection)
            self.assertIs(connection.context, server_tls.store.default.context)
        self.assertEqual(heard, [b"other.example.org"])
        server_tls.reload(self.tls, "p")
        server_tls.store._select(_Connection(b"again.example.org"))
        self.assertEqual(heard, [b"other.example.org", b"again.example.org"])

    def test_listeners_serve_ordered(self):
        """
        Once a name is ordered, the listeners with ACME certificates serve
        its certificate to handshakes that ask for it (after a reload of
        their certificates), and report no other name for it.
        """
        config = parse(acme_toml(self.mktemp(), extra='on_demand = { allow = ["*.shop.test"] }'))
        from twisted.internet.testing import MemoryReactorClock

        reactor = MemoryReactorClock()
        _, forwarder = build.pipeline(config, reactor, None)
        built = build.ListenerBuilder(reactor, config, forwarder)
        built.on_demand = OnDemand(reactor, config.acme, lambda names: succeed(""),
                                   lambda name: None)
        for listener in config.listeners:
            built.factory(listener)
        factory, _, _ = built.tls["secure"]
        store_now = factory.server_tls.store
        self.assertEqual(store_now.unknown, built._seen)
        pair = issue_certificate("a.shop.test", sans=["a.shop.test"],
                                 issuer=issue_certificate("CA", ca=True))
        store.write_atomically(store.certificate_file(config.acme, ("a.shop.test",)),
                               key_pem(pair[0]) + cert_pem(pair[1]))
        built.on_demand.names.append("a.shop.test")
        built.refresh_acme()
        factory.reload(*built.tls["secure"][1:])
        served = factory.server_tls.store.certificate_for(b"a.shop.test")
        self.assertEqual(served.names, ("a.shop.test",))
