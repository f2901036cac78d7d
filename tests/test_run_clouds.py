"""`tfaudit run` end to end on the GCS and Azure emulators (issue 5).

fake-gcs-server stores and returns object ``retention`` but never reports a bucket's
``objectRetention`` or a locked ``retentionPolicy``; Azurite accepts immutability headers and
silently drops them. Where a passing preflight needs a field the emulator cannot express, a
real proxy adds the recorded field from the public API docs (tests/fixtures/*), and the test
says so. Everything else is the emulator's own answer.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from tests.support.emulators import (
    AZURITE_ACCOUNT,
    AzuriteEmulator,
    Emulator,
    EmulatorProxy,
)
from tests.support.tfaudit_proc import result_json, tfaudit

FIXTURES = Path(__file__).parent / "fixtures"
STREAM = "acme/cloud"
SCRIPT = "print('terraform apply output: 3 added')"


def _gcs_client(url: str) -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": url}
    )


def _base_env(tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path / "home"),
        "TFAUDIT_WORK_DIR": str(tmp_path / "spools"),
        "TFAUDIT_MAX_ATTEMPTS": "2",
    }


def _run(store: str, env: dict[str, str], cwd: Path, *extra: str) -> Any:
    return tfaudit(
        [
            "run",
            "--store",
            store,
            "--stream",
            STREAM,
            "--json",
            *extra,
            "--",
            sys.executable,
            "-c",
            SCRIPT,
        ],
        env=env,
        cwd=cwd,
    )


def test_gcs_object_retention_run_ships_a_locked_chain(fake_gcs: Emulator, tmp_path: Path) -> None:
    """The bucket's ``objectRetention: {mode: Enabled}`` is added by the proxy (recorded
    response, fixtures/gcs/bucket_object_retention_enabled.json); the object retention written
    by tfaudit and read back is the emulator's own."""
    bucket = f"tfaudit-{uuid.uuid4().hex[:12]}"
    _gcs_client(fake_gcs.url).create_bucket(bucket, enable_object_retention=True)
    proxy = EmulatorProxy(fake_gcs.url)
    try:
        recorded = json.loads(
            (FIXTURES / "gcs" / "bucket_object_retention_enabled.json").read_text()
        )
        proxy.patch_json(
            lambda method, path: (
                method == "GET" and path.split("?")[0] == f"/storage/v1/b/{bucket}"
            ),
            {"objectRetention": recorded["objectRetention"]},
        )
        env = {**_base_env(tmp_path), "STORAGE_EMULATOR_HOST": proxy.url}
        store = f"gs://{bucket}/audit"
        for expected_seq in (0, 1):
            proc = _run(store, env, tmp_path, "--gcs-mode", "object-retention")
            assert proc.returncode == 0, proc.stderr.decode()
            assert result_json(proc)["seq"] == expected_seq
    finally:
        proxy.stop()
    verify = tfaudit(
        ["verify", "--store", store, "--stream", STREAM],
        env={**_base_env(tmp_path), "STORAGE_EMULATOR_HOST": fake_gcs.url},
        cwd=tmp_path,
    )
    assert verify.returncode == 0, verify.stdout.decode() + verify.stderr.decode()
    assert b"2/2 records valid" in verify.stdout
    client = _gcs_client(fake_gcs.url)
    blob = client.bucket(bucket).get_blob(f"audit/{STREAM}/chain/000000000001.json")
    record = json.loads(blob.download_as_bytes())
    assert record["prev"]["seq"] == 0
    log = next(a for a in record["artifacts"] if a["name"] == "output.log")
    stored = client.bucket(bucket).get_blob(f"audit/{log['key']}")
    assert stored.retention.mode == "Locked"


