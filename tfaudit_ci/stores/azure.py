"""Azure Blob Storage store: version-level immutability (or a container-level policy).

Two ways an Azure container can be WORM (``StoreOptions.azure_mode``):

- ``version-immutability`` (default): the container has version-level immutability support
  (``immutable_storage_with_versioning_enabled``), and every blob is written with its own
  ``immutability_policy`` (mode Locked, expiring at retain-until) on the upload itself.
  Read-back sees that policy on the blob version, so the lock is verified per object.
- ``container-policy``: a time-based retention policy on the container. The data plane only
  says *whether* the container has one (``has_immutability_policy``); whether it is locked and
  its period are visible only to the management plane
  (``Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies/read``),
  which this store does not use. Blobs carry no per-blob policy, so ``head`` cannot show a
  lock: ``lock_readback`` is False in this mode, and the lock decision (``locking.py``)
  checks the container in preflight only.

Writes are create-only (``overwrite=False`` = ``If-None-Match: *``) with ``validate_content``.
Without blob versioning (e.g. Azurite) a blob has no version id; its ETag then stands in for
one (``etag:<ETag>``), so a recorded artifact still pins the exact content it was written with.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tfaudit_ci.errors import ConfigError, PreflightError, ReadbackError, TfauditError, UploadError
from tfaudit_ci.stores import StoreOptions
from tfaudit_ci.stores.base import (
    Digests,
    Lock,
    ObjectState,
    Policy,
    PrefixedStore,
    PreflightCheck,
    PreflightReport,
    StoredObject,
    VersionInfo,
    content_type_for,
    import_sdk,
)
from tfaudit_ci.vocab import AzureMode, LockMode, values

AZURE_MODES = values(AzureMode)
ETAG_VERSION_PREFIX = "etag:"
_MGMT_PERMISSION = (
    "Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies/read"
)
_ROLE_FIX = (
    "assign the writer identity 'Storage Blob Data Contributor' on the container, plus "
    "blobs/immutableStorage/runAsSuperUser/action to set per-blob policies (docs/stores.md)"
)


class CredentialFailed(Exception):
    """No credential could be obtained. Not an ``AzureError``, so the SDK's retry policy
    gives up at once instead of asking every credential source again, five times."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _OnceCredential:
    """A token credential that, once it failed, fails again at once with the same error."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._failure: CredentialFailed | None = None

    def _once(self, call: Callable[..., Any], *scopes: str, **kwargs: Any) -> Any:
        if self._failure is not None:
            raise self._failure
        try:
            return call(*scopes, **kwargs)
        except Exception as exc:
            self._failure = CredentialFailed(exc)
            raise self._failure from None

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        return self._once(self._inner.get_token, *scopes, **kwargs)

    def get_token_info(self, *scopes: str, **kwargs: Any) -> Any:
        return self._once(self._inner.get_token_info, *scopes, **kwargs)


def _quiet_sdk_logging() -> None:
    """The SDK logs every credential attempt (dozens of lines) through Python's last-resort
    handler; tfaudit reports one line of its own instead (``-v`` shows tracebacks)."""
    sdk = logging.getLogger("azure")
    if not any(isinstance(h, logging.NullHandler) for h in sdk.handlers):
        sdk.addHandler(logging.NullHandler())
    sdk.propagate = False


def _import_sdk() -> Any:
    return import_sdk("azure.storage.blob", "azblob://", "Azure Storage SDK", "azure")


# -- pure decision logic (tested against recorded API responses) ------------------------------


def container_checks(
    name: str,
    versioning_immutability: bool | None,
    has_immutability_policy: bool | None,
    mode: str,
) -> list[PreflightCheck]:
    """Named preflight checks from Get Container Properties (data plane) values."""
    if mode == AzureMode.CONTAINER_POLICY:
        ok = bool(has_immutability_policy)
        found = (
            f"container {name!r} has an immutability policy"
            if ok
            else f"container {name!r} reports no immutability policy"
        )
        return [
            PreflightCheck(
                "container-immutability-policy",
                ok,
                f"{found}; whether it is locked and its retention period cannot be read from "
                f"the data plane: that needs management-plane read access ({_MGMT_PERMISSION}), "
                "so check it with 'az storage container immutability-policy show' "
                "(or use version-level immutability, which tfaudit verifies per blob)",
            )
        ]
    ok = bool(versioning_immutability)
    return [
        PreflightCheck(
            "version-level-immutability",
            ok,
            f"container {name!r} has version-level immutability support"
            if ok
            else f"container {name!r} does not have version-level immutability support; create "
            "it with version-level immutability enabled (needs blob versioning on the account), "
            "or use --azure-mode container-policy",
        )
    ]


def lock_mode_of(policy_mode: Any) -> str | None:
    """A blob's immutability policy mode -> COMPLIANCE (Locked) / GOVERNANCE (Unlocked)."""
    text = str(getattr(policy_mode, "value", policy_mode) or "").lower()
    if text == "locked":
        return "COMPLIANCE"
    if text == "unlocked":
        return "GOVERNANCE"
    return None  # none, or "mutable": no lock at all


