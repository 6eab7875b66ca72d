#!/usr/bin/env python3
"""Benchmark twistproxy's DNS front against ``twistd dns``, in one run.

Both serve the same zone (an SOA, an NS and an A record) on loopback, one
process each, and ``dnsperf`` (Debian's ``dnsperf``; installed with apt-get
if missing) sends them the same query for the A record over UDP for
``--duration`` seconds, with ``--outstanding`` queries in flight.  The
report gives queries per second and queries per CPU-second of the server
process, and the ratio of twistproxy's to ``twistd dns``'s.  twistproxy is
also measured answering a GSLB name (two servers in two regions, no health
check, placed by a ``cidr`` locator), which ``twistd dns`` has no
equivalent of.

Stdlib only, Python 3.9+; the processes it starts are stopped by PID.  See
bench/README.rst.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from run import CLK_TCK, HOST, REPO, Managed, ensure_tool, free_port, log  # noqa: E402

ZONE_PY = """\
zone = [
    SOA("example.test", mname="ns1.example.test", rname="hostmaster.example.test",
        serial=1, refresh=3600, retry=600, expire=604800, minimum=60, ttl=3600),
    NS("example.test", "ns1.example.test", ttl=3600),
    A("www.example.test", "192.0.2.80", ttl=3600),
]
"""

CONFIG = """\
[listeners.dns]
protocol = "dns"
endpoint = "udp:{port}:interface={host}"

[access_log]
path = ""

[upstreams.sites]
servers = [
    {{ url = "tcp://192.0.2.10:443", region = "eu-west" }},
    {{ url = "tcp://198.51.100.10:443", region = "us-east" }},
]

[locator]
type = "cidr"
networks = {{ "127.0.0.0/8" = "eu-west" }}

[dns]
rate_limit = 0

[[dns.zones]]
name = "example.test"
soa = {{ mname = "ns1", rname = "hostmaster" }}
records = [
    {{ name = "@", type = "NS", value = "ns1" }},
    {{ name = "www", type = "A", value = "192.0.2.80" }},
    {{ name = "gslb", type = "GSLB", upstream = "sites" }},
]
"""

# (server, query name) of each measurement, in order.
RUNS = (("twistd-dns", "www"), ("twistproxy", "www"), ("twistproxy", "gslb"))


def start(name, args, tmp):
    port = free_port()
    twistd = [args.python, "-c", "from twisted.scripts.twistd import run; run()",
              "-n", "--pidfile="]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if name == "twistd-dns":
        zone = os.path.join(tmp, "zone.py")
        with open(zone, "w") as f:
            f.write(ZONE_PY)
        cmd = twistd + ["dns", "--pyzone", zone, "-p", str(port), "-i", HOST]
    else:
        config = os.path.join(tmp, "dns.toml")
        with open(config, "w") as f:
            f.write(CONFIG.format(port=port, host=HOST))
        env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
        cmd = twistd + ["twistproxy", "--config", config]
    proc = Managed(name, cmd, os.path.join(tmp, name + ".log"), env=env, cwd=tmp)
    time.sleep(args.startup)
    if not proc.alive():
        raise SystemExit("%s did not start:\n%s" % (name, proc.log_tail()))
    return proc, port


def dnsperf(tool, port, query, duration, outstanding, tmp):
    path = os.path.join(tmp, "queries")
    with open(path, "w") as f:
        f.write("%s.example.test A\n" % query)
    out = Managed("dnsperf", [tool, "-s", HOST, "-p", str(port), "-d", path,
                              "-l", str(duration), "-q", str(outstanding)],
                  os.path.join(tmp, "dnsperf.log"))
    out.proc.wait(duration + 30)
    text = out.log_tail(200)
    out.stop()
    # The log holds every run so far: the last figures are this one's.
    completed = re.findall(r"Queries completed:\s+(\d+)", text)
    lost = re.findall(r"Queries lost:\s+(\d+)", text)
    if not completed:
        raise SystemExit("dnsperf failed:\n" + text)
    return int(completed[-1]), int(lost[-1]) if lost else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--outstanding", type=int, default=50)
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter of both servers (needs Twisted)")
    parser.add_argument("--startup", type=float, default=3.0,
                        help="seconds to let a server start")
    args = parser.parse_args()
    tool = ensure_tool("dnsperf", "dnsperf")
    rows = []
    with tempfile.TemporaryDirectory(prefix="dnsbench-") as tmp:
        for name, query in RUNS:
            proc, port = start(name, args, tmp)
            try:
                dnsperf(tool, port, query, 1, args.outstanding, tmp)  # warm-up
                before = proc.cpu_ticks()[0]
                started = time.monotonic()
                completed, lost = dnsperf(tool, port, query, args.duration,
                                          args.outstanding, tmp)
                elapsed = time.monotonic() - started
                cpu = (proc.cpu_ticks()[0] - before) / CLK_TCK
            finally:
                proc.stop()
            rows.append((name, query, completed, lost, completed / elapsed,
                         completed / cpu if cpu else float("nan")))
            log("%s %s: %d answered, %d lost" % (name, query, completed, lost))
    print("%-12s %-6s %10s %7s %10s %14s" % ("server", "name", "answered", "lost", "q/s",
                                            "q/CPU-second"))
    for name, query, completed, lost, qps, per_cpu in rows:
        print("%-12s %-6s %10d %7d %10.0f %14.0f" % (name, query, completed, lost, qps, per_cpu))
    base = rows[0][5]
    for name, query, _, _, _, per_cpu in rows[1:]:
        print("%s %s / twistd-dns www: %.2fx per CPU-second" % (name, query, per_cpu / base))


if __name__ == "__main__":
    main()
