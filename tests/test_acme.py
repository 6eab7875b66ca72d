"""
Tests for L{twistproxy.acme}: the C{[acme]} settings, the storage of the
certificates, the HTTP-01 answers and the renewal schedule (on a fake
clock).
"""

from __future__ import annotations

import datetime
import os
import stat
from typing import Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from twistproxy import build
from twistproxy.acme import store
from twistproxy.acme.challenges import ACME_IDENTIFIER, ChallengeFiles, Challenges
from twistproxy.acme.schedule import MAX_RETRY, Renewal, renewal_time
from twistproxy.config import ConfigError, parse
from twistproxy.config.parse import acme_certificates
from twistproxy.service import ProxyService
from twistproxy.signals import check_shareable
from twistproxy.testing import MemoryProxy

from tests.test_config import _ConfigTestMixin

DAY = 86400.0
START = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def acme_toml(storage: str, names: str = '["www.example.com"]', extra: str = "") -> str:
    """
    A configuration with a plain listener, a TLS listener whose certificate
    is ACME's for C{names}, and the C{[acme]} section (C{extra} lines in it).
    """
    return f"""
[acme]
email = "ops@example.com"
storage = "{storage}"
{extra}

[listeners.web]
endpoint = "tcp:8080"

[listeners.secure]
endpoint = "tcp:8443"
tls.acme = {names}

[upstreams.app]
servers = ["http://127.0.0.1:8001"]
"""


# A DNS listener and the zone example.com, to add to acme_toml's.
ZONE = """
[listeners.ns]
endpoint = "udp:5353"
protocol = "dns"

[[dns.zones]]
name = "example.com"
soa = { mname = "ns1.example.com", rname = "hostmaster.example.com" }
"""


