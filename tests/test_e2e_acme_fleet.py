"""
End-to-end test of the shared ACME store: two proxy processes (C{twistd}
children) that name one Redis in C{[acme] store} obtain one certificate
from Debian's C{pebble}, not two.  Both validate by DNS-01 (the one
challenge type that works across a fleet), the challenge's TXT record
shared through the same Redis (C{[dns] redis}) and answered by the first
one's DNS listener, which is pebble's resolver.
"""

from __future__ import annotations

import os

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from tests.e2e_support import HOST, PebbleMixin, ProxyProcess, unused_port, write_config
from tests.redis_support import start_redis
from tests.test_e2e_acme import PEBBLE_ACME
from tests.test_faults_acme import ZONE, served_certificate

CONFIG = PEBBLE_ACME + """store = "{redis}"
retry = 2
challenges = ["dns-01"]

[listeners.secure]
endpoint = "tcp:{https}:interface={host}"
tls.acme = ["example.test"]

[upstreams.app]
servers = ["http://{host}:9"]

[dns]
redis = "{redis}"
""" + ZONE


class SharedStoreEndToEndTests(PebbleMixin, TestCase):
    """
    Two instances sharing one Redis, and pebble.
    """

    timeout = 180

    def setUp(self):
        return self.start_pebble()

    @defer.inlineCallbacks
    def test_two_instances_one_certificate(self):
        """
        Two proxies started together with the same shared store: one orders
        the certificate, the other waits for it and serves the same one
        (same bytes), without ordering its own; each logs what it did.
        """
        redis = start_redis(self)
        proxies, ports = [], []
        for index in range(2):
            directory = os.path.join(self.cwd, f"proxy{index}")
            https = unused_port()
            dns = self.ports["dns"] if index == 0 else unused_port()
            path = write_config(directory, CONFIG.format(
                host=HOST, pebble=self.ports["pebble"], ca=self.ca_file, https=https, dns=dns,
                storage=os.path.join(directory, "acme"), redis=redis.url))
            proxy = ProxyProcess(reactor, ["--config", path], directory)
            self.addCleanup(proxy.stop)
            proxies.append(proxy)
            ports.append(https)
        self.proxy = proxies[0]  # whose output until() shows on failure
        yield defer.gatherResults([proxy.start() for proxy in proxies])
        root = self.pebble_root()
        served = []
        for port in ports:
            served.append((yield self.until(lambda port=port: served_certificate(port, root),
                                            f"certificate from pebble on {port}", 90)))
        self.assertEqual(served[0], served[1])
        issued, took = b"ACME: certificate for example.test issued", b"took the certificate"

        def logged():
            # A proxy may serve the certificate before its line is read.
            outputs = [proxy.output for proxy in proxies]
            lines = sum(o.count(issued) + o.count(took) for o in outputs)
            return outputs if lines >= 2 else None

        outputs = yield self.until(logged, "line from each proxy on what it did", 30)
        self.assertEqual(sum(o.count(issued) for o in outputs), 1, outputs)
        self.assertEqual(sum(o.count(took) for o in outputs), 1, outputs)
