"""Configuration: CLI flag > TFAUDIT_* environment > .tfaudit.yml (or --config) > defaults.

The config file can only tighten the workflow's settings (see ``config_trust``).

Every value is validated where it enters, and an error names the key and where it came from.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from tfaudit_ci import config_trust
from tfaudit_ci.errors import ConfigError
from tfaudit_ci.stores import StoreOptions
from tfaudit_ci.stores.base import Policy
from tfaudit_ci.vocab import AzureMode, GcsMode, LockMode, OnUnlocked, values

DEFAULT_CONFIG_FILE = ".tfaudit.yml"
_E = TypeVar("_E", bound=Enum)
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?", re.IGNORECASE)
_SIZE_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def _as_int(value: Any, *, minimum: int = 0) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a whole number, got a boolean")
    if isinstance(value, str):
        value = value.strip()
        if not value.lstrip("-").isdigit():
            raise ValueError(f"expected a whole number, got {value!r}")
        value = int(value)
    if not isinstance(value, int):
        raise ValueError(f"expected a whole number, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"must be at least {minimum}, got {value}")
    return value


def _as_size(value: Any, *, minimum: int = 0) -> int:
    """Bytes from a whole number or a size such as ``64MiB``, ``100MB``, ``5 GiB``."""
    if isinstance(value, str) and not value.strip().isdigit():
        match = _SIZE.fullmatch(value.strip())
        if match is None:
            raise ValueError(f"expected a size such as 64MiB or a number of bytes, got {value!r}")
        number, unit, binary = match.groups()
        base = 1024 if binary or not unit else 1000
        value = int(float(number) * base ** _SIZE_POWERS[unit.lower()])
    return _as_int(value, minimum=minimum)


def _as_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {value!r}") from None
    if result <= 0:
        raise ValueError(f"must be positive, got {result}")
    return result


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "1", "yes", "on"}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"false", "0", "no", "off", ""}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return value


def _as_str_list(value: Any) -> list[str]:
    # From env or an action input a list arrives as newline-separated text.
    if isinstance(value, str):
        return [line.strip() for line in value.splitlines() if line.strip()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise ValueError("expected a list of strings")


def _choice(enum: type[_E], *, upper: bool = False) -> Callable[[Any], _E]:
    def convert(value: Any) -> _E:
        text = _as_str(value).strip()
        text = text.upper() if upper else text.lower()
        try:
            return enum(text)
        except ValueError:
            raise ValueError(f"expected one of {', '.join(values(enum))}, got {value!r}") from None

    return convert


# key -> converter. Keys are the YAML spelling; flags use the same, env uses TFAUDIT_UPPER_SNAKE.
KEYS: dict[str, Callable[[Any], Any]] = {
    "store": _as_str,
    "stream": _as_str,
    "retention-days": lambda v: _as_int(v, minimum=1),
    "lock-mode": _choice(LockMode, upper=True),
    "on-unlocked": _choice(OnUnlocked),
    "redact": _as_str_list,
    "signing-key": _as_str,
    "upload-plan-file": _as_bool,
    "store-state-output": _as_bool,
    "endpoint-url": _as_str,
    "region": _as_str,
    "work-dir": _as_str,
    "multipart-threshold": lambda v: _as_size(v, minimum=5 * 1024 * 1024),
    "connect-timeout": _as_float,
    "read-timeout": _as_float,
    "max-attempts": lambda v: _as_int(v, minimum=1),
    "gcs-mode": _choice(GcsMode),
    "azure-mode": _choice(AzureMode),
    "oidc-audience": _as_str,
    "gitlab-id-token-var": _as_str,
    # The independent witness (docs/witness.md): a second store for checkpoints.
    "witness": _as_str,
    "witness-endpoint-url": _as_str,
    "witness-profile": _as_str,
    "witness-required": _as_bool,
}


def env_name(key: str) -> str:
    return "TFAUDIT_" + key.upper().replace("-", "_")


@dataclass
class Config:
    store: str | None = None
    stream: str | None = None
    retention_days: int = 365
    lock_mode: LockMode = LockMode.COMPLIANCE
    on_unlocked: OnUnlocked = OnUnlocked.FAIL
    redact: list[str] = field(default_factory=list)
    signing_key: str | None = None
    upload_plan_file: bool = False
    store_state_output: bool = False  # keep (redacted) the stdout of `output`, `state pull`...
    endpoint_url: str | None = None
    region: str | None = None
    work_dir: str | None = None
    multipart_threshold: int = 64 * 1024 * 1024
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_attempts: int = 5
    gcs_mode: GcsMode = GcsMode.BUCKET_POLICY
    azure_mode: AzureMode = AzureMode.VERSION_IMMUTABILITY
    oidc_audience: str = "tfaudit"
    gitlab_id_token_var: str | None = None
    witness: str | None = None
    witness_endpoint_url: str | None = None
    witness_profile: str | None = None
    witness_required: bool = True
    sources: dict[str, str] = field(default_factory=dict)  # key -> where its value came from

    @property
    def policy(self) -> Policy:
        return Policy(retention_days=self.retention_days, lock_mode=self.lock_mode)

    def store_options(self) -> StoreOptions:
        """The settings of the same name (the chunk size and profile keep their defaults)."""
        shared = {f.name for f in fields(StoreOptions)} & {f.name for f in fields(self)}
        return StoreOptions(**{name: getattr(self, name) for name in shared})

    def witness_options(self) -> StoreOptions:
        """The witness's own options: its endpoint and profile; its region and credentials
        from that profile or the SDK's usual chain, never the primary store's."""
        return replace(
            self.store_options(),
            endpoint_url=self.witness_endpoint_url,
            region=None,
            profile=self.witness_profile,
        )

    def require_store(self) -> str:
        if not self.store:
            raise ConfigError(
                "no store configured",
                fix="pass --store s3://BUCKET/PREFIX or set TFAUDIT_STORE in the workflow "
                f"(a `store:` in .tfaudit.yml counts only with {config_trust.TRUST_ENV}=1)",
            )
        return self.store


def _read_file(path: Path) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file {path}: {exc.strerror}", fix="check the path"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(
            f"config file {path} is not valid YAML{where}",
            fix="fix the YAML syntax (a mapping of keys like `store:`)",
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must be a mapping of keys, not {type(data).__name__}",
            fix="write `store: s3://...` style keys at the top level",
        )
    return data


def _apply(values: dict[str, Any], raw: Mapping[str, Any], source: str) -> dict[str, str]:
    sources: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or key not in KEYS:
            known = ", ".join(sorted(KEYS))
            raise ConfigError(f"unknown key {key!r} in {source}", fix=f"known keys: {known}")
        try:
            values[key] = KEYS[key](value)
        except ValueError as exc:
            raise ConfigError(
                f"bad value for {key!r} in {source}: {exc}", fix=f"correct {key!r} in {source}"
            ) from None
        sources[key] = source
    return sources


def load_config(
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    *,
    cwd: Path,
    config_path: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> Config:
    """Merge the layers. ``flags`` holds only the flags the user actually gave. The config file
    is repository content: it can only tighten the workflow's settings (``config_trust``)."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    file_values: dict[str, Any] = {}
    file_sources: dict[str, str] = {}

    path_text = config_path or env.get("TFAUDIT_CONFIG")
    path = Path(path_text) if path_text else cwd / DEFAULT_CONFIG_FILE
    if path_text and not path.is_absolute():
        path = cwd / path
    if path.exists() or path_text:
        source = f"config file {path_text or path.name}"
        file_sources = _apply(file_values, _read_file(path), source)

    env_raw = {key: env[env_name(key)] for key in KEYS if env_name(key) in env}
    for key, value in env_raw.items():
        sources.update(_apply(values, {key: value}, f"environment variable {env_name(key)}"))
    for key, value in flags.items():
        sources.update(_apply(values, {key: value}, f"flag --{key}"))
    values, sources = config_trust.resolve(
        config_trust.Layer(file_values, file_sources),
        config_trust.Layer(values, sources),
        default=lambda key: getattr(Config(), key.replace("-", "_")),
        trusted=config_trust.trusts_repo_config(env),
        warn=warn or config_trust.warn_on_stderr,
    )

    config = Config(sources=sources)
    for key, value in values.items():
        setattr(config, key.replace("-", "_"), value)
    return config
