"""A balancer: an available backend at random, in proportion to its weight."""
import random

from twisted.plugin import IPlugin
from zope.interface import implementer

from twistproxy.config import ConfigError
from twistproxy.interfaces import IBalancer, IBalancerFactory


@implementer(IBalancer)
class SeededRandom:
    def __init__(self, backends, seed):
        self.backends, self.random = list(backends), random.Random(seed)

    def pick(self, request):  # returning None answers 503
        available = [b for b in self.backends if b.available]
        if available:
            return self.random.choices(available, [b.effective_weight for b in available])[0]


@implementer(IPlugin, IBalancerFactory)
class SeededRandomFactory:
    name = "seeded_random"
    help = "Picks a backend at random, in proportion to its weight, from a seed."

    def fromConfig(self, backends, options, path):
        if options.keys() - {"seed"} or not isinstance(options.get("seed", 0), int):
            raise ConfigError(path, "takes one option, seed, an integer")
        return SeededRandom(backends, options.get("seed"))


seeded_random = SeededRandomFactory()
