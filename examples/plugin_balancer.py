"""A balancer: an available backend at random, in proportion to its weight."""
import random

from twisted.plugin import IPlugin
from zope.interface import implementer, provider

from twistproxy.config import check_option_names, key_path
from twistproxy.config.schema import integer
from twistproxy.interfaces import IBalancer, IBalancerFactory


@provider(IPlugin, IBalancerFactory)  # the class is the factory of its balancers
@implementer(IBalancer)
class SeededRandom:
    name = "seeded_random"
    help = "Picks a backend at random, in proportion to its weight, from a seed."

    @classmethod
    def fromConfig(cls, backends, options, path):
        check_option_names(options, ["seed"], path, "the seeded_random balancer takes seed")
        return cls(backends, integer()(options.get("seed", 0), key_path(path, "seed")))

    def __init__(self, backends, seed):
        self.backends, self.random = list(backends), random.Random(seed)

    def pick(self, request):  # None (no backend available) answers 503
        up = [b for b in self.backends if b.available]
        return self.random.choices(up, [b.effective_weight for b in up])[0] if up else None
