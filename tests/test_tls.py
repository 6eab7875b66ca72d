"""
Tests for TLS termination (L{twistproxy.tls}): loading and checking
certificates, choosing one by SNI, the contexts' settings, mutual TLS,
reload, the handshake timeout; handshakes with real OpenSSL over in-memory
transports, and one over loopback sockets.

The certificates are made here with C{cryptography}: the generator helpers
(L{_issue}, L{_PKI}) may move to a shared testing module later.
"""

from __future__ import annotations

import datetime
import os
from typing import List, Optional, Sequence, Tuple

from OpenSSL import SSL
from twisted.internet import defer, ssl
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IPushProducer,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from twistproxy.testing import cert_pem as _cert_pem
from twistproxy.testing import issue_certificate as _issue
from twistproxy.testing import key_pem as _key_pem
from twistproxy.testing import pem_bundle as _bundle
from twistproxy.config import Certificate, ConfigError, ListenerTLS
from twistproxy.tls import (
    ACME_TLS_ALPN, ALPN_PROTOCOLS, MODERN_CIPHERS, CertificateStore, ServerTLS, TLSServerFactory,
    _present, certificate_names, peer_subject, wrap_listener_factory,
)

PATH = "listeners.web.tls"

# ---------------------------------------------------------------------------
# Certificates


class _PKI:
    """
    The certificates the tests use, made once per test run.
    """

    def __init__(self):
        self.root = _issue("Test Root CA", ca=True, organization="Example")
        self.intermediate = _issue("Test Intermediate CA", ca=True, issuer=self.root)
        self.exact = _issue("www.example.com", ("www.example.com", "example.com"),
                            issuer=self.root)
        self.exact_renewed = _issue("www.example.com", ("www.example.com", "example.com"),
                                    issuer=self.root)
        self.wildcard = _issue("*.example.com", ("*.example.com",), issuer=self.root)
        self.fallback = _issue("fallback.test", ("fallback.test",), issuer=self.root)
        self.chained = _issue("chain.example.net", ("chain.example.net",),
                              issuer=self.intermediate)
        self.expired = _issue("old.example.com", ("old.example.com",), issuer=self.root,
                              expired=True)
        self.legacy = _issue("Legacy.Example.ORG")
        self.client_ca = _issue("Client CA", ca=True)
        self.alice = _issue("alice", organization="Example", issuer=self.client_ca,
                            client=True)
        self.stranger_ca = _issue("Stranger CA", ca=True)
        self.mallory = _issue("mallory", issuer=self.stranger_ca, client=True)


_pki_cache: List[_PKI] = []


def _pki() -> _PKI:
    if not _pki_cache:
        _pki_cache.append(_PKI())
    return _pki_cache[0]


def _write(test, data: bytes, name: Optional[str] = None) -> str:
    """
    Write C{data} to a new temporary file (or C{name} in an existing
    directory) and return its path.
    """
    path = test.mktemp() if name is None else name
    with open(path, "wb") as f:
        f.write(data)
    return path


def _tls(test, *bundles: bytes, **kwargs) -> ListenerTLS:
    """
    Listener TLS settings with one certificate file per bundle.
    """
    return ListenerTLS(certificates=tuple(Certificate(_write(test, b)) for b in bundles),
                       **kwargs)


def _standard(test, **kwargs) -> ListenerTLS:
    """
    The usual listener: the fallback (default), the wildcard, then the exact
    certificate.
    """
    pki = _pki()
    return _tls(test, _bundle(pki.fallback), _bundle(pki.wildcard), _bundle(pki.exact),
                **kwargs)


def _trust(*pairs):
    return ssl.trustRootFromCertificates(
        [ssl.Certificate.loadPEM(_cert_pem(p[1])) for p in pairs])


def _not_after(cert) -> datetime.datetime:
    value = getattr(cert, "not_valid_after_utc", None)
    if value is None:  # cryptography < 42
        value = cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)
    return value


def _names(x509_cert) -> Tuple[str, ...]:
    if hasattr(x509_cert, "to_cryptography"):
        x509_cert = x509_cert.to_cryptography()
    return certificate_names(x509_cert)


# ---------------------------------------------------------------------------
# In-memory connections


@implementer(IHandshakeListener)
class _Recorder(Protocol):
    """
    Records what happens to a connection.
    """

    def __init__(self):
        self.handshake = False
        self.subject: Optional[str] = None
        self.data = b""
        self.lost = None

    def handshakeCompleted(self):
        self.handshake = True
        self.subject = peer_subject(self.transport)

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        self.lost = reason


class _Echo(_Recorder):
    """
    Sends back what it receives.
    """

    def dataReceived(self, data):
        _Recorder.dataReceived(self, data)
        self.transport.write(data)


@implementer(IOpenSSLClientConnectionCreator)
class _Probe:
    """
    A client that accepts any certificate, to see which one is served.
    """

    def __init__(self, name: Optional[str], max_version: Optional[int] = None,
                 alpn: Sequence[bytes] = (), certificate=None):
        self.name = name
        self.context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        self.context.set_verify(SSL.VERIFY_NONE)
        if max_version is not None:
            self.context.set_max_proto_version(max_version)
        if alpn:
            self.context.set_alpn_protos(list(alpn))
        if certificate is not None:
            # As the proxy presents its own: pyOpenSSL before 24.3 (the
            # newest PyPy has wheels for) takes only its own X509 and PKey.
            _present(self.context, (certificate[1], certificate[0], ()))

    def clientConnectionForTLS(self, tlsProtocol):
        connection = SSL.Connection(self.context, None)
        if self.name is not None:
            connection.set_tlsext_host_name(self.name.encode("ascii"))
        return connection


