"""AzureStore against a real Azurite (3.35.0, from npm) over HTTP on 127.0.0.1.

What Azurite can and cannot show:
- create-only writes (``If-None-Match: *``), MD5 validation, reads and listing: tested directly;
- it accepts the ``x-ms-immutability-policy-*`` headers on upload and silently drops them, and
  it has neither blob versioning nor version-level immutability. So a blob written with a lock
  reads back with none: the tests assert the store reports exactly that (the silent
  misconfiguration the product exists to catch; the run turns it into exit 23);
- the passing cases (a container with version-level immutability, a blob whose policy
  persisted) use a real HTTP proxy (tests/emulators.EmulatorProxy) that adds the headers from
  recorded real API responses (tests/fixtures/azure) to Azurite's answers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from tests.support.emulators import (
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    AzuriteEmulator,
    EmulatorProxy,
    free_port,
)
from tfaudit_ci.errors import EXIT_PREFLIGHT, EXIT_UPLOAD, ConfigError, PreflightError, UploadError
from tfaudit_ci.stores import StoreOptions, open_store
from tfaudit_ci.stores.azure import (
    ETAG_VERSION_PREFIX,
    AzureStore,
    client_kwargs,
    container_checks,
    lock_mode_of,
)
from tfaudit_ci.stores.base import Digests, Lock, Policy
from tfaudit_ci.vocab import LockMode

FIXTURES = Path(__file__).parent / "fixtures" / "azure"
POLICY = Policy(retention_days=365, lock_mode="COMPLIANCE")
RETAIN_UNTIL = dt.datetime(2031, 5, 17, 8, 30, 15, tzinfo=dt.timezone.utc)
LOCK = Lock(LockMode.COMPLIANCE, RETAIN_UNTIL)


def recorded_headers(name: str) -> dict[str, str]:
    headers: dict[str, str] = json.loads((FIXTURES / name).read_text())["headers"]
    return headers


def connection_string(blob_endpoint: str) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
        f"AccountKey={AZURITE_KEY};BlobEndpoint={blob_endpoint};"
    )


def make_service(blob_endpoint: str, options: StoreOptions) -> Any:
    # The same client settings as from_url, with no backoff sleeps.
    return BlobServiceClient.from_connection_string(
        connection_string(blob_endpoint), **client_kwargs(options, backoff_base=0)
    )


def options_for(mode: str = "version-immutability", **overrides: Any) -> StoreOptions:
    overrides.setdefault("max_attempts", 3)
    return StoreOptions(azure_mode=mode, **overrides)


@pytest.fixture
def service(azurite: AzuriteEmulator) -> Any:
    return make_service(azurite.blob_endpoint, options_for())


def new_container(service: Any) -> str:
    name = f"tfaudit-{uuid.uuid4().hex[:12]}"
    service.create_container(name)
    return name


def store_for(
    blob_endpoint: str, container: str, mode: str = "version-immutability", **overrides: Any
) -> AzureStore:
    options = options_for(mode, **overrides)
    return AzureStore(make_service(blob_endpoint, options), container, "audit/acme", options)


def write_file(path: Path, size: int) -> Digests:
    block = hashlib.sha256(b"seed").digest() * 2048
    with path.open("wb") as out:
        left = size
        while left:
            piece = block[: min(left, len(block))]
            out.write(piece)
            left -= len(piece)
    data = path.read_bytes()
    return Digests(hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest(), len(data))


def is_blob_put(method: str, path: str) -> bool:
    return method == "PUT" and "restype=container" not in path


def container_get(container: str) -> Any:
    return lambda method, path: (
        method == "GET"
        and f"/{container}?" in path
        and "restype=container" in path
        and "comp=" not in path
    )


# -- round-trips on Azurite --------------------------------------------------------------------


def test_upload_round_trip_and_the_lock_that_did_not_stick(
    azurite: AzuriteEmulator, service: Any, tmp_path: Path
) -> None:
    container = new_container(service)
    # 1 MiB blocks and a 3.5 MiB file: the block path used for big logs.
    store = store_for(azurite.blob_endpoint, container, multipart_chunksize=1024 * 1024)
    log = tmp_path / "output.log"
    digests = write_file(log, 3 * 1024 * 1024 + 512 * 1024)

    stored = store.put_file("runs/r1/output.log", log, digests, LOCK)

    # Azurite has no versioning: the ETag pins the content instead.
    assert stored.version_id.startswith(ETAG_VERSION_PREFIX)
    state = store.head("runs/r1/output.log", stored.version_id)
    assert state is not None
    assert (state.size, state.md5) == (digests.size, digests.md5)
    # The immutability policy was sent with the upload and Azurite dropped it: the store
    # reports no lock at all, so the read-back cannot confirm retention.
    assert state.lock_mode is None and state.retain_until is None
    assert not POLICY.mode_ok(state.lock_mode)
    assert store.lock_readback
    streamed = hashlib.sha256()
    for chunk in store.iter_version("runs/r1/output.log", stored.version_id, chunk_size=65536):
        assert len(chunk) <= 65536
        streamed.update(chunk)
    assert streamed.hexdigest() == digests.sha256
    props = service.get_blob_client(
        container, "audit/acme/runs/r1/output.log"
    ).get_blob_properties()
    assert props.content_settings.content_type == "text/plain; charset=utf-8"


def test_put_create_only_is_create_only(azurite: AzuriteEmulator, service: Any) -> None:
    container = new_container(service)
    store = store_for(azurite.blob_endpoint, container)
    first = store.put_create_only("chain/000000000000.json", b'{"seq":0}', LOCK)
    assert first is not None
    assert first.sha256 == hashlib.sha256(b'{"seq":0}').hexdigest()

    second = store.put_create_only("chain/000000000000.json", b'{"seq":0,"x":1}', LOCK)

    assert second is None
    assert store.read_version("chain/000000000000.json", first.version_id) == b'{"seq":0}'
    versions = store.versions("chain/000000000000.json")
    assert [v.version_id for v in versions] == [first.version_id]
    assert versions[0].size == len(b'{"seq":0}') and not versions[0].is_delete_marker
    assert store.slot_taken("chain/000000000000.json")
    assert not store.slot_taken("chain/000000000001.json")


def test_etag_version_pins_the_content(azurite: AzuriteEmulator, service: Any) -> None:
    """Without versioning, an overwritten blob is not the recorded version any more."""
    container = new_container(service)
    store = store_for(azurite.blob_endpoint, container)
    stored = store.put_create_only("chain/000000000000.json", b"{}", LOCK)
    assert stored is not None
    service.get_blob_client(container, "audit/acme/chain/000000000000.json").upload_blob(
        b'{"forged":true}', overwrite=True
    )
    assert store.head("chain/000000000000.json", stored.version_id) is None
    with pytest.raises(Exception, match="has no version"):
        store.read_version("chain/000000000000.json", stored.version_id)
    assert store.head("chain/000000000009.json", stored.version_id) is None


def test_list_keys_is_relative_to_the_prefix(azurite: AzuriteEmulator, service: Any) -> None:
    container = new_container(service)
    store = store_for(azurite.blob_endpoint, container)
    for seq in range(3):
        store.put_create_only(f"chain/{seq:012d}.json", b"{}", LOCK)
    service.get_blob_client(container, "elsewhere/chain/x.json").upload_blob(b"{}")
    assert sorted(store.list_keys("chain/")) == [f"chain/{seq:012d}.json" for seq in range(3)]


def test_open_store_with_a_connection_string(
    azurite: AzuriteEmulator, service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = new_container(service)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    store = open_store(f"azblob://{AZURITE_ACCOUNT}/{container}/audit/acme", options_for())
    assert isinstance(store, AzureStore)
    assert store.uri == f"azblob://{AZURITE_ACCOUNT}/{container}/audit/acme"
    assert store.put_create_only("chain/000000000000.json", b"{}", LOCK)
    with pytest.raises(ConfigError, match="AZURE_STORAGE_CONNECTION_STRING is for account"):
        open_store(f"azblob://otheraccount/{container}", options_for())


# -- preflight ---------------------------------------------------------------------------------


def test_preflight_fails_on_azurite(azurite: AzuriteEmulator, service: Any) -> None:
    container = new_container(service)
    report = store_for(azurite.blob_endpoint, container).preflight(POLICY)
    assert not report.ok
    assert [c.name for c in report.checks if not c.ok] == ["version-level-immutability"]

    policy_mode = store_for(azurite.blob_endpoint, container, "container-policy")
    report = policy_mode.preflight(POLICY)
    assert not report.ok
    assert "management-plane read access" in report.problems()[0]
    assert not policy_mode.lock_readback


@pytest.fixture
def proxy(azurite: AzuriteEmulator) -> Iterator[EmulatorProxy]:
    server = EmulatorProxy(azurite.url)
    yield server
    server.stop()


def test_preflight_passes_with_recorded_version_level_immutability(
    service: Any, proxy: EmulatorProxy
) -> None:
    """Recorded Get Container Properties headers (fixtures/azure) added by a real proxy."""
    container = new_container(service)
    proxy.patch_headers(
        container_get(container), recorded_headers("container_version_level_immutability.json")
    )
    report = store_for(f"{proxy.url}/{AZURITE_ACCOUNT}", container).preflight(POLICY)
    assert report.ok, report.problems()


def test_container_policy_mode_passes_with_recorded_policy_and_says_what_it_cannot_see(
    service: Any, proxy: EmulatorProxy
) -> None:
    container = new_container(service)
    proxy.patch_headers(
        container_get(container), recorded_headers("container_with_container_policy.json")
    )
    report = store_for(f"{proxy.url}/{AZURITE_ACCOUNT}", container, "container-policy").preflight(
        POLICY
    )
    assert report.ok
    assert "management-plane read access" in report.checks[0].detail


def test_persisted_immutability_policy_reads_back_as_compliance(
    service: Any, proxy: EmulatorProxy
) -> None:
    """Recorded Put Blob / Get Blob Properties headers (fixtures/azure) added by a real proxy:
    the version id is recorded from the write and the Locked policy is read back."""
    container = new_container(service)
    recorded = recorded_headers("blob_locked_immutability_policy.json")
    blob_path = f"/{AZURITE_ACCOUNT}/{container}/audit/acme/chain/000000000000.json"
    proxy.patch_headers(
        lambda method, path: method == "PUT" and path.startswith(blob_path),
        {"x-ms-version-id": recorded["x-ms-version-id"]},
    )
    proxy.patch_headers(
        lambda method, path: method == "HEAD" and path.startswith(blob_path), recorded
    )
    store = store_for(f"{proxy.url}/{AZURITE_ACCOUNT}", container)

    stored = store.put_create_only("chain/000000000000.json", b"{}", LOCK)
    assert stored is not None
    state = store.head("chain/000000000000.json", stored.version_id)

    assert stored.version_id == recorded["x-ms-version-id"]
    assert state is not None
    assert state.lock_mode == "COMPLIANCE"
    assert state.retain_until == dt.datetime(2026, 3, 4, 11, 5, tzinfo=dt.timezone.utc)
    assert ("HEAD", f"{blob_path}?versionid={recorded['x-ms-version-id']}") in [
        (m, p.replace("%3A", ":")) for m, p in proxy.requests
    ]


# -- recorded responses: the pure decision logic -----------------------------------------------


def test_decisions_on_recorded_container_headers() -> None:
    version_level = recorded_headers("container_version_level_immutability.json")
    enabled = version_level["x-ms-immutable-storage-with-versioning-enabled"] == "true"
    has_policy = version_level["x-ms-has-immutability-policy"] == "true"
    assert all(c.ok for c in container_checks("c", enabled, has_policy, "version-immutability"))
    # Version-level immutability is not a container policy: that mode must not pass on it.
    assert not all(c.ok for c in container_checks("c", enabled, has_policy, "container-policy"))

    container_policy = recorded_headers("container_with_container_policy.json")
    has_policy = container_policy["x-ms-has-immutability-policy"] == "true"
    assert all(c.ok for c in container_checks("c", None, has_policy, "container-policy"))
    assert not all(c.ok for c in container_checks("c", None, has_policy, "version-immutability"))


def test_lock_modes() -> None:
    recorded = recorded_headers("blob_locked_immutability_policy.json")
    assert lock_mode_of(recorded["x-ms-immutability-policy-mode"]) == "COMPLIANCE"
    assert lock_mode_of("Unlocked") == "GOVERNANCE"
    assert lock_mode_of("Mutable") is None
    assert lock_mode_of(None) is None


# -- retries and errors ------------------------------------------------------------------------


def test_upload_retries_transient_errors(
    service: Any, proxy: EmulatorProxy, tmp_path: Path
) -> None:
    container = new_container(service)
    store = store_for(f"{proxy.url}/{AZURITE_ACCOUNT}", container, max_attempts=4)
    proxy.fail(2, is_blob_put)
    proxy.fail(1, is_blob_put, status=500)
    log = tmp_path / "output.log"
    digests = write_file(log, 5000)

    stored = store.put_file("runs/r/output.log", log, digests, LOCK)

    assert len([r for r in proxy.requests if is_blob_put(*r)]) == 4
    state = store.head("runs/r/output.log", stored.version_id)
    assert state is not None and state.md5 == digests.md5


def test_upload_gives_up_after_max_attempts(
    service: Any, proxy: EmulatorProxy, tmp_path: Path
) -> None:
    container = new_container(service)
    store = store_for(f"{proxy.url}/{AZURITE_ACCOUNT}", container, max_attempts=3)
    proxy.fail(10, is_blob_put)
    log = tmp_path / "output.log"
    digests = write_file(log, 100)

    with pytest.raises(UploadError) as caught:
        store.put_file("runs/r/output.log", log, digests, LOCK)

    assert caught.value.exit_code == EXIT_UPLOAD
    assert "kept failing" in caught.value.diagnostics()
    assert "\n" not in caught.value.diagnostics()
    assert len([r for r in proxy.requests if is_blob_put(*r)]) == 3


def test_create_only_write_whose_response_was_lost_is_recognised(
    service: Any, proxy: EmulatorProxy
) -> None:
    """The first attempt lands but its answer is lost; the SDK's retry meets our own blob."""
    container = new_container(service)
    store = store_for(f"{proxy.url}/{AZURITE_ACCOUNT}", container)
    proxy.lose(1, is_blob_put)

    stored = store.put_create_only("chain/000000000000.json", b'{"a":1}', LOCK)

    assert stored is not None
    assert [v.version_id for v in store.versions("chain/000000000000.json")] == [stored.version_id]
    proxy.lose(1, is_blob_put)
    assert store.put_create_only("chain/000000000000.json", b'{"a":2}', LOCK) is None


