"""Key pairs and challenge signatures with the ``cryptography`` package (spec 5.3, 5.5).

Components sign the CBOR ``[challenge, name]`` with RSASSA-PKCS1-v1_5 and
SHA-256 (RSA keys) or ECDSA with SHA-256 (EC keys, P-256 by default); the
broker verifies with the public key registered for the name. Public keys
are accepted as PEM or DER, PKCS#1 (RSA only) or SubjectPublicKeyInfo, which
covers what the upstream Python and Julia tools produce.
"""

from __future__ import annotations

from typing import Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from rembus_proto.security_port import ECDSA, RSA, PublicKey, SecurityError

KeyType = Literal["rsa", "ecdsa"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
VerifyingKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

#: Smallest RSA modulus accepted at registration.
MIN_RSA_BITS = 2048
_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_KEY_TYPES: dict[str, int] = {"rsa": RSA, "ecdsa": ECDSA}


def key_type_code(key_type: str) -> int:
    """REGISTER ``keytype`` of ``"rsa"`` (1) or ``"ecdsa"`` (2)."""
    try:
        return _KEY_TYPES[key_type]
    except KeyError:
        raise ValueError(f"key_type must be 'rsa' or 'ecdsa', not {key_type!r}") from None


def is_pem(data: bytes) -> bool:
    """Whether key bytes are PEM text (else they are taken as DER)."""
    return data.lstrip().startswith(b"-----BEGIN")


def load_public_key(data: bytes) -> VerifyingKey:
    """Parse a public key: PEM or DER, PKCS#1 or SubjectPublicKeyInfo; ValueError if not."""
    try:
        if is_pem(data):
            key = serialization.load_pem_public_key(data)
        else:
            key = serialization.load_der_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"not a public key: {exc}") from None
    if isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        return key
    raise ValueError(f"unsupported key kind {type(key).__name__}: use RSA or ECDSA")


def check_public_key(key: PublicKey) -> str:
    """Validate a key offered at registration; return its file format (``pem``/``der``).

    Raises :class:`SecurityError` (shown to the registering component) when
    the bytes are not a usable key or do not match ``key.keytype``.
    """
    try:
        parsed = load_public_key(key.data)
    except ValueError as exc:
        raise SecurityError(f"invalid public key: {exc}") from None
    if key.keytype == RSA:
        if not isinstance(parsed, rsa.RSAPublicKey):
            raise SecurityError("invalid public key: key type 1 needs an RSA key")
        if parsed.key_size < MIN_RSA_BITS:
            raise SecurityError(f"invalid public key: RSA keys need at least {MIN_RSA_BITS} bits")
    elif key.keytype == ECDSA:
        if not isinstance(parsed, ec.EllipticCurvePublicKey):
            raise SecurityError("invalid public key: key type 2 needs an EC key")
        if not isinstance(parsed.curve, _CURVES):
            raise SecurityError(f"invalid public key: unsupported curve {parsed.curve.name}")
    else:
        raise SecurityError(f"unknown key type {key.keytype}")
    return "pem" if is_pem(key.data) else "der"


def verify_signature(key: PublicKey, signed: bytes, signature: bytes) -> bool:
    """Whether ``signature`` over ``signed`` verifies with ``key`` (never raises)."""
    try:
        parsed = load_public_key(key.data)
        if isinstance(parsed, rsa.RSAPublicKey):
            parsed.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
        else:
            parsed.verify(signature, signed, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def generate_private_key(key_type: str = "rsa") -> PrivateKey:
    """A new RSA 2048 or P-256 private key."""
    if key_type_code(key_type) == RSA:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key: PrivateKey) -> bytes:
    """The public half of ``key`` as SubjectPublicKeyInfo PEM (what REGISTER carries)."""
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def private_pem(key: PrivateKey) -> bytes:
    """``key`` as unencrypted "traditional OpenSSL" PEM, the ``.secret`` format."""
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def sign(key: PrivateKey, data: bytes) -> bytes:
    """Sign ``data`` the way a component answers a challenge."""
    if isinstance(key, rsa.RSAPrivateKey):
        return bytes(key.sign(data, padding.PKCS1v15(), hashes.SHA256()))
    return bytes(key.sign(data, ec.ECDSA(hashes.SHA256())))


__all__ = [
    "MIN_RSA_BITS",
    "KeyType",
    "PrivateKey",
    "check_public_key",
    "generate_private_key",
    "is_pem",
    "key_type_code",
    "load_public_key",
    "private_pem",
    "public_pem",
    "sign",
    "verify_signature",
]
