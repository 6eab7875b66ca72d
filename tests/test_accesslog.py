"""
Tests for L{twistproxy.accesslog}: the lines written for finished
exchanges, in both formats, on a fake clock.
"""

from __future__ import annotations

import io
import json
import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twistproxy.accesslog import AccessLogWriter, rotate
from twistproxy.http.exchange import Exchange
from twistproxy.http.parser import parse_request_head
from twistproxy.upstream.backend import Backend

# 2024-10-10 13:55:36 UTC.
T0 = 1728568536.0

_KEYS = {
    "time", "client", "method", "target", "protocol", "host", "status", "bytes",
    "referer", "user_agent", "upstream", "upstream_time", "total_time", "reason",
}


class _FlushCountingBytesIO(io.BytesIO):
    """
    A L{io.BytesIO} that counts its flushes.
    """

    flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def _exchange(clock: Clock, *fields: bytes, line: bytes = b"GET /a?b=1 HTTP/1.1",
              client: str = "192.0.2.7", backend: bool = True) -> Exchange:
    """
    An exchange that started now on C{clock}, answered 200 with 5 body
    bytes; with a backend that took from 0.25s to 1.5s after the start.
    """
    head = b"\r\n".join((line, b"Host: example.com") + fields)
    x = Exchange(parse_request_head(head), client, None, clock.seconds())
    x.status = 200
    x.body_bytes = 5
    if backend:
        x.backend = Backend("127.0.0.1:8001", "http", "127.0.0.1", 8001)
        x.upstream_started = clock.seconds() + 0.25
        x.upstream_ended = clock.seconds() + 1.5
    return x


class _LogTestMixin:
    """
    An L{AccessLogWriter} in C{format} writing to memory, on a clock at L{T0}.
    """

    format = "combined"

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(T0)
        self.stream = _FlushCountingBytesIO()
        self.log = AccessLogWriter(self.stream, self.format, self.clock)

    def write(self, x: Exchange, after: float = 2.0) -> bytes:
        """
        Log C{x} C{after} seconds from now and return the one line written.
        """
        self.clock.advance(after)
        start = len(self.stream.getvalue())
        self.log(x)
        line = self.stream.getvalue()[start:]
        self.assertTrue(line.endswith(b"\n"))
        self.assertEqual(line.count(b"\n"), 1, line)
        return line


