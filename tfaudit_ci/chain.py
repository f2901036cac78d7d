"""Appending to the hash chain with create-only writes (docs/record-format.md, "Chain
protocol" and "Burned slots").

The head is found from the head hint (``head_hint.py``): the appender lists the versions of
the hinted slot, the one below and the one above in a single listing (where the store lists by
any key prefix), and starts probing there (``slots.probe_head``). Without a usable hint it
probes from scratch, a few dozen requests at 100,000 records. A slot's record is its oldest
version (``slots.winner``). The hint is never trusted for more than where to start: the head
it leads to must be taken, the slot above it free, and the walk down to the predecessor must
cross no free slot; otherwise the appender probes from scratch.

The writer never chains onto something that is not a valid record of its stream. Walking
back from the head, it judges each slot with verify's own checks (size cap, strict and
canonical JSON, its stream and seq, its ``prev`` against the slot it names and, with a
signing key, its signature); the first slot that holds up is the predecessor. Every taken
slot above it is *burned*: the new record goes to the next free slot after the head, links
``prev`` to the predecessor and lists the burned slots (``burned: [{seq, sha256}]``), so one
junk object can never block a stream, and verify reports each burned slot as tampering.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from tfaudit_ci import head_hint, slots
from tfaudit_ci.canonical import sha256_hex
from tfaudit_ci.errors import UploadError
from tfaudit_ci.record import (
    CHAIN_BLOCK,
    MAX_SEQ,
    chain_block_prefix,
    chain_key,
    chain_prefix,
    seq_from_chain_key,
)
from tfaudit_ci.record_limits import MAX_BURNED, MAX_RECORD_BYTES, WRITE_LIMIT, fit_record
from tfaudit_ci.signing import Signer, Verifier, sign_record
from tfaudit_ci.stores.base import Lock, Store, StoredObject, VersionInfo
from tfaudit_ci.verify import checks
from tfaudit_ci.verify.model import Code, Problem, error

MAX_APPEND_TRIES = 64
# How far back from the head to look for a record a run already appended (a killed run's
# `recover`, or a retry after a lost answer).
DUPLICATE_LOOKBACK = 32
# After this many free slots in a row while walking back, list the chain instead of probing.
FREE_RUN_BEFORE_LISTING = 64
# Records that fail only their signature (a key newly configured, or rotated) are chained
# onto when no record this many slots further down verifies with the key either.
KEY_CHANGE_SCAN = 32
_SIGNATURE_CODES = {Code.SIGNATURE, Code.SIGNATURE_UNCHECKED}
# One page of a block listing: 100 slots leave room for 900 extra versions or stray keys;
# a block holding more (junk written to slow appenders down) is not listed at all.
BLOCK_LISTING_LIMIT = 1000
__all__ = ["MAX_SEQ", "Appended", "Chain", "Link", "Slot"]


@runtime_checkable
class PrefixListing(Protocol):
    """A store that lists the versions under any key prefix (not only under folders): one
    listing of a block prefix shows up to 100 slots; None when there are over ``limit``."""

    def list_versions_under(self, prefix: str, limit: int) -> list[VersionInfo] | None: ...


@dataclass(frozen=True)
class Slot:
    """A slot's winning version; ``data`` is None when it is over the record size cap."""

    seq: int
    version_id: str
    data: bytes | None
    sha256: str
    size: int


@dataclass(frozen=True)
class Link:
    """Where a new record goes and what it chains onto."""

    seq: int
    prev: dict[str, Any] | None  # {"seq", "sha256"} of the predecessor, None when there is none
    prev_record: dict[str, Any] | None
    burned: list[dict[str, Any]] = field(default_factory=list)  # [{"seq", "sha256"}]


# Link -> the unsigned record (the chain fits it to the size limit and signs it)
RecordBuilder = Callable[[Link], dict[str, Any]]


@dataclass
class _Verdict:
    seq: int
    taken: bool
    slot: Slot | None
    record: dict[str, Any] | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.slot is not None and self.record is not None and not self.problems

    @property
    def signature_only(self) -> bool:
        """Valid but for its signature (unsigned, or signed by another key)."""
        codes = {p.code for p in self.problems}
        return self.record is not None and bool(codes) and codes <= _SIGNATURE_CODES


