"""Where an apply's reviewed plan is looked for: this stream, before the apply, and the
streams named with ``--plan-stream`` (I/O around the pure ``binding`` module)."""

from __future__ import annotations

from collections.abc import Sequence

from tfaudit_ci.stores.base import Store
from tfaudit_ci.trail.binding import (
    PlanBinding,
    PlanRef,
    applied_digest,
    bind_applies,
    binding_problems,
    plan_ref,
)
from tfaudit_ci.trail.model import RunRow
from tfaudit_ci.trail.query import find_plans
from tfaudit_ci.trail.reader import TrailReader
from tfaudit_ci.verify.model import Problem


def bindings_for(
    reader: TrailReader,
    rows: Sequence[RunRow],
    *,
    other_streams: Sequence[str] = (),
    lookback: int | None = None,
) -> list[PlanBinding]:
    """A binding for every apply among ``rows`` (rows of ``reader``'s stream)."""
    applies = [r for r in rows if applied_digest(r) is not None]
    plans: list[PlanRef] = []
    known = {r.seq for r in rows}
    # Plans among the rows themselves need no read; earlier ones are searched for.
    plans += [ref for r in rows if (ref := plan_ref(r, reader.stream)) is not None]
    missing = {
        d for r in applies if (d := applied_digest(r)) and not _found(d, r.seq, plans, reader)
    }
    if missing:
        below = min(known)
        found, _ = find_plans(reader, missing, below=below, lookback=lookback)
        plans += found
        missing -= {p.plan_file_sha256 for p in found}
    for stream in other_streams:
        if not missing:
            break
        other = TrailReader(reader.store, stream, parallelism=reader.parallelism)
        found, _ = find_plans(other, missing, below=other.head() + 1, lookback=lookback)
        plans += found
        missing -= {p.plan_file_sha256 for p in found}
    return bind_applies(rows, reader.stream, plans)


def _found(digest: str, seq: int, plans: Sequence[PlanRef], reader: TrailReader) -> bool:
    return any(
        p.plan_file_sha256 == digest and p.seq < seq and p.stream == reader.stream for p in plans
    )


def reviewed_plan_problems(
    store: Store,
    stream: str,
    first_seq: int | None,
    last_seq: int | None,
    *,
    parallelism: int = 16,
    other_streams: Sequence[str] = (),
) -> list[Problem]:
    """``verify --require-reviewed-plan``: every apply in ``first_seq..last_seq`` (verify's
    window) that is not bound to a reviewed plan, as an error with code ``unreviewed-plan``."""
    if first_seq is None or last_seq is None:
        return []
    reader = TrailReader(store, stream, parallelism=parallelism)
    rows = [slot.row for slot in reader.slots(list(range(first_seq, last_seq + 1)))]
    return binding_problems(bindings_for(reader, rows, other_streams=other_streams))
