# -*- test-case-name: tests.test_admin_page -*-
"""
The status page's static files, shipped in this package (C{static/}) and
served by the admin listener as they are: no build step, nothing fetched
from elsewhere.

They hold no data, so they are served without the token, which the page
asks for and sends with each of its requests to the JSON API (an
C{Authorization} header, never in a URL).  Each answer carries an C{ETag}
and C{Cache-Control: no-cache}: a browser asks again each time, and an
unchanged file costs a C{304}.  The page forbids everything it does not
need (C{Content-Security-Policy}: no inline script, no other origin).
"""

from __future__ import annotations

import hashlib
import pkgutil
from functools import lru_cache
from typing import Dict, Optional, Tuple

from twisted.web.server import Request

# Path below the admin listener's root -> (file in static/, Content-Type).
ASSETS: Dict[bytes, Tuple[str, bytes]] = {
    b"": ("index.html", b"text/html; charset=utf-8"),
    b"static/status.css": ("status.css", b"text/css; charset=utf-8"),
    b"static/status.js": ("status.js", b"text/javascript; charset=utf-8"),
}

_POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    b"img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@lru_cache(maxsize=None)
def _load(name: str) -> Tuple[bytes, bytes]:
    body = pkgutil.get_data(__name__.rpartition(".")[0], f"static/{name}")
    if body is None:
        raise FileNotFoundError(name)
    return body, b'"%s"' % hashlib.sha256(body).hexdigest()[:32].encode("ascii")


def asset(path: bytes) -> Optional[Tuple[str, bytes]]:
    """
    The static file served at C{path} (the request's path without its
    leading slash), or C{None}.
    """
    return ASSETS.get(path)


def serve(request: Request, name: str, content_type: bytes) -> bytes:
    """
    Answer C{request} with the static file C{name}.
    """
    body, etag = _load(name)
    request.setHeader(b"Content-Type", content_type)
    request.setHeader(b"Cache-Control", b"no-cache")
    request.setHeader(b"ETag", etag)
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Referrer-Policy", b"no-referrer")
    request.setHeader(b"Content-Security-Policy", _POLICY)
    if etag in (request.getHeader(b"if-none-match") or b"").replace(b" ", b"").split(b","):
        request.setResponseCode(304)
        return b""
    return body
