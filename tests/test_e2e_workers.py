# -*- test-case-name: tests.test_e2e_workers -*-
"""
End-to-end tests of the proxy with several worker processes (C{--workers
2}): the installed proxy run by C{twistd}, a master and two real worker
processes sharing a loopback listener, in front of origins in the test
process.

L{tests.test_workers} drives the master on a fake reactor.  These check
what only real processes show: a worker killed outright is replaced while
the other one goes on serving, even on its open connections; ten reloads
under load lose no request; a slow request survives a reload and a
graceful shutdown; the admin API and the metrics of the master add up the
requests the test sent.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import time
from typing import Dict, List, Tuple

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor, threads

from tests import test_e2e_balancing
from tests.e2e_support import (
    HOST,
    OriginFactory,
    RawClient,
    RestartableOrigin,
    completes,
    unused_port,
)
from tests.test_e2e_balancing import _BalancingTestCase, _get, _response, _servers

WORKERS = ("--workers", "2")


def _admin(port: int, method: str, path: str) -> Tuple[int, bytes]:
    """
    In a thread: one admin API request on a new connection.
    """
    client = RawClient(port, timeout=10.0)
    try:
        client.send(f"{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
                    .encode("ascii"))
        resp = client.read_response()
        return resp.status, resp.body
    finally:
        client.close()


def _requests(port: int, count: int) -> List[int]:
    """
    In a thread: C{count} requests, each on a new connection; their
    statuses (0 for an error).
    """
    statuses = []
    for _ in range(count):
        client = RawClient(port, timeout=5.0)
        try:
            client.send(_get())
            statuses.append(client.read_response().status)
        except (OSError, ValueError):
            statuses.append(0)
        finally:
            client.close()
    return statuses


@defer.inlineCallbacks
def wait_for_workers(proxy):
    """
    Wait until both workers of C{proxy} serve their admin API (the master
    asks them for reloads, status and metrics).
    """
    for index in (1, 2):
        yield proxy.wait_for_line(
            rf"\[worker-{index}\] twistproxy listener admin listening", timeout=15)


class _WorkersTestCase(_BalancingTestCase):
    timeout = 45

    @defer.inlineCallbacks
    def start_workers(self, config: str, *args: str):
        """
        Start the proxy with C{config}, an admin listener and C{args}
        (two workers by default), and wait until every worker serves.

        @return: A L{Deferred} firing with the proxy, whose C{admin_port}
            is set.
        """
        admin_port = unused_port()
        args = args or WORKERS
        proxy = yield self.start_proxy(
            config + f'\n[admin]\nendpoint = "tcp:{admin_port}:interface={HOST}"\n', *args)
        proxy.admin_port = admin_port
        if args != ("--workers", "1"):
            yield wait_for_workers(proxy)
        return proxy

    def admin(self, proxy, path: str, method: str = "GET") -> defer.Deferred:
        """
        Ask the proxy's admin API; fires with the decoded JSON answer.
        """
        def decoded(answer):
            code, body = answer
            self.assertEqual(code, 200, body)
            return json.loads(body)

        d = self.in_thread(_admin, proxy.admin_port, method, path)
        return d.addCallback(decoded)

    @staticmethod
    def served(upstreams: Dict) -> Dict[int, int]:
        """
        How many requests each worker sent to the backends, by pid.
        """
        return {
            w["pid"]: sum(b["requests"] for g in w["groups"] for b in g["backends"])
            for w in upstreams["workers"]
        }


class RestartTests(_WorkersTestCase):
    """
    A worker that dies is replaced; the other one is not disturbed.
    """

    @defer.inlineCallbacks
    def test_worker_restarted_after_kill(self):
        """
        A keep-alive client's connection is served by one worker; the other
        worker (its pid from the admin status) is killed with SIGKILL.
        The client's connection goes on serving requests, requests on new
        connections all succeed, and the master starts a new worker in
        the killed one's place (new pid, one restart), which then serves
        too.
        """
        origins = yield self.start_origins("a")
        proxy = yield self.start_workers(
            "[upstreams.app]\n" + _servers(origins))
        status = yield self.admin(proxy, "/status")
        pids = [w["pid"] for w in status["workers"]]
        self.assertEqual(len(set(pids)), 2)
        client = RawClient(proxy.port, timeout=5.0)
        self.addCleanup(client.close)

        def exchange():
            client.send(_get())
            return client.read_response().status

        self.assertEqual((yield self.in_thread(exchange)), 200)
        served = self.served((yield self.admin(proxy, "/upstreams")))
        [keeper] = [pid for pid, n in served.items() if n == 1]
        [victim] = [pid for pid in pids if pid != keeper]
        since = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        statuses = yield self.in_thread(lambda: [exchange() for _ in range(20)])
        self.assertEqual(statuses, [200] * 20)
        statuses = yield self.in_thread(_requests, proxy.port, 50)
        self.assertEqual(statuses, [200] * 50)
        yield proxy.wait_for_line(rf"worker \d \(pid {victim}\) ended: .*signal 9", since)
        yield proxy.wait_for_line(r"\[worker-\d\] twistproxy listener admin listening", since,
                                  timeout=15)
        status = yield self.admin(proxy, "/status")
        workers = {w["pid"]: w["restarts"] for w in status["workers"]}
        self.assertNotIn(victim, workers)
        self.assertEqual(workers.pop(keeper), 0)
        [(new_pid, restarts)] = workers.items()
        self.assertEqual(restarts, 1)
        os.kill(new_pid, 0)  # it exists
        statuses = yield self.in_thread(_requests, proxy.port, 20)
        self.assertEqual(statuses, [200] * 20)


def _gone(pid: int) -> bool:
    """
    Whether process C{pid} has exited (a zombie nobody reaped counts).
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


