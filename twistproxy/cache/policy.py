# -*- test-case-name: tests.test_cache_policy -*-
"""
The rules of a shared HTTP cache, with no I/O.

Everything the cache decides about a message is decided here, from the
message's fields and a few numbers (when the request left, when the response
came, the time now), so that each rule can be tested on its own against the
section of the RFC it implements:

  - RFC 9111 (HTTP Caching), as a I{shared} cache: which responses may be
    stored (section 3), the cache key and C{Vary} (4.1), freshness and age
    (4.2), validation and the update of stored fields by a 304 (3.2, 4.3),
    the request and response directives (5.2);
  - RFC 9110 for conditional requests (13) and ranges (14);
  - RFC 5861 (C{stale-while-revalidate}, C{stale-if-error});
  - RFC 9213 (C{CDN-Cache-Control}, and targeted fields in general, read
    as RFC 8941 Structured Field Dictionaries);
  - RFC 9211 (the C{Cache-Status} response field).

Fields are handled as the parser gives them: a list of (name, value) byte
pairs, names in any case.  Times are POSIX seconds (floats).
"""

from __future__ import annotations

import calendar
import re
import time
from email.utils import formatdate
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from twistproxy.http.headers import field_value, field_values

Fields = Sequence[Tuple[bytes, bytes]]

# RFC 9111 1.2.2: a delta-seconds too large to represent is this.
MAX_DELTA = 2147483648

# RFC 9110 15.1: statuses whose responses are heuristically cacheable.
HEURISTIC_STATUSES = frozenset([200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501])
# The statuses this cache stores: heuristically cacheable ones, except
# partial content (it keeps whole representations only), and the
# redirects and errors that carry explicit freshness.
STORABLE_STATUSES = (HEURISTIC_STATUSES - {206}) | frozenset([302, 303, 307])
# RFC 9111 4.2.2: a heuristic of this fraction of the time since
# Last-Modified, at most this long.
HEURISTIC_FRACTION = 0.1
HEURISTIC_LIMIT = 86400.0

# RFC 9111 3.1 and 3.2: never stored, and never taken from a 304.
_NOT_STORED = frozenset([
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"proxy-authenticate",
    b"proxy-authentication-info", b"proxy-authorization",
])
# RFC 9110 15.4.5: what a 304 carries of the response a 200 would be;
# and Age, since the cache made it (RFC 9111 5.1).
_NOT_MODIFIED_FIELDS = frozenset([
    b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary",
    b"last-modified", b"age",
])
# The request fields that make a request conditional (RFC 9110 13.1).
CONDITIONAL_FIELDS = frozenset([
    b"if-match", b"if-none-match", b"if-modified-since", b"if-unmodified-since",
    b"if-range",
])
# The safe methods (RFC 9110 9.2.1); every other method, an unknown one
# included, is unsafe and invalidates (RFC 9111 4.4).
SAFE_METHODS = frozenset([b"GET", b"HEAD", b"OPTIONS", b"TRACE"])
CDN_CACHE_CONTROL = b"cdn-cache-control"
SET_COOKIE = b"set-cookie"


def has_field(fields: Fields, name: bytes) -> bool:
    return any(k.lower() == name for k, _ in fields)


def split_list(value: bytes) -> List[bytes]:
    """
    The members of a comma-separated list (RFC 9110 5.6.1), whitespace
    trimmed, empty members dropped, commas inside quoted strings kept.
    """
    members = []
    current = bytearray()
    quoted = escaped = False
    for c in value:
        if escaped:
            escaped = False
        elif quoted and c == 0x5C:
            escaped = True
        elif c == 0x22:
            quoted = not quoted
        elif c == 0x2C and not quoted:
            members.append(bytes(current).strip(b" \t"))
            current = bytearray()
            continue
        current.append(c)
    members.append(bytes(current).strip(b" \t"))
    return [m for m in members if m]


def _unquote(value: bytes) -> bytes:
    if len(value) >= 2 and value[:1] == b'"' and value[-1:] == b'"':
        return re.sub(rb"\\(.)", rb"\1", value[1:-1])
    return value


# A directive that appears twice with different values (RFC 9111 4.2.1:
# its value is invalid).
CONFLICT = b"\x00conflict"


