"""
Tests for L{twistproxy.filters.jwt}: the C{jwt} request filter.
"""

from __future__ import annotations

import json

from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from twistproxy.config import ConfigError
from twistproxy.filters.chain import FilterChain
from twistproxy.filters.jwt import MAX_JWKS_BODY, JWTFactory
from twistproxy.testing import FilterContractMixin, make_exchange

from tests.filter_support import field, filtered_proxy, request, status

NOW = 1_800_000_000
URL = "https://idp.example/jwks"


def _rsa(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, {"kid": kid, "alg": "RS256"})


RSA = _rsa("r1")
ROTATED = _rsa("r2")
EC = ECKey.generate_key("P-256", {"kid": "e1"})
ED = OKPKey.generate_key("Ed25519", {"kid": "o1"})


def _jwks(*keys) -> bytes:
    return json.dumps({"keys": [k.as_dict(private=False) for k in keys]}).encode()


def _token(key, alg: str = "RS256", **claims) -> str:
    payload = {"iss": "https://idp.example", "aud": "api", "exp": NOW + 60, "sub": "alice"}
    payload.update(claims)
    header = {"alg": alg}
    if key.kid:
        header["kid"] = key.kid
    return jwt.encode(header, payload, key, algorithms=[alg])


class JWKSResource(Resource):
    """
    A JWKS endpoint whose keys and health a test changes; counts fetches.
    """

    isLeaf = True

    def __init__(self, *keys):
        super().__init__()
        self.body = _jwks(*keys)
        self.down = False
        self.late = False
        self.fetches = 0

    def render_GET(self, request):
        self.fetches += 1
        if self.late:
            return NOT_DONE_YET
        if self.down:
            request.setResponseCode(503)
            return b"down"
        return self.body


