# -*- test-case-name: tests.test_parser -*-
"""
A strict HTTP/1.1 message parser for both directions of the proxy.

A reverse proxy sits between two HTTP implementations that may disagree on
where one message ends and the next begins.  Every disagreement is a request
smuggling vector, so this parser accepts exactly one reading of a message and
rejects everything else (RFC 9112): it never guesses, never repairs and never
forwards a message it had to interpret generously.  What is rejected:

  - bare CR or bare LF as line endings, NUL and other control characters in
    field names or values, whitespace between a field name and its colon,
    obsolete line folding;
  - differing Content-Length values, Content-Length that is not a plain
    decimal number; in a request, Content-Length together with
    Transfer-Encoding, any transfer coding other than a single C{chunked};
  - in a response, a transfer coding the proxy cannot decode (anything but
    C{gzip}, C{x-gzip} and C{deflate}, each before a final C{chunked} or
    alone), or more than L{MAX_CODINGS} of them;
  - a missing or repeated Host in an HTTP/1.1 request (even one with an
    absolute-form target), an empty Host without an absolute-form target,
    a fragment in a request target, and CONNECT;
  - a path that L{twistproxy.http.paths} refuses (one that climbs above
    the root, for instance);
  - C{Content_Length} and C{Transfer_Encoding} in a request: backends that
    map field names to CGI-style variables read them as the real framing
    fields, which the proxy would not have checked;
  - malformed chunk sizes and chunk framing.

Every check runs in time linear in the size of the head: the head is
untrusted input and the reactor has one thread.

Why not httptools (llhttp)?  Its response parser cannot be told that a
response answers a HEAD request, so it waits for a body that never comes
(MagicStack/httptools#47), and a proxy must parse responses as strictly as
requests.  One parser for both directions keeps the rules in one place.
(Measurements made while the project was planned found httptools and a
tight pure-Python parser within noise of each other on CPython, and the
pure-Python one faster on PyPy.)

The parser is split in two halves that the protocols drive: L{parse_request_head}
and L{parse_response_head} turn a complete head (without its final empty
line) into a L{RequestHead} or L{ResponseHead}; L{ChunkedDecoder} decodes a
chunked body incrementally.  Content-Length bodies need no decoder: the
protocols count bytes.

Responses get the latitude RFC 9112 6.1 and 6.3 give a careful recipient,
because refusing them gains nothing against smuggling (the proxy writes a
fresh framing for the client anyway): Transfer-Encoding beside
Content-Length, or in an HTTP/1.0 response, is read as the codings say with
the Content-Length ignored, and the backend connection is closed afterwards
(L{ResponseHead.keep_alive} is false); a response whose last coding is not
C{chunked} runs until the backend closes.  L{CodingDecoder} undoes the
codings other than C{chunked}, so that the client and the cache see the
content itself.
"""

from __future__ import annotations

import re
import zlib
from typing import List, Optional, Tuple

from zope.interface import implementer

from twistproxy.http.paths import DECODE, KEEP, PathError, normalize_path
from twistproxy.interfaces import IResponseView

Headers = List[Tuple[bytes, bytes]]

# RFC 9110 5.6.2: token = 1*tchar
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# FIELD_LINE, TOKEN_RE, REQUEST_TARGET, HOST_RE and parse_content_length
# are shared with the HTTP/2 codec, which checks a request's fields as
# strictly as this parser checks an HTTP/1.1 head.
# A field line: name, colon, optional whitespace, value (visible ASCII,
# obs-text, and inner SP / HTAB), optional whitespace.  Anything else in the
# line, NUL and bare CR included, makes the match fail.  The value group is
# C{None} for an empty value.  The trailing whitespace is inside the
# optional group on purpose: written as "OWS, optional value, OWS", a line
# of blanks ending in a bad byte can be split between the two OWS in
# quadratically many ways, and 64 KiB of blanks cost seconds of CPU.
_VALUE = rb"[!-~\x80-\xff]+(?:[ \t]+[!-~\x80-\xff]+)*"
FIELD_LINE = re.compile(
    rb"(" + _TOKEN + rb"):[ \t]*(?:(" + _VALUE + rb")[ \t]*)?"
).fullmatch
# FIELD_LINE accepts a token, a colon, then any run of SP, HTAB, visible
# ASCII and obs-text (whitespace around the value being optional, any such
# run splits into OWS, value, OWS).  So the field lines of a head are
# checked without a regular expression, whose engine takes some 10 ns a
# byte: bytes.translate drops the bytes allowed, in C, and what is left
# must be nothing, once for the whole block and once for all the names
# together.  A head that fails goes line by line to find the error.
# (_LINE_BYTES: what the lines may hold once the CRLFs between them are
# gone.)
_LINE_BYTES = b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))
_FIELD_BYTES = b"\r\n" + _LINE_BYTES
# The same check as a table for bytes.translate: the bytes of
# _LINE_BYTES map to themselves, every other byte to one of them.  Without
# deletions, translate needs no table built per call, and on CPython it
# returns the bytes themselves when nothing changed, which "==" then
# compares by identity: a third of the cost of translate(None, _LINE_BYTES).
_LINE_TABLE = bytes(b if b in _LINE_BYTES else 0x20 for b in range(256))
TOKEN_BYTES = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
TOKEN_RE = re.compile(_TOKEN).fullmatch
# Visible ASCII but no "#": a fragment is never part of a request target
# (RFC 9112 3.2), and backends disagree on whether to strip it.
REQUEST_TARGET = re.compile(rb"[!-\"$-~]+").fullmatch
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])").fullmatch
_STATUS_LINE = re.compile(
    rb"HTTP/([0-9])\.([0-9]) ([0-9]{3})(?: ([\t !-~\x80-\xff]*))?"
).fullmatch
HOST_RE = re.compile(
    rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]{0,5})?"
).fullmatch
_CHUNK_SIZE = re.compile(
    rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[ \t]*" + _TOKEN
    + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN + rb'|"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t !-~\x80-\xff])*"))?)*'
).fullmatch

