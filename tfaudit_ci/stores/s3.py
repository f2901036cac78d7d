"""S3 Object Lock store (AWS, and S3-compatible servers such as Ceph RGW and MinIO).

Behaviours of real servers this module is written around (docs/conformance.md): lock headers
on multipart uploads may be ignored, so retention is put on the completed version explicitly;
``If-None-Match: *`` may be ignored, so the chain arbitrates by version order; the server-side
SHA-256 checksum may be neither stored nor validated, so Content-MD5 is sent too and
read-back compares the ETag as well as any checksum the server keeps.

The client is built on a background thread as soon as the store is opened: importing boto3
and building a client cost a few hundred milliseconds that then overlap with the caller's
own set-up instead of delaying the wrapped command.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from threading import Thread
from typing import TYPE_CHECKING, Any, cast

from tfaudit_ci.errors import ConfigError, PreflightError, ReadbackError, TfauditError, UploadError
from tfaudit_ci.stores import StoreOptions
from tfaudit_ci.stores.base import (
    Digests,
    Lock,
    ObjectState,
    Policy,
    PrefixedStore,
    PreflightReport,
    StoredObject,
    VersionInfo,
)
from tfaudit_ci.stores.s3_errors import clock_skew, describe, error_code, http_status
from tfaudit_ci.vocab import LockMode

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectLockRetentionTypeDef

_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
_MISSING_CODES = {"NoSuchKey", "NoSuchVersion", "404", "405", "MethodNotAllowed"}
# Special fixes by (action kind, error code); anything else gets s3_errors' generic fix.
_PUT_DENIED_FIX = (
    "grant the writer role s3:PutObject and s3:PutObjectRetention (a PUT that carries its own "
    "lock needs both) on the bucket's objects"
)
_HEAD_DENIED_FIX = "grant s3:GetObjectVersion and s3:GetObjectRetention to the writer role"


def _b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


def make_client(options: StoreOptions, max_pool_connections: int = 10) -> S3Client:
    """A botocore S3 client (boto3 would add an import and a session, nothing the store uses)."""
    import botocore.session
    from botocore.config import Config as BotoConfig

    config = BotoConfig(
        connect_timeout=options.connect_timeout,
        read_timeout=options.read_timeout,
        retries={"max_attempts": options.max_attempts, "mode": "standard"},
        s3={"addressing_style": "path"} if options.endpoint_url else {},
        max_pool_connections=max_pool_connections,
        # Digests are computed by tfaudit itself and sent explicitly; no trailer checksums,
        # which older S3-compatible servers reject.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = botocore.session.Session(profile=options.profile)
    data_path = session.get_config_variable("data_path")
    session.register_component("data_loader", _named_service_loader(data_path))
    client = session.create_client(
        "s3", region_name=options.region, endpoint_url=options.endpoint_url, config=config
    )
    _drop_expect_continue(cast("S3Client", client))
    return cast("S3Client", client)


def _named_service_loader(data_path: str | None) -> Any:
    """botocore's data loader, minus its walk of every service it ships: to check a service's
    name, botocore lists ~400 folders (~900 listdir and ~2,700 stat calls, the largest part
    of creating a client after JSON parsing); this loader looks in the named folder first."""
    import os
    import threading

    from botocore.exceptions import DataNotFoundError
    from botocore.loaders import Loader

    class NamedServiceLoader(Loader):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._asked = threading.local()

        def load_service_model(
            self, service_name: str, type_name: str, api_version: str | None = None
        ) -> Any:
            self._asked.name = service_name
            try:
                return super().load_service_model(service_name, type_name, api_version)
            finally:
                self._asked.name = None

        def list_available_services(self, type_name: str) -> list[str]:
            name = getattr(self._asked, "name", None)
            if name:
                with contextlib.suppress(DataNotFoundError):
                    if self.list_api_versions(name, type_name):
                        return [name]
            return list(super().list_available_services(type_name))

    paths = [os.path.expanduser(os.path.expandvars(p)) for p in (data_path or "").split(os.pathsep)]
    return NamedServiceLoader(extra_search_paths=[p for p in paths if p])


def _drop_expect_continue(client: S3Client) -> None:
    # After a server refuses a PUT early, `Expect: 100-continue` can stall the next request
    # on that connection until read_timeout (seen on Ceph RGW).
    from botocore.handlers import add_expect_header

    for op in ("PutObject", "UploadPart"):
        client.meta.events.unregister(f"before-call.s3.{op}", add_expect_header)


def _client_error(exc: BaseException) -> TfauditError:
    """Client creation failed: missing or partial credentials mean the store cannot be used
    (preflight, exit 21); anything else is a configuration error (exit 20)."""
    from botocore import exceptions as bx

    summary, fix = describe(exc, "creating the S3 client")
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return PreflightError(summary, fix=fix)
    return ConfigError(summary, fix=fix)


class _ClientFuture:
    """A client being built on a daemon thread; ``result()`` waits for it."""

    def __init__(self, options: StoreOptions) -> None:
        self._future: Future[S3Client] = Future()
        self._options = options
        Thread(target=self._build, name="tfaudit-s3-client", daemon=True).start()

    def _build(self) -> None:
        try:
            self._future.set_result(make_client(self._options))
        except BaseException as exc:  # re-raised in the caller's thread
            self._future.set_exception(exc)

    def result(self) -> S3Client:
        try:
            return self._future.result()
        except TfauditError:
            raise
        except Exception as exc:  # botocore raises many kinds at client creation
            raise _client_error(exc) from None


def head_state(key: str, version_id: str, head: Mapping[str, Any]) -> ObjectState:
    """The state a HeadObject (``ChecksumMode=ENABLED``) response shows of one version."""
    etag = str(head.get("ETag", "")).strip('"') or None
    checksum = head.get("ChecksumSHA256")
    sha = None
    # A multipart object's checksum is a checksum of part checksums (AWS marks it "-N",
    # moto does not); its multipart ETag is compared instead.
    multipart = etag is not None and "-" in etag
    if checksum and "-" not in checksum and not multipart:
        sha = base64.b64decode(checksum).hex()
    return ObjectState(
        key=key,
        version_id=version_id,
        size=int(head.get("ContentLength", 0)),
        lock_mode=head.get("ObjectLockMode"),
        retain_until=head.get("ObjectLockRetainUntilDate"),
        sha256=sha,
        md5=etag,
        etag=etag,
    )


def page_versions(page: Mapping[str, Any], relative: Callable[[str], str]) -> Iterator[VersionInfo]:
    """The versions and delete markers of one ``ListObjectVersions`` page, keys made
    ``relative``, in the page's order."""
    for item in page.get("Versions", []):
        yield VersionInfo(
            relative(str(item["Key"])),
            str(item["VersionId"]),
            False,
            item.get("LastModified"),
            int(item.get("Size", 0)),
        )
    for item in page.get("DeleteMarkers", []):
        key = relative(str(item["Key"]))
        yield VersionInfo(key, str(item["VersionId"]), True, item.get("LastModified"))