class OrphanTests(_WorkersTestCase):
    """
    Workers do not outlive their master.
    """

    @defer.inlineCallbacks
    def test_workers_stop_when_master_killed(self):
        """
        When the master is killed with SIGKILL (it cannot stop them), its
        workers notice that their standard input closed and exit within a
        few seconds.
        """
        origins = yield self.start_origins("a")
        proxy = yield self.start_workers("[upstreams.app]\n" + _servers(origins))
        pids = [w["pid"] for w in (yield self.admin(proxy, "/status"))["workers"]]
        self.assertFalse(any(_gone(pid) for pid in pids))
        # The master cannot remove its directory when killed.
        [(_, line)] = [proxy.find_line(r"\[worker-1\] twistproxy listener admin listening")]
        self.addCleanup(shutil.rmtree, os.path.dirname(re.search(r"'(/[^']+)'", line).group(1)))
        proxy.kill()
        deadline = time.monotonic() + 10
        while not all(_gone(pid) for pid in pids) and time.monotonic() < deadline:
            yield self.sleep(0.05)
        self.assertEqual([pid for pid in pids if not _gone(pid)], [])


class ReloadUnderLoadTests(test_e2e_balancing.ReloadTests):
    """
    Reloads with two workers lose no request: the single-process test,
    each reload reported done by both workers.
    """

    reloaded = "configuration reloaded by 2 workers"

    @defer.inlineCallbacks
    def start_proxy(self, config: str, *args: str):
        proxy = yield super().start_proxy(config, *WORKERS)
        yield wait_for_workers(proxy)
        return proxy


