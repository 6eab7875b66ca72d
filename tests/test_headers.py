"""
Tests for L{twistproxy.http.headers}: the heads the proxy writes to
backends and to clients, its own error responses, and which peers are
trusted proxies.
"""

from __future__ import annotations

from typing import List, Tuple

from twisted.trial.unittest import SynchronousTestCase

from twistproxy.config import HeaderRules, Sticky
from twistproxy.http.headers import (
    FRAME_CHUNKED,
    FRAME_CLOSE,
    FRAME_LENGTH,
    FRAME_NONE,
    NO_RULES,
    CompiledRules,
    SharedHead,
    request_head,
    response_head,
    sticky_cookie,
    stored_head,
)
from twistproxy.http.answers import error_response, own_head
from twistproxy.http.parser import parse_request_head, parse_response_head

CLIENT = "192.0.2.7"


def _req(*fields: bytes, line: bytes = b"GET /a?b=1 HTTP/1.1"):
    return parse_request_head(b"\r\n".join((line,) + fields))


def _resp(*fields: bytes, line: bytes = b"HTTP/1.1 200 OK"):
    return parse_response_head(b"\r\n".join((line,) + fields))


def _forward(req, **kw) -> bytes:
    """
    L{request_head} with defaults: an untrusted IPv4 client over http,
    Host kept, Via C{tp}.
    """
    args = dict(
        host=req.host, client_address=CLIENT, trusted=False, proto=b"http", via=b"tp"
    )
    args.update(kw)
    return request_head(req, **args)


def _return(resp, **kw) -> bytes:
    """
    L{response_head} with defaults: Content-Length framing, keep-alive, an
    HTTP/1.1 client, Via C{tp}.
    """
    args = dict(framing=FRAME_LENGTH, keep_alive=True, client_minor=1, via=b"tp")
    args.update(kw)
    return response_head(resp, **args)


def _split(head: bytes) -> Tuple[bytes, List[Tuple[bytes, bytes]]]:
    """
    The start line and the fields of a head built by the proxy, checking
    that it ends with exactly one empty line and that it parses.
    """
    assert head.endswith(b"\r\n\r\n") and not head.endswith(b"\r\n\r\n\r\n"), head
    lines = head[:-4].split(b"\r\n")
    return lines[0], [tuple(line.split(b": ", 1)) for line in lines[1:]]


def _values(head: bytes, name: bytes) -> List[bytes]:
    return [v for n, v in _split(head)[1] if n.lower() == name.lower()]


def _names(head: bytes) -> List[bytes]:
    return [n.lower() for n, _ in _split(head)[1]]


