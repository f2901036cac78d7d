"""An in-process moto S3 server for the scale benchmarks, with direct seeding and request counts.

Why not the usual ``devkit.servers.start_moto`` process: stock moto answers every
ListObjectVersions by deep-copying and sorting *all* versions in the bucket, so each of the
chain's slot probes costs O(bucket size) on the server (seconds at 100,000 objects), and
seeding 100,000 objects over HTTP takes minutes. Real S3 and Ceph RGW index keys. So here:

* the moto S3 app runs in a thread of the benchmark process (a real HTTP server on 127.0.0.1,
  which ``tfaudit`` reaches from its own process like any S3 endpoint);
* a bucket's key store keeps a sorted index and hands ListObjectVersions only the keys of
  the requested prefix and page (same answers; O(log n + page) per page instead of
  O(bucket)) — see :func:`index_bucket`;
* seeding calls moto's own ``S3Backend.put_object`` (what the HTTP handler calls), so records
  land in the server's store without HTTP; :func:`seed_object` says exactly what is stored;
* a WSGI middleware counts every request, by operation and by whether it touched the chain.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import itertools
import logging
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.s3.models import S3Backend, s3_backends
from moto.s3.utils import _VersionedKeyStore
from werkzeug.serving import BaseWSGIServer, make_server

from devkit.servers import REGION
from tfaudit_ci.record import HEAD_HINT_NAME

_scope = threading.local()
_patch_lock = threading.Lock()
_patched = False

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _PrefixScopedKeys(_VersionedKeyStore):
    """moto's key store plus a sorted key index; inside ListObjectVersions it hands out only
    the keys under the requested prefix, found by bisection instead of a full scan."""

    def __init__(self) -> None:
        super().__init__()
        self._order: list[str] = []

    def _remember(self, key: str) -> None:
        if not dict.__contains__(self, key):
            bisect.insort(self._order, key)

    def __setitem__(self, key: str, value: Any) -> Any:
        self._remember(key)
        return super().__setitem__(key, value)

    def setlist(self, key: Any, list_: Any) -> Any:
        self._remember(key)
        return super().setlist(key, list_)

    def pop(self, key: str) -> None:  # type: ignore[override]
        super().pop(key)
        index = bisect.bisect_left(self._order, key)
        if index < len(self._order) and self._order[index] == key:
            del self._order[index]

    def _self_iterable(self) -> dict[str, Any]:
        window: _Window | None = getattr(_scope, "window", None)
        if window is None:
            return dict(self)
        found: dict[str, Any] = {}
        start = bisect.bisect_left(self._order, max(window.prefix, window.marker))
        for key in itertools.islice(self._order, start, None):
            if not key.startswith(window.prefix) or len(found) >= window.limit:
                break
            if dict.__contains__(self, key):
                found[key] = dict.__getitem__(self, key)
        return found


@dataclass(frozen=True)
class _Window:
    """The keys one ListObjectVersions page can need: under ``prefix``, from ``marker`` on,
    at most ``limit`` names (every key has at least one version)."""

    prefix: str
    marker: str
    limit: int


def _install_prefix_scope() -> None:
    global _patched
    with _patch_lock:
        if _patched:
            return
        original = S3Backend.list_object_versions

        def scoped(self: S3Backend, bucket_name: str, **kwargs: Any) -> Any:
            # moto deep-copies and sorts every version it is handed, on every page: hand it
            # only this page's window. With a delimiter, names fold into prefixes: no limit.
            max_keys = kwargs.get("max_keys") or 1000
            # The marker's own key (skipped up to its version), a page, and one more name to
            # tell whether the listing is truncated.
            limit = max_keys + 2 if kwargs.get("delimiter") is None else sys.maxsize
            _scope.window = _Window(
                kwargs.get("prefix") or "", kwargs.get("key_marker") or "", limit
            )
            try:
                return original(self, bucket_name, **kwargs)
            finally:
                _scope.window = None

        S3Backend.list_object_versions = scoped  # type: ignore[method-assign,assignment]
        _patched = True


def classify(method: str, path: str, query: str) -> tuple[str, bool]:
    """(operation, touches the chain) for one S3 request."""
    params = parse_qs(query, keep_blank_values=True)
    target = unquote(path) + " " + " ".join(v for vs in params.values() for v in vs)
    on_chain = "/chain/" in target or f"/{HEAD_HINT_NAME}" in target  # the head hint too
    if "versions" in params:
        op = "ListObjectVersions"
    elif method == "HEAD":
        op = "HeadObject" if path.strip("/").count("/") else "HeadBucket"
    elif method == "PUT" and "retention" in params:
        op = "PutObjectRetention"
    elif method == "PUT" and ("uploadId" in params or "partNumber" in params):
        op = "UploadPart"
    elif method == "PUT":
        op = "PutObject" if path.strip("/").count("/") else "PutBucket"
    elif method == "POST":
        op = "MultipartUpload"
    elif method == "GET" and path.strip("/").count("/"):
        op = "GetObject"
    else:
        op = f"{method} bucket ({','.join(sorted(params)) or 'list'})"
    return op, on_chain


@dataclass
class RequestLog:
    counts: Counter[str] = field(default_factory=Counter)
    chain: int = 0
    total: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, op: str, on_chain: bool) -> None:
        with self._lock:
            self.counts[op] += 1
            self.total += 1
            self.chain += on_chain

    def snapshot(self) -> tuple[int, int, Counter[str]]:
        with self._lock:
            return self.total, self.chain, Counter(self.counts)


class _Counting:
    def __init__(self, app: WsgiApp, log: RequestLog) -> None:
        self.app = app
        self.log = log

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        op, on_chain = classify(
            environ.get("REQUEST_METHOD", ""),
            environ.get("PATH_INFO", ""),
            environ.get("QUERY_STRING", ""),
        )
        self.log.add(op, on_chain)
        return self.app(environ, start_response)


class FastMoto:
    """moto's S3 over HTTP on 127.0.0.1, in a thread of this process."""

    def __init__(self) -> None:
        _install_prefix_scope()
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request
        self.requests = RequestLog()
        app = _Counting(DomainDispatcherApplication(create_backend_app), self.requests)
        self._server: BaseWSGIServer = make_server(
            "127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler
        )
        self.port = int(self._server.server_address[1])
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name=REGION,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def backend() -> S3Backend:
    found: S3Backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    return found


def index_bucket(bucket: str) -> None:
    """Give a fresh (still empty) bucket the prefix-scoped key store."""
    fake = backend().get_bucket(bucket)
    if len(fake.keys):
        raise ValueError(f"bucket {bucket} is not empty")
    fake.keys = _PrefixScopedKeys()


@dataclass(frozen=True)
class Seeded:
    key: str
    version_id: str
    sha256: str
    size: int


def seed_object(bucket: str, key: str, data: bytes, *, retain_until: str) -> Seeded:
    """Store a version exactly as a PutObject with ``ObjectLockMode=COMPLIANCE``,
    ``ObjectLockRetainUntilDate`` and ``ChecksumSHA256`` would (moto's own put_object)."""
    sha = hashlib.sha256(data).digest()
    stored = backend().put_object(
        bucket,
        key,
        data,
        lock_mode="COMPLIANCE",
        lock_until=retain_until,
        checksum_value=base64.b64encode(sha).decode("ascii"),
        disable_notification=True,
    )
    stored.checksum_algorithm = "SHA256"
    return Seeded(key, str(stored.version_id), sha.hex(), len(data))
