"""
The twistd dropin for twistproxy.  Only a ServiceMaker: importing it must
stay cheap and must not fail, or C{twistd --help} would silently lose the
plugin.
"""

from twisted.application.service import ServiceMaker

twistproxy = ServiceMaker(
    "twistproxy",
    "twistproxy.tap",
    "A multi-protocol reverse proxy (HTTP/1.1, HTTP/2, TLS, TCP, UDP and DNS), with "
    "load balancing, caching and filters.",
    "twistproxy",
)
