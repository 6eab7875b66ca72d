# -*- test-case-name: tests.test_tap -*-
"""
What every process of the proxy shares: its command line and its signals.

L{Options} are the options of C{twistd twistproxy} (see L{twistproxy.tap}),
which a worker process (L{twistproxy.workers.worker}) parses too, from the
arguments its master passes on; L{Signals} is how a running proxy, or a
master of workers, answers SIGHUP, SIGUSR1 and SIGTERM.  Both the twistd
plugin and the workers import this module; it imports neither.
"""

from __future__ import annotations

import select
import signal
import sys
from dataclasses import replace
from typing import List, Optional

from twisted.application.service import Service
from twisted.python import usage

from twistproxy.config import ConfigError, ProxyConfig, load, quick_config, workers_count
from twistproxy.build import validate

DEMO_BACKENDS = ("tcp:8081:interface=127.0.0.1", "tcp:8082:interface=127.0.0.1")


#: The class of the proxy's own reactor, by name.
OWN_REACTOR = "twistproxy.reactor.EPollReactor"


def choose_reactor(qualified: Optional[str] = None) -> None:
    """
    Install the proxy's reactor, L{twistproxy.reactor.EPollReactor}, or
    the reactor class named C{qualified}, unless a reactor is installed
    already (chosen with C{twistd --reactor}, or imported by the program).
    Without epoll on the platform, and nothing named, Twisted's default
    stays.
    """
    if "twisted.internet.reactor" in sys.modules:
        return
    if qualified is not None:
        from twisted.internet.main import installReactor
        from twisted.python.reflect import namedAny

        installReactor(namedAny(qualified)())
    elif hasattr(select, "epoll"):
        from twistproxy.reactor import install

        install()


def reactor_name(reactor) -> str:
    """
    The qualified name of C{reactor}'s class, for L{choose_reactor}.
    """
    cls = type(reactor)
    return f"{cls.__module__}.{cls.__qualname__}"


class Options(usage.Options):
    synopsis = "[--config FILE | --listen ENDPOINT --upstream URL ... | --demo]"
    longdesc = (
        "Run the twistproxy reverse proxy. Give a TOML configuration file "
        "with --config, or use quick mode: one or more --listen endpoints "
        "(any Twisted server endpoint string, e.g. tcp:8080) and one or "
        "more --upstream URLs, balanced round robin. --demo starts two demo "
        "backends and a proxy in front of them on tcp:8080."
    )
    optParameters = [
        ["config", "c", None, "Path of a TOML configuration file."],
        ["access-log", None, None,
         "Quick mode and --demo: where the access log goes: 'stdout' "
         "(default), a file path, or 'off'."],
        ["workers", "w", None,
         "How many worker processes serve the listeners: a number, or 'auto' "
         "for one per CPU core (default: the configuration's 'workers', else 1)."],
        ["cache-size", None, None,
         "Quick mode: the byte budget of the --cache memory store, e.g. 256m "
         "(default 64m)."],
    ]
    optFlags = [
        ["demo", None, "Start two demo backends and a proxy in front of them."],
        ["cache", None, "Quick mode: cache responses (RFC 9111 shared cache) in memory."],
    ]

    def __init__(self):
        super().__init__()
        self["listen"] = []
        self["upstream"] = []

    def opt_listen(self, endpoint: str) -> None:
        """
        A Twisted server endpoint string to listen on, e.g. tcp:8080 or
        tcp:8443:interface=127.0.0.1 (quick mode and --demo; repeatable).
        """
        self["listen"].append(endpoint)

    def opt_upstream(self, url: str) -> None:
        """
        A backend URL, http://host:port (quick mode; repeatable).
        """
        self["upstream"].append(url)

    def postOptions(self) -> None:
        # Here, while twistd has not yet imported the reactor it runs.
        choose_reactor()
        modes = [m for m in ("config", "upstream", "demo") if self[m]]
        if len(modes) != 1:
            raise usage.UsageError(
                "give exactly one of --config, --upstream (quick mode) or --demo"
            )
        if self["cache-size"] is not None and not self["cache"]:
            raise usage.UsageError("--cache-size goes with --cache")
        if self["config"]:
            if self["listen"] or self["access-log"] or self["cache"]:
                raise usage.UsageError(
                    "--listen, --access-log and --cache go with quick mode or --demo; "
                    "with --config, set them in the file"
                )
            try:
                self.proxy_config: ProxyConfig = load(self["config"])
                self.check(self.proxy_config)
            except ConfigError as e:
                raise usage.UsageError(str(e))
            self._workers(None)
            return
        listen: List[str] = self["listen"] or ["tcp:8080"]
        upstreams = self["upstream"]
        if self["demo"]:
            upstreams = [
                "http://127.0.0.1:" + e.split(":")[1] for e in DEMO_BACKENDS
            ]
        access_log = self["access-log"] or "stdout"
        try:
            cache_size = None
            if self["cache"]:
                cache_size = self["cache-size"] or "64m"
            self.proxy_config = quick_config(
                listen, upstreams, access_log="" if access_log == "off" else access_log,
                cache_size=cache_size,
            )
            self.check(self.proxy_config)
        except ConfigError as e:
            raise usage.UsageError(str(e))
        self._workers(
            [a for e in listen for a in ("--listen", e)]
            + [a for u in upstreams for a in ("--upstream", u)]
            + ["--access-log", access_log])

    def check(self, config: ProxyConfig) -> None:
        """
        Check C{config} as the proxy would at start-up.

        @raises ConfigError: naming the first problem.
        """
        validate(config)

    def _workers(self, worker_args: Optional[List[str]]) -> None:
        """
        Apply C{--workers} and check that the listeners can be shared.

        @param worker_args: The options a worker runs with (quick mode and
            --demo), or C{None} when it reads the configuration file.
        """
        self.worker_args = worker_args
        count = self["workers"]
        try:
            if count is not None:
                self.proxy_config = replace(self.proxy_config, workers=workers_count(
                    int(count) if count.isdigit() else count, "--workers"))
            if self.proxy_config.workers > 1:
                check_shareable(self.proxy_config)
        except ConfigError as e:
            raise usage.UsageError(str(e))


