# -*- test-case-name: tests.test_backend_tls -*-
"""
TLS to backends: how the proxy connects to C{https://} servers.

A reverse proxy that forwards to a backend over TLS must check that it is
talking to that backend, or the TLS is decoration.  The server's
certificate is verified by Twisted's C{optionsForClientTLS} (with
service_identity: the name or IP address in the server's URL, or the
group's C{server_name}, must be in the certificate) against the system's
trusted CAs or the group's own CA bundle; SNI carries the same name.  There
is deliberately no option to skip verification: a failure is a 502 with
reason C{upstream_tls_failed} and a log line, never a silent fallback.
"""

from __future__ import annotations

from typing import Any, List

from twisted.internet import ssl

from twistproxy.config import ConfigError, UpstreamTLS


def _read(path: str, config_path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(config_path, f"cannot read {path!r}: {e.strerror or e}") from None


def _pem_certificates(data: bytes, path: str, config_path: str) -> List[ssl.Certificate]:
    marker = b"-----END CERTIFICATE-----"
    blocks = [b + marker for b in data.split(marker) if b"-----BEGIN CERTIFICATE-----" in b]
    if not blocks:
        raise ConfigError(config_path, f"{path!r} holds no PEM certificate")
    try:
        return [ssl.Certificate.loadPEM(block) for block in blocks]
    except Exception as e:
        raise ConfigError(config_path, f"{path!r}: not a valid certificate ({e})") from None


def client_creator(tls: UpstreamTLS, host: str, path: str) -> Any:
    """
    The C{IOpenSSLClientConnectionCreator} for connections to one backend.

    @param tls: The group's TLS settings.
    @param host: The backend's host (name or IP address literal).
    @param path: The configuration path of C{tls}, for errors, e.g.
        C{'upstreams.api.tls'}.
    @raises ConfigError: when a file cannot be read or parsed.
    """
    kwargs: dict = {}
    if tls.ca:
        kwargs["trustRoot"] = ssl.trustRootFromCertificates(
            _pem_certificates(_read(tls.ca, f"{path}.ca"), tls.ca, f"{path}.ca"))
    if tls.client_cert:
        pem = _read(tls.client_cert, f"{path}.client_cert")
        if tls.client_key:
            pem += b"\n" + _read(tls.client_key, f"{path}.client_key")
        try:
            kwargs["clientCertificate"] = ssl.PrivateCertificate.loadPEM(pem)
        except Exception as e:
            raise ConfigError(
                f"{path}.client_cert",
                f"cannot load the client certificate and key: {e}",
            ) from None
    return ssl.optionsForClientTLS(tls.server_name or host, **kwargs)
