"""
Tests for the compress filter: gzip and brotli, streamed, only when it
helps and is allowed.
"""

from __future__ import annotations

import sys
import zlib

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.filter_support import field, filtered_proxy
from twistproxy.config import ConfigError
from twistproxy.filters.compress import CompressFactory, accepted
from twistproxy.interfaces import IResponseFilter
from twistproxy.testing import make_exchange, run_filters, send_response

try:
    import brotli
except ImportError:  # PyPy gets the CFFI binding, with the same API.
    import brotlicffi as brotli

factory = CompressFactory()
TEXT = b"All work and no play makes Jack a dull boy. " * 100


def _respond(f, accept="gzip, br", method="GET", status=200, headers=None,
             pieces=(TEXT[:2000], TEXT[2000:]), length=len(TEXT)):
    x = make_exchange(method=method, headers=[("Accept-Encoding", accept)] if accept else [])
    run_filters([f], x)
    if headers is None:
        headers = [("Content-Type", "text/plain; charset=utf-8"), ("ETag", '"v1"')]
    send_response(x, status, headers, pieces, length)
    return x.downstream


class AcceptedTests(SynchronousTestCase):
    """
    Reading C{Accept-Encoding}.
    """

    def test_choices(self):
        """
        Our order of preference among what the client accepts; q=0
        refuses; C{*} accepts the rest.
        """
        offered = ("br", "gzip")
        self.assertEqual(accepted("gzip, deflate, br", offered), "br")
        self.assertEqual(accepted("gzip", offered), "gzip")
        self.assertEqual(accepted("br;q=0, gzip;q=0.5", offered), "gzip")
        self.assertEqual(accepted("*", offered), "br")
        self.assertEqual(accepted("*, br;q=0", offered), "gzip")
        self.assertIsNone(accepted("identity", offered))
        self.assertIsNone(accepted("", offered))
        self.assertIsNone(accepted(None, offered))
        self.assertEqual(accepted("gzip;q=bogus, br", offered), "br")


