"""Record signatures. The signature covers the canonical record bytes (without ``signature``)
followed by the previous record's signature value, CloudTrail-style, so a forged record
breaks every signature after it."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any, Protocol

from tfaudit_ci.canonical import canonical_bytes
from tfaudit_ci.errors import ConfigError


class Signer(Protocol):
    algorithm: str

    def sign(self, message: bytes) -> dict[str, Any]: ...


def signing_message(unsigned: Mapping[str, Any], prev_record: Mapping[str, Any] | None) -> bytes:
    prev_sig = ""
    if prev_record is not None:
        sig = prev_record.get("signature")
        if isinstance(sig, Mapping):
            prev_sig = str(sig.get("value") or "")
    return canonical_bytes(dict(unsigned)) + b"\n" + prev_sig.encode("ascii", "replace")


class NoSigner:
    algorithm = "none"

    def sign(self, message: bytes) -> dict[str, Any]:
        del message
        return {"alg": "none"}


class HmacSigner:
    algorithm = "hmac-sha256"

    def __init__(self, key: bytes, key_id: str) -> None:
        self._key = key
        self.key_id = key_id

    def sign(self, message: bytes) -> dict[str, Any]:
        value = hmac.new(self._key, message, hashlib.sha256).hexdigest()
        return {"alg": self.algorithm, "key_id": self.key_id, "value": value}


def hmac_key_id(key: bytes) -> str:
    # Identifies the key without revealing it: a hash of a hash, domain-separated.
    return "hmac:" + hashlib.sha256(b"tfaudit-hmac-key-id:" + key).hexdigest()[:16]


def load_hmac_key(spec: str, env: Mapping[str, str]) -> bytes:
    rest = spec.removeprefix("hmac:")
    if not rest.startswith("env:"):
        raise ConfigError(f"bad HMAC key spec {spec!r}", fix="use hmac:env:VARIABLE_NAME")
    name = rest.removeprefix("env:")
    value = env.get(name)
    if not value:
        raise ConfigError(
            f"HMAC key variable {name} is not set or empty",
            fix=f"expose the secret as {name} to this step",
        )
    return value.encode("utf-8")


def make_signer(spec: str | None, env: Mapping[str, str]) -> Signer:
    if not spec or spec == "none":
        return NoSigner()
    if spec.startswith("hmac:"):
        key = load_hmac_key(spec, env)
        return HmacSigner(key, hmac_key_id(key))
    if spec.startswith(("ed25519:", "kms:")):
        from tfaudit_ci.signing_keys import make_key_signer

        return make_key_signer(spec, env)
    raise ConfigError(
        f"unknown signing key spec {spec!r}",
        fix="use none, hmac:env:VAR, ed25519:FILE or kms:KEY_ID",
    )


def sign_record(
    unsigned: dict[str, Any], prev_record: Mapping[str, Any] | None, signer: Signer
) -> bytes:
    """The final canonical record bytes with ``signature`` added."""
    signature = signer.sign(signing_message(unsigned, prev_record))
    return canonical_bytes({**unsigned, "signature": signature})