def test_missing_container_is_a_one_line_error(azurite: AzuriteEmulator) -> None:
    store = store_for(azurite.blob_endpoint, "tfaudit-no-such-container")
    with pytest.raises(PreflightError) as caught:
        store.preflight(POLICY)
    assert caught.value.exit_code == EXIT_PREFLIGHT
    assert "does not exist" in caught.value.diagnostics()
    assert "\n" not in caught.value.diagnostics()
    with pytest.raises(UploadError, match="does not exist"):
        store.put_create_only("chain/000000000000.json", b"{}", LOCK)


def test_permission_denied_names_the_role(service: Any, proxy: EmulatorProxy) -> None:
    container = new_container(service)
    proxy.fail(1, container_get(container), status=403)
    with pytest.raises(PreflightError) as caught:
        store_for(f"{proxy.url}/{AZURITE_ACCOUNT}", container).preflight(POLICY)
    assert "permission denied" in caught.value.diagnostics()
    assert "Storage Blob Data Contributor" in caught.value.diagnostics()


def test_missing_credentials_is_a_one_line_preflight_error(
    azurite: AzuriteEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """DefaultAzureCredential with nothing to use. Isolated: only the production chain
    (environment, workload identity, managed identity), and the managed-identity endpoint is a
    closed port on 127.0.0.1, so nothing leaves the machine."""
    closed = free_port()  # nothing listens there
    for name in (
        "AZURE_STORAGE_CONNECTION_STRING",
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_CLIENT_CERTIFICATE_PATH",
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_USERNAME",
        "MSI_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "prod")
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{closed}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "unused")
    monkeypatch.setenv("HOME", str(tmp_path))
    # https: the SDK refuses bearer tokens over plain http before even asking for one.
    options = options_for(endpoint_url=f"https://127.0.0.1:{closed}", max_attempts=1)
    store = AzureStore.from_url("someaccount", "audit", "", options)
    with pytest.raises(PreflightError) as caught:
        store.preflight(POLICY)
    assert "no usable Azure credentials" in caught.value.diagnostics()
    assert "\n" not in caught.value.diagnostics()


def test_missing_extra_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "azure.storage.blob", None)
    with pytest.raises(ConfigError) as caught:
        open_store("azblob://account/container/prefix", StoreOptions())
    assert "pip install 'tfaudit-ci[azure]'" in caught.value.diagnostics()


