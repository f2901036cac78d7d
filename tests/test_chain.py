"""Chain head probing and append protocol, on the file store (no server needed)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest

from tfaudit_ci.canonical import canonical_bytes
from tfaudit_ci.chain import Chain
from tfaudit_ci.record import chain_key
from tfaudit_ci.stores.base import Lock, Policy
from tfaudit_ci.stores.file import FileStore
from tfaudit_ci.vocab import LockMode

POLICY = Policy()
UNTIL = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
LOCK = Lock(LockMode.COMPLIANCE, UNTIL)


def _seed(root: Path, stream: str, count: int) -> None:
    folder = root / stream / "chain"
    folder.mkdir(parents=True)
    for seq in range(count):
        (folder / f"{seq:012d}.json").write_bytes(b"{}")


@pytest.mark.parametrize("count", [0, 1, 2, 3, 10, 1000, 4097])
def test_find_head_probes_logarithmically(tmp_path: Path, count: int) -> None:
    _seed(tmp_path, "s", count)
    chain = Chain(FileStore(tmp_path), "s")
    assert chain.find_head() == count - 1
    assert chain.probes <= 2 * math.ceil(math.log2(count + 2)) + 2


def test_find_head_from_a_known_slot(tmp_path: Path) -> None:
    _seed(tmp_path, "s", 50)
    chain = Chain(FileStore(tmp_path), "s")
    assert chain.find_head(known_taken=40) == 49


def _builder(run_folder: str) -> Any:
    def build(seq: int, prev: dict[str, Any] | None, prev_record: dict[str, Any] | None) -> bytes:
        del prev_record
        return canonical_bytes({"seq": seq, "prev": prev, "run_folder": run_folder})

    return build


def test_append_links_each_record_to_the_previous_bytes(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    chain = Chain(store, "team/app")
    for n in range(3):
        slot, stored = chain.append(_builder(f"run-{n}"), run_folder=f"run-{n}", lock=LOCK)
        assert slot.seq == n and stored.key == chain_key("team/app", n)
    raw = [(tmp_path / chain_key("team/app", n)).read_bytes() for n in range(3)]
    assert json.loads(raw[0])["prev"] is None
    for n in (1, 2):
        assert json.loads(raw[n])["prev"] == {
            "seq": n - 1,
            "sha256": hashlib.sha256(raw[n - 1]).hexdigest(),
        }
    assert not (tmp_path / chain_key("team/app", 0)).stat().st_mode & 0o222  # read-only


def test_lost_slot_retries_at_next_seq(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    chain = Chain(store, "s")
    chain.append(_builder("a"), run_folder="a", lock=LOCK)
    calls: list[int] = []
    inner = _builder("b")

    def racing_build(seq: int, prev: Any, prev_record: Any) -> bytes:
        calls.append(seq)
        if len(calls) == 1:  # another writer takes the slot between our read and our write
            store.put_create_only(chain.key(seq), b'{"run_folder":"other"}', LOCK)
        data: bytes = inner(seq, prev, prev_record)
        return data

    slot, _ = chain.append(racing_build, run_folder="b", lock=LOCK)
    assert calls == [1, 2] and slot.seq == 2


class _LostResponseStore(FileStore):
    """The first create-only write lands, but its response is lost: the retry sees 412."""

    lost = False

    def put_create_only(self, key: str, data: bytes, lock: Any) -> Any:
        stored = super().put_create_only(key, data, lock)
        if not self.lost:
            self.lost = True
            return None
        return stored


def test_ambiguous_write_that_landed_is_not_appended_twice(tmp_path: Path) -> None:
    store = _LostResponseStore(tmp_path)
    chain = Chain(store, "s")
    slot, _ = chain.append(_builder("same-run"), run_folder="same-run", lock=LOCK)
    assert slot.seq == 0 and store.lost
    assert not store.slot_taken(chain.key(1))
