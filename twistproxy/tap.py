# -*- test-case-name: tests.test_tap -*-
"""
The twistd plugin: C{twistd -n twistproxy ...}.

Three ways to say what to run, exactly one of which must be given:

  - C{--config proxy.toml}: a configuration file (see docs/configuration.rst);
  - quick mode, C{--listen tcp:8080 --upstream http://127.0.0.1:8001
    [--upstream ...] [--cache [--cache-size 256m]]}: one listener (or
    several), one upstream group, every request to it, optionally through
    an in-memory shared cache;
  - C{--demo}: two small demo backends in the same process and a proxy in
    front of them on C{tcp:8080}.

C{--workers N} (or C{workers} in the file) runs the proxy in N worker
processes behind a master, L{twistproxy.workers.master.Master}.

The options and the signal handling are in L{twistproxy.signals}, which
the workers share; this module wires: the proxy itself is
L{twistproxy.service.ProxyService}.
"""

from __future__ import annotations

from twistproxy.signals import DEMO_BACKENDS, Options, Signals

__all__ = ["Options", "Signals", "makeService"]


def makeService(options: Options):
    from twisted.internet import reactor

    from twistproxy.service import ProxyService

    config = options.proxy_config
    if config.workers > 1:
        from twistproxy.workers.master import Master

        service = Master(config, reactor, config.workers, options.worker_args)
    else:
        service = ProxyService(config, reactor)
    Signals(reactor, service).setServiceParent(service)
    if options["demo"]:
        from twistproxy.demo import add_demo_backends

        add_demo_backends(service, reactor, DEMO_BACKENDS)
    return service
