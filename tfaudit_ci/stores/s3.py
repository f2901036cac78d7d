"""S3 Object Lock store (AWS, and S3-compatible servers such as Ceph RGW and MinIO).

Behaviours of real servers this module is written around (see the README's conformance table):
lock headers on multipart uploads may be ignored, so retention is put on the completed version
explicitly; ``If-None-Match: *`` may be ignored, so the chain arbitrates by version order;
the server-side SHA-256 checksum may be neither stored nor validated, so Content-MD5 is sent
too and read-back compares the ETag as well as any checksum the server keeps.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tfaudit_ci.errors import ConfigError, PreflightError, ReadbackError, UploadError
from tfaudit_ci.stores import StoreOptions
from tfaudit_ci.stores.base import (
    Digests,
    ObjectState,
    Policy,
    PreflightReport,
    StoredObject,
    VersionInfo,
)
from tfaudit_ci.stores.s3_errors import clock_skew, describe, error_code, http_status

_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}


def _b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


def make_client(options: StoreOptions) -> Any:
    import boto3
    from botocore.config import Config as BotoConfig

    config = BotoConfig(
        connect_timeout=options.connect_timeout,
        read_timeout=options.read_timeout,
        retries={"max_attempts": options.max_attempts, "mode": "standard"},
        s3={"addressing_style": "path"} if options.endpoint_url else {},
        # Digests are computed by tfaudit itself and sent explicitly; no trailer checksums,
        # which older S3-compatible servers reject.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = boto3.session.Session(region_name=options.region)
    client = session.client("s3", endpoint_url=options.endpoint_url, config=config)
    _drop_expect_continue(client)
    return client


def _drop_expect_continue(client: Any) -> None:
    # After a server refuses a PUT early, `Expect: 100-continue` can stall the next request
    # on that connection until read_timeout (seen on Ceph RGW).
    from botocore.handlers import add_expect_header

    for op in ("PutObject", "UploadPart"):
        client.meta.events.unregister(f"before-call.s3.{op}", add_expect_header)


class S3Store:
    def __init__(self, client: Any, bucket: str, prefix: str, options: StoreOptions) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.options = options
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"

    @classmethod
    def from_url(cls, bucket: str, prefix: str, options: StoreOptions) -> S3Store:
        try:
            client = make_client(options)
        except Exception as exc:  # botocore raises many kinds at client creation
            summary, fix = describe(exc, "creating the S3 client")
            raise ConfigError(summary, fix=fix) from None
        return cls(client, bucket, prefix, options)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    # -- preflight -------------------------------------------------------------------------
    def preflight(self, policy: Policy) -> PreflightReport:
        report = PreflightReport(store=self.uri, worm=True)
        try:
            self.client.head_bucket(Bucket=self.bucket)
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
        try:
            versioning = self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")
        except Exception as exc:
            summary, fix = describe(exc, "reading bucket versioning")
            raise PreflightError(summary, fix=fix) from None
        report.add(
            "versioning",
            versioning == "Enabled",
            f"versioning is {versioning or 'off'}; it must be Enabled",
        )
        try:
            lock = self.client.get_object_lock_configuration(Bucket=self.bucket)
            lock_cfg = lock.get("ObjectLockConfiguration", {})
        except Exception as exc:
            if error_code(exc) in {"ObjectLockConfigurationNotFoundError", "404"}:
                lock_cfg = {}
            else:
                summary, fix = describe(exc, "reading the Object Lock configuration")
                if error_code(exc) == "AccessDenied":
                    fix = "grant s3:GetBucketObjectLockConfiguration to the writer role"
                raise PreflightError(summary, fix=fix) from None
        enabled = lock_cfg.get("ObjectLockEnabled") == "Enabled"
        report.add("object-lock", enabled, "Object Lock is not enabled on the bucket")
        default = lock_cfg.get("Rule", {}).get("DefaultRetention", {})
        mode = default.get("Mode")
        days = int(default.get("Days") or 0) or int(default.get("Years") or 0) * 365
        report.add(
            "default-mode",
            policy.mode_ok(mode),
            f"default retention mode is {mode or 'unset'}; policy requires {policy.lock_mode}",
        )
        report.add(
            "default-days",
            days >= policy.retention_days,
            f"default retention is {days} days; policy requires at least {policy.retention_days}",
        )
        return report

    # -- writes ----------------------------------------------------------------------------
    def _lock_args(self, retain_until: dt.datetime, policy: Policy) -> dict[str, Any]:
        return {"ObjectLockMode": policy.lock_mode, "ObjectLockRetainUntilDate": retain_until}

    def put_file(
        self, key: str, path: Path, digests: Digests, retain_until: dt.datetime, policy: Policy
    ) -> StoredObject:
        full = self._key(key)
        try:
            if digests.size > self.options.multipart_threshold:
                version_id = self._put_multipart(full, path, retain_until, policy)
            else:
                with path.open("rb") as body:
                    response = self.client.put_object(
                        Bucket=self.bucket,
                        Key=full,
                        Body=body,
                        ContentLength=digests.size,
                        ContentMD5=_b64(digests.md5),
                        ChecksumSHA256=_b64(digests.sha256),
                        ContentType="text/plain; charset=utf-8",
                        **self._lock_args(retain_until, policy),
                    )
                version_id = response.get("VersionId")
        except UploadError:
            raise
        except Exception as exc:
            summary, fix = describe(exc, f"uploading {full}")
            if error_code(exc) == "AccessDenied":
                fix = "grant the writer role s3:PutObject and s3:PutObjectRetention (a PUT that "
                fix += "carries its own lock needs both) on the bucket's objects"
            raise UploadError(summary, fix=fix) from None
        if not version_id:
            raise UploadError(
                f"uploading {full}: the store returned no version id",
                fix="enable versioning and Object Lock on the bucket",
            )
        return StoredObject(key, str(version_id), digests.sha256, digests.size)

    def _put_multipart(
        self, full: str, path: Path, retain_until: dt.datetime, policy: Policy
    ) -> str:
        upload = self.client.create_multipart_upload(
            Bucket=self.bucket,
            Key=full,
            ChecksumAlgorithm="SHA256",
            ContentType="text/plain; charset=utf-8",
            **self._lock_args(retain_until, policy),
        )
        upload_id = upload["UploadId"]
        parts: list[dict[str, Any]] = []
        try:
            with path.open("rb") as handle:
                number = 1
                while chunk := handle.read(self.options.multipart_chunksize):
                    md5 = hashlib.md5(chunk, usedforsecurity=False).digest()
                    sha = hashlib.sha256(chunk).digest()
                    part = self.client.upload_part(
                        Bucket=self.bucket,
                        Key=full,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                        ContentMD5=base64.b64encode(md5).decode(),
                        ChecksumSHA256=base64.b64encode(sha).decode(),
                    )
                    parts.append(
                        {
                            "PartNumber": number,
                            "ETag": part["ETag"],
                            "ChecksumSHA256": base64.b64encode(sha).decode(),
                        }
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
        if version_id:
            self._ensure_retention(full, version_id, retain_until, policy)
        return version_id

    def _ensure_retention(
        self, full: str, version_id: str, retain_until: dt.datetime, policy: Policy
    ) -> None:
        """Some servers ignore lock headers on multipart uploads: set the lock explicitly."""
        head = self.client.head_object(Bucket=self.bucket, Key=full, VersionId=version_id)
        current = head.get("ObjectLockRetainUntilDate")
        if policy.mode_ok(head.get("ObjectLockMode")) and current and current >= retain_until:
            return  # already at least as strong; COMPLIANCE cannot be shortened anyway
        self.client.put_object_retention(
            Bucket=self.bucket,
            Key=full,
            VersionId=version_id,
            Retention={"Mode": policy.lock_mode, "RetainUntilDate": retain_until},
        )

    def put_create_only(
        self, key: str, data: bytes, retain_until: dt.datetime, policy: Policy
    ) -> StoredObject | None:
        full = self._key(key)
        sha = hashlib.sha256(data).hexdigest()
        try:
            response = self.client.put_object(
                Bucket=self.bucket,
                Key=full,
                Body=data,
                IfNoneMatch="*",
                ContentMD5=base64.b64encode(
                    hashlib.md5(data, usedforsecurity=False).digest()
                ).decode(),
                ChecksumSHA256=_b64(sha),
                ContentType="application/json",
                **self._lock_args(retain_until, policy),
            )
        except Exception as exc:
            if error_code(exc) in _CONFLICT_CODES or http_status(exc) in {409, 412}:
                return None
            summary, fix = describe(exc, f"writing chain record {full}")
            raise UploadError(summary, fix=fix) from None
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
        except Exception as exc:
            if http_status(exc) in {404, 405} or error_code(exc) in {"NoSuchKey", "NoSuchVersion"}:
                return None
            summary, fix = describe(exc, f"reading back {full}")
            if error_code(exc) in {"AccessDenied", "403"} and clock_skew(exc) is None:
                fix = "grant s3:GetObjectVersion and s3:GetObjectRetention to the writer role"
            raise ReadbackError(summary, fix=fix) from None
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

    def _list_versions(self, prefix: str, max_keys: int | None = None) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if max_keys:
            kwargs["MaxKeys"] = max_keys
        while True:
            page = self.client.list_object_versions(**kwargs)
            yield page
            if max_keys or not page.get("IsTruncated"):
                return
            kwargs["KeyMarker"] = page.get("NextKeyMarker")
            kwargs["VersionIdMarker"] = page.get("NextVersionIdMarker")

    def versions(self, key: str) -> list[VersionInfo]:
        full = self._key(key)
        found: list[VersionInfo] = []
        markers: list[VersionInfo] = []
        for page in self._list_versions(full):
            for item in page.get("Versions", []):
                if item["Key"] == full:
                    found.append(
                        VersionInfo(
                            key,
                            str(item["VersionId"]),
                            False,
                            item.get("LastModified"),
                            int(item.get("Size", 0)),
                        )
                    )
            for item in page.get("DeleteMarkers", []):
                if item["Key"] == full:
                    markers.append(
                        VersionInfo(key, str(item["VersionId"]), True, item.get("LastModified"))
                    )
        # S3 lists a key's versions newest first; timestamps can tie within a second.
        found.reverse()
        markers.reverse()
        epoch = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
        merged = found + markers
        merged.sort(key=lambda v: v.last_modified or epoch)  # stable: keeps list order on ties
        return merged

    def slot_taken(self, key: str) -> bool:
        full = self._key(key)
        for page in self._list_versions(full, max_keys=2):
            for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
                if item["Key"] == full:
                    return True
        return False

    def read_version(self, key: str, version_id: str) -> bytes:
        response = self.client.get_object(
            Bucket=self.bucket, Key=self._key(key), VersionId=version_id
        )
        data: bytes = response["Body"].read()
        return data

    def iter_version(self, key: str, version_id: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        response = self.client.get_object(
            Bucket=self.bucket, Key=self._key(key), VersionId=version_id
        )
        body = response["Body"]
        try:
            yield from body.iter_chunks(chunk_size)
        finally:
            body.close()

    def list_keys(self, prefix: str) -> Iterator[str]:
        full = self._key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        seen: set[str] = set()
        for page in self._list_versions(full):
            for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
                key = str(item["Key"])[strip:]
                if key not in seen:
                    seen.add(key)
                    yield key
