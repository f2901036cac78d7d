"""Bulk reads from S3 with less client work: botocore presigns each GET (addressing, region,
credentials and signature exactly as the SDK does them), and botocore's own HTTP session sends
it, skipping the SDK's per-request pipeline (events, parsing), which costs more CPU than the
request itself when thousands of records are read.

Anything but a plain 200 or 404 (throttling, a server error, a timeout) falls back to the
regular reader, which has the SDK's retries: this path only ever makes reading cheaper. Bodies
are streamed and hashed as they come (``digest_chunks``): only ``keep`` bytes are ever held.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from typing import Any

from tfaudit_ci.stores.base import ObjectState, VersionInfo
from tfaudit_ci.verify.model import Fetched
from tfaudit_ci.verify.reader import CHUNK, Reader, digest_chunks

PRESIGN_SECONDS = 900


class PresignedReader:
    """``Reader.fetch`` for S3 through presigned GETs; ``list_versions`` is the fallback's."""

    def __init__(self, store: Any, fallback: Reader, parallelism: int) -> None:
        from botocore.httpsession import URLLib3Session
        from botocore.utils import get_environ_proxies

        self.fallback = fallback
        self.client = store.client
        self.bucket: str = store.bucket
        self.prefix: str = store.prefix
        config = self.client.meta.config
        endpoint = self.client.meta.endpoint_url
        # botocore's own stubs say bool and int; its code takes a CA path and a
        # (connect, read) pair, as its endpoint passes them.
        verify: Any = os.environ.get("AWS_CA_BUNDLE") or True
        timeout: Any = (config.connect_timeout, config.read_timeout)
        self.session = URLLib3Session(
            verify=verify,
            proxies=config.proxies or get_environ_proxies(endpoint),
            timeout=timeout,
            max_pool_connections=max(10, parallelism + 2),
        )

    def list_versions(self, prefix: str) -> Iterator[VersionInfo]:
        return self.fallback.list_versions(prefix)

    def unsafe_entries(self, prefix: str) -> list[tuple[str, str]]:
        return self.fallback.unsafe_entries(prefix)

    def fetch(self, key: str, version_id: str, *, keep: int) -> Fetched:
        from botocore.awsrequest import AWSRequest

        full = f"{self.prefix}/{key}" if self.prefix else key
        try:
            url = self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": full, "VersionId": version_id},
                ExpiresIn=PRESIGN_SECONDS,
            )
            request = AWSRequest(method="GET", url=url, stream_output=True)
            response = self.session.send(request.prepare())
        except Exception:
            return self.fallback.fetch(key, version_id, keep=keep)
        body = response.raw
        try:
            if response.status_code != 200:
                body.drain_conn()
                if response.status_code == 404:
                    return Fetched(key, version_id, None)
                return self.fallback.fetch(key, version_id, keep=keep)
            sha, size, data = digest_chunks(body.stream(CHUNK), keep)
        except Exception:
            body.close()
            return self.fallback.fetch(key, version_id, keep=keep)
        finally:
            body.release_conn()
        headers = response.headers
        state = ObjectState(
            key=key,
            version_id=version_id,
            size=size,
            lock_mode=headers.get("x-amz-object-lock-mode"),
            retain_until=_moment(headers.get("x-amz-object-lock-retain-until-date")),
        )
        return Fetched(key, version_id, state, sha, size, data)


def _moment(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