class RequestHeadTests(SynchronousTestCase):
    """
    L{request_head}: the head forwarded to a backend.
    """

    def test_exact(self):
        """
        A simple request is forwarded as HTTP/1.1 with the given Host first,
        its end-to-end fields in order and then the proxy's forwarding
        fields (X-Real-IP included) and Via.
        """
        req = _req(b"Host: example.com", b"Accept: */*", b"user-agent: t")
        self.assertEqual(
            _forward(req),
            b"GET /a?b=1 HTTP/1.1\r\n"
            b"Host: example.com\r\n"
            b"Accept: */*\r\n"
            b"user-agent: t\r\n"
            b"X-Forwarded-For: 192.0.2.7\r\n"
            b"X-Real-IP: 192.0.2.7\r\n"
            b"X-Forwarded-Proto: http\r\n"
            b"X-Forwarded-Host: example.com\r\n"
            b"Forwarded: for=192.0.2.7;host=example.com;proto=http\r\n"
            b"Via: 1.1 tp\r\n"
            b"\r\n",
        )

    def test_parses_back(self):
        """
        What the proxy forwards is itself a valid request for the strict
        parser, with the same method, target and framing.
        """
        req = _req(b"Host: a:8080", b"Content-Length: 5, 5", b"X: y", line=b"POST /p?q HTTP/1.0")
        again = parse_request_head(_forward(req)[:-4])
        self.assertEqual(
            (again.method, again.target, again.version, again.host, again.content_length),
            (b"POST", b"/p?q", (1, 1), b"a:8080", 5),
        )

    def test_hop_by_hop_removed(self):
        """
        Connection, Keep-Alive, Proxy-Connection, TE, Trailer, Upgrade,
        Proxy-Authorization, Proxy-Authenticate and Expect are not
        forwarded, in any case.
        """
        req = _req(
            b"Host: a",
            b"Connection: keep-alive",
            b"keep-alive: timeout=5",
            b"Proxy-Connection: keep-alive",
            b"TE: trailers",
            b"Trailer: X-Sum",
            b"UPGRADE: websocket",
            b"Proxy-Authorization: Basic eA==",
            b"Proxy-Authenticate: Basic",
            b"Content-Length: 1",
            b"Expect: 100-continue",
            b"Accept: a",
        )
        names = _names(_forward(req))
        for gone in (
            b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
            b"upgrade", b"proxy-authorization", b"proxy-authenticate", b"expect",
        ):
            self.assertNotIn(gone, names)
        self.assertIn(b"accept", names)

    def test_connection_named_fields_removed(self):
        """
        Every field named in Connection is removed, matched
        case-insensitively, and repeated end-to-end fields keep their order
        and the case of their names.
        """
        req = _req(
            b"Host: a",
            b"Connection: X-Secret, x-OTHER",
            b"Connection: X-Third",
            b"x-secret: 1",
            b"X-Other: 2",
            b"X-THIRD: 3",
            b"Accept: a",
            b"X-Kept: k",
            b"accept: b",
        )
        _, fields = _split(_forward(req))
        self.assertEqual(fields[:4], [(b"Host", b"a"), (b"Accept", b"a"), (b"X-Kept", b"k"), (b"accept", b"b")])
        self.assertFalse({b"x-secret", b"x-other", b"x-third"} & set(_names(_forward(req))))

    def test_host_choice(self):
        """
        The C{host} argument is the one Host sent, whatever the client's
        Host was; the client's host still goes in X-Forwarded-Host and
        Forwarded.
        """
        head = _forward(_req(b"Host: public.example"), host=b"10.0.0.1:8001")
        self.assertEqual(_values(head, b"Host"), [b"10.0.0.1:8001"])
        self.assertEqual(_values(head, b"X-Forwarded-Host"), [b"public.example"])
        self.assertIn(b"host=public.example;", _values(head, b"Forwarded")[0])

    def test_absolute_form_target(self):
        """
        An absolute-form request is forwarded in origin form, with its
        authority as host.
        """
        req = _req(b"Host: ignored", line=b"GET http://example.com/x?y HTTP/1.1")
        head = _forward(req)
        self.assertTrue(head.startswith(b"GET /x?y HTTP/1.1\r\nHost: example.com\r\n"))
        self.assertEqual(_values(head, b"Host"), [b"example.com"])

    def test_xff_untrusted_replaced(self):
        """
        From an untrusted client, X-Forwarded-For, -Proto and -Host and
        Forwarded are replaced by what the proxy saw, all of their fields.
        """
        req = _req(
            b"Host: example.com",
            b"X-Forwarded-For: 6.6.6.6",
            b"x-forwarded-for: 6.6.6.7",
            b"X-Forwarded-Proto: https",
            b"X-Forwarded-Host: evil.example",
            b"Forwarded: for=6.6.6.6",
        )
        head = _forward(req)
        self.assertEqual(_values(head, b"X-Forwarded-For"), [b"192.0.2.7"])
        self.assertEqual(_values(head, b"X-Forwarded-Proto"), [b"http"])
        self.assertEqual(_values(head, b"X-Forwarded-Host"), [b"example.com"])
        self.assertEqual(_values(head, b"Forwarded"), [b"for=192.0.2.7;host=example.com;proto=http"])
        self.assertNotIn(b"6.6.6", head)
        self.assertNotIn(b"evil", head)

    def test_xff_trusted_appended(self):
        """
        From a trusted proxy, X-Forwarded-For and Forwarded fields are
        merged in order and extended; the first X-Forwarded-Proto and
        X-Forwarded-Host are kept.
        """
        req = _req(
            b"Host: a:8080",
            b"X-Forwarded-For: 198.51.100.1, 198.51.100.2",
            b"X-Forwarded-For: 198.51.100.3",
            b"Forwarded: for=198.51.100.1",
            b"Forwarded: for=198.51.100.3",
            b"X-Forwarded-Proto: https",
            b"X-Forwarded-Proto: http",
            b"X-Forwarded-Host: public.example",
            b"X-Forwarded-Host: other.example",
        )
        head = _forward(req, trusted=True)
        self.assertEqual(
            _values(head, b"X-Forwarded-For"),
            [b"198.51.100.1, 198.51.100.2, 198.51.100.3, 192.0.2.7"],
        )
        self.assertEqual(
            _values(head, b"Forwarded"),
            [b'for=198.51.100.1, for=198.51.100.3, for=192.0.2.7;host="a:8080";proto=http'],
        )
        self.assertEqual(_values(head, b"X-Forwarded-Proto"), [b"https"])
        self.assertEqual(_values(head, b"X-Forwarded-Host"), [b"public.example"])

    def test_real_ip_untrusted_replaced(self):
        """
        From an untrusted client, every X-Real-IP field it sent is replaced
        by one with the peer's address; a peer without an IP address (a
        UNIX socket) gets none at all.
        """
        req = _req(b"Host: a", b"X-Real-IP: 6.6.6.6", b"x-real-ip: 6.6.6.7",
                   b"X-Forwarded-For: 6.6.6.8")
        head = _forward(req)
        self.assertEqual(_values(head, b"X-Real-IP"), [b"192.0.2.7"])
        self.assertNotIn(b"6.6.6", head)
        self.assertEqual(_values(_forward(req, client_address=""), b"X-Real-IP"), [])

    def test_real_ip_trusted(self):
        """
        From a trusted proxy, the first X-Real-IP it sent is kept; without
        one, X-Real-IP is the client that proxy names (the last Forwarded
        element's C{for}, else the last X-Forwarded-For entry), else the
        peer itself.
        """
        for fields, expected in [
            ((b"X-Real-IP: 198.51.100.9", b"X-Real-IP: 198.51.100.8",
              b"X-Forwarded-For: 198.51.100.1"), b"198.51.100.9"),
            ((b"X-Forwarded-For: 198.51.100.1, 198.51.100.2",), b"198.51.100.2"),
            ((b"X-Forwarded-For: 198.51.100.1", b'Forwarded: for=198.51.100.3, for="[2001:db8::1]:443"'),
             b"2001:db8::1"),
            ((b"Forwarded: for=unknown",), b"192.0.2.7"),
            ((), b"192.0.2.7"),
        ]:
            with self.subTest(fields=fields):
                head = _forward(_req(b"Host: a", *fields), trusted=True)
                self.assertEqual(_values(head, b"X-Real-IP"), [expected])

    def test_trusted_without_forwarding_fields(self):
        """
        A trusted proxy that sends no forwarding fields gets the proxy's
        own, as an untrusted client would.
        """
        req = _req(b"Host: a")
        self.assertEqual(_forward(req, trusted=True), _forward(req, trusted=False))

    def test_proto(self):
        """
        C{proto} is what X-Forwarded-Proto and Forwarded say.
        """
        head = _forward(_req(b"Host: a"), proto=b"https")
        self.assertEqual(_values(head, b"X-Forwarded-Proto"), [b"https"])
        self.assertEqual(_values(head, b"Forwarded"), [b"for=192.0.2.7;host=a;proto=https"])

    def test_forwarded_nodes(self):
        """
        In Forwarded, an IPv4 client is a bare token, an IPv6 client is
        bracketed and quoted (RFC 7239 6), and a client without an IP
        address is C{unknown}.
        """
        req = _req(b"Host: a")
        for address, node in [
            ("192.0.2.7", b"for=192.0.2.7;"),
            ("2001:db8::1", b'for="[2001:db8::1]";'),
            ("::ffff:192.0.2.7", b'for="[::ffff:192.0.2.7]";'),
            ("", b"for=unknown;"),
        ]:
            with self.subTest(address=address):
                [value] = _values(_forward(req, client_address=address), b"Forwarded")
                self.assertTrue(value.startswith(node), value)

    def test_forwarded_host_quoting(self):
        """
        A host that is a token is bare in Forwarded; with a port or as an
        IPv6 literal it is a quoted string.
        """
        for host, expected in [
            (b"example.com", b"host=example.com;"),
            (b"example.com:8080", b'host="example.com:8080";'),
            (b"[::1]", b'host="[::1]";'),
            (b"[::1]:8080", b'host="[::1]:8080";'),
            (b"a,b", b'host="a,b";'),
        ]:
            with self.subTest(host=host):
                [value] = _values(_forward(_req(b"Host: " + host)), b"Forwarded")
                self.assertIn(expected, value)

    def test_no_host(self):
        """
        For an HTTP/1.0 request without a host, no X-Forwarded-Host is sent
        and Forwarded has no C{host} parameter, rather than empty ones.
        """
        head = _forward(_req(line=b"GET / HTTP/1.0"), host=b"10.0.0.1:8001")
        self.assertEqual(_values(head, b"Host"), [b"10.0.0.1:8001"])
        self.assertEqual(_values(head, b"X-Forwarded-Host"), [])
        self.assertEqual(_values(head, b"Forwarded"), [b"for=192.0.2.7;proto=http"])

    def test_no_client_address(self):
        """
        A client without an IP address (a UNIX socket peer) adds nothing
        to X-Forwarded-For, rather than an empty entry.
        """
        head = _forward(_req(b"Host: a"), client_address="")
        self.assertEqual(_values(head, b"X-Forwarded-For"), [])
        head = _forward(_req(b"Host: a", b"X-Forwarded-For: 198.51.100.1"), client_address="", trusted=True)
        self.assertEqual(_values(head, b"X-Forwarded-For"), [b"198.51.100.1"])

    def test_client_lines_cached(self):
        """
        The forwarding fields of an untrusted client are the same whether
        computed or taken from the cache of the last connections' ones:
        per client address and host.  The cache is bounded, and keeps no
        long host.
        """
        from twistproxy.http import headers

        self.patch(headers, "_CLIENT_LINES", {})
        self.patch(headers, "_CLIENT_LINES_MAX", 3)
        first = _forward(_req(b"Host: a"))
        self.assertEqual(len(headers._CLIENT_LINES), 1)
        self.assertEqual(_forward(_req(b"Host: a")), first)
        self.assertEqual(len(headers._CLIENT_LINES), 1)
        other = _forward(_req(b"Host: a"), client_address="198.51.100.1")
        self.assertEqual(_values(other, b"X-Real-IP"), [b"198.51.100.1"])
        self.assertEqual(_values(_forward(_req(b"Host: b")), b"X-Forwarded-Host"), [b"b"])
        self.assertEqual(len(headers._CLIENT_LINES), 3)
        _forward(_req(b"Host: c"))
        self.assertEqual(len(headers._CLIENT_LINES), 1)
        long_host = b"h" * (headers._CACHED_HOST_MAX + 1)
        head = _forward(_req(b"Host: " + long_host))
        self.assertEqual(_values(head, b"X-Forwarded-Host"), [long_host])
        self.assertEqual(len(headers._CLIENT_LINES), 1)
        self.assertEqual(_forward(_req(b"Host: a")), first)

    def test_via(self):
        """
        Via names the client's protocol version and the pseudonym, after
        any Via fields received (kept even from an untrusted client: Via is
        about protocols, not identity).
        """
        self.assertEqual(_values(_forward(_req(b"Host: a")), b"Via"), [b"1.1 tp"])
        self.assertEqual(
            _values(_forward(_req(line=b"GET / HTTP/1.0")), b"Via"), [b"1.0 tp"]
        )
        head = _forward(_req(b"Host: a", b"Via: 1.1 first", b"via: 1.0 second (x)"))
        self.assertEqual(_values(head, b"Via"), [b"1.1 first, 1.0 second (x), 1.1 tp"])

    def test_via_http2(self):
        """
        A request received over HTTP/2 is forwarded as HTTP/1.1 with Via
        C{2 tp}: HTTP/2 has no minor version (RFC 9110 7.6.3).
        """
        req = _req(b"Host: a", b"Via: 2 edge")
        req.version = (2, 0)
        head = _forward(req)
        self.assertTrue(head.startswith(b"GET /a?b=1 HTTP/1.1\r\n"))
        self.assertEqual(_values(head, b"Via"), [b"2 edge, 2 tp"])

    def test_no_via(self):
        """
        With no pseudonym, received Via fields are passed on merged, and no
        Via is added otherwise.
        """
        self.assertEqual(_values(_forward(_req(b"Host: a"), via=b""), b"Via"), [])
        head = _forward(_req(b"Host: a", b"Via: 1.1 first", b"Via: 1.1 second"), via=b"")
        self.assertEqual(_values(head, b"Via"), [b"1.1 first, 1.1 second"])

    def test_framing_regenerated(self):
        """
        Content-Length and Transfer-Encoding are written from the parsed
        framing, once, never copied: identical repeats become one, leading
        zeros go, the coding is spelled C{chunked}.
        """
        for fields, framing in [
            ((b"Content-Length: 5", b"Content-Length: 5"), [(b"Content-Length", b"5")]),
            ((b"Content-Length: 5, 005",), [(b"Content-Length", b"5")]),
            ((b"content-length: 0",), [(b"Content-Length", b"0")]),
            ((b"Transfer-Encoding:  Chunked ",), [(b"Transfer-Encoding", b"chunked")]),
            ((), []),
        ]:
            with self.subTest(fields=fields):
                head = _forward(_req(b"Host: a", *fields, line=b"POST / HTTP/1.1"))
                got = [
                    (n, v) for n, v in _split(head)[1]
                    if n.lower() in (b"content-length", b"transfer-encoding")
                ]
                self.assertEqual(got, framing)

    def test_framing_from_parsed_head_only(self):
        """
        The framing fields come from the parsed head's attributes, not from
        its field list.
        """
        req = _req(b"Host: a", b"Content-Length: 5", line=b"POST / HTTP/1.1")
        req.headers.append((b"Transfer-Encoding", b"chunked"))
        req.headers.append((b"Content-Length", b"999"))
        head = _forward(req)
        self.assertEqual(_values(head, b"Content-Length"), [b"5"])
        self.assertEqual(_values(head, b"Transfer-Encoding"), [])

    def test_upgrade_kept(self):
        """
        An upgrade request keeps its Upgrade, with C{Connection: upgrade}
        and nothing else in Connection.
        """
        req = _req(
            b"Host: a", b"Connection: keep-alive, Upgrade", b"Upgrade: websocket",
            b"Sec-WebSocket-Key: k", line=b"GET /ws HTTP/1.1",
        )
        head = _forward(req)
        self.assertIn(b"\r\nConnection: upgrade\r\nUpgrade: websocket\r\n", head)
        self.assertEqual(_values(head, b"Connection"), [b"upgrade"])
        self.assertEqual(_values(head, b"Upgrade"), [b"websocket"])
        self.assertEqual(_values(head, b"Sec-WebSocket-Key"), [b"k"])

    def test_upgrade_not_asked(self):
        """
        Upgrade without C{Connection: upgrade} is removed like any
        hop-by-hop field.
        """
        head = _forward(_req(b"Host: a", b"Upgrade: websocket"))
        self.assertEqual(_values(head, b"Upgrade"), [])
        self.assertEqual(_values(head, b"Connection"), [])


