# -*- test-case-name: tests.test_admin -*-
"""
The admin listener of a running proxy (the C{[admin]} table): a JSON API
for operators and their tools (L{twistproxy.admin.api}), the in-memory
history of its traffic and of its backends' states
(L{twistproxy.admin.history}), and a live status page for people, served
from static files shipped in this package (L{twistproxy.admin.page}).
"""

from twistproxy.admin.api import AdminResource, admin_site

__all__ = ["AdminResource", "admin_site"]
