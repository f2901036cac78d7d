"""GitHub reporting: outputs parsed the way the runner parses them, masks, annotations, summary."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import sys
from pathlib import Path

from devkit.servers import S3Server
from tfaudit_ci.report import detect_ci, github, publish
from tfaudit_ci.result import PlanCounts, RunResult

ONE_MIB = 1024 * 1024


def parse_github_output(text: str) -> dict[str, str]:
    """The runner's file-command parser: ``k=v`` lines and ``k<<DELIM`` heredocs."""
    outputs: dict[str, str] = {}
    lines = text.split("\n")
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line:
            continue
        equals, heredoc = line.find("="), line.find("<<")
        if equals >= 0 and (heredoc < 0 or equals < heredoc):
            outputs[line[:equals]] = line[equals + 1 :]
            continue
        assert heredoc > 0, f"malformed output line {line!r}"
        name, delimiter = line[:heredoc], line[heredoc + 2 :]
        body: list[str] = []
        while True:
            assert index < len(lines), f"unterminated heredoc for {name!r}"
            current = lines[index]
            index += 1
            if current == delimiter:
                break
            body.append(current)
        outputs[name] = "\n".join(body)
    return outputs


def make_result(**overrides: object) -> RunResult:
    values: dict[str, object] = {
        "exit_code": 2,
        "command_exit_code": 2,
        "status": "succeeded",
        "audit_ok": True,
        "store": "s3://audit-bucket/tf",
        "stream": "acme/infra",
        "seq": 41,
        "record_uri": "s3://audit-bucket/tf/acme/infra/chain/000000000041.json",
        "record_sha256": "ab" * 32,
        "log_path": "/github/workspace/.tfaudit/run-1/output.log",
        "plan_json_path": "/github/workspace/.tfaudit/run-1/plan.json",
        "spool_dir": "/github/workspace/.tfaudit/run-1",
        "plan": PlanCounts(add=3, change=1, destroy=2, import_=0),
        "resources": [
            {"address": "aws_s3_bucket.logs", "actions": ["create"]},
            {"address": "aws_instance.web", "actions": ["delete", "create"]},
            {"address": 'null_resource.x["a|b"]', "actions": ["update"]},
        ],
        "masked_values": ["hunter2-secret"],
    }
    values.update(overrides)
    return RunResult(**values)  # type: ignore[arg-type]


def test_outputs_round_trip_through_the_runner_parser(tmp_path: Path) -> None:
    output_file = tmp_path / "set_output_1"
    output_file.write_text("earlier=kept\n", encoding="utf-8")  # other commands' lines survive
    github.write_outputs(make_result(), output_file, path_base="/github/workspace")

    outputs = parse_github_output(output_file.read_text(encoding="utf-8"))
    assert outputs == {
        "earlier": "kept",
        "exit-code": "2",
        "status": "succeeded",
        "audit-ok": "true",
        "seq": "41",
        "record-uri": "s3://audit-bucket/tf/acme/infra/chain/000000000041.json",
        "record-sha256": "ab" * 32,
        "checkpoint-uri": "",
        "log-path": ".tfaudit/run-1/output.log",
        "plan-json-path": ".tfaudit/run-1/plan.json",
        "to-add": "3",
        "to-change": "1",
        "to-destroy": "2",
    }


def test_output_values_cannot_inject_other_outputs(tmp_path: Path) -> None:
    hostile = "s3://b/k\nEOF\nstatus<<EOF\nsucceeded\nEOF\nghadelimiter_x"
    output_file = tmp_path / "out"
    github.write_outputs(
        make_result(record_uri=hostile, status="failed", audit_ok=False), output_file
    )
    outputs = parse_github_output(output_file.read_text(encoding="utf-8"))
    assert outputs["record-uri"] == hostile
    assert outputs["status"] == "failed"
    assert outputs["audit-ok"] == "false"


def test_delimiters_are_random_per_value(tmp_path: Path) -> None:
    output_file = tmp_path / "out"
    github.write_outputs(make_result(), output_file)
    delimiters = re.findall(r"^[a-z0-9-]+<<(.+)$", output_file.read_text(), flags=re.M)
    assert len(delimiters) == len(set(delimiters)) == 12


