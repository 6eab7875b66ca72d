#!/usr/bin/env python3
"""Benchmark twistproxy against nginx and twisted.web.proxy, in one run.

Starts an origin (its own nginx), then each selected proxy in turn (one worker
each), drives it with wrk through three scenarios and reports requests/sec,
latency, errors and requests per CPU-second of the proxy process.

With --workers 1,2,auto, nginx and twistproxy are run once per worker count
(nginx with as many worker_processes), and the report adds how requests/sec
scale with the number of workers.

Stdlib only, Python 3.9+.  See bench/README.rst and docs/performance.rst.

Only loopback addresses are used; every process this script starts is stopped by
PID when it ends, including on Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
HOST = "127.0.0.1"

ALL_PROXIES = ("nginx", "twisted", "twistproxy")
SCENARIOS = {
    # name: (path, keep-alive?, description)
    "ka-small": ("/small", True, "keep-alive, small response"),
    "ka-64k": ("/64k", True, "keep-alive, 64 KiB response"),
    "close-small": ("/small", False, "new connection per request, small response"),
    # HTTPS (opt-in: --https): the proxy terminates TLS with the same
    # generated P-256 certificate; the origin stays plain HTTP.
    "tls-ka-small": ("/small", True, "HTTPS keep-alive, small response"),
    "tls-handshakes": (
        "/small", False, "HTTPS, new connection (full TLS handshake) per request, small response"
    ),
    # HTTP/2 over TLS (ALPN h2), driven by h2load instead of wrk; opt-in
    # through --scenarios only (--https does not add it).
    "tls-h2": (
        "/small", True,
        "HTTP/2 over TLS (ALPN h2), h2load -c10 -m10: 10 connections x 10 streams, small response",
    ),
    # TCP relaying (opt-in: --tcp): wrk's HTTP through a protocol = "tcp"
    # listener (nginx: its stream module), so every request is a round trip
    # through the relay; the proxy never parses the bytes.
    "tcp-small": ("/small", True, "TCP relay, keep-alive small HTTP round trips"),
    "tcp-1conn-1m": (
        "/1m", True, "TCP relay, one connection (wrk -c1), 1 MiB responses back to back: MB/s",
    ),
}
TCP_SCENARIOS = ("tcp-small", "tcp-1conn-1m")
# Connections of the scenarios that do not use --connections.
SCENARIO_CONNECTIONS = {"tcp-1conn-1m": 1}
# Proxies that relay TCP here (twisted.web.proxy is HTTP only).
TCP_PROXIES = ("nginx", "twistproxy")
# The shared cache (opt-in: --cache): nginx with proxy_cache and twistproxy
# with cache = true, both on these paths only; hits of a small and a 64 KiB
# response, and a response the cache must not store (every request a
# forwarded miss through the cache).
SCENARIOS.update({
    "cache-small": ("/cached/small", True, "keep-alive, small response, cache hit"),
    "cache-64k": ("/cached/64k", True, "keep-alive, 64 KiB response, cache hit"),
    "cache-miss-small": (
        "/nostore/small", True, "keep-alive, small no-store response through the cache (miss)"
    ),
})
CACHE_SCENARIOS = ("cache-small", "cache-64k", "cache-miss-small")
# Proxies with a cache to turn on.
CACHE_PROXIES = ("nginx", "twistproxy")
# TLS sessions (opt-in through --scenarios): one client, openssl s_time,
# opening connection after connection and fetching /small with HTTP/1.0 on
# each; with -new every connection has a full handshake, with -reuse each
# resumes the session of the first (TLS 1.3 tickets, or TLS 1.2 session
# ids).  The certificate's key type is --tls-key (ECDSA P-256 or RSA 2048).
SCENARIOS.update({
    "tls-session-new": (
        "/small", False, "HTTPS, openssl s_time -new: one client, a full handshake per connection",
    ),
    "tls-session-reused": (
        "/small", False,
        "HTTPS, openssl s_time -reuse: one client, every connection resumes the first's session",
    ),
})
STIME_SCENARIOS = ("tls-session-new", "tls-session-reused")
TLS_SCENARIOS = ("tls-ka-small", "tls-handshakes", "tls-h2") + STIME_SCENARIOS
# Scenarios measured with h2load rather than wrk.
H2_SCENARIOS = ("tls-h2",)
H2_CONNECTIONS = 10
H2_STREAMS = 10
# Memory (opt-in through --scenarios): the proxy's resident memory with
# many idle client connections open; not a wrk run (see measure_memory).
SCENARIOS.update({
    "mem-idle": ("/small", True, "RSS with --idle-connections idle keep-alive HTTP/1.1 connections"),
    "mem-h2": ("/small", True, "RSS with --h2-connections idle HTTP/2 connections (TLS, ALPN h2)"),
})
MEMORY_SCENARIOS = ("mem-idle", "mem-h2")
# Scenarios that need the proxies' TLS listeners.
NEEDS_TLS = TLS_SCENARIOS + ("mem-h2",)
PLAIN_SCENARIOS = tuple(
    s for s in SCENARIOS
    if s not in TLS_SCENARIOS + TCP_SCENARIOS + CACHE_SCENARIOS + MEMORY_SCENARIOS
)
# What --https adds (the wrk HTTPS scenarios).
HTTPS_FLAG_SCENARIOS = tuple(
    s for s in TLS_SCENARIOS if s not in H2_SCENARIOS + STIME_SCENARIOS
)
# Proxies that can terminate TLS (twisted.web.proxy is left out of the HTTPS
# scenarios).
TLS_PROXIES = ("nginx", "twistproxy")
SMALL_BODY = (
    "twistproxy bench: a small response body, about one hundred bytes long, "
    "for the small scenario.\n"
)
BIG_SIZE = 64 * 1024
MEGA_SIZE = 1024 * 1024
# The bodies the origin serves as static files, by path.
FILE_SIZES = {"/64k": BIG_SIZE, "/1m": MEGA_SIZE}

CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    sys.stderr.write("[bench] %s\n" % (msg,))
    sys.stderr.flush()


class ProxyFailed(Exception):
    """A proxy could not be started or does not forward correctly."""


# --------------------------------------------------------------------------
# tools


def find_executable(name, extra_dirs=("/usr/sbin", "/sbin", "/usr/local/sbin")):
    path = shutil.which(name)
    if path:
        return path
    for d in extra_dirs:
        cand = os.path.join(d, name)
        if os.access(cand, os.X_OK):
            return cand
    return None


def ensure_tool(name, package):
    """Return the path of ``name``, installing Debian's ``package`` if missing."""
    path = find_executable(name)
    if path:
        return path
    log("%s not found: running apt-get install -y %s" % (name, package))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", package]
    if os.geteuid() != 0:
        cmd = ["sudo", "-n"] + cmd
    rc = subprocess.call(cmd, env=env)
    if rc != 0:
        log("apt-get install failed (rc %d); trying apt-get update first" % rc)
        upd = ["apt-get", "update"]
        if os.geteuid() != 0:
            upd = ["sudo", "-n"] + upd
        subprocess.call(upd, env=env)
        subprocess.call(cmd, env=env)
    path = find_executable(name)
    if not path:
        raise SystemExit("error: %s is still missing after apt-get install %s" % (name, package))
    return path


