"""Read-only commands start beside preflight; everything else waits for it (issue 17).

A fault-injecting proxy (``tests/support/faultproxy.py``) slows the store's preflight reads, so each
test can tell which came first: the wrapped command or preflight's answer. Real terraform, a
real S3 server over HTTP. A ``file()`` of a FIFO holds terraform in the middle of its plan,
with its state lock taken, until the test feeds it: that is how a preflight failure lands
while the plan is provably running.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import os
import threading
import time
from pathlib import Path

import pytest

from devkit.servers import S3Server
from devkit.tfhelpers import (
    NULL_PROVIDER_VERSION,
    run_terraform,
    tf_init,
    write_local_exec_config,
    write_null_config,
)
from tests.support.faultproxy import Delay, FaultProxy, access_denied, op_is, running_proxy
from tests.support.tfaudit_proc import chain_records
from tests.test_cancel import LOCK_FILE, Tfaudit
from tfaudit_ci.record import parse_iso
from tfaudit_ci.tfargs import parse_invocation

STREAM = "acme/overlap"
SLOW = 6.0  # seconds preflight's slowed read takes: far longer than starting a command


def _run(
    bucket: str,
    command: list[str],
    env: dict[str, str],
    cwd: Path,
    proxy: FaultProxy,
) -> Tfaudit:
    full_env = {
        **env,
        "AWS_ENDPOINT_URL_S3": proxy.endpoint,
        "AWS_ENDPOINT_URL": proxy.endpoint,
        "TFAUDIT_WORK_DIR": str(cwd.parent / "spools"),
    }
    result = cwd.parent / "result.json"
    args = ["run", "--store", f"s3://{bucket}/audit", "--stream", STREAM, "--result", str(result)]
    return Tfaudit([*args, "--", *command], full_env, cwd, result)


def _answered_at(proxy: FaultProxy, op: str, run: Tfaudit, timeout: float = 120) -> dt.datetime:
    """When the proxy has answered ``op`` (it logs a request once answered): polled."""
    deadline = time.monotonic() + timeout
    while op not in proxy.ops():
        if run.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{op} was never answered: {run.stderr!r}")
        time.sleep(0.02)
    return dt.datetime.now(dt.timezone.utc)


def _env(tf_env: dict[str, str], server: S3Server) -> dict[str, str]:
    return {**tf_env, **server.env()}


# -- which commands overlap ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "overlaps"),
    [
        (["terraform", "plan", "-input=false"], True),
        (["terraform", "plan", "-out=tfplan", "-refresh-only"], True),
        (["terraform", "-chdir=infra", "plan", "-destroy"], True),
        (["tofu", "plan", "-lock-timeout=30s"], True),
        (["terraform", "validate", "-json"], True),
        (["terraform", "show", "-json", "tfplan"], True),
        (["terraform", "output", "-json"], True),
        (["terraform", "graph"], True),
        (["terraform", "version"], True),
        (["terraform", "-version"], True),
        (["terraform", "providers"], True),
        (["terraform", "providers", "schema", "-json"], True),
        (["terraform", "fmt", "-check", "-recursive"], True),
        (["terraform", "fmt", "-write=false", "-diff"], True),
        (["terraform", "fmt"], False),  # rewrites the configuration
        (["terraform", "fmt", "-write=true"], False),
        (["terraform", "providers", "lock"], False),
        (["terraform", "providers", "mirror", "dir"], False),
        (["terraform", "apply", "-auto-approve"], False),
        (["terraform", "apply", "tfplan"], False),
        (["terraform", "destroy", "-auto-approve"], False),
        (["terraform", "import", "a.b", "id"], False),
        (["terraform", "init", "-input=false"], False),
        (["terraform", "refresh"], False),
        (["terraform", "state", "list"], False),
        (["terraform", "state", "rm", "a.b"], False),
        (["terraform", "workspace", "show"], False),
        (["terraform", "force-unlock", "-force", "id"], False),
        (["terraform", "taint", "a.b"], False),
        (["terraform", "test"], False),  # creates real infrastructure
        (["terraform", "console"], False),
        (["terraform", "get"], False),
        (["terraform"], False),
        (["tofu", "apply", "-auto-approve"], False),
        (["terragrunt", "plan"], False),  # may create its remote state bucket first
        (["terragrunt", "run-all", "validate"], False),
        (["make", "plan"], False),
        (["bash", "-c", "terraform plan"], False),
    ],
)
def test_which_commands_overlap_preflight(argv: list[str], overlaps: bool) -> None:
    inv = parse_invocation(argv, cwd=Path("/ci/build"), is_file=lambda path: path.name == "tfplan")
    assert inv.read_only is overlaps


def test_tf_cli_args_reach_the_classification() -> None:
    env = {"TF_CLI_ARGS_fmt": "-check"}
    inv = parse_invocation(["terraform", "fmt"], cwd=Path("/ci"), env=env)
    assert inv.read_only


# -- real runs -------------------------------------------------------------------------------


def test_plan_starts_while_preflight_is_in_flight_and_is_recorded(
    s3_server: S3Server,
    lock_bucket: str,
    terraform_bin: Path,
    tf_env: dict[str, str],
    tmp_path: Path,
) -> None:
    workdir = tmp_path / "work"
    write_null_config(workdir)
    tf_init(terraform_bin, workdir, tf_env)
    with running_proxy(s3_server.endpoint) as proxy:
        proxy.add(Delay(SLOW), op_is("GetObjectLockConfiguration"))
        run = _run(
            lock_bucket,
            [str(terraform_bin), "plan", "-input=false", "-no-color"],
            _env(tf_env, s3_server),
            workdir,
            proxy,
        )
        answered = _answered_at(proxy, "GetObjectLockConfiguration", run)
        done = run.finish(timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    (record,) = chain_records(s3_server.client(), lock_bucket, STREAM, prefix="audit")
    assert record["status"] == "succeeded"
    # The plan started long before preflight's slowed read came back (strict order would
    # start it after): preflight and the plan overlapped, and the run still ended recorded.
    started = parse_iso(record["started_at"])
    assert started < answered - dt.timedelta(seconds=SLOW / 2), (started, answered)
    assert b"Plan: 1 to add" in done.stdout


def _gated_config(workdir: Path) -> Path:
    """A plan that reads a FIFO: terraform holds its state lock, blocked, until it is fed."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "main.tf").write_text(
        "terraform {\n"
        "  required_providers {\n"
        f'    null = {{ source = "hashicorp/null", version = "{NULL_PROVIDER_VERSION}" }}\n'
        "  }\n"
        "}\n"
        'resource "null_resource" "gated" {\n'
        '  triggers = { gate = file("${path.module}/gate") }\n'
        "}\n",
        encoding="utf-8",
    )
    gate = workdir / "gate"
    gate.write_text("open\n", encoding="utf-8")  # a plain file for init
    return gate