def md5_hex(content_md5: Any) -> str | None:
    return bytes(content_md5).hex() if content_md5 else None


def client_kwargs(options: StoreOptions, backoff_base: float = 1.0) -> dict[str, Any]:
    """SDK client settings: bounded retries, timeouts, and chunk sizes that bound memory."""
    blob_sdk = _import_sdk()
    retry = blob_sdk.ExponentialRetry(
        initial_backoff=backoff_base,
        increment_base=2 if backoff_base > 0 else 0,
        retry_total=max(options.max_attempts - 1, 0),
        random_jitter_range=backoff_base,
    )
    chunk = options.multipart_chunksize
    return {
        "retry_policy": retry,
        "connection_timeout": options.connect_timeout,
        "read_timeout": options.read_timeout,
        # Up to one chunk in memory per request: bigger files go up as MD5-checked blocks.
        "max_single_put_size": chunk,
        "max_block_size": chunk,
        "max_single_get_size": chunk,
        "max_chunk_get_size": chunk,
    }


def _connection_string_account(connection_string: str) -> str | None:
    for part in connection_string.split(";"):
        name, _, value = part.partition("=")
        if name.strip().lower() == "accountname":
            return value.strip()
    return None


# -- errors ------------------------------------------------------------------------------------


def translate(exc: BaseException, action: str, error: type[TfauditError]) -> TfauditError:
    """A one-line error of class ``error`` that says how to fix ``exc``."""
    from azure.core import exceptions as az

    code = str(getattr(exc, "error_code", "") or "")
    status = getattr(exc, "status_code", None)
    first = (str(getattr(exc, "message", "") or exc).strip().splitlines() or [""])[0][:300]
    if isinstance(exc, CredentialFailed):
        exc = exc.cause
    if isinstance(exc, az.ClientAuthenticationError) and status is None:
        return error(
            f"{action}: no usable Azure credentials ({type(exc).__name__})",
            fix="log in first (azure/login with a federated credential, or "
            "AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_FEDERATED_TOKEN_FILE); docs/stores.md",
        )
    if code == "ContainerNotFound":
        return error(
            f"{action}: the container does not exist",
            fix="create it with version-level immutability (docs/stores.md), or fix the "
            "container name in the store URL",
        )
    if status == 403 or code.startswith("Authorization"):
        return error(f"{action}: permission denied ({code or 403})", fix=_ROLE_FIX)
    if status == 401 or isinstance(exc, az.ClientAuthenticationError):
        return error(
            f"{action}: the credentials were rejected ({code or 401})",
            fix="check the identity, tenant and the account name in the store URL",
        )
    if isinstance(exc, az.ServiceRequestError | az.ServiceResponseError):
        return error(
            f"{action}: cannot reach the storage account ({type(exc).__name__}: {first})",
            fix="check the account name, --endpoint-url and the network path",
        )
    if isinstance(status, int) and status >= 500:
        return error(f"{action}: the store kept failing ({status} {code})", fix="retry later")
    return error(f"{action}: {type(exc).__name__}: {code or first}")


# -- the store ---------------------------------------------------------------------------------


