# -*- test-case-name: tests.test_main -*-
"""
Command-line tools that do not run the proxy::

    python -m twistproxy check proxy.toml

C{check} validates a configuration file the way the proxy would at start-up
(every key, balancer names and options, endpoint strings) without listening
on anything, and exits non-zero with C{file: path: problem} when it is
wrong.
"""

from __future__ import annotations

import sys
from typing import List, Optional

USAGE = "usage: python -m twistproxy check CONFIG.toml\n"


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "check":
        sys.stderr.write(USAGE)
        return 2
    from twistproxy.config import ConfigError, load
    from twistproxy.service import validate

    try:
        validate(load(args[1]))
    except ConfigError as e:
        sys.stderr.write(f"{e}\n")
        return 1
    sys.stdout.write(f"{args[1]}: OK\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