class JWTTestsMixin:
    """
    A JWKS endpoint in memory (L{StubTreq}) and a fake clock.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(NOW)
        self.jwks = JWKSResource(RSA, EC, ED)
        self.treq = StubTreq(self.jwks)

    def make(self, **options):
        if "key_files" not in options:
            options.setdefault("jwks_url", URL)
        options.setdefault("issuer", "https://idp.example")
        options.setdefault("audience", ["api"])
        return JWTFactory().fromConfig(self.clock, options, "test", client=self.treq)

    def ask(self, f, token=None, headers=(), cookie=None):
        headers = list(headers)
        if token is not None:
            headers.append(("Authorization", f"Bearer {token}"))
        if cookie is not None:
            headers.append(("Cookie", cookie))
        x = make_exchange(headers=headers)
        passed = []
        FilterChain([f]).run(x, passed.append)
        self.treq.flush()
        return bool(passed), x


class JWTTests(JWTTestsMixin, SynchronousTestCase):
    def assertInvalid(self, x):
        self.assertEqual(x.downstream.status, 401)
        self.assertEqual(x.downstream.field(b"WWW-Authenticate"), b'Bearer error="invalid_token"')

    def test_valid(self):
        """
        Tokens signed with RS256, ES256 and EdDSA by keys of the JWKS pass,
        the JWKS fetched once.
        """
        f = self.make()
        for key, alg in ((RSA, "RS256"), (EC, "ES256"), (ED, "EdDSA")):
            ok, x = self.ask(f, _token(key, alg))
            self.assertTrue(ok, alg)
        self.assertEqual(self.jwks.fetches, 1)

    def test_no_token(self):
        """
        A request without a token gets 401 with C{WWW-Authenticate: Bearer}.
        """
        ok, x = self.ask(self.make())
        self.assertFalse(ok)
        self.assertEqual(x.downstream.status, 401)
        self.assertEqual(x.downstream.field(b"WWW-Authenticate"), b"Bearer")

    def test_expired(self):
        """
        A token expired for longer than the leeway is refused; within it, it
        passes.
        """
        f = self.make(leeway=30)
        self.assertTrue(self.ask(f, _token(RSA, exp=NOW - 20))[0])
        ok, x = self.ask(f, _token(RSA, exp=NOW - 40))
        self.assertFalse(ok)
        self.assertInvalid(x)

    def test_no_expiry(self):
        """
        A token without C{exp} is refused.
        """
        ok, x = self.ask(self.make(), _token(RSA, exp=None))
        self.assertInvalid(x)

    def test_not_yet_valid(self):
        """
        A token whose C{nbf} is beyond the leeway is refused.
        """
        f = self.make(leeway=30)
        self.assertTrue(self.ask(f, _token(RSA, nbf=NOW + 20))[0])
        ok, x = self.ask(f, _token(RSA, nbf=NOW + 40))
        self.assertInvalid(x)

    def test_wrong_audience(self):
        """
        A token for another audience is refused; one of several listed passes.
        """
        f = self.make(audience=["api", "web"])
        self.assertTrue(self.ask(f, _token(RSA, aud=["other", "web"]))[0])
        ok, x = self.ask(f, _token(RSA, aud="other"))
        self.assertInvalid(x)

    def test_wrong_issuer(self):
        """
        A token of another issuer is refused.
        """
        ok, x = self.ask(self.make(), _token(RSA, iss="https://evil.example"))
        self.assertInvalid(x)

    def test_bad_signature(self):
        """
        A token signed by a key the JWKS does not hold, under a known C{kid},
        is refused.
        """
        forged = RSAKey.generate_key(2048, {"kid": "r1", "alg": "RS256"})
        ok, x = self.ask(self.make(), _token(forged))
        self.assertInvalid(x)

    def test_alg_none(self):
        """
        A token with C{alg: none} is refused, even when listed.
        """
        import base64

        def b64(d):
            return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

        token = b64({"alg": "none", "kid": "r1"}) + "." + b64(
            {"iss": "https://idp.example", "aud": "api", "exp": NOW + 60}) + "."
        ok, x = self.ask(self.make(), token)
        self.assertInvalid(x)
        self.assertRaises(ConfigError, self.make, algorithms=["none"])

    def test_hs256_with_rsa_public_key(self):
        """
        A token signed with HS256 using the RSA public key (PEM) as the
        secret is refused, and HS256 cannot be configured.
        """
        secret = OctKey.import_key(RSA.as_pem(private=False))
        token = jwt.encode({"alg": "HS256", "kid": "r1"},
                           {"iss": "https://idp.example", "aud": "api", "exp": NOW + 60},
                           secret, algorithms=["HS256"])
        ok, x = self.ask(self.make(), token)
        self.assertInvalid(x)
        self.assertRaises(ConfigError, self.make, algorithms=["HS256"])

    def test_algorithm_the_key_does_not_declare(self):
        """
        A token signed with PS256 by an RSA key that declares RS256 is
        refused although PS256 is allowed.
        """
        undeclared = {k: v for k, v in RSA.as_dict(private=True).items() if k != "alg"}
        token = jwt.encode({"alg": "PS256", "kid": "r1"},
                           {"iss": "https://idp.example", "aud": "api", "exp": NOW + 60},
                           RSAKey.import_key(undeclared), algorithms=["PS256"])
        ok, x = self.ask(self.make(algorithms=["RS256", "PS256"]), token)
        self.assertInvalid(x)

    def test_unknown_kid_then_rotated(self):
        """
        A token naming a C{kid} the cache lacks makes the filter fetch the
        JWKS again, at most once per C{jwks_min_refresh}; once the endpoint
        has the rotated key, the token passes.
        """
        f = self.make(jwks_min_refresh=30)
        self.assertTrue(self.ask(f, _token(RSA))[0])
        self.jwks.body = _jwks(ROTATED)
        ok, x = self.ask(f, _token(ROTATED))
        self.assertInvalid(x)
        self.assertEqual(self.jwks.fetches, 1)
        self.clock.advance(30)
        self.assertTrue(self.ask(f, _token(ROTATED))[0])
        self.assertEqual(self.jwks.fetches, 2)
        self.assertFalse(self.ask(f, _token(RSA))[0])
        self.assertEqual(self.jwks.fetches, 2)

    def test_jwks_down_serves_stale(self):
        """
        When the JWKS endpoint fails, the keys fetched before go on being
        used, after their max age too.
        """
        f = self.make(jwks_max_age=60)
        token = _token(RSA, exp=NOW + 1000)
        self.assertTrue(self.ask(f, token)[0])
        self.jwks.down = True
        self.clock.advance(120)
        self.assertTrue(self.ask(f, token)[0])
        self.assertEqual(self.jwks.fetches, 2)
        self.clock.advance(40)
        self.assertTrue(self.ask(f, token)[0])
        self.assertEqual(self.jwks.fetches, 3)

    def test_jwks_late(self):
        """
        A JWKS endpoint that does not answer within C{timeout} counts as
        down: a token with an unknown C{kid} is refused then, and the keys
        fetched before go on being used.
        """
        f = self.make(timeout=5, jwks_min_refresh=0)
        token = _token(RSA, exp=NOW + 1000)
        self.assertTrue(self.ask(f, token)[0])
        self.jwks.late = True
        ok, x = self.ask(f, _token(ROTATED, exp=NOW + 1000))
        self.assertFalse(ok)
        self.assertIsNone(x.downstream.status)
        self.clock.advance(5)
        self.assertInvalid(x)
        self.assertTrue(self.ask(f, token)[0])

    def test_jwks_with_other_keys(self):
        """
        Keys of a JWKS that cannot verify signatures (an unknown type, an
        C{oct} secret, one for encryption) are left out, the others used.
        """
        keys = json.loads(_jwks(RSA))["keys"] + [
            {"kty": "XYZ", "kid": "x"},
            {"kty": "oct", "kid": "s", "k": "c2VjcmV0"},
            dict(EC.as_dict(private=False), use="enc")]
        self.jwks.body = json.dumps({"keys": keys}).encode()
        f = self.make()
        self.assertTrue(self.ask(f, _token(RSA))[0])
        self.assertFalse(self.ask(f, _token(EC, "ES256"))[0])

    def test_jwks_down_first(self):
        """
        With no keys ever fetched, a token is refused while the JWKS
        endpoint is down.
        """
        self.jwks.down = True
        ok, x = self.ask(self.make(), _token(RSA))
        self.assertInvalid(x)

    def test_jwks_too_large(self):
        """
        A JWKS body over L{MAX_JWKS_BODY} bytes is not read as keys, even
        valid ones: a token is refused.
        """
        keys = json.loads(_jwks(RSA))
        keys["padding"] = "x" * (MAX_JWKS_BODY - len(_jwks(RSA)) - 100)
        self.jwks.body = json.dumps(keys).encode()
        self.assertTrue(self.ask(self.make(), _token(RSA))[0])
        keys["padding"] += "x" * 200
        self.jwks.body = json.dumps(keys).encode()
        ok, x = self.ask(self.make(), _token(RSA))
        self.assertInvalid(x)

    def test_claims_to_headers(self):
        """
        Chosen claims go to the backend as fields, and the client's own
        fields of those names are removed, whatever their case.
        """
        f = self.make(claim_headers={"sub": "X-User", "groups": "X-Groups", "tier": "X-Tier"})
        ok, x = self.ask(f, _token(RSA, groups=["a", "b"]),
                         headers=[("x-user", "root"), ("X-Tier", "gold"), ("X-Other", "1")])
        self.assertTrue(ok)
        fields = [(n.lower(), v) for n, v in x.headers]
        self.assertIn((b"x-user", b"alice"), fields)
        self.assertIn((b"x-groups", b"a, b"), fields)
        self.assertIn((b"x-other", b"1"), fields)
        self.assertNotIn(b"root", [v for _, v in fields])
        self.assertNotIn(b"x-tier", [n for n, _ in fields])

    def test_cookie(self):
        """
        With C{cookie}, the token may come in that cookie.
        """
        f = self.make(cookie="session")
        self.assertTrue(self.ask(f, cookie=f"theme=dark; session={_token(RSA)}")[0])
        ok, x = self.ask(f, cookie=f"session={_token(RSA, aud='x')}")
        self.assertInvalid(x)
        self.assertFalse(self.ask(self.make(), cookie=f"session={_token(RSA)}")[0])

    def test_options(self):
        """
        Exactly one key source is required.
        """
        self.assertRaises(ConfigError, self.make, jwks_url="")
        self.assertRaises(ConfigError, self.make, key_files=["/x"])
        self.assertRaises(ConfigError, self.make, jwks_url="ftp://x")


class JWTKeyFileTests(JWTTestsMixin, SynchronousTestCase):
    def test_key_files(self):
        """
        Keys come from files too: a PEM public key without C{alg} verifies
        tokens of its type only, and a JWKS file.
        """
        pem = self.mktemp()
        with open(pem, "w") as f:
            f.write(EC.as_pem(private=False).decode())
        jwks = self.mktemp()
        with open(jwks, "wb") as f:
            f.write(_jwks(RSA))
        flt = self.make(key_files=[pem, jwks])
        self.assertTrue(self.ask(flt, _token(RSA))[0])
        unnamed = ECKey.import_key(EC.as_pem(private=True))
        self.assertTrue(self.ask(flt, _token(unnamed, "ES256"))[0])
        self.assertFalse(self.ask(flt, _token(ED, "EdDSA"))[0])


class JWTContractTests(FilterContractMixin, SynchronousTestCase):
    def makeFilter(self):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(_jwks(RSA))
        return JWTFactory().fromConfig(Clock(), {"key_files": [path]}, "test")


class JWTProxyTests(SynchronousTestCase):
    """
    The C{jwt} filter found by name in a route's filters of a whole proxy
    on memory transports.
    """

    def test_route(self):
        """
        A request with a valid token reaches the backend with the claim
        fields and without the client's copy; one without gets 401 and no
        backend sees it.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(_jwks(RSA))
        proxy = filtered_proxy(route=[{"name": "jwt", "key_files": [path], "audience": ["api"],
                                       "claim_headers": {"sub": "X-User"}}])
        token = _token(RSA, exp=int(proxy.reactor.seconds()) + 60)
        got, sent = request(proxy, b"GET / HTTP/1.1\r\nHost: a\r\nX-User: root\r\n"
                                   b"Authorization: Bearer %s\r\n\r\n" % token.encode())
        self.assertEqual(status(got), 200)
        self.assertIn(b"X-User: alice\r\n", sent)
        self.assertNotIn(b"root", sent)
        got, sent = request(proxy)
        self.assertEqual((status(got), sent), (401, None))
        self.assertEqual(field(got, b"WWW-Authenticate"), b"Bearer")
