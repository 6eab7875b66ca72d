# -*- test-case-name: tests.test_cache -*-
"""
The shared cache in the request pipeline: the plumbing around
L{twistproxy.cache.policy}.

After routing, the forwarder hands each request of a route with a cache to
L{CachedRoute.handle}, which looks the request up in the store and then
either:

  - answers it from a stored response (a I{hit}: the body, a 304 for the
    client's own conditional request, a 206 for a range, the head alone
    for C{HEAD}), with C{Age} and C{Cache-Status};
  - sends it on with the stored response's validators added, and a
    L{FetchSink} that turns the origin's 304 into the updated stored
    response (revalidation), or serves the stale response when the origin
    cannot be reached (or answers 5xx) and C{stale-if-error}, the
    response's or the route's, allows;
  - waits for a request already fetching the same URL (I{collapsing}), for
    at most the route's C{lock_timeout}, then looks again;
  - or sends it on with a L{FetchSink} that passes the response to the
    client as it streams and keeps a copy, up to the route's object size
    limit, to store when it ends complete (a I{miss}).

A C{stale-while-revalidate} hit also starts one background request, an
exchange whose downstream is a L{Background} that discards what it gets.

Unsafe requests (every method but C{GET}, C{HEAD}, C{OPTIONS} and
C{TRACE}, unknown ones included) go on with an L{InvalidatingSink}, which
removes the stored responses of the target URI and of same-origin
C{Location} and C{Content-Location} when they succeed.
C{PURGE} removes a URL's stored responses, for the peers the configuration
allows.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import urljoin, urlsplit

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from twistproxy.cache import policy as P
from twistproxy.cache.entry import Entry
from twistproxy.config import HeaderRules, RouteCache
from twistproxy.http import headers as H
from twistproxy.http.answers import Answer, own_head, respond
from twistproxy.http.exchange import Exchange
from twistproxy.http.parser import RequestHead, ResponseHead
from twistproxy.http.sinks import SinkWrapper
from twistproxy.interfaces import (
    ICacheStore,
    IFallibleCacheStore,
    IResponseSink,
    ISynchronousCacheStore,
)
from twistproxy.net import TrustedProxies

# The requests the cache answers or passes on as they are.
_CACHED_METHODS = frozenset([b"GET", b"HEAD"])
# Client preconditions the cache leaves to the origin.
_ORIGIN_PRECONDITIONS = frozenset([b"if-match", b"if-unmodified-since"])
_NO_DIRECTIVES = P.Directives({})
# Every part of a URL, as a route's cache key names them.
_URL_PARTS = frozenset(["scheme", "host", "path", "query"])
# The request fields that may turn a hit into a 304, 206 or 416.
_SERVE_FIELDS = frozenset([b"if-none-match", b"if-modified-since", b"range"])
# Replaced by the cache's own validators when it revalidates.
_VALIDATION_FIELDS = ("If-None-Match", "If-Modified-Since")
# A variant's key: the URL's key, this, and the secondary key.
_VARIANT = b"\x01"
_TEXT = (b"Content-Type", b"text/plain; charset=utf-8")
# How long a URL whose response was not stored is fetched without
# collapsing, and how many such URLs are remembered.
PASS_TIME = 10.0
MAX_PASSES = 10000


class HTTPCache:
    """
    What every route's cache shares: the store, the clock, the requests in
    flight per key, and the counters.

    @ivar store: The L{ICacheStore}.
    @ivar lookup: The store's synchronous C{lookup(key)}, when it has one.
    @ivar name: This cache's name in C{Cache-Status}.
    @ivar targeted: The targeted response fields read before
        C{Cache-Control}, most specific first (RFC 9213).
    @ivar purge_from: The peers allowed to send C{PURGE}.
    @ivar purge_enabled: Whether anyone is.
    @ivar counts: Counters by outcome: C{hit}, C{miss}, C{stale} (served
        stale), C{revalidated} (a 304 refreshed a stored response),
        C{stored}, C{collapsed}, C{invalidated}, C{purged}.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, store: ICacheStore, name: str = "twistproxy",
                 targeted_header: str = "", purge_from=()):
        self.clock = clock
        self.store = store
        # A store in this process may answer synchronously (MemoryStore),
        # which spares a Deferred per request.
        self.lookup = store.lookup if ISynchronousCacheStore.providedBy(store) else None
        # A store whose backend may be out (Redis) says whether it takes
        # writes now.
        self.writable = store.writable if IFallibleCacheStore.providedBy(store) else _always
        self.name = name.encode("ascii")
        self.targeted: Tuple[bytes, ...] = (
            (targeted_header.encode("ascii"),) if targeted_header else ()
        ) + (P.CDN_CACHE_CONTROL,)
        self.purge_from = TrustedProxies(purge_from)
        self.purge_enabled = bool(purge_from)
        self.pass_status = P.cache_status(self.name, False, fwd=b"uri-miss", detail=b"pass")
        # The Cache-Status of a fresh hit up to its ttl's value, which is
        # all that changes from one to the next: one format per hit.
        self.hit_status = P.cache_status(self.name, True) + b"; ttl="
        self.counts: Dict[str, int] = dict.fromkeys(
            ["hit", "miss", "stale", "revalidated", "stored", "collapsed", "invalidated",
             "purged"], 0)
        # key -> the requests waiting for the one fetching it:
        # (exchange, proceed, timer)
        self.in_flight: Dict[bytes, List[Any]] = {}
        # key -> until when requests for it do not wait for one another:
        # its last response could not be stored (Varnish's hit-for-pass).
        self._passes: Dict[bytes, float] = {}

    def pass_for(self, key: bytes) -> None:
        """
        The response for C{key} could not be stored: for L{PASS_TIME}
        seconds, requests for it go to the origin side by side rather than
        one after another, and their responses are not considered for
        storing.
        """
        if len(self._passes) >= MAX_PASSES:
            # Bounded memory; forgetting only costs some waiting.
            self._passes.clear()
        self._passes[key] = self.clock.seconds() + PASS_TIME

    def passes(self, key: bytes) -> bool:
        until = self._passes.get(key)
        if until is None:
            return False
        if until <= self.clock.seconds():
            del self._passes[key]
            return False
        return True

    def for_route(self, config: RouteCache, request_rules: HeaderRules) -> "CachedRoute":
        return CachedRoute(self, config, request_rules)

    def fields(self, entry: Entry) -> P.CacheFields:
        """
        The parsed cache fields of a stored response, parsed once per
        entry object.
        """
        parsed = entry.cache_fields
        if parsed is None:
            # Two-digit years (RFC 850 dates) are read as of when the
            # response came.
            parsed = entry.cache_fields = P.CacheFields(
                entry.headers, self.targeted, entry.response_time)
        return parsed

    def purge_url(self, url: bytes) -> Any:
        """
        Remove every stored response of C{url} (all its variants), for
        routes whose key has every part of the URL (the default).

        @return: A L{Deferred} firing with how many entries went.
        """
        parts = urlsplit(url)
        target = (parts.path or b"/") + (b"?" + parts.query if parts.query else b"")
        key = P.primary_key(parts.scheme.lower(), parts.netloc, target)
        return self.purge(key)

    def purge(self, prefix: bytes) -> Any:
        d = self.store.purge(prefix)
        d.addCallback(self._purged)
        return d

    def purge_tag(self, tag: bytes) -> Any:
        d = self.store.purge_tag(tag)
        d.addCallback(self._purged)
        return d

    def _purged(self, n: int) -> int:
        self.counts["purged"] += n
        return n