class CompressTests(SynchronousTestCase):
    """
    What is compressed, and how.
    """

    def setUp(self):
        self.filter = factory.fromConfig(None, {}, "f")

    def test_interface(self):
        """
        It provides L{IResponseFilter}.
        """
        verifyObject(IResponseFilter, self.filter)

    def test_brotli_preferred(self):
        """
        With both accepted, brotli; the body decodes to the original, the
        length is dropped, the ETag made weak, Vary added.
        """
        sink = _respond(self.filter)
        self.assertEqual(sink.field(b"Content-Encoding"), b"br")
        self.assertIsNone(sink.field(b"Content-Length"))
        self.assertEqual(sink.field(b"ETag"), b'W/"v1"')
        self.assertEqual(sink.field(b"Vary"), b"Accept-Encoding")
        self.assertEqual(brotli.decompress(sink.body), TEXT)
        self.assertLess(len(sink.body), len(TEXT) // 10)
        self.assertTrue(sink.ended)

    def test_gzip_streamed(self):
        """
        gzip, each piece compressed and passed on as it comes (no whole
        body gathered): some output precedes the end.
        """
        x = make_exchange(headers=[("Accept-Encoding", "gzip")])
        run_filters([self.filter], x)
        sink = x.downstream
        from twistproxy.http.parser import ResponseHead

        resp = ResponseHead()
        resp.version, resp.status, resp.reason = (1, 1), 200, b"OK"
        resp.headers = [(b"Content-Type", b"application/json")]
        resp.content_length, resp.chunked = None, True
        resp.keep_alive, resp.connection = True, frozenset()
        x.sink.response_head(x, resp, True)
        x.sink.response_body(x, b'{"a": 1}')
        x.sink.flush()
        self.assertTrue(sink.pieces)
        self.assertEqual(zlib.decompressobj(31).decompress(b"".join(sink.pieces)), b'{"a": 1}')
        x.sink.response_body(x, b'{"b": 2}')
        x.sink.response_end(x)
        self.assertEqual(zlib.decompress(sink.body, 31), b'{"a": 1}{"b": 2}')
        self.assertEqual(sink.field(b"Content-Encoding"), b"gzip")

    def test_left_alone(self):
        """
        Not compressed: no accepted encoding, already encoded,
        no-transform, incompressible type, too short, a 206, a 204, a
        304.  Compressible types still get C{Vary}; the ETag of what is
        not compressed stays strong.
        """
        plain = [("Content-Type", "text/html")]
        cases = [
            dict(accept=None),
            dict(accept="deflate"),
            dict(headers=plain + [("Content-Encoding", "gzip")]),
            dict(headers=plain + [("Cache-Control", "public, no-transform")]),
            dict(headers=[("Content-Type", "image/png")]),
            dict(headers=[]),
            dict(pieces=[b"short"], length=5),
            dict(status=206),
            dict(status=204, pieces=[], length=None),
            dict(status=304, pieces=[], length=None),
        ]
        for kw in cases:
            sink = _respond(self.filter, **kw)
            own = ("Content-Encoding", "gzip") in kw.get("headers", ())
            self.assertEqual(sink.field(b"Content-Encoding"), b"gzip" if own else None, kw)
            self.assertEqual(sink.body, b"".join(kw.get("pieces", [TEXT])), kw)
        self.assertEqual(_respond(self.filter, status=206).field(b"ETag"), b'"v1"')
        self.assertEqual(_respond(self.filter, accept=None).field(b"Vary"), b"Accept-Encoding")
        self.assertIsNone(_respond(self.filter, headers=[("Content-Type", "image/png")])
                          .field(b"Vary"))

    def test_client_no_transform(self):
        """
        A client that asks for no transformation (C{Cache-Control:
        no-transform} in its request) gets the body as it was, with
        C{Vary}.
        """
        x = make_exchange(headers=[("Accept-Encoding", "gzip"),
                                   ("Cache-Control", "max-age=0, No-Transform")])
        run_filters([self.filter], x)
        send_response(x, 200, [("Content-Type", "text/plain")], [TEXT], len(TEXT))
        self.assertIsNone(x.downstream.field(b"Content-Encoding"))
        self.assertEqual(x.downstream.body, TEXT)
        self.assertEqual(x.downstream.field(b"Vary"), b"Accept-Encoding")

    def test_head_gets_the_fields_of_get(self):
        """
        The answer to a C{HEAD} has the fields the C{GET} would have
        (C{Content-Encoding}, the weak C{ETag}, C{Vary}, no
        C{Content-Length}), so that a cache can match the two, and no body.
        """
        sink = _respond(self.filter, method="HEAD", pieces=[])
        self.assertEqual(sink.field(b"Content-Encoding"), b"br")
        self.assertEqual(sink.field(b"ETag"), b'W/"v1"')
        self.assertEqual(sink.field(b"Vary"), b"Accept-Encoding")
        self.assertIsNone(sink.field(b"Content-Length"))
        self.assertEqual(sink.body, b"")
        self.assertTrue(sink.ended)
        plain = _respond(self.filter, method="HEAD", accept=None, pieces=[])
        self.assertIsNone(plain.field(b"Content-Encoding"))
        self.assertEqual(plain.field(b"Content-Length"), b"%d" % len(TEXT))

    def test_not_modified_etag_weakened(self):
        """
        A 304 to a client that would get the compressed response carries
        that response's weak C{ETag} (RFC 9110 15.4.5: the validator of
        the representation it confirms); not when it would not have been
        compressed.
        """
        validated = dict(status=304, pieces=[], length=None)
        self.assertEqual(_respond(self.filter, **validated).field(b"ETag"), b'W/"v1"')
        self.assertEqual(_respond(self.filter, accept=None, **validated).field(b"ETag"),
                         b'"v1"')
        self.assertEqual(_respond(self.filter, headers=[
            ("Content-Type", "text/plain"), ("ETag", '"v1"'),
            ("Cache-Control", "no-transform")], **validated).field(b"ETag"), b'"v1"')

    def test_accept_ranges_dropped(self):
        """
        A compressed response does not offer ranges (the backend would
        serve them of the uncompressed bytes); an uncompressed one keeps
        its C{Accept-Ranges}.
        """
        ranged = [("Content-Type", "text/plain"), ("Accept-Ranges", "bytes")]
        self.assertIsNone(_respond(self.filter, headers=ranged).field(b"Accept-Ranges"))
        self.assertEqual(_respond(self.filter, accept=None, headers=ranged)
                         .field(b"Accept-Ranges"), b"bytes")

    def test_vary_merged(self):
        """
        An existing C{Vary} is kept and extended, once.
        """
        sink = _respond(self.filter, headers=[("Content-Type", "text/css"), ("Vary", "Cookie")])
        self.assertEqual(sink.field(b"Vary"), b"Cookie, Accept-Encoding")
        sink = _respond(self.filter, headers=[("Content-Type", "text/css"),
                                              ("Vary", "accept-encoding")])
        self.assertEqual(sink.field(b"Vary"), b"accept-encoding")

    def test_options(self):
        """
        Only gzip when told so; custom types; bad options refused with
        their paths.
        """
        f = factory.fromConfig(None, {"encodings": ["gzip"], "types": ["application/x-log"],
                                      "min_size": 0}, "f")
        sink = _respond(f, headers=[("Content-Type", "application/x-log")])
        self.assertEqual(sink.field(b"Content-Encoding"), b"gzip")
        for options, where in [({"encodings": ["zstd"]}, "f.encodings[0]"),
                               ({"types": ["text"]}, "f.types[0]"),
                               ({"types": ["*/html"]}, "f.types[0]"),
                               ({"gzip_level": 10}, "f.gzip_level"),
                               ({"min_size": -1}, "f.min_size")]:
            with self.assertRaises(ConfigError) as e:
                factory.fromConfig(None, options, "f")
            self.assertEqual(e.exception.path, where, options)

    def test_without_brotli(self):
        """
        Without the brotli package, the default is gzip alone, and naming
        C{br} is refused with its path and how to install it.
        """
        # A None entry makes the import fail, as if it were not installed.
        for name in ("brotli", "brotlicffi"):
            self.addCleanup(_restore_module, name, sys.modules.get(name))
            sys.modules[name] = None
        sink = _respond(factory.fromConfig(None, {}, "f"))
        self.assertEqual(sink.field(b"Content-Encoding"), b"gzip")
        with self.assertRaises(ConfigError) as e:
            factory.fromConfig(None, {"encodings": ["gzip", "br"]}, "f")
        self.assertEqual(e.exception.path, "f.encodings[1]")
        self.assertIn("twistproxy[brotli]", str(e.exception))

    def test_either_binding(self):
        """
        Either binding of the brotli library serves, C{brotli} (the C
        extension, for CPython) or C{brotlicffi} (for PyPy), whichever is
        installed: each name in turn is the only one importable, and holds
        the installed binding (their APIs are the same).
        """
        for name, other in [("brotli", "brotlicffi"), ("brotlicffi", "brotli")]:
            for each in (name, other):
                self.addCleanup(_restore_module, each, sys.modules.get(each))
            sys.modules[name], sys.modules[other] = brotli, None
            sink = _respond(factory.fromConfig(None, {}, "f"))
            self.assertEqual(sink.field(b"Content-Encoding"), b"br", name)
            self.assertEqual(brotli.decompress(sink.body), TEXT, name)

    def test_in_proxy_chunked(self):
        """
        Through a whole proxy: an HTTP/1.1 client gets a chunked gzip
        body in place of the backend's Content-Length one.
        """
        proxy = filtered_proxy(listener=[{"name": "compress", "encodings": ["gzip"]}])
        peer = proxy.connect_client()
        peer.send(b"GET / HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\n\r\n")
        backend = proxy.accept_backend()
        backend.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
                     % len(TEXT) + TEXT)
        got = peer.received()
        self.assertEqual(field(got, b"Transfer-Encoding"), b"chunked")
        self.assertIsNone(field(got, b"Content-Length"))
        body = got.split(b"\r\n\r\n", 1)[1]
        decoded, rest = b"", body
        while True:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            decoded, rest = decoded + rest[:n], rest[n + 2:]
        self.assertEqual(zlib.decompress(decoded, 31), TEXT)

    def test_in_proxy_head(self):
        """
        Through a whole proxy: the answer to a C{HEAD} says gzip, has no
        body and no framing fields, and the connection serves the next
        request.
        """
        proxy = filtered_proxy(listener=[{"name": "compress", "encodings": ["gzip"]}])
        peer = proxy.connect_client()
        peer.send(b"HEAD / HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\n\r\n")
        backend = proxy.accept_backend()
        backend.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
                     % len(TEXT))
        got = peer.received()
        self.assertEqual(field(got, b"Content-Encoding"), b"gzip")
        self.assertIsNone(field(got, b"Transfer-Encoding"))
        self.assertTrue(got.endswith(b"\r\n\r\n"), got)
        backend.received()
        peer.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertTrue(backend.received().startswith(b"GET / HTTP/1.1\r\n"))
        backend.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertTrue(peer.received().endswith(b"\r\n\r\nok"))


def _restore_module(name, module):
    """
    Put C{sys.modules} back as it was for C{name}: C{module}, or no entry.
    """
    if module is None:
        sys.modules.pop(name, None)
    else:
        sys.modules[name] = module
