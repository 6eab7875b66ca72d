# -*- test-case-name: tests.test_balancers -*-
"""
The dropin that exports twistproxy's built-in factories.

Built-ins are plugins like any other, so that a configuration names them the
same way and a third-party plugin is a first-class citizen.  This module
only creates factory instances; it must stay cheap to import.
"""

from __future__ import annotations

from twistproxy.upstream.balancers import (
    ClientIPHashFactory,
    LeastConnectionsFactory,
    MaglevFactory,
    PowerOfTwoChoicesFactory,
    RandomFactory,
    RingHashFactory,
    RoundRobinFactory,
)

roundRobin = RoundRobinFactory()
leastConnections = LeastConnectionsFactory()
powerOfTwoChoices = PowerOfTwoChoicesFactory()
weightedRandom = RandomFactory()
ringHash = RingHashFactory()
clientIPHash = ClientIPHashFactory()
maglev = MaglevFactory()
