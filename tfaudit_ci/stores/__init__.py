"""Store URLs -> backends. Backends are imported lazily: boto3 and the cloud SDKs are heavy."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlparse

from tfaudit_ci.errors import ConfigError
from tfaudit_ci.stores.base import Store
from tfaudit_ci.vocab import AzureMode, GcsMode


@dataclass(frozen=True)
class StoreOptions:
    endpoint_url: str | None = None
    region: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_attempts: int = 5
    multipart_threshold: int = 64 * 1024 * 1024
    multipart_chunksize: int = 16 * 1024 * 1024
    gcs_mode: GcsMode = GcsMode.BUCKET_POLICY
    azure_mode: AzureMode = AzureMode.VERSION_IMMUTABILITY
    profile: str | None = None  # S3: a named AWS profile (the witness's own credentials)


def _split(path: str) -> tuple[str, str]:
    parts = path.strip("/").split("/", 1)
    return parts[0], (parts[1] if len(parts) > 1 else "")


def open_store(url: str, options: StoreOptions) -> Store:
    parsed = urlparse(url)
    scheme = parsed.scheme
    if scheme == "s3":
        if not parsed.netloc:
            raise ConfigError(f"store URL {url!r} has no bucket", fix="use s3://BUCKET/PREFIX")
        from tfaudit_ci.stores.s3 import S3Store

        return S3Store.from_url(parsed.netloc, parsed.path.strip("/"), options)
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ConfigError(
                f"store URL {url!r} has a host", fix="use file:///ABSOLUTE/PATH (three slashes)"
            )
        from tfaudit_ci.stores.file import FileStore

        return FileStore.from_url(parsed.path, options)
    if scheme == "gs":
        if not parsed.netloc:
            raise ConfigError(f"store URL {url!r} has no bucket", fix="use gs://BUCKET/PREFIX")
        from tfaudit_ci.stores.gcs import GcsStore

        return GcsStore.from_url(parsed.netloc, parsed.path.strip("/"), options)
    if scheme == "azblob":
        container, prefix = _split(parsed.path)
        if not parsed.netloc or not container:
            raise ConfigError(
                f"store URL {url!r} lacks an account or container",
                fix="use azblob://ACCOUNT/CONTAINER/PREFIX",
            )
        from tfaudit_ci.stores.azure import AzureStore

        return AzureStore.from_url(parsed.netloc, container, prefix, options)
    raise ConfigError(
        f"unsupported store URL {url!r}",
        fix="use s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, azblob://ACCOUNT/CONTAINER/PREFIX "
        "or file:///PATH",
    )
