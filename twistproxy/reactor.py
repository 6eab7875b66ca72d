# -*- test-case-name: tests.test_reactor -*-
"""
The reactor C{twistd twistproxy} runs on: Twisted's epoll reactor, with a
leaner dispatch of the common events.

For every ready descriptor, Twisted's epoll reactor calls the descriptor's
C{doRead} or C{doWrite} through L{twisted.python.log.callWithLogger}, which
builds a new log context (a dictionary copied from the current one, with
the descriptor's C{logPrefix()}) and pushes and pops it around the call.
That context names the connection in the C{system} of messages written
with the legacy L{twisted.python.log} API while the call runs.  It costs
about 1.8 µs a call on CPython, and a proxied keep-alive request takes two
such calls: some 10 % of the proxy's CPU time for small responses.

L{EPollReactor} calls C{doRead} and C{doWrite} directly for plain input
and output events, and goes the usual way, context included, for
everything else: a hang-up or an error, a descriptor whose C{fileno()} is
-1, an exception raised by the call (logged with the descriptor's prefix),
and the disconnection that follows.  What a program sees is the same,
except that legacy log messages written by C{dataReceived} and the like
carry the system C{-} instead of the connection's prefix; twistproxy logs
with L{twisted.logger}, whose messages do not depend on that context.

C{twistd twistproxy} (and each worker process) installs it unless a reactor
is installed already, for instance by C{twistd --reactor=epoll}, which is
the way back to Twisted's (see L{twistproxy.signals.choose_reactor}).  A program that embeds the proxy may call
L{install} before it first imports C{twisted.internet.reactor}.
"""

from __future__ import annotations

import errno
import sys
from select import EPOLLIN, EPOLLOUT

from twisted.internet import epollreactor
from twisted.python import failure, log

_PLAIN = EPOLLIN | EPOLLOUT


class EPollReactor(epollreactor.EPollReactor):
    """
    Twisted's epoll reactor, calling C{doRead} and C{doWrite} for plain
    input and output events without building a log context first.
    """

    def doPoll(self, timeout):
        if timeout is None:
            timeout = -1  # wait until something happens
        selectables = self._selectables
        try:
            events = self._poller.poll(timeout, len(selectables))
        except OSError as e:
            if e.errno == errno.EINTR:
                return
            raise
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            if event & ~_PLAIN:
                # A hang-up or an error: Twisted's own handling.
                log.callWithLogger(selectable, self._doReadOrWrite, selectable, fd, event)
                continue
            why = None
            in_read = False
            try:
                if selectable.fileno() == -1:
                    log.callWithLogger(selectable, self._doReadOrWrite, selectable, fd, event)
                    continue
                if event & EPOLLIN:
                    why = selectable.doRead()
                    in_read = True
                if not why and event & EPOLLOUT:
                    why = selectable.doWrite()
                    in_read = False
            except BaseException:
                why = sys.exc_info()[1]
                log.callWithLogger(selectable, log.err, failure.Failure())
            if why:
                log.callWithLogger(selectable, self._disconnectSelectable,
                                   selectable, why, in_read)

    doIteration = doPoll


def install() -> None:
    """
    Install L{EPollReactor} as the global reactor.

    @raises twisted.internet.error.ReactorAlreadyInstalledError: when one
        is installed already.
    """
    from twisted.internet.main import installReactor

    installReactor(EPollReactor())

