"""The spool is the contract (issue 11): ``run`` and ``recover`` ship through one path.

* ``recover`` ships a spool to the store, endpoint, stream and policy recorded in it, never to
  the store on its own command line (that spool is skipped, unless ``--all-stores``);
* a spool shipped by ``recover`` after its run was SIGKILLed while shipping gives the record
  ``run`` would have shipped, field for field, apart from timing;
* retention is the longer of the policy and the bucket's default;
* ``--on-unlocked warn`` on a bucket without Object Lock: plain writes, exit 0, a record that
  says it is not WORM-protected;
* the small wrong answers of the issue's item 6.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from devkit.servers import S3Server, make_lock_bucket, make_plain_bucket, unique_bucket
from tests.support.faultproxy import Respond, Stall, op_is, running_proxy
from tests.support.tfaudit_proc import chain_records, result_json, tfaudit

STREAM = "acme/contract"
PREFIX = "audit"
PRINT = "print('planned: 1 to add'); import sys; sys.stdout.write('no newline at the end')"


def _env(base: dict[str, str], server: S3Server, work: Path) -> dict[str, str]:
    """Credentials only: no endpoint in the environment, so every command names its own."""
    env = {**base, **server.env(), "TFAUDIT_WORK_DIR": str(work)}
    env.pop("AWS_ENDPOINT_URL", None)
    env.pop("AWS_ENDPOINT_URL_S3", None)
    env["TFAUDIT_MAX_ATTEMPTS"] = "1"
    env["TFAUDIT_CONNECT_TIMEOUT"] = "2"
    env["TFAUDIT_READ_TIMEOUT"] = "5"
    return env


def _run(
    bucket: str, env: dict[str, str], cwd: Path, *extra: str, script: str = PRINT
) -> subprocess.CompletedProcess[bytes]:
    return tfaudit(
        [
            "run",
            "--store",
            f"s3://{bucket}/{PREFIX}",
            "--stream",
            STREAM,
            "--json",
            *extra,
            "--",
            sys.executable,
            "-c",
            script,
        ],
        env=env,
        cwd=cwd,
    )


def test_recover_ships_to_the_recorded_store_and_endpoint_never_the_given_one(
    s3_server: S3Server, tf_env: dict[str, str], tmp_path: Path
) -> None:
    """The run's endpoint came only from its flag; its ship failed; a bare `recover` (no
    endpoint anywhere, another store on its command line) must not ship it elsewhere."""
    home, other = unique_bucket(), unique_bucket()
    client = s3_server.client()
    make_lock_bucket(client, home)
    make_lock_bucket(client, other)
    env = _env(tf_env, s3_server, tmp_path / "work")
    with running_proxy(s3_server.endpoint) as proxy:
        refused = proxy.add(
            Respond(503, "ServiceUnavailable", "down"), op_is("PutObject"), times=None
        )
        failed = _run(home, env, tmp_path, "--endpoint-url", proxy.endpoint)
        assert failed.returncode == 22, failed.stderr.decode()
        assert refused.fired >= 1
        spool = Path(result_json(failed)["spool_dir"])
        state = json.loads((spool / "spool.json").read_bytes())
        assert state["store"] == f"s3://{home}/{PREFIX}" and state["phase"] == "complete"
        assert state["store_options"]["endpoint_url"] == proxy.endpoint
        proxy.clear()

        # Another store on the command line: the spool is not its to ship.
        elsewhere = tfaudit(
            ["recover", "--store", f"s3://{other}/{PREFIX}", "--json"], env=env, cwd=tmp_path
        )
        assert elsewhere.returncode == 0, elsewhere.stderr.decode()
        assert b"--all-stores" in elsewhere.stderr and spool.exists()
        assert result_json(elsewhere)["recovered"] == [
            {"spool": str(spool), "skipped": f"s3://{home}/{PREFIX}"}
        ]
        assert chain_records(client, other, STREAM, prefix=PREFIX) == []
        assert chain_records(client, home, STREAM, prefix=PREFIX) == []

        # --all-stores: each spool goes home, through the endpoint recorded with it.
        shipped = tfaudit(
            ["recover", "--store", f"s3://{other}/{PREFIX}", "--all-stores"], env=env, cwd=tmp_path
        )
        assert shipped.returncode == 0, shipped.stderr.decode()
        assert "PutObject" in proxy.ops()  # it went through the recorded endpoint
    assert chain_records(client, other, STREAM, prefix=PREFIX) == []
    (record,) = chain_records(client, home, STREAM, prefix=PREFIX)
    assert record["run_folder"] == spool.name and record["status"] == "succeeded"
    assert not spool.exists()


def test_bare_recover_with_no_configuration_uses_the_spool(
    s3_server: S3Server, lock_bucket: str, tf_env: dict[str, str], tmp_path: Path
) -> None:
    """The host action's backstop: `tfaudit recover` with no flags, no store, no endpoint."""
    env = _env(tf_env, s3_server, tmp_path / "work")
    with running_proxy(s3_server.endpoint) as proxy:
        proxy.add(Respond(503, "ServiceUnavailable", "down"), op_is("PutObject"), times=None)
        failed = _run(lock_bucket, env, tmp_path, "--endpoint-url", proxy.endpoint)
        assert failed.returncode == 22
        proxy.clear()
        bare = tfaudit(["recover"], env=env, cwd=tmp_path)
    assert bare.returncode == 0, bare.stderr.decode()
    assert len(chain_records(s3_server.client(), lock_bucket, STREAM, prefix=PREFIX)) == 1


