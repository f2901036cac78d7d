"""Store I/O for reading the trail: the head by probing, then only the slots a question needs.

``Chain.find_head`` probes for the head (a few dozen requests at any length); single slots are
read with ``Chain.read_slot`` (the oldest version wins, as for appenders and verify); whole
streams are listed once and their winners fetched in parallel with verify's reader. A slot
that cannot be read becomes a row with an ``error``, never an exception: a junk or burned slot
must not hide the records around it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from tfaudit_ci.chain import Chain
from tfaudit_ci.errors import PreflightError, TfauditError
from tfaudit_ci.record import chain_prefix
from tfaudit_ci.record_limits import MAX_RECORD_BYTES
from tfaudit_ci.stores.base import Store, VersionInfo
from tfaudit_ci.trail.cache import RecordCache, links_to
from tfaudit_ci.trail.model import RunRow, row_from_bytes
from tfaudit_ci.verify.layout import split_listing
from tfaudit_ci.verify.model import Fetched
from tfaudit_ci.verify.reader import Reader, parallel_map, reader_for

if TYPE_CHECKING:
    from tfaudit_ci.config import Config

_T = TypeVar("_T")
DEFAULT_PARALLELISM = 16
# Chain keys are ``chain/{seq:012d}.json``: a 10-digit prefix names a block of 100 slots.
SEQ_DIGITS = 12
BLOCK_DIGITS = 2
BLOCK = 10**BLOCK_DIGITS
# Past this many records newer than the cache, one listing beats reading slot by slot.
MAX_UNCACHED = 2_000
# Output logs are read whole (to embed, or to find what an apply changed) up to this size;
# a larger one is only hashed.
LOG_KEEP = 4 << 20


@dataclass(frozen=True)
class SlotRead:
    """The winning version of one chain slot, as read."""

    seq: int
    version_id: str | None
    data: bytes | None
    row: RunRow


def store_call(action: str, call: Callable[[], _T]) -> _T:
    """Run a store call that the whole command depends on; failures get a clear error."""
    try:
        return call()
    except TfauditError:
        raise
    except Exception as exc:
        from tfaudit_ci.stores.s3_errors import describe

        summary, fix = describe(exc, action)
        raise PreflightError(summary, fix=fix) from None


class TrailReader:
    def __init__(
        self, store: Store, stream: str, *, parallelism: int = DEFAULT_PARALLELISM
    ) -> None:
        self.store = store
        self.stream = stream
        self.parallelism = parallelism
        self.chain = Chain(store, stream)
        self._reader: Reader | None = None
        self.cached = 0  # records answered from the local cache (trail.cache)

    @property
    def _fetcher(self) -> Reader:
        """verify's reader (on S3 a second client), made only when a question needs it."""
        if self._reader is None:
            reader = reader_for(self.store, self.parallelism)
            from tfaudit_ci.stores.s3 import S3Store

            if isinstance(self.store, S3Store):
                from tfaudit_ci.trail.presigned import PresignedReader

                reader = PresignedReader(self.store, reader, self.parallelism)
            self._reader = reader
        return self._reader

    def head(self) -> int:
        """The highest written seq (-1 for an empty stream): ``Chain.find_head``'s answer,
        with its probes made ``parallelism`` at a time (a handful of round trips)."""
        return store_call(
            f"finding the head of stream {self.stream!r} in {self.store.uri}",
            lambda: parallel_probe_head(self._taken, self.parallelism),
        )

    def _taken(self, seq: int) -> bool:
        return self.store.slot_taken(self.chain.key(seq))

    def slot(self, seq: int) -> SlotRead:
        try:
            found = self.chain.read_slot(seq)
        except Exception as exc:  # one unreadable slot is a row, not the end of the command
            message = f"{type(exc).__name__}: {exc}"[:300]
            return SlotRead(seq, None, None, row_from_bytes(seq, None, message))
        if found is None:
            return SlotRead(seq, None, None, row_from_bytes(seq, None, "the slot is empty"))
        if found.data is None:
            row = row_from_bytes(seq, None, _too_large(found.size))
            return SlotRead(seq, found.version_id, None, row)
        return SlotRead(seq, found.version_id, found.data, row_from_bytes(seq, found.data))

    def slots(self, seqs: list[int]) -> list[SlotRead]:
        """Several slots, in the order asked: slot keys share decimal prefixes, so one listing
        of ``chain/NNNNNNNNNN`` finds the winners of up to 100 consecutive slots; then one
        read per slot, all in parallel."""
        if len(seqs) <= 2:
            return [self.slot(seq) for seq in seqs]
        blocks = sorted({seq // BLOCK for seq in seqs})

        def winners(block: int) -> dict[int, VersionInfo | None]:
            prefix = f"{chain_prefix(self.stream)}{block:0{SEQ_DIGITS - BLOCK_DIGITS}d}"
            try:
                listing = split_listing(self.stream, self._fetcher.list_versions(prefix))
            except Exception:
                return {}  # read those slots one by one instead
            return {seq: slot.winner for seq, slot in listing.slots.items()}

        found: dict[int, VersionInfo | None] = {}
        for part in parallel_map(winners, blocks, self.parallelism):
            found.update(part)

        def read(seq: int) -> SlotRead:
            if seq not in found:
                return self.slot(seq)  # not listed: absent, or its block failed to list
            winner = found[seq]
            if winner is None:
                return SlotRead(seq, None, None, row_from_bytes(seq, None, "only delete markers"))
            fetched = self._fetcher.fetch(winner.key, winner.version_id, keep=MAX_RECORD_BYTES)
            return SlotRead(seq, winner.version_id, fetched.data, _row(seq, fetched))

        return parallel_map(read, seqs, self.parallelism)

    def newest_first(self, head: int, *, batch: int = 32, stop: int = 0) -> Iterator[SlotRead]:
        """Slots from ``head`` down to ``stop``, read a batch at a time in parallel."""
        upper = head
        while upper >= stop:
            lower = max(stop, upper - batch + 1)
            yield from self.slots(list(range(upper, lower - 1, -1)))
            upper = lower - 1
            batch = min(batch * 2, 512)

    def all_slots(
        self, first: int = 0, last: int | None = None, *, cache: RecordCache | None = None
    ) -> list[SlotRead]:
        """The slots from ``first`` to ``last`` (default: all).

        With a ``cache`` that the chain vouches for (``trail.cache``), only the records after
        the cached ones are read; otherwise every slot up to the head, a listing per block of
        100 slots and one read per slot, in parallel. (Records stranded after a gap, which
        appenders cannot see either, are ``verify``'s business: it reports them.)
        """
        cached = cache.load() if cache is not None else {}
        slots = self._from_cache(cached, first, last) if cached else None
        if slots is None:
            slots = self._listed(first, last)
        if cache is not None:
            fresh = [(s.seq, s.version_id, s.data) for s in slots if s.seq not in cached]
            cache.save([*((seq, v, d) for seq, (v, d) in cached.items()), *fresh])
        return slots

    def _from_cache(
        self, cached: dict[int, tuple[str, bytes]], first: int, last: int | None
    ) -> list[SlotRead] | None:
        """The slots, the cached ones vouched for by the live chain; None when it does not."""
        head = self.head()
        top = max(cached)
        if top > head or head - top > MAX_UNCACHED:
            return None
        newer = self.slots(list(range(top + 1, head + 1)))
        if newer:
            anchor = newer[0].data
            vouched = anchor is not None and links_to(anchor, cached[top][1], top + 1)
        else:
            vouched = self.slot(top).data == cached[top][1]
        if not vouched:
            return None
        upper = head if last is None else min(last, head)
        self.cached = sum(1 for seq in cached if first <= seq <= upper)
        found = [
            SlotRead(seq, version, data, row_from_bytes(seq, data))
            for seq, (version, data) in sorted(cached.items())
            if first <= seq <= upper
        ]
        return found + [s for s in newer if first <= s.seq <= upper]

    def _listed(self, first: int, last: int | None) -> list[SlotRead]:
        head = self.head()
        upper = head if last is None else min(last, head)
        return self.slots(list(range(first, upper + 1)))

    def list_versions(self, prefix: str) -> list[VersionInfo]:
        """Every version and delete marker under ``prefix`` (each key's oldest first)."""
        return list(self._fetcher.list_versions(prefix))

    def fetch(self, key: str, version_id: str, *, keep: int) -> Fetched:
        """One version: its server state, digest and its bytes when at most ``keep``."""
        return self._fetcher.fetch(key, version_id, keep=keep)


# Speculation per round: each probe costs the server work, each round a round trip. Four
# ladder rungs and two bisection levels (3 probes) per round: 13 round trips and ~44 probes
# for 100,000 records, against 34 and 34 for the sequential search.
LADDER_CHUNK = 4
BISECT_DEPTH = 2


def parallel_probe_head(taken: Callable[[int], bool], width: int) -> int:
    """The seq ``Chain.find_head`` finds, with speculative probes made in parallel.

    ``find_head`` probes 0, 1, 3, 7, ... (2**k - 1) until a slot is free, then bisects
    between the last taken and the first free probe. Here the ladder is probed a few rungs at
    a time, and each bisection round probes every midpoint the next halvings could need:
    fewer round trips, the same answer.
    """
    ladder = [0] + [2**k - 1 for k in range(1, 63)]
    chunk = max(1, min(width, LADDER_CHUNK))
    low = high = -1
    for start in range(0, len(ladder), chunk):
        rungs = ladder[start : start + chunk]
        free = [r for r, t in zip(rungs, parallel_map(taken, rungs, width), strict=True) if not t]
        if free:
            high = free[0]
            low = ladder[ladder.index(high) - 1] if high > 0 else -1
            break
    if high <= 0:
        return -1 if high == 0 else ladder[-1]
    depth = max(1, min(BISECT_DEPTH, (max(width, 1) + 1).bit_length() - 1))
    while high - low > 1:
        mids: list[int] = []
        frontier = [(low, high)]
        for _ in range(depth):
            following = []
            for lo, hi in frontier:
                if hi - lo > 1:
                    mid = (lo + hi) // 2
                    mids.append(mid)
                    following += [(lo, mid), (mid, hi)]
            frontier = following
        answers = dict(zip(mids, parallel_map(taken, mids, width), strict=True))
        for _ in range(depth):
            if high - low <= 1:
                break
            mid = (low + high) // 2
            low, high = (mid, high) if answers[mid] else (low, mid)
    return low


def _row(seq: int, fetched: Fetched) -> RunRow:
    if fetched.data is not None:
        return row_from_bytes(seq, fetched.data)
    if fetched.error is not None:
        return row_from_bytes(seq, None, f"cannot be read: {fetched.error}")
    if fetched.state is None:
        return row_from_bytes(seq, None, "vanished while reading")
    return row_from_bytes(seq, None, _too_large(fetched.size))


def _too_large(size: int | None) -> str:
    return f"{size or 0:,} bytes, over the {MAX_RECORD_BYTES:,}-byte cap for a record: not read"


def open_reader(config: Config, env: Mapping[str, str], *, parallelism: int) -> TrailReader:
    """The configured store and stream (the same ``--store``/``--stream``/config as ``run``
    and ``verify``), ready to read."""
    from tfaudit_ci.ci import resolve_stream
    from tfaudit_ci.errors import ConfigError
    from tfaudit_ci.stores import open_store

    if not 1 <= parallelism <= 256:
        raise ConfigError(f"--parallelism {parallelism} is out of range", fix="use 1..256")
    store = open_store(config.require_store(), config.store_options())
    return TrailReader(
        store, resolve_stream(config.stream, env, Path.cwd()), parallelism=parallelism
    )
