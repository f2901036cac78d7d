"""The outcome of one ``tfaudit run``: what reporters (GitHub, GitLab, --json) publish."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


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
    status: str  # succeeded | failed | cancelled | crashed | interrupted | not-run
    audit_ok: bool
    store: str
    stream: str
    seq: int | None = None
    record_uri: str | None = None
    record_sha256: str | None = None
    log_path: str | None = None  # the redacted spool on disk
    plan_json_path: str | None = None  # the redacted plan JSON on disk
    spool_dir: str | None = None
    plan: PlanCounts | None = None
    resources: list[dict[str, Any]] = field(default_factory=list)  # [{address, actions}]
    error: str | None = None  # one-line diagnostics when the audit failed
    masked_values: list[str] = field(default_factory=list, repr=False)  # for ::add-mask:: only

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("masked_values")
        data["plan"] = self.plan.to_dict() if self.plan else None
        return data
