"""
Tests for L{twistproxy.http.paths}: the one normaliser of request paths.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twistproxy.http.paths import DECODE, KEEP, REJECT, PathError, normalize_path

# (path, normal form) under every setting of escaped_slashes.
NORMAL = [
    (b"/", b"/"),
    (b"/a/b", b"/a/b"),
    (b"/a/b/", b"/a/b/"),
    (b"/a//b", b"/a/b"),
    (b"//", b"/"),
    (b"/a/./b", b"/a/b"),
    (b"/a/b/.", b"/a/b/"),
    (b"/a/..", b"/"),
    (b"/public/../admin", b"/admin"),
    (b"/a/b/../../c", b"/c"),
    (b"/.well-known/x", b"/.well-known/x"),
    (b"/a/.b", b"/a/.b"),
    (b"/a/..b", b"/a/..b"),
    (b"/a/b..", b"/a/b.."),
    (b"/...", b"/..."),
    # Escaped dots, in either case, are dots.
    (b"/a/%2e%2E/b", b"/b"),
    (b"/a/%2E/b", b"/a/b"),
    (b"/a/.%2e/b", b"/b"),
    # Unreserved characters are decoded, other escapes upper-cased.
    (b"/%61dmin", b"/admin"),
    (b"/%41%7a%30%2D%5f%7E", b"/Az0-_~"),
    (b"/a%20b", b"/a%20b"),
    (b"/caf%c3%a9", b"/caf%C3%A9"),
    (b"/a%3fb", b"/a%3Fb"),
    # An escaped percent sign is decoded once only.
    (b"/%2561dmin", b"/%2561dmin"),
    # Parameters stay part of their segment.
    (b"/a;x=1/b", b"/a;x=1/b"),
    (b"/a/b;jsessionid=1", b"/a/b;jsessionid=1"),
    (b"/a/..x;y", b"/a/..x;y"),
]

# Escaped slashes and backslashes: (path, normal form) under keep and
# decode; reject refuses them all.
SLASHES = [
    (b"/a%2fb", b"/a/b"),
    (b"/a%2Fb", b"/a/b"),
    (b"/a%5cb", b"/a/b"),
    (b"/a\\b", b"/a/b"),
    (b"/%2fadmin-secret", b"/admin-secret"),
    (b"/api/v4/projects/group%2Fproject", b"/api/v4/projects/group/project"),
]

# (path, reason) refused whatever the setting.
REFUSED = [
    (b"/..", "path_traversal"),
    (b"/../etc/passwd", "path_traversal"),
    (b"/a/../..", "path_traversal"),
    (b"/a/%2e%2e/%2E%2E/etc", "path_traversal"),
    (b"/..;/admin", "dot_segment_parameters"),
    (b"/public/..;/admin", "dot_segment_parameters"),
    (b"/a/.;x/b", "dot_segment_parameters"),
    (b"/a%zz", "bad_path_escape"),
    (b"/a%2", "bad_path_escape"),
    (b"/a%", "bad_path_escape"),
    (b"/a%00b", "bad_path_escape"),
    # Overlong UTF-8 forms of "." and "/".
    (b"/%c0%ae%c0%ae/etc", "bad_path_escape"),
    (b"/a%C0%AFb", "bad_path_escape"),
    (b"/a%c1%9c", "bad_path_escape"),
    (b"/a%e0%80%ae", "bad_path_escape"),
    (b"/a%f0%80%80%ae", "bad_path_escape"),
]


class NormalizePathTests(SynchronousTestCase):
    """
    L{normalize_path} gives one spelling of a path, or refuses it.
    """

    def test_normal_forms(self) -> None:
        """
        Dot segments resolve, slashes merge, unreserved escapes are
        decoded and the others upper-cased, whatever the setting.
        """
        for setting in (KEEP, DECODE, REJECT):
            for path, expected in NORMAL:
                self.assertEqual(normalize_path(path, setting), expected, (path, setting))

    def test_unchanged_is_same_object(self) -> None:
        """
        A path with nothing to normalise is returned as it is (the fast
        path costs no copy).
        """
        path = b"/api/items/42"
        self.assertIs(normalize_path(path), path)

    def test_escaped_slashes_read_as_slashes(self) -> None:
        """
        Under keep (the default) and decode, C{%2F}, C{%5C} and C{\\} read
        as C{/} in the normal form; reject refuses them.
        """
        for path, expected in SLASHES:
            self.assertEqual(normalize_path(path), expected, path)
            self.assertEqual(normalize_path(path, DECODE), expected, path)
            e = self.assertRaises(PathError, normalize_path, path, REJECT)
            self.assertEqual(e.reason, "escaped_slash", path)

    def test_refused(self) -> None:
        """
        Paths that climb above the root, dot segments with parameters,
        broken, NUL and overlong escapes are refused whatever the setting.
        """
        for setting in (KEEP, DECODE, REJECT):
            for path, reason in REFUSED:
                e = self.assertRaises(PathError, normalize_path, path, setting)
                self.assertEqual(e.reason, reason, (path, setting))

    def test_encoded_traversal(self) -> None:
        """
        C{/a/..%2f..%2fetc}, which a backend that decodes before it
        resolves reads as C{/../etc}, climbs above the root however
        escaped slashes are handled (reject refuses the escape first).
        """
        for path in (b"/a/..%2f..%2fetc", b"/a/..%5C..%5Cetc", b"/a/..\\..\\etc"):
            for setting in (KEEP, DECODE):
                e = self.assertRaises(PathError, normalize_path, path, setting)
                self.assertEqual(e.reason, "path_traversal", (path, setting))

    def test_dots_next_to_escaped_slashes(self) -> None:
        """
        Under keep, a dot segment next to an escaped slash has two
        readings (a backend that keeps C{%2F} as data sees a name in
        C{/admin/}), and is refused; decode resolves it, since the backend
        then receives the decoded path.
        """
        for path, decoded in ((b"/admin/..%2fpublic", b"/public"),
                              (b"/a/b%2f..%2fc", b"/a/c"),
                              (b"/a\\./b", b"/a/b")):
            e = self.assertRaises(PathError, normalize_path, path, KEEP)
            self.assertEqual(e.reason, "ambiguous_path", path)
            self.assertEqual(normalize_path(path, DECODE), decoded, path)