def _rules(remove=(), set=(), add=()) -> CompiledRules:
    return CompiledRules(HeaderRules(remove=tuple(remove), set=tuple(set), add=tuple(add)))


class CompiledRulesTests(SynchronousTestCase):
    """
    L{CompiledRules}, and header rules applied by L{request_head} and
    L{response_head}.
    """

    def test_compiled(self):
        """
        C{drop} holds the lower-cased names removed or set; C{append} the
        set lines, then the added ones, in order.
        """
        rules = _rules(remove=["X-Debug"], set=[("X-Env", "prod"), ("X-B", "2")], add=[("X-Tag", "a")])
        self.assertEqual(rules.drop, frozenset([b"x-debug", b"x-env", b"x-b"]))
        self.assertEqual(rules.append, b"X-Env: prod\r\nX-B: 2\r\nX-Tag: a\r\n")
        self.assertIsNone(rules.host)
        self.assertEqual(rules.own, frozenset())

    def test_no_rules(self):
        """
        L{NO_RULES} changes nothing.
        """
        self.assertEqual((NO_RULES.drop, NO_RULES.append, NO_RULES.host, NO_RULES.own),
                         (frozenset(), b"", None, frozenset()))
        req = _req(b"Host: a", b"X: y")
        self.assertEqual(_forward(req, rules=NO_RULES), _forward(req))

    def test_remove_set_add(self):
        """
        Remove deletes every field of the name, in any case; set replaces
        every field of its name with one; add keeps existing fields; the
        rules' fields come after the proxy's own, set before add.
        """
        req = _req(
            b"Host: a", b"x-debug: 1", b"X-Debug: 2", b"X-Env: dev", b"x-env: test",
            b"X-Tag: old", b"Accept: */*",
        )
        rules = _rules(remove=["X-DEBUG"], set=[("X-Env", "prod")], add=[("X-Tag", "new")])
        _, fields = _split(_forward(req, rules=rules))
        self.assertEqual(fields[:3], [(b"Host", b"a"), (b"X-Tag", b"old"), (b"Accept", b"*/*")])
        self.assertEqual(fields[-2:], [(b"X-Env", b"prod"), (b"X-Tag", b"new")])
        self.assertNotIn(b"x-debug", [n.lower() for n, _ in fields])
        self.assertEqual(len([n for n, _ in fields if n.lower() == b"x-env"]), 1)

    def test_remove_then_add(self):
        """
        Removing and adding the same name leaves only the added field.
        """
        rules = _rules(remove=["X-Tag"], add=[("X-Tag", "new")])
        head = _forward(_req(b"Host: a", b"X-Tag: old"), rules=rules)
        self.assertEqual(_values(head, b"X-Tag"), [b"new"])

    def test_set_forwarding_field(self):
        """
        Setting a field the proxy writes itself replaces the proxy's own
        instead of adding a second one.
        """
        for name in ("X-Forwarded-Proto", "X-Forwarded-For", "X-Forwarded-Host", "Forwarded",
                     "X-Real-IP", "Via"):
            with self.subTest(name=name):
                rules = _rules(set=[(name, "value")])
                head = _forward(_req(b"Host: a", name.encode("ascii") + b": client"), rules=rules, trusted=True)
                self.assertEqual(_values(head, name.encode("ascii")), [b"value"])
        self.assertEqual(_rules(set=[("via", "x")]).own, frozenset([b"via"]))

    def test_remove_forwarding_field(self):
        """
        Removing a field the proxy writes itself means it is not sent at
        all; the others still are.
        """
        rules = _rules(remove=["x-forwarded-for", "VIA", "x-real-ip"])
        head = _forward(_req(b"Host: a", b"X-Forwarded-For: 1.2.3.4", b"X-Real-IP: 1.2.3.4"),
                        rules=rules, trusted=True)
        self.assertEqual(_values(head, b"X-Forwarded-For"), [])
        self.assertEqual(_values(head, b"X-Real-IP"), [])
        self.assertEqual(_values(head, b"Via"), [])
        self.assertEqual(_values(head, b"X-Forwarded-Proto"), [b"http"])

    def test_set_host(self):
        """
        Setting Host replaces the Host sent to the backend, which stays the
        only one and first; the client's host is still reported.
        """
        rules = _rules(set=[("host", "internal.example")])
        head = _forward(_req(b"Host: public.example"), rules=rules, host=b"10.0.0.1")
        self.assertTrue(head.startswith(b"GET /a?b=1 HTTP/1.1\r\nHost: internal.example\r\n"))
        self.assertEqual(_values(head, b"Host"), [b"internal.example"])
        self.assertEqual(_values(head, b"X-Forwarded-Host"), [b"public.example"])

    def test_remove_framing_does_nothing(self):
        """
        Removing a framing or connection field, or Host, does not change
        the message's framing: they are the proxy's to write.
        """
        rules = _rules(remove=["Content-Length", "Transfer-Encoding", "Connection", "Upgrade", "Host"])
        req = _req(b"Host: a", b"Content-Length: 3", line=b"POST / HTTP/1.1")
        head = _forward(req, rules=rules)
        self.assertEqual(_values(head, b"Content-Length"), [b"3"])
        self.assertEqual(_values(head, b"Host"), [b"a"])
        resp = _return(_resp(b"Content-Length: 3"), rules=rules, keep_alive=False)
        self.assertEqual(_values(resp, b"Content-Length"), [b"3"])
        self.assertEqual(_values(resp, b"Connection"), [b"close"])

    def test_framing_rules_refused(self):
        """
        Rules that set or add a framing or connection field, or add a
        second Host, are refused: they would make the proxy and the next hop
        disagree on where a message ends.
        """
        for kind in ("set", "add"):
            for name in (
                "Content-Length", "transfer-encoding", "Connection", "Keep-Alive",
                "Proxy-Connection", "TE", "Trailer", "Upgrade",
            ):
                with self.subTest(kind=kind, name=name):
                    e = self.assertRaises(ValueError, _rules, **{kind: [(name, "0")]})
                    self.assertIn(repr(name), str(e))
        self.assertRaises(ValueError, _rules, add=[("Host", "x")])

    def test_response_rules(self):
        """
        Response rules remove, set and add fields after the proxy's own,
        and may replace Via.
        """
        rules = _rules(remove=["Server"], set=[("Cache-Control", "no-store")], add=[("X-Served-By", "edge")])
        resp = _resp(b"Server: secret", b"Cache-Control: public", b"Cache-Control: max-age=5", b"Content-Length: 0")
        head = _return(resp, rules=rules)
        self.assertEqual(
            head,
            b"HTTP/1.1 200 OK\r\nVia: 1.1 tp\r\nContent-Length: 0\r\n"
            b"Cache-Control: no-store\r\nX-Served-By: edge\r\n\r\n",
        )
        head = _return(_resp(b"Via: 1.1 b", b"Content-Length: 0"), rules=_rules(set=[("Via", "hidden")]))
        self.assertEqual(_values(head, b"Via"), [b"hidden"])
        head = _return(_resp(b"Content-Length: 0"), rules=_rules(remove=["Via"]))
        self.assertEqual(_values(head, b"Via"), [])


