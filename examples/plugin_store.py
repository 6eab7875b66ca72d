"""A cache store: entries in a dictionary, expired by the proxy's clock."""
from twisted.internet.defer import succeed
from twisted.plugin import IPlugin
from zope.interface import implementer

from twistproxy.config import ConfigError
from twistproxy.interfaces import ICacheStore, ICacheStoreFactory


@implementer(ICacheStore)
class DictStore:
    def __init__(self, clock):
        self.clock, self.entries = clock, {}  # key: (entry, expiry, tags)

    def get(self, key):
        entry, expiry, _ = self.entries.get(key, (None, 0, ()))
        return succeed(entry if self.clock.seconds() < expiry else None)

    def put(self, key, entry, ttl, tags=()):
        self.entries[key] = (entry, self.clock.seconds() + ttl, tags)
        return succeed(None)

    def delete(self, key):
        self.entries.pop(key, None)
        return succeed(None)

    def purge(self, prefix):
        return self._drop([key for key in self.entries if key.startswith(prefix)])

    def purge_tag(self, tag):
        return self._drop([key for key, (_, _, tags) in self.entries.items() if tag in tags])

    def _drop(self, keys):
        for key in keys:
            del self.entries[key]
        return succeed(len(keys))

    def close(self):
        return succeed(None)


@implementer(IPlugin, ICacheStoreFactory)
class DictStoreFactory:
    name = "dict"
    help = "Keeps responses in a dictionary."

    def fromConfig(self, reactor, options, path):
        for key in options:
            raise ConfigError(f"{path}.{key}", "the dict store takes no options")
        return DictStore(reactor)


dict_store = DictStoreFactory()
