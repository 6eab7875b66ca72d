# -*- test-case-name: tests.test_tls -*-
"""
TLS termination: the certificate for each connection chosen by SNI.

A TLS listener holds several certificates, each for the names in its
subjectAltName, and a client says which site it wants in the handshake's
Server Name Indication before the server must present a certificate.  So
every listener has one I{front} OpenSSL context, from which each connection
starts, and one context per certificate; the front context's server name
callback looks the client's name up in a L{CertificateStore} and moves the
connection to that certificate's context.  The lookup takes, in order:

    1. a certificate that lists the name exactly (case-insensitive, a
       trailing dot ignored);
    2. a wildcard certificate, C{*.example.com} standing for exactly one
       more label (C{a.example.com}; neither C{a.b.example.com} nor
       C{example.com});
    3. the listener's default certificate, also served to clients that send
       no name.

The names of a certificate are its subjectAltName DNS entries, never the
name of its file.  Only a certificate without a subjectAltName extension at
all falls back to its subject's common name, as clients did before
subjectAltName was required.

Every context gets the same settings, because OpenSSL takes some of them
from the context a connection started with and others from the one it was
moved to: TLS 1.2 at least (or 1.3), forward-secret AEAD ciphers only
(ECDHE with AES-GCM or ChaCha20-Poly1305) in the server's order, no
compression, no renegotiation, session tickets, ECDH curves chosen by
OpenSSL, ALPN (C{h2} preferred, then C{http/1.1}: L{ALPN_PROTOCOLS}) and, with a
client CA, required and verified client certificates (mutual TLS).

The ALPN choice also answers ACME's TLS-ALPN-01 challenge (RFC 8737): a CA
validating a name connects with that name in SNI and offers only
C{acme-tls/1} (L{ACME_TLS_ALPN}); when the listener's C{challenge} lookup
has a challenge certificate for the name, the connection is moved to a
context presenting it and C{acme-tls/1} is chosen.  Every other handshake,
for that name too, is served as before.  This answers over TLS 1.3 only,
where OpenSSL picks the certificate after ALPN (under TLS 1.2 it has picked
it already); the CAs' validation clients offer TLS 1.3.

L{ServerTLS} is the Twisted connection creator over a store.  A reload
builds a whole new store (and front context) and swaps it in with one
assignment, so new handshakes use the new certificates while connections
already open keep theirs; if anything about the new certificates is wrong
the old store stays and the error says what.  L{TLSServerFactory} wraps a
protocol factory in TLS and closes connections that have not finished their
handshake in time.  L{wrap_listener_factory} puts it all together for one
listener.
"""

from __future__ import annotations

import datetime as _datetime
import os
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple, Union

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from service_identity import VerificationError
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from zope.interface import implementer

from twistproxy.config import Certificate, ConfigError, ListenerTLS, UpstreamTLS
from twistproxy.deadlines import NEVER, Deadlines

__all__ = [
    "ACME_TLS_ALPN", "ALPN_PROTOCOLS", "MODERN_CIPHERS", "CertificateStore", "ServedCertificate",
    "ServerTLS", "TLSServerFactory", "TLSServerProtocol", "certificate_names",
    "client_creator", "peer_subject", "tls_failure", "trust_root", "wrap_listener_factory",
]

# The application protocols offered in ALPN, most preferred first; the
# codec of a connection is then chosen by transport.negotiatedProtocol
# (twistproxy.http.negotiate).
ALPN_PROTOCOLS: Tuple[bytes, ...] = (b"h2", b"http/1.1")

# The ALPN protocol of ACME's TLS-ALPN-01 validation handshakes (RFC 8737).
ACME_TLS_ALPN = b"acme-tls/1"

# TLS 1.2 cipher suites when the listener names none: forward secrecy
# (ECDHE) and AEAD (AES-GCM, ChaCha20-Poly1305) only, as in Mozilla's
# "intermediate" profile without its finite-field DHE suites.  TLS 1.3 suites
# are OpenSSL's, all of which are AEAD.
MODERN_CIPHERS = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
])

_METHOD = getattr(SSL, "TLS_SERVER_METHOD", SSL.SSLv23_METHOD)
_VERSIONS = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}
# Session tickets stay on (OP_NO_TICKET is not set): resumption saves a
# full handshake, and the ticket keys live in the front context, so they
# are shared by all of a listener's certificates and renewed with a reload.
_OPTIONS = (
    SSL.OP_CIPHER_SERVER_PREFERENCE
    | SSL.OP_NO_COMPRESSION
    | getattr(SSL, "OP_NO_RENEGOTIATION", 0)
)
# Needed for session resumption with client certificates; the same in every
# context, since a connection can move from one to another.
_SESSION_ID = b"twistproxy"
_NO_ALPN = getattr(SSL, "NO_OVERLAPPING_PROTOCOLS", b"")

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.S)

