"""The verification walk: list once, then check the window of the chain batch by batch, reading
records and artifacts in parallel, keeping going after every failure (CloudTrail
``validate-logs`` style).

The invariant: a record counts as valid only after every check ran on it and none failed.
Whatever could not be checked (unreadable, over the size cap, unparseable, a check that
raised) is an error on that seq. Whatever happens, ``verify_stream`` returns a complete
result: a failure outside any record (the listing, a bug) becomes a stream-level problem.

Memory is bounded by the number of objects listed plus one batch of records: records are
dropped after their batch, keeping only what their successors need (``checks.Neighbour``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tfaudit_ci import record_limits
from tfaudit_ci.identity import IDENTITY_ARTIFACT
from tfaudit_ci.identity_verify import identity_problems
from tfaudit_ci.record import chain_key, chain_prefix, utc_now
from tfaudit_ci.stores.base import Store, VersionInfo
from tfaudit_ci.verify import checks, layout
from tfaudit_ci.verify.model import (
    ERROR,
    ChainTip,
    CheckedRecord,
    Code,
    Fetched,
    Problem,
    VerifyOptions,
    VerifyResult,
    error,
    warning,
)
from tfaudit_ci.verify.reader import EVIDENCE_LIMIT, WalkReader, parallel_map, walk_reader_for

if TYPE_CHECKING:
    from tfaudit_ci.verify.witness import WitnessCheck

# Codes that replace a burned slot's own findings (they describe the slot, not its content).
_SLOT_LEVEL = {Code.GAP, Code.AFTER_HEAD, Code.DELETED, Code.DELETE_MARKER}


@dataclass
class _Info:
    """One slot's winning version as read: small, kept for the whole walk."""

    seq: int
    fetched: Fetched  # without its bytes once its batch is done
    problems: list[Problem]  # what is wrong with its bytes (decode)
    link: checks.Neighbour  # what a successor needs
    target: int | None = None  # the seq its prev names (-1: null; None: malformed/unparsed)
    burned: dict[int, str | None] = field(default_factory=dict)
    run_folder: str | None = None
    trusted: bool = False  # holds up as a link of the chain: may pin objects, burn slots
    record: dict[str, Any] | None = None  # held only while its batch is checked


@dataclass
class _Extra:
    """A later version of a slot, summarised."""

    seq: int
    version_id: str
    same_bytes: bool
    run_folder: str | None


def verify_stream(
    store: Store, options: VerifyOptions, witness: WitnessCheck | None = None
) -> VerifyResult:
    """Verify ``options.stream`` in ``store``, and cross-check it against ``witness``
    (docs/witness.md); never raises for anything the store holds."""
    result = VerifyResult(store=store.uri, stream=options.stream)
    walk = _Walk(store, options, result, witness)
    try:
        walk.run()
    except Exception as exc:  # a bug outside any record: still a complete report
        result.problems.append(
            error(
                Code.INTERNAL,
                f"verify stopped early: {type(exc).__name__}: {str(exc)[:300]} (re-run with -v "
                "and report it)",
                traceback=traceback.format_exc(),
            )
        )
    finally:
        walk.close()
    walk.finish()
    return result


