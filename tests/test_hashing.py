"""
Tests for L{twistproxy.upstream.hashing}: request keys, the stable hash, the
hash ring and the Maglev table.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

from twisted.trial.unittest import SynchronousTestCase

from twistproxy.testing import FakeRequestInfo
from twistproxy.upstream.hashing import (
    CLIENT_ADDRESS,
    DEFAULT_TABLE_SIZE,
    KEY_FORMS,
    MAX_TABLE_SIZE,
    HashRing,
    RequestKey,
    hash64,
    hash_text,
    is_prime,
    maglev_permutation,
    maglev_table,
    ring_points,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class HashTests(SynchronousTestCase):
    """
    L{hash64} and L{hash_text} are stable 64-bit hashes.
    """

    def test_known_values(self) -> None:
        """
        The hash of given bytes is fixed: it is BLAKE2b with an 8-byte
        digest, read big-endian.  Changing it would send every key to a
        different backend after an upgrade, and make proxies of two versions
        disagree.
        """
        self.assertEqual(hash64(b""), 16476032584258269876)
        self.assertEqual(hash64(b"twistproxy"), 18382716650910246846)
        self.assertEqual(hash_text("10.0.0.1"), 6021020536128996326)

    def test_range(self) -> None:
        """
        Hashes are integers in C{[0, 2**64)}.
        """
        for i in range(200):
            value = hash64(str(i).encode("ascii"))
            self.assertTrue(0 <= value < 2**64, value)

    def test_text_is_utf8(self) -> None:
        """
        L{hash_text} hashes the UTF-8 encoding of its argument.
        """
        text = "caf\N{LATIN SMALL LETTER E WITH ACUTE}"
        self.assertEqual(hash_text(text), hash64(text.encode("utf-8")))

    def test_lone_surrogate(self) -> None:
        """
        A string with a lone surrogate (from a header decoded with
        C{surrogateescape}) still hashes, rather than making a pick fail.
        """
        self.assertIsInstance(hash_text("a\udcff"), int)
        self.assertNotEqual(hash_text("a\udcff"), hash_text("a\udcfe"))

    def test_same_in_another_process(self) -> None:
        """
        Another interpreter, with a different C{PYTHONHASHSEED}, computes
        the same hashes, which Python's own C{hash()} would not.
        """
        code = (
            "from twistproxy.upstream.hashing import hash_text, ring_points\n"
            "print(hash_text('198.51.100.7'), ring_points('b0', 0, 3))\n"
        )
        env = dict(os.environ, PYTHONHASHSEED="12345")
        env["PYTHONPATH"] = os.pathsep.join(
            [ROOT] + [p for p in [env.get("PYTHONPATH")] if p]
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            stdout=subprocess.PIPE,
            check=True,
            timeout=60,
        ).stdout.decode("ascii")
        self.assertEqual(
            out.strip(),
            f"{hash_text('198.51.100.7')} {ring_points('b0', 0, 3)}",
        )


class RequestKeyTests(SynchronousTestCase):
    """
    L{RequestKey} parses the C{key} option and extracts keys from requests.
    """

    def test_parse_forms(self) -> None:
        """
        Each documented form parses to its kind and name, and prints back
        as it was written.
        """
        for spec, kind, name in [
            ("client_address", "client_address", ""),
            ("path", "path", ""),
            ("header:X-User", "header", "X-User"),
            ("cookie:session_id", "cookie", "session_id"),
        ]:
            key = RequestKey.parse(spec)
            self.assertEqual((key.kind, key.name), (kind, name))
            self.assertEqual(str(key), spec)
        self.assertEqual(RequestKey.parse("client_address"), CLIENT_ADDRESS)
        self.assertEqual(
            KEY_FORMS, ("client_address", "path", "header:NAME", "cookie:NAME")
        )

    def test_parse_errors(self) -> None:
        """
        Anything else is a L{ValueError} that says what is wrong.
        """
        for spec, message in [
            ("", "unknown key ''"),
            ("query", "unknown key 'query'; expected one of client_address, "),
            ("Path", "unknown key 'Path'"),
            ("header", "header needs a name: header:NAME"),
            ("cookie", "cookie needs a name"),
            ("header:", "'' is not a valid header name"),
            ("header:X User", "'X User' is not a valid header name"),
            ("cookie:a=b", "'a=b' is not a valid cookie name"),
            ("header:a:b", "'a:b' is not a valid header name"),
            ("path:x", "path takes no name"),
            ("client_address:", "client_address takes no name"),
            (" path", "unknown key ' path'"),
        ]:
            error = self.assertRaises(ValueError, RequestKey.parse, spec)
            self.assertIn(message, str(error), spec)

    def test_constructor_validates(self) -> None:
        """
        A L{RequestKey} built directly is checked as one that is parsed.
        """
        self.assertRaises(ValueError, RequestKey, "query")
        self.assertRaises(ValueError, RequestKey, "header")
        self.assertRaises(ValueError, RequestKey, "path", "x")

    def test_extract_client_address_and_path(self) -> None:
        """
        C{client_address} and C{path} keys are those attributes of the
        request; the path includes the query.
        """
        request = FakeRequestInfo(path="/a?b=1", client_address="2001:db8::1")
        self.assertEqual(RequestKey("client_address").extract(request), "2001:db8::1")
        self.assertEqual(RequestKey("path").extract(request), "/a?b=1")

    def test_extract_header(self) -> None:
        """
        A C{header} key is the header's first value, whatever the case of
        its name.
        """
        request = FakeRequestInfo(headers=[("x-user", "alice"), ("X-User", "bob")])
        self.assertEqual(RequestKey("header", "X-USER").extract(request), "alice")

    def test_extract_cookie(self) -> None:
        """
        A C{cookie} key is the cookie's value; cookie names are
        case-sensitive.
        """
        request = FakeRequestInfo(headers={"Cookie": "a=1; sid=xyz"})
        self.assertEqual(RequestKey("cookie", "sid").extract(request), "xyz")
        self.assertEqual(
            RequestKey("cookie", "SID").extract(request), request.client_address
        )

    def test_extract_falls_back_to_client_address(self) -> None:
        """
        A request without the header or cookie, or with an empty one, has
        the client's address as its key.
        """
        bare = FakeRequestInfo(client_address="192.0.2.9")
        empty = FakeRequestInfo(
            client_address="192.0.2.9", headers={"X-User": "", "Cookie": "sid="}
        )
        for request in (bare, empty):
            self.assertEqual(
                RequestKey("header", "X-User").extract(request), "192.0.2.9"
            )
            self.assertEqual(
                RequestKey("cookie", "sid").extract(request), "192.0.2.9"
            )


class RingPointsTests(SynchronousTestCase):
    """
    L{ring_points} gives each name a fixed sequence of points.
    """

    def test_prefix(self) -> None:
        """
        The points of a name are one sequence: asking for more extends the
        points asked for before, so a heavier weight only adds points.
        """
        ten = ring_points("b0", 0, 10)
        self.assertEqual(len(ten), 10)
        self.assertEqual(ring_points("b0", 0, 4), ten[:4])
        self.assertEqual(ring_points("b0", 4, 10), ten[4:])
        self.assertEqual(len(set(ten)), 10)

    def test_by_name(self) -> None:
        """
        Points depend on the name only: different names, different points.
        """
        one = ring_points("10.0.0.1:80", 0, 50)
        self.assertEqual(ring_points("10.0.0.1:80", 0, 50), one)
        self.assertFalse(set(one) & set(ring_points("10.0.0.2:80", 0, 50)))


class HashRingTests(SynchronousTestCase):
    """
    L{HashRing} maps a hash to the owner of the next point.
    """

    def test_empty(self) -> None:
        """
        An empty ring has no owner for any hash.
        """
        ring: HashRing[str] = HashRing(())
        self.assertEqual(len(ring), 0)
        self.assertIsNone(ring.lookup(12345))

    def test_next_point_and_wrap(self) -> None:
        """
        A hash belongs to the first point at or after it; past the last
        point it wraps round to the first.
        """
        ring = HashRing([("a", [100, 300]), ("b", [200])])
        self.assertEqual(len(ring), 3)
        self.assertEqual(
            [ring.lookup(h) for h in (0, 100, 101, 200, 201, 300, 301, 2**64 - 1)],
            ["a", "a", "b", "b", "a", "a", "a", "a"],
        )

    def test_collision_goes_to_first_listed(self) -> None:
        """
        When two owners share a point, the one listed first owns it.
        """
        ring = HashRing([("a", [5]), ("b", [5])])
        self.assertEqual(ring.lookup(5), "a")


class MaglevTableTests(SynchronousTestCase):
    """
    L{maglev_table} builds a weighted Maglev lookup table.
    """

    def test_primes(self) -> None:
        """
        L{is_prime} tells primes from other numbers, and the default table
        size is one.
        """
        self.assertEqual(
            [n for n in range(-2, 40) if is_prime(n)],
            [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37],
        )
        self.assertTrue(is_prime(DEFAULT_TABLE_SIZE))
        self.assertFalse(is_prime(65535))
        self.assertTrue(is_prime(1048573))

    def test_permutation(self) -> None:
        """
        A permutation's offset is a slot and its skip is between 1 and
        C{size - 1}, so that it visits every slot.
        """
        for i in range(100):
            offset, skip = maglev_permutation(f"b{i}", 101)
            self.assertTrue(0 <= offset < 101)
            self.assertTrue(1 <= skip < 101)
            self.assertEqual(len({(offset + j * skip) % 101 for j in range(101)}), 101)

    def test_full_and_equal(self) -> None:
        """
        Every slot is taken, by members of equal weight in equal shares
        (within a slot or two, whatever the table size).
        """
        members = [(f"b{i}", 1) for i in range(7)]
        table = maglev_table(members, 1009)
        self.assertEqual(len(table), 1009)
        counts = Counter(table)
        self.assertEqual(sorted(counts), list(range(7)))
        self.assertLessEqual(max(counts.values()) - min(counts.values()), 1)

    def test_weighted_shares(self) -> None:
        """
        Each member's share of the slots is its share of the weights,
        within half a percentage point; fractional weights too.
        """
        weights = [1, 2, 3, 0.5, 4.5]
        table = maglev_table(
            [(f"b{i}", w) for i, w in enumerate(weights)], 65537
        )
        counts = Counter(table)
        for i, weight in enumerate(weights):
            share = counts[i] / len(table)
            expected = weight / sum(weights)
            self.assertTrue(
                abs(share - expected) <= 0.005,
                f"weight {weight}: {share:.4f} of the slots, not {expected:.4f}",
            )

    def test_deterministic(self) -> None:
        """
        The same members give the same table, in whatever order they are
        listed: each slot goes to the same name.
        """
        members = [("x", 1), ("y", 2), ("z", 1)]
        self.assertEqual(maglev_table(members, 503), maglev_table(members, 503))
        names = [members[i][0] for i in maglev_table(members, 503)]
        backwards = members[::-1]
        self.assertEqual([backwards[i][0] for i in maglev_table(backwards, 503)], names)

    def test_removal_moves_little_else(self) -> None:
        """
        Taking a member out of a table of five moves its own slots and
        hardly any other: fewer than 1% of all slots change hands between
        the remaining members.
        """
        names = [f"10.0.0.{i}:80" for i in range(5)]
        before = maglev_table([(n, 1) for n in names], 65537)
        after = maglev_table([(n, 1) for n in names if n != names[2]], 65537)
        remaining = [n for n in names if n != names[2]]
        moved = sum(
            1
            for old, new in zip(before, after)
            if old != 2 and names[old] != remaining[new]
        )
        self.assertLess(moved / 65537, 0.01)
        self.assertNotIn(names[2], {remaining[i] for i in after})

    def test_empty(self) -> None:
        """
        No members, no table.
        """
        self.assertEqual(maglev_table([], 13), [])

    def test_invalid(self) -> None:
        """
        A size that is not a prime, a prime above L{MAX_TABLE_SIZE}, fewer
        slots than members, or a weight that is not positive is a
        L{ValueError}.
        """
        self.assertRaises(ValueError, maglev_table, [("a", 1)], 100)
        self.assertRaises(ValueError, maglev_table, [("a", 1)], 1)
        self.assertRaises(ValueError, maglev_table, [("a", 1)], 1048583)
        self.assertGreater(1048583, MAX_TABLE_SIZE)
        self.assertRaises(
            ValueError, maglev_table, [("a", 1), ("b", 1), ("c", 1)], 2
        )
        self.assertRaises(ValueError, maglev_table, [("a", 1), ("b", 0)], 7)
