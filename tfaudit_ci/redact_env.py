"""Which values are registered secrets: environment variables by name, and their parts.

A registered secret is redacted wherever it appears, in any of its encodings (see
``redact_forms``). Environment variables are registered by name (``is_secret_env_name``; the
list is documented in docs/redaction.md), or because the workflow names them (``env:NAME``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tfaudit_ci.redact_forms import MIN_SECRET_LENGTH, MIN_WORD_LENGTH


@dataclass(frozen=True)
class Secret:
    """A value to redact, and the rule name its markers carry (``env:NAME``, ``var:NAME``...).
    The name is public; the value never leaves memory."""

    rule: str
    value: str
    full: bool = True  # every encoding (see redact_forms.secret_forms), or the printed ones


# Exact names, and name endings, whose values are credentials even though they end like a
# location (DATABASE_URL) or name no secret word (MYSQL_PWD).
_SECRET_NAMES = frozenset(
    {
        "DATABASE_URL", "REDIS_URL", "MONGODB_URI", "MONGO_URL", "MONGODB_URL", "AMQP_URL",
        "MYSQL_PWD", "PGPASSWORD", "VAULT_TOKEN", "CONSUL_HTTP_AUTH", "CONSUL_HTTP_TOKEN",
        "NOMAD_TOKEN", "DD_API_KEY", "DD_APP_KEY", "ARM_CLIENT_SECRET", "GOOGLE_CREDENTIALS",
        "NETRC", "KEY",
    }
)  # fmt: skip
_SECRET_SUFFIXES = (
    "_PAT", "_WEBHOOK_URL", "_WEBHOOK", "_DATABASE_URL", "_DSN", "_CONNECTION_STRING",
    "_CONN_STR", "_CONN_STRING", "_APP_KEY",
)  # fmt: skip
_SECRET_WORDS = (
    "TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASSPHRASE", "CREDENTIAL", "PRIVATE", "API_KEY",
    "APIKEY", "JWT",
)  # fmt: skip
_SECRET_KEY_SUFFIXES = (
    "PRIVATE_KEY", "API_KEY", "APIKEY", "ACCESS_KEY", "SECRET_KEY", "ACCOUNT_KEY", "MASTER_KEY",
    "SIGNING_KEY", "ENCRYPTION_KEY", "CLIENT_KEY", "SHARED_KEY", "SAS_KEY", "AUTH_KEY",
    "LICENSE_KEY", "HMAC_KEY", "SSH_KEY", "DEPLOY_KEY", "SESSION_KEY", "STORAGE_KEY",
    "SUBSCRIPTION_KEY", "CONSUMER_KEY",
)  # fmt: skip
# Words of the name: AUTH (CONSUL_HTTP_AUTH, NPM_AUTH_TOKEN, OAUTH_…, never AUTHOR), and short
# words that are only secret on their own (DB_PIN, SMTP_PASS; never PINNED or PASSENGER).
_SECRET_SEGMENT = re.compile(
    r"(?:^|_)(?:O?AUTH(?:$|_|ORIZATION|KEY|TOKEN)|(?:PIN|PASS|PASSCODE|OTP|CREDS)(?:$|_))"
)
# Names whose values are locations or identifiers, not credentials, even though they contain a
# secret-looking word (ACTIONS_ID_TOKEN_REQUEST_URL, AWS_WEB_IDENTITY_TOKEN_FILE, …).
_PUBLIC_SUFFIXES = (
    "_URL", "_URI", "_FILE", "_PATH", "_DIR", "_ENDPOINT", "_ID", "_NAME", "_TYPE", "_SOCK",
    "_ENABLED", "_HOST", "_PORT", "_USER", "_USERNAME", "_REGION",
)  # fmt: skip
_PUBLIC_NAMES = frozenset({"GOOGLE_APPLICATION_CREDENTIALS", "AWS_ACCESS_KEY_ID"})
# Strings every Google service-account key holds: public constants, not secrets.
_PUBLIC_JSON_STRINGS = frozenset(
    {
        "service_account", "authorized_user", "external_account", "googleapis.com",
        "https://accounts.google.com/o/oauth2/auth", "https://oauth2.googleapis.com/token",
        "https://www.googleapis.com/oauth2/v1/certs",
    }
)  # fmt: skip
_PLAIN_SCALAR = re.compile(r"(?i:true|false|null|yes|no|on|off|-?[0-9]+(?:\.[0-9]+)?)")


def _named_secret(upper: str) -> bool:
    if upper in _SECRET_NAMES or upper.endswith(_SECRET_SUFFIXES):
        return True
    if upper in _PUBLIC_NAMES or upper.endswith(_PUBLIC_SUFFIXES):
        return False
    if any(word in upper for word in _SECRET_WORDS) or _SECRET_SEGMENT.search(upper):
        return True
    return upper.endswith(_SECRET_KEY_SUFFIXES)


def is_secret_env_name(name: str) -> bool:
    """Whether an environment variable's value is registered as a secret (by its name)."""
    upper = name.upper()
    if upper.startswith(("TF_VAR_", "TF_TOKEN_")):  # terraform inputs, registry credentials
        return True
    return _named_secret(upper)


