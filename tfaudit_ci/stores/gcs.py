"""Google Cloud Storage store: a locked bucket retention policy, or per-object retention.

Two ways a GCS bucket can be WORM (``StoreOptions.gcs_mode``):

- ``bucket-policy``: the bucket has a retention policy that is *locked* (it can then never be
  shortened or removed) with a period of at least the policy's retention days. Every object
  is kept until ``timeCreated + retentionPeriod`` (``retentionExpirationTime``).
- ``object-retention``: the bucket was created with object retention enabled and each object
  is written with ``retention {mode: Locked, retainUntilTime}`` on the upload itself.

Writes are create-only (``ifGenerationMatch=0``), which GCS enforces atomically, so the chain
slot arbitration needs no version listing. The SDK's own retry is turned off and replaced by a
bounded loop (``StoreOptions.max_attempts``): the SDK's default keeps retrying for two minutes.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tfaudit_ci.errors import ConfigError, PreflightError, ReadbackError, TfauditError, UploadError
from tfaudit_ci.stores import StoreOptions, base
from tfaudit_ci.vocab import GcsMode, LockMode, values

T = TypeVar("T")

GCS_MODES = values(GcsMode)
# Resumable chunks must be a multiple of 256 KiB; they bound the memory an upload holds.
_CHUNK_QUANTUM = 256 * 1024
_PERMISSIONS_FIX = (
    "grant the writer service account roles/storage.objectCreator and "
    "roles/storage.objectViewer on the bucket, plus storage.buckets.get (docs/stores.md)"
)


def _import_sdk() -> Any:
    return base.import_sdk("google.cloud.storage", "gs://", "Google Cloud Storage SDK", "gcs")


# -- pure decision logic (tested against recorded API responses) ------------------------------


@dataclass(frozen=True)
class ObjectLock:
    mode: str  # COMPLIANCE | GOVERNANCE
    until: dt.datetime | None


def parse_time(value: Any) -> dt.datetime | None:
    """RFC 3339 from the JSON API (or a datetime from the SDK) -> aware datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    text = str(value).replace("Z", "+00:00")
    # Python 3.10's fromisoformat accepts 3 or 6 fractional digits only; GCS sends 1 to 9.
    if "." in text:
        head, rest = text.split(".", 1)
        digits = "".join(ch for ch in rest if ch.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    parsed = dt.datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def retention_days_of(resource: dict[str, Any]) -> int | None:
    """A bucket retention policy's period in whole days (rounded down), if it has one."""
    seconds = int((resource.get("retentionPolicy") or {}).get("retentionPeriod") or 0)
    return seconds // 86400 or None


def bucket_checks(
    resource: dict[str, Any], mode: str, policy: base.Policy
) -> list[base.PreflightCheck]:
    """Named preflight checks for a bucket resource as returned by ``GET /storage/v1/b/NAME``."""
    name = resource.get("name", "?")
    if mode == GcsMode.OBJECT_RETENTION:
        enabled = (resource.get("objectRetention") or {}).get("mode") == "Enabled"
        return [
            base.PreflightCheck(
                "object-retention",
                enabled,
                f"bucket {name!r} has object retention enabled"
                if enabled
                else f"bucket {name!r} does not have object retention enabled; create it with "
                "--enable-per-object-retention (it cannot be turned on later)",
            )
        ]
    retention = resource.get("retentionPolicy") or {}
    locked = bool(retention.get("isLocked"))
    period_days = int(retention.get("retentionPeriod") or 0) / 86400
    mode_name = LockMode.COMPLIANCE if locked else (LockMode.GOVERNANCE if retention else None)
    mode_ok = policy.mode_ok(mode_name)
    return [
        base.PreflightCheck(
            "retention-policy",
            bool(retention),
            f"bucket {name!r} has a retention policy"
            if retention
            else f"bucket {name!r} has no retention policy; set one and lock it, or use "
            "--gcs-mode object-retention",
        ),
        base.PreflightCheck(
            "retention-locked",
            mode_ok,
            f"the retention policy of {name!r} is {'locked' if locked else 'not locked'}"
            + (
                ""
                if mode_ok
                else f"; policy requires {policy.lock_mode} (gcloud storage buckets update "
                f"gs://{name} --lock-retention-period)"
            ),
        ),
        base.PreflightCheck(
            "retention-period",
            period_days >= policy.retention_days,
            f"the retention period of {name!r} is {period_days:g} days"
            + (
                f" (policy: at least {policy.retention_days})"
                if period_days >= policy.retention_days
                else f"; policy requires at least {policy.retention_days}"
            ),
        ),
    ]


def object_lock(obj: dict[str, Any], bucket: dict[str, Any]) -> ObjectLock | None:
    """The strongest lock on one object version, from its resource and its bucket's.

    Object retention Locked and a locked bucket policy can never be shortened, so they are
    COMPLIANCE; Unlocked retention or an unlocked bucket policy can be, so GOVERNANCE.
    """
    candidates: list[ObjectLock] = []
    retention = obj.get("retention") or {}
    if retention.get("retainUntilTime"):
        mode = "COMPLIANCE" if str(retention.get("mode")).lower() == "locked" else "GOVERNANCE"
        candidates.append(ObjectLock(mode, parse_time(retention["retainUntilTime"])))
    bucket_policy = bucket.get("retentionPolicy") or {}
    if bucket_policy and obj.get("retentionExpirationTime"):
        mode = "COMPLIANCE" if bucket_policy.get("isLocked") else "GOVERNANCE"
        candidates.append(ObjectLock(mode, parse_time(obj["retentionExpirationTime"])))
    if not candidates:
        return None
    epoch = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    return max(candidates, key=lambda lock: (lock.mode == "COMPLIANCE", lock.until or epoch))


def b64_to_hex(value: str | None) -> str | None:
    return base64.b64decode(value).hex() if value else None


# -- errors ------------------------------------------------------------------------------------


def _status(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    return code if isinstance(code, int) else None


def is_transient(exc: BaseException) -> bool:
    """429, 5xx and connection-level failures are worth another attempt."""
    status = _status(exc)
    if status is not None:
        return status == 429 or status == 408 or status >= 500
    try:
        import requests
        from google.auth import exceptions as auth_exc
    except ImportError:  # pragma: no cover - both ship with the SDK
        return False
    return isinstance(
        exc, requests.ConnectionError | requests.Timeout | auth_exc.TransportError | ConnectionError
    )


def translate(exc: BaseException, action: str, error: type[TfauditError]) -> TfauditError:
    """A one-line error of class ``error`` that says how to fix ``exc``."""
    from google.auth import exceptions as auth_exc

    status = _status(exc)
    if isinstance(exc, auth_exc.DefaultCredentialsError | auth_exc.RefreshError):
        return error(
            f"{action}: no usable Google credentials ({type(exc).__name__})",
            fix="authenticate first (google-github-actions/auth with workload identity "
            "federation, or GOOGLE_APPLICATION_CREDENTIALS); docs/stores.md",
        )
    if status == 401:
        return error(f"{action}: the credentials were rejected (401)", fix="refresh them")
    if status == 403:
        return error(f"{action}: permission denied (403)", fix=_PERMISSIONS_FIX)
    if status == 404:
        return error(
            f"{action}: not found (404)", fix="check the bucket name in the store URL exists"
        )
    if is_transient(exc):
        return error(
            f"{action}: the store kept failing ({type(exc).__name__}: {_first_line(exc)})",
            fix="retry later; check the network path to storage.googleapis.com",
        )
    return error(f"{action}: {type(exc).__name__}: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


# -- the store ---------------------------------------------------------------------------------


class GcsStore(base.PrefixedStore):
    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str,
        options: StoreOptions,
        *,
        backoff_base: float = 0.5,
    ) -> None:
        if options.gcs_mode not in GCS_MODES:
            raise ConfigError(
                f"unknown gcs-mode {options.gcs_mode!r}", fix=f"use one of {', '.join(GCS_MODES)}"
            )
        super().__init__(f"gs://{bucket}", prefix)
        self.client = client
        self.bucket_name = bucket
        self.bucket = client.bucket(bucket)
        self.options = options
        self.backoff_base = backoff_base
        self._bucket_resource: dict[str, Any] | None = None
        chunk = max(options.multipart_chunksize // _CHUNK_QUANTUM, 1) * _CHUNK_QUANTUM
        self._chunk_size = chunk

    @classmethod
    def from_url(cls, bucket: str, prefix: str, options: StoreOptions) -> GcsStore:
        storage = _import_sdk()
        emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        try:
            if emulator:
                # A local emulator (fake-gcs-server): no credentials, no project lookup.
                from google.auth.credentials import AnonymousCredentials

                client = storage.Client(
                    project="tfaudit-emulator",
                    credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                    client_options={"api_endpoint": emulator},
                )
            else:
                import google.auth

                credentials, _ = google.auth.default(
                    scopes=["https://www.googleapis.com/auth/devstorage.read_write"]
                )
                client_options = (
                    {"api_endpoint": options.endpoint_url} if options.endpoint_url else None
                )
                # project=None: bucket operations need no project, so skip inferring one.
                client = storage.Client(
                    project=None, credentials=credentials, client_options=client_options
                )
        except ConfigError:
            raise
        except Exception as exc:
            raise translate(exc, "creating the GCS client", ConfigError) from None
        return cls(client, bucket, prefix, options)

    _translate = staticmethod(translate)

    @property
    def _timeout(self) -> tuple[float, float]:
        return (self.options.connect_timeout, self.options.read_timeout)

    def _retrying(self, call: Callable[[], T], on_retry: Callable[[], None] | None = None) -> T:
        """``call`` with up to ``max_attempts`` tries and exponential backoff with jitter."""
        attempts = max(self.options.max_attempts, 1)
        for attempt in range(1, attempts + 1):
            try:
                return call()
            except Exception as exc:
                if attempt == attempts or not is_transient(exc):
                    raise
                delay = min(self.backoff_base * 2 ** (attempt - 1), 20.0)
                time.sleep(delay * (0.5 + random.random() / 2))
                if on_retry:
                    on_retry()
        raise AssertionError("unreachable")  # pragma: no cover

    def _bucket_info(self, error: type[TfauditError]) -> dict[str, Any]:
        # Cached: a locked policy cannot change, and verify heads thousands of objects.
        if self._bucket_resource is None:
            try:
                bucket = self._retrying(
                    lambda: self.client.get_bucket(
                        self.bucket_name, timeout=self._timeout, retry=None
                    )
                )
            except Exception as exc:
                if _status(exc) == 404:
                    raise error(
                        f"bucket {self.bucket_name!r} does not exist (or is not visible)",
                        fix="create it with a locked retention policy or object retention "
                        "(see docs/stores.md)",
                    ) from None
                raise translate(exc, f"reading bucket {self.bucket_name!r}", error) from None
            self._bucket_resource = dict(bucket._properties)
        return self._bucket_resource

    # -- preflight -----------------------------------------------------------------------------
    def preflight(self, policy: base.Policy) -> base.PreflightReport:
        self._bucket_resource = None  # preflight always looks at the live bucket
        resource = self._bucket_info(PreflightError)
        checks = bucket_checks(resource, self.options.gcs_mode, policy)
        return base.PreflightReport(
            store=self.uri,
            checks=checks,
            # Per-object retention is written with each object; a bucket policy is not.
            lockable=self.options.gcs_mode == GcsMode.OBJECT_RETENTION and checks[0].ok,
            default_retention_days=retention_days_of(resource),
        )

    # -- writes --------------------------------------------------------------------------------
    def _new_blob(self, full: str, md5_hex: str, lock: base.Lock | None) -> Any:
        blob = self.bucket.blob(full, chunk_size=self._chunk_size)
        blob.content_type = base.content_type_for(full)
        # GCS checks the uploaded bytes against this digest and refuses the object otherwise.
        blob.md5_hash = base64.b64encode(bytes.fromhex(md5_hex)).decode("ascii")
        if lock is not None and self.options.gcs_mode == GcsMode.OBJECT_RETENTION:
            blob.retention.mode = "Locked" if lock.mode == LockMode.COMPLIANCE else "Unlocked"
            blob.retention.retain_until_time = lock.retain_until
        return blob

    def _own_write(self, full: str, md5_hex: str, size: int) -> str | None:
        """After a 412: the generation of the live object if it holds exactly our bytes.

        A retried create-only write whose first attempt succeeded but whose response was lost
        gets 412 on the retry; the object already there is then our own.
        """
        blob = self.bucket.get_blob(full, timeout=self._timeout, retry=None)
        if blob is None or b64_to_hex(blob.md5_hash) != md5_hex or int(blob.size) != size:
            return None
        return str(blob.generation)

    def put_file(
        self, key: str, path: Path, digests: base.Digests, lock: base.Lock | None
    ) -> base.StoredObject:
        full = self._key(key)
        blob = self._new_blob(full, digests.md5, lock)

        def upload() -> None:
            with path.open("rb") as stream:  # streamed in chunks, never read whole
                blob.upload_from_file(
                    stream,
                    size=digests.size,
                    if_generation_match=0,
                    timeout=self._timeout,
                    retry=None,
                    checksum="crc32c",
                )

        try:
            self._retrying(upload)
            generation = str(blob.generation)
        except Exception as exc:
            generation = ""
            if _status(exc) == 412:
                generation = self._own_write(full, digests.md5, digests.size) or ""
            if not generation:
                if _status(exc) == 412:
                    raise UploadError(
                        f"uploading {full}: an object with that name already exists",
                        fix="run folders are unique; something else wrote there, investigate",
                    ) from None
                raise translate(exc, f"uploading {full}", UploadError) from None
        return base.StoredObject(key, generation, digests.sha256, digests.size)

    def put_create_only(
        self, key: str, data: bytes, lock: base.Lock | None
    ) -> base.StoredObject | None:
        full = self._key(key)
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        blob = self._new_blob(full, md5, lock)
        try:
            self._retrying(
                lambda: blob.upload_from_string(
                    data,
                    content_type=base.content_type_for(full),
                    if_generation_match=0,
                    timeout=self._timeout,
                    retry=None,
                    checksum="crc32c",
                )
            )
            generation = str(blob.generation)
        except Exception as exc:
            if _status(exc) != 412:
                raise translate(exc, f"writing chain record {full}", UploadError) from None
            with self._translating(f"re-reading {full}", UploadError):
                own = self._own_write(full, md5, len(data))
            if own is None:
                return None  # another writer holds the slot
            generation = own
        return base.StoredObject(key, generation, hashlib.sha256(data).hexdigest(), len(data))

    # -- reads ---------------------------------------------------------------------------------
    def _get(self, full: str, version_id: str, error: type[TfauditError]) -> Any | None:
        if not version_id.isdigit():
            return None  # not a GCS generation, so not a version of this store
        with self._translating(f"reading back {full}#{version_id}", error):
            return self._retrying(
                lambda: self.bucket.get_blob(
                    full, generation=int(version_id), timeout=self._timeout, retry=None
                )
            )

    def head(self, key: str, version_id: str) -> base.ObjectState | None:
        full = self._key(key)
        blob = self._get(full, version_id, ReadbackError)
        if blob is None:
            return None
        lock = object_lock(blob._properties, self._bucket_info(ReadbackError))
        return base.ObjectState(
            key=key,
            version_id=str(blob.generation),
            size=int(blob.size or 0),
            lock_mode=lock.mode if lock else None,
            retain_until=lock.until if lock else None,
            sha256=None,  # GCS keeps MD5 and CRC32C only
            md5=b64_to_hex(blob.md5_hash),
            etag=f"crc32c:{blob.crc32c}" if blob.crc32c else None,
        )

    def versions(self, key: str) -> list[base.VersionInfo]:
        full = self._key(key)
        with self._translating(f"listing versions of {full}", ReadbackError):
            blobs = self._retrying(
                lambda: list(
                    self.client.list_blobs(
                        self.bucket_name,
                        prefix=full,
                        versions=True,
                        timeout=self._timeout,
                        retry=None,
                    )
                )
            )
        found = [
            base.VersionInfo(key, str(b.generation), False, b.time_created, int(b.size or 0))
            for b in blobs
            if b.name == full
        ]
        found.sort(key=lambda v: int(v.version_id))  # generations grow with time
        return found

    def iter_version(self, key: str, version_id: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        full = self._key(key)
        blob = self._get(full, version_id, ReadbackError)
        if blob is None:
            raise ReadbackError(f"{self.uri}/{key} has no generation {version_id}")
        size = int(blob.size or 0)
        # Ranged reads of the pinned generation keep memory at one chunk per call.
        for start in range(0, size, chunk_size):
            end = min(start + chunk_size, size) - 1
            with self._translating(f"reading {full}#{version_id}", ReadbackError):
                chunk = self._retrying(functools.partial(self._read_range, blob, start, end))
            yield chunk

    def _read_range(self, blob: Any, start: int, end: int) -> bytes:
        data: bytes = blob.download_as_bytes(
            start=start, end=end, checksum=None, timeout=self._timeout, retry=None
        )
        return data

    def list_keys(self, prefix: str) -> Iterator[str]:
        full = self._key(prefix)
        with self._translating(f"listing {full}", ReadbackError):
            for blob in self.client.list_blobs(
                self.bucket_name, prefix=full, timeout=self._timeout
            ):
                yield self._relative(str(blob.name))
