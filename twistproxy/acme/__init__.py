"""
Automatic certificates from an ACME CA (RFC 8555): where they are kept
(L{store <twistproxy.acme.store>}) and when they are renewed
(L{schedule <twistproxy.acme.schedule>}).
"""