def issued(days: float = 90, start: datetime.datetime = START,
           names: Tuple[str, ...] = ("www.example.com",)) -> x509.Certificate:
    """
    A certificate as a CA issues it (issuer not the subject, C{names} in
    its subjectAltName), valid for C{days} from C{start}.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "www.example.com")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Some CA")]))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(key, hashes.SHA256())
    )


class ACMEConfigTests(_ConfigTestMixin, SynchronousTestCase):
    """
    The C{[acme]} section and the listeners' C{tls.acme} names.
    """

    def test_defaults_and_names(self) -> None:
        """
        A listener may have ACME names instead of certificate files; the
        directory defaults to Let's Encrypt's, the key to ECDSA P-256, and
        C{letsencrypt-staging} names the staging directory.
        """
        config = parse(acme_toml("/tmp/acme", '["www.example.com"]'))
        self.assertEqual(config.acme.directory, "https://acme-v02.api.letsencrypt.org/directory")
        self.assertEqual(config.acme.key_type, "ecdsa-p256")
        self.assertEqual(config.listeners[1].tls.acme, ("www.example.com",))
        self.assertEqual(config.listeners[1].tls.certificates, ())
        staging = parse(acme_toml("/tmp/acme", extra='directory = "letsencrypt-staging"'))
        self.assertEqual(staging.acme.directory,
                         "https://acme-staging-v02.api.letsencrypt.org/directory")

    def test_rejections(self) -> None:
        """
        A directory that is neither a known name nor an https URL, an
        address that is not one, an unknown key type and a listener with
        neither certificates nor ACME names are refused at their paths.
        """
        self.assert_config_error(acme_toml("/tmp/a", extra='directory = "http://ca/dir"'),
                                 "acme.directory", contains="https://")
        self.assert_config_error(acme_toml("/tmp/a").replace("ops@example.com", "ops"),
                                 "acme.email", contains="email address")
        self.assert_config_error(acme_toml("/tmp/a", extra='key_type = "dsa"'),
                                 "acme.key_type", contains="'ecdsa-p256'")
        self.assert_config_error(acme_toml("/tmp/a", names="[]"),
                                 "listeners.secure.tls.certificates", contains="acme names")

    def test_needs_acme_section(self) -> None:
        """
        ACME names without an C{[acme]} section are refused.
        """
        text = acme_toml("/tmp/a").split("[listeners.web]", 1)[1]
        self.assert_config_error("[listeners.web]" + text, "acme",
                                 contains="listeners.secure.tls.acme")

    def test_wildcard_needs_dns_zone(self) -> None:
        """
        A wildcard can only be validated by DNS-01, so it needs a zone of
        the proxy's own DNS that holds it; with one, it is accepted.
        """
        self.assert_config_error(acme_toml("/tmp/a", '["*.example.com"]'),
                                 "listeners.secure.tls.acme[0]", contains="DNS-01")
        text = acme_toml("/tmp/a", '["*.example.com"]') + ZONE
        self.assertEqual(parse(text).listeners[1].tls.acme, ("*.example.com",))

    def test_workers(self) -> None:
        """
        ACME certificates go with several worker processes (their master
        orders them for all); certificates ordered on demand do not, since
        only the workers see the names clients ask for.
        """
        self.assertEqual(parse("workers = 2\n" + acme_toml("/tmp/a")).workers, 2)
        config = parse("workers = 2\n" + acme_toml(
            "/tmp/a", extra="on_demand.allow = ['*.example.com']"))
        with self.assertRaises(ConfigError) as raised:
            check_shareable(config)
        self.assertEqual(raised.exception.path, "acme.on_demand")

    def test_default_counts_the_acme_certificate(self) -> None:
        """
        The ACME certificate comes after the listed ones: C{default} may
        point at it.
        """
        config = parse(acme_toml("/tmp/a").replace(
            'tls.acme = ["www.example.com"]', 'tls.acme = ["www.example.com"]\ntls.default = 0'))
        self.assertEqual(config.listeners[1].tls.default, 0)
        self.assert_config_error(acme_toml("/tmp/a").replace(
            'tls.acme = ["www.example.com"]', 'tls.acme = ["www.example.com"]\ntls.default = 1'),
            "listeners.secure.tls.default", contains="(0 to 0)")

    def test_check_writes_stand_in(self) -> None:
        """
        C{check} (L{build.validate}) builds the TLS listener from a
        stand-in certificate it writes into the storage directory.
        """
        storage = os.path.join(self.mktemp(), "acme")
        build.validate(parse(acme_toml(storage)))
        self.assertTrue(os.path.exists(os.path.join(storage, "www.example.com.pem")))


# Two routes with certificates of their own, one on every listener, one
# only on the listener "other"; to add to acme_toml's.
ROUTES = """
[listeners.other]
endpoint = "tcp:9443"
tls.certificates = ["{cert}"]

[[routes]]
hosts = ["shop.example.com", "www.shop.example.com"]
upstream = "app"
acme = true

[[routes]]
hosts = ["intranet.example.com"]
listeners = ["other"]
upstream = "app"
acme = true

