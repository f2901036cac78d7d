"""The verification walk: list once, read records and artifacts in parallel, check everything,
keep going after every failure (CloudTrail ``validate-logs`` style)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tfaudit_ci.canonical import sha256_hex
from tfaudit_ci.identity import IDENTITY_ARTIFACT
from tfaudit_ci.identity_verify import identity_problems
from tfaudit_ci.record import chain_key, utc_now
from tfaudit_ci.stores.base import Store
from tfaudit_ci.verify import checks, layout
from tfaudit_ci.verify.model import (
    ERROR,
    Fetched,
    Problem,
    VerifyOptions,
    VerifyResult,
    error,
    warning,
)
from tfaudit_ci.verify.reader import Reader, parallel_map, reader_for

if TYPE_CHECKING:
    from tfaudit_ci.verify.witness import WitnessCheck


@dataclass
class _Walk:
    store: Store
    reader: Reader
    options: VerifyOptions
    now: dt.datetime
    check_locks: bool
    record_reads: dict[int, Fetched] = field(default_factory=dict)
    witness: WitnessCheck | None = None  # issue 14


def verify_stream(
    store: Store, options: VerifyOptions, witness: WitnessCheck | None = None
) -> VerifyResult:
    reader = reader_for(store, options.parallelism)
    walk = _Walk(
        store,
        reader,
        options,
        options.now or utc_now(),
        check_locks=store.lock_readback,
        witness=witness,
    )
    return _run(walk)


def _witness(
    walk: _Walk,
    result: VerifyResult,
    records: Mapping[int, tuple[bytes | None, Any]],
    present: list[int],
    window: list[int],
) -> None:
    """Issue 14: cross-check the chain against its witness (verify/witness.py)."""
    if walk.witness is not None:
        from tfaudit_ci.verify.witness import ChainFacts

        findings = walk.witness.check(ChainFacts.of(records, present, window))
        result.problems.extend(findings.problems)
        result.notes.extend(findings.notes)


def _run(walk: _Walk) -> VerifyResult:
    options, stream = walk.options, walk.options.stream
    result = VerifyResult(store=walk.store.uri, stream=stream)
    listing = layout.split_listing(stream, walk.reader.list_versions(f"{stream}/"))
    present = listing.seqs_with_record()
    result.head = layout.probe_head(set(listing.slots))
    if not listing.slots:
        result.problems.append(
            error("empty", f"stream {stream!r} has no records in {walk.store.uri}")
        )
        _witness(walk, result, {}, [], [])  # issue 14
        return result

    # Records that cannot have started after --since are skipped without being read: a
    # record is written after its run starts, so its store timestamp is never earlier.
    candidates = [seq for seq in present if _may_be_in_window(listing.slots[seq], options.since)]
    wanted = set(candidates)
    if candidates and candidates[0] - 1 in listing.slots:
        wanted.add(candidates[0] - 1)  # context: the first record's predecessor
    if present:
        wanted.add(present[-1])  # the head, for --max-age
    records = _fetch_records(walk, listing, sorted(wanted))

    window = [
        seq for seq in candidates if _in_window(records[seq][1], options.since, options.until)
    ]
    low = window[0] if window and options.since is not None else 0
    high = window[-1] if window and options.until is not None else max(listing.slots)
    if not window and (options.since is not None or options.until is not None):
        high = -1  # nothing in the window: no slot-level findings to report
    result.first_seq, result.last_seq = (window[0], window[-1]) if window else (None, None)
    result.problems.extend(layout.slot_problems(listing, low, high))
    missing = layout.missing_seqs(listing, low, high)

    winners_by_sha: dict[str, int] = {}  # record hash -> the first slot holding those bytes
    for seq in sorted(records):
        if records[seq][0] is not None:
            winners_by_sha.setdefault(sha256_hex(records[seq][0] or b""), seq)
    folders = {
        str(rec.get("run_folder")): seq for seq, (_, rec) in records.items() if rec is not None
    }
    superseded = _fetch_extras(walk, listing, window)
    for seq in window:
        data, record = records[seq]
        if data is None:
            continue  # unreadable: reported by the lock pass below, checked no further
        prev = _neighbour(seq - 1, listing, records, superseded) if seq > 0 else None
        result.problems.extend(
            checks.record_problems(
                seq,
                data,
                record,
                stream=stream,
                prev=prev,
                copies=winners_by_sha,
                verifier=options.verifier,
            )
        )
        result.problems.extend(
            checks.extra_version_problems(seq, data, list(superseded.get(seq, {}).items()), folders)
        )
    result.problems.extend(_record_locks(walk, records, window))
    result.problems.extend(_artifacts(walk, listing, records, window, result))
    referenced = {str(rec.get("run_folder")) for _, rec in records.values() if rec is not None}
    referenced |= {f for extras in superseded.values() for f in _folders_of(extras)}
    result.problems.extend(
        layout.orphan_problems(listing, referenced, options.since, options.until)
    )
    result.problems.extend(_max_age(walk, listing, records, present))
    _witness(walk, result, records, present, window)  # issue 14

    invalid = {p.seq for p in result.problems if p.severity == ERROR and p.code not in _SLOT_CODES}
    result.records_total = len(window) + len(missing)
    result.records_valid = sum(1 for seq in window if seq not in invalid)
    _notes(walk, result)
    return result


# Findings about the shape of the chain rather than about one record's content.
_SLOT_CODES = {"gap", "after-head"}


def _may_be_in_window(slot: layout.Slot, since: dt.datetime | None) -> bool:
    winner = slot.winner
    if since is None or winner is None or winner.last_modified is None:
        return True
    return winner.last_modified >= since


def _in_window(
    record: Mapping[str, Any] | None, since: dt.datetime | None, until: dt.datetime | None
) -> bool:
    if since is None and until is None:
        return True
    started = checks.moment(record.get("started_at")) if record is not None else None
    if started is None:
        return True  # an unreadable record is reported, never silently skipped
    return (since is None or started >= since) and (until is None or started < until)


def _fetch_records(
    walk: _Walk, listing: layout.Layout, seqs: list[int]
) -> dict[int, tuple[bytes | None, dict[str, Any] | None]]:
    def read(seq: int) -> tuple[int, Fetched]:
        winner = listing.slots[seq].winner
        assert winner is not None
        return seq, walk.reader.fetch(winner.key, winner.version_id, keep=True)

    walk.record_reads = dict(parallel_map(read, seqs, walk.options.parallelism))
    return {
        seq: (item.data, checks.parse_record(item.data)) for seq, item in walk.record_reads.items()
    }


def _fetch_extras(
    walk: _Walk, listing: layout.Layout, window: list[int]
) -> dict[int, dict[str, bytes | None]]:
    """Bytes of every later version of the slots in (and just before) the window."""
    targets = [
        (seq, v)
        for seq in sorted(set(window) | {window[0] - 1} if window else set())
        if seq in listing.slots
        for v in listing.slots[seq].extras
    ]

    def read(item: tuple[int, Any]) -> tuple[int, str, bytes | None]:
        seq, version = item
        return (
            seq,
            version.version_id,
            walk.reader.fetch(version.key, version.version_id, keep=True).data,
        )

    out: dict[int, dict[str, bytes | None]] = {}
    for seq, version_id, data in parallel_map(read, targets, walk.options.parallelism):
        out.setdefault(seq, {})[version_id] = data
    return out


def _folders_of(extras: Mapping[str, bytes | None]) -> set[str]:
    found = set()
    for data in extras.values():
        parsed = checks.parse_record(data)
        if parsed is not None and parsed.get("run_folder"):
            found.add(str(parsed["run_folder"]))
    return found


def _neighbour(
    seq: int,
    listing: layout.Layout,
    records: Mapping[int, tuple[bytes | None, dict[str, Any] | None]],
    superseded: Mapping[int, Mapping[str, bytes | None]],
) -> checks.Neighbour:
    data, record = records.get(seq, (None, None))
    losers = {sha256_hex(d): vid for vid, d in superseded.get(seq, {}).items() if d is not None}
    return checks.Neighbour(seq, sha256_hex(data) if data is not None else None, record, losers)


def _lock_check(walk: _Walk, state: Any, record: Mapping[str, Any] | None) -> list[str]:
    retention = record.get("retention") if record is not None else None
    recorded = (
        checks.moment(retention.get("retain_until")) if isinstance(retention, Mapping) else None
    )
    return checks.lock_problems(
        state,
        policy=walk.options.policy,
        finished_at=checks.moment(record.get("finished_at")) if record is not None else None,
        recorded_until=recorded,
        min_remaining_days=walk.options.min_remaining_days,
        now=walk.now,
    )


def _record_locks(
    walk: _Walk,
    records: Mapping[int, tuple[bytes | None, dict[str, Any] | None]],
    window: list[int],
) -> list[Problem]:
    problems = []
    for seq in window:
        item = walk.record_reads.get(seq)
        if item is None or item.state is None:
            what = item.error if item is not None and item.error else "vanished while reading"
            problems.append(error("unreadable", f"the record cannot be read: {what}", seq=seq))
            continue
        if walk.check_locks:
            for text in _lock_check(walk, item.state, records[seq][1]):
                problems.append(error("retention", f"record: {text}", seq=seq))
    return problems


def _artifacts(
    walk: _Walk,
    listing: layout.Layout,
    records: Mapping[int, tuple[bytes | None, dict[str, Any] | None]],
    window: list[int],
    result: VerifyResult,
) -> list[Problem]:
    jobs: list[tuple[int, Any]] = []
    for seq in window:
        record = records[seq][1]
        entries = record.get("artifacts") if record is not None else None
        if record is not None and not isinstance(entries, list):
            jobs.append((seq, None))
            continue
        for entry in entries or []:
            jobs.append((seq, entry))

    def read(job: tuple[int, Any]) -> Fetched | None:
        entry = job[1]
        if not isinstance(entry, Mapping) or not isinstance(entry.get("key"), str):
            return None
        keep = entry.get("name") == IDENTITY_ARTIFACT
        return walk.reader.fetch(str(entry["key"]), str(entry.get("version_id")), keep=keep)

    fetched = parallel_map(read, jobs, walk.options.parallelism)
    problems: list[Problem] = []
    evidence: dict[int, bytes | None] = {}
    pinned: dict[str, set[str]] = {}
    bad_artifacts = 0
    for (seq, entry), item in zip(jobs, fetched, strict=True):
        record = records[seq][1]
        assert record is not None
        found = checks.artifact_problems(
            entry, item, stream=walk.options.stream, run_folder=record.get("run_folder")
        )
        if item is not None and item.state is not None and walk.check_locks:
            found += _lock_check(walk, item.state, record)
        key = str(entry.get("key")) if isinstance(entry, Mapping) else "?"
        name = entry.get("name") if isinstance(entry, Mapping) else "?"
        if isinstance(entry, Mapping):
            pinned.setdefault(key, set()).add(str(entry.get("version_id")))
            if name == IDENTITY_ARTIFACT and item is not None and not found:
                evidence[seq] = item.data
        problems.extend(error("artifact", f"{name}: {text}", seq=seq, key=key) for text in found)
        bad_artifacts += 1 if found else 0
    result.artifacts_total = len(jobs)
    result.artifacts_valid = len(jobs) - bad_artifacts
    problems.extend(layout.unreferenced_versions(listing, pinned))
    problems.extend(_identity(walk, records, window, evidence))
    return problems


def _identity(
    walk: _Walk,
    records: Mapping[int, tuple[bytes | None, dict[str, Any] | None]],
    window: list[int],
    evidence: Mapping[int, bytes | None],
) -> list[Problem]:
    problems = []
    for seq in window:
        record = records[seq][1]
        summary = record.get("identity") if record is not None else None
        if not isinstance(summary, Mapping):
            continue
        if "unavailable" in summary:
            problems.append(
                warning("identity", f"no identity evidence: {summary['unavailable']}", seq=seq)
            )
            continue
        assert record is not None
        for text in identity_problems(record, evidence.get(seq), walk.options.trusted_jwks):
            problems.append(error("identity", text, seq=seq))
    return problems


def _max_age(
    walk: _Walk,
    listing: layout.Layout,
    records: Mapping[int, tuple[bytes | None, dict[str, Any] | None]],
    present: list[int],
) -> list[Problem]:
    limit = walk.options.max_age
    if limit is None or not present:
        return []
    head = present[-1]
    record = records.get(head, (None, None))[1]
    finished = checks.moment(record.get("finished_at")) if record is not None else None
    winner = listing.slots[head].winner
    when = finished or (winner.last_modified if winner is not None else None)
    if when is None or walk.now - when <= limit:
        return []
    age = walk.now - when
    return [
        error(
            "stale-head",
            f"the newest record finished {_human(age)} ago, more than --max-age "
            f"{_human(limit)}: records after it may have been truncated (or nothing ran)",
            seq=head,
            key=chain_key(walk.options.stream, head),
        )
    ]


def _human(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds}s"


def _notes(walk: _Walk, result: VerifyResult) -> None:
    verifier = walk.options.verifier
    if verifier is None:
        result.notes.append("signatures not checked (no --key, --public-key or --kms-key)")
    else:
        result.notes.append(f"signatures checked with {verifier.description}")
    if not walk.check_locks:
        result.notes.append(f"retention not checked: {walk.store.uri} is not WORM")
