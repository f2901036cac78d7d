"""``tfaudit run -- COMMAND``: preflight, run, capture, write the spool, ship it, report.

The spool is the contract: once the command has finished, everything needed to ship is in
``spool.json`` (``spoolstate.py``), and ``ship_spool`` ships it, exactly as ``recover``
would after a crash.

Preflight runs on a thread. A command that can change infrastructure or state starts only
once it has passed; a read-only one (``TfInvocation.read_only``: ``plan``, ``validate``...)
starts at once, beside it, and is stopped as a cancel stops it if preflight then fails.
"""

from __future__ import annotations

import shutil
import sys
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tfaudit_ci import errors, secondpass
from tfaudit_ci.capture import PlanCapture, capture_plan, sha256_file, tool_version, workspace
from tfaudit_ci.ci import CiInfo, detect, resolve_stream
from tfaudit_ci.config import Config
from tfaudit_ci.console import Console, write_json_file
from tfaudit_ci.errors import ConfigError, TfauditError
from tfaudit_ci.locking import Checked, preflight
from tfaudit_ci.record import iso, run_folder_name, utc_now
from tfaudit_ci.redact import RuleSet
from tfaudit_ci.redact_run import StdoutPolicy, redact_command, run_rules, stdout_policy
from tfaudit_ci.result import PlanCounts, RunResult
from tfaudit_ci.runner import Outcome, run_streaming
from tfaudit_ci.ship import ship_spool
from tfaudit_ci.signals import deferred_signals
from tfaudit_ci.signing import make_signer
from tfaudit_ci.spool import (
    LOG_FILE,
    PLAN_FILE,
    HashingWriter,
    default_work_dir,
    file_digests,
    make_spool_dir,
    settle,
)
from tfaudit_ci.spoolstate import SpoolArtifact, SpoolState, ToolInfo
from tfaudit_ci.stores import open_store
from tfaudit_ci.stores.base import Store
from tfaudit_ci.tfargs import TfInvocation, parse_invocation
from tfaudit_ci.vocab import RunStatus
from tfaudit_ci.witness import Witness, open_witness_soon, witness_spec


def status_of(outcome: Outcome, inv: TfInvocation) -> RunStatus:
    if outcome.signal_received is not None or outcome.stopped:
        return RunStatus.CANCELLED
    if outcome.crashed:
        return RunStatus.CRASHED
    if outcome.exit_code == 0 or (
        outcome.exit_code == 2 and inv.detailed_exitcode and inv.subcommand == "plan"
    ):
        return RunStatus.SUCCEEDED
    return RunStatus.FAILED


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


@dataclass(frozen=True)
class Checks:
    """What preflight found: the primary store accepted, and the witness, if any."""

    checked: Checked
    witness: Witness | None


def _preflight(store: Store, config: Config, stream: str) -> Checks:
    """The primary's preflight, with the witness's beside it."""
    spec = witness_spec(config)
    opening = open_witness_soon(spec, stream, config.policy, config.on_unlocked) if spec else None
    checked = preflight(store, config.policy, config.on_unlocked)
    return Checks(checked, opening() if opening is not None else None)


