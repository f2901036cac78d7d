"""Nothing secret becomes permanent, with the real terraform (issue 13, items 1, 2 and 4).

Every test greps what the store holds (the record, every artifact) and the spool's metadata
for the raw secret, never the console: the console keeps what terraform printed. terraform is
the newest one available (PATH's 1.11.4 where present), with the null provider mirror, against
the local S3 server.

* Item 1: a sensitive variable's earlier value, printed in clear in a destroy diff (terraform
  marks it nowhere, since the state predates the ``sensitive = true``), is taken out of the log
  by the second pass, in ``run`` and in ``recover`` after a SIGKILL; with the plan file gone,
  ``recover`` withholds the log instead.
* Item 2: ``-var`` and ``TF_CLI_ARGS_plan`` values, which TF_LOG=trace prints as CLI args.
* Item 4: ``output``, ``show -json``, ``state pull``: stdout withheld by default, its size in the
  record; with ``store-state-output`` it is stored, redacted by the state's sensitive values.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devkit.servers import S3Server
from devkit.tfhelpers import (
    NULL_PROVIDER_VERSION,
    isolated_env,
    pinned_terraform,
    run_terraform,
    terraform_on_path,
    tf_init,
)
from tests.support.tfaudit_proc import chain_records, tfaudit

STREAM = "acme/secrets-tf"
PREFIX = "audit"
OLD_PASSWORD = "OldPassw0rd-7c41e9"  # applied while the variable was not yet sensitive
OUTPUT_SECRET = "OutputSecret-5b2d88"

PROVIDER = (
    "terraform {\n"
    "  required_providers {\n"
    f'    null = {{ source = "hashicorp/null", version = "{NULL_PROVIDER_VERSION}" }}\n'
    "  }\n"
    "}\n"
)


def newest_terraform() -> Path:
    return terraform_on_path() or pinned_terraform()


def stored_blobs(server: S3Server, bucket: str) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    """Every record of the stream and every artifact it names, as the store holds them."""
    client = server.client()
    records = chain_records(client, bucket, STREAM, prefix=PREFIX)
    artifacts = {}
    for record in records:
        for artifact in record["artifacts"]:
            body = client.get_object(
                Bucket=bucket, Key=f"{PREFIX}/{artifact['key']}", VersionId=artifact["version_id"]
            )["Body"].read()
            artifacts[f"{record['seq']}:{artifact['name']}"] = body
    return records, artifacts


def assert_nowhere(secrets: list[str], server: S3Server, bucket: str, spools: Path) -> None:
    """No secret in any record, any artifact, nor the spool's metadata (state, receipt, pass)."""
    records, artifacts = stored_blobs(server, bucket)
    blobs = {f"record {r['seq']}": json.dumps(r).encode() for r in records} | artifacts
    for path in spools.rglob("*.json"):
        blobs[str(path)] = path.read_bytes()
    for name, blob in blobs.items():
        for secret in secrets:
            assert secret.encode() not in blob, (secret, name)


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str], Path]]:
    env = isolated_env(tmp_path / "env")
    work = tmp_path / "work"
    work.mkdir()
    yield work, env, newest_terraform()


def earlier_value_config(work: Path, *, sensitive: bool, count: int) -> None:
    """A password stored in state while not sensitive; later declared sensitive and removed."""
    marker = "  sensitive = true\n" if sensitive else ""
    (work / "main.tf").write_text(
        PROVIDER + f'variable "password" {{\n  type = string\n{marker}}}\n'
        'resource "null_resource" "db" {\n'
        f"  count    = {count}\n"
        '  triggers = { password = var.password, name = "db" }\n'
        "}\n",
        encoding="utf-8",
    )
    # A tfvars file: neither the environment nor the command line registers the value.
    (work / "terraform.tfvars").write_text(f'password = "{OLD_PASSWORD}"\n', encoding="utf-8")


def prepare_destroy_diff(terraform: Path, work: Path, env: dict[str, str]) -> None:
    earlier_value_config(work, sensitive=False, count=1)
    tf_init(terraform, work, env)
    run_terraform(terraform, work, env, "apply", "-auto-approve", "-input=false", "-no-color")
    earlier_value_config(work, sensitive=True, count=0)


def run_env(env: dict[str, str], server: S3Server, tmp_path: Path) -> dict[str, str]:
    return {**env, **server.env(), "TFAUDIT_WORK_DIR": str(tmp_path / "spools")}


RUN = ["run", "--stream", STREAM, "--json", "--"]


def store_args(bucket: str) -> list[str]:
    return ["--store", f"s3://{bucket}/{PREFIX}"]


@pytest.fixture
def destroy_diff(
    s3_server: S3Server, workdir: tuple[Path, dict[str, str], Path], tmp_path: Path
) -> tuple[Path, dict[str, str], Path]:
    """A workdir whose next plan prints OLD_PASSWORD in a destroy diff; the run's env."""
    work, env, terraform = workdir
    prepare_destroy_diff(terraform, work, env)
    return work, run_env(env, s3_server, tmp_path), terraform


