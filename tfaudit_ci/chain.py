"""Appending to the hash chain with create-only writes (docs/record-format.md, "Chain protocol").

The head is found by probing (exponential, then binary search) so that appending to a stream
of 100,000 records costs a few dozen requests. Readers always read a slot's *oldest*
version: on stores that ignore ``If-None-Match`` a losing writer's version stays behind it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tfaudit_ci.canonical import sha256_hex
from tfaudit_ci.errors import UploadError
from tfaudit_ci.record import chain_key
from tfaudit_ci.stores.base import Lock, Store, StoredObject

MAX_APPEND_TRIES = 64
# How far back from the head to look for a record a run already appended (a killed run's
# `recover`, or a retry after a lost answer).
DUPLICATE_LOOKBACK = 32


@dataclass(frozen=True)
class Slot:
    seq: int
    version_id: str
    data: bytes

    @property
    def sha256(self) -> str:
        return sha256_hex(self.data)

    def record(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.data)
        return parsed

    @property
    def run_folder(self) -> str | None:
        return _run_folder(self.data)


# (seq, prev reference, previous record or None) -> the canonical, signed record bytes
RecordBuilder = Callable[[int, dict[str, Any] | None, dict[str, Any] | None], bytes]


class Chain:
    def __init__(self, store: Store, stream: str) -> None:
        self.store = store
        self.stream = stream
        self.probes = 0  # slot probes made, for benchmarks and tests

    def key(self, seq: int) -> str:
        return chain_key(self.stream, seq)

    def _taken(self, seq: int) -> bool:
        self.probes += 1
        return self.store.slot_taken(self.key(seq))

    def find_head(self, known_taken: int = -1) -> int:
        """Highest seq whose slot was ever written, or -1 for an empty stream."""
        low = known_taken  # invariant: low is taken (or -1), high is free
        if low < 0:
            if not self._taken(0):
                return -1
            low = 0
        step = 1
        high = low + step
        while self._taken(high):
            low = high
            step *= 2
            high = low + step
        while high - low > 1:
            mid = (low + high) // 2
            if self._taken(mid):
                low = mid
            else:
                high = mid
        return low

    def read_slot(self, seq: int) -> Slot | None:
        """The oldest real version of a slot (the winner), ignoring delete markers."""
        versions = [v for v in self.store.versions(self.key(seq)) if not v.is_delete_marker]
        if not versions:
            return None
        winner = versions[0]
        return Slot(
            seq, winner.version_id, self.store.read_version(self.key(seq), winner.version_id)
        )

    def append(
        self,
        build: RecordBuilder,
        *,
        run_folder: str,
        lock: Lock | None,
    ) -> tuple[Slot, StoredObject]:
        head = self.find_head()
        for _ in range(MAX_APPEND_TRIES):
            seq = head + 1
            prev_ref: dict[str, Any] | None = None
            prev_record: dict[str, Any] | None = None
            if seq > 0:
                prev = self.read_slot(head)
                if prev is None:
                    raise UploadError(
                        f"chain slot {self.key(head)} holds no readable record",
                        fix="run `tfaudit verify` and restore the chain before appending",
                    )
                if _run_folder(prev.data) == run_folder:
                    # Our record already heads the chain (a second `recover` raced the first,
                    # or a retry after a lost answer): never append it twice.
                    return prev, StoredObject(
                        self.key(head), prev.version_id, prev.sha256, len(prev.data)
                    )
                prev_ref = {"seq": head, "sha256": prev.sha256}
                prev_record = prev.record()
            data = build(seq, prev_ref, prev_record)
            stored = self.store.put_create_only(self.key(seq), data, lock)
            if stored is not None:
                return Slot(seq, stored.version_id, data), stored
            # Lost the slot, or our own earlier attempt landed before its response was lost:
            # recognise our record by its unique run folder, never append it twice.
            winner = self.read_slot(seq)
            if winner is not None and _run_folder(winner.data) == run_folder:
                return winner, StoredObject(
                    self.key(seq), winner.version_id, winner.sha256, len(winner.data)
                )
            head = self.find_head(seq)
        raise UploadError(
            f"could not append to stream {self.stream!r} after {MAX_APPEND_TRIES} tries",
            fix="too many concurrent writers; retry the job",
        )


def _run_folder(data: bytes) -> str | None:
    try:
        value = json.loads(data).get("run_folder")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None