class _Connection:
    """
    One in-memory TLS connection between a server factory and a client.
    """

    def __init__(self, server_factory, client_creator, clock):
        client_factory = TLSMemoryBIOFactory(
            client_creator, True, Factory.forProtocol(_Recorder), clock=clock)
        self.server = server_factory.buildProtocol(None)
        self.client = client_factory.buildProtocol(None)
        # The TLS protocols forget these when the connection is lost.
        self.app = self.server.wrappedProtocol
        self.peer = self.client.wrappedProtocol
        self.pump = iosim.connect(
            self.server, iosim.makeFakeServer(self.server),
            self.client, iosim.makeFakeClient(self.client), clock=clock)

    @property
    def served(self) -> Tuple[str, ...]:
        """
        The names of the certificate the client was shown.
        """
        return _names(self.client.getPeerCertificate())

    def echo(self, data: bytes) -> bytes:
        """
        Send C{data} and return what has come back so far.
        """
        self.client.write(data)
        self.pump.flush()
        return self.peer.data


class _Handshakes:
    """
    Helpers for tests of whole handshakes.
    """

    def serve(self, tls: ListenerTLS, clock=None, challenge=None):
        """
        A TLS server factory (echo) for C{tls} on a memory clock, with the
        TLS-ALPN-01 lookup C{challenge}.
        """
        self.clock = clock or MemoryReactorClock()
        self.factory, self.server_tls = wrap_listener_factory(
            self.clock, tls, PATH, Factory.forProtocol(_Echo), challenge=challenge)
        return self.factory

    def connect(self, creator) -> _Connection:
        return _Connection(self.factory, creator, self.clock)


# ---------------------------------------------------------------------------
# Loading


