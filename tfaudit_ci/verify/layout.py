"""Chain-level analysis of a stream's version listing (pure): slots, gaps, records after the
head, delete markers, stray keys, orphan run folders, unreferenced artifact versions."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from tfaudit_ci.record import chain_prefix, seq_from_chain_key
from tfaudit_ci.stores.base import VersionInfo
from tfaudit_ci.verify.model import Problem, error, warning

_FOLDER_STAMP = re.compile(r"(\d{8}T\d{6}Z)-")


@dataclass
class Slot:
    seq: int
    versions: list[VersionInfo] = field(default_factory=list)  # oldest first

    @property
    def winner(self) -> VersionInfo | None:
        """The oldest real version: the one readers and appenders agree on."""
        return next((v for v in self.versions if not v.is_delete_marker), None)

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

    def seqs_with_record(self) -> list[int]:
        return sorted(seq for seq, slot in self.slots.items() if slot.winner is not None)

    def run_folders(self) -> set[str]:
        prefix = f"{self.stream}/runs/"
        return {key[len(prefix) :].split("/", 1)[0] for key in self.artifacts}


def split_listing(stream: str, versions: Iterable[VersionInfo]) -> Layout:
    """Sort a listing of ``{stream}/`` into chain slots, run artifacts and stray keys.

    ``versions`` must list each key's versions oldest first (delete markers included).
    """
    layout = Layout(stream)
    runs = f"{stream}/runs/"
    chain = chain_prefix(stream)
    stray: set[str] = set()
    for info in versions:
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
    return layout


def probe_head(taken: set[int]) -> int:
    """The head an appender finds (same probing as ``Chain.find_head``), -1 when empty.

    Slots beyond a gap can be invisible to it: such records are reported, not trusted.
    """
    if 0 not in taken:
        return -1
    low, step = 0, 1
    high = low + step
    while high in taken:
        low = high
        step *= 2
        high = low + step
    while high - low > 1:
        mid = (low + high) // 2
        if mid in taken:
            low = mid
        else:
            high = mid
    return low


def _ranges(numbers: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for n in numbers:
        if out and out[-1][1] == n - 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out


def missing_seqs(layout: Layout, low: int, high: int) -> list[int]:
    """Seqs in [low, high] below the last written slot that were never written."""
    last = max(layout.slots, default=-1)
    return [seq for seq in range(max(low, 0), min(high, last) + 1) if seq not in layout.slots]


def slot_problems(layout: Layout, low: int, high: int) -> list[Problem]:
    """Gaps, deleted slots and delete markers for seqs in [low, high]; stray keys and
    records after the head always (they concern the whole stream)."""
    problems: list[Problem] = []
    for first, last in _ranges(missing_seqs(layout, low, high)):
        which = f"seq {first}" if first == last else f"seqs {first}..{last}"
        problems.append(
            error("gap", f"{which} missing: no record was ever written there", seq=first)
        )
    head = probe_head(set(layout.slots))
    for first, last in _ranges([seq for seq in sorted(layout.slots) if seq > head]):
        which = f"seq {first}" if first == last else f"seqs {first}..{last}"
        problems.append(
            error(
                "after-head",
                f"{which} lie after the head an appender finds (seq {head}): not appended by "
                "the chain protocol (inserted, or stranded past a gap)",
                seq=first,
            )
        )
    for seq in sorted(layout.slots):
        slot = layout.slots[seq]
        if not low <= seq <= high:
            continue
        if slot.winner is None:
            problems.append(
                error("deleted", "the slot holds only delete markers: its record is gone", seq=seq)
            )
        elif slot.delete_markers:
            # A plain DELETE on a versioned bucket: reported, but the locked record is intact
            # and is what readers use, so the trail still holds.
            problems.append(
                warning(
                    "delete-marker",
                    f"{len(slot.delete_markers)} delete marker(s) on the record: someone tried "
                    "to delete it (the locked record is intact; readers use the oldest version)",
                    seq=seq,
                )
            )
    for key in layout.stray:
        problems.append(
            error("stray-object", "object in the stream that tfaudit never writes", key=key)
        )
    return problems


def folder_time(folder: str) -> dt.datetime | None:
    match = _FOLDER_STAMP.match(folder)
    if match is None:
        return None
    return dt.datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)


def orphan_problems(
    layout: Layout,
    referenced: set[str],
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
                "orphan",
                "run folder not referenced by any record (a failed, interrupted or still "
                "running job; `tfaudit recover` ships a kept spool)",
                key=f"{layout.stream}/runs/{folder}/",
            )
        )
    return problems


def unreferenced_versions(layout: Layout, pinned: dict[str, set[str]]) -> list[Problem]:
    """Versions of referenced artifact keys that no record pins: an overwrite attempt."""
    problems = []
    for key, pins in sorted(pinned.items()):
        versions = layout.artifacts.get(key, [])
        markers = [v for v in versions if v.is_delete_marker]
        if markers:
            problems.append(
                warning(
                    "delete-marker",
                    f"{len(markers)} delete marker(s) on the artifact: someone tried to delete "
                    "it (the pinned, locked version is intact)",
                    key=key,
                )
            )
        others = [v for v in versions if v.version_id not in pins and not v.is_delete_marker]
        if others:
            ids = ", ".join(v.version_id for v in others)
            problems.append(
                warning(
                    "extra-version",
                    f"{len(others)} later version(s) ({ids}) that no record pins: the key was "
                    "overwritten; the pinned version is what counts",
                    key=key,
                )
            )
    return problems
