"""``tfaudit report --since T --until T --out FILE``: the evidence pack for a period, as one
self-contained HTML file (default), JSON (``--format json``) or a CSV of runs.

Exit 0 when the period verifies, 24 when it does not (the report is written either way: it
says what failed). The records and logs it shows are the bytes verify's walk read and checked
(``VerifyOptions.on_record``), not a second read.
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
from tfaudit_ci.trail.evidence import Evidence, RunDetail, embed_log, to_csv
from tfaudit_ci.trail.model import ArtifactRef, RunRow, row_from_bytes
from tfaudit_ci.trail.planscope import bindings_for
from tfaudit_ci.trail.query import applied_log_changes
from tfaudit_ci.trail.reader import LOG_KEEP, SlotRead, TrailReader, open_reader, store_call
from tfaudit_ci.verify.model import CheckedRecord, Fetched, VerifyResult
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
    checked: Mapping[int, CheckedRecord] | None = None,
) -> Evidence:
    """The runs the verdict covers, applies bound to plans, logs embedded.

    ``checked``: what verify's walk read (records, and logs kept for the report); only slots
    and logs it did not read are read here.
    """
    seen = checked or {}
    slots: list[SlotRead] = []
    if result.first_seq is not None and result.last_seq is not None:
        slots = _slots(reader, range(result.first_seq, result.last_seq + 1), seen)
    rows = [slot.row for slot in slots]
    bindings = {
        b.apply_seq: b
        for b in bindings_for(reader, rows, other_streams=plan_streams, lookback=lookback)
    }

    def read_log(row: RunRow, art: ArtifactRef) -> Fetched:
        done = seen.get(row.seq)
        wanted = (art.key, art.version_id)
        for fetched in done.artifacts if done is not None else ():
            if fetched is not None and (fetched.key, fetched.version_id) == wanted:
                return fetched
        return reader.fetch(art.key, art.version_id, keep=LOG_KEEP)

    from_logs = applied_log_changes(reader, rows, read_log)

    def detail(slot: SlotRead) -> RunDetail:
        row = slot.row
        art = row.artifact("output.log")
        log, note = None, None
        if art is not None:
            fetched = read_log(row, art)
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


def _slots(
    reader: TrailReader, seqs: range, checked: Mapping[int, CheckedRecord]
) -> list[SlotRead]:
    """The slots ``seqs``: as verify read them, the others (gaps, deleted or unread slots)
    read now."""
    found: dict[int, SlotRead] = {}
    for seq in seqs:
        done = checked.get(seq)
        if done is not None and done.record.data is not None:
            data = done.record.data
            found[seq] = SlotRead(seq, done.record.version_id, data, row_from_bytes(seq, data))
    missing = [seq for seq in seqs if seq not in found]
    found.update((slot.seq, slot) for slot in reader.slots(missing))
    return [found[seq] for seq in seqs]


def main_report(ns: argparse.Namespace, config: Config, env: Mapping[str, str]) -> int:
    fmt = ns.format or ("json" if ns.json else "html")
    if ns.json and fmt != "json":
        raise ConfigError("--json and --format disagree", fix="use one of them")
    if ns.plan_lookback is not None and ns.plan_lookback < 1:
        raise ConfigError("--plan-lookback must be at least 1")
    since, until = _window(ns)
    reader = open_reader(config, env, parallelism=ns.parallelism)
    checked: dict[int, CheckedRecord] = {}

    def keep(record: CheckedRecord) -> None:
        checked[record.seq] = record

    result = store_call(
        f"verifying stream {reader.stream!r} in {reader.store.uri}",
        lambda: verify_command(
            ns, config, env, reader.store, on_record=keep, keep_artifacts={"output.log": LOG_KEEP}
        ),
    )
    evidence = collect(
        reader,
        result,
        since=since,
        until=until,
        config=config,
        plan_streams=list(ns.plan_stream),
        lookback=ns.plan_lookback,
        checked=checked,
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
    runs, applies = len(evidence.runs), len(evidence.applies)
    sys.stderr.write(
        f"tfaudit report: {fmt} written to {where}: {runs} run{'s' * (runs != 1)}, "
        f"{applies} appl{'y' if applies == 1 else 'ies'}, verification {verdict}\n"
    )
    return 0 if result.ok else errors.EXIT_VERIFY