def _json_strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for item in node.values():
            yield from _json_strings(item)
    elif isinstance(node, list):
        for item in node:
            yield from _json_strings(item)


def _inner_strings(value: str) -> list[str]:
    """Every string inside a JSON document (a service-account key, a TF_VAR object)."""
    text = value.strip()
    if not text.startswith(("{", "[")):
        return []
    try:
        document = json.loads(text)
    except ValueError:
        return []
    return [
        item
        for item in _json_strings(document)
        if len(item) >= MIN_SECRET_LENGTH and item not in _PUBLIC_JSON_STRINGS and item != text
    ]


def value_secrets(rule: str, value: str, warnings: list[str], label: str) -> list[Secret]:
    """The secrets one registered value stands for: itself, trimmed, and its JSON parts.

    A value too short to redact safely is reported in ``warnings`` (by ``label``, never by
    value), as is one that is only redacted as a whole word.
    """
    trimmed = value.strip()
    if not trimmed:
        return []
    if len(trimmed) < MIN_WORD_LENGTH:
        warnings.append(
            f"{label} is {len(trimmed)} character(s) long: too short to find without "
            "redacting the whole log, so it is NOT redacted"
        )
        return []
    if len(trimmed) < MIN_SECRET_LENGTH:
        warnings.append(
            f"{label} is shorter than {MIN_SECRET_LENGTH} characters: it is redacted only "
            "where it stands as a whole word"
        )
    values = dict.fromkeys([value, trimmed, *_inner_strings(value)])
    return [Secret(rule, item) for item in values if len(item.strip()) >= MIN_WORD_LENGTH]


def input_variable_secrets(
    rule: str, name: str, value: str, warnings: list[str], label: str
) -> list[Secret]:
    """A terraform input variable's value (``TF_VAR_name``, ``-var name=…``): registered, except
    a plain number or boolean of a variable whose name holds no secret word (a count or a
    feature flag cannot be a credential, and as a whole word "3" or "true" would redact half of
    a trace log)."""
    if not _named_secret(name.upper()) and _PLAIN_SCALAR.fullmatch(value.strip()):
        return []
    return value_secrets(rule, value, warnings, label)


def env_secrets(
    env: Mapping[str, str], extra_names: Sequence[str] = ()
) -> tuple[list[Secret], list[str]]:
    """The registered secrets of an environment, and warnings about the ones cut short."""
    forced = set(extra_names)
    secrets: list[Secret] = []
    warnings: list[str] = []
    for name in sorted(env):
        if name not in forced and name.upper().startswith("TF_VAR_"):
            label = f"the value of {name}"
            secrets += input_variable_secrets(f"env:{name}", name[7:], env[name], warnings, label)
        elif name in forced or is_secret_env_name(name):
            secrets += value_secrets(f"env:{name}", env[name], warnings, f"the value of {name}")
    return secrets, warnings
