"""``tfaudit log``: runs newest first, as a table for people or one JSON array."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping

from tfaudit_ci.commands.verify import parse_time
from tfaudit_ci.config import Config
from tfaudit_ci.errors import ConfigError
from tfaudit_ci.trail.query import RowFilter, newest_matching
from tfaudit_ci.trail.reader import open_reader
from tfaudit_ci.trail.render import (
    LOG_COLUMNS,
    Painter,
    log_cells,
    table,
    terminal_width,
    use_color,
)


def row_filter(ns: argparse.Namespace) -> RowFilter:
    since = parse_time(ns.since, "--since") if ns.since else None
    until = parse_time(ns.until, "--until") if ns.until else None
    if since and until and since >= until:
        raise ConfigError("--since must be before --until")
    return RowFilter(
        since=since,
        until=until,
        actors=tuple(ns.actor),
        statuses=tuple(ns.status),
        commands=tuple(ns.command),
        refs=tuple(ns.ref),
    )


def main_log(ns: argparse.Namespace, config: Config, env: Mapping[str, str]) -> int:
    if ns.limit < 1:
        raise ConfigError(f"-n {ns.limit} must be at least 1", fix="e.g. -n 20")
    wanted = row_filter(ns)
    reader = open_reader(config, env, parallelism=ns.parallelism)
    head = reader.head()
    slots = newest_matching(reader, head, wanted, ns.limit) if head >= 0 else []
    rows = [slot.row for slot in slots]
    if ns.json:
        sys.stdout.write(json.dumps([row.to_json() for row in rows], indent=2) + "\n")
    else:
        paint = Painter(use_color(ns.color, sys.stdout, env))
        lines = table(
            LOG_COLUMNS,
            [log_cells(row) for row in rows],
            paint=paint,
            width=terminal_width(sys.stdout),
        )
        sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    where = f"stream {reader.stream} at {reader.store.uri}"
    if head < 0:
        sys.stderr.write(f"tfaudit log: {where} has no records\n")
    else:
        sys.stderr.write(
            f"tfaudit log: {len(rows)} run{'s' * (len(rows) != 1)} shown, head seq {head} "
            f"({where}); not verified here: run `tfaudit verify`\n"
        )
    return 0
