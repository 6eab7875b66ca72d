"""
Tests for the block filter: requests refused by method, path, header or
user agent.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.filter_support import filtered_proxy, request, status
from twistproxy.config import ConfigError
from twistproxy.filters.rules import BlockFactory
from twistproxy.interfaces import IRequestFilter
from twistproxy.testing import make_exchange, run_filters

factory = BlockFactory()


def _blocked(f, **kw) -> bool:
    return not run_filters([f], make_exchange(**kw))


class BlockTests(SynchronousTestCase):
    """
    Each kind of rule, and the status.
    """

    def test_interface(self):
        """
        It provides L{IRequestFilter}.
        """
        verifyObject(IRequestFilter, factory.fromConfig(None, {"methods": ["TRACE"]}, "f"))

    def test_methods(self):
        """
        Listed methods are refused (case-insensitively configured).
        """
        f = factory.fromConfig(None, {"methods": ["trace", "DELETE"]}, "f")
        self.assertTrue(_blocked(f, method="TRACE"))
        self.assertTrue(_blocked(f, method="DELETE"))
        self.assertFalse(_blocked(f, method="GET"))

    def test_paths(self):
        """
        Path expressions are searched in the target, query included.
        """
        f = factory.fromConfig(None, {"paths": ["^/admin", r"\.php$", "debug=1"]}, "f")
        self.assertTrue(_blocked(f, target="/admin/users"))
        self.assertTrue(_blocked(f, target="/x/index.php"))
        self.assertTrue(_blocked(f, target="/a?debug=1"))
        self.assertFalse(_blocked(f, target="/api/admin"))

    def test_encoded_paths(self):
        """
        A path that spells a blocked one with percent-encoded characters
        (which the backend decodes) is blocked too; so are the dot
        segments and doubled slashes the proxy normalizes.
        """
        f = factory.fromConfig(None, {"paths": ["^/admin"]}, "f")
        self.assertTrue(_blocked(f, target="/%61dmin/users"))
        self.assertFalse(_blocked(f, target="/%2561dmin"))
        proxy = filtered_proxy(route=[{"name": "block", "paths": ["^/admin"]}])
        for target in (b"/%61dmin", b"//admin", b"/public/../admin", b"/public/%2e%2e/admin",
                       b"/%2fadmin", b"/%5cadmin"):
            got, sent = request(proxy, b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % target)
            self.assertEqual((status(got), sent), (403, None), target)

    def test_raw_and_normalized_paths(self):
        """
        A path expression is matched against the target as forwarded and
        with its path normalised (issue 12, item 9): C{^/admin-secret}
        blocks C{/%2fadmin-secret}, and an expression on the spelling sent
        still blocks it although the normal form differs.
        """
        f = factory.fromConfig(None, {"paths": ["^/admin-secret"]}, "f")
        self.assertTrue(_blocked(f, target="/%2fadmin-secret"))
        self.assertTrue(_blocked(f, target="/%2FADMIN-secret".replace("ADMIN", "%61dmin")))
        self.assertFalse(_blocked(f, target="/public/admin-secret"))
        f = factory.fromConfig(None, {"paths": ["%2[fF]"]}, "f")
        self.assertTrue(_blocked(f, target="/a%2fb"))

    def test_headers_and_user_agents(self):
        """
        Header expressions match any field of that name, whatever its
        case; user agents are the C{User-Agent} field.
        """
        f = factory.fromConfig(None, {"headers": {"X-Debug": "."},
                                      "user_agents": ["(?i)sqlmap", "^curl/"]}, "f")
        self.assertTrue(_blocked(f, headers=[("x-debug", "1")]))
        self.assertTrue(_blocked(f, headers=[("User-Agent", "SQLMap/1.5")]))
        self.assertTrue(_blocked(f, headers=[("User-Agent", "curl/8.0")]))
        self.assertFalse(_blocked(f, headers=[("User-Agent", "Mozilla/5.0 curl/")]))
        self.assertFalse(_blocked(f, headers=[("X-Debug", "")]))

    def test_status(self):
        """
        The chosen status answers, with the access log reason.
        """
        f = factory.fromConfig(None, {"methods": ["TRACE"], "status": 405}, "f")
        x = make_exchange(method="TRACE")
        run_filters([f], x)
        self.assertEqual((x.downstream.status, x.reason), (405, "request_blocked"))

    def test_bad_options(self):
        """
        Bad expressions, methods, header names or nothing at all are
        refused with their paths.
        """
        for options, where in [
            ({"paths": ["("]}, "f.paths[0]"),
            ({"methods": ["GE T"]}, "f.methods[0]"),
            ({"headers": {"X Bad": "x"}}, 'f.headers."X Bad"'),
            ({"headers": {"X": 1}}, "f.headers.X"),
            ({"headers": ["X"]}, "f.headers"),
            ({"user_agents": ["["]}, "f.user_agents[0]"),
            ({}, "f"),
            ({"methods": ["GET"], "status": 1000}, "f.status"),
        ]:
            with self.assertRaises(ConfigError) as e:
                factory.fromConfig(None, options, "f")
            self.assertEqual(e.exception.path, where, options)

    def test_in_proxy(self):
        """
        On a route, a blocked request gets the status and never reaches a
        backend; others do.
        """
        proxy = filtered_proxy(route=[{"name": "block", "paths": ["^/private"]}])
        got, sent = request(proxy, b"GET /private/x HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual((status(got), sent), (403, None))
        got, sent = request(proxy, b"GET /public HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(status(got), 200)
