# -*- test-case-name: tests.test_filters_compress -*-
"""
Compressing responses: gzip, and brotli when the C{brotli} package or
its CFFI twin C{brotlicffi} (the one PyPy gets) is installed (C{pip
install 'twistproxy[brotli]'} picks the right one).

A response is compressed, as it streams (piece by piece, never gathered
whole), when the client accepts one of the configured encodings
(C{Accept-Encoding}, with q-values), the backend did not encode it already
(no C{Content-Encoding}), neither it nor the client forbade it
(C{Cache-Control: no-transform}), its type is compressible (C{types}: C{text/*},
JSON, JavaScript, XML, SVG by default), it has a body (not 204, 304), it
is a 200, 201 or 203 (not a partial 206, whose ranges name bytes of the
uncompressed representation), and it is not known to be shorter than
C{min_size}.  Its C{Content-Length} and C{Accept-Ranges} are then dropped
(the response is chunked, or delimited by closing for HTTP/1.0 clients;
ranges of the compressed body cannot be served), a strong C{ETag} becomes
weak (RFC 9110 8.8.3: the compressed representation is another one), and
C{Content-Encoding} is added.  The answer to a C{HEAD} gets the fields
the C{GET} would get, and a 304 the weak C{ETag} of the compressed
response it confirms, so that a client's cache can match them with what it
stored.  Every response of a compressible type gets C{Vary:
Accept-Encoding}, compressed or not, so that caches keep the encodings
apart.

Whatever a backend read brings is compressed and flushed when the
proxy sends (once per read), so that a stream of events still arrives as
it is produced.
"""

from __future__ import annotations

import importlib
import platform
import zlib
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Tuple

from twisted.plugin import IPlugin
from zope.interface import implementer

from twistproxy.components import factory_repr
from twistproxy.config import ConfigError
from twistproxy.http.headers import field_value, with_fields
from twistproxy.http.sinks import SinkWrapper
from twistproxy.config.schema import setting
from twistproxy.filters.options import count, read_options, texts
from twistproxy.interfaces import IFilterFactory, IResponseFilter

DEFAULT_TYPES = ("text/*", "application/json", "application/javascript",
                 "application/xml", "application/xhtml+xml", "application/rss+xml",
                 "application/atom+xml", "image/svg+xml", "application/wasm")
_COMPRESSIBLE_STATUS = frozenset([200, 201, 203])
_SKIP = frozenset([b"content-length", b"accept-ranges", b"etag", b"vary"])
# The two bindings of the brotli library share their API.  Each is the
# faster where it is the native kind: the C extension on CPython, the CFFI
# one on PyPy (whose C-extension emulation is slow).
_BROTLI_MODULES = (("brotlicffi", "brotli") if platform.python_implementation() == "PyPy"
                   else ("brotli", "brotlicffi"))


class _Gzip:
    def __init__(self, level: int):
        self._z = zlib.compressobj(level, zlib.DEFLATED, 31)

    def process(self, data: bytes) -> bytes:
        return self._z.compress(data)

    def flush(self) -> bytes:
        return self._z.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._z.flush(zlib.Z_FINISH)


class _Brotli:
    def __init__(self, quality: int):
        self._c = _brotli().Compressor(quality=quality)

    def process(self, data: bytes) -> bytes:
        return self._c.process(data)

    def flush(self) -> bytes:
        return self._c.flush()

    def finish(self) -> bytes:
        return self._c.finish()


def accepted(header: Optional[str], offered: Tuple[str, ...]) -> Optional[str]:
    """
    The first of C{offered} that the C{Accept-Encoding} value C{header}
    accepts (q above 0, or by C{*}), or C{None}.
    """
    if not header:
        return None
    q = {}
    for item in header.split(","):
        coding, _, params = item.strip().partition(";")
        weight = 1.0
        params = params.strip()
        if params[:2].lower() == "q=":
            try:
                weight = float(params[2:])
            except ValueError:
                weight = 0.0
        q[coding.strip().lower()] = weight
    for coding in offered:
        if q.get(coding, q.get("*", 0.0)) > 0:
            return coding
    return None


