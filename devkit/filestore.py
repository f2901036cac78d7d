"""What a versioned bucket lets any writer do beyond tfaudit's own create-only writes, on a
``file://`` store: later versions at a key, delete markers, versions imported with their ids
and times (a trail copied from a bucket), and a writable scratch copy of a whole store.

The tamper tests and the demo need these; tfaudit itself never writes them, so they live here
and not on ``tfaudit_ci.stores.file.FileStore``.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tfaudit_ci.stores.file import VERSION_ID, FileStore


class TamperableFileStore(FileStore):
    """A ``FileStore`` over the same folder, with the versioned bucket's other writes."""

    def put_version(self, key: str, data: bytes, *, version_id: str | None = None) -> str:
        """Add a new version of ``key`` (a store that ignores create-only, or an attacker)."""
        return self.import_version(key, [data], version_id=version_id)

    def put_delete_marker(self, key: str, *, version_id: str | None = None) -> str:
        """What a plain DELETE does on a versioned bucket: the versions stay, hidden."""
        _, vid = self._add_entry(key, version_id, "deleted")
        return vid

    def import_version(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        version_id: str | None = None,
        last_modified: dt.datetime | None = None,
    ) -> str:
        """Append a version with the given id (e.g. copied from a bucket); returns the id."""
        path: Path
        base = self._path(key)
        fd = None if self._entries(key) else self._open_exclusive(key)
        if fd is not None:
            path = base
            vid = version_id or VERSION_ID
            if vid != VERSION_ID:
                self._add_entry(key, vid, "base")
            self._write_fd(fd, chunks, key)
        else:
            path, vid = self._add_entry(key, version_id, "data")
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
            self._write_fd(fd, chunks, key)
        os.chmod(path, 0o444)
        if last_modified is not None:
            stamp = last_modified.timestamp()
            os.utime(path, (stamp, stamp))
        return vid

    def copy_tree(self, destination: Path) -> TamperableFileStore:
        """A scratch copy of the whole store (every version), writable again."""
        shutil.copytree(self.root, destination)
        for path in destination.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        return TamperableFileStore(destination)


def tamperable(store: FileStore) -> TamperableFileStore:
    """The same store (the same folder), with the writes above."""
    return TamperableFileStore(store.root)


def copy_s3_trail(client: Any, bucket: str, prefix: str, destination: Path) -> TamperableFileStore:
    """Every version of every object under ``prefix`` into a new file store, oldest first,
    keeping version ids and timestamps (a scratch copy that verifies like the original)."""
    store = TamperableFileStore(destination)
    base = prefix.strip("/") + "/" if prefix.strip("/") else ""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=base):
        for item in page.get("Versions", []):
            by_key.setdefault(item["Key"], []).append(item)
    for full_key, versions in sorted(by_key.items()):
        for item in reversed(versions):  # listed newest first
            body = client.get_object(Bucket=bucket, Key=full_key, VersionId=item["VersionId"])
            store.import_version(
                full_key[len(base) :],
                _chunks(body["Body"]),
                version_id=str(item["VersionId"]),
                last_modified=item["LastModified"],
            )
    return store


def _chunks(body: Any) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(1 << 20)
    finally:
        body.close()
