"""
twistproxy: a multi-protocol reverse proxy framework on Twisted.
"""

from twistproxy._version import __version__

__all__ = ["__version__"]
