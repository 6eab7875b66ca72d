"""
Tests for L{twistproxy.acme.client}: an order against a fake ACME CA in
memory (L{FakeCA}, through treq's C{StubTreq}), which challenge type each
name is validated by, and the TLS-ALPN-01 challenge certificate.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import os
import stat
from typing import Any, Dict, List, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from treq.testing import StubTreq
from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from twistproxy import build
from twistproxy.acme.challenges import ACME_IDENTIFIER, Challenges, tls_alpn_certificate
from twistproxy.acme.client import ACMEError, Issuer, certificate_id
from twistproxy.acme.schedule import MAX_RETRY, Renewal
from twistproxy.config import ConfigError, parse
from twistproxy.config.parse import acme_challenge_types
from twistproxy.testing import issue_certificate

from tests.test_acme import DAY, START, ZONE, acme_toml, issued
from tests.test_config import _ConfigTestMixin

BASE = "https://ca.test"


def token(kind: str) -> str:
    """
    The fake CA's token for a challenge type (16 bytes at least, base64url).
    """
    return base64.urlsafe_b64encode(kind.encode().ljust(24, b".")).decode().rstrip("=")


def _b64(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


class FakeCA(Resource):
    """
    Just enough of an RFC 8555 CA to take one order: a directory, nonces,
    accounts, orders whose authorizations offer C{offers}, and a
    certificate (signed by a test CA, with an authority key identifier)
    for the CSR's key.  Signatures are not checked; what each POST said is
    kept in C{posts} as C{(path, protected header, payload)}, and the
    answer the proxy had made available when told to validate, in
    C{validated}.

    @ivar directory: The directory's JSON, to add to (C{renewalInfo},
        C{meta}).
    """

    isLeaf = True

    def __init__(self, challenges: Challenges, offers=("http-01", "tls-alpn-01", "dns-01")):
        super().__init__()
        self.challenges = challenges
        self.offers = offers
        self.directory: Dict[str, Any] = {
            "newNonce": f"{BASE}/nonce", "newAccount": f"{BASE}/account",
            "newOrder": f"{BASE}/new-order"}
        self.posts: List[tuple] = []
        self.validated: List[tuple] = []
        self.names: List[str] = []
        self.ca = issue_certificate("Fake CA", ca=True)
        self.issued: Optional[x509.Certificate] = None
        self.renewal_info: Dict[str, Any] = {}
        self.asked: List[str] = []
        self.retry_after = b""
        self.refuse_replaces = False
        # When set, new orders are refused as over a rate limit, with this
        # Retry-After.
        self.rate_limited: Optional[bytes] = None
        self.txt: Dict[str, List[str]] = {}

    def render(self, request) -> bytes:
        request.setHeader(b"Replay-Nonce", b"bm9uY2U")
        request.setHeader(b"Content-Type", b"application/json")
        path = request.path.decode("ascii")
        if path == "/dir":
            return json.dumps(self.directory).encode()
        if path.startswith("/renewal-info/"):
            self.asked.append(path[len("/renewal-info/"):])
            if self.retry_after:
                request.setHeader(b"Retry-After", self.retry_after)
            return json.dumps(self.renewal_info).encode()
        if request.method == b"HEAD":
            return b""
        jws = json.loads(request.content.read())
        protected = json.loads(_b64(jws["protected"]))
        payload = json.loads(_b64(jws["payload"])) if jws["payload"] else None
        self.posts.append((path, protected, payload))
        if path == "/certificate":
            request.setHeader(b"Content-Type", b"application/pem-certificate-chain")
            return b"".join(c.public_bytes(serialization.Encoding.PEM)
                            for c in (self.issued, self.ca[1]))
        return json.dumps(self.answer(request, path, payload)).encode()

    def answer(self, request, path: str, payload) -> Dict[str, Any]:
        if path == "/account":
            request.setResponseCode(201)
            request.setHeader(b"Location", f"{BASE}/account/1".encode())
            return {"status": "valid"}
        if path == "/new-order" and self.rate_limited is not None:
            request.setResponseCode(429)
            request.setHeader(b"Retry-After", self.rate_limited)
            return {"type": "urn:ietf:params:acme:error:rateLimited",
                    "detail": "too many certificates for this name"}
        if path == "/new-order" and self.refuse_replaces and "replaces" in payload:
            request.setResponseCode(409)
            return {"type": "urn:ietf:params:acme:error:alreadyReplaced", "detail": "no"}
        if path == "/new-order":
            self.names = [i["value"] for i in payload["identifiers"]]
            request.setResponseCode(201)
            request.setHeader(b"Location", f"{BASE}/order".encode())
            return self.order("pending")
        if path.startswith("/authz/"):
            name = path[len("/authz/"):]
            bare = name[2:] if name.startswith("*.") else name
            done = any(v[0] == name for v in self.validated)
            return {"status": "valid" if done else "pending", "wildcard": bare != name,
                    "identifier": {"type": "dns", "value": bare},
                    "challenges": [{"type": t, "url": f"{BASE}/challenge/{t}/{name}",
                                    "token": token(t), "status": "pending"}
                                   for t in self.offers]}
        if path.startswith("/challenge/"):
            _, _, kind, name = path.split("/", 3)
            self.validated.append((name, kind, self.seen(kind, name)))
            return {"status": "processing"}
        if path == "/finalize":
            self.issue(x509.load_der_x509_csr(_b64(payload["csr"])))
            return self.order("valid")
        if path == "/order":
            return self.order("valid")
        raise AssertionError(f"unexpected POST to {path}")

    def seen(self, kind: str, name: str) -> Any:
        # What the proxy serves for the challenge right now.
        if kind == "http-01":
            return self.challenges.answer(
                b"/.well-known/acme-challenge/" + token("http-01").encode())
        if kind == "tls-alpn-01":
            return self.challenges.certificate(name)
        return self.txt.get("_acme-challenge." + name.lstrip("*."))

    def order(self, status: str) -> Dict[str, Any]:
        order = {"status": status, "finalize": f"{BASE}/finalize",
                 "identifiers": [{"type": "dns", "value": n} for n in self.names],
                 "authorizations": [f"{BASE}/authz/{n}" for n in self.names]}
        if status == "valid":
            order["certificate"] = f"{BASE}/certificate"
        return order

    def issue(self, csr: x509.CertificateSigningRequest) -> None:
        key, ca = self.ca
        self.issued = (
            x509.CertificateBuilder()
            .subject_name(csr.subject).issuer_name(ca.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(START).not_valid_after(START + datetime.timedelta(days=90))
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                key.public_key()), False)
            .sign(key, hashes.SHA256()))


class _IssuerMixin:
    """
    An L{Issuer} over a L{FakeCA}, on a fake clock at L{START}.
    """

    def make_issuer(self, extra: str = "", **ca) -> Issuer:
        storage = os.path.join(self.mktemp(), "acme")
        self.config = parse(acme_toml(storage, '["www.example.com", "*.example.com"]',
                                      extra=f'directory = "{BASE}/dir"\n' + extra)
                            + ZONE)
        self.challenges = Challenges()
        self.ca = FakeCA(self.challenges, **ca)
        self.clock = Clock()
        self.clock.advance(START.timestamp())
        config = self.config

        def set_txt(owner, values):
            self.ca.txt[owner] = values
            return succeed(None)

        def remove_txt(owner):
            self.ca.txt.pop(owner, None)
            return succeed(None)

        return Issuer(
            self.clock, config.acme, self.challenges, set_txt, remove_txt,
            types=lambda name: acme_challenge_types(
                name, config.listeners, config.acme, config.dns),
            http=StubTreq(self.ca))

    def issue(self, issuer: Issuer, names=("www.example.com", "*.example.com")) -> str:
        return self.successResultOf(issuer.issue(names))


class ChallengeTypeTests(_ConfigTestMixin, SynchronousTestCase):
    """
    C{[acme] challenges} orders the challenge types; each name takes the
    first that can validate it (L{acme_challenge_types}).
    """

    def types(self, name: str, extra: str = "", tail: str = ZONE, plain: bool = True):
        text = acme_toml("/tmp/a", extra=extra) + tail
        if not plain:
            text = text.replace('[listeners.web]\nendpoint = "tcp:8080"\n', "")
        config = parse(text)
        return acme_challenge_types(name, config.listeners, config.acme, config.dns)

    def test_default_order(self) -> None:
        """
        By default HTTP-01 comes first (a plain listener exists), then
        TLS-ALPN-01 (the TLS listener), then DNS-01 (a zone holds the
        name); a wildcard only by DNS-01; without a plain listener
        TLS-ALPN-01 comes first; outside the zones there is no DNS-01.
        """
        self.assertEqual(self.types("www.example.com"), ("http-01", "tls-alpn-01", "dns-01"))
        self.assertEqual(self.types("*.example.com"), ("dns-01",))
        self.assertEqual(self.types("www.example.com", plain=False), ("tls-alpn-01", "dns-01"))
        self.assertEqual(self.types("www.example.org"), ("http-01", "tls-alpn-01"))

    def test_chosen_order(self) -> None:
        """
        C{challenges} lists the types to use, most preferred first: a user
        may prefer DNS-01, or leave HTTP-01 out.
        """
        extra = 'challenges = ["dns-01", "tls-alpn-01"]'
        self.assertEqual(self.types("www.example.com", extra), ("dns-01", "tls-alpn-01"))
        self.assertEqual(self.types("www.example.org", extra), ("tls-alpn-01",))

    def test_rejections(self) -> None:
        """
        An unknown type or an empty list is refused at C{acme.challenges};
        a name that none of the listed types can validate at its place in
        C{tls.acme}, saying what it needs.
        """
        self.assert_config_error(acme_toml("/tmp/a", extra='challenges = ["tls-sni-01"]'),
                                 "acme.challenges[0]", contains="'tls-alpn-01'")
        self.assert_config_error(acme_toml("/tmp/a", extra="challenges = []"),
                                 "acme.challenges", contains="at least one")
        self.assert_config_error(acme_toml("/tmp/a", extra='challenges = ["dns-01"]'),
                                 "listeners.secure.tls.acme[0]", contains="DNS-01")


class TLSListenerTests(SynchronousTestCase):
    """
    The assembler hands the challenge certificates to the TLS listeners.
    """

    def test_builder_gives_lookup(self) -> None:
        """
        Every TLS listener the assembler builds looks TLS-ALPN-01
        challenges up in the proxy's L{Challenges}.
        """
        config = parse(acme_toml(os.path.join(self.mktemp(), "acme")))
        challenges = Challenges()
        reactor = Clock()
        _, forwarder = build.pipeline(config, reactor, None)
        listeners = build.ListenerBuilder(reactor, config, forwarder, challenges=challenges)
        for listener in config.listeners:
            listeners.factory(listener)
        factory, _, _ = listeners.tls["secure"]
        self.assertEqual(factory.server_tls.store.challenge, challenges.certificate)


class TLSALPNCertificateTests(SynchronousTestCase):
    """
    The certificate that answers a TLS-ALPN-01 challenge (RFC 8737 3).
    """

    def test_certificate(self) -> None:
        """
        It is self-signed for the name alone and carries the SHA-256 digest
        of the key authorization, as a DER OCTET STRING, in a critical
        acmeIdentifier extension.
        """
        cert, key = tls_alpn_certificate("www.example.com", "tok.thumb", START)
        self.assertEqual(cert.issuer, cert.subject)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        self.assertEqual(san.value.get_values_for_type(x509.DNSName), ["www.example.com"])
        extension = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER)
        self.assertTrue(extension.critical)
        self.assertEqual(extension.value.value,
                         b"\x04\x20" + hashlib.sha256(b"tok.thumb").digest())
        self.assertEqual(key.public_key().public_numbers(), cert.public_key().public_numbers())

    def test_challenges(self) -> None:
        """
        L{Challenges} holds one certificate per name until it is
        discarded.
        """
        challenges = Challenges()
        challenges.add_certificate("www.example.com", "tok.thumb", START)
        self.assertIsNotNone(challenges.certificate("www.example.com"))
        self.assertIsNone(challenges.certificate("example.com"))
        challenges.discard_certificate("www.example.com")
        self.assertIsNone(challenges.certificate("www.example.com"))


class IssuerTests(_IssuerMixin, SynchronousTestCase):
    """
    L{Issuer.issue}: one order against the fake CA.
    """

    def thumbprint(self, issuer: Issuer) -> str:
        return base64.urlsafe_b64encode(issuer._key.thumbprint()).decode().rstrip("=")

    def test_order(self) -> None:
        """
        The name is validated by HTTP-01 and the wildcard by DNS-01, each
        answer in place when the CA is told to validate and taken back
        afterwards; the key and the chain are written into the storage
        file.
        """
        issuer = self.make_issuer()
        filename = self.issue(issuer)
        answers = {(name, kind): seen for name, kind, seen in self.ca.validated}
        key_authorization = f"{token('http-01')}.{self.thumbprint(issuer)}"
        self.assertEqual(set(answers), {("www.example.com", "http-01"),
                                        ("*.example.com", "dns-01")})
        self.assertEqual(answers["www.example.com", "http-01"], key_authorization.encode())
        self.assertTrue(answers["*.example.com", "dns-01"])
        self.assertIsNone(self.challenges.answer(
                b"/.well-known/acme-challenge/" + token("http-01").encode()))
        self.assertEqual(self.ca.txt, {})
        with open(filename, "rb") as f:
            stored = x509.load_pem_x509_certificates(f.read())
        self.assertEqual(stored[0], self.ca.issued)

    def test_account_contact(self) -> None:
        """
        The account is created with C{[acme] email} as its contact
        (C{mailto:}) and the CA's terms agreed to, signed by the account key
        kept in the storage directory (made there once, mode 0600).
        """
        issuer = self.make_issuer()
        self.issue(issuer, ("www.example.com",))
        [(_, protected, payload)] = [p for p in self.ca.posts if p[0] == "/account"]
        self.assertEqual(payload["contact"], ["mailto:ops@example.com"])
        self.assertIs(payload["termsOfServiceAgreed"], True)
        self.assertIn("jwk", protected)
        key_file = os.path.join(self.config.acme.storage, "account.key")
        self.assertEqual(stat.S_IMODE(os.stat(key_file).st_mode), 0o600)

    def test_key_type(self) -> None:
        """
        A certificate's key is ECDSA P-256 by default, and RSA 2048 with
        C{key_type = "rsa-2048"}: the CSR's and the stored key's.
        """
        for extra, kind, size in [("", ec.EllipticCurvePrivateKey, 256),
                                  ('key_type = "rsa-2048"', rsa.RSAPrivateKey, 2048)]:
            filename = self.issue(self.make_issuer(extra), ("www.example.com",))
            with open(filename, "rb") as f:
                key = serialization.load_pem_private_key(f.read(), None)
            self.assertIsInstance(key, kind)
            self.assertEqual(key.key_size, size)
            self.assertEqual(self.ca.issued.public_key().public_numbers(),
                             key.public_key().public_numbers())

    def test_tls_alpn(self) -> None:
        """
        With TLS-ALPN-01 first, the name is validated by it: the challenge
        certificate for the name carries the key authorization's digest
        while the CA validates, and is taken back afterwards.
        """
        issuer = self.make_issuer('challenges = ["tls-alpn-01", "dns-01"]')
        self.issue(issuer)
        answers = {(name, kind): seen for name, kind, seen in self.ca.validated}
        self.assertEqual(set(answers), {("www.example.com", "tls-alpn-01"),
                                        ("*.example.com", "dns-01")})
        cert, _ = answers["www.example.com", "tls-alpn-01"]
        key_authorization = f"{token('tls-alpn-01')}.{self.thumbprint(issuer)}".encode()
        self.assertEqual(cert.extensions.get_extension_for_oid(ACME_IDENTIFIER).value.value,
                         b"\x04\x20" + hashlib.sha256(key_authorization).digest())
        self.assertIsNone(self.challenges.certificate("www.example.com"))

    def test_next_type_when_not_offered(self) -> None:
        """
        When the CA does not offer the first type that fits, the next one
        that fits is used; when it offers none that fits, the order fails
        saying what it offers, and no answer is left behind.
        """
        issuer = self.make_issuer(offers=("tls-alpn-01", "dns-01"))
        self.issue(issuer)
        self.assertIn(("www.example.com", "tls-alpn-01"),
                      [(name, kind) for name, kind, _ in self.ca.validated])
        issuer = self.make_issuer(offers=("http-01",))
        failure = self.failureResultOf(issuer.issue(["www.example.com", "*.example.com"]),
                                       ACMEError)
        self.assertIn("offers http-01", failure.getErrorMessage())
        self.assertIsNone(self.challenges.answer(
                b"/.well-known/acme-challenge/" + token("http-01").encode()))


class RateLimitTests(_IssuerMixin, SynchronousTestCase):
    """
    A CA's rate limit (RFC 8555 6.6: 429, C{rateLimited}, C{Retry-After})
    fails the order with what it said, and the wait it asked for is kept
    to the next try.
    """

    def test_retry_after_seconds(self) -> None:
        """
        C{Retry-After} in seconds is the error's C{retry_after}; the error
        names the problem type.
        """
        issuer = self.make_issuer()
        self.ca.rate_limited = b"7200"
        failure = self.failureResultOf(issuer.issue(["www.example.com"]), ACMEError)
        self.assertEqual(failure.value.problem, "urn:ietf:params:acme:error:rateLimited")
        self.assertIn("429", failure.getErrorMessage())
        self.assertEqual(failure.value.retry_after, 7200.0)

    def test_retry_after_date(self) -> None:
        """
        C{Retry-After} as an HTTP date is the seconds from the clock's now
        to it; a date past, or a value that is neither, is no wait.
        """
        issuer = self.make_issuer()
        later = START + datetime.timedelta(hours=3)
        self.ca.rate_limited = later.strftime("%a, %d %b %Y %H:%M:%S GMT").encode()
        failure = self.failureResultOf(issuer.issue(["www.example.com"]), ACMEError)
        self.assertEqual(failure.value.retry_after, 3 * 3600.0)
        for value in (b"Mon, 01 Jan 2001 00:00:00 GMT", b"soon", b""):
            self.ca.rate_limited = value
            failure = self.failureResultOf(issuer.issue(["www.example.com"]), ACMEError)
            self.assertEqual(failure.value.retry_after, 0.0)

    def test_renewal_waits_as_asked(self) -> None:
        """
        A renewal refused with C{Retry-After: 7200} is tried again two
        hours later, not after C{retry} (60 s); the wait asked for is
        capped at a day, the longest between two tries.
        """
        issuer = self.make_issuer()
        self.ca.rate_limited = b"7200"
        names = ("www.example.com",)
        renewal = Renewal(self.clock, names, lambda: issued(), lambda: issuer.issue(names),
                          lambda: None, retry=60.0, random_jitter=lambda: 0.0)
        self.successResultOf(renewal.renew())
        self.assertEqual(renewal.failures, 1)
        self.assertIn("rateLimited", renewal.last_error)
        self.assertEqual(renewal.due, self.clock.seconds() + 7200)
        self.ca.rate_limited = b"864000"
        self.successResultOf(renewal.renew())
        self.assertEqual(renewal.due, self.clock.seconds() + MAX_RETRY)
        self.flushLoggedErrors(ACMEError)


MAC_KEY = base64.urlsafe_b64encode(b"a secret the CA gave, 32 bytes.").decode().rstrip("=")


class ExternalAccountTests(_ConfigTestMixin, _IssuerMixin, SynchronousTestCase):
    """
    External account binding (RFC 8555 7.3.4): C{[acme] external_account}
    and the binding sent with C{newAccount}.
    """

    EAB = f'external_account = {{ key_id = "kid-1", hmac_key = "{MAC_KEY}" }}'

    def test_config(self) -> None:
        """
        The table takes a key identifier and a base64url MAC key, both
        required; a key that is not base64url is refused at its path.
        """
        config = parse(acme_toml("/tmp/a", extra=self.EAB))
        self.assertEqual(config.acme.external_account.key_id, "kid-1")
        self.assertEqual(config.acme.external_account.hmac_key, MAC_KEY)
        self.assertIsNone(parse(acme_toml("/tmp/a")).acme.external_account)
        self.assert_config_error(acme_toml("/tmp/a", extra='external_account = { key_id = "k" }'),
                                 "acme.external_account.hmac_key", contains="required")
        self.assert_config_error(
            acme_toml("/tmp/a", extra='external_account = { key_id = "k", hmac_key = "a+b/" }'),
            "acme.external_account.hmac_key", contains="base64url")

    def test_binding_sent(self) -> None:
        """
        C{newAccount} carries the binding: the account's public key, signed
        with HS256 and the MAC key, under the key identifier, for the
        C{newAccount} URL.
        """
        issuer = self.make_issuer(self.EAB)
        self.issue(issuer)
        [payload] = [p for path, _, p in self.ca.posts if path == "/account"]
        binding = payload["externalAccountBinding"]
        protected = json.loads(_b64(binding["protected"]))
        self.assertEqual(protected, {"alg": "HS256", "kid": "kid-1", "url": f"{BASE}/account"})
        self.assertEqual(json.loads(_b64(binding["payload"])),
                         issuer._key.public_key().to_partial_json())
        mac = hmac.new(_b64(MAC_KEY), f"{binding['protected']}.{binding['payload']}".encode(),
                       hashlib.sha256).digest()
        self.assertEqual(_b64(binding["signature"]), mac)

    def test_no_binding_without_setting(self) -> None:
        """
        Without C{external_account} no binding is sent; a CA whose
        directory says it requires one fails the order, saying what to set.
        """
        issuer = self.make_issuer()
        self.issue(issuer)
        [payload] = [p for path, _, p in self.ca.posts if path == "/account"]
        self.assertNotIn("externalAccountBinding", payload)
        issuer = self.make_issuer()
        self.ca.directory["meta"] = {"externalAccountRequired": True}
        failure = self.failureResultOf(issuer.issue(["www.example.com"]), ACMEError)
        self.assertIn("external_account", failure.getErrorMessage())


def _window(days_from: float, days_to: float) -> Dict[str, Any]:
    """
    Renewal information whose suggested window runs from C{days_from} to
    C{days_to} days after L{START}.
    """
    def moment(days: float) -> str:
        return (START + datetime.timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"suggestedWindow": {"start": moment(days_from), "end": moment(days_to)}}


class RenewalInfoTests(_IssuerMixin, SynchronousTestCase):
    """
    ARI (RFC 9773) in the issuer: the certificate's identifier, its
    suggested window, and C{replaces} in the order that renews it.
    """

    def make_ari_issuer(self) -> Issuer:
        issuer = self.make_issuer()
        self.ca.directory["renewalInfo"] = f"{BASE}/renewal-info"
        return issuer

    def test_certificate_id(self) -> None:
        """
        The identifier is the authority key identifier and the serial
        number's DER bytes, base64url without padding: RFC 9773 4.1's
        example.
        """
        key, ca = issue_certificate("CA", ca=True)
        cert = (
            x509.CertificateBuilder().subject_name(ca.subject).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(0x87654321)
            .not_valid_before(START).not_valid_after(START + datetime.timedelta(days=1))
            .add_extension(x509.AuthorityKeyIdentifier(
                bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4"), None, None), False)
            .sign(key, hashes.SHA256()))
        self.assertEqual(certificate_id(cert), "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE")
        self.assertIsNone(certificate_id(ca))

    def test_window(self) -> None:
        """
        L{Issuer.renewal_window} asks the CA's C{renewalInfo} for the
        certificate's identifier and gives the window in seconds since the
        epoch, with the CA's C{Retry-After} kept between a minute and a
        day.
        """
        issuer = self.make_ari_issuer()
        self.issue(issuer)
        self.ca.renewal_info = _window(30, 32)
        self.ca.retry_after = b"3600"
        start, end, recheck = self.successResultOf(issuer.renewal_window(self.ca.issued))
        self.assertEqual((start, end, recheck),
                         (START.timestamp() + 30 * DAY, START.timestamp() + 32 * DAY, 3600.0))
        self.assertEqual(self.ca.asked, [certificate_id(self.ca.issued)])
        self.ca.retry_after = b"5"
        self.assertEqual(self.successResultOf(issuer.renewal_window(self.ca.issued))[2], 60.0)
        self.ca.retry_after = b""
        self.assertEqual(self.successResultOf(issuer.renewal_window(self.ca.issued))[2],
                         6 * 3600.0)

    def test_no_window(self) -> None:
        """
        No window is asked for when the directory offers no
        C{renewalInfo}, nor for an expired certificate.
        """
        issuer = self.make_issuer()
        self.issue(issuer)
        self.assertIsNone(self.successResultOf(issuer.renewal_window(self.ca.issued)))
        issuer = self.make_ari_issuer()
        self.issue(issuer)
        self.clock.advance(91 * DAY)
        self.assertIsNone(self.successResultOf(issuer.renewal_window(self.ca.issued)))
        self.assertEqual(self.ca.asked, [])

    def test_replaces(self) -> None:
        """
        The order that renews a certificate the CA issued names it in
        C{replaces}; the first order (over a stand-in) names none, nor does
        any without C{renewalInfo}.  A CA that answers C{alreadyReplaced}
        gets the order again without it.
        """
        issuer = self.make_ari_issuer()
        self.issue(issuer)
        first = self.ca.issued
        self.issue(issuer)
        orders = [p for path, _, p in self.ca.posts if path == "/new-order"]
        self.assertNotIn("replaces", orders[0])
        self.assertEqual(orders[1]["replaces"], certificate_id(first))
        self.ca.refuse_replaces = True
        self.issue(issuer)
        orders = [p for path, _, p in self.ca.posts if path == "/new-order"]
        self.assertEqual(len(orders), 4)
        self.assertIn("replaces", orders[2])
        self.assertNotIn("replaces", orders[3])

    def test_no_replaces_without_ari(self) -> None:
        """
        Without C{renewalInfo} in the directory, no order says C{replaces}.
        """
        issuer = self.make_issuer()
        self.issue(issuer)
        self.issue(issuer)
        orders = [p for path, _, p in self.ca.posts if path == "/new-order"]
        self.assertEqual([o.get("replaces") for o in orders], [None, None])


class WindowScheduleTests(SynchronousTestCase):
    """
    L{Renewal} with the CA's suggested windows, on a fake clock.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START.timestamp())
        self.cert = issued()
        self.obtained: List[float] = []
        self.windows: List[Any] = []
        self.asked: List[float] = []
        self.jitter = 0.0
        self.renewal = Renewal(self.clock, ["www.example.com"], lambda: self.cert,
                               self.obtain, lambda: None, retry=60.0,
                               random_jitter=lambda: self.jitter, window=self.window)

    def obtain(self):
        self.obtained.append(self.clock.seconds())
        self.cert = issued(start=START + datetime.timedelta(seconds=self.clock.seconds()
                                                             - START.timestamp()))
        return succeed("file")

    def window(self, cert):
        self.asked.append(self.clock.seconds())
        answer = self.windows.pop(0)
        return fail(answer) if isinstance(answer, Exception) else succeed(answer)

    def days(self, days: float) -> float:
        return START.timestamp() + days * DAY

    def test_random_time_in_window(self) -> None:
        """
        The renewal moves from two thirds of the lifetime to a time in the
        window chosen by the random number (-1 its start, 1 its end).
        """
        self.jitter = 0.5
        self.windows = [(self.days(30), self.days(34), 40 * DAY), None]
        self.renewal.start()
        self.assertEqual(self.renewal.due, self.days(33))
        self.clock.advance(33 * DAY - 1)
        self.assertEqual(self.obtained, [])
        self.clock.advance(1)
        self.assertEqual(self.obtained, [self.days(33)])
        self.assertEqual(self.asked, [self.days(0), self.days(33)])  # then for the new one

    def test_asked_again(self) -> None:
        """
        The window is asked for again after the CA's C{recheck} seconds,
        until the renewal is due; a window moved earlier (a revocation)
        moves the renewal, but never closer than C{retry} seconds.
        """
        self.windows = [(self.days(50), self.days(52), 6 * 3600.0),
                        (self.days(50), self.days(52), 6 * 3600.0),
                        (self.days(0), self.days(0.1), 6 * 3600.0), None]
        self.renewal.start()
        self.assertEqual(self.renewal.due, self.days(51))
        self.clock.advance(6 * 3600)
        self.assertEqual(len(self.asked), 2)
        self.clock.advance(6 * 3600)
        self.assertEqual(len(self.asked), 3)
        self.assertEqual(self.renewal.due, self.clock.seconds() + 60)
        self.clock.advance(60)
        self.assertEqual(self.obtained, [self.clock.seconds()])
        self.assertEqual(len(self.asked), 4)  # for the new certificate

    def test_falls_back(self) -> None:
        """
        Without renewal information (C{None}) the renewal stays at two
        thirds; when asking fails it stays too, and is asked again a day
        later.
        """
        self.windows = [None]
        self.renewal.start()
        self.assertEqual(self.renewal.due, self.days(60))
        self.renewal.stop()
        self.windows = [ACMEError("down"), (self.days(40), self.days(40), 7 * DAY)]
        self.renewal.start()
        self.assertEqual(self.renewal.due, self.days(60))
        self.clock.advance(DAY)
        self.assertEqual(self.renewal.due, self.days(40))

    def test_not_for_stand_in(self) -> None:
        """
        A stand-in is renewed at once; no window is asked for it.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "www.example.com")])
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(key.public_key()).serial_number(1)
                     .not_valid_before(START).not_valid_after(START + datetime.timedelta(days=1))
                     .sign(key, hashes.SHA256()))
        self.windows = [None]
        self.renewal.start()
        self.assertEqual(self.asked, [])
        self.clock.advance(0)
        self.assertEqual(self.obtained, [self.days(0)])


class CAFileTests(SynchronousTestCase):
    """
    C{[acme] ca} is read as the TLS module reads a group's C{ca}
    (L{twistproxy.tls.trust_root}).
    """

    def test_refused(self) -> None:
        """
        C{check} refuses a C{ca} file that cannot be read, or that holds
        no certificate, at C{acme.ca}, naming the file.
        """
        storage = os.path.join(self.mktemp(), "acme")
        empty = self.mktemp()
        with open(empty, "w") as f:
            f.write("not a certificate\n")
        for filename, problem in ((empty + ".missing", "cannot read"),
                                  (empty, "holds no PEM certificate")):
            config = parse(acme_toml(storage, extra=f'ca = "{filename}"'))
            with self.assertRaises(ConfigError) as raised:
                build.validate(config)
            self.assertEqual(raised.exception.path, "acme.ca")
            self.assertIn(problem, raised.exception.problem)
            self.assertIn(filename, raised.exception.problem)