class Directives:
    """
    A parsed C{Cache-Control} (or targeted) field (RFC 9111 5.2):
    directive names lower-cased, values unquoted, unknown directives kept
    (and ignored by the rules), duplicates with different values marked
    invalid.

    @ivar values: Directive name (C{str}) to value (C{bytes}, or C{None}
        when it has none, or L{CONFLICT}).
    """

    __slots__ = ("values",)

    def __init__(self, values: Dict[str, Optional[bytes]]):
        self.values = values

    @classmethod
    def parse(cls, field_values: Iterable[bytes]) -> "Directives":
        values: Dict[str, Optional[bytes]] = {}
        for field in field_values:
            for member in split_list(field):
                name, sep, value = member.partition(b"=")
                key = name.strip(b" \t").lower().decode("latin-1")
                if not key:
                    continue
                v = _unquote(value.strip(b" \t")) if sep else None
                if key in values and values[key] != v:
                    values[key] = CONFLICT
                else:
                    values[key] = v
        return cls(values)

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def __bool__(self) -> bool:
        return bool(self.values)

    def seconds(self, name: str) -> Optional[int]:
        """
        A directive's delta-seconds (RFC 9111 1.2.2): C{None} when absent,
        C{-1} when present but invalid (not digits, or duplicated with
        another value), capped at L{MAX_DELTA}.
        """
        if name not in self.values:
            return None
        value = self.values[name]
        return parse_delta(value) if value is not None and value is not CONFLICT else -1

    def field_names(self, name: str) -> Optional[List[bytes]]:
        """
        The field names a qualified C{no-cache} or C{private} lists
        (RFC 9111 5.2.2.4, 5.2.2.7), lower-cased: C{None} when the directive
        is absent, an empty list when it is unqualified.
        """
        if name not in self.values:
            return None
        value = self.values[name]
        if value is None or value is CONFLICT:
            return []
        return [n.lower() for n in split_list(value)]


# RFC 8941 (Structured Field Values), as much as a Dictionary needs: the
# targeted fields are Dictionaries (RFC 9213 2.1).
_SF_KEY = rb"[a-z*][a-z0-9_\-.*]*"
_SF_BARE = (
    rb"-?[0-9]{1,12}\.[0-9]{1,3}(?![0-9])"          # decimal
    rb"|-?[0-9]{1,15}(?![0-9.])"                     # integer
    rb'|"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\\"])*"'  # string
    rb"|[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*"      # token
    rb"|:[A-Za-z0-9+/=]*:"                           # byte sequence
    rb"|\?[01]"                                      # boolean
)
_SF_PARAMS = rb"(?:;[ ]*" + _SF_KEY + rb"(?:=(?:" + _SF_BARE + rb"))?)*"
_SF_ITEM = rb"(?:" + _SF_BARE + rb")" + _SF_PARAMS
_SF_INNER = (rb"\([ ]*(?:" + _SF_ITEM + rb"(?:[ ]+" + _SF_ITEM + rb")*)?[ ]*\)"
             + _SF_PARAMS)
_SF_MEMBER = re.compile(
    rb"(" + _SF_KEY + rb")(?:=(" + _SF_ITEM + rb"|" + _SF_INNER + rb")|" + _SF_PARAMS + rb")")
_SF_SEPARATOR = re.compile(rb"[ \t]*,[ \t]*")
_SF_VALUE = re.compile(rb"(" + _SF_BARE + rb")")
# The directives a targeted field may carry, by the type RFC 9213 2.1
# gives them: delta-seconds are Integers, the others Booleans (the forms
# with field names of no-cache and private do not exist there).
_SF_SECONDS = frozenset(["max-age", "s-maxage", "stale-while-revalidate", "stale-if-error"])
_SF_FLAGS = frozenset([
    "no-store", "no-cache", "private", "public", "must-revalidate", "proxy-revalidate",
    "no-transform", "must-understand", "immutable",
])


