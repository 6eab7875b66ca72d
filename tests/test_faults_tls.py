# -*- test-case-name: tests.test_faults_tls -*-
"""
Fault tests: TLS to backends whose certificates must not be believed.

The installed proxy runs as a C{twistd} child process in front of three
real TLS origins on 127.0.0.1, one per route, each with a certificate that
fails in another way: one issued by the trusted test CA for another host
name, one issued by that CA but expired, and one self-signed (untrusted).
Clients count what they get; the access log and the proxy's own log are
read once the proxy has stopped.  The promises are those of the section
"TLS to backends" of docs/faults.rst.

Every certificate is made here, in a temporary directory.  Clients are
blocking sockets in threads with timeouts; the proxy is stopped by its
PID in cleanup.
"""

from __future__ import annotations

import os
import re
from typing import Dict, List

from twisted.internet import defer, ssl
from twisted.python.filepath import FilePath

from twistproxy.testing import cert_pem, issue_certificate, pem_bundle
from tests.e2e_support import (
    HOST, E2ETestCase, OriginFactory, get_request, listener_config, ok_response,
    one_per_connection, read_access_log,
)

# The origins' faults, by route (path prefix and group name).
_FAULTS = ("mismatch", "expired", "untrusted")
# Requests per fault: a few, each on its own connection.
_REQUESTS = 4


def _statuses(port: int, path: str, count: int) -> List[int]:
    """
    Send C{count} GETs for C{path}, each on a new connection, and return
    the statuses the client read.
    """
    request = get_request(path.encode("ascii"), b"Connection: close\r\n", b"app.test")
    return [response.status for response in one_per_connection(port, request, count)]


class BackendCertificateFaultTests(E2ETestCase):
    """
    A backend whose certificate does not verify is never sent a request,
    and each request to it is a 502 the access log and the log explain.
    """

    timeout = 90

    def setUp(self):
        ca = issue_certificate("Fault CA", ca=True)
        self.ca_file = os.path.abspath(self.mktemp())
        FilePath(self.ca_file).setContent(cert_pem(ca[1]))
        self.certificates = {
            # Signed by the trusted CA, valid, but for another host.
            "mismatch": issue_certificate("other.test", ("other.test",), issuer=ca),
            # For the right address, signed by the trusted CA, expired.
            "expired": issue_certificate("origin", (HOST,), issuer=ca, expired=True),
            # For the right address, but nobody vouches for it.
            "untrusted": issue_certificate("origin", (HOST,)),
        }

    def fault_origin(self, fault: str) -> OriginFactory:
        """
        A TLS origin on 127.0.0.1 presenting the certificate of C{fault}; it
        would answer 200 to any request that reached it.
        """
        options = ssl.PrivateCertificate.loadPEM(pem_bundle(self.certificates[fault])).options()
        return self.start_origin(
            lambda proto, req: proto.transport.write(ok_response(b"ok")), tls_options=options)

    def start_proxy(self, origins: Dict[str, OriginFactory]) -> defer.Deferred:
        """
        The proxy, with one route and https group per origin, all trusting
        the test CA, and an access log.
        """
        parts = [listener_config()]
        for fault, origin in origins.items():
            parts.append(
                f'[upstreams.{fault}]\nservers = ["https://{HOST}:{origin.port}"]\n'
                f'[upstreams.{fault}.tls]\nca = "{self.ca_file}"\n\n'
                f'[[routes]]\nupstream = "{fault}"\npath_prefix = "/{fault}"\n\n')
        return self.start_configured_proxy("".join(parts), access_log="access.log")

    @defer.inlineCallbacks
    def test_certificate_faults_are_502_upstream_tls_failed(self):
        """
        A backend whose certificate names another host, has expired, or
        is not signed by a trusted CA gets no request: every client gets a
        502, the access log gives reason C{upstream_tls_failed} for each
        (never C{upstream_closed}), and the log says which backend failed
        and why.
        """
        origins = {fault: self.fault_origin(fault) for fault in _FAULTS}
        proxy = yield self.start_proxy(origins)
        got = {}
        for fault in _FAULTS:
            got[fault] = yield self.in_thread(_statuses, proxy.port, f"/{fault}", _REQUESTS)
        yield proxy.stop()

        self.assertEqual(got, {fault: [502] * _REQUESTS for fault in _FAULTS})
        for fault, origin in origins.items():
            self.assertEqual(origin.requests, [], fault)
        lines = read_access_log(proxy).splitlines()
        self.assertEqual(len(lines), len(_FAULTS) * _REQUESTS)
        for line in lines:
            self.assertIn(b" 502 ", line)
            self.assertTrue(line.endswith(b"reason=upstream_tls_failed"), line)
        output = proxy.output.decode("utf-8", "replace")
        for fault, why in [("mismatch", "the certificate is not for 127.0.0.1"),
                           ("expired", "certificate verify failed"),
                           ("untrusted", "certificate verify failed")]:
            pattern = (rf"TLS with backend {re.escape(HOST)}:{origins[fault].port} failed: "
                       rf"{re.escape(why)}.*upstream_tls_failed")
            self.assertEqual(len(re.findall(pattern, output)), _REQUESTS, (fault, output))
