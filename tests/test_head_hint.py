"""The head hint (issue 17): appenders start at ``{stream}/chain-head.json`` and confirm the
head from the slots; a stale, missing, malformed or forged hint costs probes, never
correctness. On the file store and on S3 over HTTP (moto; Ceph RGW too with ``--s3-server
both``), in Object Lock buckets with a default COMPLIANCE retention, so that every version of
the rewritten hint is itself locked.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devkit.servers import S3Server, make_lock_bucket, unique_bucket
from tests.conftest import s3_server_of, selected_server_kinds
from tests.support.tfaudit_proc import tfaudit
from tests.test_chain import LOCK, _builder
from tfaudit_ci import head_hint
from tfaudit_ci.chain import Appended, Chain, PrefixListing
from tfaudit_ci.record import MAX_SEQ, chain_key, head_hint_key
from tfaudit_ci.signing import NoSigner
from tfaudit_ci.stores import StoreOptions, open_store
from tfaudit_ci.stores.base import Store
from tfaudit_ci.stores.file import FileStore
from tfaudit_ci.stores.s3 import S3Store
from tfaudit_ci.verify.layout import split_listing
from tfaudit_ci.verify.model import VerifyOptions
from tfaudit_ci.verify.walk import verify_stream

STREAM = "team/app"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_kind" in metafunc.fixturenames:
        s3 = [f"s3-{kind}" for kind in selected_server_kinds(metafunc.config)]
        metafunc.parametrize("store_kind", ["file", *s3])


@pytest.fixture
def store(
    store_kind: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Store:
    if store_kind == "file":
        return FileStore(tmp_path / "store")
    server = s3_server_of(request.getfixturevalue("_server_pool"), store_kind.split("-", 1)[1])
    return _s3_store(server, monkeypatch)


def _s3_store(server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Store:
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    bucket = unique_bucket()
    make_lock_bucket(server.client(), bucket)  # default retention: COMPLIANCE, 365 days
    options = StoreOptions(endpoint_url=server.endpoint, region=server.region)
    store = open_store(f"s3://{bucket}/audit", options)
    assert isinstance(store, S3Store)
    return store


def _ship(store: Store, run_folder: str, *, chain: Chain | None = None) -> Appended:
    """What ``ship.py`` does to the chain: append, read the record back, rewrite the hint."""
    chain = chain or Chain(store, STREAM)
    appended = chain.append(
        _builder(run_folder, STREAM), NoSigner(), run_folder=run_folder, lock=LOCK
    )
    state = store.head(appended.stored.key, appended.stored.version_id)
    assert state is not None and state.size == appended.slot.size
    head_hint.write(store, STREAM, appended.slot.seq)
    return appended


def _record(store: Store, seq: int) -> dict[str, Any]:
    key = chain_key(STREAM, seq)
    first = next(v for v in store.versions(key) if not v.is_delete_marker)
    parsed: dict[str, Any] = json.loads(store.read_version(key, first.version_id))
    return parsed


def _assert_unbroken(store: Store, head: int) -> None:
    """Slots 0..head all taken, each record linked to the one just below it."""
    for seq in range(head + 1):
        record = _record(store, seq)
        assert record["seq"] == seq and record["burned"] == []
        assert (record["prev"] or {}).get("seq") == (seq - 1 if seq else None)
    assert not store.slot_taken(chain_key(STREAM, head + 1))


def _put_hint(store: Store, data: bytes) -> None:
    assert isinstance(store, head_hint.HintStore)
    store.put_latest(head_hint_key(STREAM), data)


class _Requests:
    """Every HTTP request the S3 client sends (retries included), by operation."""

    def __init__(self, store: S3Store) -> None:
        self.counts: Counter[str] = Counter()
        store.client.meta.events.register("before-send.s3", self._sent)

    def _sent(self, event_name: str, **_: Any) -> None:
        self.counts[event_name.rsplit(".", 1)[-1]] += 1

    def total(self) -> int:
        return sum(self.counts.values())


# -- the hint's own format --------------------------------------------------------------------


def test_a_hint_round_trips_and_junk_is_no_hint() -> None:
    assert head_hint.decode(head_hint.encode(STREAM, 41), STREAM) == 41
    assert head_hint.decode(head_hint.encode(STREAM, MAX_SEQ), STREAM) == MAX_SEQ
    good = json.loads(head_hint.encode(STREAM, 1))
    for junk in (
        b"",
        b"41",
        b"not json",
        b'{"schema":"tfaudit.head-hint/v1","seq":1,"stream":"team/app","seq":2}',  # duplicate
        json.dumps({**good, "seq": -1}).encode(),
        json.dumps({**good, "seq": MAX_SEQ + 1}).encode(),
        json.dumps({**good, "seq": True}).encode(),
        json.dumps({**good, "seq": "1"}).encode(),
        json.dumps({**good, "seq": 1.0}).encode(),
        json.dumps({**good, "stream": "other"}).encode(),
        json.dumps({**good, "schema": "v0"}).encode(),
        b"[" * 100_000,
        head_hint.encode(STREAM, 1) + b" " * head_hint.MAX_HINT_BYTES,  # over the cap
    ):
        assert head_hint.decode(junk, STREAM) is None, junk[:80]


# -- appending from the hint --------------------------------------------------------------------


def test_each_append_rewrites_the_hint_and_the_next_one_starts_there(store: Store) -> None:
    for n in range(4):
        assert _ship(store, f"run-{n}").slot.seq == n
        assert head_hint.read(store, STREAM) == n
    fresh = Chain(store, STREAM)
    assert _ship(store, "run-4", chain=fresh).slot.seq == 4
    # S3: the block listing answered every probe; the file store asks the hinted slot and
    # the one above it.
    assert fresh.hinted == 3
    assert fresh.probes == (0 if isinstance(store, PrefixListing) else 2)
    _assert_unbroken(store, 4)


def test_a_good_hint_costs_at_most_eight_chain_requests_on_s3(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """hint GET, block listing, the head and its predecessor, the create-only PUT and its
    version check, the read-back, the hint PUT: 8, whatever the length (issue 17); one
    listing more when the head and its neighbours straddle a 100-slot block."""
    store = _s3_store(s3_server, monkeypatch)
    for n in range(3):
        _ship(store, f"run-{n}")
    requests = _Requests(store)
    _ship(store, "run-3")
    assert requests.counts == Counter(
        GetObject=3, ListObjectVersions=2, PutObject=2, HeadObject=1
    ), requests.counts
    # Without a hint, the same append probes from scratch: more requests.
    s3_server.client().delete_object(Bucket=store.bucket, Key=f"audit/{head_hint_key(STREAM)}")
    requests = _Requests(store)
    cold = Chain(store, STREAM)
    assert _ship(store, "run-4", chain=cold).slot.seq == 4
    assert cold.hinted is None and cold.probes > 0 and requests.total() > 8


def test_a_stale_hint_costs_probes_only(store: Store) -> None:
    for n in range(6):
        _ship(store, f"run-{n}")
    head_hint.write(store, STREAM, 1)  # a crashed appender, or one that lost a race
    chain = Chain(store, STREAM)
    assert _ship(store, "late", chain=chain).slot.seq == 6
    assert chain.hinted == 1
    _assert_unbroken(store, 6)
    assert head_hint.read(store, STREAM) == 6


def test_a_stale_hint_across_blocks_still_finds_the_head(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    for n in range(130):
        _ship(store, f"run-{n}")
    head_hint.write(store, STREAM, 3)
    chain = Chain(store, STREAM)
    assert _ship(store, "late", chain=chain).slot.seq == 130
    assert chain.probes <= 16  # upwards from seq 3, not a walk over 127 slots


@pytest.mark.parametrize("forged", [MAX_SEQ, MAX_SEQ - 1, 500, 7])
def test_a_hint_far_ahead_neither_skips_nor_burns_slots(store: Store, forged: int) -> None:
    for n in range(3):
        _ship(store, f"run-{n}")
    head_hint.write(store, STREAM, forged)
    chain = Chain(store, STREAM)
    assert _ship(store, "after", chain=chain).slot.seq == 3
    assert chain.hinted == forged
    _assert_unbroken(store, 3)


@pytest.mark.parametrize("junk_at", [[MAX_SEQ], [MAX_SEQ - 1, MAX_SEQ], [500, 501, 502]])
def test_a_hint_onto_junk_above_a_free_slot_is_not_followed(
    store: Store, junk_at: list[int]
) -> None:
    """An attacker writes junk far above the chain and points the hint at it: the walk down
    from there meets a free slot, so the appender probes from scratch and appends at the real
    head + 1 (verify reports the junk as after-head)."""
    for n in range(3):
        _ship(store, f"run-{n}")
    for seq in junk_at:
        store.put_create_only(chain_key(STREAM, seq), b"junk", LOCK)
    head_hint.write(store, STREAM, junk_at[0])
    appended = _ship(store, "after")
    assert appended.slot.seq == 3 and appended.burned == []
    _assert_unbroken(store, 3)


def test_junk_just_above_the_hinted_head_is_burned_as_without_a_hint(store: Store) -> None:
    for n in range(3):
        _ship(store, f"run-{n}")
    store.put_create_only(chain_key(STREAM, 3), b"junk", LOCK)
    appended = _ship(store, "after")
    assert appended.slot.seq == 4 and [b["seq"] for b in appended.burned] == [3]
    assert _record(store, 4)["prev"]["seq"] == 2


@pytest.mark.parametrize(
    "body",
    [b"", b"garbage", b'{"schema":"tfaudit.head-hint/v1","seq":"2","stream":"team/app"}'],
    ids=["empty", "garbage", "string-seq"],
)
def test_a_malformed_hint_is_ignored(store: Store, body: bytes) -> None:
    for n in range(3):
        _ship(store, f"run-{n}")
    _put_hint(store, body)
    chain = Chain(store, STREAM)
    assert _ship(store, "after", chain=chain).slot.seq == 3
    assert chain.hinted is None
    _assert_unbroken(store, 3)


def test_a_huge_hint_is_read_only_up_to_the_cap(store: Store) -> None:
    for n in range(2):
        _ship(store, f"run-{n}")
    _put_hint(store, b"{" + b" " * (4 << 20))  # 4 MiB
    assert isinstance(store, head_hint.HintStore)
    assert len(store.read_latest(head_hint_key(STREAM), 100) or b"") == 100
    sizes: list[int] = []
    real = store.read_latest

    def spying(key: str, limit: int) -> bytes | None:
        data = real(key, limit)
        sizes.append(len(data or b""))
        return data

    store.read_latest = spying  # type: ignore[method-assign]
    assert _ship(store, "after").slot.seq == 2
    assert sizes == [head_hint.MAX_HINT_BYTES + 1]
    _assert_unbroken(store, 2)


def test_a_deleted_hint_means_probing_from_scratch(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _s3_store(s3_server, monkeypatch)
    bucket = store.bucket
    for n in range(3):
        _ship(store, f"run-{n}")
    client = s3_server.client()
    key = f"audit/{head_hint_key(STREAM)}"
    versions = client.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
    assert len(versions) == 3  # one locked version per append: the bucket's default applies
    client.delete_object(Bucket=bucket, Key=key)  # a delete marker: the versions stay
    assert head_hint.read(store, STREAM) is None
    chain = Chain(store, STREAM)
    assert _ship(store, "after", chain=chain).slot.seq == 3
    assert chain.hinted is None and chain.probes > 0
    assert head_hint.read(store, STREAM) == 3  # rewritten over the delete marker
    _assert_unbroken(store, 3)


def test_a_hint_that_cannot_be_written_is_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = FileStore(tmp_path / "store")
    _ship(store, "run-0")
    hint = tmp_path / "store" / head_hint_key(STREAM)
    hint.unlink()
    hint.symlink_to(tmp_path / "elsewhere")  # never written through
    assert _ship(store, "run-1").slot.seq == 1
    err = capsys.readouterr().err
    assert "could not update the head hint" in err and "symbolic link" in err
    assert not (tmp_path / "elsewhere").exists()
    assert head_hint.read(store, STREAM) is None  # a link is never followed
    assert _ship(store, "run-2").slot.seq == 2


def test_concurrent_appenders_with_hints_keep_one_unbroken_chain(store: Store) -> None:
    _ship(store, "seed")
    errors: list[BaseException] = []
    seqs: list[int] = []

    def writer(name: str) -> None:
        try:
            for n in range(5):
                seqs.append(_ship(store, f"{name}-{n}").slot.seq)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"w{k}",)) for k in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(seqs) == list(range(1, 16))
    _assert_unbroken(store, 15)
    assert 1 <= (head_hint.read(store, STREAM) or 0) <= 15


# -- readers never trust it ---------------------------------------------------------------------


def test_the_hint_is_no_stray_object_of_the_stream(store: Store) -> None:
    for n in range(3):
        _ship(store, f"run-{n}")
    head_hint.write(store, STREAM, MAX_SEQ)  # forged
    listing = split_listing(STREAM, store.list_versions(f"{STREAM}/"))
    assert listing.stray == [] and listing.present == [0, 1, 2]


def test_verify_passes_with_hints_and_ignores_a_forged_one(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real ``tfaudit run`` processes write the hint; ``tfaudit verify`` passes, also after
    the hint is forged, and says nothing about it."""
    bucket = unique_bucket()
    client = s3_server.client()
    make_lock_bucket(client, bucket)
    env = {
        **s3_server.env(),
        "HOME": str(tmp_path),
        "TFAUDIT_WORK_DIR": str(tmp_path / "spools"),
        "TFAUDIT_READ_TIMEOUT": "20",
    }
    store_url = f"s3://{bucket}/audit"
    for _ in range(3):
        proc = tfaudit(["run", "--store", store_url, "--stream", STREAM, "--", "true"], env=env,
                       cwd=tmp_path)  # fmt: skip
        assert proc.returncode == 0, proc.stderr.decode()
    key = f"audit/{head_hint_key(STREAM)}"
    hint = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert head_hint.decode(hint, STREAM) == 2

    def verify() -> dict[str, Any]:
        proc = tfaudit(["verify", "--store", store_url, "--stream", STREAM, "--json"], env=env,
                       cwd=tmp_path)  # fmt: skip
        assert proc.returncode == 0, proc.stdout.decode()[-2000:]
        document: dict[str, Any] = json.loads(proc.stdout)
        return document

    clean = verify()
    client.put_object(Bucket=bucket, Key=key, Body=head_hint.encode(STREAM, MAX_SEQ))
    forged = verify()
    assert forged["head"] == clean["head"] == 2
    assert "chain-head" not in json.dumps(forged)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    result = verify_stream(
        open_store(store_url, StoreOptions(endpoint_url=s3_server.endpoint)),
        VerifyOptions(stream=STREAM),
    )
    assert result.ok and result.records_valid == 3, result.problems


