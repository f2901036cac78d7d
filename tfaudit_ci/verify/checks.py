"""Per-record checks (pure): bytes, canonical form, schema, location, prev link, burned slots,
time, signature, artifacts, retention, and the classification of extra versions of a slot.

The writer (``tfaudit_ci.chain``) uses the same functions to decide whether the slot it is
about to chain onto holds a valid record, so that "valid" means one thing everywhere;
``content_problems`` runs a parsed record's checks in verify's order, for verify's walk and
for ``tfaudit show``.
"""

from __future__ import annotations

import datetime as dt
import re
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tfaudit_ci.canonical import JsonRejected, canonical_problem, parse_strict
from tfaudit_ci.record import SCHEMA, iso, parse_iso
from tfaudit_ci.record_limits import MAX_RECORD_BYTES
from tfaudit_ci.signing import Verifier, record_signing_message
from tfaudit_ci.stores.base import ObjectState, Policy
from tfaudit_ci.verify.model import Code, Fetched, Problem, error, warning

# Clock differences between the runner and the store, and rounding to whole seconds
# (the same slack ``tfaudit run`` allows when it reads its own uploads back).
RETAIN_SLACK = dt.timedelta(minutes=5)
# How far a runner's clock may run ahead of the store's: S3 itself refuses requests signed
# more than 15 minutes off, so a record can never honestly start later than that.
CLOCK_SKEW = dt.timedelta(minutes=15)
_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Neighbour:
    """The slot a record links to (its ``prev``), as far as it could be read."""

    seq: int
    exists: bool  # the slot holds a version (not only delete markers, not never written)
    sha256: str | None  # of the winner's bytes; None when missing or unreadable
    signature: Mapping[str, Any] | None  # its signature block; None when it did not parse
    parsed: bool = False  # its bytes parsed into a JSON object
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    superseded: Mapping[str, str] = field(default_factory=dict)  # sha256 -> version id


