# -*- test-case-name: tests.test_e2e_acme -*-
"""
Ordering a certificate from an ACME CA (RFC 8555), without threads.

The messages (directory, account, order, authorization, challenge) and the
JWS signatures are the C{acme} and C{josepy} libraries' (Certbot's, well
kept and complete); the requests go through treq on the reactor, so that an
order waits on the network without blocking the proxy and without a thread
pool (the C{acme} library's own client uses C{requests}, which would need
one).  L{Issuer.issue} does one whole order:

    1. it creates the account for the key in the storage directory (or
       finds it again: C{newAccount} with the same key answers with the
       existing one), agreeing to the CA's terms, bound to the external
       account of C{[acme] external_account} when that is set (RFC 8555
       7.3.4);
    2. it orders the names; for each authorization it picks the challenge:
       the first of the C{[acme]} section's C{challenges} that can
       validate the name (C{http-01} with a plain HTTP listener,
       C{tls-alpn-01} with a TLS listener, C{dns-01} in a zone of the
       proxy's own DNS front; a wildcard only by C{dns-01}) and that the
       CA offers;
    3. it makes the answer available (the key authorization at
       C{/.well-known/acme-challenge/TOKEN} in L{Challenges}, which the
       plain HTTP listeners serve before routing; the challenge
       certificate in L{Challenges}, which the TLS listeners present to
       handshakes that offer C{acme-tls/1}; the TXT record
       C{_acme-challenge.NAME} through the DNS front's run-time records,
       shared by every instance), tells the CA to validate and polls the
       authorization until it is valid;
    4. it finalizes the order with a CSR for a new key, polls the order,
       downloads the certificate chain and writes key and chain atomically
       (mode 0600) into the storage file the listener reads;
    5. it takes every challenge answer back, whether the order worked or
       not.

When the CA's directory offers C{renewalInfo} (ARI, RFC 9773), an order
that renews a certificate the CA issued names it in C{replaces}, and
L{Issuer.renewal_window} fetches the window in which the CA suggests
renewing a certificate (the renewal schedule moves into it).

A CA error (an RFC 7807 problem document) fails the order with
L{ACMEError}, saying what the CA said and how long it asked to wait (its
C{Retry-After}, as with a rate limit); the caller (L{twistproxy.acme.
schedule.Renewal}) keeps the current certificate and retries later, not
sooner than that.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import os
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import josepy as jose
from treq.client import HTTPClient
from acme import crypto_util, jws, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS

from twistproxy.acme.challenges import Challenges
from twistproxy.acme.store import (
    certificate_file, is_stand_in, key_pem, lifetime, new_key, read_certificate,
    write_atomically,
)
from twistproxy.config.values import ACME
from twistproxy.tls import trust_root

# Seconds between two polls of an authorization or an order, and how many.
POLL_INTERVAL = 1.0
POLLS = 60
# Seconds before asking for a certificate's renewal information again, when
# the CA does not say (Certbot's choice).
ARI_RECHECK = 6 * 3600.0
# The problem a CA answers an order whose certificate is replaced already.
ALREADY_REPLACED = "urn:ietf:params:acme:error:alreadyReplaced"


class ACMEError(Exception):
    """
    The CA refused or failed a request; the message says what it said.

    @ivar problem: The type of the CA's problem document
        (C{urn:ietf:params:acme:error:...}), or C{''}.
    @ivar retry_after: The seconds the CA asked to wait before trying
        again (its C{Retry-After}, as with a rate limit: C{rateLimited}
        and 429), or C{0}; the renewal waits at least that long
        (L{twistproxy.acme.schedule.backoff}).
    """

    def __init__(self, message: str, problem: str = "", retry_after: float = 0.0):
        super().__init__(message)
        self.problem = problem
        self.retry_after = retry_after


def _account_key(acme: ACME) -> jose.JWK:
    # The account's key: made once, kept in the storage directory.
    filename = os.path.join(acme.storage, "account.key")
    if not os.path.exists(filename):
        os.makedirs(acme.storage, mode=0o700, exist_ok=True)
        write_atomically(filename, key_pem(ec.generate_private_key(ec.SECP256R1())))
    with open(filename, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    return jose.JWKRSA(key=key) if isinstance(key, rsa.RSAPrivateKey) else jose.JWKEC(key=key)


class Issuer:
    """
    Orders certificates from the C{[acme]} section's CA.

    @ivar challenges: The HTTP-01 answers, served by the plain listeners.
    """

    log = Logger()

    def __init__(self, reactor: IReactorTime, acme: ACME, challenges: Challenges,
                 set_txt: Callable[[str, List[str]], Deferred],
                 remove_txt: Callable[[str], Deferred],
                 types: Callable[[str], Sequence[str]], http: Optional[Any] = None):
        """
        @param set_txt: Sets the TXT records of a name (the DNS front's
            run-time records, L{twistproxy.dns.texts.RunTimeTexts.set}).
        @param remove_txt: Removes them.
        @param types: The challenge types that can validate a name
            (C{*.example.com} for a wildcard), most preferred first
            (L{twistproxy.config.parse.acme_challenge_types}).
        @param http: The treq client to talk to the CA with; by default
            one over an agent that trusts C{acme.ca} (or the system's CAs).
        @raises ConfigError: At C{acme.ca} when that file cannot be read or
            holds no certificate.
        """
        self.reactor = reactor
        self.acme = acme
        self.challenges = challenges
        self._set_txt = set_txt
        self._remove_txt = remove_txt
        self._types = types
        if http is None:
            http = HTTPClient(Agent(reactor, contextFactory=BrowserLikePolicyForHTTPS(
                trust_root(acme.ca, "acme.ca") if acme.ca else None)))
        self._http = http
        self._nonces: List[bytes] = []
        self._key: Optional[jose.JWK] = None
        self._kid: Optional[str] = None
        self._directory: Optional[messages.Directory] = None

    def issue(self, names: Iterable[str]) -> Deferred:
        """
        Order a certificate for C{names} and write it (with its new key)
        into the storage file for them.

        @return: Fires with the file name, or fails with L{ACMEError}.
        """
        return ensureDeferred(self._issue(tuple(names)))

    async def _issue(self, names: Tuple[str, ...]) -> str:
        await self._register()
        new_order = json.loads(messages.NewOrder(
            identifiers=[messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=n)
                         for n in names]).json_dumps())
        replaces = self._replaces(names)
        try:
            response, order = await self._post(
                self._directory["newOrder"], dict(new_order, replaces=replaces) if replaces
                else new_order)
        except ACMEError as e:
            if not replaces or e.problem != ALREADY_REPLACED:
                raise
            # Another order replaces that certificate already (one that
            # failed half-way, say): order without saying so.
            response, order = await self._post(self._directory["newOrder"], new_order)
        order_url = response.headers.getRawHeaders(b"location")[0].decode("ascii")
        cleanups: List[Callable[[], Any]] = []
        try:
            for url in order["authorizations"]:
                await self._authorize(url, cleanups)
        finally:
            for cleanup in cleanups:
                try:
                    await maybeDeferred(cleanup)
                except Exception:
                    self.log.failure("ACME: a challenge answer could not be taken back")
        key = new_key(self.acme.key_type)
        csr = crypto_util.make_csr(key_pem(key), list(names))
        await self._post(order["finalize"], messages.CertificateRequest(
            csr=x509.load_pem_x509_csr(csr)))
        order = await self._poll(order_url, ("valid",), ("invalid",))
        _, chain = await self._post(order["certificate"], None, raw=True)
        filename = certificate_file(self.acme, names)
        write_atomically(filename, key_pem(key) + chain)
        self.log.info("ACME: certificate for {names} issued", names=", ".join(names))
        return filename

    def renewal_window(self, cert: x509.Certificate) -> Deferred:
        """
        The CA's suggested renewal window for C{cert} (ARI, RFC 9773).

        @return: Fires with C{(start, end, recheck)}: the window in seconds
            since the epoch and the seconds after which to ask again (the
            CA's C{Retry-After}, between a minute and a day; six hours
            without one); or with C{None} when the CA offers no renewal
            information, or C{cert} has expired or is not the CA's (no
            authority key identifier).  Fails with L{ACMEError}.
        """
        return ensureDeferred(self._renewal_window(cert))

    async def _renewal_window(self, cert: x509.Certificate) -> Optional[Tuple[float, float, float]]:
        await self._get_directory()
        identifier = certificate_id(cert)
        # RFC 9773 4.3: never for a certificate that has expired.
        if (identifier is None or not self._offers_ari()
                or lifetime(cert)[1] <= self.reactor.seconds()):
            return None
        response = await self._http.get(f"{self._directory['renewalInfo']}/{identifier}")
        info = messages.RenewalInfo.from_json(
            json.loads(await _body(response, "the renewal information")))
        window = info.suggested_window
        retry = response.headers.getRawHeaders(b"retry-after", [b""])[0]
        recheck = float(retry) if retry.isdigit() else ARI_RECHECK
        return (window.start.timestamp(), window.end.timestamp(),
                min(max(recheck, 60.0), 86400.0))

    def _replaces(self, names: Tuple[str, ...]) -> Optional[str]:
        # The stored certificate an order renews (RFC 9773 5), when the CA
        # takes renewal information: it may then exempt the order from
        # rate limits.
        filename = certificate_file(self.acme, names)
        if not self._offers_ari() or not os.path.exists(filename):
            return None
        cert = read_certificate(filename)
        return None if is_stand_in(cert) else certificate_id(cert)

    def _offers_ari(self) -> bool:
        return "renewalInfo" in self._directory.to_partial_json()

    async def _get_directory(self) -> None:
        if self._directory is None:
            response = await self._http.get(self.acme.directory)
            self._directory = messages.Directory.from_json(
                json.loads(await _body(response, "the directory")))

    async def _register(self) -> None:
        await self._get_directory()
        if self._kid is None:
            self._key = _account_key(self.acme)
            response, _ = await self._post(self._directory["newAccount"], messages.NewRegistration(
                contact=(f"mailto:{self.acme.email}",), terms_of_service_agreed=True,
                external_account_binding=self._binding()))
            self._kid = response.headers.getRawHeaders(b"location")[0].decode("ascii")

    def _binding(self) -> Optional[Dict[str, Any]]:
        # RFC 8555 7.3.4: the account key signed with the CA's MAC key.
        account = self.acme.external_account
        if account is None:
            if self._directory.meta.external_account_required:
                raise ACMEError("the CA requires external account binding: set "
                                "[acme] external_account (key_id and hmac_key)")
            return None
        return messages.ExternalAccountBinding.from_data(
            account_public_key=self._key.public_key(), kid=account.key_id,
            hmac_key=account.hmac_key, directory=self._directory)

    async def _authorize(self, url: str, cleanups: List[Callable[[], Any]]) -> None:
        _, authorization = await self._post(url, None)
        if authorization["status"] == "valid":
            return
        name = authorization["identifier"]["value"]
        wildcard = authorization.get("wildcard", False)
        offered = {c["type"]: c for c in authorization["challenges"]}
        kinds = [k for k in self._types("*." + name if wildcard else name) if k in offered]
        if not kinds:
            raise ACMEError(f"the CA offers no challenge this proxy can answer for {name!r} "
                            f"(it offers {', '.join(sorted(offered)) or 'none'})")
        kind, challenge = kinds[0], offered[kinds[0]]
        if kind == "dns-01":
            body = messages.ChallengeBody.from_json(challenge)
            owner = body.chall.validation_domain_name(name)
            await self._set_txt(owner, [body.chall.validation(self._key)])
            cleanups.append(lambda: self._remove_txt(owner))
        elif kind == "tls-alpn-01":
            # The acme library no longer knows this type: the key
            # authorization is RFC 8555 8.1's, token and key thumbprint.
            authorization_text = (f"{challenge['token']}."
                                  f"{jose.b64encode(self._key.thumbprint()).decode('ascii')}")
            host = name.lower()
            self.challenges.add_certificate(host, authorization_text, self._now())
            cleanups.append(lambda: self.challenges.discard_certificate(host))
        else:
            body = messages.ChallengeBody.from_json(challenge)
            token = body.chall.encode("token").encode("ascii")
            self.challenges.add(token, body.chall.validation(self._key).encode("ascii"))
            cleanups.append(lambda: self.challenges.discard(token))
        self.log.info("ACME: answering {kind} for {name}", kind=kind, name=name)
        await self._post(challenge["url"], {})
        await self._poll(url, ("valid",), ("invalid", "revoked", "deactivated", "expired"))

    def _now(self) -> datetime.datetime:
        # The reactor's seconds are the wall clock's in a running proxy.
        return datetime.datetime.fromtimestamp(self.reactor.seconds(), datetime.timezone.utc)

    async def _poll(self, url: str, done: Tuple[str, ...], failed: Tuple[str, ...]) -> Dict:
        for _ in range(POLLS):
            _, resource = await self._post(url, None)
            status = resource.get("status")
            if status in done:
                return resource
            if status in failed:
                raise ACMEError(f"{url} is {status}: {_problems(resource)}")
            await deferLater(self.reactor, POLL_INTERVAL, lambda: None)
        raise ACMEError(f"{url} still not ready after {POLLS} polls")

    async def _nonce(self) -> bytes:
        if not self._nonces:
            response = await self._http.head(self._directory["newNonce"])
            await response.content()
            self._take_nonce(response)
        return self._nonces.pop()

    def _take_nonce(self, response) -> None:
        for value in response.headers.getRawHeaders(b"replay-nonce", []):
            self._nonces.append(jose.b64decode(value))

    async def _post(self, url: str, payload: Any,
                    raw: bool = False, retried: bool = False) -> Tuple[Any, Any]:
        """
        POST C{payload} (an C{acme} message or a dict) to C{url}, signed
        (C{None}: POST-as-GET); retry
        once on a stale nonce (C{badNonce}, which RFC 8555 6.5 says to).
        """
        if payload is None:
            data = b""
        elif isinstance(payload, dict):
            data = json.dumps(payload).encode("utf-8")
        else:
            data = payload.json_dumps().encode("utf-8")
        signed = jws.JWS.sign(data, key=self._key, alg=_algorithm(self._key),
                              nonce=await self._nonce(), url=url, kid=self._kid)
        response = await self._http.post(
            url, data=signed.json_dumps().encode("utf-8"),
            headers={b"Content-Type": [b"application/jose+json"]})
        self._take_nonce(response)
        body = await response.content()
        if response.code >= 400:
            problem = _problem(body)
            if not retried and problem.get("type") == "urn:ietf:params:acme:error:badNonce":
                return await self._post(url, payload, raw, retried=True)
            raise ACMEError(f"{url}: {response.code} {problem.get('type', '')} "
                            f"{problem.get('detail', body[:200])}".strip(),
                            str(problem.get("type", "")), self._retry_after(response))
        return response, body if raw else (json.loads(body) if body else {})

    def _retry_after(self, response) -> float:
        # RFC 8555 6.6 and RFC 9110 10.2.3: seconds, or an HTTP date.
        value = response.headers.getRawHeaders(b"retry-after", [b""])[0].decode("latin-1")
        if value.strip().isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return 0.0
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.timezone.utc)
        return max(when.timestamp() - self.reactor.seconds(), 0.0)


def certificate_id(cert: x509.Certificate) -> Optional[str]:
    """
    The ARI identifier of C{cert} (RFC 9773 4.1): its authority key
    identifier and its serial number's DER bytes, each base64url without
    padding, joined by a dot; C{None} without an authority key identifier.
    """
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return None
    if aki.key_identifier is None:
        return None
    serial = cert.serial_number
    der = serial.to_bytes(serial.bit_length() // 8 + 1, "big", signed=True)
    return f"{jose.b64encode(aki.key_identifier).decode()}.{jose.b64encode(der).decode()}"


def _algorithm(key: jose.JWK) -> jose.JWASignature:
    return jose.RS256 if isinstance(key, jose.JWKRSA) else jose.ES256


def _problem(body: bytes) -> Dict[str, Any]:
    try:
        problem = json.loads(body)
    except ValueError:
        return {}
    return problem if isinstance(problem, dict) else {}


def _problems(resource: Dict[str, Any]) -> str:
    # What went wrong, from an order's or an authorization's errors.
    errors = [resource.get("error")] + [c.get("error") for c in resource.get("challenges", ())]
    return "; ".join(str(e.get("detail", e)) for e in errors if e) or "no detail"


async def _body(response, what: str) -> bytes:
    body = await response.content()
    if response.code != 200:
        raise ACMEError(f"{what}: {response.code} {body[:200]!r}")
    return body
