"""Incremental verify (``tfaudit verify --checkpoint FILE``) and the artifact checks by
stored checksum (``--deep``), on moto's real S3 server (docs/verify.md).

Each case builds a stream with ``tests.support.scenarios.Scenario`` (the real record format, signed,
written through the real S3 store), verifies it once to get a checkpoint, then damages the
chain or the checkpoint and verifies again from it: a checkpoint that does not match the chain
is an error, never a reason to skip, and the file is only ever advanced by a passing verify.

moto keeps the ``ChecksumSHA256`` a PUT sends and returns it on ``HeadObject`` with
``ChecksumMode=ENABLED``, but does not check it against the body (AWS does): the case where a
writer lied about it shows which path ran, and why ``--deep`` exists.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from devkit.servers import S3Server, make_lock_bucket, unique_bucket
from tests.support.scenarios import Scenario, write_raw
from tests.support.tfaudit_proc import result_json, tfaudit
from tfaudit_ci.record import chain_key
from tfaudit_ci.signing import HmacSigner, HmacVerifier, hmac_key_id
from tfaudit_ci.stores import StoreOptions, open_store
from tfaudit_ci.stores.s3 import S3Store
from tfaudit_ci.verify import checkpoint
from tfaudit_ci.verify.model import ChainTip, VerifyOptions, VerifyResult
from tfaudit_ci.verify.walk import verify_stream

STREAM = "acme/infra"
KEY = b"trusted-hmac-key"


@pytest.fixture
def store(moto_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Store:
    for name, value in moto_server.env().items():
        monkeypatch.setenv(name, value)
    bucket = unique_bucket()
    make_lock_bucket(moto_server.client(), bucket, mode="COMPLIANCE", days=365)
    opened = open_store(
        f"s3://{bucket}/audit",
        StoreOptions(endpoint_url=moto_server.endpoint, region=moto_server.region),
    )
    assert isinstance(opened, S3Store)
    return opened


def _scenario(store: S3Store, tmp_path: Path) -> Scenario:
    return Scenario(
        store, tmp_path / "spool", stream=STREAM, signer=HmacSigner(KEY, hmac_key_id(KEY))
    )


def _verify(store: S3Store, **kwargs: Any) -> VerifyResult:
    return verify_stream(store, VerifyOptions(stream=STREAM, verifier=HmacVerifier(KEY), **kwargs))


def _errors(result: VerifyResult) -> list[tuple[int | None, str]]:
    return sorted(((p.seq, str(p.code)) for p in result.errors), key=lambda i: (i[0] or -1, i[1]))


def _cli(store: S3Store, server: S3Server, tmp_path: Path, *args: str) -> Any:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "K": KEY.decode()}
    env.update(server.env())
    return tfaudit(
        [
            "verify",
            "--store",
            store.uri,
            "--stream",
            STREAM,
            "--endpoint-url",
            server.endpoint,
            "--key",
            "hmac:env:K",
            "--json",
            *args,
        ],
        env=env,
        cwd=tmp_path,
    )


def _first_checkpoint(
    store: S3Store, server: S3Server, tmp_path: Path, records: int
) -> tuple[Scenario, Path, dict[str, Any]]:
    """``records`` records, and the checkpoint a CLI verify of them wrote (and its JSON)."""
    scenario = _scenario(store, tmp_path)
    scenario.create(records)
    path = tmp_path / "first.checkpoint"
    assert _cli(store, server, tmp_path, "--checkpoint", str(path)).returncode == 0
    return scenario, path, json.loads(path.read_text(encoding="utf-8"))


def _tip(result: VerifyResult) -> ChainTip:
    assert result.ok, result.problems
    assert result.tip is not None
    return result.tip


# -- the round trip ------------------------------------------------------------------------


def test_checkpoint_round_trip_through_the_cli(
    store: S3Store, moto_server: S3Server, tmp_path: Path
) -> None:
    scenario = _scenario(store, tmp_path)
    scenario.create(3)
    path = tmp_path / "state" / "verify.checkpoint"
    path.parent.mkdir()

    first = _cli(store, moto_server, tmp_path, "--checkpoint", str(path))
    report = result_json(first)
    assert first.returncode == 0, first.stderr.decode()
    assert report["records"] == {"valid": 3, "total": 3}
    assert any("not found: verified the whole stream" in note for note in report["notes"])
    assert any("written at seq 2" in note for note in report["notes"])
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert (saved["seq"], saved["sha256"]) == (2, scenario.built[2].sha256)
    assert saved["stream"] == STREAM and saved["store"] == store.uri
    assert saved["verifier"] == HmacVerifier(KEY).description
    assert report["requests"]["total"] > 0 and report["requests"]["per_record"] > 0

    scenario.create(2)
    second = _cli(store, moto_server, tmp_path, "--checkpoint", str(path))
    report = result_json(second)
    assert second.returncode == 0, second.stderr.decode()
    assert (report["first_seq"], report["last_seq"]) == (3, 4)
    assert report["records"] == {"valid": 2, "total": 2}
    assert report["artifacts"] == {"valid": 4, "total": 4}
    assert json.loads(path.read_text(encoding="utf-8"))["seq"] == 4
    # Nothing new: still a pass (the checkpoint's slot is checked), and the file stays at 4.
    third = _cli(store, moto_server, tmp_path, "--checkpoint", str(path))
    assert third.returncode == 0, third.stdout.decode()
    assert result_json(third)["records"] == {"valid": 0, "total": 0}
    assert json.loads(path.read_text(encoding="utf-8"))["seq"] == 4
    assert not [p for p in path.parent.iterdir() if p.name != path.name]  # no temp files left


def test_incremental_reads_only_what_follows(store: S3Store, tmp_path: Path) -> None:
    scenario = _scenario(store, tmp_path)
    scenario.create(6)
    tip = _tip(_verify(store))
    full = _verify(store)
    scenario.create(1)
    step = _verify(store, checkpoint=tip)
    assert step.ok, step.problems
    assert (step.records_total, step.first_seq, step.last_seq) == (1, 6, 6)
    # listing the chain from the checkpoint and the run folders from its time, the
    # checkpoint's record, the new record and its 2 artifacts
    assert step.requests < full.requests
    assert step.tip is not None and step.tip.seq == 6


# -- a checkpoint that does not match the chain --------------------------------------------


def test_wrong_sha_is_an_error_and_nothing_advances(
    store: S3Store, moto_server: S3Server, tmp_path: Path
) -> None:
    scenario, path, saved = _first_checkpoint(store, moto_server, tmp_path, 3)
    saved["sha256"] = "0" * 64
    from tfaudit_ci.canonical import canonical_bytes

    path.write_bytes(canonical_bytes(saved))
    before = path.read_bytes()
    scenario.create(1)
    proc = _cli(store, moto_server, tmp_path, "--checkpoint", str(path))
    report = result_json(proc)
    assert proc.returncode == 24
    codes = {(p["seq"], p["code"]) for p in report["problems"]}
    assert (2, "checkpoint") in codes
    assert any("not advanced" in note for note in report["notes"])
    assert path.read_bytes() == before


def test_seq_beyond_the_head(store: S3Store, tmp_path: Path) -> None:
    scenario = _scenario(store, tmp_path)
    scenario.create(2)
    tip = _tip(_verify(store))
    ahead = ChainTip(tip.seq + 5, tip.sha256, tip.version_id, tip.signature, 1)
    result = _verify(store, checkpoint=ahead)
    assert (tip.seq + 5, "checkpoint") in _errors(result)
    assert result.tip is None


def test_slot_written_since_the_checkpoint(store: S3Store, tmp_path: Path) -> None:
    """A new version at the checkpoint's slot (moto, like AWS, accepts one even when
    locked): the oldest still wins, but the slot was written to since."""
    scenario = _scenario(store, tmp_path)
    scenario.create(3)
    tip = _tip(_verify(store))
    scenario.new_version(chain_key(STREAM, 2), scenario.built[1].data)
    result = _verify(store, checkpoint=tip)
    assert (2, "checkpoint") in _errors(result)
    assert "written to since" in " ".join(p.message for p in result.errors)


def test_new_record_with_a_broken_link(store: S3Store, tmp_path: Path) -> None:
    scenario = _scenario(store, tmp_path)
    scenario.create(3)
    tip = _tip(_verify(store))

    def wrong_sha(record: dict[str, Any]) -> None:
        record["prev"] = {"seq": 2, "sha256": "f" * 64}

    scenario.append(edit=wrong_sha)
    scenario.create(1)
    result = _verify(store, checkpoint=tip)
    assert (3, "prev-mismatch") in _errors(result)
    assert result.records_valid < result.records_total and result.tip is None


def test_first_new_record_not_continuing_from_the_checkpoint(
    store: S3Store, tmp_path: Path
) -> None:
    """Seq 3 claims the verified records 1 and 2 were junk it skipped: never trusted."""
    scenario = _scenario(store, tmp_path)
    scenario.create(3)
    tip = _tip(_verify(store))

    def skip(record: dict[str, Any]) -> None:
        record["burned"] = [{"seq": n, "sha256": scenario.built[n].sha256} for n in (1, 2)]

    scenario.append(prev=scenario.built[0], edit=skip)
    result = _verify(store, checkpoint=tip)
    assert (3, "checkpoint") in _errors(result)
    assert result.tip is None


def test_burned_slot_after_the_checkpoint(store: S3Store, tmp_path: Path) -> None:
    scenario = _scenario(store, tmp_path)
    scenario.create(3)
    tip = _tip(_verify(store))
    junk = b"not a record"
    write_raw(store, chain_key(STREAM, 3), junk)
    scenario.build(upload=False)  # seq 3: never written by the writer

    def burn(record: dict[str, Any]) -> None:
        record["burned"] = [{"seq": 3, "sha256": hashlib.sha256(junk).hexdigest()}]

    scenario.append(prev=scenario.built[2], edit=burn)
    result = _verify(store, checkpoint=tip)
    assert _errors(result) == [(3, "burned")]
    assert result.records_valid == 1 and result.tip is None


# -- the checkpoint file -------------------------------------------------------------------


def test_refused_and_malformed_checkpoint_files(
    store: S3Store, moto_server: S3Server, tmp_path: Path
) -> None:
    _, good, saved = _first_checkpoint(store, moto_server, tmp_path, 2)
    other_stream = tmp_path / "other-stream.json"
    other_stream.write_text(json.dumps({**saved, "stream": "acme/other"}), encoding="utf-8")
    other_key = tmp_path / "other-key.json"
    other_key.write_text(json.dumps({**saved, "verifier": None}), encoding="utf-8")
    huge = tmp_path / "huge.json"
    huge.write_bytes(b" " * (checkpoint.MAX_BYTES + 1))
    malformed = tmp_path / "malformed.json"
    malformed.write_text(json.dumps({**saved, "seq": -1}), encoding="utf-8")
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"\xff{not json")
    link = tmp_path / "link.json"
    link.symlink_to(good)
    folder = tmp_path / "folder.json"
    folder.mkdir()
    for path, words in (
        (other_stream, "written for stream"),
        (other_key, "written for trusted key"),
        (huge, "cap"),
        (malformed, "bad or missing seq"),
        (garbage, "not a checkpoint"),
        (link, "symlink"),
        (folder, "not a regular file"),
    ):
        proc = _cli(store, moto_server, tmp_path, "--checkpoint", str(path))
        stderr = proc.stderr.decode()
        assert proc.returncode == 20, (path.name, stderr)
        assert words in stderr and "Traceback" not in stderr, (path.name, stderr)
    assert link.is_symlink() and json.loads(good.read_text(encoding="utf-8")) == saved


def test_checkpoint_with_since_is_a_usage_error(
    store: S3Store, moto_server: S3Server, tmp_path: Path
) -> None:
    proc = _cli(
        store, moto_server, tmp_path, "--checkpoint", str(tmp_path / "c"), "--since", "2024-01-01"
    )
    assert proc.returncode == 20 and b"--checkpoint" in proc.stderr


# -- artifacts by stored checksum ----------------------------------------------------------


def _put(scenario: Scenario, key: str, data: bytes, **extra: Any) -> str:
    """A locked PUT of ``data`` at ``key`` as the run's own uploads are locked."""
    store = scenario.store
    assert isinstance(store, S3Store)
    response = store.client.put_object(
        Bucket=store.bucket,
        Key=f"{store.prefix}/{key}",
        Body=data,
        ContentMD5=base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode(),
        ObjectLockMode=scenario.policy.lock_mode,
        ObjectLockRetainUntilDate=scenario.retain_until,
        **extra,
    )
    return str(response["VersionId"])