def parse_targeted(field_values: Sequence[bytes]) -> Optional[Directives]:
    """
    A targeted field (C{CDN-Cache-Control}, RFC 9213 2.1) as directives,
    or C{None} when the cache must ignore it: not a valid Structured
    Field Dictionary (RFC 8941 4.2.2: keys in lower case, no space around
    C{=}, no empty member), or a known directive with a value of the
    wrong type (C{max-age="60"}, C{no-store=5}, C{max-age=-1}).  Unknown
    directives take any value and are kept (and ignored by the rules); a
    Boolean false is as good as absent.
    """
    value = b",".join(field_values).strip(b" ")
    values: Dict[str, Optional[bytes]] = {}
    pos = 0
    while True:
        m = _SF_MEMBER.match(value, pos)
        if m is None:
            return None
        key = m.group(1).decode("ascii")
        item = m.group(2)
        # An Inner List stays whole: no known directive takes one.
        bare = item if item is None or item[:1] == b"(" else _SF_VALUE.match(item).group(1)
        if key in _SF_SECONDS:
            if bare is None or not bare.isdigit():
                return None
            values[key] = bare
        elif bare == b"?0":
            values.pop(key, None)
        elif key in _SF_FLAGS and bare not in (None, b"?1"):
            return None
        else:
            values[key] = None if bare in (None, b"?1") else _unquote(bare)
        pos = m.end()
        if pos == len(value):
            return Directives(values)
        sep = _SF_SEPARATOR.match(value, pos)
        if sep is None or sep.end() == len(value):
            return None
        pos = sep.end()


def parse_delta(value: bytes) -> int:
    """
    A non-negative integer of seconds, C{-1} when invalid, at most
    L{MAX_DELTA} (RFC 9111 1.2.2).
    """
    value = value.strip(b" \t")
    if not value or not value.isdigit():
        return -1
    if len(value) > 10:
        return MAX_DELTA
    return min(int(value), MAX_DELTA)


_MONTHS = {
    m: i + 1 for i, m in enumerate(
        [b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep",
         b"oct", b"nov", b"dec"]
    )
}
_IMF = re.compile(
    rb"^[A-Za-z]{3}, (\d{2}) ([A-Za-z]{3}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT$"
)
_RFC850 = re.compile(
    rb"^[A-Za-z]{6,9}, (\d{2})-([A-Za-z]{3})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) GMT$"
)
_ASCTIME = re.compile(
    rb"^[A-Za-z]{3} ([A-Za-z]{3}) ([ \d]\d) (\d{2}):(\d{2}):(\d{2}) (\d{4})$"
)


def parse_http_date(value: Optional[bytes], now: float = 0.0) -> Optional[float]:
    """
    An HTTP-date in any of its three formats (RFC 9110 5.6.7): IMF-fixdate,
    the obsolete RFC 850 form (a two-digit year more than 50 years ahead of
    C{now} is in the past century) and asctime.  C{None} when absent or
    invalid.
    """
    if value is None:
        return None
    value = value.strip(b" \t")
    m = _IMF.match(value)
    if m is not None:
        day, month, year, hh, mm, ss = m.groups()
    else:
        m = _RFC850.match(value)
        if m is not None:
            day, month, yy, hh, mm, ss = m.groups()
            this_year = _year(now)
            year_n = this_year - this_year % 100 + int(yy)
            if year_n > this_year + 50:
                year_n -= 100
            year = b"%d" % year_n
        else:
            m = _ASCTIME.match(value)
            if m is None:
                return None
            month, day, hh, mm, ss, year = m.groups()
    month_n = _MONTHS.get(month.lower())
    if month_n is None:
        return None
    try:
        fields = (int(year), month_n, int(day), int(hh), int(mm), int(ss))
        if not (1 <= fields[2] <= 31 and fields[3] < 24 and fields[4] < 60 and fields[5] < 61):
            return None
        return float(calendar.timegm(fields + (0, 0, 0)))
    except (ValueError, OverflowError):
        return None


def _year(now: float) -> int:
    return time.gmtime(now).tm_year


def http_date(when: float) -> bytes:
    """
    An IMF-fixdate (RFC 9110 5.6.7), for fields the cache writes.
    """
    return formatdate(when, usegmt=True).encode("ascii")


