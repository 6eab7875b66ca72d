"""
Tests for L{twistproxy.upstream.backend}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from twistproxy.interfaces import IBackend
from twistproxy.upstream.backend import Backend


class BackendTests(SynchronousTestCase):
    """
    L{Backend} is the mutable state of one upstream server.
    """

    def test_interface(self) -> None:
        """
        L{Backend} provides L{IBackend}.
        """
        self.assertTrue(
            verifyObject(IBackend, Backend("a", "http", "127.0.0.1", 8001))
        )

    def test_initial_state(self) -> None:
        """
        A new backend keeps its constructor arguments, defaults to weight 1,
        and starts available with zeroed counters.
        """
        backend = Backend("api-1", "https", "10.0.0.1", 8443)
        self.assertEqual(
            (backend.name, backend.scheme, backend.host, backend.port),
            ("api-1", "https", "10.0.0.1", 8443),
        )
        self.assertEqual(backend.weight, 1)
        self.assertIs(backend.available, True)
        self.assertEqual(
            (backend.in_flight, backend.requests, backend.failures), (0, 0, 0)
        )
        self.assertEqual(Backend("b", "http", "h", 80, weight=3).weight, 3)

    def test_slots(self) -> None:
        """
        L{Backend} has no instance dictionary, so a misspelt attribute is an
        error instead of a silent new field.
        """
        backend = Backend("a", "http", "127.0.0.1", 8001)
        self.assertFalse(hasattr(backend, "__dict__"))
        self.assertRaises(AttributeError, setattr, backend, "availble", False)

    def test_repr(self) -> None:
        """
        The repr shows name, address, weight and state; IPv6 literals are
        bracketed.
        """
        backend = Backend("a", "http", "127.0.0.1", 8001, 2)
        self.assertEqual(
            repr(backend),
            "<Backend 'a' http://127.0.0.1:8001 weight=2 up in_flight=0>",
        )
        backend = Backend("v6", "https", "::1", 8443)
        backend.available = False
        self.assertEqual(
            repr(backend),
            "<Backend 'v6' https://[::1]:8443 weight=1 down in_flight=0>",
        )
