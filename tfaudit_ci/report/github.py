"""GitHub Actions reporting: masks, step outputs, the step summary and error annotations.

Workflow commands go to stdout; outputs and the summary go to the files the runner names in
``GITHUB_OUTPUT`` / ``GITHUB_STEP_SUMMARY``. Nothing here ever writes log or plan text.
"""

from __future__ import annotations

import html
import shlex
import sys
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

from tfaudit_ci.report.outputs import OUTPUT_NAMES, output_values
from tfaudit_ci.result import RunResult

# Where the runner mounts the workspace in a Docker container action. Paths there mean nothing
# to later steps on the host, so outputs name them relative to the workspace instead.
CONTAINER_WORKSPACE = "/github/workspace"

# GitHub refuses a step summary over 1 MiB; the resource table gets a budget well under that
# so the rest of the summary (and other steps' summaries) always fits.
SUMMARY_TABLE_BUDGET_BYTES = 256 * 1024
SUMMARY_MAX_ROWS = 1000
SUMMARY_ERROR_MAX_CHARS = 2000
# Masking a one- or two-character value would blank that text all over the log and hide
# nothing; tfaudit's own redaction of the audit record does not depend on masks.
MIN_MASK_LENGTH = 3

STATUS_ICONS = {
    "succeeded": "✅",
    "failed": "❌",
    "cancelled": "🛑",
    "interrupted": "🛑",
    "crashed": "💥",
    "not-run": "⏭️",
}


def escape_data(text: str) -> str:
    """Escape a workflow command's message (the part after ``::``)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """Escape a workflow command's property value (``title=...``)."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def emit_masks(values: Iterable[str], out: TextIO) -> None:
    """``::add-mask::`` for each value; a multi-line value is masked line by line.

    The runner masks per log line, so a multi-line secret registered whole would never match.
    """
    seen: set[str] = set()
    for value in values:
        for line in value.splitlines():
            line = line.strip()
            if len(line) < MIN_MASK_LENGTH or line in seen:
                continue
            seen.add(line)
            out.write(f"::add-mask::{escape_data(line)}\n")
    out.flush()


def annotate_error(message: str, out: TextIO, *, title: str | None = None) -> None:
    """An ``::error::`` annotation; newlines are escaped so the whole message stays one."""
    properties = f" title={escape_property(title)}" if title else ""
    out.write(f"::error{properties}::{escape_data(message)}\n")
    out.flush()


def _delimiter(value: str) -> str:
    # A fixed delimiter lets a value that contains it inject further outputs.
    while True:
        delimiter = f"ghadelimiter_{uuid.uuid4()}"
        if delimiter not in value:
            return delimiter


