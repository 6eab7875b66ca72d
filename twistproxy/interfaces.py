# -*- test-case-name: tests.test_balancers -*-
"""
The seams of twistproxy: every role a plugin author can fill.

A reverse proxy is a pipeline (listener, router, upstream group, balancer,
upstream connection pool).  The parts that people want to replace without
forking the proxy are declared here as zope interfaces.  Each role comes in
two halves:

  - the role itself (for example L{IBalancer}), which the proxy calls on the
    hot path and which must therefore be cheap and non-blocking;

  - a factory for it (for example L{IBalancerFactory}), which is what a
    plugin module exports.  A factory has a C{name} by which a configuration
    file refers to it, a one-line C{help}, and a C{fromConfig} method that
    validates its own settings when the proxy starts, so that a mistake is
    reported with the path of the offending setting instead of failing on the
    first request.

Factories are found with Twisted's plugin system (L{twisted.plugin}): the
built-in ones live in L{twistproxy.plugins} exactly like third-party ones.

Plugins see requests and responses through views declared here
(L{IRequestInfo}, L{IRequestView}, L{IResponseView}, L{ICacheEntry},
L{IBackendAddress}), never through the proxy's internal records.  Every
optional hook is an interface of its own, extending the role it adds to
(L{IRetryBalancer}, L{IProbingHealthCheck}, L{ITLSHealthCheck},
L{ISynchronousCacheStore}, L{IFallibleCacheStore}, L{IMeasuredCacheStore},
L{IRefusingConnectionFilter}) or standing alone (L{IClosable}): the proxy
uses a hook only on an object that declares it with C{@implementer}, so
that C{verifyObject} holds each plugin to what it offers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Collection, Mapping, Optional, Sequence, Tuple

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred


class IBackend(Interface):
    """
    One server of an upstream group, as the balancers see it.

    Balancers are pure logic: they never open connections and know nothing of
    HTTP.  They choose among backends by looking at these attributes, which
    the proxy keeps up to date.
    """

    name = Attribute(
        "A short, stable, human-readable name, used in logs and metrics; "
        "for example C{'127.0.0.1:8001'}."
    )
    weight = Attribute(
        "The configured positive integer weight; for example C{2}."
    )
    effective_weight = Attribute(
        "The weight to balance by, a positive number: a backend with "
        "effective weight 2 should get about twice the requests of one with "
        "1.  Equal to C{weight} except during slow start, when it ramps up "
        "from a fraction of C{weight}; for example C{0.5}."
    )
    region = Attribute("The backend's region, e.g. C{'eu-west'}, or C{''}.")
    zone = Attribute("The backend's zone, e.g. C{'eu-west-1a'}, or C{''}.")
    available = Attribute(
        "C{True} while the backend may be picked.  C{False} once it is "
        "marked down (for example by a health check); balancers must never "
        "pick a backend whose C{available} is C{False}."
    )
    in_flight = Attribute(
        "The number of requests currently being forwarded to this backend, "
        "for balancers that prefer the least loaded one; for example C{3}."
    )


class IBackendAddress(IBackend):
    """
    A backend as health checks see it: where it is, which balancers have
    no need to know.
    """

    scheme = Attribute("How the proxy speaks to it, C{'http'} or C{'https'}.")
    host = Attribute(
        "Its host name or IP address as C{str}, without brackets; for "
        "example C{'127.0.0.1'} or C{'::1'}."
    )
    port = Attribute("Its port, an C{int}; for example C{8001}.")


class IRequestInfo(Interface):
    """
    What a balancer may know of the request it places.

    Deliberately small and free of HTTP framing details so that balancers
    stay protocol-independent.
    """

    method = Attribute("The request method as C{str}, for example C{'GET'}.")
    path = Attribute(
        "The request target in origin form as C{str}, for example "
        "C{'/api/items?page=2'}."
    )
    host = Attribute(
        "The requested host without port, lower-cased, as C{str}; for "
        "example C{'www.example.com'}."
    )
    client_address = Attribute(
        "The address of the connected peer as C{str}, for example "
        "C{'192.0.2.7'}."
    )

    def header(name: str) -> Optional[str]:
        """
        Look up a request header.

        @param name: The field name, in any case.
        @return: The first value of the field, or C{None} when absent.
        """

    def cookie(name: str) -> Optional[str]:
        """
        Look up a cookie sent with the request.

        @param name: The cookie's name (case-sensitive), e.g. C{'session'}.
        @return: Its value, or C{None} when absent.
        """


class IRequestView(IRequestInfo):
    """
    A request as filters, response sinks and caches see it: the stable,
    documented part of the proxy's own record of a request.

    It adds to what a balancer sees (L{IRequestInfo}, whose C{path} is the
    target as received, query and all) what a filter needs to judge a
    request.  The proxy's record of a request provides it
    directly, so reading it costs an attribute lookup and nothing is made
    for a request that no plugin looks at; everything else that record
    holds is the proxy's own and may change between versions.
    """

    normalised_path = Attribute(
        "The target's path without the query, in the one spelling routes "
        "and rules match (L{twistproxy.http.paths}: escapes decoded, dot "
        "segments resolved, repeated slashes merged), as C{str}; for "
        "example C{'/api/items'} for C{'/api/./%69tems?page=2'}."
    )
    headers = Attribute(
        "The request fields as received, a sequence of C{(name, value)} byte "
        "pairs in order, names as the client wrote them; for example "
        "C{[(b'Host', b'example.com'), (b'Accept', b'*/*')]}.  Read-only: "
        "use L{replace_headers} to change what goes upstream."
    )
    scheme = Attribute(
        "How the client reached the listener, C{'http'} or C{'https'} "
        "(TLS); for example C{'https'}."
    )
    trusted = Attribute(
        "C{True} when the peer is one of the listener's trusted proxies, "
        "whose C{Forwarded} field may name the real client (see "
        "L{twistproxy.filters.client_ip})."
    )
    route_name = Attribute(
        "The C{name} of the matched route as C{str}, e.g. C{'api'} (C{''} "
        "for a route without one), or C{None} before routing (in a "
        "listener's filters)."
    )

    def replace_headers(fields: Sequence[Tuple[bytes, bytes]]) -> None:
        """
        Replace the request's fields, for what goes upstream and what the
        filters after this one see.

        @param fields: The new C{(name, value)} byte pairs, an edited copy
            of L{headers}; e.g. with C{(b'X-User', b'alice')} added.
        """


class IResponseView(Interface):
    """
    A response head as response sinks see it, whether the backend sent it,
    the cache kept it (L{twistproxy.cache.entry.Entry}), or the proxy made
    it.
    """

    status = Attribute("The status code, an C{int}; for example C{200}.")
    reason = Attribute("The reason phrase as C{bytes}, possibly empty; e.g. C{b'OK'}.")
    headers = Attribute(
        "The fields, a sequence of C{(name, value)} byte pairs in order; "
        "for example C{[(b'Content-Type', b'text/html')]}.  Read-only: a "
        "sink that changes fields passes on a changed copy of the head "
        "(L{twistproxy.filters.with_fields})."
    )


class IClosable(Interface):
    """
    A plugin object that holds something to release (a connection pool, a
    database file, a timer) when the configuration it belongs to is
    replaced or the proxy stops.  Filters and locators may provide it; the
    proxy calls L{close} on those that do, once.
    """

    def close() -> None:
        """
        Release what it holds.  It is not used afterwards.
        """


class IResponseSink(Interface):
    """
    Where a response goes on its way back to the client.

    The upstream connection hands what the backend answers to the
    request's sink.  The downstream protocol (HTTP/1.1 connection or HTTP/2
    stream) is the last sink; a cache or a response filter stands in front
    of it by wrapping it: it receives the same calls,
    does its work (store the body, compress it, change fields) and passes
    them on to the sink it wraps.  Bodies arrive in pieces and must be
    passed on as they come, never gathered whole.
    """

    def informational(exchange: IRequestView, resp: IResponseView) -> None:
        """
        An interim (1xx) response head arrived, other than C{100 Continue}
        (which the proxy answers itself) and C{101} (a protocol switch);
        for example C{103 Early Hints}.  More heads follow.

        @param exchange: The request.
        @param resp: The interim head.
        """

    def response_head(
        exchange: IRequestView,
        resp: IResponseView,
        has_body: bool,
        extra: Optional[Sequence[Tuple[bytes, bytes]]] = None,
    ) -> None:
        """
        The final response head arrived.

        @param exchange: The request it answers.
        @param resp: The head.
        @param has_body: Whether a body follows (C{False} for C{HEAD}, 204,
            304).
        @param extra: A list of (name, value) byte pairs to add, or C{None}.
        """

    def response_body(exchange: IRequestView, data: bytes) -> None:
        """
        A piece of the response body (never empty).
        """

    def flush() -> None:
        """
        Send what was passed on so far; called once per read from the
        backend, so that small responses go out in one write.
        """

    def response_end(exchange: IRequestView) -> None:
        """
        The whole response was passed on: the last sink sends what is
        still pending (no L{flush} is needed before it).
        """

    def upstream_failed(exchange: IRequestView, status: int, reason: str) -> None:
        """
        No response (or no complete one) will come: answer with C{status}
        if nothing was sent yet, else end the response as incomplete.

        @param reason: Why, for the access log, e.g. C{'upstream_timeout'}.
        """


class IBalancer(Interface):
    """
    Chooses the backend for each request of one upstream group.

    A balancer is built once per group (by its L{IBalancerFactory}) and keeps
    whatever state its algorithm needs.  It is called for every request, so
    it must be fast and must not block or do I/O.
    """

    def pick(request: IRequestInfo) -> Optional[IBackend]:
        """
        Choose a backend for a request.

        @param request: The request to place.
        @return: One of the group's backends whose C{available} is C{True},
            or C{None} when no backend is available, which the proxy answers
            with 503 Service Unavailable.
        """


class IRetryBalancer(IBalancer):
    """
    A balancer that places retries itself.

    When a request failed on a backend and may be sent to another, the
    proxy asks the group's balancer again, for an available backend it has
    not tried yet.  A balancer that only provides L{IBalancer} is asked with
    C{pick} until it offers an untried backend; that uses up turns meant for
    new requests (round robin's rotation moves on, so the backend that
    failed comes round again sooner) and cannot send the retry elsewhere
    when C{pick} keeps answering a tried one.  Providing this interface lets
    a balancer choose among the untried backends directly, leaving its
    rotation to new requests: C{round_robin} does, as nginx does when it
    tries the next upstream.
    """

    def pick_other(
        request: IRequestInfo, tried: Collection[IBackend]
    ) -> Optional[IBackend]:
        """
        Choose a backend for a retry of a request.

        @param request: The request to place again.
        @param tried: The backends it has failed on, which must not be
            chosen (a set or a short list).
        @return: An available backend that is not in C{tried}, or C{None}
            when there is none.  A balancer may prefer nearby or lightly
            loaded backends as C{pick} does, but must not let the retry
            change the share of new requests that each backend receives.
        """


class IBalancerFactory(Interface):
    """
    A named kind of balancer, as exported by a plugin module.

    A configuration file names it in an upstream group,
    C{balancer = "round_robin"}; the proxy finds the factory whose C{name}
    matches among the L{twisted.plugin} dropins for this interface.
    """

    name = Attribute("The name used in configuration files, e.g. C{'round_robin'}.")
    help = Attribute("One line describing the algorithm, for C{--help} and docs.")

    def fromConfig(
        backends: Sequence[IBackend], options: Mapping[str, Any], path: str
    ) -> IBalancer:
        """
        Build a balancer for one upstream group.

        @param backends: The group's backends, in configuration order.
        @param options: The group's balancer-specific settings (the
            C{balancer_options} table of the group, possibly empty).
        @param path: Where C{options} came from in the configuration, for
            error messages; for example C{'upstreams.api.balancer_options'}.
        @raises twistproxy.config.ConfigError: when C{options} are invalid.
        @return: A new balancer.
        """


class IHealthCheck(Interface):
    """
    An active health check: asks a backend, on the proxy's own initiative,
    whether it can serve.

    The proxy calls L{check} every interval for every backend of a group
    and turns the answers into up/down decisions with rise and fall
    thresholds, so one check answers one question and keeps no state.
    """

    def check(backend: IBackendAddress) -> "Deferred[bool]":
        """
        Probe a backend once.

        @param backend: The backend to probe.
        @return: A Deferred firing with C{True} when the backend passed,
            C{False} when it failed.  It must fire (with C{False} if need
            be) within the check's own timeout; it never errbacks.
        """


class IProbingHealthCheck(IHealthCheck):
    """
    A health check that says why a backend failed, for the logs and the
    status; the proxy then calls L{probe} instead of C{check}.
    """

    def probe(backend: IBackendAddress) -> "Deferred[Tuple[bool, str]]":
        """
        Probe a backend once, as C{check} does.

        @return: A Deferred firing with C{(passed, detail)}, where
            C{detail} says why in a few words, e.g. C{(False, 'status
            503')} or C{(False, 'timed out after 2s')}; like C{check}'s,
            it fires within the check's timeout and never errbacks.
        """


class ITLSHealthCheck(IHealthCheck):
    """
    A health check that connects to C{https} backends the way requests do,
    with the group's own TLS settings (its CA, client certificate, server
    name) instead of the system's defaults.
    """

    def use_tls(creator_for: Any) -> None:
        """
        Called once, before any check, by a group with TLS settings.

        @param creator_for: Called with a backend's host name, returns the
            L{twisted.internet.interfaces.IOpenSSLClientConnectionCreator}
            to connect to it with.
        """


class IHealthCheckFactory(Interface):
    """
    A named kind of active health check, as exported by a plugin module;
    a group names it in C{[upstreams.NAME.health] type = "http"}.
    """

    name = Attribute("The name used in configuration files, e.g. C{'http'}.")
    help = Attribute("One line describing the check.")

    def fromConfig(reactor: Any, options: Mapping[str, Any], path: str) -> IHealthCheck:
        """
        Build a check.

        @param reactor: Provides the clock and the network for the check.
        @param options: The check-specific settings of the group's
            C{health} table (everything but the generic C{type},
            C{interval}, C{jitter}, C{rise} and C{fall}).
        @param path: Where C{options} came from, for error messages; e.g.
            C{'upstreams.api.health'}.
        @raises twistproxy.config.ConfigError: when C{options} are invalid.
        """


class ILocator(Interface):
    """
    Places a client in a region and zone, so that requests go to nearby
    backends first (global server load balancing).  A locator that holds
    something to release (a database file) provides L{IClosable} too.
    """

    def locate(request: IRequestInfo) -> "Tuple[str, str]":
        """
        Where is this request's client?

        @param request: The request.
        @return: C{(region, zone)}; either may be C{''} when unknown, e.g.
            C{('eu-west', '')}.
        """


class ILocatorFactory(Interface):
    """
    A named kind of locator, as exported by a plugin module; the
    configuration names it in C{[locator] type = "cidr"}.
    """

    name = Attribute("The name used in configuration files, e.g. C{'cidr'}.")
    help = Attribute("One line describing how it locates clients.")

    def fromConfig(options: Mapping[str, Any], path: str) -> ILocator:
        """
        Build a locator.

        @param options: The C{[locator]} table without its C{type}.
        @param path: Where C{options} came from, e.g. C{'locator'}.
        @raises twistproxy.config.ConfigError: when C{options} are invalid.
        """


class IRequestFilter(Interface):
    """
    Looks at each request before it goes further, and may answer it
    instead of the backend: refuse it (403, 429, 401), answer a CORS
    preflight, or let it through, possibly after editing its fields.

    A listener's filters run before routing, a route's after it, each list
    in the order the configuration declares; the first filter that answers
    ends the request's trip.  Filters run on the hot path: a filter that
    can decide at once returns its verdict directly (no L{Deferred}), and
    only a filter that must ask someone else (an auth service, Redis)
    returns a L{Deferred}.

    The request a filter sees is an L{IRequestView}: its method, target,
    host, fields, client, scheme and route.  A filter that changes the
    fields sent upstream calls its C{replace_headers}.
    """

    def filter_request(request: IRequestView) -> Any:
        """
        Decide about one request.

        @param request: The request.
        @return: C{None} to let the request through; a
            L{twistproxy.filters.Answer} to answer it (status, fields,
            body); or a L{Deferred} firing with either, which must fire
            within a bounded time (the filter's own timeout).  An
            exception, raised or as a failed L{Deferred}, is logged and
            answered with 500.
        """


class IResponseFilter(Interface):
    """
    Changes responses on their way back to the client: fields, body
    encoding.

    It works by wrapping the request's sink (L{IResponseSink}): the
    wrapper receives the response head, the body pieces and the end, and
    passes them on, changed, to the sink it wraps, piece by piece (bodies
    are never gathered whole).  A filter that is also an
    L{IRequestFilter} wraps the sink only once its own request check let
    the request through, so the answers of the filters declared after it
    (a 429 from a rate limit) pass through its wrapper too: the first
    filter declared is the outermost.
    """

    def wrap_response(request: IRequestView, sink: IResponseSink) -> Optional[IResponseSink]:
        """
        Stand in front of C{sink} for one request.

        @param request: The request (as for L{IRequestFilter}).
        @param sink: Where the response goes next.
        @return: A new sink that passes everything on to C{sink}, or
            C{None} when this response needs nothing from the filter
            (which then costs nothing more).
        """


class IConnectionFilter(Interface):
    """
    Decides about client connections as they are accepted, before any
    request, by the client's address alone: a limit on the connections of
    one client address, an access list.  Only a listener's filters can be
    connection filters.  On a C{tcp} or C{udp} listener (where a UDP
    session counts as a connection) every filter must be one; on an HTTP
    listener a filter that also provides L{IRequestFilter} is asked per
    request instead, not per connection.

    A connection filter that provides L{IRefusingConnectionFilter} says
    what the access log gives for a connection it refused; without it,
    C{403} and C{'connection_refused'}.
    """

    def connection_made(address: str) -> Any:
        """
        A client connected from C{address} (the peer's IP address, or the
        one its trusted PROXY header gave).

        @return: C{True} to serve it; C{False} to close it at once (then
            L{connection_lost} is not called for it).  On C{tcp} and C{udp}
            listeners, also a Deferred firing with one of these: the
            connection waits for it (HTTP listeners need an answer at
            once).
        """

    def connection_lost(address: str) -> None:
        """
        A connection accepted by L{connection_made} closed (or, for UDP,
        its session ended).
        """


class IRefusingConnectionFilter(IConnectionFilter):
    """
    A connection filter that says why it refuses, for the access log.
    """

    refusal = Attribute(
        "An L{Answer <twistproxy.filters.Answer>} whose status and reason "
        "the access log gives for a TCP connection this filter refused; for "
        "example C{Answer(403, reason='access_denied')}."
    )


class IFilterFactory(Interface):
    """
    A named kind of filter, as exported by a plugin module.  A listener or
    a route names it in its C{filters} list, C{{ name = "access", deny =
    ["192.0.2.0/24"] }}.

    One factory serves all three roles: what C{fromConfig} returns
    provides L{IRequestFilter}, L{IResponseFilter}, L{IConnectionFilter},
    or several of them (CORS both answers preflights and adds fields to
    responses).  A filter that holds something to release provides
    L{IClosable} too.
    """

    name = Attribute("The name used in configuration files, e.g. C{'rate_limit'}.")
    help = Attribute("One line describing the filter.")

    def fromConfig(reactor: Any, options: Mapping[str, Any], path: str) -> Any:
        """
        Build a filter.

        @param reactor: The clock (and the network, for filters that ask
            other services); filters never use the global reactor.
        @param options: The filter's table without its C{name}.
        @param path: Where C{options} came from, for error messages; e.g.
            C{'listeners.web.filters[0]'}.
        @raises twistproxy.config.ConfigError: when C{options} are invalid.
        @return: The filter.
        """


class ICacheEntry(IResponseView):
    """
    What a cache store keeps under a key: one stored response (or, with
    C{status} 0, a marker naming the fields a URL's responses vary on).
    A store in the proxy's process keeps the object itself; a store outside
    it keeps L{to_bytes} and gives back
    C{twistproxy.cache.entry.Entry.from_bytes(data)}.
    """

    body = Attribute("The whole body as C{bytes}; for example C{b'hello'}.")
    size = Attribute(
        "Roughly how many bytes it occupies, an C{int}, for stores bounded "
        "by size; for example C{230}."
    )

    def to_bytes() -> bytes:
        """
        The entry serialised, for a store outside the process.
        """


class ICacheStore(Interface):
    """
    Where the shared HTTP cache keeps responses.

    The cache's rules (what to store, for how long, what may be reused)
    live in L{twistproxy.cache.policy}; a store only keeps entries under
    byte-string keys until their time to live ends or it needs the room.
    One process keeps them in memory; several processes and machines
    share one cache by keeping them in Redis.  A store may drop any entry
    at any time (a cache is allowed to forget), but must never return an
    entry under a key it was not put under, nor one past its time to live.

    A store kept in the proxy's own process may also provide
    L{ISynchronousCacheStore}, and one whose backend may be out (Redis)
    L{IFallibleCacheStore}.

    Keys are the cache's own: a URL key looks like
    C{b'http://example.com/a?b=1\\x00'} (followed by variant parts for
    C{Vary}), so that every key of one URL starts with the URL and
    C{b'\\x00'}, which L{purge} uses.
    """

    def get(key: bytes) -> "Deferred[Optional[ICacheEntry]]":
        """
        Look up an entry.

        @param key: The entry's key.
        @return: A L{Deferred} firing with the entry put under C{key}, or
            C{None} when there is none (never stored, expired, evicted, or the
            store is unreachable: a store that fails answers C{None}
            rather than failing the request).
        """

    def put(
        key: bytes, entry: ICacheEntry, ttl: float, tags: Sequence[bytes] = ()
    ) -> "Deferred[None]":
        """
        Store an entry, replacing any under the same key.

        @param entry: The entry, a L{twistproxy.cache.entry.Entry}.
        @param ttl: Seconds to keep it at most, e.g. C{60.0}.
        @param tags: Purge tags (from the response's C{Cache-Tag}), e.g.
            C{[b'product-12']}.
        @return: A L{Deferred} firing when it is stored (or given up).
        """

    def delete(key: bytes) -> "Deferred[None]":
        """
        Remove the entry under exactly C{key}, if any.
        """

    def purge(prefix: bytes) -> "Deferred[int]":
        """
        Remove every entry whose key starts with C{prefix}, e.g.
        C{b'http://example.com/static/'}.

        @return: A L{Deferred} firing with how many were removed.
        """

    def purge_tag(tag: bytes) -> "Deferred[int]":
        """
        Remove every entry put with C{tag} among its tags.

        @return: A L{Deferred} firing with how many were removed.
        """

    def close() -> "Deferred[None]":
        """
        Release connections (the proxy is stopping or reloading).
        """


class ISynchronousCacheStore(ICacheStore):
    """
    A store that answers at once (one in the proxy's own process): the
    cache then spares itself a L{Deferred} per request.
    """

    def lookup(key: bytes) -> Optional[ICacheEntry]:
        """
        Look up an entry at once, as C{get} does.

        @return: The entry put under C{key}, or C{None}.
        """


class IFallibleCacheStore(ICacheStore):
    """
    A store whose backend may be out (Redis): while it drops writes, the
    cache does not announce C{stored} in C{Cache-Status}.
    """

    def writable() -> bool:
        """
        @return: Whether a C{put} now would be kept; C{False} while the
            store gives up writes (its backend is out).
        """


class IMeasuredCacheStore(ICacheStore):
    """
    A store that counts what it holds as it goes (the C{memory} store): the
    status page draws its size.  A store that would have to ask another
    service (Redis, whose memory holds other data too) does not provide it.
    """

    used = Attribute("Bytes its entries occupy now, an C{int}; for example C{1048576}.")
    max_bytes = Attribute("Its budget in bytes, an C{int}; for example C{67108864}.")

    def __len__() -> int:
        """
        @return: How many entries it holds now.
        """


class ICacheStoreFactory(Interface):
    """
    A named kind of cache store, as exported by a plugin module; the
    configuration names it in C{[cache] store = "memory"}.
    """

    name = Attribute("The name used in configuration files, e.g. C{'redis'}.")
    help = Attribute("One line describing where it keeps responses.")

    def fromConfig(reactor: Any, options: Mapping[str, Any], path: str) -> ICacheStore:
        """
        Build a store.

        @param reactor: Provides the clock (and the network, for stores
            that use it).
        @param options: The C{[cache]} table without C{store}, e.g.
            C{{'size': '256MB'}} or C{{'url': 'redis://cache:6379/2'}}.
        @param path: Where C{options} came from, e.g. C{'cache'}.
        @raises twistproxy.config.ConfigError: when C{options} are invalid.
        """


class IDNSProvider(Interface):
    """
    Sets the TXT records of ACME DNS-01 challenges in a zone that another
    DNS server answers (a provider's API, a hidden primary taking dynamic
    updates), for names that twistproxy's own DNS front does not serve.

    DNS-01 is the only challenge that validates a wildcard, and the one
    for names whose ports 80 and 443 the CA cannot reach.  A zone served
    by the DNS front (C{[dns]}) needs no provider; a provider is for the
    zones listed in C{[acme.dns] zones}.  The order calls L{set_txt},
    waits for its L{Deferred}, tells the CA to validate, and calls
    L{remove_txt} when the authorization is over, whether it worked or
    not.
    """

    def set_txt(name: str, values: Sequence[str]) -> "Deferred[None]":
        """
        Publish the TXT records of C{name}, replacing any it has.

        @param name: The owner name, lower-case, without the final dot,
            e.g. C{'_acme-challenge.www.example.org'} (also for the
            wildcard C{*.example.org}: C{'_acme-challenge.example.org'}).
        @param values: The records' texts, e.g. C{['gfj9Xq...Rg85nM']}.
        @return: A L{Deferred} firing once the CA's resolvers can see
            them (a provider whose API answers before its servers do waits
            for them), or failing when they cannot be published: the order
            then fails and is retried later.
        """

    def remove_txt(name: str) -> "Deferred[None]":
        """
        Remove the TXT records of C{name} that L{set_txt} published.

        @param name: As given to L{set_txt}.
        @return: A L{Deferred} firing when they are removed (a failure is
            logged, and the order goes on).
        """


class IDNSProviderFactory(Interface):
    """
    A named kind of DNS provider, as exported by a plugin module; the
    configuration names it in C{[acme.dns] provider = "NAME"}.
    """

    name = Attribute("The name used in configuration files, e.g. C{'rfc2136'}.")
    help = Attribute("One line describing whose DNS it sets records in.")

    def fromConfig(reactor: Any, options: Mapping[str, Any], path: str) -> IDNSProvider:
        """
        Build a provider.

        @param reactor: Provides the clock and the network.
        @param options: The C{[acme.dns]} table without C{provider} and
            C{zones}, e.g. C{{'token': '...', 'ttl': 60}}.
        @param path: Where C{options} came from, e.g. C{'acme.dns'}.
        @raises twistproxy.config.ConfigError: when C{options} are invalid.
        """