def moment(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = parse_iso(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def decode(seq: int, data: bytes | None, size: int) -> tuple[dict[str, Any] | None, list[Problem]]:
    """The record in a slot's winning version (``data``: its bytes, None when over the cap),
    and what is wrong with those bytes.

    The record is returned whenever the bytes parse strictly into an object, even when they
    are not canonical (so that the other checks still run and say what else is wrong).
    """
    if size > MAX_RECORD_BYTES or data is None:
        return None, [
            error(
                Code.TOO_LARGE,
                f"the slot holds {size:,} bytes, over the {MAX_RECORD_BYTES:,}-byte cap for a "
                "record: tfaudit never writes one that large",
                seq=seq,
            )
        ]
    try:
        value = parse_strict(data)
    except JsonRejected as exc:
        return None, [error(Code.UNPARSEABLE, f"the slot holds no record: {exc}", seq=seq)]
    if not isinstance(value, dict):
        kind = type(value).__name__
        return None, [
            error(Code.UNPARSEABLE, f"the slot holds a JSON {kind}, not a record", seq=seq)
        ]
    problem = canonical_problem(value, data)
    if problem is not None:
        return value, [error(Code.NOT_CANONICAL, problem, seq=seq)]
    return value, []


def decode_fetched(seq: int, fetched: Fetched) -> tuple[dict[str, Any] | None, list[Problem]]:
    """``decode`` of a version as verify read it (a read failure is ``unreadable``)."""
    if fetched.error is not None or fetched.state is None:
        why = fetched.error or "the version vanished while it was read"
        return None, [error(Code.UNREADABLE, f"the record cannot be read: {why}", seq=seq)]
    size = fetched.size if fetched.size is not None else fetched.state.size
    return decode(seq, fetched.data, size)


def internal(seq: int | None, what: str, exc: BaseException) -> Problem:
    """An exception inside a check, as an error on ``seq`` (with its traceback for -v)."""
    return error(
        Code.INTERNAL,
        f"{what} could not be checked: {type(exc).__name__}: {str(exc)[:200]} (the record "
        "counts as invalid; re-run with -v for the traceback)",
        seq=seq,
        traceback=traceback.format_exc(),
    )


def guarded(seq: int, what: str, check: Callable[[], list[Problem]]) -> list[Problem]:
    """``check()``; whatever it raises is an ``internal`` error on ``seq``, never a crash."""
    try:
        return check()
    except Exception as exc:
        return [internal(seq, what, exc)]


def guarded_texts(what: str, check: Callable[[], list[str]]) -> list[str]:
    """Like ``guarded`` for checks that return texts; an exception becomes one text."""
    try:
        return check()
    except Exception as exc:
        return [f"{what} could not be checked: {type(exc).__name__}: {str(exc)[:200]}"]


def schema_problems(seq: int, record: Mapping[str, Any]) -> list[Problem]:
    from tfaudit_ci.schemas import record_schema_problems

    if record.get("schema") != SCHEMA:
        return [error(Code.SCHEMA, f"schema is {str(record.get('schema'))[:80]!r}", seq=seq)]
    found = record_schema_problems(record)
    return (
        [error(Code.SCHEMA, f"not a valid {SCHEMA} record: {'; '.join(found)}", seq=seq)]
        if found
        else []
    )


def location_problems(
    seq: int, sha256: str, record: Mapping[str, Any], stream: str, copies: Mapping[str, int]
) -> list[Problem]:
    claimed_seq, claimed_stream = record.get("seq"), record.get("stream")
    if claimed_seq == seq and claimed_stream == stream and not isinstance(claimed_seq, bool):
        return []
    where = f"seq {str(claimed_seq)[:40]} of stream {str(claimed_stream)[:80]!r}"
    original = copies.get(sha256)
    how = f"a copy of slot {original}" if original is not None and original != seq else "moved"
    return [
        error(Code.LOCATION, f"the slot holds the record of {where} ({how}, or reordered)", seq=seq)
    ]


def _seq_value(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def link_target(record: Mapping[str, Any]) -> int | None:
    """The seq a record links to: -1 for ``prev: null``, None when ``prev`` is malformed."""
    link = record.get("prev")
    if link is None:
        return -1
    return _seq_value(link.get("seq")) if isinstance(link, Mapping) else None


def burned_entries(record: Mapping[str, Any]) -> dict[int, str | None] | None:
    """``{seq: sha256 or None}`` of the record's ``burned`` list; None when malformed."""
    entries = record.get("burned", [])
    if not isinstance(entries, list):
        return None
    found: dict[int, str | None] = {}
    for entry in entries:
        seq = _seq_value(entry.get("seq")) if isinstance(entry, Mapping) else None
        if seq is None or seq in found or not isinstance(entry, Mapping):
            return None
        sha = entry.get("sha256")
        found[seq] = sha if isinstance(sha, str) else None
    return found


def link_problems(seq: int, record: Mapping[str, Any], pred: Neighbour | None) -> list[Problem]:
    """``prev`` (and ``burned``) against the slot they name; ``pred`` None for ``prev: null``."""
    target = link_target(record)
    burned = burned_entries(record)
    if target is None:
        return [error(Code.PREV_LINK, "prev is malformed (needs {seq, sha256} or null)", seq=seq)]
    if burned is None:
        return [error(Code.PREV_LINK, "burned is malformed (needs [{seq, sha256}])", seq=seq)]
    if target >= seq:
        return [error(Code.PREV_LINK, f"prev points at seq {target}, not before {seq}", seq=seq)]
    if any(not target < b < seq for b in burned):
        outside = sorted(b for b in burned if not target < b < seq)
        return [
            error(
                Code.PREV_LINK,
                f"burned lists seqs {outside[:5]} outside the skipped range ({target}, {seq})",
                seq=seq,
            )
        ]
    if target < seq - 1 and not burned:
        what = "prev is null" if target < 0 else f"prev points at seq {target}"
        return [
            error(
                Code.PREV_LINK,
                f"{what}, not {seq - 1}, and no slot is listed as burned: the record is "
                "detached from the chain",
                seq=seq,
            )
        ]
    if target < 0 or pred is None:
        return []
    link = record.get("prev")
    assert isinstance(link, Mapping)
    if pred.sha256 is None:
        state = "unreadable" if pred.exists else "missing"
        return [error(Code.PREV_UNCHECKED, f"seq {target} is {state}: link not checked", seq=seq)]
    if link.get("sha256") == pred.sha256:
        return []
    version = pred.superseded.get(str(link.get("sha256")))
    if version is not None:
        return [
            error(
                Code.FORK,
                f"continues from superseded version {version} of seq {target}, not from the "
                "winning (oldest) version: the chain forked",
                seq=seq,
            )
        ]
    return [
        error(
            Code.PREV_MISMATCH,
            f"prev sha256 does not match seq {target} (seq {target} was altered or replaced, "
            "or records were moved)",
            seq=seq,
        )
    ]


def time_problems(
    seq: int,
    record: Mapping[str, Any],
    pred: Neighbour | None,
    *,
    written: dt.datetime | None,
    max_overlap: dt.timedelta,
) -> list[Problem]:
    """A record cannot leave a ``--since``/``--until`` window by lying about its time: its
    start must not precede its predecessor's by more than ``max_overlap``, nor follow the
    moment the store wrote it, and it cannot finish before it started."""
    started, finished = moment(record.get("started_at")), moment(record.get("finished_at"))
    if started is None or finished is None:
        return []  # a malformed time is a schema problem
    problems = []
    if finished < started:
        problems.append(
            error(
                Code.TIME, f"finished ({iso(finished)}) before it started ({iso(started)})", seq=seq
            )
        )
    if written is not None:
        stored = written if written.tzinfo else written.replace(tzinfo=dt.timezone.utc)
        if started > stored + CLOCK_SKEW:
            problems.append(
                error(
                    Code.TIME,
                    f"claims to have started at {iso(started)}, after the store wrote it "
                    f"({iso(stored)})",
                    seq=seq,
                )
            )
    before = pred.started_at if pred is not None else None
    if before is not None and started < before - max_overlap:
        problems.append(
            error(
                Code.TIME,
                f"started_at {iso(started)} goes backwards: seq {pred.seq if pred else '?'} "
                f"before it started at {iso(before)} (more than {max_overlap} earlier)",
                seq=seq,
            )
        )
    return problems


def signature_problems(
    seq: int, record: Mapping[str, Any], pred: Neighbour | None, verifier: Verifier
) -> list[Problem]:
    """The record's signature with the trusted key (``pred`` None for ``prev: null``)."""
    signature = record.get("signature")
    if not isinstance(signature, Mapping):
        return [error(Code.SIGNATURE, "the record has no signature block", seq=seq)]
    if pred is not None and not pred.parsed:
        state = "holds no record" if pred.exists else "is missing"
        return [
            error(
                Code.SIGNATURE_UNCHECKED,
                f"seq {pred.seq} {state}: this signature covers its signature and cannot be "
                "checked",
                seq=seq,
            )
        ]
    previous = {"signature": pred.signature} if pred is not None else None
    problem = verifier.check(signature, record_signing_message(record, previous))
    return [error(Code.SIGNATURE, problem, seq=seq)] if problem else []


def content_problems(
    seq: int,
    sha256: str,
    record: Mapping[str, Any],
    pred: Neighbour | None,
    *,
    stream: str,
    copies: Mapping[str, int],
    written: dt.datetime | None,
    max_overlap: dt.timedelta,
    verifier: Verifier | None,
) -> list[Problem]:
    """Every check of a parsed record's content, each guarded: schema, location, ``prev`` (and
    ``burned``) against ``pred`` (the slot ``prev`` names; None for ``prev: null``), time, and
    with a ``verifier`` the signature. ``written``: when the store wrote the record."""
    problems = guarded(seq, "schema", lambda: schema_problems(seq, record))
    problems += guarded(
        seq, "location", lambda: location_problems(seq, sha256, record, stream, copies)
    )
    problems += guarded(seq, "prev", lambda: link_problems(seq, record, pred))
    problems += guarded(
        seq,
        "time",
        lambda: time_problems(seq, record, pred, written=written, max_overlap=max_overlap),
    )
    if verifier is not None:
        problems += guarded(
            seq, "signature", lambda: signature_problems(seq, record, pred, verifier)
        )
    return problems


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


def record_lock_problems(
    state: ObjectState,
    record: Mapping[str, Any] | None,
    *,
    policy: Policy,
    min_remaining_days: int,
    now: dt.datetime,
) -> list[str]:
    """``lock_problems`` of one version a record stored (the record itself or an artifact),
    against the record's finish time and the retain-until it states."""
    retention = record.get("retention") if record is not None else None
    recorded = moment(retention.get("retain_until")) if isinstance(retention, Mapping) else None
    return lock_problems(
        state,
        policy=policy,
        finished_at=moment(record.get("finished_at")) if record is not None else None,
        recorded_until=recorded,
        min_remaining_days=min_remaining_days,
        now=now,
    )


def safe_key(key: str) -> bool:
    """A key made only of plain segments: nothing that could climb out of a folder."""
    parts = key.split("/")
    return all(
        _SAFE_SEGMENT.fullmatch(part) is not None and part not in {".", ".."} for part in parts
    )


def artifact_problems(
    entry: Any, fetched: Fetched | None, *, stream: str, run_folder: Any
) -> list[str]:
    if not isinstance(entry, Mapping) or not all(
        isinstance(entry.get(k), str) for k in ("name", "key", "version_id", "sha256")
    ):
        return ["malformed artifact entry (needs name, key, version_id, sha256, size)"]
    key = str(entry["key"])
    if not safe_key(key) or not key.startswith(f"{stream}/runs/{run_folder}/"):
        return ["the artifact is outside the record's run folder (not read)"]
    if fetched is None:
        return ["not checked"]
    if fetched.error is not None:
        return [f"cannot be read: {fetched.error}"]
    if fetched.state is None:
        return [f"missing: no version {str(entry['version_id'])[:80]} of {key}"]
    problems = []
    if fetched.size != entry.get("size"):
        problems.append(f"size is {fetched.size} bytes, the record says {entry.get('size')}")
    if fetched.sha256 != entry["sha256"]:
        problems.append("sha256 of the stored bytes differs from the record's")
    return problems


def run_folder_of(data: bytes | None) -> str | None:
    """The ``run_folder`` of a record's bytes, if they hold one (any parse failure: None)."""
    if data is None or len(data) > MAX_RECORD_BYTES:
        return None
    try:
        value = parse_strict(data)
    except JsonRejected:
        return None
    folder = value.get("run_folder") if isinstance(value, dict) else None
    return folder if isinstance(folder, str) else None


def extra_version_problems(
    seq: int,
    version_id: str,
    same_bytes: bool,
    run_folder: str | None,
    recorded_folders: Mapping[str, int],
) -> list[Problem]:
    """A later version of a slot: a harmless duplicate, a superseded loser, or a fork."""
    if same_bytes:
        return [
            warning(
                Code.DUPLICATE_VERSION,
                f"version {version_id} repeats the record byte for byte (a retried write)",
                seq=seq,
            )
        ]
    later = recorded_folders.get(run_folder) if run_folder else None
    if later is not None and later > seq:
        return [
            warning(
                Code.SUPERSEDED,
                f"version {version_id} is a superseded duplicate: run {run_folder} lost the race "
                f"for this slot and was appended again at seq {later}",
                seq=seq,
            )
        ]
    return [
        error(
            Code.FORK,
            f"version {version_id} is a second record for this slot (run {run_folder}) that the "
            "chain does not contain: a fork (a write that ignored create-only) or an "
            "overwrite attempt",
            seq=seq,
        )
    ]


def neighbour(
    seq: int,
    sha256: str | None,
    record: Mapping[str, Any] | None,
    *,
    exists: bool,
    superseded: Mapping[str, str] | None = None,
) -> Neighbour:
    """What a successor needs to know about slot ``seq`` (``sha256`` of its winner's bytes)."""
    signature = record.get("signature") if record is not None else None
    return Neighbour(
        seq,
        exists,
        sha256 if exists else None,
        signature if isinstance(signature, Mapping) else None,
        record is not None,
        moment(record.get("started_at")) if record is not None else None,
        moment(record.get("finished_at")) if record is not None else None,
        dict(superseded or {}),
    )