class SlowRequestTests(_WorkersTestCase):
    """
    A slow request in flight survives a reload and a graceful shutdown.
    """

    args = WORKERS
    reloaded = "configuration reloaded by 2 workers"

    @defer.inlineCallbacks
    def test_slow_request_survives_reload_and_shutdown(self):
        """
        A request the origin answers after a second is in flight when the
        configuration is reloaded (SIGHUP): it is answered completely.
        Another one is in flight when SIGTERM comes: it is answered
        completely too, with C{Connection: close}, and then the proxy
        exits, well before C{shutdown.drain}.
        """
        arrived: List[bytes] = []

        def handler(proto, request):
            arrived.append(request.target)
            reactor.callLater(1.0, proto.transport.write, _response(200, b"slow", b"complete"))

        origin = RestartableOrigin(reactor, OriginFactory(handler), "slow")
        self.addCleanup(origin.stop)
        yield origin.start()
        proxy = yield self.start_workers(
            "[upstreams.app]\n" + _servers({"slow": origin}) +
            "\n[shutdown]\ndrain = 20\n", *self.args)

        def slow():
            client = RawClient(proxy.port, timeout=10.0)
            try:
                client.send(_get())
                return client.read_response()
            finally:
                client.close()

        @defer.inlineCallbacks
        def in_flight():
            count = len(arrived)
            answer = self.in_thread(slow)
            while len(arrived) == count:
                yield self.sleep(0.01)
            return answer

        answer = yield in_flight()
        yield self.reload(proxy, done=self.reloaded)
        response = yield answer
        self.assertEqual((response.status, response.body, response.complete),
                         (200, b"complete", True))

        answer = yield in_flight()
        started = time.monotonic()
        ended = proxy.stop(grace=20)
        response = yield answer
        self.assertEqual((response.status, response.body, response.complete),
                         (200, b"complete", True))
        self.assertEqual(response.headers.get(b"connection"), b"close")
        yield ended
        self.assertFalse(proxy.running)
        self.assertLess(time.monotonic() - started, 10)


class SingleProcessSlowRequestTests(SlowRequestTests):
    """
    The same with a single process.
    """

    args = ("--workers", "1")
    reloaded = "configuration reloaded from"


class AdminTests(_WorkersTestCase):
    """
    The master's admin API and metrics count every worker's requests.
    """

    @defer.inlineCallbacks
    def test_metrics_summed_across_workers(self):
        """
        Four clients send 15 requests each on new connections, spread over
        the two workers by the kernel.  The master's C{/metrics} counts
        all 60 (requests by route, backend requests), and 2 workers; its
        C{/upstreams} shows each worker's share, which add up to 60; its
        C{/status} lists both workers.
        """
        origins = yield self.start_origins("a")
        proxy = yield self.start_workers(
            "[upstreams.app]\n" + _servers(origins))
        batches = yield defer.gatherResults([
            self.in_thread(_requests, proxy.port, 15) for _ in range(4)])
        self.assertEqual([s for batch in batches for s in batch], [200] * 60)
        code, body = yield self.in_thread(_admin, proxy.admin_port, "GET", "/metrics")
        self.assertEqual(code, 200)
        samples: Dict[str, float] = {}
        for family in text_string_to_metric_families(body.decode()):
            for s in family.samples:
                samples[s.name] = samples.get(s.name, 0) + s.value
        self.assertEqual(samples["twistproxy_requests_total"], 60)
        self.assertEqual(samples["twistproxy_backend_requests_total"], 60)
        self.assertEqual(samples["twistproxy_workers"], 2)
        self.assertEqual(samples["twistproxy_worker_restarts_total"], 0)
        served = self.served((yield self.admin(proxy, "/upstreams")))
        self.assertEqual(sum(served.values()), 60)
        status = yield self.admin(proxy, "/status")
        self.assertEqual(sorted(w["pid"] for w in status["workers"]), sorted(served))
        self.log.info("requests per worker: {served}", served=served)


class SecondTermTests(_WorkersTestCase):
    """
    A second SIGTERM to the master ends the workers' drain at once.
    """

    @defer.inlineCallbacks
    def test_second_sigterm_ends_drain(self):
        """
        A request the origin never answers keeps a worker draining after
        SIGTERM (drain time 30 seconds); a second SIGTERM to the master
        ends the master and its workers at once, cutting that request.
        """
        arrived: List[bytes] = []
        origin = RestartableOrigin(
            reactor, OriginFactory(lambda proto, request: arrived.append(request.target)),
            "never")
        self.addCleanup(origin.stop)
        yield origin.start()
        proxy = yield self.start_workers("[upstreams.app]\n" + _servers({"never": origin}))

        answer = self.in_thread(completes, proxy.port, _get())
        while not arrived:
            yield self.sleep(0.01)
        pids = [w["pid"] for w in (yield self.admin(proxy, "/status"))["workers"]]
        yield self.assert_second_term_ends_drain(proxy, answer)
        self.assertTrue(all(_gone(pid) for pid in pids))


