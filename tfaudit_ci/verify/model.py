"""Value types of ``tfaudit verify`` (no I/O), and its closed vocabulary of problem codes.

The codes and severities are part of the ``--json`` contract: each is documented in
docs/verify.md, and nothing else may appear in a report.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tfaudit_ci.signing import Verifier
from tfaudit_ci.stores.base import ObjectState, Policy


class Severity(str, enum.Enum):
    """Errors fail verification (exit 24); warnings do not."""

    ERROR = "error"
    WARNING = "warning"

    def __str__(self) -> str:
        return self.value


class Code(str, enum.Enum):
    """Every problem code verify reports (docs/verify.md describes each)."""

    # the stream as a whole
    EMPTY = "empty"
    UNLOCKED_STORE = "unlocked-store"
    LIST_FAILED = "list-failed"
    STRAY_OBJECT = "stray-object"
    SYMLINK = "symlink"
    INTERNAL = "internal"
    # the shape of the chain
    GAP = "gap"
    AFTER_HEAD = "after-head"
    DELETED = "deleted"
    DELETE_MARKER = "delete-marker"
    BURNED = "burned"
    FORK = "fork"
    SUPERSEDED = "superseded"
    DUPLICATE_VERSION = "duplicate-version"
    STALE_HEAD = "stale-head"
    # one record's bytes
    UNREADABLE = "unreadable"
    TOO_LARGE = "too-large"
    UNPARSEABLE = "unparseable"
    NOT_CANONICAL = "not-canonical"
    SCHEMA = "schema"
    # one record's content
    LOCATION = "location"
    PREV_LINK = "prev-link"
    PREV_MISMATCH = "prev-mismatch"
    PREV_UNCHECKED = "prev-unchecked"
    TIME = "time"
    SIGNATURE = "signature"
    SIGNATURE_UNCHECKED = "signature-unchecked"
    RETENTION = "retention"
    ARTIFACT = "artifact"
    UNPINNED = "unpinned"
    IDENTITY = "identity"
    ORPHAN = "orphan"
    # the trail against its witness (docs/witness.md)
    TRUNCATED = "truncated"
    UNWITNESSED = "unwitnessed"
    WITNESS_CHAIN = "witness-chain"
    WITNESS_INVALID = "witness-invalid"
    WITNESS_MISMATCH = "witness-mismatch"
    WITNESS_SIGNATURE = "witness-signature"
    WITNESS_UNREADABLE = "witness-unreadable"
    # incremental verify (docs/verify.md, "Incremental verify")
    CHECKPOINT = "checkpoint"
    # policies (docs/reading.md, "Reviewed plan = applied plan")
    UNREVIEWED_PLAN = "unreviewed-plan"

    def __str__(self) -> str:
        return self.value


ERROR = Severity.ERROR
WARNING = Severity.WARNING


@dataclass(frozen=True)
class Problem:
    """One line of the report."""

    severity: Severity
    code: Code
    message: str
    seq: int | None = None
    key: str | None = None
    traceback: str | None = None  # for ``internal`` problems, shown under -v

    def to_dict(self, *, verbose: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "severity": self.severity.value,
            "code": self.code.value,
            "message": self.message,
            "seq": self.seq,
            "key": self.key,
        }
        if verbose and self.traceback:
            data["traceback"] = self.traceback
        return data


def error(
    code: Code,
    message: str,
    *,
    seq: int | None = None,
    key: str | None = None,
    traceback: str | None = None,
) -> Problem:
    return Problem(ERROR, code, message, seq, key, traceback)


def warning(code: Code, message: str, *, seq: int | None = None, key: str | None = None) -> Problem:
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

    def without_data(self) -> Fetched:
        return Fetched(
            self.key, self.version_id, self.state, self.sha256, self.size, None, self.error
        )


@dataclass(frozen=True)
class CheckedRecord:
    """What the walk read of one slot of the window, handed to ``VerifyOptions.on_record``
    (``tfaudit report`` shows the records verify checked without reading them again)."""

    seq: int
    record: Fetched  # the slot's winning version, with its bytes when within the cap
    artifacts: tuple[Fetched | None, ...]  # in the record's order; None: not read


@dataclass(frozen=True)
class ChainTip:
    """The last record a walk verified, as a checkpoint (``verify.checkpoint``) holds it."""

    seq: int
    sha256: str
    version_id: str
    signature: Mapping[str, Any] | None
    slot_versions: int  # versions and delete markers listed at the slot


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
    # How long concurrent runs may overlap: a record may start this much before its
    # predecessor; --since/--until windows are widened by it (docs/verify.md, "Windows").
    max_overlap: dt.timedelta = dt.timedelta(hours=6)
    batch_size: int = 256  # records checked (and held in memory) at a time
    # Whether each object's lock is checked (``locking.verify_locks``), and why not;
    # None: whenever the store can show it.
    check_locks: bool | None = None
    lock_note: str | None = None
    # Called with each slot of the window once it is checked, and the bytes to keep of each
    # artifact for it, by name (identity evidence is always kept): for callers that show
    # what was verified (``tfaudit report``). Memory is then theirs to bound.
    on_record: Callable[[CheckedRecord], None] | None = None
    keep_artifacts: Mapping[str, int] = field(default_factory=dict)
    # Incremental verify: check only what follows this tip, once the store still holds it
    # (docs/verify.md, "Incremental verify").
    checkpoint: ChainTip | None = None
    # Hash every artifact's bytes even where the store keeps a SHA-256 checksum of them.
    deep: bool = False


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
    # The last record verified, when the walk got through every check (for a checkpoint).
    tip: ChainTip | None = None
    requests: int = 0  # requests sent to the store

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors
