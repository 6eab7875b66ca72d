# -*- test-case-name: tests.test_balancers -*-
"""
Kits for testing balancers: L{FakeRequestInfo}, an L{IRequestInfo} built
from plain values to pass to a balancer's C{pick}, and
L{BalancerContractMixin}, the tests every L{IBalancer} must pass.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping as _MappingABC
from unittest import SkipTest
from typing import Deque, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from zope.interface import implementer
from zope.interface.verify import verifyObject

from twistproxy.interfaces import IBackend, IBalancer, IRequestInfo, IRetryBalancer
from twistproxy.upstream.backend import Backend
from twistproxy.upstream.balancers import pick_untried


@implementer(IRequestInfo)
class FakeRequestInfo:
    """
    An L{IRequestInfo} made of the values given to it.

    @param headers: The request's header fields, as a mapping or as an
        iterable of C{(name, value)} pairs (to give a field more than once);
        names in any case.
    """

    def __init__(
        self,
        method: str = "GET",
        path: str = "/",
        host: str = "example.com",
        client_address: str = "127.0.0.1",
        headers: Optional[
            Union[Mapping[str, str], Iterable[Tuple[str, str]]]
        ] = None,
    ) -> None:
        self.method = method
        self.path = path
        self.host = host
        self.client_address = client_address
        if headers is None:
            pairs: Iterable[Tuple[str, str]] = ()
        elif isinstance(headers, _MappingABC):
            pairs = headers.items()
        else:
            pairs = headers
        self._headers: List[Tuple[str, str]] = [
            (name.lower(), value) for name, value in pairs
        ]

    def header(self, name: str) -> Optional[str]:
        name = name.lower()
        for field, value in self._headers:
            if field == name:
                return value
        return None

    def cookie(self, name: str) -> Optional[str]:
        from twistproxy.http.headers import find_cookie

        return find_cookie((v for f, v in self._headers if f == "cookie"), name)

    def __repr__(self) -> str:
        return (
            f"<FakeRequestInfo {self.method} {self.host}{self.path}"
            f" from {self.client_address}>"
        )


def _backends(*weights: int) -> List[Backend]:
    """
    Backends named C{'b0'}, C{'b1'}, ... with the given weights.
    """
    return [
        Backend(f"b{i}", "http", "127.0.0.1", 8000 + i, weight)
        for i, weight in enumerate(weights)
    ]


class BalancerContractMixin:
    """
    The tests every L{IBalancer} must pass.

    Mix into a trial C{TestCase} and define L{makeBalancer}.  The class
    attributes tune the tests for balancers that are not round robin:

    @cvar honoursWeights: Set to C{False} for a balancer that ignores
        weights by design; the weight tests are then skipped.
    @cvar weightPicks: How many requests the weight tests place.
    @cvar weightTolerance: How far, as a fraction of all picks, each
        backend's share may be from its weight's share in the weight tests:
        C{0.02} means within two percentage points.  A randomised balancer
        may need more, and so may a hashing one (its shares over many keys
        are only as even as its ring or table).
    @cvar concurrency: How many requests the tests keep in flight, as the
        proxy does: a picked backend's C{in_flight} is raised at once and
        lowered again C{concurrency} picks later (all are lowered at the end
        of each batch of picks).  Balancers that prefer the least loaded
        backend only follow weights under load; C{0} places requests
        without ever raising C{in_flight}.
    """

    honoursWeights = True
    weightPicks = 6000
    weightTolerance = 0.02
    concurrency = 30

    def makeBalancer(self, backends: Sequence[IBackend]) -> IBalancer:
        """
        Build the balancer under test over C{backends}.  Subclasses must
        define this.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must define makeBalancer(backends)"
        )

    def makeRequest(self, index: int) -> IRequestInfo:
        """
        The C{index}th request of a test.  Requests differ in client address
        and path, so that balancers that hash either still spread them.
        Override to vary what your balancer looks at.
        """
        return FakeRequestInfo(
            path=f"/item/{index}",
            client_address=f"10.{(index >> 16) & 255}.{(index >> 8) & 255}."
            f"{index & 255}",
        )

    def _pickMany(
        self, balancer: IBalancer, count: int
    ) -> List[Optional[IBackend]]:
        picked: List[Optional[IBackend]] = []
        in_flight: Deque[IBackend] = deque()
        try:
            for i in range(count):
                backend = balancer.pick(self.makeRequest(i))
                picked.append(backend)
                if backend is None or self.concurrency <= 0:
                    continue
                backend.in_flight += 1
                in_flight.append(backend)
                if len(in_flight) > self.concurrency:
                    in_flight.popleft().in_flight -= 1
        finally:
            for backend in in_flight:
                backend.in_flight -= 1
        return picked

    def _assertShares(
        self,
        backends: Sequence[IBackend],
        weights: Sequence[float],
        picked: Sequence[Optional[IBackend]],
    ) -> None:
        """
        Each of C{backends} got its share of C{picked} by C{weights}, within
        C{weightTolerance}.
        """
        counts = Counter(picked)
        self.assertNotIn(None, counts)
        for backend, weight in zip(backends, weights):
            expected = weight / sum(weights)
            share = counts[backend] / len(picked)
            self.assertTrue(
                abs(share - expected) <= self.weightTolerance,
                f"{backend.name} (weight {weight}) got {share:.4f} of the "
                f"picks, expected {expected:.4f} "
                f"\N{PLUS-MINUS SIGN} {self.weightTolerance}",
            )

    def test_provides_IBalancer(self) -> None:
        """
        The balancer provides L{IBalancer}.
        """
        balancer = self.makeBalancer(_backends(1, 1))
        self.assertTrue(verifyObject(IBalancer, balancer))

    def test_picks_a_backend_of_its_group(self) -> None:
        """
        Every pick returns one of the backends the balancer was built with.
        """
        backends = _backends(1, 2, 3)
        balancer = self.makeBalancer(backends)
        for picked in self._pickMany(balancer, 100):
            self.assertIn(picked, backends)

    def test_single_backend(self) -> None:
        """
        A group of one available backend gets every request.
        """
        backends = _backends(3)
        balancer = self.makeBalancer(backends)
        self.assertEqual(self._pickMany(balancer, 50), backends * 50)

    def test_never_picks_unavailable(self) -> None:
        """
        A backend whose C{available} is C{False} is never picked, and the
        others still are.
        """
        backends = _backends(1, 1, 1)
        backends[1].available = False
        balancer = self.makeBalancer(backends)
        picked = self._pickMany(balancer, 300)
        self.assertNotIn(backends[1], picked)
        self.assertEqual(set(picked), {backends[0], backends[2]})

    def test_never_picks_backend_marked_down_later(self) -> None:
        """
        A backend marked unavailable after the balancer was built, and after
        it has been picked, is not picked any more.
        """
        backends = _backends(1, 1, 1)
        balancer = self.makeBalancer(backends)
        self.assertIn(backends[2], self._pickMany(balancer, 300))
        backends[2].available = False
        self.assertNotIn(backends[2], self._pickMany(balancer, 300))

    def test_none_when_all_unavailable(self) -> None:
        """
        When no backend is available, C{pick} returns C{None}.
        """
        backends = _backends(1, 2)
        for backend in backends:
            backend.available = False
        balancer = self.makeBalancer(backends)
        self.assertEqual(self._pickMany(balancer, 10), [None] * 10)

    def test_none_when_all_go_down_later(self) -> None:
        """
        When every backend goes down after the balancer has picked some,
        C{pick} returns C{None}, and picks them again once they are back.
        """
        backends = _backends(1, 2)
        balancer = self.makeBalancer(backends)
        self.assertNotIn(None, self._pickMany(balancer, 100))
        for backend in backends:
            backend.available = False
        self.assertEqual(self._pickMany(balancer, 10), [None] * 10)
        for backend in backends:
            backend.available = True
        self.assertEqual(set(self._pickMany(balancer, 300)), set(backends))

    def test_none_when_no_backends(self) -> None:
        """
        A balancer over an empty group returns C{None}.
        """
        balancer = self.makeBalancer([])
        self.assertIsNone(balancer.pick(self.makeRequest(0)))

    def test_picked_again_when_available_again(self) -> None:
        """
        A backend that was marked down and then available again is picked
        again.
        """
        backends = _backends(1, 1, 1)
        balancer = self.makeBalancer(backends)
        backends[0].available = False
        self.assertNotIn(backends[0], self._pickMany(balancer, 300))
        backends[0].available = True
        self.assertIn(backends[0], self._pickMany(balancer, 300))

    def test_retry_goes_to_untried(self) -> None:
        """
        A retry (L{pick_untried}, which uses C{pick_other} when the balancer
        provides L{IRetryBalancer}) never goes to a backend the request
        was tried on, nor to an unavailable one, reaches every available
        backend of the group, and finds none once they were all tried.
        """
        backends = _backends(1, 2, 3, 1)
        backends[3].available = False
        balancer = self.makeBalancer(backends)
        if IRetryBalancer.providedBy(balancer):
            self.assertTrue(verifyObject(IRetryBalancer, balancer))
        for i in range(20):
            request = self.makeRequest(i)
            tried = [balancer.pick(request)]
            while True:
                other = pick_untried(balancer, backends, request, tried)
                if other is None:
                    break
                self.assertNotIn(other, tried)
                self.assertTrue(other.available)
                tried.append(other)
            self.assertEqual(set(tried), set(backends[:3]))

    def test_honours_weights(self) -> None:
        """
        Over C{weightPicks} requests to backends of weights 1, 2 and 3, each
        backend gets its weight's share of the requests (1/6, 2/6, 3/6),
        within C{weightTolerance}.
        """
        if not self.honoursWeights:
            raise SkipTest(f"{type(self).__name__} ignores weights")
        weights = (1, 2, 3)
        backends = _backends(*weights)
        balancer = self.makeBalancer(backends)
        picked = self._pickMany(balancer, self.weightPicks)
        self._assertShares(backends, weights, picked)

    def test_honours_effective_weights(self) -> None:
        """
        Shares follow C{effective_weight}, not C{weight}, including when it
        changes after the balancer has picked and is a fraction (as during
        slow start): backends of weight 2 whose effective weights become
        0.5, 1 and 1.5 get 1/6, 2/6 and 3/6 of the requests.
        """
        if not self.honoursWeights:
            raise SkipTest(f"{type(self).__name__} ignores weights")
        backends = _backends(2, 2, 2)
        balancer = self.makeBalancer(backends)
        self._pickMany(balancer, 100)
        effective = (0.5, 1.0, 1.5)
        for backend, weight in zip(backends, effective):
            backend.effective_weight = weight
        picked = self._pickMany(balancer, self.weightPicks)
        self._assertShares(backends, effective, picked)
