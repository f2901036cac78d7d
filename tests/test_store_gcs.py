"""GcsStore against a real fake-gcs-server over HTTP on 127.0.0.1.

What fake-gcs-server 1.54 can and cannot show:
- it stores and returns object ``retention`` and enforces ``ifGenerationMatch=0``: those
  round-trips are tested directly;
- it never returns a bucket ``retentionPolicy`` or ``objectRetention`` and enforces no lock:
  the passing preflight cases use a real HTTP proxy (tests/emulators.EmulatorProxy) that adds the
  fields from recorded real API responses (tests/fixtures/gcs) to the emulator's answers, and
  the pure decision logic is tested on those recorded responses directly;
- it lists only the live generation, so multi-generation ordering is not tested here.
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
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from tests.support.emulators import Emulator, EmulatorProxy
from tfaudit_ci.errors import (
    EXIT_PREFLIGHT,
    EXIT_UPLOAD,
    ConfigError,
    PreflightError,
    UploadError,
)
from tfaudit_ci.stores import StoreOptions, open_store
from tfaudit_ci.stores.base import Digests, Lock, Policy
from tfaudit_ci.stores.gcs import GcsStore, bucket_checks, object_lock, parse_time
from tfaudit_ci.vocab import LockMode

FIXTURES = Path(__file__).parent / "fixtures" / "gcs"
POLICY = Policy(retention_days=365, lock_mode="COMPLIANCE")
RETAIN_UNTIL = dt.datetime(2031, 5, 17, 8, 30, 15, 250000, tzinfo=dt.timezone.utc)
LOCK = Lock(LockMode.COMPLIANCE, RETAIN_UNTIL)


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def make_client(url: str) -> Any:
    return storage.Client(
        project="test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": url},
    )


@pytest.fixture
def client(fake_gcs: Emulator) -> Any:
    return make_client(fake_gcs.url)


def new_bucket(client: Any, object_retention: bool = False) -> str:
    name = f"tfaudit-{uuid.uuid4().hex[:12]}"
    client.create_bucket(name, enable_object_retention=object_retention)
    return name


def store_for(client: Any, bucket: str, mode: str = "object-retention", **options: Any) -> GcsStore:
    opts = StoreOptions(gcs_mode=mode, max_attempts=options.pop("max_attempts", 3), **options)
    return GcsStore(client, bucket, "audit/acme", opts, backoff_base=0)


def write_file(path: Path, size: int) -> Digests:
    # Varied bytes so a misplaced chunk would change the digest.
    block = hashlib.sha256(b"seed").digest() * 2048
    with path.open("wb") as out:
        left = size
        while left:
            piece = block[: min(left, len(block))]
            out.write(piece)
            left -= len(piece)
    data = path.read_bytes()
    return Digests(
        sha256=hashlib.sha256(data).hexdigest(),
        md5=hashlib.md5(data).hexdigest(),
        size=len(data),
    )


def is_upload(method: str, path: str) -> bool:
    return method in {"POST", "PUT"} and path.startswith("/upload/")


# -- round-trips on the emulator ---------------------------------------------------------------


def test_put_file_round_trips_locked_object_retention(client: Any, tmp_path: Path) -> None:
    bucket = new_bucket(client, object_retention=True)
    # A 1 MiB chunk size and a file over the SDK's 8 MiB single-request limit: the resumable,
    # chunked path is the one used for big logs.
    store = store_for(client, bucket, multipart_chunksize=1024 * 1024)
    log = tmp_path / "output.log"
    digests = write_file(log, 9 * 1024 * 1024 + 123)

    stored = store.put_file("runs/r1/output.log", log, digests, LOCK)

    assert stored.version_id.isdigit()
    assert (stored.sha256, stored.size) == (digests.sha256, digests.size)
    state = store.head("runs/r1/output.log", stored.version_id)
    assert state is not None
    assert state.size == digests.size
    assert state.md5 == digests.md5
    assert state.lock_mode == "COMPLIANCE"
    assert state.retain_until == RETAIN_UNTIL
    assert state.etag and state.etag.startswith("crc32c:")
    streamed = hashlib.sha256()
    for chunk in store.iter_version("runs/r1/output.log", stored.version_id, chunk_size=65536):
        assert len(chunk) <= 65536
        streamed.update(chunk)
    assert streamed.hexdigest() == digests.sha256
    raw = client.bucket(bucket).get_blob("audit/acme/runs/r1/output.log")
    assert raw.retention.mode == "Locked"
    assert raw.content_type == "text/plain; charset=utf-8"


def test_governance_policy_writes_unlocked_retention(client: Any) -> None:
    bucket = new_bucket(client, object_retention=True)
    store = store_for(client, bucket)
    governance = Lock(LockMode.GOVERNANCE, RETAIN_UNTIL)
    stored = store.put_create_only("chain/000000000000.json", b"{}", governance)
    assert stored is not None
    state = store.head("chain/000000000000.json", stored.version_id)
    assert state is not None and state.lock_mode == "GOVERNANCE"
    assert not POLICY.mode_ok(state.lock_mode)


def test_put_create_only_is_create_only(client: Any) -> None:
    bucket = new_bucket(client, object_retention=True)
    store = store_for(client, bucket)
    first = store.put_create_only("chain/000000000000.json", b'{"seq":0}', LOCK)
    assert first is not None
    assert first.sha256 == hashlib.sha256(b'{"seq":0}').hexdigest()

    second = store.put_create_only("chain/000000000000.json", b'{"seq":0,"x":1}', LOCK)

    assert second is None
    assert store.read_version("chain/000000000000.json", first.version_id) == b'{"seq":0}'
    versions = store.versions("chain/000000000000.json")
    assert [v.version_id for v in versions] == [first.version_id]
    assert versions[0].size == len(b'{"seq":0}')
    assert store.slot_taken("chain/000000000000.json")
    assert not store.slot_taken("chain/000000000001.json")
    assert store.versions("chain/000000000001.json") == []


def test_head_of_unknown_generation_is_none(client: Any) -> None:
    bucket = new_bucket(client, object_retention=True)
    store = store_for(client, bucket)
    stored = store.put_create_only("chain/000000000000.json", b"{}", LOCK)
    assert stored is not None
    assert store.head("chain/000000000000.json", str(int(stored.version_id) + 1)) is None
    assert store.head("chain/000000000000.json", "not-a-generation") is None
    assert store.head("chain/000000000009.json", stored.version_id) is None


def test_list_keys_is_relative_to_the_prefix(client: Any) -> None:
    bucket = new_bucket(client, object_retention=True)
    store = store_for(client, bucket)
    for seq in range(3):
        store.put_create_only(f"chain/{seq:012d}.json", b"{}", LOCK)
    client.bucket(bucket).blob("elsewhere/chain/x.json").upload_from_string(b"{}")
    assert sorted(store.list_keys("chain/")) == [f"chain/{seq:012d}.json" for seq in range(3)]


def test_open_store_uses_the_emulator_from_the_environment(
    fake_gcs: Emulator, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = new_bucket(client, object_retention=True)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs.url)
    store = open_store(f"gs://{bucket}/audit/acme", StoreOptions(gcs_mode="object-retention"))
    assert isinstance(store, GcsStore)
    assert store.uri == f"gs://{bucket}/audit/acme"
    stored = store.put_create_only("chain/000000000000.json", b"{}", LOCK)
    assert stored is not None
    assert client.bucket(bucket).get_blob("audit/acme/chain/000000000000.json") is not None


# -- preflight ---------------------------------------------------------------------------------


def test_bucket_policy_mode_fails_preflight_on_a_server_without_a_locked_policy(
    client: Any,
) -> None:
    bucket = new_bucket(client)
    report = store_for(client, bucket, mode="bucket-policy").preflight(POLICY)
    assert not report.ok
    failed = {c.name for c in report.checks if not c.ok}
    assert failed == {"retention-policy", "retention-locked", "retention-period"}


def test_object_retention_mode_fails_preflight_when_the_bucket_does_not_report_it(
    client: Any,
) -> None:
    """fake-gcs-server never returns ``objectRetention``: fail closed, as on a real bucket
    created without object retention."""
    bucket = new_bucket(client, object_retention=True)
    report = store_for(client, bucket).preflight(POLICY)
    assert not report.ok
    assert [c.name for c in report.checks if not c.ok] == ["object-retention"]


@pytest.fixture
def proxy(fake_gcs: Emulator) -> Iterator[EmulatorProxy]:
    server = EmulatorProxy(fake_gcs.url)
    yield server
    server.stop()


def bucket_get(bucket: str) -> Any:
    return lambda method, path: method == "GET" and path.split("?")[0] == f"/storage/v1/b/{bucket}"


def test_object_retention_mode_passes_preflight_with_recorded_bucket_response(
    client: Any, proxy: EmulatorProxy
) -> None:
    """Recorded response (fixtures/gcs/bucket_object_retention_enabled.json) merged into the
    emulator's bucket answer by a real proxy; then a full write and read-back through it."""
    bucket = new_bucket(client, object_retention=True)
    recorded = fixture("bucket_object_retention_enabled.json")
    proxy.patch_json(bucket_get(bucket), {"objectRetention": recorded["objectRetention"]})
    store = store_for(make_client(proxy.url), bucket)

    report = store.preflight(POLICY)

    assert report.ok, report.problems()
    stored = store.put_create_only("chain/000000000000.json", b"{}", LOCK)
    assert stored is not None
    state = store.head("chain/000000000000.json", stored.version_id)
    assert state is not None and state.lock_mode == "COMPLIANCE"