def test_head_checksum_catches_a_swapped_artifact(store: S3Store, tmp_path: Path) -> None:
    """The record names a version whose bytes (and stored checksum) are not the run's."""
    scenario = _scenario(store, tmp_path)
    scenario.create(2)

    def swap(record: dict[str, Any]) -> None:
        entry = next(a for a in record["artifacts"] if a["name"] == "output.log")
        entry["version_id"] = scenario.upload(entry["key"], b"Plan: 0 to destroy.\n")

    scenario.append(edit=swap)
    for deep in (False, True):
        result = _verify(store, deep=deep)
        assert (2, "artifact") in _errors(result), deep
        assert "sha256" in " ".join(p.message for p in result.errors)


def test_head_path_trusts_the_stored_checksum_and_deep_hashes(
    store: S3Store, tmp_path: Path
) -> None:
    scenario = _scenario(store, tmp_path)
    scenario.create(1)
    real, fake = b"what was really stored\n", b"what the writer claimed\n"

    def lie(record: dict[str, Any]) -> None:
        entry = next(a for a in record["artifacts"] if a["name"] == "output.log")
        # moto keeps whatever ChecksumSHA256 the PUT says (AWS would refuse this one)
        claimed = base64.b64encode(hashlib.sha256(fake).digest()).decode()
        entry["version_id"] = _put(
            scenario, entry["key"], real, ChecksumSHA256=claimed, ChecksumAlgorithm="SHA256"
        )
        entry["sha256"] = hashlib.sha256(real).hexdigest()
        entry["size"] = len(real)

    scenario.append(edit=lie)
    # The HEAD path compares the checksum the store keeps (here a lie moto accepted)...
    shallow = _verify(store)
    assert (1, "artifact") in _errors(shallow)
    # ...--deep hashes the bytes, which match the record.
    deep = _verify(store, deep=True)
    assert (1, "artifact") not in _errors(deep), deep.problems


