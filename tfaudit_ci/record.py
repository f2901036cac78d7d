"""The audit record (schema tfaudit.record/v1): pure construction and key layout."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

from tfaudit_ci import __version__

SCHEMA = "tfaudit.record/v1"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
CHAIN_BLOCK = 100  # slots per listing block: keys share all but their last two digits
HEAD_HINT_NAME = "chain-head.json"
MAX_SEQ = 999_999_999_999  # the slot key holds 12 digits


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def iso(moment: dt.datetime) -> str:
    return (
        moment.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def parse_iso(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def run_folder_name(started: dt.datetime, run_id: str | None, attempt: str | None) -> str:
    stamp = started.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    rid = _SAFE.sub("_", run_id or "local")
    att = _SAFE.sub("_", attempt or "1")
    return f"{stamp}-{rid}-{att}-{uuid.uuid4().hex[:8]}"


def run_key(stream: str, run_folder: str, name: str) -> str:
    return f"{stream}/runs/{run_folder}/{name}"


def chain_key(stream: str, seq: int) -> str:
    return f"{stream}/chain/{seq:012d}.json"


def chain_prefix(stream: str) -> str:
    return f"{stream}/chain/"


def chain_block_prefix(stream: str, seq: int) -> str:
    """The key prefix shared by the 100 slots of ``seq``'s block (``seq // 100``): one
    listing of it shows every version of those slots."""
    return f"{chain_prefix(stream)}{seq // CHAIN_BLOCK:010d}"


def head_hint_key(stream: str) -> str:
    """The head hint (docs/record-format.md, "Head hint"): beside ``chain/``, not in it, so
    no listing of the chain ever pages through its versions."""
    return f"{stream}/{HEAD_HINT_NAME}"


def seq_from_chain_key(stream: str, key: str) -> int | None:
    match = re.fullmatch(re.escape(chain_prefix(stream)) + r"(\d{12})\.json", key)
    return int(match.group(1)) if match else None


def build_record(
    *,
    stream: str,
    seq: int,
    prev: dict[str, Any] | None,
    run_folder: str,
    command: list[str],
    cwd: str,
    tool: dict[str, Any],
    workspace: str | None,
    status: str,
    exit_code: int | None,
    started_at: dt.datetime,
    finished_at: dt.datetime,
    ci: dict[str, Any],
    artifacts: list[dict[str, Any]],
    plan: dict[str, Any] | None,
    redactions: dict[str, int],
    retention: dict[str, Any],
    identity: dict[str, Any] | None = None,
    burned: list[dict[str, Any]] | None = None,
    redaction: dict[str, Any] | None = None,
    withheld: list[dict[str, Any]] | None = None,
    witness: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The record without its signature; the signer adds ``signature`` over these bytes."""
    return {
        "schema": SCHEMA,
        "stream": stream,
        "seq": seq,
        "prev": prev,
        "burned": list(burned or []),  # slots skipped because they held no valid record
        "run_folder": run_folder,
        "command": command,
        "cwd": cwd,
        "tool": tool,
        "workspace": workspace,
        "status": status,
        "exit_code": exit_code,
        "started_at": iso(started_at),
        "finished_at": iso(finished_at),
        "ci": ci,
        "artifacts": artifacts,
        "plan": plan,
        "redactions": dict(sorted(redactions.items())),
        "retention": retention,
        "identity": identity,
        "redaction": redaction,  # the second pass: its source, counts and warnings
        "withheld": withheld or [],  # what was not uploaded (stdout, a log), sizes and reasons
        "witness": witness,  # where checkpoints go, and those missing (docs/witness.md)
        "tfaudit_version": __version__,
    }