def test_bucket_policy_mode_passes_with_recorded_locked_policy(
    client: Any, proxy: EmulatorProxy
) -> None:
    """Recorded locked ``retentionPolicy`` and object ``retentionExpirationTime`` (fixtures/gcs)
    merged into the emulator's answers: preflight passes and head reports the bucket lock."""
    bucket = new_bucket(client)
    locked = fixture("bucket_locked_retention_policy.json")
    obj = fixture("object_under_locked_policy.json")
    proxy.patch_json(bucket_get(bucket), {"retentionPolicy": locked["retentionPolicy"]})
    proxy.patch_json(
        lambda method, path: method == "GET" and f"/storage/v1/b/{bucket}/o/" in path,
        {"retentionExpirationTime": obj["retentionExpirationTime"]},
    )
    store = store_for(make_client(proxy.url), bucket, mode="bucket-policy")

    report = store.preflight(POLICY)
    stored = store.put_create_only("chain/000000000000.json", b"{}", LOCK)
    assert stored is not None
    state = store.head("chain/000000000000.json", stored.version_id)

    assert report.ok, report.problems()
    assert state is not None
    assert state.lock_mode == "COMPLIANCE"
    assert state.retain_until == parse_time(obj["retentionExpirationTime"])
    # The bucket policy is not sent per object: the upload carried no retention.
    assert (
        "retention"
        not in client.bucket(bucket).get_blob("audit/acme/chain/000000000000.json")._properties
    )