class CacheFields:
    """
    What the cache reads of a response's fields, parsed once.

    @ivar cc: The directives that apply to this cache: the first targeted
        field present (the configured one, then C{CDN-Cache-Control},
        RFC 9213 2.2), else C{Cache-Control}.
    @ivar targeted: Whether C{cc} came from a targeted field.
    @ivar date: C{Date}, or C{None}.
    @ivar expires: C{Expires} as a time; C{0.0} when present but invalid
        (RFC 9111 5.3: already expired), C{None} when absent.
    @ivar last_modified: C{Last-Modified}, or C{None}.
    @ivar etag: C{ETag}, or C{None}.
    @ivar age: C{Age} in seconds, C{0} when absent or invalid.
    @ivar vary: The lower-cased names C{Vary} lists (C{b'*'} included).
    """

    __slots__ = ("cc", "targeted", "date", "expires", "last_modified", "etag", "age", "vary")

    def __init__(self, fields: Fields, targeted: Sequence[bytes] = (CDN_CACHE_CONTROL,),
                 now: float = 0.0):
        self.targeted = False
        cc = None
        for name in targeted:
            values = field_values(fields, name)
            if values:
                cc = parse_targeted(values)
                if cc:
                    self.targeted = True
                    break
                cc = None
        if cc is None:
            cc = Directives.parse(field_values(fields, b"cache-control"))
        self.cc = cc
        self.date = parse_http_date(field_value(fields, b"date"), now)
        expires = field_values(fields, b"expires")
        if expires:
            # Several Expires fields are as invalid as a bad date.
            parsed = parse_http_date(expires[0], now) if len(expires) == 1 else None
            self.expires = parsed if parsed is not None else 0.0
        else:
            self.expires = None
        self.last_modified = parse_http_date(field_value(fields, b"last-modified"), now)
        etags = field_values(fields, b"etag")
        self.etag = etags[0].strip(b" \t") if etags else None
        self.age = parse_age(field_values(fields, b"age"))
        self.vary = [n.lower() for v in field_values(fields, b"vary") for n in split_list(v)]


def parse_age(values: Sequence[bytes]) -> int:
    """
    The C{Age} of a response (RFC 9111 5.1): the first member of the first
    field, C{0} when absent or invalid, at most L{MAX_DELTA}.
    """
    if not values:
        return 0
    members = split_list(values[0])
    if not members:
        return 0
    age = parse_delta(members[0])
    return age if age >= 0 else 0


def storable(
    method: bytes,
    status: int,
    request_fields: Fields,
    response: CacheFields,
    response_fields: Fields,
    target: bytes = b"",
    allow_post: bool = False,
    pass_cookies: bool = True,
) -> bool:
    """
    Whether a shared cache may store this response (RFC 9111 3).

    @param target: The request target, which a POST response's
        C{Content-Location} must name for the response to answer later
        GETs (RFC 9110 9.3.3).
    @param allow_post: Whether POST responses may be stored at all (they
        need explicit freshness and a C{Content-Location} naming the
        target).
    @param pass_cookies: Whether a response with C{Set-Cookie} is left
        unstored, as nginx and Varnish leave it, unless its own
        C{private} or C{no-cache} names C{Set-Cookie} (then it is stored
        without it, or the field is not reused).  RFC 9111 3 allows
        storing it; a cookie meant for one client would be replayed to
        every other.
    """
    cc = response.cc
    if pass_cookies and has_field(response_fields, SET_COOKIE) and not (
        SET_COOKIE in (cc.field_names("private") or ())
        or SET_COOKIE in (cc.field_names("no-cache") or ())
    ):
        return False
    if method == b"POST":
        if not allow_post or not explicit_freshness(response):
            return False
        if field_value(response_fields, b"content-location") != target:
            return False
    elif method != b"GET":
        return False
    if status not in STORABLE_STATUSES:
        return False
    if "no-store" in cc or "private" in cc and not cc.field_names("private"):
        return False
    if "no-store" in Directives.parse(field_values(request_fields, b"cache-control")):
        return False
    if b"*" in response.vary:
        # RFC 9111 4.1: it would never match a later request.
        return False
    if has_field(request_fields, b"authorization") and not (
        "public" in cc or "s-maxage" in cc or "must-revalidate" in cc
    ):
        # RFC 9111 3.5.
        return False
    return (
        "public" in cc
        or explicit_freshness(response)
        or status in HEURISTIC_STATUSES
    )


def explicit_freshness(response: CacheFields) -> bool:
    cc = response.cc
    return "s-maxage" in cc or "max-age" in cc or response.expires is not None


def freshness_lifetime(
    status: int,
    response: CacheFields,
    response_time: float,
    default_ttl: float = 0.0,
    max_ttl: float = 0.0,
) -> float:
    """
    How long a response stays fresh (RFC 9111 4.2.1): C{s-maxage}, else
    C{max-age}, else C{Expires} minus C{Date}; an invalid one of these is
    zero (already stale).  Without any, a heuristic (4.2.2) for
    heuristically cacheable statuses or C{public} responses: a tenth of the
    time since C{Last-Modified}, else C{default_ttl}.

    @param max_ttl: When not zero, the lifetime is at most this.
    """
    cc = response.cc
    lifetime: float
    s_maxage = cc.seconds("s-maxage")
    max_age = cc.seconds("max-age")
    if s_maxage is not None:
        lifetime = max(s_maxage, 0)
    elif max_age is not None:
        lifetime = max(max_age, 0)
    elif response.expires is not None:
        date = response.date if response.date is not None else response_time
        lifetime = max(response.expires - date, 0.0)
    elif status in HEURISTIC_STATUSES or "public" in cc:
        if response.last_modified is not None:
            date = response.date if response.date is not None else response_time
            lifetime = min(
                max(date - response.last_modified, 0.0) * HEURISTIC_FRACTION,
                HEURISTIC_LIMIT,
            )
        else:
            lifetime = default_ttl
    else:
        lifetime = 0.0
    if max_ttl:
        lifetime = min(lifetime, max_ttl)
    return float(lifetime)


