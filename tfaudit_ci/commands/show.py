"""``tfaudit show [SEQ|latest]``: one record for people, with its own checks (exit 24 on a ✗),
or its stored log (``--log``) or plan summary (``--plan``)."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterator, Mapping
from typing import Any, TextIO

from tfaudit_ci import errors
from tfaudit_ci.commands.verify import load_jwks, trusted_key
from tfaudit_ci.config import Config
from tfaudit_ci.errors import ConfigError
from tfaudit_ci.trail.binding import PlanBinding, is_bound_apply
from tfaudit_ci.trail.checks import CheckResult, RecordChecker, binding_check, overall
from tfaudit_ci.trail.model import RunRow, safe_record
from tfaudit_ci.trail.planscope import bindings_for
from tfaudit_ci.trail.reader import SlotRead, TrailReader, open_reader
from tfaudit_ci.trail.render import (
    ANSI,
    STATE_STYLE,
    Painter,
    change_request,
    clean,
    counts,
    status_style,
    status_text,
    use_color,
)


def target_seq(reader: TrailReader, target: str, head: int) -> int:
    if head < 0:
        raise ConfigError(
            f"stream {reader.stream!r} at {reader.store.uri} has no records",
            fix="check --store and --stream (tfaudit log lists a stream's runs)",
        )
    if target == "latest":
        return head
    if not target.isdigit():
        raise ConfigError(f"{target!r} is not a seq", fix="give a number, or latest")
    seq = int(target)
    if seq > head:
        raise ConfigError(f"seq {seq} does not exist: the head is seq {head}")
    return seq


def main_show(ns: argparse.Namespace, config: Config, env: Mapping[str, str]) -> int:
    from tfaudit_ci.locking import verify_locks
    from tfaudit_ci.verify.model import VerifyOptions

    reader = open_reader(config, env, parallelism=ns.parallelism)
    head = reader.head()
    slot = reader.slot(target_seq(reader, ns.target, head))
    if ns.log:
        return print_log(reader, slot, ns.color, env)
    if ns.plan:
        return print_plan(slot.row, use_color(ns.color, sys.stdout, env))
    # The same trust, policy and lock rules as verify.
    rules = verify_locks(reader.store, config.policy, config.on_unlocked)
    options = VerifyOptions(
        stream=reader.stream,
        policy=config.policy,
        verifier=trusted_key(ns, config, env),
        trusted_jwks=load_jwks(ns.jwks) if ns.jwks else None,
        parallelism=ns.parallelism,
        check_locks=rules.check,
        lock_note=rules.note,
    )
    results = RecordChecker(reader, options).run(slot.seq, head)
    binding = None
    if is_bound_apply(slot.row):
        binding = bindings_for(
            reader, [slot.row], other_streams=ns.plan_stream, lookback=ns.plan_lookback
        )[0]
        results.append(binding_check(binding))
    ok = overall(results)
    if ns.json:
        sys.stdout.write(json.dumps(show_json(reader, slot, results, binding), indent=2) + "\n")
    else:
        paint = Painter(use_color(ns.color, sys.stdout, env))
        sys.stdout.write("\n".join(show_lines(reader, slot.row, results, paint)) + "\n")
    sys.stdout.flush()
    return 0 if ok else errors.EXIT_VERIFY


def show_json(
    reader: TrailReader,
    slot: SlotRead,
    results: list[CheckResult],
    binding: PlanBinding | None,
) -> dict[str, Any]:
    return {
        "store": reader.store.uri,
        "stream": reader.stream,
        "seq": slot.seq,
        "version_id": slot.version_id,
        "record": safe_record(slot.data),
        "run": slot.row.to_json(),
        "resources": [r.to_json() for r in slot.row.resources],
        "artifacts": [a.to_json() for a in slot.row.artifacts],
        "checks": [r.to_json() for r in results],
        "plan_binding": binding.to_json() if binding else None,
        "ok": overall(results),
    }


def show_lines(
    reader: TrailReader, row: RunRow, results: list[CheckResult], paint: Painter
) -> list[str]:
    lines = [paint(f"seq {row.seq}", "bold") + f"  stream {reader.stream} at {reader.store.uri}"]
    if not row.readable:
        lines.append(paint(f"  not a readable record: {row.error}", "red"))
    else:
        lines += _facts(row, paint)
        if row.resources:
            lines += ["", paint("Resource changes", "bold")]
            width = max(len(r.action.value) for r in row.resources)
            for change in row.resources:
                lines.append(f"  {change.action.value:<{width}}  {clean(change.address)}")
        if row.artifacts:
            lines += ["", paint("Artifacts", "bold")]
            for art in row.artifacts:
                size = f"{art.size:,} bytes" if art.size is not None else "size ?"
                lines.append(
                    f"  {clean(art.name)}  {size}  version {clean(art.version_id)}  "
                    f"sha256 {clean(art.sha256)}"
                )
    lines += ["", paint("Checks", "bold")]
    width = max(len(r.name) for r in results)
    for result in results:
        mark = paint(result.mark, STATE_STYLE[result.state])
        first, *rest = result.reasons or ("",)
        lines.append(f"  {mark} {result.name:<{width}}  {clean(first)}")
        lines += [f"    {' ' * width}  {clean(reason)}" for reason in rest]
    if row.notes:
        lines += ["", paint("Fields that could not be used", "bold")]
        lines += [f"  {clean(note)}" for note in row.notes]
    return lines


def _facts(row: RunRow, paint: Painter) -> list[str]:
    ci = row.ci
    duration = ""
    if row.started_at and row.finished_at:
        duration = f" ({(row.finished_at - row.started_at).total_seconds():.0f} s)"
    facts: list[tuple[str, str, str | None]] = [
        ("status", status_text(row), status_style(row)),
        ("started", f"{_time(row.started_at)}  finished {_time(row.finished_at)}{duration}", None),
        ("actor", _actor(row), "cyan"),
        ("repository", ci.repository or "-", None),
        ("commit", f"{ci.commit or '-'} on {ci.ref or '-'}", "yellow"),
    ]
    if ci.pull_request:
        facts.append(("PR/MR", change_request(row), None))
    facts += [
        ("run", ci.run_url or "-", None),
        ("command", row.command_text(), None),
        ("tool", f"{row.tool_name or '?'} {row.tool_version or ''}".rstrip(), None),
        ("workspace", row.workspace or "-", None),
    ]
    if row.plan is not None:
        plan = row.plan
        text = f"{plan.plan_file or '-'}  sha256 {plan.plan_file_sha256 or '-'}  {counts(row)}"
        facts.append(("plan", text + (f"  ({plan.error})" if plan.error else ""), None))
    facts += [
        ("identity", row.identity or "-", None),
        ("record", f"sha256 {row.record_sha256}  signature {row.signature_alg or '-'}", None),
        ("run folder", row.run_folder or "-", None),
    ]
    width = max(len(name) for name, _, _ in facts)
    return [f"  {name:<{width}}  {paint(clean(text), style)}" for name, text, style in facts]


def _time(value: Any) -> str:
    from tfaudit_ci.record import iso

    return iso(value) if value is not None else "-"


def _actor(row: RunRow) -> str:
    ci = row.ci
    actor = ci.actor or "-"
    if ci.triggering_actor and ci.triggering_actor != ci.actor:
        actor += f" (re-run by {ci.triggering_actor})"
    return f"{actor} via {ci.provider}"


# -- --plan and --log ------------------------------------------------------------------------


def print_plan(row: RunRow, color: bool) -> int:
    paint = Painter(color)
    if row.plan is None:
        sys.stdout.write(f"seq {row.seq} recorded no plan ({row.command_text() or 'no command'})\n")
        return 0
    plan = row.plan
    lines = [paint(f"seq {row.seq}: {row.command_text()}", "bold")]
    if plan.counts is not None:
        c = plan.counts
        lines.append(
            f"Plan: {c.import_} to import, {c.add} to add, {c.change} to change, "
            f"{c.destroy} to destroy."
        )
    if plan.error:
        lines.append(paint(f"plan capture: {plan.error}", "yellow"))
    styles = {"create": "green", "delete": "red", "replace": "yellow", "update": "yellow"}
    for change in row.resources:
        action = paint(f"{change.action.value:<8}", styles.get(change.action.value))
        moved = f" (moved from {clean(change.previous_address)})" if change.previous_address else ""
        lines.append(f"  {action} {clean(change.address)}{moved}")
    lines.append(f"plan file {plan.plan_file or '-'}  sha256 {plan.plan_file_sha256 or '-'}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def print_log(
    reader: TrailReader, slot: SlotRead, forced: bool | None, env: Mapping[str, str]
) -> int:
    art = slot.row.artifact("output.log")
    if art is None:
        raise ConfigError(f"seq {slot.seq} has no stored output log", fix="see tfaudit show")
    keep_color = use_color(forced, sys.stdout, env)
    digest = hashlib.sha256()
    out = sys.stdout.buffer
    for line in _lines(reader.store.iter_version(art.key, art.version_id)):
        digest.update(line)
        out.write(line if keep_color else ANSI.sub("", line.decode("utf-8", "replace")).encode())
    out.flush()
    if digest.hexdigest() != art.sha256:
        _warn(sys.stderr, f"the log's sha256 differs from the record's: {art.key} was altered")
        return errors.EXIT_VERIFY
    return 0


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Whole lines (an escape sequence never straddles two pieces)."""
    rest = b""
    for chunk in chunks:
        rest += chunk
        *whole, rest = rest.split(b"\n")
        for line in whole:
            yield line + b"\n"
    if rest:
        yield rest


def _warn(out: TextIO, text: str) -> None:
    out.write(f"tfaudit show: {text}\n")