class LoadTests(SynchronousTestCase):
    """
    L{CertificateStore.load} reads, checks and describes certificates, and
    refuses bad ones with the configuration path of their entry.
    """

    def assertRefused(self, tls: ListenerTLS, path: str, *words: str) -> ConfigError:
        e = self.assertRaises(ConfigError, CertificateStore.load, tls, PATH)
        self.assertEqual(e.path, path)
        for word in words:
            self.assertIn(word, e.problem)
        return e

    def test_bundle_loaded(self):
        """
        A file with a key and a certificate gives one certificate, described
        by its source, names, subject, expiry and chain length.
        """
        pki = _pki()
        tls = _tls(self, _bundle(pki.exact))
        store = CertificateStore.load(tls, PATH)
        (served,) = store.certificates
        self.assertIs(store.default, served)
        self.assertEqual(served.source, tls.certificates[0].cert)
        self.assertEqual(served.path, PATH + ".certificates[0]")
        self.assertEqual(served.names, ("www.example.com", "example.com"))
        self.assertEqual(served.subject, "CN=www.example.com")
        self.assertEqual(served.not_after, _not_after(pki.exact[1]))
        self.assertEqual(served.chain_length, 1)

    def test_separate_key_file(self):
        """
        A C{{cert, key}} entry reads the key from its own file, whichever
        order the PEM blocks come in.
        """
        pki = _pki()
        cert = _write(self, _cert_pem(pki.chained[1], pki.intermediate[1]))
        key = _write(self, _key_pem(pki.chained[0]))
        store = CertificateStore.load(ListenerTLS((Certificate(cert, key),)), PATH)
        self.assertEqual(store.default.names, ("chain.example.net",))
        self.assertEqual(store.default.chain_length, 2)

    def test_directory(self):
        """
        A directory stands for every C{*.pem} file in it, sorted by name;
        other files are ignored, and a C{default} pointing at the directory
        means its first file.
        """
        pki = _pki()
        directory = self.mktemp()
        os.mkdir(directory)
        _write(self, _bundle(pki.wildcard), os.path.join(directory, "b.pem"))
        _write(self, _bundle(pki.exact), os.path.join(directory, "a.pem"))
        _write(self, b"not a certificate", os.path.join(directory, "README"))
        fallback = _write(self, _bundle(pki.fallback))
        tls = ListenerTLS((Certificate(fallback), Certificate(directory)), default=1)
        store = CertificateStore.load(tls, PATH)
        self.assertEqual(
            [os.path.basename(c.source) for c in store.certificates[1:]], ["a.pem", "b.pem"])
        self.assertEqual([c.path for c in store.certificates],
                         [PATH + ".certificates[0]"] + [PATH + ".certificates[1]"] * 2)
        self.assertEqual(os.path.basename(store.default.source), "a.pem")

    def test_empty_directory(self):
        """
        A directory without a single C{*.pem} file is refused.
        """
        directory = self.mktemp()
        os.mkdir(directory)
        self.assertRefused(ListenerTLS((Certificate(directory),)),
                           PATH + ".certificates[0]", "no *.pem")

    def test_missing_file(self):
        """
        A file that cannot be read is refused at the path of its entry,
        with the operating system's reason.
        """
        pki = _pki()
        tls = ListenerTLS((Certificate(_write(self, _bundle(pki.exact))),
                           Certificate(self.mktemp())))
        self.assertRefused(tls, PATH + ".certificates[1]", "cannot read", "No such file")

    def test_missing_key_file(self):
        """
        A key file that cannot be read is refused at the path of its entry.
        """
        pki = _pki()
        tls = ListenerTLS((Certificate(_write(self, _cert_pem(pki.exact[1])), self.mktemp()),))
        self.assertRefused(tls, PATH + ".certificates[0]", "cannot read the key file")

    def test_no_certificate(self):
        """
        A file that holds a key but no certificate is refused.
        """
        pki = _pki()
        self.assertRefused(_tls(self, _key_pem(pki.exact[0])),
                           PATH + ".certificates[0]", "no PEM certificate")

    def test_invalid_certificate(self):
        """
        A certificate block that does not parse is refused, saying which.
        """
        pki = _pki()
        bad = (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
        self.assertRefused(_tls(self, _bundle(pki.exact) + bad),
                           PATH + ".certificates[0]", "certificate 2 is not valid")

    def test_no_key(self):
        """
        A certificate without its key (in the file, or a key file) is
        refused, pointing at the way to name a key file.
        """
        pki = _pki()
        self.assertRefused(_tls(self, _cert_pem(pki.exact[1])),
                           PATH + ".certificates[0]", "no PEM private key", "key = ")

    def test_mismatched_key(self):
        """
        A key that belongs to none of the file's certificates is refused.
        """
        pki = _pki()
        cert = _write(self, _cert_pem(pki.exact[1]))
        key = _write(self, _key_pem(pki.wildcard[0]))
        self.assertRefused(ListenerTLS((Certificate(cert, key),)),
                           PATH + ".certificates[0]", "does not match")

    def test_chain_out_of_order(self):
        """
        When the key belongs to a later certificate of the file, the error
        says the server's certificate must come first.
        """
        pki = _pki()
        pem = _key_pem(pki.chained[0]) + _cert_pem(pki.intermediate[1], pki.chained[1])
        self.assertRefused(_tls(self, pem), PATH + ".certificates[0]",
                           "certificate 2", "first")

    def test_two_keys(self):
        """
        A file with two private keys is ambiguous and refused.
        """
        pki = _pki()
        pem = _bundle(pki.exact) + _key_pem(pki.wildcard[0])
        self.assertRefused(_tls(self, pem), PATH + ".certificates[0]", "2 private keys")

    def test_encrypted_key(self):
        """
        An encrypted private key is refused: there is no passphrase setting.
        """
        pki = _pki()
        pem = _key_pem(pki.exact[0], b"secret") + _cert_pem(pki.exact[1])
        self.assertRefused(_tls(self, pem), PATH + ".certificates[0]", "encrypted")

    def test_expired(self):
        """
        An expired certificate is refused (clients would refuse it), with
        its names and the date it expired.
        """
        pki = _pki()
        tls = _tls(self, _bundle(pki.exact), _bundle(pki.expired))
        e = self.assertRefused(tls, PATH + ".certificates[1]", "old.example.com", "expired on")
        self.assertIn(_not_after(pki.expired[1]).strftime("%Y-%m-%d"), e.problem)

    def test_expiry_against_now(self):
        """
        Expiry is checked against C{now} when given: a certificate valid
        today is refused three days from now.
        """
        pki = _pki()
        later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=3)
        tls = _tls(self, _bundle(pki.exact))
        CertificateStore.load(tls, PATH)
        e = self.assertRaises(ConfigError, CertificateStore.load, tls, PATH,
                              now=later.timestamp())
        self.assertIn("expired", e.problem)

    def test_client_ca_missing(self):
        """
        A client CA file that cannot be read is refused at C{client_ca}.
        """
        pki = _pki()
        self.assertRefused(_tls(self, _bundle(pki.exact), client_ca=self.mktemp()),
                           PATH + ".client_ca", "cannot read")

    def test_client_ca_without_certificate(self):
        """
        A client CA file without a certificate is refused at C{client_ca}.
        """
        pki = _pki()
        self.assertRefused(
            _tls(self, _bundle(pki.exact), client_ca=_write(self, b"nothing here\n")),
            PATH + ".client_ca", "no PEM certificate")

    def test_bad_ciphers(self):
        """
        A cipher list OpenSSL accepts nothing of is refused at C{ciphers}.
        """
        pki = _pki()
        self.assertRefused(_tls(self, _bundle(pki.exact), ciphers="NOT-A-CIPHER"),
                           PATH + ".ciphers", "NOT-A-CIPHER")

    def test_unusable_ciphers(self):
        """
        A cipher list OpenSSL accepts but cannot negotiate TLS 1.2 with
        (C{NULL-MD5}, below its security level; pre-shared-key suites) is
        refused at C{ciphers}, also on a listener asking for client
        certificates; with C{min_version = "1.3"} it does not matter.
        """
        pki = _pki()
        client_ca = _write(self, _cert_pem(pki.client_ca[1]))
        for ciphers in ("NULL-MD5", "PSK"):
            with self.subTest(ciphers=ciphers):
                self.assertRefused(_tls(self, _bundle(pki.exact), ciphers=ciphers),
                                   PATH + ".ciphers", ciphers, "no TLS 1.2 client can connect")
        CertificateStore.load(_tls(self, _bundle(pki.exact), ciphers="NULL-MD5",
                                   min_version="1.3"), PATH)
        CertificateStore.load(_tls(self, _bundle(pki.exact), ciphers="ECDHE-ECDSA-AES128-SHA",
                                   client_ca=client_ca), PATH)

    def test_ciphers_for_another_key(self):
        """
        Ciphers that only serve RSA certificates are refused for a listener
        with an ECDSA one, naming its file.
        """
        pki = _pki()
        tls = _tls(self, _bundle(pki.exact), ciphers="ECDHE-RSA-AES128-GCM-SHA256")
        e = self.assertRefused(tls, PATH + ".ciphers", "no TLS 1.2 client can connect")
        self.assertIn(tls.certificates[0].cert, e.problem)

    def test_insecure_cipher_chosen(self):
        """
        A list whose first usable cipher has no authentication (or no
        encryption), made usable by lowering OpenSSL's security level, is
        refused.
        """
        pki = _pki()
        for ciphers, lacks in [("@SECLEVEL=0:aNULL:ECDHE-ECDSA-AES128-SHA", "authentication"),
                               ("@SECLEVEL=0:ECDHE-ECDSA-NULL-SHA", "encryption")]:
            with self.subTest(ciphers=ciphers):
                self.assertRefused(_tls(self, _bundle(pki.exact), ciphers=ciphers),
                                   PATH + ".ciphers", "has no " + lacks)

    def test_default_out_of_range(self):
        """
        A C{default} (built in code) that is no certificate's index is
        refused at C{default}.
        """
        pki = _pki()
        self.assertRefused(_tls(self, _bundle(pki.exact), default=1), PATH + ".default")


