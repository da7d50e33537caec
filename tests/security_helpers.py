"""Keys, certificates and a secured router network for the security tests.

Keys are real (RSA 2048, P-256) and made once per test session.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

import rembus_proto as rp
from rembus.security import crypto
from rembus_proto.broker import Router, RouterConfig
from rembus_proto.security_port import ECDSA, RSA, MemorySecurity, PublicKey, Security
from rembus_proto.store import MemoryStore
from router_harness import Net, Peer

PEM = serialization.Encoding.PEM
DER = serialization.Encoding.DER
SPKI = serialization.PublicFormat.SubjectPublicKeyInfo
PKCS1 = serialization.PublicFormat.PKCS1


@cache
def private_key(kind: str = "rsa", index: int = 0) -> crypto.PrivateKey:
    """A private key, the same one for the same (kind, index) during the session."""
    del index  # part of the cache key only
    return crypto.generate_private_key(kind)


def public_key(kind: str = "rsa", index: int = 0, encoding: serialization.Encoding = PEM,
               layout: serialization.PublicFormat = SPKI) -> PublicKey:
    """The registered form of ``private_key(kind, index)``."""
    key = private_key(kind, index)
    data = key.public_key().public_bytes(encoding, layout)
    return PublicKey(data, RSA if kind == "rsa" else ECDSA)


def signature(challenge: bytes, name: str, kind: str = "rsa", index: int = 0) -> bytes:
    """The answer of ``private_key(kind, index)`` to ``challenge`` for ``name``."""
    return crypto.sign(private_key(kind, index), rp.challenge_input(challenge, name))


def secret_pem(kind: str = "rsa", index: int = 0, pkcs8: bool = False) -> bytes:
    """A ``.secret`` file: traditional OpenSSL PEM, or PKCS#8 PEM."""
    fmt = (serialization.PrivateFormat.PKCS8 if pkcs8
           else serialization.PrivateFormat.TraditionalOpenSSL)
    return private_key(kind, index).private_bytes(PEM, fmt, serialization.NoEncryption())


class SecureNet(Net):
    """The router harness with a security port and the real signature check."""

    def __init__(self, config: RouterConfig | None = None, security: Security | None = None,
                 store: MemoryStore | None = None, **kwargs: Any) -> None:
        super().__init__(config, store, **kwargs)
        self.security: Security = security if security is not None else MemorySecurity(
            tenants={".": "1234", "acme": "4321"})
        self.router = self._router()

    def _router(self) -> Router:
        return Router(self.store, self.config, id_factory=self._ids, now=self.now,
                      security=self.security, verify=crypto.verify_signature)

    def restart(self) -> None:
        super().restart()
        self.router = self._router()

    def register(self, name: str, kind: str = "rsa", index: int = 0) -> None:
        """Put the key of ``name`` in the security port directly."""
        self.security.save_key(name, public_key(kind, index))

    def login(self, name: str, kind: str = "rsa", index: int = 0) -> Peer:
        """A peer logged in as registered ``name`` with its key."""
        peer = self.connect()
        challenge = peer.identify(name)
        assert challenge.status == rp.Status.CHALLENGE, challenge
        reply = peer.request(lambda i: rp.Attestation(
            i, name, signature(challenge.data.value, name, kind, index)))
        assert reply.status == 0, reply
        return peer


# -- TLS ---------------------------------------------------------------------

@dataclass(frozen=True)
class TLSFiles:
    """A CA and a server certificate for 127.0.0.1 and localhost."""

    ca: Path
    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def server_context(self) -> ssl.SSLContext:
        from rembus.security.tls import server_context

        return server_context(self.cert, self.key)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_tls(directory: Path) -> TLSFiles:
    """Write ``ca.pem``, ``server.pem`` and ``server.key`` in ``directory``."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder()
          .subject_name(_name("rembus test CA")).issuer_name(_name("rembus test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(_name("localhost")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = TLSFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca.write_bytes(ca.public_bytes(PEM))
    files.cert.write_bytes(cert.public_bytes(PEM))
    files.key.write_bytes(key.private_bytes(PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return files


__all__ = ["DER", "PEM", "PKCS1", "SPKI", "SecureNet", "TLSFiles", "make_tls", "private_key",
           "public_key", "rsa", "secret_pem", "signature"]