def initial_age(response: CacheFields, request_time: float, response_time: float) -> float:
    """
    The age of a response when it arrived (RFC 9111 4.2.3): the larger of
    the age its C{Date} shows and its C{Age} plus the time it was in
    transit.
    """
    date = response.date if response.date is not None else response_time
    apparent_age = max(0.0, response_time - date)
    response_delay = response_time - request_time
    corrected_age_value = response.age + response_delay
    return max(apparent_age, corrected_age_value)


def current_age(initial: float, response_time: float, now: float) -> float:
    """
    The age of a stored response now (RFC 9111 4.2.3).
    """
    return initial + max(0.0, now - response_time)


def must_revalidate(response: CacheFields) -> bool:
    """
    Whether the response forbids serving it stale in any case
    (RFC 9111 5.2.2.2, 5.2.2.8, and 5.2.2.10: C{s-maxage} implies
    C{proxy-revalidate} for a shared cache).
    """
    cc = response.cc
    return "must-revalidate" in cc or "proxy-revalidate" in cc or "s-maxage" in cc


def forbids_stale(response: CacheFields) -> bool:
    """
    Whether the response may never be served stale, even when the origin
    cannot be reached (RFC 9111 4.2.4): C{must-revalidate},
    C{proxy-revalidate}, C{s-maxage} or C{no-cache}.
    """
    return must_revalidate(response) or "no-cache" in response.cc


def stale_window(response: CacheFields, name: str) -> int:
    """
    The seconds of C{stale-while-revalidate} or C{stale-if-error}
    (RFC 5861 3, 4), C{0} when absent or invalid, or when the response
    forbids serving stale (RFC 9111 4.2.4).
    """
    if forbids_stale(response):
        return 0
    value = response.cc.seconds(name)
    return value if value is not None and value > 0 else 0


def request_directives(request_fields: Fields) -> Directives:
    """
    A request's cache directives; C{Pragma: no-cache} counts as
    C{Cache-Control: no-cache} when there is no C{Cache-Control}
    (RFC 9111 5.4).
    """
    values = field_values(request_fields, b"cache-control")
    if not values:
        pragma = field_value(request_fields, b"pragma")
        if pragma is not None and b"no-cache" in [m.lower() for m in split_list(pragma)]:
            return Directives({"no-cache": None})
    return Directives.parse(values)


# What to do with a stored response for a request.
FRESH = "fresh"            # serve it
STALE = "stale"            # serve it stale (the client allows it)
SWR = "stale-while-revalidate"  # serve it stale, and refresh it in the background
VALIDATE = "validate"      # ask the origin first (conditionally)


def reuse(
    response: CacheFields,
    lifetime: float,
    age: float,
    request: Directives,
    honour_no_cache: bool = True,
) -> str:
    """
    Whether a stored response (of this C{lifetime} and current C{age}) may
    answer a request with these directives without going to the origin
    (RFC 9111 4, 4.2.4, 5.2.1, 5.2.2; RFC 5861 3).

    @param honour_no_cache: Whether the request's C{no-cache} (and
        C{max-age=0}) makes the cache validate; configurations may ignore
        it, as caches commonly do to protect origins from reload storms.
    @return: L{FRESH}, L{STALE}, L{SWR} or L{VALIDATE}.
    """
    if always_validate(response):
        return VALIDATE
    if honour_no_cache:
        if "no-cache" in request:
            return VALIDATE
        max_age = request.seconds("max-age")
        if max_age is not None and (max_age < 0 or age > max_age):
            return VALIDATE
    fresh_left = lifetime - age
    min_fresh = request.seconds("min-fresh")
    if min_fresh is not None and min_fresh > 0 and fresh_left < min_fresh:
        return VALIDATE
    if fresh_left > 0:
        return FRESH
    if must_revalidate(response):
        return VALIDATE
    if "max-stale" in request:
        max_stale = request.seconds("max-stale")
        if request.values["max-stale"] is None or (
            max_stale is not None and max_stale >= 0 and -fresh_left <= max_stale
        ):
            return STALE
    swr = stale_window(response, "stale-while-revalidate")
    if swr and -fresh_left <= swr:
        return SWR
    return VALIDATE


