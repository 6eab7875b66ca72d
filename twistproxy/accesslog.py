# -*- test-case-name: tests.test_accesslog -*-
"""
The access log: one line per request.

Each line says what was asked, what was answered, which backend answered
it and how long that took, and, when the proxy answered by itself, a short
reason code (C{upstream_connect_failed}, C{upstream_timeout}, C{no_route},
C{bad_header} ...), so that an operator can tell a slow backend from a
slow client from a bad request at a glance.

Two formats: C{combined} (the Apache/nginx format, with the proxy's fields
appended as C{key=value}) and C{json} (one object per line).  Lines are
written to a buffered file and flushed periodically and at shutdown, not
synchronously per request: the access log must not cost more than the
request it describes.

A C{combined} line, shown here folded but written as one line::

    192.0.2.7 - - [10/Oct/2024:13:55:36 +0000] "GET /a?b=1 HTTP/1.1" 200 5
    "-" "curl/8.0" upstream=127.0.0.1:8001 upstream_time=0.012
    total_time=0.015 reason=-

When the route rewrote the target sent upstream (its path or its query)
into another, the line ends with C{rewritten=} and that target (the
request line keeps the client's).

Quotes, backslashes and bytes outside printable ASCII in
the target, Referer and User-Agent are written as C{\\xHH}, as nginx does,
so that a line can always be split on its quotes.  A field with no value is
C{-}.  The time is when the response ended, in UTC.

A C{json} line is one object with these keys: C{time} (ISO 8601, UTC),
C{client}, C{method}, C{target}, C{protocol}, C{host}, C{status},
C{bytes}, C{referer}, C{user_agent}, C{upstream} (the backend's name, or
C{null}), C{upstream_time} (seconds, or C{null}), C{total_time} (seconds)
and C{reason} (or C{null}), and C{rewritten} when the combined line has
it.  Bytes outside ASCII in request fields are
read as Latin-1 and escaped by JSON.  The protocol is the one the client
spoke: C{HTTP/1.1}, C{HTTP/1.0}, or C{HTTP/2.0} for HTTP/2 (as nginx writes
it), even though backends are always spoken to in HTTP/1.1.

TCP and UDP listeners (L{twistproxy.stream}) log one line per relayed
connection or UDP session, when it ends, with nginx stream's status
(200, or 502/503 when no backend could be reached), the bytes sent to and
received from the client, the backend, the duration, the TLS server name
of a passed-through connection, and why the proxy ended it::

    192.0.2.7 - - [10/Oct/2024:13:55:36 +0000] "TCP db" 200 5120
    received=311 upstream=127.0.0.1:5432 server_name=- total_time=12.004
    reason=-

in JSON with the keys C{time}, C{client}, C{protocol} (C{"TCP"} or
C{"UDP"}), C{listener}, C{status}, C{bytes}, C{received}, C{upstream},
C{server_name}, C{total_time} and C{reason}.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import BinaryIO, Optional

from twisted.internet.interfaces import IReactorTime

from twistproxy.http.exchange import Exchange

_UNSAFE = re.compile(rb'[\x00-\x1f"\\\x7f-\xff]')
# Not strftime's %b, which follows the locale: the combined format's month
# names are English whatever the machine's language.
_MONTHS = (
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun",
    b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
)


def _escape(value: bytes) -> bytes:
    # nginx's escaping: quote, backslash and non-printable bytes as \xHH.
    return _UNSAFE.sub(lambda m: b"\\x%02X" % m.group()[0], value)


def _header(exchange: Exchange, name: bytes) -> bytes:
    for key, value in exchange.request.headers:
        if key.lower() == name:
            return value
    return b"-"


def _rewritten(exchange: Exchange) -> Optional[bytes]:
    # The target sent upstream, when the route rewrote it into another.
    target = exchange.upstream_target
    return target if target is not None and target != exchange.request.target else None


class AccessLogWriter:
    """
    Formats finished exchanges and writes them to a binary stream.

    @param stream: Where lines go; flushed by L{flush}.
    @param format: C{'combined'} or C{'json'}.
    @param clock: Tells the time at which each exchange ends.
    @raises ValueError: for any other C{format}.
    """

    def __init__(self, stream: BinaryIO, format: str, clock: IReactorTime):
        self._stream = stream
        self._clock = clock
        if format == "combined":
            self._format = self._combined
        elif format == "json":
            self._format = self._json
        else:
            raise ValueError(f"unknown access log format {format!r}")
        self._second = -1
        self._stamp = b""

    def __call__(self, exchange: Exchange) -> None:
        self._stream.write(self._format(exchange))

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        self._stream.close()

    def size(self) -> int:
        """
        The size of the file written to now, other writers' lines included.
        """
        return os.fstat(self._stream.fileno()).st_size

    @staticmethod
    def _times(exchange: Exchange, now: float):
        upstream = (
            exchange.upstream_ended - exchange.upstream_started
            if exchange.upstream_ended and exchange.upstream_started else None
        )
        return upstream, now - exchange.started

    def _now_stamp(self) -> float:
        now = self._clock.seconds()
        second = int(now)
        if second != self._second:
            self._second = second
            t = time.gmtime(second)
            self._stamp = b"%02d/%s/%d:%02d:%02d:%02d +0000" % (
                t.tm_mday, _MONTHS[t.tm_mon - 1], t.tm_year,
                t.tm_hour, t.tm_min, t.tm_sec,
            )
        return now

    def connection(self, c) -> None:
        """
        Log a relayed TCP connection or UDP session that has ended (a
        L{twistproxy.stream.tcp.TCPRelay} or
        L{twistproxy.stream.udp.Session}).
        """
        now = self._now_stamp()
        upstream = c.backend.name if c.backend is not None else None
        if self._format == self._json:
            record = {
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                "client": c.client_address,
                "protocol": c.protocol,
                "listener": c.factory.listener,
                "status": c.status,
                "bytes": c.bytes_sent,
                "received": c.bytes_received,
                "upstream": upstream,
                "server_name": c.server_name or None,
                "total_time": round(now - c.started, 6),
                "reason": c.reason or None,
            }
            line = json.dumps(record, separators=(",", ":")).encode("utf-8") + b"\n"
        else:
            line = b'%s - - [%s] "%s %s" %d %d received=%d upstream=%s server_name=%s total_time=%.3f reason=%s\n' % (
                c.client_address.encode("ascii") or b"-",
                self._stamp,
                c.protocol.encode("ascii"),
                c.factory.listener.encode("ascii"),
                c.status,
                c.bytes_sent,
                c.bytes_received,
                upstream.encode("ascii") if upstream else b"-",
                c.server_name.encode("ascii") or b"-",
                now - c.started,
                c.reason.encode("ascii") or b"-",
            )
        self._stream.write(line)

    def _combined(self, exchange: Exchange) -> bytes:
        now = self._now_stamp()
        req = exchange.request
        upstream, total = self._times(exchange, now)
        line = b'%s - - [%s] "%s %s HTTP/%d.%d" %d %d "%s" "%s" upstream=%s upstream_time=%s total_time=%.3f reason=%s' % (
            exchange.client_address.encode("ascii") or b"-",
            self._stamp,
            req.method,
            _escape(req.target),
            req.version[0],
            req.version[1],
            exchange.status,
            exchange.body_bytes,
            _escape(_header(exchange, b"referer")),
            _escape(_header(exchange, b"user-agent")),
            exchange.backend.name.encode("ascii") if exchange.backend is not None else b"-",
            b"%.3f" % upstream if upstream is not None else b"-",
            total,
            exchange.reason.encode("ascii") or b"-",
        )
        rewritten = _rewritten(exchange)
        if rewritten is not None:
            return line + b" rewritten=%s\n" % _escape(rewritten)
        return line + b"\n"

    def _json(self, exchange: Exchange) -> bytes:
        now = self._clock.seconds()
        req = exchange.request
        upstream, total = self._times(exchange, now)
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "client": exchange.client_address,
            "method": req.method.decode("latin-1"),
            "target": req.target.decode("latin-1"),
            "protocol": "HTTP/%d.%d" % req.version,
            "host": req.host.decode("latin-1"),
            "status": exchange.status,
            "bytes": exchange.body_bytes,
            "referer": _header(exchange, b"referer").decode("latin-1"),
            "user_agent": _header(exchange, b"user-agent").decode("latin-1"),
            "upstream": exchange.backend.name if exchange.backend is not None else None,
            "upstream_time": round(upstream, 6) if upstream is not None else None,
            "total_time": round(total, 6),
            "reason": exchange.reason or None,
        }
        rewritten = _rewritten(exchange)
        if rewritten is not None:
            record["rewritten"] = rewritten.decode("latin-1")
        return json.dumps(record, separators=(",", ":")).encode("utf-8") + b"\n"


def rotate(path: str, keep: int) -> None:
    """
    Move C{path} to C{path.1}, C{path.1} to C{path.2} and so on, dropping
    C{path.KEEP}; the writers then reopen C{path}.

    @raises OSError: when a file cannot be moved.
    """
    for i in range(keep - 1, 0, -1):
        if os.path.exists(f"{path}.{i}"):
            os.replace(f"{path}.{i}", f"{path}.{i + 1}")
    if os.path.exists(path):
        os.replace(path, f"{path}.1")
