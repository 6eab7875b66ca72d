"""A cache store: entries in a dictionary, expired by the proxy's clock."""
from twisted.internet.defer import succeed
from twisted.plugin import IPlugin
from zope.interface import implementer

from twistproxy.interfaces import ICacheStore, ICacheStoreFactory


@implementer(ICacheStore)
class DictStore:
    def __init__(self, clock):
        self.clock, self.entries = clock, {}  # key: (entry, expiry, tags)

    def get(self, key):
        entry, expiry, _ = self.entries.get(key, (None, 0, ()))
        return succeed(entry if self.clock.seconds() < expiry else None)

    def put(self, key, entry, ttl, tags=()):
        return succeed(self.entries.update({key: (entry, self.clock.seconds() + ttl, tags)}))

    def _drop(self, gone):
        keys = [key for key, (_, _, tags) in self.entries.items() if gone(key, tags)]
        return succeed(len([self.entries.pop(key) for key in keys]))

    def delete(self, key):
        return self._drop(lambda k, tags: k == key).addCallback(lambda _: None)

    def purge(self, prefix):
        return self._drop(lambda key, tags: key.startswith(prefix))

    def purge_tag(self, tag):
        return self._drop(lambda key, tags: tag in tags)

    def close(self):
        return succeed(None)


@implementer(IPlugin, ICacheStoreFactory)
class DictStoreFactory:
    name = "dict"
    help = "Keeps responses in a dictionary."

    def fromConfig(self, reactor, options, path):
        return DictStore(reactor)


dict_store = DictStoreFactory()
