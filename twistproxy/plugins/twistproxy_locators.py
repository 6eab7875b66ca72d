# -*- test-case-name: tests.test_locators -*-
"""
The dropin that exports twistproxy's built-in locators: C{cidr}, C{header}
and C{maxmind}.

Like every dropin it only creates factory instances and must stay cheap to
import: the C{maxmind} factory imports the optional C{maxminddb} package
only when a configuration asks for it.
"""

from __future__ import annotations

from twistproxy.upstream.locators import (
    CIDRLocatorFactory,
    HeaderLocatorFactory,
    MaxMindLocatorFactory,
)

cidr = CIDRLocatorFactory()
header = HeaderLocatorFactory()
maxmind = MaxMindLocatorFactory()
