# -*- test-case-name: tests.test_acme -*-
"""
When each ACME certificate is renewed, and what happens when that fails.

A L{Renewal} watches the certificate of one listener's C{tls.acme} names.
It renews at two thirds of the certificate's lifetime (Let's Encrypt's 90
days: after 60), plus or minus a jitter of a thirtieth of the lifetime so
that a fleet started together does not ask the CA at the same moment; a
stand-in (see L{twistproxy.acme.store}) is renewed at once.  Renewing is
the C{obtain} callable's business (an order with the CA, the new files
written); then C{installed} makes the TLS listeners read them (the
service's certificate reload) and the next renewal is planned from the new
certificate.

When the CA offers renewal information (ARI, RFC 9773), the C{window}
callable fetches its suggested window for the certificate, and the
renewal moves to a random time inside it instead (C{retry} seconds from
now when the window has begun, as after a revocation: never sooner, so
that a CA answering a past window for each new certificate cannot make
renewals loop); it is asked again as often as the CA says, until the
renewal is due; a failure to ask keeps the plan and asks again a day
later.

A renewal that fails leaves the current certificate served, logs, keeps
the error for the admin API and tries again after C{retry} seconds,
doubled after each further failure up to a day (with a jitter of a
thirtieth); when the CA said how long to wait (C{Retry-After}, as with its
rate limits), not sooner than that (L{backoff}).  Everything runs on the injected clock, whose seconds are the
wall clock's in a running proxy (certificate times are wall-clock times).
"""

from __future__ import annotations

import random
from typing import Any, Callable, Dict, Optional, Sequence

from cryptography import x509
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twistproxy.acme.store import holds_exactly, is_stand_in, lifetime

# The longest wait between two tries after CA errors.
MAX_RETRY = 86400.0


def renewal_time(cert: x509.Certificate, jitter: float) -> float:
    """
    When C{cert} is due for renewal, in seconds since the epoch.

    @param jitter: From -1 to 1: the share of the allowed jitter (a
        thirtieth of the lifetime) to add.
    """
    if is_stand_in(cert):
        return 0.0
    start, end = lifetime(cert)
    span = end - start
    return start + span * 2 / 3 + jitter * span / 30


def backoff(wait: float, reason: Failure) -> float:
    """
    The seconds to wait before trying again after C{reason}: C{wait}, or
    longer when the CA asked for that (the C{retry_after} of an
    L{twistproxy.acme.client.ACMEError}: its C{Retry-After}, as with a
    rate limit), up to L{MAX_RETRY}.
    """
    asked = getattr(reason.value, "retry_after", 0.0) or 0.0
    return max(wait, min(asked, MAX_RETRY))