def test_earlier_value_in_a_destroy_diff_is_redacted_by_the_second_pass(
    s3_server: S3Server,
    lock_bucket: str,
    destroy_diff: tuple[Path, dict[str, str], Path],
    tmp_path: Path,
) -> None:
    work, env, terraform = destroy_diff
    proc = tfaudit(
        ["run", *store_args(lock_bucket), *RUN[1:], str(terraform), "plan", "-out=tfplan"],
        env=env,
        cwd=work,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    # terraform printed it (the console is terraform's own) ...
    assert OLD_PASSWORD.encode() in proc.stdout
    # ... and the store never got it.
    assert_nowhere([OLD_PASSWORD], s3_server, lock_bucket, tmp_path / "spools")
    (record,), artifacts = stored_blobs(s3_server, lock_bucket)
    assert b'"password" = "[REDACTED:sensitive]"' in artifacts["0:output.log"]
    assert record["redaction"]["second_pass"] == "plan"
    assert record["redactions"]["sensitive"] >= 1
    (log,) = (tmp_path / "spools").glob("shipped/*/output.log")  # kept redacted after shipping
    assert OLD_PASSWORD.encode() not in log.read_bytes()


def test_command_line_values_stay_out_of_record_log_and_spool(
    s3_server: S3Server,
    lock_bucket: str,
    workdir: tuple[Path, dict[str, str], Path],
    tmp_path: Path,
) -> None:
    """-var and TF_CLI_ARGS_plan values; TF_LOG=trace prints them as terraform's CLI args."""
    work, env, terraform = workdir
    (work / "main.tf").write_text(
        PROVIDER + 'variable "db_password" {\n  type = string\n  sensitive = true\n}\n'
        'variable "api_token" {\n  type = string\n}\n'
        'resource "null_resource" "x" {\n  triggers = { a = "plain" }\n}\n',
        encoding="utf-8",
    )
    tf_init(terraform, work, env)
    argv_secret, env_secret = "ArgvDbPassw0rd-19f3", "EnvArgsToken-aa71c2"
    summary = tmp_path / "step-summary.md"
    env = {
        **run_env(env, s3_server, tmp_path),
        "TF_LOG": "trace",
        "TF_CLI_ARGS_plan": f"-var=api_token={env_secret}",
        "GITHUB_ACTIONS": "true",
        "GITHUB_STEP_SUMMARY": str(summary),
    }
    command = [str(terraform), "plan", "-input=false", "-var", f"db_password={argv_secret}"]
    proc = tfaudit(["run", *store_args(lock_bucket), *RUN[1:], *command], env=env, cwd=work)
    assert proc.returncode == 0, proc.stderr.decode()
    assert argv_secret.encode() in proc.stderr  # trace: CLI args, as terraform printed them
    assert_nowhere([argv_secret, env_secret], s3_server, lock_bucket, tmp_path / "spools")
    (record,), _ = stored_blobs(s3_server, lock_bucket)
    assert record["command"][-1] == "db_password=[REDACTED:var]"  # the name stays
    assert record["redaction"]["trace_log"] == "TF_LOG=TRACE"
    # The warning that trace output is redacted by shape only: on the console and the summary.
    assert b"TF_LOG=TRACE: the log holds provider requests" in proc.stderr
    text = summary.read_text()
    block = text[text.index("> [!WARNING]") :]
    assert block.count("> TF_LOG=TRACE: the log holds provider") == 1  # said once
    for secret in (argv_secret, env_secret):  # GitHub masks them in its own log too
        assert f"::add-mask::{secret}".encode() in proc.stdout


@pytest.fixture
def applied_state(
    workdir: tuple[Path, dict[str, str], Path],
) -> tuple[Path, dict[str, str], Path]:
    """An applied state holding a sensitive output and a sensitive resource attribute."""
    work, env, terraform = workdir
    (work / "main.tf").write_text(
        PROVIDER + f'variable "secret" {{\n  type = string\n  sensitive = true\n'
        f'  default = "{OUTPUT_SECRET}"\n}}\n'
        'resource "null_resource" "x" {\n  triggers = { s = var.secret, plain = "shown" }\n}\n'
        'output "secret" {\n  value = var.secret\n  sensitive = true\n}\n'
        'output "plain" {\n  value = "plain-output"\n}\n',
        encoding="utf-8",
    )
    tf_init(terraform, work, env)
    run_terraform(terraform, work, env, "apply", "-auto-approve", "-input=false", "-no-color")
    return work, env, terraform


@pytest.mark.parametrize(
    "args",
    [["output", "-json"], ["output", "-raw", "secret"], ["show", "-json"], ["state", "pull"]],
    ids=["output-json", "output-raw", "show-json", "state-pull"],
)
def test_state_printing_command_stdout_is_withheld(
    args: list[str],
    s3_server: S3Server,
    lock_bucket: str,
    applied_state: tuple[Path, dict[str, str], Path],
    tmp_path: Path,
) -> None:
    work, env, terraform = applied_state
    env = run_env(env, s3_server, tmp_path)
    proc = tfaudit(
        ["run", *store_args(lock_bucket), *RUN[1:], str(terraform), *args], env=env, cwd=work
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert OUTPUT_SECRET.encode() in proc.stdout  # the console shows what terraform printed
    assert_nowhere([OUTPUT_SECRET], s3_server, lock_bucket, tmp_path / "spools")
    (record,), artifacts = stored_blobs(s3_server, lock_bucket)
    (withheld,) = record["withheld"]
    assert withheld["what"] == "stdout" and withheld["bytes"] >= len(OUTPUT_SECRET)
    assert "store-state-output" in withheld["reason"]
    assert artifacts["0:output.log"] == b""  # stderr only, and terraform wrote none


def test_state_output_opt_in_stores_stdout_redacted(
    s3_server: S3Server,
    lock_bucket: str,
    applied_state: tuple[Path, dict[str, str], Path],
    tmp_path: Path,
) -> None:
    work, env, terraform = applied_state
    env = {**run_env(env, s3_server, tmp_path), "TFAUDIT_STORE_STATE_OUTPUT": "true"}
    proc = tfaudit(
        ["run", *store_args(lock_bucket), *RUN[1:], str(terraform), "output", "-json"],
        env=env,
        cwd=work,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert_nowhere([OUTPUT_SECRET], s3_server, lock_bucket, tmp_path / "spools")
    (record,), artifacts = stored_blobs(s3_server, lock_bucket)
    assert record["withheld"] == []
    assert record["redaction"]["second_pass"] == "state"
    log = artifacts["0:output.log"]
    assert b'"plain-output"' in log and b"[REDACTED:" in log


# --- recover after a SIGKILL --------------------------------------------------------------

# Delegates to the real terraform, but `show -json` hangs while BLOCK exists: tfaudit can be
# killed after its command ended and before it captured the plan.
WRAPPER = """#!/bin/sh
if [ "$1" = show ]; then while [ -e "{block}" ]; do sleep 0.1; done; fi
exec "{terraform}" "$@"
"""


def killed_before_capture(
    work: Path, env: dict[str, str], terraform: Path, bucket: str, tmp_path: Path
) -> tuple[Path, bytes]:
    block = tmp_path / "block-show"
    block.touch()
    wrapper = tmp_path / "bin" / "terraform"
    wrapper.parent.mkdir()
    wrapper.write_text(WRAPPER.format(block=block, terraform=terraform), encoding="utf-8")
    wrapper.chmod(0o755)
    command = [str(wrapper), "plan", "-out=tfplan"]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tfaudit_ci",
            "run",
            *store_args(bucket),
            "--stream",
            STREAM,
            "--",
            *command,
        ],
        env=env,
        cwd=work,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    spools = Path(env["TFAUDIT_WORK_DIR"]) / "spool"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = list(spools.glob("*/redaction.json"))
        if found and json.loads(found[0].read_bytes()).get("finished"):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the command never finished")
    time.sleep(0.5)  # now in `show -json`, blocked
    os.killpg(proc.pid, signal.SIGKILL)  # tfaudit and the blocked show
    console, _ = proc.communicate()
    block.unlink()
    return found[0].parent, console


@pytest.mark.parametrize("plan_file", ["kept", "deleted"])
def test_recover_after_sigkill_redacts_from_the_plan_file_or_withholds(
    plan_file: str,
    s3_server: S3Server,
    lock_bucket: str,
    destroy_diff: tuple[Path, dict[str, str], Path],
    tmp_path: Path,
) -> None:
    work, env, terraform = destroy_diff
    spool, console = killed_before_capture(work, env, terraform, lock_bucket, tmp_path)
    assert OLD_PASSWORD.encode() in console
    # The first pass alone could not know: the value is in the spool, and only there.
    assert OLD_PASSWORD.encode() in (spool / "output.log").read_bytes()
    assert chain_records(s3_server.client(), lock_bucket, STREAM, prefix=PREFIX) == []
    if plan_file == "deleted":
        (work / "tfplan").unlink()

    recovered = tfaudit(["recover", *store_args(lock_bucket), "--json"], env=env, cwd=work)
    assert recovered.returncode == 0, recovered.stderr.decode()
    assert_nowhere([OLD_PASSWORD], s3_server, lock_bucket, tmp_path / "spools")
    (record,), artifacts = stored_blobs(s3_server, lock_bucket)
    if plan_file == "kept":
        assert record["redaction"]["second_pass"] == "plan"
        assert b"[REDACTED:sensitive]" in artifacts["0:output.log"]
    else:
        assert record["redaction"]["second_pass"] == "withheld"
        assert "0:output.log" not in artifacts
        (withheld,) = record["withheld"]
        assert withheld["what"] == "output.log" and withheld["bytes"] > 0
        assert "tfplan" in withheld["reason"]
        # Kept on the runner, not uploaded: the shipped run's outputs keep it.
        assert (spool.parent.parent / "shipped" / spool.name / "output.log.withheld").is_file()