class CachedRoute:
    """
    The cache of one route: its settings over the shared L{HTTPCache}.
    """

    def __init__(self, cache: HTTPCache, config: RouteCache, request_rules: HeaderRules):
        self.cache = cache
        self.config = config
        self._rules = request_rules
        self._honour = config.client_no_cache == "honour"
        self._extra = [n.encode("ascii") for n in config.key_headers]
        # The default key, which P.url_key makes in one format.
        self._url_key = not self._extra and set(config.key) == _URL_PARTS
        self.allow_post = "POST" in config.methods
        self._head = "HEAD" in config.methods
        self.pass_cookies = config.set_cookie == "pass"
        # The fields kept out of what is stored, besides those RFC 9111
        # keeps out.
        self.strip: Tuple[bytes, ...] = () if self.pass_cookies else (P.SET_COOKIE,)

    # The entry point

    def handle(self, exchange: Exchange, proceed: Callable[[Exchange], None]) -> None:
        """
        Answer C{exchange} from the cache, or let it C{proceed} to the origin with
        what the cache needs on the way back.
        """
        req = exchange.request
        method = req.method
        if method == b"PURGE":
            self._purge_request(exchange)
            return
        if method not in P.SAFE_METHODS:
            key = self.key(exchange)
            exchange.sink = InvalidatingSink(exchange.sink, self, key)
            if method == b"POST" and self.allow_post:
                exchange.sink = FetchSink(exchange.sink, self, exchange, key, None, b"miss", False)
            proceed(exchange)
            return
        if method not in _CACHED_METHODS:
            self._pass_on(exchange, proceed)
            return
        names = [k.lower() for k, _ in req.headers]
        if (
            (method == b"HEAD" and not self._head)
            or req.has_body
            or req.upgrade is not None
            or not _ORIGIN_PRECONDITIONS.isdisjoint(names)
        ):
            if b"cache-control" in names and "only-if-cached" in P.request_directives(
                    req.headers):
                # RFC 9111 5.2.1.7: nothing stored can answer it, and the
                # client does not want the origin asked.
                self._answer_504(exchange)
                return
            self._pass_on(exchange, proceed)
            return
        directives = _NO_DIRECTIVES
        if b"cache-control" in names or b"pragma" in names:
            directives = P.request_directives(req.headers)
        key = self.key(exchange)
        self._get(key, self._found, exchange, proceed, key, True, directives, names)

    def _pass_on(self, exchange: Exchange, proceed) -> None:
        """
        Let C{exchange} go to the origin untouched by the cache, but for the
        targeted fields of its response, which are this cache's alone
        (RFC 9213).  An upgrade's response is left whole: it is not an
        HTTP response the cache could have stored.
        """
        if exchange.request.upgrade is None:
            exchange.sink = TargetedSink(exchange.sink, self.cache.targeted)
        proceed(exchange)

    def key(self, exchange: Exchange) -> bytes:
        req = exchange.request
        if self._url_key:
            return P.url_key(exchange.downstream.proto, req.host, req.target)
        extra = [(n, H.field_value(req.headers, n)) for n in self._extra] if self._extra else ()
        return P.primary_key(exchange.downstream.proto, req.host, req.target, self.config.key, extra)

    def _lookup(self, exchange: Exchange, proceed, may_wait: bool) -> None:
        key = self.key(exchange)
        self._get(key, self._found, exchange, proceed, key, may_wait,
                  P.request_directives(exchange.request.headers), None)

    def _get(self, key: bytes, then, exchange: Exchange, proceed, *args) -> None:
        """
        Call C{then(entry, exchange, proceed, *args)} with what the store keeps
        under C{key}: at once from a store in this process that offers a
        synchronous C{lookup}, else when its L{Deferred} fires.
        """
        lookup = self.cache.lookup
        if lookup is not None:
            then(lookup(key), exchange, proceed, *args)
            return
        d = self.cache.store.get(key)
        d.addCallback(then, exchange, proceed, *args)
        d.addErrback(self._lookup_failed, exchange, proceed)

    def _lookup_failed(self, failure, exchange: Exchange, proceed) -> None:
        self.cache.log.failure("cache lookup failed", failure)
        if not exchange.status:
            proceed(exchange)

    def _found(self, entry: Optional[Entry], exchange: Exchange, proceed, key: bytes,
               may_wait: bool, directives: P.Directives, names) -> None:
        if exchange.status:
            # The client left while the store answered.
            return
        if entry is not None and entry.status == 0:
            variant = P.secondary_key(entry.vary, exchange.request.headers)
            if variant is None:
                self._miss(exchange, proceed, key, None, b"vary-miss", may_wait)
                return
            self._get(key + _VARIANT + variant, self._found_variant, exchange, proceed, key,
                      may_wait, directives, names)
            return
        self._decide(entry, exchange, proceed, key, may_wait, directives, names, b"uri-miss")

    def _found_variant(self, entry, exchange, proceed, key, may_wait, directives, names) -> None:
        if exchange.status:
            return
        self._decide(entry, exchange, proceed, key, may_wait, directives, names, b"vary-miss")

    def _decide(self, entry: Optional[Entry], exchange: Exchange, proceed, key: bytes,
                may_wait: bool, directives: P.Directives, names, why_miss: bytes) -> None:
        if entry is None:
            if "only-if-cached" in directives:
                self._answer_504(exchange)
                return
            self._miss(exchange, proceed, key, None, why_miss, may_wait)
            return
        cache = self.cache
        reusable = self.reusable(entry)
        fields = reusable.fields
        lifetime = reusable.lifetime
        age = P.current_age(reusable.initial_age, entry.response_time, cache.clock.seconds())
        if directives is _NO_DIRECTIVES and age < lifetime and not reusable.always_validate:
            # What P.reuse answers a request without cache directives
            # for a fresh response, without its calls: the common hit.
            cache.counts["hit"] += 1
            serve(exchange, exchange.sink, entry, reusable, age,
                  b"%s%d" % (cache.hit_status, lifetime - age), names)
            return
        verdict = P.reuse(fields, lifetime, age, directives, self._honour)
        if verdict != P.VALIDATE:
            stale = verdict != P.FRESH
            cache.counts["stale" if stale else "hit"] += 1
            detail = b"stale-while-revalidate" if verdict == P.SWR else b""
            status = P.cache_status(cache.name, True, ttl=lifetime - age, detail=detail)
            if verdict == P.SWR and key not in cache.in_flight:
                # Before serving: the end of this response may start the
                # client's next request, which must find this refresh.
                self._refresh(exchange, proceed, key, entry, fields)
            serve(exchange, exchange.sink, entry, reusable, age, status, names)
            return
        if "only-if-cached" in directives:
            self._answer_504(exchange)
            return
        why = b"request" if "no-cache" in directives or "max-age" in directives else b"stale"
        self._miss(exchange, proceed, key, entry, why, may_wait)

    def lifetime(self, entry: Entry, fields: P.CacheFields) -> float:
        return self.lifetime_of(entry.status, fields, entry.response_time)

    def reusable(self, entry: Entry) -> "Reusable":
        """
        What every reuse of C{entry} on this route shares, computed once
        per entry object (and again should another route reuse it).
        """
        reusable = entry.reusable
        if reusable is None or reusable.route is not self:
            reusable = entry.reusable = Reusable(self, entry)
        return reusable

    def lifetime_of(self, status: int, fields: P.CacheFields, response_time: float) -> float:
        config = self.config
        return P.freshness_lifetime(status, fields, response_time,
                                    config.default_ttl, config.max_ttl)

    # Going to the origin

    def _miss(self, exchange: Exchange, proceed, key: bytes, stale: Optional[Entry], why: bytes,
              may_wait: bool) -> None:
        cache = self.cache
        waiters = cache.in_flight.get(key)
        if stale is None and waiters is None and cache.passes(key):
            # The last response for the key could not be stored: for a
            # while, requests for it pass through side by side, without
            # the cost of looking at what comes back (Varnish's
            # hit-for-pass).
            cache.counts["miss"] += 1
            exchange.sink = StatusSink(exchange.sink, cache.targeted, cache.pass_status)
            proceed(exchange)
            return
        req = exchange.request
        if req.method == b"HEAD" or P.has_field(req.headers, b"range"):
            # Passed on as asked; what comes back is not a whole
            # representation to store.
            cache.counts["miss"] += 1
            exchange.sink = StatusSink(exchange.sink, cache.targeted,
                                P.cache_status(cache.name, False, fwd=b"bypass"))
            proceed(exchange)
            return
        if waiters is not None and may_wait:
            cache.counts["collapsed"] += 1
            timer = cache.clock.callLater(
                self.config.lock_timeout, self._stop_waiting, key, exchange, proceed)
            waiters.append((exchange, proceed, timer))
            return
        cache.counts["miss"] += 1
        owner = waiters is None
        if owner:
            cache.in_flight[key] = []
        if stale is not None and P.has_validator(cache.fields(stale)):
            self._validate(exchange, stale)
        exchange.sink = FetchSink(exchange.sink, self, exchange, key, stale, why, owner)
        proceed(exchange)

    def _validate(self, exchange: Exchange, stale: Entry) -> None:
        """
        Send C{exchange} with the stored response's validators in place of any
        the client sent (RFC 9111 4.3.1).
        """
        fields = P.conditional_fields(self.cache.fields(stale), stale.headers)
        rules = self._rules
        exchange.request_rules = H.CompiledRules(HeaderRules(
            remove=tuple(rules.remove) + _VALIDATION_FIELDS,
            set=tuple(rules.set) + tuple(
                (n.decode("ascii"), v.decode("latin-1")) for n, v in fields),
            add=rules.add,
        ))

    def _stop_waiting(self, key: bytes, exchange: Exchange, proceed) -> None:
        """
        A collapsed request waited long enough: it goes on its own.
        """
        waiters = self.cache.in_flight.get(key)
        if waiters is not None:
            waiters[:] = [w for w in waiters if w[0] is not exchange]
        if not exchange.status:
            self._lookup(exchange, proceed, False)

    def fetched(self, key: bytes) -> None:
        """
        The request fetching C{key} is over (stored or not): the requests
        waiting for it look again, and go on their own if they miss.
        """
        waiters = self.cache.in_flight.pop(key, None)
        for exchange, proceed, timer in waiters or ():
            if timer.active():
                timer.cancel()
            if not exchange.status:
                self._lookup(exchange, proceed, False)

    def _refresh(self, exchange: Exchange, proceed, key: bytes, entry: Entry,
                 fields: P.CacheFields) -> None:
        """
        Start one background request to refresh C{entry}
        (C{stale-while-revalidate}, RFC 5861 3).
        """
        req = exchange.request
        headers = [(k, v) for k, v in req.headers
                   if k.lower() not in P.CONDITIONAL_FIELDS and k.lower() != b"range"]
        background = Background(exchange.downstream.proto)
        request = RequestHead.made(b"GET", req.target, req.host, headers, True)
        bx = Exchange(request, "", background, self.cache.clock.seconds())
        bx.route = exchange.route
        self.cache.in_flight[key] = []
        if P.has_validator(fields):
            self._validate(bx, entry)
        bx.sink = FetchSink(background, self, bx, key, entry, b"stale", True)
        proceed(bx)

    def _answer_504(self, exchange: Exchange) -> None:
        """
        C{only-if-cached} with nothing usable stored (RFC 9111 5.2.1.7).
        """
        self.cache.counts["miss"] += 1
        exchange.sink.upstream_failed(exchange, 504, "cache_only_if_cached")

    # Storing

    def store(self, exchange: Exchange, key: bytes, entry: Entry, fields: P.CacheFields,
              lifetime: float, tags) -> Deferred:
        """
        Put C{entry} in the store (with a vary marker when it varies).

        @return: A L{Deferred} firing when the store has it.
        """
        cache = self.cache
        ttl = P.store_ttl(fields, lifetime, self.config.stale_if_error)
        store = cache.store
        cache.counts["stored"] += 1
        if fields.vary:
            variant = P.secondary_key(fields.vary, exchange.request.headers)
            return gatherResults([
                store.put(key, Entry.marker(fields.vary), ttl),
                store.put(key + _VARIANT + variant, entry, ttl, tags),
            ])
        return store.put(key, entry, ttl, tags)

    def invalidate(self, exchange: Exchange, key: bytes, resp: ResponseHead) -> None:
        """
        A successful unsafe request: its target and the same-origin URIs
        its response names are stale now (RFC 9111 4.4).
        """
        cache = self.cache
        cache.counts["invalidated"] += 1
        base_key = self.url_prefix(key)
        cache.store.purge(base_key)
        req = exchange.request
        scheme = exchange.downstream.proto
        base = b"%s://%s%s" % (scheme, req.host, req.target)
        origin = urlsplit(base)
        for uri in P.invalidated_uris(resp.status, req.method, resp.headers):
            url = urlsplit(urljoin(base, uri))
            if (url.scheme, url.netloc.lower()) != (origin.scheme, origin.netloc.lower()):
                continue
            target = (url.path or b"/") + (b"?" + url.query if url.query else b"")
            cache.store.purge(P.primary_key(scheme, req.host, target, self.config.key))

    def url_prefix(self, key: bytes) -> bytes:
        """
        The part of a key every key of the same URL starts with.
        """
        return key[:key.index(b"\x00") + 1]

    def _purge_request(self, exchange: Exchange) -> None:
        """
        C{PURGE}: remove the target URL's stored responses, for peers
        allowed by C{cache.purge_from}; 405 when no one is, 403 for the
        others.
        """
        cache = self.cache
        if not cache.purge_enabled:
            respond(exchange, Answer(405, [_TEXT], b"PURGE is not enabled\n", "cache_purge_disabled"))
            return
        if exchange.client_address not in cache.purge_from:
            respond(exchange, Answer(403, [_TEXT], b"PURGE is not allowed from this address\n",
                              "cache_purge_forbidden"))
            return
        d = cache.purge(self.url_prefix(self.key(exchange)))
        d.addCallback(lambda n: exchange.status or respond(exchange, Answer(
            200, [(b"Content-Type", b"application/json")], b'{"purged": %d}\n' % n, exchange.reason)))


