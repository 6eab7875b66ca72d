"""
Proxying below HTTP: TCP relays (L{twistproxy.stream.tcp}), TLS
passthrough routed by the ClientHello's server name
(L{twistproxy.stream.sni}), UDP sessions (L{twistproxy.stream.udp}) and
the PROXY protocol (L{twistproxy.proxyproto}).
"""
