# -*- test-case-name: tests.test_acme -*-
"""
The directory where ACME certificates are kept.

Each certificate named by a listener's C{tls.acme} lives in one PEM file,
its private key followed by the certificate and its chain, named after its
first name (C{*} written C{_}: C{_.example.com.pem}), which is the form a
listener's C{certificates} entry reads.  Until the CA has issued one, the
file holds a self-signed stand-in for the names, valid for a day, so that
the TLS listener can start (and serve) at once; its renewal is due at once.

Files are written atomically (a temporary file in the same directory, made
with mode 0600, then renamed over the old one), so that a reader, a crash
or a second instance never sees half a key; the directory is made with
mode 0700.
"""

from __future__ import annotations

import datetime as _datetime
import os
import tempfile
from typing import Sequence, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from twistproxy.config.checks import ConfigError
from twistproxy.config.values import ACME, Certificate

def new_key(key_type: str):
    """
    A new private key of C{key_type} (the C{[acme]} section's C{key_type}).
    """
    if key_type == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key) -> bytes:
    """
    C{key} as unencrypted PKCS#8 PEM.
    """
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def certificate_file(acme: ACME, names: Sequence[str]) -> str:
    """
    The file of the certificate for C{names} in C{acme.storage}.
    """
    return os.path.join(acme.storage, names[0].replace("*", "_") + ".pem")


def account_file(acme: ACME) -> str:
    """
    The file of the account key in C{acme.storage}.
    """
    return os.path.join(acme.storage, "account.key")


def write_atomically(filename: str, data: bytes) -> None:
    """
    Replace C{filename} with C{data}, mode 0600, so that readers see the
    old file or the new one, never a part.
    """
    directory = os.path.dirname(filename) or "."
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, filename)
    except BaseException:
        os.unlink(temporary)
        raise


def self_signed(names: Sequence[str], key, now: _datetime.datetime,
                *extensions: Tuple[x509.ExtensionType, bool]) -> x509.Certificate:
    """
    A self-signed certificate of C{key} for C{names} (the first also its
    subject), valid for a day from C{now} (and five minutes before, for
    clients whose clock is a little behind), with C{extensions}
    (C{(extension, critical)} pairs) besides the subjectAltName.
    """
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _datetime.timedelta(minutes=5))
        .not_valid_after(now + _datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical)
    return builder.sign(key, hashes.SHA256())


def stand_in(names: Sequence[str], key_type: str,
             now: _datetime.datetime) -> bytes:
    """
    A self-signed certificate for C{names}, valid for a day from C{now},
    with its key: what a listener serves until the CA has issued one.
    """
    key = new_key(key_type)
    return key_pem(key) + self_signed(names, key, now).public_bytes(serialization.Encoding.PEM)


def is_stand_in(cert: x509.Certificate) -> bool:
    """
    Whether C{cert} is a stand-in (self-signed), not yet the CA's.
    """
    return cert.issuer == cert.subject


def read_certificate(filename: str) -> x509.Certificate:
    """
    The first certificate (the server's own) in a stored file.
    """
    with open(filename, "rb") as f:
        return x509.load_pem_x509_certificates(f.read())[0]


def ensure(acme: ACME, names: Sequence[str], path: str,
           now: _datetime.datetime) -> Certificate:
    """
    The listener's certificate entry for C{names}, writing a stand-in
    first when the storage holds none yet (or an expired stand-in).

    @param path: The configuration path of the names, for errors.
    @raises ConfigError: When the storage directory cannot be made or
        written.
    """
    filename = certificate_file(acme, names)
    try:
        os.makedirs(acme.storage, mode=0o700, exist_ok=True)
        if _needs_stand_in(filename, names, now):
            write_atomically(filename, stand_in(names, acme.key_type, now))
    except OSError as e:
        raise ConfigError(path, f"cannot write the ACME storage {acme.storage!r}: "
                                f"{e.strerror or e}") from None
    return Certificate(cert=filename)


def _needs_stand_in(filename: str, names: Sequence[str], now: _datetime.datetime) -> bool:
    if not os.path.exists(filename):
        return True
    cert = read_certificate(filename)
    # A stand-in for other names (the configuration changed) is made anew;
    # the CA's certificate is served until its renewal for them lands.
    return is_stand_in(cert) and (cert.not_valid_after_utc <= now
                                  or not holds_exactly(cert, names))


def holds_exactly(cert: x509.Certificate, names: Sequence[str]) -> bool:
    """
    Whether C{cert} is for C{names}, no more and no fewer (its
    subjectAltName's DNS names, in any case).
    """
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    held = {n.lower() for n in sans.get_values_for_type(x509.DNSName)}
    return held == {n.lower() for n in names}


def lifetime(cert: x509.Certificate) -> Tuple[float, float]:
    """
    C{(not_before, not_after)} of C{cert}, in seconds since the epoch.
    """
    return cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()
