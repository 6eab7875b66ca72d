"""
The twistd dropin for twistproxy.  Only a ServiceMaker: importing it must
stay cheap and must not fail, or C{twistd --help} would silently lose the
plugin.
"""

from twisted.application.service import ServiceMaker

twistproxy = ServiceMaker(
    "twistproxy",
    "twistproxy.tap",
    "An HTTP/1.1 reverse proxy with load balancing and pooled keep-alive.",
    "twistproxy",
)
