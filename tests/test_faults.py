"""Network faults between tfaudit and a real S3 server (issue 7, section 1).

A fault-injecting proxy (tests/support/faultproxy.py) sits between `tfaudit run` and the S3 server.
Every run ends in one of two ways: it succeeds with exactly one chain entry, no gap, and the
stored artifacts byte-equal to the spool; or it fails with exit 22/23, keeps the spool and
prints its path, and a later `tfaudit recover` ships it (still exactly one entry). "Bounded
time" is enforced by the subprocess timeout, derived from the configured connect/read
timeouts and attempts: a hang fails the test, but no speed is asserted.
"""

from __future__ import annotations

import hashlib
import itertools
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devkit.servers import S3Server
from devkit.tfhelpers import isolated_env, pinned_terraform, tf_init, write_null_config
from tests.support.faultproxy import (
    Delay,
    DropAfterCommit,
    FaultProxy,
    Request,
    Reset,
    Stall,
    op_is,
    running_proxy,
    slow_down,
)
from tests.support.tfaudit_proc import chain_records, result_json, tfaudit

STREAM = "acme/faults"
PREFIX = "audit"
CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 3.0
MAX_ATTEMPTS = 4
# Generous upper bound on one tfaudit run under persistent faults: every attempt of every
# request may wait out both timeouts, plus botocore's capped backoff, plus terraform itself.
RUN_BOUND = 60 + 8 * MAX_ATTEMPTS * (CONNECT_TIMEOUT + READ_TIMEOUT + 2)


@pytest.fixture(scope="module")
def tf_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """One `terraform init`-ed null-resource config, shared by the module (plan only)."""
    base = tmp_path_factory.mktemp("faults-tf")
    env = isolated_env(base / "env")
    workdir = base / "work"
    write_null_config(workdir, count=2)
    tf_init(pinned_terraform(), workdir, env)
    return workdir, env


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    with running_proxy(s3_server.endpoint) as started:
        yield started


def _env(base: dict[str, str], server: S3Server, proxy: FaultProxy, work: Path) -> dict[str, str]:
    return {
        **base,
        **server.env(),
        "AWS_ENDPOINT_URL": proxy.endpoint,
        "AWS_ENDPOINT_URL_S3": proxy.endpoint,
        "TFAUDIT_WORK_DIR": str(work),
        "TFAUDIT_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT),
        "TFAUDIT_READ_TIMEOUT": str(READ_TIMEOUT),
        "TFAUDIT_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
    }


