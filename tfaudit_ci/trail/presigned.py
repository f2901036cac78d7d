"""Bulk reads from S3 with less client work: botocore presigns each GET (addressing, region,
credentials and signature exactly as the SDK does them), and botocore's own HTTP session sends
it, skipping the SDK's per-request pipeline (events, parsing), which costs more CPU than the
request itself when thousands of records are read.

Anything but a plain 200 or 404 (throttling, a server error, a timeout) falls back to the
regular reader, which has the SDK's retries: this path only ever makes reading cheaper.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from typing import Any

from tfaudit_ci.stores.base import ObjectState
from tfaudit_ci.verify.model import Fetched
from tfaudit_ci.verify.reader import KEEP_LIMIT, Reader

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

    def list_versions(self, prefix: str) -> Any:
        return self.fallback.list_versions(prefix)

    def fetch(self, key: str, version_id: str, *, keep: bool) -> Fetched:
        from botocore.awsrequest import AWSRequest

        full = f"{self.prefix}/{key}" if self.prefix else key
        try:
            url = self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": full, "VersionId": version_id},
                ExpiresIn=PRESIGN_SECONDS,
            )
            response = self.session.send(AWSRequest(method="GET", url=url).prepare())
        except Exception:
            return self.fallback.fetch(key, version_id, keep=keep)
        if response.status_code == 404:
            return Fetched(key, version_id, None)
        if response.status_code != 200:
            return self.fallback.fetch(key, version_id, keep=keep)
        data = response.content
        headers = response.headers
        state = ObjectState(
            key=key,
            version_id=version_id,
            size=len(data),
            lock_mode=headers.get("x-amz-object-lock-mode"),
            retain_until=_moment(headers.get("x-amz-object-lock-retain-until-date")),
        )
        kept = data if keep and len(data) <= KEEP_LIMIT else None
        return Fetched(key, version_id, state, hashlib.sha256(data).hexdigest(), len(data), kept)


def _moment(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
