# -*- test-case-name: tests.test_proxy -*-
"""
The pipeline between the two codecs: route, pick, rewrite, send.

For each request the downstream protocol parsed, the L{Forwarder} finds the
route, asks the route's upstream group's balancer (for a split route, the
group its split chooses) for a backend, builds the head the backend will
receive, and submits the exchange to that backend's connection pool.  It
answers 404 itself when no route matches and 503 when the balancer has no
backend to offer.

It sits above what it joins: the codecs and the proxy's own answers
(L{twistproxy.http}), the filters, the cache, the router and the upstream
groups; none of those imports it.

It is built from configuration value objects by L{twistproxy.build}, or
from plain constructor calls when embedding (see
L{twistproxy.build.make_group} and L{RouteRuntime}).
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

from twistproxy.config import ConfigError, Route
from twistproxy.http import headers as H
from twistproxy.http.exchange import Exchange
from twistproxy.filters.chain import Answer, build_chain, client_ip, respond
from twistproxy.mirror import Mirror
from twistproxy.routing import DirectAnswer, PathRewriter, Router, Splitter
from twistproxy.upstream.backend import Backend
from twistproxy.upstream.group import UpstreamGroupRuntime

# Failures after which a request can be sent to another backend whatever
# its method: it never reached the first one.
_NOT_SENT = frozenset(["upstream_connect_failed", "upstream_connect_timeout"])
# Failures that may come after the request was written, so resent only
# where the request may reach a backend twice (idempotent, body replayable).
_MAYBE_SENT = frozenset(["upstream_closed", "upstream_tls_failed"])
# Proxy-side overload: the backend is not at fault.
_NOT_BACKEND_FAULT = frozenset(["upstream_queue_full", "upstream_queue_timeout"])


def _retries(exchange: Exchange) -> int:
    # How many counted retries an exchange may have: its route's, else its group's.
    retries = exchange.route.retries
    return exchange.group.config.retries if retries is None else retries


def _verdict(reason: str) -> Optional[bool]:
    """
    What an exchange that ended for C{reason} says of its backend: C{True}
    served, C{False} failed, C{None} nothing (the client or the proxy
    ended it).
    """
    if not reason:
        return True
    if reason.startswith("upstream_") and reason not in _NOT_BACKEND_FAULT:
        return False
    return None


class RouteRuntime:
    """
    A route prepared for the hot path.
    """

    __slots__ = ("route", "group", "split", "mirror", "request_rules", "response_rules",
                 "preserve_host", "filters", "cache", "answer", "rewrite", "retries",
                 "retry_budget", "response_timeout")

    def __init__(self, route: Route, group: Optional[UpstreamGroupRuntime],
                 path: str = "route", reactor=None, cache=None,
                 split: Optional[Splitter[UpstreamGroupRuntime]] = None,
                 mirror: Optional[Mirror] = None):
        """
        @param split: Chooses the group of each request of a route with a
            C{split} (then C{group} is C{None}).
        @param mirror: Copies the requests of a route with a C{mirror}.
        """
        self.route = route
        # None for a route that answers itself (a redirect, a fixed
        # response) or splits its requests.
        self.group = group
        self.split = split
        self.mirror = mirror
        self.answer = DirectAnswer(route) if route.answers_itself else None
        self.rewrite = PathRewriter(route) if route.rewrites_target else None
        # The route's own retries, or None for its group's.
        self.retries = route.retries
        # The route's own retry budget share, or None for its group's.
        self.retry_budget = route.retry_budget
        # The route's own upstream_response timeout, or None.
        self.response_timeout = route.response_timeout
        self.request_rules = _compile(route.request_headers, f"{path}.request_headers")
        self.response_rules = _compile(route.response_headers, f"{path}.response_headers")
        self.preserve_host = route.preserve_host
        # None (nothing to run) unless the route has filters.
        self.filters = build_chain(reactor, route.filters, f"{path}.filters")
        # The route's share of the shared cache (a CachedRoute), or None.
        self.cache = None
        if cache is not None and route.cache is not None and route.cache.enabled:
            self.cache = cache.for_route(route.cache, route.request_headers)


def _compile(rules, path: str) -> H.CompiledRules:
    try:
        return H.CompiledRules(rules)
    except ValueError as e:
        raise ConfigError(path, str(e)) from None


class Forwarder:
    """
    Places each exchange on a backend connection, and decides what a
    failure leads to: another backend (a retry) or an error answer.
    """

    def __init__(
        self,
        routes: Sequence[Route],
        groups: Mapping[str, UpstreamGroupRuntime],
        via: str = "twistproxy",
        reactor=None,
        cache=None,
        rng=None,
    ):
        """
        @param reactor: The clock and network of the routes' filters.
        @param cache: The shared L{twistproxy.cache.runtime.HTTPCache}
            that routes with a C{cache} table use, or C{None}.
        @param rng: The C{random.Random} of split routes' choices for
            requests without a stickiness key (C{None}: a fresh one).
        """
        self._routes = [
            RouteRuntime(
                r, groups.get(r.upstream), f"routes[{i}]", reactor, cache,
                Splitter([(groups[s.upstream], s.weight) for s in r.split], r.sticky,
                         client_ip, rng) if r.split else None,
                Mirror(r.mirror, groups[r.mirror.upstream], self._head, rng)
                if r.mirror is not None else None)
            for i, r in enumerate(routes)
        ]
        # It finds each request's prepared route itself.
        self._router = Router(routes, client_ip, self._routes)
        self.groups = groups
        self._via = via.encode("ascii")

    @property
    def mirrors(self) -> Mapping[str, Mirror]:
        """
        The mirrors of the routes that have one, by route name.
        """
        return {rt.route.name: rt.mirror for rt in self._routes
                if rt.mirror is not None}

    def forward(self, exchange: Exchange, filtered: bool = False) -> None:
        """
        Take a new request: its listener's filters (the client codec's
        C{filters}); then find its route (on the normalised path), run the
        route's filters, then L{consult_cache}.  A C{TRACE} is answered 405
        unless its route allows it: it would echo the request, cookies and
        credentials included, to whatever script sent it.  (Without
        C{Allow}: which methods the backend takes is the backend's to
        say.)

        @param filtered: Whether the listener's filters have let it through
            already (their way back, L{_filtered}).  One method for both
            steps: a request of a listener without filters is routed
            without another call.
        """
        if not filtered:
            filters = exchange.downstream.filters
            if filters is not None:
                filters.run(exchange, self._filtered)
                return
        req = exchange.request
        method = req.method
        rt = self._router.match_request(req.path, method, exchange)
        if rt is None:
            exchange.sink.upstream_failed(exchange, 404, "no_route")
            return
        exchange.route = rt
        if method == b"TRACE" and not rt.route.allow_trace:
            exchange.sink.upstream_failed(exchange, 405, "trace_refused")
            return
        if rt.filters is not None:
            rt.filters.run(exchange, self.consult_cache)
        elif rt.cache is not None:
            self.consult_cache(exchange)
        else:
            # A route with neither filters nor cache goes straight on.
            self.proceed(exchange)

    def _filtered(self, exchange: Exchange) -> None:
        # The listener's filters let exchange through: on to routing.
        self.forward(exchange, True)

    def consult_cache(self, exchange: Exchange) -> None:
        """
        After the filters let C{exchange} through: the route's cache answers it
        or lets it L{proceed} (a miss, a revalidation).
        """
        cache = exchange.route.cache
        if cache is not None:
            cache.handle(exchange, self.proceed)
            return
        self.proceed(exchange)

    def proceed(self, exchange: Exchange) -> None:
        """
        Send C{exchange} to a backend of its route's upstream group (or answer it
        with the route's redirect or fixed response): the step after
        routing (and after whatever stands in between, such as filters or a
        cache, has let the request through).
        """
        rt = exchange.route
        answer = rt.answer
        if answer is not None:
            made = answer.make(exchange.host, exchange.request.path.decode("ascii"), exchange.path)
            respond(exchange, Answer(*made, reason=answer.reason))
            return
        group = rt.group if rt.split is None else rt.split.choose(exchange)
        config = group.config
        limit = config.max_requests
        if limit and group.in_flight >= limit:
            # Circuit breaking: no more than max_requests in flight to the group.
            exchange.sink.upstream_failed(exchange, 503, "group_overloaded")
            return
        sticky = config.sticky
        backend = None
        if sticky is not None:
            backend = exchange.pinned = group.sticky_backend(exchange.cookie(sticky.cookie))
        if backend is None:
            backend = group.pick(exchange)
            if backend is None:
                exchange.sink.upstream_failed(exchange, 503, "no_backend")
                return
        exchange.group = group
        exchange.forwarder = self
        group.in_flight += 1
        mirror = rt.mirror
        copy = mirror is not None and mirror.chosen(exchange)
        self._send(exchange, backend)
        if copy:
            mirror.copy(exchange)

    def _send(self, exchange: Exchange, backend: Backend) -> None:
        exchange.backend = backend
        backend.in_flight += 1
        backend.requests += 1
        group = exchange.group
        if group.config.sticky is not None:
            # Pin the client to whichever backend serves it, also after a
            # retry moved it; no cookie when it already names that one.
            exchange.response_fields = (
                None if backend is exchange.pinned
                else [(b"Set-Cookie", H.sticky_cookie(group.config.sticky,
                                                      group.sticky_token(backend)))]
            )
        exchange.head = self._head(exchange, group, backend)
        group.pools[backend].submit(exchange)

    def _head(self, exchange: Exchange, group: UpstreamGroupRuntime, backend: Backend) -> bytes:
        # The head that backend, of group, gets for the exchange.
        req = exchange.request
        rt = exchange.route
        downstream = exchange.downstream
        if rt.rewrite is not None:
            exchange.upstream_target = rt.rewrite(req.path, req.target)
        # By position, in request_head's order: on CPython 3.11 a call
        # with eight keywords costs some 900 instructions more.
        return H.request_head(
            req,
            req.host if rt.preserve_host and req.host else group.pools[backend].host,
            exchange.client_address,
            downstream.trusted,
            downstream.proto,
            self._via,
            rt.request_rules if exchange.request_rules is None else exchange.request_rules,
            downstream.identity,
            exchange.upstream_target,
        )

    def failed(self, exchange: Exchange, status: int, reason: str) -> None:
        """
        A backend failed C{exchange}: send it to another backend when that is
        safe and allowed, else answer the client.
        """
        if reason == "upstream_stale":
            if not exchange.retried and exchange.retryable_elsewhere and exchange.backend.available:
                # The stale pooled connection race is not the backend's
                # fault: the same backend, once, on a fresh connection.
                # (A backend known bad meanwhile is left at once, below.)
                exchange.retried = True
                exchange.upstream = None
                exchange.pool.submit(exchange, fresh=True)
                return
            reason = "upstream_closed"
        group = exchange.group
        if exchange.status == 0 and _retries(exchange) and self._safe_to_resend(exchange, reason):
            counted = group.counted_retry(reason, exchange.backend)
            if not counted or self._may_count(exchange):
                other = self._another(exchange)
                if other is not None:
                    self._done_with_backend(exchange, ok=_verdict(reason))
                    if counted:
                        if not exchange.counted_retries:
                            group.retries_in_flight += 1
                        exchange.counted_retries += 1
                    exchange.attempts += 1
                    exchange.retried = False
                    self._send(exchange, other)
                    return
        exchange.sink.upstream_failed(exchange, status, reason)

    def _safe_to_resend(self, exchange: Exchange, reason: str) -> bool:
        if reason in _NOT_SENT:
            return not exchange.body_started
        return reason in _MAYBE_SENT and exchange.retryable_elsewhere

    def _may_count(self, exchange: Exchange) -> bool:
        """
        Whether C{exchange} may have one more counted retry: fewer than the
        route's C{retries} so far, and a place in the retry budget (kept
        from its previous counted retry, or a free one, by the route's
        C{retry_budget} or else its group's).
        """
        group = exchange.group
        if exchange.counted_retries >= _retries(exchange):
            return False
        return exchange.counted_retries > 0 or group.may_retry(exchange.route.retry_budget)

    def _another(self, exchange: Exchange) -> Optional[Backend]:
        tried = exchange.tried
        if tried is None:
            tried = exchange.tried = []
        tried.append(exchange.backend)
        return exchange.group.pick_other(exchange, tried)

    def _done_with_backend(self, exchange: Exchange, ok: Optional[bool]) -> None:
        """
        C{exchange} is done with its backend: C{ok} says whether the backend served
        it (C{None}: nothing to say about the backend, e.g. the client gave
        up, or the proxy was overloaded).
        """
        backend = exchange.backend
        backend.in_flight -= 1
        group = exchange.group
        if ok is not None:
            if not ok:
                backend.failures += 1
            if group.outlier is not None:
                # Without outlier detection there is no one to tell.
                group.report(backend, ok, exchange.status)
        if backend.draining:
            group.check_drained(backend)

    def cancel(self, exchange: Exchange) -> None:
        """
        Abandon whatever upstream work C{exchange} has in progress.
        """
        if exchange.pool is not None:
            exchange.pool.cancel(exchange)

    def release(self, exchange: Exchange) -> None:
        """
        C{exchange} is over.
        """
        if exchange.on_end is not None:
            on_end, exchange.on_end = exchange.on_end, None
            on_end(exchange)
        if exchange.upstream is not None:
            self.cancel(exchange)
        group = exchange.group
        if group is None:
            return
        group.in_flight -= 1
        if exchange.counted_retries:
            group.retries_in_flight -= 1
        if exchange.backend is not None:
            reason = exchange.reason
            # Served (no reason) is the common case: no call to say so.
            self._done_with_backend(exchange, _verdict(reason) if reason else True)

    def close(self) -> None:
        for group in self.groups.values():
            group.stop()
        for rt in self._routes:
            if rt.filters is not None:
                rt.filters.close()