def format_outputs(values: Mapping[str, str]) -> str:
    """``name<<DELIM`` heredoc blocks, one random delimiter per value."""
    blocks = []
    for name, value in values.items():
        delimiter = _delimiter(value)
        blocks.append(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")
    return "".join(blocks)


def write_outputs(result: RunResult, path: Path, *, path_base: str | None = None) -> None:
    """Append every output to the ``$GITHUB_OUTPUT`` file at ``path``."""
    values = output_values(result, path_base=path_base)
    ordered = {name: values[name] for name in OUTPUT_NAMES}
    with path.open("a", encoding="utf-8", newline="\n") as handle:
        handle.write(format_outputs(ordered))


def _code(text: str) -> str:
    # <code> with HTML escaping survives any character, and &#124; keeps `|` from
    # splitting a table cell (a backtick code span would not).
    return "<code>" + html.escape(text, quote=False).replace("|", "&#124;") + "</code>"


def describe_actions(actions: Iterable[Any]) -> str:
    names = [str(action) for action in actions]
    if sorted(names) == ["create", "delete"]:
        return "replace" if names[0] == "delete" else "replace (create first)"
    return " + ".join(names) if names else "?"


def resource_table(
    resources: list[dict[str, Any]],
    *,
    budget_bytes: int = SUMMARY_TABLE_BUDGET_BYTES,
    max_rows: int = SUMMARY_MAX_ROWS,
) -> str:
    """A markdown table of resource changes, cut at a whole row to fit the budget."""
    if not resources:
        return ""
    lines = ["| Action | Resource |", "| --- | --- |"]
    used = sum(len(line.encode("utf-8")) + 1 for line in lines)
    shown = 0
    for resource in resources:
        row = (
            f"| {describe_actions(resource.get('actions') or [])} "
            f"| {_code(str(resource.get('address', '?')))} |"
        )
        size = len(row.encode("utf-8")) + 1
        if shown >= max_rows or used + size > budget_bytes:
            break
        lines.append(row)
        used += size
        shown += 1
    hidden = len(resources) - shown
    if hidden:
        lines.append("")
        lines.append(
            f"_…and {hidden} more resource change(s) not shown here: "
            "the plan JSON in the audit record lists them all._"
        )
    return "\n".join(lines) + "\n"


def verify_hint(result: RunResult) -> str:
    command = f"tfaudit verify --store {shlex.quote(result.store or '')}"
    if result.stream:
        command += f" --stream {shlex.quote(result.stream)}"
    return f"```sh\n{command}\n```\n"


def step_summary(result: RunResult, warnings: Iterable[str] = ()) -> str:
    """The markdown for ``$GITHUB_STEP_SUMMARY``: one warning block holds the run's own
    warnings (witness, redaction, lock) and ``warnings`` (the environment's: trace logs)."""
    icon = STATUS_ICONS.get(result.status, "")
    audit = "recorded" if result.audit_ok else "**FAILED**"
    parts = [f"### tfaudit: {icon} {result.status}, audit {audit}\n"]

    facts = [("Store", _code(result.store or "?")), ("Stream", _code(result.stream or "?"))]
    if result.command_exit_code is not None:
        facts.append(("Command exit code", str(result.command_exit_code)))
    facts.append(("tfaudit exit code", str(result.exit_code)))
    if result.seq is not None:
        facts.append(("Record", f"#{result.seq}"))
    if result.record_uri:
        facts.append(("Record URI", _code(result.record_uri)))
    if result.record_sha256:
        facts.append(("Record sha256", _code(result.record_sha256)))
    if result.checkpoint_uri:
        facts.append(("Witness checkpoint", _code(result.checkpoint_uri)))
    if result.seq is not None and result.record_sha256:
        # One line a later `tfaudit verify --head-from` reads back (docs/witness.md).
        facts.append(("Head", _code(f"seq {result.seq} sha256 {result.record_sha256}")))
    parts.append("| | |\n| --- | --- |\n")
    parts.append("".join(f"| {name} | {value} |\n" for name, value in facts))
    notes = [
        html.escape(text[:SUMMARY_ERROR_MAX_CHARS], quote=False)
        for text in _one_each(result.warnings, warnings)
    ]
    if notes:
        parts.append("\n> [!WARNING]\n" + "".join(f"> {note}\n>\n" for note in notes)[:-2])

    if result.error:
        error = result.error
        if len(error) > SUMMARY_ERROR_MAX_CHARS:
            error = error[:SUMMARY_ERROR_MAX_CHARS] + "…"
        parts.append(f"\n> [!CAUTION]\n> {_code(error)}\n")
        if result.spool_dir:
            parts.append(f">\n> The spool is kept on the runner at {_code(result.spool_dir)}.\n")

    if result.plan is not None:
        plan = result.plan
        parts.append(
            f"\n**Plan:** {plan.add} to add, {plan.change} to change, "
            f"{plan.destroy} to destroy, {plan.import_} to import.\n"
        )
        table = resource_table(result.resources)
        if table:
            parts.append("\n" + table)

    if result.record_uri:
        parts.append("\nVerify the audit trail:\n\n" + verify_hint(result))
    return "".join(parts)


def _one_each(*groups: Iterable[str]) -> list[str]:
    """The warnings on one line each, in order, each once (the run and the environment may
    both say that a trace log is on)."""
    return list(dict.fromkeys(" ".join(text.split()) for group in groups for text in group))


def trace_warnings(env: Mapping[str, str]) -> list[str]:
    """TF_LOG=trace/debug puts provider traffic in the log: redacted by shape only."""
    from tfaudit_ci.secondpass import trace_level, trace_warning

    level = trace_level(env)
    return [trace_warning(level)] if level else []


def _container_path_base(env: Mapping[str, str]) -> str | None:
    workspace = env.get("GITHUB_WORKSPACE")
    return workspace if workspace == CONTAINER_WORKSPACE else None


def report(result: RunResult, env: Mapping[str, str], out: TextIO | None = None) -> None:
    """Masks, annotations, outputs and summary, to ``out`` (stdout) and the runner's files.

    A file that cannot be written costs the workflow its outputs, not the audit (which has
    already shipped), so it becomes a warning rather than a failed job.
    """
    stream = out if out is not None else sys.stdout
    emit_masks(result.masked_values, stream)
    if result.error:
        annotate_error(result.error, stream, title="tfaudit")
    environment_warnings = trace_warnings(env)
    for warning in _one_each(result.warnings, environment_warnings):
        stream.write(f"::warning title=tfaudit::{escape_data(warning)}\n")

    path_base = _container_path_base(env)
    for variable in ("GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"):
        path_text = env.get(variable)
        if not path_text:
            continue
        try:
            if variable == "GITHUB_OUTPUT":
                write_outputs(result, Path(path_text), path_base=path_base)
            else:
                _append(Path(path_text), step_summary(result, environment_warnings))
        except OSError as exc:
            message = f"tfaudit could not write {variable} ({path_text}): {exc.strerror}"
            stream.write(f"::warning::{escape_data(message)}\n")
    stream.flush()


def _append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8", newline="\n") as handle:
        handle.write(text)