class _Walk:
    def __init__(
        self,
        store: Store,
        options: VerifyOptions,
        result: VerifyResult,
        witness: WitnessCheck | None = None,
    ) -> None:
        self.store = store
        self.witness = witness
        self.options = options
        self.result = result
        self.reader: WalkReader = walk_reader_for(store, options.parallelism)
        self.now = options.now or utc_now()
        self.check_locks = (
            store.lock_readback if options.check_locks is None else options.check_locks
        )
        self.listing = layout.Layout(options.stream)
        self.infos: dict[int, _Info] = {}
        self.superseded: dict[int, dict[str, str]] = {}  # seq -> {sha256: version id}
        self.extras: list[_Extra] = []
        self.extras_read: set[int] = set()
        self.copies: dict[str, int] = {}  # record sha256 -> lowest slot holding those bytes
        self.record_problems: dict[int, list[Problem]] = {}
        self.burned_by: dict[int, tuple[int, str | None, bool]] = {}  # slot -> (by, sha, listed)
        self.folders: dict[str, int] = {}  # run folder -> the last trusted record naming it
        self.referenced: set[str] = set()  # run folders any record in the window names
        self.pins: dict[str, set[tuple[str, str]]] = {}  # run folder -> pinned (key, version)
        self.window: list[int] = []
        self.checked: set[int] = set()  # window seqs every check ran on
        self.low = 0
        self.high = -1
        self.listed = False
        self.completed = False  # every check of the walk ran (else no record counts as valid)
        self.runs_from: str | None = None  # incremental: where the run folders were listed from
        self.pool: ThreadPoolExecutor | None = None  # while the batches run
        # the listing after the chain, still under way (``_list_chain_first``)
        self.rest: Future[list[VersionInfo]] | None = None
        self.rest_first: VersionInfo | None = None
        self.background: ThreadPoolExecutor | None = None
        self.prefetched: dict[int, Future[tuple[int, Fetched]]] = {}

    # -- the walk ------------------------------------------------------------------------------
    def run(self) -> None:
        stream = self.options.stream
        tip = self.options.checkpoint
        # Compile the record schema (about a second of CPU) while the stream is listed.
        threading.Thread(target=_warm_schema, name="tfaudit-schema", daemon=True).start()
        try:
            versions = self._list_chain_first() if tip is None else self._list_after(tip)
            self.listing = layout.split_listing(stream, versions)
            unsafe = self.reader.unsafe_entries(f"{stream}/")
        except Exception as exc:
            self.result.problems.append(_list_failed(exc, stream, self.store.uri))
            return
        self.listed = True
        for key, why in unsafe:
            self.result.problems.append(error(Code.SYMLINK, why, key=key))
        listing = self.listing
        start = tip.seq if tip is not None and tip.seq in listing.slots else -1
        self.result.head = listing.head(start)
        if tip is not None:
            self._from_checkpoint(tip)
        if not listing.slots:
            if tip is None:
                self.result.problems.append(
                    error(Code.EMPTY, f"stream {stream!r} has no records in {self.store.uri}")
                )
            self._witness()
            return
        if tip is None:
            self.low, self.high = self._window()
        else:
            self.low, self.high = tip.seq + 1, listing.present[-1]
        self.window = listing.between(self.low, self.high)
        if self.window:
            self.result.first_seq, self.result.last_seq = self.window[0], self.window[-1]
        self.result.problems.extend(
            layout.slot_problems(listing, self.low, self.high, self.result.head)
        )
        with_record = [seq for seq in self.window if listing.slots[seq].winner is not None]
        size = max(1, self.options.batch_size)
        batches = [with_record[start : start + size] for start in range(0, len(with_record), size)]
        workers = max(1, self.options.parallelism)
        with ThreadPoolExecutor(workers, thread_name_prefix="tfaudit-verify") as pool:
            self.pool = pool
            try:
                for number, batch in enumerate(batches):
                    if number + 1 < len(batches):
                        self._prefetch(batches[number + 1])
                    self._batch(batch)
            finally:
                self.pool = None
                for future in self.prefetched.values():
                    future.cancel()
                self.prefetched = {}
        if tip is not None and with_record:
            self._continues(tip, with_record)
        self._burned()
        self._extra_versions()
        referenced = self.referenced | {e.run_folder for e in self.extras if e.run_folder}
        self._rest_of_listing()
        if tip is not None:
            self._list_folders(sorted(self.pins))
        for folder, pins in sorted(self.pins.items()):
            self.result.problems.extend(
                layout.unpinned_problems(listing, folder, pins, self.folders.get(folder))
            )
        since = self.options.since
        if tip is not None:
            # Run folders before the checkpoint's record were looked at by the verify that
            # wrote it (docs/verify.md, "Incremental verify").
            anchor = self.infos.get(tip.seq)
            if anchor is not None and anchor.run_folder is not None:
                referenced.add(anchor.run_folder)
            since = anchor.link.started_at if anchor is not None else None
        self.result.problems.extend(
            layout.orphan_problems(listing, referenced, since, self.options.until)
        )
        self.result.problems.extend(self._max_age())
        self._witness()
        self.completed = True

    # -- incremental verify --------------------------------------------------------------------
    def _list_chain_first(self) -> list[VersionInfo]:
        """The listing of the stream up to the end of its chain; what sorts after the chain
        (the run folders: most of the objects) goes on being listed in the background while
        the records are checked, and joins the listing in ``_rest_of_listing``."""
        stream = self.options.stream
        chain = chain_prefix(stream)
        listed = iter(self.reader.list_versions(f"{stream}/"))
        found: list[VersionInfo] = []
        for version in listed:
            if version.key > chain and not version.key.startswith(chain):
                self.rest_first = version
                self.background = ThreadPoolExecutor(1, thread_name_prefix="tfaudit-list")
                self.rest = self.background.submit(list, listed)
                break
            found.append(version)
        return found

    def _rest_of_listing(self) -> None:
        """Join what ``_list_chain_first`` left to the background: run folders and stray keys
        (a listing is in key order: nothing in it can be a chain slot)."""
        if self.rest is None or self.rest_first is None:
            return
        stream = self.options.stream
        try:
            rest = layout.split_listing(stream, [self.rest_first, *self.rest.result()])
        except Exception as exc:
            self.result.problems.append(_list_failed(exc, stream, self.store.uri))
            return
        finally:
            self.close()
        if rest.slots:
            raise RuntimeError("the store listed chain slots out of key order")
        listing = self.listing
        listing.artifacts.update(rest.artifacts)
        listing.artifact_keys = sorted(listing.artifacts)
        self.result.problems.extend(layout.stray_problems(rest.stray))
        listing.stray = sorted([*listing.stray, *rest.stray])

    def close(self) -> None:
        """Stop waiting for a background listing (an early end of the walk)."""
        self.rest = None
        if self.background is not None:
            self.background.shutdown(wait=False, cancel_futures=True)
            self.background = None

    def _list_after(self, tip: ChainTip) -> list[VersionInfo]:
        """What an incremental verify lists: the chain from the checkpoint's slot on (every
        slot after it, however far: what catches objects planted ahead), and the run folders
        from the checkpoint record's time, less ``--max-overlap``, on; each listing starts
        at a key, so it costs what was written since, not the stream's size."""
        stream = self.options.stream
        after = chain_key(stream, tip.seq - 1) if tip.seq > 0 else None
        found = list(self.reader.list_versions(chain_prefix(stream), after=after))
        self.listing = layout.split_listing(stream, found)
        self._load([tip.seq])
        anchor = self.infos.get(tip.seq)
        started = anchor.link.started_at if anchor is not None else None
        if started is not None:
            stamp = (started - self.options.max_overlap).strftime("%Y%m%dT%H%M%S")
            self.runs_from = f"{stream}/runs/{stamp}"
        found += self.reader.list_versions(f"{stream}/runs/", after=self.runs_from)
        return found

    def _list_folders(self, folders: Iterable[str]) -> None:
        """List the run folders of new records that sort before what ``_list_after`` listed
        (a record may claim an early start), so that each one's objects are all seen."""
        stream, listing = self.options.stream, self.listing
        for folder in folders:
            prefix = f"{stream}/runs/{folder}/"
            if self.runs_from is None or prefix > self.runs_from:
                continue
            for version in self.reader.list_versions(prefix):
                listing.artifacts.setdefault(version.key, []).append(version)
        listing.artifact_keys = sorted(listing.artifacts)

    def _from_checkpoint(self, tip: ChainTip) -> None:
        """The checkpoint's slot still holds the version and the record it names, and nothing
        was written to the slot since (its record was read while listing)."""
        head = self.result.head
        found: list[str] = []
        slot = self.listing.slots.get(tip.seq)
        info = self.infos.get(tip.seq)
        if slot is None or slot.winner is None:
            found.append("the slot holds no record")
        elif head is not None and tip.seq > head:
            found.append(f"the slot lies beyond the head (seq {head})")
        else:
            if slot.winner.version_id != tip.version_id:
                found.append(
                    f"its winning version is {slot.winner.version_id}, not {tip.version_id}"
                )
            if info is None or info.fetched.sha256 != tip.sha256:
                sha = info.fetched.sha256 if info is not None else None
                found.append(f"its record hashes to {sha}, not {tip.sha256}")
            elif info.link.signature is None or dict(info.link.signature) != dict(
                tip.signature or {}
            ):
                found.append("its record's signature differs from the checkpoint's")
            if len(slot.versions) != tip.slot_versions:
                found.append(
                    f"the slot holds {len(slot.versions)} versions and delete markers, "
                    f"{tip.slot_versions} when the checkpoint was written: it was written to "
                    "since"
                )
        self.result.problems.extend(
            error(
                Code.CHECKPOINT,
                f"the checkpoint does not match the chain: {text} (run a full verify "
                "without --checkpoint)",
                seq=tip.seq,
                key=chain_key(self.options.stream, tip.seq),
            )
            for text in found
        )

    def _continues(self, tip: ChainTip, seqs: list[int]) -> None:
        """The link across: a record that holds up continues from the checkpoint, and none
        reaches back over it (what it skipped was verified as valid)."""
        trusted = [seq for seq in seqs if seq in self.infos and self.infos[seq].trusted]
        for seq in trusted:
            target = self.infos[seq].target
            if target is not None and target < tip.seq:
                self.result.problems.append(
                    error(
                        Code.CHECKPOINT,
                        f"its prev (seq {target}) reaches back over the checkpoint at seq "
                        f"{tip.seq}",
                        seq=seq,
                    )
                )
        if not any(self.infos[seq].target == tip.seq for seq in trusted):
            self.result.problems.append(
                error(
                    Code.CHECKPOINT,
                    f"no valid record continues from the checkpoint at seq {tip.seq}",
                    seq=seqs[0],
                )
            )

    def tip(self) -> ChainTip | None:
        """The last record verified, as a checkpoint holds it (None when it was not read)."""
        present = [seq for seq in self.listing.present if self.listing.slots[seq].winner]
        if not present:
            return None
        last = present[-1]
        info = self.infos.get(last)
        winner = self.listing.slots[last].winner
        if info is None or winner is None or info.fetched.sha256 is None:
            return None
        signature = info.link.signature
        return ChainTip(
            last,
            info.fetched.sha256,
            winner.version_id,
            dict(signature) if signature is not None else None,
            len(self.listing.slots[last].versions),
        )

    def _witness(self) -> None:
        """The chain against its witness's checkpoints (and --head-from), by record hash."""
        if self.witness is None:
            return
        from tfaudit_ci.verify.witness import ChainFacts

        present = {seq for seq, slot in self.listing.slots.items() if slot.winner is not None}
        tip = self.options.checkpoint
        if tip is not None:  # the verify that wrote it found every slot up to it in place
            present.update(range(tip.seq + 1))
        shas = {
            seq: info.fetched.sha256
            for seq, info in self.infos.items()
            if info.fetched.sha256 is not None
        }
        findings = self.witness.check(ChainFacts(frozenset(present), shas, list(self.window)))
        self.result.problems.extend(findings.problems)
        self.result.notes.extend(findings.notes)

    def finish(self) -> None:
        """Counts and notes, from whatever the walk got through."""
        for problems in self.record_problems.values():
            self.result.problems.extend(problems)
        self.record_problems = {}
        listing, result = self.listing, self.result
        invalid = {p.seq for p in result.errors if p.seq is not None}
        head = result.head if result.head is not None else -1
        if self.listed and listing.slots:
            result.records_total = len(self.window) + layout.missing_count(
                listing, self.low, self.high
            )
            result.records_valid = sum(
                1
                for seq in self.window
                if self.completed and seq not in invalid and seq <= head and seq in self.checked
            )
        verifier = self.options.verifier
        if verifier is None:
            result.notes.append("signatures not checked (no --key, --public-key or --kms-key)")
        else:
            result.notes.append(f"signatures checked with {verifier.description}")
        windowed = self.options.since is not None or self.options.until is not None
        if self.completed and result.ok and not windowed:
            result.tip = self.tip()
        result.requests = self.reader.requests
        if self.options.lock_note:
            result.notes.append(self.options.lock_note)
        elif not self.check_locks:
            result.notes.append(f"retention not checked: {self.store.uri} is not WORM")

    # -- reading -------------------------------------------------------------------------------
    def _load(self, seqs: Iterable[int], *, records: bool = False) -> None:
        """Read (in parallel) the winners of the listed slots among ``seqs`` not read yet;
        with ``records``, read again those whose parsed record was already dropped."""
        wanted = []
        for seq in set(seqs):
            slot = self.listing.slots.get(seq)
            if slot is None or slot.winner is None:
                continue
            info = self.infos.get(seq)
            if info is None or (records and info.record is None and info.link.parsed):
                wanted.append(seq)
        wanted.sort()

        ready = {seq: self.prefetched.pop(seq) for seq in wanted if seq in self.prefetched}
        rest = [seq for seq in wanted if seq not in ready]
        if self.pool is not None:  # the batches' pool: --parallelism reads in flight in all
            ready.update((seq, self.pool.submit(self._read_slot, seq)) for seq in rest)
            rest = []
        for seq, fetched in parallel_map(self._read_slot, rest, self.options.parallelism):
            self.infos[seq] = self._info(seq, fetched)
        for seq, future in ready.items():
            self.infos[seq] = self._info(seq, future.result()[1])

    def _read_slot(self, seq: int) -> tuple[int, Fetched]:
        winner = self.listing.slots[seq].winner
        assert winner is not None
        fetched = self.reader.fetch(
            winner.key, winner.version_id, keep=record_limits.MAX_RECORD_BYTES
        )
        return seq, fetched

    def _prefetch(self, seqs: list[int]) -> None:
        """Start reading the next batch's records while this one is checked (the checks
        are CPU work; the reads wait on the store)."""
        if self.pool is None:
            return
        for seq in seqs:
            slot = self.listing.slots.get(seq)
            if seq in self.infos or seq in self.prefetched or slot is None or not slot.winner:
                continue
            self.prefetched[seq] = self.pool.submit(self._read_slot, seq)

    def _info(self, seq: int, fetched: Fetched) -> _Info:
        try:
            record, problems = checks.decode_fetched(seq, fetched)
        except Exception as exc:
            record, problems = None, [checks.internal(seq, "reading the record", exc)]
        exists = fetched.state is not None
        link = checks.neighbour(seq, fetched.sha256, record, exists=exists)
        info = _Info(seq, fetched, problems, link, record=record)
        if fetched.sha256 is not None and fetched.state is not None:
            self.copies[fetched.sha256] = min(self.copies.get(fetched.sha256, seq), seq)
        if record is not None:
            info.target = checks.link_target(record)
            info.burned = checks.burned_entries(record) or {}
            folder = record.get("run_folder")
            info.run_folder = folder if isinstance(folder, str) else None
        return info

    def _time(self, seq: int) -> dt.datetime | None:
        info = self.infos.get(seq)
        return info.link.started_at if info is not None else None

    def _load_extras(self, seqs: Iterable[int]) -> None:
        """Read every later version of these slots (forks, lost races, retried writes)."""
        targets: list[tuple[int, VersionInfo]] = []
        for seq in sorted(set(seqs) - self.extras_read):
            self.extras_read.add(seq)
            slot = self.listing.slots.get(seq)
            targets.extend((seq, version) for version in (slot.extras if slot else []))
        if not targets:
            return

        def read(item: tuple[int, VersionInfo]) -> tuple[int, str, Fetched]:
            seq, version = item
            fetched = self.reader.fetch(
                version.key, version.version_id, keep=record_limits.MAX_RECORD_BYTES
            )
            return seq, version.version_id, fetched

        for seq, version_id, fetched in parallel_map(read, targets, self.options.parallelism):
            winner = self.infos.get(seq)
            same = winner is not None and fetched.sha256 == winner.fetched.sha256
            if fetched.sha256 is not None:
                self.superseded.setdefault(seq, {})[fetched.sha256] = version_id
            self.extras.append(_Extra(seq, version_id, same, checks.run_folder_of(fetched.data)))

    # -- the window ----------------------------------------------------------------------------
    def _first_not_before(self, before: Callable[[int], bool]) -> int:
        """Index of the first listed slot for which ``before`` is false (binary search: the
        chain's times are assumed to grow; the widening below covers where they do not)."""
        present = self.listing.present
        lo, hi = 0, len(present)
        while lo < hi:
            mid = (lo + hi) // 2
            self._load([present[mid]])
            if before(present[mid]):
                lo = mid + 1
            else:
                hi = mid
        return lo

    def _scan(self, indexes: range, stop: Callable[[int], bool]) -> int | None:
        """The first index in ``indexes`` whose slot satisfies ``stop`` (read in chunks)."""
        present = self.listing.present
        chunk = max(8, self.options.parallelism * 2)
        items = list(indexes)
        for start in range(0, len(items), chunk):
            part = items[start : start + chunk]
            self._load(present[i] for i in part)
            for index in part:
                if stop(present[index]):
                    return index
        return None

    def _window(self) -> tuple[int, int]:
        """[low, high] seqs to check: found by chain position, then widened so that no record
        can leave it by lying about its time (docs/verify.md, "Windows")."""
        options, present = self.options, self.listing.present
        overlap = options.max_overlap
        low, high = 0, present[-1]
        if options.since is not None:
            since = options.since

            def early(seq: int) -> bool:
                started = self._time(seq)
                return started is not None and started < since

            first = self._first_not_before(early)

            def well_before(seq: int) -> bool:
                started = self._time(seq)
                return started is not None and started < since - overlap and self._plausible(seq)

            stop = self._scan(range(first - 1, -1, -1), well_before)
            low = self._include_burned(present[stop] + 1 if stop is not None else 0)
        if options.until is not None:
            until = options.until

            def before_until(seq: int) -> bool:
                started = self._time(seq)
                return started is None or started < until

            first_after = self._first_not_before(before_until)

            def well_after(seq: int) -> bool:
                started = self._time(seq)
                return started is not None and started >= until + overlap and self._plausible(seq)

            stop = self._scan(range(first_after, len(present)), well_after)
            if stop is not None:
                high = present[stop] - 1
        return low, high

    def _plausible(self, seq: int) -> bool:
        """Whether a slot's claimed start can bound the window: a record whose time is
        inconsistent (before its predecessor's by more than the overlap, or after the store
        wrote it) is a liar, and the window grows past it so that it gets checked."""
        info = self.infos.get(seq)
        if info is None or info.record is None or info.target is None or info.target >= seq:
            return False
        pred = None
        if info.target >= 0:
            self._load([info.target])
            pred = self._neighbour(info.target)
        problems = checks.guarded(seq, "time", lambda: self._time_check(seq, info, pred))
        return not problems

    def _include_burned(self, low: int) -> int:
        """Lower ``low`` to the predecessor of the first record in the window, so that the
        slots it burned (skipped) are checked with it."""
        first = next(iter(self.listing.between(low, self.listing.present[-1])), None)
        if first is None:
            return low
        self._load([first])
        info = self.infos.get(first)
        if info is not None and info.target is not None and info.target + 1 < low:
            return max(0, info.target + 1)
        return low

    # -- one batch of records ------------------------------------------------------------------
    def _batch(self, seqs: list[int]) -> None:
        self._load(seqs, records=True)
        targets = {
            self.infos[s].target
            for s in seqs
            if s in self.infos and self.infos[s].target is not None
        }
        preds = [t for t in targets if t is not None and t >= 0]
        self._load(preds)
        self._load_extras([*seqs, *preds])
        jobs, reads = self._start_artifacts(seqs)  # read while the records are checked
        for seq in seqs:
            info = self.infos.get(seq)
            if info is None:
                continue
            self.record_problems[seq] = self._check(seq, info)
        artifacts = self._artifacts(seqs, jobs, [read() for read in reads])
        if self.options.on_record is not None:
            for seq in seqs:
                info = self.infos.get(seq)
                if info is not None:
                    read = tuple(artifacts.get(seq, ()))
                    self.options.on_record(CheckedRecord(seq, info.fetched, read))
        for seq in [*seqs, *preds]:
            info = self.infos.get(seq)
            if info is not None:
                info.record = None
                info.fetched = info.fetched.without_data()

    def _neighbour(self, seq: int) -> checks.Neighbour:
        info = self.infos.get(seq)
        if info is None:
            return checks.Neighbour(seq, False, None, None)
        link = info.link
        return checks.Neighbour(
            link.seq,
            link.exists,
            link.sha256,
            link.signature,
            link.parsed,
            link.started_at,
            link.finished_at,
            self.superseded.get(seq, {}),
        )

    def _written(self, seq: int) -> dt.datetime | None:
        winner = self.listing.slots[seq].winner
        return winner.last_modified if winner is not None else None

    def _time_check(self, seq: int, info: _Info, pred: checks.Neighbour | None) -> list[Problem]:
        assert info.record is not None
        return checks.time_problems(
            seq,
            info.record,
            pred,
            written=self._written(seq),
            max_overlap=self.options.max_overlap,
        )

    def _check(self, seq: int, info: _Info) -> list[Problem]:
        """Every check of one record, each guarded: whatever fails is an error on ``seq``."""
        self.checked.add(seq)
        problems = list(info.problems)
        record = info.record
        if record is not None:
            sha = info.fetched.sha256 or ""
            target = info.target
            pred = self._neighbour(target) if target is not None and target >= 0 else None
            problems += checks.content_problems(
                seq,
                sha,
                record,
                pred,
                stream=self.options.stream,
                copies=self.copies,
                written=self._written(seq),
                max_overlap=self.options.max_overlap,
                verifier=self.options.verifier,
            )
            # Only a record that holds up as a link may vouch for what it skipped and pin
            # what its run folder holds (a forged record must not make junk look pinned).
            info.trusted = not any(p.severity is ERROR for p in problems)
            if info.trusted and target is not None and target < seq:
                self._note_burned(seq, target, info.burned)
            if info.run_folder is not None:
                self.referenced.add(info.run_folder)
                if info.trusted:
                    self.folders[info.run_folder] = seq
        if info.fetched.state is not None and self.check_locks:
            problems += [
                error(Code.RETENTION, f"record: {text}", seq=seq)
                for text in checks.guarded_texts(
                    "retention", lambda: self._lock_texts(info.fetched, record)
                )
            ]
        return problems

    def _note_burned(self, seq: int, target: int, listed: Mapping[int, str | None]) -> None:
        """The slots a record skipped: each is evidence of tampering, reported later."""
        between = self.listing.between(target + 1, seq - 1)
        self._load(between)
        for slot in between:
            self.burned_by[slot] = (seq, listed.get(slot), slot in listed)

    def _lock_texts(self, fetched: Fetched, record: Mapping[str, Any] | None) -> list[str]:
        assert fetched.state is not None
        return checks.record_lock_problems(
            fetched.state,
            record,
            policy=self.options.policy,
            min_remaining_days=self.options.min_remaining_days,
            now=self.now,
        )

    # -- artifacts -----------------------------------------------------------------------------
    def _start_artifacts(
        self, seqs: list[int]
    ) -> tuple[list[tuple[int, Any]], list[Callable[[], Fetched | None]]]:
        """Start reading the artifacts of these records: (each record's entries, and for
        each a call that waits for its read)."""
        stream = self.options.stream
        jobs: list[tuple[int, Any]] = []
        for seq in seqs:
            info = self.infos.get(seq)
            record = info.record if info is not None else None
            if record is None:
                continue
            entries = record.get("artifacts")
            if not isinstance(entries, list):
                jobs.append((seq, None))
                continue
            jobs.extend((seq, entry) for entry in entries)

        def read(job: tuple[int, Any]) -> Fetched | None:
            seq, entry = job
            folder = self.infos[seq].run_folder
            if not isinstance(entry, Mapping) or not isinstance(entry.get("key"), str):
                return None
            key = str(entry["key"])
            if not checks.safe_key(key) or not key.startswith(f"{stream}/runs/{folder}/"):
                return None  # never read what lies outside the record's own run folder
            name = entry.get("name")
            keep = self.options.keep_artifacts.get(name, 0) if isinstance(name, str) else 0
            if name == IDENTITY_ARTIFACT:
                keep = max(keep, EVIDENCE_LIMIT)
            version = str(entry.get("version_id"))
            return self.reader.check(key, version, keep=keep, deep=self.options.deep)

        assert self.pool is not None, "batches run inside run()'s pool"
        return jobs, [self.pool.submit(read, job).result for job in jobs]

    def _artifacts(
        self, seqs: list[int], jobs: list[tuple[int, Any]], fetched: list[Fetched | None]
    ) -> dict[int, list[Fetched | None]]:
        """Check the artifacts of these records (``fetched``: the reads of ``jobs``); returns
        each record's reads, in order."""
        evidence: dict[int, bytes | None] = {}
        reads: dict[int, list[Fetched | None]] = {}
        for (seq, entry), item in zip(jobs, fetched, strict=True):
            reads.setdefault(seq, []).append(item)
            info = self.infos[seq]
            record = info.record
            found = checks.guarded_texts(
                "artifact",
                functools.partial(self._artifact_texts, info, record, entry, item),
            )
            key = str(entry.get("key")) if isinstance(entry, Mapping) else None
            name = str(entry.get("name")) if isinstance(entry, Mapping) else "?"
            folder = info.run_folder if info.trusted else None
            if isinstance(entry, Mapping) and folder is not None and key is not None:
                self.pins.setdefault(folder, set()).add((key, str(entry.get("version_id"))))
            if name == IDENTITY_ARTIFACT and item is not None and not found:
                evidence[seq] = item.data
            problems = self.record_problems.setdefault(seq, [])
            problems.extend(
                error(Code.ARTIFACT, f"{name[:80]}: {text}", seq=seq, key=key) for text in found
            )
            self.result.artifacts_total += 1
            self.result.artifacts_valid += 0 if found else 1
        for seq in seqs:
            held = self.infos.get(seq)
            if held is None or held.record is None:
                continue
            if held.run_folder is not None and held.trusted:
                self.pins.setdefault(held.run_folder, set())
            self.record_problems.setdefault(seq, []).extend(
                self._identity(seq, held.record, evidence.get(seq))
            )
        return reads

    def _artifact_texts(
        self, info: _Info, record: Mapping[str, Any] | None, entry: Any, item: Fetched | None
    ) -> list[str]:
        found = checks.artifact_problems(
            entry, item, stream=self.options.stream, run_folder=info.run_folder
        )
        if item is not None and item.state is not None and self.check_locks:
            found += self._lock_texts(item, record)
        return found

    def _identity(
        self, seq: int, record: Mapping[str, Any], evidence: bytes | None
    ) -> list[Problem]:
        summary = record.get("identity")
        if not isinstance(summary, Mapping):
            return []
        if "unavailable" in summary:
            why = str(summary["unavailable"])[:300]
            return [warning(Code.IDENTITY, f"no identity evidence: {why}", seq=seq)]
        texts = checks.guarded_texts(
            "identity",
            lambda: identity_problems(record, evidence, self.options.trusted_jwks),
        )
        return [error(Code.IDENTITY, text, seq=seq) for text in texts]

    # -- after the batches -----------------------------------------------------------------
    def _burned(self) -> None:
        """Each slot a later record skipped is one ``burned`` error: its own findings are
        folded into the message (they are why the writer skipped it)."""
        for slot, (by, listed_sha, listed) in sorted(self.burned_by.items()):
            info = self.infos.get(slot)
            own = self.record_problems.pop(slot, [])
            kept = [p for p in own if p.code in _SLOT_LEVEL or p.code is Code.RETENTION]
            reasons = [p for p in own if p.severity is ERROR and p not in kept]
            if info is None:
                reasons.append(
                    error(Code.UNREADABLE, "it holds no version that can be read", seq=slot)
                )
            why = reasons[0].message if reasons else "it looks valid to this verify"
            if not listed:
                what = f"written after seq {by} skipped it (seq {by} does not list it)"
            elif info is not None and listed_sha != info.fetched.sha256:
                what = f"holds other bytes than seq {by} saw when it skipped the slot"
            else:
                what = f"skipped by the writer of seq {by}"
            message = f"burned slot: {what}; {why}"
            if len(reasons) > 1:
                message += f" (and {len(reasons) - 1} more finding(s))"
            kept.append(error(Code.BURNED, message + ": evidence of tampering", seq=slot))
            if self.low <= slot <= self.high:
                self.record_problems[slot] = kept
            else:
                self.result.problems.extend(kept)

    def _extra_versions(self) -> None:
        by_seq: dict[int, list[_Extra]] = {}
        for extra in self.extras:
            if self.low <= extra.seq <= self.high:
                by_seq.setdefault(extra.seq, []).append(extra)
        for seq, extras in sorted(by_seq.items()):
            problems = self.record_problems.setdefault(seq, [])
            for extra in extras:
                problems.extend(
                    checks.extra_version_problems(
                        seq, extra.version_id, extra.same_bytes, extra.run_folder, self.folders
                    )
                )

    def _max_age(self) -> list[Problem]:
        limit = self.options.max_age
        with_record = [s for s in self.listing.present if self.listing.slots[s].winner]
        if limit is None or not with_record:
            return []
        head = with_record[-1]
        self._load([head])
        info = self.infos.get(head)
        finished = info.link.finished_at if info is not None else None
        when = finished or self._written(head)
        if when is None or self.now - when <= limit:
            return []
        age = self.now - when
        return [
            error(
                Code.STALE_HEAD,
                f"the newest record finished {_human(age)} ago, more than --max-age "
                f"{_human(limit)}: records after it may have been truncated (or nothing ran)",
                seq=head,
                key=chain_key(self.options.stream, head),
            )
        ]


def _warm_schema() -> None:
    """Build the record schema's validator (cached) ahead of the first record."""
    from tfaudit_ci.schemas import record_schema_problems

    with contextlib.suppress(Exception):  # a real failure shows on the first record checked
        record_schema_problems({})


def _list_failed(exc: Exception, stream: str, uri: str) -> Problem:
    from tfaudit_ci.errors import TfauditError
    from tfaudit_ci.stores.s3_errors import describe

    if isinstance(exc, TfauditError):
        text = exc.diagnostics()
    else:
        summary, fix = describe(exc, f"listing stream {stream!r} in {uri}")
        text = f"{summary} (fix: {fix})" if fix else summary
    return error(
        Code.LIST_FAILED,
        f"nothing could be verified: {text}",
        traceback="".join(traceback.format_exception(exc)),
    )


def _human(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds}s"
