"""
Tests for the access filter: allow and deny lists, inline and in files
reloaded on change, matched on the real client address.
"""

from __future__ import annotations

import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.filter_support import filtered_proxy, request, status
from twistproxy.config import ConfigError
from twistproxy.filters.access import AccessFactory
from twistproxy.interfaces import IConnectionFilter, IRequestFilter
from twistproxy.testing import make_exchange, run_filters

factory = AccessFactory()


def _refused(f, address, **kw) -> bool:
    x = make_exchange(client_address=address, **kw)
    return not run_filters([f], x)


class AccessTests(SynchronousTestCase):
    """
    Inline lists.
    """

    def test_interface(self):
        """
        The filter provides L{IRequestFilter} and L{IConnectionFilter}.
        """
        f = factory.fromConfig(Clock(), {"deny": []}, "f")
        verifyObject(IRequestFilter, f)
        verifyObject(IConnectionFilter, f)

    def test_connection(self):
        """
        As a connection filter (on tcp and udp listeners) it judges the
        address alone with the same rules: deny wins over allow, nothing
        to undo when a connection ends; the access log's status and reason
        are the request's.
        """
        f = factory.fromConfig(Clock(), {"allow": ["10.0.0.0/8"], "deny": ["10.9.0.0/16"],
                                         "status": 404}, "f")
        self.assertEqual([f.connection_made(a) for a in ("10.1.2.3", "10.9.1.1", "192.0.2.1")],
                         [True, False, False])
        f.connection_lost("10.1.2.3")
        self.assertTrue(f.connection_made("10.1.2.3"))
        self.assertEqual((f.refusal.status, f.refusal.reason), (404, "access_denied"))

    def test_deny(self):
        """
        Addresses in a denied network (IPv4 or IPv6) get 403; others pass.
        """
        f = factory.fromConfig(Clock(), {"deny": ["192.0.2.0/24", "2001:db8::/32"]}, "f")
        self.assertTrue(_refused(f, "192.0.2.99"))
        self.assertTrue(_refused(f, "2001:db8::5"))
        self.assertTrue(_refused(f, "::ffff:192.0.2.1"))
        self.assertFalse(_refused(f, "198.51.100.1"))
        self.assertFalse(_refused(f, "2001:db9::1"))
        x = make_exchange(client_address="192.0.2.1")
        run_filters([f], x)
        self.assertEqual(x.downstream.status, 403)
        self.assertEqual(x.reason, "access_denied")

    def test_allow(self):
        """
        With an allow list, only its networks pass; deny wins over allow.
        """
        f = factory.fromConfig(Clock(), {"allow": ["10.0.0.0/8"], "deny": ["10.9.0.0/16"],
                                         "status": 404}, "f")
        self.assertFalse(_refused(f, "10.1.2.3"))
        self.assertTrue(_refused(f, "10.9.2.3"))
        self.assertTrue(_refused(f, "192.0.2.1"))
        self.assertTrue(_refused(f, ""))
        x = make_exchange(client_address="192.0.2.1")
        run_filters([f], x)
        self.assertEqual(x.downstream.status, 404)

    def test_headers_do_not_help_untrusted(self):
        """
        A denied client writing another address in C{Forwarded} or
        C{X-Forwarded-For} is still refused; a trusted proxy's
        C{Forwarded} is believed, both ways.
        """
        f = factory.fromConfig(Clock(), {"deny": ["192.0.2.7/32"]}, "f")
        lies = [("Forwarded", "for=198.51.100.1"), ("X-Forwarded-For", "198.51.100.1"),
                ("X-Real-IP", "198.51.100.1")]
        self.assertTrue(_refused(f, "192.0.2.7", headers=lies))
        self.assertFalse(_refused(f, "192.0.2.7", headers=lies, trusted=True))
        self.assertTrue(_refused(f, "203.0.113.1", trusted=True,
                                 headers=[("Forwarded", "for=192.0.2.7")]))

    def test_bad_options(self):
        """
        Bad networks, no list at all, or a bad status are refused with
        their paths.
        """
        for options, where in [
            ({"deny": ["10.0.0.1/8"]}, "f.deny[0]"),
            ({"deny": ["nonsense"]}, "f.deny[0]"),
            ({}, "f"),
            ({"deny": [], "status": 99}, "f.status"),
            ({"allow_files": ["/nonexistent/list"]}, "f.allow_files[0]"),
        ]:
            with self.assertRaises(ConfigError) as e:
                factory.fromConfig(Clock(), options, "f")
            self.assertEqual(e.exception.path, where, options)


