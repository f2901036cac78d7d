"""Reviewed plan = applied plan (pure): bind every apply to the plan run that recorded its file.

``terraform plan -out=F`` records ``plan.plan_file_sha256``; ``terraform apply F`` records the
same digest. An apply is *reviewed* when an earlier record of the same stream, written by a
plan run that succeeded, carries the digest its record carries. Everything else is a finding:
a plan never recorded, recorded only in another stream, or only by a failed plan run, and an
apply with no plan file at all (``apply -auto-approve``, ``destroy``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from tfaudit_ci.trail.model import RunRow
from tfaudit_ci.verify.model import Code, Problem, error

# Subcommands that apply changes and so must apply a reviewed plan.
BOUND_SUBCOMMANDS = frozenset({"apply", "destroy"})


class Binding(str, Enum):
    REVIEWED = "reviewed"
    UNRECORDED = "unrecorded"
    OTHER_STREAM = "other-stream"
    FAILED_PLAN = "failed-plan"
    NO_PLAN_FILE = "no-plan-file"


@dataclass(frozen=True)
class PlanRef:
    """A plan run that recorded a plan file's digest."""

    stream: str
    seq: int
    status: str | None
    plan_file_sha256: str

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


@dataclass(frozen=True)
class PlanBinding:
    """The finding for one apply record (of the stream that was read)."""

    apply_seq: int
    binding: Binding
    message: str
    plan_file_sha256: str | None
    plan: PlanRef | None

    @property
    def ok(self) -> bool:
        return self.binding is Binding.REVIEWED

    def to_json(self) -> dict[str, Any]:
        return {
            "apply_seq": self.apply_seq,
            "binding": self.binding.value,
            "ok": self.ok,
            "message": self.message,
            "plan_file_sha256": self.plan_file_sha256,
            "plan_stream": self.plan.stream if self.plan else None,
            "plan_seq": self.plan.seq if self.plan else None,
        }


def is_bound_apply(row: RunRow) -> bool:
    return row.readable and row.subcommand in BOUND_SUBCOMMANDS


def applied_digest(row: RunRow) -> str | None:
    """The digest of the plan file an apply consumed; None for an apply without one."""
    if row.plan is None or not row.plan.plan_file:
        return None
    return row.plan.plan_file_sha256


def plan_ref(row: RunRow, stream: str) -> PlanRef | None:
    """The plan file this record wrote (``plan -out``), if any."""
    if not row.readable or row.subcommand != "plan" or row.plan is None:
        return None
    digest = row.plan.plan_file_sha256
    return PlanRef(stream, row.seq, row.status, digest) if digest else None


def index_plans(refs: Iterable[PlanRef]) -> dict[str, list[PlanRef]]:
    found: dict[str, list[PlanRef]] = {}
    for ref in refs:
        found.setdefault(ref.plan_file_sha256, []).append(ref)
    return found


def bind_apply(row: RunRow, stream: str, plans: Mapping[str, Sequence[PlanRef]]) -> PlanBinding:
    """The finding for one apply record of ``stream`` (``row`` must be a bound apply)."""
    digest = applied_digest(row)
    if digest is None:
        reason = row.plan.error if row.plan is not None and row.plan.error else None
        message = (
            f"applied without a recorded plan file (`{row.command_text()}`): nothing ties it "
            "to a reviewed plan" + (f" ({reason})" if reason else "")
        )
        return PlanBinding(row.seq, Binding.NO_PLAN_FILE, message, None, None)
    binding, plan, message = _judge(row.seq, stream, digest, plans.get(digest, ()))
    return PlanBinding(row.seq, binding, message, digest, plan)


def _judge(
    seq: int, stream: str, digest: str, candidates: Sequence[PlanRef]
) -> tuple[Binding, PlanRef | None, str]:
    earlier = [p for p in candidates if p.stream == stream and p.seq < seq]
    good = [p for p in earlier if p.succeeded]
    if good:
        plan = max(good, key=lambda p: p.seq)
        return Binding.REVIEWED, plan, f"applies the plan recorded at seq {plan.seq}"
    if earlier:
        plan = max(earlier, key=lambda p: p.seq)
        return (
            Binding.FAILED_PLAN,
            plan,
            "the plan file was recorded only by a plan run that did not succeed "
            f"(seq {plan.seq}, status {plan.status})",
        )
    elsewhere = [p for p in candidates if p.stream != stream]
    if elsewhere:
        plan = next((p for p in elsewhere if p.succeeded), elsewhere[0])
        return (
            Binding.OTHER_STREAM,
            plan,
            f"the plan file was recorded in another stream ({plan.stream} seq {plan.seq}, "
            f"status {plan.status}), not in this one",
        )
    later = [p.seq for p in candidates if p.stream == stream and p.seq > seq]
    note = f" (one was recorded only after it, at seq {min(later)})" if later else ""
    return (
        Binding.UNRECORDED,
        None,
        f"no plan run recorded this plan file (sha256 {digest[:12]}…){note}",
    )


def bind_applies(
    rows: Iterable[RunRow], stream: str, plans: Iterable[PlanRef]
) -> list[PlanBinding]:
    """A finding for every apply among ``rows`` (of ``stream``), oldest first.

    ``plans`` are the plan records to bind to: this stream's, and any other streams' the
    caller chose to search (a plan found only there is reported as such).
    """
    index = index_plans(plans)
    applies = sorted((r for r in rows if is_bound_apply(r)), key=lambda r: r.seq)
    return [bind_apply(row, stream, index) for row in applies]


def binding_problems(bindings: Iterable[PlanBinding]) -> list[Problem]:
    """Findings as verify problems, for ``verify --require-reviewed-plan`` (errors, exit 24)."""
    return [error(Code.UNREVIEWED_PLAN, b.message, seq=b.apply_seq) for b in bindings if not b.ok]