def oldest_first(versions: list[VersionInfo]) -> list[VersionInfo]:
    """One key's versions, oldest first. S3 lists versions newest first, and delete markers
    in a separate array: listing order is authoritative for versions (timestamps can tie
    within a second); markers go in by time, after the versions of the same second."""
    real = [v for v in versions if not v.is_delete_marker][::-1]
    markers = [v for v in versions if v.is_delete_marker]
    if not markers:
        return real
    epoch = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    merged = real + sorted(markers, key=lambda v: v.last_modified or epoch)
    merged.sort(key=lambda v: v.last_modified or epoch)  # stable: keeps version order on ties
    return merged


class S3Store(PrefixedStore):
    # Every write sends ChecksumSHA256; HeadObject with ChecksumMode=ENABLED returns it where
    # the server keeps it (AWS, moto; not every Ceph RGW release: docs/conformance.md).
    stored_sha256 = True

    def __init__(
        self, client: S3Client | _ClientFuture, bucket: str, prefix: str, options: StoreOptions
    ) -> None:
        super().__init__(f"s3://{bucket}", prefix)
        self._client = client
        self.bucket = bucket
        self.options = options

    @classmethod
    def from_url(cls, bucket: str, prefix: str, options: StoreOptions) -> S3Store:
        return cls(_ClientFuture(options), bucket, prefix, options)

    @property
    def client(self) -> S3Client:
        if isinstance(self._client, _ClientFuture):
            self._client = self._client.result()
        return self._client

    def _translate(
        self, exc: BaseException, action: str, error: type[TfauditError]
    ) -> TfauditError:
        summary, fix = describe(exc, action)
        code = error_code(exc)
        if error is UploadError and code == "AccessDenied":
            fix = _PUT_DENIED_FIX
        elif error is ReadbackError and code in {"AccessDenied", "403"} and not clock_skew(exc):
            fix = _HEAD_DENIED_FIX
        return error(summary, fix=fix)

    # -- preflight -------------------------------------------------------------------------
    def _head_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except TfauditError:
            raise
        except Exception as exc:
            status = http_status(exc)
            if status == 404:
                raise PreflightError(
                    f"bucket {self.bucket!r} does not exist",
                    fix="create it with Object Lock enabled (see examples/terraform/)",
                ) from None
            summary, fix = describe(exc, f"checking bucket {self.bucket!r}")
            if status == 403 and clock_skew(exc) is None:
                fix = "grant s3:ListBucket on the bucket (and check the region)"
            raise PreflightError(summary, fix=fix) from None

    def _versioning(self) -> str | None:
        with self._translating("reading bucket versioning", PreflightError):
            return self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")

    def _lock_configuration(self) -> Any:
        try:
            lock = self.client.get_object_lock_configuration(Bucket=self.bucket)
            return lock.get("ObjectLockConfiguration", {})
        except Exception as exc:
            if error_code(exc) in {"ObjectLockConfigurationNotFoundError", "404"}:
                return {}
            error = self._translate(exc, "reading the Object Lock configuration", PreflightError)
            if error_code(exc) == "AccessDenied":
                error.fix = "grant s3:GetBucketObjectLockConfiguration to the writer role"
            raise error from None

    def preflight(self, policy: Policy) -> PreflightReport:
        """Three reads, sent at once; errors are reported in order (a missing bucket first)."""
        client = self.client  # built (or its failure raised) before the threads start
        del client
        with ThreadPoolExecutor(max_workers=3, thread_name_prefix="tfaudit-preflight") as pool:
            bucket = pool.submit(self._head_bucket)
            versioning_call = pool.submit(self._versioning)
            lock_call = pool.submit(self._lock_configuration)
            bucket.result()
            versioning = versioning_call.result()
            lock_cfg = lock_call.result()
        report = PreflightReport(store=self.uri)
        report.add(
            "versioning",
            versioning == "Enabled",
            "versioning is Enabled",
            f"versioning is {versioning or 'off'}; it must be Enabled",
        )
        enabled = lock_cfg.get("ObjectLockEnabled") == "Enabled"
        report.lockable = enabled
        report.add("object-lock", enabled, "Object Lock is enabled", "Object Lock is not enabled")
        default = lock_cfg.get("Rule", {}).get("DefaultRetention", {})
        mode = default.get("Mode")
        days = int(default.get("Days") or 0) or int(default.get("Years") or 0) * 365
        report.default_retention_days = days or None
        report.add(
            "default-mode",
            policy.mode_ok(mode),
            f"default retention mode is {mode}",
            f"default retention mode is {mode or 'unset'}; policy requires {policy.lock_mode}",
        )
        report.add(
            "default-days",
            days >= policy.retention_days,
            f"default retention is {days} days (policy: at least {policy.retention_days})",
            f"default retention is {days} days; policy requires at least {policy.retention_days}",
        )
        return report

    # -- writes ----------------------------------------------------------------------------
    @staticmethod
    def _lock_args(lock: Lock | None) -> dict[str, Any]:
        if lock is None:
            return {}
        return {"ObjectLockMode": str(lock.mode), "ObjectLockRetainUntilDate": lock.retain_until}

    def put_file(self, key: str, path: Path, digests: Digests, lock: Lock | None) -> StoredObject:
        full = self._key(key)
        with self._translating(f"uploading {full}", UploadError):
            if digests.size > self.options.multipart_threshold:
                version_id = self._put_multipart(full, path, lock)
            else:
                with path.open("rb") as body:
                    response = self.client.put_object(
                        Bucket=self.bucket,
                        Key=full,
                        Body=body,
                        ContentLength=digests.size,
                        ContentMD5=_b64(digests.md5),
                        ChecksumSHA256=_b64(digests.sha256),
                        # Named too, so that the server keeps it for HeadObject to return
                        # (moto keeps it only then; verify compares it: Store.stored_sha256).
                        ChecksumAlgorithm="SHA256",
                        ContentType="text/plain; charset=utf-8",
                        **self._lock_args(lock),
                    )
                version_id = response.get("VersionId", "")
        if not version_id:
            raise UploadError(
                f"uploading {full}: the store returned no version id",
                fix="enable versioning and Object Lock on the bucket",
            )
        return StoredObject(key, str(version_id), digests.sha256, digests.size)

    def _put_multipart(self, full: str, path: Path, lock: Lock | None) -> str:
        upload = self.client.create_multipart_upload(
            Bucket=self.bucket,
            Key=full,
            ChecksumAlgorithm="SHA256",
            ContentType="text/plain; charset=utf-8",
            **self._lock_args(lock),
        )
        upload_id = upload["UploadId"]
        parts: list[Any] = []
        try:
            with path.open("rb") as handle:
                number = 1
                while chunk := handle.read(self.options.multipart_chunksize):
                    md5 = hashlib.md5(chunk, usedforsecurity=False).digest()
                    sha = base64.b64encode(hashlib.sha256(chunk).digest()).decode()
                    part = self.client.upload_part(
                        Bucket=self.bucket,
                        Key=full,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                        ContentMD5=base64.b64encode(md5).decode(),
                        ChecksumSHA256=sha,
                    )
                    parts.append(
                        {"PartNumber": number, "ETag": part["ETag"], "ChecksumSHA256": sha}
                    )
                    number += 1
            done = self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=full,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except Exception:
            # The original failure is the one worth reporting.
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
            raise
        version_id = str(done.get("VersionId") or "")
        if version_id and lock is not None:
            self._ensure_retention(full, version_id, lock)
        return version_id

    def _ensure_retention(self, full: str, version_id: str, lock: Lock) -> None:
        """Some servers ignore lock headers on multipart uploads: set the lock explicitly."""
        head = self.client.head_object(Bucket=self.bucket, Key=full, VersionId=version_id)
        current = head.get("ObjectLockRetainUntilDate")
        if (
            head.get("ObjectLockMode") == str(lock.mode)
            and current
            and current >= lock.retain_until
        ):
            return  # already as strong; COMPLIANCE cannot be shortened anyway
        retention: ObjectLockRetentionTypeDef = {
            "Mode": "COMPLIANCE" if lock.mode == LockMode.COMPLIANCE else "GOVERNANCE",
            "RetainUntilDate": lock.retain_until,
        }
        self.client.put_object_retention(
            Bucket=self.bucket, Key=full, VersionId=version_id, Retention=retention
        )

    def put_create_only(self, key: str, data: bytes, lock: Lock | None) -> StoredObject | None:
        full = self._key(key)
        sha = hashlib.sha256(data).hexdigest()
        try:
            response = self.client.put_object(
                Bucket=self.bucket,
                Key=full,
                Body=data,
                IfNoneMatch="*",
                ContentMD5=_b64(hashlib.md5(data, usedforsecurity=False).hexdigest()),
                ChecksumSHA256=_b64(sha),
                ChecksumAlgorithm="SHA256",
                ContentType="application/json",
                **self._lock_args(lock),
            )
        except TfauditError:
            raise
        except Exception as exc:
            if error_code(exc) in _CONFLICT_CODES or http_status(exc) in {409, 412}:
                return None
            raise self._translate(exc, f"writing chain record {full}", UploadError) from None
        version_id = str(response.get("VersionId") or "")
        if not version_id:
            raise UploadError(
                f"writing {full}: no version id returned", fix="enable versioning on the bucket"
            )
        # Servers that ignore If-None-Match accept a second write as a new version:
        # the oldest version of a slot is the one that counts.
        versions = [v for v in self.versions(key) if not v.is_delete_marker]
        if versions and versions[0].version_id != version_id:
            return None
        return StoredObject(key, version_id, sha, len(data))

    # -- reads -----------------------------------------------------------------------------
    def head(self, key: str, version_id: str) -> ObjectState | None:
        full = self._key(key)
        try:
            head = self.client.head_object(
                Bucket=self.bucket, Key=full, VersionId=version_id, ChecksumMode="ENABLED"
            )
        except TfauditError:
            raise
        except Exception as exc:
            if http_status(exc) in {404, 405} or error_code(exc) in _MISSING_CODES:
                return None
            raise self._translate(exc, f"reading back {full}", ReadbackError) from None
        return head_state(key, version_id, head)

    def _version_pages(self, prefix: str, max_keys: int | None = None) -> Iterator[Any]:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if max_keys:
            kwargs["MaxKeys"] = max_keys
        while True:
            with self._translating(f"listing {prefix}", ReadbackError):
                page = self.client.list_object_versions(**kwargs)
            yield page
            if max_keys or not page.get("IsTruncated"):
                return
            kwargs["KeyMarker"] = page.get("NextKeyMarker")
            kwargs["VersionIdMarker"] = page.get("NextVersionIdMarker")

    def list_versions(self, prefix: str) -> Iterator[VersionInfo]:
        """Every version and delete marker under ``prefix``: by key, each key's oldest first.

        S3 lists a key's versions newest first (and delete markers apart from versions);
        last-modified times can tie within a second, so list order breaks ties.
        """
        yield from self._by_key(self._version_pages(self._key(prefix)))

    def _by_key(self, pages: Iterable[Any]) -> Iterator[VersionInfo]:
        pending: dict[str, list[VersionInfo]] = {}
        for page in pages:
            for version in page_versions(page, self._relative):
                pending.setdefault(version.key, []).append(version)
        for key in sorted(pending):
            yield from oldest_first(pending[key])

    def versions(self, key: str) -> list[VersionInfo]:
        return [v for v in self.list_versions(key) if v.key == key]

    def slot_taken(self, key: str) -> bool:
        full = self._key(key)
        for page in self._version_pages(full, max_keys=2):
            for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
                if item["Key"] == full:
                    return True
        return False

    def read_version(self, key: str, version_id: str) -> bytes:
        full = self._key(key)
        with self._translating(f"reading {full}", ReadbackError):
            response = self.client.get_object(Bucket=self.bucket, Key=full, VersionId=version_id)
            return response["Body"].read()

    def iter_version(self, key: str, version_id: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        full = self._key(key)
        with self._translating(f"reading {full}", ReadbackError):
            response = self.client.get_object(Bucket=self.bucket, Key=full, VersionId=version_id)
            body = response["Body"]
            try:
                yield from body.iter_chunks(chunk_size)
            finally:
                body.close()

    def list_versions_under(self, prefix: str, limit: int) -> list[VersionInfo] | None:
        """``list_versions`` of any key prefix (S3 prefixes are strings, not folders) in one
        request: None when there are more than ``limit`` (at most 1,000) versions."""
        page = next(self._version_pages(self._key(prefix), max_keys=limit))
        return None if page.get("IsTruncated") else list(self._by_key([page]))

    # -- the head hint (tfaudit_ci/head_hint.py): the one key that is rewritten -------------
    def read_latest(self, key: str, limit: int) -> bytes | None:
        full = self._key(key)
        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=full, Range=f"bytes=0-{limit - 1}"
            )
            body = response["Body"]
            try:
                return body.read(limit)
            finally:
                body.close()
        except TfauditError:
            raise
        except Exception as exc:
            if http_status(exc) == 404 or error_code(exc) in _MISSING_CODES:
                return None
            if http_status(exc) == 416:  # an empty object
                return b""
            raise self._translate(exc, f"reading {full}", ReadbackError) from None

    def put_latest(self, key: str, data: bytes) -> None:
        full = self._key(key)
        with self._translating(f"writing {full}", UploadError):
            self.client.put_object(
                Bucket=self.bucket,
                Key=full,
                Body=data,
                ContentMD5=_b64(hashlib.md5(data, usedforsecurity=False).hexdigest()),
                ContentType="application/json",
            )

    def list_keys(self, prefix: str) -> Iterator[str]:
        seen: set[str] = set()
        for version in self.list_versions(prefix):
            if version.key not in seen:
                seen.add(version.key)
                yield version.key