class AccessFileTests(SynchronousTestCase):
    """
    Lists in files, read again when they change.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.path = self.mktemp()
        self._write("# bad neighbours\n192.0.2.0/24\n\n2001:db8::1  # one host\n")
        self.filter = factory.fromConfig(
            self.clock, {"deny_files": [self.path], "reload_interval": 2}, "f")

    def _write(self, text):
        with open(self.path, "w") as f:
            f.write(text)
        # Make the change visible whatever the file system's time grain.
        os.utime(self.path, (self.clock.seconds(), self.clock.seconds()))

    def test_read(self):
        """
        The file's networks and addresses are denied; comments ignored.
        """
        self.assertTrue(_refused(self.filter, "192.0.2.5"))
        self.assertTrue(_refused(self.filter, "2001:db8::1"))
        self.assertFalse(_refused(self.filter, "2001:db8::2"))

    def test_reloaded_on_change(self):
        """
        A changed file is read again once the reload interval passed.
        """
        self.clock.advance(10)
        self.assertTrue(_refused(self.filter, "192.0.2.5"))
        self._write("198.51.100.0/24\n")
        self.assertTrue(_refused(self.filter, "192.0.2.5"))
        self.clock.advance(2)
        self.assertFalse(_refused(self.filter, "192.0.2.5"))
        self.assertTrue(_refused(self.filter, "198.51.100.5"))

    def test_reloaded_on_change_for_connections(self):
        """
        A changed file is read again when connections are judged too (a
        tcp listener has no requests).
        """
        self.clock.advance(10)
        self.assertFalse(self.filter.connection_made("192.0.2.5"))
        self._write("198.51.100.0/24\n")
        self.clock.advance(2)
        self.assertTrue(self.filter.connection_made("192.0.2.5"))
        self.assertFalse(self.filter.connection_made("198.51.100.5"))

    def test_bad_file_keeps_old(self):
        """
        A file that became bad keeps the old networks, and says so.
        """
        self.clock.advance(10)
        self._write("192.0.2.0/24\nnot a network\n")
        self.clock.advance(2)
        self.assertTrue(_refused(self.filter, "192.0.2.5"))
        self.clock.advance(10)
        os.remove(self.path)
        self.clock.advance(2)
        self.assertTrue(_refused(self.filter, "192.0.2.5"))

    def test_bad_file_at_start(self):
        """
        A bad line at start-up is a configuration error naming the line.
        """
        self._write("192.0.2.0/24\n10.0.0.1/8\n")
        with self.assertRaises(ConfigError) as e:
            factory.fromConfig(self.clock, {"allow_files": [self.path]}, "f")
        self.assertEqual(e.exception.path, f"{self.path}:2")


class AccessProxyTests(SynchronousTestCase):
    """
    The access filter in a whole proxy.
    """

    def test_listener_deny(self):
        """
        A denied client gets 403 and nothing reaches a backend; another
        client is served.
        """
        proxy = filtered_proxy(listener=[{"name": "access", "deny": ["192.0.2.0/24"]}])
        got, sent = request(proxy, client="192.0.2.7")
        self.assertEqual((status(got), sent), (403, None))
        self.assertNotIn(b"127.0.0.1", got)
        got, sent = request(proxy, client="198.51.100.7")
        self.assertEqual(status(got), 200)
