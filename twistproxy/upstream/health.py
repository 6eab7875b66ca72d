# -*- test-case-name: tests.test_health -*-
"""
Active health checks: the proxy asks each backend, on its own initiative and
at a steady pace, whether it can serve, and stops sending requests to the
ones that keep saying no.

Three parts share the work:

  - A I{check} (L{IHealthCheck}) asks one backend one question and answers
    with a Deferred that fires with C{True} or C{False}, within its own
    timeout, and never errbacks.  It keeps no state.  The built-in ones are
    L{HTTPHealthCheck} (C{type = "http"}: a request, judged by its status
    and, optionally, its body) and L{TCPHealthCheck} (C{type = "tcp"}: can a
    connection be made?).  Checks are built by named factories
    (L{IHealthCheckFactory}), which are L{twisted.plugin} dropins of
    L{twistproxy.plugins} exactly like the balancers, and found by
    L{find_health_check_factory} or built by L{build_health_check}.

  - A L{HealthMonitor} runs one check against every backend of a group,
    every C{interval} seconds, and turns the answers into decisions with
    two thresholds, as HAProxy and nginx do: a backend that is up goes down
    after C{fall} failed checks in a row, one that is down comes back after
    C{rise} passed checks in a row, so that a single lost packet does not
    take a backend out and a backend that flaps does not come back.  A
    backend starts in the state its C{healthy} flag says, which is C{True}
    for a new L{Backend <twistproxy.upstream.backend.Backend>}: up until
    proven otherwise, so that a proxy starting in front of healthy backends
    serves at once instead of after C{rise} intervals.

  - L{SlowStart} ramps the C{effective_weight} of a backend that comes back
    from a fraction of its weight to its full weight over a time window, so
    that a backend with a cold cache or a fresh JIT is not handed its full
    share of requests the moment it answers its health check.

Checks may also explain their answers: a check that has a C{probe(backend)}
method returning a Deferred that fires with C{(ok, detail)} (as both
built-in ones do) gives the monitor the reason for a failure
(C{'status 503'}, C{'timed out after 2s'}), which it puts in its logs, in
L{HealthMonitor.status} and in the C{on_change} callback.  A check with only
C{check} works the same, with less to say.

Everything waits on the clock or reactor it is given; nothing here imports
the global reactor.  Importing this module stays cheap (the HTTP client is
imported when the first HTTP check is built), because the health dropin is
imported whenever plugins are listed.
"""

from __future__ import annotations

import ipaddress
import random as _random
import re
from dataclasses import dataclass
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
)

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
)
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

from twistproxy.components import factory_repr, find_factory
from twistproxy.config import ConfigError, is_token
from twistproxy.interfaces import (
    IBackend,
    IHealthCheck,
    IHealthCheckFactory,
    IProbingHealthCheck,
    ITLSHealthCheck,
)
from twistproxy.config.schema import names, read, setting
from twistproxy.net import authority

#: The User-Agent of every HTTP health check, so that backends can leave
#: them out of their access logs.
USER_AGENT = "twistproxy-health"

#: At most this much of a response body is read to look for C{expect_body}.
MAX_BODY = 64 * 1024

#: The default timeout of one check, in seconds.
DEFAULT_TIMEOUT = 2.0

#: Header fields that the C{headers} option may not set: the proxy sets
#: them itself (C{Host} has its own option) or they frame the message.
_RESERVED_HEADERS = frozenset(
    ["host", "connection", "content-length", "transfer-encoding", "te",
     "upgrade", "keep-alive", "proxy-connection", "trailer"]
)

# \Z, not $, which also matches before a final newline ("GET\n").
_STATUS = re.compile(r"\s*(\d{3})\s*(?:-\s*(\d{3})\s*)?\Z")


# Finding factories by name


def find_health_check_factory(name: str, path: str) -> IHealthCheckFactory:
    """
    L{find_factory <twistproxy.components.find_factory>} for health checks:
    C{name} is a plugin's name (C{'http'}) or a dotted path
    (C{'mypkg.checks.redisPing'}), C{path} where the configuration gave it.
    """
    return find_factory(IHealthCheckFactory, name, path, "health check")


def build_health_check(
    name: str, reactor: Any, options: Mapping[str, Any], path: str
) -> IHealthCheck:
    """
    Find a health check factory by name and build a check with it.

    @param name: As for L{find_health_check_factory}.
    @param reactor: The reactor the check uses for its clock and its
        connections (C{IReactorTime} and C{IReactorTCP}, and
        C{IReactorSSL} for HTTPS backends).
    @param options: The check's own settings: the group's C{health} table
        without C{type}, C{interval}, C{jitter}, C{rise} and C{fall}.
    @param path: The configuration path of the C{health} table, for example
        C{'upstreams.api.health'}.  A bad name is reported at
        C{'upstreams.api.health.type'}, a bad option at
        C{'upstreams.api.health.<key>'}.
    @raises ConfigError: when the factory cannot be found or rejects the
        options.
    @return: A new check.
    """
    factory = find_health_check_factory(name, f"{path}.type")
    return factory.fromConfig(reactor, options, path)