class CombinedFormatTests(_LogTestMixin, SynchronousTestCase):
    """
    The C{combined} format.
    """

    def test_exact_line(self):
        """
        A finished exchange gives one line: client, time of the end in UTC,
        request line, status, body bytes, Referer, User-Agent, then the
        backend, the backend's time, the total time and the reason.
        """
        x = _exchange(self.clock, b"Referer: http://r.example/", b"User-Agent: curl/8.0")
        self.assertEqual(
            self.write(x),
            b'192.0.2.7 - - [10/Oct/2024:13:55:38 +0000] "GET /a?b=1 HTTP/1.1" 200 5 '
            b'"http://r.example/" "curl/8.0" upstream=127.0.0.1:8001 upstream_time=1.250 '
            b"total_time=2.000 reason=-\n",
        )

    def test_http10(self):
        """
        The request line says the client's version.
        """
        x = _exchange(self.clock, line=b"HEAD / HTTP/1.0")
        self.assertIn(b'"HEAD / HTTP/1.0"', self.write(x))

    def test_http2(self):
        """
        An HTTP/2 request is logged as C{HTTP/2.0} (as nginx writes it), not
        as the HTTP/1.1 its backend was spoken to in.
        """
        x = _exchange(self.clock)
        x.request.version = (2, 0)
        self.assertIn(b'"GET /a?b=1 HTTP/2.0" 200', self.write(x))

    def test_no_backend(self):
        """
        An exchange the proxy answered by itself, with no backend, no
        Referer and no User-Agent, has C{-} for those, and its reason.
        """
        x = _exchange(self.clock, backend=False)
        x.status = 404
        x.body_bytes = 14
        x.reason = "no_route"
        self.assertEqual(
            self.write(x, 0.5),
            b'192.0.2.7 - - [10/Oct/2024:13:55:36 +0000] "GET /a?b=1 HTTP/1.1" 404 14 '
            b'"-" "-" upstream=- upstream_time=- total_time=0.500 reason=no_route\n',
        )

    def test_backend_did_not_answer(self):
        """
        A backend that timed out is named, without a backend time, and the
        reason says what happened.
        """
        x = _exchange(self.clock)
        x.upstream_ended = 0.0
        x.status = 504
        x.reason = "upstream_timeout"
        line = self.write(x)
        self.assertIn(b" 504 ", line)
        self.assertTrue(line.endswith(
            b"upstream=127.0.0.1:8001 upstream_time=- total_time=2.000 reason=upstream_timeout\n"
        ), line)

    def test_no_client_address(self):
        """
        A client without an IP address (a UNIX socket peer) is C{-}.
        """
        x = _exchange(self.clock, client="")
        self.assertTrue(self.write(x).startswith(b"- - - ["))

    def test_escaping_target(self):
        """
        Quotes, backslashes, control bytes, DEL and non-ASCII bytes in the
        target are written as C{\\xHH}, so the quoted field cannot be
        broken out of.
        """
        x = _exchange(self.clock, line=b'GET /a"b\\c HTTP/1.1')
        self.assertIn(b'"GET /a\\x22b\\x5Cc HTTP/1.1"', self.write(x))
        x.request.target = b'/\x00\n\r\x1b\x7f\xe9" x'
        self.assertIn(b'"GET /\\x00\\x0A\\x0D\\x1B\\x7F\\xE9\\x22 x HTTP/1.1"', self.write(x))

    def test_escaping_referer_and_user_agent(self):
        """
        Referer and User-Agent are escaped like the target; tabs and
        obs-text bytes included.
        """
        x = _exchange(
            self.clock,
            b'Referer: http://r/"q"\\',
            b"User-Agent: a\tb caf\xe9 \xff",
        )
        self.assertIn(b'"http://r/\\x22q\\x22\\x5C" "a\\x09b caf\\xE9 \\xFF"', self.write(x))

    def test_first_referer(self):
        """
        The first Referer and User-Agent are logged, found whatever the case
        of their names.
        """
        x = _exchange(self.clock, b"referer: one", b"REFERER: two", b"user-AGENT: ua")
        self.assertIn(b'"one" "ua"', self.write(x))

    def test_time_changes(self):
        """
        The time is the time each line is written: lines in the same second
        share it, the next second and month are written correctly.
        """
        x = _exchange(self.clock)
        self.assertIn(b"[10/Oct/2024:13:55:36 +0000]", self.write(x, 0.0))
        self.assertIn(b"[10/Oct/2024:13:55:36 +0000]", self.write(x, 0.9))
        self.assertIn(b"[10/Oct/2024:13:55:37 +0000]", self.write(x, 0.1))
        # To 2024-12-31 23:59:59 UTC, then to 2025-01-01.
        self.assertIn(b"[31/Dec/2024:23:59:59 +0000]", self.write(x, 1735689599 - self.clock.seconds()))
        self.assertIn(b"[01/Jan/2025:00:00:00 +0000]", self.write(x, 1.0))

    def test_lines_appended(self):
        """
        Each exchange is one more line.
        """
        x = _exchange(self.clock)
        self.write(x)
        self.write(x)
        self.assertEqual(self.stream.getvalue().count(b"\n"), 2)


