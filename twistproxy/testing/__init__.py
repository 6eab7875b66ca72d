# -*- test-case-name: tests.test_balancers -*-
"""
Helpers for testing twistproxy plugins.

Plugin authors use these in their own test suites, so that every
implementation of a role is held to the same contract as the built-in ones.
The kits live in one module each, by what they test, and are all importable
from here:

  - balancers (L{twistproxy.testing.balancers}): L{FakeRequestInfo}, an
    L{IRequestInfo <twistproxy.interfaces.IRequestInfo>} built from plain
    values, to pass to a balancer's C{pick}; and L{BalancerContractMixin},
    a mixin for C{twisted.trial.unittest.TestCase} whose tests every
    L{IBalancer <twistproxy.interfaces.IBalancer>} must pass.  Mix it into
    a test case and define C{makeBalancer}::

        from twisted.trial.unittest import SynchronousTestCase
        from twistproxy.testing import BalancerContractMixin

        class MyBalancerContractTests(
            BalancerContractMixin, SynchronousTestCase
        ):
            def makeBalancer(self, backends):
                return myFactory.fromConfig(backends, {}, "test")

  - filters (L{twistproxy.testing.filters}): L{make_exchange},
    L{run_filters} and L{send_response}, which run filters over a request
    and a response without a proxy; L{RecordingSink}, which records what
    reaches the client (see docs/filters.rst); and L{FilterContractMixin};

  - cache stores (L{twistproxy.testing.caches}):
    L{CacheStoreContractMixin}, the tests every L{ICacheStore
    <twistproxy.interfaces.ICacheStore>} must pass, and L{FakeCacheStore},
    a store in a dict;

  - the whole proxy (L{twistproxy.testing.proxy}): L{MemoryProxy}, the
    production wiring on a fake clock and memory transports, and
    L{MemoryPeer}, a client or backend connected to it;

  - certificates (L{twistproxy.testing.certificates}): L{issue_certificate},
    L{key_pem}, L{cert_pem} and L{pem_bundle}, for tests that need TLS;

  - DNS providers for ACME DNS-01 (L{twistproxy.testing.dns}):
    L{DNSProviderContractMixin}, the tests every L{IDNSProvider
    <twistproxy.interfaces.IDNSProvider>} must pass, and
    L{MemoryDNSProvider}, a provider whose zone is a dict.

Nothing here needs the global reactor.
"""

from twistproxy.testing.balancers import BalancerContractMixin, FakeRequestInfo
from twistproxy.testing.caches import CacheStoreContractMixin, FakeCacheStore
from twistproxy.testing.certificates import cert_pem, issue_certificate, key_pem, pem_bundle
from twistproxy.testing.dns import DNSProviderContractMixin, MemoryDNSProvider
from twistproxy.testing.filters import (
    FilterContractMixin,
    RecordingSink,
    make_exchange,
    run_filters,
    send_response,
)
from twistproxy.testing.proxy import MemoryPeer, MemoryProxy

__all__ = [
    "BalancerContractMixin",
    "CacheStoreContractMixin",
    "DNSProviderContractMixin",
    "FakeCacheStore",
    "FakeRequestInfo",
    "FilterContractMixin",
    "MemoryDNSProvider",
    "MemoryPeer",
    "MemoryProxy",
    "RecordingSink",
    "cert_pem",
    "issue_certificate",
    "key_pem",
    "make_exchange",
    "pem_bundle",
    "run_filters",
    "send_response",
]
