"""``tfaudit history ADDRESS...``: every run whose plan or apply changed a matching resource
address, newest first ("who touched ``aws_iam_role.admin``?")."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping

from tfaudit_ci.config import Config
from tfaudit_ci.errors import ConfigError
from tfaudit_ci.trail.cache import cache_for
from tfaudit_ci.trail.query import HistoryEntry, HistoryQuery, applied_log_changes, history
from tfaudit_ci.trail.reader import open_reader
from tfaudit_ci.trail.render import (
    Column,
    Painter,
    change_request,
    commit_ref,
    status_style,
    status_text,
    table,
    terminal_width,
    use_color,
    when,
)

COLUMNS = (
    Column("SEQ", minimum=3),
    Column("FINISHED (UTC)", minimum=20),
    Column("ACTION", minimum=7),
    Column("ADDRESS", flexible=True, minimum=16),
    Column("COMMAND", minimum=7),
    Column("STATUS", minimum=10),
    Column("ACTOR", flexible=True, minimum=8),
    Column("COMMIT REF", flexible=True, minimum=10),
    Column("PR/MR", minimum=5),
)
_ACTION_STYLE = {"create": "green", "delete": "red", "replace": "yellow", "update": "yellow"}


def main_history(ns: argparse.Namespace, config: Config, env: Mapping[str, str]) -> int:
    patterns = [p.strip() for p in ns.address if p.strip()]
    if not patterns:
        raise ConfigError("no resource address given", fix="e.g. tfaudit history 'aws_iam_role.*'")
    query = HistoryQuery(patterns, applied_only=ns.applied_only)
    reader = open_reader(config, env, parallelism=ns.parallelism)
    cache = cache_for(reader.store, reader.stream, env, enabled=ns.cache)
    slots = reader.all_slots(cache=cache)
    rows = [slot.row for slot in slots]
    entries = history(rows, query, applied_log_changes(reader, rows))
    unreadable = [row.seq for row in rows if not row.readable]
    if ns.json:
        sys.stdout.write(json.dumps([e.to_json() for e in entries], indent=2) + "\n")
    else:
        paint = Painter(use_color(ns.color, sys.stdout, env))
        lines = table(
            COLUMNS, [_cells(e) for e in entries], paint=paint, width=terminal_width(sys.stdout)
        )
        sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    note = f"; unreadable slots not searched: {unreadable[:10]}" if unreadable else ""
    if reader.cached:
        note += f"; {reader.cached} from the local cache (vouched for by the chain's links)"
    sys.stderr.write(
        f"tfaudit history: {len(entries)} change{'s' * (len(entries) != 1)} in "
        f"{len(rows)} records of stream {reader.stream}{note}\n"
    )
    return 0


def _cells(entry: HistoryEntry) -> list[tuple[str, str | None]]:
    row, change = entry.row, entry.change
    source = "" if change.source == "plan" else f" ({change.source})"
    return [
        (str(row.seq), "bold"),
        (when(row), None),
        (change.action.value + source, _ACTION_STYLE.get(change.action.value)),
        (change.address, None),
        (row.subcommand or "?", None),
        (status_text(row), status_style(row)),
        (row.ci.actor or "-", "cyan"),
        (commit_ref(row), "yellow"),
        (change_request(row), None),
    ]
