"""``tfaudit run -- COMMAND``: preflight, run, capture, ship, confirm, report."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from tfaudit_ci import errors, secondpass
from tfaudit_ci.capture import PlanCapture, capture_plan, sha256_file, tool_version, workspace
from tfaudit_ci.ci import CiInfo, default_stream, detect, sanitize_stream
from tfaudit_ci.config import Config
from tfaudit_ci.errors import ConfigError, PreflightError, TfauditError
from tfaudit_ci.record import iso, run_folder_name, utc_now
from tfaudit_ci.redact import RuleSet
from tfaudit_ci.redact_run import redact_command, run_rules, stdout_policy
from tfaudit_ci.result import PlanCounts, RunResult
from tfaudit_ci.runner import Outcome, run_streaming
from tfaudit_ci.ship import Artifact, ship_record
from tfaudit_ci.signals import deferred_signals
from tfaudit_ci.signing import Signer, make_signer
from tfaudit_ci.spool import (
    LOG_FILE,
    PLAN_FILE,
    RECEIPT_FILE,
    STATE_FILE,
    HashingWriter,
    file_digests,
    make_spool_dir,
    write_json,
)
from tfaudit_ci.stores import open_store
from tfaudit_ci.stores.base import PreflightReport, Store
from tfaudit_ci.tfargs import TfInvocation, parse_invocation


@dataclass
class Console:
    stdout: BinaryIO
    stderr: BinaryIO
    messages: TextIO  # tfaudit's own lines (stderr)


def default_work_dir(env: Mapping[str, str], cwd: Path) -> Path:
    if env.get("RUNNER_TEMP"):
        return Path(env["RUNNER_TEMP"]) / "tfaudit"
    return cwd / ".tfaudit"


def checked_stream(stream: str) -> str:
    if sanitize_stream(stream) != stream:
        raise ConfigError(
            f"stream name {stream!r} is not a safe key",
            fix="use letters, digits, '.', '_', '-' in segments joined by '/'",
        )
    return stream


def preflight(store: Store, config: Config, console: Console) -> PreflightReport:
    report = store.preflight(config.policy)
    if report.ok:
        return report
    problems = "; ".join(report.problems())
    if config.on_unlocked == "warn":
        console.messages.write(
            f"tfaudit: warning: {store.uri} is not WORM as policy requires: "
            f"{problems} (continuing: --on-unlocked warn)\n"
        )
        return report
    raise PreflightError(
        f"{store.uri} is not locked as policy requires: {problems}",
        fix="fix the bucket's Object Lock settings (see README), or pass --on-unlocked warn "
        "to accept an unlocked store",
    )


def status_of(outcome: Outcome, inv: TfInvocation) -> str:
    if outcome.signal_received is not None:
        return "cancelled"
    if outcome.crashed:
        return "crashed"
    if outcome.exit_code == 0 or (
        outcome.exit_code == 2 and inv.detailed_exitcode and inv.subcommand == "plan"
    ):
        return "succeeded"
    return "failed"


def _capture(
    inv: TfInvocation, outcome: Outcome, env: Mapping[str, str], cwd: Path, rules: RuleSet
) -> PlanCapture | None:
    if inv.subcommand == "plan" and inv.plan_out and outcome.exit_code in (0, 2):
        return capture_plan(inv, inv.plan_out, env, cwd, rules)
    if inv.subcommand == "apply" and inv.apply_plan_file:
        return capture_plan(inv, inv.apply_plan_file, env, cwd, rules)
    if inv.plan_out:
        return PlanCapture(
            inv.plan_out,
            sha256_file(Path(inv.plan_out)),
            None,
            None,
            error="the command failed; no plan to capture",
        )
    return None


def execute(
    command: Sequence[str],
    config: Config,
    env: Mapping[str, str],
    cwd: Path,
    console: Console,
    pending_signals: Sequence[int] = (),
) -> RunResult:
    store_url = config.require_store()
    store = open_store(store_url, config.store_options())
    report = preflight(store, config, console)
    # Some modes (Azure container policy) cannot show a per-object lock from the data plane.
    check_lock = report.worm and report.ok and getattr(store, "lock_readback_supported", True)

    ci: CiInfo = detect(env, cwd=cwd)
    stream = checked_stream(config.stream) if config.stream else default_stream(ci, cwd, env=env)
    rules = run_rules(command, env, config.redact)
    inv = parse_invocation(command, cwd=cwd, env=env)
    signer = make_signer(config.signing_key, env)

    if env.get("GITHUB_ACTIONS") == "true":
        from tfaudit_ci.report.github import emit_masks

        emit_masks(rules.masked_values(), sys.stdout)
        sys.stdout.flush()

    if pending_signals:
        # Cancelled during preflight: the command must not start, and there is nothing to ship.
        return RunResult(
            exit_code=128 + pending_signals[0],
            command_exit_code=None,
            status="not-run",
            audit_ok=False,
            store=store.uri,
            stream=stream,
            error="interrupted before the command started; nothing was run or recorded",
        )
    started = utc_now()
    run_folder = run_folder_name(started, ci.run_id, ci.attempt)
    work_dir = Path(config.work_dir) if config.work_dir else default_work_dir(env, cwd)
    spool_dir = make_spool_dir(work_dir, run_folder)
    redacted_argv = redact_command(command, rules)
    policy = stdout_policy(inv, config.store_state_output)
    secondpass.begin(
        spool_dir,
        inv,
        cwd,
        env,
        started_at=started,
        stdout_withheld=policy.withheld,
        state_output=policy.state_output,
    )
    for warning in rules.warnings:
        console.messages.write(f"tfaudit: warning: {warning}\n")
    base: dict[str, Any] = {
        "store": store.uri,
        "stream": stream,
        "run_folder": run_folder,
        "command": redacted_argv,
        "cwd": str(cwd),
        "ci": ci.to_dict(),
        "started_at": iso(started),
        "status": "running",
    }
    write_json(spool_dir / STATE_FILE, base)
    result = RunResult(
        exit_code=errors.EXIT_USAGE,
        command_exit_code=None,
        status="not-run",
        audit_ok=False,
        store=store.uri,
        stream=stream,
        spool_dir=str(spool_dir),
        log_path=str(spool_dir / LOG_FILE),
        masked_values=rules.masked_values(),
    )

    ctx = RunContext(
        command=list(command),
        config=config,
        env=env,
        cwd=cwd,
        console=console,
        store=store,
        check_lock=check_lock,
        ci=ci,
        stream=stream,
        rules=rules,
        inv=inv,
        signer=signer,
        run_folder=run_folder,
        work_dir=work_dir,
        spool_dir=spool_dir,
        redacted_argv=redacted_argv,
        state=base,
    )
    try:
        return _run_and_ship(ctx, result)
    except TfauditError as exc:
        return audit_failure(result, exc)
    except Exception as exc:  # a bug or an unexpected SDK error must still fail the audit
        failure = errors.UploadError(
            f"unexpected error while auditing: {type(exc).__name__}: {exc}",
            fix="re-run with -v and report it; the spool is kept",
        )
        failure.__cause__ = exc
        return audit_failure(result, failure)


@dataclass
class RunContext:
    command: list[str]
    config: Config
    env: Mapping[str, str]
    cwd: Path
    console: Console
    store: Store
    check_lock: bool
    ci: CiInfo
    stream: str
    rules: RuleSet
    inv: TfInvocation
    signer: Signer
    run_folder: str
    work_dir: Path
    spool_dir: Path
    redacted_argv: list[str]
    state: dict[str, Any]


def _run_and_ship(ctx: RunContext, result: RunResult) -> RunResult:
    # CI identity evidence (issue 3): the OIDC token is short-lived, so mint it before the
    # command runs; a job that cannot mint one is recorded without it, never failed.
    from tfaudit_ci.identity import identity_for_run

    identity, identity_path = identity_for_run(
        ctx.env,
        audience=ctx.config.oidc_audience,
        gitlab_var=ctx.config.gitlab_id_token_var,
        spool_dir=ctx.spool_dir,
        warn=ctx.console.messages.write,
    )
    ctx.state["identity"] = identity  # for `tfaudit recover`, with identity.json in the spool
    # `terraform version` runs beside the command instead of adding to the job's time.
    versions = ThreadPoolExecutor(max_workers=1)
    version = versions.submit(tool_version, ctx.inv, ctx.env, ctx.cwd)
    versions.shutdown(wait=False)
    writer = HashingWriter(ctx.spool_dir / LOG_FILE)
    try:
        outcome = run_streaming(
            ctx.command,
            cwd=ctx.cwd,
            env=ctx.env,
            spool=writer,
            ruleset=ctx.rules,
            stdout=ctx.console.stdout,
            stderr=ctx.console.stderr,
            withhold_stdout=stdout_policy(ctx.inv, ctx.config.store_state_output).withheld
            is not None,
        )
    except ConfigError:
        # The command never started: nothing ran, so there is nothing to ship or recover.
        shutil.rmtree(ctx.spool_dir, ignore_errors=True)
        result.spool_dir = result.log_path = None
        raise
    finally:
        log_digests = writer.close()
    status = status_of(outcome, ctx.inv)
    result.command_exit_code = outcome.exit_code
    result.status = status
    if writer.error is not None:  # checked first: on a full disk the state write fails too
        raise errors.UploadError(
            f"the spool could not be written ({writer.error.strerror}); the log is incomplete",
            fix=f"free space in {ctx.work_dir} or point --work-dir elsewhere",
        )
    ctx.state.update(
        status=status, exit_code=outcome.exit_code, finished_at=iso(outcome.finished_at)
    )
    write_json(ctx.spool_dir / STATE_FILE, ctx.state)
    secondpass.after_command(ctx.spool_dir, stdout_bytes=outcome.stdout_withheld_bytes)

    capture = _capture(ctx.inv, outcome, ctx.env, ctx.cwd, ctx.rules)
    # The second pass (issue 13): what the plan marks sensitive leaves the log, or the log stays.
    planned = capture if capture is not None and capture.json_bytes is not None else None
    passed = secondpass.apply(
        ctx.spool_dir, ctx.env, sensitive=planned.sensitive if planned else None, live=True
    )
    for message in passed.messages():
        ctx.console.messages.write(f"tfaudit: warning: {message}\n")
    outcome.redactions.update(passed.record.redactions)
    artifacts = []
    if not passed.log_withheld:
        digests = passed.log_digests or log_digests
        artifacts.append(Artifact("output.log", ctx.spool_dir / LOG_FILE, digests))
    else:
        result.log_path = None
    if capture is not None and capture.json_bytes is not None:
        (ctx.spool_dir / PLAN_FILE).write_bytes(capture.json_bytes)
        artifacts.append(
            Artifact(
                "plan.json", ctx.spool_dir / PLAN_FILE, file_digests(ctx.spool_dir / PLAN_FILE)
            )
        )
        result.plan_json_path = str(ctx.spool_dir / PLAN_FILE)
    if capture is not None and capture.summary is not None:
        s = capture.summary
        result.plan = PlanCounts(s.add, s.change, s.destroy, s.import_)
        result.resources = s.resources
    if ctx.config.upload_plan_file and capture is not None and capture.plan_file_sha256:
        ctx.console.messages.write(
            "tfaudit: warning: uploading the binary plan file, which holds "
            "sensitive values in clear (upload-plan-file is on)\n"
        )
        plan_path = Path(capture.plan_file)
        artifacts.append(Artifact("tfplan.bin", plan_path, file_digests(plan_path)))
    if identity_path is not None:
        artifacts.append(Artifact(identity_path.name, identity_path, file_digests(identity_path)))

    fields: dict[str, Any] = {
        "command": ctx.redacted_argv,
        "cwd": str(ctx.cwd),
        "tool": {
            "name": ctx.inv.tool,
            "binary": Path(ctx.inv.binary).name,
            "version": version.result(),
        },
        "workspace": workspace(ctx.inv, ctx.env, ctx.cwd),
        "status": status,
        "exit_code": outcome.exit_code,
        "started_at": outcome.started_at,
        "finished_at": outcome.finished_at,
        "ci": ctx.ci.to_dict(),
        "plan": capture.record_fields() if capture else None,
        "redactions": dict(outcome.redactions),
        "identity": identity,
        **passed.record_fields(),
    }
    # Should this process die while shipping, `tfaudit recover` finds all it needs here.
    ctx.state.update(tool=fields["tool"], workspace=fields["workspace"])
    write_json(ctx.spool_dir / STATE_FILE, ctx.state)
    options = ctx.config.store_options()
    shipment = ship_record(
        ctx.store,
        ctx.stream,
        ctx.run_folder,
        artifacts,
        fields,
        policy=ctx.config.policy,
        check_lock=ctx.check_lock,
        signer=ctx.signer,
        part_size=options.multipart_chunksize,
        multipart_threshold=options.multipart_threshold,
    )
    result.seq = shipment.seq
    result.record_uri = f"{ctx.store.uri.rstrip('/')}/{shipment.record_key}"
    result.record_sha256 = shipment.record_sha256
    result.audit_ok = True
    write_json(
        ctx.spool_dir / RECEIPT_FILE,
        {
            "seq": shipment.seq,
            "record_uri": result.record_uri,
            "record_sha256": shipment.record_sha256,
            "version_id": shipment.record_version_id,
        },
    )
    if outcome.signal_received is not None:
        result.exit_code = 128 + outcome.signal_received
    else:
        result.exit_code = outcome.exit_code
    return result


def audit_failure(result: RunResult, exc: TfauditError) -> RunResult:
    result.audit_ok = False
    result.error = exc.diagnostics()
    result.exit_code = exc.exit_code
    return result


def summary_line(result: RunResult) -> str:
    if result.audit_ok:
        plan = ""
        if result.plan is not None:
            p = result.plan
            plan = f", plan +{p.add} ~{p.change} -{p.destroy}"
        return (
            f"tfaudit: {result.status} (exit {result.exit_code}{plan}); record seq "
            f"{result.seq} at {result.record_uri} sha256 {result.record_sha256}"
        )
    if result.status == "not-run" and result.exit_code in (errors.EXIT_SIGINT, errors.EXIT_SIGTERM):
        return f"tfaudit: {result.error} (exit {result.exit_code})"
    return (
        f"tfaudit: AUDIT FAILED (exit {result.exit_code}; command status {result.status}, "
        f"exit {result.command_exit_code}): {result.error}"
        + (f"; the spool is kept at {result.spool_dir}" if result.spool_dir else "")
    )


def main_run(
    command: Sequence[str], config: Config, env: Mapping[str, str], cwd: Path, *, as_json: bool
) -> int:
    console = Console(sys.stdout.buffer, sys.stderr.buffer, sys.stderr)
    with deferred_signals() as received:
        result = execute(command, config, env, cwd, console, pending_signals=received)
        if received and result.audit_ok and result.exit_code not in (130, 143):
            result.exit_code = 128 + received[0]
        sys.stderr.write(summary_line(result) + "\n")
        sys.stderr.flush()
        from tfaudit_ci.report import publish

        publish(result, env)
        if as_json:
            from tfaudit_ci.cli import print_json

            print_json(result.to_dict())
    return result.exit_code