class NameTests(SynchronousTestCase):
    """
    Which names a certificate is for, and which certificate a name gets.
    """

    def test_subject_alt_names(self):
        """
        The names are the subjectAltName DNS entries, lower-cased and
        without trailing dots; the common name is not one of them.
        """
        _, cert = _issue("ignored.example.com", ("WWW.Example.COM.", "api.example.com"))
        self.assertEqual(certificate_names(cert), ("www.example.com", "api.example.com"))

    def test_common_name_fallback(self):
        """
        Only a certificate without a subjectAltName falls back to its common
        name.
        """
        self.assertEqual(certificate_names(_pki().legacy[1]), ("legacy.example.org",))

    def test_names_not_file_names(self):
        """
        A certificate is chosen by the names in it, not by its file's name.
        """
        pki = _pki()
        directory = self.mktemp()
        os.mkdir(directory)
        _write(self, _bundle(pki.fallback), os.path.join(directory, "0-default.pem"))
        _write(self, _bundle(pki.exact), os.path.join(directory, "example.org.pem"))
        store = CertificateStore.load(ListenerTLS((Certificate(directory),)), PATH)
        self.assertEqual(store.certificate_for("www.example.com").names[0], "www.example.com")
        self.assertIs(store.certificate_for("example.org"), store.default)

    def test_exact_wildcard_default(self):
        """
        Exact names win over wildcards whatever the order of the
        certificates; a wildcard covers exactly one more label; anything
        else, and no name at all, gets the default.
        """
        store = CertificateStore.load(_standard(self), PATH)
        fallback, wildcard, exact = store.certificates
        for name, expected in [
            ("www.example.com", exact),
            ("example.com", exact),
            ("WWW.Example.Com.", exact),
            (b"www.example.com", exact),
            ("a.example.com", wildcard),
            (b"A.EXAMPLE.COM", wildcard),
            ("a.b.example.com", fallback),
            ("example.org", fallback),
            ("com", fallback),
            (".example.com", fallback),
            ("", fallback),
            (None, fallback),
            ("fallback.test", fallback),
            (b"\xff.example.com", fallback),
        ]:
            self.assertIs(store.certificate_for(name), expected, name)
            self.assertIs(store.context_for(name), expected.context, name)

    def test_worked_example(self):
        """
        The example of docs/tls.rst: a wildcard certificate (also for the
        bare domain) listed first, and an exact one with its key apart,
        give the certificates its table says.
        """
        root = _pki().root
        wildcard = _issue("*.example.com", ("*.example.com", "example.com"), issuer=root)
        org = _issue("example.org", ("example.org", "www.example.org"), issuer=root)
        tls = ListenerTLS((
            Certificate(_write(self, _bundle(wildcard))),
            Certificate(_write(self, _cert_pem(org[1])), _write(self, _key_pem(org[0]))),
        ))
        store = CertificateStore.load(tls, PATH)
        first, second = store.certificates
        for name, expected in [
            ("shop.example.com", first), ("example.com", first),
            ("www.example.org", second), ("example.org", second),
            ("a.b.example.com", first), ("example.net", first), (None, first),
        ]:
            self.assertIs(store.certificate_for(name), expected, name)

    def test_default_index(self):
        """
        C{default} picks the certificate for clients without a known name.
        """
        store = CertificateStore.load(_standard(self, default=2), PATH)
        self.assertEqual(store.certificate_for(None).names, ("www.example.com", "example.com"))
        self.assertEqual(store.certificate_for("nowhere.test").names[0], "www.example.com")

    def test_first_certificate_wins(self):
        """
        When two certificates have the same name, the first one listed is
        served for it.
        """
        pki = _pki()
        store = CertificateStore.load(
            _tls(self, _bundle(pki.exact), _bundle(pki.exact_renewed)), PATH)
        self.assertIs(store.certificate_for("www.example.com"), store.certificates[0])


class ContextTests(SynchronousTestCase):
    """
    Every context a listener uses has the same secure settings.
    """

    def contexts(self, **kwargs) -> List[SSL.Context]:
        store = CertificateStore.load(_standard(self, **kwargs), PATH)
        return [store.front] + [c.context for c in store.certificates]

    def test_options(self):
        """
        Server cipher preference, no compression and no renegotiation are
        on; session tickets are not turned off.
        """
        for ctx in self.contexts():
            options = ctx.set_options(0)
            self.assertTrue(options & SSL.OP_CIPHER_SERVER_PREFERENCE)
            self.assertTrue(options & SSL.OP_NO_COMPRESSION)
            self.assertTrue(options & SSL.OP_NO_RENEGOTIATION)
            self.assertFalse(options & SSL.OP_NO_TICKET)

    def tls12_ciphers(self, ctx: SSL.Context) -> List[str]:
        names = SSL.Connection(ctx, None).get_cipher_list()
        return [n for n in names if not n.startswith("TLS_")]

    def test_modern_ciphers(self):
        """
        Without C{ciphers}, TLS 1.2 offers exactly the ECDHE AEAD suites.
        """
        for ctx in self.contexts():
            self.assertEqual(sorted(self.tls12_ciphers(ctx)), sorted(MODERN_CIPHERS.split(":")))

    def test_own_ciphers(self):
        """
        C{ciphers} replaces the TLS 1.2 list.
        """
        for ctx in self.contexts(ciphers="ECDHE-ECDSA-AES256-GCM-SHA384"):
            self.assertEqual(self.tls12_ciphers(ctx), ["ECDHE-ECDSA-AES256-GCM-SHA384"])

    def test_creator_interface(self):
        """
        L{ServerTLS} provides Twisted's server connection creator interface.
        """
        store = CertificateStore.load(_standard(self), PATH)
        self.assertTrue(verifyObject(IOpenSSLServerConnectionCreator, ServerTLS(store)))
        self.assertEqual(store.alpn, ALPN_PROTOCOLS)