# Validating options


def _takes(kind: str, allowed: Sequence[str]) -> str:
    # The end of the message about an unknown option.
    return (f"the {kind} health check takes {', '.join(allowed)} (besides type, "
            f"interval, jitter, rise and fall)")


def _timeout(value: object, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(path, f"must be a number of seconds, not {value!r}")
    if not value > 0 or value != value or value == float("inf"):
        raise ConfigError(path, f"must be a positive number of seconds (got {value})")
    return float(value)


def _port(value: object, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(path, f"must be a port number, not {value!r}")
    if not 1 <= value <= 65535:
        raise ConfigError(path, f"must be between 1 and 65535 (got {value})")
    return value


def _text(value: object, path: str, what: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(path, f"must be {what}, not {value!r}")
    return value


def _field_value(value: str, path: str) -> str:
    if any(c in value for c in "\r\n\0"):
        raise ConfigError(path, "must not contain CR, LF or NUL")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ConfigError(path, "must be Latin-1 text") from None
    return value


def parse_status_ranges(value: object, path: str) -> Tuple[Tuple[int, int], ...]:
    """
    Parse an C{expect_status} setting.

    @param value: A status code (C{200} or C{"200"}), a range
        (C{"200-399"}, both ends included), or a list of those.
    @param path: Where C{value} came from, for error messages.
    @raises ConfigError: when C{value} is none of those, or a code is not
        between 100 and 599, or a range is backwards.
    @return: The ranges as C{(low, high)} pairs.
    """
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ConfigError(path, "must name at least one status or range")
    ranges = []
    for i, item in enumerate(items):
        where = f"{path}[{i}]" if isinstance(value, list) else path
        if isinstance(item, int) and not isinstance(item, bool):
            low = high = item
        elif isinstance(item, str) and (match := _STATUS.match(item)) is not None:
            low = int(match.group(1))
            high = int(match.group(2) or low)
        else:
            raise ConfigError(
                where,
                f"must be a status code or range such as \"200\" or "
                f"\"200-399\", not {item!r}",
            )
        if not (100 <= low <= 599 and 100 <= high <= 599):
            raise ConfigError(where, f"status codes are between 100 and 599 (got {item!r})")
        if low > high:
            raise ConfigError(where, f"range is backwards ({item!r})")
        ranges.append((low, high))
    return tuple(ranges)


class _AgentEndpoints:
    """
    Endpoints for the HTTP check's L{Agent}, through L{_endpoint}.
    """

    def __init__(self, reactor: Any, timeout: float):
        self._reactor = reactor
        self._timeout = timeout
        # host -> IOpenSSLClientConnectionCreator, for https; the system's
        # defaults unless the group's TLS settings are given.
        self.tls_for: Optional[Callable[[str], Any]] = None

    def endpointForURI(self, uri: Any) -> Any:
        host = uri.host.decode("ascii").strip("[]")
        endpoint = _endpoint(self._reactor, host, uri.port, self._timeout)
        if uri.scheme == b"https":
            from twisted.internet.endpoints import wrapClientTLS
            from twisted.internet.ssl import optionsForClientTLS

            creator = self.tls_for(host) if self.tls_for is not None else optionsForClientTLS(host)
            endpoint = wrapClientTLS(creator, endpoint)
        return endpoint


def _endpoint(reactor: Any, host: str, port: int, timeout: float) -> Any:
    """
    A client endpoint for C{host}: a plain TCP endpoint for an IP address
    literal (no resolver involved), L{HostnameEndpoint} for a name.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return HostnameEndpoint(reactor, host, port, timeout=timeout)
    if address.version == 6:
        return TCP6ClientEndpoint(reactor, host, port, timeout=timeout)
    return TCP4ClientEndpoint(reactor, host, port, timeout=timeout)


def _timed_out(result: object, timeout: float) -> Tuple[bool, str]:
    """
    The answer of a check that took too long (an C{onTimeoutCancel} of
    L{Deferred.addTimeout}), whatever the cancelled attempt answered.
    """
    return (False, f"timed out after {timeout:g}s")


def _reason(failure: Failure) -> str:
    """
    Why an attempt failed, in a few words: C{'ConnectionRefusedError:
    Connection was refused by other side: 111: Connection refused.'}.
    """
    # The web client wraps the real reasons (ResponseFailed,
    # ResponseNeverReceived, RequestTransmissionFailed): show the first.
    reasons = getattr(failure.value, "reasons", None)
    if reasons and isinstance(reasons[0], Failure):
        failure = reasons[0]
    if failure.check(CancelledError):
        return "cancelled"
    # Imported here: importing this module stays cheap.
    from twistproxy.tls import tls_failure

    tls = tls_failure(failure)
    if tls is not None:
        return f"TLS failed: {tls}"
    message = failure.getErrorMessage()
    name = failure.type.__name__ if failure.type is not None else "error"
    return f"{name}: {message}" if message else name


# The HTTP check


class _BodyProbe(Protocol):
    """
    Reads a response body until C{expect} is found or C{limit} bytes have
    been read, then drops the rest of it (and so the connection).

    The body's transport may not be stopped while the response is still
    handing the body over (L{IResponse.deliverBody} resumes it afterwards),
    so the owner sets C{delivering} around that call and calls
    L{delivered} after it; a stop wanted meanwhile happens then.

    @ivar finished: Fires with C{(found, detail)}, or C{None} once fired.
    @ivar delivering: Whether C{deliverBody} is under way.
    """

    delivering = False
    _stop_wanted = False

    def __init__(self, expect: Optional[bytes], limit: int, finished: "Deferred[Tuple[bool, str]]") -> None:
        self._expect = expect
        self._limit = limit
        self._buffer = bytearray()
        self.finished: "Optional[Deferred[Tuple[bool, str]]]" = finished

    def connectionMade(self) -> None:
        if not self._expect:
            self.finish(True, "")

    def dataReceived(self, data: bytes) -> None:
        if self.finished is None:
            return
        assert self._expect is not None
        # Search from the last bytes that could start a match across the
        # boundary of two chunks, not from the beginning every time.
        start = max(0, len(self._buffer) - len(self._expect) + 1)
        self._buffer += data[: self._limit - len(self._buffer)]
        if self._buffer.find(self._expect, start) >= 0:
            self.finish(True, "")
        elif len(self._buffer) >= self._limit:
            self.finish(False, f"body does not contain the expected text in its first {self._limit} bytes")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stop_wanted = False
        if self.finished is None:
            return
        from twisted.web.client import ResponseDone
        from twisted.web.http import PotentialDataLoss

        d, self.finished = self.finished, None
        if reason.check(ResponseDone, PotentialDataLoss):
            d.callback((False, "body does not contain the expected text"))
        else:
            d.callback((False, f"reading the body failed: {_reason(reason)}"))

    def finish(self, ok: bool, detail: str) -> None:
        """
        Answer now, and stop reading: the connection is not reused.
        """
        d = self.finished
        self.abort()
        if d is not None:
            d.callback((ok, detail))

    def abort(self) -> None:
        """
        Stop reading without answering (the check was cancelled).
        """
        self.finished = None
        if self.delivering:
            self._stop_wanted = True
        elif self.transport is not None:
            self.transport.stopProducing()

    def delivered(self) -> None:
        """
        C{deliverBody} has returned: stop the transport now if that was
        wanted meanwhile.
        """
        self.delivering = False
        if self._stop_wanted:
            self._stop_wanted = False
            if self.transport is not None:
                self.transport.stopProducing()


@implementer(IProbingHealthCheck, ITLSHealthCheck)
class HTTPHealthCheck:
    """
    Asks a backend for a resource and judges the answer by its status and,
    optionally, by a piece of text in its body.

    The request goes to the backend's own address (its scheme, host and
    port, or C{port} when given) with C{User-Agent: twistproxy-health} and
    C{Connection: close}, follows no redirect and sends no cookie.  A check
    passes when the status is in one of the C{expect_status} ranges and,
    when C{expect_body} is set, the first L{MAX_BODY} bytes of the body (as
    decoded, if the backend compressed it) contain it.  Anything else (a
    refused connection, a reset, a malformed response, a timeout) fails.

    @ivar method: The request method, e.g. C{'GET'}.
    @ivar path: The request target, e.g. C{'/healthz'}.
    @ivar expect_status: Passing statuses as C{(low, high)} pairs.
    @ivar expect_body: Bytes the body must contain, or C{None}.
    @ivar host: The Host header, or C{None} for the backend's own address.
    @ivar port: The port to check, or C{None} for the backend's.
    @ivar timeout: Seconds the whole check may take, connection, request,
        response and body together.
    @ivar headers: Further request header fields, as C{(name, value)}
        pairs.
    """

    def __init__(
        self,
        reactor: Any,
        path: str = "/",
        method: str = "GET",
        expect_status: Sequence[Tuple[int, int]] = ((200, 399),),
        expect_body: Optional[str] = None,
        host: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT,
        headers: Optional[Mapping[str, str]] = None,
        port: Optional[int] = None,
        client: Any = None,
    ) -> None:
        """
        @param reactor: The clock of the timeout and, unless C{client} is
            given, the network of the requests.
        @param client: What makes the requests: a L{treq.client.HTTPClient}
            or anything with its C{request(method, url, headers=...,
            allow_redirects=..., unbuffered=..., reactor=...)} method, such
            as L{treq.testing.StubTreq}.  By default, a client over a
            non-persistent connection pool on C{reactor}, which never keeps
            a cookie.
        """
        self._reactor = reactor
        self.path = path
        self.method = method
        self.expect_status = tuple(expect_status)
        self.expect_body = expect_body.encode("utf-8") if expect_body is not None else None
        self.host = host
        self.timeout = timeout
        self.headers = tuple((headers or {}).items())
        self.port = port
        self._endpoints = _AgentEndpoints(reactor, timeout)
        self._client = client if client is not None else self._default_client(
            reactor, self._endpoints)

    def use_tls(self, creator_for: Callable[[str], Any]) -> None:
        """
        Connect to C{https} backends with C{creator_for(host)} (the group's
        own TLS settings: its CA, client certificate, server name) instead
        of the system's defaults.
        """
        self._endpoints.tls_for = creator_for

    @staticmethod
    def _default_client(reactor: Any, endpoints: "_AgentEndpoints") -> Any:
        # Imported here so that listing plugins does not import the web
        # client.
        from twisted.web.client import Agent

        from twistproxy.quiet import QuietPool, cookieless_client

        # A non-persistent pool: every check opens its own connection and
        # the request says "Connection: close", so that a check also proves
        # that the backend accepts connections and no idle connection is
        # left behind.
        pool = QuietPool(reactor, persistent=False)
        # Our own endpoints: Agent's default (HostnameEndpoint, even for an
        # address) reports a refused connection only after its 0.3 s
        # attempt delay, which slows down noticing a dead backend.
        agent = Agent.usingEndpointFactory(reactor, endpoints, pool=pool)
        return cookieless_client(agent)

    def _status_ok(self, code: int) -> bool:
        for low, high in self.expect_status:
            if low <= code <= high:
                return True
        return False

    def check(self, backend: IBackend) -> "Deferred[bool]":
        return self.probe(backend).addCallback(lambda result: result[0])

    def probe(self, backend: IBackend) -> "Deferred[Tuple[bool, str]]":
        """
        Check a backend and say why it failed.

        @return: A Deferred that fires with C{(passed, detail)}, where
            C{detail} is C{'status 200'} or the reason of a failure, such as
            C{'status 503'} or C{'timed out after 2s'}.  It never errbacks.
        """
        from twisted.web.http_headers import Headers

        host = backend.host
        port = self.port or backend.port
        url = f"{backend.scheme}://{authority(host, port)}{self.path}"
        headers = Headers()
        for name, value in self.headers:
            headers.addRawHeader(name, value)
        headers.setRawHeaders("User-Agent", [USER_AGENT])
        if self.host is not None:
            headers.setRawHeaders("Host", [self.host])
        try:
            d = self._client.request(
                self.method, url, headers=headers, allow_redirects=False,
                unbuffered=True, reactor=self._reactor,
            )
        except Exception:
            return succeed((False, f"request failed: {_reason(Failure())}"))
        d.addCallback(self._judge)
        d.addTimeout(self.timeout, self._reactor, onTimeoutCancel=_timed_out)
        d.addErrback(lambda failure: (False, _reason(failure)))
        return d

    def _judge(self, response: Any) -> Any:
        code = response.code
        ok = self._status_ok(code)
        finished: "Deferred[Tuple[bool, str]]" = Deferred(lambda d: body.abort())
        # Without expect_body (or after a wrong status) the body is not
        # wanted: the probe drops it as soon as it is delivered.
        body = _BodyProbe(self.expect_body if ok else None, MAX_BODY, finished)
        body.delivering = True
        try:
            response.deliverBody(body)
        finally:
            body.delivered()
        if not ok:
            return (False, f"status {code}")

        def explain(result: Tuple[bool, str]) -> Tuple[bool, str]:
            passed, detail = result
            return (passed, f"status {code}" if passed else f"status {code}, {detail}")

        return finished.addCallback(explain)

    def __repr__(self) -> str:
        return f"<HTTPHealthCheck {self.method} {self.path}>"


# The TCP check


class _Close(Protocol):
    """
    Hangs up as soon as connected: the connection was the whole question.
    """

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()


class _CloseFactory(Factory):
    protocol = _Close
    # Two log lines per check otherwise.
    noisy = False


@implementer(IProbingHealthCheck)
class TCPHealthCheck:
    """
    Passes when a TCP connection to the backend can be made within the
    timeout, and closes it at once.

    @ivar timeout: Seconds the connection may take.
    @ivar port: The port to check, or C{None} for the backend's.
    """

    def __init__(self, reactor: Any, timeout: float = DEFAULT_TIMEOUT, port: Optional[int] = None) -> None:
        """
        @param reactor: An C{IReactorTCP} and C{IReactorTime} (names are
            resolved with its C{nameResolver}).
        """
        self._reactor = reactor
        self.timeout = timeout
        self.port = port

    def check(self, backend: IBackend) -> "Deferred[bool]":
        return self.probe(backend).addCallback(lambda result: result[0])

    def probe(self, backend: IBackend) -> "Deferred[Tuple[bool, str]]":
        """
        Check a backend and say why it failed.

        @return: A Deferred that fires with C{(True, 'connected')} or
            C{(False, reason)}; it never errbacks.
        """
        host = backend.host
        port = self.port or backend.port
        try:
            d = _endpoint(self._reactor, host, port, self.timeout).connect(_CloseFactory())
        except Exception:
            return succeed((False, f"connecting failed: {_reason(Failure())}"))
        d.addCallback(lambda protocol: (True, "connected"))
        d.addTimeout(self.timeout, self._reactor, onTimeoutCancel=_timed_out)
        d.addErrback(lambda failure: (False, _reason(failure)))
        return d

    def __repr__(self) -> str:
        return f"<TCPHealthCheck timeout={self.timeout:g}>"


def _target(value: object, path: str) -> str:
    target = _text(value, path, "a path")
    if not target.startswith("/") or any(c in target for c in " \r\n\t\0#"):
        raise ConfigError(
            path,
            f"must be a path starting with '/', without spaces or "
            f"a fragment (got {target!r})",
        )
    try:
        target.encode("ascii")
    except UnicodeEncodeError:
        raise ConfigError(path, "must be ASCII (percent-encode the rest)") from None
    return target


def _method(value: object, path: str) -> str:
    method = _text(value, path, "a method name")
    if not is_token(method):
        raise ConfigError(path, f"is not a valid method name ({method!r})")
    return method.upper()


def _host(value: object, path: str) -> str:
    host = _field_value(_text(value, path, "a host name"), path)
    if not host or any(c.isspace() for c in host):
        raise ConfigError(path, f"must be a host name without spaces (got {host!r})")
    return host


def _headers(table: object, path: str) -> Dict[str, str]:
    if not isinstance(table, Mapping):
        raise ConfigError(path, f"must be a table of header fields, not {table!r}")
    headers = {}
    for name, value in table.items():
        where = f"{path}.{name}"
        if not isinstance(name, str) or not is_token(name):
            raise ConfigError(where, "is not a valid header field name")
        if name.lower() in _RESERVED_HEADERS:
            hint = "; use the host option" if name.lower() == "host" else ""
            raise ConfigError(where, f"is set by the proxy and cannot be changed{hint}")
        headers[name] = _field_value(_text(value, where, "text"), where)
    return headers


@dataclass(frozen=True)
class TCPCheckOptions:
    """
    The options of the C{tcp} health check (L{TCPHealthCheck}).
    """

    timeout: float = setting(DEFAULT_TIMEOUT, check=_timeout)
    port: Optional[int] = setting(None, check=_port)


@dataclass(frozen=True)
class HTTPCheckOptions:
    """
    The options of the C{http} health check (L{HTTPHealthCheck}).
    """

    path: str = setting("/", check=_target)
    method: str = setting("GET", check=_method)
    expect_status: Tuple[Tuple[int, int], ...] = setting(
        ((200, 399),), check=lambda value, path: parse_status_ranges(value, path))
    expect_body: Optional[str] = setting(None, check=lambda value, path: _text(value, path, "text"))
    host: Optional[str] = setting(None, check=_host)
    timeout: float = setting(DEFAULT_TIMEOUT, check=_timeout)
    headers: Optional[Mapping[str, str]] = setting(None, check=_headers)
    port: Optional[int] = setting(None, check=_port)


# The factories


@implementer(IHealthCheckFactory, IPlugin)
class HTTPHealthCheckFactory:
    """
    The factory of L{HTTPHealthCheck}, C{type = "http"}.

    Options: C{path} (C{"/"}), C{method} (C{"GET"}), C{expect_status}
    (C{"200-399"}; a code, a range or a list of them), C{expect_body}
    (none), C{host} (the backend's host and port), C{timeout} (C{2.0}
    seconds), C{headers} (a table of further request headers), C{port}
    (the backend's).
    """

    name = "http"
    help = (
        "Sends an HTTP request to each backend; passes on an expected status "
        "(and body text)."
    )
    options = names(HTTPCheckOptions)

    def fromConfig(self, reactor: Any, options: Mapping[str, Any], path: str) -> IHealthCheck:
        return HTTPHealthCheck(reactor, **read(HTTPCheckOptions, options, path,
                                               takes=_takes(self.name, self.options)))

    __repr__ = factory_repr


@implementer(IHealthCheckFactory, IPlugin)
class TCPHealthCheckFactory:
    """
    The factory of L{TCPHealthCheck}, C{type = "tcp"}.

    Options: C{timeout} (C{2.0} seconds), C{port} (the backend's).
    """

    name = "tcp"
    help = "Opens a TCP connection to each backend; passes when it connects."
    options = names(TCPCheckOptions)

    def fromConfig(self, reactor: Any, options: Mapping[str, Any], path: str) -> IHealthCheck:
        return TCPHealthCheck(reactor, **read(TCPCheckOptions, options, path,
                                              takes=_takes(self.name, self.options)))

    __repr__ = factory_repr


# Telling the group


def notify(
    log: Logger,
    on_change: Optional[Callable[[IBackend, str, str], object]],
    backend: IBackend,
    what: str,
    detail: str,
) -> None:
    """
    Call the C{on_change(backend, what, detail)} of a L{HealthMonitor} or an
    L{OutlierDetector <twistproxy.upstream.outlier.OutlierDetector>}, if
    there is one, logging what it raises: the change has happened whatever
    the callback does.
    """
    if on_change is None:
        return
    try:
        on_change(backend, what, detail)
    except Exception:
        log.failure("on_change callback failed for {backend}", backend=backend.name)


# Slow start


class SlowStart:
    """
    Ramps the C{effective_weight} of backends that come back, linearly from
    a tenth of their weight (at least L{FLOOR}) to their weight, over
    C{window} seconds.

    One timer, ticking every C{step} seconds, serves all the backends that
    are ramping, and stops when none is.  The health monitor and the
    outlier detector of a group share one L{SlowStart} and call L{begin}
    when a backend becomes available again; beginning again restarts the
    ramp from its start, so a backend that flaps does not regain its full
    share in between.

    @ivar window: The ramp's length in seconds; C{0} disables slow start
        (L{begin} does nothing).
    @ivar step: Seconds between two updates of the weights.
    """

    log = Logger()

    #: The fraction of its weight a backend starts its ramp at.
    INITIAL_SHARE = 0.1
    #: The least effective weight during a ramp: balancers are told
    #: weights are positive.
    FLOOR = 0.01

    def __init__(self, clock: IReactorTime, window: float, step: float = 1.0) -> None:
        if window < 0:
            raise ValueError(f"window must not be negative (got {window})")
        if not step > 0:
            raise ValueError(f"step must be positive (got {step})")
        self._clock = clock
        self.window = float(window)
        self.step = float(step)
        self._started: Dict[IBackend, float] = {}
        self._timer: Optional[LoopingCall] = None

    def weight_at(self, backend: IBackend, elapsed: float) -> float:
        """
        The effective weight of C{backend} C{elapsed} seconds into its ramp.
        """
        weight = backend.weight
        if self.window <= 0 or elapsed >= self.window:
            return weight
        initial = min(max(weight * self.INITIAL_SHARE, self.FLOOR), weight)
        return initial + (weight - initial) * (max(elapsed, 0.0) / self.window)

    def begin(self, backend: IBackend) -> None:
        """
        Start (or restart) ramping C{backend} up from a fraction of its
        weight.
        """
        if self.window <= 0:
            return
        self._started[backend] = self._clock.seconds()
        backend.effective_weight = self.weight_at(backend, 0.0)
        self.log.debug(
            "Slow start of {backend}: weight {weight:g} ramps up over {window:g}s",
            backend=backend.name, weight=backend.weight, window=self.window,
        )
        if self._timer is None:
            self._timer = LoopingCall(self._tick)
            self._timer.clock = self._clock
            self._timer.start(self.step, now=False)

    def cancel(self, backend: IBackend) -> None:
        """
        Stop ramping C{backend}, if it is, and give it its full weight.
        """
        if self._started.pop(backend, None) is not None:
            backend.effective_weight = backend.weight
        if not self._started:
            self._stop_timer()

    def ramping(self, backend: IBackend) -> bool:
        """
        Whether C{backend} is ramping up now.
        """
        return backend in self._started

    def stop(self) -> None:
        """
        End every ramp at once (every backend gets its full weight) and
        cancel the timer.
        """
        for backend in list(self._started):
            self.cancel(backend)
        self._stop_timer()

    def _stop_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.running:
            timer.stop()

    def _tick(self) -> None:
        now = self._clock.seconds()
        for backend, started in list(self._started.items()):
            elapsed = now - started
            if elapsed >= self.window:
                del self._started[backend]
                backend.effective_weight = backend.weight
            else:
                backend.effective_weight = self.weight_at(backend, elapsed)
        if not self._started:
            self._stop_timer()

    def __repr__(self) -> str:
        return f"<SlowStart window={self.window:g}s ramping={len(self._started)}>"


# The monitor


class _Health:
    """
    What a L{HealthMonitor} knows of one backend.
    """

    __slots__ = (
        "backend", "successes", "failures", "last_result", "last_detail",
        "last_check", "last_change", "checks", "timer", "pending",
        "generation",
    )

    def __init__(self, backend: IBackend) -> None:
        self.backend = backend
        self.successes = 0
        self.failures = 0
        self.last_result: Optional[bool] = None
        self.last_detail = ""
        self.last_check: Optional[float] = None
        self.last_change: Optional[float] = None
        self.checks = 0
        self.timer: Optional[IDelayedCall] = None
        self.pending: Optional[Deferred] = None
        # Bumped whenever a running check's answer must be ignored.
        self.generation = 0


class HealthMonitor:
    """
    Checks every backend of a group at a steady pace and marks each up or
    down with rise and fall thresholds.

    Each backend has its own timer.  Its first check comes a random
    fraction of C{jitter * interval} seconds after L{start} (or after
    L{add_backend}); each next one comes C{interval} seconds after the
    previous one I{finished}, plus a random fraction of C{jitter *
    interval}.  So the checks of many backends spread out instead of
    arriving together, and a backend is never checked twice at once, however
    slow its checks are.

    A backend that is up goes down after C{fall} failed checks in a row; one
    that is down comes back after C{rise} passed checks in a row; any other
    answer only moves the counts.  The monitor sets the backend's
    C{healthy} flag and calls its C{refresh}, and on each change logs it,
    calls C{on_change(backend, "healthy" or "unhealthy", detail)}, and, when
    the backend has become available again, C{slow_start.begin(backend)}.

    A backend starts in the state its C{healthy} flag says (C{True} for a
    new backend): up until proven otherwise.  L{stop} keeps every
    backend's flag and counts, so that L{start} goes on from there, and a
    new monitor given the same backends (after a reload) adopts their
    state.  L{remove_backend} sets the removed backend's flag back to
    healthy: nobody checks it any more, so nothing may keep it down.

    @ivar interval: Seconds between two checks of a backend.
    @ivar jitter: The largest random addition to each wait, as a fraction
        of C{interval} (C{0.2}: up to a fifth more).
    @ivar rise: Passed checks in a row that bring a backend up.
    @ivar fall: Failed checks in a row that take a backend down.
    @ivar running: Whether the monitor is started.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        check: IHealthCheck,
        backends: Iterable[IBackend],
        interval: float,
        jitter: float = 0.0,
        rise: int = 2,
        fall: int = 3,
        on_change: Optional[Callable[[IBackend, str, str], object]] = None,
        random: Callable[[], float] = _random.random,
        slow_start: Optional[SlowStart] = None,
    ) -> None:
        """
        @param clock: The clock of the timers.
        @param check: Asks one backend once.
        @param backends: The backends to check, in order; more may be added
            later.
        @param on_change: Called with the backend, C{'healthy'} or
            C{'unhealthy'} and a sentence saying why, after each change.
        @param random: Returns a float in [0, 1); the source of jitter.
        @param slow_start: Ramps up the backends that come back, or C{None}.
        @raises ValueError: when C{interval} is not positive, C{jitter} is
            not between 0 and 1, or C{rise} or C{fall} is less than 1.
        """
        if not interval > 0:
            raise ValueError(f"interval must be positive (got {interval})")
        if not 0 <= jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1 (got {jitter})")
        if rise < 1 or fall < 1:
            raise ValueError(f"rise and fall must be at least 1 (got {rise}, {fall})")
        self._clock = clock
        self._check = check
        self._probe = check.probe if IProbingHealthCheck.providedBy(check) else None
        self.interval = float(interval)
        self.jitter = float(jitter)
        self.rise = rise
        self.fall = fall
        self._on_change = on_change
        self._random = random
        self._slow_start = slow_start
        self._states: Dict[IBackend, _Health] = {}
        self.running = False
        for backend in backends:
            self.add_backend(backend)

    @property
    def backends(self) -> List[IBackend]:
        """
        The backends being checked, in the order they were added.
        """
        return list(self._states)

    def start(self) -> None:
        """
        Start checking every backend.  Does nothing when already started.
        """
        if self.running:
            return
        self.running = True
        for state in self._states.values():
            self._schedule(state, self._first_delay())

    def stop(self) -> None:
        """
        Stop checking: cancel every timer and every check under way (whose
        answers are then ignored).  The backends keep their state.
        """
        self.running = False
        for state in self._states.values():
            self._halt(state)

    def add_backend(self, backend: IBackend) -> None:
        """
        Start checking one more backend (its first check comes as after
        L{start}).  Does nothing when it is checked already.
        """
        if backend in self._states:
            return
        state = self._states[backend] = _Health(backend)
        if self.running:
            self._schedule(state, self._first_delay())

    def remove_backend(self, backend: IBackend) -> None:
        """
        Stop checking a backend, and mark it healthy again (if it was not)
        since nothing will check it any more.  Does nothing when it is not
        checked.
        """
        state = self._states.pop(backend, None)
        if state is None:
            return
        self._halt(state)
        if self._slow_start is not None:
            self._slow_start.cancel(backend)
        if not backend.healthy:  # type: ignore[attr-defined]
            self._set(state, True, "no longer health-checked")

    def status(self, backend: IBackend) -> Dict[str, Any]:
        """
        What the monitor knows of one backend, as plain data (for the admin
        API and logs).

        @raises KeyError: when C{backend} is not checked by this monitor.
        @return: A dictionary with C{healthy}, C{consecutive_successes},
            C{consecutive_failures}, C{last_result} (C{True}, C{False}, or
            C{None} before the first answer), C{last_detail} (why),
            C{last_check} and C{last_change} (clock times in seconds, or
            C{None}), C{checks} (answers so far) and C{checking} (whether a
            check is under way).
        """
        state = self._states[backend]
        return {
            "healthy": bool(backend.healthy),  # type: ignore[attr-defined]
            "consecutive_successes": state.successes,
            "consecutive_failures": state.failures,
            "last_result": state.last_result,
            "last_detail": state.last_detail,
            "last_check": state.last_check,
            "last_change": state.last_change,
            "checks": state.checks,
            "checking": state.pending is not None,
        }

    # Scheduling

    def _first_delay(self) -> float:
        return self.interval * self.jitter * self._random()

    def _next_delay(self) -> float:
        return self.interval * (1 + self.jitter * self._random())

    def _schedule(self, state: _Health, delay: float) -> None:
        state.timer = self._clock.callLater(delay, self._run, state)

    def _halt(self, state: _Health) -> None:
        timer, state.timer = state.timer, None
        if timer is not None and timer.active():
            timer.cancel()
        pending, state.pending = state.pending, None
        state.generation += 1
        if pending is not None:
            pending.cancel()

    def _run(self, state: _Health) -> None:
        state.timer = None
        generation = state.generation
        backend = state.backend
        if self._probe is not None:
            d = maybeDeferred(self._probe, backend)
            d.addCallback(lambda result: (bool(result[0]), str(result[1])))
        else:
            d = maybeDeferred(self._check.check, backend)
            d.addCallback(lambda ok: (bool(ok), "passed" if ok else "failed"))
        d.addErrback(self._check_raised, backend)
        state.pending = d
        d.addCallback(self._answered, state, generation)

    def _check_raised(self, failure: Failure, backend: IBackend) -> Tuple[bool, str]:
        if not failure.check(CancelledError):
            self.log.failure(
                "Health check {check!r} of {backend} failed instead of answering",
                failure, check=self._check, backend=backend.name,
            )
        return (False, f"the check raised {_reason(failure)}")

    def _answered(self, result: Tuple[bool, str], state: _Health, generation: int) -> None:
        if state.generation != generation:
            return  # stopped or removed meanwhile
        state.pending = None
        self._record(state, *result)
        if self.running and state.backend in self._states:
            self._schedule(state, self._next_delay())

    def _record(self, state: _Health, ok: bool, detail: str) -> None:
        state.last_result = ok
        state.last_detail = detail
        state.last_check = self._clock.seconds()
        state.checks += 1
        healthy = state.backend.healthy  # type: ignore[attr-defined]
        if ok:
            state.successes += 1
            state.failures = 0
            if not healthy and state.successes >= self.rise:
                self._set(state, True, f"{state.successes} checks in a row passed ({detail})")
        else:
            state.failures += 1
            state.successes = 0
            if healthy and state.failures >= self.fall:
                self._set(state, False, f"{state.failures} checks in a row failed ({detail})")

    def _set(self, state: _Health, healthy: bool, detail: str) -> None:
        backend = state.backend
        backend.healthy = healthy  # type: ignore[attr-defined]
        backend.refresh()  # type: ignore[attr-defined]
        state.last_change = self._clock.seconds()
        what = "healthy" if healthy else "unhealthy"
        if healthy:
            self.log.info("Backend {backend} is healthy: {detail}", backend=backend.name,
                          detail=detail, what=what)
        else:
            self.log.warn("Backend {backend} is unhealthy: {detail}", backend=backend.name,
                          detail=detail, what=what)
        if self._slow_start is not None:
            if healthy and backend.available:
                self._slow_start.begin(backend)
            elif not healthy:
                self._slow_start.cancel(backend)
        notify(self.log, self._on_change, backend, what, detail)

    def __repr__(self) -> str:
        return (
            f"<HealthMonitor {self._check!r} every {self.interval:g}s,"
            f" {len(self._states)} backends{'' if self.running else ', stopped'}>"
        )