class _Compressing(SinkWrapper):
    __slots__ = ("_exchange", "_owner", "_coding", "_c")

    def __init__(self, sink, exchange, owner: "CompressFilter", coding: Optional[str]):
        super().__init__(sink)
        self._exchange = exchange
        self._owner = owner
        self._coding = coding
        self._c: Any = None

    def response_head(self, exchange, resp, has_body: bool, extra=None) -> None:
        owner = self._owner
        ctype = encoding = cache = None
        for name, value in resp.headers:
            lname = name.lower()
            if lname == b"content-type":
                ctype = value
            elif lname == b"content-encoding":
                encoding = value
            elif lname == b"cache-control":
                cache = value if cache is None else cache + b"," + value
        if ctype is None or not owner.compressible(ctype):
            self.sink.response_head(exchange, resp, has_body, extra)
            return
        allowed = (self._coding is not None and encoding is None
                   and (cache is None or b"no-transform" not in cache.lower()))
        head = exchange.request.method == b"HEAD"
        compress = (
            allowed and (has_body or head) and resp.status in _COMPRESSIBLE_STATUS
            and (resp.content_length is None or resp.content_length >= owner.min_size)
        )
        weaken = compress or (allowed and resp.status == 304)
        fields = []
        vary = []
        for name, value in resp.headers:
            lname = name.lower()
            if lname not in _SKIP:
                fields.append((name, value))
            elif lname == b"vary":
                vary.append(value)
            elif lname == b"etag":
                fields.append((name, b"W/" + value if weaken and value[:2] != b"W/"
                               else value))
            elif not compress:
                fields.append((name, value))
        if not any(b"accept-encoding" in v.lower() or v.strip() == b"*" for v in vary):
            vary.append(b"Accept-Encoding")
        fields.append((b"Vary", b", ".join(vary)))
        edited = with_fields(resp, fields)
        if compress:
            fields.append((b"Content-Encoding", self._coding.encode("ascii")))
            edited.content_length = None
            edited.chunked = True
            if not head:
                self._c = owner.compressor(self._coding)
        self.sink.response_head(exchange, edited, has_body, extra)

    def response_body(self, exchange, data: bytes) -> None:
        c = self._c
        if c is None:
            self.sink.response_body(exchange, data)
            return
        out = c.process(data)
        if out:
            self.sink.response_body(exchange, out)

    def flush(self) -> None:
        c = self._c
        if c is not None:
            out = c.flush()
            if out:
                self.sink.response_body(self._exchange, out)
        self.sink.flush()

    def response_end(self, exchange) -> None:
        c = self._c
        if c is not None:
            self._c = None
            out = c.finish()
            if out:
                self.sink.response_body(exchange, out)
        self.sink.response_end(exchange)


@implementer(IResponseFilter)
class CompressFilter:
    """
    Compresses the responses that gain from it, for the clients that
    accept it.

    @ivar min_size: Responses known to be shorter are left alone.
    """

    def __init__(self, encodings: Tuple[str, ...], types: List[str], min_size: int,
                 level: int, quality: int):
        self._encodings = encodings
        self._exact = frozenset(t.encode("ascii") for t in types if not t.endswith("/*"))
        self._prefixes = tuple(t[:-1].encode("ascii") for t in types if t.endswith("/*"))
        self.min_size = min_size
        self._level = level
        self._quality = quality

    def compressible(self, content_type: bytes) -> bool:
        media = content_type.split(b";", 1)[0].strip().lower()
        return media in self._exact or media.startswith(self._prefixes)

    def compressor(self, coding: str):
        return _Gzip(self._level) if coding == "gzip" else _Brotli(self._quality)

    def wrap_response(self, exchange, sink):
        coding = accepted(exchange.header("Accept-Encoding"), self._encodings)
        asked = field_value(exchange.request.headers, b"cache-control")
        if coding is not None and asked is not None and b"no-transform" in asked.lower():
            # The client asks intermediaries not to transform the content
            # (RFC 9111 5.2.1.6).
            coding = None
        return _Compressing(sink, exchange, self, coding)


def _brotli() -> Optional[Any]:
    """
    The installed brotli binding (see L{_BROTLI_MODULES}), or C{None}.
    """
    for name in _BROTLI_MODULES:
        try:
            return importlib.import_module(name)
        except ImportError:
            pass
    return None


def _default_encodings() -> Tuple[str, ...]:
    return ("br", "gzip") if _brotli() else ("gzip",)


def _encodings(value: object, path: str) -> Tuple[str, ...]:
    # An empty list means the default, as leaving the option out does.
    encodings = texts()(value, path) or list(_default_encodings())
    for i, coding in enumerate(encodings):
        if coding not in ("br", "gzip"):
            raise ConfigError(f"{path}[{i}]", f"must be 'br' or 'gzip', not {coding!r}")
        if coding == "br" and not _brotli():
            raise ConfigError(f"{path}[{i}]", "brotli needs the brotli package: "
                                              "pip install 'twistproxy[brotli]'")
    return tuple(encodings)


def _media_types(value: object, path: str) -> List[str]:
    types = texts()(value, path) or list(DEFAULT_TYPES)
    for i, media in enumerate(types):
        kind, slash, sub = media.partition("/")
        if not slash or not kind or not sub or not media.isascii() or (
                "*" in sub and sub != "*") or "*" in kind:
            raise ConfigError(f"{path}[{i}]", f"must be a media type such as 'text/html' or "
                                              f"'text/*', not {media!r}")
    return types


@dataclass(frozen=True)
class CompressOptions:
    """
    The options of the C{compress} filter.
    """

    encodings: Tuple[str, ...] = setting(check=_encodings, factory=_default_encodings)
    types: List[str] = setting(check=_media_types, factory=lambda: list(DEFAULT_TYPES))
    min_size: int = setting(256, check=count(0))
    gzip_level: int = setting(6, check=count(1, 9))
    brotli_quality: int = setting(4, check=count(0, 11))


@implementer(IPlugin, IFilterFactory)
class CompressFactory:
    name = "compress"
    help = "gzip and brotli compression of compressible responses, streamed."

    def fromConfig(self, reactor, options: Mapping[str, Any], path: str) -> CompressFilter:
        settings = read_options(CompressOptions, options, path, self.name)
        return CompressFilter(settings.encodings, [t.lower() for t in settings.types],
                              settings.min_size, settings.gzip_level, settings.brotli_quality)

    __repr__ = factory_repr