class Reusable:
    """
    What every reuse of one stored entry on one route shares, computed on
    the first (L{CachedRoute.reusable}) rather than on each hit.

    @ivar route: The L{CachedRoute} it was computed for (the lifetime is
        the route's).
    @ivar fields: The entry's parsed cache fields.
    @ivar lifetime: Its freshness lifetime.
    @ivar initial_age: Its age when it arrived (RFC 9111 4.2.3).
    @ivar headers: The fields it is served with, but for C{Age}.
    @ivar head: The L{H.SharedHead} of the whole response served.
    @ivar always_validate: Whether it may never be reused unvalidated.
    """

    __slots__ = ("route", "fields", "lifetime", "initial_age", "headers", "head",
                 "always_validate")

    def __init__(self, route: CachedRoute, entry: Entry):
        cache = route.cache
        fields = self.fields = cache.fields(entry)
        self.route = route
        self.lifetime = route.lifetime(entry, fields)
        self.initial_age = P.initial_age(fields, entry.request_time, entry.response_time)
        self.headers = P.reused_fields(entry.headers, fields, cache.targeted)
        self.head = H.SharedHead(entry.status, entry.reason, self.headers, len(entry.body))
        self.always_validate = P.always_validate(fields)


def serve(exchange: Exchange, sink, entry: Entry, reusable: Reusable, age: float,
          status_field: bytes, names: Optional[List[bytes]] = None, own=()) -> None:
    """
    Answer C{exchange} from a stored response: the whole of it, the head alone for
    C{HEAD}, a 304 for a matching conditional request (RFC 9110 13.2.2), or
    a 206 or 416 for a single byte range (RFC 9110 14).  C{names} are the
    request's field names lower-cased, when already known; C{own} are
    fields for this client alone, added to the stored ones.

    No C{flush} before C{response_end}: the end sends what is pending, in
    one write, as it does for the proxy's own answers (L{respond}).
    """
    req = exchange.request
    body = entry.body
    extra = [*own, (b"Cache-Status", status_field)]
    age_text = P.age_value(age)
    if names is None:
        names = [k.lower() for k, _ in req.headers]
    if entry.status == 200 and not _SERVE_FIELDS.isdisjoint(names):
        fields = reusable.fields
        headers = reusable.headers + [(b"Age", age_text)]
        if P.client_not_modified(req.method, req.headers, fields, entry.response_time):
            head = own_head(304, b"Not Modified", P.not_modified_fields(headers), None)
            sink.response_head(exchange, head, False, extra)
            sink.response_end(exchange)
            return
        if req.method == b"GET":
            span = P.byte_range(req.headers, len(body), fields, entry.response_time)
            if span == P.UNSATISFIABLE:
                extra.append((b"Content-Range", b"bytes */%d" % len(body)))
                head = own_head(416, b"Range Not Satisfiable", headers, 0)
                sink.response_head(exchange, head, True, extra)
                sink.response_end(exchange)
                return
            if span is not None:
                first, last = span
                extra.append((b"Content-Range", b"bytes %d-%d/%d" % (first, last, len(body))))
                body = body[first:last + 1]
                head = own_head(206, b"Partial Content", headers, len(body))
                sink.response_head(exchange, head, True, extra)
                sink.response_body(exchange, body)
                sink.response_end(exchange)
                return
    # The stored lines of its head are formatted once, not for each hit.
    head = H.stored_head(reusable.head, age_text)
    has_body = req.method != b"HEAD" and entry.status not in (204, 304)
    sink.response_head(exchange, head, has_body, extra)
    if has_body and body:
        sink.response_body(exchange, body)
    sink.response_end(exchange)


