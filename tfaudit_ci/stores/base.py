"""The storage Protocol every backend implements, the value types it speaks, and the base
class the cloud stores share (keys under a prefix, one way of translating SDK errors)."""

from __future__ import annotations

import abc
import contextlib
import datetime as dt
import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tfaudit_ci.errors import ConfigError, TfauditError
from tfaudit_ci.vocab import LockMode


@dataclass(frozen=True)
class Policy:
    """What the audit trail requires of the store."""

    retention_days: int = 365
    lock_mode: LockMode = LockMode.COMPLIANCE

    def mode_ok(self, mode: str | None) -> bool:
        """Whether a stored lock ``mode`` is at least as strong as the policy's."""
        if mode is None:
            return False
        if self.lock_mode == LockMode.COMPLIANCE:
            return mode.upper() == LockMode.COMPLIANCE
        return mode.upper() in {LockMode.COMPLIANCE, LockMode.GOVERNANCE}


@dataclass(frozen=True)
class Lock:
    """The retention lock a write carries."""

    mode: LockMode
    retain_until: dt.datetime


@dataclass(frozen=True)
class PreflightCheck:
    """One named preflight check; ``detail`` describes what was found, pass or fail."""

    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass
class PreflightReport:
    """What preflight found out about a store, before anything runs."""

    store: str
    checks: list[PreflightCheck] = field(default_factory=list)
    # Writes can carry their own retention lock (S3 Object Lock, GCS object retention, Azure
    # version-level immutability). False when the lock comes from the bucket or container
    # alone, or when there is none.
    lockable: bool = False
    # The store's own minimum retention for new objects (a bucket's default retention, a
    # locked bucket policy's period), when it has one and it could be read.
    default_retention_days: int | None = None

    def add(self, name: str, ok: bool, passed: str, failed: str | None = None) -> None:
        """Add a check: ``passed`` describes the store when ``ok``, ``failed`` otherwise."""
        self.checks.append(PreflightCheck(name, ok, passed if ok or failed is None else failed))

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def problems(self) -> list[str]:
        return [f"{check.name}: {check.detail}" for check in self.checks if not check.ok]


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

    @property
    def lock_readback(self) -> bool:
        """Whether ``head`` shows each object's own lock. False when the lock lives only on
        the container (Azure container policy) or nowhere (a local directory)."""
        ...

    @property
    def stored_sha256(self) -> bool:
        """Whether ``head`` can report the SHA-256 checksum the store keeps of a version
        written with one (``put_file`` and ``put_create_only`` send it): a reader may then
        compare that instead of streaming the bytes (``tfaudit verify`` without ``--deep``).
        A version whose ``head`` shows no checksum is still streamed."""
        ...

    def preflight(self, policy: Policy) -> PreflightReport: ...

    def put_file(self, key: str, path: Path, digests: Digests, lock: Lock | None) -> StoredObject:
        """Upload a file, with ``lock`` applied when given; raises UploadError."""
        ...

    def put_create_only(self, key: str, data: bytes, lock: Lock | None) -> StoredObject | None:
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

    def list_versions(self, prefix: str) -> Iterator[VersionInfo]:
        """Every version and delete marker under ``prefix``: by key, each key's oldest first."""
        ...


def import_sdk(module: str, scheme: str, sdk: str, extra: str) -> Any:
    """An optional extra's SDK, or a ConfigError that says which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"{scheme} stores need the {sdk}", fix=f"pip install 'tfaudit-ci[{extra}]'"
        ) from None


def content_type_for(key: str) -> str:
    """What a store is told an object holds: JSON records, or a text log."""
    return "application/json" if key.endswith(".json") else "text/plain; charset=utf-8"


class PrefixedStore(abc.ABC):
    """A store whose keys live under a prefix of a bucket or container.

    Subclasses translate their SDK's exceptions in one place (``_translate``); every call
    into the SDK runs inside ``_translating(action, ErrorClass)``.
    """

    lock_readback = True
    stored_sha256 = False

    def __init__(self, root_uri: str, prefix: str) -> None:
        self.prefix = prefix.strip("/")
        self.uri = f"{root_uri}/{self.prefix}" if self.prefix else root_uri

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _relative(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    @abc.abstractmethod
    def _translate(
        self, exc: BaseException, action: str, error: type[TfauditError]
    ) -> TfauditError:
        """A one-line error of class ``error`` that says how to fix ``exc``."""

    @contextlib.contextmanager
    def _translating(self, action: str, error: type[TfauditError]) -> Iterator[None]:
        try:
            yield
        except TfauditError:
            raise
        except Exception as exc:
            raise self._translate(exc, action, error) from None

    @abc.abstractmethod
    def versions(self, key: str) -> list[VersionInfo]: ...

    @abc.abstractmethod
    def list_keys(self, prefix: str) -> Iterator[str]: ...

    @abc.abstractmethod
    def iter_version(
        self, key: str, version_id: str, chunk_size: int = 1 << 20
    ) -> Iterator[bytes]: ...

    def slot_taken(self, key: str) -> bool:
        return bool(self.versions(key))

    def read_version(self, key: str, version_id: str) -> bytes:
        return b"".join(self.iter_version(key, version_id))

    def list_versions(self, prefix: str) -> Iterator[VersionInfo]:
        for key in self.list_keys(prefix):
            yield from self.versions(key)
