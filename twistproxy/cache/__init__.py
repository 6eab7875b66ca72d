# -*- test-case-name: tests.test_cache -*-
"""
A shared HTTP cache (RFC 9111) in front of the upstream groups.

L{twistproxy.cache.policy} holds the rules, with no I/O;
L{twistproxy.cache.runtime} the plumbing (the storing sink, serving hits,
collapsing, invalidation, purging); L{twistproxy.cache.memory} and
L{twistproxy.cache.redis} the stores (L{twistproxy.interfaces.ICacheStore}).
"""
