"""
Tests for L{twistproxy.http.parser}: the strict HTTP/1.1 parser (RFC 9112,
RFC 9110) for request heads, response heads and chunked bodies.

Rejections are checked with their exact status and reason code, because the
status is what the client sees and the reason is what the access log says.
"""

from __future__ import annotations

import functools
import itertools
import zlib
from typing import List, Optional, Sequence, Tuple, Union

from twisted.trial.unittest import SynchronousTestCase

from twistproxy.http import parser
from twistproxy.http.parser import (
    _KNOWN_NAMES,
    DECODED_PIECE,
    MAX_CHUNK_LINE,
    ChunkedDecoder,
    CodingDecoder,
    ParseError,
    RequestHead,
    ResponseHead,
    parse_request_head,
    parse_response_head,
    response_has_body,
)


def _request(*fields: bytes, line: bytes = b"GET / HTTP/1.1") -> bytes:
    """
    A request head (without its final empty line) with the given field
    lines.
    """
    return b"\r\n".join((line,) + fields)


def _host(*fields: bytes, line: bytes = b"POST / HTTP/1.1") -> bytes:
    """
    Like L{_request}, with a valid Host field first.
    """
    return _request(b"Host: a", *fields, line=line)


class _ParserAssertions:
    """
    Assertions shared by the parser tests.
    """

    def assertRequestRejected(
        self, head: bytes, status: int, reason: str, **kw
    ) -> ParseError:
        e = self.assertRaises(ParseError, parse_request_head, head, **kw)
        self.assertEqual((e.status, e.reason), (status, reason), head)
        return e

    def assertResponseRejected(self, head: bytes, reason: str, **kw) -> None:
        e = self.assertRaises(ParseError, parse_response_head, head, **kw)
        self.assertEqual((e.status, e.reason), (502, reason), head)

    def assertAllRejected(
        self, table: Sequence[Tuple[bytes, int, str]]
    ) -> None:
        for head, status, reason in table:
            with self.subTest(head=head):
                self.assertRequestRejected(head, status, reason)


class RequestTargetTests(_ParserAssertions, SynchronousTestCase):
    """
    The four forms of request target (RFC 9112 3.2).
    """

    def test_origin_form(self):
        """
        An origin-form request is parsed into its method, target, path
        (the target without its query), version, Host and fields, and has
        no body, keeps the connection alive and asks for nothing special.
        """
        req = parse_request_head(
            _request(b"Host: example.com", b"Accept: */*", line=b"GET /a/b?c=d&e HTTP/1.1")
        )
        self.assertIsInstance(req, RequestHead)
        self.assertEqual(req.method, b"GET")
        self.assertEqual(req.target, b"/a/b?c=d&e")
        self.assertEqual(req.path, b"/a/b")
        self.assertEqual(req.version, (1, 1))
        self.assertEqual(req.host, b"example.com")
        self.assertEqual(req.headers, [(b"Host", b"example.com"), (b"Accept", b"*/*")])
        self.assertIsNone(req.content_length)
        self.assertFalse(req.chunked)
        self.assertFalse(req.has_body)
        self.assertTrue(req.keep_alive)
        self.assertEqual(req.connection, frozenset())
        self.assertIsNone(req.upgrade)
        self.assertFalse(req.expect_continue)

    def test_path_without_query(self):
        """
        The path is the whole target when there is no query, and stops at
        the first C{?} when there is one.
        """
        self.assertEqual(parse_request_head(_host(line=b"GET /x/y HTTP/1.1")).path, b"/x/y")
        self.assertEqual(parse_request_head(_host(line=b"GET /x?y?z HTTP/1.1")).path, b"/x")
        self.assertEqual(parse_request_head(_host(line=b"GET /? HTTP/1.1")).path, b"/")

    def test_method_is_case_sensitive_token(self):
        """
        Any token is a method, kept as sent: methods are case-sensitive.
        """
        for method in (b"get", b"PROPFIND", b"M-SEARCH", b"X!#$%&'*+.^_`|~1"):
            with self.subTest(method=method):
                req = parse_request_head(_host(line=method + b" / HTTP/1.1"))
                self.assertEqual(req.method, method)

    def test_absolute_form(self):
        """
        An absolute-form target's authority is the request's host, taking
        precedence over the Host field, and the target is converted to
        origin form.
        """
        req = parse_request_head(
            _request(b"Host: other.example", line=b"GET http://example.com:8080/a?b=1 HTTP/1.1")
        )
        self.assertEqual(req.host, b"example.com:8080")
        self.assertEqual(req.target, b"/a?b=1")
        self.assertEqual(req.path, b"/a")

    def test_absolute_form_scheme_case_and_https(self):
        """
        The scheme is case-insensitive, and https is accepted as well as
        http.
        """
        for target in (b"HTTP://example.com/x", b"https://example.com/x", b"HtTpS://example.com/x"):
            with self.subTest(target=target):
                req = parse_request_head(_host(line=b"GET " + target + b" HTTP/1.1"))
                self.assertEqual((req.host, req.target), (b"example.com", b"/x"))

    def test_absolute_form_empty_path(self):
        """
        An absolute-form target without a path has the path C{/}, also when
        it has a query right after the authority.
        """
        for target, host, converted in [
            (b"http://example.com", b"example.com", b"/"),
            (b"http://example.com:81", b"example.com:81", b"/"),
            (b"http://example.com?x=1", b"example.com", b"/?x=1"),
            (b"http://example.com:81?x=/y", b"example.com:81", b"/?x=/y"),
            (b"http://[2001:db8::1]:8080/p", b"[2001:db8::1]:8080", b"/p"),
        ]:
            with self.subTest(target=target):
                req = parse_request_head(_host(line=b"GET " + target + b" HTTP/1.1"))
                self.assertEqual((req.host, req.target), (host, converted))

    def test_double_slash_is_origin_form(self):
        """
        A target starting with C{//} is an origin-form path with an empty
        first segment, not an authority: the host stays the Host field's,
        and the slashes are merged so that no backend mistakes the path for
        a scheme-relative URL.
        """
        req = parse_request_head(_request(b"Host: a", line=b"GET //example.com/x HTTP/1.1"))
        self.assertEqual((req.host, req.target), (b"a", b"/example.com/x"))

    def test_absolute_form_http10_without_host(self):
        """
        An HTTP/1.0 request may leave Host out; the authority of an
        absolute-form target is then its host.
        """
        req = parse_request_head(_request(line=b"GET http://example.com/x HTTP/1.0"))
        self.assertEqual((req.host, req.target), (b"example.com", b"/x"))

    def test_absolute_form_still_needs_host(self):
        """
        An HTTP/1.1 request needs a Host field even when its target is in
        absolute form (RFC 9112 3.2).
        """
        self.assertRequestRejected(
            _request(line=b"GET http://example.com/x HTTP/1.1"), 400, "missing_host"
        )

    def test_bad_absolute_forms(self):
        """
        Targets that are neither origin-form nor a valid http(s) absolute
        URI, or whose authority has userinfo, is empty or is not a valid
        host, are rejected.
        """
        for target in (
            b"example.com/x",
            b"ftp://example.com/x",
            b"http:/example.com/x",
            b"http://user@example.com/x",
            b"http://user:pw@example.com/x",
            b"http:///x",
            b"http://?x",
            b"http://exa<mple.com/",
            b"http://example.com:http/",
            b"http://example.com:123456/",
            b"http://[::1/",
        ):
            with self.subTest(target=target):
                self.assertRequestRejected(
                    _host(line=b"GET " + target + b" HTTP/1.1"), 400, "bad_request_target"
                )

    def test_asterisk_form_for_options(self):
        """
        C{OPTIONS *} is accepted, with C{*} as target and path.
        """
        req = parse_request_head(_host(line=b"OPTIONS * HTTP/1.1"))
        self.assertEqual((req.method, req.target, req.path), (b"OPTIONS", b"*", b"*"))

    def test_asterisk_form_only_for_options(self):
        """
        C{*} as the target of any other method is a bad request.
        """
        for method in (b"GET", b"POST", b"options", b"HEAD"):
            with self.subTest(method=method):
                self.assertRequestRejected(
                    _host(line=method + b" * HTTP/1.1"), 400, "bad_request_target"
                )

    def test_connect_not_supported(self):
        """
        CONNECT gets 501 whatever its target, so that no CONNECT, whose 2xx
        response turns the connection into a tunnel, ever reaches a backend.
        """
        for target in (b"example.com:443", b"/", b"/x", b"*", b"http://example.com/"):
            with self.subTest(target=target):
                self.assertRequestRejected(
                    _request(b"Host: example.com:443", line=b"CONNECT " + target + b" HTTP/1.1"),
                    501,
                    "connect_not_supported",
                )

    def test_authority_form_other_methods(self):
        """
        Authority form is only for CONNECT: with any other method it is a
        bad request.
        """
        self.assertRequestRejected(
            _host(line=b"GET example.com:443 HTTP/1.1"), 400, "bad_request_target"
        )