class WrapTests(SynchronousTestCase):
    """
    L{wrap_listener_factory} builds a listener's TLS from its settings.
    """

    def test_wrapped(self):
        """
        The result is a L{TLSServerFactory} on the given reactor, around the
        given factory, with the listener's handshake timeout and a
        L{ServerTLS} holding its certificates.
        """
        clock = MemoryReactorClock()
        inner = Factory.forProtocol(_Echo)
        factory, server_tls = wrap_listener_factory(
            clock, _standard(self, handshake_timeout=7), PATH, inner)
        self.assertIsInstance(factory, TLSServerFactory)
        self.assertIs(factory.wrappedFactory, inner)
        self.assertIs(factory.reactor, clock)
        self.assertIs(factory.server_tls, server_tls)
        self.assertEqual(factory.handshake_timeout, 7)
        self.assertEqual(len(server_tls.store.certificates), 3)

    def test_refused(self):
        """
        A bad certificate is a L{ConfigError} with its path; nothing is
        built.
        """
        e = self.assertRaises(
            ConfigError, wrap_listener_factory, MemoryReactorClock(),
            ListenerTLS((Certificate(self.mktemp()),)), PATH, Factory())
        self.assertEqual(e.path, PATH + ".certificates[0]")


# ---------------------------------------------------------------------------
# Handshakes in memory


class SNITests(_Handshakes, SynchronousTestCase):
    """
    Real handshakes pick the certificate by the client's SNI name.
    """

    def test_names(self):
        """
        Each client is shown the certificate for the name it asked for: an
        exact name, else a wildcard, else the default; and the connection
        carries data.
        """
        self.serve(_standard(self))
        for name, expected in [
            ("www.example.com", "www.example.com"),
            ("example.com", "www.example.com"),
            ("shop.example.com", "*.example.com"),
            ("a.b.example.com", "fallback.test"),
            ("unknown.test", "fallback.test"),
            (None, "fallback.test"),
        ]:
            c = self.connect(_Probe(name))
            self.assertTrue(c.app.handshake, name)
            self.assertEqual(c.served[0], expected, name)
            self.assertEqual(c.echo(b"ping"), b"ping")

    def test_verifying_client(self):
        """
        A client that verifies the certificate against the root CA and the
        name (Twisted's C{optionsForClientTLS}) accepts the wildcard
        certificate for a name under it.
        """
        self.serve(_standard(self))
        c = self.connect(ssl.optionsForClientTLS(
            "shop.example.com", trustRoot=_trust(_pki().root)))
        self.assertTrue(c.peer.handshake)
        self.assertIsNone(c.peer.lost)
        self.assertEqual(c.echo(b"ping"), b"ping")

    def test_chain_served(self):
        """
        The intermediate that follows the certificate in its file is sent
        along: a client that trusts only the root verifies the chain.
        """
        pki = _pki()
        self.serve(_tls(self, _bundle(pki.fallback), _bundle(pki.chained, pki.intermediate)))
        c = self.connect(ssl.optionsForClientTLS(
            "chain.example.net", trustRoot=_trust(pki.root)))
        self.assertTrue(c.peer.handshake)
        self.assertIsNone(c.peer.lost)
        self.assertEqual(len(c.client.getHandle().get_peer_cert_chain()), 2)

    def test_chain_missing(self):
        """
        Without the intermediate the same client refuses: the chain test
        above depends on it.
        """
        pki = _pki()
        self.serve(_tls(self, _bundle(pki.fallback), _bundle(pki.chained)))
        c = self.connect(ssl.optionsForClientTLS(
            "chain.example.net", trustRoot=_trust(pki.root)))
        self.assertFalse(c.peer.handshake)
        self.assertIsNotNone(c.peer.lost)

    def test_alpn(self):
        """
        ALPN selects h2 when the client offers it (server preference),
        http/1.1 for a client that offers only that, and the handshake goes
        on without ALPN when the client offers only protocols we lack.
        """
        self.serve(_standard(self))
        c = self.connect(_Probe("www.example.com", alpn=[b"http/1.1", b"h2"]))
        self.assertEqual(c.server.negotiatedProtocol, b"h2")
        self.assertEqual(c.client.negotiatedProtocol, b"h2")
        c = self.connect(_Probe("www.example.com", alpn=[b"http/1.1"]))
        self.assertEqual(c.server.negotiatedProtocol, b"http/1.1")
        c = self.connect(_Probe("www.example.com", alpn=[b"spdy/3"]))
        self.assertTrue(c.app.handshake)
        self.assertIsNone(c.server.negotiatedProtocol)