def test_unknown_mode_is_a_config_error(service: Any) -> None:
    with pytest.raises(ConfigError, match="azure-mode"):
        AzureStore(service, "c", "", StoreOptions(azure_mode="legal-hold"))


def _check_without_credentials(tmp_path: Path, max_attempts: int) -> tuple[int, str, int]:
    """`tfaudit check` on Azure with no usable credential: (exit, stderr, token requests seen
    by the managed-identity endpoint, a local socket that never answers)."""
    import socket
    import subprocess

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AZURE_TOKEN_CREDENTIALS": "prod",
        "IDENTITY_ENDPOINT": f"http://127.0.0.1:{listener.getsockname()[1]}/msi/token",
        "IDENTITY_HEADER": "unused",
        "TFAUDIT_MAX_ATTEMPTS": str(max_attempts),
        "TFAUDIT_CONNECT_TIMEOUT": "1",
        "TFAUDIT_READ_TIMEOUT": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfaudit_ci", "check", "--store", "azblob://someaccount/c/p",
         "--endpoint-url", f"https://127.0.0.1:{free_port()}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    asked = 0
    listener.settimeout(0.2)
    while proc.poll() is None:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        asked += 1
        conn.close()  # no answer: the token request fails
    _, stderr = proc.communicate()
    listener.close()
    return proc.returncode, stderr.decode(), asked


def test_missing_credentials_cli_prints_one_line_and_asks_no_more_for_more_retries(
    tmp_path: Path,
) -> None:
    """The SDK logged every credential source it tried, and its retry policy asked them all
    again on every attempt: 66 lines over 37 s before tfaudit's own line. Now: one line, and
    the credential sources are asked the same number of times whatever --max-attempts is."""
    once = _check_without_credentials(tmp_path, max_attempts=1)
    many = _check_without_credentials(tmp_path, max_attempts=4)
    for code, stderr, _ in (once, many):
        assert code == 21, stderr
        assert stderr.count("\n") == 1 and "no usable Azure credentials" in stderr, stderr
    assert once[2] >= 1 and many[2] == once[2], (once[2], many[2])