def test_not_run_outputs_are_empty_not_zero(tmp_path: Path) -> None:
    output_file = tmp_path / "out"
    result = make_result(
        exit_code=21, command_exit_code=None, status="not-run", audit_ok=False, plan=None
    )
    github.write_outputs(result, output_file)
    outputs = parse_github_output(output_file.read_text())
    assert outputs["exit-code"] == ""
    assert outputs["to-add"] == outputs["to-change"] == outputs["to-destroy"] == ""
    assert outputs["status"] == "not-run"


def test_host_paths_outside_the_container_stay_absolute(tmp_path: Path) -> None:
    output_file = tmp_path / "out"
    github.write_outputs(make_result(log_path="/runner/tmp/output.log"), output_file)
    assert parse_github_output(output_file.read_text())["log-path"] == "/runner/tmp/output.log"


def test_masks_escape_and_split_multiline_values() -> None:
    out = io.StringIO()
    pem = "-----BEGIN KEY-----\nMIIEabc%0Adef\r\n-----END KEY-----\n"
    github.emit_masks(["token-123", pem, "token-123", "ab", "   "], out)
    assert out.getvalue().splitlines() == [
        "::add-mask::token-123",
        "::add-mask::-----BEGIN KEY-----",
        "::add-mask::MIIEabc%250Adef",
        "::add-mask::-----END KEY-----",
    ]


def test_error_annotation_is_one_escaped_line() -> None:
    out = io.StringIO()
    github.annotate_error("upload failed: 100% of\r\n3 parts", out, title="tfaudit: S3, eu")
    assert out.getvalue() == (
        "::error title=tfaudit%3A S3%2C eu::upload failed: 100%25 of%0D%0A3 parts\n"
    )


def test_summary_shows_status_counts_table_uri_and_verify_hint() -> None:
    summary = github.step_summary(make_result())
    assert "succeeded" in summary
    assert "**Plan:** 3 to add, 1 to change, 2 to destroy, 0 to import." in summary
    assert "| create | <code>aws_s3_bucket.logs</code> |" in summary
    assert "| replace | <code>aws_instance.web</code> |" in summary
    # A `|` in an address must not split the table cell.
    assert '| update | <code>null_resource.x["a&#124;b"]</code> |' in summary
    assert "<code>s3://audit-bucket/tf/acme/infra/chain/000000000041.json</code>" in summary
    assert "tfaudit verify --store s3://audit-bucket/tf --stream acme/infra" in summary
    assert "hunter2" not in summary


def test_summary_of_a_failed_audit_names_the_error_and_the_kept_spool() -> None:
    result = make_result(
        exit_code=22,
        audit_ok=False,
        record_uri=None,
        error="upload failed after 5 attempts: <Error>SlowDown</Error>",
    )
    summary = github.step_summary(result)
    assert "audit **FAILED**" in summary
    assert "[!CAUTION]" in summary
    assert "&lt;Error&gt;SlowDown&lt;/Error&gt;" in summary  # escaped, never raw HTML
    assert "/github/workspace/.tfaudit/run-1" in summary
    assert "tfaudit verify" not in summary  # nothing was recorded to verify


def test_huge_plans_truncate_at_a_whole_row_well_under_the_cap() -> None:
    resources = [
        {"address": f'module.m["{i}"].aws_instance.this[{i}]', "actions": ["create"]}
        for i in range(200_000)
    ]
    summary = github.step_summary(make_result(resources=resources))
    size = len(summary.encode("utf-8"))
    assert size < ONE_MIB // 2
    rows = [line for line in summary.splitlines() if line.startswith("| create |")]
    assert 0 < len(rows) <= github.SUMMARY_MAX_ROWS
    assert all(line.endswith("</code> |") for line in rows)
    assert f"…and {200_000 - len(rows)} more resource change(s) not shown" in summary


def test_table_budget_cuts_before_max_rows() -> None:
    resources = [{"address": "x" * 500, "actions": ["update"]} for _ in range(100)]
    table = github.resource_table(resources, budget_bytes=5000)
    assert len(table.encode("utf-8")) <= 5000 + 200  # the budget plus the closing note
    assert "more resource change(s) not shown" in table


