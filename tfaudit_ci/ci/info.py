"""The CI metadata every record carries, whatever the CI (pure data)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class CiInfo:
    provider: str  # "github" | "gitlab" | "generic"
    repository: str | None = None  # "owner/repo" (GitLab: full project path)
    commit: str | None = None
    ref: str | None = None
    actor: str | None = None
    triggering_actor: str | None = None
    run_id: str | None = None
    attempt: str | None = None
    job: str | None = None
    workflow: str | None = None
    event: str | None = None
    pull_request: str | None = None  # PR number / MR iid
    run_url: str | None = None
    runner: str | None = None
    server_url: str | None = None
    extra: dict[str, str | None] = field(default_factory=dict)  # provider-specific ids

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def env_value(env: Mapping[str, str], name: str) -> str | None:
    """A variable's value, or None when unset or empty (CIs export many as "")."""
    value = env.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def env_values(env: Mapping[str, str], names: Mapping[str, str]) -> dict[str, str | None]:
    """``{key: env_value(env, VAR)}`` for a ``{key: VAR}`` table."""
    return {key: env_value(env, var) for key, var in names.items()}
