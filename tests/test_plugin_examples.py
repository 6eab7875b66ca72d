"""
The plugins of docs/plugins.rst (examples/plugin_*.py) run, each with the
kit L{twistproxy.testing} gives plugin authors, so that they cannot rot.
"""

from __future__ import annotations

import ast
import os
import sys

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from twistproxy.config import ConfigError, parse
from twistproxy.testing import BalancerContractMixin, CacheStoreContractMixin, MemoryProxy

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def _example(name: str):
    """
    Import examples/NAME.py as a top-level module, as a configuration's
    dotted path names it (C{plugin_filter.hide_prefix}).
    """
    sys.path.insert(0, EXAMPLES)
    try:
        return __import__(name)
    finally:
        sys.path.remove(EXAMPLES)


CONFIG = """
[listeners.main]
endpoint = "tcp:8080"
filters = [{ name = "plugin_filter.hide_prefix", prefix = "/internal/" }]

[upstreams.app]
servers = ["http://127.0.0.1:8001", "http://127.0.0.1:8002"]
balancer = "plugin_balancer.SeededRandom"
balancer_options = { seed = 7 }

[[routes]]
upstream = "app"
"""

# The route caches, in the example store.
CACHED = CONFIG + """
[routes.cache]

[cache]
store = "plugin_store.dict_store"
"""


def _proxy(text: str = CONFIG) -> MemoryProxy:
    _example("plugin_filter"), _example("plugin_balancer")
    return MemoryProxy(parse(text, "proxy.toml"))


class FilterExampleTests(SynchronousTestCase):
    """
    examples/plugin_filter.py in a proxy.
    """

    def test_hidden(self) -> None:
        """
        A path under the prefix, however spelled, is answered 404 and never
        reaches a backend.
        """
        proxy = _proxy()
        client = proxy.connect_client()
        client.send(b"GET /public/../%69nternal/x HTTP/1.1\r\nHost: example.com\r\n\r\n")
        self.assertTrue(client.received().startswith(b"HTTP/1.1 404 "))
        self.assertEqual(proxy.backend_attempts(), [])

    def test_passed(self) -> None:
        """
        Any other request reaches a backend.
        """
        proxy = _proxy()
        proxy.connect_client().send(b"GET /internals HTTP/1.1\r\nHost: example.com\r\n\r\n")
        self.assertTrue(proxy.accept_backend().received().startswith(b"GET /internals "))

    def test_bad_option(self) -> None:
        """
        An unknown option, or a missing prefix, is reported at its
        configuration path.
        """
        with self.assertRaises(ConfigError) as e:
            _proxy(CONFIG.replace('prefix = "/internal/"', 'prefix = "/internal/", colour = 1'))
        self.assertEqual(e.exception.path, "listeners.main.filters[0].colour")
        with self.assertRaises(ConfigError) as e:
            _proxy(CONFIG.replace(', prefix = "/internal/"', ""))
        self.assertEqual(e.exception.path, "listeners.main.filters[0].prefix")


class BalancerExampleContractTests(BalancerContractMixin, SynchronousTestCase):
    """
    examples/plugin_balancer.py keeps the balancer contract.
    """

    weightTolerance = 0.03

    def makeBalancer(self, backends):
        return _example("plugin_balancer").SeededRandom.fromConfig(backends, {"seed": 1}, "t")


class BalancerExampleTests(SynchronousTestCase):
    """
    examples/plugin_balancer.py in a proxy.
    """

    def test_bad_option(self) -> None:
        """
        A seed that is no integer, or another option, is refused at its
        path among the group's options, worded as a core option's mistake.
        """
        for options, key, problem in [
                ('{ seed = "x" }', "seed", "must be an integer, not a string"),
                ('{ colour = 1 }', "colour",
                 "unknown option 'colour'; the seeded_random balancer takes seed")]:
            with self.assertRaises(ConfigError) as e:
                _proxy(CONFIG.replace("{ seed = 7 }", options))
            self.assertEqual((e.exception.path, e.exception.problem),
                             ("upstreams.app.balancer_options." + key, problem))

    def test_forwards(self) -> None:
        """
        A request goes to one of the group's backends, and its answer to
        the client.
        """
        proxy = _proxy()
        client = proxy.connect_client()
        client.send(b"GET /hello HTTP/1.1\r\nHost: example.com\r\n\r\n")
        [(host, port)] = proxy.backend_attempts()
        self.assertIn(port, (8001, 8002))
        proxy.accept_backend().send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
        self.assertTrue(client.received().endswith(b"\r\n\r\nhi"))


class StoreExampleContractTests(CacheStoreContractMixin, TestCase):
    """
    examples/plugin_store.py keeps the cache store contract.
    """

    def setUp(self) -> None:
        self.clock = Clock()

    def makeStore(self):
        return _example("plugin_store").dict_store.fromConfig(self.clock, {}, "cache")

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)


class StoreExampleTests(SynchronousTestCase):
    """
    examples/plugin_store.py as a proxy's shared cache.
    """

    def test_hit(self) -> None:
        """
        A cacheable response is kept in the store and served from it the
        second time, without asking a backend.
        """
        _example("plugin_store")
        proxy = _proxy(CACHED)
        request = b"GET /a HTTP/1.1\r\nHost: example.com\r\n\r\n"
        first = proxy.connect_client()
        first.send(request)
        backend = proxy.accept_backend()
        backend.received()
        backend.send(
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 2\r\n\r\nhi")
        self.assertTrue(first.received().endswith(b"hi"))
        second = proxy.connect_client(port=40001)
        second.send(request)
        self.assertEqual((proxy.backend_attempts(), backend.received()), ([], b""))
        self.assertIn(b"Cache-Status: twistproxy; hit", second.received())
        self.assertEqual(proxy.cache.counts["hit"], 1)

    def test_no_options(self) -> None:
        """
        The store takes no options, and says so at the option's path.
        """
        _example("plugin_store")
        with self.assertRaises(ConfigError) as e:
            _proxy(CACHED + 'size = "1m"\n')
        self.assertEqual(e.exception.path, "cache.size")


class ExampleSizeTests(SynchronousTestCase):
    """
    docs/plugins.rst promises a filter, a balancer and a cache store each
    in under 30 lines.
    """

    def test_under_30_lines(self) -> None:
        """
        Each plugin example is shorter than 30 lines, one statement a line.
        """
        for name in ("plugin_filter", "plugin_balancer", "plugin_store"):
            with open(os.path.join(EXAMPLES, name + ".py")) as f:
                text = f.read()
            self.assertLess(len(text.splitlines()), 30, name)
            lines = [node.lineno for node in ast.walk(ast.parse(text))
                     if isinstance(node, ast.stmt)]
            self.assertEqual(len(lines), len(set(lines)), name)
