# -*- test-case-name: tests.test_main -*-
"""
Configuration texts the tests share.

Most tests that read a configuration file need a valid one around the
setting they are about: a listener, an upstream group, perhaps a route.
L{proxy_toml} writes that frame, so that each test spells out only what it
checks.
"""

from __future__ import annotations

from typing import Optional


def proxy_toml(listener: str = "", route: Optional[str] = None, *,
               endpoint: str = "tcp:8080", name: str = "main") -> str:
    """
    A small valid configuration: the listener C{name} on C{endpoint}, with
    the C{listener} lines in its table; the upstream group C{app} of one
    server, C{http://127.0.0.1:8001}; and, unless C{route} is C{None}, one
    route to C{app} with the C{route} lines.

    Without a route the text ends in the table C{[upstreams.app]}, so that
    lines added to it are the group's.
    """
    text = (f'[listeners.{name}]\nendpoint = "{endpoint}"\n{listener}\n'
            '[upstreams.app]\nservers = ["http://127.0.0.1:8001"]\n')
    if route is not None:
        text += f'[[routes]]\nupstream = "app"\n{route}\n'
    return text
