# -*- test-case-name: tests.test_tap -*-
"""
The demo backends behind C{twistd -n twistproxy --demo}.

Two tiny web servers, in the same process as the proxy, each answering
every request with its own name and what it received, so that a first-time
user can watch requests being balanced and headers being rewritten without
setting anything else up.
"""

from __future__ import annotations

from typing import Sequence

from twisted.application.service import MultiService
from twisted.application.strports import service as strports_service
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Site

log = Logger()


class _Echo(Resource):
    isLeaf = True

    def __init__(self, name: str):
        super().__init__()
        self._name = name

    def render(self, request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        lines = [
            f"Hello from {self._name}.",
            f"{request.method.decode()} {request.uri.decode('latin-1')}",
            "",
            "Headers as received from the proxy:",
        ]
        for name, values in request.requestHeaders.getAllRawHeaders():
            for value in values:
                lines.append(f"  {name.decode('latin-1')}: {value.decode('latin-1')}")
        body = ("\n".join(lines) + "\n").encode("utf-8")
        request.setHeader(b"content-length", b"%d" % len(body))
        return b"" if request.method == b"HEAD" else body


def add_demo_backends(parent: MultiService, reactor, endpoints: Sequence[str]) -> None:
    """
    Add one demo backend per endpoint string to C{parent}, and log what to
    try once the proxy runs.
    """
    for i, endpoint in enumerate(endpoints, 1):
        site = Site(_Echo(f"demo backend {i}"))
        site.noisy = False
        # The proxy's access log already has a line for each request.
        site.log = lambda request: None
        strports_service(endpoint, site, reactor=reactor).setServiceParent(parent)
    log.info(
        "twistproxy demo: two backends on {endpoints}; try: "
        "curl -i http://127.0.0.1:8080/ (run it twice to see both backends)",
        endpoints=", ".join(endpoints),
    )