@dataclass
class _Walk:
    """The predecessor found walking down from a head, and the taken slots above it."""

    pred: _Verdict | None
    burned: list[_Verdict]
    hole: bool = False  # stopped at a free slot (asked to, for a head found from the hint)


@dataclass(frozen=True)
class Appended:
    slot: Slot
    stored: StoredObject
    burned: list[dict[str, Any]]  # what this append skipped
    reasons: dict[int, str]  # burned seq -> why the slot was not a valid record


class Chain:
    def __init__(self, store: Store, stream: str, verifier: Verifier | None = None) -> None:
        self.store = store
        self.stream = stream
        self.verifier = verifier
        self.probes = 0  # slot probes made, for benchmarks and tests
        self.hinted: int | None = None  # the seq the head hint named, when one was read
        self._verdicts: dict[int, _Verdict] = {}  # a slot's winner never changes
        self._slots: dict[int, Slot | None] = {}
        # Versions of slots seen in block listings. A taken slot stays taken; a free one
        # may be taken any moment, so free entries are forgotten after losing a slot.
        self._listed: dict[int, list[VersionInfo]] = {}

    def key(self, seq: int) -> str:
        return chain_key(self.stream, seq)

    def _taken(self, seq: int) -> bool:
        if seq > MAX_SEQ:
            return False  # not a key of the chain, whatever an attacker stored there
        if seq in self._listed:
            return bool(self._listed[seq])
        self.probes += 1
        return self.store.slot_taken(self.key(seq))

    def _versions(self, seq: int) -> list[VersionInfo]:
        if seq in self._listed:
            return self._listed[seq]
        return self.store.versions(self.key(seq))

    def _list_blocks(self, seqs: Iterable[int]) -> None:
        """One listing per 100-slot block holding ``seqs``, remembered for every slot of it;
        nothing on a store without prefix listings (then each slot is asked on its own)."""
        if not isinstance(self.store, PrefixListing):
            return
        for block in sorted({seq // CHAIN_BLOCK for seq in seqs if 0 <= seq <= MAX_SEQ}):
            listed = self.store.list_versions_under(
                chain_block_prefix(self.stream, block * CHAIN_BLOCK), BLOCK_LISTING_LIMIT
            )
            if listed is None:
                continue  # flooded with versions or junk keys: ask slot by slot instead
            found: dict[int, list[VersionInfo]] = {}
            for info in listed:
                seq = seq_from_chain_key(self.stream, info.key)
                if seq is not None:
                    found.setdefault(seq, []).append(info)
            first = block * CHAIN_BLOCK
            for seq in range(first, min(first + CHAIN_BLOCK, MAX_SEQ + 1)):
                self._listed[seq] = found.get(seq, [])

    def _forget_free(self) -> None:
        """Drop what was known about free slots (another writer may have taken them)."""
        self._listed = {seq: found for seq, found in self._listed.items() if found}
        self._slots = {seq: slot for seq, slot in self._slots.items() if slot is not None}
        self._verdicts = {seq: v for seq, v in self._verdicts.items() if v.taken}

    def find_head(self, known_taken: int = -1) -> int:
        """Highest seq whose slot was ever written, or -1 for an empty stream."""
        return slots.probe_head(self._taken, known_taken)

    def hinted_head(self) -> int | None:
        """The head found upwards from the head hint; None when there is no hint or its slot
        is free (a hint ahead of the chain: the caller probes from scratch)."""
        hint = head_hint.read(self.store, self.stream)
        self.hinted = hint
        if hint is None:
            return None
        self._list_blocks((hint - 1, hint, hint + 1))
        if not self._taken(hint):
            return None
        return self.find_head(hint)

    def read_slot(self, seq: int) -> Slot | None:
        """The winner of a slot (None when it has no real version), read with bounded memory."""
        if seq not in self._slots:
            self._slots[seq] = self._read(seq)
        return self._slots[seq]

    def _read(self, seq: int) -> Slot | None:
        from tfaudit_ci.verify.reader import CHUNK, digest_chunks

        key = self.key(seq)
        winner = slots.winner(self._versions(seq))
        if winner is None:
            return None
        chunks = self.store.iter_version(key, winner.version_id, CHUNK)
        sha, size, data = digest_chunks(chunks, MAX_RECORD_BYTES)
        return Slot(seq, winner.version_id, data, sha, size)

    # -- judging slots -------------------------------------------------------------------------
    def judge(self, seq: int) -> _Verdict:
        """Whether slot ``seq`` holds a valid record of this stream (cached)."""
        if seq in self._verdicts:
            return self._verdicts[seq]
        slot = self.read_slot(seq)
        verdict = _Verdict(seq, slot is not None or self._taken(seq), slot)
        if slot is None:
            if verdict.taken:
                verdict.problems.append(
                    error(Code.UNREADABLE, "the slot holds no readable version", seq=seq)
                )
        else:
            verdict.record, verdict.problems = checks.decode(seq, slot.data, slot.size)
            if verdict.record is not None and not verdict.problems:
                try:
                    verdict.problems = self._content_problems(seq, slot, verdict.record)
                except Exception as exc:  # hostile content: junk, whatever the check tripped on
                    message = f"{type(exc).__name__} while checking it: {str(exc)[:200]}"
                    verdict.problems = [error(Code.INTERNAL, message, seq=seq)]
        self._verdicts[seq] = verdict
        return verdict

    def _content_problems(self, seq: int, slot: Slot, record: dict[str, Any]) -> list[Problem]:
        found = checks.location_problems(seq, slot.sha256, record, self.stream, {})
        target = checks.link_target(record)
        pred: checks.Neighbour | None = None
        if target is not None and 0 <= target < seq:
            pred = self._neighbour(target)
        found += checks.link_problems(seq, record, pred)
        if self.verifier is not None and not found:
            found += checks.signature_problems(seq, record, pred, self.verifier)
        return found

    def _neighbour(self, seq: int) -> checks.Neighbour:
        """Slot ``seq`` as its successor's checks need it (its bytes only, not its own link)."""
        slot = self.read_slot(seq)
        record = checks.decode(seq, slot.data, slot.size)[0] if slot is not None else None
        sha = slot.sha256 if slot is not None else None
        return checks.neighbour(seq, sha, record, exists=slot is not None)

    def predecessor(self, head: int) -> tuple[_Verdict | None, list[_Verdict]]:
        """(the last valid record at or below ``head`` or None, the taken slots above it
        that are burned, lowest first)."""
        walk = self._walk(head, stop_at_free=False)
        return walk.pred, walk.burned

    def _walk(self, head: int, *, stop_at_free: bool) -> _Walk:
        """``predecessor``; with ``stop_at_free``, a free slot on the way down ends the walk
        with ``hole`` set (a head found from the hint must sit on an unbroken run of slots)."""
        burned: list[_Verdict] = []
        fallback: tuple[_Verdict, list[_Verdict]] | None = None
        for seq in self._downwards(head):
            verdict = self.judge(seq)
            if verdict.valid:
                return _Walk(verdict, burned[::-1])
            if stop_at_free and not verdict.taken:
                return _Walk(None, [], hole=True)
            if verdict.signature_only and fallback is None:
                fallback = verdict, list(burned)
            if fallback is not None and fallback[0].seq - seq >= KEY_CHANGE_SCAN:
                break  # nothing below verifies with this key either: a new or rotated key
            if verdict.taken:
                burned.append(verdict)
                if len(burned) > MAX_BURNED:
                    raise UploadError(
                        f"stream {self.stream!r}: more than {MAX_BURNED} slots below seq "
                        f"{head} hold no valid record (from seq {seq} up)",
                        fix="run `tfaudit verify` on the stream: it was flooded with junk; "
                        "investigate the writers, then write to a new stream name",
                    )
        if fallback is not None:
            return _Walk(fallback[0], fallback[1][::-1])
        return _Walk(None, burned[::-1])

    def _downwards(self, head: int) -> Iterator[int]:
        """Slots from ``head`` down to 0; past a long run of free slots (junk written far
        above the chain), only the slots a listing of the chain shows."""
        seq, free = head, 0
        while seq >= 0:
            yield seq
            free = 0 if self.judge(seq).taken else free + 1
            seq -= 1
            if free >= FREE_RUN_BEFORE_LISTING:
                break
        else:
            return
        prefix = chain_prefix(self.stream)
        listed = (seq_from_chain_key(self.stream, key) for key in self.store.list_keys(prefix))
        yield from sorted((s for s in listed if s is not None and s <= seq), reverse=True)

    # -- appending -----------------------------------------------------------------------------
    def append(
        self,
        build: RecordBuilder,
        signer: Signer,
        *,
        run_folder: str,
        lock: Lock | None,
    ) -> Appended:
        hinted = self.hinted_head()
        head = self.find_head() if hinted is None else hinted
        from_hint = hinted is not None
        for _ in range(MAX_APPEND_TRIES):
            walk = self._walk(head, stop_at_free=from_hint)
            if walk.hole:
                # The hint led onto slots not joined to the chain below (a forged hint, junk
                # written far above the head): never append there; probe from scratch.
                head, from_hint = self.find_head(), False
                continue
            pred, burned = walk.pred, walk.burned
            if pred is not None and pred.valid and pred.slot and _folder(pred) == run_folder:
                # Our record is already in the chain (a second `recover` raced the first,
                # or a retry after a lost answer): never append it twice.
                return self._appended(pred.slot, [])
            seq = head + 1
            if seq > MAX_SEQ:
                raise UploadError(
                    f"stream {self.stream!r} is full: its head is the last seq ({MAX_SEQ})",
                    fix="run `tfaudit verify`: junk was written at the top of the chain; "
                    "write to a new stream name",
                )
            link = Link(
                seq,
                {"seq": pred.seq, "sha256": pred.slot.sha256} if pred and pred.slot else None,
                pred.record if pred is not None else None,
                [{"seq": v.seq, "sha256": v.slot.sha256 if v.slot else None} for v in burned],
            )
            data = sign_record(fit_record(build(link)), link.prev_record, signer)
            if len(data) > WRITE_LIMIT:
                raise UploadError(
                    f"the record for seq {seq} has {len(data):,} bytes after trimming, over "
                    f"the writer's {WRITE_LIMIT:,}-byte limit",
                    fix="report this: the record's fields should have been trimmed",
                )
            stored = self.store.put_create_only(self.key(seq), data, lock)
            if stored is not None:
                slot = Slot(seq, stored.version_id, data, sha256_hex(data), len(data))
                reasons = {v.seq: v.problems[0].message for v in burned if v.problems}
                return Appended(slot, stored, link.burned, reasons)
            # Lost the slot, or our own attempt landed and its response was lost: then the
            # slot holds exactly our bytes (a look-alike with our run folder is not ours).
            self._forget_free()
            winner = self.read_slot(seq)
            if winner is not None and winner.data == data:
                return self._appended(winner, link.burned)
            head = self.find_head(seq)
        raise UploadError(
            f"could not append to stream {self.stream!r} after {MAX_APPEND_TRIES} tries",
            fix="too many concurrent writers; retry the job",
        )

    def _appended(self, slot: Slot, burned: list[dict[str, Any]]) -> Appended:
        stored = StoredObject(self.key(slot.seq), slot.version_id, slot.sha256, slot.size)
        return Appended(slot, stored, burned, {})

    def find_run(self, run_folder: str, lookback: int) -> Slot | None:
        """The record of ``run_folder`` among the ``lookback`` slots below the head, if any:
        what ``recover`` asks before shipping a spool again."""
        head = self.find_head()
        for seq in range(head, max(-1, head - lookback), -1):
            verdict = self.judge(seq)
            if verdict.valid and verdict.slot is not None and _folder(verdict) == run_folder:
                return verdict.slot
        return None


def _folder(verdict: _Verdict) -> str | None:
    folder = verdict.record.get("run_folder") if verdict.record is not None else None
    return folder if isinstance(folder, str) else None
