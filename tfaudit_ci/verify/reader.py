"""Store I/O for verify: one listing of every version under the stream, then parallel reads.

Each read returns the version's server state (lock mode, retain-until) together with a
SHA-256 computed while streaming, so nothing large is held in memory. On S3 one GetObject
gives both (its response carries the lock headers); other stores use ``head`` then
``iter_version`` from the Store protocol.

Artifacts need no bytes where the store keeps a SHA-256 checksum of each version
(``Store.stored_sha256``): ``check`` then takes state, size and checksum from one HEAD, and
streams only the versions whose HEAD shows no checksum (or everything, with ``--deep``).
Every reader counts the requests it sends (``requests``; ``verify --json`` reports them).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from tfaudit_ci.stores.base import ObjectState, Store, VersionInfo
from tfaudit_ci.verify.model import Fetched

if TYPE_CHECKING:
    from tfaudit_ci.stores.file import FileStore

_T = TypeVar("_T")
_R = TypeVar("_R")
CHUNK = 1 << 20
# Identity evidence is read whole up to this size; anything larger is only hashed.
EVIDENCE_LIMIT = 4 << 20
# AWS, Ceph and MinIO cap a listing page at 1000 anyway. Pages are handed on as they come
# (verify checks the chain while the run folders are still being listed), so a smaller page
# lets that start sooner. (Stock moto builds each page from the whole bucket: slow on large
# streams whatever the page size; bench/fast_moto.py indexes keys as real servers do.)
LIST_PAGE_SIZE = 1000


class Reader(Protocol):
    def list_versions(self, prefix: str) -> Iterator[VersionInfo]:
        """Every version and delete marker under ``prefix``: each key's oldest first."""
        ...

    def fetch(self, key: str, version_id: str, *, keep: int) -> Fetched:
        """The version's state and SHA-256; its bytes too when there are at most ``keep``."""
        ...

    def unsafe_entries(self, prefix: str) -> list[tuple[str, str]]:
        """(key, why) of what under ``prefix`` a reader must not follow (file:// symlinks)."""
        ...


class WalkReader(Reader, Protocol):
    """What verify's walk needs on top: listings that start at a key, artifact checks that
    may use the store's checksum, and a count of the requests sent."""

    @property
    def requests(self) -> int:
        """Requests sent so far (a listing page, a GET, a HEAD: one each)."""
        ...

    def list_versions(self, prefix: str, *, after: str | None = None) -> Iterator[VersionInfo]:
        """``Reader.list_versions``, of the keys after ``after`` only when given."""
        ...

    def check(self, key: str, version_id: str, *, keep: int, deep: bool) -> Fetched:
        """``fetch``, or (without bytes to keep and unless ``deep``) the state and the
        SHA-256 the store keeps, where it keeps one."""
        ...


def parallel_map(function: Callable[[_T], _R], items: Iterable[_T], workers: int) -> list[_R]:
    """``map`` with at most ``workers`` calls in flight; results in input order."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tfaudit-verify") as pool:
        return list(pool.map(function, items))


def digest_chunks(chunks: Iterable[bytes], keep: int) -> tuple[str, int, bytes | None]:
    """(SHA-256, size, the bytes when there are at most ``keep``) of a stream of chunks."""
    sha = hashlib.sha256()
    size = 0
    kept: list[bytes] | None = [] if keep > 0 else None
    for chunk in chunks:
        sha.update(chunk)
        size += len(chunk)
        if kept is not None:
            if size > keep:
                kept = None
            else:
                kept.append(chunk)
    return sha.hexdigest(), size, b"".join(kept) if kept is not None else None


class _Counted:
    """A thread-safe request counter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0

    def count(self, n: int = 1) -> None:
        with self._lock:
            self._count += n

    @property
    def requests(self) -> int:
        return self._count


class StoreReader(_Counted):
    """Any Store: ``head`` for the state, ``iter_version`` for the bytes (requests counted
    as the Store calls made: one per key listed, per head, per stream)."""

    def __init__(self, store: Store, parallelism: int) -> None:
        super().__init__()
        self.store = store
        self.parallelism = parallelism

    def list_versions(self, prefix: str, *, after: str | None = None) -> Iterator[VersionInfo]:
        self.count()
        keys = [k for k in self.store.list_keys(prefix) if after is None or k > after]
        self.count(len(keys))
        for versions in parallel_map(self.store.versions, keys, self.parallelism):
            yield from versions

    def check(self, key: str, version_id: str, *, keep: int, deep: bool) -> Fetched:
        if keep or deep or not self.store.stored_sha256:
            return self.fetch(key, version_id, keep=keep)
        try:
            self.count()
            state = self.store.head(key, version_id)
        except FileNotFoundError:
            return Fetched(key, version_id, None)
        except Exception as exc:
            return Fetched(key, version_id, None, error=_describe(exc))
        if state is None:
            return Fetched(key, version_id, None)
        if state.sha256 is None:
            return self.fetch(key, version_id, keep=keep)
        return Fetched(key, version_id, state, state.sha256, state.size)

    def unsafe_entries(self, prefix: str) -> list[tuple[str, str]]:
        del prefix
        return []

    def fetch(self, key: str, version_id: str, *, keep: int) -> Fetched:
        try:
            self.count()
            state = self.store.head(key, version_id)
            if state is None:
                return Fetched(key, version_id, None)
            self.count()
            sha, size, data = digest_chunks(self.store.iter_version(key, version_id, CHUNK), keep)
        except FileNotFoundError:
            return Fetched(key, version_id, None)
        except Exception as exc:  # any backend failure becomes a reported problem
            return Fetched(key, version_id, None, error=_describe(exc))
        return Fetched(key, version_id, state, sha, size, data)


