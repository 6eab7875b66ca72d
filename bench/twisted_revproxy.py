"""Serve Twisted's stock ``twisted.web.proxy.ReverseProxyResource`` for the benchmark.

Usage::

    python bench/twisted_revproxy.py --port 8081 --upstream-port 8000

Every request is forwarded to ``http://UPSTREAM_HOST:UPSTREAM_PORT`` with the same
path. This is the unmodified Twisted class: it opens a new upstream connection per
request (it sends ``Connection: close`` upstream). The only change from a plain
``Site`` is that access logging is switched off, as it is for the other proxies in
the benchmark.
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="port to listen on")
    parser.add_argument("--interface", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--upstream-host", default="127.0.0.1")
    parser.add_argument("--upstream-port", type=int, required=True)
    args = parser.parse_args(argv)

    from twisted.internet import reactor
    from twisted.web import proxy, server

    class QuietSite(server.Site):
        """A Site that writes no access log (like ``access_log off``)."""

        def log(self, request):
            pass

    root = proxy.ReverseProxyResource(args.upstream_host, args.upstream_port, b"")
    site = QuietSite(root)
    site.noisy = False
    reactor.listenTCP(args.port, site, interface=args.interface, backlog=1024)
    sys.stderr.write(
        "twisted.web.proxy.ReverseProxyResource on %s:%d -> %s:%d (reactor %s)\n"
        % (
            args.interface,
            args.port,
            args.upstream_host,
            args.upstream_port,
            type(reactor).__name__,
        )
    )
    sys.stderr.flush()
    reactor.run()


if __name__ == "__main__":
    main()