class AdminReloadTests(_WorkersTestCase):
    """
    C{POST /reload} on the admin API reloads like SIGHUP, and refuses a
    broken file with a log line while the running configuration stays.
    """

    args = WORKERS

    @defer.inlineCallbacks
    def test_reload_valid_then_invalid(self):
        """
        The file is changed to send requests to origin b: C{POST /reload}
        answers C{ok} and the next requests are b's.  Then the file is
        broken (an unknown key): C{POST /reload} answers C{ok: false} with
        the problem's path and status C{409}, the log says the reload was
        refused, and b still serves every request.
        """
        origins = yield self.start_origins("a", "b")
        proxy = yield self.start_workers(
            "[upstreams.app]\n" + _servers({"a": origins["a"]}), *self.args)
        outcome = yield self.request(proxy.port)
        self.assertEqual((outcome.status, outcome.origin), (200, "a"))
        text = self.config_text(proxy)
        with open(proxy.config_path, "w") as f:
            f.write(text.replace(_servers({"a": origins["a"]}), _servers({"b": origins["b"]})))
        answer = yield self.admin(proxy, "/reload", "POST")
        self.assertEqual(answer, {"reloaded": "configuration", "ok": True, "problems": []})
        outcomes = yield defer.gatherResults([self.request(proxy.port) for _ in range(6)])
        self.assertEqual({(o.status, o.origin) for o in outcomes}, {(200, "b")})

        text = self.config_text(proxy)
        with open(proxy.config_path, "w") as f:
            f.write(text + "\n[upstreams.app.health]\nbogus = 1\n")
        since = time.monotonic()
        code, body = yield threads.deferToThread(_admin, proxy.admin_port, "POST", "/reload")
        self.assertEqual(code, 409, body)
        answer = json.loads(body)
        self.assertFalse(answer["ok"])
        self.assertEqual(len(answer["problems"]), 1, answer)
        self.assertIn("upstreams.app.health.bogus", answer["problems"][0])
        yield proxy.wait_for_line(
            r"configuration reload refused, the running one stays: .*upstreams\.app\.health"
            r"\.bogus", since)
        outcomes = yield defer.gatherResults([self.request(proxy.port) for _ in range(6)])
        self.assertEqual({(o.status, o.origin) for o in outcomes}, {(200, "b")})


class SingleProcessAdminReloadTests(AdminReloadTests):
    """
    The same with a single process.
    """

    args = ("--workers", "1")


class StreamMetricsTests(_WorkersTestCase):
    """
    The master's C{/metrics} counts a C{tcp} listener's connections across
    workers.
    """

    @defer.inlineCallbacks
    def test_tcp_listener_counted(self):
        """
        Twenty HTTP requests, each on a new connection, go through a C{tcp}
        listener relaying to the origin.  Once every relay has ended, the
        master's C{/metrics} counts 20 connections with status 200 on that
        listener, the bytes the clients sent and received, and none open.
        """
        origins = yield self.start_origins("a")
        raw = unused_port()
        proxy = yield self.start_workers(
            "[upstreams.app]\n" + _servers(origins) +
            f'\n[listeners.raw]\nendpoint = "tcp:{raw}:interface={HOST}"\n'
            'protocol = "tcp"\nupstream = "raw"\n'
            f'\n[upstreams.raw]\nservers = ["tcp://{HOST}:{origins["a"].port}"]\n')
        statuses = yield self.in_thread(_requests, raw, 20)
        self.assertEqual(statuses, [200] * 20)
        listener = (("listener", "raw"),)
        ended = ("twistproxy_stream_connections_total",
                 listener + (("protocol", "tcp"), ("status", "200")))
        deadline = time.monotonic() + 10
        while True:
            code, body = yield self.in_thread(_admin, proxy.admin_port, "GET", "/metrics")
            self.assertEqual(code, 200)
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(body.decode())
                for s in family.samples
            }
            if samples.get(ended) == 20 or time.monotonic() > deadline:
                break
            yield self.sleep(0.1)
        self.assertEqual(samples.get(ended), 20)
        self.assertEqual(samples[("twistproxy_stream_received_bytes_total", listener)],
                         20 * len(_get()))
        self.assertEqual(samples[("twistproxy_stream_sent_bytes_total", listener)],
                         20 * len(_response(200, b"a", b"served by a")))
        self.assertEqual(samples[("twistproxy_stream_open_connections",
                                  listener + (("protocol", "tcp"),))], 0)