class _Feeder:
    """Feeds the FIFO each time terraform opens it, until stopped."""

    def __init__(self, fifo: Path) -> None:
        self.fifo = fifo
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._feed, daemon=True)
        self.thread.start()

    def _feed(self) -> None:
        while not self.stopping.is_set():
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:  # ENXIO: nobody is reading it right now
                if exc.errno != errno.ENXIO:
                    raise
                time.sleep(0.05)
                continue
            with contextlib.suppress(BrokenPipeError):
                os.write(fd, b"open\n")
            os.close(fd)

            time.sleep(0.05)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)


def test_preflight_failing_during_a_plan_stops_it_releases_the_lock_and_exits_21(
    s3_server: S3Server,
    lock_bucket: str,
    terraform_bin: Path,
    tf_env: dict[str, str],
    tmp_path: Path,
) -> None:
    workdir = tmp_path / "work"
    gate = _gated_config(workdir)
    tf_init(terraform_bin, workdir, tf_env)
    gate.unlink()
    os.mkfifo(gate)
    with running_proxy(s3_server.endpoint) as proxy:
        # Preflight fails, but only once the slowed versioning read is back: by then the
        # plan holds its state lock, waiting on the FIFO.
        proxy.add(Delay(SLOW), op_is("GetBucketVersioning"))
        proxy.add(access_denied(), op_is("GetObjectLockConfiguration"))
        run = _run(
            lock_bucket,
            [str(terraform_bin), "plan", "-input=false", "-no-color"],
            _env(tf_env, s3_server),
            workdir,
            proxy,
        )
        deadline = time.monotonic() + 60
        while not (workdir / LOCK_FILE).exists():
            assert run.proc.poll() is None, run.stderr.decode()
            assert time.monotonic() < deadline, "terraform never took its state lock"
            time.sleep(0.02)
        assert "GetBucketVersioning" not in proxy.ops()  # preflight has not finished yet
        deadline = time.monotonic() + 60
        while b"preflight failed while `plan` ran beside it: stopping" not in run.stderr:
            assert run.proc.poll() is None, run.stderr.decode()
            assert time.monotonic() < deadline, run.stderr.decode()
            time.sleep(0.02)
        # Stopped as a cancel stops it: terraform got SIGINT; let its blocked read finish.
        feeder = _Feeder(gate)
        try:
            done = run.finish(timeout=60)
        finally:
            feeder.stop()
    assert done.returncode == 21, done.stderr.decode()
    assert b"Gracefully shutting down" in done.stdout + done.stderr
    assert not (workdir / LOCK_FILE).exists()
    result = done.result_document
    assert result is not None
    assert result["status"] == "cancelled" and not result["audit_ok"]
    assert "AccessDenied" in result["error"] or "Access Denied" in result["error"]
    spool = Path(result["spool_dir"])
    assert (spool / "spool.json").is_file() and (spool / "output.log").is_file()
    assert not chain_records(s3_server.client(), lock_bucket, STREAM, prefix="audit")
    gate.unlink()
    gate.write_text("open\n", encoding="utf-8")
    # The lock was released: a plan that may not wait for it succeeds.
    run_terraform(terraform_bin, workdir, tf_env, "plan", "-input=false", "-lock-timeout=0s")


