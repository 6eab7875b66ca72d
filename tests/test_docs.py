"""
Tests for the documentation: the Sphinx build is clean.
"""

from __future__ import annotations

import os
import subprocess
import sys
from unittest import SkipTest

from twisted.trial.unittest import SynchronousTestCase

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