def _plan(bucket: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    command = [str(pinned_terraform()), "plan", "-input=false", "-no-color", "-out=tfplan"]
    store = f"s3://{bucket}/{PREFIX}"
    return tfaudit(
        ["run", "--store", store, "--stream", STREAM, "--json", "--", *command],
        env={**env, "TF_LOG": "trace"},
        cwd=cwd,
        timeout=RUN_BOUND,
    )


def _recover(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return tfaudit(["recover", "--json"], env=env, cwd=cwd, timeout=RUN_BOUND)


def _assert_chain_whole(client: Any, bucket: str, runs: int) -> list[dict[str, Any]]:
    """Exactly ``runs`` records, seq 0..runs-1, one per run folder, each linked to the last."""
    records = chain_records(client, bucket, STREAM, prefix=PREFIX)
    assert [r["seq"] for r in records] == list(range(runs))
    assert len({r["run_folder"] for r in records}) == runs
    for before, after in itertools.pairwise(records):
        key = f"{PREFIX}/{STREAM}/chain/{before['seq']:012d}.json"
        versions = client.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
        oldest = versions[-1]["VersionId"]
        data = client.get_object(Bucket=bucket, Key=key, VersionId=oldest)["Body"].read()
        assert after["prev"] == {"seq": before["seq"], "sha256": hashlib.sha256(data).hexdigest()}
    return records


def _shipped(spool: Path) -> Path:
    return spool.parent.parent / "shipped" / spool.name


def _assert_artifacts_match_spool(
    client: Any, bucket: str, record: dict[str, Any], spool: Path
) -> None:
    names = {a["name"] for a in record["artifacts"]}
    assert names == {"output.log", "plan.json"}
    for artifact in record["artifacts"]:
        body = client.get_object(
            Bucket=bucket, Key=f"{PREFIX}/{artifact['key']}", VersionId=artifact["version_id"]
        )["Body"].read()
        assert body == (spool / artifact["name"]).read_bytes()
        assert hashlib.sha256(body).hexdigest() == artifact["sha256"]


def _chain_write(request: Request) -> bool:
    return request.is_chain_write


def _artifact_write(request: Request) -> bool:
    return request.op == "PutObject" and not request.is_chain_write


Scenario = Callable[[FaultProxy], list[Any]]

# Transient faults: each must be absorbed by retries (and, for the ambiguous write, by
# recognising the record that already landed) with no duplicate and no gap.
TRANSIENT: dict[str, Scenario] = {
    "resets-on-every-kind-of-request": lambda p: (
        [
            p.add(Reset(), op_is(op))
            for op in ("PutObject", "HeadObject", "ListObjectVersions", "GetObject")
        ]
        + [p.add(Reset(), _chain_write)]
    ),
    "slowdown-burst": lambda p: [
        p.add(slow_down(), _artifact_write, times=MAX_ATTEMPTS - 1),
        p.add(slow_down(), _chain_write, times=MAX_ATTEMPTS - 1),
    ],
    "latency-spikes": lambda p: [  # the first matching fault applies: spikes go first
        p.add(Delay(READ_TIMEOUT + 1), op_is("HeadObject")),  # waits out the read timeout
        p.add(Delay(READ_TIMEOUT + 1), _chain_write),
        p.add(Delay(0.3), times=None),  # and every other request is slow
    ],
    "stall-mid-upload": lambda p: [p.add(Stall(READ_TIMEOUT * 4), _artifact_write)],
    "artifact-response-dropped-after-commit": lambda p: [p.add(DropAfterCommit(), _artifact_write)],
    "record-response-dropped-after-commit": lambda p: [p.add(DropAfterCommit(), _chain_write)],
}


@pytest.mark.parametrize("scenario", list(TRANSIENT))
def test_transient_fault_still_ships_exactly_one_record(
    scenario: str,
    s3_server: S3Server,
    lock_bucket: str,
    proxy: FaultProxy,
    tf_dir: tuple[Path, dict[str, str]],
    tmp_path: Path,
) -> None:
    workdir, base_env = tf_dir
    env = _env(base_env, s3_server, proxy, tmp_path / "spools")
    first = _plan(lock_bucket, env, workdir)  # a clean run first: the faulted one has a prev
    assert first.returncode == 0, first.stderr.decode()

    faults = TRANSIENT[scenario](proxy)
    faulted = _plan(lock_bucket, env, workdir)
    assert faulted.returncode == 0, faulted.stderr.decode()
    assert all(f.fired for f in faults), [(f.action, f.fired) for f in faults]

    client = s3_server.client()
    records = _assert_chain_whole(client, lock_bucket, runs=2)
    result = result_json(faulted)
    assert result["audit_ok"] is True and result["seq"] == 1
    shipped = Path(result["log_path"]).parent  # the spool is gone; its outputs are kept
    assert result["spool_dir"] is None and records[1]["run_folder"] == shipped.name
    _assert_artifacts_match_spool(client, lock_bucket, records[1], shipped)


def test_record_write_lands_but_every_answer_is_lost_then_recover_does_not_duplicate(
    s3_server: S3Server,
    lock_bucket: str,
    proxy: FaultProxy,
    tf_dir: tuple[Path, dict[str, str]],
    tmp_path: Path,
) -> None:
    """The ambiguous failure at its worst: the record is committed, tfaudit never learns it.

    tfaudit must fail (it cannot confirm), keep the spool; recover must then recognise the
    record by its run folder instead of appending a second one.
    """
    workdir, base_env = tf_dir
    env = _env(base_env, s3_server, proxy, tmp_path / "spools")
    dropped = proxy.add(DropAfterCommit(), _chain_write, times=None)
    proc = _plan(lock_bucket, env, workdir)
    assert proc.returncode == 22, proc.stderr.decode()
    assert dropped.fired >= 1
    result = result_json(proc)
    spool = Path(result["spool_dir"])
    assert str(spool).encode() in proc.stderr and (spool / "output.log").is_file()
    client = s3_server.client()
    assert len(chain_records(client, lock_bucket, STREAM, prefix=PREFIX)) == 1  # it did land

    proxy.clear()
    recovered = _recover(env, workdir)
    assert recovered.returncode == 0, recovered.stderr.decode()
    again = _recover(env, workdir)
    assert again.returncode == 0 and b"nothing to recover" in again.stderr
    records = _assert_chain_whole(client, lock_bucket, runs=1)
    assert records[0]["run_folder"] == spool.name
    assert records[0]["status"] == "succeeded"  # the run's own outcome, not "interrupted"


PERSISTENT: dict[str, tuple[Scenario, int, str]] = {
    # name: (faults, expected exit, text expected in the one-line error)
    "resets-on-upload": (
        lambda p: [p.add(Reset(), _artifact_write, times=None)],
        22,
        "cannot reach the store",
    ),
    "stalled-upload": (
        lambda p: [p.add(Stall(READ_TIMEOUT * 4), _artifact_write, times=None)],
        22,
        "timed out",
    ),
    "slowdown-on-record": (
        lambda p: [p.add(slow_down(), _chain_write, times=None)],
        22,
        "SlowDown",
    ),
    "resets-on-read-back": (
        lambda p: [p.add(Reset(), op_is("HeadObject"), times=None)],
        23,
        "reading back",
    ),
}


@pytest.mark.parametrize("scenario", list(PERSISTENT))
def test_persistent_fault_fails_bounded_keeps_spool_and_recover_ships_it(
    scenario: str,
    s3_server: S3Server,
    lock_bucket: str,
    proxy: FaultProxy,
    tf_dir: tuple[Path, dict[str, str]],
    tmp_path: Path,
) -> None:
    workdir, base_env = tf_dir
    env = _env(base_env, s3_server, proxy, tmp_path / "spools")
    make_faults, exit_code, message = PERSISTENT[scenario]
    faults = make_faults(proxy)
    proc = _plan(lock_bucket, env, workdir)  # the subprocess timeout is the time bound
    stderr = proc.stderr.decode()
    assert proc.returncode == exit_code, stderr
    assert all(f.fired >= MAX_ATTEMPTS for f in faults)  # retried, then gave up
    assert message in stderr and "Traceback" not in stderr
    result = result_json(proc)
    assert result["audit_ok"] is False and result["command_exit_code"] == 0
    spool = Path(result["spool_dir"])
    assert f"the spool is kept at {spool}" in stderr
    assert b"Terraform will perform" in (spool / "output.log").read_bytes()
    client = s3_server.client()
    assert chain_records(client, lock_bucket, STREAM, prefix=PREFIX) == []

    proxy.clear()  # the network heals; the post step recovers the spool
    recovered = _recover(env, workdir)
    assert recovered.returncode == 0, recovered.stderr.decode()
    records = _assert_chain_whole(client, lock_bucket, runs=1)
    assert records[0]["run_folder"] == spool.name and records[0]["status"] == "succeeded"
    assert not spool.exists()  # shipped: the spool is removed, its outputs kept apart
    _assert_artifacts_match_spool(client, lock_bucket, records[0], _shipped(spool))


def test_stall_mid_multipart_upload_is_retried(
    s3_server: S3Server, lock_bucket: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    """A 7 MiB log goes up in parts; the store stops reading half-way through one part."""
    env = _env(isolated_env(tmp_path / "env"), s3_server, proxy, tmp_path / "spools")
    env["TFAUDIT_MULTIPART_THRESHOLD"] = str(5 * 1024 * 1024)
    script = (
        "import sys\n"
        "line = b'2026-11-29T12:00:00.000Z [TRACE] provider: tf_rpc=ReadResource ' * 2 + b'\\n'\n"
        "sys.stdout.buffer.write(line * (7 * 1024 * 1024 // len(line)))\n"
    )
    stall = proxy.add(Stall(READ_TIMEOUT * 4), op_is("UploadPart"))
    store = f"s3://{lock_bucket}/{PREFIX}"
    proc = tfaudit(
        ["run", "--store", store, "--stream", STREAM, "--json", "--", sys.executable, "-c", script],
        env=env,
        cwd=tmp_path,
        timeout=RUN_BOUND,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert stall.fired == 1 and "CompleteMultipartUpload" in proxy.ops()
    client = s3_server.client()
    (record,) = _assert_chain_whole(client, lock_bucket, runs=1)
    (log,) = record["artifacts"]
    spooled = Path(result_json(proc)["log_path"]).read_bytes()
    body = client.get_object(
        Bucket=lock_bucket, Key=f"{PREFIX}/{log['key']}", VersionId=log["version_id"]
    )["Body"].read()
    assert len(body) > 5 * 1024 * 1024 and body == spooled
