"""
Tests for the ACME parts of the admin API: C{POST /acme/renew?name=...}
forces the renewal of one certificate (L{twistproxy.acme.schedule.Renewal.renew}
with C{forced}), which C{GET /acme} then reports.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from tests.test_acme import DAY, START, issued
from tests.test_admin import AdminTestCase
from twistproxy.acme.schedule import Renewal


class RenewNowTests(AdminTestCase):
    """
    C{POST /acme/renew?name=NAME}.
    """

    def setUp(self):
        super().setUp()
        self.renewal_clock = Clock()
        self.renewal_clock.advance(START.timestamp() + DAY)
        self.calls = []
        self.pending = Deferred()
        self.renewal = Renewal(
            self.renewal_clock, ["www.example.com", "*.example.com"],
            lambda: issued(names=("www.example.com", "*.example.com")), self.obtain,
            lambda: None, retry=60.0, random_jitter=lambda: 0.0, force=self.force)
        self.renewal.start()
        self.service.renewals = [self.renewal]

    def obtain(self):
        self.calls.append("obtain")
        return self.pending

    def force(self):
        self.calls.append("force")
        return self.pending

    def test_forces_renewal(self):
        """
        A known name (any case, with or without the final dot) starts a
        forced renewal at once, answered C{202} with the certificate's
        names; C{GET /acme} shows it under way, then its outcome.
        """
        _, body = self.json("POST", "/acme/renew?name=WWW.Example.com.", 202)
        self.assertEqual(body, {"names": ["www.example.com", "*.example.com"],
                                "renewing": True})
        self.assertEqual(self.calls, ["force"])
        _, listed = self.json("GET", "/acme")
        self.assertTrue(listed["certificates"][0]["renewing"])
        self.pending.errback(RuntimeError("the CA said no"))
        self.flushLoggedErrors(RuntimeError)
        _, listed = self.json("GET", "/acme")
        self.assertFalse(listed["certificates"][0]["renewing"])
        self.assertEqual(listed["certificates"][0]["last_error"], "the CA said no")

    def test_wildcard_name(self):
        """
        A wildcard name finds its certificate too.
        """
        self.json("POST", "/acme/renew?name=*.example.com", 202)
        self.assertEqual(self.calls, ["force"])

    def test_under_way(self):
        """
        While a renewal of that certificate is under way, another is
        refused with C{409} and nothing more is ordered.
        """
        self.json("POST", "/acme/renew?name=www.example.com", 202)
        _, body = self.json("POST", "/acme/renew?name=www.example.com", 409)
        self.assertIn("under way", body["error"])
        self.assertEqual(self.calls, ["force"])

    def test_unknown_or_missing_name(self):
        """
        A name no ACME certificate holds is C{404}; no name is C{400};
        neither renews anything.
        """
        _, body = self.json("POST", "/acme/renew?name=other.example.com", 404)
        self.assertIn("other.example.com", body["error"])
        self.json("POST", "/acme/renew", 400)
        self.assertEqual(self.calls, [])

    def test_post_only(self):
        """
        C{GET} is not a way to renew: C{405}, naming C{POST}.
        """
        response, _ = self.json("GET", "/acme/renew?name=www.example.com", 405)
        self.assertEqual(response.headers.getRawHeaders("allow"), ["POST"])
        self.assertEqual(self.calls, [])

    def test_scheduled_renewal_is_not_forced(self):
        """
        The renewal that falls due on its own goes through C{obtain} (which
        may take another instance's certificate), not C{force}.
        """
        self.renewal_clock.advance(60 * DAY)
        self.assertEqual(self.calls, ["obtain"])


class RenewNowTokenTests(RenewNowTests):
    """
    With a token, forcing a renewal needs it like every admin request.
    """

    token = "s3cret"

    def json(self, method, path, code=200, headers=None):
        return super().json(method, path, code, {"Authorization": "Bearer s3cret"})

    def test_without_token(self):
        """
        Without the token the answer is C{401} and nothing is renewed.
        """
        response, _ = self.request("POST", "/acme/renew?name=www.example.com")
        self.assertEqual(response.code, 401)
        self.assertEqual(self.calls, [])
