"""JWT (JWS compact form) and JWK for OIDC identity evidence, on PyJWT (with ``cryptography``).

Supported: RS256/RS384/RS512 (what GitHub and GitLab issue) and ES256/ES384; never ``none``.
``decode`` only splits and parses a token; ``verify_signature`` checks it offline against a
JWKS. Claims are never validated here (expiry, audience...): ``identity_verify`` compares
them with the record, at the record's time, not now.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt as pyjwt

SUPPORTED_ALGS = ("RS256", "RS384", "RS512", "ES256", "ES384")


class JwtError(ValueError):
    """The token or key set is malformed (not merely signed by someone else)."""


@dataclass(frozen=True)
class Jwt:
    header: dict[str, Any]
    claims: dict[str, Any]
    token: str


def decode(token: str) -> Jwt:
    """Split and parse a compact JWS without checking its signature."""
    text = token.strip()
    if text.count(".") != 2:
        raise JwtError("a JWT has three dot-separated parts")
    try:
        parts = pyjwt.PyJWS().decode_complete(text, options={"verify_signature": False})
    except pyjwt.PyJWTError as exc:
        raise JwtError(f"JWT header or encoding is malformed ({exc})") from None
    try:
        claims = json.loads(parts["payload"])
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise JwtError("JWT claims are not JSON") from None
    header = parts["header"]
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise JwtError("JWT header and claims must be JSON objects")
    return Jwt(header, claims, text)


def jwk_public_key(jwk: Mapping[str, Any]) -> Any:
    """A ``cryptography`` public key from one JWK (RSA or EC)."""
    try:
        return pyjwt.PyJWK(dict(jwk)).key
    except (pyjwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
        raise JwtError(f"unusable JWK ({exc})") from None


def verify_signature(token: Jwt, jwks: Mapping[str, Any]) -> str | None:
    """None when a key of ``jwks`` signed the token, else why not."""
    alg = token.header.get("alg")
    if alg not in SUPPORTED_ALGS:
        return f"unsupported JWT algorithm {str(alg)[:40]!r}"  # includes "none": never accepted
    keys = jwks.get("keys")
    if not isinstance(keys, list):
        return "the JWKS has no keys"
    kid = token.header.get("kid")
    candidates = [
        k for k in keys if isinstance(k, Mapping) and (kid is None or k.get("kid") == kid)
    ]
    if not candidates:
        return f"no key with kid {str(kid)[:80]!r} in the JWKS"
    verifier = pyjwt.PyJWS(algorithms=list(SUPPORTED_ALGS))
    for jwk in candidates:
        try:
            key = jwk_public_key(jwk)
            verifier.decode_complete(token.token, key=key, algorithms=[str(alg)])
        except (JwtError, pyjwt.PyJWTError, ValueError, TypeError):
            continue
        return None
    return f"the JWT signature does not verify with the JWKS key(s) {str(kid or '(any)')[:80]}"