def test_report_writes_the_runner_files_and_annotates(tmp_path: Path) -> None:
    file_commands = tmp_path / "file_commands"  # stands in for /github/file_commands
    file_commands.mkdir()
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_WORKSPACE": "/github/workspace",
        "GITHUB_OUTPUT": str(file_commands / "set_output_abc"),
        "GITHUB_STEP_SUMMARY": str(file_commands / "step_summary_abc"),
    }
    out = io.StringIO()
    result = make_result(exit_code=23, audit_ok=False, error="read-back failed:\nretention 1d")
    github.report(result, env, out)

    stdout = out.getvalue()
    assert "::add-mask::hunter2-secret\n" in stdout
    assert "::error title=tfaudit::read-back failed:%0Aretention 1d\n" in stdout
    outputs = parse_github_output(Path(env["GITHUB_OUTPUT"]).read_text())
    assert outputs["audit-ok"] == "false"
    assert outputs["log-path"] == ".tfaudit/run-1/output.log"
    assert "audit **FAILED**" in Path(env["GITHUB_STEP_SUMMARY"]).read_text()


def test_every_warning_is_one_block_and_one_annotation(tmp_path: Path) -> None:
    """The run's warnings (a missed witness checkpoint) and the environment's (a trace log)
    share one warning block in the summary, and each is a ``::warning::`` annotation."""
    summary = tmp_path / "step_summary"
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary), "TF_LOG": "trace"}
    witness = "witness unavailable: checkpoint of seq 41 not written (<connection refused>)"
    out = io.StringIO()
    github.report(make_result(warnings=[witness]), env, out)

    text = summary.read_text()
    assert text.count("[!WARNING]") == 1
    block = text[text.index("[!WARNING]") :]
    assert "checkpoint of seq 41 not written (&lt;connection refused&gt;)" in block
    assert "TF_LOG" in block
    annotations = [line for line in out.getvalue().splitlines() if line.startswith("::warning")]
    assert len(annotations) == 2
    assert annotations[0] == f"::warning title=tfaudit::{witness}"


def test_unwritable_output_path_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    out = io.StringIO()
    missing = tmp_path / "no-such-dir" / "out"
    github.report(make_result(), {"GITHUB_OUTPUT": str(missing)}, out)
    assert "::warning::tfaudit could not write GITHUB_OUTPUT" in out.getvalue()


def test_publish_picks_the_ci_from_the_environment(tmp_path: Path) -> None:
    assert detect_ci({"GITHUB_ACTIONS": "true"}) == "github"
    assert detect_ci({"GITLAB_CI": "true"}) == "gitlab"
    assert detect_ci({"CI": "true"}) is None

    summary = tmp_path / "summary"
    publish(make_result(), {"GITHUB_ACTIONS": "false", "GITHUB_STEP_SUMMARY": str(summary)})
    assert not summary.exists()
    publish(make_result(), {"GITLAB_CI": "true", "CI_PROJECT_DIR": str(tmp_path)})
    assert (tmp_path / "tfaudit.env").exists()


# --- entrypoint.py, run exactly as the runner runs a container action ----------------------

ENTRYPOINT = Path(__file__).resolve().parent.parent / "entrypoint.py"


def runner_env(base: dict[str, str], tmp_path: Path, **inputs: str) -> dict[str, str]:
    """INPUT_* with hyphens kept, GITHUB_* metadata, file commands in a temp dir."""
    file_commands = tmp_path / "file_commands"  # stands in for /github/file_commands
    file_commands.mkdir(exist_ok=True)
    env = dict(base)
    env.update(
        {
            "GITHUB_ACTIONS": "true",
            "CI": "true",
            "GITHUB_REPOSITORY": "acme/infra",
            "GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567",
            "GITHUB_REF": "refs/pull/7/merge",
            "GITHUB_RUN_ID": "9001",
            "GITHUB_RUN_ATTEMPT": "1",
            "GITHUB_JOB": "plan",
            "GITHUB_WORKFLOW": "terraform",
            "GITHUB_EVENT_NAME": "pull_request",
            "GITHUB_ACTOR": "alice",
            "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_WORKSPACE": str(tmp_path),
            "GITHUB_OUTPUT": str(file_commands / "set_output_1"),
            "GITHUB_STEP_SUMMARY": str(file_commands / "step_summary_1"),
            "PYTHONPATH": str(ENTRYPOINT.parent),
        }
    )
    for name, value in inputs.items():
        env[f"INPUT_{name.replace('_', '-').upper()}"] = value
    return env