@dataclass
class Run:
    """One run, from preflight to receipt."""

    config: Config
    env: Mapping[str, str]
    cwd: Path
    console: Console
    store: Store
    ci: CiInfo
    stream: str
    rules: RuleSet
    inv: TfInvocation
    command: list[str]
    result: RunResult
    checking: Future[Checks] = field(default_factory=Future, init=False)
    # Set once preflight has failed: stops a read-only command started beside it.
    preflight_failed: threading.Event = field(default_factory=threading.Event, init=False)
    _checks: Checks | None = field(default=None, init=False)

    def start_preflight(self) -> None:
        """Preflight on a thread; the S3 client it needs is already being built."""

        def check() -> None:
            try:
                self.checking.set_result(_preflight(self.store, self.config, self.stream))
            except BaseException as exc:  # re-raised by checks() in the main thread
                self.preflight_failed.set()
                self.checking.set_exception(exc)

        threading.Thread(target=check, name="tfaudit-preflight", daemon=True).start()

    def checks(self) -> Checks:
        """Wait for preflight; raise what it raised (PreflightError: exit 21). Its warnings
        are printed once, when it is first waited for."""
        if self._checks is None:
            self._checks = self.checking.result()
            for warning in (self._checks.checked.warning, self._witness_warning()):
                if warning:
                    self.console.say(f"tfaudit: warning: {warning}")
                    self.result.warnings.append(warning)
        return self._checks

    def _witness_warning(self) -> str | None:
        assert self._checks is not None
        return self._checks.witness.warning if self._checks.witness is not None else None

    @property
    def overlaps(self) -> bool:
        """The command may start while preflight is in flight (it cannot change anything)."""
        return self.inv.read_only

    @property
    def stdout(self) -> StdoutPolicy:
        """Whether the command's stdout is stored (state-printing commands: not by default)."""
        return stdout_policy(self.inv, self.config.store_state_output)

    def new_spool(self) -> tuple[Path, SpoolState]:
        started = utc_now()
        run_folder = run_folder_name(started, self.ci.run_id, self.ci.attempt)
        work_dir = (
            Path(self.config.work_dir) if self.config.work_dir else default_work_dir(self.env)
        )
        spool_dir = make_spool_dir(work_dir, run_folder)
        spool = SpoolState(
            store=self.config.require_store(),
            store_options=self.config.store_options(),
            stream=self.stream,
            policy=self.config.policy,
            on_unlocked=self.config.on_unlocked,
            signing_key=self.config.signing_key,
            run_folder=run_folder,
            command=redact_command(self.command, self.rules),
            cwd=str(self.cwd),
            ci=self.ci.to_dict(),
            started_at=iso(started),
            witness=witness_spec(self.config),
        )
        spool.save(spool_dir)
        policy = self.stdout
        secondpass.begin(
            spool_dir,
            self.inv,
            self.cwd,
            self.env,
            started_at=started,
            stdout_withheld=policy.withheld,
            state_output=policy.state_output,
        )
        self.result.spool_dir = str(spool_dir)
        self.result.log_path = str(spool_dir / LOG_FILE)
        return spool_dir, spool

    def execute(self, spool_dir: Path, spool: SpoolState) -> None:
        # CI identity evidence: the OIDC token is short-lived, so mint it before the command
        # runs; a job that cannot mint one is recorded without it, never failed.
        from tfaudit_ci.identity import IDENTITY_ARTIFACT, identity_for_run

        identity, identity_path = identity_for_run(
            self.env,
            audience=self.config.oidc_audience,
            gitlab_var=self.config.gitlab_id_token_var,
            spool_dir=spool_dir,
            warn=lambda text: self.console.say(text),
        )
        spool.identity = identity
        spool.save(spool_dir)
        # `terraform version` runs beside the command instead of adding to the job's time.
        versions = ThreadPoolExecutor(max_workers=1)
        version: Future[str | None] = versions.submit(tool_version, self.inv, self.env, self.cwd)
        versions.shutdown(wait=False)
        writer = HashingWriter(spool_dir / LOG_FILE)
        try:
            outcome = run_streaming(
                self.command,
                cwd=self.cwd,
                env=self.env,
                spool=writer,
                ruleset=self.rules,
                stdout=self.console.stdout,
                stderr=self.console.stderr,
                withhold_stdout=self.stdout.withheld is not None,
                stop=self.preflight_failed if self.overlaps else None,
                on_stop=lambda: self.console.say(
                    f"tfaudit: preflight failed while `{self.inv.subcommand}` ran beside it: "
                    "stopping it as a cancel stops it"
                ),
            )
        except ConfigError:
            # The command never started: nothing ran, so there is nothing to ship or recover.
            shutil.rmtree(spool_dir, ignore_errors=True)
            self.result.spool_dir = self.result.log_path = None
            raise
        finally:
            log_digests = writer.close()
        status = status_of(outcome, self.inv)
        self.result.command_exit_code = outcome.exit_code
        self.result.status = status
        if writer.error is not None:  # checked first: on a full disk the state write fails too
            raise errors.UploadError(
                f"the spool could not be written ({writer.error.strerror}); the log is incomplete",
                fix=f"free space in {spool_dir.parent} or point --work-dir elsewhere",
            )
        spool.status = status
        spool.exit_code = outcome.exit_code
        spool.started_at = iso(outcome.started_at)
        spool.finished_at = iso(outcome.finished_at)
        spool.redactions = dict(sorted(outcome.redactions.items()))
        spool.save(spool_dir)
        secondpass.after_command(spool_dir, stdout_bytes=outcome.stdout_withheld_bytes)

        capture = _capture(self.inv, outcome, self.env, self.cwd, self.rules)
        # The second pass: what the plan marks sensitive leaves the log, or the log stays.
        planned = capture if capture is not None and capture.json_bytes is not None else None
        passed = secondpass.apply(
            spool_dir, self.env, sensitive=planned.sensitive if planned else None, live=True
        )
        for message in passed.messages():
            self.console.say(f"tfaudit: warning: {message}")
            self.result.warnings.append(message)
        artifacts = []
        if passed.log_withheld:
            self.result.log_path = None
        else:
            digests = passed.log_digests or log_digests
            artifacts.append(SpoolArtifact.of("output.log", LOG_FILE, digests))
        spool.record_pass(passed)
        if capture is not None and capture.json_bytes is not None:
            (spool_dir / PLAN_FILE).write_bytes(capture.json_bytes)
            artifacts.append(
                SpoolArtifact.of("plan.json", PLAN_FILE, file_digests(spool_dir / PLAN_FILE))
            )
            self.result.plan_json_path = str(spool_dir / PLAN_FILE)
        if capture is not None and capture.summary is not None:
            s = capture.summary
            self.result.plan = PlanCounts(s.add, s.change, s.destroy, s.import_)
            self.result.resources = s.resources
        if self.config.upload_plan_file and capture is not None and capture.plan_file_sha256:
            self.console.say(
                "tfaudit: warning: uploading the binary plan file, which holds "
                "sensitive values in clear (upload-plan-file is on)"
            )
            plan_path = (self.cwd / capture.plan_file).resolve()
            artifacts.append(
                SpoolArtifact.of("tfplan.bin", str(plan_path), file_digests(plan_path))
            )
        if identity_path is not None:
            artifacts.append(
                SpoolArtifact.of(IDENTITY_ARTIFACT, IDENTITY_ARTIFACT, file_digests(identity_path))
            )
        spool.tool = ToolInfo(self.inv.tool, Path(self.inv.binary).name, version.result())
        spool.workspace = workspace(self.inv, self.env, self.cwd)
        spool.plan = capture.record_fields() if capture else None
        spool.artifacts = artifacts
        spool.phase = "complete"
        # Should this process die while shipping, `tfaudit recover` finds all it needs here.
        spool.save(spool_dir)
        if outcome.signal_received is not None:
            self.result.exit_code = 128 + outcome.signal_received
        else:
            self.result.exit_code = outcome.exit_code

    def ship(self, spool_dir: Path, spool: SpoolState) -> None:
        checks = self.checks()  # a read-only command ran beside it: a failure is exit 21 now
        signer = make_signer(spool.signing_key, self.env)
        receipt = ship_spool(
            self.store, spool, spool_dir, checks.checked.decision, signer, checks.witness
        )
        self.result.seq = receipt.seq
        self.result.record_uri = receipt.record_uri
        self.result.record_sha256 = receipt.record_sha256
        self.result.checkpoint_uri = receipt.checkpoint_uri
        self.result.audit_ok = True
        if receipt.witness_warning:
            self.console.say(f"tfaudit: warning: {receipt.witness_warning}")
            self.result.warnings.append(receipt.witness_warning)
        shipped = settle(spool_dir)
        self.result.spool_dir = None
        self.result.log_path = str(shipped / LOG_FILE)
        if self.result.plan_json_path is not None:
            self.result.plan_json_path = str(shipped / PLAN_FILE)