class TargetedSink(SinkWrapper):
    """
    Passes a response on without the targeted fields (RFC 9213) meant for
    this cache alone.
    """

    def __init__(self, sink, targeted):
        super().__init__(sink)
        self._targeted = targeted

    def response_head(self, exchange, resp, has_body, extra=None) -> None:
        self.sink.response_head(exchange, _downstream(resp, self._targeted), has_body, extra)


class StatusSink(TargetedSink):
    """
    Adds a C{Cache-Status} to a response the cache only passes on.
    """

    def __init__(self, sink, targeted, status_field: bytes):
        super().__init__(sink, targeted)
        self._field = (b"Cache-Status", status_field)

    def response_head(self, exchange, resp, has_body, extra=None) -> None:
        super().response_head(exchange, resp, has_body, list(extra or ()) + [self._field])


class InvalidatingSink(TargetedSink):
    """
    Invalidates what a successful unsafe request changed (RFC 9111 4.4).
    """

    def __init__(self, sink, route_cache: CachedRoute, key: bytes):
        super().__init__(sink, route_cache.cache.targeted)
        self._cache = route_cache
        self._key = key

    def response_head(self, exchange, resp, has_body, extra=None) -> None:
        if 200 <= resp.status < 400:
            self._cache.invalidate(exchange, self._key, resp)
        super().response_head(exchange, resp, has_body, extra)


