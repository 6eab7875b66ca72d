"""A filter: answers 404 for the paths under a prefix, however spelled."""
from twisted.plugin import IPlugin
from zope.interface import implementer

from twistproxy.filters import Answer, OptionReader
from twistproxy.interfaces import IFilterFactory, IRequestFilter


@implementer(IRequestFilter)
class HidePrefix:
    def __init__(self, prefix):
        self.prefix = prefix

    def filter_request(self, request):  # returning None lets it through
        if request.normalised_path.startswith(self.prefix):
            return Answer(404, reason="hidden")


@implementer(IPlugin, IFilterFactory)
class HidePrefixFactory:
    name = "hide_prefix"
    help = "Answers 404 for the paths under a prefix."

    def fromConfig(self, reactor, options, path):
        read = OptionReader(options, path, self.name, required=("prefix",))
        return HidePrefix(read.string("prefix"))


hide_prefix = HidePrefixFactory()
