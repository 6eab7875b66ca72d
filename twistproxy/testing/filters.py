# -*- test-case-name: tests.test_filters_contract -*-
"""
Kits for testing filters without a proxy: L{make_exchange}, L{run_filters}
and L{send_response} run filters over a request and a response,
L{RecordingSink} records what reaches the client, and
L{FilterContractMixin} holds the tests every filter must pass (see
docs/filters.rst).
"""

from __future__ import annotations

from typing import Any, Iterable, List, Optional, Sequence, Tuple

from zope.interface import implementer
from zope.interface.verify import verifyObject

from twistproxy.interfaces import IResponseSink


@implementer(IResponseSink)
class RecordingSink:
    """
    The client side of an exchange made by L{make_exchange}: an
    L{IResponseSink} that records what reaches it, for testing filters.

    @ivar interim: The interim (1xx) heads received, as C{(status, fields)}.
    @ivar status: The status of the response head received, or C{None}.
    @ivar fields: Its fields, as (name, value) byte pairs.
    @ivar pieces: The body pieces received, in order.
    @ivar ended: Whether the response ended.
    @ivar failure: C{(status, reason)} when it was told the request
        failed (C{upstream_failed}), else C{None}.
    @ivar trusted: Whether the fake client is a trusted proxy.
    """

    def __init__(self, trusted: bool = False) -> None:
        self.trusted = trusted
        self.filters = None
        self.proto = b"http"
        self.identity = None
        self.status: Optional[int] = None
        self.has_body = False
        self.fields: List[Tuple[bytes, bytes]] = []
        self.pieces: List[bytes] = []
        self.ended = False
        self.failure: Optional[Tuple[int, str]] = None
        self.interim: List[Tuple[int, List[Tuple[bytes, bytes]]]] = []

    @property
    def body(self) -> bytes:
        return b"".join(self.pieces)

    def field(self, name: bytes) -> Optional[bytes]:
        """
        The value of the first response field named C{name} (any case).
        """
        name = name.lower()
        for key, value in self.fields:
            if key.lower() == name:
                return value
        return None

    def informational(self, exchange, resp) -> None:
        self.interim.append((resp.status, list(resp.headers)))

    def response_head(self, exchange, resp, has_body: bool, extra=None) -> None:
        exchange.status = self.status = resp.status
        self.has_body = has_body
        self.fields = list(resp.headers) + list(extra or ())
        if resp.content_length is not None:
            self.fields.append((b"Content-Length", b"%d" % resp.content_length))

    def response_body(self, exchange, data: bytes) -> None:
        self.pieces.append(data)

    def flush(self) -> None:
        pass

    def response_end(self, exchange) -> None:
        self.ended = True

    def upstream_failed(self, exchange, status: int, reason: str) -> None:
        exchange.status = status
        self.failure = (status, reason)


def make_exchange(
    method: str = "GET",
    target: str = "/",
    headers: Iterable[Tuple[str, str]] = (),
    client_address: str = "192.0.2.7",
    host: str = "example.com",
    trusted: bool = False,
):
    """
    A request as filters see it (an L{Exchange
    <twistproxy.http.exchange.Exchange>}), whose client is a
    L{RecordingSink} (C{exchange.downstream}).

    @param headers: (name, value) string pairs, in order.
    @param trusted: Whether the client is a trusted proxy.
    """
    from twistproxy.http.exchange import Exchange
    from twistproxy.http.parser import RequestHead

    fields = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]
    if not any(n.lower() == b"host" for n, _ in fields):
        fields.insert(0, (b"Host", host.encode("ascii")))
    req = RequestHead.made(method.encode("ascii"), target.encode("ascii"),
                           host.encode("ascii"), fields, keep_alive=True)
    return Exchange(req, client_address, RecordingSink(trusted), 0.0)


def run_filters(filters: Sequence[Any], exchange) -> bool:
    """
    Run C{filters} over C{exchange} as a listener or route would.

    @param filters: Filter objects (what factories' C{fromConfig} return).
    @return: Whether they let C{exchange} through.  When not, a filter answered
        (see C{exchange.downstream}), or one is still deciding (a L{Deferred} not
        fired yet): call L{run_filters} again when it has.
    """
    from twistproxy.filters.chain import FilterChain

    passed: List[Any] = []
    FilterChain(filters).run(exchange, passed.append)
    return bool(passed)