def _without_timing(record: dict[str, Any]) -> dict[str, Any]:
    drop = {"seq", "prev", "signature", "artifacts", "retention"}
    return {key: value for key, value in record.items() if key not in drop}


def test_recovered_record_equals_what_run_would_have_shipped(
    s3_server: S3Server, lock_bucket: str, tf_env: dict[str, str], tmp_path: Path
) -> None:
    """One run ships normally; an identical run is SIGKILLed while it ships (its record
    write stalls), then `recover` ships its spool. Apart from identity of the run (folder,
    times) the two records are equal field for field: plan, redactions, tool, status."""
    env = {**_env(tf_env, s3_server, tmp_path / "work"), "SECRET_TOKEN": "s3cr3t-value-1234"}
    script = "print('token s3cr3t-value-1234 and more'); print('plan: 1 to add')"
    with running_proxy(s3_server.endpoint) as proxy:
        normal = _run(lock_bucket, env, tmp_path, "--endpoint-url", proxy.endpoint, script=script)
        assert normal.returncode == 0, normal.stderr.decode()
        stall = proxy.add(Stall(seconds=60), lambda r: r.is_chain_write, times=None)
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "tfaudit_ci", "run", "--store", f"s3://{lock_bucket}/{PREFIX}",
                "--stream", STREAM, "--endpoint-url", proxy.endpoint, "--read-timeout", "60",
                "--", sys.executable, "-c", script,
            ],
            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not stall.fired and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stall.fired, "the record write never started"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proxy.clear()
        # Locks are whole seconds: recover's own lock now ends later than the one the run put
        # on its log, which the record must not overstate (verify holds artifacts to it).
        time.sleep(2.1)
        recovered = tfaudit(["recover"], env=env, cwd=tmp_path)
    assert recovered.returncode == 0, recovered.stderr.decode()
    first, second = chain_records(s3_server.client(), lock_bucket, STREAM, prefix=PREFIX)
    assert second["redactions"] and second["redactions"] == first["redactions"]
    same = {"run_folder", "started_at", "finished_at"}
    a, b = _without_timing(first), _without_timing(second)
    assert {k: v for k, v in a.items() if k not in same} == {
        k: v for k, v in b.items() if k not in same
    }
    assert [x["name"] for x in first["artifacts"]] == [x["name"] for x in second["artifacts"]]
    assert [x["sha256"] for x in first["artifacts"]] == [x["sha256"] for x in second["artifacts"]]
    # The recovered run's artifacts were uploaded before the kill: recover pins those
    # versions instead of uploading a second, unpinned one.
    verify = tfaudit(
        ["verify", "--store", f"s3://{lock_bucket}/{PREFIX}", "--stream", STREAM],
        env={**env, "AWS_ENDPOINT_URL": s3_server.endpoint},
        cwd=tmp_path,
    )
    assert verify.returncode == 0, verify.stdout.decode()


def test_retention_is_the_longer_of_policy_and_bucket_default(
    s3_server: S3Server, tf_env: dict[str, str], tmp_path: Path
) -> None:
    bucket = unique_bucket()
    client = s3_server.client()
    make_lock_bucket(client, bucket, days=2555)
    env = {**tf_env, **s3_server.env(), "TFAUDIT_WORK_DIR": str(tmp_path / "work")}
    before = dt.datetime.now(dt.timezone.utc)
    proc = _run(bucket, env, tmp_path, "--retention-days", "365")
    assert proc.returncode == 0, proc.stderr.decode()
    (record,) = chain_records(client, bucket, STREAM, prefix=PREFIX)
    floor = before + dt.timedelta(days=2555) - dt.timedelta(minutes=5)
    keys = [(f"{PREFIX}/{a['key']}", a["version_id"]) for a in record["artifacts"]]
    keys.append((f"{PREFIX}/{STREAM}/chain/000000000000.json", None))
    for key, version in keys:
        extra = {"VersionId": version} if version else {}
        head = client.head_object(Bucket=bucket, Key=key, **extra)
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert head["ObjectLockRetainUntilDate"] >= floor, key
    assert (
        dt.datetime.fromisoformat(record["retention"]["retain_until"].replace("Z", "+00:00"))
        >= floor
    )
    verify = tfaudit(
        ["verify", "--store", f"s3://{bucket}/{PREFIX}", "--stream", STREAM], env=env, cwd=tmp_path
    )
    assert verify.returncode == 0, verify.stdout.decode()