def test_entrypoint_against_the_local_s3_server(
    s3_server: S3Server,
    lock_bucket: str,
    terraform_bin: Path,
    tf_workdir: Path,
    tf_env: dict[str, str],
    tmp_path: Path,
) -> None:
    env = runner_env(
        {**tf_env, **s3_server.env(), "TFAUDIT_WORK_DIR": str(tmp_path / "spools")},
        tmp_path,
        command="plan -input=false -detailed-exitcode -out=tfplan",
        working_directory=str(tf_workdir),
        terraform_bin=str(terraform_bin),
        store=f"s3://{lock_bucket}/audit",
        stream="acme/infra",
        endpoint_url=s3_server.endpoint,
        retention_days="1",
        redact="env:DB_PASSWORD",
    )
    env["DB_PASSWORD"] = "correct-horse-battery"
    proc = subprocess.run(
        [sys.executable, str(ENTRYPOINT)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]  # changes present
    assert "::add-mask::correct-horse-battery" in proc.stdout

    outputs = parse_github_output(Path(env["GITHUB_OUTPUT"]).read_text())
    assert outputs["exit-code"] == "2"
    assert outputs["status"] == "succeeded"
    assert outputs["audit-ok"] == "true"
    assert outputs["to-add"] == "1" and outputs["to-destroy"] == "0"
    assert outputs["record-uri"].startswith(f"s3://{lock_bucket}/audit/acme/infra/chain/")
    assert len(outputs["record-sha256"]) == 64
    assert Path(outputs["log-path"]).is_file() and Path(outputs["plan-json-path"]).is_file()

    summary = Path(env["GITHUB_STEP_SUMMARY"]).read_text()
    assert "**Plan:** 1 to add, 0 to change, 0 to destroy" in summary
    assert outputs["record-uri"] in summary
    assert f"tfaudit verify --store s3://{lock_bucket}/audit --stream acme/infra" in summary


def test_sigint_cancels_terraform_and_still_ships_the_record(
    s3_server: S3Server,
    lock_bucket: str,
    terraform_bin: Path,
    tf_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """The runner's cancel: SIGINT to the container's process while terraform applies."""
    from devkit.tfhelpers import tf_init, write_local_exec_config

    workdir = tmp_path / "slow"
    write_local_exec_config(workdir, "echo provisioning-started && sleep 120")
    tf_init(terraform_bin, workdir, tf_env)
    env = runner_env(
        {**tf_env, **s3_server.env(), "TFAUDIT_WORK_DIR": str(tmp_path / "spools")},
        tmp_path,
        command="apply -input=false -auto-approve",
        working_directory=str(workdir),
        terraform_bin=str(terraform_bin),
        store=f"s3://{lock_bucket}/audit",
        stream="acme/infra",
        endpoint_url=s3_server.endpoint,
        retention_days="1",
    )
    proc = subprocess.Popen(
        [sys.executable, str(ENTRYPOINT)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        for line in proc.stdout:  # bounded: terraform prints the marker or exits
            seen.append(line)
            if "provisioning-started" in line:
                proc.send_signal(signal.SIGINT)
                break
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(seen) + rest
    assert any("provisioning-started" in line for line in seen), output[-3000:]
    assert proc.returncode == 130, output[-3000:]
    assert "Interrupt received" in output  # terraform itself got the signal

    outputs = parse_github_output(Path(env["GITHUB_OUTPUT"]).read_text())
    assert outputs["status"] == "cancelled"
    assert outputs["audit-ok"] == "true"
    assert outputs["record-uri"].startswith(f"s3://{lock_bucket}/audit/acme/infra/chain/")
