# -*- test-case-name: tests.test_main -*-
"""
Command-line tools that do not run the proxy::

    python -m twistproxy check proxy.toml
    python -m twistproxy check --config proxy.toml

C{check} validates a configuration file the way the proxy would at start-up
(every key, balancer names and options, endpoint strings) without listening
on anything, and exits non-zero with C{file: path: problem} when it is
wrong.  The file is given alone or with C{--config} (C{-c}), as to
C{twistd twistproxy}, so that the same words work for both.
"""

from __future__ import annotations

import sys
from typing import List, Optional

from twisted.python import usage

USAGE = "usage: python -m twistproxy check [--config] CONFIG.toml\n"


class CheckOptions(usage.Options):
    """
    The arguments of C{check}: one configuration file, alone or as the
    value of C{--config}.
    """

    synopsis = "Usage: python -m twistproxy check [--config] CONFIG.toml"
    longdesc = "Validate a configuration file without starting anything."
    optParameters = [
        ["config", "c", None, "Path of the TOML configuration file to check."],
    ]

    def parseArgs(self, *files: str) -> None:
        if len(files) + (self["config"] is not None) != 1:
            raise usage.UsageError("give one configuration file")
        if files:
            self["config"] = files[0]


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    options = CheckOptions()
    try:
        if not args or args[0] != "check":
            raise usage.UsageError("the only command is check")
        options.parseOptions(args[1:])
    except usage.UsageError as e:
        sys.stderr.write(f"{USAGE}{e}\n")
        return 2
    from twistproxy.config import ConfigError, load
    from twistproxy.build import validate

    path = options["config"]
    try:
        validate(load(path))
    except ConfigError as e:
        sys.stderr.write(f"{e}\n")
        return 1
    sys.stdout.write(f"{path}: OK\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