@pytest.mark.moto
def test_warn_mode_on_a_plain_bucket_ships_plain_objects_and_says_so(
    s3_server: S3Server, tf_env: dict[str, str], tmp_path: Path
) -> None:
    bucket = unique_bucket()
    client = s3_server.client()
    make_plain_bucket(client, bucket)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    env = {**tf_env, **s3_server.env(), "TFAUDIT_WORK_DIR": str(tmp_path / "work")}
    marker = tmp_path / "side-effect"
    proc = _run(bucket, env, tmp_path, "--on-unlocked", "warn",
                script=f"open({str(marker)!r}, 'w').close()")  # fmt: skip
    assert marker.exists()
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"not WORM" in proc.stderr
    (record,) = chain_records(client, bucket, STREAM, prefix=PREFIX)
    assert record["retention"]["store_worm"] is False
    assert record["retention"]["mode"] is None and record["retention"]["retain_until"] is None
    assert "not WORM" in record["retention"]["note"]
    head = client.head_object(Bucket=bucket, Key=f"{PREFIX}/{STREAM}/chain/000000000000.json")
    assert "ObjectLockMode" not in head


def test_check_json_details_agree_with_ok(
    s3_server: S3Server, lock_bucket: str, tf_env: dict[str, str], tmp_path: Path
) -> None:
    plain = unique_bucket()
    make_plain_bucket(s3_server.client(), plain)
    env = {**tf_env, **s3_server.env()}
    good = tfaudit(["check", "--store", f"s3://{lock_bucket}/p", "--json"], env=env, cwd=tmp_path)
    assert good.returncode == 0, good.stderr.decode()
    document = result_json(good)
    assert document["ok"] is True and document["worm"] is True
    details = {c["name"]: c["detail"] for c in document["checks"]}
    assert details["object-lock"] == "Object Lock is enabled"
    assert all(c["ok"] for c in document["checks"])
    bad = tfaudit(["check", "--store", f"s3://{plain}/p", "--json"], env=env, cwd=tmp_path)
    assert bad.returncode == 21
    failed = {c["name"]: c["detail"] for c in result_json(bad)["checks"] if not c["ok"]}
    assert failed["object-lock"] == "Object Lock is not enabled"


def test_summary_line_starts_on_its_own_line(
    s3_server: S3Server, lock_bucket: str, tf_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**tf_env, **s3_server.env(), "TFAUDIT_WORK_DIR": str(tmp_path / "work")}
    script = "import sys; sys.stderr.write('\\x1b[0m'); sys.stderr.flush()"
    proc = _run(lock_bucket, env, tmp_path, script=script)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"\x1b[0m\ntfaudit: succeeded" in proc.stderr


def test_partial_and_missing_credentials_are_both_preflight_failures(
    lock_bucket: str, s3_server: S3Server, tf_env: dict[str, str], tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    script = f"open({str(marker)!r}, 'w').close()"
    base = {**tf_env, "AWS_ENDPOINT_URL": s3_server.endpoint, "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull}  # fmt: skip
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        base.pop(name, None)
    partial = _run(lock_bucket, {**base, "AWS_ACCESS_KEY_ID": "AKIDONLY"}, tmp_path, script=script)
    missing = _run(lock_bucket, base, tmp_path, script=script)
    assert (partial.returncode, missing.returncode) == (21, 21), (
        partial.stderr.decode() + missing.stderr.decode()
    )
    assert b"no AWS credentials" in partial.stderr and b"no AWS credentials" in missing.stderr
    assert not marker.exists()


def test_no_litter_in_the_checkout_and_recover_still_finds_a_kept_spool(
    s3_server: S3Server, lock_bucket: str, tf_env: dict[str, str], tmp_path: Path
) -> None:
    """By default spools live in the temporary folder, never in the checkout; a shipped
    spool is removed (its redacted outputs kept apart for later steps); a failed one is
    kept, and a bare `recover` finds it."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**_env(tf_env, s3_server, tmp_path / "unused"), "TMPDIR": str(temp)}
    del env["TFAUDIT_WORK_DIR"]
    work = temp / f"tfaudit-{os.getuid()}"
    ok = _run(lock_bucket, env, checkout, "--endpoint-url", s3_server.endpoint)
    assert ok.returncode == 0, ok.stderr.decode()
    assert list(checkout.iterdir()) == []
    assert list((work / "spool").iterdir()) == []
    assert (work / ".gitignore").read_text().endswith("*\n")  # in a checkout: never untracked
    log_path = Path(result_json(ok)["log_path"])
    assert log_path.parent.parent == work / "shipped" and log_path.read_bytes()
    with running_proxy(s3_server.endpoint) as proxy:
        proxy.add(Respond(503, "ServiceUnavailable", "down"), op_is("PutObject"), times=None)
        failed = _run(lock_bucket, env, checkout, "--endpoint-url", proxy.endpoint)
        assert failed.returncode == 22
        (kept,) = (work / "spool").iterdir()
        assert Path(result_json(failed)["spool_dir"]) == kept
        proxy.clear()
        recovered = tfaudit(["recover"], env=env, cwd=checkout)
    assert recovered.returncode == 0, recovered.stderr.decode()
    assert list(checkout.iterdir()) == [] and not kept.exists()
    assert len(chain_records(s3_server.client(), lock_bucket, STREAM, prefix=PREFIX)) == 2
