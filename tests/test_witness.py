"""The independent witness end to end (issue 14): the real CLI, a real S3 server.

Two layouts, and every scenario runs on both:

* ``file+s3``: the trail in a ``file://`` directory (``--on-unlocked warn``), the witness a
  COMPLIANCE-locked bucket on the local S3 server;
* ``s3+s3``: the trail in a GOVERNANCE-locked bucket, which whoever holds
  ``s3:BypassGovernanceRetention`` can still rewrite (a store that is not really WORM, like a
  re-created bucket), and the witness a second, COMPLIANCE-locked bucket.

Each attack is tried without the witness (what the chain alone sees) and with it, and ends
in the verify code the issue asks for, with exit 24 wherever that is an error. The witness
going down during a run goes through the fault proxy (tests/support/faultproxy.py).

Runs and verifies call ``cli.main`` in this process (environment swapped in, output
captured) to keep the suite quick; the command run is a real ``true`` process, every store
call goes over HTTP. Concurrent runs use real ``tfaudit`` processes.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from devkit.servers import S3Server, free_port, make_lock_bucket, unique_bucket
from devkit.tfhelpers import isolated_env
from tests.support.faultproxy import FaultProxy, Request, running_proxy, slow_down
from tests.support.tfaudit_proc import tfaudit
from tfaudit_ci import cli
from tfaudit_ci.canonical import canonical_bytes, sha256_hex
from tfaudit_ci.record import chain_key
from tfaudit_ci.signing import HmacSigner, hmac_key_id, sign_record
from tfaudit_ci.witness import checkpoint_key, checkpoint_prefix

STREAM = "acme/infra"
PREFIX = "audit"
HMAC_KEY = "witness-e2e-hmac-key"


@dataclass
class Outcome:
    code: int
    stdout: bytes
    stderr: bytes
    result_file: Path | None = None

    @property
    def text(self) -> str:
        return self.stderr.decode() + self.stdout.decode()

    def document(self) -> dict[str, Any]:
        """A run's ``--result`` file, or the ``--json`` document on stdout."""
        raw = self.result_file.read_bytes() if self.result_file else self.stdout
        parsed: dict[str, Any] = json.loads(raw)
        return parsed

    def codes(self, severity: str = "error") -> set[tuple[int | None, str]]:
        document = self.document()
        problems = document.get("verify", document)["problems"]
        return {(p["seq"], p["code"]) for p in problems if p["severity"] == severity}


def invoke(argv: list[str], env: dict[str, str]) -> Outcome:
    """``tfaudit ARGV`` in this process, with ``env`` as the whole environment."""
    out, err = io.BytesIO(), io.BytesIO()
    stdout = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
    stderr = io.TextIOWrapper(err, encoding="utf-8", write_through=True)
    with (
        mock.patch.dict(os.environ, env, clear=True),
        redirect_stdout(stdout),
        redirect_stderr(stderr),
    ):
        code = cli.main(argv, env)
    stdout.flush()
    stderr.flush()
    return Outcome(code, out.getvalue(), err.getvalue())


