"""
Certificates made at run time for TLS tests: a private CA and leaves it signs.

Nothing is checked in; every test run makes fresh keys (EC P-256, fast)::

    ca = make_ca()
    leaf = ca.issue(["localhost", "127.0.0.1"])
    key_path, cert_path = leaf.write(self.mktemp())
    ca_path = ca.write(self.mktemp())
"""

from __future__ import annotations

import datetime
import ipaddress
import os

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_PEM = serialization.Encoding.PEM


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return builder.not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(
        now + datetime.timedelta(days=1)
    )


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


@attrs.frozen
class Leaf:
    """A server certificate and its key."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            _PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(_PEM)

    def write(self, directory: str) -> tuple[str, str]:
        """Write ``key.pem`` and ``cert.pem`` under ``directory``; return their paths."""
        os.makedirs(directory, exist_ok=True)
        key_path = os.path.join(directory, "key.pem")
        cert_path = os.path.join(directory, "cert.pem")
        with open(key_path, "wb") as f:
            f.write(self.key_pem())
        with open(cert_path, "wb") as f:
            f.write(self.cert_pem())
        return key_path, cert_path


@attrs.frozen
class CA:
    """A self-signed certificate authority that issues :class:`Leaf` certificates."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(_PEM)

    def write(self, directory: str) -> str:
        """Write ``ca.pem`` under ``directory``; return its path."""
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, "ca.pem")
        with open(path, "wb") as f:
            f.write(self.cert_pem())
        return path

    def issue(self, names: list[str]) -> Leaf:
        """A server certificate for ``names`` (DNS names or IP addresses)."""
        key = ec.generate_private_key(ec.SECP256R1())
        builder = _validity(
            x509.CertificateBuilder()
            .subject_name(_name(names[0]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
        )
        builder = (
            builder.add_extension(_san(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        return Leaf(key, builder.sign(self.key, hashes.SHA256()))


def make_ca(common_name: str = "SocketDock test CA") -> CA:
    """A fresh CA, valid from an hour ago for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _validity(
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
    )
    builder = (
        builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return CA(key, builder.sign(key, hashes.SHA256()))
