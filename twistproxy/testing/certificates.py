# -*- test-case-name: tests.test_tls -*-
"""
Keys and certificates made by the tests (never checked in), for whatever
needs TLS: L{issue_certificate}, and L{key_pem}, L{cert_pem} and
L{pem_bundle} to write them as TLS listeners read them.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple


def issue_certificate(
    common_name: str,
    sans: Sequence[str] = (),
    issuer: Optional[Tuple[Any, Any]] = None,
    ca: bool = False,
    organization: str = "",
    client: bool = False,
    expired: bool = False,
) -> Tuple[Any, Any]:
    """
    A new P-256 key and a certificate for it, for tests that need TLS:
    C{(key, certificate)} as C{cryptography} objects.  Certificates are made
    by the tests, never checked in.

    @param sans: DNS names or IP addresses for the subjectAltName; none
        means no such extension at all.
    @param issuer: C{(key, certificate)} of the issuing CA; self-signed when
        C{None}.
    @param ca: Whether it may issue certificates.
    @param client: Whether it is for TLS clients (else servers).
    @param expired: Valid only in the past (it ended two days ago); else
        valid from an hour ago for two days.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    attributes = []
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    subject = x509.Name(attributes)
    issuer_key, issuer_cert = issuer if issuer is not None else (key, None)
    now = datetime.datetime.now(datetime.timezone.utc)
    if expired:
        start, end = now - datetime.timedelta(days=30), now - datetime.timedelta(days=2)
    else:
        start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False,
                          key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True)
    else:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        entries = []
        for san in sans:
            try:
                entries.append(x509.IPAddress(ipaddress.ip_address(san)))
            except ValueError:
                entries.append(x509.DNSName(san))
        builder = builder.add_extension(x509.SubjectAlternativeName(entries), critical=False)
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False)
    return key, builder.sign(issuer_key, hashes.SHA256())


def key_pem(key, password: Optional[bytes] = None) -> bytes:
    """
    A private key in PEM (PKCS#8), encrypted with C{password} if given.
    """
    from cryptography.hazmat.primitives import serialization

    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def cert_pem(*certs) -> bytes:
    """
    Certificates in PEM, in order.
    """
    from cryptography.hazmat.primitives import serialization

    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def pem_bundle(pair, *chain) -> bytes:
    """
    A key, its certificate and the given intermediates (C{(key,
    certificate)} pairs) in one PEM, as TLS listeners read them.
    """
    return key_pem(pair[0]) + cert_pem(pair[1], *(c[1] for c in chain))