def send_response(exchange, status: int = 200, headers: Iterable[Tuple[str, str]] = (),
                  pieces: Iterable[bytes] = (), length: Optional[int] = None) -> None:
    """
    Answer C{exchange} as its backend would, through C{exchange.sink}, so that the
    response filters L{run_filters} installed see it; the result arrives in
    C{exchange.downstream} (a L{RecordingSink}).

    @param pieces: The body, in the pieces the backend sends.
    @param length: The response's C{Content-Length}, or C{None} for a
        chunked response.
    """
    from twistproxy.http.answers import own_head

    resp = own_head(status, b"Whatever",
                    [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers], length)
    resp.chunked = length is None
    pieces = list(pieces)
    has_body = exchange.request.method != b"HEAD" and status not in (204, 304)
    sink = exchange.sink
    sink.response_head(exchange, resp, has_body)
    for piece in pieces:
        sink.response_body(exchange, piece)
        sink.flush()
    sink.response_end(exchange)


class FilterContractMixin:
    """
    Tests every filter must pass, whatever its roles: a mixin for
    C{twisted.trial.unittest.SynchronousTestCase}.  Define C{makeFilter}::

        class MyFilterContractTests(FilterContractMixin, SynchronousTestCase):
            def makeFilter(self):
                return myFactory.fromConfig(Clock(), {"option": 1}, "test")
    """

    def makeFilter(self) -> Any:
        """
        Build the filter under test (with a fake clock as its reactor).
        """
        raise NotImplementedError(f"{type(self).__name__} must define makeFilter")

    def _roles(self, f) -> list:
        from twistproxy.interfaces import IConnectionFilter, IRequestFilter, IResponseFilter

        return [r for r in (IRequestFilter, IResponseFilter, IConnectionFilter)
                if r.providedBy(f)]

    def test_provides_its_roles(self) -> None:
        """
        The filter has at least one role and fully provides each, and each
        optional hook it declares (L{IRefusingConnectionFilter},
        L{IClosable}).
        """
        from twistproxy.interfaces import IClosable, IRefusingConnectionFilter

        f = self.makeFilter()
        roles = self._roles(f)
        self.assertTrue(roles, f"{f!r} provides no filter interface")  # type: ignore[attr-defined]
        for role in roles + [IRefusingConnectionFilter, IClosable]:
            if role.providedBy(f):
                verifyObject(role, f)

    def test_verdict(self) -> None:
        """
        A plain request gets a verdict of the allowed kinds: C{None}, an
        L{Answer <twistproxy.filters.Answer>}, or a Deferred.
        """
        from twisted.internet.defer import Deferred

        from twistproxy.filters import Answer
        from twistproxy.interfaces import IRequestFilter

        f = self.makeFilter()
        if IRequestFilter.providedBy(f):
            verdict = f.filter_request(make_exchange())
            self.assertIsInstance(  # type: ignore[attr-defined]
                verdict, (type(None), Answer, Deferred))

    def test_connection_verdict(self) -> None:
        """
        A connection filter's verdict on a new connection is C{True},
        C{False} or a Deferred, and an accepted connection can end.
        """
        from twisted.internet.defer import Deferred

        from twistproxy.interfaces import IConnectionFilter

        f = self.makeFilter()
        if IConnectionFilter.providedBy(f):
            verdict = f.connection_made("192.0.2.1")
            if not isinstance(verdict, Deferred):
                self.assertIn(verdict, (True, False))  # type: ignore[attr-defined]
            if verdict is True:
                f.connection_lost("192.0.2.1")

    def test_response_completes(self) -> None:
        """
        When the filter lets a request through, a backend's response
        reaches the client whole: its status, and its end.
        """
        exchange = make_exchange(headers=[("Accept-Encoding", "gzip")])
        if not run_filters([self.makeFilter()], exchange):
            return
        send_response(exchange, 200, [("Content-Type", "text/plain")], [b"hello", b" world"],
                      length=11)
        sink = exchange.downstream
        self.assertEqual((sink.status, sink.ended), (200, True))  # type: ignore[attr-defined]
        self.assertTrue(sink.body)  # type: ignore[attr-defined]
