"""
Tests for the shared cache in the pipeline (L{twistproxy.cache.runtime}):
whole requests through L{MemoryProxy}, on in-memory transports and a fake
clock, checking what the client gets and what reaches the origin.
"""

from __future__ import annotations

from dataclasses import replace
from typing import List, Optional

from twisted.internet.error import ConnectionRefusedError
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from twistproxy.cache.runtime import (
    PASS_TIME, Background, FetchSink, InvalidatingSink, StatusSink, TargetedSink,
)
from twistproxy.config import (
    Cache, Listener, ProxyConfig, Route, RouteCache, RouteMatch, Server, UpstreamGroup,
)
from twistproxy.interfaces import IResponseSink
from twistproxy.testing import MemoryPeer, MemoryProxy

START = 1_700_000_000.0
DATE = b"Tue, 14 Nov 2023 22:13:20 GMT"


def config(cache: Optional[RouteCache] = RouteCache(), **settings) -> ProxyConfig:
    return ProxyConfig(
        listeners=(Listener("main", "tcp:8080"),),
        upstreams={"app": UpstreamGroup(
            "app", (Server("http://127.0.0.1:8001", "http", "127.0.0.1", 8001),),
        )},
        routes=(Route("app", cache=cache),),
        cache=Cache(**settings),
    )


def head_of(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0]