def prepare(
    command: Sequence[str],
    config: Config,
    env: Mapping[str, str],
    cwd: Path,
    console: Console,
) -> Run:
    """Everything before the command starts but preflight, which it starts on a thread. The
    store's client is built on a thread while the CI facts (git, on a thread of their own),
    redaction rules and signer are set up; preflight waits for it."""
    store = open_store(config.require_store(), config.store_options())
    facts = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tfaudit-ci")
    detecting = facts.submit(detect, env, cwd=cwd)
    facts.shutdown(wait=False)
    rules = run_rules(command, env, config.redact)
    inv = parse_invocation(command, cwd=cwd, env=env)
    make_signer(config.signing_key, env)  # a missing key is a usage error, before anything runs
    ci = detecting.result()
    stream = resolve_stream(config.stream, env, cwd, ci)
    result = RunResult.not_run(errors.EXIT_USAGE, "", store=store.uri, stream=stream)
    result.error = None
    result.masked_values = rules.masked_values()
    for warning in rules.warnings:
        console.say(f"tfaudit: warning: {warning}")
        result.warnings.append(warning)
    run = Run(config, env, cwd, console, store, ci, stream, rules, inv, list(command), result)
    run.start_preflight()
    if not run.overlaps:
        run.checks()  # strict: nothing that can change anything starts before preflight passed
    return run


