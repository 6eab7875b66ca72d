"""
Every built-in filter, and the example of docs/filters.rst, against
L{FilterContractMixin}.
"""

from __future__ import annotations


from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twistproxy.filters.access import AccessFactory
from twistproxy.filters.compress import CompressFactory
from twistproxy.filters.cors import CORSFactory
from twistproxy.filters.headers import HeadersFactory
from twistproxy.filters.ratelimit import ConnectionLimitFactory, RateLimitFactory
from twistproxy.filters.rules import BlockFactory
from twistproxy.testing import FilterContractMixin


def _contract(name, factory, options):
    """
    A contract test case named C{name} (the module attribute it is bound
    to, so that trial finds it by name) for the filter C{factory} builds.
    """
    class Contract(FilterContractMixin, SynchronousTestCase):
        def makeFilter(self):
            return factory.fromConfig(Clock(), options, "test")

    Contract.__name__ = Contract.__qualname__ = name
    Contract.__doc__ = f"The {factory.name} filter keeps the filter contract."
    return Contract


AccessContractTests = _contract("AccessContractTests", AccessFactory(), {"deny": ["10.0.0.0/8"]})
RateLimitContractTests = _contract("RateLimitContractTests", RateLimitFactory(), {"rate": 1})
ConnectionLimitContractTests = _contract(
    "ConnectionLimitContractTests", ConnectionLimitFactory(), {"max": 1})
BlockContractTests = _contract("BlockContractTests", BlockFactory(), {"methods": ["TRACE"]})
HeadersContractTests = _contract("HeadersContractTests", HeadersFactory(), {"hide_banners": True})
CORSContractTests = _contract("CORSContractTests", CORSFactory(), {"origins": ["*"]})
CompressContractTests = _contract("CompressContractTests", CompressFactory(), {"min_size": 0})


class BasicAuthContractTests(FilterContractMixin, SynchronousTestCase):
    """
    The basic_auth filter keeps the filter contract.
    """

    def makeFilter(self):
        from twistproxy.filters.auth import BasicAuthFactory

        path = self.mktemp()
        with open(path, "w") as f:
            f.write("alice:$2b$04$abcdefghijklmnopqrstuu5Wc2Wq9t0Iu1Q8G8pR3i4cTqz4qf3i.\n")
        return BasicAuthFactory().fromConfig(Clock(), {"htpasswd": path}, "test")


class ForwardAuthContractTests(FilterContractMixin, SynchronousTestCase):
    """
    The forward_auth filter keeps the filter contract.
    """

    def makeFilter(self):
        from treq.testing import RequestTraversalAgent
        from twisted.web.resource import Resource

        from twistproxy.filters.auth import ForwardAuthFilter

        return ForwardAuthFilter(Clock(), "http://auth.test/", [], 1.0,
                                 agent=RequestTraversalAgent(Resource()))


class ExampleContractTests(FilterContractMixin, SynchronousTestCase):
    """
    The custom filter of docs/filters.rst keeps the filter contract.
    """

    def makeFilter(self):
        from tests.test_filters_chain import _load_example

        return _load_example().require_key.fromConfig(None, {"keys": ["k"]}, "test")