@dataclass
class Trail:
    """A primary store and a witness; tfaudit against them; and the primary as an attacker
    who can rewrite it sees it."""

    layout: str
    server: S3Server
    tmp: Path
    env: dict[str, str]
    primary: str
    witness: str
    primary_bucket: str | None
    witness_bucket: str
    runs: int = 0

    @property
    def policy(self) -> list[str]:
        if self.primary_bucket is None:
            return ["--on-unlocked", "warn"]
        return ["--lock-mode", "GOVERNANCE"]

    # -- tfaudit -------------------------------------------------------------------------
    def run(
        self, *options: str, witness: bool = True, process: bool = False, **env: str
    ) -> Outcome:
        """In this process, or in its own (``process``: one that leaves a spool behind
        must exit, as CI's would, to release the spool's lock)."""
        self.runs += 1
        result = self.tmp / f"result-{self.runs}.json"
        args = ["run", "--store", self.primary, "--stream", STREAM, *self.policy]
        args += ["--witness", self.witness] if witness else []
        args += [*options, "--result", str(result), "--", "true"]
        if process:
            done = tfaudit(args, env={**self.env, **env}, cwd=self.tmp)
            outcome = Outcome(done.returncode, done.stdout, done.stderr)
        else:
            outcome = invoke(args, {**self.env, **env})
        outcome.result_file = result
        return outcome

    def ok_runs(self, count: int, *options: str, witness: bool = True) -> list[Outcome]:
        runs = [self.run(*options, witness=witness) for _ in range(count)]
        for run in runs:
            assert run.code == 0, run.text
        return runs

    def verify(self, *options: str, witness: bool = True) -> Outcome:
        args = ["verify", "--store", self.primary, "--stream", STREAM, "--json"]
        args += ["--lock-mode", "GOVERNANCE"] if self.primary_bucket else []
        args += ["--witness", self.witness] if witness else []
        return invoke([*args, *options], self.env)

    def sync(self, *options: str) -> Outcome:
        args = ["witness-sync", "--store", self.primary, "--stream", STREAM, *self.policy]
        return invoke([*args, "--witness", self.witness, "--json", *options], self.env)

    def recover(self, **env: str) -> Outcome:
        return invoke(["recover", "--json"], {**self.env, **env})

    # -- the primary, rewritten --------------------------------------------------------------
    def _file(self, seq: int) -> Path:
        return Path(self.primary.removeprefix("file://")) / chain_key(STREAM, seq)

    def _s3_key(self, seq: int) -> str:
        return f"{PREFIX}/{chain_key(STREAM, seq)}"

    def record(self, seq: int) -> bytes:
        if self.primary_bucket is None:
            return self._file(seq).read_bytes()
        got = self.server.client().get_object(Bucket=self.primary_bucket, Key=self._s3_key(seq))
        data: bytes = got["Body"].read()
        return data

    def delete_record(self, seq: int) -> None:
        """Gone without a trace: every version, no delete marker."""
        if self.primary_bucket is None:
            self._file(seq).unlink()
            return
        client = self.server.client()
        listing = client.list_object_versions(Bucket=self.primary_bucket, Prefix=self._s3_key(seq))
        for version in listing.get("Versions", []):
            client.delete_object(
                Bucket=self.primary_bucket,
                Key=version["Key"],
                VersionId=version["VersionId"],
                BypassGovernanceRetention=True,
            )

    def replace_record(self, seq: int, data: bytes) -> None:
        self.delete_record(seq)
        if self.primary_bucket is None:
            self._file(seq).write_bytes(data)
        else:
            self.server.client().put_object(
                Bucket=self.primary_bucket, Key=self._s3_key(seq), Body=data
            )

    def edit_record(self, seq: int, *, resign: bool = False) -> None:
        """The record says the run failed; re-signed with the CI's own key if ``resign``."""
        record: dict[str, Any] = json.loads(self.record(seq))
        record["exit_code"], record["status"] = 1, "failed"
        if not resign:
            self.replace_record(seq, canonical_bytes(record))
            return
        record.pop("signature")
        signer = HmacSigner(HMAC_KEY.encode(), hmac_key_id(HMAC_KEY.encode()))
        prev = json.loads(self.record(seq - 1)) if seq else None
        self.replace_record(seq, sign_record(record, prev, signer))

    # -- the witness -----------------------------------------------------------------------
    def checkpoint_seqs(self) -> list[int]:
        prefix = f"{PREFIX}/{checkpoint_prefix(STREAM)}"
        listing = self.server.client().list_objects_v2(Bucket=self.witness_bucket, Prefix=prefix)
        return sorted(int(item["Key"][-17:-5]) for item in listing.get("Contents", []))

    def checkpoint(self, seq: int) -> dict[str, Any]:
        key = f"{PREFIX}/{checkpoint_key(STREAM, seq)}"
        body = self.server.client().get_object(Bucket=self.witness_bucket, Key=key)["Body"]
        parsed: dict[str, Any] = json.loads(body.read())
        return parsed

    def witness_record(self, seq: int) -> Any:
        return json.loads(self.record(seq))["witness"]


