"""Asymmetric record signers (being built: see issue 3)."""

from __future__ import annotations

from collections.abc import Mapping

from tfaudit_ci.errors import ConfigError
from tfaudit_ci.signing import Signer


def make_key_signer(spec: str, env: Mapping[str, str]) -> Signer:
    del env
    raise ConfigError(
        f"signing key {spec!r} is not supported in this build", fix="use hmac:env:VAR"
    )