class AzureStore(PrefixedStore):
    def __init__(
        self, service_client: Any, container: str, prefix: str, options: StoreOptions
    ) -> None:
        if options.azure_mode not in AZURE_MODES:
            raise ConfigError(
                f"unknown azure-mode {options.azure_mode!r}",
                fix=f"use one of {', '.join(AZURE_MODES)}",
            )
        super().__init__(f"azblob://{service_client.account_name}/{container}", prefix)
        self.service = service_client
        self.container_name = container
        self.container = service_client.get_container_client(container)
        self.options = options
        self.account = str(service_client.account_name)

    @property
    def lock_readback(self) -> bool:  # type: ignore[override]
        """False when blobs carry no per-blob policy (container-policy mode): see module doc."""
        return self.options.azure_mode == AzureMode.VERSION_IMMUTABILITY

    _translate = staticmethod(translate)

    @classmethod
    def from_url(
        cls, account: str, container: str, prefix: str, options: StoreOptions
    ) -> AzureStore:
        blob_sdk = _import_sdk()
        _quiet_sdk_logging()
        kwargs = client_kwargs(options)
        connection_string = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
        try:
            if connection_string:
                named = _connection_string_account(connection_string)
                if named and named != account:
                    raise ConfigError(
                        f"AZURE_STORAGE_CONNECTION_STRING is for account {named!r}, "
                        f"but the store URL names {account!r}",
                        fix="make the store URL and the connection string name the same account",
                    )
                service = blob_sdk.BlobServiceClient.from_connection_string(
                    connection_string, **kwargs
                )
            else:
                from azure.identity import DefaultAzureCredential

                url = options.endpoint_url or f"https://{account}.blob.core.windows.net"
                credential = _OnceCredential(DefaultAzureCredential())
                service = blob_sdk.BlobServiceClient(url, credential=credential, **kwargs)
        except ImportError:
            raise ConfigError(
                "azblob:// stores need azure-identity", fix="pip install 'tfaudit-ci[azure]'"
            ) from None
        except TfauditError:
            raise
        except Exception as exc:
            raise translate(exc, "creating the Azure client", ConfigError) from None
        return cls(service, container, prefix, options)

    def _blob(self, full: str, version_id: str | None = None) -> Any:
        if version_id and not version_id.startswith(ETAG_VERSION_PREFIX):
            return self.container.get_blob_client(full, version_id=version_id)
        return self.container.get_blob_client(full)

    @staticmethod
    def _conditions(version_id: str) -> dict[str, Any]:
        """For an ``etag:`` pseudo-version: only that exact content may answer."""
        if not version_id.startswith(ETAG_VERSION_PREFIX):
            return {}
        from azure.core import MatchConditions

        return {
            "etag": f'"{version_id[len(ETAG_VERSION_PREFIX) :]}"',
            "match_condition": MatchConditions.IfNotModified,
        }

    # -- preflight -----------------------------------------------------------------------------
    def preflight(self, policy: Policy) -> PreflightReport:
        del policy  # the data plane shows no retention period to compare (see module doc)
        with self._translating(f"reading container {self.container_name!r}", PreflightError):
            props = self.container.get_container_properties()
        checks = container_checks(
            self.container_name,
            props.immutable_storage_with_versioning_enabled,
            props.has_immutability_policy,
            self.options.azure_mode,
        )
        return PreflightReport(
            store=self.uri,
            checks=checks,
            lockable=self.options.azure_mode == AzureMode.VERSION_IMMUTABILITY and checks[0].ok,
        )

    # -- writes --------------------------------------------------------------------------------
    def _upload_args(self, full: str, md5: str, lock: Lock | None) -> Any:
        blob_sdk = _import_sdk()
        args: dict[str, Any] = {
            "overwrite": False,  # If-None-Match: *
            "validate_content": True,  # transactional MD5 on every request body
            "max_concurrency": 1,
            "content_settings": blob_sdk.ContentSettings(
                content_type=content_type_for(full),
                # Stored as the blob's MD5; on a single-request upload the service checks it.
                content_md5=bytearray(bytes.fromhex(md5)),
            ),
        }
        if lock is not None and self.options.azure_mode == AzureMode.VERSION_IMMUTABILITY:
            mode = blob_sdk.BlobImmutabilityPolicyMode
            args["immutability_policy"] = blob_sdk.ImmutabilityPolicy(
                expiry_time=lock.retain_until,
                policy_mode=mode.Locked if lock.mode == LockMode.COMPLIANCE else mode.Unlocked,
            )
        return args

    @staticmethod
    def _version_of(response: dict[str, Any]) -> str:
        version_id = response.get("version_id")
        if version_id:
            return str(version_id)
        # Listings give ETags bare, writes and properties quoted: keep one (bare) form.
        return ETAG_VERSION_PREFIX + str(response.get("etag") or "").strip('"')

    def _own_write(self, full: str, md5: str, size: int) -> str | None:
        """After a conflict: the version of the existing blob if it holds exactly our bytes.

        The SDK retries a write whose response was lost; the retry then meets our own blob.
        """
        props = self.container.get_blob_client(full).get_blob_properties()
        if md5_hex(props.content_settings.content_md5) != md5 or int(props.size) != size:
            return None
        return self._version_of({"version_id": props.version_id, "etag": props.etag})

    def put_file(self, key: str, path: Path, digests: Digests, lock: Lock | None) -> StoredObject:
        from azure.core.exceptions import ResourceExistsError

        full = self._key(key)
        try:
            with path.open("rb") as stream:  # read in blocks of max_block_size, never whole
                response = self.container.get_blob_client(full).upload_blob(
                    stream,
                    length=digests.size,
                    **self._upload_args(full, digests.md5, lock),
                )
            version_id = self._version_of(response)
        except ResourceExistsError:
            own = self._safe_own_write(full, digests.md5, digests.size)
            if own is None:
                raise UploadError(
                    f"uploading {full}: a blob with that name already exists",
                    fix="run folders are unique; something else wrote there, investigate",
                ) from None
            version_id = own
        except Exception as exc:
            raise translate(exc, f"uploading {full}", UploadError) from None
        return StoredObject(key, version_id, digests.sha256, digests.size)

    def _safe_own_write(self, full: str, md5: str, size: int) -> str | None:
        with self._translating(f"re-reading {full}", UploadError):
            return self._own_write(full, md5, size)

    def put_create_only(self, key: str, data: bytes, lock: Lock | None) -> StoredObject | None:
        from azure.core.exceptions import ResourceExistsError

        full = self._key(key)
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        try:
            response = self.container.get_blob_client(full).upload_blob(
                data, length=len(data), **self._upload_args(full, md5, lock)
            )
            version_id = self._version_of(response)
        except ResourceExistsError:
            own = self._safe_own_write(full, md5, len(data))
            if own is None:
                return None  # another writer holds the slot
            version_id = own
        except Exception as exc:
            raise translate(exc, f"writing chain record {full}", UploadError) from None
        return StoredObject(key, version_id, hashlib.sha256(data).hexdigest(), len(data))

    # -- reads ---------------------------------------------------------------------------------
    def head(self, key: str, version_id: str) -> ObjectState | None:
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        full = self._key(key)
        try:
            props = self._blob(full, version_id).get_blob_properties(**self._conditions(version_id))
        except (ResourceNotFoundError, ResourceModifiedError):
            return None  # that version is gone, or (etag form) the content changed
        except Exception as exc:
            raise translate(exc, f"reading back {full}", ReadbackError) from None
        policy = props.immutability_policy
        mode = lock_mode_of(policy.policy_mode) if policy else None
        until = policy.expiry_time if policy and mode else None
        return ObjectState(
            key=key,
            version_id=version_id,
            size=int(props.size or 0),
            lock_mode=mode,
            retain_until=until,
            sha256=None,  # Azure keeps MD5 (and CRC64 on some paths) only
            md5=md5_hex(props.content_settings.content_md5),
            etag=str(props.etag).strip('"') if props.etag else None,
        )

    def versions(self, key: str) -> list[VersionInfo]:
        full = self._key(key)
        with self._translating(f"listing versions of {full}", ReadbackError):
            items = [
                item
                for item in self.container.list_blobs(name_starts_with=full, include=["versions"])
                if item.name == full
            ]
        found = [
            VersionInfo(
                key,
                self._version_of({"version_id": item.version_id, "etag": item.etag}),
                False,  # Azure has no delete markers: a deleted blob leaves its old versions
                item.last_modified,
                int(item.size or 0),
            )
            for item in items
        ]
        # Version ids are RFC 3339 timestamps with 7 fractional digits: they sort by time.
        found.sort(key=lambda v: v.version_id)
        return found

    def iter_version(self, key: str, version_id: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        full = self._key(key)
        try:
            downloader = self._blob(full, version_id).download_blob(**self._conditions(version_id))
            chunks = downloader.chunks()
        except (ResourceNotFoundError, ResourceModifiedError):
            raise ReadbackError(f"{self.uri}/{key} has no version {version_id}") from None
        except Exception as exc:
            raise translate(exc, f"reading {full}", ReadbackError) from None
        while True:
            with self._translating(f"reading {full}", ReadbackError):
                chunk = next(chunks, None)
            if chunk is None:
                return
            # The SDK's chunk size is set on the client; re-slice to what the caller asked.
            for start in range(0, len(chunk), chunk_size):
                yield bytes(chunk[start : start + chunk_size])

    def list_keys(self, prefix: str) -> Iterator[str]:
        full = self._key(prefix)
        with self._translating(f"listing {full}", ReadbackError):
            for name in self.container.list_blob_names(name_starts_with=full):
                yield self._relative(str(name))
