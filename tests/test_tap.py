"""
Tests for the twistd plugin's options and wiring (L{twistproxy.tap}).
"""

from __future__ import annotations

import os

from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from twistproxy import tap
from twistproxy.service import ProxyService
from twistproxy.workers.master import Master

from tests.config_support import proxy_toml


class OptionsTests(SynchronousTestCase):
    """
    Parsing the command line of C{twistd twistproxy}.
    """

    def parse(self, *args: str) -> tap.Options:
        options = tap.Options()
        options.parseOptions(list(args))
        return options

    def test_quick_mode(self):
        """
        Repeated --listen and --upstream give one listener each and one
        round-robin group with every backend.
        """
        options = self.parse(
            "--listen", "tcp:8080", "--listen", "tcp:8081:interface=127.0.0.1",
            "--upstream", "http://127.0.0.1:8001", "--upstream", "http://[::1]:8002",
        )
        config = options.proxy_config
        self.assertEqual([l.endpoint for l in config.listeners],
                         ["tcp:8080", "tcp:8081:interface=127.0.0.1"])
        [group] = config.upstreams.values()
        self.assertEqual([(s.host, s.port) for s in group.servers],
                         [("127.0.0.1", 8001), ("::1", 8002)])
        self.assertEqual(group.balancer, "round_robin")

    def test_quick_mode_default_listener(self):
        """
        Without --listen, quick mode listens on tcp:8080.
        """
        options = self.parse("--upstream", "http://127.0.0.1:8001")
        self.assertEqual([l.endpoint for l in options.proxy_config.listeners], ["tcp:8080"])

    def test_bad_upstream(self):
        """
        A bad --upstream URL is a usage error that names the option.
        """
        e = self.assertRaises(UsageError, self.parse, "--upstream", "ftp://x")
        self.assertIn("--upstream[0]", str(e))

    def test_service_errors_are_usage_errors(self):
        """
        What only building the proxy finds (here an endpoint string Twisted
        cannot parse) is a usage error while parsing options, not a
        traceback from makeService.
        """
        e = self.assertRaises(UsageError, self.parse, "--listen", "bogus:1",
                              "--upstream", "http://127.0.0.1:8001")
        self.assertIn("listeners.listen0.endpoint: invalid endpoint", str(e))

    def test_access_log_off(self):
        """
        --access-log off disables the access log.
        """
        options = self.parse("--upstream", "http://127.0.0.1:8001", "--access-log", "off")
        self.assertEqual(options.proxy_config.access_log.path, "")

    def test_exactly_one_mode(self):
        """
        --config, --upstream and --demo exclude each other, and one is
        required.
        """
        self.assertRaises(UsageError, self.parse)
        self.assertRaises(UsageError, self.parse, "--demo", "--upstream", "http://a:1")

    def test_config_file(self):
        """
        --config loads the file; a bad one is a usage error with its path.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(proxy_toml())
        options = self.parse("--config", path)
        self.assertEqual(options.proxy_config.source, path)
        with open(path, "a") as f:
            f.write("[limits]\nmax_body = 1\n")
        e = self.assertRaises(UsageError, self.parse, "--config", path)
        self.assertIn(f"{path}: limits.max_body: unknown key", str(e))

    def test_config_excludes_listen(self):
        """
        --listen with --config is refused rather than silently ignored.
        """
        self.assertRaises(UsageError, self.parse, "--config", "x.toml", "--listen", "tcp:1")

    def test_help_documents_every_option(self):
        """
        --help mentions every option.
        """
        text = str(tap.Options())
        for option in ("--config", "--listen", "--upstream", "--demo", "--access-log", "--workers"):
            self.assertIn(option, text)


    def test_workers(self):
        """
        --workers sets the number of workers (a number or 'auto'), over the
        file's; the workers of quick mode get its options.
        """
        args = ["--listen", "tcp:0", "--upstream", "http://127.0.0.1:8001"]
        options = self.parse("--workers", "3", *args)
        self.assertEqual(options.proxy_config.workers, 3)
        self.assertEqual(options.worker_args, args + ["--access-log", "stdout"])
        self.assertEqual(self.parse("--workers", "auto", *args).proxy_config.workers,
                         os.cpu_count() or 1)
        e = self.assertRaises(UsageError, self.parse, "--workers", "0", *args)
        self.assertIn("--workers: must be at least 1", str(e))

    def test_workers_need_shareable_listeners(self):
        """
        With several workers, a listener the master cannot share is a
        usage error naming it.
        """
        e = self.assertRaises(UsageError, self.parse, "--workers", "2", "--listen",
                              "unix:/tmp/proxy.sock", "--upstream", "http://127.0.0.1:8001")
        self.assertIn("listeners.listen0.endpoint: unix: endpoints cannot be shared", str(e))


class MakeServiceTests(SynchronousTestCase):
    """
    L{tap.makeService} wires options into a L{ProxyService}.
    """

    def test_quick_mode_service(self):
        """
        Quick mode gives a ProxyService with one listener per --listen.
        """
        options = tap.Options()
        options.parseOptions(["--listen", "tcp:0", "--upstream", "http://127.0.0.1:8001"])
        service = tap.makeService(options)
        self.assertIsInstance(service, ProxyService)
        self.assertEqual(list(service.listeners), ["listen0"])

    def test_workers_service(self):
        """
        With more than one worker, the service is a L{Master} of that many.
        """
        options = tap.Options()
        options.parseOptions(["--workers", "2", "--listen", "tcp:0",
                              "--upstream", "http://127.0.0.1:8001"])
        service = tap.makeService(options)
        self.assertIsInstance(service, Master)
        self.assertEqual(len(service.workers), 2)

    def test_demo_with_workers(self):
        """
        --demo with workers runs the demo backends in the master, and the
        workers in quick mode in front of them.
        """
        options = tap.Options()
        options.parseOptions(["--demo", "--workers", "2"])
        service = tap.makeService(options)
        self.assertIsInstance(service, Master)
        self.assertEqual(len([s for s in service if not isinstance(s, tap.Signals)]), 2)
        self.assertEqual(options.worker_args, [
            "--listen", "tcp:8080", "--upstream", "http://127.0.0.1:8081",
            "--upstream", "http://127.0.0.1:8082", "--access-log", "stdout"])

    def test_demo_service(self):
        """
        --demo adds two demo backends next to the proxy, which forwards to
        them.
        """
        options = tap.Options()
        options.parseOptions(["--demo"])
        service = tap.makeService(options)
        children = [s for s in service if not isinstance(s, tap.Signals)]
        self.assertEqual(len(children), 3)
        [group] = service.forwarder.groups.values()
        self.assertEqual([b.port for b in group.backends], [8081, 8082])


class SignalTests(SynchronousTestCase):
    """
    The proxy's signal handlers.
    """

    def setUp(self):
        import signal

        self.calls = []
        test = self

        class Reactor:
            def __init__(self):
                self.when_running = []

            def callFromThread(self, f, *args):
                test.calls.append(f)

            def callWhenRunning(self, f, *args):
                self.when_running.append(f)

            def stop(self):
                pass

        class Proxy:
            def hangup(self):
                pass

            def reopen_access_log(self):
                pass

            def stop_now(self):
                pass

        self.reactor, self.proxy = Reactor(), Proxy()
        self.saved = {n: signal.getsignal(n) for n in (signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM)}
        for number, handler in self.saved.items():
            self.addCleanup(signal.signal, number, handler)
        self.service = tap.Signals(self.reactor, self.proxy)
        self.service.startService()

    def test_hup_and_usr1(self):
        """
        SIGHUP asks for a configuration and certificate reload and SIGUSR1
        for the access log to be reopened, in the reactor thread; stopping
        restores the previous handlers.
        """
        import signal

        signal.getsignal(signal.SIGHUP)(signal.SIGHUP, None)
        signal.getsignal(signal.SIGUSR1)(signal.SIGUSR1, None)
        self.assertEqual(self.calls, [self.proxy.hangup, self.proxy.reopen_access_log])
        self.service.stopService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), self.saved[signal.SIGHUP])

    def test_term_twice(self):
        """
        The first SIGTERM stops the reactor (a graceful shutdown); a second
        one ends the shutdown at once.
        """
        import signal

        handler = signal.getsignal(signal.SIGTERM)
        handler(signal.SIGTERM, None)
        handler(signal.SIGTERM, None)
        self.assertEqual(self.calls, [self.reactor.stop, self.proxy.stop_now])

    def test_term_taken_back_when_running(self):
        """
        The reactor installs its own SIGTERM handler when it starts
        running, after twistd started the services: once it runs, SIGTERM
        is the proxy's again, and a second one still ends the shutdown.
        """
        import signal

        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as the reactor would
        for f in self.reactor.when_running:
            f()
        handler = signal.getsignal(signal.SIGTERM)
        handler(signal.SIGTERM, None)
        handler(signal.SIGTERM, None)
        self.assertEqual(self.calls, [self.reactor.stop, self.proxy.stop_now])

    def test_installed_before_listening(self):
        """
        SIGHUP and SIGUSR1 are handled from C{privilegedStartService} on,
        which twistd calls before any listener starts: a SIGHUP sent as
        soon as the proxy says it listens must not end it.
        """
        import signal

        self.service.stopService()
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        service = tap.Signals(self.reactor, self.proxy)
        service.privilegedStartService()
        signal.getsignal(signal.SIGHUP)(signal.SIGHUP, None)
        self.assertEqual(self.calls, [self.proxy.hangup])