def test_streaming_path_where_no_checksum_is_kept(store: S3Store, tmp_path: Path) -> None:
    """A version written without ChecksumSHA256: the HEAD shows none, the bytes are hashed."""
    scenario = _scenario(store, tmp_path)
    scenario.create(1)
    data = b"uploaded without a checksum\n"

    def plain(record: dict[str, Any]) -> None:
        entry = next(a for a in record["artifacts"] if a["name"] == "output.log")
        entry["version_id"] = _put(scenario, entry["key"], data)
        entry["sha256"] = hashlib.sha256(data).hexdigest()
        entry["size"] = len(data)

    built = scenario.append(edit=plain)
    entry = next(a for a in built.record["artifacts"] if a["name"] == "output.log")
    state = store.head(entry["key"], entry["version_id"])
    assert state is not None and state.sha256 is None  # nothing to compare: bytes hashed
    result = _verify(store)
    assert (1, "artifact") not in _errors(result), result.problems
    assert result.artifacts_valid == result.artifacts_total


def test_the_s3_store_keeps_what_its_capability_promises(store: S3Store, tmp_path: Path) -> None:
    """``stored_sha256``: both write paths send the SHA-256 so that moto keeps it, and
    ``head`` returns it (the file store declares it has none)."""
    from tfaudit_ci.stores.file import FileStore

    assert store.stored_sha256 is True and FileStore.stored_sha256 is False
    scenario = _scenario(store, tmp_path)
    built = scenario.append()
    entry = built.artifacts["output.log"]
    state = store.head(entry["key"], entry["version_id"])
    assert state is not None and state.sha256 == entry["sha256"]
    record = store.head(chain_key(STREAM, 0), built.version_id or "")
    assert record is not None and record.sha256 == built.sha256
