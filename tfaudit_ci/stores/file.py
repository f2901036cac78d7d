"""``file:///path``: the same layout and chain on a local directory, with real object versions.

A local disk is not WORM: preflight says so, and a run refuses it unless ``--on-unlocked warn``
is given. The normal writes (``put_create_only``, ``put_file``) create ``root/{key}`` exclusively
and make it read-only; that file is the key's first version (id ``"1"``). Like a versioned
bucket, a key can still receive later versions and delete markers (``devkit.filestore`` writes
them: S3-compatible stores that ignore ``If-None-Match`` behave that way, the tamper tests need
it, and a trail copied from a bucket keeps its version ids). Later versions live under
``root/.versions/{key}/`` as ``{ordinal:06d}-{version_id}.data`` (bytes), ``.deleted`` (a
delete marker) or ``.base`` (an empty entry naming the id of the version whose bytes are
``root/{key}``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tfaudit_ci.errors import ConfigError, UploadError
from tfaudit_ci.stores import StoreOptions
from tfaudit_ci.stores.base import (
    Digests,
    Lock,
    ObjectState,
    Policy,
    PreflightReport,
    StoredObject,
    VersionInfo,
)

VERSION_ID = "1"  # the id of root/{key} unless a ``.base`` entry names another
VERSIONS_DIR = ".versions"
_ENTRY = re.compile(r"(\d{6})-([A-Za-z0-9._=+-]+)\.(data|deleted|base)")
_SAFE_VERSION_ID = re.compile(r"[A-Za-z0-9._=+-]{1,200}")
_CHUNK = 1 << 20


def _walk(top: Path, start: Path) -> Iterator[tuple[str, str]]:
    """(key relative to ``top``, "file" | "dir" | "link" | "special") under ``start``,
    without following any symbolic link."""
    if start.is_symlink():
        yield start.relative_to(top).as_posix(), "link"
        return
    stack = [start]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            key = Path(entry.path).relative_to(top).as_posix()
            if entry.is_symlink():
                yield key, "link"
            elif entry.is_dir(follow_symlinks=False):
                yield key, "dir"
                stack.append(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                yield key, "file"
            else:
                yield key, "special"


@dataclass(frozen=True)
class _Entry:
    ordinal: int
    version_id: str
    kind: str  # "data" | "deleted" | "base"
    path: Path  # where the bytes are (root/{key} for "base")


def _cannot_write(path: Path, exc: OSError) -> UploadError:
    return UploadError(f"cannot write {path}: {exc.strerror}", fix="check the store directory")


class FileStore:
    lock_readback = False  # a directory cannot hold a retention lock
    stored_sha256 = False  # nothing but the bytes: verify hashes them

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = root.as_uri()

    @classmethod
    def from_url(cls, path: str, options: StoreOptions) -> FileStore:
        del options
        if not path or not path.startswith("/"):
            raise ConfigError(
                f"file store path {path!r} is not absolute", fix="use file:///ABSOLUTE/PATH"
            )
        return cls(Path(path))

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if parts[0] == VERSIONS_DIR:
            raise ConfigError(f"key {key!r} is reserved", fix="use a plain stream name")
        if any(part in {"", ".", ".."} for part in parts):
            raise ConfigError(f"key {key!r} escapes the store root", fix="use a plain stream name")
        return self.root / key

    def _linked(self, path: Path) -> bool:
        """True when ``path`` or a folder between the root and it is a symbolic link: the
        store never follows one (verify reports them, see ``unsafe_entries``)."""
        relative = path.relative_to(self.root).parts
        return any(
            (self.root.joinpath(*relative[: n + 1])).is_symlink() for n in range(len(relative))
        )

    def _refuse_links(self, path: Path) -> None:
        if self._linked(path):
            raise UploadError(
                f"{path} goes through a symbolic link: the file store never writes through one",
                fix="remove the link from the store directory (tfaudit verify lists them)",
            )

    def _versions_dir(self, key: str) -> Path:
        self._path(key)  # same validation
        return self.root / VERSIONS_DIR / key

    def preflight(self, policy: Policy) -> PreflightReport:
        del policy
        report = PreflightReport(store=self.uri)
        report.add("worm", False, "a local directory cannot enforce retention (not WORM)")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            report.add("writable", False, f"cannot create {self.root}: {exc.strerror}")
        else:
            writable = os.access(self.root, os.W_OK)
            report.add("writable", writable, "the directory is writable", "it is read-only")
        return report

    # -- version bookkeeping ---------------------------------------------------------------
    def _entries(self, key: str) -> list[_Entry]:
        """Every version and delete marker of ``key``, oldest first."""
        base = self._path(key)
        folder = self._versions_dir(key)
        entries: list[_Entry] = []
        if self._linked(base) or (folder.exists() and self._linked(folder)):
            return entries  # never followed: not a version of anything
        named_base = False
        if folder.is_dir():
            for child in folder.iterdir():
                match = _ENTRY.fullmatch(child.name)
                if match is None or child.is_symlink():
                    continue
                kind = match.group(3)
                named_base = named_base or kind == "base"
                path = base if kind == "base" else child
                entries.append(_Entry(int(match.group(1)), match.group(2), kind, path))
        if not named_base and base.is_file():
            # Written by put_create_only/put_file (or by hand): the implicit first version.
            entries.append(_Entry(0, VERSION_ID, "base", base))
        entries.sort(key=lambda e: e.ordinal)
        if not base.is_file():
            entries = [e for e in entries if e.kind != "base"]  # its bytes were removed
        return entries

    def _find(self, key: str, version_id: str) -> _Entry | None:
        for entry in self._entries(key):
            if entry.version_id == version_id and entry.kind != "deleted":
                return entry
        return None

    def _add_entry(self, key: str, version_id: str | None, kind: str) -> tuple[Path, str]:
        """Reserve the next ordinal with an exclusive create (safe against racing writers)."""
        folder = self._versions_dir(key)
        self._refuse_links(folder)
        folder.mkdir(parents=True, exist_ok=True)
        while True:
            entries = self._entries(key)
            ordinal = max((e.ordinal for e in entries), default=0) + 1
            vid = version_id or str(max(ordinal, len(entries) + 1))
            if not _SAFE_VERSION_ID.fullmatch(vid) or any(e.version_id == vid for e in entries):
                raise ConfigError(f"bad or duplicate version id {vid!r} for {key}")
            path = folder / f"{ordinal:06d}-{vid}.{kind}"
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            except FileExistsError:
                continue
            return path, vid

    # -- writes ----------------------------------------------------------------------------
    def _open_exclusive(self, key: str) -> int | None:
        path = self._parent_ready(key)
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except FileExistsError:
            return None
        except OSError as exc:
            raise _cannot_write(path, exc) from None

    @staticmethod
    def _write_fd(fd: int, chunks: Iterable[bytes], what: str) -> None:
        try:
            with os.fdopen(fd, "wb") as dst:
                for chunk in chunks:
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
        except OSError as exc:
            raise UploadError(
                f"cannot write {what}: {exc.strerror}", fix="free disk space"
            ) from None

    def put_file(self, key: str, path: Path, digests: Digests, lock: Lock | None) -> StoredObject:
        del lock
        fd = self._open_exclusive(key)
        if fd is None:
            # A re-shipped spool (tfaudit recover) finds its own earlier upload: reuse it.
            first = next((e for e in self._entries(key) if e.kind != "deleted"), None)
            existing = self.head(key, first.version_id) if first else None
            if existing is not None and existing.sha256 == digests.sha256:
                return StoredObject(key, existing.version_id, digests.sha256, digests.size)
            raise UploadError(f"{key} already exists in {self.uri}", fix="use a new run folder")
        with path.open("rb") as src:
            self._write_fd(fd, iter(lambda: src.read(_CHUNK), b""), key)
        os.chmod(self._path(key), 0o444)
        return StoredObject(key, VERSION_ID, digests.sha256, digests.size)

    def put_create_only(self, key: str, data: bytes, lock: Lock | None) -> StoredObject | None:
        del lock
        if self._versions_dir(key).is_dir():
            return None  # the slot has (or had) versions: it was written before
        path = self._parent_ready(key)
        # Written whole, then linked into place (create-only and atomic): a reader never
        # sees a half-written record (concurrent appenders would burn it as junk).
        temporary = self._scratch(key, data, 0o444)
        try:
            os.link(temporary, path, follow_symlinks=False)
        except FileExistsError:
            return None
        except OSError as exc:
            raise _cannot_write(path, exc) from None
        finally:
            temporary.unlink(missing_ok=True)
        return StoredObject(key, VERSION_ID, hashlib.sha256(data).hexdigest(), len(data))

    def _parent_ready(self, key: str) -> Path:
        """``root/{key}``, its folder created, refusing any symbolic link on the way."""
        path = self._path(key)
        self._refuse_links(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _cannot_write(path.parent, exc) from None
        self._refuse_links(path)
        return path

    def _scratch(self, key: str, data: bytes, mode: int) -> Path:
        """``data`` in a new file under ``.versions/`` (which no listing of a stream shows)."""
        scratch = self.root / VERSIONS_DIR
        self._refuse_links(scratch)
        scratch.mkdir(parents=True, exist_ok=True)
        temporary = scratch / f".new-{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        except OSError as exc:
            raise _cannot_write(temporary, exc) from None
        try:
            self._write_fd(fd, [data], key)
        except UploadError:
            temporary.unlink(missing_ok=True)
            raise
        return temporary

    # -- reads -----------------------------------------------------------------------------
    def head(self, key: str, version_id: str) -> ObjectState | None:
        entry = self._find(key, version_id)
        if entry is None:
            return None
        # The stored bytes are re-hashed: SHA-256 is the whole read-back, MD5 adds nothing.
        digest = hashlib.sha256()
        size = 0
        with entry.path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(chunk)
                size += len(chunk)
        return ObjectState(
            key=key,
            version_id=version_id,
            size=size,
            lock_mode=None,
            retain_until=None,
            sha256=digest.hexdigest(),
        )

    def _info(self, key: str, entry: _Entry) -> VersionInfo:
        stat = entry.path.stat()
        modified = dt.datetime.fromtimestamp(stat.st_mtime, tz=dt.timezone.utc)
        deleted = entry.kind == "deleted"
        return VersionInfo(key, entry.version_id, deleted, modified, 0 if deleted else stat.st_size)

    def versions(self, key: str) -> list[VersionInfo]:
        return [self._info(key, entry) for entry in self._entries(key)]

    def list_versions(self, prefix: str) -> Iterator[VersionInfo]:
        """Every version of every key under ``prefix``: by key, each key's oldest first."""
        for key in self.list_keys(prefix):
            yield from self.versions(key)

    def slot_taken(self, key: str) -> bool:
        # A symbolic link occupies the slot too (it is never followed, so never readable).
        return os.path.lexists(self._path(key)) or self._versions_dir(key).is_dir()

    def read_version(self, key: str, version_id: str) -> bytes:
        entry = self._find(key, version_id)
        if entry is None:
            raise FileNotFoundError(f"{key}@{version_id}")
        return entry.path.read_bytes()

    def iter_version(self, key: str, version_id: str, chunk_size: int = _CHUNK) -> Iterator[bytes]:
        entry = self._find(key, version_id)
        if entry is None:
            raise FileNotFoundError(f"{key}@{version_id}")
        with entry.path.open("rb") as handle:
            yield from iter(lambda: handle.read(chunk_size), b"")

    def list_keys(self, prefix: str) -> Iterator[str]:
        keys: set[str] = set()
        base = self.root / prefix
        if base.is_dir() and not self._linked(base):
            keys.update(key for key, kind in _walk(self.root, base) if kind == "file")
        shadow = self.root / VERSIONS_DIR / prefix
        if shadow.is_dir() and not self._linked(shadow):
            versions_root = self.root / VERSIONS_DIR
            keys.update(
                key
                for key, kind in _walk(versions_root, shadow)
                if kind == "dir"
                and any(_ENTRY.fullmatch(c.name) for c in (versions_root / key).iterdir())
            )
        keys = {key for key in keys if key.split("/", 1)[0] != VERSIONS_DIR}
        yield from sorted(keys)

    # -- the head hint (tfaudit_ci/head_hint.py): the one key that is rewritten -------------
    def read_latest(self, key: str, limit: int) -> bytes | None:
        path = self._path(key)
        if self._linked(path) or not path.is_file():
            return None  # a link is never followed
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as handle:
            return handle.read(limit)

    def put_latest(self, key: str, data: bytes) -> None:
        """Replace ``root/{key}`` atomically: written whole, then renamed over it."""
        path = self._parent_ready(key)
        temporary = self._scratch(key, data, 0o644)
        try:
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)

    def unsafe_entries(self, prefix: str) -> list[tuple[str, str]]:
        """(key, why) of every symbolic link and special file under ``prefix`` (and under its
        versions), none of which is ever followed or read."""
        found: list[tuple[str, str]] = []
        for top in (self.root, self.root / VERSIONS_DIR):
            start = top / prefix
            if not os.path.lexists(start):
                continue
            for key, kind in _walk(top, start):
                if kind in {"file", "dir"}:
                    continue
                where = key if top == self.root else f"{VERSIONS_DIR}/{key}"
                found.append((where, self._describe(top / key, kind)))
        return sorted(found)

    def _describe(self, path: Path, kind: str) -> str:
        if kind != "link":
            return "a special file (not a regular file or folder): never read"
        target = os.readlink(path)
        resolved = os.path.realpath(path)
        root = os.path.realpath(self.root)
        inside = resolved == root or resolved.startswith(root + os.sep)
        where = "inside the store" if inside else "outside the store root"
        return f"a symbolic link to {target[:200]!r} (resolves {where}): never followed"
