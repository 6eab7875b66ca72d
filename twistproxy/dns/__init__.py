"""
The authoritative DNS front: a name server for the zones of the C{[dns]}
section, whose GSLB names are answered from upstream groups by health and
by where the client is (L{twistproxy.dns.server}), over zones held in
memory (L{twistproxy.dns.zone}).  Messages are read and written with
C{twisted.names}.
"""