def _describe(exc: BaseException) -> str:
    from tfaudit_ci.errors import TfauditError

    if isinstance(exc, TfauditError):
        return exc.summary
    code = _s3_code(exc)
    return f"{type(exc).__name__}{f' ({code})' if code else ''}: {exc}"[:300]


def _s3_code(exc: BaseException) -> str | None:
    from tfaudit_ci.stores.s3_errors import error_code

    return error_code(exc)


_MISSING_CODES = {"NoSuchKey", "NoSuchVersion", "404", "405", "MethodNotAllowed", "InvalidArgument"}


class S3Reader(_Counted):
    """S3: a listing with ListObjectVersions, one GetObject per record (and per artifact
    whose checksum HeadObject does not show), one HeadObject per other artifact; requests
    counted as the client sends them (retries included)."""

    def __init__(self, store: Any, parallelism: int) -> None:
        from dataclasses import replace

        from tfaudit_ci.stores.s3 import make_client

        super().__init__()
        self.stored_sha256: bool = store.stored_sha256
        self.bucket: str = store.bucket
        self.prefix: str = store.prefix
        # Our own client: the store's connection pool is smaller than --parallelism.
        options = replace(
            store.options, region=store.options.region or store.client.meta.region_name
        )
        self.client = make_client(options, max_pool_connections=max(10, parallelism + 2))
        self.client.meta.events.register("before-send.s3", self._sent)

    def _sent(self, **kwargs: Any) -> None:
        del kwargs
        self.count()

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def list_versions(self, prefix: str, *, after: str | None = None) -> Iterator[VersionInfo]:
        from tfaudit_ci.stores.s3 import oldest_first, page_versions

        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_object_versions")
        pending: dict[str, list[VersionInfo]] = {}
        start: dict[str, Any] = {"KeyMarker": self._full(after)} if after is not None else {}
        pages = paginator.paginate(
            Bucket=self.bucket,
            Prefix=self._full(prefix),
            PaginationConfig={"PageSize": LIST_PAGE_SIZE},
            **start,
        )
        for page in pages:
            for version in page_versions(page, lambda key: key[strip:]):
                pending.setdefault(version.key, []).append(version)
            # Keys before the next page's first key are complete: hand them on page by page
            # (verify starts on the chain while the run folders are still being listed).
            marker_key = page.get("NextKeyMarker") if page.get("IsTruncated") else None
            limit = str(marker_key)[strip:] if marker_key is not None else None
            for key in sorted(k for k in pending if limit is None or k < limit):
                yield from oldest_first(pending.pop(key))

    def unsafe_entries(self, prefix: str) -> list[tuple[str, str]]:
        del prefix
        return []

    def check(self, key: str, version_id: str, *, keep: int, deep: bool) -> Fetched:
        if keep or deep or not self.stored_sha256:
            return self.fetch(key, version_id, keep=keep)
        from tfaudit_ci.stores.s3 import head_state

        try:
            response = self.client.head_object(
                Bucket=self.bucket,
                Key=self._full(key),
                VersionId=version_id,
                ChecksumMode="ENABLED",
            )
        except Exception as exc:
            if _s3_code(exc) in _MISSING_CODES:
                return Fetched(key, version_id, None)
            return Fetched(key, version_id, None, error=_describe(exc))
        state = head_state(key, version_id, response)
        if state.sha256 is None:  # no (single-part) checksum kept: hash the bytes
            return self.fetch(key, version_id, keep=keep)
        return Fetched(key, version_id, state, state.sha256, state.size)

    def fetch(self, key: str, version_id: str, *, keep: int) -> Fetched:
        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=self._full(key), VersionId=version_id
            )
        except Exception as exc:
            if _s3_code(exc) in _MISSING_CODES:
                return Fetched(key, version_id, None)
            return Fetched(key, version_id, None, error=_describe(exc))
        body = response["Body"]
        try:
            sha, size, data = digest_chunks(body.iter_chunks(CHUNK), keep)
        except Exception as exc:
            return Fetched(key, version_id, None, error=_describe(exc))
        finally:
            body.close()
        state = ObjectState(
            key=key,
            version_id=version_id,
            size=int(response.get("ContentLength", size)),
            lock_mode=response.get("ObjectLockMode"),
            retain_until=response.get("ObjectLockRetainUntilDate"),
        )
        return Fetched(key, version_id, state, sha, size, data)


class FileReader(StoreReader):
    """``file://``: the store's own listing, which never follows a symlink, and its findings."""

    def __init__(self, store: FileStore, parallelism: int) -> None:
        super().__init__(store, parallelism)
        self.files = store

    def list_versions(self, prefix: str, *, after: str | None = None) -> Iterator[VersionInfo]:
        self.count()
        for version in self.files.list_versions(prefix):
            if after is None or version.key > after:
                yield version

    def unsafe_entries(self, prefix: str) -> list[tuple[str, str]]:
        return self.files.unsafe_entries(prefix)


def reader_for(store: Store, parallelism: int) -> Reader:
    return walk_reader_for(store, parallelism)


def walk_reader_for(store: Store, parallelism: int) -> WalkReader:
    from tfaudit_ci.stores.file import FileStore
    from tfaudit_ci.stores.s3 import S3Store

    if isinstance(store, S3Store):
        return S3Reader(store, parallelism)
    if isinstance(store, FileStore):
        return FileReader(store, parallelism)
    return StoreReader(store, parallelism)