def always_validate(response: CacheFields) -> bool:
    """
    Whether the response may never be reused without validation, fresh or
    not: an unqualified C{no-cache} (RFC 9111 5.2.2.4).  Without it, a
    fresh response answers a request that has no cache directives.
    """
    cc = response.cc
    return "no-cache" in cc and not cc.field_names("no-cache")


def usable_on_error(response: CacheFields, lifetime: float, age: float,
                    request: Directives, grace: float = 0.0) -> bool:
    """
    Whether a stale response may be served because the origin failed or
    answered 5xx (RFC 5861 4): within the response's (or the request's)
    C{stale-if-error} window, or the cache's own C{grace} (RFC 9111 4.2.4
    allows serving stale when the origin cannot be reached), never when
    the response forbids it.
    """
    if forbids_stale(response):
        return False
    stale_for = age - lifetime
    window = max(stale_window(response, "stale-if-error"),
                 request.seconds("stale-if-error") or 0, grace)
    return stale_for <= window


def store_ttl(response: CacheFields, lifetime: float, grace: float = 0.0) -> float:
    """
    How long to keep a response in the store: its freshness, any stale
    windows, and as long again (at least 5 minutes) when it has a
    validator, so that it can be revalidated rather than fetched whole.
    A response worth keeping at all (not zero) is kept C{grace} seconds
    past its freshness when it may be served stale, to answer for an
    origin that is down.
    """
    extra = max(stale_window(response, "stale-while-revalidate"),
                stale_window(response, "stale-if-error"))
    if response.etag is not None or response.last_modified is not None:
        extra = max(extra, lifetime, 300.0)
    if grace > extra and lifetime + extra > 0 and not forbids_stale(response):
        extra = grace
    return lifetime + extra


def normalize_value(name: bytes, value: Optional[bytes]) -> bytes:
    """
    A request field's value as C{Vary} compares it (RFC 9111 4.1): list
    members trimmed and joined with a comma, case folded for the
    C{Accept*} fields, whose tokens are case-insensitive.
    """
    if value is None:
        return b"\x00"
    members = split_list(value)
    if name.startswith(b"accept"):
        members = [m.lower().replace(b" ", b"") for m in members]
    return b",".join(members)


def secondary_key(vary: Sequence[bytes], request_fields: Fields) -> Optional[bytes]:
    """
    The part of the cache key the response's C{Vary} selects from the
    request (RFC 9111 4.1), or C{None} for C{Vary: *}, which matches
    nothing.
    """
    if b"*" in vary:
        return None
    parts = []
    for name in sorted(set(vary)):
        parts.append(name + b"=" + normalize_value(name, field_value(request_fields, name)))
    return b"\x00".join(parts)


def primary_key(scheme: bytes, host: bytes, target: bytes,
                parts: Sequence[str] = ("scheme", "host", "path", "query"),
                extra: Sequence[Tuple[bytes, Optional[bytes]]] = ()) -> bytes:
    """
    The cache key of a request (RFC 9111 2): its URI, made of the parts a
    route's configuration keeps, then C{\\x00} and the configured extra
    request fields.  A URL's keys all start with C{URL + b'\\x00'}.
    """
    path, _, query = target.partition(b"?")
    key = b""
    if "scheme" in parts:
        key += scheme + b"://"
    if "host" in parts:
        key += host.lower()
    if "path" in parts:
        key += path
    if "query" in parts and query:
        key += b"?" + query
    key += b"\x00"
    if extra:
        key += b"\x00".join(n + b"=" + normalize_value(n, v) for n, v in extra)
    return key


def url_key(scheme: bytes, host: bytes, target: bytes) -> bytes:
    """
    L{primary_key} with every part of the URL and no extra field (the
    default key), in one format: the key holds the target as received, but
    for a C{?} with no query after it, which L{primary_key} leaves out.
    """
    if target.find(b"?") == len(target) - 1:
        return primary_key(scheme, host, target)
    return b"%s://%s%s\x00" % (scheme, host.lower(), target)


