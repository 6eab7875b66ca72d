"""A cache store: entries in a dictionary, expired by the proxy's clock."""
from twisted.plugin import IPlugin
from zope.interface import implementer

from twistproxy.cache.mapping import MappingStore
from twistproxy.config import check_option_names
from twistproxy.interfaces import ICacheStoreFactory


@implementer(IPlugin, ICacheStoreFactory)
class DictStoreFactory:
    name = "dict"
    help = "Keeps responses in a dictionary."

    def fromConfig(self, reactor, options, path):
        check_option_names(options, (), path, "the dict store takes no options")
        # Expiry, tags and purges are MappingStore's; the table is ours.
        return MappingStore(reactor, table={})


dict_store = DictStoreFactory()