class JSONFormatTests(_LogTestMixin, SynchronousTestCase):
    """
    The C{json} format.
    """

    format = "json"

    def test_record(self):
        """
        A line is one JSON object with the documented keys and values.
        """
        x = _exchange(self.clock, b"Referer: http://r.example/", b"User-Agent: curl/8.0")
        record = json.loads(self.write(x))
        self.assertEqual(set(record), _KEYS)
        self.assertEqual(record, {
            "time": "2024-10-10T13:55:38Z",
            "client": "192.0.2.7",
            "method": "GET",
            "target": "/a?b=1",
            "protocol": "HTTP/1.1",
            "host": "example.com",
            "status": 200,
            "bytes": 5,
            "referer": "http://r.example/",
            "user_agent": "curl/8.0",
            "upstream": "127.0.0.1:8001",
            "upstream_time": 1.25,
            "total_time": 2.0,
            "reason": None,
        })

    def test_http2(self):
        """
        An HTTP/2 request's protocol is C{HTTP/2.0}.
        """
        x = _exchange(self.clock)
        x.request.version = (2, 0)
        self.assertEqual(json.loads(self.write(x))["protocol"], "HTTP/2.0")

    def test_no_backend(self):
        """
        Without a backend, C{upstream} and C{upstream_time} are null, and
        the reason is given.
        """
        x = _exchange(self.clock, backend=False, line=b"GET / HTTP/1.0")
        x.reason = "no_backend"
        x.status = 503
        record = json.loads(self.write(x, 0.5))
        self.assertEqual(set(record), _KEYS)
        self.assertEqual(
            (record["upstream"], record["upstream_time"], record["reason"], record["status"],
             record["protocol"], record["total_time"], record["referer"], record["user_agent"]),
            (None, None, "no_backend", 503, "HTTP/1.0", 0.5, "-", "-"),
        )

    def test_escaping(self):
        """
        Quotes, backslashes, controls and non-ASCII bytes in request fields
        are escaped by JSON: the line is ASCII, one line, and reads back as
        the bytes taken as Latin-1.
        """
        x = _exchange(self.clock, b'User-Agent: "a"\\ \xe9\t')
        x.request.target = b'/\x00\n"\xff'
        line = self.write(x)
        line.decode("ascii")
        record = json.loads(line)
        self.assertEqual(record["target"], '/\x00\n"\xff')
        self.assertEqual(record["user_agent"], '"a"\\ \xe9')

    def test_compact(self):
        """
        The object is written without spaces between items.
        """
        self.assertIn(b'"status":200,"bytes":5', self.write(_exchange(self.clock)))


class StreamTests(SynchronousTestCase):
    """
    What L{AccessLogWriter} does with its stream.
    """

    def test_flush_and_close(self):
        """
        C{flush} flushes the stream and C{close} closes it; writing alone
        does not flush.
        """
        stream = _FlushCountingBytesIO()
        log = AccessLogWriter(stream, "combined", Clock())
        log(_exchange(Clock()))
        self.assertEqual(stream.flushes, 0)
        log.flush()
        self.assertEqual(stream.flushes, 1)
        self.assertFalse(stream.closed)
        log.close()
        self.assertTrue(stream.closed)

    def test_unknown_format(self):
        """
        A format other than C{combined} and C{json} is refused rather than
        silently taken as one of them.
        """
        e = self.assertRaises(ValueError, AccessLogWriter, io.BytesIO(), "Combined", Clock())
        self.assertIn("'Combined'", str(e))


class RotateTests(SynchronousTestCase):
    """
    L{rotate} shifts the rotated files and drops the oldest.
    """

    def test_shift_and_drop(self):
        """
        C{path} becomes C{path.1}, C{path.1} becomes C{path.2}, and what
        was C{path.KEEP} is gone.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "access.log")
        for name, text in [("", "new"), (".1", "one"), (".2", "two")]:
            with open(path + name, "w") as f:
                f.write(text)
        rotate(path, 2)
        self.assertEqual(sorted(os.listdir(directory)), ["access.log.1", "access.log.2"])
        for name, text in [(".1", "new"), (".2", "one")]:
            with open(path + name) as f:
                self.assertEqual(f.read(), text)

    def test_size(self):
        """
        L{AccessLogWriter.size} is the size of the file, whoever wrote it.
        """
        path = self.mktemp()
        with open(path, "ab") as stream:
            log = AccessLogWriter(stream, "combined", Clock())
            with open(path, "ab") as other:
                other.write(b"x" * 10)
            self.assertEqual(log.size(), 10)