class RequestLineRejectionTests(_ParserAssertions, SynchronousTestCase):
    """
    Malformed request lines.
    """

    def test_bad_request_lines(self):
        """
        Wrong separators, a missing or extra part, a method that is not a
        token, spaces, tabs, controls, non-ASCII bytes or a fragment in the
        target, and a version that is not exactly C{HTTP/d.d} are all 400
        C{bad_request_line}.
        """
        for line in (
            b"",
            b"GET",
            b"GET /",
            b"GET / HTTP/1.1 ",
            b" GET / HTTP/1.1",
            b"GET  / HTTP/1.1",
            b"GET /  HTTP/1.1",
            b"GET / HTTP/1.1 extra",
            b"GET\t/ HTTP/1.1",
            b"GET /\tHTTP/1.1",
            b"GET /a b HTTP/1.1",
            b"GET /a\tb HTTP/1.1",
            b"GET /a\x00 HTTP/1.1",
            b"GET /a\x7f HTTP/1.1",
            b"GET /caf\xc3\xa9 HTTP/1.1",
            b"GET /\xff HTTP/1.1",
            b"GET /a#frag HTTP/1.1",
            b"GET http://example.com/#f HTTP/1.1",
            b"G(ET / HTTP/1.1",
            b"G\xc3\x89T / HTTP/1.1",
            b"GET / http/1.1",
            b"GET / Http/1.1",
            b"GET / HTTP/1",
            b"GET / HTTP/1.10",
            b"GET / HTTP/11",
            b"GET / HTTP/1.x",
            b"GET / HTTP/ 1.1",
            b"GET / HTTPS/1.1",
        ):
            with self.subTest(line=line):
                self.assertRequestRejected(_host(line=line), 400, "bad_request_line")

    def test_unsupported_major_version(self):
        """
        Any major version other than 1 is 505.
        """
        for version in (b"HTTP/2.0", b"HTTP/0.9", b"HTTP/3.0", b"HTTP/9.9"):
            with self.subTest(version=version):
                self.assertRequestRejected(
                    _host(line=b"GET / " + version), 505, "unsupported_version"
                )

    def test_higher_minor_version(self):
        """
        A higher HTTP/1.x minor version is handled as HTTP/1.1 (RFC 9110
        2.5), including its need for Host.
        """
        self.assertEqual(parse_request_head(_host(line=b"GET / HTTP/1.9")).version, (1, 1))
        self.assertRequestRejected(_request(line=b"GET / HTTP/1.2"), 400, "missing_host")


class HostTests(_ParserAssertions, SynchronousTestCase):
    """
    The Host field (RFC 9112 3.2).
    """

    def test_http10_without_host(self):
        """
        An HTTP/1.0 request without Host is accepted, with an empty host.
        """
        req = parse_request_head(_request(line=b"GET / HTTP/1.0"))
        self.assertEqual((req.version, req.host), ((1, 0), b""))

    def test_missing_host(self):
        """
        An HTTP/1.1 request without Host is 400 C{missing_host}.
        """
        self.assertRequestRejected(_request(b"Accept: */*"), 400, "missing_host")

    def test_empty_host(self):
        """
        An empty Host with an origin-form or asterisk-form target leaves
        nothing to route on: 400 C{empty_host}, in HTTP/1.0 too.  An
        absolute-form target's authority replaces it.
        """
        for line in (b"GET / HTTP/1.1", b"OPTIONS * HTTP/1.1", b"GET /x HTTP/1.0"):
            self.assertRequestRejected(_request(b"Host:", line=line), 400, "empty_host")
        req = parse_request_head(_request(b"Host: ", line=b"GET http://a.example/x HTTP/1.1"))
        self.assertEqual((req.host, req.target), (b"a.example", b"/x"))

    def test_duplicate_host(self):
        """
        Two Host fields are 400 C{duplicate_host}, even with the same value,
        and in HTTP/1.0 as well.
        """
        for head in (
            _request(b"Host: a", b"Host: b"),
            _request(b"Host: a", b"Host: a"),
            _request(b"Host: a", b"host: a"),
            _request(b"Host: a", b"Host: b", line=b"GET / HTTP/1.0"),
        ):
            with self.subTest(head=head):
                self.assertRequestRejected(head, 400, "duplicate_host")

    def test_valid_hosts(self):
        """
        Names, IPv4 and bracketed IPv6 literals, with or without a port,
        are valid hosts, kept as sent.
        """
        for value in (
            b"example.com",
            b"EXAMPLE.com:8080",
            b"127.0.0.1",
            b"127.0.0.1:80",
            b"[::1]",
            b"[2001:db8::1]:443",
            b"xn--bcher-kva.example",
            b"a-b_c~d.example",
            b"%65xample.com",
            b"example.com:",
        ):
            with self.subTest(value=value):
                req = parse_request_head(_request(b"Host: " + value))
                self.assertEqual(req.host, value)

    def test_invalid_hosts(self):
        """
        A Host with spaces, a path, userinfo, a bad port, an unclosed IPv6
        literal or bytes outside the host syntax is 400 C{bad_host}.
        """
        for value in (
            b"a b",
            b"a/b",
            b"a@b",
            b"a?b",
            b"a#b",
            b"a:b",
            b"a:123456",
            b"a:80:80",
            b"[::1",
            b"::1",
            b"[::1]x",
            b"[example.com]",
            b"caf\xc3\xa9.example",
            b'"a"',
            b"a\\b",
        ):
            with self.subTest(value=value):
                self.assertRequestRejected(_request(b"Host: " + value), 400, "bad_host")


class ConnectionTests(SynchronousTestCase):
    """
    Keep-alive, Connection tokens and Upgrade (RFC 9112 9.3, RFC 9110 7.6.1
    and 7.8).
    """

    def test_keep_alive_rules(self):
        """
        HTTP/1.1 keeps the connection unless told C{close}; HTTP/1.0 closes
        it unless told C{keep-alive}; C{close} always wins; tokens are
        case-insensitive.
        """
        for version, connection, expected in [
            (b"1.1", None, True),
            (b"1.1", b"close", False),
            (b"1.1", b"Close", False),
            (b"1.1", b"keep-alive", True),
            (b"1.1", b"keep-alive, close", False),
            (b"1.1", b"x-other", True),
            (b"1.0", None, False),
            (b"1.0", b"keep-alive", True),
            (b"1.0", b"Keep-Alive", True),
            (b"1.0", b"keep-alive, close", False),
            (b"1.0", b"close", False),
            (b"1.0", b"x-other", False),
        ]:
            fields = [b"Host: a"] if connection is None else [b"Host: a", b"Connection: " + connection]
            with self.subTest(version=version, connection=connection):
                req = parse_request_head(_request(*fields, line=b"GET / HTTP/" + version))
                self.assertEqual(req.keep_alive, expected)

    def test_keep_alive_across_fields(self):
        """
        C{close} in a second Connection field counts as much as in the
        first.
        """
        req = parse_request_head(_host(b"Connection: keep-alive", b"Connection: close"))
        self.assertFalse(req.keep_alive)

    def test_connection_tokens(self):
        """
        The Connection tokens of all Connection fields are collected,
        lower-cased and stripped, and empty list elements are ignored.
        """
        req = parse_request_head(
            _host(b"Connection: Keep-Alive, X-Foo", b"Connection: ,  ,UPGRADE\t, x-bar ")
        )
        self.assertEqual(req.connection, frozenset([b"keep-alive", b"x-foo", b"upgrade", b"x-bar"]))

    def test_upgrade(self):
        """
        Upgrade is reported when Connection names C{upgrade}.
        """
        req = parse_request_head(
            _host(b"Connection: Upgrade", b"Upgrade: websocket", line=b"GET /ws HTTP/1.1")
        )
        self.assertEqual(req.upgrade, b"websocket")
        self.assertIn(b"upgrade", req.connection)

    def test_upgrade_needs_connection_upgrade(self):
        """
        Upgrade without C{Connection: upgrade}, or C{Connection: upgrade}
        without Upgrade, asks for no upgrade.
        """
        for fields in (
            (b"Upgrade: websocket",),
            (b"Upgrade: websocket", b"Connection: keep-alive"),
            (b"Upgrade: websocket", b"Connection: upgraded"),
            (b"Connection: upgrade",),
            (b"Connection: upgrade", b"Upgrade:"),
        ):
            with self.subTest(fields=fields):
                self.assertIsNone(parse_request_head(_host(*fields)).upgrade)

    def test_upgrade_ignored_in_http10(self):
        """
        Upgrade in an HTTP/1.0 request is ignored (RFC 9110 7.8).
        """
        req = parse_request_head(
            _request(b"Connection: upgrade", b"Upgrade: websocket", line=b"GET / HTTP/1.0")
        )
        self.assertIsNone(req.upgrade)

    def test_repeated_upgrade_fields_joined(self):
        """
        Repeated Upgrade fields are one list, in order.
        """
        req = parse_request_head(
            _host(b"Upgrade: h2c", b"Connection: upgrade", b"Upgrade: websocket")
        )
        self.assertEqual(req.upgrade, b"h2c, websocket")


class ExpectTests(_ParserAssertions, SynchronousTestCase):
    """
    The Expect field (RFC 9110 10.1.1).
    """

    def test_100_continue(self):
        """
        C{Expect: 100-continue}, in any case, is reported.
        """
        for value in (b"100-continue", b"100-Continue", b"100-CONTINUE"):
            with self.subTest(value=value):
                req = parse_request_head(_host(b"Content-Length: 3", b"Expect: " + value))
                self.assertTrue(req.expect_continue)

    def test_100_continue_ignored_in_http10(self):
        """
        An HTTP/1.0 client cannot be sent 100 Continue, so its expectation
        is accepted but not reported.
        """
        req = parse_request_head(
            _request(b"Content-Length: 3", b"Expect: 100-continue", line=b"PUT / HTTP/1.0")
        )
        self.assertFalse(req.expect_continue)

    def test_other_expectations_417(self):
        """
        Any other expectation, a list, or a repeated Expect field is 417.
        """
        for fields in (
            (b"Expect: something",),
            (b"Expect: 100-continue, foo",),
            (b"Expect: 100-continue;x=1",),
            (b"Expect: 200-ok",),
            (b"Expect:",),
            (b"Expect: 100-continue", b"Expect: 100-continue"),
        ):
            with self.subTest(fields=fields):
                self.assertRequestRejected(_host(*fields), 417, "bad_expectation")
        self.assertRequestRejected(
            _request(b"Expect: foo", line=b"GET / HTTP/1.0"), 417, "bad_expectation"
        )