class ListenerReloadTests(_WorkersTestCase):
    """
    With workers, a reload that changes listeners replaces the workers.
    """

    @defer.inlineCallbacks
    def test_listener_added_and_removed_under_load(self):
        """
        While a client sends requests on a new connection each to the
        first listener, a reload adds a listener: two new workers start,
        the new listener serves, and the old workers drain and exit; a
        second reload removes it again, after which (once the workers that
        served it are gone) connections to it are refused.  None of the
        client's requests fails.  (A keep-alive client is left out: an old worker closes its idle connections as
        in a graceful shutdown, and a request sent at that very moment
        meets a closed connection, as with nginx.)
        """
        origins = yield self.start_origins("a")
        proxy = yield self.start_workers(
            "[upstreams.app]\n" + _servers(origins))
        text = self.config_text(proxy)
        port = unused_port()
        old_pids = {w["pid"] for w in (yield self.admin(proxy, "/status"))["workers"]}

        def reload(config):
            return self.reload(proxy, config, "configuration reloaded by 2 new workers", 20)

        load = test_e2e_balancing._Load(proxy.port, keep_alive=False)
        # A test that times out is left inside the try below, whose
        # finally then runs only when the generator is collected (under
        # PyPy, maybe never): the thread would go on sending, and trial
        # waits for it at exit.
        self.addCleanup(load.stop)
        running = load.start()
        try:
            yield reload(text.replace(
                "[upstreams.app]",
                f'[listeners.extra]\nendpoint = "tcp:{port}:interface={HOST}"\n\n'
                "[upstreams.app]"))
            outcome = yield self.request(port)
            self.assertEqual(outcome.status, 200)
            for pid in old_pids:
                yield proxy.wait_for_line(rf"worker \d \(pid {pid}\) exited", timeout=10)
            new_pids = {w["pid"] for w in (yield self.admin(proxy, "/status"))["workers"]}
            self.assertEqual(len(new_pids - old_pids), 2)
            yield reload(text)
            # The old workers listen until their drain starts.
            for pid in new_pids:
                yield proxy.wait_for_line(rf"worker \d \(pid {pid}\) exited", timeout=10)
            yield self.assertFailure(self.request(port), ConnectionRefusedError)
        finally:
            load.stop()
            yield running
        self.assert_no_errors(load.outcomes)
        self.assertGreater(len(load.outcomes), 20)


class SocketActivationTests(_WorkersTestCase):
    """
    Socket activation: the proxy serves a listening socket it inherited as
    systemd hands it over, through a C{systemd:} endpoint.
    """

    workers: Tuple[str, ...] = ()

    @defer.inlineCallbacks
    def test_serves_inherited_socket(self):
        """
        A socket bound by the test (standing in for systemd) is passed as
        descriptor 3 with C{LISTEN_FDS=1} and the child's C{LISTEN_PID};
        requests to it are answered.
        """
        origins = yield self.start_origins("a")
        sock = socket.socket()
        self.addCleanup(sock.close)
        sock.bind((HOST, 0))
        sock.listen(50)
        proxy = yield self.start_configured_proxy(
            '[listeners.main]\nendpoint = "systemd:domain=INET:index=0"\n\n'
            "[upstreams.app]\n" + _servers(origins), *self.workers, activated=sock)
        port = proxy.port
        self.assertEqual(port, sock.getsockname()[1])
        if self.workers:
            yield wait_for_workers(proxy)
        statuses = yield self.in_thread(_requests, port, 10)
        self.assertEqual(statuses, [200] * 10)


class SocketActivationWorkersTests(SocketActivationTests):
    """
    The same with two workers: the master passes the socket systemd gave
    it on to them.
    """

    workers = WORKERS