class VersionTests(_Handshakes, SynchronousTestCase):
    """
    The minimum TLS version holds in real handshakes.
    """

    def test_tls12_allowed(self):
        """
        By default a TLS 1.2 client is served, with a modern cipher.
        """
        self.serve(_standard(self))
        c = self.connect(_Probe("www.example.com", max_version=SSL.TLS1_2_VERSION))
        self.assertTrue(c.app.handshake)
        handle = c.client.getHandle()
        self.assertEqual(handle.get_protocol_version_name(), "TLSv1.2")
        self.assertIn(handle.get_cipher_name(), MODERN_CIPHERS.split(":"))

    def test_tls11_refused(self):
        """
        A client that cannot go above TLS 1.1 is refused.
        """
        self.serve(_standard(self))
        probe = _Probe("www.example.com", max_version=SSL.TLS1_1_VERSION)
        probe.context.set_min_proto_version(SSL.TLS1_VERSION)
        probe.context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
        c = self.connect(probe)
        self.assertFalse(c.app.handshake)
        self.assertIsNotNone(c.app.lost)

    def test_tls13_minimum(self):
        """
        With C{min_version = "1.3"} a TLS 1.2 client is refused, a TLS 1.3
        one served.
        """
        self.serve(_standard(self, min_version="1.3"))
        c = self.connect(_Probe("www.example.com", max_version=SSL.TLS1_2_VERSION))
        self.assertFalse(c.app.handshake)
        self.assertIsNotNone(c.app.lost)
        c = self.connect(_Probe("www.example.com"))
        self.assertTrue(c.app.handshake)
        self.assertEqual(c.client.getHandle().get_protocol_version_name(), "TLSv1.3")


class MutualTLSTests(_Handshakes, SynchronousTestCase):
    """
    With C{client_ca}, clients must present a certificate it signed.
    """

    def serve_mtls(self):
        pki = _pki()
        self.serve(_standard(self, client_ca=_write(self, _cert_pem(pki.client_ca[1]))))

    def test_good_client_certificate(self):
        """
        A client certificate signed by the client CA is accepted, and its
        subject is available as an RFC 4514 string.
        """
        self.serve_mtls()
        c = self.connect(_Probe("www.example.com", certificate=_pki().alice))
        self.assertTrue(c.app.handshake)
        self.assertEqual(c.app.subject, "CN=alice,O=Example")
        self.assertEqual(peer_subject(c.server), "CN=alice,O=Example")
        self.assertEqual(c.echo(b"ping"), b"ping")

    def test_good_client_certificate_tls12(self):
        """
        The same over TLS 1.2, where the certificate comes before the
        handshake completes on both sides.
        """
        self.serve_mtls()
        c = self.connect(_Probe("shop.example.com", max_version=SSL.TLS1_2_VERSION,
                                certificate=_pki().alice))
        self.assertEqual(c.app.subject, "CN=alice,O=Example")

    def test_no_client_certificate(self):
        """
        A client without a certificate is refused: the server's handshake
        never completes and the connection is closed.
        """
        self.serve_mtls()
        c = self.connect(_Probe("www.example.com"))
        self.assertFalse(c.app.handshake)
        self.assertIsNotNone(c.app.lost)
        self.assertEqual(c.app.data, b"")
        self.assertIsNotNone(c.peer.lost)

    def test_stranger_client_certificate(self):
        """
        A client certificate signed by another CA is refused.
        """
        self.serve_mtls()
        c = self.connect(_Probe("www.example.com", certificate=_pki().mallory))
        self.assertFalse(c.app.handshake)
        self.assertIsNotNone(c.app.lost)

    def test_no_subject_without_mtls(self):
        """
        Without C{client_ca} no client certificate is asked for, so there is
        no subject, even from a client that has one; nor on a transport
        that is not TLS.
        """
        self.serve(_standard(self))
        c = self.connect(_Probe("www.example.com", certificate=_pki().alice))
        self.assertTrue(c.app.handshake)
        self.assertIsNone(c.app.subject)
        self.assertIsNone(peer_subject(iosim.makeFakeServer(Protocol())))
        self.assertIsNone(peer_subject(object()))