[[routes]]
upstream = "app"
"""


class RouteCertificateTests(_ConfigTestMixin, SynchronousTestCase):
    """
    A route with C{acme = true}: a certificate for its hosts, served on the
    TLS listeners it applies on.
    """

    def config(self, routes: str = ROUTES):
        from twistproxy.testing import cert_pem, issue_certificate, key_pem

        self.storage = os.path.join(self.mktemp(), "acme")
        cert = self.mktemp()
        key, certificate = issue_certificate("other.example.com")
        with open(cert, "wb") as f:
            f.write(key_pem(key) + cert_pem(certificate))
        return parse(acme_toml(self.storage) + routes.format(cert=cert))

    def test_certificates(self) -> None:
        """
        Each route's hosts are one certificate, served by the TLS listeners
        the route applies on (all of them without C{listeners}); the
        listener's own comes first.
        """
        config = self.config()
        self.assertEqual(acme_certificates(config.listeners, config.routes), [
            ("listeners.secure.tls.acme", ("www.example.com",), ("secure",)),
            ("routes[0].hosts", ("shop.example.com", "www.shop.example.com"),
             ("secure", "other")),
            ("routes[1].hosts", ("intranet.example.com",), ("other",))])

    def test_served_and_renewed(self) -> None:
        """
        The assembler serves each route's stand-in on the listeners the
        route applies on, after their own certificates, and plans a renewal
        for each certificate.
        """
        config = self.config()
        proxy = MemoryProxy(config)
        _, forwarder = build.pipeline(config, proxy.reactor, None)
        listeners = build.ListenerBuilder(proxy.reactor, config, forwarder,
                                          challenges=Challenges())
        for listener in config.listeners:
            listeners.factory(listener)
        served = {name: [os.path.basename(c.cert) for c in tls.certificates]
                  for name, (_, tls, _) in listeners.tls.items()}
        self.assertEqual(served["secure"], ["www.example.com.pem", "shop.example.com.pem"])
        self.assertEqual(served["other"][1:], ["shop.example.com.pem",
                                               "intranet.example.com.pem"])
        acme = build.ACMECertificates(config, proxy.reactor,
                                      build.dns_texts(config, proxy.reactor), Challenges(),
                                      lambda: None)
        self.assertEqual([r.names for r in acme.renewals], [
            ("www.example.com",), ("shop.example.com", "www.shop.example.com"),
            ("intranet.example.com",)])

    def test_same_names_once(self) -> None:
        """
        A route whose hosts are a listener's C{tls.acme} names shares its
        certificate: one renewal, not two.
        """
        config = self.config(ROUTES.replace(
            '["shop.example.com", "www.shop.example.com"]', '["www.example.com"]'))
        self.assertEqual(
            [names for _, names, _ in acme_certificates(config.listeners,
                                                                     config.routes)],
            [("www.example.com",), ("intranet.example.com",)])

    def test_rejections(self) -> None:
        """
        A route with C{acme} and no hosts, one that applies on no TLS
        listener, one without an C{[acme]} section, and a wildcard host that
        no challenge type can validate are refused at their paths.
        """
        base = acme_toml("/tmp/a")
        self.assert_config_error(base + '[[routes]]\nupstream = "app"\nacme = true\n',
                                 "routes[0].acme", contains="hosts")
        self.assert_config_error(
            base + '[[routes]]\nhosts = ["a.example.com"]\nlisteners = ["web"]\n'
                   'upstream = "app"\nacme = true\n',
            "routes[0].acme", contains="no listener with tls")
        self.assert_config_error(
            ("[listeners.web]" + base.split("[listeners.web]", 1)[1]).replace(
                'tls.acme = ["www.example.com"]', 'tls.certificates = ["/tmp/x.pem"]')
            + '[[routes]]\nhosts = ["a.example.com"]\nupstream = "app"\nacme = true\n',
            "acme", contains="routes[0].hosts")
        self.assert_config_error(
            base + '[[routes]]\nhosts = ["*.example.net"]\nupstream = "app"\nacme = true\n',
            "routes[0].hosts[0]", contains="DNS-01")


class StoreTests(SynchronousTestCase):
    """
    L{store}: files written atomically with mode 0600, and stand-ins.
    """

    def test_stand_in(self) -> None:
        """
        Without a stored certificate, L{store.ensure} writes a self-signed
        stand-in for the names (mode 0600, directory 0700) and names that
        file; an existing certificate is left as it is.
        """
        config = parse(acme_toml(os.path.join(self.mktemp(), "acme"),
                                 '["www.example.com", "example.com"]'))
        entry = store.ensure(config.acme, ("www.example.com", "example.com"), "p", START)
        self.assertEqual(entry.cert, os.path.join(config.acme.storage, "www.example.com.pem"))
        self.assertEqual(stat.S_IMODE(os.stat(entry.cert).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(config.acme.storage).st_mode), 0o700)
        cert = store.read_certificate(entry.cert)
        self.assertTrue(store.is_stand_in(cert))
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(names.get_values_for_type(x509.DNSName),
                         ["www.example.com", "example.com"])
        with open(entry.cert, "rb") as f:
            before = f.read()
        store.ensure(config.acme, ("www.example.com", "example.com"), "p", START)
        with open(entry.cert, "rb") as f:
            self.assertEqual(f.read(), before)

    def test_wildcard_file_name(self) -> None:
        """
        A wildcard's file is named with C{_} for C{*}.
        """
        config = parse(acme_toml("/srv/acme"))
        self.assertEqual(store.certificate_file(config.acme, ("*.example.com",)),
                         "/srv/acme/_.example.com.pem")

    def test_write_atomically(self) -> None:
        """
        L{store.write_atomically} replaces the file, mode 0600, and leaves
        no temporary file behind.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        name = os.path.join(directory, "a.pem")
        store.write_atomically(name, b"old")
        store.write_atomically(name, b"new")
        with open(name, "rb") as f:
            self.assertEqual(f.read(), b"new")
        self.assertEqual(os.listdir(directory), ["a.pem"])
        self.assertEqual(stat.S_IMODE(os.stat(name).st_mode), 0o600)

    def test_unwritable_storage(self) -> None:
        """
        A storage directory that cannot be made is a configuration error
        at the given path.
        """
        blocker = self.mktemp()
        with open(blocker, "w"):
            pass
        config = parse(acme_toml(os.path.join(blocker, "acme")))
        with self.assertRaises(ConfigError) as raised:
            store.ensure(config.acme, ("www.example.com",), "listeners.secure.tls.acme", START)
        self.assertEqual(raised.exception.path, "listeners.secure.tls.acme")