def _start_apply(
    proxy: FaultProxy,
    s3_server: S3Server,
    lock_bucket: str,
    terraform_bin: Path,
    tf_env: dict[str, str],
    tmp_path: Path,
) -> tuple[Tfaudit, Path, Path]:
    """`tfaudit run -- terraform apply` of a provisioner that touches a marker file."""
    workdir = tmp_path / "work"
    marker = tmp_path / "applied"
    write_local_exec_config(workdir, f"touch {marker}", name="marker")
    tf_init(terraform_bin, workdir, tf_env)
    command = [str(terraform_bin), "apply", "-auto-approve", "-input=false", "-no-color"]
    run = _run(lock_bucket, command, _env(tf_env, s3_server), workdir, proxy)
    return run, workdir, marker


def _untouched(workdir: Path, marker: Path) -> bool:
    state = (workdir / "terraform.tfstate", workdir / LOCK_FILE, marker)
    return not any(path.exists() for path in state)


def test_apply_waits_for_a_slow_preflight(
    s3_server: S3Server,
    lock_bucket: str,
    terraform_bin: Path,
    tf_env: dict[str, str],
    tmp_path: Path,
) -> None:
    with running_proxy(s3_server.endpoint) as proxy:
        proxy.add(Delay(SLOW), op_is("GetObjectLockConfiguration"))
        run, workdir, marker = _start_apply(
            proxy, s3_server, lock_bucket, terraform_bin, tf_env, tmp_path
        )
        deadline = time.monotonic() + 120
        pending_at: dt.datetime | None = None
        while True:
            now = dt.datetime.now(dt.timezone.utc)
            # The proxy logs a request before it sends the answer: not logged, not answered.
            if "GetObjectLockConfiguration" in proxy.ops():
                break
            pending_at = now
            # Nothing may have happened while preflight is in flight.
            assert _untouched(workdir, marker)
            assert run.proc.poll() is None, run.stderr.decode()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        done = run.finish(timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert marker.exists()
    (record,) = chain_records(s3_server.client(), lock_bucket, STREAM, prefix="audit")
    # Started after the last moment preflight was seen in flight (records keep milliseconds).
    assert pending_at is not None, "preflight was answered before the test could look"
    assert parse_iso(record["started_at"]) >= pending_at - dt.timedelta(milliseconds=1)


def test_apply_never_starts_when_a_slow_preflight_fails(
    s3_server: S3Server,
    lock_bucket: str,
    terraform_bin: Path,
    tf_env: dict[str, str],
    tmp_path: Path,
) -> None:
    with running_proxy(s3_server.endpoint) as proxy:
        proxy.add(Delay(SLOW), op_is("GetBucketVersioning"))
        proxy.add(access_denied(), op_is("GetObjectLockConfiguration"))
        run, workdir, marker = _start_apply(
            proxy, s3_server, lock_bucket, terraform_bin, tf_env, tmp_path
        )
        done = run.finish(timeout=120)
    assert done.returncode == 21, done.stderr.decode()
    assert b"the command was not run" in done.stderr
    assert _untouched(workdir, marker)
    assert not (tmp_path / "spools" / "spool").exists() or not any(
        (tmp_path / "spools" / "spool").iterdir()
    )
