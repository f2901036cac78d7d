"""Asymmetric record signatures: Ed25519 key files and AWS KMS ECC_NIST_P256 keys.

A signature block names its algorithm, a key id and ``public_key_sha256`` (SHA-256 of the
DER SubjectPublicKeyInfo), so an auditor can see which key signed without trusting it.

KMS: the signing message can exceed KMS's 4096-byte RAW limit, so KMS signs the 32-byte
SHA-256 digest of the message, sent as ``MessageType=RAW`` with ``ECDSA_SHA_256``; i.e. the
ECDSA signature is over SHA-256(SHA-256(message)). (``MessageType=DIGEST`` would avoid the
second hash, but moto's KMS ignores MessageType, so that mode could not be tested here.)
Verification never calls ``kms:Verify``: the public key is fetched once and used locally.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tfaudit_ci.errors import ConfigError, UploadError
from tfaudit_ci.signing import Signer, Verifier, signature_shape_problem

ED25519_ALG = "ed25519"
KMS_ALG = "kms-ecdsa-p256-sha256"
KMS_KEY_SPEC = "ECC_NIST_P256"
KMS_SIGNING_ALGORITHM = "ECDSA_SHA_256"


def _require_cryptography() -> None:
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise ConfigError(
            "Ed25519 and KMS signatures need the 'cryptography' package",
            fix="pip install 'tfaudit-ci[signing]'",
        ) from None


def spki_der(public_key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    der: bytes = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def fingerprint(public_key: Any) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo, hex: what records carry as the key's identity."""
    return hashlib.sha256(spki_der(public_key)).hexdigest()


# -- Ed25519 --------------------------------------------------------------------------------


class Ed25519Signer:
    algorithm = ED25519_ALG

    def __init__(self, private_key: Any) -> None:
        self._key = private_key
        self.public_key_sha256 = fingerprint(private_key.public_key())
        self.key_id = f"ed25519:{self.public_key_sha256[:16]}"

    def sign(self, message: bytes) -> dict[str, Any]:
        value = base64.b64encode(self._key.sign(message)).decode("ascii")
        return {
            "alg": self.algorithm,
            "key_id": self.key_id,
            "public_key_sha256": self.public_key_sha256,
            "value": value,
        }

    def verifier(self) -> Verifier | None:
        return PublicKeyVerifier(self._key.public_key(), source=self.key_id)


def load_ed25519_private_key(path: Path) -> Any:
    _require_cryptography()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read signing key file {path}: {exc.strerror}",
            fix="check the path given in ed25519:FILE",
        ) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"signing key file {path} is not an unencrypted PEM private key ({exc})",
            fix="generate one with `openssl genpkey -algorithm ed25519 -out key.pem`",
        ) from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(
            f"signing key file {path} holds a {type(key).__name__}, not an Ed25519 key",
            fix="generate one with `openssl genpkey -algorithm ed25519 -out key.pem`",
        )
    return key


# -- AWS KMS ----------------------------------------------------------------------------------


def kms_client(key_id: str, env: Mapping[str, str]) -> Any:
    import boto3
    from botocore.config import Config as BotoConfig

    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if key_id.startswith("arn:"):
        parts = key_id.split(":")
        region = parts[3] if len(parts) > 3 and parts[3] else region
    endpoint = env.get("AWS_ENDPOINT_URL_KMS") or env.get("AWS_ENDPOINT_URL") or None
    config = BotoConfig(
        connect_timeout=5, read_timeout=15, retries={"max_attempts": 4, "mode": "standard"}
    )
    # Credentials from the given environment when it has them, else boto3's default chain.
    session = boto3.session.Session(
        region_name=region,
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
        aws_session_token=env.get("AWS_SESSION_TOKEN") or None,
    )
    return session.client("kms", endpoint_url=endpoint, config=config)


def _kms_failure(exc: Exception, doing: str) -> tuple[str, str]:
    from tfaudit_ci.stores.s3_errors import describe

    summary, fix = describe(exc, doing)
    return summary, fix or "check the key id and the role's kms:Sign / kms:GetPublicKey rights"


