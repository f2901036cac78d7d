"""Killed runs and crashed terraform (issue 7, section 2).

* tfaudit SIGKILLed mid-run: the spool on disk holds the output up to the last checkpoint,
  and `tfaudit recover` ships it as ``status: interrupted``; recovering again, after losing
  the receipt, or from two processes at once, never creates a second record.
* A terraform panic or crash (a fake ``terraform`` that prints a Go panic and exits 2, or
  dies of SIGSEGV) is recorded as ``crashed`` with its output.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from devkit.servers import S3Server
from tests.support.tfaudit_proc import chain_records, result_json, tfaudit

STREAM = "acme/recover"
PREFIX = "audit"


def _env(tf_env: dict[str, str], server: S3Server, tmp_path: Path) -> dict[str, str]:
    return {
        **tf_env,
        **server.env(),
        "TFAUDIT_WORK_DIR": str(tmp_path / "spools"),
        "TFAUDIT_CONNECT_TIMEOUT": "2",
        "TFAUDIT_READ_TIMEOUT": "10",
    }


def _run_args(bucket: str, *, json: bool = True) -> list[str]:
    result = ["--json"] if json else []
    return ["run", "--store", f"s3://{bucket}/{PREFIX}", "--stream", STREAM, *result, "--"]


def _log_of(server: S3Server, bucket: str, record: dict[str, Any]) -> bytes:
    log = next(a for a in record["artifacts"] if a["name"] == "output.log")
    data: bytes = (
        server.client()
        .get_object(Bucket=bucket, Key=f"{PREFIX}/{log['key']}", VersionId=log["version_id"])[
            "Body"
        ]
        .read()
    )
    return data


SLOW_COMMAND = (
    "import sys, time\n"
    "print('step one done', flush=True)\n"
    "sys.stderr.write('warning on stderr\\n'); sys.stderr.flush()\n"
    "print('step two done', flush=True)\n"
    "time.sleep(300)\n"
)


def _killed_run(bucket: str, env: dict[str, str], cwd: Path) -> Path:
    """Start a run, SIGKILL tfaudit once its output is out, kill the orphaned command too."""
    command = [sys.executable, "-c", SLOW_COMMAND]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfaudit_ci", *_run_args(bucket, json=False), *command],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    seen = b""
    while b"step two done" not in seen:
        line = proc.stdout.readline()
        assert line, "tfaudit ended before the command printed"
        seen += line
    spool_root = Path(env["TFAUDIT_WORK_DIR"]) / "spool"
    (spool,) = list(spool_root.iterdir())
    # The checkpoint interval passes with no new output: the spool is now complete on disk.
    time.sleep(1.5)
    command_pgid = next(
        pid
        for pid in _pids()
        if _ppid(pid) == proc.pid  # the command: tfaudit's only child, its own group leader
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    os.killpg(command_pgid, signal.SIGKILL)  # CI would tear the whole job down
    proc.stdout.close()
    return spool


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _ppid(pid: int) -> int | None:
    try:
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


def test_sigkilled_run_is_recovered_once_as_interrupted(
    s3_server: S3Server, lock_bucket: str, tf_env: dict[str, str], tmp_path: Path
) -> None:
    env = _env(tf_env, s3_server, tmp_path)
    spool = _killed_run(lock_bucket, env, tmp_path)
    state = json.loads((spool / "spool.json").read_bytes())
    assert state["phase"] == "running" and state["status"] == "running"
    backup = tmp_path / "backup"
    shutil.copytree(spool, backup)
    client = s3_server.client()
    assert chain_records(client, lock_bucket, STREAM, prefix=PREFIX) == []

    first = tfaudit(["recover", "--json"], env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr.decode()
    (record,) = chain_records(client, lock_bucket, STREAM, prefix=PREFIX)
    assert record["status"] == "interrupted" and record["run_folder"] == spool.name
    log = _log_of(s3_server, lock_bucket, record)
    # Everything the command printed before the kill, from both pipes, nothing else.
    assert sorted(log.splitlines()) == [b"step one done", b"step two done", b"warning on stderr"]

    second = tfaudit(["recover"], env=env, cwd=tmp_path)
    assert second.returncode == 0 and b"nothing to recover" in second.stderr
    assert not spool.exists()
    # A recover killed after its record landed, before the receipt: the spool is back.
    shutil.copytree(backup, spool)
    third = tfaudit(["recover", "--json"], env=env, cwd=tmp_path)
    assert third.returncode == 0, third.stderr.decode()
    assert result_json(third)["recovered"][0]["seq"] == 0
    assert len(chain_records(client, lock_bucket, STREAM, prefix=PREFIX)) == 1


def test_two_recovers_at_once_ship_one_record(
    s3_server: S3Server, lock_bucket: str, tf_env: dict[str, str], tmp_path: Path
) -> None:
    """The action's post step and a human may both recover the same spool."""
    env = _env(tf_env, s3_server, tmp_path)
    spool = _killed_run(lock_bucket, env, tmp_path)
    results: list[subprocess.CompletedProcess[bytes]] = []
    workers = [
        threading.Thread(target=lambda: results.append(tfaudit(["recover"], env=env, cwd=tmp_path)))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    records = chain_records(s3_server.client(), lock_bucket, STREAM, prefix=PREFIX)
    assert [r["run_folder"] for r in records] == [spool.name]


GO_PANIC = (
    "panic: runtime error: invalid memory address or nil pointer dereference\n"
    "[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x1a2b3c]\n\n"
    "goroutine 1 [running]:\n"
    "github.com/hashicorp/terraform/internal/command.(*PlanCommand).Run(0xc000123456)\n"
    "\t/home/runner/_work/terraform/internal/command/plan.go:42 +0x1d\n"
)


def _fake_terraform(bin_dir: Path, body: str) -> Path:
    """A `terraform` that answers `version -json` and does ``body`` for anything else."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / "terraform"
    path.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = version ]; then echo \'{"terraform_version":"1.99.0"}\'; exit 0; fi\n'
        f"{body}\n",
        encoding="utf-8",
    )
    path.chmod(0o755)
    return path


CRASH_BANNER = (
    "!!!!!!!!!!!!!!!!!!!!!!!!!!! TERRAFORM CRASH !!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    "Terraform crashed! This is always indicative of a bug within Terraform.\n"
)


@pytest.mark.parametrize(
    ("body", "exit_code", "expected"),
    [
        # A Go panic is the very first thing on stderr (nothing before it), exit 2.
        (f"cat >&2 <<'EOF'\n{GO_PANIC}EOF\nexit 2", 2, GO_PANIC),
        # Terraform's own crash banner after some normal output, then exit 11.
        (f"echo 'Acquiring state lock.'\ncat >&2 <<'EOF'\n{CRASH_BANNER}EOF\nexit 11", 11,
         CRASH_BANNER),
        # Killed by SIGSEGV with no message at all.
        ("echo 'Refreshing state...'\nkill -SEGV $$", 128 + signal.SIGSEGV,
         "Refreshing state...\n"),
    ],
    ids=["go-panic-exit-2", "crash-banner-exit-11", "sigsegv"],
)  # fmt: skip
def test_terraform_crash_is_recorded_as_crashed_with_its_output(
    body: str,
    exit_code: int,
    expected: str,
    s3_server: S3Server,
    lock_bucket: str,
    tf_env: dict[str, str],
    tmp_path: Path,
) -> None:
    terraform = _fake_terraform(tmp_path / "bin", body)
    env = _env(tf_env, s3_server, tmp_path)
    proc = tfaudit(
        [*_run_args(lock_bucket), str(terraform), "plan", "-input=false", "-out=tfplan"],
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == exit_code, proc.stderr.decode()
    assert result_json(proc)["status"] == "crashed"
    (record,) = chain_records(s3_server.client(), lock_bucket, STREAM, prefix=PREFIX)
    assert record["status"] == "crashed" and record["exit_code"] == exit_code
    assert expected.encode() in _log_of(s3_server, lock_bucket, record)
