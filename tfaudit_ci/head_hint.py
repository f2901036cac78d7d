"""The head hint: where an appender starts looking for the head (docs/record-format.md,
"Head hint").

``{stream}/chain-head.json`` holds ``{"schema", "stream", "seq"}`` of the last record an
appender wrote. It is rewritten (a plain PUT: on a versioned bucket, a new version; on an
Object Lock bucket with default retention, a new locked version) after each append has been
read back, and read as the latest version with a capped range GET, so its cost stays one
request however many versions pile up.

It is **not authoritative**: ``chain.py`` only starts probing at the seq it names and then
confirms the head from the slots themselves, so a missing, stale, malformed or forged hint
costs probes, never correctness. Verify and the readers never read it.

Only stores that can overwrite a key and read its latest version carry a hint (S3 and the
local directory); on the others (GCS, Azure: every write there is create-only and a locked
object cannot be replaced) the chain probes from scratch as before.
"""

from __future__ import annotations

import sys
from typing import Protocol, runtime_checkable

from tfaudit_ci.canonical import JsonRejected, canonical_bytes, parse_strict
from tfaudit_ci.record import MAX_SEQ, head_hint_key

SCHEMA = "tfaudit.head-hint/v1"
# A hint is ~80 bytes; anything longer is not one of ours and is not read further.
MAX_HINT_BYTES = 512


@runtime_checkable
class HintStore(Protocol):
    """A store that can hold a rewritable object."""

    def read_latest(self, key: str, limit: int) -> bytes | None:
        """At most ``limit`` bytes of the latest version of ``key``; None when absent."""
        ...

    def put_latest(self, key: str, data: bytes) -> None:
        """Write ``data`` as the latest version of ``key`` (not create-only)."""
        ...


def encode(stream: str, seq: int) -> bytes:
    return canonical_bytes({"schema": SCHEMA, "seq": seq, "stream": stream})


def decode(data: bytes, stream: str) -> int | None:
    """The seq a hint names, or None when it is not a well-formed hint of ``stream``."""
    if len(data) > MAX_HINT_BYTES:
        return None
    try:
        value = parse_strict(data)
    except JsonRejected:
        return None
    if not isinstance(value, dict) or value.get("schema") != SCHEMA:
        return None
    seq = value.get("seq")
    if value.get("stream") != stream or type(seq) is not int or not 0 <= seq <= MAX_SEQ:
        return None
    return seq


def read(store: object, stream: str) -> int | None:
    """The seq the stream's hint names; None when there is none worth starting from (no hint,
    a store without one, junk, or a read that failed: the appender then probes)."""
    if not isinstance(store, HintStore):
        return None
    try:
        data = store.read_latest(head_hint_key(stream), MAX_HINT_BYTES + 1)
    except Exception:  # non-authoritative: any failure only means probing from scratch
        return None
    return None if data is None else decode(data, stream)


def write(store: object, stream: str, seq: int) -> None:
    """Point the hint at ``seq``; a failure is a warning (the record is already appended and
    read back; the next appender probes from scratch)."""
    if not isinstance(store, HintStore):
        return
    try:
        store.put_latest(head_hint_key(stream), encode(stream, seq))
    except Exception as exc:
        sys.stderr.write(
            f"tfaudit: warning: could not update the head hint {head_hint_key(stream)} "
            f"({type(exc).__name__}: {str(exc)[:200]}); the record is stored, the next "
            "append finds the head by probing (grant s3:PutObject on that key to stop this)\n"
        )
