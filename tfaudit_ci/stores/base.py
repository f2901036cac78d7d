"""The storage Protocol every backend implements, and the value types it speaks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Policy:
    """What the audit trail requires of the store."""

    retention_days: int = 365
    lock_mode: str = "COMPLIANCE"  # COMPLIANCE | GOVERNANCE

    def mode_ok(self, mode: str | None) -> bool:
        if mode is None:
            return False
        if self.lock_mode == "COMPLIANCE":
            return mode.upper() == "COMPLIANCE"
        return mode.upper() in {"COMPLIANCE", "GOVERNANCE"}


@dataclass
class PreflightReport:
    store: str
    worm: bool
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append((name, ok, detail))

    @property
    def ok(self) -> bool:
        return self.worm and all(ok for _, ok, _ in self.checks)

    def problems(self) -> list[str]:
        return [f"{name}: {detail}" for name, ok, detail in self.checks if not ok]


@dataclass(frozen=True)
class Digests:
    """Digests computed locally while the bytes were written."""

    sha256: str
    md5: str
    size: int


@dataclass(frozen=True)
class StoredObject:
    key: str
    version_id: str
    sha256: str
    size: int


@dataclass(frozen=True)
class ObjectState:
    """What the server reports about one stored version (HeadObject or equivalent)."""

    key: str
    version_id: str
    size: int
    lock_mode: str | None
    retain_until: dt.datetime | None
    sha256: str | None = None  # server-side checksum, when the server keeps one
    md5: str | None = None  # MD5 (or multipart-ETag form) when the server reports one
    etag: str | None = None


@dataclass(frozen=True)
class VersionInfo:
    key: str
    version_id: str
    is_delete_marker: bool
    last_modified: dt.datetime | None
    size: int = 0


class Store(Protocol):
    """A WORM (or test) object store. Keys are relative to the store's prefix."""

    uri: str

    def preflight(self, policy: Policy) -> PreflightReport: ...

    def put_file(
        self, key: str, path: Path, digests: Digests, retain_until: dt.datetime, policy: Policy
    ) -> StoredObject:
        """Upload a file with the lock applied; raises UploadError."""
        ...

    def put_create_only(
        self, key: str, data: bytes, retain_until: dt.datetime, policy: Policy
    ) -> StoredObject | None:
        """Create ``key`` only if absent. None when the slot was already taken."""
        ...

    def head(self, key: str, version_id: str) -> ObjectState | None:
        """State of one version; None when that version does not exist."""
        ...

    def versions(self, key: str) -> list[VersionInfo]:
        """Every version and delete marker of exactly ``key``, oldest first."""
        ...

    def slot_taken(self, key: str) -> bool:
        """True if ``key`` has ever been written (any version or delete marker)."""
        ...

    def read_version(self, key: str, version_id: str) -> bytes:
        """A whole (small) version, e.g. a chain record."""
        ...

    def iter_version(self, key: str, version_id: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Stream a version's bytes for hashing without holding them in memory."""
        ...

    def list_keys(self, prefix: str) -> Iterator[str]:
        """Keys under ``prefix`` (relative to the store prefix)."""
        ...
