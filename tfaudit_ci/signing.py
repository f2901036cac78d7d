"""Record signatures. The signature covers the canonical record bytes (without ``signature``)
followed by the previous record's signature value, CloudTrail-style, so a forged record
breaks every signature after it.

Signers run inside ``tfaudit run``; verifiers inside ``tfaudit verify``, with a key the auditor
trusts (never the key material a record points at: a forger controls that).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any, Protocol

from tfaudit_ci.canonical import canonical_bytes
from tfaudit_ci.errors import ConfigError

HMAC_ALG = "hmac-sha256"


class Verifier(Protocol):
    """A trusted key. ``check`` returns None when the signature holds, else the problem."""

    description: str

    def check(self, signature: Mapping[str, Any], message: bytes) -> str | None: ...


class Signer(Protocol):
    algorithm: str

    def sign(self, message: bytes) -> dict[str, Any]: ...

    def verifier(self) -> Verifier | None:
        """The matching verifier: the writer checks what it chains onto with it."""
        ...


def signing_message(unsigned: Mapping[str, Any], prev_record: Mapping[str, Any] | None) -> bytes:
    return canonical_bytes(dict(unsigned)) + b"\n" + previous_signature(prev_record)


def previous_signature(prev_record: Mapping[str, Any] | None) -> bytes:
    prev_sig = ""
    if prev_record is not None:
        sig = prev_record.get("signature")
        if isinstance(sig, Mapping):
            prev_sig = str(sig.get("value") or "")
    return prev_sig.encode("ascii", "replace")


def record_signing_message(
    record: Mapping[str, Any], prev_record: Mapping[str, Any] | None
) -> bytes:
    """The bytes a stored record's signature should cover."""
    unsigned = {key: value for key, value in record.items() if key != "signature"}
    return signing_message(unsigned, prev_record)


class NoSigner:
    algorithm = "none"

    def sign(self, message: bytes) -> dict[str, Any]:
        del message
        return {"alg": "none"}

    def verifier(self) -> Verifier | None:
        return None


class HmacSigner:
    algorithm = HMAC_ALG

    def __init__(self, key: bytes, key_id: str) -> None:
        self._key = key
        self.key_id = key_id

    def sign(self, message: bytes) -> dict[str, Any]:
        value = hmac.new(self._key, message, hashlib.sha256).hexdigest()
        return {"alg": self.algorithm, "key_id": self.key_id, "value": value}

    def verifier(self) -> Verifier | None:
        return HmacVerifier(self._key)


class HmacVerifier:
    def __init__(self, key: bytes) -> None:
        self._key = key
        self.key_id = hmac_key_id(key)
        self.description = f"HMAC key {self.key_id}"

    def check(self, signature: Mapping[str, Any], message: bytes) -> str | None:
        problem = signature_shape_problem(signature, HMAC_ALG, "key_id", self.key_id)
        if problem:
            return problem
        expected = hmac.new(self._key, message, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, str(signature.get("value"))):
            return "HMAC signature does not match (the record or its predecessor was altered)"
        return None


def signature_shape_problem(
    signature: Mapping[str, Any], algorithm: str, id_field: str, expected_id: str
) -> str | None:
    """The problem with a signature block before any cryptography, or None."""
    alg = signature.get("alg")
    if alg in (None, "none"):
        return "record is not signed"
    if alg != algorithm:
        return f"record is signed with {alg}, the trusted key is {algorithm}"
    if not isinstance(signature.get("value"), str):
        return "signature has no value"
    found = signature.get(id_field)
    if found != expected_id:
        return f"record is signed by {id_field} {found}, not the trusted {expected_id}"
    return None


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


def make_verifier(
    *,
    key: str | None,
    public_key: str | None,
    kms_key: str | None,
    env: Mapping[str, str],
) -> Verifier | None:
    """The trusted key from ``--key``, ``--public-key`` or ``--kms-key`` (at most one)."""
    given = [
        name
        for name, value in (("--key", key), ("--public-key", public_key), ("--kms-key", kms_key))
        if value
    ]
    if len(given) > 1:
        raise ConfigError(
            f"{' and '.join(given)} given together", fix="pass exactly one trusted key"
        )
    if key:
        if not key.startswith("hmac:"):
            raise ConfigError(
                f"--key {key!r} is not an HMAC key spec",
                fix="use --key hmac:env:VAR, --public-key FILE or --kms-key ID",
            )
        return HmacVerifier(load_hmac_key(key, env))
    if public_key or kms_key:
        from tfaudit_ci.signing_keys import kms_verifier, public_key_verifier

        if public_key:
            return public_key_verifier(public_key)
        assert kms_key is not None
        return kms_verifier(kms_key, env)
    return None


def sign_record(
    unsigned: dict[str, Any], prev_record: Mapping[str, Any] | None, signer: Signer
) -> bytes:
    """The final canonical record bytes with ``signature`` added."""
    signature = signer.sign(signing_message(unsigned, prev_record))
    return canonical_bytes({**unsigned, "signature": signature})
