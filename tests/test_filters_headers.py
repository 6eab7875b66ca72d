"""
Tests for the headers filter: request and response field edits, and
hiding the backends' banners.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.filter_support import field, filtered_proxy, request
from twistproxy.config import ConfigError
from twistproxy.filters.headers import HeadersFactory
from twistproxy.interfaces import IRequestFilter, IResponseFilter
from twistproxy.testing import make_exchange, run_filters, send_response

factory = HeadersFactory()

BANNERED = (b"HTTP/1.1 200 OK\r\nServer: Apache/2.4.1 (Unix)\r\nX-Powered-By: PHP/5.3\r\n"
            b"X-AspNet-Version: 4.0\r\nContent-Length: 5\r\n\r\nhello")


class HeadersTests(SynchronousTestCase):
    """
    Field edits.
    """

    def test_interfaces(self):
        """
        It provides L{IRequestFilter} and L{IResponseFilter}.
        """
        f = factory.fromConfig(None, {"hide_banners": True}, "f")
        verifyObject(IRequestFilter, f)
        verifyObject(IResponseFilter, f)

    def test_request_edits(self):
        """
        Request fields are removed, set and added; the received list is
        not changed in place.
        """
        f = factory.fromConfig(None, {"request": {
            "remove": ["X-Drop"], "set": {"X-Set": "new"}, "add": {"X-Add": "more"}}}, "f")
        x = make_exchange(headers=[("X-Drop", "1"), ("X-Set", "old"), ("X-Add", "first")])
        received = x.request.headers
        before = list(received)
        self.assertTrue(run_filters([f], x))
        self.assertEqual(received, before)
        self.assertEqual(x.request.headers[1:], [
            (b"X-Add", b"first"), (b"X-Set", b"new"), (b"X-Add", b"more")])

    def test_response_edits_and_banners(self):
        """
        Response fields are edited and the banners hidden; the body passes
        untouched.
        """
        f = factory.fromConfig(None, {"hide_banners": True,
                                      "response": {"set": {"X-Frame-Options": "DENY"}}}, "f")
        x = make_exchange()
        self.assertTrue(run_filters([f], x))
        send_response(x, 200, [("Server", "nginx/1.2"), ("x-powered-by", "Express"),
                               ("Content-Type", "text/plain")], [b"ok"], length=2)
        sink = x.downstream
        self.assertIsNone(sink.field(b"Server"))
        self.assertIsNone(sink.field(b"X-Powered-By"))
        self.assertEqual(sink.field(b"X-Frame-Options"), b"DENY")
        self.assertEqual(sink.field(b"Content-Type"), b"text/plain")
        self.assertEqual(sink.body, b"ok")

    def test_bad_options(self):
        """
        Framing fields, Host, unknown keys and an empty filter are refused
        with their paths.
        """
        for options, where in [
            ({"request": {"set": {"Content-Length": "1"}}}, "f.request"),
            ({"request": {"set": {"Host": "x"}}}, "f.request"),
            ({"response": {"replace": {}}}, "f.response.replace"),
            ({}, "f"),
            ({"hide_banners": "yes"}, "f.hide_banners"),
        ]:
            with self.assertRaises(ConfigError) as e:
                factory.fromConfig(None, options, "f")
            self.assertEqual(e.exception.path, where, options)

    def test_in_proxy(self):
        """
        On a listener: the backend gets the edited request, the client a
        response without banners.
        """
        proxy = filtered_proxy(listener=[{"name": "headers", "hide_banners": True,
                                          "request": {"add": {"X-Via-Filter": "1"}}}])
        got, sent = request(proxy, answer=BANNERED)
        self.assertIn(b"X-Via-Filter: 1\r\n", sent)
        for name in (b"Server", b"X-Powered-By", b"X-AspNet-Version"):
            self.assertIsNone(field(got, name), name)
        self.assertTrue(got.endswith(b"hello"))

    def test_proxy_answers_have_no_server(self):
        """
        The proxy's own answers name neither itself nor a backend in a
        C{Server} field.
        """
        proxy = filtered_proxy(listener=[{"name": "headers", "hide_banners": True}])
        peer = proxy.connect_client()
        peer.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        proxy.refuse_backend()
        got = peer.received()
        self.assertIn(b" 502 ", got.split(b"\r\n")[0])
        self.assertIsNone(field(got, b"Server"))
        self.assertNotIn(b"8001", got)
