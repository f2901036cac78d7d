"""The evidence pack of ``tfaudit report``: what happened in a period and whether the trail
proves it, as one data structure rendered to HTML (``trail.html``), JSON or CSV.

The verdict is ``verify_stream`` over the same window (the same checks as ``tfaudit verify``);
the runs are exactly the records that verdict covers (its ``first_seq``..``last_seq``).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tfaudit_ci import __version__
from tfaudit_ci.record import iso
from tfaudit_ci.stores.base import Policy
from tfaudit_ci.trail.binding import PlanBinding
from tfaudit_ci.trail.model import Action, ResourceChange, RunRow
from tfaudit_ci.trail.render import strip_ansi
from tfaudit_ci.verify.model import ERROR, Problem, VerifyResult
from tfaudit_ci.verify.report import summary_line, to_json

SCHEMA = "tfaudit.report/v1"
# Logs are embedded up to this many characters (head and tail kept; the rest is in the store).
LOG_EMBED_LIMIT = 64 * 1024
STATUSES = ("succeeded", "failed", "cancelled", "crashed", "other")
TOP_RESOURCES = 25


@dataclass
class RunDetail:
    row: RunRow
    problems: list[Problem] = field(default_factory=list)  # verify's findings on this seq
    binding: PlanBinding | None = None
    changes: tuple[ResourceChange, ...] = ()  # from the plan, or an apply's log
    log: str | None = None  # redacted, ANSI stripped, cut to LOG_EMBED_LIMIT
    log_note: str | None = None  # why the log is cut or missing

    @property
    def ok(self) -> bool:
        return not any(p.severity == ERROR for p in self.problems) and (
            self.binding is None or self.binding.ok
        )

    def to_json(self) -> dict[str, Any]:
        data = self.row.to_json()
        data.update(
            checks_ok=self.ok,
            problems=[p.to_dict() for p in self.problems],
            plan_binding=self.binding.to_json() if self.binding else None,
            resources=[c.to_json() for c in self.changes],
            log=self.log,
            log_note=self.log_note,
        )
        return data


@dataclass(frozen=True)
class DayCount:
    day: dt.date
    counts: Mapping[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class ResourceCount:
    address: str
    changes: int
    actions: tuple[str, ...]
    last_seq: int
    last_actor: str | None


@dataclass
class Evidence:
    store: str
    stream: str
    since: dt.datetime
    until: dt.datetime
    policy: Policy
    verdict: VerifyResult
    runs: list[RunDetail]
    generated_at: dt.datetime
    plan_streams: Sequence[str] = ()

    @property
    def applies(self) -> list[RunDetail]:
        return [run for run in self.runs if run.row.applies]

    @property
    def bindings(self) -> list[PlanBinding]:
        return [run.binding for run in self.runs if run.binding is not None]

    def tool_versions(self) -> dict[str, str]:
        seen: dict[str, set[str]] = {}
        for run in self.runs:
            row = run.row
            if row.tool_name and row.tool_version:
                seen.setdefault(row.tool_name, set()).add(row.tool_version)
            if row.tfaudit_version:
                seen.setdefault("tfaudit-ci (records)", set()).add(row.tfaudit_version)
        versions = {"tfaudit-ci (this report)": __version__}
        versions.update({name: ", ".join(sorted(v)) for name, v in sorted(seen.items())})
        return versions

    def timeline(self) -> list[DayCount]:
        return timeline(self.runs, self.since, self.until)

    def top_resources(self) -> list[ResourceCount]:
        return top_resources(self.applies)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "generated_at": iso(self.generated_at),
            "store": self.store,
            "stream": self.stream,
            "since": iso(self.since),
            "until": iso(self.until),
            "policy": {
                "retention_days": self.policy.retention_days,
                "lock_mode": self.policy.lock_mode,
            },
            "plan_streams": list(self.plan_streams),
            "versions": self.tool_versions(),
            "verdict": to_json(self.verdict),
            "runs": [run.to_json() for run in self.runs],
            "applies": [run.row.seq for run in self.applies],
            "plan_bindings": [b.to_json() for b in self.bindings],
            "timeline": [
                {"day": d.day.isoformat(), **{s: d.counts.get(s, 0) for s in STATUSES}}
                for d in self.timeline()
            ],
            "top_resources": [
                {
                    "address": r.address,
                    "changes": r.changes,
                    "actions": list(r.actions),
                    "last_seq": r.last_seq,
                    "last_actor": r.last_actor,
                }
                for r in self.top_resources()
            ],
        }

    def verdict_line(self) -> str:
        return summary_line(self.verdict)


def status_bucket(row: RunRow) -> str:
    return row.status if row.status in STATUSES else "other"


def timeline(runs: Iterable[RunDetail], since: dt.datetime, until: dt.datetime) -> list[DayCount]:
    """Runs per day (UTC) by status, every day of the period present (at most 400 days: a
    longer period shows its last 400)."""
    per_day: dict[dt.date, Counter[str]] = {}
    for run in runs:
        when = run.row.started_at
        if when is not None:
            per_day.setdefault(when.astimezone(dt.timezone.utc).date(), Counter())[
                status_bucket(run.row)
            ] += 1
    last = (until - dt.timedelta(microseconds=1)).astimezone(dt.timezone.utc).date()
    first = max(since.astimezone(dt.timezone.utc).date(), last - dt.timedelta(days=399))
    days = (last - first).days + 1
    return [
        DayCount(day, dict(per_day.get(day, Counter())))
        for day in (first + dt.timedelta(days=n) for n in range(max(days, 0)))
    ]


def top_resources(applies: Iterable[RunDetail], limit: int = TOP_RESOURCES) -> list[ResourceCount]:
    counts: Counter[str] = Counter()
    actions: dict[str, set[str]] = {}
    last: dict[str, RunRow] = {}
    for run in applies:
        for change in run.changes:
            if change.action in (Action.READ, Action.OTHER):
                continue
            counts[change.address] += 1
            actions.setdefault(change.address, set()).add(change.action.value)
            if change.address not in last or last[change.address].seq < run.row.seq:
                last[change.address] = run.row
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]
    return [
        ResourceCount(
            address, n, tuple(sorted(actions[address])), last[address].seq, last[address].ci.actor
        )
        for address, n in ranked
    ]


def embed_log(data: bytes | None, note: str | None) -> tuple[str | None, str | None]:
    """The log as text for the report: colour codes stripped, long logs cut in the middle."""
    if data is None:
        return None, note
    text = strip_ansi(data.decode("utf-8", "replace"))
    if len(text) <= LOG_EMBED_LIMIT:
        return text, note
    half = LOG_EMBED_LIMIT // 2
    cut = len(text) - 2 * half
    return (
        f"{text[:half]}\n… {cut:,} characters not shown here (the whole log is in the store) …\n"
        f"{text[-half:]}",
        f"cut to {LOG_EMBED_LIMIT:,} characters",
    )


# -- CSV -------------------------------------------------------------------------------------

CSV_COLUMNS = (
    "seq",
    "started_at",
    "finished_at",
    "status",
    "exit_code",
    "actor",
    "provider",
    "repository",
    "commit",
    "ref",
    "pull_request",
    "subcommand",
    "command",
    "add",
    "change",
    "destroy",
    "import",
    "plan_binding",
    "checks_ok",
    "run_url",
    "record_sha256",
)


def _csv_safe(value: Any) -> str:
    """Cells a spreadsheet would run as a formula get a leading quote (CSV injection)."""
    if not isinstance(value, str):
        return "" if value is None else str(value)
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def to_csv(evidence: Evidence) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for run in evidence.runs:
        row = run.row
        plan = row.plan.counts if row.plan is not None else None
        values = [
            row.seq,
            iso(row.started_at) if row.started_at else None,
            iso(row.finished_at) if row.finished_at else None,
            row.status if row.readable else "unreadable",
            row.exit_code,
            row.ci.actor,
            row.ci.provider,
            row.ci.repository,
            row.ci.commit,
            row.ci.ref,
            row.ci.pull_request,
            row.subcommand,
            row.command_text(),
            plan.add if plan else None,
            plan.change if plan else None,
            plan.destroy if plan else None,
            plan.import_ if plan else None,
            run.binding.binding.value if run.binding else None,
            run.ok,
            row.ci.run_url,
            row.record_sha256,
        ]
        writer.writerow([_csv_safe(v) for v in values])
    return out.getvalue()
