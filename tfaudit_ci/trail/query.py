"""Questions asked of the chain: filtered newest-first scans, resource history, plan search.

Scans start at the head and walk backwards a batch at a time, so ``log -n 20`` reads about 20
slots whatever the stream's length. Time windows are by chain position: records are appended
in order, so the scan stops at the first record that started before ``--since``, and
``--until`` is found by bisection over ``started_at`` (``tfaudit verify`` reports a clock that
goes backwards along the chain as an error).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from tfaudit_ci.trail.binding import PlanRef, plan_ref
from tfaudit_ci.trail.model import Action, ArtifactRef, ResourceChange, RunRow
from tfaudit_ci.trail.reader import LOG_KEEP, SlotRead, TrailReader
from tfaudit_ci.trail.render import strip_ansi
from tfaudit_ci.verify.model import Fetched
from tfaudit_ci.verify.reader import parallel_map


@dataclass(frozen=True)
class RowFilter:
    """``log``'s filters; each given one must hold (substring match for actor and ref)."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    actors: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()
    refs: tuple[str, ...] = ()

    def in_window(self, row: RunRow) -> bool:
        when = row.started_at
        if when is None:
            return True  # an unreadable time is shown, never hidden
        return (self.since is None or when >= self.since) and (
            self.until is None or when < self.until
        )

    def matches(self, row: RunRow) -> bool:
        if not row.readable:
            return True  # a slot that is not a record is always worth seeing
        if not self.in_window(row):
            return False
        actors = {a for a in (row.ci.actor, row.ci.triggering_actor) if a}
        if self.actors and not any(want in actors for want in self.actors):
            return False
        if self.statuses and row.status not in self.statuses:
            return False
        if self.commands and row.subcommand not in self.commands:
            return False
        return not self.refs or any(want in (row.ci.ref or "") for want in self.refs)


def _before_since(row: RunRow, since: dt.datetime | None) -> bool:
    return since is not None and row.started_at is not None and row.started_at < since


def last_before(reader: TrailReader, head: int, until: dt.datetime) -> int:
    """The highest seq whose record started before ``until`` (-1 if none), by bisection."""
    low, high = -1, head  # invariant: low started before until (or -1); above high did not
    while low < high:
        mid = (low + high + 1) // 2
        started = reader.slot(mid).row.started_at
        if started is None or started < until:
            low = mid
        else:
            high = mid - 1
    return low


def newest_matching(
    reader: TrailReader, head: int, wanted: RowFilter, limit: int
) -> list[SlotRead]:
    """Up to ``limit`` slots matching ``wanted``, newest first."""
    start = head if wanted.until is None else last_before(reader, head, wanted.until)
    found: list[SlotRead] = []
    batch = max(8, min(limit, 256))
    for slot in reader.newest_first(start, batch=batch):
        if slot.row.readable and _before_since(slot.row, wanted.since):
            break
        if wanted.matches(slot.row):
            found.append(slot)
            if len(found) >= limit:
                break
    return found


# -- resource history --------------------------------------------------------------------


def address_pattern(glob: str) -> re.Pattern[str]:
    """``*`` matches anything (dots and brackets too), ``?`` one character; all else is
    literal (addresses hold ``[`` and ``"``). A pattern without a trailing ``*`` also matches
    the instances of a resource: ``aws_iam_role.admin`` matches ``aws_iam_role.admin[0]``."""
    body = "".join(
        ".*" if char == "*" else "." if char == "?" else re.escape(char) for char in glob
    )
    return re.compile(body if glob.endswith("*") else rf"{body}(\[[^\]]*\])?")


@dataclass(frozen=True)
class HistoryEntry:
    row: RunRow
    change: ResourceChange

    def to_json(self) -> dict[str, Any]:
        data = self.row.to_json()
        data.update(self.change.to_json())
        return data


_LOG_LINE = re.compile(
    r"^(?P<address>[^\s:]+(?:\[[^\]]*\])?): (?P<verb>Creating|Modifying|Destroying|Importing)"
    r"\.\.\.",
    re.MULTILINE,
)
_VERBS = {
    "Creating": Action.CREATE,
    "Modifying": Action.UPDATE,
    "Destroying": Action.DELETE,
    "Importing": Action.IMPORT,
}


