"""Chain-level analysis of a stream's version listing (pure): slots, gaps, records after the
head, delete markers, stray keys, orphan run folders, unpinned objects in run folders.

Everything here costs time and memory in the number of objects listed, never in the value of
the largest seq: gaps are kept as ranges.
"""

from __future__ import annotations

import bisect
import datetime as dt
import re
from collections.abc import Iterable, Iterator, Set
from dataclasses import dataclass, field

from tfaudit_ci import slots
from tfaudit_ci.record import chain_prefix, head_hint_key, seq_from_chain_key
from tfaudit_ci.stores.base import VersionInfo
from tfaudit_ci.verify.model import Code, Problem, error, warning

_FOLDER_STAMP = re.compile(r"(\d{8}T\d{6}Z)-")


@dataclass
class Slot:
    seq: int
    versions: list[VersionInfo] = field(default_factory=list)  # oldest first

    @property
    def winner(self) -> VersionInfo | None:
        return slots.winner(self.versions)

    @property
    def extras(self) -> list[VersionInfo]:
        real = [v for v in self.versions if not v.is_delete_marker]
        return real[1:]

    @property
    def delete_markers(self) -> list[VersionInfo]:
        return [v for v in self.versions if v.is_delete_marker]


@dataclass
class Layout:
    stream: str
    slots: dict[int, Slot] = field(default_factory=dict)
    artifacts: dict[str, list[VersionInfo]] = field(default_factory=dict)  # runs/ key -> versions
    stray: list[str] = field(default_factory=list)
    present: list[int] = field(default_factory=list)  # sorted seqs of every slot listed
    artifact_keys: list[str] = field(default_factory=list)  # sorted keys of ``artifacts``

    def folder_of(self, key: str) -> str:
        return key[len(f"{self.stream}/runs/") :].split("/", 1)[0]

    def run_folders(self) -> set[str]:
        return {self.folder_of(key) for key in self.artifacts}

    def keys_in(self, folder: str) -> list[str]:
        prefix = f"{self.stream}/runs/{folder}/"
        start = bisect.bisect_left(self.artifact_keys, prefix)
        found = []
        for key in self.artifact_keys[start:]:
            if not key.startswith(prefix):
                break
            found.append(key)
        return found

    def between(self, low: int, high: int) -> list[int]:
        """Listed seqs in [low, high]."""
        return self.present[
            bisect.bisect_left(self.present, low) : bisect.bisect_right(self.present, high)
        ]

    def head(self, start: int = -1) -> int:
        """The head an appender finds by probing (-1 when empty), from ``start``: a slot
        known to be taken (an incremental verify lists only the chain from its checkpoint)."""
        return slots.probe_head(lambda seq: seq in self.slots, start)


def split_listing(stream: str, versions: Iterable[VersionInfo]) -> Layout:
    """Sort a listing of ``{stream}/`` into chain slots, run artifacts and stray keys.

    ``versions`` must list each key's versions oldest first (delete markers included).
    """
    layout = Layout(stream)
    runs = f"{stream}/runs/"
    chain = chain_prefix(stream)
    stray: set[str] = set()
    hint = head_hint_key(stream)
    for info in versions:
        if info.key == hint:
            continue  # the appenders' head hint: rewritten by design, never trusted
        if info.key.startswith(chain):
            seq = seq_from_chain_key(stream, info.key)
            if seq is None:
                stray.add(info.key)
                continue
            layout.slots.setdefault(seq, Slot(seq)).versions.append(info)
        elif info.key.startswith(runs) and "/" in info.key[len(runs) :]:
            layout.artifacts.setdefault(info.key, []).append(info)
        else:
            stray.add(info.key)
    layout.stray = sorted(stray)
    layout.present = sorted(layout.slots)
    layout.artifact_keys = sorted(layout.artifacts)
    return layout


def _ranges(numbers: Iterable[int]) -> Iterator[tuple[int, int]]:
    start = end = None
    for n in numbers:
        if start is not None and end is not None and n == end + 1:
            end = n
            continue
        if start is not None and end is not None:
            yield start, end
        start = end = n
    if start is not None and end is not None:
        yield start, end


def gap_ranges(layout: Layout, low: int, high: int) -> list[tuple[int, int]]:
    """Ranges of seqs in [low, high], below the last listed slot, that were never written."""
    last = min(high, layout.present[-1] if layout.present else -1)
    gaps: list[tuple[int, int]] = []
    expected = max(low, 0)
    for seq in layout.between(expected, last):
        if seq > expected:
            gaps.append((expected, seq - 1))
        expected = seq + 1
    return gaps


