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

With --h2, the client speaks HTTP/2 (h2c with prior knowledge) as h2load
does: each connection carries L{PER_CONNECTION} streams, L{IN_FLIGHT} at
once (h2load -m10), and the pooled backend connections answer them; the
figures are per stream.  The client's bytes are encoded once, beforehand,
so that only the proxy's work is counted.

With --cache, the route has the shared memory cache on and the backend
answers the first request only, with C{Cache-Control: max-age=3600}:
every request after it is a cache hit, answered by the proxy itself.

With --size, the backend's response bodies have that many bytes (95 by
default), handed to the proxy in reads of twistproxy.flow.READ_SIZE (or
--read) bytes at most, as its TCP transports read them: the cost of copying, allocating and collecting large
bodies, which on PyPy is most of a 64 KiB response's.

Run from a checkout with twistproxy importable::

    python bench/inmemory.py [--h2 | --cache] [--requests 20000] [--runs 5] [--profile | --each]
                             [--size 65536 [--read 65536]]
"""

from __future__ import annotations

import argparse
import time
from typing import Optional

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
# RESPONSE as the backend connection's reads hand it to the proxy: in one
# unless --size makes it larger than READ_SIZE.
READS = [RESPONSE]
# The same response, fresh for an hour: what --cache stores once.
CACHED_RESPONSE = RESPONSE.replace(
    b"Accept-Ranges: bytes\r\n", b"Accept-Ranges: bytes\r\nCache-Control: max-age=3600\r\n")
# When the clock of a --cache proxy starts: the responses' Date.
DATE = 1796569200.0


# Requests on one client connection (wrk keeps its connections open;
# twistproxy closes one after max_requests_per_connection, 1,000).
PER_CONNECTION = 500


def cached_config():
    """
    The configuration of L{MemoryProxy}'s quick-mode proxy, with the
    shared memory cache on its route.
    """
    from dataclasses import replace

    from twistproxy.config import RouteCache
    from twistproxy.testing import MemoryProxy

    config = MemoryProxy().config
    return replace(config, routes=tuple(
        replace(route, cache=RouteCache()) for route in config.routes))


def body_size(size: int, read: Optional[int] = None) -> None:
    """
    Make L{RESPONSE} carry a body of C{size} bytes, handed to the proxy in
    reads of at most C{read} bytes: by default, what the proxy's backend
    connections read at once (L{twistproxy.flow.READ_SIZE}).
    """
    global RESPONSE
    if read is None:
        from twistproxy.flow import READ_SIZE as read
    RESPONSE = RESPONSE.replace(b"Content-Length: 95", b"Content-Length: %d" % size)
    RESPONSE = RESPONSE[:-95] + b"x" * size
    READS[:] = [RESPONSE[i:i + read] for i in range(0, len(RESPONSE), read)]


def setup(cache: bool = False):
    """
    A proxy and its pooled backend connection, after one request; with
    C{cache}, the response to that request is stored and answers every
    later one.
    """
    from twistproxy.testing import MemoryProxy

    proxy = MemoryProxy(cached_config() if cache else None)
    if cache:
        proxy.reactor.advance(DATE)
    client = proxy.connect_client()
    client.send(REQUEST)
    backend = proxy.accept_backend()
    if cache:
        backend.send(CACHED_RESPONSE)
    else:
        backend_send(backend)(RESPONSE)
    if not client.received().endswith(RESPONSE[-95:]):
        raise SystemExit("the proxy did not forward the response")
    client.close()
    backend.transport.clear()
    return proxy, backend


def backend_send(backend):
    """
    What sends L{RESPONSE} from C{backend}: its own C{send} when one read
    holds it (the default: the harness then costs what it always did), or
    a function that sends L{READS} one by one.
    """
    if len(READS) == 1:
        return backend.send
    send = backend.send

    def send_reads(response):
        for data in READS:
            send(data)
    return send_reads


def run(proxy, backend, n: int) -> float:
    """
    CPU seconds for C{n} requests (a multiple of L{PER_CONNECTION}) through
    C{proxy} to C{backend}; with a cache in C{proxy}, C{backend} is not
    asked and every request is a hit.
    """
    bsend, btransport = backend_send(backend), backend.transport
    cached = proxy.cache is not None
    start = time.process_time()
    for _ in range(n // PER_CONNECTION):
        client = proxy.connect_client()
        csend, ctransport = client.send, client.transport
        if cached:
            for _ in range(PER_CONNECTION):
                csend(REQUEST)
                ctransport.clear()
        for _ in range(0 if cached else PER_CONNECTION):
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
    if proxy.cache is not None and proxy.cache.counts["hit"] < n:
        raise SystemExit("the proxy did not answer from its cache")
    return elapsed


# Streams sent at once on an HTTP/2 connection, each answered by its own
# pooled backend connection.
IN_FLIGHT = 10
H2_REQUEST = [
    (b":method", b"GET"), (b":path", b"/small"), (b":scheme", b"http"),
    (b":authority", b"127.0.0.1:8080"), (b"user-agent", b"h2load"),
    (b"accept", b"*/*"),
]
# What h2load asks for by default (-w 30 -W 30): windows so large that it
# never needs to send a WINDOW_UPDATE during a run.
H2_WINDOW = 2 ** 30 - 1
# The client's acknowledgement of the proxy's SETTINGS.
SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"


def h2_client_bytes() -> list:
    """
    What an HTTP/2 client sends on one connection, as one chunk per
    L{IN_FLIGHT} streams: the preface, settings and window first, then
    HEADERS frames only (GETs end their streams).  Every connection sends
    the same bytes, HPACK's dynamic table included.
    """
    from h2.config import H2Configuration
    from h2.connection import H2Connection
    from h2.settings import SettingCodes, Settings

    conn = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    conn.local_settings = Settings(client=True, initial_values={
        SettingCodes.INITIAL_WINDOW_SIZE: H2_WINDOW, SettingCodes.ENABLE_PUSH: 0,
    })
    conn.initiate_connection()
    conn.increment_flow_control_window(H2_WINDOW - 65535)
    chunks = []
    head = conn.data_to_send() + SETTINGS_ACK
    for _ in range(PER_CONNECTION // IN_FLIGHT):
        for _ in range(IN_FLIGHT):
            conn.send_headers(conn.get_next_available_stream_id(), H2_REQUEST, end_stream=True)
        chunks.append(head + conn.data_to_send())
        head = b""
    return chunks


def h2_connect(proxy, chunks):
    """
    An HTTP/2 client connection that has sent its first streams.
    """
    client = proxy.connect_client()
    client.send(chunks[0])
    # As a TLS transport does once ALPN has chosen: the codec reads the
    # connection directly.
    client.protocol = client.protocol.inner
    return client


def setup_h2():
    """
    A proxy serving HTTP/2 with prior knowledge, its L{IN_FLIGHT} pooled
    backend connections, and the client's bytes, after one connection.
    """
    from twistproxy.config import Listener, ProxyConfig, Route, Server, UpstreamGroup
    from twistproxy.testing import MemoryProxy

    proxy = MemoryProxy(ProxyConfig(
        listeners=(Listener("main", "tcp:8080", h2c=True),),
        upstreams={"app": UpstreamGroup(
            "app", (Server("http://127.0.0.1:8001", "http", "127.0.0.1", 8001),),
        )},
        routes=(Route("app"),),
    ))
    chunks = h2_client_bytes()
    client = h2_connect(proxy, chunks)
    backends = [proxy.accept_backend() for _ in range(IN_FLIGHT)]
    for backend in backends:
        backend.send(RESPONSE)
    if client.received().count(b"x" * 95) != IN_FLIGHT:
        raise SystemExit("the proxy did not forward the responses")
    client.close()
    for backend in backends:
        backend.transport.clear()
    del proxy.exchanges[:]
    return proxy, (chunks, backends)


def run_h2(proxy, client_and_backends, n: int) -> float:
    """
    CPU seconds for C{n} streams (a multiple of L{PER_CONNECTION}) through
    C{proxy}, L{IN_FLIGHT} at a time.
    """
    chunks, backends = client_and_backends
    backends = [(b.send, b.transport) for b in backends]
    rest = chunks[1:]
    start = time.process_time()
    for _ in range(n // PER_CONNECTION):
        client = h2_connect(proxy, chunks)
        csend, ctransport = client.send, client.transport
        for chunk in rest + [b""]:
            for bsend, btransport in backends:
                bsend(RESPONSE)
                btransport.clear()
            ctransport.clear()
            if chunk:
                csend(chunk)
        client.close()
        if len(proxy.exchanges) != PER_CONNECTION or proxy.exchanges[-1].status != 200:
            raise SystemExit("the proxy did not answer every stream")
        del proxy.exchanges[:]
    elapsed = time.process_time() - start
    if proxy.backend_attempts():
        raise SystemExit("the proxy did not reuse its backend connections")
    return elapsed


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--each", action="store_true", help="print every run, in order")
    p.add_argument("--size", type=int, default=95,
                   help="bytes of each response body (HTTP/1.1 only)")
    p.add_argument("--read", type=int, help="bytes per read from the backend "
                   "(default: twistproxy.flow.READ_SIZE)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--h2", action="store_true", help="HTTP/2 clients, as h2load -m10")
    mode.add_argument("--cache", action="store_true", help="every request a cache hit")
    args = p.parse_args(argv)
    if args.size != 95 or args.read:
        if args.h2 or args.cache:
            p.error("--size and --read are for HTTP/1.1 responses from the backend")
        body_size(args.size, args.read)
    if args.h2:
        prepare, measure = setup_h2, run_h2
    else:
        prepare, measure = (lambda: setup(args.cache)), run
    proxy, backend = prepare()
    measure(proxy, backend, PER_CONNECTION)  # warm-up
    if args.profile:
        import cProfile
        import pstats

        profile = cProfile.Profile()
        profile.runcall(measure, proxy, backend, args.requests)
        stats = pstats.Stats(profile)
        calls = sum(v[1] for v in stats.stats.values())
        print(f"{calls / args.requests:.0f} Python-level calls per request")
        stats.sort_stats("tottime").print_stats(25)
        return
    if args.each:
        done, cpu = PER_CONNECTION, 0.0
        for _ in range(args.runs):
            elapsed = measure(proxy, backend, args.requests)
            print(f"after {done:>9,} requests, {cpu:6.2f} CPU s: "
                  f"{elapsed / args.requests * 1e6:.1f} CPU µs per request")
            done, cpu = done + args.requests, cpu + elapsed
        return
    best = min(measure(proxy, backend, args.requests) for _ in range(args.runs))
    print(f"{best / args.requests * 1e6:.1f} CPU µs per request "
          f"(best of {args.runs} runs of {args.requests})")


if __name__ == "__main__":
    main()