def log_changes(text: str) -> tuple[ResourceChange, ...]:
    """Changes an apply without a plan file made, from terraform's progress lines."""
    seen: dict[str, set[Action]] = {}
    for match in _LOG_LINE.finditer(text):
        seen.setdefault(match["address"], set()).add(_VERBS[match["verb"]])
    changes = []
    for address, actions in seen.items():
        if {Action.CREATE, Action.DELETE} <= actions:
            action = Action.REPLACE
        else:
            action = next(a for a in _VERBS.values() if a in actions)
        changes.append(ResourceChange(address, action, action is Action.IMPORT, None, "log"))
    return tuple(changes)


@dataclass
class HistoryQuery:
    patterns: Sequence[str]
    applied_only: bool = False
    compiled: list[re.Pattern[str]] = field(init=False)

    def __post_init__(self) -> None:
        self.compiled = [address_pattern(p) for p in self.patterns]

    def wanted(self, row: RunRow) -> bool:
        return row.readable and (row.applies or not self.applied_only)

    def entries(self, row: RunRow, extra: Sequence[ResourceChange] = ()) -> list[HistoryEntry]:
        changes = row.resources or tuple(extra)
        return [
            HistoryEntry(row, change)
            for change in changes
            if any(p.fullmatch(change.address) for p in self.compiled)
        ]


def history(
    rows: Iterable[RunRow],
    query: HistoryQuery,
    log_resources: dict[int, tuple[ResourceChange, ...]] | None = None,
) -> list[HistoryEntry]:
    """Every change to a matching address, newest first."""
    found: list[HistoryEntry] = []
    extra = log_resources or {}
    for row in sorted(rows, key=lambda r: r.seq, reverse=True):
        if query.wanted(row):
            found.extend(query.entries(row, extra.get(row.seq, ())))
    return found


LogReader = Callable[[RunRow, ArtifactRef], Fetched]


def applied_log_changes(
    reader: TrailReader, rows: list[RunRow], read_log: LogReader | None = None
) -> dict[int, tuple[ResourceChange, ...]]:
    """For applies that recorded no plan (``apply -auto-approve``): what their log says.
    ``read_log`` gives a run's log (default: read it from the store)."""
    blind = [r for r in rows if r.readable and r.applies and not r.resources]

    def read(row: RunRow) -> tuple[int, tuple[ResourceChange, ...]]:
        art = row.artifact("output.log")
        if art is None:
            return row.seq, ()
        if read_log is not None:
            fetched = read_log(row, art)
        else:
            fetched = reader.fetch(art.key, art.version_id, keep=LOG_KEEP)
        if fetched.data is None or fetched.sha256 != art.sha256:
            return row.seq, ()  # unreadable or altered: `show` and `verify` say which
        return row.seq, log_changes(strip_ansi(fetched.data.decode("utf-8", "replace")))

    return dict(parallel_map(read, blind, reader.parallelism))


# -- plan search ---------------------------------------------------------------------------


def find_plans(
    reader: TrailReader,
    digests: set[str],
    *,
    below: int,
    lookback: int | None = None,
) -> tuple[list[PlanRef], int]:
    """Plan records of ``reader``'s stream that carry one of ``digests``, searching back from
    ``below - 1`` until each digest is found (or ``lookback`` records were read).

    Returns the plans found and the lowest seq searched.
    """
    remaining = set(digests)
    found: list[PlanRef] = []
    stop = 0 if lookback is None else max(0, below - lookback)
    lowest = below
    if not remaining or below <= 0:
        return found, lowest
    for slot in reader.newest_first(below - 1, batch=16, stop=stop):
        lowest = slot.seq
        ref = plan_ref(slot.row, reader.stream)
        if ref is not None and ref.plan_file_sha256 in digests:
            found.append(ref)
            remaining.discard(ref.plan_file_sha256)
            if not remaining:
                break
    return found, lowest


def iter_rows(slots: Iterable[SlotRead]) -> Iterator[RunRow]:
    return (slot.row for slot in slots)
