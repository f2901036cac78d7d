"""The outcome of one ``tfaudit run``: what reporters (GitHub, GitLab, ``--result``) publish."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tfaudit_ci import errors
from tfaudit_ci.vocab import RunStatus


@dataclass
class PlanCounts:
    add: int = 0
    change: int = 0
    destroy: int = 0
    import_: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "add": self.add,
            "change": self.change,
            "destroy": self.destroy,
            "import": self.import_,
        }


@dataclass
class RunResult:
    exit_code: int  # the exit code tfaudit itself returns (audit failure outranks the command's)
    command_exit_code: int | None  # the wrapped command's own code; None if it never ran
    status: RunStatus
    audit_ok: bool
    store: str | None
    stream: str | None
    seq: int | None = None
    record_uri: str | None = None
    record_sha256: str | None = None
    checkpoint_uri: str | None = None  # the witness's checkpoint of the record
    log_path: str | None = None  # the redacted output on disk
    plan_json_path: str | None = None  # the redacted plan JSON on disk
    spool_dir: str | None = None  # set while a spool is kept (the audit failed)
    plan: PlanCounts | None = None
    resources: list[dict[str, Any]] = field(default_factory=list)  # [{address, actions}]
    error: str | None = None  # one-line diagnostics when the audit failed
    warnings: list[str] = field(default_factory=list)
    masked_values: list[str] = field(default_factory=list, repr=False)  # for ::add-mask:: only

    @classmethod
    def not_run(
        cls,
        exit_code: int,
        error: str,
        *,
        store: str | None = None,
        stream: str | None = None,
    ) -> RunResult:
        """Nothing ran and nothing was recorded (configuration, preflight, early signal)."""
        return cls(exit_code, None, RunStatus.NOT_RUN, False, store, stream, error=error)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("masked_values")
        data["status"] = str(self.status)
        data["plan"] = self.plan.to_dict() if self.plan else None
        return data

    def summary_line(self) -> str:
        """tfaudit's one line at the end of a run (stderr)."""
        if self.audit_ok:
            plan = ""
            if self.plan is not None:
                p = self.plan
                plan = f", plan +{p.add} ~{p.change} -{p.destroy}"
            checkpoint = f"; checkpoint {self.checkpoint_uri}" if self.checkpoint_uri else ""
            return (
                f"tfaudit: {self.status} (exit {self.exit_code}{plan}); record seq "
                f"{self.seq} at {self.record_uri} sha256 {self.record_sha256}{checkpoint}"
            )
        if self.status == RunStatus.NOT_RUN and self.exit_code in (
            errors.EXIT_SIGINT,
            errors.EXIT_SIGTERM,
        ):
            return f"tfaudit: {self.error} (exit {self.exit_code})"
        if self.status == RunStatus.NOT_RUN:
            return f"tfaudit: error: {self.error} (exit {self.exit_code}; the command was not run)"
        return (
            f"tfaudit: AUDIT FAILED (exit {self.exit_code}; command status {self.status}, "
            f"exit {self.command_exit_code}): {self.error}"
            + (f"; the spool is kept at {self.spool_dir}" if self.spool_dir else "")
        )
