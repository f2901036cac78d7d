"""One contract, every store (issue 11): ``file://``, S3 (moto, and Ceph with
``--s3-server both``), GCS (fake-gcs-server) and Azure (Azurite), each over its real protocol.

What the chain and verify rely on: create-only slots, the bytes read back as written, a key's
versions oldest first, keys relative to the store's prefix, "not found" as None rather than an
exception, and the ``lock_readback`` capability each store declares. What the emulators cannot
enforce (retention itself) is tested per store in test_store_*.py and test_worm_e2e.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.servers import S3Server, make_lock_bucket, unique_bucket
from tests.support.emulators import AzuriteEmulator, Emulator
from tests.support.server_pool import s3_server_of, selected_server_kinds
from tfaudit_ci.stores import StoreOptions, open_store
from tfaudit_ci.stores.base import Digests, Lock, Store
from tfaudit_ci.vocab import AzureMode, GcsMode, LockMode

LOCK = Lock(LockMode.COMPLIANCE, dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2))


def _file_store(tmp_path: Path) -> Store:
    return open_store(f"file://{tmp_path}/store/audit", StoreOptions())


def _s3_store(server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Store:
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    bucket = unique_bucket()
    make_lock_bucket(server.client(), bucket)
    options = StoreOptions(endpoint_url=server.endpoint, multipart_threshold=5 * 1024 * 1024,
                           multipart_chunksize=5 * 1024 * 1024)  # fmt: skip
    return open_store(f"s3://{bucket}/audit", options)


def _gcs_store(server: Emulator, monkeypatch: pytest.MonkeyPatch) -> Store:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
    bucket = f"tfaudit-{uuid.uuid4().hex[:12]}"
    client = storage.Client(
        project="test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": server.url},
    )
    client.create_bucket(bucket, enable_object_retention=True)
    return open_store(f"gs://{bucket}/audit", StoreOptions(gcs_mode=GcsMode.OBJECT_RETENTION))


def _azure_store(server: AzuriteEmulator, monkeypatch: pytest.MonkeyPatch) -> Store:
    from azure.storage.blob import BlobServiceClient

    container = f"tfaudit-{uuid.uuid4().hex[:12]}"
    BlobServiceClient.from_connection_string(server.connection_string).create_container(container)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", server.connection_string)
    account = server.connection_string.split("AccountName=")[1].split(";")[0]
    options = StoreOptions(azure_mode=AzureMode.VERSION_IMMUTABILITY, max_attempts=2)
    return open_store(f"azblob://{account}/{container}/audit", options)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_kind" in metafunc.fixturenames:
        s3 = [f"s3-{kind}" for kind in selected_server_kinds(metafunc.config)]
        metafunc.parametrize("store_kind", ["file", *s3, "gcs", "azure"])


@pytest.fixture
def store(
    store_kind: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Store]:
    kind = store_kind
    if kind == "file":
        yield _file_store(tmp_path)
    elif kind.startswith("s3-"):
        # The session's S3 server(s): moto, and Ceph under --s3-server both.
        server = s3_server_of(request.getfixturevalue("_server_pool"), kind.removeprefix("s3-"))
        yield _s3_store(server, monkeypatch)
    elif kind == "gcs":
        yield _gcs_store(request.getfixturevalue("fake_gcs"), monkeypatch)
    else:
        yield _azure_store(request.getfixturevalue("azurite"), monkeypatch)


def _digests(data: bytes) -> Digests:
    return Digests(
        hashlib.sha256(data).hexdigest(),
        hashlib.md5(data, usedforsecurity=False).hexdigest(),
        len(data),
    )


def test_create_only_slot(store: Store) -> None:
    key = "acme/chain/000000000000.json"
    assert not store.slot_taken(key)
    first = store.put_create_only(key, b'{"seq":0}', LOCK)
    assert first is not None and first.key == key and first.size == 9
    assert store.put_create_only(key, b'{"seq":0,"forged":1}', LOCK) is None
    assert store.slot_taken(key)
    versions = [v for v in store.versions(key) if not v.is_delete_marker]
    assert versions[0].version_id == first.version_id  # the oldest version wins
    assert store.read_version(key, first.version_id) == b'{"seq":0}'


def test_file_round_trip_head_and_stream(store: Store, tmp_path: Path) -> None:
    data = hashlib.sha256(b"seed").digest() * (200 * 1024 + 7)  # ~6.4 MB: multipart on S3
    path = tmp_path / "output.log"
    path.write_bytes(data)
    digests = _digests(data)
    stored = store.put_file("acme/runs/r1/output.log", path, digests, LOCK)
    state = store.head(stored.key, stored.version_id)
    assert state is not None and state.size == len(data)
    assert state.sha256 in (None, digests.sha256)
    assert state.sha256 is not None or state.md5 is not None
    chunks = list(store.iter_version(stored.key, stored.version_id, chunk_size=1 << 20))
    assert b"".join(chunks) == data and max(len(c) for c in chunks) <= 1 << 20


def test_missing_versions_are_none_not_errors(store: Store) -> None:
    stored = store.put_create_only("acme/chain/000000000000.json", b"{}", LOCK)
    assert stored is not None
    assert store.head("acme/chain/000000000001.json", stored.version_id) is None
    assert store.versions("acme/chain/000000000001.json") == []


def test_keys_and_versions_are_relative_to_the_prefix(store: Store) -> None:
    for seq in range(3):
        store.put_create_only(f"acme/chain/{seq:012d}.json", b"{}", LOCK)
    store.put_create_only("other/chain/000000000000.json", b"{}", LOCK)
    assert sorted(store.list_keys("acme/")) == [f"acme/chain/{s:012d}.json" for s in range(3)]
    listed = list(store.list_versions("acme/chain/"))
    assert [v.key for v in listed] == [f"acme/chain/{s:012d}.json" for s in range(3)]
    assert all(not v.is_delete_marker for v in listed)


def test_capabilities_are_declared(store: Store, store_kind: str) -> None:
    # Only a local directory cannot show an object's lock (Azure's container-policy mode
    # cannot either: see test_run_clouds.py).
    assert store.lock_readback is (store_kind != "file")
