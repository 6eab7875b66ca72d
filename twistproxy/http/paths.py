# -*- test-case-name: tests.test_paths -*-
"""
Request paths as a backend may read them: one normaliser for routing,
request rules and the checks at the edge.

The same path can be spelled many ways: C{/admin}, C{/%61dmin},
C{//admin}, C{/public/../admin}, C{/public/%2e%2e/admin}.  A proxy that
routes or filters on one spelling while the backend reads another lets a
request dodge a route or a rule.  L{normalize_path} turns a path into the
one spelling the proxy decides on, much as nginx builds its C{$uri}:

  - percent-encoded unreserved characters (letters, digits, C{-._~}) are
    decoded (RFC 3986 6.2.2.2), and the hex digits of the other escapes
    are upper-cased (C{%2f} and C{%2F} are one escape, 6.2.2.1);
  - C{%2F} and C{%5C} (encoded slash and backslash) and a plain C{\\} are
    read as C{/}, as the backends that decode before they resolve (or that
    run on Windows) read them;
  - C{.} and C{..} segments are resolved (RFC 3986 5.2.4) and repeated
    slashes merged.

Some paths have no single reading, and are refused with L{PathError}
(the proxy answers 400):

  - a path whose C{..} segments climb above the root (C{/a/..%2f..%2fetc});
  - a dot segment with parameters (C{/..;/admin}): Tomcat and other
    servlet containers read it as C{..}, everything else as a name;
  - an escape that is not one (C{%zz}), an encoded NUL (C{%00}), and an
    overlong UTF-8 form (C{%c0%ae} for C{.}), whose only use is to disguise
    a character from a check;
  - under C{"keep"}, a dot segment next to an escaped slash or a
    backslash (C{/admin/..%2fpublic}): a backend that keeps C{%2F} as data
    reads a name in C{/admin/} where the proxy read C{/public};
  - under C{"reject"}, any C{%2F}, C{%5C} or C{\\}.

The listener's C{escaped_slashes} setting is C{"keep"} (the default),
C{"decode"} or C{"reject"}; under C{"decode"} the backend receives the
normalised path, otherwise the path as the client sent it.

The module is pure: bytes in, bytes out, no Twisted.  A path without
C{%}, C{\\}, C{/.} or C{//} (almost every path) is returned as it is after
four substring searches.
"""

from __future__ import annotations

import re
from typing import List

from twistproxy.config import ESCAPED_SLASHES

# What the listener's escaped_slashes setting may say.
KEEP, DECODE, REJECT = ESCAPED_SLASHES

_HEX = re.compile(rb"[0-9A-Fa-f]{2}").match
_UNRESERVED = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
)
# An escaped slash or backslash, or a plain backslash, becomes this
# marker while segments are resolved: a separator that a backend may or
# may not read as one.
_SOFT = b"\\"
_SEPARATORS = re.compile(rb"([/\\])").split
_DOTS = (b".", b"..")


class PathError(ValueError):
    """
    A path that the proxy refuses (answered 400).

    @ivar reason: The access log's reason code, e.g. C{'path_traversal'}.
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _unescape(path: bytes, escaped_slashes: str) -> bytes:
    """
    Decode the escapes of unreserved characters, upper-case the others,
    turn C{%2F} and C{%5C} into the soft separator.
    """
    parts = path.split(b"%")
    out = [parts[0]]
    append = out.append
    last = len(parts) - 1
    for i in range(1, last + 1):
        part = parts[i]
        if _HEX(part) is None:
            raise PathError("bad_path_escape")
        byte = int(part[:2], 16)
        if byte in _UNRESERVED:
            append(bytes((byte,)))
        elif byte == 0x2F or byte == 0x5C:
            if escaped_slashes == REJECT:
                raise PathError("escaped_slash")
            append(_SOFT)
        elif byte == 0 or byte == 0xC0 or byte == 0xC1:
            # C0 and C1 only ever start an overlong form.
            raise PathError("bad_path_escape")
        else:
            if (byte == 0xE0 or byte == 0xF0) and len(part) == 2 and i < last:
                following = parts[i + 1]
                if _HEX(following) is not None and int(following[:2], 16) < (
                        0xA0 if byte == 0xE0 else 0x90):
                    raise PathError("bad_path_escape")
            append(b"%" + part[:2].upper())
        append(part[2:])
    return b"".join(out)


_PERCENT = ord("%")
_BACKSLASH = ord("\\")


def normalize_path(path: bytes, escaped_slashes: str = KEEP) -> bytes:
    """
    The normal form of a request path (see the module's docstring).

    @param path: A path in origin form, starting with C{/}, without query.
    @param escaped_slashes: One of L{ESCAPED_SLASHES}.
    @raises PathError: For a path the proxy refuses.
    """
    # Single bytes looked for as ints: on CPython 3.11 "b'%' in path" first
    # tries b'%' as an int, and raising and clearing that TypeError costs
    # several times the search.
    if (_PERCENT not in path and _BACKSLASH not in path and path.find(b"/.") < 0
            and path.find(b"//") < 0):
        return path
    if _BACKSLASH in path and escaped_slashes == REJECT:
        raise PathError("escaped_slash")
    if _PERCENT in path:
        path = _unescape(path, escaped_slashes)
    pieces = _SEPARATORS(path)
    out: List[bytes] = []
    climbs = ambiguous = False
    # pieces: segment, separator, segment, ...; the first segment is empty.
    last = len(pieces) - 1
    for i in range(2, last + 1, 2):
        segment = pieces[i]
        if segment[:1] == b".":
            name, semicolon, _ = segment.partition(b";")
            if name in _DOTS:
                if semicolon:
                    raise PathError("dot_segment_parameters")
                if escaped_slashes == KEEP and (
                        pieces[i - 1] == _SOFT or (i < last and pieces[i + 1] == _SOFT)):
                    ambiguous = True
                if name == b"..":
                    if out:
                        out.pop()
                    else:
                        climbs = True
                continue
        if segment:
            out.append(segment)
    if climbs:
        raise PathError("path_traversal")
    if ambiguous:
        raise PathError("ambiguous_path")
    normal = b"/" + b"/".join(out)
    if out and (pieces[last] == b"" or pieces[last] in _DOTS):
        normal += b"/"
    return normal
