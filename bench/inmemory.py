#!/usr/bin/env python3
"""
The proxy's own CPU time per small keep-alive request, in memory.

A L{twistproxy.testing.MemoryProxy} (the assembler's wiring of a quick-mode
proxy: one listener, one upstream, one route) on memory transports: client
connections of L{PER_CONNECTION} requests each (below the default
C{max_requests_per_connection}) and one pooled backend connection carry N
requests and responses, and the process CPU time per request is reported,
best of several runs.  No sockets, no reactor loop: what is left is the
Python work of parsing, forwarding and building both heads, which is what
the hot-path work of issue 17 changes.  With --profile, one run goes
through cProfile and the top functions and call counts per request are
printed.  With --each, every run's figure is printed in order, with the
requests and CPU seconds before it: under PyPy, the JIT's warm-up.

Run from a checkout with twistproxy importable::

    python bench/inmemory.py [--requests 20000] [--runs 5] [--profile | --each]
"""

from __future__ import annotations

import argparse
import time

REQUEST = (
    b"GET /small HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n"
    b"Accept: */*\r\n\r\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n"
    b"Date: Sun, 06 Dec 2026 15:00:00 GMT\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 95\r\nLast-Modified: Sun, 06 Dec 2026 14:00:00 GMT\r\n"
    b"Connection: keep-alive\r\nETag: \"6750a0b0-5f\"\r\nAccept-Ranges: bytes\r\n\r\n"
    + b"x" * 95
)


# Requests on one client connection (wrk keeps its connections open;
# twistproxy closes one after max_requests_per_connection, 1,000).
PER_CONNECTION = 500


def setup():
    """
    A proxy and its pooled backend connection, after one request.
    """
    from twistproxy.testing import MemoryProxy

    proxy = MemoryProxy()
    client = proxy.connect_client()
    client.send(REQUEST)
    backend = proxy.accept_backend()
    backend.send(RESPONSE)
    if not client.received().endswith(b"x" * 95):
        raise SystemExit("the proxy did not forward the response")
    client.close()
    backend.transport.clear()
    return proxy, backend


def run(proxy, backend, n: int) -> float:
    """
    CPU seconds for C{n} requests (a multiple of L{PER_CONNECTION}) through
    C{proxy} to C{backend}.
    """
    bsend, btransport = backend.send, backend.transport
    start = time.process_time()
    for _ in range(n // PER_CONNECTION):
        client = proxy.connect_client()
        csend, ctransport = client.send, client.transport
        for _ in range(PER_CONNECTION):
            csend(REQUEST)
            bsend(RESPONSE)
            ctransport.clear()
            btransport.clear()
        client.close()
        # MemoryProxy keeps every finished exchange for tests to read; a
        # running proxy keeps none, and the garbage collector's passes
        # over a growing list would be counted as the proxy's work.
        del proxy.exchanges[:]
    elapsed = time.process_time() - start
    if proxy.backend_attempts():
        raise SystemExit("the proxy did not reuse its backend connection")
    return elapsed


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--each", action="store_true", help="print every run, in order")
    args = p.parse_args(argv)
    proxy, backend = setup()
    run(proxy, backend, PER_CONNECTION)  # warm-up
    if args.profile:
        import cProfile
        import pstats

        profile = cProfile.Profile()
        profile.runcall(run, proxy, backend, args.requests)
        stats = pstats.Stats(profile)
        calls = sum(v[1] for v in stats.stats.values())
        print(f"{calls / args.requests:.0f} Python-level calls per request")
        stats.sort_stats("tottime").print_stats(25)
        return
    if args.each:
        done, cpu = PER_CONNECTION, 0.0
        for _ in range(args.runs):
            elapsed = run(proxy, backend, args.requests)
            print(f"after {done:>9,} requests, {cpu:6.2f} CPU s: "
                  f"{elapsed / args.requests * 1e6:.1f} CPU µs per request")
            done, cpu = done + args.requests, cpu + elapsed
        return
    best = min(run(proxy, backend, args.requests) for _ in range(args.runs))
    print(f"{best / args.requests * 1e6:.1f} CPU µs per request "
          f"(best of {args.runs} runs of {args.requests})")


if __name__ == "__main__":
    main()