def test_preflight_reports_a_longer_policy_than_the_bucket_keeps(
    client: Any, proxy: EmulatorProxy
) -> None:
    bucket = new_bucket(client)
    locked = fixture("bucket_locked_retention_policy.json")
    proxy.patch_json(bucket_get(bucket), {"retentionPolicy": locked["retentionPolicy"]})
    store = store_for(make_client(proxy.url), bucket, mode="bucket-policy")
    report = store.preflight(Policy(retention_days=2555))
    assert not report.ok
    assert [c.name for c in report.checks if not c.ok] == ["retention-period"]
    assert "400 days" in report.problems()[0]


# -- recorded responses: the pure decision logic -----------------------------------------------


def test_decisions_on_recorded_locked_bucket() -> None:
    locked = fixture("bucket_locked_retention_policy.json")
    assert all(c.ok for c in bucket_checks(locked, "bucket-policy", POLICY))
    assert not all(c.ok for c in bucket_checks(locked, "bucket-policy", Policy(401)))
    # The same bucket has no object retention: the other mode must not pass on it.
    assert not all(c.ok for c in bucket_checks(locked, "object-retention", POLICY))


def test_decisions_on_recorded_unlocked_bucket() -> None:
    unlocked = fixture("bucket_unlocked_retention_policy.json")
    checks = {c.name: c.ok for c in bucket_checks(unlocked, "bucket-policy", POLICY)}
    assert checks == {"retention-policy": True, "retention-locked": False, "retention-period": True}
    governance = Policy(retention_days=365, lock_mode="GOVERNANCE")
    assert all(c.ok for c in bucket_checks(unlocked, "bucket-policy", governance))


def test_decisions_on_recorded_object_retention_bucket() -> None:
    enabled = fixture("bucket_object_retention_enabled.json")
    assert all(c.ok for c in bucket_checks(enabled, "object-retention", POLICY))
    assert not all(c.ok for c in bucket_checks(enabled, "bucket-policy", POLICY))


def test_object_lock_from_recorded_objects() -> None:
    locked_bucket = fixture("bucket_locked_retention_policy.json")
    under_policy = object_lock(fixture("object_under_locked_policy.json"), locked_bucket)
    assert under_policy is not None
    assert under_policy.mode == "COMPLIANCE"
    assert under_policy.until == dt.datetime(2026, 4, 8, 10, 22, 51, 402000, tzinfo=dt.timezone.utc)
    # The same object under an unlocked policy can still be released: GOVERNANCE only.
    unlocked_bucket = fixture("bucket_unlocked_retention_policy.json")
    unlocked = object_lock(fixture("object_under_locked_policy.json"), unlocked_bucket)
    assert unlocked is not None and unlocked.mode == "GOVERNANCE"

    retained = object_lock(fixture("object_with_locked_retention.json"), {})
    assert retained is not None
    assert retained.mode == "COMPLIANCE"
    # Nine fractional digits, as the API sends them.
    assert retained.until == dt.datetime(2026, 3, 4, 11, 5, tzinfo=dt.timezone.utc)
    assert object_lock({"name": "x"}, {}) is None