def execute(
    command: Sequence[str],
    config: Config,
    env: Mapping[str, str],
    cwd: Path,
    console: Console,
    pending_signals: Sequence[int] = (),
    *,
    verbose: bool = False,
) -> RunResult:
    try:
        run = prepare(command, config, env, cwd, console)
        if run.checking.done():
            run.checks()  # already failed: even a read-only command does not start
    except TfauditError as exc:
        _traceback(verbose)
        return RunResult.not_run(exc.exit_code, exc.diagnostics(), store=config.store)
    result = run.result
    if env.get("GITHUB_ACTIONS") == "true":
        from tfaudit_ci.report.github import emit_masks

        emit_masks(result.masked_values, sys.stdout)
        sys.stdout.flush()
    if pending_signals:
        # Cancelled during preflight: the command must not start, and there is nothing to ship.
        result.exit_code = 128 + pending_signals[0]
        result.error = "interrupted before the command started; nothing was run or recorded"
        return result
    spool_dir: Path | None = None
    try:
        spool_dir, spool = run.new_spool()
        run.execute(spool_dir, spool)
        run.ship(spool_dir, spool)
        return result
    except TfauditError as exc:
        _traceback(verbose)
        return _audit_failure(result, exc)
    except Exception as exc:  # a bug or an unexpected SDK error must still fail the audit
        _traceback(verbose)
        failure = errors.UploadError(
            f"unexpected error while auditing: {type(exc).__name__}: {exc}",
            fix="re-run with -v and report it; the spool is kept",
        )
        failure.__cause__ = exc
        return _audit_failure(result, failure)


def _traceback(verbose: bool) -> None:
    if verbose:
        import traceback

        traceback.print_exc()


def _audit_failure(result: RunResult, exc: TfauditError) -> RunResult:
    result.audit_ok = False
    result.error = exc.diagnostics()
    result.exit_code = exc.exit_code
    return result


def finish(
    result: RunResult, env: Mapping[str, str], console: Console, result_file: Path | None
) -> int:
    """Every exit reports: the summary line, the CI's outputs and summary, ``--result``."""
    from tfaudit_ci.report import publish

    console.say(result.summary_line())
    publish(result, env)
    if result_file is not None:
        try:
            write_json_file(result_file, result.to_dict())
        except OSError as exc:
            console.say(f"tfaudit: warning: cannot write --result {result_file}: {exc.strerror}")
    return result.exit_code


def main_run(
    command: Sequence[str],
    config: Config,
    env: Mapping[str, str],
    cwd: Path,
    *,
    result_file: Path | None = None,
    verbose: bool = False,
) -> int:
    console = Console.system()
    with deferred_signals() as received:
        result = execute(
            command, config, env, cwd, console, pending_signals=received, verbose=verbose
        )
        if received and result.audit_ok and result.exit_code not in (130, 143):
            result.exit_code = 128 + received[0]
        return finish(result, env, console, result_file)