def body_of(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[1]


def field(data: bytes, name: bytes) -> Optional[bytes]:
    for line in head_of(data).split(b"\r\n")[1:]:
        k, _, v = line.partition(b": ")
        if k.lower() == name.lower():
            return v
    return None


def response(body: bytes = b"hello", *fields: bytes, status: bytes = b"200 OK") -> bytes:
    lines = [b"HTTP/1.1 " + status] + list(fields)
    if not any(f.lower().startswith(b"content-length") for f in fields):
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class CacheHarness(SynchronousTestCase):
    """
    A proxy with a cached route, its clock at L{START}, and helpers to
    play client and origin.
    """

    route_cache = RouteCache()
    settings: dict = {}

    def setUp(self):
        self.proxy = MemoryProxy(config(self.route_cache, **self.settings))
        self.proxy.reactor.advance(START)
        self.backends: List[MemoryPeer] = []

    def send(self, target: bytes = b"/a", *fields: bytes, method: bytes = b"GET",
             client: Optional[MemoryPeer] = None, host: bytes = b"example.com") -> MemoryPeer:
        client = client or self.proxy.connect_client()
        lines = [b"%s %s HTTP/1.1" % (method, target), b"Host: " + host] + list(fields)
        client.send(b"\r\n".join(lines) + b"\r\n\r\n")
        return client

    def origin_request(self) -> Optional[bytes]:
        """
        What the origin received since last asked (accepting new
        connections), or C{None}.
        """
        while self.proxy.backend_attempts():
            self.backends.append(self.proxy.accept_backend())
        for backend in self.backends:
            data = backend.received()
            if data:
                self.current = backend
                return data
        return None

    def answer(self, data: bytes) -> None:
        self.current.send(data)

    def get(self, target: bytes = b"/a", *fields: bytes, origin: Optional[bytes] = None,
            method: bytes = b"GET") -> bytes:
        """
        One request; when the origin is asked, it answers C{origin} (which
        must then be given).  Returns what the client received.
        """
        client = self.send(target, *fields, method=method)
        self.asked = self.origin_request()
        if self.asked is not None:
            self.assertIsNotNone(origin, f"the origin was asked: {self.asked!r}")
            self.answer(origin)
        return client.received()

    def stored(self, target: bytes = b"/a", *fields: bytes) -> bytes:
        """
        A request that must be answered from the cache.
        """
        data = self.get(target, *fields)
        self.assertIsNone(self.asked, "the origin was asked")
        return data

    def advance(self, seconds: float) -> None:
        self.proxy.reactor.advance(seconds)

    def assert_reused_without(self, directive: bytes, name: bytes) -> None:
        """
        A response with C{directive} (naming the field C{name}) and
        C{max-age=60} is stored and served from the cache without that
        field, its other fields kept.
        """
        self.get(origin=response(b"v1", b"Cache-Control: " + directive + b", max-age=60",
                                 name + b": secret", b"X-Open: o"))
        hit = self.stored()
        self.assertIsNone(field(hit, name))
        self.assertEqual(field(hit, b"X-Open"), b"o")


class MissAndHitTests(CacheHarness):
    def test_miss_then_hit(self):
        """
        A cacheable response is passed on (Cache-Status: fwd=uri-miss;
        stored) and then served from the cache with Age and Cache-Status
        hit, without asking the origin.
        """
        first = self.get(origin=response(b"hello", b"Cache-Control: max-age=60"))
        self.assertEqual(body_of(first), b"hello")
        self.assertEqual(field(first, b"Cache-Status"),
                         b"twistproxy; fwd=uri-miss; stored; ttl=60")
        self.advance(5)
        second = self.stored()
        self.assertTrue(second.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertEqual(body_of(second), b"hello")
        self.assertEqual(field(second, b"Age"), b"5")
        self.assertEqual(field(second, b"Cache-Status"), b"twistproxy; hit; ttl=55")
        self.assertEqual(field(second, b"Content-Length"), b"5")
        self.assertEqual(self.proxy.cache.counts["hit"], 1)
        self.assertEqual(self.proxy.cache.counts["miss"], 1)

    def test_age_includes_origin_age(self):
        """
        RFC 9111 4.2.3: the Age the origin sent counts, and the response
        goes stale that much sooner.
        """
        self.get(origin=response(b"x", b"Cache-Control: max-age=60", b"Age: 50"))
        self.advance(5)
        self.assertEqual(field(self.stored(), b"Age"), b"55")
        self.advance(6)
        self.get(origin=response(b"y", b"Cache-Control: max-age=60"))
        self.assertIsNotNone(self.asked)

    def test_age_counts_transit_time(self):
        """
        RFC 9111 4.2.3: without a Date, the Age the origin sent plus the
        time the response took to come back is the age it arrived with.
        """
        client = self.send(b"/slow")
        self.origin_request()
        self.advance(3)
        self.answer(response(b"x", b"Cache-Control: max-age=60", b"Age: 10"))
        client.received()
        self.assertEqual(field(self.stored(b"/slow"), b"Age"), b"13")

    def test_age_invalid_or_huge(self):
        """
        RFC 9111 5.1: an Age that is not a number is ignored (the response
        is served fresh, with the cache's own Age); a huge one makes the
        response stale at once, so it is not served again without asking
        the origin.
        """
        self.get(b"/bad", origin=response(b"x", b"Cache-Control: max-age=60", b"Age: ten"))
        self.advance(2)
        self.assertEqual(field(self.stored(b"/bad"), b"Age"), b"2")
        self.get(b"/huge", origin=response(
            b"x", b"Cache-Control: max-age=60", b"Age: 99999999999999999999"))
        self.get(b"/huge", origin=response(b"y", b"Cache-Control: max-age=60"))
        self.assertIsNotNone(self.asked)

    def test_qualified_private_stored(self):
        """
        RFC 9111 5.2.2.7: a response with C{private="X-User"} is stored,
        and served again without that field.
        """
        self.assert_reused_without(b'private="X-User"', b"X-User")

    def test_expires_formats(self):
        """
        RFC 9111 4.2.1 and RFC 9110 5.6.7: an Expires in any of the three
        date formats gives the response its freshness.
        """
        for path, expires in [(b"/imf", b"Tue, 14 Nov 2023 22:14:20 GMT"),
                              (b"/850", b"Tuesday, 14-Nov-23 22:14:20 GMT"),
                              (b"/asc", b"Tue Nov 14 22:14:20 2023")]:
            first = self.get(path, origin=response(b"x", b"Date: " + DATE,
                                                   b"Expires: " + expires))
            self.assertEqual(field(first, b"Cache-Status"),
                             b"twistproxy; fwd=uri-miss; stored; ttl=60", expires)
        self.advance(59)
        for path in (b"/imf", b"/850", b"/asc"):
            self.stored(path)
        self.advance(2)
        self.get(b"/asc", origin=response(b"y"))
        self.assertIsNotNone(self.asked)

    def test_chunked_stored(self):
        """
        A chunked response is stored once complete and served with a
        Content-Length.
        """
        self.get(origin=b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        hit = self.stored()
        self.assertEqual(body_of(hit), b"abcde")
        self.assertEqual(field(hit, b"Content-Length"), b"5")

    def test_chunked_forms_stored(self):
        """
        RFC 9112 7.1: a chunked response is stored and served whatever the
        case of its coding, with chunk extensions and with a trailer
        section (which is not kept: RFC 9111 3.1); and Transfer-Encoding
        itself is never replayed (RFC 9111 3.1).
        """
        for path, te, chunks in [
            (b"/lower", b"chunked", b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
            (b"/upper", b"Chunked", b"5\r\nabcde\r\n0\r\n\r\n"),
            (b"/ext", b"chunked", b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
            (b"/trailer", b"chunked", b"5\r\nabcde\r\n0\r\nX-Sum: 1\r\n\r\n"),
        ]:
            first = self.get(path, origin=b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\n"
                                          b"Transfer-Encoding: " + te + b"\r\n\r\n" + chunks)
            self.assertIn(b"stored", field(first, b"Cache-Status"), path)
            hit = self.stored(path)
            self.assertEqual(body_of(hit), b"abcde", path)
            self.assertEqual(field(hit, b"Content-Length"), b"5", path)
            self.assertIsNone(field(hit, b"Transfer-Encoding"), path)
            self.assertIsNone(field(hit, b"X-Sum"), path)

    def test_connection_listed_not_replayed(self):
        """
        RFC 9111 3.1 and RFC 9110 7.6.1: a field the stored response's
        Connection field lists is neither stored nor replayed; the others
        are.
        """
        first = self.get(origin=response(b"x", b"Cache-Control: max-age=60",
                                         b"Connection: a, b", b"A: 1", b"B: 2", b"C: 3"))
        self.assertIsNone(field(first, b"A"))
        hit = self.stored()
        self.assertIsNone(field(hit, b"A"))
        self.assertIsNone(field(hit, b"B"))
        self.assertEqual(field(hit, b"C"), b"3")
        entry = self.proxy.cache.store.lookup(b"http://example.com/a\x00")
        self.assertEqual([k for k, _ in entry.headers],
                         [b"Cache-Control", b"C", b"Content-Length"])

    def test_not_stored(self):
        """
        RFC 9111 3: no-store, private and an error status are passed on
        and never served from the cache.
        """
        for cc, status in [(b"no-store, max-age=60", b"200 OK"),
                           (b"private, max-age=60", b"200 OK"),
                           (b"public", b"500 Oops")]:
            first = self.get(b"/n", origin=response(b"x", b"Cache-Control: " + cc, status=status))
            self.assertIn(b"fwd=uri-miss", field(first, b"Cache-Status"))
            self.assertNotIn(b"stored", field(first, b"Cache-Status"))
            self.get(b"/n", origin=response(b"x"))
            self.assertIsNotNone(self.asked, cc)
            self.proxy.cache.store.purge(b"")

    def test_authorization(self):
        """
        RFC 9111 3.5: a response to a request with Authorization is stored
        only when it says public (or s-maxage, must-revalidate).
        """
        self.get(b"/p", b"Authorization: Basic eA==",
                 origin=response(b"x", b"Cache-Control: max-age=60"))
        self.get(b"/p", origin=response(b"x"))
        self.assertIsNotNone(self.asked)
        self.get(b"/q", b"Authorization: Basic eA==",
                 origin=response(b"x", b"Cache-Control: public, max-age=60"))
        self.stored(b"/q")

    def test_incomplete_not_stored(self):
        """
        RFC 9111 3.3: a response cut short is not stored.
        """
        client = self.send(b"/cut")
        self.origin_request()
        self.answer(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 10\r\n\r\nabc")
        self.current.close()
        self.assertTrue(client.closed)
        self.get(b"/cut", origin=response(b"x"))
        self.assertIsNotNone(self.asked)

    def test_incomplete_chunked_not_stored(self):
        """
        RFC 9111 3.3: a chunked response whose last chunk never comes is
        not stored either.
        """
        client = self.send(b"/chunks")
        self.origin_request()
        self.answer(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        self.current.close()
        self.assertTrue(client.closed)
        self.get(b"/chunks", origin=response(b"x"))
        self.assertIsNotNone(self.asked)
        self.assertEqual(self.proxy.cache.counts["stored"], 0)

    def test_close_delimited_not_stored(self):
        """
        RFC 9111 3.3: a response delimited by the connection closing may
        be truncated without anyone knowing, so it is not stored.
        """
        self.send(b"/close")
        self.origin_request()
        self.answer(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\n\r\nabc")
        self.current.close()
        self.get(b"/close", origin=response(b"x"))
        self.assertIsNotNone(self.asked)

    def test_head_from_get(self):
        """
        RFC 9110 9.3.2: a HEAD is answered from the stored GET: same fields
        and Content-Length, no body.
        """
        self.get(origin=response(b"hello", b"Cache-Control: max-age=60", b"X-A: 1"))
        client = self.send(method=b"HEAD")
        self.assertIsNone(self.origin_request())
        data = client.received()
        self.assertTrue(data.endswith(b"\r\n\r\n"))
        self.assertEqual(field(data, b"Content-Length"), b"5")
        self.assertEqual(field(data, b"X-A"), b"1")

    def test_request_with_body_passed_on(self):
        """
        A GET with a body is not answered from the stored response: the
        body is not part of the key, so the origin answers it.
        """
        self.get(origin=response(b"hello", b"Cache-Control: max-age=60"))
        client = self.proxy.connect_client()
        client.send(b"GET /a HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n\r\nabc")
        self.assertTrue(self.origin_request().startswith(b"GET /a HTTP/1.1\r\n"))

    def test_head_miss_passed_on(self):
        """
        A HEAD that misses goes to the origin as a HEAD, and nothing is
        stored from its answer.
        """
        self.send(method=b"HEAD")
        self.assertTrue(self.origin_request().startswith(b"HEAD /a "))
        self.answer(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 5\r\n\r\n")
        self.get(origin=response(b"hello"))
        self.assertIsNotNone(self.asked)

    def test_max_object_size(self):
        """
        A response larger than the route's max_object_size is passed on
        whole but not stored.
        """
        self.proxy = MemoryProxy(config(RouteCache(max_object_size=4)))
        self.get(origin=response(b"hello", b"Cache-Control: max-age=60"))
        self.get(origin=response(b"hello"))
        self.assertIsNotNone(self.asked)
        self.get(b"/s", origin=response(b"hi", b"Cache-Control: max-age=60"))
        self.stored(b"/s")

    def test_key_query_and_host(self):
        """
        RFC 9111 2: different queries and hosts are different keys.
        """
        self.get(b"/a?x=1", origin=response(b"1", b"Cache-Control: max-age=60"))
        self.get(b"/a?x=2", origin=response(b"2", b"Cache-Control: max-age=60"))
        self.assertIsNotNone(self.asked)
        self.assertEqual(body_of(self.stored(b"/a?x=1")), b"1")

    def test_sinks(self):
        """
        The cache's sinks provide IResponseSink.
        """
        for sink in [StatusSink(None, (), b""), TargetedSink(None, ()), Background(b"http")]:
            self.assertTrue(verifyObject(IResponseSink, sink))
        self.assertTrue(IResponseSink.implementedBy(FetchSink))
        self.assertTrue(IResponseSink.implementedBy(InvalidatingSink))


class VaryTests(CacheHarness):
    def test_variants_side_by_side(self):
        """
        RFC 9111 4.1: responses that vary are kept per variant, matched on
        the normalised request fields Vary lists.
        """
        vary = (b"Cache-Control: max-age=60", b"Vary: Accept-Encoding")
        self.get(b"/v", b"Accept-Encoding: gzip", origin=response(b"gz", *vary))
        self.get(b"/v", b"Accept-Encoding: br", origin=response(b"br", *vary))
        self.assertIsNotNone(self.asked)
        self.assertEqual(body_of(self.stored(b"/v", b"Accept-Encoding: GZIP")), b"gz")
        self.assertEqual(body_of(self.stored(b"/v", b"Accept-Encoding:  br")), b"br")
        miss = self.get(b"/v", origin=response(b"none", *vary))
        self.assertEqual(field(miss, b"Cache-Status"),
                         b"twistproxy; fwd=vary-miss; stored; ttl=60")

    def test_vary_star(self):
        """
        RFC 9111 4.1: Vary: * matches no later request.
        """
        self.get(b"/s", origin=response(b"x", b"Cache-Control: max-age=60", b"Vary: *"))
        self.get(b"/s", origin=response(b"x"))
        self.assertIsNotNone(self.asked)


class RequestDirectiveTests(CacheHarness):
    def setUp(self):
        super().setUp()
        self.get(origin=response(b"v1", b"Cache-Control: max-age=60", b'ETag: "1"'))
        self.advance(10)

    def test_no_cache_revalidates(self):
        """
        RFC 9111 5.2.1.4: a client's no-cache sends a conditional request
        to the origin (Cache-Status fwd=request).
        """
        data = self.get(b"/a", b"Cache-Control: no-cache",
                        origin=response(b"", status=b"304 Not Modified"))
        self.assertIn(b'If-None-Match: "1"', self.asked)
        self.assertEqual(body_of(data), b"v1")
        self.assertIn(b"fwd=request", field(data, b"Cache-Status"))

    def test_pragma_no_cache(self):
        """
        RFC 9111 5.4: Pragma: no-cache counts when there is no
        Cache-Control.
        """
        self.get(b"/a", b"Pragma: no-cache", origin=response(b"v2"))
        self.assertIsNotNone(self.asked)

    def test_max_age(self):
        """
        RFC 9111 5.2.1.1: max-age=5 refuses a response 10 seconds old;
        max-age=20 takes it.
        """
        self.stored(b"/a", b"Cache-Control: max-age=20")
        self.get(b"/a", b"Cache-Control: max-age=5", origin=response(b"v2"))
        self.assertIsNotNone(self.asked)

    def test_min_fresh(self):
        """
        RFC 9111 5.2.1.3: min-fresh=55 needs more freshness than the 50
        seconds left.
        """
        self.stored(b"/a", b"Cache-Control: min-fresh=40")
        self.get(b"/a", b"Cache-Control: min-fresh=55", origin=response(b"v2"))
        self.assertIsNotNone(self.asked)

    def test_max_stale(self):
        """
        RFC 9111 5.2.1.2: max-stale lets the client take a stale response.
        """
        self.advance(60)
        data = self.stored(b"/a", b"Cache-Control: max-stale=30")
        self.assertEqual(body_of(data), b"v1")
        self.assertEqual(field(data, b"Cache-Status"), b"twistproxy; hit; ttl=-10")

    def test_only_if_cached(self):
        """
        RFC 9111 5.2.1.7: only-if-cached is served from the cache, or
        answered 504 without asking the origin.
        """
        self.assertEqual(body_of(self.stored(b"/a", b"Cache-Control: only-if-cached")), b"v1")
        data = self.stored(b"/other", b"Cache-Control: only-if-cached")
        self.assertTrue(data.startswith(b"HTTP/1.1 504 "))
        self.advance(100)
        data = self.stored(b"/a", b"Cache-Control: only-if-cached")
        self.assertTrue(data.startswith(b"HTTP/1.1 504 "))

    def test_only_if_cached_never_forwarded(self):
        """
        RFC 9111 5.2.1.7: only-if-cached never reaches the origin, even on
        a request the cache otherwise leaves to the origin (If-Match,
        If-Unmodified-Since, a body): it is answered 504.
        """
        for extra in [b'If-Match: "1"', b"If-Unmodified-Since: " + DATE,
                      b"Content-Length: 2\r\n\r\nab"]:
            data = self.stored(b"/a", b"Cache-Control: only-if-cached", extra)
            self.assertTrue(data.startswith(b"HTTP/1.1 504 "), extra)

    def test_no_store_request(self):
        """
        RFC 9111 5.2.1.5: a request's no-store keeps its response out of
        the cache.
        """
        self.get(b"/ns", b"Cache-Control: no-store",
                 origin=response(b"x", b"Cache-Control: max-age=60"))
        self.get(b"/ns", origin=response(b"x"))
        self.assertIsNotNone(self.asked)


class IgnoreNoCacheTests(CacheHarness):
    route_cache = RouteCache(client_no_cache="ignore")

    def test_ignored(self):
        """
        With client_no_cache = "ignore", a client's no-cache is served from
        the cache.
        """
        self.get(origin=response(b"v1", b"Cache-Control: max-age=60"))
        self.stored(b"/a", b"Cache-Control: no-cache")


class ValidationTests(CacheHarness):
    def test_revalidate_304(self):
        """
        RFC 9111 4.3.1, 4.3.4 and 3.2: a stale response is revalidated with
        its validators; the 304's fields update the stored response, which
        is served and fresh again.
        """
        self.get(origin=response(b"v1", b"Cache-Control: max-age=10", b'ETag: "1"',
                                 b"Last-Modified: " + DATE, b"X-Old: a"))
        self.advance(20)
        data = self.get(origin=response(b"", b"Cache-Control: max-age=100", b"X-Old: b",
                                        b'ETag: "1"', status=b"304 Not Modified"))
        self.assertIn(b'If-None-Match: "1"\r\n', self.asked)
        self.assertIn(b"If-Modified-Since: " + DATE, self.asked)
        self.assertTrue(data.startswith(b"HTTP/1.1 200 OK"))
        self.assertEqual(body_of(data), b"v1")
        self.assertEqual(field(data, b"X-Old"), b"b")
        self.assertEqual(field(data, b"Cache-Status"),
                         b"twistproxy; fwd=stale; fwd-status=304; stored; ttl=100")
        self.advance(50)
        hit = self.stored()
        self.assertEqual(field(hit, b"X-Old"), b"b")
        self.assertEqual(field(hit, b"Age"), b"50")
        self.assertEqual(self.proxy.cache.counts["revalidated"], 1)

    def test_revalidate_200_replaces(self):
        """
        RFC 9111 4.3.3: a full response to a validation replaces the
        stored one.
        """
        self.get(origin=response(b"v1", b"Cache-Control: max-age=10", b'ETag: "1"'))
        self.advance(20)
        data = self.get(origin=response(b"v2", b"Cache-Control: max-age=10", b'ETag: "2"'))
        self.assertEqual(body_of(data), b"v2")
        self.assertEqual(body_of(self.stored()), b"v2")

    def test_unmatched_304(self):
        """
        RFC 9111 4.3.4: a 304 naming another entity tag than the stored
        response's updates nothing and is not passed to a client that did
        not ask conditionally: 502, and the stored response goes.
        """
        self.get(origin=response(b"v1", b"Cache-Control: max-age=10", b'ETag: "1"'))
        self.advance(20)
        data = self.get(origin=response(b"", b'ETag: "9"', status=b"304 Not Modified"))
        self.assertTrue(data.startswith(b"HTTP/1.1 502 "), data)
        self.assertEqual(self.proxy.exchanges[-1].reason, "cache_unmatched_304")
        self.get(origin=response(b"v2", b"Cache-Control: max-age=10"))
        self.assertNotIn(b"If-None-Match", self.asked)

    def test_client_condition_without_stored_validator(self):
        """
        RFC 9110 13.2.2 and RFC 9111 4.3.4: with no validator in the stale
        stored response, the client's own If-None-Match goes to the
        origin, and the origin's 304 (for an entity tag the cache does not
        have) answers the client as it is; the stored response stays.
        """
        self.get(origin=response(b"v1", b"Cache-Control: max-age=10, stale-if-error=60"))
        self.advance(20)
        data = self.get(b"/a", b'If-None-Match: "x"', origin=response(
            b"", b'ETag: "x"', b"Cache-Control: max-age=10", status=b"304 Not Modified"))
        self.assertIn(b'If-None-Match: "x"', self.asked)
        self.assertTrue(data.startswith(b"HTTP/1.1 304 Not Modified"), data)
        self.assertEqual(field(data, b"ETag"), b'"x"')
        data = self.get(origin=response(b"v2", status=b"503 Unavailable"))
        self.assertEqual(body_of(data), b"v1")

    def test_client_validators_replaced(self):
        """
        RFC 9111 4.3.1: the cache validates with its own validators, not
        the client's, and answers the client's condition itself.
        """
        self.get(origin=response(b"v1", b"Cache-Control: max-age=10", b'ETag: "1"'))
        self.advance(20)
        data = self.get(b"/a", b'If-None-Match: "0"',
                        origin=response(b"", b'ETag: "1"', status=b"304 Not Modified"))
        self.assertNotIn(b'"0"', self.asked)
        self.assertTrue(data.startswith(b"HTTP/1.1 200 OK"))

    def test_client_conditional_from_fresh(self):
        """
        RFC 9111 4.3.2: a client's If-None-Match matching a fresh stored
        response is answered 304 by the cache; If-Modified-Since too.
        """
        self.get(origin=response(b"v1", b"Cache-Control: max-age=60", b'ETag: "1"',
                                 b"Last-Modified: Tue, 14 Nov 2023 21:00:00 GMT"))
        self.advance(3)
        data = self.stored(b"/a", b'If-None-Match: "1"')
        self.assertTrue(data.startswith(b"HTTP/1.1 304 Not Modified"))
        self.assertEqual(field(data, b"ETag"), b'"1"')
        self.assertEqual(field(data, b"Age"), b"3")
        self.assertTrue(data.endswith(b"\r\n\r\n"))
        data = self.stored(b"/a", b'If-None-Match: "2"')
        self.assertTrue(data.startswith(b"HTTP/1.1 200 OK"))
        data = self.stored(b"/a", b"If-Modified-Since: " + DATE)
        self.assertTrue(data.startswith(b"HTTP/1.1 304 "))

    def test_if_match_to_origin(self):
        """
        RFC 9110 13.2.2: If-Match is the origin's to evaluate.
        """
        self.get(origin=response(b"v1", b"Cache-Control: max-age=60", b'ETag: "1"'))
        self.get(b"/a", b'If-Match: "1"', origin=response(b"v1"))
        self.assertIsNotNone(self.asked)

    def test_response_no_cache(self):
        """
        RFC 9111 5.2.2.4: a stored response with no-cache is validated
        every time.
        """
        self.get(origin=response(b"v1", b"Cache-Control: no-cache, max-age=60", b'ETag: "1"'))
        data = self.get(origin=response(b"", b'ETag: "1"', status=b"304 Not Modified"))
        self.assertIn(b'If-None-Match: "1"', self.asked)
        self.assertEqual(body_of(data), b"v1")

    def test_no_cache_fields(self):
        """
        RFC 9111 5.2.2.4: no-cache with field names: reused without
        validation, but without those fields.
        """
        self.assert_reused_without(b'no-cache="X-Secret"', b"X-Secret")

    def test_must_revalidate_no_stale(self):
        """
        RFC 9111 5.2.2.2: a stale must-revalidate response is not served
        when the origin fails: the client gets the error.
        """
        self.get(origin=response(b"v1", b"Cache-Control: max-age=10, must-revalidate, "
                                        b"stale-if-error=600", b'ETag: "1"'))
        self.advance(20)
        data = self.get(origin=response(b"down", status=b"503 Unavailable"))
        self.assertTrue(data.startswith(b"HTTP/1.1 503 "))

    def test_proxy_revalidate_and_max_stale(self):
        """
        RFC 9111 5.2.2.8: proxy-revalidate overrides the client's max-stale
        in a shared cache.
        """
        self.get(origin=response(b"v1", b"Cache-Control: max-age=10, proxy-revalidate"))
        self.advance(20)
        self.get(b"/a", b"Cache-Control: max-stale", origin=response(b"v2"))
        self.assertIsNotNone(self.asked)


class StaleTests(CacheHarness):
    def test_stale_if_error_5xx(self):
        """
        RFC 5861 4: within stale-if-error, a 5xx from the origin is
        replaced by the stale response.
        """
        self.get(origin=response(b"v1", b"Cache-Control: max-age=10, stale-if-error=60"))
        self.advance(20)
        data = self.get(origin=response(b"oops", status=b"502 Bad Gateway"))
        self.assertTrue(data.startswith(b"HTTP/1.1 200 OK"))
        self.assertEqual(body_of(data), b"v1")
        self.assertEqual(field(data, b"Cache-Status"),
                         b"twistproxy; hit; fwd=stale; fwd-status=502; ttl=-10; "
                         b"detail=stale-if-error")
        self.advance(60)
        data = self.get(origin=response(b"oops", status=b"502 Bad Gateway"))
        self.assertTrue(data.startswith(b"HTTP/1.1 502 "))

    def test_stale_if_error_truncated_5xx(self):
        """
        RFC 5861 4: a 5xx cut short is replaced by the stale response too.
        """
        self.get(origin=response(b"v1", b"Cache-Control: max-age=10, stale-if-error=60"))
        self.advance(20)
        client = self.send()
        self.origin_request()
        self.answer(b"HTTP/1.1 500 Oops\r\nContent-Length: 10\r\n\r\nabc")
        self.current.close()
        data = client.received()
        self.assertTrue(data.startswith(b"HTTP/1.1 200 OK"), data)
        self.assertEqual(body_of(data), b"v1")

    def test_stale_if_error_unreachable(self):
        """
        RFC 5861 4: when the origin cannot be reached at all, the stale
        response is served.
        """
        self.get(origin=response(b"v1", b"Cache-Control: max-age=10, stale-if-error=60"))
        self.current.close()
        self.advance(20)
        client = self.send()
        self.proxy.refuse_backend(ConnectionRefusedError())
        data = client.received()
        self.assertTrue(data.startswith(b"HTTP/1.1 200 OK"), data)
        self.assertEqual(body_of(data), b"v1")

    def test_stale_while_revalidate(self):
        """
        RFC 5861 3: within stale-while-revalidate, the stale response is
        served at once and one background request refreshes it.
        """
        self.get(origin=response(b"v1", b"Cache-Control: max-age=10, stale-while-revalidate=60",
                                 b'ETag: "1"'))
        self.advance(20)
        data = self.send().received()
        self.assertEqual(body_of(data), b"v1")
        self.assertIn(b"detail=stale-while-revalidate", field(data, b"Cache-Status"))
        self.assertIn(b'If-None-Match: "1"', self.origin_request())
        # A second stale hit while the refresh is under way starts no other.
        self.assertEqual(body_of(self.send().received()), b"v1")
        self.assertIsNone(self.origin_request())
        self.answer(response(b"v2", b"Cache-Control: max-age=10", b'ETag: "2"'))
        self.assertEqual(body_of(self.stored()), b"v2")
        self.assertEqual(self.proxy.forwarder.groups["app"].in_flight, 0)


class CollapseTests(CacheHarness):
    def test_one_request_for_many(self):
        """
        Concurrent misses for one URL send one request to the origin; the
        others are served from its response.
        """
        clients = [self.send(b"/c") for _ in range(3)]
        self.assertIsNotNone(self.origin_request())
        self.assertIsNone(self.origin_request())
        self.answer(response(b"shared", b"Cache-Control: max-age=60"))
        for client in clients:
            self.assertEqual(body_of(client.received()), b"shared")
        self.assertEqual(self.proxy.cache.counts["collapsed"], 2)

    def test_uncacheable_releases(self):
        """
        When the response turns out not storable, the waiting requests go
        to the origin themselves at once.
        """
        first, second = self.send(b"/u"), self.send(b"/u")
        self.origin_request()
        self.answer(response(b"private", b"Cache-Control: private"))
        self.assertEqual(body_of(first.received()), b"private")
        self.assertIsNotNone(self.origin_request())
        self.answer(response(b"private2", b"Cache-Control: private"))
        self.assertEqual(body_of(second.received()), b"private2")

    def test_lock_timeout(self):
        """
        A waiting request goes on its own after lock_timeout.
        """
        self.send(b"/t")
        self.origin_request()
        waiting = self.send(b"/t")
        self.assertIsNone(self.origin_request())
        self.advance(5)
        self.assertIsNotNone(self.origin_request())
        self.answer(response(b"own"))
        self.assertEqual(body_of(waiting.received()), b"own")

    def test_leader_leaves(self):
        """
        When the client of the request being fetched leaves, the requests
        waiting for it go on at once rather than after the lock timeout.
        """
        leader = self.send(b"/g")
        self.origin_request()
        waiting = self.send(b"/g")
        leader.close()
        self.assertIsNotNone(self.origin_request())
        self.answer(response(b"x"))
        self.assertEqual(body_of(waiting.received()), b"x")
        self.assertEqual(self.proxy.cache.in_flight, {})

    def test_not_collapsed_after_pass(self):
        """
        Once a URL's response could not be stored, requests for it pass
        through side by side for PASS_TIME, and what they bring back is not
        stored.
        """
        self.get(b"/p", origin=response(b"x", b"Cache-Control: no-store"))
        first, second = self.send(b"/p"), self.send(b"/p")
        self.assertIsNotNone(self.origin_request())
        self.answer(response(b"1", b"Cache-Control: max-age=60"))
        self.assertIsNotNone(self.origin_request())
        self.answer(response(b"2", b"Cache-Control: max-age=60"))
        self.assertEqual(self.proxy.cache.counts["collapsed"], 0)
        self.assertEqual(body_of(second.received()), b"2")
        self.assertEqual(field(first.received(), b"Cache-Status"),
                         b"twistproxy; fwd=uri-miss; detail=pass")
        # Once the pass is over, responses are stored again.
        self.advance(PASS_TIME)
        self.get(b"/p", origin=response(b"3", b"Cache-Control: max-age=60"))
        self.assertEqual(body_of(self.stored(b"/p")), b"3")

    def test_nothing_to_keep(self):
        """
        A response with no freshness and no validator is not stored (it
        would be stale at once) and does not claim to be.
        """
        first = self.get(b"/z", origin=response(b"x"))
        self.assertEqual(field(first, b"Cache-Status"), b"twistproxy; fwd=uri-miss")
        self.assertEqual(self.proxy.cache.counts["stored"], 0)

    def test_no_pass_after_failure_or_post(self):
        """
        A 5xx, or a POST's answer, does not make later GETs of the URL pass
        through: the next miss is stored and collapsed as usual.
        """
        self.get(b"/f", origin=response(b"down", status=b"503 Unavailable"))
        self.get(b"/f", method=b"POST", origin=response(b"posted"))
        self.get(b"/f", origin=response(b"x", b"Cache-Control: max-age=60"))
        self.stored(b"/f")

    def test_no_pass_after_304(self):
        """
        A client's conditional request that misses and gets the origin's
        304 says nothing of whether the URL can be stored: the next GET is
        stored as usual, not passed through.
        """
        data = self.get(b"/c", b'If-None-Match: "1"', origin=response(
            b"", b'ETag: "1"', b"Cache-Control: max-age=60", status=b"304 Not Modified"))
        self.assertTrue(data.startswith(b"HTTP/1.1 304 "))
        data = self.get(b"/c", origin=response(b"x", b"Cache-Control: max-age=60"))
        self.assertEqual(field(data, b"Cache-Status"), b"twistproxy; fwd=uri-miss; stored; ttl=60")
        self.stored(b"/c")

    def test_waiter_leaves(self):
        """
        A waiting client that disconnects is forgotten.
        """
        self.send(b"/w")
        self.origin_request()
        waiting = self.send(b"/w")
        waiting.close()
        self.answer(response(b"x", b"Cache-Control: max-age=60"))
        self.assertIsNone(self.origin_request())


class InvalidationTests(CacheHarness):
    def test_unsafe_invalidates(self):
        """
        RFC 9111 4.4: a successful POST, PUT, DELETE or PATCH invalidates
        the target URI.
        """
        for method in [b"POST", b"PUT", b"DELETE", b"PATCH"]:
            self.get(b"/i", origin=response(b"x", b"Cache-Control: max-age=60"))
            self.get(b"/i", method=method, origin=response(b"done"))
            self.get(b"/i", origin=response(b"x", b"Cache-Control: max-age=60"))
            self.assertIsNotNone(self.asked, method)
            self.proxy.cache.store.purge(b"")

    def test_location(self):
        """
        RFC 9111 4.4: the same-origin Location and Content-Location are
        invalidated too; another origin's are not.
        """
        for path in [b"/l1", b"/l2", b"/l3"]:
            self.get(path, origin=response(b"x", b"Cache-Control: max-age=60"))
        self.get(b"/i", method=b"POST", origin=response(
            b"", b"Location: /l1", b"Content-Location: http://example.com/l2",
            status=b"201 Created"))
        self.get(b"/l1", origin=response(b"x"))
        self.assertIsNotNone(self.asked)
        self.get(b"/l2", origin=response(b"x"))
        self.assertIsNotNone(self.asked)
        self.stored(b"/l3")

    def test_unknown_method_invalidates(self):
        """
        RFC 9111 4.4: a successful answer to a method whose safety is
        unknown (M-SEARCH, PROPPATCH) invalidates like POST; OPTIONS and
        TRACE are safe (RFC 9110 9.2.1) and invalidate nothing.  (The
        route allows TRACE, which the proxy refuses by default.)
        """
        base = config(self.route_cache)
        self.proxy = MemoryProxy(replace(
            base, routes=(replace(base.routes[0], allow_trace=True),)))
        self.proxy.reactor.advance(START)
        for method in [b"M-SEARCH", b"PROPPATCH"]:
            self.get(b"/u", origin=response(b"x", b"Cache-Control: max-age=60"))
            self.get(b"/u", method=method, origin=response(b"done"))
            self.assertIsNotNone(self.asked, method)
            self.get(b"/u", origin=response(b"x", b"Cache-Control: max-age=60"))
            self.assertIsNotNone(self.asked, method)
        for method in [b"OPTIONS", b"TRACE"]:
            self.get(b"/u", method=method, origin=response(b"done"))
            self.assertIsNotNone(self.asked, method)
            self.stored(b"/u")
        self.assertEqual(self.proxy.cache.counts["invalidated"], 2)

    def test_failure_keeps(self):
        """
        RFC 9111 4.4: an error answer to an unsafe method invalidates
        nothing.
        """
        self.get(b"/k", origin=response(b"x", b"Cache-Control: max-age=60"))
        self.get(b"/k", method=b"DELETE", origin=response(b"no", status=b"500 Error"))
        self.stored(b"/k")


COOKIE = b"Set-Cookie: session=secret"


class SetCookieTests(CacheHarness):
    def test_not_stored_by_default(self):
        """
        A response with Set-Cookie is passed on, with its cookie, and not
        stored (as nginx and Varnish do): the next client, without
        cookies, never gets that cookie from the cache (RFC 9111 7.3).
        """
        first = self.get(origin=response(b"x", b"Cache-Control: max-age=60", COOKIE))
        self.assertEqual(field(first, b"Set-Cookie"), b"session=secret")
        self.assertNotIn(b"stored", field(first, b"Cache-Status"))
        second = self.get(origin=response(b"y", b"Cache-Control: max-age=60"))
        self.assertIsNotNone(self.asked)
        self.assertEqual(body_of(second), b"y")
        self.assertIsNone(field(second, b"Set-Cookie"))
        self.assertEqual(self.proxy.cache.counts["stored"], 0)

    def test_origin_keeps_cookie_from_reuse(self):
        """
        RFC 9111 5.2.2.7 and 5.2.2.4: a response whose private or no-cache
        names Set-Cookie is stored, and reused without the cookie.
        """
        for cc in [b'max-age=60, private="Set-Cookie"', b'max-age=60, no-cache="Set-Cookie"']:
            self.get(origin=response(b"x", b"Cache-Control: " + cc, COOKIE))
            self.assertIsNone(field(self.stored(), b"Set-Cookie"), cc)
            self.proxy.cache.store.purge(b"")

    def test_304_cookie_not_stored(self):
        """
        RFC 9111 3.2: a 304 updates the stored fields, but a cookie it
        sets goes to the client whose request it answers, and is not
        stored for the others.
        """
        self.get(origin=response(b"v1", b"Cache-Control: max-age=10", b'ETag: "1"'))
        self.advance(20)
        data = self.get(origin=response(b"", b"Cache-Control: max-age=10", b'ETag: "1"',
                                        COOKIE, status=b"304 Not Modified"))
        self.assertEqual(body_of(data), b"v1")
        self.assertEqual(field(data, b"Set-Cookie"), b"session=secret")
        self.assertIsNone(field(self.stored(), b"Set-Cookie"))


class StripCookieTests(CacheHarness):
    route_cache = RouteCache(set_cookie="strip")

    def test_stored_without_cookie(self):
        """
        set_cookie = "strip": the response is stored without Set-Cookie;
        the client whose request fetched it gets the cookie, the clients
        served from the cache do not.
        """
        first = self.get(origin=response(b"x", b"Cache-Control: max-age=60", COOKIE))
        self.assertEqual(field(first, b"Set-Cookie"), b"session=secret")
        self.assertIn(b"stored", field(first, b"Cache-Status"))
        hit = self.stored()
        self.assertEqual(body_of(hit), b"x")
        self.assertIsNone(field(hit, b"Set-Cookie"))


class DownHarness(CacheHarness):
    """
    A stored response gone stale, and an origin that fails.
    """

    def stale(self, cc: bytes = b"max-age=10", past: float = 20) -> None:
        """
        Store a response with C{cc}, let it go stale C{past} seconds past
        its freshness, and close the pooled connection to the origin.
        """
        self.get(origin=response(b"v1", b"Cache-Control: " + cc))
        self.current.close()
        self.advance(10 + past)

    def refused(self) -> bytes:
        """
        A request while every connection to the origin is refused.
        """
        client = self.send()
        while self.proxy.backend_attempts():
            self.proxy.refuse_backend(ConnectionRefusedError())
        return client.received()


class OriginDownTests(DownHarness):
    """
    The route's stale_if_error (one hour by default): a stored response
    stands in for an origin that cannot be reached (RFC 9111 4.2.4).
    """

    def test_refused(self):
        """
        The origin refuses connections: the stale response is served,
        Cache-Status saying so (RFC 9211: a hit after a forward for a
        stale response, with the status the proxy would have sent).
        """
        self.stale()
        data = self.refused()
        self.assertTrue(data.startswith(b"HTTP/1.1 200 OK"), data)
        self.assertEqual(body_of(data), b"v1")
        self.assertEqual(field(data, b"Cache-Status"),
                         b"twistproxy; hit; fwd=stale; fwd-status=502; ttl=-20; "
                         b"detail=stale-if-error")
        self.assertEqual(self.proxy.cache.counts["stale"], 1)

    def test_closed(self):
        """
        The origin accepts and closes without answering: the stale
        response is served.
        """
        self.stale()
        client = self.send()
        while self.origin_request() is not None:
            self.current.close()
        data = client.received()
        self.assertEqual(body_of(data), b"v1")
        self.assertIn(b"fwd=stale; fwd-status=502", field(data, b"Cache-Status"))

    def test_timeout(self):
        """
        The origin accepts and never answers: after the upstream timeout
        the stale response is served (fwd-status 504).
        """
        self.stale()
        client = self.send()
        self.assertIsNotNone(self.origin_request())
        self.advance(61)
        data = client.received()
        self.assertEqual(body_of(data), b"v1")
        self.assertIn(b"fwd=stale; fwd-status=504", field(data, b"Cache-Status"))

    def test_window(self):
        """
        Within stale_if_error past its freshness the response is served;
        beyond it the client gets the error.
        """
        self.stale(past=3590)
        self.assertEqual(body_of(self.refused()), b"v1")
        self.advance(20)
        self.assertTrue(self.refused().startswith(b"HTTP/1.1 502 "))

    def test_forbidden(self):
        """
        RFC 9111 4.2.4, 5.2.2.2, 5.2.2.4, 5.2.2.8 and 5.2.2.10: a response
        with must-revalidate, proxy-revalidate, no-cache or s-maxage is
        never served stale: the client gets the error.
        """
        for cc in [b"max-age=10, must-revalidate", b"max-age=10, proxy-revalidate",
                   b"max-age=10, no-cache", b"s-maxage=10"]:
            self.stale(cc)
            self.assertTrue(self.refused().startswith(b"HTTP/1.1 502 "), cc)
            self.proxy.cache.store.purge(b"")

    def test_5xx_passed_on(self):
        """
        The origin's own 5xx answer is passed on: stale_if_error covers an
        origin that cannot be reached (unless stale_on_5xx), as nginx's
        proxy_cache_use_stale error timeout does.
        """
        self.stale()
        data = self.get(origin=response(b"down", status=b"503 Unavailable"))
        self.assertTrue(data.startswith(b"HTTP/1.1 503 "))


class OriginDown5xxTests(DownHarness):
    route_cache = RouteCache(stale_on_5xx=True)

    def test_5xx_passed_on(self):
        """
        stale_on_5xx = true: the origin's 5xx answer is replaced by the
        stale response too, within the window.
        """
        self.stale()
        data = self.get(origin=response(b"down", status=b"503 Unavailable"))
        self.assertEqual(body_of(data), b"v1")
        self.assertIn(b"fwd=stale; fwd-status=503", field(data, b"Cache-Status"))


class NoGraceTests(DownHarness):
    route_cache = RouteCache(stale_if_error=0)

    def test_refused(self):
        """
        stale_if_error = 0: a stale response is not served when the origin
        is down, unless the response's own stale-if-error allows it.
        """
        self.stale()
        self.assertTrue(self.refused().startswith(b"HTTP/1.1 502 "))
        self.proxy.cache.store.purge(b"")
        self.stale(b"max-age=10, stale-if-error=60")
        self.assertEqual(body_of(self.refused()), b"v1")


class RangeTests(CacheHarness):
    def test_range_from_stored(self):
        """
        RFC 9110 14.2: a range of a stored full response is answered 206
        with Content-Range; past the end, 416.
        """
        self.get(origin=response(b"0123456789", b"Cache-Control: max-age=60"))
        data = self.stored(b"/a", b"Range: bytes=2-4")
        self.assertTrue(data.startswith(b"HTTP/1.1 206 Partial Content"))
        self.assertEqual(field(data, b"Content-Range"), b"bytes 2-4/10")
        self.assertEqual(body_of(data), b"234")
        data = self.stored(b"/a", b"Range: bytes=20-")
        self.assertTrue(data.startswith(b"HTTP/1.1 416 "))
        self.assertEqual(field(data, b"Content-Range"), b"bytes */10")

    def test_several_ranges_whole(self):
        """
        RFC 9110 14.2: the cache serves one range only; a request for
        several gets the whole stored response: 200, the full body and its
        length, no Content-Range, with Age.
        """
        self.get(origin=response(b"0123456789", b"Cache-Control: max-age=60"))
        data = self.stored(b"/a", b"Range: bytes=0-1,4-5")
        self.assertTrue(data.startswith(b"HTTP/1.1 200 OK\r\n"), data)
        self.assertIsNone(field(data, b"Content-Range"))
        self.assertEqual(field(data, b"Content-Length"), b"10")
        self.assertEqual(body_of(data), b"0123456789")
        self.assertEqual(field(data, b"Age"), b"0")

    def test_if_range_mismatch_whole(self):
        """
        RFC 9110 13.1.5: a range with an If-Range that does not match the
        stored entity tag gets the whole stored response; one that matches
        gets the range, with Age.
        """
        self.get(origin=response(b"0123456789", b"Cache-Control: max-age=60", b'ETag: "a"'))
        data = self.stored(b"/a", b"Range: bytes=0-1", b'If-Range: "b"')
        self.assertTrue(data.startswith(b"HTTP/1.1 200 OK\r\n"), data)
        self.assertEqual(body_of(data), b"0123456789")
        data = self.stored(b"/a", b"Range: bytes=0-1", b'If-Range: "a"')
        self.assertTrue(data.startswith(b"HTTP/1.1 206 "), data)
        self.assertEqual(body_of(data), b"01")
        self.assertEqual(field(data, b"Age"), b"0")

    def test_bypass_status(self):
        """
        RFC 9211 2.2: a range or HEAD request that misses is passed on
        with C{Cache-Status: ...; fwd=bypass}, and nothing is stored.
        """
        self.send(b"/b", method=b"HEAD")
        self.origin_request()
        self.answer(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 1\r\n\r\n")
        data = self.get(b"/b", b"Range: bytes=0-0", origin=response(
            b"0", b"Content-Range: bytes 0-0/10", b"Cache-Control: max-age=60",
            status=b"206 Partial Content"))
        self.assertEqual(field(data, b"Cache-Status"), b"twistproxy; fwd=bypass")
        self.assertEqual(self.proxy.cache.counts["stored"], 0)

    def test_range_miss_passed_on(self):
        """
        A range request that misses goes to the origin as it is; the 206
        is not stored.
        """
        self.get(b"/r", b"Range: bytes=0-1", origin=response(
            b"01", b"Content-Range: bytes 0-1/10", b"Cache-Control: max-age=60",
            status=b"206 Partial Content"))
        self.assertIn(b"Range: bytes=0-1", self.asked)
        self.get(b"/r", origin=response(b"0123456789"))
        self.assertIsNotNone(self.asked)


class CounterTests(CacheHarness):
    def test_counters(self):
        """
        Each outcome is counted once: a miss that is stored, a hit, a stale
        response served (max-stale, stale-while-revalidate and
        stale-if-error alike), a revalidation, an invalidation.
        """
        counts = self.proxy.cache.counts
        self.get(origin=response(b"v1", b"Cache-Control: max-age=10, stale-while-revalidate=5, "
                                        b"stale-if-error=100", b'ETag: "1"'))
        self.assertEqual((counts["miss"], counts["stored"]), (1, 1))
        self.stored()
        self.assertEqual(counts["hit"], 1)
        self.advance(12)
        self.stored(b"/a", b"Cache-Control: max-stale=5")
        self.assertEqual(counts["stale"], 1)
        # Stale-while-revalidate: served stale, refreshed by a 304.
        self.send().received()
        self.assertEqual(counts["stale"], 2)
        self.origin_request()
        self.answer(response(b"", b"Cache-Control: max-age=10, stale-if-error=100",
                             b'ETag: "1"', status=b"304 Not Modified"))
        self.assertEqual(counts["revalidated"], 1)
        self.advance(30)
        self.get(origin=response(b"down", status=b"503 Unavailable"))
        self.assertEqual(counts["stale"], 3)
        self.get(method=b"DELETE", origin=response(b"gone"))
        self.assertEqual(counts["invalidated"], 1)
        # The misses: the first request and the one the origin failed.
        self.assertEqual((counts["hit"], counts["miss"]), (1, 2))


class TargetedTests(CacheHarness):
    settings = {"targeted_header": "edge-control"}

    def test_cdn_cache_control(self):
        """
        RFC 9213: CDN-Cache-Control governs this cache over Cache-Control,
        and is not passed on to the client.
        """
        first = self.get(origin=response(b"x", b"Cache-Control: no-store",
                                         b"CDN-Cache-Control: max-age=60"))
        self.assertIsNone(field(first, b"CDN-Cache-Control"))
        self.assertEqual(field(first, b"Cache-Control"), b"no-store")
        hit = self.stored()
        self.assertIsNone(field(hit, b"CDN-Cache-Control"))

    def test_invalid_cdn_cache_control_ignored(self):
        """
        RFC 9213 2.1: a CDN-Cache-Control that is not a valid Dictionary,
        or whose max-age is a String, is ignored: Cache-Control governs.
        """
        for path, value in [(b"/s", b'max-age="10000"'), (b"/u", b"max-age=10000, &&&&&")]:
            first = self.get(path, origin=response(b"x", b"Cache-Control: no-store",
                                                   b"CDN-Cache-Control: " + value))
            self.assertNotIn(b"stored", field(first, b"Cache-Status"), value)
            self.assertIsNone(field(first, b"CDN-Cache-Control"))
            self.get(path, origin=response(b"y"))
            self.assertIsNotNone(self.asked, value)

    def test_configured_header(self):
        """
        RFC 9213: the configured targeted field comes first, and is not
        passed on either.
        """
        first = self.get(origin=response(b"x", b"CDN-Cache-Control: no-store",
                                         b"Edge-Control: max-age=60"))
        self.assertIsNone(field(first, b"Edge-Control"))
        self.assertIsNone(field(first, b"CDN-Cache-Control"))
        self.stored()


    def test_not_passed_on_when_passed_through(self):
        """
        RFC 9213: the targeted fields are not passed on from the responses
        the cache only lets through either: a HEAD or range miss, a URL in
        pass, an unsafe method, a request with If-Match.
        """
        targeted = (b"CDN-Cache-Control: max-age=60", b"Edge-Control: max-age=60")
        head = self.send(b"/h", method=b"HEAD")
        self.origin_request()
        self.answer(b"HTTP/1.1 200 OK\r\n" + b"\r\n".join(targeted)
                    + b"\r\nContent-Length: 1\r\n\r\n")
        answers = [
            head.received(),
            self.get(b"/r", b"Range: bytes=0-0", origin=response(
                b"0", b"Content-Range: bytes 0-0/2", *targeted, status=b"206 Partial Content")),
            self.get(b"/p", origin=response(b"x", b"Cache-Control: no-store",
                                            b"CDN-Cache-Control: no-store")),
            self.get(b"/p", origin=response(b"x", *targeted)),
            self.get(b"/d", method=b"DELETE", origin=response(b"x", *targeted)),
            self.get(b"/m", b'If-Match: "1"', origin=response(b"x", *targeted)),
        ]
        self.assertIn(b"detail=pass", field(answers[3], b"Cache-Status"))
        for data in answers:
            self.assertTrue(data.startswith(b"HTTP/1.1 20"), data)
            self.assertIsNone(field(data, b"CDN-Cache-Control"), data)
            self.assertIsNone(field(data, b"Edge-Control"), data)


class PurgeTests(CacheHarness):
    settings = {"purge_from": ("192.0.2.0/24",)}

    def test_purge(self):
        """
        PURGE from an allowed address removes the URL's stored responses.
        """
        self.get(origin=response(b"x", b"Cache-Control: max-age=60"))
        data = self.get(method=b"PURGE")
        self.assertIsNone(self.asked)
        self.assertTrue(data.startswith(b"HTTP/1.1 200 OK"))
        self.assertEqual(body_of(data), b'{"purged": 1}\n')
        self.get(origin=response(b"x"))
        self.assertIsNotNone(self.asked)

    def test_forbidden(self):
        """
        PURGE from another address is refused with 403 and purges nothing.
        """
        self.get(origin=response(b"x", b"Cache-Control: max-age=60"))
        client = self.proxy.connect_client("203.0.113.9")
        self.send(method=b"PURGE", client=client)
        self.assertTrue(client.received().startswith(b"HTTP/1.1 403 "))
        self.stored()

    def test_disabled(self):
        """
        Without purge_from, PURGE is refused with 405 to everyone.
        """
        proxy = self.proxy = MemoryProxy(config())
        client = proxy.connect_client()
        self.send(method=b"PURGE", client=client)
        self.assertTrue(client.received().startswith(b"HTTP/1.1 405 "))

    def test_uncached_route_forwards(self):
        """
        On a route without a cache, PURGE is forwarded to the origin like
        any other method, even with purge_from set.
        """
        self.proxy = MemoryProxy(config(None, purge_from=("192.0.2.0/24",)))
        client = self.send(method=b"PURGE")
        self.assertTrue(self.origin_request().startswith(b"PURGE /a HTTP/1.1\r\n"))
        self.answer(response(b"gone"))
        self.assertTrue(client.received().startswith(b"HTTP/1.1 200 OK"))

    def test_by_prefix_and_tag(self):
        """
        The cache purges by URL prefix and by Cache-Tag.
        """
        self.get(b"/s/1", origin=response(b"x", b"Cache-Control: max-age=60", b"Cache-Tag: a, b"))
        self.get(b"/s/2", origin=response(b"x", b"Cache-Control: max-age=60"))
        self.get(b"/t", origin=response(b"x", b"Cache-Control: max-age=60", b"Cache-Tag: b"))
        cache = self.proxy.cache
        self.assertEqual(self.successResultOf(cache.purge(b"http://example.com/s/")), 2)
        self.assertEqual(self.successResultOf(cache.purge_tag(b"b")), 1)
        self.assertEqual(cache.counts["purged"], 3)
        self.get(b"/t", origin=response(b"x"))
        self.assertIsNotNone(self.asked)

    def test_purge_url(self):
        """
        C{purge_url} removes one URL, all its variants included.
        """
        vary = (b"Cache-Control: max-age=60", b"Vary: Accept")
        self.get(b"/v?q", b"Accept: a", origin=response(b"x", *vary))
        self.get(b"/v?q", b"Accept: b", origin=response(b"x", *vary))
        n = self.successResultOf(self.proxy.cache.purge_url(b"http://example.com/v?q"))
        self.assertEqual(n, 3)


class ConfigTests(CacheHarness):
    route_cache = RouteCache(key_headers=("x-tenant",), default_ttl=30, max_ttl=100)

    def test_key_headers(self):
        """
        A route's key_headers make each value its own entry.
        """
        self.get(b"/a", b"X-Tenant: 1", origin=response(b"one", b"Cache-Control: max-age=60"))
        self.get(b"/a", b"X-Tenant: 2", origin=response(b"two", b"Cache-Control: max-age=60"))
        self.assertIsNotNone(self.asked)
        self.assertEqual(body_of(self.stored(b"/a", b"X-Tenant: 1")), b"one")

    def test_default_and_max_ttl(self):
        """
        default_ttl applies to responses without freshness information,
        max_ttl caps the others.
        """
        self.get(b"/d", origin=response(b"d"))
        self.get(b"/m", origin=response(b"m", b"Cache-Control: max-age=1000"))
        self.advance(29)
        self.stored(b"/d")
        self.advance(2)
        self.get(b"/d", origin=response(b"d"))
        self.assertIsNotNone(self.asked)
        self.advance(60)
        self.stored(b"/m")
        self.advance(20)
        self.get(b"/m", origin=response(b"m"))
        self.assertIsNotNone(self.asked)

    def test_key_parts(self):
        """
        A route whose key leaves out the query serves one entry for every
        query string.
        """
        self.proxy = MemoryProxy(config(RouteCache(key=("scheme", "host", "path"))))
        self.get(b"/k?utm=1", origin=response(b"k", b"Cache-Control: max-age=60"))
        self.assertEqual(body_of(self.stored(b"/k?utm=2")), b"k")
        self.get(b"/other", origin=response(b"o", b"Cache-Control: max-age=60"))
        self.assertIsNotNone(self.asked)

    def test_routes_sharing_an_entry(self):
        """
        Two routes that answer the same URL reuse its stored response each
        with its own freshness: what a hit computes once per entry is
        computed again for the other route.
        """
        short = Route("app", name="short", cache=RouteCache(max_ttl=10),
                      headers=(RouteMatch(name="x-short"),))
        base = config()
        self.proxy = MemoryProxy(replace(base, routes=(short,) + base.routes))
        self.advance(START)
        self.get(origin=response(b"v1", b"Cache-Control: max-age=60"))
        self.advance(20)
        self.assertEqual(body_of(self.stored()), b"v1")
        self.get(b"/a", b"X-Short: 1", origin=response(b"v2", b"Cache-Control: max-age=60"))
        self.assertIsNotNone(self.asked)
        self.advance(5)
        self.assertEqual(body_of(self.stored(b"/a", b"X-Short: 1")), b"v2")
        self.assertEqual(body_of(self.stored()), b"v2")
        self.advance(10)
        self.assertEqual(body_of(self.stored()), b"v2")
        self.get(b"/a", b"X-Short: 1", origin=response(b"v3", b"Cache-Control: max-age=60"))
        self.assertIsNotNone(self.asked)

    def test_disabled_route(self):
        """
        A route whose cache has C{enabled = false} never stores.
        """
        self.proxy = MemoryProxy(config(RouteCache(enabled=False)))
        self.get(origin=response(b"x", b"Cache-Control: max-age=60"))
        self.assertIsNone(field(self.get(origin=response(b"x")), b"Cache-Status"))
        self.assertIsNotNone(self.asked)

    def test_uncached_route(self):
        """
        A route without a cache never stores.
        """
        self.proxy = MemoryProxy(config(None))
        self.assertIsNone(self.proxy.cache)
        self.get(origin=response(b"x", b"Cache-Control: max-age=60"))
        self.get(origin=response(b"x"))
        self.assertIsNotNone(self.asked)


TOML = """
[listeners.web]
endpoint = "tcp:8080"

[upstreams.app]
servers = ["http://127.0.0.1:8001"]

[[routes]]
upstream = "app"
[routes.cache]
key_headers = ["X-Tenant"]
max_ttl = 3600
client_no_cache = "ignore"
max_object_size = "2m"
lock_timeout = 2
set_cookie = "strip"
stale_if_error = 600
stale_on_5xx = true

[cache]
store = "memory"
size = "1m"
name = "edge"
targeted_header = "Edge-Control"
purge_from = ["127.0.0.1/32"]

[admin]
"""


class WiringTests(SynchronousTestCase):
    """
    The cache in the configuration file, the service, the admin API, the
    metrics and quick mode.
    """

    def service(self, text: str = TOML):
        from twisted.internet.testing import MemoryReactorClock

        from twistproxy.config import parse
        from twistproxy.service import ProxyService

        return ProxyService(parse(text), MemoryReactorClock())

    def test_config(self):
        """
        [routes.cache] and [cache] are read into RouteCache and Cache; the
        store's own options go to the store.
        """
        from twistproxy.config import parse

        config = parse(TOML)
        self.assertEqual(config.routes[0].cache, RouteCache(
            key_headers=("x-tenant",), max_ttl=3600.0, client_no_cache="ignore",
            max_object_size=2 * 1024 * 1024, lock_timeout=2.0, set_cookie="strip",
            stale_if_error=600.0, stale_on_5xx=True))
        self.assertEqual(config.cache, Cache(
            store="memory", options={"size": "1m"}, name="edge",
            targeted_header="edge-control", purge_from=("127.0.0.1/32",)))
        route = parse(TOML.split("[routes.cache]")[0] + "cache = true\n").routes[0]
        self.assertEqual(route.cache, RouteCache())

    def test_config_errors(self):
        """
        Bad cache settings are config errors naming their path.
        """
        from twistproxy.config import ConfigError, parse

        base = TOML.split("[routes.cache]")[0]
        for extra, path in [
            ("[routes.cache]\nkey = ['path', 'fragment']\n", "routes[0].cache.key[1]"),
            ("[routes.cache]\nkey = ['host']\n", "routes[0].cache.key"),
            ("[routes.cache]\nttl = 5\n", "routes[0].cache.ttl"),
            ("[routes.cache]\nclient_no_cache = 'maybe'\n", "routes[0].cache.client_no_cache"),
            ("[routes.cache]\nset_cookie = 'store'\n", "routes[0].cache.set_cookie"),
            ("[routes.cache]\nstale_if_error = -1\n", "routes[0].cache.stale_if_error"),
            ("[routes.cache]\nstale_on_5xx = 1\n", "routes[0].cache.stale_on_5xx"),
            ("[routes.cache]\nmethods = ['GET', 'PUT']\n", "routes[0].cache.methods[1]"),
            ("[routes.cache]\ndefault_ttl = -1\n", "routes[0].cache.default_ttl"),
            ("cache = 3\n", "routes[0].cache"),
            ("[cache]\npurge_from = ['nonsense']\n", "cache.purge_from[0]"),
            ("[cache]\ntargeted_header = 'a b'\n", "cache.targeted_header"),
        ]:
            e = self.assertRaises(ConfigError, parse, base + extra)
            self.assertEqual(e.path, path, extra)

    def test_store_errors(self):
        """
        The store is found and checks its options when the service is
        built: errors name the [cache] path.
        """
        from twistproxy.config import ConfigError

        e = self.assertRaises(ConfigError, self.service, TOML.replace('"memory"', '"floppy"'))
        self.assertEqual(e.path, "cache.store")
        e = self.assertRaises(ConfigError, self.service, TOML.replace('size = "1m"', 'sise = "1m"'))
        self.assertEqual(e.path, "cache.sise")

    def test_service(self):
        """
        The service builds the store the configuration names, and reports
        the cache's counters in its status and its metrics.
        """
        from prometheus_client.parser import text_string_to_metric_families

        from twistproxy.cache.memory import MemoryStore
        from twistproxy.metrics import ProxyMetrics

        service = self.service()
        self.assertIsInstance(service.cache.store, MemoryStore)
        self.assertEqual(service.cache.store.max_bytes, 1024 * 1024)
        self.assertEqual(service.cache.name, b"edge")
        service.cache.counts["hit"] = 7
        self.assertEqual(service.status()["cache"]["hit"], 7)
        metrics = ProxyMetrics(service.reactor, status=service.status)
        families = {f.name: f for f in text_string_to_metric_families(
            metrics.exposition().decode())}
        samples = {s.labels["event"]: s.value
                   for s in families["twistproxy_cache_events"].samples
                   if s.name.endswith("_total")}
        self.assertEqual(samples["hit"], 7)

    def test_admin_purge(self):
        """
        POST /cache/purge on the admin API purges by url, prefix or tag,
        exactly one of them.
        """
        import json

        from treq.testing import StubTreq

        from twistproxy.admin import AdminResource
        from twistproxy.cache.entry import Entry

        service = self.service()
        store = service.cache.store
        entry = Entry(200, b"OK", [], b"x", 0, 0)
        store.put(b"http://a.example/x\x00", entry, 600, [b"t1"])
        store.put(b"http://a.example/y\x00", entry, 600)
        treq = StubTreq(AdminResource(service, "", None, service.reactor))

        def post(query):
            response = self.successResultOf(
                treq.post("http://admin/cache/purge?" + query))
            return response.code, json.loads(self.successResultOf(treq.content(response)))

        self.assertEqual(post("tag=t1"), (200, {"purged": 1, "tag": "t1"}))
        self.assertEqual(post("url=http://a.example/y")[1]["purged"], 1)
        self.assertEqual(post("prefix=http://")[1]["purged"], 0)
        self.assertEqual(post("url=a&tag=b")[0], 400)
        self.assertEqual(post("")[0], 400)

    def test_admin_without_cache(self):
        """
        Without a cache, the purge path is not found.
        """
        from treq.testing import StubTreq

        from twistproxy.admin import AdminResource

        service = self.service(TOML.split("[[routes]]")[0])
        treq = StubTreq(AdminResource(service, "", None, service.reactor))
        response = self.successResultOf(treq.post("http://admin/cache/purge?url=x"))
        self.assertEqual(response.code, 404)

    def test_quick_mode(self):
        """
        --cache turns the memory cache on for quick mode's route;
        --cache-size sets its budget; both need quick mode.
        """
        from twisted.python.usage import UsageError

        from twistproxy import tap

        options = tap.Options()
        options.parseOptions(["--listen", "tcp:0", "--upstream", "http://127.0.0.1:8001",
                              "--cache", "--cache-size", "2m"])
        service = tap.makeService(options)
        self.assertEqual(service.cache.store.max_bytes, 2 * 1024 * 1024)
        self.assertEqual(service.config.routes[0].cache, RouteCache())
        options = tap.Options()
        options.parseOptions(["--upstream", "http://127.0.0.1:8001", "--cache"])
        self.assertEqual(options.proxy_config.cache.options, {"size": 64 * 1024 * 1024})
        for argv in (["--upstream", "http://127.0.0.1:8001", "--cache-size", "1m"],
                     ["--config", "x.toml", "--cache"],
                     ["--upstream", "http://127.0.0.1:8001", "--cache", "--cache-size", "x"]):
            self.assertRaises(UsageError, tap.Options().parseOptions, argv)
        text = str(tap.Options())
        self.assertIn("--cache-size", text)


class PostTests(CacheHarness):
    route_cache = RouteCache(methods=("GET", "HEAD", "POST"))

    def test_post_answers_get(self):
        """
        RFC 9110 9.3.3: with POST allowed, a POST response with explicit
        freshness and a Content-Location naming its target answers later
        GETs of that URL.
        """
        self.get(b"/form", method=b"POST", origin=response(
            b"result", b"Cache-Control: max-age=60", b"Content-Location: /form"))
        self.assertEqual(body_of(self.stored(b"/form")), b"result")

    def test_post_without_content_location(self):
        """
        RFC 9110 9.3.3: without Content-Location naming the target, a POST
        response is not stored.
        """
        self.get(b"/form", method=b"POST", origin=response(b"r", b"Cache-Control: max-age=60"))
        self.get(b"/form", origin=response(b"g"))
        self.assertIsNotNone(self.asked)

    def test_post_not_allowed(self):
        """
        POST responses are not stored unless the route's methods list POST.
        """
        self.proxy = MemoryProxy(config(RouteCache()))
        self.get(b"/form", method=b"POST", origin=response(
            b"result", b"Cache-Control: max-age=60", b"Content-Location: /form"))
        self.get(b"/form", origin=response(b"g"))
        self.assertIsNotNone(self.asked)


class HTTP2Tests(SynchronousTestCase):
    def test_hit_on_stream(self):
        """
        A hit is answered on an HTTP/2 stream like a forwarded response:
        status, fields with Age and Cache-Status, and the body.
        """
        from tests.test_h2 import H2Client, _request

        proxy = MemoryProxy(config())
        client = H2Client(proxy)
        client.request(_request(path=b"/h2"))
        backend = proxy.accept_backend()
        backend.received()
        backend.send(response(b"hello", b"Cache-Control: max-age=60"))
        client.pump()
        sid = client.request(_request(path=b"/h2"))
        client.pump()
        self.assertEqual(backend.received(), b"")
        fields = client.headers(sid)
        self.assertEqual(fields[b":status"], b"200")
        self.assertEqual(fields[b"age"], b"0")
        self.assertTrue(fields[b"cache-status"].startswith(b"twistproxy; hit"))
        self.assertEqual(client.body(sid), b"hello")
        self.assertTrue(client.ended(sid))


class SharedStoreTests(CacheHarness):
    def test_waiters_after_put(self):
        """
        Requests collapsed on a fetch look in the store only once the store
        has the entry: a shared store answers later than it is asked, and
        they would miss it otherwise.
        """
        from twisted.internet.defer import Deferred

        from twistproxy.testing import FakeCacheStore

        cache = self.proxy.cache
        store = FakeCacheStore(self.proxy.reactor)
        puts = []
        real_put = store.put

        def put(key, entry, ttl, tags=()):
            d = Deferred()
            puts.append((d, lambda: real_put(key, entry, ttl, tags)))
            return d

        store.put = put
        cache.store, cache.lookup = store, None
        self.send(b"/s")
        self.origin_request()
        waiting = self.send(b"/s")
        self.answer(response(b"x", b"Cache-Control: max-age=60"))
        self.assertEqual(waiting.received(), b"")
        for d, do in puts:
            do()
            d.callback(None)
        self.assertEqual(body_of(waiting.received()), b"x")
        self.assertIsNone(self.origin_request())


class ReloadTests(SynchronousTestCase):
    def test_reload_keeps_store(self):
        """
        A reload keeps the cache and what it stored; a reload that changes
        [cache] is refused (it needs a restart).
        """
        import os

        from twisted.internet.testing import MemoryReactorClock

        from twistproxy.cache.entry import Entry
        from twistproxy.config import load
        from twistproxy.service import ProxyService

        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(TOML)
        service = ProxyService(load(path), MemoryReactorClock())
        cache = service.cache
        cache.store.put(b"k\x00", Entry(200, b"OK", [], b"x", 0, 0), 600)
        with open(path, "w") as f:
            f.write(TOML.replace("lock_timeout = 2", "lock_timeout = 3"))
        self.assertEqual(service.reload(), [])
        self.assertIs(service.cache, cache)
        self.assertIsNotNone(cache.store.lookup(b"k\x00"))
        with open(path, "w") as f:
            f.write(TOML.replace('size = "1m"', 'size = "2m"'))
        [problem] = service.reload()
        self.assertIn("cache", problem)
        self.flushLoggedErrors()


def _dechunk(data: bytes) -> bytes:
    out = []
    while True:
        size, _, data = data.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            return b"".join(out)
        out.append(data[:n])
        data = data[n + 2:]


class FiltersAndCacheTests(CacheHarness):
    """
    A route's filters stand in front of its cache: they judge every
    request, hits included, and their response parts (here banner hiding
    and compression) apply to hits as to responses from the origin, while
    the cache keeps the origin's own response.
    """

    def setUp(self):
        from twistproxy.config import Filter

        base = config()
        route = replace(base.routes[0], filters=(
            Filter("access", {"deny": ["198.51.100.0/24"]}),
            Filter("headers", {"hide_banners": True}),
            Filter("compress", {"encodings": ["gzip"], "min_size": 1}),
        ))
        self.proxy = MemoryProxy(replace(base, routes=(route,)))
        self.proxy.reactor.advance(START)
        self.backends = []

    def test_hit_filtered_like_a_miss(self):
        """
        The miss and the hit both lose the origin's C{Server} field and are
        gzip-compressed for a client that accepts it; the stored copy is
        the uncompressed one, so a client that does not accept gzip gets
        the body as the origin sent it, also from the cache.
        """
        import zlib

        body = b"hello " * 50
        origin = response(body, b"Cache-Control: max-age=60", b"Server: Apache/2.4",
                          b"Content-Type: text/plain", b"Date: " + DATE)
        first = self.get(b"/a", b"Accept-Encoding: gzip", origin=origin)
        second = self.stored(b"/a", b"Accept-Encoding: gzip")
        plain = self.stored(b"/a")
        for got in (first, second):
            self.assertIsNone(field(got, b"Server"))
            self.assertEqual(field(got, b"Content-Encoding"), b"gzip")
        self.assertTrue(field(second, b"Cache-Status").startswith(b"twistproxy; hit"))
        self.assertEqual(field(second, b"Transfer-Encoding"), b"chunked")
        self.assertEqual(zlib.decompress(_dechunk(body_of(second)), 16 + zlib.MAX_WBITS), body)
        self.assertIsNone(field(plain, b"Content-Encoding"))
        self.assertEqual(body_of(plain), body)
        self.assertIsNone(field(plain, b"Server"))

    def test_denied_client_gets_no_hit(self):
        """
        A stored response is not served to a client the access filter
        refuses.
        """
        origin = response(b"secret", b"Cache-Control: max-age=60", b"Date: " + DATE)
        self.get(b"/a", origin=origin)
        client = self.proxy.connect_client("198.51.100.9")
        client.send(b"GET /a HTTP/1.1\r\nHost: example.com\r\n\r\n")
        got = client.received()
        self.assertTrue(got.startswith(b"HTTP/1.1 403 "), got)
        self.assertNotIn(b"secret", got)


class TransferCodingTests(CacheHarness):
    """
    A response with Transfer-Encoding, coded or with faulty framing, is
    stored as its content and served from the cache without it.
    """

    def assert_stored_as(self, origin: bytes, content: bytes) -> None:
        first = self.get(origin=origin)
        self.assertTrue(first.startswith(b"HTTP/1.1 200 "), first)
        self.assertEqual(_dechunk(body_of(first)), content)
        self.assertIn(b"stored", field(first, b"Cache-Status"))
        hit = self.stored()
        self.assertTrue(field(hit, b"Cache-Status").startswith(b"twistproxy; hit"))
        self.assertIsNone(field(hit, b"Transfer-Encoding"))
        self.assertEqual(field(hit, b"Content-Length"), b"%d" % len(content))
        self.assertEqual(body_of(hit), content)

    def test_gzip_chunked_stored(self):
        """
        C{Transfer-Encoding: gzip, chunked} is stored decoded, and the hit
        is the content with a Content-Length.
        """
        import zlib

        content = b"coded content " * 40
        z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        coded = z.compress(content) + z.flush()
        self.assert_stored_as(
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\n"
            b"Transfer-Encoding: gzip, chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
            % (len(coded), coded),
            content)

    def test_faulty_framing_stored(self):
        """
        An HTTP/1.0 response with Transfer-Encoding and a Content-Length
        that does not match is read as chunked, stored, and served with
        the length of what it held, not the one it claimed.
        """
        self.assert_stored_as(
            b"HTTP/1.0 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            b"hello world")
