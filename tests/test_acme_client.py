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
from typing import Any, Dict, List, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtensionOID
from treq.testing import StubTreq
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from twistproxy import build
from twistproxy.acme.challenges import ACME_IDENTIFIER, Challenges, tls_alpn_certificate
from twistproxy.acme.client import ACMEError, Issuer
from twistproxy.config import parse
from twistproxy.config.parse import acme_challenge_types
from twistproxy.testing import issue_certificate

from tests.test_acme import START, acme_toml
from tests.test_config import _ConfigTestMixin

BASE = "https://ca.test"

ZONE = """
[listeners.ns]
endpoint = "udp:5353"
protocol = "dns"

[[dns.zones]]
name = "example.com"
soa = { mname = "ns1.example.com", rname = "hostmaster.example.com" }
"""


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
        self.txt: Dict[str, List[str]] = {}

    def render(self, request) -> bytes:
        request.setHeader(b"Replay-Nonce", b"bm9uY2U")
        request.setHeader(b"Content-Type", b"application/json")
        path = request.path.decode("ascii")
        if path == "/dir":
            return json.dumps(self.directory).encode()
        if path.startswith("/renewal-info/"):
            info = self.renewal_info.get(path[len("/renewal-info/"):])
            if info is None:
                request.setResponseCode(404)
                return b"{}"
            return json.dumps(info).encode()
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
