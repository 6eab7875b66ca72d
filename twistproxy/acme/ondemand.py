# -*- test-case-name: tests.test_acme_ondemand -*-
"""
On-demand certificates: a name first seen in a TLS handshake's SNI is
ordered then (Caddy's "on-demand TLS"), for proxies in front of names they
cannot list in advance (customers' own domains pointed at a SaaS).

It is off unless the C{[acme.on_demand]} table is there, and that table
must say which names may be ordered: an allow-list of names and wildcards
(C{allow}), an C{ask} URL, or both.  Anyone can put any name in SNI, so
without that a client could make the proxy order certificates for names
that are not its own until the CA's rate limits are spent (and the CA
refuses the proxy's real names too).  A name is ordered when it matches
C{allow}, or else when C{GET ask?domain=NAME} answers C{200} within
C{ask_timeout} seconds; the answer, yes or no, is kept C{ask_cache}
seconds.  At most C{rate} orders start per hour, whatever the answers.

The handshake that brings a new name is not held: the OpenSSL callback
that reads SNI cannot wait for an order (seconds to minutes), so that
client gets the listener's default certificate (a stand-in, if that is
what the listener has), and the handshakes after the order get the new
one.  A failed order is not tried again for that name before C{retry}
(the C{[acme]} setting) seconds, doubled after each further failure, nor
before the CA said (its C{Retry-After}, as with a rate limit).

An issued name is renewed like the configured ones.  After a restart the
names are known again from their first handshake: a valid certificate in
the storage directory is served without ordering again (the allow-list or
the ask URL still decides).
"""

from __future__ import annotations

import datetime as _datetime
import os
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import quote

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twistproxy.acme.schedule import backoff
from twistproxy.acme.store import certificate_file, is_stand_in, read_certificate
from twistproxy.config.checks import ConfigError, check_server_name
from twistproxy.config.values import ACME

# The longest an ask answer's body is read.
_MAX_ASK_BODY = 4096


def allowed(patterns: Tuple[str, ...], name: str) -> bool:
    """
    Whether C{name} matches one of C{patterns}: a name, or a wildcard
    (C{*.example.com}: one label below C{example.com}).
    """
    label, _, parent = name.partition(".")
    return name in patterns or bool(label and parent and f"*.{parent}" in patterns)


