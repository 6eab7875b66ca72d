"""The HTTP/1.1 codecs and the forwarding pipeline."""