class Signals(Service):
    """
    The proxy's signals while it runs: SIGHUP reloads the configuration
    and the TLS certificates, SIGUSR1 reopens the access log, and a second SIGTERM
    during a graceful shutdown ends it at once (the first one starts it,
    as usual under twistd).
    """

    def __init__(self, reactor, proxy):
        self._reactor = reactor
        self._proxy = proxy
        self._previous = {}
        self._terminating = False

    def privilegedStartService(self) -> None:
        # twistd calls this before any listener starts: a SIGHUP sent as
        # soon as the proxy says it listens must not end it (the default
        # action of SIGHUP and SIGUSR1).
        super().privilegedStartService()
        self._install()

    def startService(self) -> None:
        super().startService()
        self._install()
        # A reactor that starts running installs its own SIGTERM handler
        # (twistd starts the services before): take SIGTERM back then, or
        # a second one would not end the graceful shutdown.
        self._reactor.callWhenRunning(self._take_term)

    def _take_term(self) -> None:
        if self.running:
            signal.signal(signal.SIGTERM, self._terminate)

    def _install(self) -> None:
        handlers = {"SIGHUP": self._hangup, "SIGUSR1": self._user1, "SIGTERM": self._terminate}
        for name, handler in handlers.items():
            number = getattr(signal, name, None)
            if number is not None and number not in self._previous:
                self._previous[number] = signal.signal(number, handler)

    def _hangup(self, signum, frame) -> None:
        self._reactor.callFromThread(self._proxy.hangup)

    def _user1(self, signum, frame) -> None:
        self._reactor.callFromThread(self._proxy.reopen_access_log)

    def _terminate(self, signum, frame) -> None:
        if self._terminating:
            self._reactor.callFromThread(self._proxy.stop_now)
        else:
            self._terminating = True
            self._reactor.callFromThread(self._reactor.stop)

    def stopService(self):
        # Keep SIGTERM ours until the process ends: the second one must
        # still cut the graceful shutdown short.
        for number, previous in self._previous.items():
            if number != getattr(signal, "SIGTERM", None) and previous is not None:
                signal.signal(number, previous)
        return super().stopService()


# Endpoint types whose sockets the master can bind (or has from systemd) and
# pass on.
SHAREABLE = ("tcp", "tcp6", "systemd")


def check_shareable(config: ProxyConfig) -> None:
    """
    Refuse a configuration that workers cannot serve: a listener whose
    endpoint type the master cannot bind and pass on, or ACME certificates
    ordered on demand (the master orders for its workers, and only they
    see the names that clients ask for).

    @raises ConfigError: naming the listener's endpoint, or
        C{acme.on_demand}.
    """
    if config.acme is not None and config.acme.on_demand is not None:
        raise ConfigError("acme.on_demand", "needs a single process (workers = 1) for now",
                          config.source)
    for listener in config.listeners:
        kind = listener.endpoint.split(":", 1)[0].strip().lower()
        if kind not in SHAREABLE:
            raise ConfigError(
                f"listeners.{listener.name}.endpoint",
                f"{kind}: endpoints cannot be shared with worker processes; use a tcp:, "
                f"tcp6: or systemd: endpoint, or run a single process (workers = 1)",
                config.source,
            )