class OnDemand:
    """
    Orders certificates for names seen in SNI, as C{[acme.on_demand]} allows.

    @ivar names: The names whose certificates are stored and served, in the
        order they came.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, acme: ACME,
                 issue: Callable[[Tuple[str, ...]], Deferred], installed: Callable[[str], Any],
                 client: Any = None):
        """
        @param issue: Orders the certificate for some names, writing its
            storage file (L{twistproxy.acme.client.Issuer.issue}).
        @param installed: Called with a name whose certificate is stored,
            to serve it (and renew it).
        @param client: The treq client that asks the C{ask} URL (a
            cookieless one on C{clock} by default).
        """
        assert acme.on_demand is not None
        self.clock = clock
        self.acme = acme
        self.settings = acme.on_demand
        self._issue = issue
        self._installed = installed
        self._client = client
        self.names: List[str] = []
        # Names being asked about or ordered.
        self._busy: set = set()
        # Names not to try again before a time: refused, or failed.
        self._not_before: Dict[str, float] = {}
        self._failures: Dict[str, int] = {}
        # The ask URL's answers: name -> (allowed, until).
        self._answers: Dict[str, Tuple[bool, float]] = {}
        # When the orders of the last hour started.
        self._orders: List[float] = []

    def seen(self, server_name: bytes) -> None:
        """
        A handshake asked for C{server_name}, which no certificate of the
        listener holds: order it, in the background, if that is allowed.
        Cheap for names already decided (called on the handshake's path).
        """
        try:
            name = check_server_name(server_name.decode("ascii").rstrip("."), "SNI")
        except (UnicodeDecodeError, ConfigError):
            return
        if (name in self._busy or name in self.names or name.startswith("*.")
                or self._not_before.get(name, 0.0) > self.clock.seconds()):
            return
        self._busy.add(name)
        d = self._decide(name)
        d.addCallback(lambda yes: self._order(name) if yes else None)
        d.addErrback(lambda f: self.log.failure("on-demand certificate for {name}", f,
                                                name=name))
        d.addBoth(lambda _: self._busy.discard(name))

    def _decide(self, name: str) -> "Deferred[bool]":
        if allowed(self.settings.allow, name):
            return succeed(True)
        if not self.settings.ask:
            return succeed(self._refuse(name, "not in acme.on_demand.allow"))
        now = self.clock.seconds()
        answer = self._answers.get(name)
        if answer is not None and answer[1] > now:
            return succeed(answer[0] or self._refuse(name, "the ask URL said no"))
        return self._ask(name)

    def _ask(self, name: str) -> "Deferred[bool]":
        from twistproxy.quiet import read_body

        ask = self.settings.ask
        url = f"{ask}{'&' if '?' in ask else '?'}domain={quote(name)}"
        d = self._ask_client().get(url, allow_redirects=False, unbuffered=True)
        d.addCallback(lambda response: read_body(response, _MAX_ASK_BODY, "ask answer")
                      .addCallback(lambda _: response.code == 200))
        d.addTimeout(self.settings.ask_timeout, self.clock)

        def failed(failure) -> bool:
            # Not cached: the next handshake asks again (after a while).
            self.log.warn("on-demand certificate for {name}: the ask URL failed: {error}",
                          name=name, error=failure.getErrorMessage())
            self._not_before[name] = self.clock.seconds() + self.acme.retry
            return False

        def answered(yes: bool) -> bool:
            self._answers[name] = (yes, self.clock.seconds() + self.settings.ask_cache)
            return yes or self._refuse(name, "the ask URL said no")

        return d.addCallbacks(answered, failed)

    def _ask_client(self):
        if self._client is None:
            from twisted.web.client import Agent

            from twistproxy.quiet import QuietPool, cookieless_client

            self._client = cookieless_client(
                Agent(self.clock, pool=QuietPool(self.clock, persistent=True)))
        return self._client

    def _refuse(self, name: str, why: str) -> bool:
        self.log.info("on-demand certificate for {name} refused: {why}", name=name, why=why)
        self._not_before[name] = self.clock.seconds() + self.settings.ask_cache
        return False

    def _order(self, name: str) -> Optional[Deferred]:
        if self._stored(name):
            return self._install(name)
        now = self.clock.seconds()
        self._orders = [t for t in self._orders if t > now - 3600]
        if len(self._orders) >= self.settings.rate:
            self.log.warn("on-demand certificate for {name} not ordered: {rate} orders "
                          "in the last hour (acme.on_demand.rate)",
                          name=name, rate=self.settings.rate)
            self._not_before[name] = self._orders[0] + 3600
            return None
        self._orders.append(now)
        self.log.info("on-demand certificate for {name}: ordering", name=name)
        return self._issue((name,)).addCallbacks(lambda _: self._install(name),
                                                 lambda f: self._failed(name, f))

    def _stored(self, name: str) -> bool:
        # A certificate from the CA, still valid, from an earlier run.
        filename = certificate_file(self.acme, (name,))
        if not os.path.exists(filename):
            return False
        cert = read_certificate(filename)
        now = _datetime.datetime.fromtimestamp(self.clock.seconds(), _datetime.timezone.utc)
        return not is_stand_in(cert) and cert.not_valid_after_utc > now

    def _install(self, name: str) -> None:
        self._failures.pop(name, None)
        self.names.append(name)
        self._installed(name)

    def _failed(self, name: str, failure) -> None:
        failures = self._failures[name] = self._failures.get(name, 0) + 1
        wait = backoff(self.acme.retry * 2 ** min(failures - 1, 16), failure)
        self._not_before[name] = self.clock.seconds() + wait
        self.log.error("on-demand certificate for {name} failed ({failures} in a row), "
                       "not tried again for {wait:.0f} s: {error}", name=name,
                       failures=failures, wait=wait, error=failure.getErrorMessage())