# What a FetchSink does with the response.
_PASS, _STORE, _UPDATE, _STALE, _REFUSE = range(5)


class FetchSink(SinkWrapper):
    """
    Stands in front of the client's sink while a request the cache sent on
    is answered: passes the response on as it streams and keeps a copy to
    store (up to the object size limit); with a stale stored response, turns
    a 304 into the updated stored response, and a failure or 5xx into the
    stale response where C{stale-if-error} allows.
    """

    def __init__(self, sink, route_cache: CachedRoute, exchange: Exchange, key: bytes,
                 stale: Optional[Entry], why: bytes, owner: bool):
        super().__init__(sink)
        self._cache = route_cache
        self._key = key
        self._stale = stale
        self._why = why
        self._request_headers = exchange.request.headers
        # Whether the requests collapsed on this key wait for this one.
        self._done = not owner
        if owner:
            # However the exchange ends (its client may leave mid-way),
            # the requests waiting for it must not wait for nothing.
            exchange.on_end = self._ended
        self._mode = _PASS
        self._body: List[bytes] = []
        self._size = 0
        self._resp: Optional[ResponseHead] = None
        self._fields: Optional[P.CacheFields] = None
        self._request_time = route_cache.cache.clock.seconds()
        self._response_time = 0.0
        self._storing = False

    def response_head(self, exchange, resp, has_body, extra=None) -> None:
        rc = self._cache
        cache = rc.cache
        now = self._response_time = cache.clock.seconds()
        fields = self._fields = P.CacheFields(resp.headers, cache.targeted, now)
        stale = self._stale
        if stale is not None and resp.status == 304:
            stored = cache.fields(stale)
            selects = P.update_selects(stored, fields)
            if selects or P.has_validator(stored):
                # RFC 9111 4.3.4: a 304 for other validators than the
                # stored response's updates nothing, and answers nothing
                # the client asked (the cache sent its own validators).
                self._mode = _UPDATE if selects else _REFUSE
                self._resp = resp
                return
            # The cache had no validator to send, so the request went with
            # the client's own: this 304 answers them, and goes on as it is.
        if stale is not None and resp.status >= 500 and self._stale_usable(
                rc.config.stale_on_5xx):
            self._mode = _STALE
            self._resp = resp
            return
        req = exchange.request
        config = rc.config
        storable = (
            P.storable(req.method, resp.status, req.headers, fields, resp.headers,
                       req.target, rc.allow_post, rc.pass_cookies)
            and (resp.content_length is not None or resp.chunked)
            and (resp.content_length or 0) <= config.max_object_size
            # Nothing to keep: no freshness, no validator.
            and P.store_ttl(fields, rc.lifetime_of(resp.status, fields, now)) > 0
        )
        # While the store's backend is out, Cache-Status does not say
        # "stored" of a response that will not be.
        stored = storable and cache.writable()
        status = self._status_field(stored, fields, resp.status)
        if stored:
            self._mode = _STORE
            self._resp = resp
        else:
            if not storable and req.method == b"GET" and resp.status < 500 \
                    and resp.status != 304:
                # An answer the origin means; a failure, a POST's answer or
                # a 304 to a client's own condition says nothing of what
                # later GETs will get.
                cache.pass_for(self._key)
            self._release()
        self.sink.response_head(exchange, _downstream(resp, cache.targeted), has_body,
                                 list(extra or ()) + [(b"Cache-Status", status)])

    def _status_field(self, stored: bool, fields: P.CacheFields, status: int) -> bytes:
        rc = self._cache
        ttl = None
        if stored:
            ttl = rc.lifetime_of(status, fields, self._response_time) - P.initial_age(
                fields, self._request_time, self._response_time)
        fwd_status = status if self._stale is not None else 0
        return P.cache_status(rc.cache.name, False, fwd=self._why, stored=stored, ttl=ttl,
                              fwd_status=fwd_status)

    def _stale_usable(self, down: bool) -> bool:
        """
        Whether the stale response may stand in for what the origin failed
        to give; C{down} when the route's own C{stale_if_error} counts (the
        origin could not be reached, or answered 5xx and C{stale_on_5xx}).
        """
        rc = self._cache
        stale = self._stale
        fields = rc.cache.fields(stale)
        lifetime = rc.lifetime(stale, fields)
        age = self._stale_age(fields)
        return P.usable_on_error(fields, lifetime, age, P.request_directives(
            self._request_headers), rc.config.stale_if_error if down else 0.0)

    def _stale_age(self, fields: P.CacheFields) -> float:
        stale = self._stale
        return P.current_age(P.initial_age(fields, stale.request_time, stale.response_time),
                             stale.response_time, self._cache.cache.clock.seconds())

    def response_body(self, exchange, data: bytes) -> None:
        mode = self._mode
        if mode == _UPDATE or mode == _STALE or mode == _REFUSE:
            return
        if mode == _STORE:
            self._size += len(data)
            if self._size > self._cache.config.max_object_size:
                self._mode = _PASS
                self._body = []
                self._release()
            else:
                self._body.append(data)
        self.sink.response_body(exchange, data)

    def flush(self) -> None:
        if self._mode == _PASS or self._mode == _STORE:
            self.sink.flush()

    def response_end(self, exchange) -> None:
        mode = self._mode
        rc = self._cache
        if mode == _STORE:
            resp = self._resp
            body = b"".join(self._body)
            self._body = []
            if resp.content_length is None or len(body) == resp.content_length:
                self._store(exchange, resp.status, resp.reason, resp.headers, body, self._fields)
            else:
                self._release()
            self.sink.response_end(exchange)
        elif mode == _UPDATE:
            stale = self._stale
            # A cookie the 304 sets is for this client: never stored, so
            # never replayed.
            headers = self._resp.headers
            merged = P.merge_304(stale.headers, P.fields_to_store(
                headers, self._fields, (P.SET_COOKIE,)))
            entry = self._store(exchange, stale.status, stale.reason, merged, stale.body)
            rc.cache.counts["revalidated"] += 1
            reusable = rc.reusable(entry)
            age = reusable.initial_age
            status = P.cache_status(rc.cache.name, False, fwd=self._why, fwd_status=304,
                                    stored=True, ttl=reusable.lifetime - age)
            serve(exchange, self.sink, entry, reusable, age, status,
                  own=[(k, v) for k, v in headers if k.lower() == P.SET_COOKIE])
        elif mode == _STALE:
            self._serve_stale(exchange, self._resp.status)
        elif mode == _REFUSE:
            self._release()
            rc.cache.store.purge(rc.url_prefix(self._key))
            self.sink.upstream_failed(exchange, 502, "cache_unmatched_304")
        else:
            self.sink.response_end(exchange)

    def upstream_failed(self, exchange, status: int, reason: str) -> None:
        if self._mode == _STALE:
            # The 5xx being replaced did not even end well.
            self._serve_stale(exchange, self._resp.status, reason)
            return
        if self._stale is not None and self._mode in (_PASS, _STORE) and self._resp is None \
                and not exchange.status and status >= 500 and self._stale_usable(True):
            self._mode = _STALE
            self._serve_stale(exchange, status, reason)
            return
        self._mode = _PASS
        self._release()
        self.sink.upstream_failed(exchange, status, reason)

    def _serve_stale(self, exchange, status: int, reason: str = "") -> None:
        """
        The origin failed: serve the stale response (RFC 5861 4).
        """
        rc = self._cache
        cache = rc.cache
        self._release()
        stale = self._stale
        reusable = rc.reusable(stale)
        age = self._stale_age(reusable.fields)
        cache.counts["stale"] += 1
        field = P.cache_status(cache.name, True, fwd=b"stale", fwd_status=status,
                               ttl=reusable.lifetime - age, detail=b"stale-if-error")
        exchange.reason = reason or exchange.reason
        serve(exchange, self.sink, stale, reusable, age, field)

    def _store(self, exchange, status: int, reason: bytes, headers, body: bytes,
               fields: Optional[P.CacheFields] = None) -> Entry:
        """
        Store a response with C{headers}; C{fields} is what they parse to,
        when already known (the origin's response, parsed on its head).
        """
        rc = self._cache
        cache = rc.cache
        if fields is None:
            fields = P.CacheFields(headers, cache.targeted, self._response_time)
        kept = P.fields_to_store(headers, fields, rc.strip)
        entry = Entry(status, reason, kept, body, self._request_time, self._response_time,
                      fields.vary)
        lifetime = rc.lifetime(entry, cache.fields(entry))
        tags = [t for v in H.field_values(headers, b"cache-tag") for t in P.split_list(v)]
        # A POST response is stored under its target's key, for later GETs
        # (RFC 9110 9.3.3): keys do not name the method.
        self._storing = True
        d = rc.store(exchange, self._key, entry, fields, lifetime, tags)
        # The requests waiting for this one look in the store once it has
        # the entry (a shared store answers later than it is asked).
        d.addBoth(lambda _: self._release())
        return entry

    def _release(self) -> None:
        if not self._done:
            self._done = True
            self._cache.fetched(self._key)

    def _ended(self, exchange: Exchange) -> None:
        if not self._storing:
            self._release()


