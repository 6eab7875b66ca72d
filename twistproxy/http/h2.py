# -*- test-case-name: tests.test_h2 -*-
"""
The downstream codec for HTTP/2: clients multiplex many requests on one
connection, backends still get plain HTTP/1.1.

L{H2ServerProtocol} lets the C{h2} library do the framing, HPACK and
connection state, and turns each client stream into an L{Exchange} exactly
like the one L{HTTPServerProtocol} builds for an HTTP/1.1 request, so the
forwarder, balancers, pools and upstream codec work unchanged.  The only
difference they see is C{exchange.downstream}: here it is an L{H2Stream}, one per
stream, that speaks the same callback language (C{upstream_attached},
C{response_head}, C{response_body}, C{flush}, C{response_end},
C{upstream_failed}, ...) and carries the connection's C{trusted},
C{proto}, C{identity} and C{transport}.

Each stream's request is turned into a L{RequestHead} from its
pseudo-header fields (C{:authority} becomes the Host, C{:path} the target)
and checked as strictly as the HTTP/1.1 parser checks a head, because it is
written out as one: field names must be tokens and values may hold no
control characters.  The checks that do not depend on the version are the
parser's own (L{check_method}, L{host_field}, ...), so that one fault has
one reason in the access log whichever version the client spoke; only
HTTP/2's own rules (pseudo-header fields, no connection-specific fields)
are here.  A body without C{content-length} is sent to the
backend chunked.

A malformed request is a stream error, not a connection error (RFC 9113
8.1.1 lets an intermediary choose): its stream is answered 400, or reset
with PROTOCOL_ERROR once its response has started, and the other streams
go on.  C{h2}'s own header validation is off for that reason (it would end
the connection); L{_request_head} does its checks.  A peer that sends more
than L{MAX_MALFORMED} malformed requests, and more than well-formed ones,
is sent GOAWAY (ENHANCE_YOUR_CALM) and disconnected.

Back-pressure follows HTTP/2 flow control both ways, so memory per
connection stays bounded whatever either side does:

  - request bodies: DATA is acknowledged to the client (which reopens its
    window) only once it has been handed to the backend connection; while a
    stream waits for a backend, or its backend connection is full, the
    client's stream window stops it;

  - responses: bytes are sent as the client's windows allow; the rest waits
    on the stream, and once more than L{STREAM_BUFFER} bytes wait, reading
    from that stream's backend is paused until a WINDOW_UPDATE drains them.

At most L{MAX_CONCURRENT_STREAMS} streams are open at once (advertised in
SETTINGS and enforced by C{h2}).  A connection without open streams is
closed with GOAWAY after C{timeouts.idle}; that also bounds the wait for
the client's connection preface.  A stream whose request body stalls for
C{timeouts.request_body} is answered 408 (or reset once its response has
started).

Choosing the codec: over TLS, ALPN decides (C{h2} selects this protocol,
anything else L{HTTPServerProtocol}).  On a plain listener this protocol
also serves clients that use HTTP/2 "with prior knowledge" (C{h2c}, RFC
9113 3.3): such a connection starts with the preface
C{PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n}, so a listener can sniff the
first bytes and pick the codec accordingly.  The HTTP/1.1
C{Upgrade: h2c} dance is not supported (RFC 9113 dropped it).
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from typing import Dict, Optional

from h2.config import H2Configuration
from h2.connection import ConnectionInputs, H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import (
    FlowControlError, InvalidBodyLengthError, ProtocolError, StreamClosedError,
)
from h2.settings import SettingCodes, Settings
from hpack import Decoder, Encoder
from hpack.table import HeaderTable
from hyperframe.frame import GoAwayFrame
from twisted.logger import Logger
from zope.interface import implementer

from twistproxy.deadlines import Wait, Waiting
from twistproxy.http import headers as H
from twistproxy.interfaces import IResponseSink
from twistproxy.http.exchange import Exchange
from twistproxy.http.paths import KEEP
from twistproxy.http.answers import RETRY_AFTER, error_body
from twistproxy.http.codec import ClientCodec
from twistproxy.http.parser import (
    FIELD_LINE,
    HOST_RE,
    ParseError,
    RequestHead,
    check_body_size,
    check_expectation,
    check_field_name,
    check_method,
    check_request_line,
    host_field,
    parse_content_length,
)

# The waits of this codec, bound once: a member looked up on the enum
# class costs several times a global's lookup on CPython.
_W_NONE, _W_IDLE, _W_BODY = Wait.NONE, Wait.IDLE, Wait.BODY
# Likewise h2's input of its connection state machine for sent headers.
_SEND_HEADERS = ConnectionInputs.SEND_HEADERS

# The connection preface of a client speaking HTTP/2 (RFC 9113 3.4): what
# a plain listener may look for to serve h2c with prior knowledge.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# The ALPN protocol identifier served by this codec.
ALPN_H2 = b"h2"

MAX_CONCURRENT_STREAMS = 100
# Malformed requests (each a stream error) a connection may send beyond
# its well-formed ones before it is closed as a flood.
MAX_MALFORMED = 10
# Response bytes waiting on one stream beyond which its backend is paused.
STREAM_BUFFER = 65536
# The client's window for the whole connection: room for every stream's
# default window, so that one stream waiting for a backend (holding its
# unacknowledged data) cannot stall the uploads of the others.  The memory
# bound is the same either way: each stream's own window.
_CONNECTION_WINDOW = MAX_CONCURRENT_STREAMS * 65535

_VIA = b"via"
_COOKIE = b"cookie"
_PSEUDO_HEADERS = (b":method", b":path", b":authority", b":scheme")
_CONNECTION_FIELDS = frozenset([
    b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade",
])
# The response fields that h2's normalisation or validation of what is sent
# would change or refuse: connection-specific ones (removed, or refused),
# TE (refused unless "trailers"), and those it keeps out of the HPACK
# table (credentials, short cookies).
_H2_RULED = _CONNECTION_FIELDS | {
    b"te", b"authorization", b"proxy-authorization", b"cookie",
}


def _plain(fields) -> bool:
    """
    Whether h2's normalisation and validation of sent fields would leave
    C{fields} (bytes, as everywhere in the proxy) as they are: C{:status}
    first and the only pseudo-header, then lower-case names none of which
    h2 treats specially, and names and values without surrounding
    whitespace.  Responses built from a parsed backend response are;
    anything else is left to h2's own checks (see
    L{H2ServerProtocol._send_headers}), so the outcome is always h2's.
    """
    if fields[0][0] != b":status":
        return False
    for name, value in islice(fields, 1, None):
        if (name in _H2_RULED or name[:1] in (b":", b"") or name.strip().lower() != name
                or value.strip() != value):
            return False
    return True



def _valid_field(name: bytes, value: bytes) -> bool:
    # The field is written into an HTTP/1.1 head, so it must be one the
    # HTTP/1.1 parser accepts as it is: a token name (lower-case, RFC 9113
    # 8.2.1) and a value without control characters other than inner HTAB
    # and without surrounding blanks (which the parser would strip).
    if name.lower() != name:
        return False
    m = FIELD_LINE(name + b":" + value)
    return m is not None and (m.group(2) or b"") == value


def _head(method: bytes, target: bytes, host: bytes, headers,
          escaped_slashes: str = KEEP) -> RequestHead:
    # HTTP/2 has no connection fields (RFC 9113 8.2.2) and no Expect.
    return RequestHead.made(method, target, host, headers, keep_alive=True,
                            version=(2, 0), escaped_slashes=escaped_slashes)


def _request_head(fields, stream_ended: bool, limits,
                  escaped_slashes: str = KEEP) -> RequestHead:
    """
    A L{RequestHead} from a stream's header fields, checked as strictly as
    L{parse_request_head} checks an HTTP/1.1 head (the path by the same
    L{request_target <twistproxy.http.parser.request_target>}).

    @raises ParseError: For a malformed or unsupported request.
    """
    return _checked_request(fields, stream_ended, limits, escaped_slashes)[0]


def _checked_request(fields, stream_ended: bool, limits, escaped_slashes: str):
    """
    L{_request_head}, and what L{_same_request} needs to make the same head
    again without the checks: C{(method, target, host, fields, length)}.
    None of the checks depends on C{escaped_slashes}, only the head.
    """
    pseudo = dict.fromkeys(_PSEUDO_HEADERS)
    headers = []
    cookies = []
    hosts = []
    lengths = []
    expects = []
    # As RFC 9113 counts a header list: 32 bytes of overhead per field.
    size = 0
    for name, value in fields:
        size += len(name) + len(value) + 32
        if name[:1] == b":":
            # Unknown, repeated, or after a regular field (RFC 9113 8.3).
            if headers or cookies or name not in pseudo or pseudo[name] is not None:
                raise ParseError(400, "bad_pseudo_header")
            pseudo[name] = value
            continue
        if not _valid_field(name, value):
            raise ParseError(400, "bad_header")
        check_field_name(name)
        if name in _CONNECTION_FIELDS or (name == b"te" and value != b"trailers"):
            # RFC 9113 8.2.2: HTTP/2 has no connection-specific fields.
            raise ParseError(400, "connection_header")
        if name == _COOKIE:
            # RFC 9113 8.2.3: crumbs are joined again for HTTP/1.1.
            cookies.append(value)
            continue
        if name == b"host":
            hosts.append(value)
        elif name == b"content-length":
            lengths.append(value)
        elif name == b"expect":
            expects.append(value)
        headers.append((name, value))
    if cookies:
        headers.append((_COOKIE, b"; ".join(cookies)))
    method, target, authority, scheme = (
        pseudo[b":method"], pseudo[b":path"], pseudo[b":authority"], pseudo[b":scheme"])
    if len(headers) > limits.max_header_count:
        raise ParseError(431, "too_many_headers")
    if size > limits.max_head_size:
        # h2 only enforces its own default (64 KiB), whatever is advertised.
        raise ParseError(431, "head_too_large")
    if method is None:
        raise ParseError(400, "missing_pseudo_header")
    # Before the others: a CONNECT has no :path or :scheme (RFC 9113 8.5).
    check_method(method, target)
    if target is None or scheme is None:
        raise ParseError(400, "missing_pseudo_header")
    if len(target) > limits.max_uri_length:
        raise ParseError(414, "uri_too_long")
    check_request_line(method, target)
    if target[:1] != b"/" and target != b"*":
        # Neither the origin form nor OPTIONS' asterisk (RFC 9113 8.3.1).
        raise ParseError(400, "bad_request_target")
    host = host_field(hosts)
    if authority is not None:
        if host is not None and host != authority:
            # RFC 9113 8.3.1: two authorities, two readings.
            raise ParseError(400, "bad_host")
        if HOST_RE(authority) is None:
            raise ParseError(400, "bad_host")
        host = authority
    if host is None:
        raise ParseError(400, "missing_host")
    if not host:
        # As an HTTP/1.1 request's empty Host: no authority to route on.
        raise ParseError(400, "empty_host")

    if expects:
        # Refused as over HTTP/1.1.  A 100-continue is not answered:
        # flow control already bounds what the client may send.
        check_expectation(expects)
    parts = (method, target, host, tuple(headers))
    req = _head(method, target, host, headers, escaped_slashes)
    length = parse_content_length(lengths, 400) if lengths else None
    if stream_ended and length:
        raise ParseError(400, "bad_content_length")
    check_body_size(length, limits.max_body_size)
    _set_length(req, length, stream_ended)
    return req, parts + (length,)


def _same_request(parts, stream_ended: bool, escaped_slashes: str) -> RequestHead:
    """
    A new L{RequestHead} equal to the one L{_checked_request} made with
    C{parts}: the fields were checked then.
    """
    method, target, host, headers, length = parts
    req = _head(method, target, host, list(headers), escaped_slashes)
    _set_length(req, length, stream_ended)
    return req


def _set_length(req: RequestHead, length: Optional[int], stream_ended: bool) -> None:
    req.content_length = length
    # HTTP/2 frames the body itself; without a declared length the backend
    # gets it chunked.
    req.chunked = not stream_ended and length is None


def _partial_request(fields) -> RequestHead:
    """
    What can be told of a request that was refused, for the access log.
    """
    values = dict((n, v) for n, v in fields if n[:1] == b":")
    method = values.get(b":method") or b"-"
    target = values.get(b":path") or b"-"
    if any(b > 126 or b < 33 for b in method + target):
        method = target = b"-"
    req = _head(method, b"-", b"", [])
    # As received: a refused target is logged, never routed.
    req.target = req.path = target
    return req


class _QuietLog:
    """
    The logger of every L{_Connection}: h2 logs some ten debug lines per
    stream, and its default logger's no-op methods are Python calls.
    These are a C method that takes any arguments and does nothing with
    them (an empty template has nothing to fill in).
    """

    debug = trace = "".format


class _Malformed:
    """
    An event of L{_Connection}: h2 found a request malformed once its
    stream was open.

    @ivar opened: Whether it was the HEADERS frame that opened the stream
        (else a DATA frame).
    @ivar flow: The flow-controlled bytes of the DATA frame at fault, to
        give back to the connection's window.
    @ivar ended: Whether the client ended the stream.
    """

    __slots__ = ("stream_id", "reason", "opened", "flow", "ended")

    def __init__(self, stream_id: int, reason: str, opened: bool, flow: int = 0,
                 ended: bool = False):
        self.stream_id = stream_id
        self.reason = reason
        self.opened = opened
        self.flow = flow
        self.ended = ended


class _Table(HeaderTable):
    """
    hpack's dynamic table, numbering its states: every entry added and
    every resize makes a new C{version}, so that L{_Encoder} and
    L{_Decoder} know when a block they coded is still coded the same.
    """

    version = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.version += 1
        super().add(name, value)

    @HeaderTable.maxsize.setter
    def maxsize(self, newmax: int) -> None:
        self.version += 1
        HeaderTable.maxsize.fset(self, newmax)


class _Encoder(Encoder):
    """
    hpack's encoder, which sends the last header block again when the same
    fields follow and that block changed nothing in the table.

    A response whose fields are all in the table already (as most are, on a
    connection that asks for the same kind of resource again and again)
    changes nothing, so the next one with the same fields is coded to the
    same bytes: one comparison of lists instead of some hundred Python
    calls.  Such a block holds only indexes, which hpack sends for a field
    found whole in the table whether it is sensitive or not, and Huffman
    coding or not.  A block that does not change the table but holds a
    sensitive field (sent literally, never indexed) is not reused: a field
    equal to it but not sensitive would be indexed.
    """

    def __init__(self):
        super().__init__()
        self.header_table = _Table()
        # (fields, table version, block), or None.
        self._last = None

    def encode(self, headers, huffman: bool = True) -> bytes:
        table = self.header_table
        last = self._last
        if last is not None and last[1] == table.version and last[0] == headers:
            return last[2]
        version, resized = table.version, table.resized
        block = super().encode(headers, huffman)
        # A block that changed the table is not sent again (the version
        # differs), one that signals a new table size must not be.  h2
        # passes a generator (read by now: no types) when it normalises or
        # validates the fields.
        if not resized and set(map(type, headers)) == _TUPLE:
            self._last = (headers, version, block)
        return block


# The class of plain fields (not hpack's HeaderTuple, whose subclass
# NeverIndexedHeaderTuple marks a sensitive one).
_TUPLE = {tuple}


class _Decoder(Decoder):
    """
    hpack's decoder, which gives the last header block's fields again when
    the same block follows, that block changed nothing in the table, and
    the limits are the same: a client that asks for the same resource again sends the
    same fully indexed block, and decoding it again would give the same
    fields, or raise the same error.  Blocks that change the table (or its
    size) are always decoded.
    """

    def __init__(self):
        super().__init__()
        self.header_table = _Table()
        # (block, raw, table version, max_header_list_size,
        # max_allowed_table_size, fields), or None.
        self._last = None

    def decode(self, data: bytes, raw: bool = False):
        table = self.header_table
        last = self._last
        if (last is not None and last[2] == table.version and last[0] == data
                and last[1] == raw and last[3] == self.max_header_list_size
                and last[4] == self.max_allowed_table_size):
            return list(last[5])
        version = table.version
        fields = super().decode(data, raw)
        # A block that changed the table is not reused: the version differs.
        self._last = (bytes(data), raw, version, self.max_header_list_size,
                      self.max_allowed_table_size, fields)
        return list(fields)


class _Connection(H2Connection):
    """
    h2's connection, where the malformed requests that h2 itself notices
    (a content-length that is not a number or that the DATA frames do not
    add up to, a stream depending on itself) are stream errors, as RFC
    9113 8.1.1 allows: reported as L{_Malformed} events, after which the
    stream is answered 400 or reset, and the other streams go on.  What
    concerns the whole connection (HPACK state, flow control, stream
    states) stays a connection error.

    Its HPACK coders are L{_Encoder} and L{_Decoder}.
    """

    def __init__(self, config: H2Configuration):
        super().__init__(config)
        self.encoder = _Encoder()
        decoder = _Decoder()
        decoder.max_header_list_size = self.decoder.max_header_list_size
        self.decoder = decoder

    def send_response_headers(self, stream_id: int, fields, end_stream: bool) -> None:
        """
        h2's C{send_headers}, without its stream lookup for a stream that is
        open: that builds an C{AllowedStreamIDs} member (an C{Enum} call) in
        case there is none.  For any other, h2's own method decides.
        """
        stream = self.streams.get(stream_id)
        if stream is None:
            self.send_headers(stream_id, fields, end_stream=end_stream)
            return
        self.state_machine.process_input(_SEND_HEADERS)
        self._prepare_for_sending(stream.send_headers(fields, self.encoder, end_stream))

    def _prepare_for_sending(self, frames) -> None:
        """
        h2's, by a loop rather than two generators (a call sends one frame
        or two): each frame is serialized, which sets its C{body_len}, and
        checked against the largest frame the client takes.
        """
        limit = self.max_outbound_frame_size
        for frame in frames:
            self._data_to_send += frame.serialize()
            assert frame.body_len <= limit

    def _receive_frame(self, frame):
        """
        h2's, without the C{repr} of every frame received that h2 makes for
        its trace log, whatever the logger does with it (some 2 % of a
        stream's cost).  What the frame's handler raises goes through h2's
        own method (L{_receive_failed}), which turns some of it into a
        reset of the stream, as it would have.
        """
        try:
            frames, events = self._frame_dispatch_table[frame.__class__](frame)
        except Exception as e:
            return self._receive_failed(frame, e)
        self._prepare_for_sending(frames)
        return events

    def _receive_failed(self, frame, error: Exception):
        """
        Handle C{error}, raised by the handler of C{frame}, as h2 does: its
        C{_receive_frame} is run with a handler that raises it again (the
        real one has run, and changed the connection's state already).
        """
        table = self._frame_dispatch_table
        kind = frame.__class__
        handler = table[kind]

        def failed(frame):
            raise error

        table[kind] = failed
        try:
            return super()._receive_frame(frame)
        finally:
            table[kind] = handler

    def _receive_headers_frame(self, frame):
        known = frame.stream_id in self.streams
        try:
            return super()._receive_headers_frame(frame)
        except ProtocolError:
            if known or frame.stream_id not in self.streams:
                # Not a new stream's request (too many streams, HPACK,
                # HEADERS on a stream in the wrong state).
                raise
            return [], [_Malformed(frame.stream_id, "malformed_request", True,
                                   ended="END_STREAM" in frame.flags)]

    def _receive_data_frame(self, frame):
        try:
            return super()._receive_data_frame(frame)
        except InvalidBodyLengthError:
            return [], [_Malformed(frame.stream_id, "bad_content_length", False,
                                   frame.flow_controlled_length)]


@implementer(IResponseSink)
class H2Stream(Waiting):
    """
    One client stream: the C{downstream} of its L{Exchange}.

    It buffers what cannot move yet in either direction: request body
    frames until they are handed to the backend (then acknowledged), and
    response bytes until the client's flow-control windows take them.
    """

    __slots__ = (
        "_conn", "stream_id", "exchange", "_clock", "_attached", "_body_in",
        "_body_ended", "_body_done", "_body_read", "_upstream_full",
        "_response_started", "_out", "_pending", "_out_ended", "_paused",
        "_closed", "deadline", "_timer_kind", "_length",
    )

    @property
    def connection(self) -> "H2ServerProtocol":
        """
        The client connection this stream is part of.
        """
        return self._conn

    def __init__(self, conn: H2ServerProtocol, stream_id: int):
        self._conn = conn
        self._clock = conn._clock
        self.stream_id = stream_id
        self.exchange: Optional[Exchange] = None
        self._attached = False
        # (data, flow-controlled length) not yet handed upstream.
        self._body_in: deque = deque()
        self._body_ended = False
        self._body_done = False
        self._body_read = 0
        self._upstream_full = False
        self._response_started = False
        self._out: deque = deque()
        self._pending = 0
        # The response body's declared length, or None.
        self._length: Optional[int] = None
        self._out_ended = False
        self._paused = False
        self._closed = False
        self.deadline = float("inf")
        self._timer_kind = _W_NONE

    # What the forwarder and the upstream codec read

    @property
    def trusted(self) -> bool:
        return self._conn.trusted

    @property
    def proto(self) -> bytes:
        return self._conn.proto

    @property
    def identity(self):
        return self._conn.identity

    @property
    def filters(self):
        return self._conn.filters

    @property
    def listener(self) -> str:
        return self._conn.listener

    @property
    def transport(self):
        return self._conn.transport

    # Called by the upstream side

    def upstream_attached(self, exchange: Exchange) -> None:
        """
        The request head went to a backend: send the body received so far.
        """
        if exchange is not self.exchange or self._closed:
            return
        self._attached = True
        # A fresh backend connection (the first, or a retry's).
        self._upstream_full = False
        self._paused = False
        if exchange.request.has_body and not self._body_done:
            self._set_timer(_W_BODY, self._conn._factory.timeouts.request_body)
            self._drain_body()
        self._update_pause()
        self._conn._flush_soon()

    def upstream_full(self, full: bool) -> None:
        """
        The backend connection cannot take more of the body (or can again):
        stop (or resume) acknowledging DATA, so the client's window fills.
        """
        self._upstream_full = full
        if self._closed or self._body_done:
            return
        if full:
            # The backend is the slow one: the client is not to blame.
            self._set_timer(_W_NONE, 0)
        else:
            self._set_timer(_W_BODY, self._conn._factory.timeouts.request_body)
            self._drain_body()
            self._conn._flush_soon()

    def informational(self, exchange: Exchange, resp) -> None:
        if exchange is not self.exchange or self._closed or self._response_started:
            return
        self._conn._send_headers(self.stream_id, self._fields(resp, None, H.NO_RULES, ()))

    def response_head(self, exchange: Exchange, resp, has_body: bool, extra=None) -> None:
        if exchange is not self.exchange or self._closed:
            return
        if resp.status == 101:
            # No protocol switch over HTTP/2; tunnel() answers 502.
            return
        self._response_started = True
        exchange.status = resp.status
        hsts = self._conn._factory.hsts
        length = None
        if resp.content_length is not None and (
            has_body or resp.status == 304 or resp.status >= 200 and resp.status != 204
        ):
            length = resp.content_length
        rules = exchange.route.response_rules if exchange.route is not None else H.NO_RULES
        fields = self._fields(
            resp, length, rules, extra or (), exchange.response_fields or (),
            (hsts,) if hsts is not None else (),
        )
        if not has_body:
            self._out_ended = True
            self._conn._send_headers(self.stream_id, fields, end_stream=True)
            self._finished()
        else:
            self._length = length
            self._conn._send_headers(self.stream_id, fields)

    def response_body(self, exchange: Exchange, data: bytes) -> None:
        if exchange is not self.exchange or self._closed or not data:
            return
        exchange.body_bytes += len(data)
        self._out.append(data)
        self._pending += len(data)
        if exchange.body_bytes != self._length:
            self._send()
        # else the body's last bytes: response_end, which follows, sends
        # them in the DATA frame that ends the stream (one frame, not two).
        if self._paused or self._pending > STREAM_BUFFER or self._conn.client_full:
            # Else _update_pause would leave the backend read as it is.
            self._update_pause()

    def flush(self) -> None:
        """
        Send what was passed on so far; called once per backend read.
        """
        self._conn._flush_soon()

    def response_end(self, exchange: Exchange) -> None:
        if exchange is not self.exchange or self._closed:
            return
        self._out_ended = True
        self._send()
        if not self._closed:
            # Else the stream is over, and _stream_gone has written.
            self._conn._flush_soon()

    def upstream_failed(self, exchange: Exchange, status: int, reason: str) -> None:
        """
        The request could not be completed: answer with C{status} if no
        response has started, else reset the stream so that the client
        sees an incomplete response rather than a wrong complete one.
        """
        if exchange is not self.exchange or self._closed:
            return
        self._fail(status, reason)
        self._conn._flush_soon()

    def tunnel(self, exchange: Exchange) -> None:
        """
        HTTP/2 has no protocol switch: refuse the backend's 101.
        """
        if exchange is not self.exchange or self._closed:
            return
        self._conn._factory.forwarder.cancel(exchange)
        self.upstream_failed(exchange, 502, "h2_no_upgrade")

    def tunnel_data(self, data: bytes) -> None:
        # Never reached: tunnel() cancels the upstream connection.
        pass

    # Driven by the connection

    def _request(self, exchange: Exchange) -> None:
        self.exchange = exchange
        if not exchange.request.has_body:
            self._body_done = True

    def _data(self, data: bytes, flow: int) -> None:
        """
        DATA arrived for this stream.
        """
        conn = self._conn
        exchange = self.exchange
        if self._closed or self._body_done or exchange is None:
            conn._ack(self.stream_id, flow)
            return
        self._body_read += len(data)
        max_body = conn._factory.limits.max_body_size
        if max_body and self._body_read > max_body:
            conn._ack(self.stream_id, flow)
            conn._factory.forwarder.cancel(exchange)
            self._fail(413, "body_too_large")
            return
        self._body_in.append((data, flow))
        if self._attached:
            factory = conn._factory
            self._earn_time(_W_BODY, factory.timeouts.request_body,
                            factory.limits.min_body_rate, len(data))
            self._drain_body()

    def _end_of_body(self) -> None:
        self._body_ended = True
        if self._closed or self._body_done:
            return
        if self._attached:
            self._drain_body()

    def _drain_body(self) -> None:
        exchange = self.exchange
        upstream = exchange.upstream if exchange is not None else None
        if upstream is None or self._body_done:
            return
        conn = self._conn
        body_in = self._body_in
        while body_in and not self._upstream_full:
            data, flow = body_in.popleft()
            if data:
                exchange.body_started = True
                upstream.write_body(data)
            conn._ack(self.stream_id, flow)
            if exchange.upstream is not upstream or self.exchange is not exchange:
                return
        if self._body_ended and not body_in and not self._body_done:
            self._body_done = True
            self._set_timer(_W_NONE, 0)
            upstream.end_body()

    def _send(self) -> None:
        """
        Send as much waiting response data as the windows allow, and the
        end of the stream once everything has been sent.
        """
        if self._closed:
            return
        h2c = self._conn._h2
        sid = self.stream_id
        out = self._out
        try:
            while out:
                chunk = out.popleft()
                last = self._out_ended and not out
                whole = len(chunk) <= h2c.max_outbound_frame_size
                if whole:
                    # Most chunks fit in a frame and in the windows, which
                    # h2 checks (and refuses) before it sends anything: no
                    # window to ask for here.
                    try:
                        h2c.send_data(sid, chunk, end_stream=last)
                    except FlowControlError:
                        whole = False
                if not whole:
                    # What fits now: a frame's worth at most.
                    room = min(h2c.local_flow_control_window(sid), h2c.max_outbound_frame_size)
                    if room <= 0:
                        out.appendleft(chunk)
                        return
                    out.appendleft(chunk[room:])
                    chunk = chunk[:room]
                    last = False
                    h2c.send_data(sid, chunk)
                self._pending -= len(chunk)
                if last:
                    self._finished()
                    return
            if self._out_ended and self._response_started:
                h2c.end_stream(sid)
                self._finished()
        except (StreamClosedError, ProtocolError):
            self._gone(ErrorCodes.STREAM_CLOSED)

    def _update_pause(self) -> None:
        exchange = self.exchange
        if exchange is None or exchange.upstream is None:
            return
        pause = self._pending > STREAM_BUFFER or self._conn.client_full
        if pause != self._paused:
            self._paused = pause
            exchange.upstream.pause_reading(pause)

    def _fields(self, resp, length, rules, *extras):
        """
        The response's fields for HTTP/2, as L{H.response_head} writes
        them for HTTP/1.1: hop-by-hop fields (which HTTP/2 forbids, RFC
        9113 8.2.2) and those the rules remove are dropped, this proxy is
        added to Via, then come C{extras} (lists of fields), the length
        and the rules' fields.  Names are lower-cased, as HTTP/2 requires.
        """
        fields, via_value = H.response_fields(
            resp, rules, self._conn._factory.via, lower=True
        )
        fields.insert(0, (b":status", b"%d" % resp.status))
        append = fields.append
        if via_value is not None:
            append((_VIA, via_value))
        for extra in extras:
            for name, value in extra:
                append((name.lower(), value))
        if length is not None:
            append((b"content-length", b"%d" % length))
        if rules.host is not None:
            append((b"host", rules.host))
        if rules.append:
            for line in rules.append.split(b"\r\n"):
                if line:
                    name, _, value = line.partition(b": ")
                    append((name.lower(), value))
        return fields

    def _answer(self, status: int, fields=()) -> None:
        """
        Answer by the proxy itself, with a short plain-text response and
        C{fields} (name, value pairs) added.
        """
        exchange = self.exchange
        exchange.status = status
        body = error_body(status)
        exchange.body_bytes = len(body)
        self._response_started = True
        self._conn._send_headers(self.stream_id, [
            (b":status", b"%d" % status),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
        ] + [(name.lower(), value) for name, value in fields])
        self._out.append(body)
        self._pending += len(body)
        self._out_ended = True
        self._send()

    def _fail(self, status: int, reason: str, fields=(),
              code=ErrorCodes.INTERNAL_ERROR) -> None:
        """
        The request is refused or timed out on the client's side: answer
        C{status}, or reset the stream with C{code} once the response has
        started.
        """
        self.exchange.reason = reason
        if self._response_started:
            self._reset(code)
        else:
            self._answer(status, fields)

    def _reset(self, code) -> None:
        if not self._closed:
            try:
                self._conn._h2.reset_stream(self.stream_id, code)
            except (StreamClosedError, ProtocolError):
                pass
            self._gone(None)

    def _finished(self) -> None:
        """
        The whole response was sent: the exchange is over.
        """
        if self._closed:
            return
        if not self._body_ended:
            # RFC 9113 8.1: the client may stop sending its body.
            try:
                self._conn._h2.reset_stream(self.stream_id, ErrorCodes.NO_ERROR)
            except (StreamClosedError, ProtocolError):
                pass
        self._gone(None)

    def _gone(self, code) -> None:
        """
        The stream is over, whatever the reason: end its exchange.

        @param code: Not C{None} when the client reset it or went away
            before the response was complete.
        """
        if self._closed:
            return
        self._closed = True
        if self._timer_kind:
            self._set_timer(_W_NONE, 0)
        conn = self._conn
        # The connection window must not stay consumed by data nobody
        # will read.
        for _, flow in self._body_in:
            conn._ack(self.stream_id, flow)
        self._body_in.clear()
        self._out.clear()
        self._pending = 0
        exchange = self.exchange
        if exchange is not None:
            if code is not None:
                if not exchange.status:
                    # nginx's convention: the client closed before an answer.
                    exchange.status = 499
                    exchange.reason = exchange.reason or "client_closed"
                elif not exchange.reason and not (self._out_ended and not self._out):
                    exchange.reason = "client_closed"
            conn._factory.forwarder.cancel(exchange)
            conn._factory.exchange_ended(exchange)
        conn._stream_gone(self)

    def _wait_expired(self, kind: Wait) -> None:
        if kind == _W_BODY and not self._closed and self.exchange is not None:
            self._conn._factory.forwarder.cancel(self.exchange)
            self._fail(408, "request_body_timeout")
            self._conn._flush_soon()


class H2ServerProtocol(ClientCodec):
    """
    One HTTP/2 client connection, built by an L{HTTPServerFactory}.

    @ivar trusted: Whether the peer is a trusted proxy.
    @ivar proto: How the client reached the listener (C{b'https'}).
    @ivar identity: As L{HTTPServerProtocol.identity}.
    @ivar client_full: Whether the client's TCP send buffer is full.
    """

    log = Logger()

    def __init__(self, factory):
        super().__init__(factory)
        # Requests are checked by _request_head (a malformed one is a
        # stream error), not by h2 (for which it is a connection error).
        # h2 checks responses only when they are not _plain: see
        # _send_headers.
        self._h2 = _Connection(config=H2Configuration(
            client_side=False, header_encoding=None, logger=_QuietLog(),
            validate_inbound_headers=False,
            normalize_outbound_headers=False, validate_outbound_headers=False,
        ))
        # Malformed requests received, and so far tolerated.
        self._malformed = 0
        self._streams: Dict[int, H2Stream] = {}
        self._in_batch = False
        self._closed = False
        self._goaway_received = False
        # The last stream served after a graceful GOAWAY, or None.
        self._last_stream: Optional[int] = None
        # What _request_head checked last, and the last response fields
        # found _plain (for _send_headers), or None.
        self._request_checked = None
        self._plain_fields = None

    # Connection events

    def connectionMade(self) -> None:
        super().connectionMade()
        h2c = self._h2
        h2c.local_settings = Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
            SettingCodes.MAX_HEADER_LIST_SIZE: self._factory.limits.max_head_size,
        })
        h2c.initiate_connection()
        h2c.increment_flow_control_window(_CONNECTION_WINDOW - 65535)
        self._factory.deadlines.add(self)
        self._set_timer(_W_IDLE, self._factory.timeouts.idle)
        self._write()

    def dataReceived(self, data: bytes) -> None:
        if self._closed:
            return
        self._in_batch = True
        try:
            try:
                events = self._h2.receive_data(data)
            except ProtocolError as e:
                self.log.debug("HTTP/2 protocol error from {client}: {error}",
                               client=self.client_address, error=e)
                self._write()
                self._close()
                return
            for event in events:
                self._event(event)
                if self._closed:
                    return
        finally:
            self._in_batch = False
        self._write()
        self._idle_check()

    def connectionLost(self, reason=None) -> None:
        self._factory.connection_closed(self)
        self._closed = True
        self._set_timer(_W_NONE, 0)
        self._factory.deadlines.discard(self)
        for stream in list(self._streams.values()):
            stream._gone(ErrorCodes.CANCEL)
        self._streams.clear()

    # h2 events

    def _event(self, event) -> None:
        kind = type(event)
        if kind is DataReceived:
            stream = self._streams.get(event.stream_id)
            if stream is None:
                self._ack(event.stream_id, event.flow_controlled_length)
            else:
                stream._data(event.data, event.flow_controlled_length)
        elif kind is RequestReceived:
            self._request(event.stream_id, event.headers, event.stream_ended is not None)
        elif kind is _Malformed:
            self._malformed_event(event)
        elif kind is StreamEnded:
            stream = self._streams.get(event.stream_id)
            # Not for a request that ended with its HEADERS: the stream
            # knows already.
            if stream is not None and not stream._body_ended:
                stream._end_of_body()
        elif kind is WindowUpdated:
            if event.stream_id:
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream._send()
                    stream._update_pause()
            else:
                self._send_all()
        elif kind is RemoteSettingsChanged:
            if SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
                self._send_all()
        elif kind is StreamReset:
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream._gone(event.error_code)
        elif kind is ConnectionTerminated:
            self._goaway_received = True

    def _request(self, sid: int, fields, ended: bool,
                 error: Optional[ParseError] = None) -> None:
        """
        A stream opened with a request: check it, then forward it or
        answer it.

        @param error: Why h2 found it malformed already, or C{None}.
        """
        if self._last_stream is not None and sid > self._last_stream:
            # Opened before the client saw our GOAWAY: it may retry it on
            # a new connection.
            try:
                self._h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            except (StreamClosedError, ProtocolError):
                pass
            return
        stream = H2Stream(self, sid)
        stream._body_ended = ended
        factory = self._factory
        if error is None:
            try:
                req = self._request_head(fields, ended)
            except ParseError as e:
                error = e
        if error is not None:
            req = _partial_request(fields)
        exchange = Exchange(req, self.client_address, stream, self._clock.seconds())
        stream._request(exchange)
        self._streams[sid] = stream
        if not stream._body_done:
            # Only a request body has a timeout on a stream.
            factory.deadlines.add(stream)
        if self._timer_kind:
            # The connection is not idle any more.
            self._set_timer(_W_NONE, 0)
        if error is not None:
            stream._fail(error.status, error.reason)
            if error.status == 400:
                self._malformed_request()
            return
        # What is not configured (ACME challenges, an identity header)
        # costs no call per stream.
        if factory.challenges is not None and self._answered_challenge(exchange):
            return
        if not self._allowed(exchange):
            stream._fail(503, exchange.reason, [RETRY_AFTER])
            return
        if factory.identity_header is not None:
            self._identify()
        factory.forwarder.forward(exchange)

    def _request_head(self, fields, ended: bool) -> RequestHead:
        """
        L{_request_head}, once for the same fields as the last well-formed
        request (and the same limits): a client asking for the same
        resource again, as a load generator or a poller does, sends the
        same fields, and they pass the same checks.
        """
        factory = self._factory
        limits, escaped = factory.limits, factory.escaped_slashes
        last = self._request_checked
        if last is not None and last[0] == fields and last[1] is limits and last[2] == ended:
            # What escaped_slashes decides (or refuses) is decided again.
            return _same_request(last[3], ended, escaped)
        req, parts = _checked_request(fields, ended, limits, escaped)
        self._request_checked = (fields, limits, ended, parts)
        return req

    def _malformed_event(self, event: _Malformed) -> None:
        """
        h2 found a request malformed: answer or reset its stream.
        """
        sid = event.stream_id
        self._ack(sid, event.flow)
        if event.opened:
            # What it asked for is not known.
            self._request(sid, (), event.ended, ParseError(400, event.reason))
            return
        stream = self._streams.get(sid)
        if stream is not None:
            self._factory.forwarder.cancel(stream.exchange)
            stream._fail(400, event.reason, code=ErrorCodes.PROTOCOL_ERROR)
        else:
            # Its request was already answered.
            try:
                self._h2.reset_stream(sid, ErrorCodes.PROTOCOL_ERROR)
            except (StreamClosedError, ProtocolError):
                pass
        self._malformed_request()

    def _malformed_request(self) -> None:
        """
        Count a malformed request: a peer that sends more of them than
        well-formed ones, beyond L{MAX_MALFORMED}, is told to calm down
        (GOAWAY) and cut off.
        """
        self._malformed += 1
        if self._malformed > MAX_MALFORMED and self._malformed > self.requests:
            self.log.info("HTTP/2 client {client} sent {count} malformed requests: "
                          "connection closed", client=self.client_address,
                          count=self._malformed)
            try:
                self._h2.close_connection(ErrorCodes.ENHANCE_YOUR_CALM)
            except ProtocolError:
                pass
            self._close()

    # Used by the streams

    def _ack(self, stream_id: int, flow: int) -> None:
        if flow and not self._closed:
            try:
                self._h2.acknowledge_received_data(flow, stream_id)
            except (StreamClosedError, ProtocolError):
                pass

    def _send_headers(self, stream_id: int, fields, end_stream: bool = False) -> None:
        h2c = self._h2
        try:
            # The same fields as the last plain response are plain (one
            # comparison of lists, not a Python loop).
            plain = fields == self._plain_fields
            if not plain and _plain(fields):
                plain = True
                self._plain_fields = fields
            if plain:
                # What h2's checks would pass unchanged: some fifty
                # generator steps fewer per response.
                h2c.send_response_headers(stream_id, fields, end_stream)
            else:
                config = h2c.config
                config.normalize_outbound_headers = config.validate_outbound_headers = True
                try:
                    h2c.send_response_headers(stream_id, fields, end_stream)
                finally:
                    config.normalize_outbound_headers = False
                    config.validate_outbound_headers = False
        except (StreamClosedError, ProtocolError):
            stream = self._streams.get(stream_id)
            if stream is not None:
                stream._gone(ErrorCodes.STREAM_CLOSED)

    def _stream_gone(self, stream: H2Stream) -> None:
        self._factory.deadlines.discard(stream)
        if self._streams.get(stream.stream_id) is stream:
            del self._streams[stream.stream_id]
        if not self._in_batch:
            # The stream may have ended after the upstream side's last
            # flush (a response without a body, a failure).
            self._write()
            self._idle_check()

    def _flush_soon(self) -> None:
        if not self._in_batch:
            self._write()

    def _send_all(self) -> None:
        for stream in list(self._streams.values()):
            if stream._out or stream._out_ended:
                stream._send()
                stream._update_pause()

    def _write(self) -> None:
        if self._closed:
            return
        data = self._h2.data_to_send()
        if data:
            self.transport.write(data)

    def drain(self, last_stream: Optional[int] = None) -> None:
        """
        Graceful shutdown: refuse new streams (GOAWAY), let the open ones
        finish, then close.

        @param last_stream: The last stream to serve; by default the last
            one the client opened.
        """
        if self._closed:
            return
        self._goaway_received = True
        if self._last_stream is None:
            # Not h2's close_connection(): after it, h2 treats every frame
            # the client still sends (the WINDOW_UPDATEs of the responses
            # being served, a request already on its way) as an error.
            if last_stream is None:
                last_stream = self._h2.highest_inbound_stream_id
            self._last_stream = last_stream
            goaway = GoAwayFrame(0)
            goaway.last_stream_id = self._last_stream
            goaway.error_code = ErrorCodes.NO_ERROR
            self._write()
            self.transport.write(goaway.serialize())
        self._idle_check()

    def _idle_check(self) -> None:
        if self._closed or self._streams:
            return
        if self._goaway_received:
            self._close()
        elif self._timer_kind != _W_IDLE:
            self._set_timer(_W_IDLE, self._factory.timeouts.idle)

    def _close(self) -> None:
        if not self._closed:
            self._write()
            self._closed = True
            self._set_timer(_W_NONE, 0)
            self.close()

    def _client_full(self, full: bool) -> None:
        self.client_full = full
        # Every frame read may call for an answer (PING, SETTINGS, a
        # refused stream): while the client does not take what is sent,
        # reading more would only pile answers up here.
        if not self._closed:
            if full:
                self.transport.pauseProducing()
            else:
                self.transport.resumeProducing()
        for stream in list(self._streams.values()):
            stream._update_pause()

    def _last_request(self, exchange: Exchange) -> None:
        # GOAWAY: the streams open up to this one are served, and then the
        # client opens a new connection for more.
        self.drain(exchange.downstream.stream_id)

    def _send_stalled(self) -> None:
        for stream in self._streams.values():
            if stream.exchange is not None:
                stream.exchange.reason = "send_timeout"

    def _wait_expired(self, kind: Wait) -> None:
        if kind == _W_IDLE and not self._closed and not self._streams:
            try:
                self._h2.close_connection()
            except ProtocolError:
                pass
            self._close()
