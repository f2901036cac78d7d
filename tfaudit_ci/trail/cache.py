"""A local cache of record bytes, trusted only as far as the chain vouches for it.

``history`` and ``report`` read many records; asked twice, they need not fetch them twice.
The cache keeps each record's exact bytes with the version id it was read from. An answer
from it is used only when all of these hold:

* the cached records form a hash chain from seq 0 (each ``prev.sha256`` is the sha256 of
  the cached bytes before it), recomputed on every load;
* the first live record after the cached ones (read from the store, its slot's winning
  version) links (``prev.sha256``) to the last cached record, or, when nothing is newer, the
  live head's bytes are the cached ones.

Then the live chain commits, link by link, to exactly the cached bytes: they are the records
the chain holds. Anything else drops the cache and reads the chain. Only stores that show each
object's lock are cached (their versions cannot change); a ``file://`` store is always read in
full. The chain
stays the only source of truth; ``tfaudit verify`` checks every slot.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from tfaudit_ci.canonical import sha256_hex
from tfaudit_ci.stores.base import Store
from tfaudit_ci.trail.model import safe_record

CACHE_ENV = "TFAUDIT_CACHE_DIR"


def cache_root(env: Mapping[str, str]) -> Path | None:
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV])
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]) / "tfaudit"
    if env.get("HOME"):
        return Path(env["HOME"]) / ".cache" / "tfaudit"
    return None


def links_to(data: bytes, previous: bytes, seq: int) -> bool:
    """Does the record ``data`` (at ``seq``) chain onto the record bytes ``previous``?"""
    record = safe_record(data)
    link = record.get("prev") if record is not None else None
    return (
        isinstance(link, dict)
        and link.get("seq") == seq - 1
        and link.get("sha256") == sha256_hex(previous)
    )


class RecordCache:
    def __init__(self, root: Path, store_uri: str, stream: str) -> None:
        name = hashlib.sha256(f"{store_uri}\n{stream}".encode()).hexdigest()[:32]
        self.path = root / name / "records.jsonl"

    def load(self) -> dict[int, tuple[str, bytes]]:
        """seq -> (version id, record bytes) for the hash-linked run of records from seq 0."""
        entries: dict[int, tuple[str, bytes]] = {}
        try:
            with self.path.open(encoding="utf-8") as handle:
                for line in handle:
                    item = json.loads(line)
                    entries[int(item["seq"])] = (str(item["v"]), str(item["r"]).encode())
        except (OSError, ValueError, KeyError, TypeError):
            return {}
        linked: dict[int, tuple[str, bytes]] = {}
        seq = 0
        while seq in entries:
            data = entries[seq][1]
            record = safe_record(data)
            if record is None or (seq > 0 and not links_to(data, linked[seq - 1][1], seq)):
                break
            if seq == 0 and record.get("prev") is not None:
                break
            linked[seq] = entries[seq]
            seq += 1
        return linked

    def save(self, slots: Iterable[tuple[int, str | None, bytes | None]]) -> None:
        """Keep the hash-linked run from seq 0 of ``(seq, version id, bytes)``; best effort."""
        found = {seq: (v, d) for seq, v, d in slots if v is not None and d is not None}
        lines = []
        seq = 0
        while seq in found:
            version, data = found[seq]
            if seq > 0 and not links_to(data, found[seq - 1][1], seq):
                break
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                break
            lines.append(json.dumps({"seq": seq, "v": version, "r": text}) + "\n")
            seq += 1
        if not lines:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            temp.write_text("".join(lines), encoding="utf-8")
            temp.replace(self.path)
        except OSError:
            return  # a cache that cannot be written only costs the next run its speed


def cache_for(
    store: Store, stream: str, env: Mapping[str, str], *, enabled: bool
) -> RecordCache | None:
    """The cache for this store and stream, or None (disabled, no home, or a store that
    cannot show each object's lock: a local directory's versions can change)."""
    root = cache_root(env)
    if not enabled or root is None or not store.lock_readback:
        return None
    return RecordCache(root, store.uri, stream)
