"""Just enough JWT (JWS compact form) and JWK for OIDC identity evidence, on ``cryptography``.

Supported: RS256/RS384/RS512 (what GitHub and GitLab issue) and ES256/ES384.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_HASHES = {"256": "SHA256", "384": "SHA384", "512": "SHA512"}
_CURVES = {"P-256": ("secp256r1", 32), "P-384": ("secp384r1", 48)}
SUPPORTED_ALGS = ("RS256", "RS384", "RS512", "ES256", "ES384")


class JwtError(ValueError):
    """The token or key set is malformed (not merely signed by someone else)."""


def b64url_decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise JwtError("not base64url") from None


@dataclass(frozen=True)
class Jwt:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def decode(token: str) -> Jwt:
    """Split and parse a compact JWS without checking its signature."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise JwtError("a JWT has three dot-separated parts")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise JwtError("JWT header or claims are not JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise JwtError("JWT header and claims must be JSON objects")
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    return Jwt(header, claims, signing_input, b64url_decode(parts[2]))


def _b64_int(value: Any) -> int:
    if not isinstance(value, str):
        raise JwtError("JWK number is not a string")
    return int.from_bytes(b64url_decode(value), "big")


def jwk_public_key(jwk: Mapping[str, Any]) -> Any:
    """A ``cryptography`` public key from one JWK (RSA or EC)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    kty = jwk.get("kty")
    if kty == "RSA":
        return rsa.RSAPublicNumbers(_b64_int(jwk.get("e")), _b64_int(jwk.get("n"))).public_key()
    if kty == "EC":
        crv = str(jwk.get("crv"))
        if crv not in _CURVES:
            raise JwtError(f"unsupported EC curve {crv}")
        curve = getattr(ec, _CURVES[crv][0].upper())()
        numbers = ec.EllipticCurvePublicNumbers(
            _b64_int(jwk.get("x")), _b64_int(jwk.get("y")), curve
        )
        return numbers.public_key()
    raise JwtError(f"unsupported JWK key type {kty}")


def _verify_with(key: Any, token: Jwt, alg: str) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    algorithm = getattr(hashes, _HASHES[alg[2:]])()
    try:
        if alg.startswith("RS"):
            if not isinstance(key, rsa.RSAPublicKey):
                return False
            key.verify(token.signature, token.signing_input, padding.PKCS1v15(), algorithm)
            return True
        if not isinstance(key, ec.EllipticCurvePublicKey):
            return False
        size = (key.curve.key_size + 7) // 8
        if len(token.signature) != 2 * size:
            return False
        r = int.from_bytes(token.signature[:size], "big")
        s = int.from_bytes(token.signature[size:], "big")
        key.verify(encode_dss_signature(r, s), token.signing_input, ec.ECDSA(algorithm))
        return True
    except InvalidSignature:
        return False


def verify_signature(token: Jwt, jwks: Mapping[str, Any]) -> str | None:
    """None when a key of ``jwks`` signed the token, else why not."""
    try:
        import cryptography  # noqa: F401
    except ImportError:
        return "cannot check JWT signatures without 'cryptography' (tfaudit-ci[signing])"
    alg = token.header.get("alg")
    if alg not in SUPPORTED_ALGS:
        return f"unsupported JWT algorithm {alg!r}"  # includes "none": never accepted
    keys = jwks.get("keys")
    if not isinstance(keys, list):
        return "the JWKS has no keys"
    kid = token.header.get("kid")
    candidates = [
        k for k in keys if isinstance(k, Mapping) and (kid is None or k.get("kid") == kid)
    ]
    if not candidates:
        return f"no key with kid {kid!r} in the JWKS"
    for jwk in candidates:
        try:
            key = jwk_public_key(jwk)
        except (JwtError, ValueError):
            continue
        if _verify_with(key, token, str(alg)):
            return None
    return f"the JWT signature does not verify with the JWKS key(s) {kid or '(any)'}"