def _always() -> bool:
    return True


def _downstream(resp: ResponseHead, targeted) -> ResponseHead:
    """
    C{resp} as it goes on to the client: without the C{targeted} fields
    (lower-cased), which are for this cache alone (RFC 9213).
    """
    if not any(k.lower() in targeted for k, _ in resp.headers):
        return resp
    return H.with_fields(resp, [(k, v) for k, v in resp.headers if k.lower() not in targeted])


@implementer(IResponseSink)
class Background:
    """
    The downstream of a request the cache sends on its own
    (C{stale-while-revalidate}): it has no client, discards the response
    (the L{FetchSink} in front of it stores it) and releases the exchange
    when it is over.
    """

    trusted = False
    identity = None
    client_full = False
    transport = None

    def __init__(self, proto: bytes):
        # As the client's request came (the cache key has the scheme).
        self.proto = proto

    def upstream_attached(self, exchange: Exchange) -> None:
        pass

    def upstream_full(self, full: bool) -> None:
        pass

    def informational(self, exchange: Exchange, resp) -> None:
        pass

    def response_head(self, exchange: Exchange, resp, has_body: bool, extra=None) -> None:
        exchange.status = resp.status

    def response_body(self, exchange: Exchange, data: bytes) -> None:
        pass

    def flush(self) -> None:
        pass

    def response_end(self, exchange: Exchange) -> None:
        self._end(exchange)

    def upstream_failed(self, exchange: Exchange, status: int, reason: str) -> None:
        exchange.reason = reason
        exchange.status = exchange.status or status
        self._end(exchange)

    def _end(self, exchange: Exchange) -> None:
        if exchange.forwarder is not None:
            exchange.forwarder.release(exchange)


def build_cache(reactor: IReactorTime, config) -> Optional[HTTPCache]:
    """
    The shared cache a L{twistproxy.config.ProxyConfig} asks for, with its
    store, or C{None} when no route has a cache.

    @raises twistproxy.config.ConfigError: when the store is unknown or its
        options are invalid.
    """
    from twistproxy.components import find_factory
    from twistproxy.interfaces import ICacheStoreFactory

    if not any(r.cache is not None and r.cache.enabled for r in config.routes):
        return None
    settings = config.cache
    factory = find_factory(ICacheStoreFactory, settings.store, "cache.store", "cache store")
    store = factory.fromConfig(reactor, settings.options, "cache")
    return HTTPCache(reactor, store, settings.name, settings.targeted_header,
                     settings.purge_from)
