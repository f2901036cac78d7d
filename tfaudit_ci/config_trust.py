"""A repository's config file can only tighten what the workflow sets.

``.tfaudit.yml`` (or any ``--config`` file) lives in the repository, and any pull request can
change it; the workflow (flags, action inputs, ``TFAUDIT_*`` environment) is what a reviewer
approved. So each key is classified once:

* **workflow-only**: where records go and how they are proven (store, stream, endpoint,
  region, signing key, OIDC audience, work dir, lock modes of the stores...). A value in the
  file is ignored with a one-line warning. Any key not listed here, including keys added
  later, is workflow-only.
* **tighten-only**, with an order: the file may move the value to the stricter end only
  (raise retention, COMPLIANCE over GOVERNANCE, fail over warn, turn an upload of secrets
  off); a weaker value is ignored with a warning. A stricter one wins even over the workflow.
* **add-only**: ``redact``: the file's patterns are added to the workflow's.
* **free**: operational knobs that cannot weaken the audit (timeouts, retries, part sizes).

``TFAUDIT_TRUST_REPO_CONFIG=1`` in the workflow's environment restores plain layering (file,
then environment, then flags), for repositories whose config file is protected otherwise.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tfaudit_ci.vocab import StrEnum

TRUST_ENV = "TFAUDIT_TRUST_REPO_CONFIG"


class Trust(StrEnum):
    WORKFLOW = "workflow-only"
    TIGHTEN = "tighten-only"
    ADD = "add-only"
    FREE = "free"


@dataclass(frozen=True)
class KeyTrust:
    trust: Trust
    # tighten-only: how strict a value is (higher is stricter)
    strictness: Callable[[Any], int] | None = None


def _ranked(*weakest_first: Any) -> Callable[[Any], int]:
    order = {value: rank for rank, value in enumerate(weakest_first)}
    return lambda value: order.get(value, len(order))  # unknown values: strictest


_OFF_IS_STRICT = KeyTrust(Trust.TIGHTEN, lambda on: 0 if on else 1)

KEY_TRUST: Mapping[str, KeyTrust] = {
    "retention-days": KeyTrust(Trust.TIGHTEN, int),
    "lock-mode": KeyTrust(Trust.TIGHTEN, _ranked("GOVERNANCE", "COMPLIANCE")),
    "on-unlocked": KeyTrust(Trust.TIGHTEN, _ranked("warn", "fail", None)),
    "upload-plan-file": _OFF_IS_STRICT,
    "store-state-output": _OFF_IS_STRICT,
    "redact": KeyTrust(Trust.ADD),
    "multipart-threshold": KeyTrust(Trust.FREE),
    "connect-timeout": KeyTrust(Trust.FREE),
    "read-timeout": KeyTrust(Trust.FREE),
    "max-attempts": KeyTrust(Trust.FREE),
}


def key_trust(key: str) -> KeyTrust:
    """How far a repository file is trusted with ``key``; unlisted keys are workflow-only."""
    return KEY_TRUST.get(key, KeyTrust(Trust.WORKFLOW))


def warn_on_stderr(line: str) -> None:
    sys.stderr.write(f"tfaudit: warning: {line}\n")


def trusts_repo_config(env: Mapping[str, str]) -> bool:
    return env.get(TRUST_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Layer:
    """Validated values of one origin, and where each came from."""

    values: Mapping[str, Any]
    sources: Mapping[str, str]


def resolve(
    repo: Layer,
    workflow: Layer,
    *,
    default: Callable[[str], Any],
    trusted: bool,
    warn: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, str]]:
    """Merge the repository file's layer under the workflow's, key by key (see module doc).
    ``default(key)``: the value a key has when nobody sets it."""
    values = dict(workflow.values)
    sources = dict(workflow.sources)
    for key, value in repo.values.items():
        source = repo.sources[key]
        if trusted:
            if key not in workflow.values:
                values[key], sources[key] = value, source
            continue
        rule = key_trust(key)
        base = workflow.values.get(key, default(key))
        if rule.trust is Trust.FREE:
            if key not in workflow.values:
                values[key], sources[key] = value, source
        elif rule.trust is Trust.ADD:
            values[key] = list(dict.fromkeys([*(base or []), *value]))
            sources[key] = " and ".join(dict.fromkeys([sources.get(key, source), source]))
        elif rule.trust is Trust.TIGHTEN and rule.strictness is not None:
            if rule.strictness(value) > rule.strictness(base):
                values[key], sources[key] = value, source
            elif rule.strictness(value) < rule.strictness(base):
                warn(_ignored(key, source, "a repository file can only make it stricter"))
        elif value != base:
            warn(_ignored(key, source, "only the workflow sets it"))
    return values, sources


def _ignored(key: str, source: str, why: str) -> str:
    return (
        f"{source}: ignored {key!r} ({why}: use a flag, an action input or the environment, "
        f"or set {TRUST_ENV}=1 to trust the file)"
    )
