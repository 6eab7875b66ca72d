# -*- test-case-name: tests.test_hashing -*-
"""
Consistent hashing: the shared parts of the hashing balancers.

A hashing balancer sends every request with the same I{key} (the client's
address, the path, a header or a cookie) to the same backend, so that a
backend's cache or in-memory state keeps serving the same clients or
objects.  Plain C{hash(key) % n} would do that, but it remaps almost every
key whenever C{n} changes, that is whenever a backend goes down, comes back
or is added.  I{Consistent} hashing remaps only about C{1/n} of the keys.
This module holds the two classic ways to do it, and the pieces they share:

  - L{RequestKey}: which part of a request is the key (C{client_address},
    C{path}, C{header:NAME}, C{cookie:NAME}), falling back to the client's
    address when a request lacks the header or cookie.

  - L{hash64}: a 64-bit hash that is the same in every process and on every
    machine (BLAKE2b), unlike Python's C{hash()}, which is salted per
    process.  Several proxies in front of the same backends therefore send
    the same key to the same backend.

  - L{HashRing}: Karger's hash ring as Ketama popularised it.  Each backend
    owns many pseudo-random points on a circle of 2**64 positions, in
    proportion to its weight; a key belongs to the first point at or after
    its hash.  Taking a backend's points off the ring hands each of its keys
    to the next point, which belongs to a random other backend, and moves
    nothing else.

  - L{maglev_table}: Google's Maglev lookup table (Eisenbud et al., NSDI
    2016).  Every backend fills slots of a table of prime size C{M} in the
    order of its own permutation of C{0 .. M-1}, taking turns, until the
    table is full; a key belongs to slot C{hash % M}.  Lookups are a single
    index instead of a binary search, and shares are within a fraction of
    a percent of the weights, at the price of a small extra disruption
    (a few percent of all keys) when the set of backends changes.

Points and permutations are derived from the backends' names only, never
from their position in the configuration, so the same names give the same
ring and table everywhere, and a backend added to a group only takes keys,
it does not shuffle the others.

Nothing here does I/O or needs a reactor.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from hashlib import blake2b
from typing import Generic, List, Optional, Sequence, Tuple, TypeVar

from twistproxy.config import is_token
from twistproxy.interfaces import IRequestInfo

_T = TypeVar("_T")

#: The key kinds that take no name, and those written C{kind:NAME}.
PLAIN_KEYS = ("client_address", "path")
NAMED_KEYS = ("header", "cookie")

#: The forms a key may take, for error messages and docs.
KEY_FORMS = ("client_address", "path", "header:NAME", "cookie:NAME")

#: RFC 9110 5.6.2 token: what header field names and (RFC 6265) cookie
#: names are made of.

#: The largest Maglev table L{maglev_table} builds: one entry per slot,
#: built in pure Python, so a bound keeps start-up and rebuilds short.
MAX_TABLE_SIZE = 1 << 20

#: The table size Maglev's authors use for small groups; prime.
DEFAULT_TABLE_SIZE = 65537


def hash64(data: bytes) -> int:
    """
    A 64-bit hash of C{data} that is the same in every process.

    @param data: What to hash.
    @return: An integer in C{[0, 2**64)}.
    """
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big")


def hash_text(text: str) -> int:
    """
    L{hash64} of a string's UTF-8 encoding.

    Lone surrogates (which a header decoded with C{surrogateescape} may
    contain) are encoded as they are rather than rejected, so that no key
    makes a pick fail.
    """
    return hash64(text.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True)
class RequestKey:
    """
    Which part of a request a hashing balancer hashes.

    @ivar kind: C{'client_address'}, C{'path'} (the request target as sent,
        query included), C{'header'} or C{'cookie'}.
    @ivar name: The header's or cookie's name for C{'header'} and
        C{'cookie'} (for example C{'X-User'}); C{''} otherwise.
    """

    kind: str
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind in PLAIN_KEYS:
            if self.name:
                raise ValueError(f"{self.kind} takes no name")
        elif self.kind in NAMED_KEYS:
            if not is_token(self.name):
                raise ValueError(
                    f"{self.name!r} is not a valid {self.kind} name (letters, "
                    f"digits and !#$%&'*+-.^_`|~, not empty)"
                )
        else:
            raise ValueError(f"unknown key kind {self.kind!r}")

    @classmethod
    def parse(cls, spec: str) -> "RequestKey":
        """
        Parse the C{key} option of a hashing balancer.

        @param spec: One of L{KEY_FORMS}, for example C{'header:X-User'}.
            Kinds are lower-case; a header's name may be in any case, a
            cookie's is case-sensitive.
        @raises ValueError: when C{spec} has none of those forms; the
            message says why.
        @return: The key.
        """
        kind, colon, name = spec.partition(":")
        if kind in NAMED_KEYS and not colon:
            raise ValueError(f"{kind} needs a name: {kind}:NAME")
        if kind in PLAIN_KEYS and colon:
            raise ValueError(f"{kind} takes no name")
        if kind not in PLAIN_KEYS and kind not in NAMED_KEYS:
            raise ValueError(
                f"unknown key {spec!r}; expected one of {', '.join(KEY_FORMS)}"
            )
        return cls(kind, name)

    def extract(self, request: IRequestInfo) -> str:
        """
        The key of a request.

        @param request: The request.
        @return: The header's or cookie's value, or, when the request has
            no such header or cookie or it is empty, the client's address;
            the path or the client's address for those kinds.
        """
        kind = self.kind
        if kind == "client_address":
            return request.client_address
        if kind == "path":
            return request.path
        if kind == "header":
            value = request.header(self.name)
        else:
            value = request.cookie(self.name)
        return value if value else request.client_address

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}" if self.name else self.kind


CLIENT_ADDRESS = RequestKey("client_address")


def ring_points(name: str, start: int, stop: int) -> List[int]:
    """
    The points numbered C{start} to C{stop - 1} of the backend named
    C{name} on a L{HashRing}.

    A backend's points are an endless sequence fixed by its name, and a
    backend of weight C{w} takes the first C{w * points_per_weight} of them,
    so changing a weight only adds or removes points of that backend.
    """
    prefix = f"{name}#"
    return [hash_text(f"{prefix}{i}") for i in range(start, stop)]


class HashRing(Generic[_T]):
    """
    An immutable consistent-hash ring.

    @param members: Pairs of an owner (a backend, say) and the hashes of
        its points, for example from L{ring_points}.  When two owners have
        a point at the same position (which 64-bit hashes make vanishingly
        unlikely) the one listed first owns it.
    """

    __slots__ = ("_hashes", "_owners")

    def __init__(self, members: Sequence[Tuple[_T, Sequence[int]]]) -> None:
        points = sorted(
            (h, index)
            for index, (owner, hashes) in enumerate(members)
            for h in hashes
        )
        self._hashes: List[int] = [h for h, _ in points]
        self._owners: List[_T] = [members[index][0] for _, index in points]

    def __len__(self) -> int:
        """
        The number of points on the ring.
        """
        return len(self._hashes)

    def lookup(self, key_hash: int) -> Optional[_T]:
        """
        The owner of the first point at or after C{key_hash}, going round
        past the largest point to the smallest.

        @param key_hash: A hash in C{[0, 2**64)}, for example from
            L{hash_text}.
        @return: That point's owner, or C{None} when the ring is empty.
        """
        hashes = self._hashes
        if not hashes:
            return None
        i = bisect_left(hashes, key_hash)
        if i == len(hashes):
            i = 0
        return self._owners[i]


def is_prime(n: int) -> bool:
    """
    Whether C{n} is a prime number (trial division: meant for table sizes,
    up to L{MAX_TABLE_SIZE}).
    """
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


def check_table_size(size: int, count: int) -> None:
    """
    Check that C{size} will do for a Maglev table of C{count} members.

    @raises ValueError: when C{size} is not a prime, is above
        L{MAX_TABLE_SIZE}, or is smaller than C{count}.
    """
    if not is_prime(size) or size > MAX_TABLE_SIZE:
        raise ValueError(
            f"table size must be a prime at most {MAX_TABLE_SIZE}, not {size}"
        )
    if count > size:
        raise ValueError(
            f"table size {size} is smaller than the number of backends "
            f"({count})"
        )


def maglev_permutation(name: str, size: int) -> Tuple[int, int]:
    """
    The C{offset} and C{skip} of a backend's permutation in a Maglev table
    of prime size C{size}: the backend's preferred slots are C{offset},
    C{offset + skip}, C{offset + 2 * skip}, ... modulo C{size}, which visits
    every slot once because C{size} is prime and C{0 < skip < size}.
    """
    digest = blake2b(
        name.encode("utf-8", "surrogatepass"), digest_size=16, person=b"maglev"
    ).digest()
    offset = int.from_bytes(digest[:8], "big") % size
    skip = int.from_bytes(digest[8:], "big") % (size - 1) + 1
    return offset, skip


def maglev_table(members: Sequence[Tuple[str, float]], size: int) -> List[int]:
    """
    Build a weighted Maglev lookup table.

    The members take turns, in the order of their names, each claiming the
    next slot of its permutation (L{maglev_permutation}) that is still free,
    so the table depends on the names and weights only, not on the order
    C{members} lists them in.  Weights are honoured as Envoy does: a member
    whose weight is a third of the largest takes a turn only every third
    round, so its share of slots is its share of the weights.

    @param members: Pairs of a backend's name and its weight, a positive
        number; names should differ.
    @param size: The table size: a prime, at least C{len(members)} and at
        most L{MAX_TABLE_SIZE}.  Shares follow the weights more closely the
        larger it is relative to the number of members; Maglev's authors
        suggest at least a hundred slots per member.
    @raises ValueError: when C{size} is not such a prime or a weight is not
        positive.
    @return: A list of C{size} indices into C{members}; a key with hash
        C{h} belongs to member C{table[h % size]}.  Empty when C{members}
        is.
    """
    count = len(members)
    check_table_size(size, count)
    if not count:
        return []
    weights = [weight for _, weight in members]
    if min(weights) <= 0:
        raise ValueError("weights must be positive")
    largest = max(weights)
    order = sorted(range(count), key=lambda i: members[i][0])
    positions = [0] * count
    skips = [0] * count
    for i, (name, _) in enumerate(members):
        positions[i], skips[i] = maglev_permutation(name, size)
    credit = [0.0] * count
    table = [-1] * size
    filled = 0
    turn = 0
    # Hot loop of the build, kept free of function calls: about 30 ms for
    # 65537 slots on CPython, whatever the number of members.
    while True:
        turn += 1
        for i in order:
            if turn * weights[i] < credit[i]:
                continue
            credit[i] += largest
            slot = positions[i]
            step = skips[i]
            while table[slot] >= 0:
                slot += step
                if slot >= size:
                    slot -= size
            table[slot] = i
            slot += step
            if slot >= size:
                slot -= size
            positions[i] = slot
            filled += 1
            if filled == size:
                return table
