# -*- test-case-name: tests.test_filters_chain -*-
"""
Running a listener's or a route's filters over each request.

A L{FilterChain} holds the filters of one list, in the declared order.  For
each request it asks every request filter in turn; the first that answers
(an L{Answer}) ends the request's trip, and the answer goes back through
the response filters installed so far.  A filter that is also a response
filter wraps the exchange's sink right after its own check let the request
through.  When every filter let it through, the chain calls what comes
next (routing, or sending to a backend).

Synchronous verdicts cost a method call each.  A L{Deferred} verdict
suspends the chain until it fires; if the client went away meanwhile, the
request goes no further.

Connection filters (L{IConnectionFilter}) are asked about each connection
as it is accepted, by the client's address alone.  On an HTTP listener
those that also judge requests (C{access}, C{rate_limit}) are left to do
so per request, where a trusted proxy's C{Forwarded} field can name the
real client; a C{tcp} or C{udp} listener has no requests, so there every
filter must be a connection filter, is asked about each new connection
(or UDP session), and may take its time (L{FilterChain.admit}).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple, Union

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from twistproxy.components import find_factory
from twistproxy.config import ConfigError, Filter
from twistproxy.http import headers as H
from twistproxy.http.answers import Answer, respond
from twistproxy.interfaces import (
    IClosable,
    IConnectionFilter,
    IFilterFactory,
    IRefusingConnectionFilter,
    IRequestFilter,
    IResponseFilter,
)

def client_ip(exchange) -> str:
    """
    The address of C{exchange}'s client, as filters must see it: the peer's,
    unless the peer is a trusted proxy, in which case the address that
    proxy gives in the last C{Forwarded} element (or, failing that, the
    last C{X-Forwarded-For} entry).  Whatever an untrusted client writes in
    those fields is ignored, so it cannot pass for someone else.
    """
    if not exchange.downstream.trusted:
        return exchange.client_address
    forwarded = xff = None
    for name, value in exchange.request.headers:
        lname = name.lower()
        if lname == b"forwarded":
            forwarded = value
        elif lname == b"x-forwarded-for":
            xff = value
    return H.forwarded_client(forwarded, xff) or exchange.client_address


# What the access log says of a connection refused by a connection filter
# that is no IRefusingConnectionFilter.
REFUSED = Answer(403, reason="connection_refused")


class FilterChain:
    """
    The filters of one listener or route, ready to run.

    @ivar filters: The filter objects, in the declared order.
    @ivar connection_filters: Those asked about each connection: the
        L{IConnectionFilter}s, but on an HTTP listener only those that do
        not judge requests too.
    """

    log = Logger()

    def __init__(self, filters: Sequence[Any], streams: bool = False):
        """
        @param streams: Whether the chain is a C{tcp} or C{udp} listener's,
            whose connections carry no requests to judge.
        """
        self.filters = tuple(filters)
        self._steps: List[Tuple[Optional[Callable], Optional[Callable]]] = [
            (
                f.filter_request if IRequestFilter.providedBy(f) else None,
                f.wrap_response if IResponseFilter.providedBy(f) else None,
            )
            for f in self.filters
            if IRequestFilter.providedBy(f) or IResponseFilter.providedBy(f)
        ]
        self.connection_filters = tuple(
            f for f in self.filters if IConnectionFilter.providedBy(f)
            and (streams or not IRequestFilter.providedBy(f)))

    def for_relays(self) -> Optional["FilterChain"]:
        """
        The chain that judges the connections an HTTP listener relays
        without reading them (TLS passthrough): all its connection filters,
        also those that judge requests elsewhere (a relayed connection
        carries none they could see), or C{None} when it has none.  The
        filter objects are shared, so that a client's connections and
        requests on the listener count together.
        """
        judges = [f for f in self.filters if IConnectionFilter.providedBy(f)]
        return FilterChain(judges, streams=True) if judges else None

    def run(self, exchange, then: Callable[[Any], None]) -> None:
        """
        Run the filters over C{exchange}; call C{then(exchange)} if all let it through.
        """
        self._from(exchange, then, 0)

    def _from(self, exchange, then, i: int, wrap=None) -> None:
        """
        Install C{wrap} (the response part of the filter that just let
        C{exchange} through), then run the filters from the C{i}th on.
        """
        steps = self._steps
        while True:
            if wrap is not None:
                sink = wrap(exchange, exchange.sink)
                if sink is not None:
                    exchange.sink = sink
            if i == len(steps):
                break
            check, wrap = steps[i]
            i += 1
            if check is not None:
                try:
                    verdict = check(exchange)
                except Exception:
                    self._failed(Failure(), exchange)
                    return
                if verdict is not None:
                    if isinstance(verdict, Deferred):
                        verdict.addCallback(self._resume, exchange, then, i, wrap)
                        verdict.addErrback(self._failed, exchange)
                        return
                    respond(exchange, verdict)
                    return
        then(exchange)

    def _resume(self, verdict, exchange, then, i: int, wrap) -> None:
        if exchange.status:
            # The client went away (or was answered) while the filter
            # thought: nothing more to do for it.
            return
        if verdict is not None:
            respond(exchange, verdict)
            return
        self._from(exchange, then, i, wrap)

    def _failed(self, failure: Failure, exchange) -> None:
        self.log.failure("a filter failed on {method} {path}", failure,
                         method=exchange.method, path=exchange.path)
        if not exchange.status:
            respond(exchange, Answer(500, reason="filter_failed"))

    def connection_made(self, address: str) -> bool:
        """
        Ask every connection filter about a new connection from
        C{address}, at once (an HTTP listener's: their verdicts are never
        Deferreds); tell those that accepted it when one refuses.
        """
        return self.admit(address) is None

    def admit(self, address: str) -> Union[None, Answer, Deferred]:
        """
        Ask every connection filter in turn about a new connection from
        C{address}, waiting for those that answer with a Deferred; tell
        those that accepted it when one refuses.  A filter that fails
        refuses (and is logged): a broken filter must not open the door.

        @return: C{None} when all accepted it; else the refusing filter's
            C{refusal} (an L{Answer} whose status and reason the access log
            gives; see L{IRefusingConnectionFilter}), or a Deferred that
            fires with one of these.
        """
        return self._admit_from(address, 0, [])

    def _admit_from(self, address: str, i: int, accepted: list):
        filters = self.connection_filters
        while i < len(filters):
            f = filters[i]
            i += 1
            try:
                verdict = f.connection_made(address)
            except Exception:
                return self._admit_failed(Failure(), address, accepted, f)
            if isinstance(verdict, Deferred):
                verdict.addCallback(self._admit_resume, address, i, accepted, f)
                verdict.addErrback(self._admit_failed, address, accepted, f)
                return verdict
            if not verdict:
                return self._refused(address, accepted, f)
            accepted.append(f)
        return None

    def _admit_resume(self, verdict: bool, address: str, i: int, accepted: list, f):
        if not verdict:
            return self._refused(address, accepted, f)
        accepted.append(f)
        return self._admit_from(address, i, accepted)

    def _admit_failed(self, failure: Failure, address: str, accepted: list, f) -> Answer:
        self.log.failure("a connection filter failed on a connection from {address}",
                         failure, address=address)
        self._refused(address, accepted, f)
        return Answer(500, reason="filter_failed")

    @staticmethod
    def _refused(address: str, accepted: list, f) -> Answer:
        for other in accepted:
            other.connection_lost(address)
        del accepted[:]
        return f.refusal if IRefusingConnectionFilter.providedBy(f) else REFUSED

    def connection_lost(self, address: str) -> None:
        for f in self.connection_filters:
            f.connection_lost(address)

    def close(self) -> None:
        """
        Release what the filters hold (connections, timers): close those
        that provide L{IClosable}.
        """
        for f in self.filters:
            if IClosable.providedBy(f):
                f.close()


def build_chain(reactor, configs: Iterable[Filter], path: str,
                connections: bool = False, stream: str = "") -> Optional[FilterChain]:
    """
    Build the filters of a listener or a route.

    @param configs: The C{filters} of the listener or route.
    @param path: Their configuration path, C{'routes[0].filters'}.
    @param connections: Whether connection filters are allowed (on a
        listener).
    @param stream: The protocol of a listener without requests (C{'tcp'},
        C{'udp'}), where only connection filters are allowed; C{''} for
        HTTP.
    @raises ConfigError: naming the path of the first bad filter.
    @return: The chain, or C{None} when there are no filters (the fast
        path: nothing to run).
    """
    built = []
    for i, config in enumerate(configs):
        item_path = f"{path}[{i}]"
        factory = find_factory(IFilterFactory, config.name, f"{item_path}.name", "filter")
        f = factory.fromConfig(reactor, config.options, item_path)
        roles = [r for r in (IRequestFilter, IResponseFilter, IConnectionFilter)
                 if r.providedBy(f)]
        if not roles:
            raise ConfigError(
                f"{item_path}.name",
                f"{config.name!r} built {f!r}, which is no request, response "
                f"or connection filter")
        if roles == [IConnectionFilter] and not connections:
            raise ConfigError(
                f"{item_path}.name",
                f"{config.name!r} limits connections: only a listener can have it")
        if stream and IConnectionFilter not in roles:
            raise ConfigError(
                item_path,
                f"{config.name!r} (as configured) judges HTTP requests or responses, and "
                f"a {stream} listener has none: only filters that judge a connection by "
                f"the client's address alone (connection filters) can be here")
        built.append(f)
    return FilterChain(built, streams=bool(stream)) if built else None