@pytest.fixture(params=["file+s3", "s3+s3"])
def trail(
    request: pytest.FixtureRequest,
    s3_server: S3Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Trail:
    monkeypatch.chdir(tmp_path)
    # Runs in this process wait less for a concurrent run's checkpoint (no run is concurrent).
    monkeypatch.setattr("tfaudit_ci.witness.GRACE_SECONDS", 0.05)
    client = s3_server.client()
    witness_bucket = unique_bucket("wit")
    make_lock_bucket(client, witness_bucket)
    primary_bucket = None
    if request.param == "file+s3":
        primary = (tmp_path / "primary").as_uri()
    else:
        primary_bucket = unique_bucket("pri")
        make_lock_bucket(client, primary_bucket, mode="GOVERNANCE")
        primary = f"s3://{primary_bucket}/{PREFIX}"
    env = {
        **isolated_env(tmp_path / "env"),
        **s3_server.env(),
        "TFAUDIT_WORK_DIR": str(tmp_path / "spools"),
        "TFAUDIT_MAX_ATTEMPTS": "2",
        "TFAUDIT_CONNECT_TIMEOUT": "2",
        "K": HMAC_KEY,
    }
    return Trail(
        str(request.param),
        s3_server,
        tmp_path,
        env,
        primary,
        f"s3://{witness_bucket}/{PREFIX}",
        primary_bucket,
        witness_bucket,
    )


def log_lines(runs: list[Outcome]) -> str:
    """tfaudit's summary lines as a CI job's log keeps them (stderr)."""
    lines = (line for run in runs for line in run.stderr.decode().splitlines())
    return "".join(line + "\n" for line in lines if "record seq" in line)


def assert_only_unwitnessed(trail: Trail, seq: int) -> None:
    """Seq ``seq`` lacks its checkpoint: a warning (exit 0), an error (exit 24) under
    ``--require-witness``, and nothing else is wrong."""
    lenient = trail.verify()
    assert lenient.code == 0, lenient.text
    assert (seq, "unwitnessed") in lenient.codes("warning")
    strict = trail.verify("--require-witness")
    assert (strict.code, strict.codes()) == (24, {(seq, "unwitnessed")})


# -- the attacks -------------------------------------------------------------------------------


def test_rewritten_then_truncated_tail_on_an_unsigned_chain(trail: Trail) -> None:
    runs = trail.ok_runs(2)
    assert trail.checkpoint_seqs() == [0, 1]
    first, second = trail.checkpoint(0), trail.checkpoint(1)
    assert second["record_sha256"] == sha256_hex(trail.record(1))
    assert first["prev"] is None and second["prev"]["seq"] == 0
    assert trail.witness_record(1) == {"store": trail.witness, "missing": []}
    assert runs[1].document()["checkpoint_uri"] == f"{trail.witness}/{checkpoint_key(STREAM, 1)}"
    heads = trail.tmp / "job-logs.txt"
    heads.write_text(log_lines(runs))

    # The newest record rewritten: a hash chain cannot see its own head change.
    trail.edit_record(1)
    alone = trail.verify(witness=False)
    assert alone.code == 0, alone.text
    witnessed = trail.verify()
    assert (witnessed.code, witnessed.codes()) == (24, {(1, "witness-mismatch")})
    logs = trail.verify("--head-from", str(heads), witness=False)
    assert (logs.code, logs.codes()) == (24, {(1, "witness-mismatch")})

    # The newest record deleted: the chain alone still looks whole.
    trail.delete_record(1)
    alone = trail.verify(witness=False)
    assert alone.code == 0, alone.text
    witnessed = trail.verify()
    assert (witnessed.code, witnessed.codes()) == (24, {(1, "truncated")})
    assert "seq 1 missing" in witnessed.text
    logs = trail.verify("--head-from", str(heads), witness=False)
    assert (logs.code, logs.codes()) == (24, {(1, "truncated")})


def test_rewritten_newest_record_on_a_signed_chain(trail: Trail) -> None:
    trail.ok_runs(2, "--signing-key", "hmac:env:K")
    trail.edit_record(1)  # by someone without the key: its signature breaks
    alone = trail.verify("--key", "hmac:env:K", witness=False)
    assert alone.code == 24 and (1, "signature") in alone.codes()
    trail.edit_record(1, resign=True)  # with the key the CI job holds: only the witness sees it
    alone = trail.verify("--key", "hmac:env:K", witness=False)
    assert alone.code == 0, alone.text
    witnessed = trail.verify("--key", "hmac:env:K")
    assert (witnessed.code, witnessed.codes()) == (24, {(1, "witness-mismatch")})
    assert "checkpoint signatures not checked" not in witnessed.text


def test_witness_ahead_of_a_regrown_chain(trail: Trail) -> None:
    """The newest records deleted (or the bucket re-created), then the chain grows again:
    the next run's checkpoint conflicts at once, and verify sees the fork and the cut."""
    trail.ok_runs(3)
    trail.delete_record(2)
    trail.delete_record(1)
    regrown = trail.run()
    assert regrown.code == 22, regrown.text
    assert "already holds a checkpoint of another record" in regrown.text
    assert json.loads(trail.record(1))["seq"] == 1  # the record itself landed
    witnessed = trail.verify()
    assert witnessed.code == 24
    assert witnessed.codes() == {(1, "witness-mismatch"), (2, "truncated")}


def test_unwitnessed_records_and_witness_sync(trail: Trail) -> None:
    """Before the witness, an outage, after the witness: what each record names, what verify
    reports, and what witness-sync backfills (the prefix and the tail, not the middle)."""
    trail.ok_runs(1, witness=False)  # seq 0, before the witness was set up
    (first,) = trail.ok_runs(1)  # seq 1
    assert trail.witness_record(1)["missing"] == [[0, 0]]
    assert "no checkpoint for seq 0" in " ".join(first.document()["warnings"])
    down = f"http://127.0.0.1:{free_port()}"
    outage = trail.run("--witness-required", "false", TFAUDIT_WITNESS_ENDPOINT_URL=down)
    assert outage.code == 0, outage.text  # seq 2, the witness unreachable
    assert "no checkpoint was written for seq 2" in " ".join(outage.document()["warnings"])
    assert trail.witness_record(2)["missing"] is None
    trail.ok_runs(1)  # seq 3 names what the outage missed
    assert trail.witness_record(3)["missing"] == [[2, 2]]
    trail.ok_runs(1, witness=False)  # seq 4, the witness forgotten: the witness is behind

    strict = trail.verify("--require-witness")
    assert strict.code == 24
    assert strict.codes() == {(0, "unwitnessed"), (2, "unwitnessed"), (4, "unwitnessed")}

    synced = trail.sync()
    assert synced.code == 0, synced.text
    assert synced.document()["written"] == [[0, 0], [4, 4]]
    assert synced.document()["gaps"] == [[2, 2]]
    assert trail.checkpoint_seqs() == [0, 1, 3, 4]
    assert trail.checkpoint(4)["prev"]["seq"] == 3
    assert_only_unwitnessed(trail, 2)


def test_witness_sync_refuses_a_trail_that_does_not_verify(trail: Trail) -> None:
    trail.ok_runs(2, witness=False)
    trail.edit_record(0)
    refused = trail.sync()
    assert refused.code == 24
    assert "refused" in refused.text
    assert (1, "prev-mismatch") in refused.codes()
    assert trail.checkpoint_seqs() == []


# -- the witness failing during a run ------------------------------------------------------------


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    with running_proxy(s3_server.endpoint) as started:
        yield started


def _checkpoint_put(request: Request) -> bool:
    return request.op == "PutObject" and "/checkpoints/" in request.path


def test_witness_down_with_witness_required(trail: Trail, proxy: FaultProxy) -> None:
    through = {"TFAUDIT_WITNESS_ENDPOINT_URL": proxy.endpoint}
    proxy.add(slow_down(), _checkpoint_put, times=None)
    failed = trail.run(process=True, **through)
    assert failed.code == 22, failed.text
    assert "witness" in failed.document()["error"] and "tfaudit recover" in failed.text
    spool = Path(failed.document()["spool_dir"])
    assert (spool / "spool.json").is_file()
    assert json.loads(trail.record(0))["seq"] == 0  # the record shipped; its checkpoint did not
    assert trail.checkpoint_seqs() == []

    proxy.clear()
    recovered = trail.recover()  # the witness's endpoint comes from the spool
    assert recovered.code == 0, recovered.text
    assert recovered.document()["recovered"][0]["seq"] == 0
    assert not spool.exists()
    assert trail.checkpoint_seqs() == [0]
    proof = trail.verify("--require-witness")
    assert proof.code == 0, proof.text
    assert proof.document()["records"] == {"valid": 1, "total": 1}  # never appended twice


def test_witness_down_without_witness_required(trail: Trail, proxy: FaultProxy) -> None:
    summary = trail.tmp / "step-summary.md"
    github = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_OUTPUT": str(trail.tmp / "outputs"),
        "TFAUDIT_WITNESS_ENDPOINT_URL": proxy.endpoint,
        "TFAUDIT_WITNESS_REQUIRED": "false",
    }
    proxy.add(slow_down(), _checkpoint_put, times=None)
    warned = trail.run(**github)
    assert warned.code == 0, warned.text
    (warning,) = [w for w in warned.document()["warnings"] if "checkpoint" in w]
    assert "no checkpoint was written for seq 0" in warning
    assert "[!WARNING]" in summary.read_text() and "seq 0" in summary.read_text()
    assert "checkpoint-uri<<" in (trail.tmp / "outputs").read_text()

    proxy.clear()
    following = trail.run(**github)
    assert following.code == 0, following.text
    assert trail.witness_record(1) == {"store": trail.witness, "missing": [[0, 0]]}
    assert "no checkpoint for seq 0" in " ".join(following.document()["warnings"])
    assert_only_unwitnessed(trail, 0)