class ACMEChallengeTests(_Handshakes, SynchronousTestCase):
    """
    A handshake that offers C{acme-tls/1} for a name with a pending
    TLS-ALPN-01 challenge is shown the challenge certificate (RFC 8737);
    every other handshake is served as before.
    """

    def setUp(self):
        self.challenge = _issue("www.example.com", ("www.example.com",))
        self.asked: List[str] = []
        self.serve(_standard(self), challenge=self.lookup)

    def lookup(self, name: str):
        self.asked.append(name)
        if name == "www.example.com":
            return self.challenge[1], self.challenge[0]
        return None

    def serial(self, c: _Connection) -> int:
        return c.client.getPeerCertificate().to_cryptography().serial_number

    def test_challenge_answered(self):
        """
        A client with the name in SNI offering only C{acme-tls/1} (the
        CA's validation) gets the challenge certificate and C{acme-tls/1},
        whatever case it wrote the name in.
        """
        c = self.connect(_Probe("WWW.example.com", alpn=[ACME_TLS_ALPN]))
        self.assertTrue(c.peer.handshake)
        self.assertEqual(c.client.negotiatedProtocol, ACME_TLS_ALPN)
        self.assertEqual(self.serial(c), self.challenge[1].serial_number)
        self.assertEqual(self.asked, ["www.example.com"])

    def test_normal_traffic_unaffected(self):
        """
        Clients that do not offer C{acme-tls/1} get the usual certificate
        and protocol, for the challenged name too, and the lookup is not
        even asked.
        """
        c = self.connect(_Probe("www.example.com", alpn=[b"h2", b"http/1.1"]))
        self.assertEqual(c.client.negotiatedProtocol, b"h2")
        self.assertEqual(self.serial(c), _pki().exact[1].serial_number)
        c = self.connect(_Probe("www.example.com"))
        self.assertEqual(self.serial(c), _pki().exact[1].serial_number)
        self.assertEqual(self.asked, [])

    def test_no_pending_challenge(self):
        """
        C{acme-tls/1} for a name without a pending challenge is not
        chosen, and the usual certificate is served.
        """
        c = self.connect(_Probe("shop.example.com", alpn=[ACME_TLS_ALPN]))
        self.assertTrue(c.peer.handshake)
        self.assertIsNone(c.client.negotiatedProtocol)
        self.assertEqual(self.serial(c), _pki().wildcard[1].serial_number)

    def test_not_over_tls12(self):
        """
        Over TLS 1.2 the certificate is chosen before ALPN, so the
        challenge is not answered there (the handshake goes on with the
        usual certificate).
        """
        c = self.connect(_Probe("www.example.com", alpn=[ACME_TLS_ALPN],
                                max_version=SSL.TLS1_2_VERSION))
        self.assertTrue(c.peer.handshake)
        self.assertIsNone(c.client.negotiatedProtocol)
        self.assertEqual(self.serial(c), _pki().exact[1].serial_number)

    def test_mutual_tls_listener(self):
        """
        On a listener that requires client certificates the CA, which has
        none, is still answered.
        """
        pki = _pki()
        self.serve(_standard(self, client_ca=_write(self, _cert_pem(pki.client_ca[1]))),
                   challenge=self.lookup)
        c = self.connect(_Probe("www.example.com", alpn=[ACME_TLS_ALPN]))
        self.assertTrue(c.peer.handshake)
        self.assertEqual(self.serial(c), self.challenge[1].serial_number)

    def test_kept_across_reload(self):
        """
        A certificate reload keeps the lookup.
        """
        self.server_tls.reload(_standard(self), PATH)
        c = self.connect(_Probe("www.example.com", alpn=[ACME_TLS_ALPN]))
        self.assertEqual(self.serial(c), self.challenge[1].serial_number)


class ReloadTests(_Handshakes, SynchronousTestCase):
    """
    A reload changes the certificates of new handshakes only, and a broken
    new certificate changes nothing.
    """

    def serial(self, c: _Connection) -> int:
        return c.client.getPeerCertificate().to_cryptography().serial_number

    def test_reload(self):
        """
        After a reload, new handshakes get the new certificate while a
        connection made before carries on with the old one.
        """
        pki = _pki()
        self.serve(_tls(self, _bundle(pki.exact)))
        before = self.connect(_Probe("www.example.com"))
        self.assertEqual(self.serial(before), pki.exact[1].serial_number)
        self.server_tls.reload(_tls(self, _bundle(pki.exact_renewed)), PATH)
        after = self.connect(_Probe("www.example.com"))
        self.assertEqual(self.serial(after), pki.exact_renewed[1].serial_number)
        self.assertEqual(before.echo(b"still here"), b"still here")
        self.assertEqual(self.serial(before), pki.exact[1].serial_number)

    def test_broken_reload(self):
        """
        A reload with a broken certificate raises L{ConfigError} and keeps
        the current certificates for new handshakes.
        """
        pki = _pki()
        self.serve(_tls(self, _bundle(pki.exact)))
        store = self.server_tls.store
        broken = _tls(self, _bundle(pki.wildcard), _cert_pem(pki.exact_renewed[1]))
        e = self.assertRaises(ConfigError, self.server_tls.reload, broken, PATH)
        self.assertEqual(e.path, PATH + ".certificates[1]")
        self.assertIs(self.server_tls.store, store)
        c = self.connect(_Probe("www.example.com"))
        self.assertEqual(self.serial(c), pki.exact[1].serial_number)

    def test_factory_reload(self):
        """
        L{TLSServerFactory.reload} reloads the certificates and takes the
        new handshake timeout; a failed one changes neither.
        """
        pki = _pki()
        factory = self.serve(_tls(self, _bundle(pki.exact)))
        self.assertRaises(ConfigError, factory.reload,
                          _tls(self, _bundle(pki.expired), handshake_timeout=3), PATH)
        self.assertEqual(factory.handshake_timeout, 10.0)
        factory.reload(_tls(self, _bundle(pki.exact_renewed), handshake_timeout=3), PATH)
        self.assertEqual(factory.handshake_timeout, 3)
        c = self.connect(_Probe("www.example.com"))
        self.assertEqual(self.serial(c), pki.exact_renewed[1].serial_number)


class HandshakeTimeoutTests(_Handshakes, SynchronousTestCase):
    """
    A connection that does not complete its handshake in time is closed.
    """

    def silent(self):
        """
        A connection whose client never says anything.
        """
        protocol = self.factory.buildProtocol(None)
        transport = iosim.makeFakeServer(protocol)
        protocol.makeConnection(transport)
        return protocol.wrappedProtocol, transport

    def test_silent_connection_aborted(self):
        """
        A silent connection is aborted once C{handshake_timeout} has passed
        on the reactor's clock, not before, and counted.
        """
        self.serve(_standard(self, handshake_timeout=5))
        app, transport = self.silent()
        self.clock.advance(4.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.factory.handshake_timeouts, 1)
        transport.reportDisconnect()
        self.assertIsNotNone(app.lost)
        self.assertEqual(len(self.factory.deadlines), 0)

    def test_completed_handshake_not_aborted(self):
        """
        A connection whose handshake completed is left alone however long
        it then stays quiet, and no longer watched.
        """
        self.serve(_standard(self, handshake_timeout=5))
        c = self.connect(_Probe("www.example.com"))
        self.assertEqual(len(self.factory.deadlines), 0)
        self.clock.advance(60)
        self.assertFalse(c.server.transport.disconnecting)
        self.assertEqual(c.echo(b"ping"), b"ping")
        self.assertEqual(self.factory.handshake_timeouts, 0)

    def test_many_idle_connections(self):
        """
        A thousand silent connections do not keep a real client from
        completing its handshake, and are all closed on time.
        """
        self.serve(_standard(self, handshake_timeout=5))
        idle = [self.silent() for _ in range(1000)]
        c = self.connect(_Probe("shop.example.com"))
        self.assertEqual(c.served, ("*.example.com",))
        self.clock.advance(5)
        self.assertTrue(all(transport.disconnecting for _, transport in idle))
        self.assertFalse(c.server.transport.disconnecting)
        self.assertEqual(self.factory.handshake_timeouts, 1000)


