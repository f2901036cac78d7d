"""The versioned ``file://`` store: create-only slots, later versions, delete markers, imports."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest

from devkit.filestore import TamperableFileStore
from tfaudit_ci.chain import Chain
from tfaudit_ci.errors import ConfigError, UploadError
from tfaudit_ci.stores.base import Digests, Lock, Policy
from tfaudit_ci.stores.file import FileStore
from tfaudit_ci.vocab import LockMode

POLICY = Policy()
UNTIL = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
LOCK = Lock(LockMode.COMPLIANCE, UNTIL)


def _digests(data: bytes) -> Digests:
    return Digests(
        hashlib.sha256(data).hexdigest(), hashlib.md5(data, usedforsecurity=False).hexdigest(), 4
    )


def test_second_version_is_listed_after_the_first_and_readers_pick_the_oldest(
    tmp_path: Path,
) -> None:
    store = TamperableFileStore(tmp_path)
    first = store.put_create_only("s/chain/000000000000.json", b"winner", LOCK)
    assert first is not None and first.version_id == "1"
    assert store.put_create_only("s/chain/000000000000.json", b"again", LOCK) is None
    second = store.put_version("s/chain/000000000000.json", b"loser")
    versions = store.versions("s/chain/000000000000.json")
    assert [v.version_id for v in versions] == ["1", second]
    assert store.read_version("s/chain/000000000000.json", second) == b"loser"
    assert b"".join(store.iter_version("s/chain/000000000000.json", "1")) == b"winner"
    slot = Chain(store, "s").read_slot(0)
    assert slot is not None and slot.data == b"winner"
    # The plain path still holds the first version, for people browsing the directory.
    assert (tmp_path / "s/chain/000000000000.json").read_bytes() == b"winner"


def test_delete_marker_hides_nothing_and_blocks_reuse_of_the_slot(tmp_path: Path) -> None:
    store = TamperableFileStore(tmp_path)
    store.put_create_only("s/chain/000000000000.json", b"r0", LOCK)
    marker = store.put_delete_marker("s/chain/000000000000.json")
    versions = store.versions("s/chain/000000000000.json")
    assert [(v.version_id, v.is_delete_marker) for v in versions] == [("1", False), (marker, True)]
    assert store.head("s/chain/000000000000.json", marker) is None
    assert store.slot_taken("s/chain/000000000000.json")
    only_marker = "s/chain/000000000001.json"
    store.put_delete_marker(only_marker)
    assert store.slot_taken(only_marker)
    assert store.put_create_only(only_marker, b"r1", LOCK) is None
    assert list(store.list_keys("s/chain/")) == [
        "s/chain/000000000000.json",
        "s/chain/000000000001.json",
    ]


def test_put_file_never_overwrites(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    src = tmp_path / "src"
    src.write_bytes(b"data")
    store.put_file("s/runs/f/output.log", src, _digests(b"data"), LOCK)
    again = store.put_file("s/runs/f/output.log", src, _digests(b"data"), LOCK)
    assert again.version_id == "1"
    other = tmp_path / "other"
    other.write_bytes(b"evil")
    with pytest.raises(UploadError):
        store.put_file("s/runs/f/output.log", other, _digests(b"evil"), LOCK)
    assert (tmp_path / "s/runs/f/output.log").read_bytes() == b"data"


def test_import_keeps_foreign_version_ids_and_order(tmp_path: Path) -> None:
    store = TamperableFileStore(tmp_path / "copy")
    when = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
    store.import_version("s/runs/f/plan.json", [b"v", b"1"], version_id="abc.1", last_modified=when)
    store.import_version("s/runs/f/plan.json", [b"v2"], version_id="Zx_2")
    versions = store.versions("s/runs/f/plan.json")
    assert [v.version_id for v in versions] == ["abc.1", "Zx_2"]
    assert versions[0].last_modified == when
    state = store.head("s/runs/f/plan.json", "abc.1")
    assert state is not None and state.sha256 == hashlib.sha256(b"v1").hexdigest()
    assert store.head("s/runs/f/plan.json", "1") is None
    assert [v.key for v in store.list_versions("s/")] == ["s/runs/f/plan.json"] * 2


def test_tampering_in_place_changes_what_is_read(tmp_path: Path) -> None:
    """A directory is not WORM: an attacker can rewrite the file; verify must see new bytes."""
    store = FileStore(tmp_path)
    store.put_create_only("s/chain/000000000000.json", b"honest", LOCK)
    path = tmp_path / "s/chain/000000000000.json"
    path.chmod(0o644)
    path.write_bytes(b"forged")
    assert store.read_version("s/chain/000000000000.json", "1") == b"forged"


def test_reserved_and_escaping_keys_are_refused(tmp_path: Path) -> None:
    store = TamperableFileStore(tmp_path)
    with pytest.raises(ConfigError):
        store.put_version(".versions/x", b"")
    with pytest.raises(ConfigError):
        store.put_version("../outside", b"")
