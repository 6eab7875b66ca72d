"""
Tests for the cors filter: preflights answered by the proxy, responses to
allowed origins marked.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from twistproxy.config import ConfigError
from twistproxy.filters.cors import CORSFactory
from twistproxy.interfaces import IRequestFilter, IResponseFilter
from twistproxy.testing import make_exchange, run_filters, send_response

factory = CORSFactory()
APP = "https://app.example"


def _preflight(f, origin=APP, method="PUT", headers=None):
    fields = [("Origin", origin), ("Access-Control-Request-Method", method)]
    if headers:
        fields.append(("Access-Control-Request-Headers", headers))
    x = make_exchange(method="OPTIONS", headers=fields)
    return x, run_filters([f], x)


class CORSTests(SynchronousTestCase):
    """
    Preflights and actual requests.
    """

    def setUp(self):
        self.filter = factory.fromConfig(None, {
            "origins": [APP], "methods": ["GET", "PUT"], "headers": ["Content-Type", "X-Key"],
            "expose_headers": ["X-Total"], "credentials": True, "max_age": 60}, "f")

    def test_interfaces(self):
        """
        It provides L{IRequestFilter} and L{IResponseFilter}.
        """
        verifyObject(IRequestFilter, self.filter)
        verifyObject(IResponseFilter, self.filter)

    def test_preflight_allowed(self):
        """
        An allowed preflight is answered 204 by the proxy with the
        C{Access-Control-Allow-*} fields, and goes no further.
        """
        x, passed = _preflight(self.filter, headers="content-type, x-key")
        self.assertFalse(passed)
        sink = x.downstream
        self.assertEqual(sink.status, 204)
        self.assertEqual(sink.field(b"Access-Control-Allow-Origin"), APP.encode())
        self.assertEqual(sink.field(b"Access-Control-Allow-Methods"), b"GET, PUT")
        self.assertEqual(sink.field(b"Access-Control-Allow-Headers"), b"content-type, x-key")
        self.assertEqual(sink.field(b"Access-Control-Allow-Credentials"), b"true")
        self.assertEqual(sink.field(b"Access-Control-Max-Age"), b"60")
        self.assertEqual(sink.field(b"Vary"), b"Origin")
        self.assertEqual((sink.body, sink.has_body), (b"", False))

    def test_preflight_refused(self):
        """
        Another origin, method or header: 403 without CORS fields.
        """
        for kw in ({"origin": "https://evil.example"}, {"method": "DELETE"},
                   {"headers": "X-Other"}):
            x, passed = _preflight(self.filter, **kw)
            self.assertFalse(passed)
            self.assertEqual(x.downstream.status, 403, kw)
            self.assertIsNone(x.downstream.field(b"Access-Control-Allow-Origin"))

    def test_plain_options_passes(self):
        """
        An OPTIONS request that is no preflight goes to the backend.
        """
        self.assertTrue(run_filters([self.filter], make_exchange(method="OPTIONS")))

    def test_actual_request(self):
        """
        A response to an allowed origin gets the fields, replacing the
        backend's; other origins and same-origin requests get none.
        """
        x = make_exchange(headers=[("Origin", APP)])
        self.assertTrue(run_filters([self.filter], x))
        send_response(x, 200, [("Access-Control-Allow-Origin", "*")], [b"x"], 1)
        sink = x.downstream
        self.assertEqual([v for n, v in sink.fields if n == b"Access-Control-Allow-Origin"],
                         [APP.encode()])
        self.assertEqual(sink.field(b"Access-Control-Expose-Headers"), b"X-Total")
        for headers in ([("Origin", "https://evil.example")], []):
            x = make_exchange(headers=headers)
            self.assertTrue(run_filters([self.filter], x))
            send_response(x, 200, [], [b"x"], 1)
            self.assertIsNone(x.downstream.field(b"Access-Control-Allow-Origin"))

    def test_backend_cannot_allow_other_origins(self):
        """
        The response to an origin not allowed loses the backend's own
        C{Access-Control-Allow-*} fields (a backend echoing every
        origin), so that the configured origins are the only ones.
        """
        x = make_exchange(headers=[("Origin", "https://evil.example")])
        self.assertTrue(run_filters([self.filter], x))
        send_response(x, 200, [("Access-Control-Allow-Origin", "https://evil.example"),
                               ("Access-Control-Allow-Credentials", "true"),
                               ("Content-Type", "text/plain")], [b"x"], 1)
        sink = x.downstream
        self.assertIsNone(sink.field(b"Access-Control-Allow-Origin"))
        self.assertIsNone(sink.field(b"Access-Control-Allow-Credentials"))
        self.assertEqual(sink.field(b"Content-Type"), b"text/plain")

    def test_any_origin(self):
        """
        C{*} allows any origin: C{*} without credentials, the origin
        echoed with them.
        """
        f = factory.fromConfig(None, {"origins": ["*"]}, "f")
        x, _ = _preflight(f, origin="https://a.example", method="GET")
        self.assertEqual(x.downstream.field(b"Access-Control-Allow-Origin"), b"*")
        f = factory.fromConfig(None, {"origins": ["*"], "credentials": True}, "f")
        x, _ = _preflight(f, origin="https://a.example", method="GET")
        self.assertEqual(x.downstream.field(b"Access-Control-Allow-Origin"),
                         b"https://a.example")

    def test_bad_options(self):
        """
        Origins are required and must be origins; methods and headers
        tokens.
        """
        for options, where in [({}, "f.origins"), ({"origins": ["app.example"]}, "f.origins[0]"),
                               ({"origins": ["https://a/"]}, "f.origins[0]"),
                               ({"origins": ["*"], "methods": ["G T"]}, "f.methods[0]"),
                               ({"origins": ["*"], "headers": ["X Y"]}, "f.headers[0]"),
                               ({"origins": ["*"], "expose_headers": ["A", "B:"]},
                                "f.expose_headers[1]"),
                               ({"origins": ["*"], "max_age": -1}, "f.max_age")]:
            with self.assertRaises(ConfigError) as e:
                factory.fromConfig(None, options, "f")
            self.assertEqual(e.exception.path, where, options)