class ChallengeTests(SynchronousTestCase):
    """
    HTTP-01 answers, served by the HTTP listeners before routing.
    """

    def test_answer(self) -> None:
        """
        Only the path of a pending token is answered.
        """
        challenges = Challenges()
        challenges.add(b"tok", b"tok.thumb")
        self.assertEqual(challenges.answer(b"/.well-known/acme-challenge/tok"), b"tok.thumb")
        self.assertIsNone(challenges.answer(b"/.well-known/acme-challenge/other"))
        self.assertIsNone(challenges.answer(b"/tok"))
        challenges.discard(b"tok")
        self.assertIsNone(challenges.answer(b"/.well-known/acme-challenge/tok"))

    def test_files_shared(self) -> None:
        """
        With L{ChallengeFiles}, what one process adds (the workers' master)
        another with the same directory answers (a worker), until it is
        discarded; a token that could name a file elsewhere is neither
        written nor looked up.
        """
        directory = os.path.join(self.mktemp(), "answers")
        orderer, worker = ChallengeFiles(directory, Clock()), ChallengeFiles(directory, Clock())
        path = b"/.well-known/acme-challenge/tok-1_A"
        self.assertIsNone(worker.answer(path))
        orderer.add(b"tok-1_A", b"tok-1_A.thumb")
        self.assertEqual(worker.answer(path), b"tok-1_A.thumb")
        self.assertIsNone(worker.answer(b"/tok-1_A"))
        self.assertEqual(stat.S_IMODE(os.stat(directory).st_mode), 0o700)
        with self.assertRaises(ValueError):
            orderer.add(b"../x", b"x")
        with open(os.path.join(self.mktemp()), "wb") as f:
            f.write(b"secret")
        self.assertIsNone(worker.answer(b"/.well-known/acme-challenge/../../" + f.name.encode()))
        orderer.discard(b"tok-1_A")
        self.assertIsNone(worker.answer(path))

    def test_files_tls_alpn(self) -> None:
        """
        A TLS-ALPN-01 answer added through L{ChallengeFiles} is a
        challenge certificate in every process with the directory, made
        there once (with the C{acmeIdentifier} digest of the key
        authorization), and gone once discarded.
        """
        directory, clock = self.mktemp(), Clock()
        clock.advance(START.timestamp())
        orderer, worker = ChallengeFiles(directory, Clock()), ChallengeFiles(directory, clock)
        self.assertIsNone(worker.certificate("www.example.com"))
        orderer.add_certificate("www.example.com", "tok.thumb", START)
        cert, _ = worker.certificate("www.example.com")
        self.assertTrue(cert.extensions.get_extension_for_oid(ACME_IDENTIFIER).critical)
        self.assertIs(worker.certificate("www.example.com")[0], cert)
        self.assertIsNone(worker.certificate("../www.example.com"))
        orderer.discard_certificate("www.example.com")
        self.assertIsNone(worker.certificate("www.example.com"))

    def test_worker_renews_nothing(self) -> None:
        """
        A service given the answers of another process (a worker, whose
        master orders) serves its ACME certificates but plans no renewal.
        """
        text = acme_toml(os.path.join(self.mktemp(), "acme"))
        for challenges, planned in ((None, True), (ChallengeFiles(self.mktemp(), Clock()), False)):
            service = ProxyService(parse(text), MemoryReactorClock(), challenges=challenges)
            service.startService()
            self.addCleanup(service.stopService)
            self.assertEqual([r.names for r in service.renewals], [("www.example.com",)])
            self.assertEqual(any(r._call is not None for r in service.renewals), planned)
            if challenges is not None:
                self.assertIs(service.challenges, challenges)

    def test_served_before_routing(self) -> None:
        """
        A request for a pending token's path is answered by the proxy
        itself with the key authorization; no backend is asked.  Other
        paths are routed as usual.
        """
        proxy = MemoryProxy()
        proxy.factory.challenges = challenges = Challenges()
        challenges.add(b"tok", b"tok.thumb")
        client = proxy.connect_client()
        client.send(b"GET /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: a\r\n\r\n")
        received = client.received()
        self.assertTrue(received.startswith(b"HTTP/1.1 200 "), received)
        self.assertTrue(received.endswith(b"\r\n\r\ntok.thumb"), received)
        self.assertEqual(proxy.backend_attempts(), [])
        client.send(b"GET /other HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(len(proxy.backend_attempts()), 1)

    def test_builder_gives_challenges(self) -> None:
        """
        Every HTTP factory the assembler builds serves the same answers.
        """
        config = parse(acme_toml(os.path.join(self.mktemp(), "acme")))
        proxy = MemoryProxy(config)
        challenges = Challenges()
        _, forwarder = build.pipeline(config, proxy.reactor, None)
        listeners = build.ListenerBuilder(proxy.reactor, config, forwarder,
                                          challenges=challenges)
        for listener in config.listeners:
            listeners.factory(listener)
        self.assertTrue(listeners.http_factories)
        for factory in listeners.http_factories:
            self.assertIs(factory.challenges, challenges)


class RenewalTests(SynchronousTestCase):
    """
    L{Renewal}: when certificates are renewed, and what a failure does.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START.timestamp())
        self.cert = issued()
        self.obtained = []
        self.outcome = succeed("file")
        self.installs = []
        self.renewal = Renewal(self.clock, ["www.example.com"], lambda: self.cert,
                               self.obtain, lambda: self.installs.append(1), retry=60.0,
                               random_jitter=lambda: self.jitter)
        self.jitter = 0.0

    def obtain(self):
        self.obtained.append(self.clock.seconds())
        return self.outcome

    def test_two_thirds(self) -> None:
        """
        A 90-day certificate is renewed after 60 days, moved by the jitter
        (at most a thirtieth of the lifetime: 3 days); not before.
        """
        self.assertEqual(renewal_time(self.cert, 0), START.timestamp() + 60 * DAY)
        self.assertEqual(renewal_time(self.cert, 1), START.timestamp() + 63 * DAY)
        self.assertEqual(renewal_time(self.cert, -1), START.timestamp() + 57 * DAY)
        self.jitter = -0.5
        self.renewal.start()
        self.clock.advance(58.5 * DAY - 1)
        self.assertEqual(self.obtained, [])
        self.clock.advance(1)
        self.assertEqual(self.obtained, [START.timestamp() + 58.5 * DAY])

    def test_success_installs_and_plans_next(self) -> None:
        """
        A renewal that works installs the new certificate and plans the
        next renewal from it.
        """
        self.renewal.start()
        self.cert_after = issued(start=START + datetime.timedelta(days=60))

        def obtain():
            self.obtained.append(self.clock.seconds())
            self.cert = self.cert_after
            return succeed("file")
        self.renewal._obtain = obtain
        self.clock.advance(60 * DAY)
        self.assertEqual(self.installs, [1])
        self.assertEqual(self.renewal.due, START.timestamp() + 120 * DAY)
        self.assertEqual(self.renewal.status()["last_error"], "")

    def test_stand_in_renewed_at_once(self) -> None:
        """
        A stand-in certificate is due at once.
        """
        stand_in = x509.load_pem_x509_certificates(
            store.stand_in(["www.example.com"], "ecdsa-p256", START))[0]
        self.cert = stand_in
        self.renewal.start()
        self.clock.advance(0)
        self.assertEqual(self.obtained, [START.timestamp()])

    def test_failure_backs_off(self) -> None:
        """
        A failed renewal keeps the current certificate (nothing installed),
        records the error and tries again after 60 s, then 120 s, 240 s
        ...; never more than a day apart; a success resets the count.
        """
        self.renewal._obtain = lambda: self.obtain_failing()
        self.renewal.start()
        self.clock.advance(60 * DAY)
        status = self.renewal.status()
        self.assertEqual(status["failures"], 1)
        self.assertEqual(status["last_error"], "rateLimited: too many certificates")
        self.assertEqual(self.installs, [])
        waits = []
        for _ in range(12):
            before = self.clock.seconds()
            self.clock.advance(self.renewal.due - before)
            waits.append(self.clock.seconds() - before)
        self.assertEqual(waits[:4], [60.0, 120.0, 240.0, 480.0])
        self.assertEqual(max(waits), MAX_RETRY)
        self.flushLoggedErrors(RuntimeError)
        self.renewal._obtain = lambda: succeed("file")
        self.clock.advance(self.renewal.due - self.clock.seconds())
        self.assertEqual(self.renewal.failures, 0)
        self.assertEqual(self.installs, [1])

    def test_many_failures(self) -> None:
        """
        However many failures in a row, the next try is planned a day
        later (the doubling does not overflow).
        """
        self.renewal._obtain = lambda: self.obtain_failing()
        self.renewal.failures = 2000
        self.renewal.renew()
        self.assertEqual(self.renewal.failures, 2001)
        self.assertEqual(self.renewal.due, self.clock.seconds() + MAX_RETRY)
        self.flushLoggedErrors(RuntimeError)

    def obtain_failing(self):
        self.obtained.append(self.clock.seconds())
        return fail(RuntimeError("rateLimited: too many certificates"))

    def test_status_days(self) -> None:
        """
        The status says the days left until expiry (what the metric
        exports).
        """
        self.clock.advance(30 * DAY)
        self.assertEqual(self.renewal.status()["days_to_expiry"], 60.0)

    def test_stop(self) -> None:
        """
        A stopped renewal plans nothing more.
        """
        self.renewal.start()
        self.renewal.stop()
        self.clock.advance(100 * DAY)
        self.assertEqual(self.obtained, [])

    def test_admin_and_metrics(self) -> None:
        """
        C{GET /acme} lists each managed certificate with its expiry and
        last error, and C{twistproxy_certificate_days_to_expiry} says the
        days left per name.
        """
        from treq.testing import StubTreq

        from twistproxy.admin.api import AdminResource
        from twistproxy.metrics import ProxyMetrics
        from tests.test_admin import URL, FakeService, _config

        self.renewal._obtain = lambda: fail(RuntimeError("CA down"))
        self.renewal.start()
        self.clock.advance(60 * DAY)
        self.flushLoggedErrors(RuntimeError)
        service = FakeService(_config())
        service.renewals = [self.renewal]
        status = service.status()
        service.status = lambda: {**status, "acme": [self.renewal.status()]}
        metrics = ProxyMetrics(self.clock, status=service.status)
        client = StubTreq(AdminResource(service, "", metrics, self.clock))
        response = self.successResultOf(client.get(URL + "/acme"))
        self.assertEqual(response.code, 200)
        [shown] = self.successResultOf(client.json_content(response))["certificates"]
        self.assertEqual(shown["names"], ["www.example.com"])
        self.assertEqual(shown["last_error"], "CA down")
        self.assertEqual(shown["failures"], 1)
        self.assertEqual(shown["days_to_expiry"], 30.0)
        self.assertIn(b'twistproxy_certificate_days_to_expiry{name="www.example.com"} 30.0',
                      metrics.exposition())