class BodyFramingTests(SynchronousTestCase):
    """
    Valid Content-Length and Transfer-Encoding (RFC 9112 6).
    """

    def test_content_length(self):
        """
        A Content-Length is the body's length; zero means no body.
        """
        req = parse_request_head(_host(b"Content-Length: 5"))
        self.assertEqual((req.content_length, req.chunked, req.has_body), (5, False, True))
        req = parse_request_head(_host(b"Content-Length: 0"))
        self.assertEqual((req.content_length, req.has_body), (0, False))

    def test_identical_content_lengths(self):
        """
        Identical repeated values, in separate fields or as a list, are one
        length (RFC 9110 8.6); leading zeros and whitespace do not matter.
        """
        for fields in (
            (b"Content-Length: 5", b"Content-Length: 5"),
            (b"Content-Length: 5, 5",),
            (b"Content-Length: 5,5",),
            (b"Content-Length: 5 ,\t5",),
            (b"Content-Length: 5", b"content-length: 5, 5"),
            (b"Content-Length: 005",),
            (b"Content-Length:5",),
            (b"Content-Length: \t5\t ",),
        ):
            with self.subTest(fields=fields):
                self.assertEqual(parse_request_head(_host(*fields)).content_length, 5)

    def test_largest_content_length(self):
        """
        Eighteen digits are still a length.
        """
        req = parse_request_head(_host(b"Content-Length: 999999999999999999"))
        self.assertEqual(req.content_length, 999999999999999999)

    def test_chunked(self):
        """
        C{Transfer-Encoding: chunked}, in any case and with whitespace
        around it, means a chunked body.
        """
        for value in (b"chunked", b"Chunked", b"CHUNKED", b" chunked", b"chunked \t", b"\tchunked"):
            with self.subTest(value=value):
                req = parse_request_head(_host(b"Transfer-Encoding:" + value))
                self.assertEqual((req.chunked, req.content_length, req.has_body), (True, None, True))