ServerName = Union[str, bytes, None]
# A certificate, its private key and its intermediates.
_Material = Tuple[x509.Certificate, object, Tuple[x509.Certificate, ...]]
# A server name (lower-case) to the certificate and key that answer an
# ACME TLS-ALPN-01 challenge for it, or None when none is pending.
ChallengeLookup = Callable[[str], Optional[Tuple[x509.Certificate, object]]]


def _utc(cert: x509.Certificate, which: str) -> _datetime.datetime:
    value = getattr(cert, which + "_utc", None)
    if value is None:  # cryptography < 42
        value = getattr(cert, which).replace(tzinfo=_datetime.timezone.utc)
    return value


def _when(moment: _datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _public_bytes(key) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _normal(name: str) -> str:
    return name.rstrip(".").lower()


def certificate_names(cert: x509.Certificate) -> Tuple[str, ...]:
    """
    The host names a certificate is for, lower-cased, without trailing dots,
    in the certificate's order.

    These are the DNS entries of its subjectAltName.  Only when the
    certificate has no subjectAltName extension at all is its subject's
    (last) common name used instead: browsers have ignored the common name
    for years, so a certificate with a subjectAltName is served only for the
    names it lists there.

    @param cert: The certificate.
    @return: The names, possibly none (such a certificate can only be a
        listener's default).
    @raises ValueError: If the subjectAltName extension cannot be parsed.
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)][-1:]
    else:
        names = san.value.get_values_for_type(x509.DNSName)
    out: List[str] = []
    for name in names:
        if isinstance(name, str) and _normal(name) not in out:
            out.append(_normal(name))
    return tuple(out)


@dataclass(frozen=True)
class ServedCertificate:
    """
    One certificate of a L{CertificateStore}, loaded and checked.

    @ivar source: The PEM file it came from.
    @ivar path: The configuration path of its entry, e.g.
        C{'listeners.web.tls.certificates[0]'} (shared by every file of a
        directory).
    @ivar names: The names it is served for (see L{certificate_names}),
        e.g. C{('example.com', '*.example.com')}.
    @ivar subject: Its subject, RFC 4514 style (C{'CN=example.com'}).
    @ivar not_after: When it expires (UTC).
    @ivar chain_length: How many certificates are sent: itself and the
        intermediates that followed it in its file.
    @ivar context: The OpenSSL context that presents it.
    """

    source: str
    path: str
    names: Tuple[str, ...]
    subject: str
    not_after: _datetime.datetime
    chain_length: int
    context: SSL.Context = field(compare=False, repr=False)


class CertificateStore:
    """
    The certificates of one TLS listener and the choice among them by name.

    Immutable once built: a reload builds a new store (L{ServerTLS.reload}).

    @ivar certificates: Every certificate, in configuration order (the files
        of a directory sorted by name).
    @ivar default: The certificate for clients that send no name, or one no
        certificate has.
    @ivar front: The context every connection starts with; its server name
        callback moves the connection to the chosen certificate's context.
    @ivar alpn: The ALPN protocols offered, most preferred first.
    @ivar challenge: Finds the certificate that answers a TLS-ALPN-01
        challenge for a name, or C{None}: the listener answers none.
    @ivar unknown: Called with the SNI name (bytes) of a handshake that no
        certificate holds (and so gets the default), or C{None}: the hook
        of on-demand certificates (L{twistproxy.acme.ondemand}).
    """

    log = Logger()
    unknown: Optional[Callable[[bytes], None]] = None

    def __init__(
        self,
        certificates: Sequence[ServedCertificate],
        default: ServedCertificate,
        front: SSL.Context,
        alpn: Sequence[bytes] = ALPN_PROTOCOLS,
        challenge: Optional[ChallengeLookup] = None,
    ):
        self.certificates = tuple(certificates)
        self.default = default
        self.front = front
        self.alpn = tuple(alpn)
        self.challenge = challenge
        self._exact: Dict[str, ServedCertificate] = {}
        self._wildcard: Dict[str, ServedCertificate] = {}
        for served in self.certificates:
            for name in served.names:
                if name.startswith("*."):
                    table, key = self._wildcard, name[2:]
                elif "*" in name:
                    self.log.warn(
                        "{path}: {source}: the name {name} is ignored: only a whole "
                        "first label can be a wildcard (*.example.com)",
                        path=served.path, source=served.source, name=name)
                    continue
                else:
                    table, key = self._exact, name
                first = table.setdefault(key, served)
                if first is not served:
                    self.log.warn(
                        "{path}: {name} is in both {first} and {source}; {first} is "
                        "served for it", path=served.path, name=name,
                        first=first.source, source=served.source)
            if not served.names and served is not default:
                self.log.warn(
                    "{path}: {source} has no DNS name in its subjectAltName, so it is "
                    "never chosen (it is not the default)",
                    path=served.path, source=served.source)
        front.set_tlsext_servername_callback(self._select)

    @classmethod
    def load(
        cls,
        tls: ListenerTLS,
        path: str,
        alpn: Sequence[bytes] = ALPN_PROTOCOLS,
        now: Optional[float] = None,
        challenge: Optional[ChallengeLookup] = None,
    ) -> CertificateStore:
        """
        Read and check every certificate of a listener and build its
        contexts.

        Each entry of C{tls.certificates} is a PEM file holding the private
        key and the certificate followed by its intermediates, or a
        certificate file and a key file, or a directory, which stands for
        every C{*.pem} file in it (sorted by name, each holding its key).
        The first certificate in a file is the server's own: the one the
        key belongs to.

        @param tls: The listener's TLS settings.
        @param path: The configuration path of C{tls}, for errors, e.g.
            C{'listeners.web.tls'}.
        @param alpn: The ALPN protocols to offer, most preferred first.
        @param now: The time to check expiry against, in seconds since the
            epoch; the current time by default.  Certificates are about
            wall-clock time, not the reactor's.
        @param challenge: Finds the certificate that answers an ACME
            TLS-ALPN-01 challenge for a name (see L{ACME_TLS_ALPN}).
        @raises ConfigError: At C{path.certificates[i]} when a file cannot be
            read, holds no certificate, no private key (or an encrypted
            one), a key that does not belong to its first certificate, or
            an expired certificate; at C{path.client_ca} when that file
            cannot be read or holds no certificate; at C{path.ciphers} when
            OpenSSL accepts none of the ciphers or, with TLS 1.2 allowed,
            a TLS 1.2 client could not connect or only without encryption
            or authentication (L{_Configurator.check}); at C{path.default}
            when it is not the index of a certificate.
        """
        moment = _datetime.datetime.fromtimestamp(
            time.time() if now is None else now, _datetime.timezone.utc)
        if not 0 <= tls.default < len(tls.certificates):
            raise ConfigError(f"{path}.default", "must be the index of a certificate")
        if tls.client_ca:
            _certificates_file(tls.client_ca, f"{path}.client_ca", "client CA file")
        configure = _Configurator(tls, path, tuple(alpn), challenge)
        served: List[ServedCertificate] = []
        default = None
        for i, entry in enumerate(tls.certificates):
            entry_path = f"{path}.certificates[{i}]"
            for cert_file, key_file in _files(entry, entry_path):
                one, material = _load_certificate(
                    cert_file, key_file, entry_path, moment, configure)
                configure.check(one.context, cert_file)
                served.append(one)
                if i == tls.default and default is None:
                    default = one, material
        assert default is not None
        # The front context presents the default certificate too: a safety
        # net, should a connection ever not be moved.
        front = configure()
        _present(front, default[1])
        return cls(served, default[0], front, alpn, challenge)

    def certificate_for(self, server_name: ServerName) -> ServedCertificate:
        """
        The certificate to present to a client that asked for
        C{server_name}: an exact name, else a wildcard, else the default.

        @param server_name: The SNI name (text or bytes), or C{None} when the
            client sent none.
        """
        return self._holder(server_name) or self.default

    def _holder(self, server_name: ServerName) -> Optional[ServedCertificate]:
        # The certificate holding the name, exactly or by a wildcard.
        if not server_name:
            return None
        if isinstance(server_name, bytes):
            try:
                server_name = server_name.decode("ascii")
            except UnicodeDecodeError:
                # SNI carries A-labels; anything else matches nothing.
                return None
        name = _normal(server_name)
        found = self._exact.get(name)
        if found is not None:
            return found
        label, _, parent = name.partition(".")
        return self._wildcard.get(parent) if label and parent else None

    def context_for(self, server_name: ServerName) -> SSL.Context:
        """
        The context of L{certificate_for}C{(server_name)}.
        """
        return self.certificate_for(server_name).context

    def _select(self, connection: SSL.Connection) -> None:
        # OpenSSL calls this during every handshake, with or without SNI.
        name = connection.get_servername()
        found = self._holder(name)
        if found is None and name and self.unknown is not None:
            self.unknown(name)
        connection.set_context((found or self.default).context)


def _files(entry: Certificate, path: str) -> List[Tuple[str, str]]:
    """
    The (certificate file, key file or '') pairs of one configuration entry.
    """
    if not entry.key and os.path.isdir(entry.cert):
        try:
            names = sorted(n for n in os.listdir(entry.cert) if n.endswith(".pem"))
        except OSError as e:
            raise ConfigError(
                path, f"cannot read the directory {entry.cert!r}: {e.strerror or e}") from None
        if not names:
            raise ConfigError(path, f"the directory {entry.cert!r} holds no *.pem file")
        return [(os.path.join(entry.cert, n), "") for n in names]
    return [(entry.cert, entry.key)]


def _read(filename: str, path: str, what: str) -> bytes:
    try:
        with open(filename, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(path, f"cannot read the {what} {filename!r}: {e.strerror or e}") from None


def _blocks(data: bytes) -> List[Tuple[bytes, bytes]]:
    return [(m.group(1), m.group(0)) for m in _PEM_BLOCK.finditer(data)]


def _pem_certificates(data: bytes, filename: str, path: str) -> List[x509.Certificate]:
    certs = []
    for kind, block in _blocks(data):
        if kind == b"CERTIFICATE":
            try:
                certs.append(x509.load_pem_x509_certificate(block))
            except ValueError as e:
                raise ConfigError(
                    path, f"{filename!r}: certificate {len(certs) + 1} is not valid ({e})"
                ) from None
    return certs


def _certificates_file(filename: str, path: str, what: str) -> List[x509.Certificate]:
    """
    The certificates of a PEM file, in order; at least one.

    @raises ConfigError: At C{path} when the file cannot be read or holds no
        (valid) certificate.
    """
    certs = _pem_certificates(_read(filename, path, what), filename, path)
    if not certs:
        raise ConfigError(path, f"{filename!r} holds no PEM certificate")
    return certs


def _private_key(data: bytes, filename: str, path: str, separate: bool):
    keys = [block for kind, block in _blocks(data) if kind.endswith(b"PRIVATE KEY")]
    if not keys:
        hint = "" if separate else (
            " (put the key in the same file, or use {cert = ..., key = ...})")
        raise ConfigError(path, f"{filename!r} holds no PEM private key{hint}")
    if len(keys) > 1:
        raise ConfigError(path, f"{filename!r} holds {len(keys)} private keys; one is expected")
    try:
        return serialization.load_pem_private_key(keys[0], password=None)
    except TypeError:
        raise ConfigError(
            path, f"the private key in {filename!r} is encrypted; passphrases are not "
            f"supported: store it unencrypted, readable only by the proxy's user",
        ) from None
    except (ValueError, crypto.Error) as e:
        raise ConfigError(path, f"the private key in {filename!r} is not valid ({e})") from None


def _load_certificate(
    cert_file: str,
    key_file: str,
    path: str,
    now: _datetime.datetime,
    configure: _Configurator,
) -> Tuple[ServedCertificate, _Material]:
    data = _read(cert_file, path, "certificate file")
    chain = _pem_certificates(data, cert_file, path)
    if not chain:
        raise ConfigError(path, f"{cert_file!r} holds no PEM certificate")
    if key_file:
        key = _private_key(_read(key_file, path, "key file"), key_file, path, True)
    else:
        key = _private_key(data, cert_file, path, False)
    leaf = chain[0]
    public = _public_bytes(key.public_key())
    if _public_bytes(leaf.public_key()) != public:
        owner = [i for i, c in enumerate(chain) if _public_bytes(c.public_key()) == public]
        if owner:
            raise ConfigError(
                path, f"{cert_file!r}: the private key belongs to certificate {owner[0] + 1} "
                f"of the file, not the first: put the server's own certificate first, "
                f"then its intermediates")
        raise ConfigError(
            path, f"the private key in {key_file or cert_file!r} does not match the "
            f"certificate {leaf.subject.rfc4514_string()!r} in {cert_file!r}")
    try:
        names = certificate_names(leaf)
    except ValueError as e:
        raise ConfigError(path, f"{cert_file!r}: invalid subjectAltName ({e})") from None
    described = ", ".join(names) or leaf.subject.rfc4514_string()
    not_after = _utc(leaf, "not_valid_after")
    if not_after <= now:
        raise ConfigError(
            path, f"the certificate for {described} in {cert_file!r} expired on "
            f"{_when(not_after)}; clients would refuse it")
    log = CertificateStore.log
    not_before = _utc(leaf, "not_valid_before")
    if not_before > now:
        log.warn(
            "{path}: the certificate for {names} in {source} is not valid before {when}; "
            "clients refuse it until then", path=path, names=described,
            source=cert_file, when=_when(not_before))
    for i, cert in enumerate(chain[1:], 2):
        if _utc(cert, "not_valid_after") <= now:
            log.warn(
                "{path}: certificate {index} of {source} ({subject}) expired on {when}; "
                "clients that need it will refuse the chain", path=path, index=i,
                source=cert_file, subject=cert.subject.rfc4514_string(),
                when=_when(_utc(cert, "not_valid_after")))
    for i, (cert, issuer) in enumerate(zip(chain, chain[1:]), 1):
        if cert.issuer != issuer.subject:
            log.warn(
                "{path}: in {source}, certificate {index} was not issued by the one "
                "after it: the chain is out of order or incomplete",
                path=path, source=cert_file, index=i)
    material = (leaf, key, tuple(chain[1:]))
    context = configure()
    _present(context, material)
    return ServedCertificate(
        source=cert_file, path=path, names=names, subject=leaf.subject.rfc4514_string(),
        not_after=not_after, chain_length=len(chain), context=context), material


def _use(method: Callable, obj, convert: Callable) -> None:
    # pyOpenSSL 24.3 and later take cryptography objects (and deprecate
    # its own); older versions take only its own.
    try:
        method(obj)
    except TypeError:
        method(convert(obj))


def _present(context: SSL.Context, material: _Material) -> None:
    """
    Make C{context} present a certificate, its key and its intermediates.
    """
    leaf, key, intermediates = material
    _use(context.use_certificate, leaf, crypto.X509.from_cryptography)
    _use(context.use_privatekey, key, crypto.PKey.from_cryptography_key)
    for cert in intermediates:
        _use(context.add_extra_chain_cert, cert, crypto.X509.from_cryptography)
    context.check_privatekey()


class _Configurator:
    """
    Makes contexts with a listener's settings, all alike.
    """

    def __init__(self, tls: ListenerTLS, path: str, alpn: Tuple[bytes, ...],
                 challenge: Optional[ChallengeLookup] = None):
        self.tls = tls
        self.path = path
        self.alpn = alpn
        self.challenge = challenge
        self._ciphers = (tls.ciphers or MODERN_CIPHERS).encode("ascii", "replace")
        try:
            SSL.Context(_METHOD).set_cipher_list(self._ciphers)
        except SSL.Error:
            raise ConfigError(
                f"{path}.ciphers",
                f"OpenSSL accepts none of the ciphers {tls.ciphers!r}") from None

    def check(self, context: SSL.Context, source: str) -> None:
        """
        With a listener's own C{ciphers} and TLS 1.2 allowed, make sure a
        TLS 1.2 client can connect to C{context}, and not without
        encryption or authentication.

        OpenSSL accepts lists it cannot use: C{"NULL-MD5"} is refused by
        its security level at every handshake, C{"ECDHE-RSA-..."} alone
        cannot serve an ECDSA certificate, C{"PSK"} needs keys the proxy
        never has.  Rather than second-guess OpenSSL's rules, this asks it:
        one handshake in memory with a client offering every cipher there
        is.  (TLS 1.3 suites are OpenSSL's own, always usable.)

        @param context: A certificate's context, made by this configurator.
        @param source: The certificate's file, for the error.
        @raises ConfigError: At C{ciphers}.
        """
        tls = self.tls
        if not tls.ciphers or tls.min_version != "1.2":
            return
        where = f"{self.path}.ciphers"
        try:
            chosen = _tls12_handshake(context)
        except SSL.Error as e:
            raise ConfigError(
                where, f"with the ciphers {tls.ciphers!r} no TLS 1.2 client can connect "
                f"(certificate {source!r}; OpenSSL says: {tls_failure(Failure(e))}): leave "
                f"ciphers out for the modern default, or set min_version = \"1.3\"") from None
        for selector, lacks in (b"eNULL", "encryption"), (b"aNULL", "authentication"):
            if chosen in _tls12_ciphers(selector):
                raise ConfigError(
                    where, f"with the ciphers {tls.ciphers!r} TLS 1.2 clients get {chosen}, "
                    f"which has no {lacks}")

    def __call__(self) -> SSL.Context:
        tls = self.tls
        ctx = SSL.Context(_METHOD)
        ctx.set_options(_OPTIONS)
        ctx.set_min_proto_version(_VERSIONS[tls.min_version])
        ctx.set_cipher_list(self._ciphers)
        ctx.set_session_id(_SESSION_ID)
        # ECDH curves need no setting: OpenSSL 1.1.0 and later (all that
        # pyOpenSSL supports) choose them automatically (X25519, P-256 ...).
        ctx.set_alpn_select_callback(self._select_protocol)
        ctx.set_info_callback(_info)
        if tls.client_ca:
            try:
                ctx.load_verify_locations(tls.client_ca)
                # The CAs named in the certificate request, so that clients
                # with several certificates pick the right one.
                ctx.load_client_ca(tls.client_ca.encode("utf-8"))
            except SSL.Error as e:
                raise ConfigError(
                    f"{self.path}.client_ca",
                    f"OpenSSL cannot load {tls.client_ca!r}: {e}") from None
            ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT)
        return ctx

    def _select_protocol(self, connection: SSL.Connection, offered: List[bytes]) -> bytes:
        if ACME_TLS_ALPN in offered and self._answer_challenge(connection):
            return ACME_TLS_ALPN
        for protocol in self.alpn:
            if protocol in offered:
                return protocol
        # Go on without ALPN rather than fail the handshake.
        return _NO_ALPN

    def _answer_challenge(self, connection: SSL.Connection) -> bool:
        """
        Move a TLS-ALPN-01 validation handshake to a context that presents
        the challenge certificate for its server name, if one is pending.
        """
        name = connection.get_servername()
        if (self.challenge is None or not name
                # Under TLS 1.2 OpenSSL has chosen the certificate before
                # ALPN, and a new context would free it under its feet.
                or connection.get_protocol_version() != SSL.TLS1_3_VERSION):
            return False
        found = self.challenge(_normal(name.decode("ascii", "replace")))
        if found is None:
            return False
        context = self()
        _present(context, (found[0], found[1], ()))
        connection.set_context(context)
        # The CA presents no client certificate, and sends no data.
        connection.set_verify(SSL.VERIFY_NONE)
        return True


def _tls12_ciphers(spec: bytes) -> FrozenSet[str]:
    """
    The TLS 1.2 ciphers an OpenSSL cipher list such as C{b"eNULL"} selects.
    """
    ctx = SSL.Context(_METHOD)
    ctx.set_cipher_list(spec)
    # TLS 1.3 suites (TLS_AES_128_GCM_SHA256 ...) are listed too, always.
    return frozenset(name for name in SSL.Connection(ctx, None).get_cipher_list()
                     if not name.startswith("TLS_"))


def _tls12_handshake(context: SSL.Context) -> str:
    """
    A TLS 1.2 handshake in memory between a server connection of
    C{context} and a client that offers every cipher OpenSSL knows.

    @return: The cipher the server chose.
    @raises SSL.Error: When the handshake fails.
    """
    offer = SSL.Context(SSL.TLS_CLIENT_METHOD)
    offer.set_max_proto_version(SSL.TLS1_2_VERSION)
    offer.set_cipher_list(b"ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    client = SSL.Connection(offer, None)
    client.set_connect_state()
    server = SSL.Connection(context, None)
    server.set_accept_state()
    # A listener with client_ca asks for a certificate: not the question.
    server.set_verify(SSL.VERIFY_NONE)
    # Two round trips; a few more turns cost nothing once it is done.
    for _ in range(4):
        for sender, receiver in ((client, server), (server, client)):
            try:
                sender.do_handshake()
            except SSL.WantReadError:
                pass
            try:
                receiver.bio_write(sender.bio_read(65536))
            except SSL.WantReadError:
                pass
    chosen = server.get_cipher_name()
    if chosen is None:
        raise SSL.Error([("", "", "the handshake did not complete")])
    return chosen


def _info(connection: SSL.Connection, where: int, ret: int) -> None:
    # The public way to learn, inside OpenSSL, that the handshake is over.
    if where & SSL.SSL_CB_HANDSHAKE_DONE:
        done = getattr(connection.get_app_data(), "handshake_done", None)
        if done is not None:
            done()


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """
    Creates the server side of each TLS connection of a listener, from the
    current L{CertificateStore}.

    Use it with L{TLSServerFactory} (or Twisted's C{TLSMemoryBIOFactory}).
    The connection's app data is its TLS protocol; when that protocol has a
    C{handshake_done()} method, it is called once the handshake completes.

    @ivar store: The certificates that new handshakes use.
    """

    def __init__(self, store: CertificateStore):
        self.store = store

    def serverConnectionForTLS(self, tlsProtocol) -> SSL.Connection:
        """
        A new connection, starting from the current store's front context.
        """
        connection = SSL.Connection(self.store.front, None)
        connection.set_app_data(tlsProtocol)
        return connection

    def reload(self, tls: ListenerTLS, path: str) -> None:
        """
        Load the listener's certificates again (after they were renewed, or
        its settings changed) and use them for new handshakes.

        Connections already open, or mid-handshake, keep what they have.

        @param tls: The listener's (possibly new) TLS settings.
        @param path: Their configuration path, for errors.
        @raises ConfigError: As L{CertificateStore.load}; the current
            certificates then stay in use.  The caller logs (success too).
        """
        store = CertificateStore.load(tls, path, alpn=self.store.alpn,
                                      challenge=self.store.challenge)
        store.unknown = self.store.unknown
        # One assignment: a handshake uses either the old store or the new.
        self.store = store


class TLSServerProtocol(TLSMemoryBIOProtocol):
    """
    The server side of one TLS connection, aborted if its handshake does
    not complete within the factory's C{handshake_timeout}.

    Writes go to OpenSSL at once (not Twisted's C{BufferingTLSTransport}):
    the HTTP/1.1 codec already joins each response into one write, and the
    buffering transport would add a timer and a trip through the reactor to
    every one.  The HTTP/2 codec writes once per stream instead, some ten
    times in one reactor turn under load, and asks for its writes to be
    joined (L{coalesce_writes}).
    """

    factory: TLSServerFactory
    deadline = NEVER
    # The writes waiting for the end of the reactor turn, once
    # coalesce_writes was called, and the call that sends them.
    _soon: Optional[List[bytes]] = None
    _soon_call = None

    def coalesce_writes(self) -> None:
        """
        From now on, send what is written in one reactor turn as one write
        to OpenSSL, at the end of the turn: one TLS record (and one pass
        through the TLS layer's Python code) for all, not one for each.
        Closing the connection sends them first; aborting it drops them.
        """
        self._soon = []
        self.write = self._write_soon

    def _write_soon(self, data: bytes) -> None:
        soon = self._soon
        if not soon:
            self._soon_call = self.factory.reactor.callLater(0, self._flush_soon)
        soon.append(data)

    def _flush_soon(self) -> None:
        """
        Send the writes that wait for the end of the turn, now.
        """
        call, self._soon_call = self._soon_call, None
        if call is not None and call.active():
            call.cancel()
        soon = self._soon
        if soon:
            data = b"".join(soon)
            soon.clear()
            TLSMemoryBIOProtocol.write(self, data)

    def _drop_soon(self) -> None:
        if self._soon_call is not None:
            if self._soon_call.active():
                self._soon_call.cancel()
            self._soon_call = None
        if self._soon:
            self._soon.clear()

    def loseConnection(self) -> None:
        self._flush_soon()
        super().loseConnection()

    def unregisterProducer(self) -> None:
        # Which may shut TLS down when the connection is closing.
        self._flush_soon()
        super().unregisterProducer()

    def abortConnection(self) -> None:
        self._drop_soon()
        super().abortConnection()

    def makeConnection(self, transport) -> None:
        factory = self.factory
        self.deadline = factory.reactor.seconds() + factory.handshake_timeout
        factory.deadlines.add(self)
        super().makeConnection(transport)

    def handshake_done(self) -> None:
        """
        Called (through L{ServerTLS}) when the handshake has completed.
        """
        if self.deadline != NEVER:
            self.deadline = NEVER
            self.factory.deadlines.discard(self)

    def expired(self) -> None:
        """
        The handshake took too long: close without further ado.
        """
        factory = self.factory
        factory.deadlines.discard(self)
        # Counted, not logged: a flood of idle connections would flood the log.
        factory.handshake_timeouts += 1
        self.abortConnection()

    def connectionLost(self, reason) -> None:
        self.factory.deadlines.discard(self)
        self._drop_soon()
        super().connectionLost(reason)


class TLSServerFactory(TLSMemoryBIOFactory):
    """
    Wraps a listener's protocol factory in TLS terminated with a
    L{ServerTLS}, and bounds the time a client has to complete its
    handshake.

    Idle connections cost no more than their socket and a few kilobytes of
    OpenSSL state, and never hold up other handshakes (the reactor serves
    whichever connection has something to say); the timeout makes sure they
    are closed.

    @ivar server_tls: The connection creator (for L{reload}).
    @ivar handshake_timeout: Seconds a client has to complete its handshake.
    @ivar handshake_timeouts: How many connections were closed for not
        completing it in time.
    """

    protocol = TLSServerProtocol

    def __init__(
        self,
        reactor: IReactorTime,
        server_tls: ServerTLS,
        wrapped_factory,
        handshake_timeout: float = 10.0,
    ):
        super().__init__(server_tls, False, wrapped_factory, clock=reactor)
        self.reactor = reactor
        self.server_tls = server_tls
        self.handshake_timeout = handshake_timeout
        self.handshake_timeouts = 0
        # One coarse timer for all pending handshakes, not one per connection.
        self.deadlines = Deadlines(reactor)

    def reload(self, tls: ListenerTLS, path: str) -> None:
        """
        L{ServerTLS.reload}, and take the new handshake timeout (for new
        connections).

        @raises ConfigError: As L{ServerTLS.reload}; nothing changes then.
        """
        self.server_tls.reload(tls, path)
        self.handshake_timeout = tls.handshake_timeout


def peer_subject(transport) -> Optional[str]:
    """
    The subject of the client's verified certificate, RFC 4514 style, most
    specific part first: C{'CN=alice,O=Example'}.

    A listener asks for client certificates only when it has a C{client_ca},
    and then a handshake completes only if the client's certificate is
    signed by one of those CAs; so a certificate found here was verified.

    @param transport: The transport of a connection: a TLS transport
        (C{TLSMemoryBIOProtocol}) or any other.
    @return: The subject, or C{None} when the transport is not TLS, its
        handshake is not over, or the client sent no certificate.
    """
    get = getattr(transport, "getPeerCertificate", None)
    if get is None:
        return None
    try:
        cert = get()
    except (AttributeError, SSL.Error):
        return None
    if cert is None:
        return None
    to_cryptography = getattr(cert, "to_cryptography", None)
    if to_cryptography is not None:
        cert = to_cryptography()
    return cert.subject.rfc4514_string()


def wrap_listener_factory(
    reactor: IReactorTime,
    listener_tls: ListenerTLS,
    path: str,
    http_factory,
    challenge: Optional[ChallengeLookup] = None,
) -> Tuple[TLSServerFactory, ServerTLS]:
    """
    TLS termination for one listener: load its certificates and wrap the
    factory of its plain connections.

    Listen with the result on a plain (C{tcp:}) endpoint.  Keep the
    L{ServerTLS} (or the factory) to reload the certificates.

    @param reactor: The reactor (for the handshake timeout).
    @param listener_tls: The listener's TLS settings.
    @param path: Their configuration path, e.g. C{'listeners.web.tls'}.
    @param http_factory: The factory of the decrypted connections.
    @param challenge: Finds the certificate that answers an ACME
        TLS-ALPN-01 challenge for a name, or C{None}.
    @raises ConfigError: As L{CertificateStore.load}.
    """
    server_tls = ServerTLS(CertificateStore.load(listener_tls, path, challenge=challenge))
    factory = TLSServerFactory(reactor, server_tls, http_factory,
                               listener_tls.handshake_timeout)
    return factory, server_tls


# TLS to backends


def trust_root(filename: str, path: str):
    """
    The CAs of a PEM file, as the C{trustRoot} of Twisted's
    C{optionsForClientTLS}: what a group's C{ca} and the C{[acme]}
    section's C{ca} name.

    @param path: The configuration path of the file's name, for errors.
    @raises ConfigError: At C{path} when the file cannot be read or holds
        no (valid) certificate.
    """
    from twisted.internet import ssl

    return ssl.trustRootFromCertificates([
        ssl.Certificate.loadPEM(c.public_bytes(serialization.Encoding.PEM))
        for c in _certificates_file(filename, path, "CA file")
    ])


def client_creator(tls: UpstreamTLS, host: str, path: str):
    """
    The C{IOpenSSLClientConnectionCreator} for connections to one
    C{https://} backend.

    The server's certificate is always verified, by Twisted's
    C{optionsForClientTLS} with service_identity (the name or IP address in
    the server's URL, or C{server_name}, must be in the certificate),
    against the system's trusted CAs or the group's C{ca}; SNI carries the
    same name.  There is deliberately no way to skip verification: a
    failure is a 502 with reason C{upstream_tls_failed}, never a silent
    fallback.

    @param tls: The group's TLS settings.
    @param host: The backend's host (name or IP address literal).
    @param path: The configuration path of C{tls}, for errors, e.g.
        C{'upstreams.api.tls'}.
    @raises ConfigError: when a file cannot be read or parsed.
    """
    from twisted.internet import ssl

    kwargs: dict = {}
    if tls.ca:
        kwargs["trustRoot"] = trust_root(tls.ca, f"{path}.ca")
    if tls.client_cert:
        pem = _read(tls.client_cert, f"{path}.client_cert", "client certificate")
        if tls.client_key:
            pem += b"\n" + _read(tls.client_key, f"{path}.client_key", "client key")
        try:
            kwargs["clientCertificate"] = ssl.PrivateCertificate.loadPEM(pem)
        except Exception as e:
            raise ConfigError(
                f"{path}.client_cert", f"cannot load the client certificate and key: {e}",
            ) from None
    return ssl.optionsForClientTLS(tls.server_name or host, **kwargs)


def tls_failure(reason) -> Optional[str]:
    """
    Why a TLS connection to a backend failed, in a few words for the log,
    or C{None} when C{reason} is not a TLS failure.

    A failed handshake arrives as OpenSSL's C{SSL.Error} (an untrusted,
    expired or not yet valid certificate, no common protocol or cipher, a
    refused client certificate); a certificate that verifies but is for
    another host arrives as service_identity's C{VerificationError}, which
    Twisted raises after OpenSSL accepted the chain.

    @param reason: The L{Failure} a connection was lost with.
    @return: For example C{'the certificate is not for api.internal'} or
        C{'certificate verify failed (untrusted, expired or not yet
        valid)'}.
    """
    if reason.check(VerificationError):
        names = []
        for error in getattr(reason.value, "errors", ()):
            identity = getattr(error, "mismatched_id", None)
            name = getattr(identity, "hostname", None) or getattr(identity, "ip", None)
            if name is not None:
                names.append(name.decode("ascii", "replace") if isinstance(name, bytes)
                             else str(name))
        return f"the certificate is not for {' or '.join(names) or 'this backend'}"
    if reason.check(SSL.Error):
        # OpenSSL's error queue: [(library, function, reason), ...].
        queue = reason.value.args[0] if reason.value.args else None
        text = ""
        if isinstance(queue, list):
            text = "; ".join(str(entry[-1]) for entry in queue if entry)
        text = text or reason.getErrorMessage()
        if "certificate verify failed" in text:
            # OpenSSL does not say which check failed.
            text += " (untrusted, expired or not yet valid)"
        return text
    return None
