# -*- test-case-name: tests.test_filters_chain -*-
"""
The dropin that exports twistproxy's built-in filter factories, found by
name (C{{ name = "rate_limit", ... }}) like third-party ones.
"""

from __future__ import annotations

from twistproxy.filters.access import AccessFactory
from twistproxy.filters.auth import BasicAuthFactory, ForwardAuthFactory
from twistproxy.filters.compress import CompressFactory
from twistproxy.filters.cors import CORSFactory
from twistproxy.filters.headers import HeadersFactory
from twistproxy.filters.jwt import JWTFactory
from twistproxy.filters.ratelimit import ConnectionLimitFactory, RateLimitFactory
from twistproxy.filters.rules import BlockFactory

access = AccessFactory()
rateLimit = RateLimitFactory()
connectionLimit = ConnectionLimitFactory()
block = BlockFactory()
headers = HeadersFactory()
basicAuth = BasicAuthFactory()
forwardAuth = ForwardAuthFactory()
jwt = JWTFactory()
cors = CORSFactory()
compress = CompressFactory()