# Request smuggling: every way of making two parsers disagree on where a
# request ends that this parser must refuse.  (head, status, reason).
_SMUGGLING: List[Tuple[bytes, int, str]] = [
    # CL.TE and TE.CL, in either order, whatever the values.
    (_host(b"Content-Length: 6", b"Transfer-Encoding: chunked"), 400, "length_and_chunked"),
    (_host(b"Transfer-Encoding: chunked", b"Content-Length: 6"), 400, "length_and_chunked"),
    (_host(b"Content-Length: 0", b"Transfer-Encoding: chunked"), 400, "length_and_chunked"),
    (_host(b"Transfer-Encoding: chunked", b"Content-Length: 5", b"Content-Length: 6"), 400,
     "length_and_chunked"),
    (_host(b"Content-Length: 5", b"Transfer-Encoding: gzip"), 400, "length_and_chunked"),
    (_host(b"Content-Length: 5", b"Transfer-Encoding: xchunked"), 400, "length_and_chunked"),
    # Transfer-Encoding that is not exactly one "chunked", last.
    (_host(b"Transfer-Encoding: chunked, chunked"), 400, "bad_transfer_encoding"),
    (_host(b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"), 400,
     "bad_transfer_encoding"),
    (_host(b"Transfer-Encoding: xchunked"), 400, "bad_transfer_encoding"),
    (_host(b"Transfer-Encoding: chunkedx"), 400, "bad_transfer_encoding"),
    (_host(b"Transfer-Encoding: chunk"), 400, "bad_transfer_encoding"),
    (_host(b"Transfer-Encoding: ch unked"), 400, "bad_transfer_encoding"),
    (_host(b"Transfer-Encoding: \"chunked\""), 400, "bad_transfer_encoding"),
    (_host(b"Transfer-Encoding: chunked;q=1"), 400, "bad_transfer_encoding"),
    (_host(b"Transfer-Encoding: chunked, identity"), 400, "bad_transfer_encoding"),
    (_host(b"Transfer-Encoding: chunked, gzip"), 400, "bad_transfer_encoding"),
    (_host(b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip"), 400,
     "bad_transfer_encoding"),
    (_host(b"Transfer-Encoding: identity"), 400, "bad_transfer_encoding"),
    (_host(b"Transfer-Encoding: gzip"), 400, "bad_transfer_encoding"),
    (_host(b"Transfer-Encoding: chunked,"), 400, "bad_transfer_encoding"),
    (_host(b"Transfer-Encoding: ,chunked"), 400, "bad_transfer_encoding"),
    (_host(b"Transfer-Encoding: ,"), 400, "bad_transfer_encoding"),
    (_host(b"Transfer-Encoding:"), 400, "bad_transfer_encoding"),
    (_host(b"Transfer-Encoding: "), 400, "bad_transfer_encoding"),
    # Whitespace other than SP and HTAB, and controls, around "chunked".
    (_host(b"Transfer-Encoding: \x0bchunked"), 400, "bad_header"),
    (_host(b"Transfer-Encoding:\x0bchunked"), 400, "bad_header"),
    (_host(b"Transfer-Encoding: \x0cchunked"), 400, "bad_header"),
    (_host(b"Transfer-Encoding: chunked\x00"), 400, "bad_header"),
    (_host(b"Transfer-Encoding: chunked\x0b"), 400, "bad_header"),
    (_host(b"Transfer-Encoding: \x00chunked"), 400, "bad_header"),
    (_host(b"Transfer-Encoding: \x85chunked"), 400, "bad_transfer_encoding"),
    (_host(b"Transfer-Encoding: chunked\r"), 400, "bare_cr_lf"),
    (_host(b"Transfer-Encoding: chunked\rX: y"), 400, "bare_cr_lf"),
    (_host(b"Transfer-Encoding: chunked\nX: y"), 400, "bare_cr_lf"),
    # Whitespace or other bytes in the field name.
    (_host(b"Transfer-Encoding : chunked"), 400, "bad_header"),
    (_host(b"Transfer-Encoding\t: chunked"), 400, "bad_header"),
    (_host(b" Transfer-Encoding: chunked"), 400, "obs_fold"),
    (_host(b"\tTransfer-Encoding: chunked"), 400, "obs_fold"),
    (_host(b"Transfer-Encoding\x00: chunked"), 400, "bad_header"),
    (_host(b"Transfer-Encoding", b" : chunked"), 400, "bad_header"),
    # Obsolete line folding, which joins a value onto the previous line.
    (_host(b"Transfer-Encoding:", b" chunked"), 400, "obs_fold"),
    (_host(b"Transfer-Encoding: gzip,", b"\tchunked"), 400, "obs_fold"),
    # Underscore spellings, which CGI-style backends read as the real ones.
    (_host(b"Transfer_Encoding: chunked"), 400, "bad_header"),
    (_host(b"Content_Length: 5"), 400, "bad_header"),
    (_host(b"content_length: 5", b"Content-Length: 5"), 400, "bad_header"),
    # Transfer-Encoding in HTTP/1.0 (RFC 9112 6.1).
    (_request(b"Transfer-Encoding: chunked", line=b"POST / HTTP/1.0"), 400,
     "bad_transfer_encoding"),
    (_request(b"Host: a", b"Transfer-Encoding: chunked", line=b"POST / HTTP/1.0"), 400,
     "bad_transfer_encoding"),
    # Codings the proxy would have to decode.
    (_host(b"Transfer-Encoding: gzip, chunked"), 501, "unsupported_transfer_encoding"),
    (_host(b"Transfer-Encoding: gzip", b"Transfer-Encoding: chunked"), 501,
     "unsupported_transfer_encoding"),
    (_host(b"Transfer-Encoding: identity, chunked"), 501, "unsupported_transfer_encoding"),
    # Content-Length that is not a plain decimal number.
    (_host(b"Content-Length: +5"), 400, "bad_content_length"),
    (_host(b"Content-Length: -1"), 400, "bad_content_length"),
    (_host(b"Content-Length: 0x5"), 400, "bad_content_length"),
    (_host(b"Content-Length: 5.0"), 400, "bad_content_length"),
    (_host(b"Content-Length: 5e0"), 400, "bad_content_length"),
    (_host(b"Content-Length: 1_0"), 400, "bad_content_length"),
    (_host(b"Content-Length: five"), 400, "bad_content_length"),
    (_host(b"Content-Length: \xd9\xa5"), 400, "bad_content_length"),
    (_host(b"Content-Length: \"5\""), 400, "bad_content_length"),
    (_host(b"Content-Length:  5 5"), 400, "bad_content_length"),
    (_host(b"Content-Length: 5\t5"), 400, "bad_content_length"),
    (_host(b"Content-Length:"), 400, "bad_content_length"),
    (_host(b"Content-Length: "), 400, "bad_content_length"),
    (_host(b"Content-Length: ,"), 400, "bad_content_length"),
    (_host(b"Content-Length: 5,"), 400, "bad_content_length"),
    (_host(b"Content-Length: ,5"), 400, "bad_content_length"),
    (_host(b"Content-Length: 5,,5"), 400, "bad_content_length"),
    (_host(b"Content-Length: \x0b5"), 400, "bad_header"),
    (_host(b"Content-Length: 5\x00"), 400, "bad_header"),
    # Differing lengths, in separate fields or in one list.
    (_host(b"Content-Length: 5", b"Content-Length: 6"), 400, "bad_content_length"),
    (_host(b"Content-Length: 5, 6"), 400, "bad_content_length"),
    (_host(b"Content-Length: 5", b"Content-Length: 5, 6"), 400, "bad_content_length"),
    (_host(b"Content-Length: 0", b"Content-Length: 5"), 400, "bad_content_length"),
    # Lengths too large to mean anything.
    (_host(b"Content-Length: 1000000000000000000"), 400, "bad_content_length"),
    (_host(b"Content-Length: 99999999999999999999999999999"), 400, "bad_content_length"),
    (_host(b"Content-Length: 18446744073709551616"), 400, "bad_content_length"),
    (_host(b"Content-Length: 0000000000000000005"), 400, "bad_content_length"),
]


class SmugglingTests(_ParserAssertions, SynchronousTestCase):
    """
    Every request framing that two HTTP implementations could read
    differently is rejected.
    """

    def test_smuggling_vectors(self):
        """
        Each vector in the table is rejected with its status and reason.
        """
        self.assertAllRejected(_SMUGGLING)


class FieldSyntaxTests(_ParserAssertions, SynchronousTestCase):
    """
    Field lines (RFC 9112 5, RFC 9110 5.5).
    """

    def test_bad_field_lines(self):
        """
        Field lines with whitespace or non-token bytes in the name, no
        colon, an empty name, or NUL, DEL and other controls in the value
        are 400 C{bad_header}; a line starting with whitespace is
        C{obs_fold}; CR or LF on their own are C{bare_cr_lf}.
        """
        for fields, reason in [
            ((b"Host : a",), "bad_header"),
            ((b"X-A : b",), "bad_header"),
            ((b"X-A\t: b",), "bad_header"),
            ((b"X A: b",), "bad_header"),
            ((b": b",), "bad_header"),
            ((b"X-A",), "bad_header"),
            ((b"X-A b",), "bad_header"),
            ((b"",), "bad_header"),
            ((b"X(A): b",), "bad_header"),
            ((b"X@A: b",), "bad_header"),
            ((b"X\"A: b",), "bad_header"),
            ((b"X\xe9: b",), "bad_header"),
            ((b"X\x00: b",), "bad_header"),
            ((b"X: a\x00b",), "bad_header"),
            ((b"X: \x00",), "bad_header"),
            ((b"X: a\x01",), "bad_header"),
            ((b"X: a\x1bb",), "bad_header"),
            ((b"X: a\x7fb",), "bad_header"),
            ((b"X: a\x0bb",), "bad_header"),
            ((b"X: a\x0cb",), "bad_header"),
            ((b"X: a\x1fb",), "bad_header"),
            ((b" X: a",), "obs_fold"),
            ((b"\tX: a",), "obs_fold"),
            ((b"X: a", b" b"), "obs_fold"),
            ((b"X: a", b"\tb"), "obs_fold"),
            ((b"X: a", b"   "), "obs_fold"),
            ((b"X: a\rb",), "bare_cr_lf"),
            ((b"X: a\r",), "bare_cr_lf"),
            ((b"X: a\nY: b",), "bare_cr_lf"),
            ((b"X: a\n",), "bare_cr_lf"),
            ((b"X: a\n\r",), "bare_cr_lf"),
            ((b"\r",), "bare_cr_lf"),
        ]:
            with self.subTest(fields=fields):
                self.assertRequestRejected(_host(*fields), 400, reason)

    def test_bare_lf_in_request_line(self):
        """
        A request line ended by a bare LF, or with a bare CR in it, is
        C{bare_cr_lf}.
        """
        self.assertRequestRejected(b"GET / HTTP/1.1\nHost: a", 400, "bare_cr_lf")
        self.assertRequestRejected(b"GET / HTTP/1.1\rHost: a", 400, "bare_cr_lf")
        self.assertRequestRejected(b"GET /\r HTTP/1.1\r\nHost: a", 400, "bare_cr_lf")

    def test_empty_line_inside_head(self):
        """
        An empty line inside what is passed as the head is not a field.
        """
        self.assertRequestRejected(_host(b"", b"X: a"), 400, "bad_header")

    def test_valid_field_lines(self):
        """
        Values are stripped of the whitespace around them and keep inner
        whitespace, tabs and obs-text bytes; empty values are kept; names
        keep their case and fields their order.
        """
        req = parse_request_head(_host(
            b"X-A:b",
            b"x-a:   b  ",
            b"X-B:\tc\t d \t",
            b"X-C:",
            b"X-D:   ",
            b"X-E: caf\xe9 \xff",
            b"X-F: a\"b\\c,d;e=(f)",
            b"!#$%&'*+-.^_`|~0aZ: v",
        ))
        self.assertEqual(req.headers, [
            (b"Host", b"a"),
            (b"X-A", b"b"),
            (b"x-a", b"b"),
            (b"X-B", b"c\t d"),
            (b"X-C", b""),
            (b"X-D", b""),
            (b"X-E", b"caf\xe9 \xff"),
            (b"X-F", b"a\"b\\c,d;e=(f)"),
            (b"!#$%&'*+-.^_`|~0aZ", b"v"),
        ])

    def test_header_count_limit(self):
        """
        More field lines than C{max_header_count} is 431; exactly that many
        is fine.
        """
        fields = [b"Host: a", b"X: 1", b"X: 2"]
        self.assertEqual(len(parse_request_head(_request(*fields), max_header_count=3).headers), 3)
        self.assertRequestRejected(
            _request(*fields, b"X: 3"), 431, "too_many_headers", max_header_count=3
        )

    def test_default_header_count_limit(self):
        """
        The default limit is 100 field lines.
        """
        fields = [b"Host: a"] + [b"X: y"] * 99
        self.assertEqual(len(parse_request_head(_request(*fields)).headers), 100)
        self.assertRequestRejected(_request(*fields, b"X: z"), 431, "too_many_headers")

    def test_long_blank_runs_are_fast(self):
        """
        Long runs of whitespace in a rejected field line are rejected in
        linear time, not after quadratic backtracking (which took seconds
        for 64 KiB).
        """
        import time

        for field in (
            b"X:" + b" " * 65000 + b"\x00",
            b"X: a" + b" \t" * 32000 + b"\x00",
            b"X: " + b"a " * 32000 + b"\x00",
        ):
            started = time.perf_counter()
            self.assertRequestRejected(_host(field), 400, "bad_header")
            self.assertLess(time.perf_counter() - started, 0.5)

    def test_first_bad_line_decides(self):
        """
        When several field lines are bad, the first one decides the
        reason, whichever rule it breaks: a well-formed C{Content_Length}
        before a folded line is C{bad_header}, and a folded line before it
        is C{obs_fold}.
        """
        self.assertRequestRejected(
            _host(b"Content_Length: 1", b" folded"), 400, "bad_header")
        self.assertRequestRejected(
            _host(b" folded", b"Content_Length: 1"), 400, "obs_fold")
        self.assertRequestRejected(
            _host(b"X-A: b", b"Transfer_Encoding: chunked", b"X-B: \x00"),
            400, "bad_header")


def _outcome(parse, head: bytes):
    """
    What C{parse} makes of C{head}: the error's status and reason, or every
    attribute of the head, with the field names lower-cased.
    """
    try:
        parsed = parse(head)
    except ParseError as e:
        return (e.status, e.reason)
    outcome = {name: getattr(parsed, name) for name in type(parsed).__slots__}
    outcome["headers"] = [(name.lower(), value) for name, value in parsed.headers]
    return outcome


class KnownNameTests(SynchronousTestCase):
    """
    Field names the parser knows as clients write them (C{Content-Length})
    skip the lower-casing and the name checks: a head reads the same with
    them as with the same names in other cases.
    """

    def test_same_outcome_as_other_cases(self):
        """
        Every known name, in field lines well-formed or not and with values
        that parse or not, gives the same request and response (or the same
        error) as its swapped-case spelling, which takes the general path.
        """
        values = [b"5", b" 5 ", b"5, 6", b"chunked", b"gzip, chunked", b"close",
                  b"Keep-Alive", b"upgrade", b"100-continue", b"a", b"", b"x\x00y",
                  b"h2c"]
        for name in _KNOWN_NAMES:
            other = name.swapcase()
            self.assertNotIn(other, _KNOWN_NAMES)
            for value, separator, repeat, start in itertools.product(
                    values, [b": ", b":", b" : ", b""], [1, 2],
                    [b"GET / HTTP/1.1\r\nHost: a", b"HTTP/1.1 200 OK"]):
                parse = parse_request_head if start[:1] == b"G" else parse_response_head
                heads = [
                    b"\r\n".join([start] + [spelling + separator + value] * repeat)
                    for spelling in (name, other)
                ]
                with self.subTest(head=heads[0]):
                    self.assertEqual(_outcome(parse, heads[0]), _outcome(parse, heads[1]))


class RememberedFieldTests(_ParserAssertions, SynchronousTestCase):
    """
    Field lines a head passed with are remembered, parsed, and so are
    request lines: a head reads the same whether its lines are remembered
    or not, in a request as in a response, under every C{escaped_slashes}
    setting, and only valid lines are kept, in bounded memory.
    """

    def setUp(self):
        self.lines = {}
        self.patch(parser, "_FIELD_LINES", self.lines)
        self.request_lines = {}
        self.patch(parser, "_REQUEST_LINES", self.request_lines)
        self.hosts = {}
        self.patch(parser, "_HOSTS", self.hosts)

    def test_same_outcome_remembered(self):
        """
        Every head gives the same request or response (or the same error)
        with no line remembered, and again once the lines of every head,
        requests' and responses' alike, have been remembered.
        """
        lines = [b"Host: a", b"Host: b", b"Content-Length: 5", b"Content-Length:  6 ",
                 b"Transfer-Encoding: chunked", b"Connection: close", b"Upgrade: h2c",
                 b"Connection: upgrade", b"Expect: 100-continue", b"Accept: */*",
                 b"Accept:", b"Server: a\x00b", b" folded", b"X-A: b"]
        heads = [(parse, b"\r\n".join((start,) + chosen))
                 for parse, start in [(parse_request_head, b"POST / HTTP/1.1"),
                                      (parse_response_head, b"HTTP/1.1 200 OK")]
                 for chosen in itertools.permutations(lines, 2)]
        first = [_outcome(parse, head) for parse, head in heads]
        self.assertTrue(self.lines)
        for (parse, head), outcome in zip(heads, first):
            with self.subTest(head=head):
                self.assertEqual(_outcome(parse, head), outcome)

    def test_kept_from_valid_heads_only(self):
        """
        The lines of a head that is refused are not remembered, however
        valid some of them are; those of a head that passes are.
        """
        self.assertRequestRejected(_host(b"Accept: */*", b"Server: a\x00b"), 400, "bad_header")
        self.assertResponseRejected(_response(b"Accept: */*", b"Server"), "bad_header")
        self.assertEqual(self.lines, {})
        parse_request_head(_host(b"Accept: */*"))
        self.assertEqual(sorted(self.lines), [b"Accept: */*", b"Host: a"])

    def test_remembered_line_beside_bad_one(self):
        """
        A remembered line does not spare the other lines of a head their
        checks: a bad line after it is refused for its own reason.
        """
        parse_request_head(_host(b"Accept: */*"))
        self.assertRequestRejected(_host(b"Accept: */*", b" folded"), 400, "obs_fold")
        self.assertRequestRejected(_host(b"Accept: */*", b"X-A: \x7f"), 400, "bad_header")
        self.assertRequestRejected(_host(b"Accept: */*", b"Content_Length: 5"), 400, "bad_header")
        self.assertRequestRejected(_host(b"Host: a"), 400, "duplicate_host")

    def test_bounded(self):
        """
        At most L{parser.MAX_REMEMBERED} lines are kept, none longer
        than L{parser.MAX_REMEMBERED_LINE} bytes, no line of an unknown
        field (whose name might not be valid in the other direction), and
        no credentials.
        """
        for i in range(parser.MAX_REMEMBERED * 2 + 10):
            parse_request_head(_host(b"Accept: %d" % i, b"Age: %d" % i))
            self.assertLessEqual(len(self.lines), parser.MAX_REMEMBERED)
        self.lines.clear()
        many = [b"Accept: %d" % i for i in range(parser.MAX_REMEMBERED + 1)]
        parse_request_head(_host(*many), max_header_count=len(many) + 1)
        self.assertEqual(len(self.lines), parser.MAX_REMEMBERED)
        self.lines.clear()
        long = b"Accept: " + b"a" * (parser.MAX_REMEMBERED_LINE - len(b"Accept: "))
        parse_request_head(_host(long, long + b"a", b"Cookie: a=b", b"Authorization: x",
                                 b"X-Unknown: 1", b"Content_Type: a"))
        self.assertEqual(sorted(self.lines), [long, b"Host: a"])
        parse_response_head(_response(b"Set-Cookie: a=b", b"Content_Length: 5"))
        self.assertEqual(sorted(self.lines), [long, b"Host: a"])

    def test_request_line_same_outcome(self):
        """
        Every request line gives the same request (or the same error)
        under every C{escaped_slashes} setting, remembered or not, after
        it or any other line was read under any setting.
        """
        targets = [b"/", b"/a", b"/a/b/", b"*", b"/a?b", b"//a", b"/a/../b", b"/%41",
                   b"/%2B", b"/a%2Fb", b"/a%2fb", b"/a\\b", b"/..", b"/a#b",
                   b"http://b/c", b"http://b", b"https://b:1?c"]
        heads = [_host(line=method + b" " + target + b" " + version)
                 for method in [b"GET", b"OPTIONS", b"CONNECT"] for target in targets
                 for version in [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0"]]
        heads.append(_request(b"Host:", line=b"GET / HTTP/1.1"))
        parses = [functools.partial(parse_request_head, escaped_slashes=setting)
                  for setting in ["keep", "decode", "reject"]]

        def outcomes():
            return [_outcome(parse, head) for parse in parses for head in heads]
        first = outcomes()
        self.assertTrue(self.request_lines)
        self.assertEqual(outcomes(), first)

    def test_request_lines_kept(self):
        """
        A request line is remembered once read, with an origin-form (or
        asterisk-form) target that is its own normal form and no query.
        """
        for target in [b"/a?b", b"/a/../b", b"/%41", b"/a%2Fb", b"http://b/c", b"//a"]:
            parse_request_head(_host(line=b"GET " + target + b" HTTP/1.1"))
        self.assertEqual(self.request_lines, {})
        parse_request_head(_host(line=b"GET /a HTTP/1.0"))
        parse_request_head(_host(line=b"OPTIONS * HTTP/1.1"))
        self.assertEqual(self.request_lines, {
            b"GET /a HTTP/1.0": (b"GET", b"/a", (1, 0)),
            b"OPTIONS * HTTP/1.1": (b"OPTIONS", b"*", (1, 1))})
        self.assertRequestRejected(_request(b"Host:", line=b"GET /b HTTP/1.1"),
                                   400, "empty_host")
        self.assertNotIn(b"GET /b HTTP/1.1", self.request_lines)
        long = b"GET /" + b"a" * parser.MAX_REMEMBERED_LINE + b" HTTP/1.1"
        parse_request_head(_host(line=long))
        self.assertNotIn(long, self.request_lines)

    def test_hosts(self):
        """
        Host values are remembered once they have matched, and a Host
        reads the same remembered or not; a long one is not kept.
        """
        long = b"a" * (parser.MAX_REMEMBERED_LINE + 1)
        hosts = [b"a", b"a:80", b"[::1]:8", b"a b", b"a:123456", b"", b"a@b", b"a:b", long]
        heads = [_request(b"Host: " + host) for host in hosts]
        first = [_outcome(parse_request_head, head) for head in heads]
        self.assertEqual(sorted(self.hosts), [b"", b"[::1]:8", b"a", b"a:80"])
        self.assertEqual([_outcome(parse_request_head, head) for head in heads], first)
        self.assertEqual([outcome if isinstance(outcome, tuple) else outcome["host"]
                          for outcome in first],
                         [b"a", b"a:80", b"[::1]:8", (400, "bad_host"), (400, "bad_host"),
                          (400, "empty_host"), (400, "bad_host"), (400, "bad_host"), long])


class ParseErrorTests(SynchronousTestCase):
    """
    L{ParseError} itself.
    """

    def test_attributes(self):
        """
        A L{ParseError} carries its status and reason, also as its args.
        """
        e = ParseError(400, "bad_header")
        self.assertEqual((e.status, e.reason, e.args), (400, "bad_header", (400, "bad_header")))
        self.assertIsInstance(e, Exception)


def _response(*fields: bytes, line: bytes = b"HTTP/1.1 200 OK") -> bytes:
    return b"\r\n".join((line,) + fields)


class ResponseTests(_ParserAssertions, SynchronousTestCase):
    """
    L{parse_response_head}: every error is 502, the client never sees the
    backend's mistake as its own.
    """

    def test_simple(self):
        """
        A status line and fields are parsed into version, status, reason
        and fields.
        """
        resp = parse_response_head(_response(b"Content-Length: 5", b"Server: x"))
        self.assertIsInstance(resp, ResponseHead)
        self.assertEqual(
            (resp.version, resp.status, resp.reason, resp.content_length, resp.chunked),
            ((1, 1), 200, b"OK", 5, False),
        )
        self.assertEqual(resp.headers, [(b"Content-Length", b"5"), (b"Server", b"x")])
        self.assertTrue(resp.keep_alive)
        self.assertEqual(resp.connection, frozenset())

    def test_status_line_variants(self):
        """
        The reason phrase may be missing, empty, or contain spaces, tabs and
        obs-text; it is kept as sent.
        """
        for line, status, reason in [
            (b"HTTP/1.1 200", 200, b""),
            (b"HTTP/1.1 200 ", 200, b""),
            (b"HTTP/1.1 404 Not Found", 404, b"Not Found"),
            (b"HTTP/1.1 404 Not  Found\t", 404, b"Not  Found\t"),
            (b"HTTP/1.1 200  OK", 200, b" OK"),
            (b"HTTP/1.1 200 D\xe9j\xe0 vu", 200, b"D\xe9j\xe0 vu"),
            (b"HTTP/1.1 100 Continue", 100, b"Continue"),
            (b"HTTP/1.1 599 Whatever", 599, b"Whatever"),
            (b"HTTP/1.0 200 OK", 200, b"OK"),
            (b"HTTP/1.1 200 OK: yes (really)", 200, b"OK: yes (really)"),
        ]:
            with self.subTest(line=line):
                resp = parse_response_head(_response(line=line))
                self.assertEqual((resp.status, resp.reason), (status, reason))

    def test_bad_status_lines(self):
        """
        Status codes not of three digits, or below 100, other protocols
        and versions, and stray bytes are C{bad_status_line}.
        """
        for line in (
            b"",
            b"HTTP/1.1",
            b"HTTP/1.1 ",
            b"HTTP/1.1 20",
            b"HTTP/1.1 20 OK",
            b"HTTP/1.1 2000",
            b"HTTP/1.1 2000 OK",
            b"HTTP/1.1 099 Low",
            b"HTTP/1.1 000 Zero",
            b"HTTP/1.1 abc OK",
            b"HTTP/1.1 2OO OK",
            b"HTTP/1.1  200 OK",
            b"HTTP/1.1\t200 OK",
            b"HTTP/1.1 200\tOK",
            b"HTTP/1.1 200 OK\x00",
            b"HTTP/1.1 200 O\x7fK",
            b"HTTP/1.1 200 O\x01K",
            b"HTTP/2 200",
            b"HTTP/2 200 OK",
            b"HTTP/2.0 200 OK",
            b"HTTP/0.9 200 OK",
            b"HTTP/1 200 OK",
            b"HTTP/1.10 200 OK",
            b"http/1.1 200 OK",
            b"ICY 200 OK",
            b"RTSP/1.0 200 OK",
            b" HTTP/1.1 200 OK",
            b"SSH-2.0-OpenSSH",
        ):
            with self.subTest(line=line):
                self.assertResponseRejected(_response(line=line), "bad_status_line")

    def test_bare_cr_lf(self):
        """
        Bare CR or LF in a response head is C{bare_cr_lf}.
        """
        self.assertResponseRejected(b"HTTP/1.1 200 O\rK", "bare_cr_lf")
        self.assertResponseRejected(b"HTTP/1.1 200 OK\nX: y", "bare_cr_lf")

    def test_bad_fields(self):
        """
        Field syntax errors in a response are 502, with the same reasons as
        in a request.
        """
        self.assertResponseRejected(_response(b"X : y"), "bad_header")
        self.assertResponseRejected(_response(b"X: a\x00"), "bad_header")
        self.assertResponseRejected(_response(b"X: a", b" b"), "obs_fold")

    def test_too_many_headers(self):
        """
        Too many fields in a response is 502, not 431.
        """
        self.assertResponseRejected(
            _response(b"X: 1", b"X: 2", b"X: 3"), "too_many_headers", max_header_count=2
        )
        self.assertEqual(len(parse_response_head(_response(*[b"X: 1"] * 200)).headers), 200)
        self.assertResponseRejected(_response(*[b"X: 1"] * 201), "too_many_headers")

    def test_framing(self):
        """
        A chunked response and a Content-Length response, identical
        repeats included, are understood.
        """
        resp = parse_response_head(_response(b"Transfer-Encoding: Chunked"))
        self.assertEqual((resp.chunked, resp.content_length), (True, None))
        resp = parse_response_head(_response(b"Content-Length: 7, 7", b"Content-Length: 7"))
        self.assertEqual((resp.chunked, resp.content_length), (False, 7))
        resp = parse_response_head(_response())
        self.assertEqual((resp.chunked, resp.content_length), (False, None))

    def test_bad_framing(self):
        """
        A Transfer-Encoding with C{chunked} other than last or with a
        coding the proxy cannot decode, and a malformed or ambiguous
        Content-Length are 502.  (Transfer-Encoding beside Content-Length,
        in HTTP/1.0, or with C{gzip} is read: L{ResponseCodingTests}.)
        """
        for head, reason in [
            (_response(b"Transfer-Encoding: chunked, chunked"), "bad_transfer_encoding"),
            (_response(b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"),
             "bad_transfer_encoding"),
            (_response(b"Transfer-Encoding: identity"), "bad_transfer_encoding"),
            (_response(b"Transfer-Encoding: xchunked"), "bad_transfer_encoding"),
            (_response(b"Transfer-Encoding:"), "bad_transfer_encoding"),
            (_response(b"Content-Length: +5"), "bad_content_length"),
            (_response(b"Content-Length: 5", b"Content-Length: 6"), "bad_content_length"),
            (_response(b"Content-Length: 5, 6"), "bad_content_length"),
            (_response(b"Content-Length: "), "bad_content_length"),
            (_response(b"Content-Length: 1234567890123456789"), "bad_content_length"),
            (_response(b"Transfer-Encoding: \x0bchunked"), "bad_header"),
        ]:
            with self.subTest(head=head):
                self.assertResponseRejected(head, reason)

    def test_keep_alive_rules(self):
        """
        An HTTP/1.1 response keeps the connection unless it says C{close};
        an HTTP/1.0 one only when it says C{keep-alive} (and not C{close}).
        """
        for line, fields, expected in [
            (b"HTTP/1.1 200 OK", (), True),
            (b"HTTP/1.1 200 OK", (b"Connection: close",), False),
            (b"HTTP/1.1 200 OK", (b"Connection: keep-alive",), True),
            (b"HTTP/1.1 200 OK", (b"Connection: x, CLOSE",), False),
            (b"HTTP/1.0 200 OK", (), False),
            (b"HTTP/1.0 200 OK", (b"Connection: keep-alive",), True),
            (b"HTTP/1.0 200 OK", (b"Connection: Keep-Alive",), True),
            (b"HTTP/1.0 200 OK", (b"Connection: keep-alive", b"Connection: close"), False),
        ]:
            with self.subTest(line=line, fields=fields):
                self.assertEqual(parse_response_head(_response(*fields, line=line)).keep_alive, expected)

    def test_connection_tokens(self):
        """
        The response's Connection tokens are collected lower-cased.
        """
        resp = parse_response_head(_response(b"Connection: X-Internal, Keep-Alive"))
        self.assertEqual(resp.connection, frozenset([b"x-internal", b"keep-alive"]))

    def test_request_only_fields_ignored(self):
        """
        Fields that only matter in requests (Host, Expect, Upgrade,
        underscore names) do not make a response invalid.
        """
        resp = parse_response_head(_response(
            b"Host: a", b"Host: b", b"Expect: nonsense", b"Upgrade: x", b"Content_Length: 9",
        ))
        self.assertEqual(len(resp.headers), 5)


class ResponseHasBodyTests(SynchronousTestCase):
    """
    L{response_has_body} (RFC 9112 6.3, rules 1 and 2).
    """

    def test_head(self):
        """
        A response to HEAD never has a body.
        """
        for status in (200, 204, 301, 404, 500):
            self.assertFalse(response_has_body(status, b"HEAD"))

    def test_informational_204_304(self):
        """
        1xx, 204 and 304 responses never have a body.
        """
        for status in (100, 101, 103, 199, 204, 304):
            with self.subTest(status=status):
                self.assertFalse(response_has_body(status, b"GET"))
                self.assertFalse(response_has_body(status, b"POST"))

    def test_others_have_bodies(self):
        """
        Every other status to every other method has a body (possibly of
        length zero).
        """
        for status in (200, 201, 202, 203, 205, 206, 300, 301, 302, 303, 305, 307, 400, 404, 500, 599):
            with self.subTest(status=status):
                self.assertTrue(response_has_body(status, b"GET"))
                self.assertTrue(response_has_body(status, b"head"))

    def test_connect(self):
        """
        A 2xx response to CONNECT has no body (it starts a tunnel); other
        responses to CONNECT do.
        """
        self.assertFalse(response_has_body(200, b"CONNECT"))
        self.assertFalse(response_has_body(299, b"CONNECT"))
        self.assertTrue(response_has_body(407, b"CONNECT"))


_Outcome = Union[Tuple[bytes, Optional[bytes], bool], Tuple[str, int, str]]


def _decode(pieces: Sequence[bytes], **kw) -> _Outcome:
    """
    Feed C{pieces} in turn to a new L{ChunkedDecoder}.

    @return: The body, the bytes after the message (C{None} if it did not
        end) and whether the decoder is done; or C{('error', status,
        reason)}.
    """
    decoder = ChunkedDecoder(**kw)
    body = []
    rest = None
    try:
        for piece in pieces:
            out, after = decoder.feed(piece)
            body.extend(out)
            if after is not None:
                rest = after if rest is None else rest + after
    except ParseError as e:
        return ("error", e.status, e.reason)
    return b"".join(body), rest, decoder.done


class ChunkedDecoderTests(SynchronousTestCase):
    """
    L{ChunkedDecoder} (RFC 9112 7.1).
    """

    def assertDecodes(self, data: bytes, body: bytes, rest: Optional[bytes], **kw) -> None:
        self.assertEqual(_decode([data], **kw), (body, rest, rest is not None), data)

    def assertBadChunk(self, data: bytes, reason: str = "bad_chunk", **kw) -> None:
        self.assertEqual(_decode([data], **kw), ("error", 400, reason), data)

    def test_simple(self):
        """
        Chunks are decoded and the last chunk ends the body; nothing
        follows.
        """
        self.assertDecodes(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world", b"")

    def test_pieces_and_done(self):
        """
        C{feed} returns the body pieces and C{None} until the end, then the
        bytes after the message, and sets C{done}.
        """
        decoder = ChunkedDecoder()
        self.assertEqual(decoder.feed(b"5\r\nhel"), ([b"hel"], None))
        self.assertFalse(decoder.done)
        self.assertEqual(decoder.feed(b"lo\r\n0\r\n\r\nGET /"), ([b"lo"], b"GET /"))
        self.assertTrue(decoder.done)

    def test_feed_after_done(self):
        """
        Once done, everything fed is after the message.
        """
        decoder = ChunkedDecoder()
        decoder.feed(b"0\r\n\r\n")
        self.assertEqual(decoder.feed(b"5\r\nhello\r\n"), ([], b"5\r\nhello\r\n"))

    def test_rest_after_message(self):
        """
        The bytes after the last chunk's trailer section (the next
        pipelined message) are returned untouched.
        """
        self.assertDecodes(
            b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"abc",
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        )

    def test_incomplete(self):
        """
        A body without its last chunk is not done, whatever its data
        contains.
        """
        self.assertDecodes(b"7\r\n0\r\n\r\n\r\n", b"0\r\n\r\n\r\n", None)
        self.assertDecodes(b"5\r\nhello\r\n0\r\n", b"hello", None)
        self.assertDecodes(b"5\r\nhello\r\n0\r\nX: y\r\n", b"hello", None)

    def test_sizes(self):
        """
        Sizes are hexadecimal in either case, with leading zeros, up to 16
        digits.
        """
        data = bytes(range(256)) * 4
        for size in (b"a", b"A", b"00a", b"0000000000000a", b"000000000000000A"):
            with self.subTest(size=size):
                self.assertDecodes(size + b"\r\n" + data[:10] + b"\r\n0\r\n\r\n", data[:10], b"")
        self.assertDecodes(b"aB\r\n" + data[:0xab] + b"\r\n0\r\n\r\n", data[:0xab], b"")
        self.assertDecodes(b"3fF\r\n" + data[:0x3ff] + b"\r\n0\r\n\r\n", data[:0x3ff], b"")

    def test_huge_size(self):
        """
        The largest 16-digit size is accepted and its data streamed.
        """
        decoder = ChunkedDecoder()
        self.assertEqual(decoder.feed(b"ffffffffffffffff\r\nabc"), ([b"abc"], None))
        self.assertFalse(decoder.done)

    def test_extensions(self):
        """
        Chunk extensions, with or without values, tokens or quoted strings
        (with quoted pairs, and semicolons, spaces and obs-text inside), and
        whitespace around C{;} and C{=}, are accepted and ignored.
        """
        for ext in (
            b";a",
            b";a=b",
            b";a=b;c;d=e",
            b' ;a = "b"',
            b'\t; a\t=\t"b c"',
            b';a="x;y=z"',
            b';a="q\\"uote"',
            b';a="back\\\\slash"',
            b';a=""',
            b';a="\xe9"',
            b";!#$%&'*+-.^_`|~=!#$%&'*+-.^_`|~",
        ):
            with self.subTest(ext=ext):
                self.assertDecodes(
                    b"5" + ext + b"\r\nhello\r\n0" + ext + b"\r\n\r\n", b"hello", b""
                )

    def test_bad_sizes(self):
        """
        Anything but hex digits and well-formed extensions on a size line
        is C{bad_chunk}: signs, prefixes, whitespace around the size,
        over 16 digits, empty extensions, unterminated or invalid quoted
        strings, controls.
        """
        for line in (
            b"",
            b" 5",
            b"5 ",
            b"\t5",
            b"+5",
            b"-5",
            b"0x5",
            b"5h",
            b"g",
            b"5.0",
            b"\xd9\xa5",
            b"00000000000000005",
            b"10000000000000000",
            b"5;",
            b"5;;a",
            b"5;=a",
            b"5;a=",
            b"5;a b",
            b"5;a=b c",
            b'5;a="b',
            b'5;a="b"c',
            b'5;a="\x00"',
            b'5;a="\\\x00"',
            b"5;a\x00",
            b"5\x00",
            b"5;a=b,c",
            b"5,5",
        ):
            with self.subTest(line=line):
                self.assertBadChunk(line + b"\r\nhello\r\n0\r\n\r\n")

    def test_size_line_length(self):
        """
        A size line of C{MAX_CHUNK_LINE} bytes is accepted; one byte more is
        C{bad_chunk}, whether or not its end has arrived.
        """
        line = b"1;a=" + b"b" * (MAX_CHUNK_LINE - 4)
        self.assertEqual(len(line), MAX_CHUNK_LINE)
        self.assertDecodes(line + b"\r\nx\r\n0\r\n\r\n", b"x", b"")
        self.assertBadChunk(line + b"b\r\nx\r\n0\r\n\r\n")
        self.assertBadChunk(line + b"bb")

    def test_bad_data_ends(self):
        """
        Chunk data not followed by exactly CRLF (too much data, a bare LF, a
        bare CR, nothing) is C{bad_chunk}.
        """
        for data in (
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"3\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhello\r0\r\n\r\n",
            b"5\r\nhello0\r\n\r\n",
            b"5\r\nhello\n\r\n0\r\n\r\n",
            b"5\r\nhelloX",
        ):
            with self.subTest(data=data):
                self.assertBadChunk(data)

    def test_bad_line_ends(self):
        """
        A size line ended by a bare LF, or with a bare CR in it, is
        C{bad_chunk}, even before more data arrives.
        """
        for data in (
            b"5\nhello\r\n0\r\n\r\n",
            b"5\n",
            b"5\rhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\n\r\n",
            b"5\r\nhello\r\n0\n",
        ):
            with self.subTest(data=data):
                self.assertBadChunk(data)

    def test_trailers_dropped(self):
        """
        Trailer fields are accepted and dropped: they are neither body nor
        rest.
        """
        self.assertDecodes(
            b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Other:\r\n\r\nNEXT", b"hello", b"NEXT"
        )

    def test_bad_trailers(self):
        """
        Trailer lines that are not valid field lines, and a trailer section
        ended by a bare LF, are C{bad_trailer}.
        """
        for trailer in (
            b"X-A 1\r\n",
            b"X-A : 1\r\n",
            b": 1\r\n",
            b" X-A: 1\r\n",
            b"X-A: 1\r\n b\r\n",
            b"X-A: a\x00\r\n",
            b"X-A: a\rb\r\n",
            b"X-A: 1\n",
            b"X-A: 1\r\n\n",
            b"\n",
        ):
            with self.subTest(trailer=trailer):
                self.assertBadChunk(b"0\r\n" + trailer + b"\r\n", "bad_trailer")

    def test_trailer_size_limit(self):
        """
        The trailer section, counted with its line ends, may be as large as
        C{max_trailer_size} but not larger, however many lines it has.
        """
        exact = b"0\r\nX: " + b"a" * 15 + b"\r\n\r\n"
        self.assertDecodes(exact, b"", b"", max_trailer_size=20)
        self.assertBadChunk(b"0\r\nX: " + b"a" * 16 + b"\r\n\r\n", "bad_trailer", max_trailer_size=20)
        self.assertDecodes(b"0\r\nX: 1234\r\nY: 123456\r\n\r\n", b"", b"", max_trailer_size=20)
        self.assertBadChunk(b"0\r\nX: 1234\r\nY: 1234567\r\n\r\n", "bad_trailer", max_trailer_size=20)
        self.assertBadChunk(b"0\r\n" + b"X: y\r\n" * 5000 + b"\r\n", "bad_trailer")
        self.assertBadChunk(b"0\r\nX: " + b"a" * 20000, "bad_trailer")

    def test_status(self):
        """
        A decoder for a backend's response raises with its own status.
        """
        self.assertEqual(_decode([b"x\r\n"], status=502), ("error", 502, "bad_chunk"))
        self.assertEqual(_decode([b"0\r\nx\r\n"], status=502), ("error", 502, "bad_trailer"))


# Chunked messages for the splitting tests, with what follows them.
_SPLIT_MESSAGES = [
    b"5\r\nhello\r\n0\r\n\r\n",
    b"0\r\n\r\n",
    b'3;a=b;c="d;e\\"f"\r\nabc\r\n10\r\n0123456789abcdef\r\n'
    b"0;last\r\nX-T: 1\r\nY:  2 \r\n\r\nGET /next HTTP/1.1\r\n",
    # Data that looks like framing.
    b"7\r\n0\r\n\r\nab\r\n2\r\n\r\n\r\n1\r\n\r\r\n0\r\n\r\n\r\n\r\n",
    b"00A\r\n0123456789\r\nB \t; x = y\r\nhello world\r\n000\r\n\r\nTAIL",
    # Incomplete: the body so far and no end.
    b"5\r\nhello\r\n3\r\nab",
    b"5\r\nhello\r\n0\r\nX: y\r\n",
    # Malformed: the same error wherever it is split.
    b"5\r\nhello\r\n0\r\nX: a\rb\r\n\r\n",
    b"5\r\nhello\r\n0\n\r\n",
    b"5\r\nhelloXX0\r\n\r\n",
    b"5;a=\"b\r\nhello\r\n0\r\n\r\n",
    b"5\r\nhello\r\n0\r\nX: y\r\n\n",
]


def _splits(message: bytes):
    """
    The ways to split C{message} that the splitting tests try: whole,
    byte by byte, at every single point, and (for short messages) at every
    pair of points.
    """
    yield [message]
    yield [message[i:i + 1] for i in range(len(message))]
    for i in range(len(message) + 1):
        yield [message[:i], message[i:]]
    if len(message) <= 100:
        for i in range(len(message) + 1):
            for j in range(i, len(message) + 1):
                yield [message[:i], message[i:j], message[j:]]


class ChunkedSplitTests(SynchronousTestCase):
    """
    Where a chunked message is split across C{feed} calls never changes
    the outcome.
    """

    def assertSplitInvariant(self, message: bytes, **kw) -> _Outcome:
        whole = _decode([message], **kw)
        for pieces in _splits(message):
            outcome = _decode(pieces, **kw)
            if outcome != whole:
                self.fail(f"{pieces!r} gave {outcome!r}, whole gave {whole!r}")
        return whole

    def test_messages(self):
        """
        For each message, feeding it whole, byte by byte, or split at any
        one or two points gives the same body, the same bytes after it and
        the same error.
        """
        outcomes = [self.assertSplitInvariant(message) for message in _SPLIT_MESSAGES]
        self.assertEqual(outcomes[:7], [
            (b"hello", b"", True),
            (b"", b"", True),
            (b"abc0123456789abcdef", b"GET /next HTTP/1.1\r\n", True),
            (b"0\r\n\r\nab\r\n\r", b"\r\n\r\n", True),
            (b"0123456789hello world", b"TAIL", True),
            (b"helloab", None, False),
            (b"hello", None, False),
        ])
        self.assertEqual(outcomes[7:], [
            ("error", 400, "bad_trailer"),
            ("error", 400, "bad_chunk"),
            ("error", 400, "bad_chunk"),
            ("error", 400, "bad_chunk"),
            ("error", 400, "bad_trailer"),
        ])

    def test_size_line_at_limit(self):
        """
        A size line of exactly C{MAX_CHUNK_LINE} bytes is accepted wherever
        it is split, its CRLF included; one byte longer is rejected
        wherever it is split.
        """
        line = b"1;a=" + b"b" * (MAX_CHUNK_LINE - 4)
        self.assertEqual(
            self.assertSplitInvariant(line + b"\r\nx\r\n0\r\n\r\n"), (b"x", b"", True)
        )
        self.assertEqual(
            self.assertSplitInvariant(line + b"b\r\nx\r\n0\r\n\r\n"), ("error", 400, "bad_chunk")
        )

    def test_trailer_at_limit(self):
        """
        A trailer section of exactly C{max_trailer_size} bytes is accepted
        wherever it is split, and one byte more rejected, also when a
        single trailer line is longer than a size line may be.
        """
        for size in (20, 5000):
            value = b"a" * (size - 5)
            with self.subTest(size=size):
                self.assertEqual(
                    self.assertSplitInvariant(
                        b"0\r\nX: " + value + b"\r\n\r\nZ", max_trailer_size=size
                    ),
                    (b"", b"Z", True),
                )
                self.assertEqual(
                    self.assertSplitInvariant(
                        b"0\r\nX: " + value + b"a\r\n\r\nZ", max_trailer_size=size
                    ),
                    ("error", 400, "bad_trailer"),
                )

    def test_full_trailer_then_end(self):
        """
        A trailer section that uses up the whole limit can still be ended
        by its empty line, however it is split.
        """
        self.assertEqual(
            self.assertSplitInvariant(b"0\r\nX: 1234\r\nY: 123456\r\n\r\nZ", max_trailer_size=20),
            (b"", b"Z", True),
        )
        self.assertEqual(
            self.assertSplitInvariant(b"0\r\nX: 12345\r\nY: 1234\r\n\r\nZ", max_trailer_size=19),
            (b"", b"Z", True),
        )


class RequestPathTests(SynchronousTestCase):
    """
    Routes and rules see a request's path normalised (the cases are in
    L{tests.test_paths}); the backend receives the target as sent unless
    the listener decodes escaped slashes.
    """

    def test_target_as_sent_path_normalized(self):
        """
        The parsed request's path is the normalised one; its target is
        the client's, query untouched.
        """
        req = parse_request_head(b"GET /public/../admin//x?a=/../b HTTP/1.1\r\nHost: h")
        self.assertEqual((req.path, req.target),
                         (b"/admin/x", b"/public/../admin//x?a=/../b"))

    def test_decode_forwards_normalized(self):
        """
        With C{escaped_slashes = "decode"} the target forwarded carries the
        normalised path, escaped slashes decoded.
        """
        req = parse_request_head(
            b"GET /public/../a%2fb//%61?q=%2f HTTP/1.1\r\nHost: h", escaped_slashes="decode")
        self.assertEqual((req.path, req.target), (b"/a/b/a", b"/a/b/a?q=%2f"))

    def test_refused_paths(self):
        """
        A path the normaliser refuses is 400 with its reason: one that
        climbs above the root, escaped slashes under C{"reject"}.
        """
        for line, setting, reason in (
            (b"GET /a/..%2f..%2fetc HTTP/1.1", "keep", "path_traversal"),
            (b"GET /../x?y HTTP/1.1", "keep", "path_traversal"),
            (b"GET /a/..%2fb HTTP/1.1", "keep", "ambiguous_path"),
            (b"GET /a%2fb HTTP/1.1", "reject", "escaped_slash"),
            (b"GET /a\\b HTTP/1.1", "reject", "escaped_slash"),
        ):
            e = self.assertRaises(ParseError, parse_request_head,
                                  _request(b"Host: a", line=line), escaped_slashes=setting)
            self.assertEqual((e.status, e.reason), (400, reason), line)

    def test_leading_slashes_merged(self):
        """
        Leading slashes and backslashes are merged in what is forwarded:
        backends would read C{//example.com/x} as a scheme-relative URL.
        """
        for line in (b"GET //example.com/x HTTP/1.1", b"GET /\\example.com/x HTTP/1.1"):
            req = parse_request_head(_request(b"Host: a", line=line))
            self.assertEqual(req.target, b"/example.com/x", line)


def _gzip(data: bytes) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return z.compress(data) + z.flush()


def _decode_all(decoder: CodingDecoder, pieces) -> bytes:
    out = []
    for piece in pieces:
        decoder.feed(piece)
        while True:
            data = decoder.read()
            if data is None:
                break
            out.append(data)
    return b"".join(out)


class ResponseCodingTests(_ParserAssertions, SynchronousTestCase):
    """
    A response's Transfer-Encoding is read as RFC 9112 6.1 and 6.3 allow a
    careful recipient, with requests held as strictly as before.
    """

    def test_decodable_codings(self):
        """
        C{gzip}, C{x-gzip} and C{deflate} before a final C{chunked} are
        codings to undo, in the order the server applied them, on a
        chunked body and a connection that can be reused.
        """
        for value, codings in [
            (b"gzip, chunked", (b"gzip",)),
            (b"X-Gzip,chunked", (b"x-gzip",)),
            (b"deflate, chunked", (b"deflate",)),
            (b"deflate, gzip, chunked", (b"deflate", b"gzip")),
        ]:
            with self.subTest(value=value):
                resp = parse_response_head(_response(b"Transfer-Encoding: " + value))
                self.assertEqual(
                    (resp.chunked, resp.codings, resp.content_length, resp.keep_alive),
                    (True, codings, None, True))

    def test_plain_framing_has_no_codings(self):
        """
        Chunked, Content-Length and close-delimited responses have nothing
        to undo.
        """
        for fields in [(b"Transfer-Encoding: chunked",), (b"Content-Length: 3",), ()]:
            self.assertEqual(parse_response_head(_response(*fields)).codings, (), fields)

    def test_last_coding_not_chunked(self):
        """
        A last coding other than C{chunked} (RFC 9112 6.3 rule 4): the body
        runs until the server closes, so the connection is never reused.
        """
        resp = parse_response_head(_response(b"Transfer-Encoding: gzip"))
        self.assertEqual((resp.chunked, resp.codings, resp.content_length, resp.keep_alive),
                         (False, (b"gzip",), None, False))

    def test_faulty_framing_read_once(self):
        """
        Transfer-Encoding beside Content-Length, or in an HTTP/1.0
        response (keep-alive or not), is read as the codings say with the
        length ignored, and the connection is not reused.
        """
        for fields, line, codings in [
            ((b"Content-Length: 3", b"Transfer-Encoding: chunked"), b"HTTP/1.1 200 OK", ()),
            ((b"Transfer-Encoding: gzip, chunked", b"Content-Length: 3"), b"HTTP/1.1 200 OK",
             (b"gzip",)),
            ((b"Transfer-Encoding: chunked", b"Connection: keep-alive"), b"HTTP/1.0 200 OK", ()),
            ((b"Transfer-Encoding: chunked", b"Content-Length: x"), b"HTTP/1.0 200 OK", ()),
        ]:
            with self.subTest(fields=fields, line=line):
                resp = parse_response_head(_response(*fields, line=line))
                self.assertEqual(
                    (resp.chunked, resp.codings, resp.content_length, resp.keep_alive),
                    (True, codings, None, False))

    def test_refused_codings(self):
        """
        An unknown coding (which could not be undone, even close-delimited),
        C{chunked} before another coding, and more than two codings to undo
        are 502 C{bad_transfer_encoding}.
        """
        for value in [b"foo", b"foo, chunked", b"compress, chunked", b"identity, chunked",
                      b"chunked, gzip", b"gzip, chunked, gzip, chunked",
                      b"gzip, gzip, gzip, chunked", b"gzip,, chunked"]:
            with self.subTest(value=value):
                self.assertResponseRejected(
                    _response(b"Transfer-Encoding: " + value), "bad_transfer_encoding")

    def test_requests_unchanged(self):
        """
        Requests get none of that latitude: what a response may carry is
        still refused in a request.
        """
        for fields, line, status, reason in [
            ((b"Transfer-Encoding: gzip, chunked",), b"POST / HTTP/1.1", 501,
             "unsupported_transfer_encoding"),
            ((b"Transfer-Encoding: gzip",), b"POST / HTTP/1.1", 400, "bad_transfer_encoding"),
            ((b"Transfer-Encoding: chunked",), b"POST / HTTP/1.0", 400, "bad_transfer_encoding"),
            ((b"Transfer-Encoding: chunked", b"Content-Length: 3"), b"POST / HTTP/1.1", 400,
             "length_and_chunked"),
        ]:
            with self.subTest(fields=fields, line=line):
                self.assertRequestRejected(_request(b"Host: a", *fields, line=line),
                                           status, reason)


class CodingDecoderTests(SynchronousTestCase):
    """
    L{CodingDecoder} undoes gzip and deflate codings incrementally, in
    bounded pieces.
    """

    def test_gzip_any_split(self):
        """
        A gzip body decodes to its content however it is split.
        """
        content = b"".join(b"line %d\n" % i for i in range(5000))
        coded = _gzip(content)
        for size in (1, 7, 1000, len(coded)):
            with self.subTest(size=size):
                decoder = CodingDecoder((b"gzip",))
                pieces = [coded[i:i + size] for i in range(0, len(coded), size)]
                self.assertEqual(_decode_all(decoder, pieces), content)
                self.assertTrue(decoder.complete)

    def test_deflate_and_nested(self):
        """
        C{deflate} is the zlib format; nested codings are undone last
        applied first.
        """
        content = b"hello " * 100
        decoder = CodingDecoder((b"deflate",))
        self.assertEqual(_decode_all(decoder, [zlib.compress(content)]), content)
        self.assertTrue(decoder.complete)
        decoder = CodingDecoder((b"deflate", b"x-gzip"))
        self.assertEqual(_decode_all(decoder, [_gzip(zlib.compress(content))]), content)
        self.assertTrue(decoder.complete)

    def test_gzip_members(self):
        """
        Concatenated gzip members are one body (RFC 1952 2.2).
        """
        decoder = CodingDecoder((b"gzip",))
        self.assertEqual(_decode_all(decoder, [_gzip(b"one "), _gzip(b"two")]), b"one two")
        self.assertTrue(decoder.complete)

    def test_truncated(self):
        """
        A coded body that stops before its stream ends is not complete;
        an empty one is taken for empty content.
        """
        decoder = CodingDecoder((b"gzip",))
        coded = _gzip(b"x" * 1000)
        _decode_all(decoder, [coded[:-4]])
        self.assertFalse(decoder.complete)
        self.assertTrue(CodingDecoder((b"gzip",)).complete)

    def test_bad_data(self):
        """
        Bytes that are not what the coding says, and anything after the
        end of a deflate stream, are C{bad_coding}.
        """
        for codings, coded in [
            ((b"gzip",), b"not gzip at all"),
            ((b"deflate",), _gzip(b"x")),
            ((b"deflate",), zlib.compress(b"x") + b"more"),
        ]:
            with self.subTest(coded=coded):
                e = self.assertRaises(ParseError, _decode_all, CodingDecoder(codings), [coded])
                self.assertEqual((e.status, e.reason), (502, "bad_coding"))

    def test_bomb_in_bounded_pieces(self):
        """
        A body that expands a thousandfold, twice nested, comes out in
        pieces of at most L{DECODED_PIECE} bytes, each decoded when it is
        read, never all at once.
        """
        content_size = 64 * 1024 * 1024
        z = zlib.compressobj(9)
        inner = b"".join(z.compress(b"\0" * (1 << 20)) for _ in range(64)) + z.flush()
        coded = _gzip(inner)
        self.assertLess(len(coded), 2048)
        decoder = CodingDecoder((b"deflate", b"gzip"))
        decoder.feed(coded)
        first = decoder.read()
        self.assertLessEqual(len(first), DECODED_PIECE)
        total = len(first)
        while True:
            data = decoder.read()
            if data is None:
                break
            self.assertLessEqual(len(data), DECODED_PIECE)
            total += len(data)
        self.assertEqual(total, content_size)
        self.assertTrue(decoder.complete)