def conditional_fields(stored: CacheFields, fields: Fields) -> List[Tuple[bytes, bytes]]:
    """
    The fields that make a request for a stored response conditional
    (RFC 9111 4.3.1): C{If-None-Match} with its entity tag and
    C{If-Modified-Since} with its C{Last-Modified}.
    """
    out = []
    if stored.etag is not None:
        out.append((b"If-None-Match", stored.etag))
    last_modified = field_value(fields, b"last-modified")
    if last_modified is not None and stored.last_modified is not None:
        out.append((b"If-Modified-Since", last_modified))
    return out


def has_validator(stored: CacheFields) -> bool:
    return stored.etag is not None or stored.last_modified is not None


def _opaque(tag: bytes) -> bytes:
    return tag[2:] if tag.startswith(b"W/") else tag


def weak_match(a: bytes, b: bytes) -> bool:
    """
    Weak comparison of entity tags (RFC 9110 8.8.3.2).
    """
    return _opaque(a) == _opaque(b)


def strong_match(a: bytes, b: bytes) -> bool:
    """
    Strong comparison of entity tags (RFC 9110 8.8.3.2).
    """
    return not a.startswith(b"W/") and not b.startswith(b"W/") and a == b


def update_selects(stored: CacheFields, not_modified: CacheFields) -> bool:
    """
    Whether a 304 answering a validation refers to the stored response
    (RFC 9111 4.3.4): the same strong entity tag, else the same
    C{Last-Modified}, else (no validator in the 304) the only stored
    response.
    """
    if not_modified.etag is not None and not not_modified.etag.startswith(b"W/"):
        return stored.etag is not None and strong_match(stored.etag, not_modified.etag)
    if not_modified.last_modified is not None:
        return stored.last_modified == not_modified.last_modified
    if not_modified.etag is not None:
        return stored.etag is not None and weak_match(stored.etag, not_modified.etag)
    return True


def merge_304(stored: Fields, not_modified: Fields) -> List[Tuple[bytes, bytes]]:
    """
    A stored response's fields updated with those of a 304 (RFC 9111 3.2):
    each field the 304 carries replaces the stored field of that name,
    except the framing and connection fields and C{Content-Length}; the
    old C{Age} goes.
    """
    new = [(k, v) for k, v in not_modified
           if k.lower() not in _NOT_STORED and k.lower() != b"content-length"]
    # The stored Age belonged to the old response; the 304's (if any) is
    # the one that counts now.
    replaced = {k.lower() for k, _ in new} | {b"age"}
    return [(k, v) for k, v in stored if k.lower() not in replaced] + new


def fields_to_store(fields: Fields, response: CacheFields,
                    strip: Iterable[bytes] = ()) -> List[Tuple[bytes, bytes]]:
    """
    The response fields a shared cache keeps (RFC 9111 3.1): without the
    connection fields, those the C{Connection} field lists (RFC 9110
    7.6.1: they belong to the connection the response came on), those
    listed by a qualified C{private} (5.2.2.7), and the lower-cased names
    in C{strip}.  C{Age} is kept: it counts in the response's age (4.2.3).
    """
    drop = set(_NOT_STORED)
    drop.update(strip)
    for value in field_values(fields, b"connection"):
        drop.update(n.lower() for n in split_list(value))
    drop.update(response.cc.field_names("private") or ())
    return [(k, v) for k, v in fields if k.lower() not in drop]


def fields_to_serve(fields: Fields, response: CacheFields, age: float,
                    targeted: Sequence[bytes] = ()) -> List[Tuple[bytes, bytes]]:
    """
    The stored fields sent on reuse: with the current C{Age} in place of
    the stored one (RFC 9111 5.1), without the fields a qualified
    C{no-cache} lists (5.2.2.4: they need revalidation, which a reuse
    skips), and without the targeted fields meant for this cache only
    (RFC 9213).
    """
    return reused_fields(fields, response, targeted) + [(b"Age", age_value(age))]


def reused_fields(fields: Fields, response: CacheFields,
                  targeted: Sequence[bytes] = ()) -> List[Tuple[bytes, bytes]]:
    """
    L{fields_to_serve} but for C{Age}: what every reuse of a stored
    response sends, computed once per stored response.
    """
    drop = {b"age"}
    drop.update(targeted)
    drop.update(response.cc.field_names("no-cache") or ())
    return [(k, v) for k, v in fields if k.lower() not in drop]


def age_value(age: float) -> bytes:
    """
    The C{Age} value of a reused response (RFC 9111 5.1).
    """
    return b"%d" % min(int(age), MAX_DELTA)