def test_gcs_bucket_policy_mode_fails_preflight_on_the_emulator(
    fake_gcs: Emulator, tmp_path: Path
) -> None:
    """fake-gcs-server reports no locked retentionPolicy: exactly what preflight must catch."""
    bucket = f"tfaudit-{uuid.uuid4().hex[:12]}"
    _gcs_client(fake_gcs.url).create_bucket(bucket)
    marker = tmp_path / "ran"
    env = {**_base_env(tmp_path), "STORAGE_EMULATOR_HOST": fake_gcs.url}
    proc = tfaudit(
        [
            "run",
            "--store",
            f"gs://{bucket}/audit",
            "--gcs-mode",
            "bucket-policy",
            "--",
            sys.executable,
            "-c",
            f"open({str(marker)!r}, 'w').close()",
        ],
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 21, proc.stderr.decode()
    assert not marker.exists()


def _new_container(azurite: AzuriteEmulator) -> str:
    from azure.storage.blob import BlobServiceClient

    container = f"tfaudit-{uuid.uuid4().hex[:12]}"
    BlobServiceClient.from_connection_string(azurite.connection_string).create_container(container)
    return container


def _report_version_level_immutability(proxy: EmulatorProxy, container: str) -> None:
    """Add the recorded Get Container Properties headers (fixtures/azure) Azurite lacks."""
    recorded = json.loads(
        (FIXTURES / "azure" / "container_version_level_immutability.json").read_text()
    )["headers"]
    proxy.patch_headers(
        lambda method, path: (
            method == "GET"
            and f"/{container}?" in path
            and "restype=container" in path
            and "comp=" not in path
        ),
        recorded,
    )


def test_azure_lock_that_did_not_stick_fails_readback_with_23(
    azurite: AzuriteEmulator, tmp_path: Path
) -> None:
    """The container's version-level immutability is added by the proxy (recorded headers,
    fixtures/azure/container_version_level_immutability.json) so preflight passes; Azurite
    then drops the blob's immutability policy, and the read-back must refuse to go green."""
    container = _new_container(azurite)
    proxy = EmulatorProxy(azurite.url)
    try:
        _report_version_level_immutability(proxy, container)
        conn = azurite.connection_string.replace(azurite.url, proxy.url)
        env = {**_base_env(tmp_path), "AZURE_STORAGE_CONNECTION_STRING": conn}
        proc = _run(f"azblob://{AZURITE_ACCOUNT}/{container}/audit", env, tmp_path)
    finally:
        proxy.stop()
    assert proc.returncode == 23, proc.stderr.decode()
    result = result_json(proc)
    assert result["command_exit_code"] == 0 and result["audit_ok"] is False
    assert "lock mode is none" in result["error"]
    assert Path(result["log_path"]).read_bytes() == b"terraform apply output: 3 added\n"


def test_azure_preflight_fails_on_plain_azurite(azurite: AzuriteEmulator, tmp_path: Path) -> None:
    container = _new_container(azurite)
    env = {**_base_env(tmp_path), "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string}
    proc = _run(f"azblob://{AZURITE_ACCOUNT}/{container}/audit", env, tmp_path)
    assert proc.returncode == 21, proc.stderr.decode()


def test_azure_chain_and_verify_with_a_persisted_policy(
    azurite: AzuriteEmulator, tmp_path: Path
) -> None:
    """What Azurite cannot express is added by a real proxy: the container's version-level
    immutability (recorded headers, fixtures/azure) and, on every blob HEAD, a Locked
    immutability policy expiring in 400 days (the documented header format of
    fixtures/azure/blob_locked_immutability_policy.json, with a future date). Upload, the
    create-only chain, read-back and `tfaudit verify` (which re-hashes every blob) are real."""
    import email.utils

    container = _new_container(azurite)
    until = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=400)
    locked = {
        "x-ms-immutability-policy-until-date": email.utils.format_datetime(until, usegmt=True),
        "x-ms-immutability-policy-mode": "locked",
    }
    proxy = EmulatorProxy(azurite.url)
    try:
        _report_version_level_immutability(proxy, container)
        proxy.patch_headers(
            lambda method, path: method == "HEAD" and f"/{container}/" in path, locked
        )
        conn = azurite.connection_string.replace(azurite.url, proxy.url)
        env = {**_base_env(tmp_path), "AZURE_STORAGE_CONNECTION_STRING": conn}
        store = f"azblob://{AZURITE_ACCOUNT}/{container}/audit"
        for expected_seq in (0, 1):
            proc = _run(store, env, tmp_path)
            assert proc.returncode == 0, proc.stderr.decode()
            assert result_json(proc)["seq"] == expected_seq
        verify = tfaudit(["verify", "--store", store, "--stream", STREAM], env=env, cwd=tmp_path)
    finally:
        proxy.stop()
    assert verify.returncode == 0, verify.stdout.decode() + verify.stderr.decode()
    assert b"2/2 records valid" in verify.stdout


def test_azure_container_policy_run_recover_and_verify_make_one_decision(
    azurite: AzuriteEmulator, tmp_path: Path
) -> None:
    """A container-level policy cannot be seen per blob from the data plane. `run`, `recover`
    and `verify` decide the same: the container's policy was checked in preflight, each blob's
    lock is not read back, and the record says so. (The container's `has_immutability_policy`
    header is added by the proxy from a recorded response, fixtures/azure; Azurite has none.)"""
    container = _new_container(azurite)
    recorded = json.loads(
        (FIXTURES / "azure" / "container_with_container_policy.json").read_text()
    )["headers"]
    proxy = EmulatorProxy(azurite.url)
    store = f"azblob://{AZURITE_ACCOUNT}/{container}/audit"
    mode = ("--azure-mode", "container-policy")
    try:
        proxy.patch_headers(
            lambda method, path: (
                method == "GET" and f"/{container}?" in path and "restype=container" in path
                and "comp=" not in path
            ),
            recorded,
        )  # fmt: skip
        conn = azurite.connection_string.replace(azurite.url, proxy.url)
        env = {**_base_env(tmp_path), "AZURE_STORAGE_CONNECTION_STRING": conn}
        ran = _run(store, env, tmp_path, *mode)
        assert ran.returncode == 0, ran.stderr.decode()
        # The next run's chain write fails: its spool is kept, and `recover` ships it.
        proxy.fail(10, lambda method, path: method == "PUT" and "/chain/" in path)
        kept = _run(store, env, tmp_path, *mode)
        assert kept.returncode == 22, kept.stderr.decode()
        proxy.clear_faults()
        recovered = tfaudit(["recover"], env=env, cwd=tmp_path)
        assert recovered.returncode == 0, recovered.stderr.decode()
        verify = tfaudit(
            ["verify", "--store", store, "--stream", STREAM, *mode], env=env, cwd=tmp_path
        )
    finally:
        proxy.stop()
    assert verify.returncode == 0, verify.stdout.decode() + verify.stderr.decode()
    assert b"2/2 records valid" in verify.stdout
    from azure.storage.blob import BlobServiceClient

    chain = BlobServiceClient.from_connection_string(azurite.connection_string)
    blob = chain.get_container_client(container).get_blob_client(
        f"audit/{STREAM}/chain/000000000001.json"
    )
    retention = json.loads(blob.download_blob().readall())["retention"]
    assert retention["store_worm"] is True and retention["lock_checked"] is False
    assert "container" in retention["note"]
