# -*- test-case-name: tests.test_acme_dns_provider -*-
"""
Kits for testing DNS providers (the plugins that set ACME DNS-01 records in
zones another DNS server answers): L{MemoryDNSProvider}, a provider whose
zone is a dict, and L{DNSProviderContractMixin}, the tests every
L{IDNSProvider <twistproxy.interfaces.IDNSProvider>} must pass.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from zope.interface import implementer
from zope.interface.verify import verifyObject

from twistproxy.interfaces import IDNSProvider


@implementer(IDNSProvider)
class MemoryDNSProvider:
    """
    An L{IDNSProvider} whose zone is a dict, for tests of code that uses a
    provider.

    @ivar records: The TXT values published, by owner name.
    @ivar calls: Each call, as C{('set', name, values)} or
        C{('remove', name)}.
    """

    def __init__(self) -> None:
        self.records: Dict[str, List[str]] = {}
        self.calls: List[tuple] = []

    def set_txt(self, name: str, values: Sequence[str]) -> Deferred:
        self.calls.append(("set", name, list(values)))
        self.records[name] = list(values)
        return succeed(None)

    def remove_txt(self, name: str) -> Deferred:
        self.calls.append(("remove", name))
        self.records.pop(name, None)
        return succeed(None)


class DNSProviderContractMixin:
    """
    Tests every L{IDNSProvider} must pass.  Mix into a
    C{twisted.trial.unittest.TestCase} and define C{makeProvider()} and
    C{published(provider, name)}, which says the TXT values the zone holds
    for C{name} now (a list, empty for none; either may return a
    L{Deferred}): a lookup in the provider's API, or a query to its DNS
    servers.
    """

    def _steps(self, steps):
        from twisted.internet.defer import inlineCallbacks

        return inlineCallbacks(steps)()

    def _published(self, provider, name: str) -> Deferred:
        return maybeDeferred(self.published, provider, name)

    def test_interface(self):
        """
        The provider provides L{IDNSProvider}.
        """
        def steps():
            provider = yield maybeDeferred(self.makeProvider)
            self.assertTrue(verifyObject(IDNSProvider, provider))
        return self._steps(steps)

    def test_set_and_remove(self):
        """
        Once C{set_txt} has fired, the zone holds the values; once
        C{remove_txt} has fired, it holds none.
        """
        name = "_acme-challenge.www.example.org"

        def steps():
            provider = yield maybeDeferred(self.makeProvider)
            yield provider.set_txt(name, ["gfj9Xq-Rg85nM", "second"])
            self.assertEqual(sorted((yield self._published(provider, name))),
                             ["gfj9Xq-Rg85nM", "second"])
            yield provider.remove_txt(name)
            self.assertEqual(list((yield self._published(provider, name))), [])
        return self._steps(steps)

    def test_set_replaces(self):
        """
        A second C{set_txt} for a name replaces its values; other names
        keep theirs.
        """
        def steps():
            provider = yield maybeDeferred(self.makeProvider)
            yield provider.set_txt("_acme-challenge.example.org", ["one"])
            yield provider.set_txt("_acme-challenge.a.example.org", ["other"])
            yield provider.set_txt("_acme-challenge.example.org", ["two"])
            self.assertEqual(list((yield self._published(
                provider, "_acme-challenge.example.org"))), ["two"])
            self.assertEqual(list((yield self._published(
                provider, "_acme-challenge.a.example.org"))), ["other"])
        return self._steps(steps)

    def test_remove_unknown(self):
        """
        Removing the records of a name that has none fires all the same (an
        order takes its answers back even when setting them failed).
        """
        def steps():
            provider = yield maybeDeferred(self.makeProvider)
            yield provider.remove_txt("_acme-challenge.nothing.example.org")
        return self._steps(steps)