def not_modified_fields(fields: Fields) -> List[Tuple[bytes, bytes]]:
    """
    The fields of a 304 built from a stored 200 (RFC 9110 15.4.5), with
    its C{Age} (RFC 9111 5.1).
    """
    return [(k, v) for k, v in fields if k.lower() in _NOT_MODIFIED_FIELDS]


def client_not_modified(method: bytes, request_fields: Fields, stored: CacheFields,
                        response_time: float) -> Optional[bool]:
    """
    How a client's own conditional request is answered from a fresh
    stored response (RFC 9110 13.2.2, RFC 9111 4.3.2): C{True} for a 304,
    C{False} for the full response, C{None} when the request has a
    precondition the cache leaves to the origin (C{If-Match},
    C{If-Unmodified-Since}).
    """
    if has_field(request_fields, b"if-match") or has_field(request_fields, b"if-unmodified-since"):
        return None
    if method not in (b"GET", b"HEAD"):
        return False
    inm = field_value(request_fields, b"if-none-match")
    if inm is not None:
        tags = split_list(inm)
        if b"*" in tags:
            return True
        return stored.etag is not None and any(weak_match(t, stored.etag) for t in tags)
    ims = parse_http_date(field_value(request_fields, b"if-modified-since"), response_time)
    if ims is None:
        return False
    modified = stored.last_modified
    if modified is None:
        modified = stored.date if stored.date is not None else response_time
    return modified <= ims


_RANGE = re.compile(rb"^bytes=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)

# The answer to an unsatisfiable range.
UNSATISFIABLE = (-1, -1)


def byte_range(request_fields: Fields, length: int, stored: CacheFields,
               response_time: float) -> Optional[Tuple[int, int]]:
    """
    The one byte range a GET asks of a stored full response
    (RFC 9110 14.2), as C{(first, last)} inclusive: C{None} to send the
    whole response (no C{Range}, several ranges, a syntax the cache does
    not serve, or an C{If-Range} that does not match, 13.1.5),
    L{UNSATISFIABLE} for a 416.

    @param response_time: When the stored response came, for the century
        of a two-digit year in an C{If-Range} date.
    """
    value = field_value(request_fields, b"range")
    if value is None:
        return None
    if_range = field_value(request_fields, b"if-range")
    if if_range is not None:
        if if_range.startswith(b'"') or if_range.startswith(b"W/"):
            if stored.etag is None or not strong_match(if_range.strip(), stored.etag):
                return None
        else:
            when = parse_http_date(if_range, response_time)
            if when is None or when != stored.last_modified:
                return None
    m = _RANGE.match(value)
    if m is None:
        return None
    first, last = m.groups()
    if not first:
        if not last:
            return None
        n = int(last)
        if n == 0 or length == 0:
            return UNSATISFIABLE
        return (max(length - n, 0), length - 1)
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= length:
        return UNSATISFIABLE
    end = int(last) if last else length - 1
    return (start, min(end, length - 1))


def invalidated_uris(status: int, method: bytes, fields: Fields) -> List[bytes]:
    """
    What a response to an unsafe request invalidates besides its target
    (RFC 9111 4.4): the URIs in C{Location} and C{Content-Location}, when
    the response is a success (2xx or 3xx); the caller keeps only those of
    the same origin.
    """
    if method in SAFE_METHODS or not 200 <= status < 400:
        return []
    return [v.strip() for name in (b"location", b"content-location")
            for v in field_values(fields, name)]


def cache_status(name: bytes, hit: bool, fwd: Optional[bytes] = None,
                 stored: bool = False, ttl: Optional[float] = None,
                 fwd_status: int = 0, detail: bytes = b"") -> bytes:
    """
    This cache's member of the C{Cache-Status} field (RFC 9211 2): C{hit},
    or C{fwd=} with why the request went forward (C{uri-miss},
    C{vary-miss}, C{miss}, C{request}, C{stale}, C{bypass}),
    C{fwd-status}, C{stored}, and C{ttl} (the freshness left, negative
    when stale).
    """
    out = name
    if hit:
        out += b"; hit"
    if fwd is not None:
        out += b"; fwd=" + fwd
    if fwd_status:
        out += b"; fwd-status=%d" % fwd_status
    if stored:
        out += b"; stored"
    if ttl is not None:
        out += b"; ttl=%d" % int(ttl)
    if detail:
        out += b"; detail=" + detail
    return out