@pytest.fixture
def _no_leftovers(tmp_path: Path) -> Iterator[None]:
    yield
    assert not list((tmp_path / "store").rglob("*.tmp"))


def test_the_file_store_replaces_the_hint_atomically(tmp_path: Path, _no_leftovers: None) -> None:
    store = FileStore(tmp_path / "store")
    for seq in range(3):
        head_hint.write(store, STREAM, seq)
    assert head_hint.read(store, STREAM) == 2
    assert list(store.list_keys(f"{STREAM}/")) == [head_hint_key(STREAM)]


def test_a_block_flooded_with_junk_keys_is_asked_slot_by_slot(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Junk keys under the block's prefix must not make every append page through them: a
    block listing over the limit is dropped and the slots are asked one by one."""
    from tfaudit_ci import chain as chain_module

    monkeypatch.setattr(chain_module, "BLOCK_LISTING_LIMIT", 6)
    store = _s3_store(s3_server, monkeypatch)
    for n in range(3):
        _ship(store, f"run-{n}")
    client = s3_server.client()
    for n in range(6):
        key = f"audit/{STREAM}/chain/0000000000-junk-{n}"
        client.put_object(Bucket=store.bucket, Key=key, Body=b"junk")
    requests = _Requests(store)
    chain = Chain(store, STREAM)
    assert _ship(store, "after", chain=chain).slot.seq == 3
    assert chain.hinted == 2 and chain.probes >= 2  # the hinted slot and the one above it
    assert requests.counts["ListObjectVersions"] == 1 + chain.probes + 3
    _assert_unbroken(store, 3)
