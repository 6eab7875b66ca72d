"""
Tests for ACME DNS-01 through a DNS provider plugin
(L{twistproxy.interfaces.IDNSProvider}, C{[acme.dns]}): the contract kit of
L{twistproxy.testing.dns} on its memory provider, the settings, which
records go to the provider, and an order whose wildcard a provider
validates.
"""

from __future__ import annotations

import os

from treq.testing import StubTreq
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.plugin import IPlugin
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from twistproxy import build
from twistproxy.acme.challenges import Challenges
from twistproxy.acme.client import Issuer
from twistproxy.config import ConfigError, parse
from twistproxy.config.parse import acme_challenge_types
from twistproxy.interfaces import IDNSProviderFactory
from twistproxy.testing import DNSProviderContractMixin, MemoryDNSProvider

from tests.test_acme import START, acme_toml
from tests.test_acme_client import BASE, FakeCA

# The [acme.dns] table of a provider for example.org, named by this
# module's factory.
PROVIDER = """
[acme.dns]
provider = "tests.test_acme_dns_provider.factory"
zones = ["example.org"]
token = "s3cret"
"""


@implementer(IDNSProviderFactory, IPlugin)
class _Factory:
    """
    Makes L{MemoryDNSProvider}s, keeping the last one and its options;
    refuses options without C{token}.
    """

    name = "memory-test"
    help = "TXT records in a dict, for these tests."

    def fromConfig(self, reactor, options, path):
        if "token" not in options:
            raise ConfigError(f"{path}.token", "is required")
        self.options = dict(options)
        self.provider = MemoryDNSProvider()
        return self.provider


factory = _Factory()


class MemoryDNSProviderContractTests(DNSProviderContractMixin, TestCase):
    """
    L{MemoryDNSProvider} keeps the contract of L{IDNSProvider} that
    L{DNSProviderContractMixin} checks.
    """

    def makeProvider(self):
        return MemoryDNSProvider()

    def published(self, provider, name):
        return provider.records.get(name, [])


class _Texts:
    """
    The DNS front's run-time TXT records, as far as L{build.dns01_records}
    uses them.
    """

    def __init__(self):
        self.records = {}

    def set(self, name, values):
        self.records[name] = list(values)
        return succeed(None)

    def remove(self, name):
        self.records.pop(name, None)
        return succeed(True)


class ProviderSettingsTests(SynchronousTestCase):
    """
    C{[acme.dns]}: a provider plugin, its zones and its own options.
    """

    def config(self, names: str = '["*.example.org"]', provider: str = PROVIDER):
        return parse(acme_toml(os.path.join(self.mktemp(), "acme"), names) + provider)

    def test_settings(self) -> None:
        """
        The table names the provider and its zones; its other keys are the
        provider's options.  A wildcard in one of its zones is validated by
        DNS-01 without a zone of C{[dns]}; a name outside by the other
        types only.
        """
        config = self.config()
        self.assertEqual(config.acme.dns.provider, "tests.test_acme_dns_provider.factory")
        self.assertEqual(config.acme.dns.zones, ("example.org",))
        self.assertEqual(dict(config.acme.dns.options), {"token": "s3cret"})
        self.assertEqual(acme_challenge_types("*.example.org", config.listeners, config.acme,
                                              config.dns), ("dns-01",))
        self.assertEqual(acme_challenge_types("www.example.net", config.listeners,
                                              config.acme, config.dns),
                         ("http-01", "tls-alpn-01"))

    def test_wildcard_outside_refused(self) -> None:
        """
        A wildcard outside the provider's zones (and every zone of
        C{[dns]}) is refused, the message naming both places.
        """
        with self.assertRaises(ConfigError) as raised:
            self.config('["*.example.net"]')
        self.assertEqual(raised.exception.path, "listeners.secure.tls.acme[0]")
        self.assertIn("acme.dns", raised.exception.problem)

    def test_required(self) -> None:
        """
        C{provider} and C{zones} are required, and C{zones} must list one.
        """
        for table, path in [('[acme.dns]\nzones = ["example.org"]\n', "acme.dns.provider"),
                            ('[acme.dns]\nprovider = "x.y"\n', "acme.dns.zones"),
                            ('[acme.dns]\nprovider = "x.y"\nzones = []\n', "acme.dns.zones")]:
            with self.assertRaises(ConfigError) as raised:
                self.config(provider=table)
            self.assertEqual(raised.exception.path, path)

    def test_check_builds_provider(self) -> None:
        """
        C{check} (L{build.validate}) finds the provider and has it check
        its options: an unknown provider, or options it refuses, fail at
        their path.
        """
        build.validate(self.config())
        self.assertEqual(factory.options, {"token": "s3cret"})
        for table, path in [
                (PROVIDER.replace("tests.test_acme_dns_provider.factory", "nowhere"),
                 "acme.dns.provider"),
                (PROVIDER.replace('token = "s3cret"\n', ""), "acme.dns.token")]:
            with self.assertRaises(ConfigError) as raised:
                build.validate(self.config(provider=table))
            self.assertEqual(raised.exception.path, path)

    def test_records_go_to_provider_in_its_zones(self) -> None:
        """
        The TXT records of names in the provider's zones are set and
        removed through it; the others through the DNS front's.
        """
        texts = _Texts()
        set_txt, remove_txt = build.dns01_records(self.config().acme, Clock(), texts)
        set_txt("_acme-challenge.example.org", ["a"])
        set_txt("_acme-challenge.example.net", ["b"])
        self.assertEqual(factory.provider.records, {"_acme-challenge.example.org": ["a"]})
        self.assertEqual(texts.records, {"_acme-challenge.example.net": ["b"]})
        remove_txt("_acme-challenge.example.org")
        remove_txt("_acme-challenge.example.net")
        self.assertEqual((factory.provider.records, texts.records), ({}, {}))

    def test_wildcard_ordered_through_provider(self) -> None:
        """
        An order for C{*.example.org} is validated by DNS-01 through the
        provider: the record is there when the CA is told to validate, and
        taken back afterwards.
        """
        config = parse(acme_toml(os.path.join(self.mktemp(), "acme"), '["*.example.org"]',
                                 extra=f'directory = "{BASE}/dir"') + PROVIDER)
        challenges = Challenges()
        ca = FakeCA(challenges)
        clock = Clock()
        clock.advance(START.timestamp())
        set_txt, remove_txt = build.dns01_records(config.acme, clock, _Texts())
        ca.txt = factory.provider.records  # what the fake CA's resolver sees
        issuer = Issuer(clock, config.acme, challenges, set_txt, remove_txt,
                        types=lambda name: acme_challenge_types(
                            name, config.listeners, config.acme, config.dns),
                        http=StubTreq(ca))
        self.successResultOf(issuer.issue(["*.example.org"]))
        [(name, kind, seen)] = ca.validated
        self.assertEqual((name, kind), ("*.example.org", "dns-01"))
        self.assertTrue(seen)
        self.assertEqual([call[:2] for call in factory.provider.calls],
                         [("set", "_acme-challenge.example.org"),
                          ("remove", "_acme-challenge.example.org")])
        self.assertEqual(factory.provider.records, {})
