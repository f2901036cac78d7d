"""Chain head probing and append protocol, on the file store (no server needed)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest

from tests.support.scenarios import plain_record
from tfaudit_ci.chain import Appended, Chain, Link
from tfaudit_ci.record import chain_key
from tfaudit_ci.signing import NoSigner, sign_record
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


def _builder(run_folder: str, stream: str) -> Any:
    def build(link: Link) -> dict[str, Any]:
        return plain_record(
            stream=stream,
            seq=link.seq,
            prev=link.prev,
            burned=link.burned,
            run_folder=run_folder,
            started=dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc),
        )

    return build


def _append(chain: Chain, run_folder: str) -> Appended:
    return chain.append(
        _builder(run_folder, chain.stream),
        NoSigner(),
        run_folder=run_folder,
        lock=LOCK,
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
            store.put_create_only(chain.key(link.seq), data, LOCK)
        record: dict[str, Any] = inner(link)
        return record

    appended = chain.append(racing_build, NoSigner(), run_folder="b", lock=LOCK)
    assert calls == [1, 2] and appended.slot.seq == 2
    assert appended.burned == []  # the other writer's record is valid: chained onto


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
    appended = _append(chain, "same-run")
    assert appended.slot.seq == 0 and store.lost
    assert not store.slot_taken(chain.key(1))


# -- the two shared rules (slots.py) ----------------------------------------------------------


def test_winner_is_the_oldest_real_version() -> None:
    from tfaudit_ci.slots import winner
    from tfaudit_ci.stores.base import VersionInfo

    marker = VersionInfo("k", "m", True, None)
    first, second = VersionInfo("k", "1", False, None), VersionInfo("k", "2", False, None)
    assert winner([marker, first, second]) is first
    assert winner([marker]) is None and winner([]) is None


@pytest.mark.parametrize(
    ("taken", "head"),
    [(set(), -1), ({0}, 0), (set(range(10)), 9), ({0, 1, 5}, 1), (set(range(1000)) | {5000}, 999)],
)
def test_probe_head_over_any_taken_predicate(taken: set[int], head: int) -> None:
    from tfaudit_ci.slots import probe_head

    assert probe_head(taken.__contains__) == head
    if head >= 0:
        assert probe_head(taken.__contains__, start=head) == head


# -- burned slots, size limits, key changes -----------------------------------------------------


def test_junk_far_above_the_chain_is_burned_via_a_listing(tmp_path: Path) -> None:
    """Junk on every probe point up to seq 1023: the head is 1023, and between the junk
    the slots are free; walking back switches to one listing instead of 1,000 probes."""
    from tfaudit_ci.chain import FREE_RUN_BEFORE_LISTING

    store = FileStore(tmp_path)
    chain = Chain(store, "s")
    for n in range(3):
        _append(chain, f"run-{n}")
    junk = [2**k - 1 for k in range(2, 11)]  # 3, 7, ..., 1023
    for seq in junk:
        store.put_create_only(chain_key("s", seq), b"junk", LOCK)
    fresh = Chain(store, "s")
    appended = _append(fresh, "run-after")
    assert appended.slot.seq == 1024
    assert [entry["seq"] for entry in appended.burned] == junk
    assert json.loads(appended.slot.data or b"")["prev"]["seq"] == 2
    assert fresh.probes < 1024 - FREE_RUN_BEFORE_LISTING  # it did not walk every free slot


def test_a_flooded_stream_fails_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tfaudit_ci import chain as chain_module
    from tfaudit_ci.errors import UploadError

    monkeypatch.setattr(chain_module, "MAX_BURNED", 4)
    store = FileStore(tmp_path)
    chain = Chain(store, "s")
    _append(chain, "run-0")
    for seq in range(1, 7):
        store.put_create_only(chain_key("s", seq), b"junk", LOCK)
    with pytest.raises(UploadError, match="more than 4 slots below seq 6 hold no valid record"):
        _append(Chain(store, "s"), "run-1")


def test_a_new_signing_key_chains_onto_an_unsigned_stream(tmp_path: Path) -> None:
    """No record verifies with the key (it was just configured): the head is chained onto,
    not burned; verify with the key then reports the unsigned records, as it must."""
    from tfaudit_ci.signing import HmacSigner, hmac_key_id

    store = FileStore(tmp_path)
    for n in range(3):
        _append(Chain(store, "s"), f"run-{n}")
    signer = HmacSigner(b"k", hmac_key_id(b"k"))
    appended = Chain(store, "s", signer.verifier()).append(
        _builder("signed", "s"), signer, run_folder="signed", lock=LOCK
    )
    assert appended.slot.seq == 3 and appended.burned == []


def test_a_look_alike_in_the_slot_we_lost_is_not_taken_for_ours(tmp_path: Path) -> None:
    """Someone who saw our run folder (artifacts go first) races junk naming it into our
    slot: it is burned, and our record still lands."""
    store = FileStore(tmp_path)
    chain = Chain(store, "s")
    _append(chain, "a")
    inner = _builder("ours", "s")

    def racing_build(link: Link) -> dict[str, Any]:
        if link.seq == 1:
            store.put_create_only(chain.key(1), b'{"run_folder":"ours"}', LOCK)
        record: dict[str, Any] = inner(link)
        return record

    appended = chain.append(racing_build, NoSigner(), run_folder="ours", lock=LOCK)
    assert appended.slot.seq == 2 and [e["seq"] for e in appended.burned] == [1]


def test_the_writer_trims_a_huge_plan_far_below_the_cap(tmp_path: Path) -> None:
    from tfaudit_ci.record_limits import MAX_RECORD_BYTES, WRITE_LIMIT
    from tfaudit_ci.schemas import record_schema_problems

    store = FileStore(tmp_path)
    chain = Chain(store, "s")
    base = _builder("huge", "s")
    resources = [{"address": f"null_resource.r[{n}]", "actions": ["create"]} for n in range(40000)]

    def build(link: Link) -> dict[str, Any]:
        record: dict[str, Any] = base(link)
        record["plan"] = {"add": 40000, "resources": resources}
        record["command"] = ["terraform", "apply", *(f"-var=x{n}=1" for n in range(5000))]
        record["cwd"] = "/" + "d" * 100_000
        record["identity"] = {"issued_at": 10**30, "expires_at": float("inf")}
        return record

    appended = chain.append(build, NoSigner(), run_folder="huge", lock=LOCK)
    data = appended.slot.data or b""
    assert len(data) <= WRITE_LIMIT < MAX_RECORD_BYTES // 2
    record = json.loads(data)
    plan = record["plan"]
    assert plan["resources_omitted"] == 40000 - len(plan["resources"]) > 0
    assert len(plan["resources"]) > 500  # trimmed to what fits, not emptied
    assert record["cwd"].endswith("more characters omitted)")
    assert record["command"][-1].endswith("more arguments omitted)")
    assert record["identity"] == {"issued_at": str(10**30), "expires_at": None}
    assert record_schema_problems(record) == []