def missing_count(layout: Layout, low: int, high: int) -> int:
    return sum(last - first + 1 for first, last in gap_ranges(layout, low, high))


def _which(first: int, last: int) -> str:
    return f"seq {first}" if first == last else f"seqs {first}..{last}"


def slot_problems(layout: Layout, low: int, high: int, head: int) -> list[Problem]:
    """Gaps, deleted slots and delete markers for seqs in [low, high]; stray keys and
    records after the head always (they concern the whole stream)."""
    problems: list[Problem] = []
    for first, last in gap_ranges(layout, low, high):
        problems.append(
            error(
                Code.GAP,
                f"{_which(first, last)} missing: no record was ever written there",
                seq=first,
            )
        )
    for first, last in _ranges(
        layout.between(head + 1, layout.present[-1] if layout.present else -1)
    ):
        problems.append(
            error(
                Code.AFTER_HEAD,
                f"{_which(first, last)} lie after the head an appender finds (seq {head}): not "
                "appended by the chain protocol (inserted, or stranded past a gap)",
                seq=first,
            )
        )
    for seq in layout.between(low, high):
        slot = layout.slots[seq]
        if slot.winner is None:
            problems.append(
                error(
                    Code.DELETED,
                    "the slot holds only delete markers: its record is gone",
                    seq=seq,
                )
            )
        elif slot.delete_markers:
            # A plain DELETE on a versioned bucket: reported, but the locked record is intact
            # and is what readers use, so the trail still holds.
            problems.append(
                warning(
                    Code.DELETE_MARKER,
                    f"{len(slot.delete_markers)} delete marker(s) on the record: someone tried "
                    "to delete it (the locked record is intact; readers use the oldest version)",
                    seq=seq,
                )
            )
    return problems + stray_problems(layout.stray)


def stray_problems(keys: Iterable[str]) -> list[Problem]:
    return [
        error(Code.STRAY_OBJECT, "object in the stream that tfaudit never writes", key=key)
        for key in keys
    ]


def folder_time(folder: str) -> dt.datetime | None:
    match = _FOLDER_STAMP.match(folder)
    if match is None:
        return None
    return dt.datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)


def orphan_problems(
    layout: Layout,
    referenced: Set[str],
    since: dt.datetime | None,
    until: dt.datetime | None,
) -> list[Problem]:
    """Run folders no record references: failed, interrupted or still-running runs."""
    problems = []
    for folder in sorted(layout.run_folders() - referenced):
        moment = folder_time(folder)
        if moment is not None and since is not None and moment < since.replace(microsecond=0):
            continue
        if moment is not None and until is not None and moment >= until:
            continue
        problems.append(
            warning(
                Code.ORPHAN,
                "run folder not referenced by any record (a failed, interrupted or still "
                "running job; `tfaudit recover` ships a kept spool)",
                key=f"{layout.stream}/runs/{folder}/",
            )
        )
    return problems


def unpinned_problems(
    layout: Layout, folder: str, pins: Set[tuple[str, str]], seq: int | None
) -> list[Problem]:
    """Every object, and every version of one, in a referenced run folder that its record
    does not pin: something was added to (or overwritten in) the run after the fact."""
    problems = []
    for key in layout.keys_in(folder):
        versions = layout.artifacts[key]
        markers = [v for v in versions if v.is_delete_marker]
        if markers:
            problems.append(
                warning(
                    Code.DELETE_MARKER,
                    f"{len(markers)} delete marker(s) on the artifact: someone tried to delete "
                    "it (the pinned, locked version is intact)",
                    key=key,
                )
            )
        others = [v for v in versions if not v.is_delete_marker and (key, v.version_id) not in pins]
        if not others:
            continue
        pinned_here = any(k == key for k, _ in pins)
        ids = ", ".join(v.version_id for v in others[:5]) + (", ..." if len(others) > 5 else "")
        what = (
            f"{len(others)} version(s) ({ids}) that the record does not pin: the key was "
            "overwritten after the run; the pinned version is what counts"
            if pinned_here
            else f"an object the record does not pin ({len(others)} version(s): {ids}): "
            "added to the run folder after the run"
        )
        problems.append(error(Code.UNPINNED, what, seq=seq, key=key))
    return problems
