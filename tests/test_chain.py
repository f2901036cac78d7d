"""Chain head probing and append protocol, on the file store (no server needed)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest

from tfaudit_ci.chain import Appended, Chain, Link
from tfaudit_ci.record import build_record, chain_key
from tfaudit_ci.signing import NoSigner, sign_record
from tfaudit_ci.stores.base import Policy
from tfaudit_ci.stores.file import FileStore

POLICY = Policy()
UNTIL = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)


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


def _builder(run_folder: str, stream: str) -> Any:
    def build(link: Link) -> dict[str, Any]:
        started = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
        return build_record(
            stream=stream,
            seq=link.seq,
            prev=link.prev,
            burned=link.burned,
            run_folder=run_folder,
            command=["true"],
            cwd="/",
            tool={"name": None, "binary": None, "version": None},
            workspace=None,
            status="succeeded",
            exit_code=0,
            started_at=started,
            finished_at=started,
            ci={"provider": "generic"},
            artifacts=[],
            plan=None,
            redactions={},
            retention={"mode": None, "retain_until": None, "store_worm": False},
        )

    return build


def _append(chain: Chain, run_folder: str) -> Appended:
    return chain.append(
        _builder(run_folder, chain.stream),
        NoSigner(),
        run_folder=run_folder,
        retain_until=UNTIL,
        policy=POLICY,
    )


def test_append_links_each_record_to_the_previous_bytes(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    chain = Chain(store, "team/app")
    for n in range(3):
        appended = _append(chain, f"run-{n}")
        assert appended.slot.seq == n and appended.stored.key == chain_key("team/app", n)
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
    _append(chain, "a")
    calls: list[int] = []
    inner, other = _builder("b", "s"), _builder("other", "s")

    def racing_build(link: Link) -> dict[str, Any]:
        calls.append(link.seq)
        if len(calls) == 1:  # another writer takes the slot between our read and our write
            data = sign_record(other(link), link.prev_record, NoSigner())
            store.put_create_only(chain.key(link.seq), data, UNTIL, POLICY)
        record: dict[str, Any] = inner(link)
        return record

    appended = chain.append(
        racing_build, NoSigner(), run_folder="b", retain_until=UNTIL, policy=POLICY
    )
    assert calls == [1, 2] and appended.slot.seq == 2
    assert appended.burned == []  # the other writer's record is valid: chained onto


class _LostResponseStore(FileStore):
    """The first create-only write lands, but its response is lost: the retry sees 412."""

    lost = False

    def put_create_only(self, key: str, data: bytes, retain_until: Any, policy: Any) -> Any:
        stored = super().put_create_only(key, data, retain_until, policy)
        if not self.lost:
            self.lost = True
            return None
        return stored


def test_ambiguous_write_that_landed_is_not_appended_twice(tmp_path: Path) -> None:
    store = _LostResponseStore(tmp_path)
    chain = Chain(store, "s")
    appended = _append(chain, "same-run")
    assert appended.slot.seq == 0 and store.lost
    assert not store.slot_taken(chain.key(1))
