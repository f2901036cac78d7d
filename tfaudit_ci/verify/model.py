"""Value types of ``tfaudit verify`` (no I/O)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tfaudit_ci.signing import Verifier
from tfaudit_ci.stores.base import ObjectState, Policy

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """One line of the report. Errors fail verification (exit 24); warnings do not."""

    severity: str
    code: str
    message: str
    seq: int | None = None
    key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "seq": self.seq,
            "key": self.key,
        }


def error(code: str, message: str, *, seq: int | None = None, key: str | None = None) -> Problem:
    return Problem(ERROR, code, message, seq, key)


def warning(code: str, message: str, *, seq: int | None = None, key: str | None = None) -> Problem:
    return Problem(WARNING, code, message, seq, key)


@dataclass(frozen=True)
class Fetched:
    """One object version as read back: its server state and what streaming it gave."""

    key: str
    version_id: str
    state: ObjectState | None  # None: the version does not exist (or could not be read)
    sha256: str | None = None
    size: int | None = None
    data: bytes | None = None  # kept only for records and small evidence artifacts
    error: str | None = None  # a read failure other than "not found"


@dataclass
class VerifyOptions:
    stream: str
    policy: Policy = field(default_factory=Policy)
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    min_remaining_days: int = 0
    max_age: dt.timedelta | None = None
    verifier: Verifier | None = None
    trusted_jwks: Mapping[str, Any] | None = None
    parallelism: int = 16
    now: dt.datetime | None = None


@dataclass
class VerifyResult:
    store: str
    stream: str
    problems: list[Problem] = field(default_factory=list)
    records_total: int = 0
    records_valid: int = 0
    artifacts_total: int = 0
    artifacts_valid: int = 0
    head: int | None = None
    first_seq: int | None = None
    last_seq: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors
