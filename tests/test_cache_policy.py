"""
Tests for L{twistproxy.cache.policy}: the rules of a shared cache, each
test naming the section of the RFC it checks.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twistproxy.cache import policy as P

NOW = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT
DATE = b"Tue, 14 Nov 2023 22:13:20 GMT"


def cf(*fields, targeted=(P.CDN_CACHE_CONTROL,)):
    return P.CacheFields(list(fields), targeted, NOW)


def storable(method=b"GET", status=200, request=(), response=(), **kw):
    return P.storable(method, status, list(request), cf(*response), list(response), **kw)


class ParsingTests(SynchronousTestCase):
    def test_case_and_whitespace(self):
        """
        RFC 9111 5.2: directive names are case-insensitive; whitespace
        around list members is optional (RFC 9110 5.6.1).
        """
        d = P.Directives.parse([b"  Max-Age=60 ,PUBLIC,, no-TRANSFORM "])
        self.assertEqual(d.seconds("max-age"), 60)
        self.assertIn("public", d)
        self.assertIn("no-transform", d)

    def test_quoted_values(self):
        """
        RFC 9111 5.2: argument values may be quoted strings; commas inside
        quotes do not split the list, and backslash escapes are undone.
        """
        d = P.Directives.parse([b'no-cache="Set-Cookie, X-A", max-age="30", x="a\\"b"'])
        self.assertEqual(d.field_names("no-cache"), [b"set-cookie", b"x-a"])
        self.assertEqual(d.seconds("max-age"), 30)
        self.assertEqual(d.values["x"], b'a"b')

    def test_several_fields(self):
        """
        RFC 9110 5.3: several Cache-Control fields are one list.
        """
        d = P.Directives.parse([b"public", b"max-age=5"])
        self.assertIn("public", d)
        self.assertEqual(d.seconds("max-age"), 5)

    def test_conflicting_duplicates_invalid(self):
        """
        RFC 9111 4.2.1: a directive given twice with different values is
        invalid, which makes the response stale; the same value twice is
        harmless.
        """
        self.assertEqual(P.Directives.parse([b"max-age=5, max-age=10"]).seconds("max-age"), -1)
        self.assertEqual(P.Directives.parse([b"max-age=5", b"max-age=5"]).seconds("max-age"), 5)
        r = cf((b"Cache-Control", b"max-age=5, max-age=10"))
        self.assertEqual(P.freshness_lifetime(200, r, NOW), 0.0)

    def test_unknown_directives_ignored(self):
        """
        RFC 9111 5.2.3: unknown directives are ignored (and do not disturb
        the known ones).
        """
        r = cf((b"Cache-Control", b"foo=bar, max-age=10, community=\"UCI\""))
        self.assertEqual(P.freshness_lifetime(200, r, NOW), 10.0)

    def test_invalid_delta_seconds(self):
        """
        RFC 9111 1.2.2: delta-seconds is digits only; anything else is
        invalid, and a value too large is taken as 2^31.
        """
        self.assertEqual(P.parse_delta(b"-1"), -1)
        self.assertEqual(P.parse_delta(b"1.5"), -1)
        self.assertEqual(P.parse_delta(b""), -1)
        self.assertEqual(P.parse_delta(b"99999999999999999999"), P.MAX_DELTA)
        self.assertEqual(P.parse_delta(b"4294967296"), P.MAX_DELTA)
        self.assertEqual(P.parse_delta(b"0012"), 12)

    def test_dates_three_formats(self):
        """
        RFC 9110 5.6.7: IMF-fixdate, RFC 850 and asctime dates are all
        accepted and mean the same instant.
        """
        expected = 784111777.0
        for value in [b"Sun, 06 Nov 1994 08:49:37 GMT",
                      b"Sunday, 06-Nov-94 08:49:37 GMT",
                      b"Sun Nov  6 08:49:37 1994"]:
            self.assertEqual(P.parse_http_date(value, NOW), expected, value)

    def test_rfc850_two_digit_year(self):
        """
        RFC 9110 5.6.7: a two-digit year more than 50 years in the future
        is the most recent past year with those digits.
        """
        self.assertEqual(P.parse_http_date(b"Monday, 01-Jan-24 00:00:00 GMT", NOW),
                         P.parse_http_date(b"Mon, 01 Jan 2024 00:00:00 GMT"))
        self.assertEqual(P.parse_http_date(b"Friday, 01-Jan-99 00:00:00 GMT", NOW),
                         P.parse_http_date(b"Fri, 01 Jan 1999 00:00:00 GMT"))

    def test_bad_dates(self):
        """
        RFC 9110 5.6.7: anything else is not a date.
        """
        for value in [b"0", b"-1", b"tomorrow", b"Sun, 06 Nov 1994 08:49:37 PST",
                      b"Sun, 32 Nov 1994 08:49:37 GMT", b"Sun, 06 Foo 1994 08:49:37 GMT"]:
            self.assertIsNone(P.parse_http_date(value, NOW), value)

    def test_age_values(self):
        """
        RFC 9111 5.1: the first member of a list Age is used; an invalid
        one is ignored; a huge one is capped.
        """
        self.assertEqual(P.parse_age([b"10, 20"]), 10)
        self.assertEqual(P.parse_age([b"ten"]), 0)
        self.assertEqual(P.parse_age([b"-5"]), 0)
        self.assertEqual(P.parse_age([b"123456789012345"]), P.MAX_DELTA)
        self.assertEqual(P.parse_age([]), 0)


class StorabilityTests(SynchronousTestCase):
    def test_get_default_cacheable(self):
        """
        RFC 9111 3: a GET response with a heuristically cacheable status
        may be stored without explicit freshness.
        """
        self.assertTrue(storable())
        self.assertTrue(storable(status=404))

    def test_methods(self):
        """
        RFC 9111 3: only methods defined as cacheable: not PUT or DELETE;
        HEAD answers are not stored (HEAD is served from a stored GET).
        """
        for method in [b"PUT", b"DELETE", b"HEAD", b"OPTIONS"]:
            self.assertFalse(storable(method=method), method)

    def test_post_only_when_allowed(self):
        """
        RFC 9110 9.3.3: a POST response is reusable only with explicit
        freshness and a Content-Location equal to the target, and only
        when the configuration allows POST.
        """
        response = [(b"Cache-Control", b"max-age=60"), (b"Content-Location", b"/a")]
        self.assertFalse(storable(method=b"POST", response=response, target=b"/a"))
        self.assertTrue(storable(method=b"POST", response=response, target=b"/a",
                                 allow_post=True))
        self.assertFalse(storable(method=b"POST", response=response, target=b"/b",
                                  allow_post=True))
        self.assertFalse(storable(method=b"POST", response=response[1:], target=b"/a",
                                  allow_post=True))

    def test_status_codes(self):
        """
        RFC 9111 3: a status that is not cacheable by default needs
        explicit freshness; 206 and 304 are never stored whole.
        """
        self.assertFalse(storable(status=500))
        self.assertFalse(storable(status=302))
        self.assertTrue(storable(status=302, response=[(b"Cache-Control", b"max-age=5")]))
        self.assertFalse(storable(status=206, response=[(b"Cache-Control", b"max-age=5")]))
        self.assertFalse(storable(status=304, response=[(b"Cache-Control", b"max-age=5")]))

    def test_no_store(self):
        """
        RFC 9111 5.2.2.5 and 5.2.1.5: no-store in the response or the
        request forbids storing.
        """
        self.assertFalse(storable(response=[(b"Cache-Control", b"max-age=60, no-store")]))
        self.assertFalse(storable(request=[(b"Cache-Control", b"no-store")]))

    def test_private(self):
        """
        RFC 9111 5.2.2.7: a shared cache must not store a private response;
        a qualified private only excludes the listed fields.
        """
        self.assertFalse(storable(response=[(b"Cache-Control", b"private, max-age=60")]))
        self.assertTrue(storable(response=[(b"Cache-Control", b'private="X-User", max-age=60')]))
        fields = [(b"Cache-Control", b'private="X-User"'), (b"X-User", b"bob"), (b"A", b"1")]
        self.assertEqual(P.fields_to_store(fields, cf(*fields)),
                         [(b"Cache-Control", b'private="X-User"'), (b"A", b"1")])

    def test_authorization(self):
        """
        RFC 9111 3.5: a response to a request with Authorization is stored
        only with public, s-maxage or must-revalidate.
        """
        auth = [(b"Authorization", b"Basic eA==")]
        self.assertFalse(storable(request=auth, response=[(b"Cache-Control", b"max-age=60")]))
        for cc in [b"public", b"s-maxage=5", b"must-revalidate, max-age=5"]:
            self.assertTrue(storable(request=auth, response=[(b"Cache-Control", cc)]), cc)

    def test_vary_star(self):
        """
        RFC 9111 4.1: Vary: * never matches, so storing it is pointless.
        """
        self.assertFalse(storable(response=[(b"Vary", b"*")]))

    def test_connection_fields_not_stored(self):
        """
        RFC 9111 3.1: connection-specific fields are not stored; Age is,
        since it counts in the stored response's age (4.2.3).
        """
        fields = [(b"Connection", b"close"), (b"Age", b"3"), (b"Keep-Alive", b"x"), (b"A", b"1")]
        self.assertEqual(P.fields_to_store(fields, cf(*fields)), [(b"Age", b"3"), (b"A", b"1")])

    def test_connection_listed_not_stored(self):
        """
        RFC 9111 3.1 and RFC 9110 7.6.1: the fields the Connection field
        lists belong to the connection the response came on, and are not
        stored (so never replayed); names match in any case.
        """
        fields = [(b"Connection", b"a, B"), (b"A", b"1"), (b"b", b"2"), (b"C", b"3"),
                  (b"connection", b"d"), (b"D", b"4")]
        self.assertEqual(P.fields_to_store(fields, cf(*fields)), [(b"C", b"3")])

    def test_set_cookie_not_stored(self):
        """
        RFC 9111 3 lets a shared cache store a response with Set-Cookie,
        and 7.3 warns that it may then reach other users: by default it is
        not stored, as nginx and Varnish do; a response whose qualified
        private (5.2.2.7) or no-cache (5.2.2.4) names Set-Cookie keeps the
        cookie from reuse, and is stored.  With the cookies not passed,
        it is stored, and the strip list keeps the field out.
        """
        cookie = (b"Set-Cookie", b"session=secret")
        self.assertFalse(storable(response=[(b"Cache-Control", b"max-age=60"), cookie]))
        self.assertFalse(storable(response=[(b"Cache-Control", b"public, max-age=60"), cookie]))
        for cc in [b'max-age=60, private="Set-Cookie"', b'max-age=60, no-cache="set-cookie"']:
            self.assertTrue(storable(response=[(b"Cache-Control", cc), cookie]), cc)
        fields = [(b"Cache-Control", b"max-age=60"), cookie, (b"A", b"1")]
        self.assertTrue(storable(response=fields, pass_cookies=False))
        self.assertEqual(P.fields_to_store(fields, cf(*fields), (P.SET_COOKIE,)),
                         [(b"Cache-Control", b"max-age=60"), (b"A", b"1")])


class FreshnessTests(SynchronousTestCase):
    def lifetime(self, *fields, status=200, **kw):
        return P.freshness_lifetime(status, cf(*fields), NOW, **kw)

    def test_s_maxage_first(self):
        """
        RFC 9111 4.2.1: a shared cache uses s-maxage before max-age and
        Expires.
        """
        self.assertEqual(self.lifetime((b"Cache-Control", b"max-age=10, s-maxage=20"),
                                       (b"Expires", b"Tue, 14 Nov 2023 22:14:20 GMT"),
                                       (b"Date", DATE)), 20)

    def test_max_age_over_expires(self):
        """
        RFC 9111 4.2.1 and 5.3: max-age wins over Expires.
        """
        self.assertEqual(self.lifetime((b"Cache-Control", b"max-age=10"),
                                       (b"Expires", b"Tue, 14 Nov 2023 22:14:20 GMT"),
                                       (b"Date", DATE)), 10)

    def test_expires_minus_date(self):
        """
        RFC 9111 4.2.1: Expires minus Date, in any of the date formats.
        """
        self.assertEqual(self.lifetime((b"Expires", b"Tue, 14 Nov 2023 22:14:20 GMT"),
                                       (b"Date", DATE)), 60)
        self.assertEqual(self.lifetime((b"Expires", b"Tuesday, 14-Nov-23 22:14:20 GMT"),
                                       (b"Date", DATE)), 60)
        self.assertEqual(self.lifetime((b"Expires", b"Tue Nov 14 22:14:20 2023"),
                                       (b"Date", DATE)), 60)

    def test_expires_without_date(self):
        """
        RFC 9111 4.2.1: without Date, the time the response arrived stands
        in for it.
        """
        self.assertEqual(self.lifetime((b"Expires", b"Tue, 14 Nov 2023 22:14:20 GMT")), 60)

    def test_invalid_expires_is_stale(self):
        """
        RFC 9111 5.3: an invalid Expires (such as 0) means already expired,
        and is explicit, so no heuristic applies.
        """
        self.assertEqual(self.lifetime((b"Expires", b"0"),
                                       (b"Last-Modified", b"Mon, 13 Nov 2023 22:13:20 GMT")), 0)
        self.assertEqual(self.lifetime((b"Expires", b"a"), (b"Expires", b"b")), 0)

    def test_invalid_max_age_is_stale(self):
        """
        RFC 9111 4.2.1: invalid freshness information is stale.
        """
        self.assertEqual(self.lifetime((b"Cache-Control", b"max-age=abc")), 0)

    def test_heuristic_from_last_modified(self):
        """
        RFC 9111 4.2.2: without explicit expiration, a tenth of the time
        since Last-Modified for heuristically cacheable statuses.
        """
        self.assertEqual(self.lifetime((b"Date", DATE),
                                       (b"Last-Modified", b"Tue, 14 Nov 2023 21:13:20 GMT")),
                         360)

    def test_heuristic_capped(self):
        """
        RFC 9111 4.2.2: the heuristic is bounded (a day here), however old
        the Last-Modified; and a Last-Modified after Date gives none.
        """
        self.assertEqual(self.lifetime((b"Date", DATE),
                                       (b"Last-Modified", b"Sun, 06 Nov 1994 08:49:37 GMT")),
                         P.HEURISTIC_LIMIT)
        self.assertEqual(self.lifetime((b"Date", DATE),
                                       (b"Last-Modified", b"Wed, 15 Nov 2023 22:13:20 GMT")), 0)

    def test_heuristic_not_for_other_statuses(self):
        """
        RFC 9111 4.2.2: no heuristic for a status not heuristically
        cacheable, unless public.
        """
        lm = (b"Last-Modified", b"Tue, 14 Nov 2023 21:13:20 GMT")
        self.assertEqual(self.lifetime((b"Date", DATE), lm, status=302), 0)
        self.assertEqual(self.lifetime((b"Date", DATE), lm, (b"Cache-Control", b"public"),
                                       status=302), 360)

    def test_default_and_max_ttl(self):
        """
        RFC 9111 4.2.2: the configured default is a heuristic, used only
        without explicit freshness or Last-Modified; the maximum caps every
        lifetime (a cache may always drop entries sooner).
        """
        self.assertEqual(self.lifetime(default_ttl=30), 30)
        self.assertEqual(self.lifetime((b"Cache-Control", b"max-age=0"), default_ttl=30), 0)
        self.assertEqual(self.lifetime((b"Cache-Control", b"max-age=1000"), max_ttl=100), 100)

    def test_age_calculation(self):
        """
        RFC 9111 4.2.3: the initial age is the larger of the apparent age
        (from Date) and Age plus the time in transit; the current age adds
        the time spent in the cache.
        """
        r = cf((b"Date", b"Tue, 14 Nov 2023 22:13:10 GMT"), (b"Age", b"3"))
        self.assertEqual(P.initial_age(r, NOW - 2, NOW), 10)
        r = cf((b"Date", DATE), (b"Age", b"30"))
        self.assertEqual(P.initial_age(r, NOW - 2, NOW), 32)
        self.assertEqual(P.current_age(32, NOW, NOW + 8), 40)

    def test_clock_skew(self):
        """
        RFC 9111 4.2.3: a Date in the future does not make the age
        negative.
        """
        r = cf((b"Date", b"Tue, 14 Nov 2023 23:13:20 GMT"))
        self.assertEqual(P.initial_age(r, NOW, NOW), 0)

    def test_age_on_reuse(self):
        """
        RFC 9111 5.1: a reused response carries its current age in Age,
        replacing the stored one.
        """
        fields = P.fields_to_serve([(b"Age", b"3"), (b"A", b"1")], cf(), 12.7)
        self.assertEqual(fields, [(b"A", b"1"), (b"Age", b"12")])


class TargetedTests(SynchronousTestCase):
    def test_cdn_cache_control_first(self):
        """
        RFC 9213 2.2: a valid CDN-Cache-Control replaces Cache-Control for
        this cache.
        """
        r = cf((b"Cache-Control", b"no-store"), (b"CDN-Cache-Control", b"max-age=60"))
        self.assertTrue(r.targeted)
        self.assertEqual(P.freshness_lifetime(200, r, NOW), 60)
        self.assertNotIn("no-store", r.cc)

    def test_configured_field_before_cdn(self):
        """
        RFC 9213 2.2: the most specific targeted field the cache knows wins.
        """
        r = cf((b"CDN-Cache-Control", b"max-age=60"), (b"Edge-Cache-Control", b"max-age=5"),
               targeted=(b"edge-cache-control", P.CDN_CACHE_CONTROL))
        self.assertEqual(P.freshness_lifetime(200, r, NOW), 5)

    def test_invalid_targeted_ignored(self):
        """
        RFC 9213 2.1: a targeted field with no valid directive is ignored.
        """
        r = cf((b"Cache-Control", b"max-age=7"), (b"CDN-Cache-Control", b" , "))
        self.assertFalse(r.targeted)
        self.assertEqual(P.freshness_lifetime(200, r, NOW), 7)

    def test_invalid_structured_field_ignored(self):
        """
        RFC 9213 2.1: a targeted field is a Structured Field Dictionary
        (RFC 8941 4.2.2); one that fails to parse (an unknown item type,
        a space around "=", an upper-case key, a trailing comma) is
        ignored as a whole, and Cache-Control governs.
        """
        for value in [b"max-age=10000, &&&&&", b"max-age =100", b"max-age= 100",
                      b"MaX-aGe=3600", b"max-age=60,", b"max-age=60,,public", b""]:
            r = cf((b"Cache-Control", b"no-store"), (b"CDN-Cache-Control", value))
            self.assertFalse(r.targeted, value)
            self.assertIn("no-store", r.cc, value)

    def test_wrong_type_ignored(self):
        """
        RFC 9213 2.1: a known directive whose value has the wrong type (a
        String, a Decimal or a negative Integer for max-age, a value for
        a Boolean directive) makes the targeted field be ignored, not
        honoured; Cache-Control governs.
        """
        for value in [b'max-age="10000"', b"max-age=1.5", b"max-age=-1", b"no-store=5",
                      b'private="Set-Cookie", max-age=60', b"s-maxage=(1 2)"]:
            r = cf((b"Cache-Control", b"max-age=7"), (b"CDN-Cache-Control", value))
            self.assertFalse(r.targeted, value)
            self.assertEqual(P.freshness_lifetime(200, r, NOW), 7, value)

    def test_structured_field_members(self):
        """
        RFC 9213 2.1 and RFC 8941 4.2.2: Boolean directives without a
        value or with ?1, unknown extensions of any type (kept, and
        ignored by the rules), parameters, several field lines joined,
        and a Boolean false as good as absent; large integers as
        delta-seconds (RFC 9111 1.2.2).
        """
        r = cf((b"CDN-Cache-Control", b"foobar, x=(1 \"a\");q=?0, y=:YWJj:, max-age=60;p=1"),
               (b"CDN-Cache-Control", b"must-revalidate=?1, public=?0"))
        self.assertTrue(r.targeted)
        self.assertEqual(r.cc.seconds("max-age"), 60)
        self.assertIn("foobar", r.cc)
        self.assertIn("must-revalidate", r.cc)
        self.assertNotIn("public", r.cc)
        big = cf((b"CDN-Cache-Control", b"max-age=99999999999"))
        self.assertEqual(big.cc.seconds("max-age"), P.MAX_DELTA)

    def test_targeted_not_passed_on(self):
        """
        RFC 9213 2: the targeted fields are for this cache: kept with the
        stored response (they govern its freshness) but not passed on.
        """
        fields = [(b"CDN-Cache-Control", b"max-age=60"), (b"A", b"1")]
        self.assertEqual(P.fields_to_store(fields, cf(*fields)), fields)
        self.assertEqual(P.fields_to_serve(fields, cf(*fields), 0, [P.CDN_CACHE_CONTROL]),
                         [(b"A", b"1"), (b"Age", b"0")])


class ReuseTests(SynchronousTestCase):
    def reuse(self, cc=b"max-age=100", age=10.0, request=b"", **kw):
        r = cf((b"Cache-Control", cc))
        req = P.request_directives([(b"Cache-Control", request)] if request else [])
        return P.reuse(r, P.freshness_lifetime(200, r, NOW), age, req, **kw)

    def test_fresh(self):
        """
        RFC 9111 4.2: a fresh response is served.
        """
        self.assertEqual(self.reuse(), P.FRESH)

    def test_stale_validates(self):
        """
        RFC 9111 4.2.4: a stale response is not served without validation.
        """
        self.assertEqual(self.reuse(age=200), P.VALIDATE)

    def test_response_no_cache(self):
        """
        RFC 9111 5.2.2.4: unqualified no-cache always validates; a
        qualified one lets the response be reused without those fields.
        """
        self.assertEqual(self.reuse(cc=b"no-cache, max-age=100"), P.VALIDATE)
        self.assertEqual(self.reuse(cc=b'no-cache="Set-Cookie", max-age=100'), P.FRESH)
        fields = [(b"Set-Cookie", b"a=b"), (b"A", b"1")]
        served = P.fields_to_serve(fields, cf((b"Cache-Control", b'no-cache="set-cookie"')), 0)
        self.assertEqual(served, [(b"A", b"1"), (b"Age", b"0")])

    def test_request_no_cache(self):
        """
        RFC 9111 5.2.1.4 and 5.4: request no-cache (or Pragma: no-cache
        without Cache-Control) validates, unless configured to ignore it.
        """
        self.assertEqual(self.reuse(request=b"no-cache"), P.VALIDATE)
        self.assertEqual(self.reuse(request=b"no-cache", honour_no_cache=False), P.FRESH)
        r = cf((b"Cache-Control", b"max-age=100"))
        req = P.request_directives([(b"Pragma", b"no-cache")])
        self.assertEqual(P.reuse(r, 100, 1, req), P.VALIDATE)
        req = P.request_directives([(b"Pragma", b"no-cache"), (b"Cache-Control", b"max-stale")])
        self.assertEqual(P.reuse(r, 100, 1, req), P.FRESH)

    def test_request_max_age(self):
        """
        RFC 9111 5.2.1.1: the client will not take a response older than
        max-age.
        """
        self.assertEqual(self.reuse(request=b"max-age=5"), P.VALIDATE)
        self.assertEqual(self.reuse(request=b"max-age=50"), P.FRESH)

    def test_request_min_fresh(self):
        """
        RFC 9111 5.2.1.3: the response must stay fresh for min-fresh more.
        """
        self.assertEqual(self.reuse(request=b"min-fresh=95"), P.VALIDATE)
        self.assertEqual(self.reuse(request=b"min-fresh=50"), P.FRESH)

    def test_request_max_stale(self):
        """
        RFC 9111 5.2.1.2: max-stale accepts a stale response, up to its
        value, or any without one.
        """
        self.assertEqual(self.reuse(age=150, request=b"max-stale=60"), P.STALE)
        self.assertEqual(self.reuse(age=170, request=b"max-stale=60"), P.VALIDATE)
        self.assertEqual(self.reuse(age=10 ** 6, request=b"max-stale"), P.STALE)

    def test_must_revalidate(self):
        """
        RFC 9111 5.2.2.2, 5.2.2.8 and 5.2.2.10: must-revalidate,
        proxy-revalidate and s-maxage forbid serving stale, even when the
        client accepts it.
        """
        for cc in [b"max-age=100, must-revalidate", b"max-age=100, proxy-revalidate",
                   b"s-maxage=100"]:
            self.assertEqual(self.reuse(cc=cc, age=150, request=b"max-stale"), P.VALIDATE, cc)
            self.assertEqual(self.reuse(cc=cc, age=50), P.FRESH, cc)

    def test_stale_while_revalidate(self):
        """
        RFC 5861 3: within the window, the stale response is served while it
        is refreshed; past it, it is validated first; must-revalidate
        overrides it (RFC 9111 4.2.4).
        """
        self.assertEqual(self.reuse(cc=b"max-age=100, stale-while-revalidate=30", age=120),
                         P.SWR)
        self.assertEqual(self.reuse(cc=b"max-age=100, stale-while-revalidate=30", age=140),
                         P.VALIDATE)
        self.assertEqual(
            self.reuse(cc=b"max-age=100, stale-while-revalidate=30, must-revalidate", age=120),
            P.VALIDATE)

    def test_stale_if_error(self):
        """
        RFC 5861 4: stale-if-error (in the response or the request) allows
        serving a stale response when the origin fails, within its window;
        must-revalidate forbids it.
        """
        r = cf((b"Cache-Control", b"max-age=100, stale-if-error=60"))
        none = P.Directives({})
        self.assertTrue(P.usable_on_error(r, 100, 150, none))
        self.assertFalse(P.usable_on_error(r, 100, 170, none))
        r2 = cf((b"Cache-Control", b"max-age=100"))
        self.assertFalse(P.usable_on_error(r2, 100, 150, none))
        self.assertTrue(P.usable_on_error(
            r2, 100, 150, P.request_directives([(b"Cache-Control", b"stale-if-error=90")])))
        r3 = cf((b"Cache-Control", b"max-age=100, stale-if-error=60, must-revalidate"))
        self.assertFalse(P.usable_on_error(r3, 100, 150, none))

    def test_store_ttl(self):
        """
        RFC 9111 4.3 and RFC 5861: entries stay stored through their stale
        windows, and longer when they have a validator to revalidate with.
        """
        self.assertEqual(P.store_ttl(cf((b"Cache-Control", b"max-age=10")), 10), 10)
        self.assertEqual(P.store_ttl(cf((b"Cache-Control", b"max-age=10, stale-if-error=50")),
                                     10), 60)
        self.assertEqual(P.store_ttl(cf((b"ETag", b'"a"')), 10), 310)

    def test_grace_when_unreachable(self):
        """
        RFC 9111 4.2.4 (a cache disconnected from the origin may serve
        stale) and RFC 5861 4: the cache's own grace window lets a stale
        response stand in for an origin that cannot be reached, counted
        from the end of freshness, longer than the response's own
        stale-if-error; never for must-revalidate, proxy-revalidate,
        s-maxage (5.2.2.10) or no-cache.
        """
        none = P.Directives({})
        r = cf((b"Cache-Control", b"max-age=100, stale-if-error=60"))
        self.assertTrue(P.usable_on_error(r, 100, 400, none, grace=300))
        self.assertFalse(P.usable_on_error(r, 100, 401, none, grace=300))
        self.assertTrue(P.usable_on_error(r, 100, 160, none, grace=10))
        for cc in [b"max-age=100, must-revalidate", b"max-age=100, proxy-revalidate",
                   b"s-maxage=100", b"max-age=100, no-cache"]:
            self.assertFalse(P.usable_on_error(cf((b"Cache-Control", cc)), 100, 101, none,
                                               grace=300), cc)
            self.assertTrue(P.forbids_stale(cf((b"Cache-Control", cc))), cc)

    def test_store_ttl_grace(self):
        """
        RFC 9111 4.2.4: a response that may be served stale is kept for
        the grace window past its freshness; one that may not, or one not
        worth keeping at all (no freshness, no validator), is not kept
        longer for it.
        """
        self.assertEqual(P.store_ttl(cf((b"Cache-Control", b"max-age=10")), 10, 3600), 3610)
        self.assertEqual(P.store_ttl(cf((b"ETag", b'"a"')), 10, 3600), 3610)
        self.assertEqual(P.store_ttl(cf((b"ETag", b'"a"')), 10, 100), 310)
        self.assertEqual(P.store_ttl(cf((b"Cache-Control", b"max-age=10, must-revalidate")),
                                     10, 3600), 10)
        self.assertEqual(P.store_ttl(cf(), 0, 3600), 0)


class KeyTests(SynchronousTestCase):
    def test_primary_key(self):
        """
        RFC 9111 2: the key is the target URI (host case-folded); a
        configuration may leave parts out or add request fields.
        """
        self.assertEqual(P.primary_key(b"http", b"A.com", b"/p?q=1"), b"http://a.com/p?q=1\x00")
        self.assertEqual(P.primary_key(b"http", b"a.com", b"/p?q=1", ("scheme", "host", "path")),
                         b"http://a.com/p\x00")
        self.assertEqual(P.primary_key(b"http", b"a.com", b"/", extra=[(b"x-a", b" 1 ")]),
                         b"http://a.com/\x00x-a=1")

    def test_url_key(self):
        """
        RFC 9111 2: L{P.url_key} is L{P.primary_key} with its default
        parts, a query mark with nothing after it left out as there.
        """
        for target in (b"/p?q=1", b"/p", b"/", b"/p?", b"/p??", b"/?a?", b"/p?q=1?", b""):
            with self.subTest(target=target):
                self.assertEqual(P.url_key(b"https", b"A.com:8", target),
                                 P.primary_key(b"https", b"A.com:8", target))
        self.assertEqual(P.url_key(b"http", b"a.com", b"/p?"), b"http://a.com/p\x00")

    def test_vary_secondary_key(self):
        """
        RFC 9111 4.1: Vary selects request fields, compared after
        normalising whitespace (and case for Accept* tokens); a missing
        field differs from an empty one.
        """
        k1 = P.secondary_key([b"accept-encoding"], [(b"Accept-Encoding", b"GZIP,  br")])
        k2 = P.secondary_key([b"accept-encoding"], [(b"accept-encoding", b"gzip, br")])
        k3 = P.secondary_key([b"accept-encoding"], [(b"accept-encoding", b"br")])
        k4 = P.secondary_key([b"accept-encoding"], [])
        k5 = P.secondary_key([b"accept-encoding"], [(b"accept-encoding", b"")])
        self.assertEqual(k1, k2)
        self.assertNotEqual(k1, k3)
        self.assertNotEqual(k4, k5)

    def test_vary_star(self):
        """
        RFC 9111 4.1: Vary: * matches no request.
        """
        self.assertIsNone(P.secondary_key([b"*"], []))


class ValidationTests(SynchronousTestCase):
    def test_conditional_fields(self):
        """
        RFC 9111 4.3.1: validation sends the stored entity tag in
        If-None-Match and Last-Modified in If-Modified-Since.
        """
        fields = [(b"ETag", b'"x"'), (b"Last-Modified", b"Tue, 14 Nov 2023 21:13:20 GMT")]
        self.assertEqual(P.conditional_fields(cf(*fields), fields),
                         [(b"If-None-Match", b'"x"'),
                          (b"If-Modified-Since", b"Tue, 14 Nov 2023 21:13:20 GMT")])
        self.assertEqual(P.conditional_fields(cf(), []), [])

    def test_merge_304(self):
        """
        RFC 9111 3.2: a 304's fields replace the stored ones of the same
        name, except framing fields and Content-Length; the old Age goes
        (4.2.3: the 304 is the new response).
        """
        stored = [(b"Cache-Control", b"max-age=1"), (b"ETag", b'"x"'), (b"Content-Length", b"5"),
                  (b"X-Old", b"1"), (b"Age", b"30")]
        nm = [(b"cache-control", b"max-age=100"), (b"Content-Length", b"0"),
              (b"Connection", b"close"), (b"X-New", b"2")]
        self.assertEqual(P.merge_304(stored, nm),
                         [(b"ETag", b'"x"'), (b"Content-Length", b"5"), (b"X-Old", b"1"),
                          (b"cache-control", b"max-age=100"), (b"X-New", b"2")])

    def test_update_selects(self):
        """
        RFC 9111 4.3.4: a 304 updates the stored response with the same
        strong validator, or the same Last-Modified, or any when it has
        none.
        """
        stored = cf((b"ETag", b'"a"'), (b"Last-Modified", DATE))
        self.assertTrue(P.update_selects(stored, cf((b"ETag", b'"a"'))))
        self.assertFalse(P.update_selects(stored, cf((b"ETag", b'"b"'))))
        self.assertTrue(P.update_selects(stored, cf((b"Last-Modified", DATE))))
        self.assertTrue(P.update_selects(stored, cf()))

    def test_client_if_none_match(self):
        """
        RFC 9110 13.1.2 and 13.2.2: If-None-Match is evaluated first with
        weak comparison; a match gives 304, no match the full response.
        """
        stored = cf((b"ETag", b'W/"a"'))
        check = P.client_not_modified
        self.assertTrue(check(b"GET", [(b"If-None-Match", b'"b", "a"')], stored, NOW))
        self.assertTrue(check(b"HEAD", [(b"If-None-Match", b"*")], stored, NOW))
        self.assertFalse(check(b"GET", [(b"If-None-Match", b'"b"'),
                                        (b"If-Modified-Since", DATE)], stored, NOW))

    def test_client_if_modified_since(self):
        """
        RFC 9110 13.1.3 and RFC 9111 4.3.2: If-Modified-Since compares with
        Last-Modified, else Date, else when the response arrived.
        """
        check = P.client_not_modified
        lm = cf((b"Last-Modified", b"Tue, 14 Nov 2023 21:13:20 GMT"))
        self.assertTrue(check(b"GET", [(b"If-Modified-Since", DATE)], lm, NOW))
        self.assertFalse(check(b"GET", [(b"If-Modified-Since", b"Tue, 14 Nov 2023 20:00:00 GMT")],
                               lm, NOW))
        self.assertTrue(check(b"GET", [(b"If-Modified-Since", DATE)], cf(), NOW))
        self.assertFalse(check(b"GET", [(b"If-Modified-Since", b"junk")], cf(), NOW))
        # The obsolete formats too, a two-digit year read as of the
        # stored response (RFC 9110 5.6.7).
        self.assertTrue(check(b"GET", [(b"If-Modified-Since", b"Tuesday, 14-Nov-23 22:13:20 GMT")],
                              lm, NOW))

    def test_client_other_preconditions(self):
        """
        RFC 9110 13.2.2: If-Match and If-Unmodified-Since are left to the
        origin.
        """
        self.assertIsNone(P.client_not_modified(b"GET", [(b"If-Match", b'"a"')], cf(), NOW))

    def test_not_modified_fields(self):
        """
        RFC 9110 15.4.5: a 304 carries the metadata fields a 200 would;
        RFC 9111 5.1: and its Age, when the cache made it.
        """
        fields = [(b"ETag", b'"a"'), (b"Content-Type", b"text/plain"), (b"Vary", b"A"),
                  (b"Age", b"3")]
        self.assertEqual(P.not_modified_fields(fields),
                         [(b"ETag", b'"a"'), (b"Vary", b"A"), (b"Age", b"3")])


class RangeTests(SynchronousTestCase):
    def rng(self, value, length=100, *extra, stored=()):
        return P.byte_range([(b"Range", value)] + list(extra), length, cf(*stored), NOW)

    def test_single_ranges(self):
        """
        RFC 9110 14.1.2: first-last, open-ended and suffix ranges; a last
        position past the end is the end.
        """
        self.assertEqual(self.rng(b"bytes=0-9"), (0, 9))
        self.assertEqual(self.rng(b"bytes=90-"), (90, 99))
        self.assertEqual(self.rng(b"bytes=-10"), (90, 99))
        self.assertEqual(self.rng(b"bytes=-1000"), (0, 99))
        self.assertEqual(self.rng(b"bytes=50-1000"), (50, 99))

    def test_unsatisfiable(self):
        """
        RFC 9110 15.5.17: a range starting past the end is unsatisfiable.
        """
        self.assertEqual(self.rng(b"bytes=100-"), P.UNSATISFIABLE)
        self.assertEqual(self.rng(b"bytes=-0"), P.UNSATISFIABLE)

    def test_ignored(self):
        """
        RFC 9110 14.2: a server may ignore Range: invalid, several ranges,
        or other units give the whole response.
        """
        for value in [b"bytes=5-1", b"bytes=0-1,5-6", b"items=0-1", b"bytes=x-"]:
            self.assertIsNone(self.rng(value), value)
        self.assertIsNone(P.byte_range([], 10, cf(), NOW))

    def test_if_range(self):
        """
        RFC 9110 13.1.5: If-Range with a strong matching entity tag (or the
        exact Last-Modified) allows the range; otherwise the whole response.
        """
        stored = ((b"ETag", b'"a"'), (b"Last-Modified", DATE))
        self.assertEqual(self.rng(b"bytes=0-1", 10, (b"If-Range", b'"a"'), stored=stored), (0, 1))
        self.assertIsNone(self.rng(b"bytes=0-1", 10, (b"If-Range", b'"b"'), stored=stored))
        self.assertIsNone(self.rng(b"bytes=0-1", 10, (b"If-Range", b'W/"a"'), stored=stored))
        self.assertEqual(self.rng(b"bytes=0-1", 10, (b"If-Range", DATE), stored=stored), (0, 1))
        rfc850 = (b"If-Range", b"Tuesday, 14-Nov-23 22:13:20 GMT")
        self.assertEqual(self.rng(b"bytes=0-1", 10, rfc850, stored=stored), (0, 1))


class InvalidationTests(SynchronousTestCase):
    def test_unsafe_success(self):
        """
        RFC 9111 4.4: a successful unsafe request invalidates the Location
        and Content-Location URIs too.
        """
        fields = [(b"Location", b"/a"), (b"Content-Location", b"http://x/b")]
        self.assertEqual(P.invalidated_uris(201, b"POST", fields), [b"/a", b"http://x/b"])

    def test_not_on_error_or_safe(self):
        """
        RFC 9111 4.4: only non-error responses to unsafe methods invalidate.
        """
        fields = [(b"Location", b"/a")]
        self.assertEqual(P.invalidated_uris(500, b"POST", fields), [])
        self.assertEqual(P.invalidated_uris(200, b"GET", fields), [])

    def test_unknown_methods_unsafe(self):
        """
        RFC 9111 4.4 ("including methods whose safety is unknown") and RFC
        9110 9.2.1: every method but GET, HEAD, OPTIONS and TRACE
        invalidates, M-SEARCH and other extension methods included.
        """
        fields = [(b"Location", b"/a")]
        for method in [b"M-SEARCH", b"PROPPATCH", b"PURGEALL"]:
            self.assertNotIn(method, P.SAFE_METHODS)
            self.assertEqual(P.invalidated_uris(200, method, fields), [b"/a"], method)
        for method in [b"OPTIONS", b"TRACE", b"HEAD"]:
            self.assertEqual(P.invalidated_uris(200, method, fields), [], method)


class CacheStatusTests(SynchronousTestCase):
    def test_members(self):
        """
        RFC 9211 2: the cache's member names it, then hit or fwd (with
        fwd-status), stored, and ttl.
        """
        self.assertEqual(P.cache_status(b"tp", True, ttl=12.5), b"tp; hit; ttl=12")
        self.assertEqual(P.cache_status(b"tp", False, fwd=b"uri-miss", stored=True, ttl=60),
                         b"tp; fwd=uri-miss; stored; ttl=60")
        self.assertEqual(P.cache_status(b"tp", False, fwd=b"stale", fwd_status=304),
                         b"tp; fwd=stale; fwd-status=304")

    def test_http_date(self):
        """
        RFC 9110 5.6.7: dates the cache writes are IMF-fixdate.
        """
        self.assertEqual(P.http_date(NOW), DATE)


class HostileInputTests(SynchronousTestCase):
    def test_never_raises(self):
        """
        RFC 9110 5.5 and RFC 9111 5: whatever bytes a peer puts in the fields
        the cache reads, the rules answer without raising (bad values are
        invalid, never a crash).
        """
        weird = [b"", b",", b'"', b'max-age="', b"max-age==5", b"\x00\xff", b"=",
                 b"max-age=" + b"9" * 500, b"s-maxage=-0", b'no-cache="a, \\"', b"*",
                 b"Sun, 00 Nov 1994 08:49:37 GMT", b"Sun, 06 Nov 0000 08:49:37 GMT",
                 b"Sunday, 06-Nov-94 25:49:37 GMT", b"bytes=" + b"9" * 400 + b"-",
                 b"bytes=-" + b"9" * 400, b"W/", b"W/\"", b"a" * 10000]
        for value in weird:
            fields = [(name, value) for name in (
                b"Cache-Control", b"CDN-Cache-Control", b"Expires", b"Date", b"Age",
                b"Last-Modified", b"ETag", b"Vary", b"Range", b"If-Range",
                b"If-None-Match", b"If-Modified-Since", b"Pragma", b"Location")]
            r = cf(*fields)
            lifetime = P.freshness_lifetime(200, r, NOW, 10, 100)
            P.storable(b"GET", 200, fields, r, fields)
            P.reuse(r, lifetime, P.initial_age(r, NOW, NOW), P.request_directives(fields))
            P.usable_on_error(r, lifetime, 0, P.request_directives(fields))
            P.store_ttl(r, lifetime)
            P.secondary_key(r.vary, fields)
            P.client_not_modified(b"GET", fields[:13], r, NOW)
            P.byte_range(fields, 100, r, NOW)
            P.update_selects(r, r)
            P.merge_304(fields, fields)
            P.fields_to_serve(fields, r, 1e30)
            P.invalidated_uris(200, b"POST", fields)


class CitationTests(SynchronousTestCase):
    def test_every_rule_cites_its_section(self):
        """
        Every other test in this module names, in its docstring, the RFC
        and the section it checks (C{RFC 9111 4.2.1}), so that each rule is
        read with its source.
        """
        import re
        import sys

        cite = re.compile(r"RFC \d{4} \d+(\.\d+)*")
        module = sys.modules[__name__]
        tests = [(cls.__name__, name, getattr(cls, name).__doc__ or "")
                 for cls in vars(module).values()
                 if isinstance(cls, type) and issubclass(cls, SynchronousTestCase)
                 and cls is not CitationTests
                 for name in vars(cls) if name.startswith("test")]
        self.assertGreater(len(tests), 50)
        for cls, name, doc in tests:
            self.assertRegex(" ".join(doc.split()), cite, f"{cls}.{name}")
