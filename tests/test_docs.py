"""
Tests for the documentation: the Sphinx build is clean, the TOML
examples are configurations the proxy accepts, and the README's test
commands are what CI runs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from typing import Iterator, List, Tuple
from unittest import SkipTest

from twisted.trial.unittest import SynchronousTestCase

from twistproxy.config import ConfigError, parse

try:
    import tomllib as _toml
except ImportError:  # Python < 3.11
    import tomli as _toml  # type: ignore[no-redef]

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


class SphinxBuildTests(SynchronousTestCase):
    """
    docs/ builds with Sphinx, warnings treated as errors.
    """

    def test_build_without_warnings(self):
        """
        C{sphinx -W -b html docs OUT} exits with status 0: no broken
        cross-reference, toctree entry, include or reStructuredText markup.
        """
        try:
            import sphinx  # noqa: F401
        except ImportError:
            raise SkipTest("Sphinx is not installed (pip install '.[docs]')")
        out = self.mktemp()
        result = subprocess.run(
            [
                sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q",
                "-b", "html", "-d", os.path.join(out, "doctrees"), DOCS,
                os.path.join(out, "html"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=300,
        )
        self.assertEqual(
            result.returncode, 0, result.stdout.decode("utf-8", "replace")
        )
        self.assertTrue(os.path.exists(os.path.join(out, "html", "index.html")))


_TOML_BLOCK = re.compile(r"^(\s*)\.\. code-block:: toml\s*$")


def toml_blocks(text: str) -> Iterator[str]:
    """
    The content of each C{.. code-block:: toml} directive of a reST page,
    dedented.
    """
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _TOML_BLOCK.match(lines[i])
        i += 1
        if m is None:
            continue
        indent = len(m.group(1))
        body = []
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
        ):
            body.append(lines[i])
            i += 1
        yield textwrap.dedent("\n".join(body)).strip("\n")


def _upstream_names(value: object) -> List[str]:
    """
    Every string given to a key named C{upstream}, at any depth.
    """
    if isinstance(value, dict):
        return [n for k, v in value.items()
                for n in ([v] if k == "upstream" and isinstance(v, str) else _upstream_names(v))]
    if isinstance(value, list):
        return [n for v in value for n in _upstream_names(v)]
    return []


def complete_snippet(text: str) -> str:
    """
    A documentation snippet made a whole configuration: the pages show
    the part they explain, so a snippet without C{[listeners]} gets one,
    and one without C{[upstreams]} gets an HTTP group for each upstream it
    names.  Everything the snippet says is kept as it is.
    """
    document = _toml.loads(text)
    extra = []
    if "listeners" not in document:
        extra.append('[listeners.docs]\nendpoint = "tcp:0"\n')
    if "upstreams" not in document:
        for name in sorted(set(_upstream_names(document))) or ["app"]:
            extra.append(f'[upstreams.{name}]\nservers = ["http://127.0.0.1:8001"]\n')
    return "\n\n".join([text] + extra)


class ConfigSnippetTests(SynchronousTestCase):
    """
    The TOML examples in the documentation are configurations the proxy
    accepts: a key that was renamed, a value of the wrong type or routes in
    an order the proxy refuses would fail here.
    """

    # The pages checked: those whose every snippet is whole once given a
    # listener and its upstream groups.  (configuration.rst, health.rst,
    # load-balancing.rst and tcp-udp.rst also show fragments of one table,
    # or groups without servers, that cannot be completed this way.)
    pages = ("acme.rst", "caching.rst", "dns.rst", "filters.rst", "gslb.rst", "operations.rst",
             "plugins.rst", "quickstart.rst", "routing.rst", "tls.rst")

    def test_snippets_are_configurations(self):
        """
        Every C{.. code-block:: toml} of the pages listed parses with
        L{twistproxy.config.parse} once completed by L{complete_snippet},
        and the cache store it names takes its options (which C{parse}
        leaves to the store); each page has at least one.
        """
        from twisted.internet.testing import MemoryReactorClock

        from twistproxy.cache.runtime import build_cache

        for page in self.pages:
            with open(os.path.join(DOCS, page), encoding="utf-8") as f:
                snippets = list(toml_blocks(f.read()))
            self.assertTrue(snippets, page)
            for n, snippet in enumerate(snippets):
                source = f"{page} snippet {n + 1}"
                try:
                    build_cache(MemoryReactorClock(), parse(complete_snippet(snippet), source))
                except ConfigError as e:
                    self.fail(str(e) if e.source else f"{source}: {e}")

    def test_completion_hides_no_error(self):
        """
        Completing a snippet adds what it leaves out and nothing else: a
        snippet with an unknown key, or naming a group that it also defines
        wrongly, is still refused.
        """
        text = "Intro.\n\n.. code-block:: toml\n\n    [[routes]]\n    upstream = \"site\"\n" \
               "    [routes.cache]\n    ttl = 5\n\nAfter.\n"
        [snippet] = toml_blocks(text)
        self.assertEqual(snippet, '[[routes]]\nupstream = "site"\n[routes.cache]\nttl = 5')
        e = self.assertRaises(ConfigError, parse, complete_snippet(snippet))
        self.assertEqual(e.path, "routes[0].cache.ttl")
        e = self.assertRaises(ConfigError, parse, complete_snippet(
            '[upstreams.site]\nservers = "x"\n[[routes]]\nupstream = "site"'))
        self.assertEqual(e.path, "upstreams.site.servers")
        parse(complete_snippet('[[routes]]\nupstream = "site"\ncache = true'))



def _terms(text: str) -> List[Tuple[List[str], str]]:
    """
    The definition list entries of C{text} at its left margin: for each,
    the names its term gives in double back-quotes (before the
    parenthesis that gives the type) and its body.
    """
    lines = text.splitlines()
    entries: List[Tuple[List[str], str]] = []
    for i, line in enumerate(lines[:-1]):
        if line.startswith("``") and re.match(r"    \S", lines[i + 1]):
            body = []
            for following in lines[i + 1:]:
                if following and not following.startswith(" "):
                    break
                body.append(following)
            entries.append((re.findall(r"``([^`]+)``", line.split(" (")[0]), "\n".join(body)))
    return entries


class RouteOptionTests(SynchronousTestCase):
    """
    The route settings the documentation gives are those of
    L{twistproxy.config.values.Route}, and the other way round.
    """

    def test_documented_and_declared(self):
        """
        Every setting of a route is a term of the C{[[routes]]} section of
        docs/configuration.rst or of docs/routing.rst; every such term is a
        setting; and each setting of a route's own tables (C{mirror},
        C{split}, C{headers} ...) is named in the description of its term.
        """
        from dataclasses import fields, is_dataclass

        from twistproxy.config import values

        with open(os.path.join(DOCS, "configuration.rst"), encoding="utf-8") as f:
            configuration = f.read()
        with open(os.path.join(DOCS, "routing.rst"), encoding="utf-8") as f:
            routing = f.read()
        start = configuration.index("\n``[[routes]]``\n")
        # Up to its header rules, whose remove, set and add are theirs.
        section = configuration[start:configuration.index("\n.. rubric:: Header rules", start)]
        described = {}
        for names, body in _terms(section) + _terms(routing):
            for name in names:
                described[name] = described.get(name, "") + body
        declared = {f.name: f for f in fields(values.Route)}
        self.assertEqual(set(declared) - set(described), set(), "not documented")
        self.assertEqual(set(described) - set(declared), set(), "no such route setting")
        for name, setting in declared.items():
            # Header rules and filters have sections of their own.
            found = re.findall(r"\b([A-Z]\w+)\b", str(setting.type))
            tables = [getattr(values, t) for t in found
                      if is_dataclass(getattr(values, t, None))
                      and t not in ("HeaderRules", "Filter")]
            for table in tables:
                for inner in fields(table):
                    self.assertRegex(described[name], r"``%s\b" % inner.name,
                                     f"{name}.{inner.name} is not described")


class AutomaticHTTPSPageTests(SynchronousTestCase):
    """
    docs/acme.rst is the "Automatic HTTPS" page that issue 15 asked for,
    and its settings are those of L{twistproxy.config.values.ACME}.
    """

    def setUp(self):
        with open(os.path.join(DOCS, "acme.rst"), encoding="utf-8") as f:
            self.page = f.read()

    def test_page(self):
        """
        The page is titled "Automatic HTTPS"; it has a production example
        (Let's Encrypt, the default directory) and a staging one
        (C{letsencrypt-staging}), each with a listener's C{tls.acme}; it
        gives the trade-offs of on-demand issuance and says which library
        speaks the protocol and why.
        """
        self.assertEqual(self.page.splitlines()[0], "Automatic HTTPS")
        directories = [_toml.loads(snippet).get("acme", {}).get("directory", "letsencrypt")
                       for snippet in toml_blocks(self.page)
                       if "tls.acme" in snippet and "[acme]" in snippet]
        self.assertIn("letsencrypt", directories)
        self.assertIn("letsencrypt-staging", directories)
        self.assertIn("The trade-offs", self.page[self.page.index("On-demand certificates"):])
        built = self.page[self.page.index("\nHow it is built\n"):]
        for named in ("``acme``", "``josepy``", "treq", "thread"):
            self.assertIn(named, built)

    def test_settings_documented(self):
        """
        Every setting of C{[acme]}, C{[acme.on_demand]} and C{[acme.dns]} is
        a term of the page's "Settings" section, and every term there is a
        setting.
        """
        from dataclasses import fields

        from twistproxy.config import values

        start = self.page.index("\nSettings\n")
        section = self.page[start:self.page.index("\nChoosing the challenge\n")]
        described = {name for names, _ in _terms(section) for name in names}
        tables = {"on_demand": values.OnDemand, "dns": values.ACMEDNS}
        declared = set()
        for setting in fields(values.ACME):
            if setting.name in tables:
                self.assertIn(f"``[acme.{setting.name}]``", section)
                declared.update(f.name for f in fields(tables[setting.name])
                                if f.name != "options")
            else:
                declared.add(setting.name)
        self.assertEqual(declared - described, set(), "not documented")
        self.assertEqual(described - declared, set(), "no such setting")


class FaultPromiseTests(SynchronousTestCase):
    """
    docs/faults.rst and the fault suite name each other: every test the
    page cites exists, and every fault test is cited, so that no promise
    goes without its test and no test without its promise.
    """

    def test_page_and_suite_agree(self):
        """
        The dotted names C{tests.test_faults_*.Class.test_name} in
        docs/faults.rst are exactly the test methods of
        C{tests/test_faults_*.py}.
        """
        from twisted.trial.runner import TestLoader

        with open(os.path.join(DOCS, "faults.rst"), encoding="utf-8") as f:
            cited = set(re.findall(r"tests\.test_faults_\w+\.\w+\.test_\w+", f.read()))
        tests_dir = os.path.dirname(os.path.abspath(__file__))
        existing = set()
        for name in sorted(os.listdir(tests_dir)):
            if name.startswith("test_faults_") and name.endswith(".py"):
                suite = TestLoader().loadByName(f"tests.{name[:-3]}", recurse=True)
                existing.update(_test_ids(suite))
        self.assertTrue(existing)
        self.assertEqual(cited - existing, set(), "cited on the page but not a test")
        self.assertEqual(existing - cited, set(), "a fault test the page does not cite")


class CIRunTests(SynchronousTestCase):
    """
    C{.ci/run} runs the test commands README.rst shows, under CPython and
    under PyPy, and no others, so that what a reader types is what CI
    checks.
    """

    def test_readme_commands(self):
        """
        The lines of README.rst's first literal block that run trial are
        exactly the commands of C{.ci/run} that run trial (each followed
        there only by what records its failure); one of them is PyPy's.
        """
        top = os.path.dirname(DOCS)
        with open(os.path.join(top, "README.rst"), encoding="utf-8") as f:
            block = f.read().split("::\n\n", 1)[1].split("\n\n", 1)[0]
        shown = [line.strip() for line in block.splitlines() if "twisted.trial" in line]
        with open(os.path.join(top, ".ci", "run"), encoding="utf-8") as f:
            run = [line.strip() for line in f if "twisted.trial" in line
                   and not line.lstrip().startswith("#")]
        self.assertEqual([re.sub(r"\s*\|\|\s*status=1$", "", line) for line in run], shown)
        self.assertEqual(len(shown), 2)
        self.assertIn("pypy3 -m venv", shown[1])


def _test_ids(suite) -> Iterator[str]:
    for test in suite:
        if hasattr(test, "id") and not hasattr(test, "__iter__"):
            yield test.id()
        else:
            yield from _test_ids(test)


class RoomListTests(SynchronousTestCase):
    """
    The room list of docs/architecture.rst names every module and package
    of C{twistproxy/} as they are, so that it cannot fall behind the code.
    """

    def test_every_module_named(self):
        """
        Each top-level module is an entry of the list (C{net.py}), each
        package an entry (C{cache/}), and each module of a package is named
        within its package's entry (C{mapping.py}, or C{values} in a list
        of names).
        """
        with open(os.path.join(DOCS, "architecture.rst"), encoding="utf-8") as f:
            page = f.read()
        start = page.index("\n    twistproxy/\n", page.index("\nRooms\n"))
        block = page[start:page.index("\n    tests/", start)]
        package = os.path.join(os.path.dirname(DOCS), "twistproxy")
        entries = {}
        current = ""
        for line in block.splitlines():
            entry = re.match(r"      (\w+)(\.py|/)", line)
            if entry:
                current = entry.group(1) + entry.group(2)
            entries[current] = entries.get(current, "") + line + "\n"
        missing = []
        for name in sorted(os.listdir(package)):
            if name.endswith(".py") and name not in entries:
                missing.append(name)
            inner = os.path.join(package, name)
            if not os.path.isdir(inner) or name == "__pycache__":
                continue
            if name + "/" not in entries:
                missing.append(name + "/")
                continue
            for module in sorted(os.listdir(inner)):
                stem = module[:-3]
                if module.endswith(".py") and stem != "__init__" and not re.search(
                        r"\b%s\b" % re.escape(stem), entries[name + "/"]):
                    missing.append(f"{name}/{module}")
        self.assertEqual(missing, [])
