"""
HTTP itself: the HTTP/1.1 and HTTP/2 client codecs and the upstream one,
the strict parser and the request checks both client codecs share, fields,
and the proxy's own answers.  The pipeline between the codecs is
L{twistproxy.forwarder}, above this package.
"""
