"""Per-record checks (pure): location, canonical form, prev link, signature, artifacts,
retention, and the classification of extra versions of a slot (forks, duplicates)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tfaudit_ci.canonical import canonical_bytes
from tfaudit_ci.record import SCHEMA, iso, parse_iso
from tfaudit_ci.signing import Verifier, record_signing_message
from tfaudit_ci.stores.base import ObjectState, Policy
from tfaudit_ci.verify.model import Fetched, Problem, error, warning

# Clock differences between the runner and the store, and rounding to whole seconds
# (the same slack ``tfaudit run`` allows when it reads its own uploads back).
RETAIN_SLACK = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class Neighbour:
    """The slot before a record, as far as it could be read."""

    seq: int
    sha256: str | None  # of the winner's bytes; None when the slot is missing or unreadable
    record: Mapping[str, Any] | None
    superseded: Mapping[str, str] = field(default_factory=dict)  # sha256 -> version id


def parse_record(data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        parsed = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return parsed if isinstance(parsed, dict) else None


def moment(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = parse_iso(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def record_problems(
    seq: int,
    data: bytes,
    record: Mapping[str, Any] | None,
    *,
    stream: str,
    prev: Neighbour | None,
    copies: Mapping[str, int],
    verifier: Verifier | None,
) -> list[Problem]:
    """What is wrong with the record in slot ``seq`` (``prev`` is None only for seq 0)."""
    if record is None:
        return [error("unreadable", "the record is not a JSON object", seq=seq)]
    problems: list[Problem] = []
    if canonical_bytes(record) != data:
        problems.append(
            error("not-canonical", "not canonical JSON: tfaudit never wrote these bytes", seq=seq)
        )
    if record.get("schema") != SCHEMA:
        problems.append(error("schema", f"schema is {record.get('schema')!r}", seq=seq))
    problems.extend(_location(seq, data, record, stream, copies))
    problems.extend(_prev_link(seq, record, prev))
    if verifier is not None:
        problems.extend(_signature(seq, record, prev, verifier))
    return problems


def _location(
    seq: int, data: bytes, record: Mapping[str, Any], stream: str, copies: Mapping[str, int]
) -> list[Problem]:
    from tfaudit_ci.canonical import sha256_hex

    claimed_seq, claimed_stream = record.get("seq"), record.get("stream")
    if claimed_seq == seq and claimed_stream == stream:
        return []
    where = f"seq {claimed_seq!r} of stream {claimed_stream!r}"
    original = copies.get(sha256_hex(data))
    how = f"a copy of slot {original}" if original is not None and original != seq else "moved"
    return [
        error("location", f"the slot holds the record of {where} ({how}, or reordered)", seq=seq)
    ]


def _prev_link(seq: int, record: Mapping[str, Any], prev: Neighbour | None) -> list[Problem]:
    link = record.get("prev")
    if seq == 0 or prev is None:
        if link is not None:
            return [
                error("prev-link", f"the first record must have prev null, not {link}", seq=seq)
            ]
        return []
    if not isinstance(link, Mapping):
        return [
            error("prev-link", "prev is missing: the record is detached from the chain", seq=seq)
        ]
    if link.get("seq") != seq - 1:
        return [
            error("prev-link", f"prev points at seq {link.get('seq')!r}, not {seq - 1}", seq=seq)
        ]
    if prev.sha256 is None:
        return [warning("prev-unchecked", f"seq {seq - 1} is missing: link not checked", seq=seq)]
    if link.get("sha256") == prev.sha256:
        return []
    version = prev.superseded.get(str(link.get("sha256")))
    if version is not None:
        return [
            error(
                "fork",
                f"continues from superseded version {version} of seq {seq - 1}, not from the "
                "winning (oldest) version: the chain forked",
                seq=seq,
            )
        ]
    return [
        error(
            "prev-mismatch",
            f"prev sha256 does not match seq {seq - 1} (seq {seq - 1} was altered or replaced, "
            "or records were moved)",
            seq=seq,
        )
    ]


def _signature(
    seq: int, record: Mapping[str, Any], prev: Neighbour | None, verifier: Verifier
) -> list[Problem]:
    signature = record.get("signature")
    if not isinstance(signature, Mapping):
        return [error("signature", "the record has no signature block", seq=seq)]
    if seq > 0 and (prev is None or prev.record is None):
        return [
            warning(
                "signature-unchecked",
                f"seq {seq - 1} is missing or unreadable: this signature covers its signature "
                "and cannot be checked",
                seq=seq,
            )
        ]
    message = record_signing_message(record, prev.record if prev is not None else None)
    problem = verifier.check(signature, message)
    return [error("signature", problem, seq=seq)] if problem else []


def lock_problems(
    state: ObjectState,
    *,
    policy: Policy,
    finished_at: dt.datetime | None,
    recorded_until: dt.datetime | None,
    min_remaining_days: int,
    now: dt.datetime,
) -> list[str]:
    """Lock mode and retain-until of one stored version against the policy."""
    problems = []
    if not policy.mode_ok(state.lock_mode):
        problems.append(
            f"lock mode is {state.lock_mode or 'none'}, policy requires {policy.lock_mode}"
        )
    until = state.retain_until
    if until is None:
        return [*problems, "no retain-until date: the object is not locked"]
    if until.tzinfo is None:
        until = until.replace(tzinfo=dt.timezone.utc)
    if finished_at is not None:
        required = finished_at + dt.timedelta(days=policy.retention_days) - RETAIN_SLACK
        if until < required:
            problems.append(
                f"retained until {iso(until)}, policy requires {policy.retention_days} days "
                f"(>= {iso(required)})"
            )
    if recorded_until is not None and until < recorded_until - dt.timedelta(seconds=1):
        problems.append(
            f"retained until {iso(until)}, less than the record states ({iso(recorded_until)})"
        )
    if min_remaining_days and until - now < dt.timedelta(days=min_remaining_days):
        problems.append(
            f"retention ends {iso(until)}, in less than {min_remaining_days} days "
            "(--min-remaining-days)"
        )
    return problems


def artifact_problems(
    entry: Any, fetched: Fetched | None, *, stream: str, run_folder: Any
) -> list[str]:
    if not isinstance(entry, Mapping) or not all(
        isinstance(entry.get(k), str) for k in ("name", "key", "version_id", "sha256")
    ):
        return ["malformed artifact entry (needs name, key, version_id, sha256, size)"]
    problems = []
    if not str(entry["key"]).startswith(f"{stream}/runs/{run_folder}/"):
        problems.append("the artifact is outside the record's run folder")
    if fetched is None:
        return [*problems, "not checked"]
    if fetched.error is not None:
        return [*problems, f"cannot be read: {fetched.error}"]
    if fetched.state is None:
        return [*problems, f"missing: no version {entry['version_id']} of {entry['key']}"]
    if fetched.size != entry.get("size"):
        problems.append(f"size is {fetched.size} bytes, the record says {entry.get('size')}")
    if fetched.sha256 != entry["sha256"]:
        problems.append("sha256 of the stored bytes differs from the record's")
    return problems


def extra_version_problems(
    seq: int,
    winner_data: bytes | None,
    extras: list[tuple[str, bytes | None]],
    recorded_folders: Mapping[str, int],
) -> list[Problem]:
    """Later versions of a slot: harmless duplicates, superseded losers, or a fork."""
    problems = []
    for version_id, data in extras:
        if data is not None and data == winner_data:
            problems.append(
                warning(
                    "duplicate-version",
                    f"version {version_id} repeats the record byte for byte (a retried write)",
                    seq=seq,
                )
            )
            continue
        extra = parse_record(data)
        folder = extra.get("run_folder") if extra else None
        later = recorded_folders.get(str(folder)) if folder else None
        if later is not None and later > seq:
            problems.append(
                warning(
                    "superseded",
                    f"version {version_id} is a superseded duplicate: run {folder} lost the race "
                    f"for this slot and was appended again at seq {later}",
                    seq=seq,
                )
            )
            continue
        problems.append(
            error(
                "fork",
                f"version {version_id} is a second record for this slot (run {folder}) that the "
                "chain does not contain: a fork (a write that ignored create-only) or an "
                "overwrite attempt",
                seq=seq,
            )
        )
    return problems
