"""Cancellation while real terraform runs (issue 7, section 2).

tfaudit forwards SIGINT/SIGTERM to terraform's process group; terraform stops gracefully and
releases its state lock; the partial log ships as a ``cancelled`` record and tfaudit exits
128+signal. GitHub cancels with SIGINT, SIGTERM 7.5 s later, SIGKILL 2.5 s after that, so
the record must ship inside that window (GRACE_WINDOW, counted from the first signal: the
only time bound asserted here, and it is the CI's contract, not a speed claim). A second
signal escalates: forwarded (terraform's "exit now"), then SIGKILL if the command lingers.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from devkit.servers import S3Server
from devkit.tfhelpers import run_terraform, tf_init, write_local_exec_config
from tests.support.tfaudit_proc import Completed, chain_records, result_json

STREAM = "acme/cancel"
GRACE_WINDOW = 10.0
LOCK_FILE = ".terraform.tfstate.lock.info"


class Tfaudit:
    """`tfaudit run` as a child process whose console output is collected live."""

    def __init__(
        self, args: list[str], env: dict[str, str], cwd: Path, result: Path | None = None
    ) -> None:
        self.result = result
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tfaudit_ci", *args],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.stdout = b""
        self.stderr = b""
        self._readers = [
            threading.Thread(target=self._collect, args=(name,), daemon=True)
            for name in ("stdout", "stderr")
        ]
        for reader in self._readers:
            reader.start()

    def _collect(self, name: str) -> None:
        stream = getattr(self.proc, name)
        while chunk := stream.read1(65536):
            setattr(self, name, getattr(self, name) + chunk)

    def wait_for(self, text: bytes, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.stdout:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"never saw {text!r}: {self.stdout!r} {self.stderr!r}")
            time.sleep(0.05)

    def finish(self, timeout: float) -> subprocess.CompletedProcess[bytes]:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        for reader in self._readers:
            reader.join(timeout=30)
        done = Completed(self.proc.args, code, self.stdout, self.stderr)
        if self.result is not None and self.result.exists():
            done.result_document = json.loads(self.result.read_bytes())
        return done


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def _start(
    bucket: str, command: list[str], env: dict[str, str], cwd: Path, server: S3Server
) -> Tfaudit:
    full_env = {**env, **server.env(), "TFAUDIT_WORK_DIR": str(cwd.parent / "spools")}
    result = cwd.parent / "result.json"
    args = ["run", "--store", f"s3://{bucket}/audit", "--stream", STREAM, "--result", str(result)]
    return Tfaudit([*args, "--", *command], full_env, cwd, result)


def _apply_with_provisioner(
    workdir: Path,
    provisioner: str,
    terraform_bin: Path,
    tf_env: dict[str, str],
    lock_bucket: str,
    s3_server: S3Server,
) -> Tfaudit:
    """`tfaudit run -- terraform apply` of a slow provisioner, once that provisioner runs."""
    write_local_exec_config(workdir, provisioner)
    tf_init(terraform_bin, workdir, tf_env)
    run = _start(
        lock_bucket,
        [str(terraform_bin), "apply", "-auto-approve", "-input=false", "-no-color"],
        tf_env,
        workdir,
        s3_server,
    )
    run.wait_for(b"provisioner-started")
    return run


def _record(server: S3Server, bucket: str) -> dict[str, Any]:
    (record,) = chain_records(server.client(), bucket, STREAM, prefix="audit")
    return record


def _log(server: S3Server, bucket: str, record: dict[str, Any]) -> bytes:
    log = next(a for a in record["artifacts"] if a["name"] == "output.log")
    body: bytes = (
        server.client()
        .get_object(Bucket=bucket, Key=f"audit/{log['key']}", VersionId=log["version_id"])["Body"]
        .read()
    )
    return body


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_terraform_gracefully_releases_lock_and_ships_cancelled(
    signum: signal.Signals,
    s3_server: S3Server,
    lock_bucket: str,
    terraform_bin: Path,
    tf_env: dict[str, str],
    tmp_path: Path,
) -> None:
    workdir = tmp_path / "work"
    run = _apply_with_provisioner(
        workdir,
        "echo provisioner-started; sleep 120",
        terraform_bin,
        tf_env,
        lock_bucket,
        s3_server,
    )
    assert (workdir / LOCK_FILE).exists()  # terraform holds its state lock right now
    (terraform_pid,) = _children(run.proc.pid)

    run.proc.send_signal(signum)
    done = run.finish(timeout=GRACE_WINDOW)

    assert done.returncode == 128 + signum, done.stderr.decode()
    assert not _group_members(terraform_pid)  # terraform and its provisioner are gone
    assert not (workdir / LOCK_FILE).exists()  # the graceful stop released the lock
    # The lock was released: a plan that may not wait for it succeeds.
    run_terraform(terraform_bin, workdir, tf_env, "plan", "-input=false", "-lock-timeout=0s")
    record = _record(s3_server, lock_bucket)
    assert record["status"] == "cancelled" and record["exit_code"] == 1
    assert record["run_folder"] == Path(result_json(done)["log_path"]).parent.name
    log = _log(s3_server, lock_bucket, record)
    assert b"provisioner-started" in log and b"Gracefully shutting down" in log


def test_second_signal_escalates_when_terraform_lingers(
    s3_server: S3Server,
    lock_bucket: str,
    tf_env: dict[str, str],
    tmp_path: Path,
    terraform_bin: Path,
) -> None:
    """A provisioner that ignores signals keeps terraform alive after its graceful stop.

    GitHub's second signal (SIGTERM) must end the run in time for the record to ship before
    its SIGKILL, even though terraform itself does not react to it any more.
    """
    workdir = tmp_path / "work"
    run = _apply_with_provisioner(
        workdir,
        "trap '' INT TERM; echo provisioner-started; sleep 120",
        terraform_bin,
        tf_env,
        lock_bucket,
        s3_server,
    )
    (terraform_pid,) = _children(run.proc.pid)
    run.proc.send_signal(signal.SIGINT)
    run.wait_for(b"Gracefully shutting down", timeout=GRACE_WINDOW)
    run.proc.send_signal(signal.SIGTERM)
    done = run.finish(timeout=GRACE_WINDOW)

    assert done.returncode == 130, done.stderr.decode()  # the first signal names the exit
    assert not _group_members(terraform_pid)  # the lingering provisioner was killed too
    record = _record(s3_server, lock_bucket)
    assert record["status"] == "cancelled"
    assert b"provisioner-started" in _log(s3_server, lock_bucket, record)


IGNORES_SIGNALS = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)


@pytest.mark.parametrize("signals", [2, 3])
def test_repeated_signal_kills_a_command_that_ignores_them(
    signals: int, s3_server: S3Server, lock_bucket: str, tf_env: dict[str, str], tmp_path: Path
) -> None:
    """Second signal: forwarded, then SIGKILL shortly after; third: SIGKILL at once."""
    cwd = tmp_path / "work"
    cwd.mkdir()
    run = _start(lock_bucket, [sys.executable, "-c", IGNORES_SIGNALS], tf_env, cwd, s3_server)
    run.wait_for(b"ready")
    (child,) = _children(run.proc.pid)
    for _ in range(signals):
        run.proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)  # separate deliveries, not one coalesced pending signal
    done = run.finish(timeout=GRACE_WINDOW)
    assert done.returncode == 143, done.stderr.decode()
    assert not _group_members(child)
    record = _record(s3_server, lock_bucket)
    assert record["status"] == "cancelled" and record["exit_code"] == 128 + signal.SIGKILL
    assert b"ready" in _log(s3_server, lock_bucket, record)
