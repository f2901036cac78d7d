"""``tfaudit report --since T --until T --out FILE``: the evidence pack for a period, as one
self-contained HTML file (default), JSON (``--format json``) or a CSV of runs.

Exit 0 when the period verifies, 24 when it does not (the report is written either way: it
says what failed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Mapping
from pathlib import Path

from tfaudit_ci import errors
from tfaudit_ci.commands.verify import parse_time, verify_command
from tfaudit_ci.config import Config
from tfaudit_ci.errors import ConfigError
from tfaudit_ci.record import iso, utc_now
from tfaudit_ci.trail.cache import RecordCache, cache_for
from tfaudit_ci.trail.evidence import Evidence, RunDetail, embed_log, to_csv
from tfaudit_ci.trail.planscope import bindings_for
from tfaudit_ci.trail.query import applied_log_changes
from tfaudit_ci.trail.reader import LOG_KEEP, SlotRead, TrailReader, open_reader, store_call
from tfaudit_ci.verify.model import VerifyResult
from tfaudit_ci.verify.reader import parallel_map

DEFAULT_PERIOD = dt.timedelta(days=30)


def _window(ns: argparse.Namespace) -> tuple[dt.datetime, dt.datetime]:
    """The period, filled in on ``ns`` for verify: by default the 30 days before --until
    (default: now)."""
    until = parse_time(ns.until, "--until") if ns.until else utc_now()
    since = parse_time(ns.since, "--since") if ns.since else until - DEFAULT_PERIOD
    ns.since, ns.until = iso(since), iso(until)
    return since, until


def collect(
    reader: TrailReader,
    result: VerifyResult,
    *,
    since: dt.datetime,
    until: dt.datetime,
    config: Config,
    plan_streams: list[str],
    lookback: int | None,
    cache: RecordCache | None = None,
) -> Evidence:
    """Read the runs the verdict covers, bind applies to plans, embed logs."""
    slots: list[SlotRead] = []
    if result.first_seq is not None and result.last_seq is not None:
        slots = reader.all_slots(result.first_seq, result.last_seq, cache=cache)
    rows = [slot.row for slot in slots]
    bindings = {
        b.apply_seq: b
        for b in bindings_for(reader, rows, other_streams=plan_streams, lookback=lookback)
    }
    from_logs = applied_log_changes(reader, rows)

    def detail(slot: SlotRead) -> RunDetail:
        row = slot.row
        art = row.artifact("output.log")
        log, note = None, None
        if art is not None:
            fetched = reader.fetch(art.key, art.version_id, keep=LOG_KEEP)
            if fetched.data is None:
                note = fetched.error or "too large to embed, or missing (see the checks)"
            elif fetched.sha256 != art.sha256:
                note = "NOT embedded: its sha256 differs from the record's"
            else:
                log, note = embed_log(fetched.data, None)
        return RunDetail(
            row,
            [p for p in result.problems if p.seq == row.seq],
            bindings.get(row.seq),
            row.resources or from_logs.get(row.seq, ()),
            log,
            note,
        )

    runs = parallel_map(detail, slots, reader.parallelism)
    return Evidence(
        store=reader.store.uri,
        stream=reader.stream,
        since=since,
        until=until,
        policy=config.policy,
        verdict=result,
        runs=runs,
        generated_at=utc_now(),
        plan_streams=tuple(plan_streams),
    )


def main_report(ns: argparse.Namespace, config: Config, env: Mapping[str, str]) -> int:
    fmt = ns.format or ("json" if ns.json else "html")
    if ns.json and fmt != "json":
        raise ConfigError("--json and --format disagree", fix="use one of them")
    if ns.plan_lookback is not None and ns.plan_lookback < 1:
        raise ConfigError("--plan-lookback must be at least 1")
    since, until = _window(ns)
    reader = open_reader(config, env, parallelism=ns.parallelism)
    result = store_call(
        f"verifying stream {reader.stream!r} in {reader.store.uri}",
        lambda: verify_command(ns, config, env, reader.store),
    )
    evidence = collect(
        reader,
        result,
        since=since,
        until=until,
        config=config,
        plan_streams=list(ns.plan_stream),
        lookback=ns.plan_lookback,
        cache=cache_for(reader.store, reader.stream, env, enabled=ns.cache),
    )
    if fmt == "html":
        from tfaudit_ci.trail.html import render

        text = render(evidence)
    elif fmt == "csv":
        text = to_csv(evidence)
    else:
        import json

        text = json.dumps(evidence.to_json(), indent=2) + "\n"
    if ns.out:
        path = Path(ns.out)
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"cannot write {path}: {exc.strerror}", fix="choose a writable --out path"
            ) from None
        where = str(path)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
        where = "stdout"
    verdict = "OK" if result.ok else "FAILED"
    sys.stderr.write(
        f"tfaudit report: {fmt} written to {where}: {len(evidence.runs)} runs, "
        f"{len(evidence.applies)} applies, verification {verdict}\n"
    )
    return 0 if result.ok else errors.EXIT_VERIFY
