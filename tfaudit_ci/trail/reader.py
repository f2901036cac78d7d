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
from typing import TYPE_CHECKING, TypeVar

from tfaudit_ci.chain import Chain
from tfaudit_ci.errors import PreflightError, TfauditError
from tfaudit_ci.record import chain_prefix
from tfaudit_ci.stores.base import Store
from tfaudit_ci.trail.model import RunRow, row_from_bytes
from tfaudit_ci.verify.layout import split_listing
from tfaudit_ci.verify.model import Fetched
from tfaudit_ci.verify.reader import KEEP_LIMIT, parallel_map, reader_for

if TYPE_CHECKING:
    from tfaudit_ci.config import Config

_T = TypeVar("_T")
DEFAULT_PARALLELISM = 16


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
        self._fetcher = reader_for(store, parallelism)

    def head(self) -> int:
        """The highest written seq (-1 for an empty stream), found by probing."""
        return store_call(
            f"finding the head of stream {self.stream!r} in {self.store.uri}",
            self.chain.find_head,
        )

    def slot(self, seq: int) -> SlotRead:
        try:
            found = self.chain.read_slot(seq)
        except Exception as exc:  # one unreadable slot is a row, not the end of the command
            message = f"{type(exc).__name__}: {exc}"[:300]
            return SlotRead(seq, None, None, row_from_bytes(seq, None, message))
        if found is None:
            return SlotRead(seq, None, None, row_from_bytes(seq, None, "the slot is empty"))
        return SlotRead(seq, found.version_id, found.data, row_from_bytes(seq, found.data))

    def slots(self, seqs: list[int]) -> list[SlotRead]:
        """Several slots, read in parallel, in the order asked."""
        return parallel_map(self.slot, seqs, self.parallelism)

    def newest_first(self, head: int, *, batch: int = 32, stop: int = 0) -> Iterator[SlotRead]:
        """Slots from ``head`` down to ``stop``, read a batch at a time in parallel."""
        upper = head
        while upper >= stop:
            lower = max(stop, upper - batch + 1)
            yield from self.slots(list(range(upper, lower - 1, -1)))
            upper = lower - 1
            batch = min(batch * 2, 512)

    def all_slots(self, first: int = 0, last: int | None = None) -> list[SlotRead]:
        """The slots from ``first`` to ``last`` (default: all): one listing of ``chain/``, then
        the winners in parallel, one request each."""
        listing = store_call(
            f"listing stream {self.stream!r} in {self.store.uri}",
            lambda: split_listing(
                self.stream, self._fetcher.list_versions(chain_prefix(self.stream))
            ),
        )
        seqs = [s for s in sorted(listing.slots) if s >= first and (last is None or s <= last)]

        def read(seq: int) -> SlotRead:
            winner = listing.slots[seq].winner
            if winner is None:
                return SlotRead(seq, None, None, row_from_bytes(seq, None, "only delete markers"))
            fetched = self._fetcher.fetch(winner.key, winner.version_id, keep=True)
            return SlotRead(seq, winner.version_id, fetched.data, _row(seq, fetched))

        return parallel_map(read, seqs, self.parallelism)

    def fetch(self, key: str, version_id: str, *, keep: bool) -> Fetched:
        """One artifact version: its server state, digest and (``keep``) bytes."""
        return self._fetcher.fetch(key, version_id, keep=keep)


def _row(seq: int, fetched: Fetched) -> RunRow:
    if fetched.data is not None:
        return row_from_bytes(seq, fetched.data)
    if fetched.error is not None:
        return row_from_bytes(seq, None, f"cannot be read: {fetched.error}")
    if fetched.state is None:
        return row_from_bytes(seq, None, "vanished while reading")
    return row_from_bytes(seq, None, f"larger than {KEEP_LIMIT} bytes: not read")


def open_reader(config: Config, env: Mapping[str, str], *, parallelism: int) -> TrailReader:
    """The configured store and stream (the same ``--store``/``--stream``/config as ``run``
    and ``verify``), ready to read."""
    from tfaudit_ci.commands.verify import _stream as configured_stream
    from tfaudit_ci.errors import ConfigError
    from tfaudit_ci.stores import open_store

    if not 1 <= parallelism <= 256:
        raise ConfigError(f"--parallelism {parallelism} is out of range", fix="use 1..256")
    store = open_store(config.require_store(), config.store_options())
    return TrailReader(store, configured_stream(config, env), parallelism=parallelism)