class Renewal:
    """
    The renewal of one certificate.

    @ivar names: The names it is for.
    @ivar failures: How many renewals in a row have failed.
    @ivar last_error: What the last failure said, or C{''} since a success.
    @ivar renewing: Whether a renewal is under way.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, names: Sequence[str],
                 current: Callable[[], x509.Certificate],
                 obtain: Callable[[], Deferred], installed: Callable[[], Any],
                 retry: float, random_jitter: Callable[[], float] = lambda: random.uniform(-1, 1),
                 window: Optional[Callable[[x509.Certificate], Deferred]] = None,
                 force: Optional[Callable[[], Deferred]] = None):
        """
        @param current: Reads the certificate stored now.
        @param obtain: Renews it: fires when the new files are written.
        @param force: Renews it when asked to (L{renew} with C{forced}),
            even where C{obtain} would take a renewal another instance
            shared (L{twistproxy.acme.shared}); C{obtain} by default.
        @param installed: Makes the listeners serve what is stored.
        @param retry: Seconds before the first retry after a failure.
        @param random_jitter: A number from -1 to 1 for each planned time.
        @param window: Fetches the CA's suggested renewal window for a
            certificate: fires with C{(start, end, recheck)} (seconds since
            the epoch, and seconds before asking again) or C{None} when
            the CA offers none (L{twistproxy.acme.client.Issuer.
            renewal_window}).
        """
        self.clock = clock
        self.names = tuple(names)
        self._current = current
        self._obtain = obtain
        self._force = force or obtain
        self._installed = installed
        self._retry = retry
        self._jitter = random_jitter
        self._window = window
        self._recheck: Optional[IDelayedCall] = None
        self.failures = 0
        self.last_error = ""
        self.renewing = False
        self._call: Optional[IDelayedCall] = None
        self.due = 0.0

    def start(self) -> None:
        """
        Plan the next renewal from the stored certificate: at once when it
        is not for exactly these names (they changed).
        """
        self._plan(self._due())
        self._ask_window()

    def _due(self) -> float:
        cert = self._current()
        if not holds_exactly(cert, self.names):
            return 0.0
        return renewal_time(cert, self._jitter())

    def stop(self) -> None:
        """
        Plan nothing more (a renewal under way still finishes).
        """
        for call in self._call, self._recheck:
            if call is not None and call.active():
                call.cancel()
        self._call = self._recheck = None

    def status(self) -> Dict[str, Any]:
        """
        What the admin API and the metrics show: names, expiry (seconds
        since the epoch) and days left, whether a stand-in is served, when
        the next try is due, the failures in a row and the last error.
        """
        cert = self._current()
        not_after = lifetime(cert)[1]
        return {"names": list(self.names), "not_after": not_after,
                "days_to_expiry": round((not_after - self.clock.seconds()) / 86400, 3),
                "stand_in": is_stand_in(cert), "due": self.due, "renewing": self.renewing,
                "failures": self.failures, "last_error": self.last_error}

    def _plan(self, when: float) -> None:
        self.stop()
        now = self.clock.seconds()  # once: a real clock moves between two reads
        self.due = max(when, now)
        self._call = self.clock.callLater(self.due - now, self.renew)

    def renew(self, forced: bool = False) -> Deferred:
        """
        Renew now; fires (with C{None}) when it is over, well or not.

        @param forced: Asked for (by the admin API) rather than due.
        """
        self.stop()
        self.renewing = True
        return maybeDeferred(self._force if forced else self._obtain).addCallbacks(
            self._renewed, self._failed)

    def _renewed(self, _: object) -> None:
        self.renewing = False
        self.failures, self.last_error = 0, ""
        self._installed()
        self.log.info("certificate for {names} renewed", names=", ".join(self.names))
        # Not at once again, should what is stored still be due (a CA that
        # answered with an old certificate): that would loop.
        self._plan(max(self._due(), self.clock.seconds() + self._retry))
        self._ask_window()

    def _ask_window(self) -> None:
        cert = self._current()
        if self._window is None or is_stand_in(cert):
            return
        self._window(cert).addCallbacks(
            lambda window: self._in_window(cert, window), self._no_window)

    def _in_window(self, cert: x509.Certificate, window: Optional[tuple]) -> None:
        # Not while renewing (nothing planned), nor for a replaced certificate.
        if window is None or self._call is None or self._current() != cert:
            return
        start, end, recheck = window
        self._plan(max(start + (end - start) * (self._jitter() + 1) / 2,
                       self.clock.seconds() + self._retry))
        if self.due - self.clock.seconds() > recheck:
            self._recheck = self.clock.callLater(recheck, self._ask_window)

    def _no_window(self, reason: Failure) -> None:
        self.log.warn("certificate for {names}: no renewal information from the CA "
                      "({error}); the renewal stays planned", names=", ".join(self.names),
                      error=reason.getErrorMessage() or reason.type.__name__)
        if self._call is not None:
            self._recheck = self.clock.callLater(MAX_RETRY, self._ask_window)

    def _failed(self, reason: Failure) -> None:
        self.renewing = False
        self.failures += 1
        self.last_error = reason.getErrorMessage() or reason.type.__name__
        # min() before the power: past 1024 failures (three years at a
        # day apart) a float times 2 ** failures overflows.
        wait = min(self._retry * 2 ** min(self.failures - 1, 64), MAX_RETRY)
        wait = backoff(wait * (1 + self._jitter() / 30), reason)
        self.log.failure("certificate for {names}: renewal failed ({failures} in a row), "
                         "the current one stays; next try in {wait:.0f} s", reason,
                         names=", ".join(self.names), failures=self.failures, wait=wait)
        self._plan(self.clock.seconds() + wait)
