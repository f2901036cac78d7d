"""`tfaudit run` end to end: a real terraform, a real S3 server over HTTP (issue 2)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devkit.servers import S3Server, make_lock_bucket, make_plain_bucket, unique_bucket
from devkit.tfhelpers import write_null_config
from tests.support.tfaudit_proc import chain_records, result_json, tfaudit

STREAM = "acme/infra"


def _env(tf_env: dict[str, str], server: S3Server, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **tf_env,
        **server.env(),
        "TFAUDIT_WORK_DIR": str(tmp_path / "spools"),
        "TFAUDIT_CONNECT_TIMEOUT": "2",
        "TFAUDIT_READ_TIMEOUT": "20",
        **extra,
    }


def _run(
    store: str, command: list[str], *, env: dict[str, str], cwd: Path, extra: list[str] = ()
) -> subprocess.CompletedProcess[bytes]:
    return tfaudit(
        ["run", "--store", store, "--stream", STREAM, "--json", *extra, "--", *command],
        env=env,
        cwd=cwd,
    )


def _stored(client: Any, bucket: str, artifact: dict[str, Any], prefix: str = "audit") -> bytes:
    """An artifact's bytes; record keys are relative to the store's prefix."""
    key = f"{prefix}/{artifact['key']}"
    response = client.get_object(Bucket=bucket, Key=key, VersionId=artifact["version_id"])
    data: bytes = response["Body"].read()
    return data


def _artifact(record: dict[str, Any], name: str) -> dict[str, Any]:
    return next(a for a in record["artifacts"] if a["name"] == name)


def test_plan_apply_destroy_pass_exit_codes_and_chain(
    s3_server: S3Server,
    lock_bucket: str,
    terraform_bin: Path,
    tf_workdir: Path,
    tf_env: dict[str, str],
    tmp_path: Path,
) -> None:
    env = _env(tf_env, s3_server, tmp_path)
    store = f"s3://{lock_bucket}/audit"
    tf = str(terraform_bin)
    client = s3_server.client()

    plan = _run(
        store,
        [tf, "plan", "-input=false", "-out=tfplan", "-detailed-exitcode"],
        env=env,
        cwd=tf_workdir,
    )
    assert plan.returncode == 2, plan.stderr.decode()
    assert b"1 to add" in plan.stdout  # the console still shows terraform's own output
    result = result_json(plan)
    assert result["status"] == "succeeded" and result["audit_ok"] is True
    assert result["plan"] == {"add": 1, "change": 0, "destroy": 0, "import": 0}

    apply = _run(store, [tf, "apply", "-input=false", "tfplan"], env=env, cwd=tf_workdir)
    assert apply.returncode == 0, apply.stderr.decode()

    unchanged = _run(
        store,
        [tf, "plan", "-input=false", "-out=tfplan2", "-detailed-exitcode"],
        env=env,
        cwd=tf_workdir,
    )
    assert unchanged.returncode == 0, unchanged.stderr.decode()

    destroy = _run(store, [tf, "destroy", "-auto-approve", "-input=false"], env=env, cwd=tf_workdir)
    assert destroy.returncode == 0, destroy.stderr.decode()

    write_null_config(tf_workdir, fail=True)
    failed = _run(store, [tf, "plan", "-input=false", "-out=tfplan3"], env=env, cwd=tf_workdir)
    assert failed.returncode == 1, failed.stderr.decode()
    assert result_json(failed)["status"] == "failed"

    records = chain_records(client, lock_bucket, STREAM, prefix="audit")
    assert [r["seq"] for r in records] == [0, 1, 2, 3, 4]
    assert [r["exit_code"] for r in records] == [2, 0, 0, 0, 1]
    assert [r["status"] for r in records] == ["succeeded"] * 4 + ["failed"]
    assert records[0]["prev"] is None
    raw = [
        client.get_object(Bucket=lock_bucket, Key=f"audit/{STREAM}/chain/{r['seq']:012d}.json")[
            "Body"
        ].read()
        for r in records
    ]
    for before, after, data in zip(records[:-1], records[1:], raw[:-1], strict=True):
        assert after["prev"] == {"seq": before["seq"], "sha256": hashlib.sha256(data).hexdigest()}

    plan_sha = hashlib.sha256((tf_workdir / "tfplan").read_bytes()).hexdigest()
    assert records[0]["plan"]["plan_file_sha256"] == plan_sha
    assert records[1]["plan"]["plan_file_sha256"] == plan_sha  # the apply is bound to the plan
    assert records[0]["tool"]["name"] == "terraform" and records[0]["tool"]["version"]
    assert records[0]["workspace"] == "default"

    log = _artifact(records[0], "output.log")
    body = _stored(client, lock_bucket, log)
    assert hashlib.sha256(body).hexdigest() == log["sha256"] and len(body) == log["size"]
    assert b"1 to add" in body
    head = client.head_object(
        Bucket=lock_bucket, Key=f"audit/{log['key']}", VersionId=log["version_id"]
    )
    assert head["ObjectLockMode"] == "COMPLIANCE"
    plan_json = json.loads(_stored(client, lock_bucket, _artifact(records[0], "plan.json")))
    assert plan_json["resource_changes"][0]["address"] == "null_resource.item[0]"


@pytest.mark.parametrize("problem", ["no-object-lock", "one-day-retention", "governance"])
def test_preflight_refuses_unlocked_bucket_before_running(
    s3_server: S3Server, problem: str, tf_env: dict[str, str], tmp_path: Path
) -> None:
    client = s3_server.client()
    bucket = unique_bucket()
    if problem == "no-object-lock":
        make_plain_bucket(client, bucket)
    elif problem == "one-day-retention":
        make_lock_bucket(client, bucket, days=1)
    else:
        make_lock_bucket(client, bucket, mode="GOVERNANCE")
    marker = tmp_path / "command-ran"
    proc = _run(
        f"s3://{bucket}/audit",
        [sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"],
        env=_env(tf_env, s3_server, tmp_path),
        cwd=tmp_path,
        extra=["--retention-days", "365"],
    )
    assert proc.returncode == 21, proc.stderr.decode()
    assert not marker.exists()
    assert b"not locked as policy requires" in proc.stderr


def test_missing_bucket_exits_21_naming_it(
    s3_server: S3Server, tf_env: dict[str, str], tmp_path: Path
) -> None:
    proc = _run(
        "s3://no-such-bucket-tfa/x",
        [sys.executable, "-c", "pass"],
        env=_env(tf_env, s3_server, tmp_path),
        cwd=tmp_path,
    )
    assert proc.returncode == 21
    assert b"no-such-bucket-tfa" in proc.stderr and b"does not exist" in proc.stderr


def test_server_stopped_mid_run_exits_22_and_keeps_spool(
    moto_server: S3Server, tf_env: dict[str, str], tmp_path: Path
) -> None:
    bucket = unique_bucket()
    make_lock_bucket(moto_server.client(), bucket)
    assert moto_server._process is not None
    pid = moto_server._process.pid
    # The wrapped command kills the server, then exits 0: the audit must not look green.
    killer = (
        "import os, signal, time\n"
        f"os.kill({pid}, signal.SIGKILL)\n"
        "time.sleep(0.5)\n"
        "print('command output that must not be lost')\n"
    )
    env = _env(tf_env, moto_server, tmp_path, TFAUDIT_MAX_ATTEMPTS="2", TFAUDIT_CONNECT_TIMEOUT="1")
    proc = _run(f"s3://{bucket}/audit", [sys.executable, "-c", killer], env=env, cwd=tmp_path)
    assert proc.returncode == 22, proc.stderr.decode()
    result = result_json(proc)
    assert result["command_exit_code"] == 0 and result["audit_ok"] is False
    spool = Path(result["log_path"])
    assert spool.read_bytes() == b"command output that must not be lost\n"
    assert str(Path(result["spool_dir"])).encode() in proc.stderr


SECRET_VALUE = "s3cr3t-V4lue-that-must-not-persist"
SPLIT_SECRET = "split-across-chunks-9f8e7d6c5b4a"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"


def test_secrets_redacted_in_store_but_shown_on_console(
    s3_server: S3Server, lock_bucket: str, tf_env: dict[str, str], tmp_path: Path
) -> None:
    half = len(SPLIT_SECRET) // 2
    script = (
        "import os, sys, time\n"
        "out = sys.stdout\n"
        "out.write('db password: ' + os.environ['TF_VAR_db_password'] + '\\n')\n"
        f"out.write('key id {AWS_KEY} in use\\n')\n"
        f"out.write('token ' + {SPLIT_SECRET[:half]!r}); out.flush(); time.sleep(0.3)\n"
        f"out.write({SPLIT_SECRET[half:]!r} + ' end\\n'); out.flush()\n"
    )
    env = _env(
        tf_env, s3_server, tmp_path, TF_VAR_db_password=SECRET_VALUE, DEPLOY_TOKEN=SPLIT_SECRET
    )
    proc = _run(f"s3://{lock_bucket}/audit", [sys.executable, "-c", script], env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    for secret in (SECRET_VALUE, SPLIT_SECRET, AWS_KEY):
        assert secret.encode() in proc.stdout  # the console is left to the CI's own masking
    record = chain_records(s3_server.client(), lock_bucket, STREAM, prefix="audit")[-1]
    stored = _stored(s3_server.client(), lock_bucket, _artifact(record, "output.log"))
    spooled = Path(result_json(proc)["log_path"]).read_bytes()
    for blob in (stored, spooled, json.dumps(record).encode()):
        for secret in (SECRET_VALUE, SPLIT_SECRET, AWS_KEY):
            assert secret.encode() not in blob
    assert b"REDACTED" in stored
    assert sum(record["redactions"].values()) >= 3
