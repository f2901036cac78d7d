"""`tfaudit verify` on built-then-damaged streams, over the file store and moto's S3 server.

Each case builds a stream with ``tests.support.scenarios.Scenario`` (the real record format, signed,
written through the real Store backends), damages it, then verifies in-process (to assert the
exact findings) and, for a few, through the real CLI (exit codes and output lines).

moto cannot refuse a second version of a locked key (nor can AWS: versions are how S3 works),
so on S3 the damage is what a writer can really do: new versions, delete markers, slots
written out of order. In-place rewrites (swap, edit, remove) need the file store.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pytest

from devkit.filestore import TamperableFileStore
from devkit.servers import S3Server, make_lock_bucket, unique_bucket
from tests.support.scenarios import Scenario
from tests.support.tfaudit_proc import result_json, tfaudit
from tfaudit_ci.record import chain_key, utc_now
from tfaudit_ci.signing import HmacSigner, HmacVerifier, NoSigner, hmac_key_id
from tfaudit_ci.stores import StoreOptions, open_store
from tfaudit_ci.stores.base import Policy, Store
from tfaudit_ci.stores.file import FileStore
from tfaudit_ci.verify.model import VerifyOptions, VerifyResult
from tfaudit_ci.verify.walk import verify_stream

STREAM = "acme/infra"
KEY = b"trusted-hmac-key"


@pytest.fixture
def server(s3_server: S3Server) -> S3Server:
    """The S3 server under test: server, and Ceph RGW as well with --s3-server both."""
    return s3_server


@pytest.fixture(params=["file", "s3"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _s3_store(
    server: S3Server, monkeypatch: pytest.MonkeyPatch, *, mode: str = "COMPLIANCE"
) -> Any:
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    bucket = unique_bucket()
    make_lock_bucket(server.client(), bucket, mode=mode, days=365)
    return open_store(
        f"s3://{bucket}/audit", StoreOptions(endpoint_url=server.endpoint, region=server.region)
    )


@pytest.fixture
def store(kind: str, tmp_path: Path, server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Store:
    if kind == "file":
        return FileStore(tmp_path / "store")
    store: Store = _s3_store(server, monkeypatch)
    return store


def _scenario(store: Store, tmp_path: Path, **kwargs: Any) -> Scenario:
    kwargs.setdefault("signer", HmacSigner(KEY, hmac_key_id(KEY)))
    return Scenario(store, tmp_path / "spool", stream=STREAM, **kwargs)


def _verify(store: Store, **kwargs: Any) -> VerifyResult:
    kwargs.setdefault("verifier", HmacVerifier(KEY))
    return verify_stream(store, VerifyOptions(stream=STREAM, **kwargs))


def _codes(result: VerifyResult, severity: str = "error") -> list[tuple[int | None, str]]:
    return sorted(
        ((p.seq, p.code) for p in result.problems if p.severity == severity),
        key=lambda item: (item[0] if item[0] is not None else -1, item[1]),
    )


def _cli_env(store: Store, server: S3Server, tmp_path: Path) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "K": KEY.decode()}
    if not isinstance(store, FileStore):
        env.update(server.env())
    return env


def _cli(store: Store, server: S3Server, tmp_path: Path, *args: str) -> Any:
    extra = [] if isinstance(store, FileStore) else ["--endpoint-url", server.endpoint]
    return tfaudit(
        ["verify", "--store", store.uri, "--stream", STREAM, *extra, *args],
        env=_cli_env(store, server, tmp_path),
        cwd=tmp_path,
    )


# -- the cases the issue lists -------------------------------------------------------------


def test_clean_chain(store: Store, tmp_path: Path, server: S3Server) -> None:
    _scenario(store, tmp_path).create(4)
    result = _verify(store)
    assert result.ok, result.problems
    assert (result.records_valid, result.records_total) == (4, 4)
    assert (result.artifacts_valid, result.artifacts_total) == (8, 8)
    assert result.problems == []

    proc = _cli(store, server, tmp_path, "--key", "hmac:env:K")
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    assert "4/4 records valid, 8/8 artifacts valid, 0 errors" in out
    proc = _cli(store, server, tmp_path, "--json")
    assert proc.returncode == 0
    data = result_json(proc)
    assert data["ok"] is True and data["records"] == {"valid": 4, "total": 4}


def test_gap(store: Store, tmp_path: Path, server: S3Server) -> None:
    scenario = _scenario(store, tmp_path)
    scenario.create(2)
    scenario.build()  # seq 2 is built (seq 3 links to it) but never written
    scenario.append()
    scenario.append()
    result = _verify(store)
    # Seq 3 links to the missing seq 2: neither its link nor its signature can be checked,
    # so it does not count as valid either (issue 12: valid only after every check ran).
    assert _codes(result) == [(2, "gap"), (3, "prev-unchecked"), (3, "signature-unchecked")]
    assert (result.records_valid, result.records_total) == (3, 5)

    proc = _cli(store, server, tmp_path, "--key", "hmac:env:K")
    lines = proc.stdout.decode().splitlines()
    assert proc.returncode == 24
    assert any(line.startswith("ERROR") and "seq 2" in line and "[gap]" in line for line in lines)
    assert "3/5 records valid" in lines[-1]


def test_overwritten_artifact_is_an_unpinned_error(store: Store, tmp_path: Path) -> None:
    scenario = _scenario(store, tmp_path)
    scenario.create(3)
    log = scenario.built[1].artifacts["output.log"]
    scenario.new_version(log["key"], b"rewritten history\n")
    result = _verify(store)
    # The pinned version still verifies (artifacts are all valid), but a version the record
    # does not pin is evidence of an overwrite attempt: an error (issue 12), not a warning.
    assert _codes(result) == [(1, "unpinned")]
    assert [p.key for p in result.errors] == [log["key"]]
    assert result.artifacts_valid == result.artifacts_total
    assert result.records_valid == 2


def test_record_pointing_at_a_tampered_version_fails(store: Store, tmp_path: Path) -> None:
    scenario = _scenario(store, tmp_path)
    scenario.create(2)

    def point_at_new_version(record: dict[str, Any]) -> None:
        entry = next(a for a in record["artifacts"] if a["name"] == "output.log")
        entry["version_id"] = scenario.new_version(entry["key"], b"Plan: 0 to destroy.\n")

    scenario.append(edit=point_at_new_version)
    result = _verify(store)
    # size and sha256; and the version the run uploaded is now one the record does not pin
    assert _codes(result) == [(2, "artifact"), (2, "artifact"), (2, "unpinned")]
    messages = " ".join(p.message for p in result.errors)
    assert "sha256" in messages and "size" in messages
    assert result.artifacts_valid == result.artifacts_total - 1


def test_forged_record_without_a_key(store: Store, tmp_path: Path, server: S3Server) -> None:
    scenario = _scenario(store, tmp_path)
    scenario.create(2)
    scenario.append(signer=NoSigner())
    scenario.append()
    result = _verify(store)
    assert _codes(result) == [(2, "signature")]
    assert "not signed" in result.errors[0].message
    # Without a trusted key the hash chain still holds: nothing to flag, and it says so.
    unkeyed = _verify(store, verifier=None)
    assert unkeyed.ok and any("not checked" in note for note in unkeyed.notes)
    proc = _cli(store, server, tmp_path, "--key", "hmac:env:K")
    assert proc.returncode == 24 and "[signature]" in proc.stdout.decode()


def test_forged_record_with_the_wrong_key(store: Store, tmp_path: Path) -> None:
    scenario = _scenario(store, tmp_path)
    scenario.create(2)
    scenario.append(signer=HmacSigner(b"stolen-or-guessed", hmac_key_id(b"stolen-or-guessed")))
    result = _verify(store)
    assert _codes(result) == [(2, "signature")]
    assert "not the trusted" in result.errors[0].message


def test_record_altered_in_place_breaks_signature_and_next_link(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    scenario = _scenario(store, tmp_path)
    scenario.create(4)
    victim = scenario.built[1]
    scenario.rewrite_in_place(victim.key, victim.data.replace(b'"exit_code":0', b'"exit_code":1'))
    result = _verify(store)
    assert _codes(result) == [(1, "signature"), (2, "prev-mismatch")]


def test_reordered_records(store: Store, tmp_path: Path) -> None:
    scenario = _scenario(store, tmp_path)
    built = [scenario.build() for _ in range(4)]
    order = {0: 0, 1: 2, 2: 1, 3: 3}  # records 1 and 2 land in each other's slot
    for slot, source in order.items():
        scenario.write(built[source], at=slot)
    result = _verify(store)
    codes = _codes(result)
    assert (1, "location") in codes and (2, "location") in codes
    assert {code for seq, code in codes if seq in (1, 2, 3)} >= {"location", "prev-link"}
    assert result.records_valid == 1  # only seq 0 holds


def test_record_copied_to_another_seq(store: Store, tmp_path: Path) -> None:
    scenario = _scenario(store, tmp_path)
    scenario.create(3)
    scenario.write(scenario.built[1], at=3)  # a copy of seq 1 appended as seq 3
    result = _verify(store)
    # Its signature is over seq 0's signature, the record its prev names, so it holds; but
    # the copy sits in the wrong slot and skips seqs 1 and 2 without burning them.
    assert _codes(result) == [(3, "location"), (3, "prev-link")]
    assert any("a copy of slot 1" in p.message for p in result.errors)


def test_truncated_tail_is_caught_by_max_age(store: Store, tmp_path: Path) -> None:
    start = utc_now() - dt.timedelta(days=5)
    scenario = _scenario(store, tmp_path, start=start, step=dt.timedelta(hours=1))
    scenario.create(3)
    stale = _verify(store, max_age=dt.timedelta(days=2))
    assert _codes(stale) == [(2, "stale-head")]
    assert _verify(store, max_age=dt.timedelta(days=6)).ok


def test_truncated_tail_on_the_file_store(tmp_path: Path, server: S3Server) -> None:
    store = FileStore(tmp_path / "store")
    start = utc_now() - dt.timedelta(days=3)
    scenario = _scenario(store, tmp_path, start=start, step=dt.timedelta(days=1))
    scenario.create(4)  # the last one started now
    assert _verify(store, max_age=dt.timedelta(days=1)).ok
    for built in scenario.built[2:]:
        scenario.remove_in_place(built.key)  # the tail is cut: no gap to see
    assert _verify(store).ok  # without --max-age a truncated tail is invisible
    result = _verify(store, max_age=dt.timedelta(days=1))
    assert _codes(result) == [(1, "stale-head")]
    proc = _cli(store, server, tmp_path, "--max-age", "1d")
    assert proc.returncode == 24 and "[stale-head]" in proc.stdout.decode()


def test_fork_on_the_file_store(tmp_path: Path) -> None:
    """A store that ignored create-only: a second writer's record became version 2 of slot 2,
    and a third writer continued the chain from that losing version."""
    store = TamperableFileStore(tmp_path / "store")
    scenario = _scenario(store, tmp_path)
    scenario.create(2)
    winner = scenario.append()
    scenario.built.pop()
    loser = scenario.build(prev=scenario.built[-1])
    store.put_version(loser.key, loser.data)
    scenario.append(prev=loser)  # seq 3 continues from the loser
    result = _verify(store)
    codes = _codes(result)
    assert (2, "fork") in codes and (3, "fork") in codes
    assert winner.run_folder not in loser.data.decode()


def test_superseded_duplicate_is_a_warning(tmp_path: Path) -> None:
    """The lost race the chain protocol expects: the loser's record stays as a later version
    of the slot, and the same run is appended again at the next seq."""
    store = TamperableFileStore(tmp_path / "store")
    scenario = _scenario(store, tmp_path)
    scenario.create(2)
    loser = scenario.build()
    scenario.built.pop()
    scenario.append()  # the winner of slot 2
    store.put_version(loser.key, loser.data)

    def same_run(record: dict[str, Any]) -> None:
        record["run_folder"] = loser.run_folder
        record["artifacts"] = list(loser.artifacts.values())

    scenario.append(edit=same_run, artifacts={})
    result = _verify(store)
    assert result.ok, result.problems
    assert [(p.seq, p.code) for p in result.warnings] == [(2, "superseded")]


def test_retention_below_policy(
    server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _s3_store(server, monkeypatch)
    weak = Policy(retention_days=1, lock_mode="GOVERNANCE")
    scenario = _scenario(
        store, tmp_path, policy=weak, retain_until=utc_now() + dt.timedelta(days=2)
    )
    scenario.create(2)
    result = _verify(store)  # policy: COMPLIANCE, 365 days
    retention = [p for p in result.errors if p.code in {"retention", "artifact"}]
    assert {p.seq for p in retention} == {0, 1}
    text = " ".join(p.message for p in retention)
    assert "lock mode is GOVERNANCE" in text and "policy requires 365 days" in text
    assert result.records_valid == 0
    governance = _verify(store, policy=Policy(retention_days=1, lock_mode="GOVERNANCE"))
    assert governance.ok, governance.problems


def test_min_remaining_days(
    server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _s3_store(server, monkeypatch)
    _scenario(store, tmp_path).create(1)
    assert _verify(store, min_remaining_days=300).ok
    result = _verify(store, min_remaining_days=400)
    assert not result.ok and "--min-remaining-days" in result.errors[0].message


def test_orphan_folders_are_warnings(store: Store, tmp_path: Path, server: S3Server) -> None:
    scenario = _scenario(store, tmp_path)
    scenario.create(2)
    folder = scenario.orphan_folder()
    result = _verify(store)
    assert result.ok
    assert [(p.code, p.key) for p in result.warnings] == [("orphan", f"{STREAM}/runs/{folder}/")]
    proc = _cli(store, server, tmp_path)
    assert proc.returncode == 0 and "WARNING" in proc.stdout.decode()


# -- more findings ---------------------------------------------------------------------------


def test_delete_marker_on_a_record(store: Store, tmp_path: Path) -> None:
    scenario = _scenario(store, tmp_path)
    scenario.create(3)
    scenario.delete_marker(scenario.built[1].key)
    result = _verify(store)
    # Reported, not failed: the locked record itself is intact (issue 6: verify still passes).
    assert _codes(result) == []
    assert _codes(result, "warning") == [(1, "delete-marker")]
    assert result.ok


def test_record_after_the_head(store: Store, tmp_path: Path) -> None:
    scenario = _scenario(store, tmp_path)
    scenario.create(2)
    for _ in range(3):
        scenario.build()  # seqs 2..4 built, not written
    scenario.append()  # seq 5 written past a gap: appenders never see it
    result = _verify(store)
    codes = _codes(result)
    assert (2, "gap") in codes and (5, "after-head") in codes
    assert result.head == 1


def test_empty_stream_is_a_problem(store: Store, tmp_path: Path, server: S3Server) -> None:
    result = _verify(store)
    assert _codes(result) == [(None, "empty")]
    proc = _cli(store, server, tmp_path)
    assert proc.returncode == 24


def test_since_and_until_limit_the_walk(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    start = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    # A day apart: the window widens by --max-overlap (6h) around --since/--until.
    scenario = _scenario(store, tmp_path, start=start, step=dt.timedelta(days=1))
    scenario.create(6)
    victim = scenario.built[1]
    scenario.rewrite_in_place(victim.key, victim.data.replace(b'"exit_code":0', b'"exit_code":3'))
    late = _verify(store, since=start + dt.timedelta(days=3))
    assert late.ok and (late.first_seq, late.last_seq, late.records_total) == (3, 5, 3)
    early = _verify(store, until=start + dt.timedelta(days=1, hours=12))
    assert (early.first_seq, early.last_seq) == (0, 1)
    assert _codes(early) == [(1, "signature")]
    whole = _verify(store)
    assert _codes(whole) == [(1, "signature"), (2, "prev-mismatch")]


def test_unreadable_record_and_non_canonical_bytes(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    scenario = _scenario(store, tmp_path)
    scenario.create(3)
    scenario.rewrite_in_place(scenario.built[0].key, b"not json")
    pretty = json.dumps(scenario.built[2].record, indent=1).encode()
    scenario.rewrite_in_place(scenario.built[2].key, pretty)
    codes = _codes(_verify(store))
    assert (0, "unparseable") in codes and (1, "prev-mismatch") in codes
    assert (2, "not-canonical") in codes


def test_usage_errors_exit_20(tmp_path: Path, server: S3Server) -> None:
    store = FileStore(tmp_path / "store")
    for args in (
        ["--max-age", "soon"],
        ["--since", "yesterday"],
        ["--key", "hmac:env:K", "--public-key", "x.pem"],
        ["--parallelism", "0"],
        ["--jwks", str(tmp_path / "missing.json")],
    ):
        proc = _cli(store, server, tmp_path, *args)
        assert proc.returncode == 20, (args, proc.stderr.decode())


def test_record_chain_key_layout_is_what_verify_reads(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    scenario = _scenario(store, tmp_path)
    built = scenario.append()
    assert (tmp_path / "store" / chain_key(STREAM, 0)).read_bytes() == built.data


def test_a_listing_failure_is_still_a_complete_report(tmp_path: Path, server: S3Server) -> None:
    """Nothing could be listed: still exit 24 and one JSON document, never a bare error."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), **server.env()}
    args = ["--store", "s3://no-such-bucket-tfaudit/x", "--endpoint-url", server.endpoint]
    proc = tfaudit(["-v", "verify", *args, "--stream", STREAM, "--json"], env=env, cwd=tmp_path)
    assert proc.returncode == 24, proc.stderr.decode()
    report = json.loads(proc.stdout)
    assert [p["code"] for p in report["problems"]] == ["list-failed"]
    assert "NoSuchBucket" in report["problems"][0]["message"]
    assert "Traceback" in report["problems"][0]["traceback"]  # -v
    assert report["summary"].startswith("tfaudit verify FAILED: 0/0 records valid")
    proc = tfaudit(["verify", *args, "--stream", STREAM], env=env, cwd=tmp_path)
    assert proc.returncode == 24 and "[list-failed]" in proc.stdout.decode()
    assert "Traceback" not in proc.stdout.decode()