def cmd_output(cmd, timeout=30):
    try:
        p = subprocess.run(
            cmd,
            cwd="/",  # not the repo: its twisted/ folder would shadow the real package
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            universal_newlines=True,
        )
        return p.stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        return "unavailable (%s)" % (e,)


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((HOST, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def wait_for_port(port, timeout, proc=None):
    """Poll until HOST:port accepts a connection; False on timeout or if proc exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            s = socket.create_connection((HOST, port), timeout=0.5)
        except OSError:
            time.sleep(0.05)
            continue
        s.close()
        return True
    return False


def http_get(port, path, timeout=5.0, cafile=None):
    """One HTTP/1.1 GET, over TLS verified against cafile if given; returns (status, body)."""
    import http.client

    if cafile is None:
        conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    else:
        import ssl

        ctx = ssl.create_default_context(cafile=cafile)
        conn = http.client.HTTPSConnection(HOST, port, timeout=timeout, context=ctx)
    try:
        conn.request("GET", path, headers={"Host": "%s:%d" % (HOST, port)})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# --------------------------------------------------------------------------
# processes and CPU accounting


def proc_cpu_ticks(pid):
    """utime + stime of pid (all its threads), in clock ticks; None if gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces: split after its closing paren
    fields = data[data.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15
    return int(fields[11]) + int(fields[12])


def child_pids(pid):
    """Direct children of pid, by scanning /proc."""
    kids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            kids.append(int(name))
    return kids


class Managed(object):
    """A process started by this script, stopped by PID."""

    def __init__(self, name, cmd, logpath, env=None, cwd=None, multi_process=False):
        self.name = name
        self.cmd = cmd
        self.logpath = logpath
        self.multi_process = multi_process  # nginx: master + workers
        self.known_pids = set()
        self._log = open(logpath, "ab")
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            # its own session: a terminal's Ctrl-C reaches only this script,
            # which then stops the process itself (and in order).
            start_new_session=True,
        )
        self.pid = self.proc.pid
        self.known_pids.add(self.pid)

    def pids(self):
        if not self.multi_process:
            return [self.pid]
        kids = child_pids(self.pid)
        self.known_pids.update(kids)
        return [self.pid] + kids

    def cpu_ticks(self):
        """Sum of utime+stime over the process (and, for nginx, its workers)."""
        pids = self.pids()
        total = 0
        for pid in pids:
            t = proc_cpu_ticks(pid)
            if t is not None:
                total += t
        return total, pids

    def alive(self):
        return self.proc.poll() is None

    def log_tail(self, lines=20):
        try:
            self._log.flush()
            with open(self.logpath, "rb") as f:
                data = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(data.rstrip().splitlines()[-lines:])

    def stop(self, timeout=5.0):
        if self.multi_process:
            try:
                self.pids()
            except OSError:
                pass
        if self.proc.poll() is None:
            # Politely first, then for sure.
            for number in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.kill(self.pid, number)
                except OSError:
                    pass
                try:
                    self.proc.wait(timeout)
                    break
                except subprocess.TimeoutExpired:
                    pass
            else:
                log("warning: %s (pid %d) did not exit" % (self.name, self.pid))
        # leftover workers of ours (only PIDs seen as this process's children)
        for pid in sorted(self.known_pids - {self.pid}):
            if proc_cpu_ticks(pid) is not None and self._is_ours(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        try:
            self._log.close()
        except OSError:
            pass

    def _is_ours(self, pid):
        # a worker orphaned by its master is reparented; make sure it is still
        # in the session we created before killing it
        try:
            return os.getsid(pid) == self.pid
        except OSError:
            return False


# --------------------------------------------------------------------------
# nginx configs

NGINX_COMMON = """\
worker_processes {workers};
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
worker_rlimit_nofile {nofile};
{user_line}
{main}
events {{
    worker_connections {connections};
    multi_accept on;
}}

http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy_temp;
    fastcgi_temp_path {prefix}/fastcgi_temp;
    uwsgi_temp_path {prefix}/uwsgi_temp;
    scgi_temp_path {prefix}/scgi_temp;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    server_tokens off;
{body}
}}
{stream}
"""

# nginx's TCP proxy (the stream module, a separate package on Debian:
# libnginx-mod-stream).
STREAM_BLOCK = """\
stream {{
    server {{
        listen {host}:{port} backlog=4096;
        proxy_pass {host}:{origin_port};
        tcp_nodelay on;
    }}
}}
"""
STREAM_MODULES = ("/usr/lib/nginx/modules/ngx_stream_module.so",
                  "/usr/share/nginx/modules/ngx_stream_module.so")

ORIGIN_BODY = """\
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    default_type text/plain;
    server {{
        listen {host}:{port} backlog=4096;
        root {prefix}/www;
        location = /small {{
            return 200 "{small}";
        }}
        location = /64k {{
            try_files /64k =404;
        }}
        location = /1m {{
            try_files /1m =404;
        }}
        location = /cached/small {{
            add_header Cache-Control "max-age=3600";
            return 200 "{small}";
        }}
        location = /cached/64k {{
            add_header Cache-Control "max-age=3600";
            try_files /64k =404;
        }}
        location = /nostore/small {{
            add_header Cache-Control "no-store";
            return 200 "{small}";
        }}
    }}
"""

PROXY_BODY = """\
    tcp_nodelay on;
{cache_path}
    upstream origin {{
        server {host}:{origin_port};
        keepalive 32;
        keepalive_requests 1000000;
    }}
    server {{
        listen {host}:{port} backlog=4096;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # room for a whole 64 KiB response in memory (no temp files)
            proxy_buffer_size 16k;
            proxy_buffers 8 16k;
{cache}
        }}
    }}
"""
# What --cache adds to the nginx proxy.
NGINX_CACHE_PATH = (
    "    proxy_cache_path {prefix}/cache levels=1:2 keys_zone=bench:10m max_size=256m "
    "inactive=60m use_temp_path=off;"
)
NGINX_CACHE = "            proxy_cache bench;"


TLS_SERVER = """\
    server {{
        listen {host}:{port} ssl http2 backlog=4096;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-Proto https;
            proxy_buffer_size 16k;
            proxy_buffers 8 16k;
        }}
    }}
"""


# openssl req -newkey options of each --tls-key.
TLS_KEYS = {
    "ec": ("ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
    "rsa": ("rsa:2048",),
}
TLS_KEY_NAMES = {"ec": "ECDSA P-256 (prime256v1)", "rsa": "RSA 2048"}


def make_certificate(tmp, kind="ec"):
    """
    A self-signed certificate for localhost and 127.0.0.1 (openssl) with a
    key of TLS_KEYS[kind]; returns (cert path, key path, key+cert path).
    """
    d = os.path.join(tmp, "tls")
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(
        [find_executable("openssl") or "openssl", "req", "-x509", "-newkey"]
        + list(TLS_KEYS[kind]) + [
            "-nodes", "-days", "2",
            "-keyout", key, "-out", cert, "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    both = os.path.join(d, "key-and-cert.pem")
    with open(both, "w") as out:
        for path in (key, cert):
            with open(path) as f:
                out.write(f.read())
    for path in (cert, key, both):
        os.chmod(path, 0o644)
    return cert, key, both


def nginx_conf(prefix, workers, body, main="", stream="", connections=4096):
    # As root, nginx switches its workers to "nobody" by default; the temp
    # prefix is made world-readable instead of running the workers as root.
    return NGINX_COMMON.format(prefix=prefix, workers=workers, user_line="", body=body,
                               main=main, stream=stream, connections=connections,
                               nofile=max(16384, 2 * connections))


def nginx_stream_module(nginx_bin):
    """
    The load_module line nginx needs for its stream module ("" when it is
    built in), or None when this nginx has no stream module.
    """
    built = cmd_output([nginx_bin, "-V"])
    if "--with-stream=dynamic" in built:
        for path in STREAM_MODULES:
            if os.path.exists(path):
                return "load_module %s;" % path
        return None
    return "" if "--with-stream" in built else None


def start_nginx(name, nginx_bin, prefix, conf_text):
    os.makedirs(prefix, exist_ok=True)
    os.chmod(prefix, 0o755)
    for sub in ("client_body", "proxy_temp", "fastcgi_temp", "uwsgi_temp", "scgi_temp"):
        os.makedirs(os.path.join(prefix, sub), exist_ok=True)
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write(conf_text)
    base = [nginx_bin, "-p", prefix + "/", "-c", conf]
    # -e (1.19.5+) keeps nginx from opening the system error log at startup
    test = subprocess.run(
        base + ["-e", os.path.join(prefix, "error.log"), "-t"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        universal_newlines=True,
    )
    use_e = True
    if test.returncode != 0 and "invalid option" in test.stdout:
        use_e = False
        test = subprocess.run(
            base + ["-t"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True
        )
    if test.returncode != 0:
        raise ProxyFailed("%s: nginx -t failed:\n%s" % (name, test.stdout.strip()))
    cmd = base + (["-e", os.path.join(prefix, "error.log")] if use_e else [])
    return Managed(name, cmd, os.path.join(prefix, "stdout.log"), multi_process=True)


# --------------------------------------------------------------------------
# wrk

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def _to_ms(text):
    m = re.match(r"^([0-9.]+)(us|ms|s|m|h)$", text.strip())
    if not m:
        return None
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_wrk(out):
    r = {
        "requests": None,
        "duration_s": None,
        "rps": None,
        "p50_ms": None,
        "p99_ms": None,
        "non2xx": 0,
        "socket_errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0},
    }
    m = re.search(r"^\s*(\d+) requests in ([0-9.]+)(us|ms|s|m|h),", out, re.M)
    if m:
        r["requests"] = int(m.group(1))
        r["duration_s"] = _to_ms(m.group(2) + m.group(3)) / 1000.0
    m = re.search(r"^Requests/sec:\s*([0-9.]+)", out, re.M)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"^\s*50%\s+([0-9.]+(?:us|ms|s|m|h))", out, re.M)
    if m:
        r["p50_ms"] = _to_ms(m.group(1))
    m = re.search(r"^\s*99%\s+([0-9.]+(?:us|ms|s|m|h))", out, re.M)
    if m:
        r["p99_ms"] = _to_ms(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    if m:
        r["non2xx"] = int(m.group(1))
    m = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if m:
        r["socket_errors"] = dict(
            zip(("connect", "read", "write", "timeout"), (int(g) for g in m.groups()))
        )
    if not r["requests"]:
        r["p50_ms"] = r["p99_ms"] = None  # wrk prints 0.00us when nothing completed
    r["errors"] = r["non2xx"] + sum(r["socket_errors"].values())
    return r


def wrk_cmd(wrk_bin, args, port, scenario, duration):
    """port: (plain port, TLS port or None, TCP relay port or None)."""
    path, keepalive, _ = SCENARIOS[scenario]
    tls = scenario in TLS_SCENARIOS
    port = port[1] if tls else port[2] if scenario in TCP_SCENARIOS else port[0]
    connections = SCENARIO_CONNECTIONS.get(scenario, args.connections)
    cmd = [
        wrk_bin,
        "-t%d" % min(args.threads, connections),
        "-c%d" % connections,
        "-d%ds" % duration,
        "--timeout",
        "5s",
        "--latency",
    ]
    if not keepalive:
        cmd += ["-H", "Connection: close"]
    cmd.append("%s://%s:%d%s" % ("https" if tls else "http", HOST, port, path))
    return cmd


def run_wrk(cmd, duration):
    """Run wrk (bounded); returns its output."""
    p = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        universal_newlines=True,
    )
    try:
        out, _ = p.communicate(timeout=duration + 30)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        out += "\n[bench] wrk killed after %d s\n" % (duration + 30)
    except BaseException:
        p.kill()
        p.wait()
        raise
    return out


# --------------------------------------------------------------------------
# h2load (HTTP/2 scenarios)


def h2load_has_duration(h2load_bin):
    """True if this h2load has -D/--duration (old versions only have -n)."""
    return "--duration" in cmd_output([h2load_bin, "--help"])


def h2load_cmd(h2load_bin, args, port, scenario, duration):
    """port: (plain port, TLS port). Bounded by -D seconds, or by -n if -D is missing."""
    path = SCENARIOS[scenario][0]
    cmd = [h2load_bin, "-t1", "-c%d" % H2_CONNECTIONS, "-m%d" % H2_STREAMS]
    if args.h2load_duration:
        cmd += ["-D", str(duration)]
    else:
        # old h2load: a request count that takes very roughly `duration` seconds
        cmd += ["-n", str(max(H2_CONNECTIONS * H2_STREAMS, 10000 * duration))]
    cmd.append("https://%s:%d%s" % (HOST, port[1], path))
    return cmd


_H2_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _h2_ms(text):
    m = re.match(r"^([0-9.]+)(us|ms|s)$", text.strip())
    return float(m.group(1)) * _H2_UNITS_MS[m.group(2)] if m else None


def parse_h2load(out):
    """
    h2load's summary: "finished in 5.00s, N req/s, ...", the "requests:" and
    "status codes:" lines, the negotiated protocol and the "time for request:"
    line (min, max, mean, sd; h2load gives no percentiles).
    """
    r = {
        "requests": None,
        "duration_s": None,
        "rps": None,
        "p50_ms": None,
        "p99_ms": None,
        "latency_min_ms": None,
        "latency_max_ms": None,
        "latency_mean_ms": None,
        "latency_sd_ms": None,
        "application_protocol": None,
        "h2load_requests": {},
        "status_codes": {},
        "non2xx": 0,
    }
    m = re.search(r"^finished in ([0-9.]+)(us|ms|s), ([0-9.]+) req/s", out, re.M)
    if m:
        r["duration_s"] = _h2_ms(m.group(1) + m.group(2)) / 1000.0
        r["rps"] = float(m.group(3))
    m = re.search(
        r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
        r"(\d+) failed, (\d+) errored, (\d+) timeout",
        out,
        re.M,
    )
    if m:
        keys = ("total", "started", "done", "succeeded", "failed", "errored", "timeout")
        r["h2load_requests"] = dict(zip(keys, (int(g) for g in m.groups())))
        r["requests"] = r["h2load_requests"]["succeeded"]
    m = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out, re.M)
    if m:
        r["status_codes"] = dict(zip(("2xx", "3xx", "4xx", "5xx"), (int(g) for g in m.groups())))
        r["non2xx"] = r["status_codes"]["4xx"] + r["status_codes"]["5xx"]
    m = re.search(r"^Application protocol: (\S+)", out, re.M)
    if m:
        r["application_protocol"] = m.group(1)
    m = re.search(
        r"^time for request:\s+([0-9.]+(?:us|ms|s))\s+([0-9.]+(?:us|ms|s))"
        r"\s+([0-9.]+(?:us|ms|s))\s+([0-9.]+(?:us|ms|s))",
        out,
        re.M,
    )
    if m and r["requests"]:
        r["latency_min_ms"], r["latency_max_ms"], r["latency_mean_ms"], r["latency_sd_ms"] = (
            _h2_ms(g) for g in m.groups()
        )
    req = r["h2load_requests"]
    # h2load's "failed" already includes its "errored" and "timeout" requests
    # and responses without a 2xx/3xx status; "succeeded" excludes them.
    r["errors"] = req.get("failed", 0)
    # in -D mode h2load stops with streams in flight: started but not done
    r["unfinished"] = (req["started"] - req["done"]) if req else None
    return r


# --------------------------------------------------------------------------
# openssl s_time (TLS session scenarios)


def stime_cmd(openssl_bin, port, scenario, duration):
    """port: (plain port, TLS port). Bounded by -time seconds."""
    return [
        openssl_bin, "s_time", "-connect", "%s:%d" % (HOST, port[1]),
        "-new" if scenario == "tls-session-new" else "-reuse",
        "-time", str(duration), "-www", SCENARIOS[scenario][0],
    ]


def parse_stime(out):
    """
    s_time's summary, "N connections in U.UUs; ... connections/user sec"
    (U is s_time's own CPU time, so req/s is computed by the caller from
    the wall time), and its progress characters: "r" for a connection that
    resumed a session, "*" for one with a full handshake.
    """
    r = {"requests": None, "duration_s": None, "rps": None, "p50_ms": None, "p99_ms": None,
         "reused": None, "non2xx": 0, "errors": 0}
    found = re.findall(r"^(\d+) connections in [0-9.]+s;", out, re.M)
    if found:
        r["requests"] = int(found[-1])
        marks = "".join(line for line in out.splitlines() if re.fullmatch(r"[r*t3]+", line))
        r["reused"] = marks.count("r")
    return r


# --------------------------------------------------------------------------
# memory with idle connections (mem-idle, mem-h2)


def rss_kib(pids):
    """Resident memory (VmRSS) of pids summed, in KiB."""
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def raise_nofile(needed):
    """Raise the soft open-file limit towards `needed` (the proxies started
    afterwards inherit it); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        soft = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def _read_response(sock, body):
    """Read one response to GET /small: until the data ends with its body."""
    data = b""
    while not data.endswith(body):
        chunk = sock.recv(65536)
        if not chunk:
            raise OSError("connection closed after %d bytes" % len(data))
        data += chunk


# Connections opened before their requests are answered: fewer than a
# listen backlog of 50 (Twisted's default), which a burst of more overflows
# into SYN retransmissions a second or more later.
IDLE_BATCH = 40


def open_idle_http(port, count, deadline, socks):
    """
    Up to `count` keep-alive HTTP/1.1 connections to HOST:port, each after
    one GET /small answered in full, opened in batches of IDLE_BATCH until
    `deadline` (time.monotonic()), appended to `socks` (so that an error
    leaves those opened so far there).
    """
    request = ("GET /small HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (HOST, port)).encode("ascii")
    body = SMALL_BODY.encode("ascii")
    while len(socks) < count and time.monotonic() < deadline:
        batch = []
        try:
            for _ in range(min(IDLE_BATCH, count - len(socks))):
                s = socket.create_connection((HOST, port), timeout=10)
                batch.append(s)
                s.sendall(request)
            for s in batch:
                _read_response(s, body)
        except OSError:
            for s in batch:
                s.close()
            raise
        socks.extend(batch)


# HTTP/2 (RFC 9113): the client preface, an empty SETTINGS frame, and
# frames read by their 9-byte headers.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
H2_SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"


def h2_get(path, authority):
    """
    A HEADERS frame on stream 1 with END_STREAM and END_HEADERS for a GET
    of `path`, in HPACK without Huffman or indexing: :method GET and
    :scheme https from the static table (0x82, 0x87), :path and
    :authority as literals with an indexed name (static entries 4 and 1).
    """
    block = b"\x82\x87"
    for index, value in ((4, path), (1, authority)):
        value = value.encode("ascii")
        block += bytes([index, len(value)]) + value
    return len(block).to_bytes(3, "big") + b"\x01\x05" + (1).to_bytes(4, "big") + block


def _recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise OSError("connection closed in an HTTP/2 frame")
        data += chunk
    return data


def open_idle_h2(port, count, cafile, deadline, socks):
    """
    Up to `count` HTTP/2 connections over TLS (ALPN h2) to HOST:port, each
    after its preface, a SETTINGS exchange and one GET /small answered in
    full (stream 1 ended), opened one after the other until `deadline`,
    appended to `socks`.
    """
    import ssl

    ctx = ssl.create_default_context(cafile=cafile)
    ctx.set_alpn_protocols(["h2"])
    get = h2_get(SCENARIOS["mem-h2"][0], "%s:%d" % (HOST, port))
    while len(socks) < count and time.monotonic() < deadline:
        s = ctx.wrap_socket(socket.create_connection((HOST, port), timeout=10),
                            server_hostname="localhost")
        socks.append(s)
        if s.selected_alpn_protocol() != "h2":
            raise OSError("ALPN chose %r, not h2" % (s.selected_alpn_protocol(),))
        s.sendall(H2_PREFACE + get)
        while True:
            head = _recv_exactly(s, 9)
            length, kind, flags = int.from_bytes(head[:3], "big"), head[3], head[4]
            stream = int.from_bytes(head[5:], "big") & 0x7FFFFFFF
            _recv_exactly(s, length)
            if kind == 4 and not flags & 1:
                s.sendall(H2_SETTINGS_ACK)
            if stream == 1 and kind in (0, 1) and flags & 1:
                break


def measure_memory(name, proc, port, scenario, args, label, workers):
    """
    The proxy's resident memory (its processes' VmRSS summed) before and
    after opening idle client connections (mem-idle: --idle-connections
    HTTP/1.1 keep-alive ones; mem-h2: --h2-connections HTTP/2 ones), each
    having had one request answered, and the difference per connection.
    Opening is bounded by --memory-timeout seconds; fewer connections than
    asked are reported as such.
    """
    h2 = scenario == "mem-h2"
    count = args.h2_connections if h2 else args.idle_connections
    log("%s / %s: opening %d idle %s connections" % (name, scenario, count, "HTTP/2" if h2 else "HTTP/1.1"))
    _, pids = proc.cpu_ticks()
    before = rss_kib(pids)
    w0 = time.monotonic()
    socks = []
    error = None
    try:
        try:
            if h2:
                open_idle_h2(port[1], count, args.tls_files[0], w0 + args.memory_timeout, socks)
            else:
                open_idle_http(port[0], count, w0 + args.memory_timeout, socks)
        except OSError as e:
            error = str(e)
            log("%s / %s: stopped opening connections: %s" % (name, scenario, e))
        opened = time.monotonic() - w0
        time.sleep(1.0)
        _, pids = proc.cpu_ticks()
        after = rss_kib(pids)
    finally:
        for s in socks:
            s.close()
    n = len(socks)
    r = {
        "proxy": label, "proxy_kind": name, "workers": workers, "scenario": scenario,
        "client": "memory", "connections_asked": count, "connections": n,
        "open_s": round(opened, 1), "rss_before_kib": before, "rss_after_kib": after,
        "per_connection_kib": round((after - before) / n, 2) if n else None,
        "proxy_pids": pids, "error": error, "proxy_alive_after": proc.alive(),
    }
    log("%s / %s: %d connections in %.1f s, RSS %d -> %d KiB, %s KiB per connection"
        % (name, scenario, n, opened, before, after, r["per_connection_kib"]))
    if not r["proxy_alive_after"]:
        raise ProxyFailed("%s exited during scenario %s\n  last output:\n%s"
                          % (name, scenario, indent(proc.log_tail())))
    return r


# --------------------------------------------------------------------------
# proxies


def start_proxy(name, args, tools, tmp, origin_port, workers=None):
    """Start proxy `name` (with `workers` worker processes, or its default
    single one); return (Managed, (port, TLS port or None)). Raises ProxyFailed."""
    port = free_port()
    tls = args.tls_files if name in TLS_PROXIES else None
    tls_port = free_port() if tls else None
    tcp = name in TCP_PROXIES and any(s in TCP_SCENARIOS for s in args.scenarios)
    if tcp and name == "nginx" and args.nginx_stream is None:
        log("nginx has no stream module here (Debian: apt-get install libnginx-mod-stream): "
            "the TCP scenarios are skipped for nginx")
        tcp = False
    tcp_port = free_port() if tcp else None
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    if name == "nginx":
        prefix = os.path.join(tmp, "proxy-nginx")
        cache = any(x in CACHE_SCENARIOS for x in args.scenarios)
        body = PROXY_BODY.format(
            host=HOST, port=port, origin_port=origin_port,
            cache_path=NGINX_CACHE_PATH.format(prefix=prefix) if cache else "",
            cache=NGINX_CACHE if cache else "",
        )
        if tls:
            body += TLS_SERVER.format(host=HOST, port=tls_port, cert=tls[0], key=tls[1])
        main = stream = ""
        if tcp:
            main = args.nginx_stream
            stream = STREAM_BLOCK.format(host=HOST, port=tcp_port, origin_port=origin_port)
        proc = start_nginx("nginx", tools["nginx"], prefix,
                           nginx_conf(prefix, workers or 1, body, main=main, stream=stream,
                                      connections=args.nginx_connections))
    elif name == "twisted":
        cmd = [
            args.python,
            os.path.join(HERE, "twisted_revproxy.py"),
            "--port",
            str(port),
            "--upstream-port",
            str(origin_port),
        ]
        proc = Managed(name, cmd, os.path.join(tmp, "twisted.log"), env=env, cwd=tmp)
    elif name == "twistproxy":
        # The in-tree package (and its twisted/plugins dropin) come first.
        env["PYTHONPATH"] = os.pathsep.join(
            [REPO] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
        # "twistd" run with the chosen interpreter (same as the twistd script;
        # the PID we measure is the Python process itself, not a wrapper).
        cmd = [
            args.python,
            "-c",
            "import sys; sys.argv[0] = 'twistd'; "
            "from twisted.scripts.twistd import run; run()",
            "-n",
            "--pidfile=",
            "twistproxy",
        ]
        cache = any(x in CACHE_SCENARIOS for x in args.scenarios)
        memory = any(x in MEMORY_SCENARIOS for x in args.scenarios)
        if tls or tcp or cache or memory:
            # Quick mode has neither TLS nor TCP listeners nor routes of
            # their own: a config file.
            conf = os.path.join(tmp, "twistproxy.toml")
            text = TWISTPROXY_CONFIG.format(host=HOST, port=port, origin_port=origin_port)
            if tls:
                text += TWISTPROXY_TLS_LISTENER.format(host=HOST, tls_port=tls_port, pem=tls[2])
            if tcp:
                text += TWISTPROXY_TCP.format(host=HOST, tcp_port=tcp_port,
                                              origin_port=origin_port)
            if cache:
                text += TWISTPROXY_CACHE
            text += TWISTPROXY_LIMITS
            if memory:
                text += TWISTPROXY_CONNECTIONS.format(
                    connections=max(args.idle_connections, args.h2_connections) + 1024)
            with open(conf, "w") as f:
                f.write(text)
            cmd += ["--config", conf]
        else:
            cmd += [
                "--listen",
                "tcp:%d:interface=%s" % (port, HOST),
                "--upstream",
                "http://%s:%d" % (HOST, origin_port),
                "--access-log",
                "off",
            ]
        if workers:
            cmd += ["--workers", str(workers)]
        cmd += list(args.twistproxy_arg)
        # With workers, the CPU measured is the master's and its workers'.
        proc = Managed(name, cmd, os.path.join(tmp, "twistproxy.log"), env=env, cwd=tmp,
                       multi_process=bool(workers))
    else:
        raise ValueError(name)

    try:
        if not all(
            wait_for_port(p, args.start_timeout, proc.proc)
            for p in (port, tls_port, tcp_port) if p
        ):
            if proc.alive():
                why = "did not accept connections on port %d within %.0f s" % (
                    port,
                    args.start_timeout,
                )
            else:
                why = "exited with code %s before accepting connections" % (
                    proc.proc.returncode,
                )
            raise ProxyFailed(
                "%s %s\n  command: %s\n  last output:\n%s"
                % (name, why, shjoin(proc.cmd), indent(proc.log_tail()))
            )
        check_forwarding(name, port, proc, sorted({SCENARIOS[x][0] for x in args.scenarios}))
        if tls_port:
            check_forwarding(name + " (https)", tls_port, proc, ("/small",), cafile=tls[0])
        if tcp_port:
            check_forwarding(name + " (tcp)", tcp_port, proc,
                             sorted({SCENARIOS[x][0] for x in TCP_SCENARIOS}))
    except BaseException:
        proc.stop()
        raise
    return proc, (port, tls_port, tcp_port)


TWISTPROXY_CONFIG = """\
[listeners.plain]
endpoint = "tcp:{port}:interface={host}"

[upstreams.origin]
servers = ["http://{host}:{origin_port}"]

[access_log]
path = ""
"""

TWISTPROXY_TLS_LISTENER = """
[listeners.https]
endpoint = "tcp:{tls_port}:interface={host}"

[listeners.https.tls]
certificates = ["{pem}"]
"""

# The cache scenarios' paths are cached (as nginx caches them: they say
# Cache-Control: max-age), the others not: twistproxy would otherwise store
# /64k on the strength of its Last-Modified (RFC 9111 4.2.2), which nginx
# does not, and ka-64k would compare hits with misses.
TWISTPROXY_CACHE = """
[[routes]]
upstream = "origin"
path_prefix = "/cached/"
cache = true

[[routes]]
upstream = "origin"
path_prefix = "/nostore/"
cache = true

[[routes]]
upstream = "origin"

[cache]
store = "memory"
size = "256m"
"""

# Requests per client connection as nginx's keepalive_requests above (which
# counts HTTP/2 streams too): twistproxy's default of 1,000 would end each
# h2load connection with a GOAWAY after 1,000 streams, and h2load does not
# reconnect.  The memory scenarios' connections, whatever the open-file
# limit (by default twistproxy takes at most half of it, less a reserve:
# each client connection may need a backend connection too).
TWISTPROXY_LIMITS = """
[limits]
max_requests_per_connection = 1000000
"""
TWISTPROXY_CONNECTIONS = "max_connections = {connections}\n"

TWISTPROXY_TCP = """
[listeners.relay]
endpoint = "tcp:{tcp_port}:interface={host}"
protocol = "tcp"
upstream = "origin_tcp"

[upstreams.origin_tcp]
servers = ["tcp://{host}:{origin_port}"]
"""


def shjoin(cmd):
    return " ".join(shlex.quote(c) for c in cmd)


def indent(text, prefix="    | "):
    if not text:
        return prefix + "(no output)"
    return "\n".join(prefix + line for line in text.splitlines())


def check_forwarding(name, port, proc, paths=("/small", "/64k"), cafile=None):
    """One GET of each path through the proxy must return the origin's bodies."""
    small = SMALL_BODY.encode("ascii")
    expected = {"/small": small, "/cached/small": small, "/nostore/small": small}
    for path in paths:
        body = expected.get(path)
        size = FILE_SIZES.get(path.replace("/cached", ""))
        try:
            status, got = http_get(port, path, cafile=cafile)
        except (OSError, Exception) as e:  # http.client raises various errors
            raise ProxyFailed(
                "%s accepts connections but GET %s failed: %r\n  last output:\n%s"
                % (name, path, e, indent(proc.log_tail()))
            )
        ok = status == 200 and (got == body if body is not None else len(got) == size)
        if not ok:
            raise ProxyFailed(
                "%s: GET %s returned status %s with %d bytes (expected 200 and %d bytes)"
                "\n  last output:\n%s"
                % (
                    name,
                    path,
                    status,
                    len(got),
                    len(body) if body is not None else size,
                    indent(proc.log_tail()),
                )
            )


def scenario_groups(scenarios):
    """
    The scenarios measured on one start of a proxy each: all but the memory
    ones together, then each memory one on a fresh start, since memory
    freed after an earlier scenario would be reused and hide the growth.
    """
    rest = [s for s in scenarios if s not in MEMORY_SCENARIOS]
    return ([rest] if rest else []) + [[s] for s in scenarios if s in MEMORY_SCENARIOS]


def measure(name, proc, port, origin, args, tools, results, workers=None, scenarios=None):
    """Run every scenario against one proxy, appending to results as it goes.

    With `workers`, results are labelled NAME-wN and carry the count."""
    label = name if workers is None else "%s-w%d" % (name, workers)
    for scenario in args.scenarios if scenarios is None else scenarios:
        if scenario in TLS_SCENARIOS and name not in TLS_PROXIES:
            log("%s / %s: skipped (%s does not terminate TLS here)" % (name, scenario, name))
            continue
        if scenario in TCP_SCENARIOS and not port[2]:
            log("%s / %s: skipped (no TCP relay for %s here)" % (name, scenario, name))
            continue
        if scenario in CACHE_SCENARIOS and name not in CACHE_PROXIES:
            log("%s / %s: skipped (%s has no cache)" % (name, scenario, name))
            continue
        if scenario in MEMORY_SCENARIOS:
            if scenario == "mem-h2" and name not in TLS_PROXIES:
                log("%s / %s: skipped (%s does not terminate TLS here)" % (name, scenario, name))
                continue
            results.append(measure_memory(name, proc, port, scenario, args, label, workers))
            continue
        if not proc.alive():
            raise ProxyFailed(
                "%s exited (code %s) before scenario %s\n  last output:\n%s"
                % (name, proc.proc.returncode, scenario, indent(proc.log_tail()))
            )
        # h2load gets its warm-up as a separate run, like wrk, rather than
        # with --warm-up-time, so that the proxy CPU measured below covers
        # exactly the measured requests.
        if scenario in H2_SCENARIOS:
            make_cmd = lambda d: h2load_cmd(tools["h2load"], args, port, scenario, d)  # noqa: E731
        elif scenario in STIME_SCENARIOS:
            make_cmd = lambda d: stime_cmd(tools["openssl"], port, scenario, d)  # noqa: E731
        else:
            make_cmd = lambda d: wrk_cmd(tools["wrk"], args, port, scenario, d)  # noqa: E731
        if args.warmup > 0:
            log("%s / %s: warm-up %d s" % (name, scenario, args.warmup))
            run_wrk(make_cmd(args.warmup), args.warmup)
            time.sleep(0.5)
        runs = []
        for i in range(args.runs):
            r = measure_once(name, proc, origin, scenario, make_cmd(args.duration), args, label, workers)
            runs.append(r)
            log(
                "%s / %s: run %d of %d: %s req/s, %s req/CPU-s, p99 %s ms, errors %s"
                % (name, scenario, i + 1, args.runs, fmt(r["rps"], 0), fmt(r["req_per_cpu_s"], 0),
                   fmt(r["p99_ms"], 2), r["errors"])
            )
            if not r["proxy_alive_after"]:
                raise ProxyFailed(
                    "%s exited (code %s) during scenario %s\n  last output:\n%s"
                    % (name, proc.proc.returncode, scenario, indent(proc.log_tail()))
                )
            time.sleep(args.pause)
        results.append(median_result(runs))


# The figures of a scenario's row that are the median of its runs.
MEDIAN_FIELDS = ("rps", "p50_ms", "p99_ms", "latency_mean_ms", "latency_sd_ms", "latency_max_ms",
                 "req_per_cpu_s", "proxy_cpu_s", "origin_cpu_s")


def median_result(runs):
    """One row for a scenario's runs: the median of each figure in
    MEDIAN_FIELDS, the errors of all runs added up, every run kept under
    "runs", and everything else from the run with the median req/CPU-s."""
    ordered = sorted(runs, key=lambda r: r["req_per_cpu_s"] or 0)
    r = dict(ordered[len(ordered) // 2])
    for field in MEDIAN_FIELDS:
        values = [x[field] for x in runs if x.get(field) is not None]
        r[field] = statistics.median(values) if values else None
    r["errors"] = sum(x["errors"] or 0 for x in runs)
    r["runs"] = [{k: x.get(k) for k in MEDIAN_FIELDS + ("requests", "errors")} for x in runs]
    return r


def measure_once(name, proc, origin, scenario, cmd, args, label, workers):
    """One measured client run of a scenario against a proxy."""
    h2 = scenario in H2_SCENARIOS
    stime = scenario in STIME_SCENARIOS
    log("%s / %s: %s" % (name, scenario, shjoin(cmd)))
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    o0, _ = origin.cpu_ticks()
    t0, pids = proc.cpu_ticks()
    w0 = time.monotonic()
    out = run_wrk(cmd, args.duration)
    wall = time.monotonic() - w0
    t1, pids = proc.cpu_ticks()
    o1, _ = origin.cpu_ticks()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = parse_h2load(out) if h2 else parse_stime(out) if stime else parse_wrk(out)
    if stime and r["requests"]:
        r["rps"] = r["requests"] / wall
    cpu_s = (t1 - t0) / float(CLK_TCK)
    client = "h2load" if h2 else "s_time" if stime else "wrk"
    r.update(
        {
            "proxy": label,
            "proxy_kind": name,
            "workers": workers,
            "scenario": scenario,
            "url_path": SCENARIOS[scenario][0],
            "keepalive": SCENARIOS[scenario][1],
            "tls": scenario in TLS_SCENARIOS,
            "client": client,
            "%s_command" % client: cmd,
            "wall_s": round(wall, 3),
            "proxy_pids": pids,
            "proxy_cpu_s": round(cpu_s, 3),
            "origin_cpu_s": round((o1 - o0) / float(CLK_TCK), 3),
            # wrk (or h2load) is the only child reaped between ru0 and ru1
            "%s_cpu_s" % client: round(
                (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime), 3
            ),
            "req_per_cpu_s": (
                round(r["requests"] / cpu_s, 1) if r["requests"] and cpu_s > 0 else None
            ),
            "response_bytes": (
                FILE_SIZES.get(SCENARIOS[scenario][0]) or len(SMALL_BODY)
            ),
            "proxy_alive_after": proc.alive(),
        }
    )
    if r["requests"] is None:
        r["%s_output" % client] = out
        log("warning: could not parse %s output:\n%s" % (client, indent(out)))
    elif h2:
        r["h2load_output"] = out
        if r["application_protocol"] != "h2":
            log("warning: h2load negotiated %r, not h2" % (r["application_protocol"],))
        # H2_CONNECTIONS * H2_STREAMS streams are normally still in flight
        # when -D ends; they are not counted as requests or errors
        if r["errors"] or (r["unfinished"] or 0) > H2_CONNECTIONS * H2_STREAMS:
            log("%s / %s: h2load requests: %s" % (name, scenario, r["h2load_requests"]))
    elif stime and scenario == "tls-session-reused" and r["reused"] != r["requests"]:
        log("warning: %s resumed %s of %s sessions" % (name, r["reused"], r["requests"]))
    return r


# --------------------------------------------------------------------------
# reporting


def fmt(v, digits=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        return "{:,.{d}f}".format(v, d=digits)
    return "{:,}".format(v)


def table(rows, headers):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    lines = [
        "  ".join(str(h).ljust(w) if i < 2 else str(h).rjust(w) for i, (h, w) in enumerate(zip(headers, widths)))
    ]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append(
            "  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        )
    return "\n".join(lines)


def _latency(r):
    # h2load gives no percentiles: its rows compare mean latencies instead
    return r["latency_mean_ms"] if r.get("client") == "h2load" else r["p99_ms"]


def compute_ratios(results):
    """Each row against nginx running as many workers, in the same scenario
    of the same run: its req/CPU-s over nginx's (higher is better) and its
    p99 latency over nginx's (lower is better; the mean for h2load)."""
    base = {
        (r["scenario"], r.get("workers")): r
        for r in results
        if r.get("proxy_kind", r["proxy"]) == "nginx"
    }
    ratios = []
    for r in results:
        if r.get("client") == "memory":
            b = base.get((r["scenario"], r.get("workers")), {})
            ratio = None
            if b.get("per_connection_kib") and r["per_connection_kib"]:
                ratio = round(r["per_connection_kib"] / b["per_connection_kib"], 3)
            ratios.append({"proxy": r["proxy"], "scenario": r["scenario"],
                           "memory_ratio_to_nginx": ratio})
            continue
        b = base.get((r["scenario"], r.get("workers")), {})
        ratio = latency = None
        if b.get("req_per_cpu_s") and r["req_per_cpu_s"]:
            ratio = round(r["req_per_cpu_s"] / b["req_per_cpu_s"], 4)
        if b and _latency(b) and _latency(r):
            latency = round(_latency(r) / _latency(b), 3)
        ratios.append({"proxy": r["proxy"], "scenario": r["scenario"], "ratio_to_nginx": ratio,
                       "p99_ratio_to_nginx": latency})
    return ratios


def scaling_rows(results):
    """Rows of the scaling table: requests/sec by scenario and worker count."""
    rps = {
        (r["proxy_kind"], r["scenario"], r["workers"]): r["rps"]
        for r in results
        if r.get("workers") and r["rps"]
    }
    rows = []
    scenarios = []
    for r in results:
        if r.get("workers") and r["scenario"] not in scenarios:
            scenarios.append(r["scenario"])
    counts = sorted({r["workers"] for r in results if r.get("workers")})
    for scenario in scenarios:
        for n in counts:
            ng = rps.get(("nginx", scenario, n))
            tp = rps.get(("twistproxy", scenario, n))
            ng1 = rps.get(("nginx", scenario, counts[0]))
            tp1 = rps.get(("twistproxy", scenario, counts[0]))
            rows.append((
                scenario, n, fmt(ng, 0), "%.2f" % (ng / ng1) if ng and ng1 else "-",
                fmt(tp, 0), "%.2f" % (tp / tp1) if tp and tp1 else "-",
                "%.3f" % (tp / ng) if tp and ng else "-",
            ))
    return rows


def report(results, failures, ratios, meta):
    out = []
    out.append("")
    out.append(
        "twistproxy bench  %s  (median of %d runs of %s s per scenario, %d connections, wrk -t%d; "
        "proxy, origin and wrk share %s cores)"
        % (meta["date"], meta["runs"], meta["duration_s"], meta["connections"], meta["wrk_threads"],
           meta["nproc"])
    )
    out.append("")
    rows = []
    memory = [r for r in results if r.get("client") == "memory"]
    ratios = [x for x, r in zip(ratios, results) if r.get("client") != "memory"]
    results = [r for r in results if r.get("client") != "memory"]
    for r in results:
        errs = r["errors"]
        detail = ""
        if errs and r.get("client") == "h2load":
            q, sc = r["h2load_requests"], r["status_codes"]
            detail = " (errored %d, timeout %d, 4xx %d, 5xx %d)" % (
                q.get("errored", 0), q.get("timeout", 0), sc.get("4xx", 0), sc.get("5xx", 0)
            )
        elif errs:
            se = r["socket_errors"]
            detail = " (non2xx %d, c%d r%d w%d t%d)" % (
                r["non2xx"], se["connect"], se["read"], se["write"], se["timeout"]
            )
        rows.append(
            (
                r["proxy"],
                r["scenario"],
                fmt(r["rps"], 0),
                fmt(r["p50_ms"], 2),
                fmt(r["p99_ms"], 2),
                "%d%s" % (errs, detail),
                fmt(r["proxy_cpu_s"], 2),
                fmt(r["req_per_cpu_s"], 0),
            )
        )
    if rows:
        out.append(
            table(
                rows,
                ("proxy", "scenario", "req/s", "p50 ms", "p99 ms", "errors", "CPU s", "req/CPU-s"),
            )
        )
    else:
        out.append("(no results)")
    out.append("")
    h2rows = [
        (
            r["proxy"],
            r["scenario"],
            r.get("application_protocol") or "-",
            fmt(r["rps"], 0),
            fmt(r["latency_mean_ms"], 2),
            fmt(r["latency_sd_ms"], 2),
            fmt(r["latency_max_ms"], 2),
            fmt(r.get("unfinished")),
        )
        for r in results
        if r.get("client") == "h2load"
    ]
    if h2rows:
        out.append(
            "h2load (-c%d -m%d: %d connections x %d concurrent streams; it gives no "
            "percentiles, so p50/p99 above are '-'):" % (H2_CONNECTIONS, H2_STREAMS, H2_CONNECTIONS, H2_STREAMS)
        )
        out.append(
            table(
                h2rows,
                ("proxy", "scenario", "ALPN", "req/s", "mean ms", "sd ms", "max ms", "unfinished"),
            )
        )
        out.append("")
    mrows = [
        (
            r["proxy"],
            r["scenario"],
            fmt(r["rps"] * r["response_bytes"] / 1e6 if r["rps"] else None, 1),
            fmt(r["requests"] * r["response_bytes"] / 1e6 / r["proxy_cpu_s"]
                if r["requests"] and r["proxy_cpu_s"] else None, 1),
        )
        for r in results
        if r["scenario"] == "tcp-1conn-1m"
    ]
    if mrows:
        out.append("TCP throughput through one connection (response bytes only):")
        out.append(table(mrows, ("proxy", "scenario", "MB/s", "MB/CPU-s")))
        out.append("")
    rrows = [
        (x["proxy"], x["scenario"], fmt(r["req_per_cpu_s"], 0),
         ("%.3f" % x["ratio_to_nginx"]) if x["ratio_to_nginx"] is not None else "-",
         fmt(_latency(r), 2),
         ("%.2f" % x["p99_ratio_to_nginx"]) if x["p99_ratio_to_nginx"] is not None else "-")
        for x, r in zip(ratios, results)
    ]
    if rrows:
        out.append("relative to nginx in the same scenario of the same run (medians of %d run%s; "
                   "for h2load the mean latency instead of p99):"
                   % (meta["runs"], "" if meta["runs"] == 1 else "s"))
        out.append(table(rrows, ("proxy", "scenario", "req/CPU-s", "x nginx", "p99 ms", "p99 x nginx")))
        out.append("")
    srows = scaling_rows(results)
    if srows:
        out.append("scaling with workers (req/s; x1 = relative to the same proxy with 1 worker;")
        out.append("x nginx = twistproxy req/s over nginx req/s with as many workers):")
        out.append(table(srows, ("scenario", "workers", "nginx req/s", "x1", "twistproxy req/s",
                                 "x1", "x nginx")))
        out.append("")
    if memory:
        base = {r["scenario"]: r["per_connection_kib"] for r in memory if r["proxy"] == "nginx"}
        out.append("resident memory (VmRSS of the proxy's processes) before and after opening idle "
                   "connections, each after one request; x nginx: KiB per connection over nginx's "
                   "(lower is better):")
        out.append(table(
            [(r["proxy"], r["scenario"], "%d/%d" % (r["connections"], r["connections_asked"]),
              fmt(r["open_s"]), fmt(r["rss_before_kib"] / 1024.0), fmt(r["rss_after_kib"] / 1024.0),
              fmt(r["per_connection_kib"], 2),
              "%.2f" % (r["per_connection_kib"] / base[r["scenario"]])
              if r["per_connection_kib"] and base.get(r["scenario"]) else "-")
             for r in memory],
            ("proxy", "scenario", "connections", "open s", "RSS MiB before", "after",
             "KiB/conn", "x nginx")))
        out.append("")
    if any(r["scenario"] in STIME_SCENARIOS for r in results):
        out.append("tls-session-*: openssl s_time, one connection at a time, HTTP/1.0 GET /small on "
                   "each; %s certificate; resumed sessions (tls-session-reused): %s."
                   % (TLS_KEY_NAMES[meta.get("tls_key", "ec")],
                      ", ".join("%s %s/%s" % (r["proxy"], r.get("reused"), r.get("requests"))
                                for r in results if r["scenario"] == "tls-session-reused")))
        out.append("")
    if any(r.get("tls") and r["scenario"] == "tls-handshakes" for r in results):
        out.append("tls-handshakes: each request is a new connection with a full TLS handshake,")
        out.append("so req/s is handshakes/s and req/CPU-s is handshakes per proxy CPU-second.")
        out.append("")
    if meta.get("interrupted"):
        out.append("INTERRUPTED: the results above are partial.")
        out.append("")
    for name, why in failures.items():
        out.append("FAILED %s: %s" % (name, why))
    if failures:
        out.append("")
    return "\n".join(out)


def machine_info(args, tools):
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "harness_python": sys.version.split()[0],
        "proxy_python": args.python,
        "proxy_python_version": cmd_output(
            [args.python, "-c", "import sys, platform; print(platform.python_implementation(), sys.version.split()[0])"]
        ),
        "twisted_version": cmd_output(
            [args.python, "-c", "import twisted; print(twisted.__version__)"]
        ),
        "nginx_version": cmd_output([tools["nginx"], "-v"]),
        "wrk_version": cmd_output([tools["wrk"], "-v"]).splitlines()[0],
    }
    if "h2load" in tools:
        info["h2load_version"] = cmd_output([tools["h2load"], "--version"]).splitlines()[0]
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


# --------------------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Benchmark nginx, twisted.web.proxy and twistproxy as reverse proxies "
        "(one worker each) against a local nginx origin, with wrk."
    )
    p.add_argument(
        "--proxies",
        default=",".join(ALL_PROXIES),
        help="comma-separated subset of %s (default: all)" % ",".join(ALL_PROXIES),
    )
    p.add_argument(
        "--scenarios",
        default=",".join(PLAIN_SCENARIOS),
        help="comma-separated subset of %s (default: %s)"
        % (",".join(SCENARIOS), ",".join(PLAIN_SCENARIOS)),
    )
    p.add_argument(
        "--https",
        action="store_true",
        help="add the HTTPS scenarios %s (nginx and twistproxy only; "
        "tls-h2 is selected with --scenarios)" % ",".join(HTTPS_FLAG_SCENARIOS),
    )
    p.add_argument(
        "--tcp",
        action="store_true",
        help="add the TCP relay scenarios %s (nginx's stream module and twistproxy's "
        "protocol = \"tcp\" listener)" % ",".join(TCP_SCENARIOS),
    )
    p.add_argument(
        "--cache",
        action="store_true",
        help="add the cache scenarios %s (nginx with proxy_cache, twistproxy with cache = true on their paths)"
        % ",".join(CACHE_SCENARIOS),
    )
    p.add_argument("--duration", type=int, default=10, help="seconds per scenario (default 10)")
    p.add_argument(
        "--runs", type=int, default=3,
        help="measured runs per scenario, after one warm-up; the table gives their median (default 3)",
    )
    p.add_argument(
        "--warmup", type=int, default=2, help="warm-up seconds before each scenario (default 2; 0: none)"
    )
    p.add_argument("--connections", type=int, default=50, help="wrk connections (default 50)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    p.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter for the Python proxies, e.g. pypy3 (default: this one, %(default)s)",
    )
    p.add_argument(
        "--twistproxy-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument appended to the twistproxy command line (repeatable)",
    )
    p.add_argument(
        "--tls-key", choices=sorted(TLS_KEYS), default="ec",
        help="key of the generated certificate of the TLS scenarios: ec (ECDSA P-256, "
        "the default) or rsa (RSA 2048)",
    )
    p.add_argument("--idle-connections", type=int, default=10000,
                   help="idle HTTP/1.1 connections of mem-idle (default 10000)")
    p.add_argument("--h2-connections", type=int, default=1000,
                   help="idle HTTP/2 connections of mem-h2 (default 1000)")
    p.add_argument("--memory-timeout", type=float, default=45.0,
                   help="most seconds spent opening the connections of a memory scenario (default 45)")
    p.add_argument("--origin-workers", type=int, default=1, choices=(1, 2), help="origin nginx workers (default 1)")
    p.add_argument("--start-timeout", type=float, default=15.0, help="seconds to wait for a port (default 15)")
    p.add_argument("--pause", type=float, default=1.0, help="seconds between scenarios (default 1)")
    p.add_argument(
        "--results-dir",
        default=os.path.join(HERE, "results"),
        help="where the JSON results go (default bench/results/)",
    )
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs and logs)")
    p.add_argument(
        "--workers",
        help="comma-separated worker counts, e.g. 1,2,auto (auto: one per core): run nginx "
        "(worker_processes) and twistproxy (--workers) once per count and report the scaling; "
        "twisted.web.proxy has no workers and is left out",
    )
    args = p.parse_args(argv)
    if args.workers:
        try:
            args.workers = sorted({
                (os.cpu_count() or 1) if w.strip() == "auto" else int(w)
                for w in args.workers.split(",") if w.strip()
            })
        except ValueError:
            p.error("--workers: numbers or 'auto', separated by commas")
        if not args.workers or min(args.workers) < 1:
            p.error("--workers: at least one count of 1 or more")

    args.proxies = [x.strip() for x in args.proxies.split(",") if x.strip()]
    bad = [x for x in args.proxies if x not in ALL_PROXIES]
    if bad or not args.proxies:
        p.error("unknown proxy %s (choose from %s)" % (",".join(bad), ",".join(ALL_PROXIES)))
    args.scenarios = [x.strip() for x in args.scenarios.split(",") if x.strip()]
    if args.https:
        args.scenarios += [s for s in HTTPS_FLAG_SCENARIOS if s not in args.scenarios]
    if args.tcp:
        args.scenarios += [s for s in TCP_SCENARIOS if s not in args.scenarios]
    if args.cache:
        args.scenarios += [s for s in CACHE_SCENARIOS if s not in args.scenarios]
    bad = [x for x in args.scenarios if x not in SCENARIOS]
    if bad or not args.scenarios:
        p.error("unknown scenario %s (choose from %s)" % (",".join(bad), ",".join(SCENARIOS)))
    if args.duration < 1:
        p.error("--duration must be at least 1")
    if args.runs < 1:
        p.error("--runs must be at least 1")
    if args.idle_connections < 1 or args.h2_connections < 1:
        p.error("--idle-connections and --h2-connections must be at least 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    py = shutil.which(args.python) if os.sep not in args.python else args.python
    if not py or not os.access(py, os.X_OK):
        p.error("--python: %s not found" % args.python)
    args.python = py
    return args


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # Ctrl-C, kill and hang-up all unwind through the finally below; SIGINT
    # may have been inherited as ignored (a background job of a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)

    tools = {"nginx": ensure_tool("nginx", "nginx"), "wrk": ensure_tool("wrk", "wrk")}
    if any(s in H2_SCENARIOS for s in args.scenarios):
        tools["h2load"] = ensure_tool("h2load", "nghttp2-client")
        args.h2load_duration = h2load_has_duration(tools["h2load"])
    if any(s in STIME_SCENARIOS for s in args.scenarios):
        tools["openssl"] = ensure_tool("openssl", "openssl")
    # The proxy's nginx takes every idle connection of mem-idle (nginx's
    # default of 4,096 otherwise); the open-file limits follow, and the
    # proxies inherit this script's raised soft limit.
    args.nginx_connections = 4096
    if "mem-idle" in args.scenarios:
        args.nginx_connections = max(4096, args.idle_connections + 1024)
    if any(s in MEMORY_SCENARIOS for s in args.scenarios):
        # This script's sockets and the proxy's, each with room to spare.
        need = max(args.idle_connections, args.h2_connections) + 1024
        limit = raise_nofile(2 * need)
        if limit < need:
            log("open-file limit %d is below the %d needed: fewer connections" % (limit, need))
            args.idle_connections = min(args.idle_connections, limit - 1024)
            args.h2_connections = min(args.h2_connections, limit - 1024)
    args.nginx_stream = None
    if any(s in TCP_SCENARIOS for s in args.scenarios):
        args.nginx_stream = nginx_stream_module(tools["nginx"])
    meta = machine_info(args, tools)
    meta.update(
        {
            "duration_s": args.duration,
            "runs": args.runs,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "wrk_threads": args.threads,
            "wrk_timeout": "5s",
            "h2load_connections": H2_CONNECTIONS,
            "h2load_streams": H2_STREAMS,
            "origin_workers": args.origin_workers,
            "proxies": args.proxies,
            "scenarios": {s: SCENARIOS[s][2] for s in args.scenarios},
            "small_body_bytes": len(SMALL_BODY),
            "big_body_bytes": BIG_SIZE,
            "workers": args.workers,
            "note": "one worker per proxy unless 'workers' is set; proxy, origin (nginx) and wrk share the machine's "
            "cores, so req/s is bounded by the machine, and req/CPU-s is the proxy's cost",
        }
    )

    tmp = tempfile.mkdtemp(prefix="twistproxy-bench-")
    os.chmod(tmp, 0o755)
    args.tls_files = None
    if any(s in NEEDS_TLS for s in args.scenarios):
        args.tls_files = make_certificate(tmp, args.tls_key)
        meta["tls_key"] = args.tls_key
        meta["tls_certificate"] = "self-signed %s, CN=localhost, SAN DNS:localhost,IP:127.0.0.1" % (
            TLS_KEY_NAMES[args.tls_key],)
        meta["openssl_version"] = cmd_output([find_executable("openssl") or "openssl", "version"])
    started = []
    results = []
    failures = {}
    interrupted = False
    try:
        # the origin
        oprefix = os.path.join(tmp, "origin")
        os.makedirs(os.path.join(oprefix, "www"))
        for path, size in FILE_SIZES.items():
            name = os.path.join(oprefix, "www", path[1:])
            with open(name, "wb") as f:
                f.write((b"0123456789abcdef" * (size // 16))[:size])
            os.chmod(name, 0o644)
        os.chmod(os.path.join(oprefix, "www"), 0o755)
        origin_port = free_port()
        obody = ORIGIN_BODY.format(
            host=HOST,
            port=origin_port,
            prefix=oprefix,
            small=SMALL_BODY.replace("\n", "\\n"),
        )
        try:
            origin = start_nginx(
                "origin", tools["nginx"], oprefix, nginx_conf(oprefix, args.origin_workers, obody)
            )
        except ProxyFailed as e:
            raise SystemExit("error: origin: %s" % e)
        started.append(origin)
        if not wait_for_port(origin_port, args.start_timeout, origin.proc):
            raise SystemExit(
                "error: origin nginx did not start:\n%s" % indent(origin.log_tail() + "\n" + _read(oprefix, "error.log"))
            )
        check_forwarding("origin", origin_port, origin)
        log("origin nginx on %s:%d (pid %d)" % (HOST, origin_port, origin.pid))
        meta["origin_port"] = origin_port

        runs = [(name, None) for name in args.proxies]
        if args.workers:
            runs = [(name, n) for n in args.workers for name in args.proxies
                    if name in ("nginx", "twistproxy")]
        for name, workers in runs:
            label = name if workers is None else "%s-w%d" % (name, workers)
            for scenarios in scenario_groups(args.scenarios):
                log("starting %s%s" % (name, " with %d workers" % workers if workers else ""))
                try:
                    proc, port = start_proxy(name, args, tools, tmp, origin_port, workers)
                except ProxyFailed as e:
                    if name == "nginx":
                        e = ProxyFailed("%s\n%s" % (e, indent(_read(os.path.join(tmp, "proxy-nginx"), "error.log"))))
                    failures[label] = str(e)
                    log("FAILED to start %s: %s" % (name, e))
                    break
                started.append(proc)
                log("%s on %s:%d%s (pid %d)" % (
                    name, HOST, port[0], " and https %d" % port[1] if port[1] else "", proc.pid))
                try:
                    measure(name, proc, port, origin, args, tools, results, workers, scenarios)
                except ProxyFailed as e:
                    failures[label] = str(e)
                    log("FAILED %s: %s" % (name, e))
                    break
                finally:
                    proc.stop()
                    started.remove(proc)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping everything this script started")
    finally:
        # a second Ctrl-C must not cut the clean-up short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for p in reversed(started):
            p.stop()
        if args.keep_tmp:
            log("temp dir kept: %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    ratios = compute_ratios(results)
    meta["interrupted"] = interrupted
    doc = {"meta": meta, "results": results, "ratios": ratios, "failures": failures}
    print(report(results, failures, ratios, meta))
    if results or failures:
        os.makedirs(args.results_dir, exist_ok=True)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = os.path.join(args.results_dir, "%s.json" % stamp)
        with open(path, "w") as f:
            json.dump(doc, f, indent=2, sort_keys=True)
            f.write("\n")
        print("results written to %s" % os.path.relpath(path))
    if interrupted:
        return 130
    return 1 if failures else 0


def _read(d, name):
    try:
        with open(os.path.join(d, name)) as f:
            return f.read().strip()
    except OSError:
        return ""


if __name__ == "__main__":
    sys.exit(main())
