# -*- test-case-name: tests.test_e2e_dns_txt -*-
"""
End-to-end test of the TXT records set at run time and shared through
Redis: two installed proxies (C{twistd} children) name the same private
C{redis-server}; a record set on one's admin API is answered by the
other's DNS listener, asked with C{twisted.names.client}, and goes on
being answered while Redis is stalled (C{SIGSTOP}).
"""

from __future__ import annotations

import json
import os

import treq
from twisted.internet import defer, reactor, task
from twisted.names import client as dns_client, error
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from tests.e2e_support import HOST, WatchedProxyProcess, unused_port, write_config
from tests.redis_support import RedisServer

CONFIG = """
[listeners.dns]
protocol = "dns"
endpoint = "udp:0:interface={host}"

[upstreams.sites]
servers = [{{ url = "tcp://127.0.0.2:443" }}]

[admin]
endpoint = "tcp:{admin}:interface={host}"

[dns]
redis = "{redis}"

[[dns.zones]]
name = "example.test"
soa = {{ mname = "ns1", rname = "hostmaster", minimum = 30 }}
records = [{{ name = "ns1", type = "A", value = "127.0.0.1" }}]
"""

NAME = "_acme-challenge.www.example.test"


class SharedTXTEndToEndTests(TestCase):
    """
    Two proxies sharing their run-time TXT records through Redis.
    """

    timeout = 90

    @defer.inlineCallbacks
    def setUp(self):
        self.redis = redis = RedisServer()
        self.addCleanup(redis.stop)
        self.proxies = []
        for i in range(2):
            cwd = os.path.abspath(self.mktemp())
            admin = unused_port()
            path = write_config(cwd, CONFIG.format(host=HOST, admin=admin, redis=redis.url))
            proxy = WatchedProxyProcess(reactor, ["--config", path], cwd)
            self.addCleanup(proxy.stop)
            yield proxy.start()
            proxy.admin = f"http://{HOST}:{admin}"
            self.proxies.append(proxy)
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    @defer.inlineCallbacks
    def put(self, proxy, value: str, code: int = 200):
        """
        C{PUT} C{value} at L{NAME} on C{proxy}'s admin API, and check the
        answer's status.
        """
        response = yield treq.put(f"{proxy.admin}/dns/txt/{NAME}", pool=self.pool,
                                  data=json.dumps({"values": [value], "ttl": 5}).encode())
        self.assertEqual(response.code, code, (yield response.text()))

    @defer.inlineCallbacks
    def ask_until(self, port: int, wanted):
        """
        Ask C{port} for the TXT records of L{NAME} every 0.2 s until
        C{wanted(outcome)} holds (at most 20 s); the last outcome: the
        answers' strings, or the error.
        """
        resolver = dns_client.Resolver(servers=[(HOST, port)], reactor=reactor)
        outcome = None
        for _ in range(100):
            try:
                answers, _, _ = yield resolver.lookupText(NAME, timeout=[2])
                outcome = [b"".join(a.payload.data) for a in answers]
            except error.DomainError as e:
                outcome = e
            if wanted(outcome):
                break
            yield task.deferLater(reactor, 0.2, lambda: None)
        return outcome

    @defer.inlineCallbacks
    def test_set_on_one_answered_by_other(self):
        """
        A TXT record PUT on one instance's admin API is answered by the
        other instance's DNS listener within seconds; DELETEd on the other,
        the first answers NXDOMAIN again.
        """
        one, other = self.proxies
        yield self.put(one, "token-1")
        outcome = yield self.ask_until(other.port, lambda o: o == [b"token-1"])
        self.assertEqual(outcome, [b"token-1"])

        response = yield treq.delete(f"{other.admin}/dns/txt/{NAME}", pool=self.pool)
        self.assertEqual(response.code, 200, (yield response.text()))
        outcome = yield self.ask_until(one.port, lambda o: isinstance(o, error.DNSNameError))
        self.assertIsInstance(outcome, error.DNSNameError)

    @defer.inlineCallbacks
    def test_redis_out(self):
        """
        While Redis does not answer, the other instance goes on answering
        the record it read, and a change is refused (503) rather than seen
        by one instance only; once Redis answers again, a change goes
        through and reaches the other instance.
        """
        one, other = self.proxies
        yield self.put(one, "token-1")
        self.assertEqual((yield self.ask_until(other.port, lambda o: o == [b"token-1"])),
                         [b"token-1"])
        self.redis.pause()
        try:
            # Each instance finds Redis out at its next read (1 s timeout).
            yield task.deferLater(reactor, 3, lambda: None)
            self.assertEqual((yield self.ask_until(other.port, lambda o: True)), [b"token-1"])
            yield self.put(one, "token-2", 503)
        finally:
            self.redis.resume()
        for _ in range(50):
            response = yield treq.put(f"{one.admin}/dns/txt/{NAME}", pool=self.pool,
                                      data=b'{"values": ["token-2"]}')
            yield response.text()
            if response.code == 200:
                break
            yield task.deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(response.code, 200)
        self.assertEqual((yield self.ask_until(other.port, lambda o: o == [b"token-2"])),
                         [b"token-2"])