# -- retries and errors ------------------------------------------------------------------------


def test_upload_retries_transient_errors(client: Any, proxy: EmulatorProxy, tmp_path: Path) -> None:
    bucket = new_bucket(client, object_retention=True)
    store = store_for(make_client(proxy.url), bucket, max_attempts=4)
    proxy.fail(2, is_upload)
    proxy.fail(1, is_upload, status=429)
    log = tmp_path / "output.log"
    digests = write_file(log, 5000)

    stored = store.put_file("runs/r/output.log", log, digests, LOCK)

    assert len([r for r in proxy.requests if is_upload(*r)]) == 4
    state = store.head("runs/r/output.log", stored.version_id)
    assert state is not None and state.md5 == digests.md5


def test_upload_gives_up_after_max_attempts(
    client: Any, proxy: EmulatorProxy, tmp_path: Path
) -> None:
    bucket = new_bucket(client, object_retention=True)
    store = store_for(make_client(proxy.url), bucket, max_attempts=3)
    proxy.fail(10, is_upload)
    log = tmp_path / "output.log"
    digests = write_file(log, 100)

    with pytest.raises(UploadError) as caught:
        store.put_file("runs/r/output.log", log, digests, LOCK)

    assert caught.value.exit_code == EXIT_UPLOAD
    assert "kept failing" in caught.value.diagnostics()
    assert len([r for r in proxy.requests if is_upload(*r)]) == 3
    assert "\n" not in caught.value.diagnostics()


def test_create_only_write_whose_response_was_lost_is_recognised(
    client: Any, proxy: EmulatorProxy
) -> None:
    """The first attempt lands but its answer is lost; the retry gets 412 on our own bytes."""
    bucket = new_bucket(client, object_retention=True)
    store = store_for(make_client(proxy.url), bucket)
    proxy.lose(1, is_upload)

    stored = store.put_create_only("chain/000000000000.json", b'{"a":1}', LOCK)

    assert stored is not None
    assert [v.version_id for v in store.versions("chain/000000000000.json")] == [stored.version_id]
    # A different record in the same slot is still a lost race, not our write.
    proxy.lose(1, is_upload)
    assert store.put_create_only("chain/000000000000.json", b'{"a":2}', LOCK) is None


def test_missing_bucket_is_a_one_line_preflight_error(client: Any) -> None:
    store = store_for(client, "tfaudit-no-such-bucket")
    with pytest.raises(PreflightError) as caught:
        store.preflight(POLICY)
    assert caught.value.exit_code == EXIT_PREFLIGHT
    message = caught.value.diagnostics()
    assert "does not exist" in message and "\n" not in message


def test_upload_to_missing_bucket_is_an_upload_error(client: Any) -> None:
    store = store_for(client, "tfaudit-no-such-bucket")
    with pytest.raises(UploadError, match="not found"):
        store.put_create_only("chain/000000000000.json", b"{}", LOCK)


def test_permission_denied_says_which_roles(client: Any, proxy: EmulatorProxy) -> None:
    bucket = new_bucket(client)
    proxy.fail(1, bucket_get(bucket), status=403)
    with pytest.raises(PreflightError) as caught:
        store_for(make_client(proxy.url), bucket).preflight(POLICY)
    assert "permission denied" in caught.value.diagnostics()
    assert "roles/storage.objectCreator" in caught.value.diagnostics()


def test_missing_credentials_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The credentials file named here does not exist: google.auth fails without any network.
    isolate_google_auth(monkeypatch, tmp_path)
    with pytest.raises(ConfigError) as caught:
        GcsStore.from_url("bucket", "prefix", StoreOptions())
    assert "no usable Google credentials" in caught.value.diagnostics()


def isolate_google_auth(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No gcloud config of this machine, no metadata-server probe, no emulator."""
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))


def test_missing_extra_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_google_auth(monkeypatch, tmp_path)
    monkeypatch.setitem(sys.modules, "google.cloud.storage", None)
    with pytest.raises(ConfigError) as caught:
        open_store("gs://bucket/prefix", StoreOptions())
    assert "pip install 'tfaudit-ci[gcs]'" in caught.value.diagnostics()


def test_unknown_mode_is_a_config_error(client: Any) -> None:
    with pytest.raises(ConfigError, match="gcs-mode"):
        GcsStore(client, "b", "", StoreOptions(gcs_mode="bucket-lock"))