class CoalescedWritesTests(_Handshakes, SynchronousTestCase):
    """
    L{TLSServerProtocol.coalesce_writes}: what is written in one reactor
    turn goes to OpenSSL as one write at its end.
    """

    def setUp(self):
        self.serve(_standard(self))
        self.c = self.connect(_Probe("www.example.com"))
        self.c.server.coalesce_writes()
        self.writes = []
        write = TLSMemoryBIOProtocol.write

        def counted(protocol, data):
            self.writes.append(data)
            write(protocol, data)

        self.patch(TLSMemoryBIOProtocol, "write", counted)

    def test_one_write_per_turn(self):
        """
        Three writes in a turn are one write to OpenSSL once the turn is
        over; the next turn's writes are another.
        """
        app = self.c.app
        for data in (b"a", b"b", b"c"):
            app.transport.write(data)
        self.assertEqual(self.writes, [])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.c.pump.flush()
        self.assertEqual(self.c.peer.data, b"abc")
        app.transport.writeSequence([b"d", b"e"])
        self.c.pump.flush()
        self.assertEqual(self.writes, [b"abc", b"de"])
        self.assertEqual(self.c.peer.data, b"abcde")

    def test_close_sends_first_abort_drops(self):
        """
        Closing the connection sends what waits, then closes; aborting it
        drops what waits.  Either way no call is left on the reactor.
        """
        for end, sent in (("loseConnection", b"last"), ("abortConnection", b"")):
            c = self.connect(_Probe("www.example.com"))
            c.server.coalesce_writes()
            c.app.transport.write(b"last")
            getattr(c.app.transport, end)()
            self.assertEqual(self.clock.getDelayedCalls(), [], end)
            c.pump.flush()
            self.assertEqual(c.peer.data, sent, end)
            self.assertIsNotNone(c.peer.lost, end)

    def test_producer_writes_after_close(self):
        """
        While a producer is registered, writes after C{loseConnection} are
        sent too, before the TLS shutdown that unregistering it starts.
        """
        app = self.c.app
        app.transport.registerProducer(_Paused(), True)
        app.transport.write(b"a")
        app.transport.loseConnection()
        app.transport.write(b"b")
        app.transport.unregisterProducer()
        self.c.pump.flush()
        self.assertEqual(self.c.peer.data, b"ab")
        self.assertIsNotNone(self.c.peer.lost)

    def test_lost_drops(self):
        """
        A connection lost underneath drops what waits, and its call.
        """
        app = self.c.app
        app.transport.write(b"never")
        self.c.server.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.writes, [])


@implementer(IPushProducer)
class _Paused:
    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        pass


# ---------------------------------------------------------------------------
# Over loopback


class _Once(Protocol):
    """
    Sends a line, and closes once it is echoed; C{done} fires with the
    served certificate's names.
    """

    def __init__(self):
        self.done = defer.Deferred()
        self.names = None

    def connectionMade(self):
        self.transport.write(b"hello\n")

    def dataReceived(self, data):
        self.names = _names(self.transport.getPeerCertificate())
        self.transport.loseConnection()

    def connectionLost(self, reason):
        self.done.callback(self.names)


class _TrackedEcho(_Echo):
    def connectionLost(self, reason):
        _Echo.connectionLost(self, reason)
        self.factory.closed.append(reason)
        for waiter in self.factory.waiters:
            waiter.callback(None)
        self.factory.waiters = []


class LoopbackTests(TestCase):
    """
    One end-to-end check with the real reactor and sockets.
    """

    timeout = 10

    @defer.inlineCallbacks
    def test_sni_over_loopback(self):
        """
        A TLS client connecting over 127.0.0.1 gets, for each of two names,
        the certificate for that name, verified against the root CA.
        """
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS

        pki = _pki()
        echo = Factory.forProtocol(_TrackedEcho)
        echo.closed, echo.waiters = [], []
        factory, _ = wrap_listener_factory(
            reactor, _standard(self, handshake_timeout=5), PATH, echo)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        address = port.getHost()
        seen = []
        for name in ("www.example.com", "shop.example.com"):
            endpoint = wrapClientTLS(
                ssl.optionsForClientTLS(name, trustRoot=_trust(pki.root)),
                TCP4ClientEndpoint(reactor, "127.0.0.1", address.port, timeout=5))
            protocol = yield endpoint.connect(Factory.forProtocol(_Once))
            seen.append((yield protocol.done))
        while len(echo.closed) < 2:
            waiter = defer.Deferred()
            echo.waiters.append(waiter)
            yield waiter
        self.assertEqual(seen, [("www.example.com", "example.com"), ("*.example.com",)])
        self.assertEqual(factory.handshake_timeouts, 0)
