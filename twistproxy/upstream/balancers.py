# -*- test-case-name: tests.test_balancers -*-
"""
Balancers: how an upstream group chooses the backend for each request.

A balancer (L{IBalancer}) is built once per upstream group by a named
factory (L{IBalancerFactory}) and asked to C{pick} a backend for every
request.  Factories are plugins: the built-in ones are dropins of
L{twistproxy.plugins} exactly like third-party ones, and a configuration file
names one either by its C{name} (C{balancer = "round_robin"}) or by the
dotted path of a factory object (C{balancer = "mypkg.balancers.factory"}).
L{find_balancer_factory} does that lookup and L{build_balancer} also builds
the balancer, so a mistake is reported at start-up with its configuration
path.

Every built-in balancer is pure logic over the group's L{IBackend}s: it reads
C{available}, C{effective_weight} and C{in_flight} on every pick (they change
while the proxy runs), never picks a backend that is not available, and
returns C{None} when none is, which the proxy answers with 503.  Weights are
read as C{effective_weight}, which is below C{weight} while a backend ramps up
after coming back (slow start) and may then be a fraction.

A request that failed on one backend and may be sent to another (a retry)
is placed by L{pick_untried}: balancers that provide L{IRetryBalancer}, as
all the built-in ones but the hashing ones do, choose among the backends
not tried yet without taking a turn from new requests; others are asked
with C{pick} until they offer an untried backend.

The algorithms:

  - C{round_robin}, nginx's I{smooth weighted round robin}: every backend
    has a current weight, initially 0.  On each pick, every available
    backend's current weight grows by its weight, the backend with the
    largest current weight is chosen, and the sum of the available
    backends' weights is taken off the chosen one.  Over any run of
    C{sum(weights)} picks each backend is chosen C{weight} times, and the
    picks of a heavy backend are spread out instead of bunched together:
    weights 5, 1, 1 give C{a a b a c a a}, not C{a a a a a b c}.  A retry
    is one such step over the backends not tried yet, as in nginx: their
    current weights still add up to what they were, and the backend that
    failed keeps its place, so that it is not tried first by the next new
    request as well.

  - C{least_connections}: the backend with the fewest requests in flight
    relative to its weight, C{(in_flight + 1) / weight}.  The C{+ 1} counts
    the request being placed, so that of two idle backends the heavier one
    wins.  Ties go to the first tied backend after the one picked last, so
    that equally loaded backends take turns instead of the first one
    getting every request of a burst.

  - C{p2c}, the I{power of two choices} (Mitzenmacher): two distinct
    backends drawn at random in proportion to their weights, and of those
    the less loaded by the same measure as C{least_connections}.  Nearly as
    good at avoiding a slow backend as comparing them all, in constant time
    and without the herd effect of every proxy choosing the same least
    loaded backend.

  - C{random}: a backend drawn at random in proportion to its weight.

  - C{ring_hash}, C{client_ip_hash} and C{maglev}: consistent hashing of a
    request key (L{twistproxy.upstream.hashing}), so that requests with the
    same key go to the same backend and a backend going down moves only its
    own keys.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Collection, List, Mapping, Optional, Sequence, Tuple

from twisted.plugin import IPlugin
from zope.interface import implementer

from twistproxy.components import factory_repr, find_factory
from twistproxy.config import ConfigError, describe_value
from twistproxy.config.schema import build, names, setting
from twistproxy.interfaces import (
    IBackend,
    IBalancer,
    IBalancerFactory,
    IRequestInfo,
    IRetryBalancer,
)
from twistproxy.upstream.hashing import (
    CLIENT_ADDRESS,
    DEFAULT_TABLE_SIZE,
    KEY_FORMS,
    MAX_TABLE_SIZE,
    HashRing,
    RequestKey,
    check_table_size,
    hash_text,
    is_prime,
    maglev_table,
    ring_points,
)

# A backend whose effective weight is zero or less (which IBackend does not
# allow, but a plugin's backend might report) counts as this light rather
# than breaking a division: it is picked only when nothing else can be.
_MIN_WEIGHT = 1e-6

#: Points per unit of weight on a C{ring_hash} ring; nginx's and Ketama's.
DEFAULT_POINTS_PER_WEIGHT = 160

#: The most points a ring may have: it is built in pure Python.
MAX_RING_POINTS = 1 << 20

# The hashing balancers rebuild their ring or table when a weight changes,
# so they follow effective weights in steps of 1/_WEIGHT_STEPS of the
# configured weight: a slow start then costs at most that many rebuilds.
_WEIGHT_STEPS = 16


@implementer(IRetryBalancer)
class SmoothWeightedRoundRobin:
    """
    nginx's smooth weighted round robin over a fixed list of backends.

    Each pick is one pass over the backends with no allocation beyond the
    integers themselves.  A backend that is not available is skipped and its
    current weight left as it was, so that it resumes its share where it
    left off when it comes back.  C{effective_weight} is read on every pick, so a
    changed weight takes effect at once.  Ties go to the backend listed
    first, as in nginx.
    """

    __slots__ = ("_backends", "_current")

    def __init__(self, backends: Sequence[IBackend]) -> None:
        self._backends: List[IBackend] = list(backends)
        self._current: List[float] = [0] * len(self._backends)

    def pick_other(
        self, request: IRequestInfo, tried: Collection[IBackend] = ()
    ) -> Optional[IBackend]:
        # A step over the backends not tried: each gains its weight and the
        # chosen one gives up their total, which leaves their sum, and the
        # current weights of the tried ones, as they were.
        backends = self._backends
        current = self._current
        best = -1
        best_weight = 0.0
        total = 0.0
        for i, backend in enumerate(backends):
            if not backend.available or backend in tried:
                continue
            weight = backend.effective_weight
            total += weight
            value = current[i] + weight
            current[i] = value
            if best < 0 or value > best_weight:
                best = i
                best_weight = value
        if best < 0:
            return None
        current[best] = best_weight - total
        return backends[best]

    # A new request is a retry with nothing tried yet: one call, not two.
    pick = pick_other

    def __repr__(self) -> str:
        names = ", ".join(b.name for b in self._backends)
        return f"<SmoothWeightedRoundRobin [{names}]>"


@implementer(IRetryBalancer)
class OnlyBackend:
    """
    The balancer of one backend: that one while it is available.

    It is what round robin and least connections come to over a single
    backend, without their pass over a list, and their factories build it
    for a group (or failover tier, or region level) of one, the usual proxy
    in front of one application server.
    """

    __slots__ = ("_backend",)

    def __init__(self, backend: IBackend) -> None:
        self._backend = backend

    def pick_other(
        self, request: IRequestInfo, tried: Collection[IBackend] = ()
    ) -> Optional[IBackend]:
        backend = self._backend
        if backend.available and backend not in tried:
            return backend
        return None

    def pick(self, request: IRequestInfo) -> Optional[IBackend]:
        # pick_other with nothing tried, without its test.
        backend = self._backend
        return backend if backend.available else None

    def __repr__(self) -> str:
        return f"<OnlyBackend {self._backend.name}>"


@implementer(IRetryBalancer)
class LeastConnections:
    """
    Weighted least connections: the available backend with the smallest
    C{(in_flight + 1) / effective_weight}.

    Each pick is one pass over the backends.  It relies on the proxy
    raising a backend's C{in_flight} as soon as it is picked, before the
    next pick: otherwise a burst would all go to the same backend.
    """

    __slots__ = ("_backends", "_count", "_start")

    def __init__(self, backends: Sequence[IBackend]) -> None:
        self._backends: List[IBackend] = list(backends)
        self._count = len(self._backends)
        self._start = 0

    def pick_other(
        self, request: IRequestInfo, tried: Collection[IBackend] = ()
    ) -> Optional[IBackend]:
        backends = self._backends
        count = self._count
        start = self._start
        best = -1
        best_score = 0.0
        for k in range(count):
            i = start + k
            if i >= count:
                i -= count
            backend = backends[i]
            if not backend.available or backend in tried:
                continue
            weight = backend.effective_weight
            if weight < _MIN_WEIGHT:
                weight = _MIN_WEIGHT
            score = (backend.in_flight + 1) / weight
            # Strictly less: of tied backends the first one after the last
            # pick wins, which makes tied backends take turns.
            if best < 0 or score < best_score:
                best = i
                best_score = score
        if best < 0:
            return None
        self._start = best + 1 if best + 1 < count else 0
        return backends[best]

    # A new request is a retry with nothing tried yet: one call, not two.
    pick = pick_other

    def __repr__(self) -> str:
        names = ", ".join(b.name for b in self._backends)
        return f"<LeastConnections [{names}]>"


class _Randomized:
    """
    A balancer over a list of backends that draws at random.

    @param rng: The source of randomness; a new L{random.Random} seeded
        from the operating system by default.  Tests pass a seeded one.
    """

    __slots__ = ("_backends", "_random")

    def __init__(
        self, backends: Sequence[IBackend], rng: Optional[random.Random] = None
    ) -> None:
        self._backends: List[IBackend] = list(backends)
        self._random = rng if rng is not None else random.Random()

    def __repr__(self) -> str:
        names = ", ".join(b.name for b in self._backends)
        return f"<{type(self).__name__} [{names}]>"


@implementer(IRetryBalancer)
class WeightedRandom(_Randomized):
    """
    Picks an available backend at random, in proportion to its effective
    weight.
    """

    __slots__ = ()

    def pick_other(
        self, request: IRequestInfo, tried: Collection[IBackend] = ()
    ) -> Optional[IBackend]:
        # Two passes rather than a list of candidates: nothing to allocate.
        backends = self._backends
        total = 0.0
        for backend in backends:
            if backend.available and backend not in tried:
                weight = backend.effective_weight
                total += weight if weight > _MIN_WEIGHT else _MIN_WEIGHT
        if not total:
            return None
        left = self._random.random() * total
        last = None
        for backend in backends:
            if backend.available and backend not in tried:
                weight = backend.effective_weight
                left -= weight if weight > _MIN_WEIGHT else _MIN_WEIGHT
                if left < 0:
                    return backend
                last = backend
        # Rounding can leave a sliver at the end of the last weight.
        return last

    # A new request is a retry with nothing tried yet: one call, not two.
    pick = pick_other


def _draw(weights: Sequence[float], left: float, skip: int) -> int:
    """
    The index in C{weights} where C{left}, a number below their sum (less
    the weight at C{skip}, an index to leave out, or C{-1}), falls.
    """
    last = -1
    for i, weight in enumerate(weights):
        if i == skip:
            continue
        left -= weight
        if left < 0:
            return i
        last = i
    return last


@implementer(IRetryBalancer)
class PowerOfTwoChoices(_Randomized):
    """
    The power of two choices: two distinct available backends drawn at
    random in proportion to their effective weights, and of the two the
    one with the smaller C{(in_flight + 1) / effective_weight} (the first
    drawn on a tie).
    """

    __slots__ = ()

    def pick_other(
        self, request: IRequestInfo, tried: Collection[IBackend] = ()
    ) -> Optional[IBackend]:
        candidates = [b for b in self._backends if b.available and b not in tried]
        if len(candidates) < 2:
            return candidates[0] if candidates else None
        weights = [max(b.effective_weight, _MIN_WEIGHT) for b in candidates]
        total = sum(weights)
        rnd = self._random.random
        first = _draw(weights, rnd() * total, -1)
        second = _draw(weights, rnd() * (total - weights[first]), first)
        one = candidates[first]
        other = candidates[second]
        # (other.in_flight + 1) / w2 < (one.in_flight + 1) / w1, without
        # dividing.
        if (other.in_flight + 1) * weights[first] < (
            one.in_flight + 1
        ) * weights[second]:
            return other
        return one

    # A new request is a retry with nothing tried yet: one call, not two.
    pick = pick_other


def pick_untried(
    balancer: IBalancer,
    backends: Sequence[IBackend],
    request: IRequestInfo,
    tried: Collection[IBackend],
) -> Optional[IBackend]:
    """
    A backend for a retry of C{request}: available and not in C{tried}.

    @param balancer: The balancer over C{backends}.  One that provides
        L{IRetryBalancer} chooses; any other is asked with C{pick}, at most
        once per backend, until it offers an untried backend, and if it
        keeps offering tried ones (a hash), the first untried available
        backend of C{backends} is taken.
    @return: The backend, or C{None} when every available one was tried.
    """
    if IRetryBalancer.providedBy(balancer):
        return balancer.pick_other(request, tried)
    for _ in range(len(backends)):
        backend = balancer.pick(request)
        if backend is None:
            return None
        if backend not in tried:
            return backend
    for backend in backends:
        if backend.available and backend not in tried:
            return backend
    return None


def _hash_weight(backend: IBackend, effective: float) -> float:
    """
    The weight a hashing balancer gives an available backend: C{effective}
    rounded to a step of 1/L{_WEIGHT_STEPS} of the configured weight, and at
    least one step.
    """
    full = backend.weight if backend.weight > 0 else 1
    steps = round(effective * _WEIGHT_STEPS / full)
    return max(steps, 1) * full / _WEIGHT_STEPS


def _availability(backends: Sequence[IBackend]) -> List[Optional[float]]:
    """
    What a hashing balancer's ring or table depends on: each backend's
    effective weight, or C{None} when it is not available.
    """
    return [b.effective_weight if b.available else None for b in backends]


@implementer(IBalancer)
class RingHash:
    """
    Consistent hashing on a ring (Ketama), as
    L{twistproxy.upstream.hashing.HashRing} describes.

    An available backend of effective weight C{w} has
    C{round(w * points_per_weight)} points on the ring.  The ring holds
    available backends only, which is the same as walking past the points
    of unavailable ones: a key whose backend is down goes to the backend of
    the next point, and comes back when it is up again.  The ring is
    rebuilt on the first pick after availability or a weight changed.

    @param key: What to hash.
    @param points_per_weight: Points per unit of weight.
    """

    __slots__ = (
        "_backends",
        "_key",
        "_points_per_weight",
        "_points",
        "_state",
        "_counts",
        "_ring",
    )

    def __init__(
        self,
        backends: Sequence[IBackend],
        key: RequestKey = CLIENT_ADDRESS,
        points_per_weight: int = DEFAULT_POINTS_PER_WEIGHT,
    ) -> None:
        if points_per_weight < 1:
            raise ValueError("points_per_weight must be at least 1")
        self._backends: List[IBackend] = list(backends)
        self._key = key
        self._points_per_weight = points_per_weight
        # Each backend's points so far, computed once and reused by every
        # rebuild: a weight change only takes a longer or shorter prefix.
        self._points: List[List[int]] = [[] for _ in self._backends]
        self._state: Optional[List[Optional[float]]] = None
        self._counts: Optional[List[int]] = None
        self._ring: HashRing[IBackend] = HashRing(())

    @property
    def key(self) -> RequestKey:
        """
        What this balancer hashes.
        """
        return self._key

    def pick(self, request: IRequestInfo) -> Optional[IBackend]:
        state = _availability(self._backends)
        if state != self._state:
            self._update(state)
        return self._ring.lookup(hash_text(self._key.extract(request)))

    def _update(self, state: List[Optional[float]]) -> None:
        self._state = state
        per_weight = self._points_per_weight
        counts = [
            0 if effective is None
            else max(1, round(_hash_weight(backend, effective) * per_weight))
            for backend, effective in zip(self._backends, state)
        ]
        if counts == self._counts:
            return
        self._counts = counts
        members = []
        for backend, points, count in zip(self._backends, self._points, counts):
            if not count:
                continue
            if len(points) < count:
                points.extend(ring_points(backend.name, len(points), count))
            members.append((backend, points[:count]))
        self._ring = HashRing(members)

    def __repr__(self) -> str:
        names = ", ".join(b.name for b in self._backends)
        return f"<RingHash key={self._key} [{names}]>"


@implementer(IBalancer)
class Maglev:
    """
    Consistent hashing with a Maglev lookup table, as
    L{twistproxy.upstream.hashing.maglev_table} describes.

    The table holds available backends only, with slots in proportion to
    their effective weights.  It is rebuilt on the first pick after
    availability or a weight changed, which takes some 30 ms for the
    default 65537 slots; between changes a pick is one hash and one index.

    @param key: What to hash.
    @param table_size: A prime, at least the number of backends and at
        most L{MAX_TABLE_SIZE}.
    @raises ValueError: when C{table_size} is not such a prime.
    """

    __slots__ = ("_backends", "_key", "_size", "_state", "_weights", "_table")

    def __init__(
        self,
        backends: Sequence[IBackend],
        key: RequestKey = CLIENT_ADDRESS,
        table_size: int = DEFAULT_TABLE_SIZE,
    ) -> None:
        self._backends: List[IBackend] = list(backends)
        # The table is built on the first pick: check its size now.
        check_table_size(table_size, len(self._backends))
        self._key = key
        self._size = table_size
        self._state: Optional[List[Optional[float]]] = None
        self._weights: Optional[List[Optional[float]]] = None
        self._table: List[IBackend] = []

    @property
    def key(self) -> RequestKey:
        """
        What this balancer hashes.
        """
        return self._key

    @property
    def table(self) -> Sequence[IBackend]:
        """
        The current lookup table: for each slot, its backend.  Empty when
        no backend is available.
        """
        state = _availability(self._backends)
        if state != self._state:
            self._update(state)
        return self._table

    def pick(self, request: IRequestInfo) -> Optional[IBackend]:
        table = self.table
        if not table:
            return None
        return table[hash_text(self._key.extract(request)) % self._size]

    def _update(self, state: List[Optional[float]]) -> None:
        self._state = state
        weights = [
            None if effective is None else _hash_weight(backend, effective)
            for backend, effective in zip(self._backends, state)
        ]
        if weights == self._weights:
            return
        self._weights = weights
        members = [
            (backend, weight)
            for backend, weight in zip(self._backends, weights)
            if weight is not None
        ]
        slots = maglev_table([(b.name, w) for b, w in members], self._size)
        self._table = [members[i][0] for i in slots]

    def __repr__(self) -> str:
        names = ", ".join(b.name for b in self._backends)
        return f"<Maglev key={self._key} size={self._size} [{names}]>"


def _request_key(value: object, path: str) -> RequestKey:
    """
    The C{key} option: which part of the request to hash.
    """
    if not isinstance(value, str):
        raise ConfigError(
            path, f"must be a string ({', '.join(KEY_FORMS)}), not {describe_value(value)}")
    try:
        return RequestKey.parse(value)
    except ValueError as e:
        raise ConfigError(path, str(e)) from e


def _whole(value: object, path: str) -> int:
    # bool is a subclass of int: "table_size = true" must not mean 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(path, f"must be an integer, not {describe_value(value)}")
    return value


def _between(value: int, path: str, minimum: int, maximum: int) -> int:
    if not minimum <= value <= maximum:
        raise ConfigError(path, f"must be between {minimum} and {maximum} (got {value})")
    return value


def _points(value: object, path: str) -> int:
    return _between(_whole(value, path), path, 1, MAX_RING_POINTS)


def _points_per_weight(backends: Sequence[IBackend], value: int, path: str) -> int:
    """
    The C{points_per_weight} option of the ring balancers, checked against
    the size of the ring it makes.
    """
    points = value * sum(max(b.weight, 1) for b in backends)
    if points > MAX_RING_POINTS:
        raise ConfigError(
            f"{path}.points_per_weight",
            f"the ring would have {points} points, more than "
            f"{MAX_RING_POINTS}; lower points_per_weight or the weights",
        )
    return value


@dataclass(frozen=True)
class NoOptions:
    """
    The options of a balancer that takes none.
    """


@dataclass(frozen=True)
class ClientIPHashOptions:
    """
    The options of C{client_ip_hash}.
    """

    points_per_weight: int = setting(DEFAULT_POINTS_PER_WEIGHT, check=_points)


@dataclass(frozen=True)
class RingHashOptions:
    """
    The options of C{ring_hash}.
    """

    key: RequestKey = setting(CLIENT_ADDRESS, check=_request_key)
    points_per_weight: int = setting(DEFAULT_POINTS_PER_WEIGHT, check=_points)


@dataclass(frozen=True)
class MaglevOptions:
    """
    The options of C{maglev}; the bounds of C{table_size} depend on the
    number of backends.
    """

    key: RequestKey = setting(CLIENT_ADDRESS, check=_request_key)
    table_size: int = setting(DEFAULT_TABLE_SIZE, check=_whole)


class _Factory:
    """
    A built-in balancer factory: C{fromConfig} reads the options declared
    by C{schema}, then C{_build} makes the balancer.  By default that is
    C{balancer(backends)}, for the factories that take no options.
    """

    name: str
    schema: type = NoOptions
    options: Tuple[str, ...] = ()
    balancer: Any

    def fromConfig(
        self,
        backends: Sequence[IBackend],
        options: Mapping[str, Any],
        path: str,
    ) -> IBalancer:
        if self.options:
            takes = f"the {self.name} balancer takes {', '.join(self.options)}"
        else:
            takes = f"the {self.name} balancer takes no options"
        return self._build(backends, build(self.schema, options, path, takes=takes), path)

    def _build(self, backends: Sequence[IBackend], options: Any, path: str) -> IBalancer:
        return self.balancer(backends)

    __repr__ = factory_repr


class _ListFactory(_Factory):
    """
    A factory of a balancer that, over one backend, picks it whenever it is
    available and keeps no state that another pick would see: it builds an
    L{OnlyBackend} then, which does the same with less work per request.
    """

    def _build(self, backends: Sequence[IBackend], options: Any, path: str) -> IBalancer:
        if len(backends) == 1:
            return OnlyBackend(backends[0])
        return self.balancer(backends)


@implementer(IBalancerFactory, IPlugin)
class RoundRobinFactory(_ListFactory):
    """
    The factory of L{SmoothWeightedRoundRobin}, the default balancer.

    It takes no options: any key in C{balancer_options} is an error.
    """

    name = "round_robin"
    help = (
        "Smooth weighted round robin (as in nginx): each backend gets its "
        "weight's share of requests, evenly interleaved."
    )

    balancer = SmoothWeightedRoundRobin


@implementer(IBalancerFactory, IPlugin)
class LeastConnectionsFactory(_ListFactory):
    """
    The factory of L{LeastConnections}.  It takes no options.
    """

    name = "least_connections"
    help = (
        "Weighted least connections: the backend with the fewest requests "
        "in flight for its weight."
    )

    balancer = LeastConnections


@implementer(IBalancerFactory, IPlugin)
class PowerOfTwoChoicesFactory(_Factory):
    """
    The factory of L{PowerOfTwoChoices}.  It takes no options; each
    balancer gets its own L{random.Random} seeded from the operating system.
    """

    name = "p2c"
    help = (
        "Power of two choices: the less loaded of two backends drawn at "
        "random by weight."
    )

    balancer = PowerOfTwoChoices


@implementer(IBalancerFactory, IPlugin)
class RandomFactory(_Factory):
    """
    The factory of L{WeightedRandom}.  It takes no options; each balancer
    gets its own L{random.Random} seeded from the operating system.
    """

    name = "random"
    help = "Weighted random: a backend drawn at random in proportion to its weight."

    balancer = WeightedRandom


@implementer(IBalancerFactory, IPlugin)
class RingHashFactory(_Factory):
    """
    The factory of L{RingHash}.

    Options: C{key} (C{"client_address"}, the default, C{"path"},
    C{"header:NAME"} or C{"cookie:NAME"}) and C{points_per_weight} (an
    integer, default L{DEFAULT_POINTS_PER_WEIGHT}; the whole ring may have
    at most L{MAX_RING_POINTS} points).
    """

    name = "ring_hash"
    help = (
        "Consistent hashing on a ring (Ketama) of the client address, path, "
        "a header or a cookie."
    )

    schema = RingHashOptions
    options = names(RingHashOptions)

    def _build(self, backends: Sequence[IBackend], options: RingHashOptions,
               path: str) -> IBalancer:
        return RingHash(backends, options.key,
                        _points_per_weight(backends, options.points_per_weight, path))


@implementer(IBalancerFactory, IPlugin)
class ClientIPHashFactory(_Factory):
    """
    The factory of L{RingHash} over the client's address (the whole
    address, IPv4 or IPv6, unlike nginx's C{ip_hash}, which hashes only the
    first three bytes of an IPv4 address).

    Option: C{points_per_weight}, as for L{RingHashFactory}.  It takes no
    C{key}: that is what C{ring_hash} is for.
    """

    name = "client_ip_hash"
    help = (
        "Consistent hashing of the client's address: each client sticks to "
        "one backend."
    )

    schema = ClientIPHashOptions
    options = names(ClientIPHashOptions)

    def fromConfig(
        self,
        backends: Sequence[IBackend],
        options: Mapping[str, Any],
        path: str,
    ) -> IBalancer:
        # Said before the unknown-option check, which would only say that
        # key is not one of the options.
        if "key" in options:
            raise ConfigError(
                f"{path}.key",
                f"the {self.name} balancer always hashes the client's "
                f"address; use balancer = \"ring_hash\" to choose the key",
            )
        return super().fromConfig(backends, options, path)

    def _build(self, backends: Sequence[IBackend], options: ClientIPHashOptions,
               path: str) -> IBalancer:
        return RingHash(backends, CLIENT_ADDRESS,
                        _points_per_weight(backends, options.points_per_weight, path))


@implementer(IBalancerFactory, IPlugin)
class MaglevFactory(_Factory):
    """
    The factory of L{Maglev}.

    Options: C{key}, as for L{RingHashFactory}, and C{table_size} (a prime,
    at least the number of backends and at most L{MAX_TABLE_SIZE}; default
    L{DEFAULT_TABLE_SIZE}).
    """

    name = "maglev"
    help = (
        "Consistent hashing with Google's Maglev lookup table: constant-time "
        "picks, even shares."
    )

    schema = MaglevOptions
    options = names(MaglevOptions)

    def _build(self, backends: Sequence[IBackend], options: MaglevOptions,
               path: str) -> IBalancer:
        size = _between(options.table_size, f"{path}.table_size",
                        max(len(backends), 2), MAX_TABLE_SIZE)
        if not is_prime(size):
            raise ConfigError(
                f"{path}.table_size",
                f"must be a prime number (got {size}); for example 65537, "
                f"131071 or 262147",
            )
        return Maglev(backends, options.key, size)


def find_balancer_factory(name: str, path: str) -> IBalancerFactory:
    """
    L{find_factory <twistproxy.components.find_factory>} for balancers:
    C{name} is a plugin's name (C{'round_robin'}) or a dotted path
    (C{'mypkg.balancers.factory'}), C{path} where the configuration gave it.
    """
    return find_factory(IBalancerFactory, name, path, "balancer")


def build_balancer(
    name: str,
    backends: Sequence[IBackend],
    options: Mapping[str, Any],
    path: str,
) -> IBalancer:
    """
    Find a balancer factory by name and build a balancer with it.

    @param name: As for L{find_balancer_factory}.
    @param backends: The upstream group's backends, in configuration order.
    @param options: The group's C{balancer_options}.
    @param path: The configuration path of the upstream group, for example
        C{'upstreams.api'}.  A bad name is reported at
        C{'upstreams.api.balancer'}, a bad option at
        C{'upstreams.api.balancer_options.<key>'}.
    @raises ConfigError: when the factory cannot be found or rejects the
        options.
    @return: A new balancer.
    """
    factory = find_balancer_factory(name, f"{path}.balancer")
    return factory.fromConfig(backends, options, f"{path}.balancer_options")
