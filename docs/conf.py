"""
Sphinx configuration for the twistproxy documentation.

Build with::

    python3 -m sphinx -W -b html docs docs/_build/html
"""

import os
import sys

# Document the source tree this file belongs to, installed or not.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from twistproxy._version import __version__  # noqa: E402

project = "twistproxy"
author = "the twistproxy contributors"
copyright = "the twistproxy contributors"
version = release = __version__

extensions = []

master_doc = root_doc = "index"
exclude_patterns = ["_build"]
highlight_language = "none"

html_theme = "alabaster"
