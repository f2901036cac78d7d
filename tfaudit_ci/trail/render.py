"""Text output for people: aligned tables, colour on a terminal, plain text when piped.

Colour: ``--color``/``--no-color`` decide; otherwise ``NO_COLOR`` turns it off, and it is on
only when the output is a terminal. Widths: on a terminal the widest flexible columns are cut
(with "…") to fit; piped, nothing is cut, so ``grep`` and ``awk`` see whole values.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

from tfaudit_ci.record import iso
from tfaudit_ci.trail.model import RunRow

# CSI sequences (colours, cursor moves), OSC sequences (titles, hyperlinks), lone ESCs.
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
# Control characters other than tab and newline: a record must not drive the terminal.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

_STYLES = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "cyan": "36",
}
STATUS_STYLE = {"succeeded": "green", "failed": "red", "crashed": "red", "cancelled": "yellow"}
STATE_STYLE = {"pass": "green", "fail": "red", "warn": "yellow", "skip": "dim"}


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


def clean(text: str) -> str:
    """A record's text made safe to print: escape sequences and control characters dropped."""
    return _CONTROL.sub("", strip_ansi(text))


def use_color(forced: bool | None, out: TextIO, env: Mapping[str, str]) -> bool:
    if forced is not None:
        return forced
    if env.get("NO_COLOR"):
        return False
    isatty = getattr(out, "isatty", None)
    return bool(isatty and isatty())


def terminal_width(out: TextIO) -> int | None:
    """The terminal's width, or None when the output is not a terminal."""
    isatty = getattr(out, "isatty", None)
    if not (isatty and isatty()):
        return None
    return shutil.get_terminal_size((120, 24)).columns


@dataclass(frozen=True)
class Painter:
    color: bool

    def __call__(self, text: str, style: str | None) -> str:
        if not self.color or not style or style not in _STYLES:
            return text
        return f"\x1b[{_STYLES[style]}m{text}\x1b[0m"


@dataclass(frozen=True)
class Column:
    title: str
    flexible: bool = False  # may be cut to fit a terminal
    minimum: int = 8
    drop: int = 0  # on a terminal too narrow even when cut, higher numbers go first (0: never)


Cell = tuple[str, str | None]  # text, style


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[Cell]],
    *,
    paint: Painter,
    width: int | None,
) -> list[str]:
    """Aligned rows under a header; the last column is never padded."""
    if width is not None:
        keep = _visible(columns, rows, width)
        columns = [columns[i] for i in keep]
        rows = [[row[i] for i in keep] for row in rows]
    texts = [[clean(text) for text, _ in row] for row in rows]
    widths = [len(c.title) for c in columns]
    for row in texts:
        widths = [max(w, len(t)) for w, t in zip(widths, row, strict=True)]
    if width is not None:
        _fit(columns, widths, width)
    lines = []
    header = "  ".join(
        c.title.ljust(w) if i < len(columns) - 1 else c.title
        for i, (c, w) in enumerate(zip(columns, widths, strict=True))
    )
    lines.append(paint(header.rstrip(), "bold"))
    for row, cells in zip(texts, rows, strict=True):
        parts = []
        for i, (text, (_, style), w) in enumerate(zip(row, cells, widths, strict=True)):
            shown = _cut(text, w)
            pad = "" if i == len(columns) - 1 else " " * (w - len(shown))
            parts.append(paint(shown, style) + pad)
        lines.append("  ".join(parts).rstrip())
    return lines


def _visible(columns: Sequence[Column], rows: Sequence[Sequence[Cell]], width: int) -> list[int]:
    """Indexes of the columns to show: droppable ones go while even their minimum widths
    would not fit."""
    keep = list(range(len(columns)))

    def least(i: int) -> int:
        longest = max([len(columns[i].title), *(len(clean(r[i][0])) for r in rows)])
        return min(longest, columns[i].minimum) if columns[i].flexible else longest

    while sum(least(i) for i in keep) + 2 * (len(keep) - 1) > width:
        droppable = [i for i in keep if columns[i].drop]
        if not droppable:
            break
        keep.remove(max(droppable, key=lambda i: columns[i].drop))
    return keep


def _fit(columns: Sequence[Column], widths: list[int], width: int) -> None:
    """Shrink the widest flexible column until the table fits ``width``."""
    while sum(widths) + 2 * (len(widths) - 1) > width:
        flexible = [i for i, c in enumerate(columns) if c.flexible and widths[i] > c.minimum]
        if not flexible:
            return
        widest = max(flexible, key=lambda i: widths[i])
        excess = sum(widths) + 2 * (len(widths) - 1) - width
        widths[widest] = max(columns[widest].minimum, widths[widest] - excess)


# -- how run rows read ---------------------------------------------------------------------


def when(row: RunRow) -> str:
    moment = row.finished_at or row.started_at
    return iso(moment)[:19].replace("T", " ") + "Z" if moment else "-"


def short_ref(ref: str | None) -> str:
    if not ref:
        return ""
    for prefix in ("refs/heads/", "refs/tags/"):
        if ref.startswith(prefix):
            return ref[len(prefix) :]
    return ref


def commit_ref(row: RunRow) -> str:
    commit = (row.ci.commit or "")[:8]
    ref = short_ref(row.ci.ref)
    return f"{commit} {ref}".strip() or "-"


def change_request(row: RunRow) -> str:
    if not row.ci.pull_request:
        return ""
    sign = "!" if row.ci.provider == "gitlab" else "#"
    return f"{sign}{row.ci.pull_request}"


def counts(row: RunRow) -> str:
    plan = row.plan.counts if row.plan is not None else None
    if plan is None:
        return ""
    text = f"+{plan.add} ~{plan.change} -{plan.destroy}"
    return text + (f" ^{plan.import_}" if plan.import_ else "")


def status_text(row: RunRow) -> str:
    if not row.readable:
        return "unreadable"
    code = "" if row.exit_code is None else f" ({row.exit_code})"
    return f"{row.status or '?'}{code}"


def status_style(row: RunRow) -> str:
    return STATUS_STYLE.get(row.status or "", "yellow") if row.readable else "red"


LOG_COLUMNS = (
    Column("SEQ", minimum=3),
    Column("FINISHED (UTC)", minimum=20),
    Column("STATUS", minimum=10),
    Column("ACTOR", flexible=True, minimum=8),
    Column("COMMIT REF", flexible=True, minimum=10, drop=1),
    Column("PR/MR", minimum=5, drop=3),
    Column("CHANGES", minimum=7, drop=2),
    Column("COMMAND", flexible=True, minimum=16),
    Column("RUN URL", flexible=True, minimum=12, drop=4),
)


def log_cells(row: RunRow) -> list[Cell]:
    command = row.command_text() if row.readable else (row.error or "")
    return [
        (str(row.seq), "bold"),
        (when(row), None),
        (status_text(row), status_style(row)),
        (row.ci.actor or "-", "cyan"),
        (commit_ref(row), "yellow"),
        (change_request(row), None),
        (counts(row), None),
        (command, None),
        (row.ci.run_url or "", "dim"),
    ]