# Single bytes looked for with "in" as ints: on CPython 3.11 "b'_' in name"
# first tries b'_' as an int and raises and clears a TypeError, which costs
# ten times the search itself.
_UNDERSCORE = ord("_")
_COMMA = ord(",")
_QUESTION_MARK = ord("?")

_COMMON_METHODS = frozenset([b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"])

# Requests whose responses never have a body whatever their fields say.
_NO_BODY_STATUS = frozenset([204, 304])

MAX_CHUNK_LINE = 4096

# The transfer codings a response may carry besides chunked, as zlib's
# window bits: gzip (RFC 9110 8.4.1.3, x-gzip its alias) and deflate, which
# is the zlib format (8.4.1.2).
_CODINGS = {b"gzip": 16 + zlib.MAX_WBITS, b"x-gzip": 16 + zlib.MAX_WBITS,
            b"deflate": zlib.MAX_WBITS}
# Codings besides chunked in one response: each one decoded costs a zlib
# state (about 40 KiB), and no server applies more than one.
MAX_CODINGS = 2
# The most bytes a L{CodingDecoder} hands out at once.
DECODED_PIECE = 65536


class ParseError(Exception):
    """
    A message is malformed or ambiguous.

    @ivar status: The status the proxy answers with: a 4xx or 5xx for a
        request from a client; always 502 for a response from a backend.
    @ivar reason: A short code for the access log, e.g. C{'bad_header'}.
    """

    def __init__(self, status: int, reason: str):
        super().__init__(status, reason)
        self.status = status
        self.reason = reason


class RequestHead:
    """
    The parsed head of a request.

    @ivar method: The method, e.g. C{b'GET'}.
    @ivar target: The request target in origin form (C{b'/a?b=c'}), or
        C{b'*'} for C{OPTIONS *}: what the backend receives, as the client
        sent it unless the listener decodes escaped slashes
        (L{request_target}).
    @ivar path: The target's path, normalised (L{twistproxy.http.paths}):
        what routes and request rules match.
    @ivar version: The version the client spoke: C{(1, 0)} or C{(1, 1)},
        C{(2, 0)} for HTTP/2 (backends always get HTTP/1.1).
    @ivar headers: The fields as (name, value) pairs, in order, names as
        received.
    @ivar host: The Host field's value, or the authority of an
        absolute-form target (which takes precedence, RFC 9112 3.2.2);
        C{b''} when the request has none.
    @ivar content_length: The body's length, or C{None}.
    @ivar chunked: C{True} when the body is chunked.
    @ivar keep_alive: Whether the client wants the connection kept open.
    @ivar connection: The lower-cased tokens of the Connection field.
    @ivar upgrade: The Upgrade field's value (repeated fields joined with
        C{", "}) when an HTTP/1.1 client asks for a protocol upgrade
        (C{Connection: upgrade}), else C{None}.
    @ivar expect_continue: The client sent C{Expect: 100-continue}.
    """

    __slots__ = (
        "method", "target", "path", "version", "headers", "host",
        "content_length", "chunked", "keep_alive", "connection", "upgrade",
        "expect_continue",
    )

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    @classmethod
    def made(cls, method: bytes, target: bytes, host: bytes, headers: Headers,
             keep_alive: bool, version: Tuple[int, int] = (1, 1),
             escaped_slashes: str = KEEP) -> "RequestHead":
        """
        A request head that was not parsed from HTTP/1.1 bytes (an HTTP/2
        request, a placeholder): an origin-form target checked and its path
        normalised as L{request_target} does, no connection fields, no
        C{Expect}, and no body until the caller sets C{chunked} or
        C{content_length}.

        @param version: The version the client spoke (C{(2, 0)} for
            HTTP/2), for Via and the access log.
        @raises ParseError: 400, for a path the proxy refuses.
        """
        req = cls()
        req.method = method
        req.version = version
        req.headers = headers
        req.host = host
        req.target, req.path = (
            request_target(target, escaped_slashes) if target[:1] == b"/" else (target, target))
        req.content_length = None
        req.chunked = False
        req.keep_alive = keep_alive
        req.connection = frozenset()
        req.upgrade = None
        req.expect_continue = False
        return req


@implementer(IResponseView)
class ResponseHead:
    """
    The parsed head of a response.

    @ivar version: C{(1, 0)} or C{(1, 1)}.
    @ivar status: The status code.
    @ivar reason: The reason phrase (possibly empty).
    @ivar headers: As for L{RequestHead.headers}.
    @ivar content_length: The body's length, or C{None}.
    @ivar chunked: C{True} when the body is chunked.
    @ivar codings: The transfer codings other than C{chunked}, in the order
        the server applied them (lower-cased), to be undone by a
        L{CodingDecoder}; usually empty.
    @ivar keep_alive: Whether the connection can be reused after this
        response: the server lets it, and the framing was neither faulty
        nor delimited by the server closing.
    @ivar connection: The lower-cased tokens of the Connection field.
    """

    __slots__ = (
        "version", "status", "reason", "headers", "content_length", "chunked",
        "codings", "keep_alive", "connection",
    )


def _split_lines(head: bytes, status: int) -> Tuple[List[bytes], bool]:
    """
    The lines of a head, and whether all of them together hold field bytes
    only (L{_LINE_BYTES}), which spares L{_parse_fields} its own pass over
    the field lines.  Refuse a bare CR or LF (C{bare_cr_lf}).
    """
    lines = head.split(b"\r\n")
    # One pass in C over the lines joined: a CR or LF left in them is a
    # bare one, and the usual head has nothing else to find.
    joined = b"".join(lines)
    if joined.translate(_LINE_TABLE) == joined:
        return lines, True
    # Every CR and LF must belong to one of the CRLFs split on; any other
    # is a bare one.
    pairs = len(lines) - 1
    if head.count(b"\r") != pairs or head.count(b"\n") != pairs:
        raise ParseError(status, "bare_cr_lf")
    return lines, False


def parse_content_length(values: List[bytes], status: int) -> int:
    """
    One length from all Content-Length field values.  Identical repeats
    (C{5, 5}) are allowed by RFC 9110 8.6; anything else is an error.
    """
    if len(values) == 1:
        value = values[0]
        # The usual case, one plain number: bytes.isdigit is ASCII digits only.
        if len(value) <= 18 and value.isdigit():
            return int(value)
    lengths = set()
    for value in values:
        for item in value.split(b","):
            item = item.strip(b" \t")
            # bytes.isdigit is ASCII digits only: [0-9]{1,18}.
            if not (len(item) <= 18 and item.isdigit()):
                raise ParseError(status, "bad_content_length")
            lengths.add(int(item))
    if len(lengths) != 1:
        raise ParseError(status, "bad_content_length")
    return lengths.pop()


def _transfer_codings(values: List[bytes], status: int) -> List[bytes]:
    codings = []
    for value in values:
        for item in value.split(b","):
            item = item.strip(b" \t").lower()
            if not item:
                raise ParseError(status, "bad_transfer_encoding")
            codings.append(item)
    return codings


def _parse_fields(head: bytes, start: int, lines: List[bytes], max_count: int,
                  status: int, clean: bool):
    """
    Parse field lines in one pass, collecting the fields that decide
    framing and connection handling.  C{lines} are the field lines of
    C{head}, which start at C{start}; C{clean} when L{_split_lines} found
    field bytes only.  C{status} is 502 for a response.
    """
    if len(lines) > max_count:
        raise ParseError(431 if status != 502 else 502, "too_many_headers")
    headers: Headers = []
    append = headers.append
    names: List[bytes] = []
    name_append = names.append
    lengths = None
    codings = None
    hosts = None
    connection = None
    upgrade = None
    expect = None
    well_formed = True
    known = _KNOWN_NAMES.get
    remembered = _FIELD_LINES.get
    fresh = None
    for line in lines:
        entry = remembered(line)
        if entry is not None:
            # A line a head has passed with before: nothing to split, strip
            # or check.
            field, lname = entry
            append(field)
            if not lname:
                continue
            value = field[1]
        else:
            name, colon, value = line.partition(b":")
            if not (colon and name):
                well_formed = False
            value = value.strip(b" \t")
            field = (name, value)
            append(field)
            lname = known(name)
            if lname is None:
                # A name to check, and to lower-case to know which field it is.
                lname = name.lower()
                name_append(lname)
                if lname not in _SPECIAL:
                    continue
            elif len(line) <= MAX_REMEMBERED_LINE and name not in _UNREMEMBERED:
                if fresh is None:
                    fresh = []
                fresh.append((line, (field, lname)))
            if not lname:
                continue
        if lname == b"content-length":
            lengths = (lengths or []) + [value]
        elif lname == b"transfer-encoding":
            codings = (codings or []) + [value]
        elif lname == b"host":
            hosts = (hosts or []) + [value]
        elif lname == b"connection":
            connection = (connection or []) + [value]
        elif lname == b"upgrade":
            # Repeated fields are one list (RFC 9110 5.3).
            upgrade = value if upgrade is None else upgrade + b", " + value
        else:
            expect = (expect or []) + [value]
    # The names not in _KNOWN_NAMES, together: one pass to check them.
    unknown = b"".join(names)
    if not well_formed or (not clean and head[start:].translate(None, _FIELD_BYTES)) or (
            unknown and unknown.translate(None, TOKEN_BYTES)):
        # Line by line, to raise the error of the first bad line.
        for line in lines:
            m = FIELD_LINE(line)
            if m is None:
                if line[:1] in (b" ", b"\t"):
                    raise ParseError(status, "obs_fold")
                raise ParseError(status, "bad_header")
            _refuse_cgi_framing(m.group(1).lower(), status)
    if _UNDERSCORE in unknown:
        for lname in names:
            _refuse_cgi_framing(lname, status)
    if fresh is not None:
        _remember(_FIELD_LINES, fresh)
    return headers, lengths, codings, hosts, connection, upgrade, expect


def _remember(memo: dict, entries: list) -> None:
    """
    Add C{entries}, (key, value) pairs, to C{memo}, which never holds more
    than L{MAX_REMEMBERED}.
    """
    if len(memo) + len(entries) > MAX_REMEMBERED:
        # Emptied rather than evicted one by one: what recurs is back
        # after a head or two.
        memo.clear()
        del entries[MAX_REMEMBERED:]
    memo.update(entries)


def _refuse_cgi_framing(lname: bytes, status: int) -> None:
    # Responses may carry them: only a request's fields reach a backend.
    if status != 502:
        check_field_name(lname)


_SPECIAL = frozenset([
    b"content-length", b"transfer-encoding", b"host", b"connection",
    b"upgrade", b"expect",
])
_UNDERSCORE_FRAMING = frozenset([b"content-length", b"transfer-encoding"])
# Field names as common clients and servers write them, each with the
# lower-cased name when it is one of L{_SPECIAL} (else C{b""}): for them
# one dict lookup stands for lower(), a set lookup and the checks that
# the name is a token without "_".
_KNOWN_NAMES = {
    name: name.lower() if name.lower() in _SPECIAL else b""
    for name in [
        b"Host", b"User-Agent", b"Accept", b"Accept-Encoding", b"Accept-Language",
        b"Accept-Ranges", b"Age", b"Authorization", b"Cache-Control", b"Connection",
        b"Content-Encoding", b"Content-Length", b"Content-Type", b"Cookie", b"Date",
        b"ETag", b"Expect", b"Expires", b"If-Modified-Since", b"If-None-Match",
        b"Keep-Alive", b"Last-Modified", b"Location", b"Origin", b"Pragma",
        b"Priority", b"Referer", b"Sec-Fetch-Dest", b"Sec-Fetch-Mode",
        b"Sec-Fetch-Site", b"Sec-Fetch-User", b"Server", b"Set-Cookie",
        b"Transfer-Encoding", b"Upgrade", b"Upgrade-Insecure-Requests", b"Vary",
        b"X-Forwarded-For", b"X-Forwarded-Proto", b"X-Requested-With",
    ]
}

# Whole field lines that a head passed with, parsed: most lines recur from
# one request (or response) to the next, on every connection (Host,
# User-Agent, Accept, Server, Content-Type...), and one dict lookup stands
# for the split, the strip and the name's lookup.  Only lines with a name
# of _KNOWN_NAMES are kept, which are valid the same in a request as in a
# response (no "_" in them), so that a line kept reads the same in either
# direction; credentials are not kept, neither in memory beyond their
# request nor as a hit that another client's timing could tell.  At most
# MAX_REMEMBERED lines of MAX_REMEMBERED_LINE bytes each: the memory
# is bounded whatever clients and backends send.
_FIELD_LINES: dict = {}
MAX_REMEMBERED = 256
MAX_REMEMBERED_LINE = 256
_UNREMEMBERED = frozenset([b"Authorization", b"Cookie", b"Set-Cookie"])


# A request without Transfer-Encoding or Content-Length: not chunked, no
# length (what _framing says).
_NO_FRAMING = (False, None)


def _framing(codings, lengths, minor: int) -> Tuple[bool, Optional[int]]:
    """
    How a request's body is delimited, from its Transfer-Encoding and
    Content-Length values: C{(chunked, content_length)}.  Only a single
    C{chunked} coding, never together with a length, never in HTTP/1.0
    (RFC 9112 6.1 and 6.3 allow refusing the rest, and the proxy does: a
    backend could read a request the proxy read generously otherwise).
    Codings that are otherwise valid but include another one before
    C{chunked} are 501.
    """
    if codings is not None:
        if lengths is not None:
            raise ParseError(400, "length_and_chunked")
        if minor == 0:
            # RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has
            # faulty framing.
            raise ParseError(400, "bad_transfer_encoding")
        codings = _transfer_codings(codings, 400)
        if codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
            raise ParseError(400, "bad_transfer_encoding")
        if len(codings) != 1:
            raise ParseError(501, "unsupported_transfer_encoding")
        return True, None
    if lengths is not None:
        return False, parse_content_length(lengths, 400)
    return False, None


def _response_codings(values: List[bytes]) -> Tuple[bool, Tuple[bytes, ...]]:
    """
    From a response's Transfer-Encoding values: whether the body is
    chunked (the last coding is C{chunked}; RFC 9112 6.3 rule 4: otherwise
    it runs until the server closes), and the other codings, which must be
    ones L{CodingDecoder} can undo.  C{chunked} anywhere but last is
    refused: applied before another coding it would have to be undone
    after it, which no server does.
    """
    codings = _transfer_codings(values, 502)
    chunked = codings[-1] == b"chunked"
    if chunked:
        codings.pop()
    if len(codings) > MAX_CODINGS:
        raise ParseError(502, "bad_transfer_encoding")
    for coding in codings:
        if coding not in _CODINGS:
            raise ParseError(502, "bad_transfer_encoding")
    return chunked, tuple(codings)


_NO_TOKENS = frozenset()
# The usual Connection values and their tokens, built once.
_COMMON_CONNECTION = {
    value: frozenset([value.lower()])
    for value in [b"keep-alive", b"Keep-Alive", b"close", b"Close", b"upgrade", b"Upgrade"]
}


def _keep_alive(tokens: frozenset, minor: int) -> bool:
    if minor == 1:
        return b"close" not in tokens
    return b"keep-alive" in tokens and b"close" not in tokens


def _connection_tokens(values) -> frozenset:
    if not values:
        return _NO_TOKENS
    if len(values) == 1:
        value = values[0]
        tokens = _COMMON_CONNECTION.get(value)
        if tokens is not None:
            return tokens
        if _COMMA not in value:
            # One token: no generator to run.
            token = value.strip(b" \t").lower()
            return frozenset([token]) if token else _NO_TOKENS
    return frozenset(
        t.strip(b" \t").lower() for v in values for t in v.split(b",") if t.strip(b" \t")
    )


# The request checks both client codecs make (HTTP/1.1 here, HTTP/2 in
# twistproxy.http.h2), so that one fault is refused for the same reason
# whichever version the client spoke.  Each raises a ParseError.


def check_field_name(lname: bytes) -> None:
    """
    Refuse C{Content_Length} and C{Transfer_Encoding} (see the module's
    docstring), given a request field's lower-cased name.
    """
    if _UNDERSCORE in lname and lname.replace(b"_", b"-") in _UNDERSCORE_FRAMING:
        raise ParseError(400, "bad_header")


def check_request_line(method: bytes, target: bytes) -> None:
    """
    Refuse a method that is not a token and a target with a character no
    target may hold (a control character, a C{#} fragment): what would be
    the request line (C{bad_request_line}).
    """
    # The common methods are tokens as they are: only the others need the
    # regular expression.
    if ((method not in _COMMON_METHODS and TOKEN_RE(method) is None)
            or REQUEST_TARGET(target) is None):
        raise ParseError(400, "bad_request_line")


def check_method(method: bytes, target: Optional[bytes]) -> None:
    """
    Refuse C{CONNECT} (C{connect_not_supported}), whatever its target: a
    2xx to it turns the connection into a tunnel, and one with an
    origin-form target forwarded to a backend would leave the two sides
    disagreeing on where the response ends.  Refuse the asterisk-form
    target C{*} with any method but C{OPTIONS} (C{bad_request_target}).
    """
    if method == b"CONNECT":
        raise ParseError(501, "connect_not_supported")
    if target == b"*" and method != b"OPTIONS":
        raise ParseError(400, "bad_request_target")


def host_field(hosts: Optional[List[bytes]]) -> Optional[bytes]:
    """
    The value of a request's one C{Host} field, or C{None} without one;
    refuse several (C{duplicate_host}) and one that is not a host name or
    address with an optional port (C{bad_host}).
    """
    if not hosts:
        return None
    if len(hosts) > 1:
        raise ParseError(400, "duplicate_host")
    host = hosts[0]
    if host not in _HOSTS:
        if HOST_RE(host) is None:
            raise ParseError(400, "bad_host")
        if len(host) <= MAX_REMEMBERED_LINE:
            _remember(_HOSTS, [(host, None)])
    return host


# Host values that HOST_RE matched: a proxy sees few, and a dict lookup
# costs a tenth of the match.  Bounded as _FIELD_LINES is.
_HOSTS: dict = {}


def check_expectation(values: List[bytes]) -> bool:
    """
    Refuse an C{Expect} other than one C{100-continue}, the only
    expectation there is (RFC 9110 10.1.1: C{bad_expectation}, 417).

    @return: C{True}: the client asks for a C{100 (Continue)}.
    """
    if len(values) != 1 or values[0].lower() != b"100-continue":
        raise ParseError(417, "bad_expectation")
    return True


def check_body_size(length: Optional[int], max_body_size: int) -> None:
    """
    Refuse a declared body longer than C{max_body_size} (C{0}: no limit)
    before any of it is read (C{body_too_large}).
    """
    if length is not None and max_body_size and length > max_body_size:
        raise ParseError(413, "body_too_large")


def _request_line(line: bytes) -> Tuple[bytes, bytes, Tuple[int, int]]:
    """
    A request line's method, target and version; refuse one that is not
    three parts (C{bad_request_line}), L{check_request_line}'s faults and
    a version other than HTTP/1.x (C{unsupported_version}, 505).
    """
    parts = line.split(b" ")
    if len(parts) != 3:
        raise ParseError(400, "bad_request_line")
    method, target, version = parts
    check_request_line(method, target)
    # The common version is a valid one as it is: only the others need the
    # regular expression.
    if version == b"HTTP/1.1":
        return method, target, (1, 1)
    m = _VERSION(version)
    if m is None:
        raise ParseError(400, "bad_request_line")
    if m.group(1) != b"1":
        raise ParseError(505, "unsupported_version")
    return method, target, (1, 1 if m.group(2) != b"0" else 0)


# Request lines read before (each valid as a line: the head may have
# failed later), whose target is in origin (or asterisk) form and is its
# own path and normal form: such a target reads the same whatever the
# escaped_slashes setting (none of %2F, %5C, "\\" is in it), and the
# line's method, target and version are one dict lookup away.  So no
# target with a query is kept: queries vary the most, and often carry
# tokens.  Bounded as _FIELD_LINES is.
_REQUEST_LINES: dict = {}


def parse_request_head(head: bytes, max_header_count: int = 100,
                       escaped_slashes: str = KEEP) -> RequestHead:
    """
    Parse a request head.

    @param head: The request line and field lines, each ending in CRLF except
        the last; without the empty line that ends the head.
    @param max_header_count: Most field lines accepted.
    @param escaped_slashes: How the path's C{%2F} and C{%5C} are handled
        (L{request_target}).
    @raises ParseError: with a 4xx/5xx status for any malformed or ambiguous
        request.
    """
    lines, clean = _split_lines(head, 400)
    request_line = lines[0]
    remembered = _REQUEST_LINES.get(request_line)
    if remembered is None:
        method, target, version = _request_line(request_line)
    else:
        method, target, version = remembered
    minor = version[1]

    headers, lengths, codings, hosts, connection, upgrade, expect = _parse_fields(
        head, len(request_line) + 2, lines[1:], max_header_count, 400, clean
    )
    if remembered is None:
        # A remembered line passed it.
        check_method(method, target)
    req = RequestHead()
    req.method = method
    req.version = version
    req.headers = headers

    host = host_field(hosts)
    if host is None and minor == 1:
        # RFC 9112 3.2: whatever the form of the target.
        raise ParseError(400, "missing_host")

    if target[:1] == b"/" or target == b"*":
        if host == b"":
            # No authority to route on (RFC 9110 4.2.1 forbids an empty
            # one), and none to invent.
            raise ParseError(400, "empty_host")
        if remembered is None:
            req.target, req.path = request_target(target, escaped_slashes)
            if req.path == target == req.target and len(request_line) <= MAX_REMEMBERED_LINE:
                _remember(_REQUEST_LINES, [(request_line, (method, target, version))])
        else:
            req.target = req.path = target
    else:
        scheme, sep, rest = target.partition(b"://")
        if not sep or scheme.lower() not in (b"http", b"https"):
            raise ParseError(400, "bad_request_target")
        # The authority ends at the path or, when the path is empty, at the
        # query (RFC 3986 3.2).
        end = len(rest)
        for delimiter in (b"/", b"?"):
            i = rest.find(delimiter)
            if 0 <= i < end:
                end = i
        authority, path = rest[:end], rest[end:]
        if b"@" in authority or not authority or HOST_RE(authority) is None:
            raise ParseError(400, "bad_request_target")
        # An absolute-form target's authority replaces Host (RFC 9112 3.2.2).
        host = authority
        req.target, req.path = request_target(
            path if path[:1] == b"/" else b"/" + path, escaped_slashes)
    req.host = b"" if host is None else host

    # Most requests have neither framing nor Connection fields: no call
    # for them.
    req.chunked, req.content_length = (
        _NO_FRAMING if codings is None and lengths is None else _framing(codings, lengths, minor))
    tokens = req.connection = _connection_tokens(connection) if connection else _NO_TOKENS
    req.keep_alive = _keep_alive(tokens, minor)
    # RFC 9110 7.8: Upgrade in an HTTP/1.0 request is ignored.
    req.upgrade = (
        upgrade if (upgrade and minor == 1 and b"upgrade" in tokens) else None
    )
    req.expect_continue = expect is not None and check_expectation(expect) and minor == 1
    return req


def target_too_long(buf: bytes, limit: int) -> bool:
    """
    Whether the request line that starts C{buf} (received so far, perhaps
    not yet whole) has a request target of more than C{limit} bytes.  It
    can tell before the line is complete, so that a client cannot make the
    proxy buffer a long target up to the head size limit first.
    """
    line_end = buf.find(b"\r\n")
    line = buf if line_end < 0 else buf[:line_end]
    start = line.find(b" ") + 1
    if not start:
        return False
    end = line.find(b" ", start)
    return (end if end >= 0 else len(line)) - start > limit


def host_name(host: bytes) -> bytes:
    """
    A Host value without its port: C{b'example.com:8080'} gives
    C{b'example.com'}, C{b'[::1]:80'} gives C{b'[::1]'}.
    """
    if host[:1] == b"[":
        return host[: host.find(b"]") + 1]
    return host.partition(b":")[0]


def request_target(target: bytes, escaped_slashes: str = KEEP) -> Tuple[bytes, bytes]:
    """
    What to forward of an origin-form (or asterisk-form) target, and its
    normalised path (L{twistproxy.http.paths}), on which routes and rules
    match: C{(target, path)}.  The target is the client's (as nginx
    forwards it), with one exception: leading slashes (and backslashes)
    are merged, since many URL parsers read C{//example.com/x} as a
    scheme-relative URL.  When C{escaped_slashes} is C{"decode"} the path
    forwarded is the normalised one.  The query is left as it is.

    @raises ParseError: 400, for a path the proxy refuses.
    """
    if target == b"*":
        return target, target
    q = target.find(b"?") if _QUESTION_MARK in target else -1
    path = target if q < 0 else target[:q]
    try:
        normal = normalize_path(path, escaped_slashes)
    except PathError as e:
        raise ParseError(400, e.reason) from None
    if normal is not path:
        if escaped_slashes == DECODE:
            target = normal if q < 0 else normal + target[q:]
        elif target[1:2] in (b"/", b"\\"):
            target = b"/" + target.lstrip(b"/\\")
    return target, normal


# What a request that could not be parsed is logged as.
UNPARSED = RequestHead.made(b"-", b"-", b"", [], keep_alive=False)


def _status_line(line: bytes) -> Tuple[int, int, bytes]:
    """
    A status line's minor version, status code and reason phrase; refuse
    one that is not HTTP/1.x (C{bad_status_line}).
    """
    m = _STATUS_LINE(line)
    if m is None or m.group(1) != b"1":
        raise ParseError(502, "bad_status_line")
    return 1 if m.group(2) != b"0" else 0, int(m.group(3)), m.group(4) or b""


# The status lines most responses start with, parsed once: one dict lookup
# instead of a regular expression, four groups and int().
_COMMON_STATUS_LINES = {
    line: _status_line(line)
    for line in [b"HTTP/1.1 200 OK", b"HTTP/1.1 204 No Content", b"HTTP/1.1 206 Partial Content",
                 b"HTTP/1.1 301 Moved Permanently", b"HTTP/1.1 302 Found",
                 b"HTTP/1.1 304 Not Modified", b"HTTP/1.1 400 Bad Request",
                 b"HTTP/1.1 403 Forbidden", b"HTTP/1.1 404 Not Found",
                 b"HTTP/1.1 500 Internal Server Error", b"HTTP/1.1 502 Bad Gateway",
                 b"HTTP/1.1 503 Service Unavailable", b"HTTP/1.0 200 OK"]
}


def parse_response_head(head: bytes, max_header_count: int = 200) -> ResponseHead:
    """
    Parse a response head from a backend.

    @param head: As for L{parse_request_head}.
    @raises ParseError: with status 502 for any malformed or ambiguous
        response.
    """
    lines, clean = _split_lines(head, 502)
    status_line = _COMMON_STATUS_LINES.get(lines[0]) or _status_line(lines[0])
    headers, lengths, codings, _, connection, _, _ = _parse_fields(
        head, len(lines[0]) + 2, lines[1:], max_header_count, 502, clean
    )
    resp = ResponseHead()
    minor, resp.status, resp.reason = status_line
    if resp.status < 100:
        raise ParseError(502, "bad_status_line")
    resp.version = (1, minor)
    resp.headers = headers
    tokens = resp.connection = _connection_tokens(connection)
    resp.keep_alive = _keep_alive(tokens, minor)
    if codings is None:
        resp.chunked = False
        resp.codings = ()
        resp.content_length = None if lengths is None else parse_content_length(lengths, 502)
    else:
        # Transfer-Encoding wins over Content-Length (RFC 9112 6.3 rule 3).
        resp.content_length = None
        resp.chunked, resp.codings = _response_codings(codings)
        if lengths is not None or minor == 0 or not resp.chunked:
            # Faulty framing (6.1, 6.3 rule 3) is read once and the
            # connection closed; without chunked, its close is the end.
            resp.keep_alive = False
    return resp


def response_has_body(status: int, request_method: bytes) -> bool:
    """
    Whether a response to a request with this method carries a body
    (RFC 9112 6.3, rules 1 and 2).
    """
    return not (
        request_method == b"HEAD" or status < 200 or status in _NO_BODY_STATUS
        or (request_method == b"CONNECT" and status < 300)
    )


class ChunkedDecoder:
    """
    Decode a chunked body incrementally.

    Call L{feed} with whatever bytes arrive.  It returns the body bytes
    decoded so far and, once the final chunk and the trailer section have
    been read, the bytes that follow the message (the start of the next
    one).  Trailer fields are validated and dropped.

    However a message is split across calls, the outcome is the same: the
    same body, the same bytes after it, and the same error (with the same
    reason) for a malformed one, sometimes raised earlier.

    @ivar done: C{True} once the whole body has been read.
    """

    __slots__ = ("_status", "_buffer", "_remaining", "_state", "_trailer_size",
                 "_max_trailer", "done")

    _SIZE, _DATA, _DATA_END, _TRAILER = range(4)

    def __init__(self, status: int = 400, max_trailer_size: int = 16384):
        self._status = status
        self._buffer = b""
        self._remaining = 0
        self._state = self._SIZE
        self._trailer_size = 0
        self._max_trailer = max_trailer_size
        self.done = False

    def feed(self, data: bytes) -> Tuple[List[bytes], Optional[bytes]]:
        """
        @return: The decoded body pieces, and the bytes after the end of the
            message (C{None} while the body is not complete).  Once L{done},
            all of C{data} is after the end.
        @raises ParseError: on any framing error: C{'bad_chunk'} for the
            chunks, C{'bad_trailer'} for the trailer section.
        """
        if self.done:
            return [], data
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        out = []
        pos = 0
        end = len(data)
        while pos < end:
            state = self._state
            if state == self._DATA:
                n = self._remaining
                if end - pos <= n:
                    out.append(data[pos:] if pos else data)
                    self._remaining = n - (end - pos)
                    if self._remaining == 0:
                        self._state = self._DATA_END
                    return out, None
                out.append(data[pos:pos + n])
                pos += n
                self._remaining = 0
                self._state = self._DATA_END
            elif state == self._DATA_END:
                if end - pos < 2:
                    if data[pos:] != b"\r":
                        raise ParseError(self._status, "bad_chunk")
                    self._buffer = data[pos:]
                    return out, None
                if data[pos:pos + 2] != b"\r\n":
                    raise ParseError(self._status, "bad_chunk")
                pos += 2
                self._state = self._SIZE
            else:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    # An incomplete line: fail now only if it cannot end
                    # well, with exactly the check the whole line would
                    # fail, so that where the input is split never matters.
                    # A final CR may be the start of the CRLF, and an empty
                    # line in the trailer section is its end, not a field.
                    rest = data[pos:]
                    shortest = len(rest) - 1 if rest[-1:] == b"\r" else len(rest)
                    if state == self._SIZE:
                        if shortest > MAX_CHUNK_LINE or b"\n" in rest:
                            raise ParseError(self._status, "bad_chunk")
                    elif b"\n" in rest or (
                        shortest
                        and self._trailer_size + shortest + 2 > self._max_trailer
                    ):
                        raise ParseError(self._status, "bad_trailer")
                    self._buffer = rest
                    return out, None
                line = data[pos:eol]
                pos = eol + 2
                if state == self._SIZE:
                    if len(line) > MAX_CHUNK_LINE:
                        raise ParseError(self._status, "bad_chunk")
                    m = _CHUNK_SIZE(line)
                    if m is None:
                        raise ParseError(self._status, "bad_chunk")
                    size = int(m.group(1), 16)
                    if size:
                        self._remaining = size
                        self._state = self._DATA
                    else:
                        self._state = self._TRAILER
                else:
                    if not line:
                        self.done = True
                        return out, data[pos:]
                    self._trailer_size += len(line) + 2
                    if (self._trailer_size > self._max_trailer
                            or FIELD_LINE(line) is None):
                        raise ParseError(self._status, "bad_trailer")
        return out, None


class _Inflater:
    """
    Undo one gzip or deflate coding, a bounded piece at a time.

    @ivar pending: Coded bytes not decoded yet.
    """

    __slots__ = ("_wbits", "_z", "_used", "pending")

    def __init__(self, coding: bytes):
        self._wbits = _CODINGS[coding]
        self._z = zlib.decompressobj(self._wbits)
        self._used = False
        self.pending = b""

    def inflate(self) -> bytes:
        """
        Decode at most L{DECODED_PIECE} bytes of L{pending}; C{b''} when
        none came out of it (yet).
        """
        z = self._z
        if z.eof:
            if self._wbits == zlib.MAX_WBITS:
                # Nothing may follow a deflate stream.
                raise ParseError(502, "bad_coding")
            # The next member of a gzip file (RFC 1952 2.2).
            z = self._z = zlib.decompressobj(self._wbits)
        self._used = True
        try:
            out = z.decompress(self.pending, DECODED_PIECE)
        except zlib.error:
            raise ParseError(502, "bad_coding") from None
        self.pending = z.unconsumed_tail or z.unused_data
        return out

    @property
    def ended(self) -> bool:
        # An empty body is taken for empty content, as servers send it.
        return not self.pending and (self._z.eof or not self._used)


class CodingDecoder:
    """
    Undo a response's transfer codings other than C{chunked}, as the body
    arrives, in bounded memory.

    L{feed} takes the coded bytes as they arrive; L{read} hands out the
    content a piece of at most L{DECODED_PIECE} bytes at a time, and decodes
    no further than it is asked.  A small body that expands a thousandfold
    (a decompression bomb, nested codings included) so costs memory only
    for the pieces taken, and the protocol stops taking them while its
    client is slow, as it stops reading any body.

    @ivar complete: Whether every coded stream ended where the body did: a
        body that stops before is truncated.
    """

    __slots__ = ("_stages",)

    def __init__(self, codings: Tuple[bytes, ...]):
        # The last coding applied is the first to undo.
        self._stages = [_Inflater(coding) for coding in reversed(codings)]

    def feed(self, data: bytes) -> None:
        self._stages[0].pending += data

    def read(self) -> Optional[bytes]:
        """
        @return: The next piece of content, or C{None} when all that was
            fed is decoded.
        @raises ParseError: C{'bad_coding'} when the bytes are not what
            their coding says.
        """
        return self._pull(len(self._stages) - 1)

    def _pull(self, i: int) -> Optional[bytes]:
        stage = self._stages[i]
        while True:
            if stage.pending:
                out = stage.inflate()
                if out:
                    return out
            elif i == 0:
                return None
            else:
                coded = self._pull(i - 1)
                if coded is None:
                    return None
                stage.pending = coded

    @property
    def complete(self) -> bool:
        return all(stage.ended for stage in self._stages)