class ResponseHeadTests(SynchronousTestCase):
    """
    L{response_head}: the head returned to a client.
    """

    def test_exact(self):
        """
        A simple response is returned as HTTP/1.1 with its end-to-end fields,
        Via and its Content-Length.
        """
        resp = _resp(b"Server: x", b"Content-Length: 5", b"Set-Cookie: a=1", b"set-cookie: b=2")
        self.assertEqual(
            _return(resp),
            b"HTTP/1.1 200 OK\r\nServer: x\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\n"
            b"Via: 1.1 tp\r\nContent-Length: 5\r\n\r\n",
        )

    def test_status_line(self):
        """
        The status line is always HTTP/1.1 with the backend's status and
        reason, even an empty reason; Via names the backend's version.
        """
        head = _return(_resp(b"Content-Length: 0", line=b"HTTP/1.0 404 Not Found"))
        self.assertTrue(head.startswith(b"HTTP/1.1 404 Not Found\r\n"))
        self.assertEqual(_values(head, b"Via"), [b"1.0 tp"])
        head = _return(_resp(b"Content-Length: 0", line=b"HTTP/1.1 200"))
        self.assertTrue(head.startswith(b"HTTP/1.1 200 \r\n"))

    def test_hop_by_hop_removed(self):
        """
        The backend's Connection, the fields it names, Keep-Alive, its
        framing fields and the other hop-by-hop fields are not returned.
        """
        resp = _resp(
            b"Connection: X-Internal, keep-alive", b"X-Internal: y", b"Keep-Alive: timeout=5",
            b"Transfer-Encoding: chunked", b"Trailer: X-Sum", b"Proxy-Authenticate: Basic",
            b"Upgrade: h2", b"Set-Cookie: a=1",
        )
        names = _names(_return(resp, framing=FRAME_CHUNKED))
        for gone in (b"connection", b"x-internal", b"keep-alive", b"trailer",
                     b"proxy-authenticate", b"upgrade"):
            self.assertNotIn(gone, names)
        self.assertEqual(names.count(b"transfer-encoding"), 1)
        self.assertIn(b"set-cookie", names)

    def test_framing_length(self):
        """
        FRAME_LENGTH writes the parsed Content-Length once.
        """
        head = _return(_resp(b"Content-Length: 5", b"Content-Length: 5"), framing=FRAME_LENGTH)
        self.assertEqual(_values(head, b"Content-Length"), [b"5"])
        self.assertEqual(_values(head, b"Transfer-Encoding"), [])

    def test_framing_chunked(self):
        """
        FRAME_CHUNKED writes C{Transfer-Encoding: chunked} and no length.
        """
        for resp in (_resp(b"Transfer-Encoding: chunked"), _resp()):
            head = _return(resp, framing=FRAME_CHUNKED)
            self.assertEqual(_values(head, b"Transfer-Encoding"), [b"chunked"])
            self.assertEqual(_values(head, b"Content-Length"), [])

    def test_framing_close(self):
        """
        FRAME_CLOSE writes no framing field, and the connection closes.
        """
        head = _return(_resp(b"Transfer-Encoding: chunked"), framing=FRAME_CLOSE,
                       keep_alive=False, client_minor=0)
        self.assertEqual(_values(head, b"Transfer-Encoding"), [])
        self.assertEqual(_values(head, b"Content-Length"), [])
        self.assertEqual(_values(head, b"Connection"), [b"close"])

    def test_framing_none_keeps_length(self):
        """
        Without a body, the Content-Length a GET would have had is kept for
        a HEAD response (2xx and others) and for 304.
        """
        for line in (b"HTTP/1.1 200 OK", b"HTTP/1.1 304 Not Modified", b"HTTP/1.1 404 Nope",
                     b"HTTP/1.1 301 Moved"):
            with self.subTest(line=line):
                head = _return(_resp(b"Content-Length: 1234", line=line), framing=FRAME_NONE)
                self.assertEqual(_values(head, b"Content-Length"), [b"1234"])

    def test_framing_none_no_length(self):
        """
        A 204 and a 1xx never get a Content-Length, and neither does a
        bodiless response that had none, nor a chunked one.
        """
        for resp in (
            _resp(b"Content-Length: 5", line=b"HTTP/1.1 204 No Content"),
            _resp(b"Content-Length: 0", line=b"HTTP/1.1 204 No Content"),
            _resp(b"Content-Length: 5", line=b"HTTP/1.1 103 Early Hints"),
            _resp(b"Content-Length: 5", line=b"HTTP/1.1 100 Continue"),
            _resp(line=b"HTTP/1.1 304 Not Modified"),
            _resp(b"Transfer-Encoding: chunked"),
        ):
            with self.subTest(status=resp.status):
                head = _return(resp, framing=FRAME_NONE)
                self.assertEqual(_values(head, b"Content-Length"), [])
                self.assertEqual(_values(head, b"Transfer-Encoding"), [])

    def test_connection_field(self):
        """
        C{Connection: close} when the connection closes; C{keep-alive} said
        explicitly to an HTTP/1.0 client whose connection stays open;
        nothing for an HTTP/1.1 client that keeps it.
        """
        for keep_alive, minor, expected in [
            (False, 1, [b"close"]),
            (False, 0, [b"close"]),
            (True, 0, [b"keep-alive"]),
            (True, 1, []),
        ]:
            with self.subTest(keep_alive=keep_alive, minor=minor):
                head = _return(_resp(b"Content-Length: 0", b"Connection: close"),
                               keep_alive=keep_alive, client_minor=minor)
                self.assertEqual(_values(head, b"Connection"), expected)

    def test_via_merge(self):
        """
        The backend's Via fields are merged into one, before the proxy's;
        with no pseudonym they are returned merged.
        """
        resp = _resp(b"Via: 1.1 a", b"Content-Length: 0", b"VIA: 1.0 b")
        self.assertEqual(_values(_return(resp), b"Via"), [b"1.1 a, 1.0 b, 1.1 tp"])
        self.assertEqual(_values(_return(resp, via=b""), b"Via"), [b"1.1 a, 1.0 b"])
        self.assertEqual(_values(_return(_resp(b"Content-Length: 0"), via=b""), b"Via"), [])

    def test_extra(self):
        """
        Extra fields (a 101's Connection and Upgrade) are written as given,
        and the backend's own are dropped.
        """
        resp = _resp(b"Connection: upgrade", b"Upgrade: websocket", b"Sec-WebSocket-Accept: a",
                     line=b"HTTP/1.1 101 Switching Protocols")
        head = _return(resp, framing=FRAME_NONE,
                       extra=[(b"Connection", b"upgrade"), (b"Upgrade", b"websocket")])
        self.assertEqual(
            head,
            b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: a\r\nVia: 1.1 tp\r\n"
            b"Connection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        )


class StoredHeadTests(SynchronousTestCase):
    """
    L{StoredHead}: a stored response served again gets the head
    L{response_head} writes for any response with the same fields, its
    stored lines formatted once and its Age as given.
    """

    FIELDS = [(b"Server", b"x"), (b"Via", b"1.0 origin"), (b"Cache-Control", b"max-age=60"),
              (b"ETag", b'"a"')]

    def _both(self, rules, via: bytes, age: bytes, shared: SharedHead) -> Tuple[bytes, bytes]:
        """
        What L{response_head} writes for a L{StoredHead} of C{shared} and
        for a head made by hand with the same fields.
        """
        stored = stored_head(shared, age)
        made = own_head(200, b"OK", self.FIELDS + [(b"Age", age)], 5)
        self.assertEqual(stored.headers, made.headers)
        return (_return(stored, rules=rules, via=via, extra=[(b"Cache-Status", b"c; hit")]),
                _return(made, rules=rules, via=via, extra=[(b"Cache-Status", b"c; hit")]))

    def test_same_as_any_head(self):
        """
        With or without rules and a pseudonym, the rules removing Age, Via
        or a stored field or setting Via, the head is byte for byte the one
        of a head made with the same fields; the same shared head serves
        them all in turn, each with its own Age.
        """
        shared = SharedHead(200, b"OK", self.FIELDS, 5)
        cases = [
            (NO_RULES, b"tp"),
            (NO_RULES, b""),
            (_rules(remove=["Age"]), b"tp"),
            (_rules(remove=["Server"], add=[("X-Edge", "1")]), b"tp"),
            (_rules(set=[("Via", "hidden")]), b"tp"),
            (_rules(remove=["Via"]), b""),
            (NO_RULES, b"tp"),
        ]
        for rules, via in cases:
            for age in (b"0", b"17"):
                with self.subTest(rules=rules.drop, via=via, age=age):
                    stored, made = self._both(rules, via, age, shared)
                    self.assertEqual(stored, made)
        self.assertEqual(
            self._both(NO_RULES, b"tp", b"3", shared)[0],
            b"HTTP/1.1 200 OK\r\nServer: x\r\nCache-Control: max-age=60\r\nETag: \"a\"\r\n"
            b"Age: 3\r\nVia: 1.0 origin, 1.1 tp\r\nCache-Status: c; hit\r\n"
            b"Content-Length: 5\r\n\r\n")
        self.assertNotIn(b"Age", self._both(_rules(remove=["Age"]), b"tp", b"3", shared)[0])

    def test_formatted_once(self):
        """
        The stored lines are formatted on the first head for a set of rules
        and pseudonym, and reused by the next ones.
        """
        shared = SharedHead(200, b"OK", self.FIELDS, 5)
        _return(stored_head(shared, b"1"))
        start = shared.start
        _return(stored_head(shared, b"2"))
        self.assertIs(shared.start, start)


class StickyCookieTests(SynchronousTestCase):
    """
    L{sticky_cookie}: the C{Set-Cookie} value that pins a client.
    """

    def test_session_cookie(self):
        """
        By default the cookie lives for the session, on the whole site,
        hidden from scripts and not sent on cross-site subrequests.
        """
        self.assertEqual(sticky_cookie(Sticky(cookie="srv"), "abc"),
                         b"srv=abc; Path=/; HttpOnly; SameSite=Lax")

    def test_lifetime_path_secure(self):
        """
        C{max_age}, C{path} and C{secure} become the cookie's attributes.
        """
        self.assertEqual(
            sticky_cookie(Sticky(cookie="srv", max_age=60, path="/app", secure=True), "abc"),
            b"srv=abc; Path=/app; HttpOnly; SameSite=Lax; Max-Age=60; Secure")


class ErrorResponseTests(SynchronousTestCase):
    """
    L{error_response}: the proxy's own answers.
    """

    def test_format(self):
        """
        A short plain-text response with its status as body, a correct
        Content-Length, and C{Connection: close} unless kept alive.
        """
        self.assertEqual(
            error_response(502, b"Bad Gateway"),
            b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: 16\r\nConnection: close\r\n\r\n502 Bad Gateway\n",
        )
        self.assertEqual(
            error_response(404, b"Not Found", keep_alive=True),
            b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: 14\r\n\r\n404 Not Found\n",
        )

    def test_parses(self):
        """
        An error response is a valid response whose Content-Length is the
        length of its body.
        """
        for keep_alive in (False, True):
            data = error_response(431, b"Request Header Fields Too Large", keep_alive)
            head, body = data.split(b"\r\n\r\n", 1)
            resp = parse_response_head(head)
            self.assertEqual((resp.status, resp.content_length, resp.keep_alive),
                             (431, len(body), keep_alive))
