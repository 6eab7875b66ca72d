# -*- test-case-name: tests.test_admin -*-
"""
The admin API: a small JSON interface to a running proxy, for operators and
their tools, on a listener of its own (the C{[admin]} table).

    - C{GET /status}: version, uptime, which configuration runs and
      since when, the listeners, the routes and the TLS certificates
      (with workers, as the first worker that answers has them);
    - C{GET /upstreams}: every upstream group and backend, with their
      health, ejection, draining and counters;
    - C{POST /upstreams/<group>/<backend>/drain} and C{.../undrain}: take a
      backend out of rotation for maintenance, and back;
    - C{POST /reload}: read the configuration and the TLS certificates
      again, as C{SIGHUP} does (C{409} when something was refused);
    - C{POST /cache/purge?url=...} (or C{prefix=}, C{tag=}): remove stored
      responses from the shared cache;
    - C{GET /metrics}: the Prometheus metrics (L{twistproxy.metrics});
    - C{GET /history}: the traffic of the last minutes and the backends'
      state changes (L{twistproxy.admin.history.view}), which the status
      page polls; C{GET /history/raw?end=SECOND} is the same as a digest
      that adds up, which the master of several workers asks each worker;
    - C{GET /}: the status page (L{twistproxy.admin.page});
    - C{GET /dns/txt}, C{PUT} and C{DELETE /dns/txt/<name>}: the TXT
      records of the DNS front set at run time (L{_dns_txt_body}), shared
      by every instance when C{[dns]} names a Redis (503 while it is out);
    - C{GET /dns/gslb?client=ADDRESS}: what each GSLB name answers a
      client there, and why;
    - C{GET /acme}: the certificates obtained by ACME: their names,
      expiry, next renewal, whether one is under way, failures in a row
      and last error (L{twistproxy.acme.schedule.Renewal.status});
    - C{POST /acme/renew?name=NAME}: renew the certificate for NAME now,
      even before it is due (C{202}: the result shows in C{GET /acme};
      C{409} while a renewal of it is under way).

Everything but C{/metrics} and the page answers JSON, errors included
(C{{"error": "..."}}).  With a token configured, every request must carry
C{Authorization: Bearer <token>}; the check comes before anything else, so
that a caller without it learns nothing, not even which paths exist.  Only
the page's static files, which hold no data, are served without it: the
page asks for the token and sends it with each of its own requests.

The API listens on loopback by default: it can take backends out of
service, so exposing it is a decision to make with a token.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from typing import Any, Dict, List, Optional, Tuple

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from twistproxy import _version
from twistproxy.admin import page
from twistproxy.admin.history import History, service_reader, view
from twistproxy.config import HeaderRules, Route
from twistproxy.dns.texts import LIFETIME, SharedStoreUnavailable
from twistproxy.dns.zone import owner_name
from twistproxy.metrics import ProxyMetrics
from twistproxy.net import authority
from twistproxy.net import parse_address

_JSON = b"application/json"


class _Answer(Exception):
    """
    Stop handling a request and answer with C{code} and C{body}.
    """

    def __init__(self, code: int, body: Dict[str, Any], headers: Tuple[Tuple[bytes, bytes], ...] = ()):
        super().__init__(code, body)
        self.code = code
        self.body = body
        self.headers = headers


def _format_address(address) -> Optional[str]:
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None:
        name = getattr(address, "name", None)
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        return name if name is not None else str(address)
    return authority(host, port)


# How values.py declares (name, value) pairs: a fixed response's fields,
# a query rewrite's parameters.
_PAIRS = "Tuple[Tuple[str, str], ...]"


def _plain(value: Any) -> Any:
    # A configuration value as JSON data: a table (a redirect, a mirror, a
    # header match) with all its settings, its pairs as a table.
    if dataclasses.is_dataclass(value):
        return {f.name: dict(getattr(value, f.name)) if f.type == _PAIRS
                else _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


def _route_view(route: Route) -> Dict[str, Any]:
    """
    What C{/status} shows of a route, so that it says what the route does:
    its name, hosts, path prefix, methods and upstream always, then every
    other setting the route gives a value other than its default (further
    conditions, split and sticky, redirect or fixed response, rewrites,
    overrides, mirror, cache).  Of its filters only their names, and of
    its header edits only the field names: their options and values may
    hold credentials.
    """
    shown: Dict[str, Any] = {
        "name": route.name or None,
        "hosts": list(route.hosts),
        "path_prefix": route.path_prefix,
        "methods": list(route.methods),
        "upstream": route.upstream,
    }
    for setting in dataclasses.fields(route):
        value = getattr(route, setting.name)
        if setting.name in shown or value == setting.default:
            continue
        if setting.name == "filters":
            shown["filters"] = [f.name for f in value]
        elif isinstance(value, HeaderRules):
            shown[setting.name] = {"remove": list(value.remove),
                                   "set": [name for name, _ in value.set],
                                   "add": [name for name, _ in value.add]}
        else:
            shown[setting.name] = _plain(value)
    return shown


def _dns_txt_handlers(resource: "AdminResource", segments: List[bytes]):
    if segments[1] == b"gslb":
        return (b"GET", b"HEAD"), {b"GET": resource._dns_gslb}
    if len(segments) == 2:
        return (b"GET", b"HEAD"), {b"GET": resource._dns_txt_list}
    return (b"PUT", b"DELETE"), {b"PUT": resource._dns_txt_set,
                                 b"DELETE": resource._dns_txt_remove}


def _dns_txt_body(request: Request, name: str, dns) -> Dict[str, Any]:
    """
    The body of C{PUT /dns/txt/<name>}: C{{"values": ["..."], "ttl": 60,
    "lifetime": 3600}} (C{ttl} and C{lifetime}, in seconds, optional), for
    a name inside one of the C{[dns]} zones.
    """
    owner = owner_name(name)
    if not any(owner == z.name or owner.endswith("." + z.name) for z in dns.zones):
        raise _Answer(404, {"error": f"{name!r} is in none of the DNS zones"})
    try:
        body = json.loads(request.content.read() or b"null")
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    values, ttl, lifetime = body.get("values"), body.get("ttl", 60), body.get("lifetime", LIFETIME)
    if (not isinstance(values, list) or not values
            or not all(isinstance(v, str) for v in values)
            or isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0
            or isinstance(lifetime, bool) or not isinstance(lifetime, (int, float))
            or not lifetime > 0):
        raise _Answer(400, {"error": 'the body must be {"values": ["..."], "ttl": 60, '
                                     '"lifetime": 3600} (ttl and lifetime optional)'})
    return {"values": values, "ttl": ttl, "lifetime": lifetime}


def _shared_store_out(failure: Failure):
    # Nothing changed: the other instances would not have seen it.
    failure.trap(SharedStoreUnavailable)
    raise _Answer(503, {"error": f"{failure.value}; nothing changed, try again"},
                  ((b"Retry-After", b"1"),))


class AdminResource(Resource):
    """
    The admin API of one L{ProxyService}, as a leaf resource that routes
    its own paths (so that unknown paths and wrong methods get JSON errors
    like everything else).
    """

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        service,
        token: str = "",
        metrics: Optional[ProxyMetrics] = None,
        clock: Optional[IReactorTime] = None,
        history: Optional[History] = None,
    ):
        """
        @param service: The L{twistproxy.service.ProxyService}.
        @param token: The bearer token every request must carry, or C{''}
            for none.
        @param metrics: What C{GET /metrics} exposes; without it, that path
            is not found.
        @param clock: Measures the uptime, from now; the service's reactor
            by default.
        @param history: This process's L{History}, for C{/history}; without
            it, C{/history} asks the service's C{history(end)} (the master
            of several workers) if it has one, and is not found otherwise.
        """
        super().__init__()
        self._service = service
        self._token = token.encode("utf-8")
        self._metrics = metrics
        self._clock = clock if clock is not None else service.reactor
        self._started = self._clock.seconds()
        self._digested: Optional[Tuple[Any, str]] = None
        self._seen: Optional[Tuple[Any, float]] = None
        self._history = history

    # -- dispatch -----------------------------------------------------------

    def render(self, request: Request):
        static = page.asset(b"/".join(request.postpath))
        if static is not None and request.method in (b"GET", b"HEAD"):
            return page.serve(request, *static)
        try:
            self._authorize(request)
            handler, args = self._route(request)
            return handler(request, *args)
        except _Answer as answer:
            return self._answer(request, answer.code, answer.body, answer.headers)
        except Exception:
            self.log.failure("admin API: {method} {path} failed",
                             method=request.method, path=request.path)
            return self._answer(request, 500, {"error": "internal error; see the proxy's log"})

    def _authorize(self, request: Request) -> None:
        if not self._token:
            return
        given = request.getHeader(b"authorization") or b""
        scheme, _, credentials = given.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self._token):
            return
        challenge = b'Bearer realm="twistproxy"'
        if given:
            challenge += b', error="invalid_token"'
        raise _Answer(401, {"error": "a valid bearer token is required"},
                      ((b"WWW-Authenticate", challenge),))

    def _route(self, request: Request):
        segments: List[bytes] = list(request.postpath)
        if len(segments) > 1 and segments[-1] == b"":
            segments.pop()  # /status/ is /status
        method = request.method
        if method == b"HEAD":
            method = b"GET"
        allowed: Tuple[bytes, ...]
        args: Tuple[str, ...] = ()
        if segments == [b"status"]:
            allowed, handlers = (b"GET", b"HEAD"), {b"GET": self._status}
        elif segments == [b"upstreams"]:
            allowed, handlers = (b"GET", b"HEAD"), {b"GET": self._upstreams}
        elif segments == [b"metrics"] and self._metrics is not None:
            allowed, handlers = (b"GET", b"HEAD"), {b"GET": self._metrics_page}
        elif segments == [b"history"] and (
                self._history is not None or hasattr(self._service, "history")):
            allowed, handlers = (b"GET", b"HEAD"), {b"GET": self._history_view}
        elif segments == [b"history", b"raw"] and self._history is not None:
            allowed, handlers = (b"GET", b"HEAD"), {b"GET": self._history_digest}
        elif segments == [b"acme"] and getattr(self._service, "renewals", None):
            allowed, handlers = (b"GET", b"HEAD"), {b"GET": self._acme}
        elif segments == [b"acme", b"renew"] and getattr(self._service, "renewals", None):
            allowed, handlers = (b"POST",), {b"POST": self._acme_renew}
        elif segments == [b"reload"]:
            allowed, handlers = (b"POST",), {b"POST": self._reload}
        elif segments == [b"cache", b"purge"] and getattr(self._service, "cache", None):
            allowed, handlers = (b"POST",), {b"POST": self._purge}
        elif (len(segments) == 4 and segments[0] == b"upstreams"
              and segments[3] in (b"drain", b"undrain")):
            allowed = (b"POST",)
            handlers = {b"POST": self._drain if segments[3] == b"drain" else self._undrain}
            try:
                args = (segments[1].decode("utf-8"), segments[2].decode("utf-8"))
            except UnicodeDecodeError:
                raise _Answer(404, {"error": "no such upstream group or backend"})
        elif (segments[:2] == [b"dns", b"txt"] and len(segments) <= 3
              or segments == [b"dns", b"gslb"]) and getattr(
                self._service.config, "dns", None) is not None:
            allowed, handlers = _dns_txt_handlers(self, segments)
            args = tuple(segment.decode("latin-1") for segment in segments[2:])
        else:
            raise _Answer(404, {"error": "not found", "path": request.path.decode("latin-1")})
        handler = handlers.get(method)
        if handler is None:
            raise _Answer(405, {"error": f"method not allowed; use {b', '.join(allowed).decode()}"},
                          ((b"Allow", b", ".join(allowed)),))
        return handler, args

    def _answer(self, request: Request, code: int, body: Any,
                headers: Tuple[Tuple[bytes, bytes], ...] = ()) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", _JSON)
        request.setHeader(b"Cache-Control", b"no-store")
        for name, value in headers:
            request.setHeader(name, value)
        return json.dumps(body, default=str).encode("utf-8") + b"\n"

    # -- endpoints ----------------------------------------------------------

    def _status(self, request: Request):
        service = self._service
        config = service.config
        listeners = []
        for listener in config.listeners:
            running = service.listeners.get(listener.name)
            port = getattr(running, "port", None)
            listeners.append({
                "name": listener.name,
                "endpoint": listener.endpoint,
                "address": _format_address(port.getHost()) if port is not None else None,
                "tls": listener.tls is not None,
            })
        status = {
            "version": _version.__version__,
            "uptime": round(self._clock.seconds() - self._started, 3),
            "config": {"source": config.source, "digest": self._digest(config),
                       "loaded": self._loaded(config)},
            "listeners": listeners,
            **({"workers": self._service.worker_status()}
               if hasattr(self._service, "worker_status") else {}),
            "routes": [_route_view(route) for route in config.routes],
        }
        # The certificates a process presents; the master of several
        # workers asks them (a Deferred).
        certificates = getattr(self._service, "certificates", None)
        if certificates is None:
            return self._answer(request, 200, status)
        d = maybeDeferred(certificates)
        return self._when_ready(request, d.addCallback(
            lambda found: (200, {**status, "certificates": found})))

    def _digest(self, config) -> str:
        # Which configuration runs: the hash of the file's bytes, as
        # `sha256sum` shows it, taken when it was read; a configuration
        # made in code is hashed by its value, once.
        if config.digest:
            return config.digest
        if self._digested is None or self._digested[0] is not config:
            self._digested = (
                config, "sha256:" + hashlib.sha256(repr(config).encode("utf-8")).hexdigest())
        return self._digested[1]

    def _loaded(self, config) -> float:
        # When the running configuration was read (the clock's seconds):
        # the service says so when it can; otherwise (the master of
        # several workers) it is when this API first saw it, at start or
        # at the first status asked after a reload.
        when = getattr(self._service, "config_loaded", None)
        if when is not None:
            return when
        if self._seen is None:
            self._seen = (config, self._started)
        elif self._seen[0] is not config:
            self._seen = (config, self._clock.seconds())
        return self._seen[1]

    def _upstreams(self, request: Request):
        d = maybeDeferred(self._service.status)
        return self._when_ready(request, d.addCallback(lambda status: (200, status)))

    def _acme(self, request: Request) -> bytes:
        return self._answer(request, 200, {
            "certificates": [renewal.status() for renewal in self._service.renewals]})

    def _acme_renew(self, request: Request) -> bytes:
        name = owner_name((request.args.get(b"name") or [b""])[0].decode("latin-1"))
        if not name:
            raise _Answer(400, {"error": "name the certificate: /acme/renew?name=NAME"})
        found = [r for r in self._service.renewals if name in map(owner_name, r.names)]
        if not found:
            raise _Answer(404, {"error": f"no ACME certificate for {name!r}"})
        renewal = found[0]
        if renewal.renewing:
            raise _Answer(409, {"error": f"a renewal for {name!r} is under way",
                                "names": list(renewal.names)})
        self.log.info("admin API: renewal of the certificate for {names} asked for",
                      names=", ".join(renewal.names))
        renewal.renew(forced=True)
        return self._answer(request, 202, {"names": list(renewal.names), "renewing": True})

    def _history_view(self, request: Request):
        end = int(self._clock.seconds())
        if self._history is not None:
            return self._answer(request, 200, view(self._history.digest(end)))
        d = maybeDeferred(self._service.history, end)
        return self._when_ready(request, d.addCallback(lambda digest: (200, view(digest))))

    def _history_digest(self, request: Request) -> bytes:
        assert self._history is not None
        end = request.args.get(b"end", [b""])[0]
        try:
            when = int(end) if end else None
        except ValueError:
            raise _Answer(400, {"error": "end must be a second of the clock, as an integer"})
        return self._answer(request, 200, self._history.digest(when))

    def _dns_gslb(self, request: Request) -> bytes:
        client = (request.args.get(b"client") or [b""])[0].decode("latin-1")
        if parse_address(client) is None:
            raise _Answer(400, {"error": "give the client's address: /dns/gslb?client=ADDRESS"})
        fronts = [listener.factory for listener in self._service.listeners.values()
                  if hasattr(listener.factory, "explain")]
        names = fronts[0].explain(client) if fronts else []
        return self._answer(request, 200, {"client": client, "names": names})

    def _dns_txt_list(self, request: Request) -> bytes:
        now = self._service.reactor.seconds()
        return self._answer(request, 200, {"records": {
            name: {"values": list(values), "ttl": ttl, "expires_in": round(expires - now, 3)}
            for name, (values, ttl, expires) in self._service.dns_texts.items().items()}})

    def _dns_txt_set(self, request: Request, name: str):
        body = _dns_txt_body(request, name, self._service.config.dns)
        d = self._service.dns_texts.set(name, body["values"], body["ttl"], body["lifetime"])

        def done(_):
            self.log.info("admin API: TXT records of {name} set", name=name)
            return 200, {"name": owner_name(name), **body}

        return self._when_ready(request, d.addCallbacks(done, _shared_store_out))

    def _dns_txt_remove(self, request: Request, name: str):
        def done(found: bool):
            if not found:
                raise _Answer(404, {"error": f"no TXT records were set for {name!r}"})
            self.log.info("admin API: TXT records of {name} removed", name=name)
            return 200, {"name": owner_name(name), "removed": True}

        d = self._service.dns_texts.remove(name)
        return self._when_ready(request, d.addCallbacks(done, _shared_store_out))

    def _drain(self, request: Request, group: str, backend: str) -> bytes:
        return self._set_draining(request, group, backend, True)

    def _undrain(self, request: Request, group: str, backend: str) -> bytes:
        return self._set_draining(request, group, backend, False)

    def _set_draining(self, request: Request, group: str, backend: str, draining: bool):
        def done(_):
            self.log.info("admin API: backend {backend} of {group} {what}",
                          backend=backend, group=group,
                          what="draining" if draining else "back in rotation")
            return 200, {"upstream": group, "backend": backend, "draining": draining}

        def unknown(f: Failure):
            f.trap(KeyError)
            # The service says which is missing, the group or the backend.
            raise _Answer(404, {"error": f.value.args[0], "upstream": group, "backend": backend})

        d = maybeDeferred(self._service.drain, group, backend, draining)
        return self._when_ready(request, d.addCallbacks(done, unknown))

    def _reload(self, request: Request):
        # Configuration and certificates, as SIGHUP does.
        reload = getattr(self._service, "hangup", None)
        what = "configuration" if reload is not None else "certificates"
        d = maybeDeferred(reload if reload is not None else self._service.reload_certificates)

        def done(problems):
            # A refused reload is no success, for tools that check the
            # status (curl --fail): the file or a certificate conflicts
            # with what can run, and the running one stays.
            problems = [str(p) for p in problems or ()]
            return 409 if problems else 200, {
                "reloaded": what, "ok": not problems, "problems": problems}

        def failed(f: Failure):
            self.log.failure("admin API: reloading the {what} failed", f, what=what)
            return 500, {"reloaded": what, "ok": False, "problems": [f.getErrorMessage()]}

        return self._when_ready(request, d.addCallbacks(done, failed))

    def _metrics_page(self, request: Request):
        metrics = self._metrics
        assert metrics is not None

        def page(exposition: bytes) -> bytes:
            request.setHeader(b"Content-Type", metrics.content_type.encode("ascii"))
            request.setHeader(b"Cache-Control", b"no-store")
            return exposition

        return self._when_ready(request, maybeDeferred(metrics.exposition).addCallback(page))

    def _when_ready(self, request: Request, d: Deferred):
        """
        Answer with what C{d} fires with: a page (bytes, its headers set) or
        C{(code, body)}.  A single process has it at once; several workers
        (L{twistproxy.workers}) are asked over their sockets, and then the
        answer waits for them.
        """
        outcome: List[Any] = []
        d.addCallbacks(outcome.append, lambda f: outcome.append(self._failed(request, f)))
        if outcome:
            return self._page(request, outcome[0])
        gone: List[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def answer(_):
            if not gone:
                request.write(self._page(request, outcome[0]))
                request.finish()

        d.addCallback(answer)
        return NOT_DONE_YET

    def _failed(self, request: Request, f: Failure) -> Tuple[int, Dict[str, Any], Tuple]:
        if f.check(_Answer):
            answer = f.value
            return answer.code, answer.body, answer.headers
        self.log.failure("admin API: {method} {path} failed", f,
                         method=request.method, path=request.path)
        return 500, {"error": "internal error; see the proxy's log"}, ()

    def _page(self, request: Request, outcome) -> bytes:
        if isinstance(outcome, bytes):
            return outcome
        return self._answer(request, *outcome)

    def _purge(self, request: Request):
        """
        Remove stored responses by C{url}, C{prefix} (of the cache key,
        which starts with the URL) or C{tag}: exactly one of them.
        """
        cache = self._service.cache
        given = {k: v[0] for k, v in request.args.items() if k in (b"url", b"prefix", b"tag")}
        if len(given) != 1 or len(request.args) != 1:
            raise _Answer(400, {"error": "give exactly one of url, prefix or tag"})
        (kind, value), = given.items()
        if kind == b"url":
            d = cache.purge_url(value)
        elif kind == b"prefix":
            d = cache.purge(value)
        else:
            d = cache.purge_tag(value)
        self.log.info("admin API: cache purge by {kind} {value}",
                      kind=kind.decode(), value=value.decode("latin-1"))
        d.addCallback(lambda n: (200, {"purged": n, kind.decode(): value.decode("latin-1")}))
        return self._when_ready(request, d)


class _QuietSite(Site):
    """
    A site that writes no access log: scrapes every few seconds would drown
    the proxy's own log.  It keeps its L{History} sampling while it
    listens.
    """

    noisy = False
    displayTracebacks = False

    def __init__(self, resource: AdminResource, history: Optional[History] = None):
        super().__init__(resource)
        self.history = history

    def log(self, request: Request) -> None:
        pass

    def startFactory(self) -> None:
        super().startFactory()
        if self.history is not None:
            self.history.start()

    def stopFactory(self) -> None:
        if self.history is not None:
            self.history.stop()
        super().stopFactory()


def admin_site(service, admin_config, clock: IReactorTime,
               metrics: Optional[ProxyMetrics] = None) -> Site:
    """
    The admin API as a protocol factory to listen with.

    @param admin_config: The L{twistproxy.config.Admin} table (its token).
    @param metrics: The service's L{ProxyMetrics}, or what else serves
        C{/metrics} (the master of several workers); a proxy that forwards
        (has a C{forwarder}) and counts keeps a L{History} of them for the
        status page.
    """
    history = None
    if isinstance(metrics, ProxyMetrics) and hasattr(service, "forwarder"):
        history = History(clock, service_reader(service, metrics, clock))
    return _QuietSite(AdminResource(service, admin_config.token, metrics, clock, history), history)