def fetch_kms_public_key(client: Any, key_id: str) -> tuple[str, Any]:
    """(key ARN, public key) of an ECC_NIST_P256 signing key, checked for the right kind."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        response = client.get_public_key(KeyId=key_id)
    except Exception as exc:  # botocore raises many kinds
        summary, fix = _kms_failure(exc, f"fetching the public key of KMS key {key_id}")
        raise ConfigError(summary, fix=fix) from None
    spec = response.get("KeySpec") or response.get("CustomerMasterKeySpec")
    algorithms = response.get("SigningAlgorithms") or []
    if spec != KMS_KEY_SPEC or KMS_SIGNING_ALGORITHM not in algorithms:
        raise ConfigError(
            f"KMS key {key_id} is {spec} with {algorithms}, not {KMS_KEY_SPEC} signing",
            fix="create the key with KeySpec ECC_NIST_P256 and KeyUsage SIGN_VERIFY",
        )
    public_key = serialization.load_der_public_key(response["PublicKey"])
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise ConfigError(f"KMS key {key_id} did not return an EC public key")
    return str(response.get("KeyId") or key_id), public_key


class KmsSigner:
    algorithm = KMS_ALG

    def __init__(self, client: Any, key_id: str) -> None:
        self._client = client
        self.key_id, self._public_key = fetch_kms_public_key(client, key_id)
        self.public_key_sha256 = fingerprint(self._public_key)

    def sign(self, message: bytes) -> dict[str, Any]:
        digest = hashlib.sha256(message).digest()
        try:
            response = self._client.sign(
                KeyId=self.key_id,
                Message=digest,
                MessageType="RAW",
                SigningAlgorithm=KMS_SIGNING_ALGORITHM,
            )
        except Exception as exc:
            summary, fix = _kms_failure(exc, f"signing the record with KMS key {self.key_id}")
            raise UploadError(summary, fix=fix) from None
        signature: bytes = response["Signature"]
        # A wrong key or a broken proxy must fail the run now, not the audit years later.
        if _ecdsa_problem(self._public_key, signature, digest) is not None:
            raise UploadError(
                f"KMS key {self.key_id} returned a signature its public key does not verify",
                fix="check that the key id names the intended ECC_NIST_P256 key",
            )
        # KMS answers with the key's ARN even when given an alias or a bare key id.
        self.key_id = str(response.get("KeyId") or self.key_id)
        return {
            "alg": self.algorithm,
            "key_id": self.key_id,
            "public_key_sha256": self.public_key_sha256,
            "kms_message_type": "RAW",
            "kms_message": "sha256",
            "value": base64.b64encode(signature).decode("ascii"),
        }

    def verifier(self) -> Verifier | None:
        # The public key fetched once with kms:GetPublicKey: checks happen locally.
        return PublicKeyVerifier(self._public_key, key_id=self.key_id, source=self.key_id)


def make_key_signer(spec: str, env: Mapping[str, str]) -> Signer:
    _require_cryptography()
    if spec.startswith("ed25519:"):
        path = spec.removeprefix("ed25519:")
        if not path:
            raise ConfigError("ed25519: needs a key file", fix="use ed25519:/path/to/key.pem")
        return Ed25519Signer(load_ed25519_private_key(Path(path)))
    if spec.startswith("kms:"):
        key_id = spec.removeprefix("kms:")
        if not key_id:
            raise ConfigError("kms: needs a key id or ARN", fix="use kms:arn:aws:kms:...")
        return KmsSigner(kms_client(key_id, env), key_id)
    raise ConfigError(f"unknown signing key spec {spec!r}", fix="use ed25519:FILE or kms:KEY_ID")


# -- verification -------------------------------------------------------------------------------


def _decode_value(signature: Mapping[str, Any]) -> bytes | None:
    try:
        return base64.b64decode(str(signature.get("value")), validate=True)
    except (binascii.Error, ValueError):
        return None


def _ecdsa_problem(public_key: Any, signature: bytes, signed: bytes) -> str | None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        public_key.verify(signature, signed, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return "ECDSA signature does not verify (record or predecessor altered)"
    return None


class PublicKeyVerifier:
    """Verifies Ed25519 signatures, or KMS ECDSA P-256 signatures, with a trusted public key."""

    def __init__(self, public_key: Any, *, key_id: str | None = None, source: str = "") -> None:
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519

        self._key = public_key
        self.public_key_sha256 = fingerprint(public_key)
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            self.algorithm = ED25519_ALG
        elif isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.name in (
            "secp256r1",
        ):
            self.algorithm = KMS_ALG
        else:
            raise ConfigError(
                f"trusted key {source} is a {type(public_key).__name__}",
                fix="give an Ed25519 or EC P-256 public key (PEM)",
            )
        self.key_id = key_id
        self.description = f"{self.algorithm} key {key_id or self.public_key_sha256[:16]}"

    def check(self, signature: Mapping[str, Any], message: bytes) -> str | None:
        problem = signature_shape_problem(
            signature, self.algorithm, "public_key_sha256", self.public_key_sha256
        )
        if problem:
            return problem
        value = _decode_value(signature)
        if value is None:
            return "signature value is not base64"
        if self.algorithm == ED25519_ALG:
            from cryptography.exceptions import InvalidSignature

            try:
                self._key.verify(value, message)
            except InvalidSignature:
                return (
                    "Ed25519 signature does not verify (the record or its predecessor was altered)"
                )
            return None
        return _ecdsa_problem(self._key, value, hashlib.sha256(message).digest())


def public_key_verifier(path_text: str) -> PublicKeyVerifier:
    _require_cryptography()
    from cryptography.hazmat.primitives import serialization

    path = Path(path_text)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read public key {path}: {exc.strerror}", fix="check --public-key"
        ) from None
    try:
        if b"PRIVATE KEY" in data:
            public_key = serialization.load_pem_private_key(data, password=None).public_key()
        else:
            public_key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{path} is not a PEM public key ({exc})",
            fix="export it with `openssl pkey -in key.pem -pubout -out key.pub`",
        ) from None
    return PublicKeyVerifier(public_key, source=str(path))


def kms_verifier(key_id: str, env: Mapping[str, str]) -> PublicKeyVerifier:
    """Fetch the KMS key's public key once (kms:GetPublicKey) and verify locally."""
    _require_cryptography()
    arn, public_key = fetch_kms_public_key(kms_client(key_id, env), key_id)
    return PublicKeyVerifier(public_key, key_id=arn, source=f"KMS key {arn}")