# -- one layout is enough for these ----------------------------------------------------------------


def test_hostile_checkpoints_are_findings_not_crashes(trail: Trail) -> None:
    if trail.layout != "file+s3":
        pytest.skip("one layout is enough: the witness is the same locked bucket")
    trail.ok_runs(1)
    client = trail.server.client()

    def put(name: str, body: bytes) -> None:
        key = f"{PREFIX}/{checkpoint_prefix(STREAM)}{name}"
        client.put_object(Bucket=trail.witness_bucket, Key=key, Body=body)

    put("000000000005.json", b"[" * 40_000 + b"]" * 40_000)  # over the cap
    put("000000000006.json", b"[" * 2_000 + b"]" * 2_000)  # deep, under the cap
    put("999999999999.json", b"not json")  # far away
    put("notes.txt", b"?")
    proc = trail.verify()
    assert proc.code == 24
    assert proc.codes() == {
        (None, "witness-invalid"),
        (5, "witness-invalid"),
        (6, "witness-invalid"),
        (999_999_999_999, "witness-invalid"),
    }


def test_the_witness_uses_its_own_profile_and_endpoint(trail: Trail) -> None:
    if trail.layout != "s3+s3":
        pytest.skip("profiles are S3's")
    Path(trail.env["AWS_CONFIG_FILE"]).write_text("[profile witness]\nregion = us-east-1\n")
    Path(trail.env["AWS_SHARED_CREDENTIALS_FILE"]).write_text(
        f"[witness]\naws_access_key_id = {trail.server.access_key}\n"
        f"aws_secret_access_key = {trail.server.secret_key}\n"
    )
    endpoint = trail.server.endpoint
    trail.ok_runs(1, "--witness-profile", "witness", "--witness-endpoint-url", endpoint)
    assert trail.checkpoint_seqs() == [0]
    missing = trail.run("--witness-profile", "nobody")
    assert missing.code == 20 and "nobody" in missing.text
    not_s3 = trail.run("--witness", (trail.tmp / "w").as_uri(), "--witness-profile", "witness")
    assert not_s3.code == 20 and "witness-profile is for S3 witnesses" in not_s3.text


def test_concurrent_runs_keep_every_checkpoint_link_resolvable(trail: Trail) -> None:
    """Runs appending at once (real processes) may link to one predecessor; every link
    still resolves, and nothing is left unwitnessed."""
    if trail.layout != "s3+s3":
        pytest.skip("one layout is enough")
    from concurrent.futures import ThreadPoolExecutor

    args = ["run", "--store", trail.primary, "--stream", STREAM, *trail.policy]
    args += ["--witness", trail.witness, "--", sys.executable, "-c", "pass"]
    with ThreadPoolExecutor(max_workers=3) as pool:
        runs = list(pool.map(lambda _: tfaudit(args, env=trail.env, cwd=trail.tmp), range(3)))
    assert [run.returncode for run in runs] == [0, 0, 0], [run.stderr for run in runs]
    assert trail.checkpoint_seqs() == [0, 1, 2]
    proof = trail.verify("--require-witness")
    assert proof.code == 0, proof.text
