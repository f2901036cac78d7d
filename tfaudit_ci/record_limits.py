"""How large a record may be, and how the writer keeps well below it.

``MAX_RECORD_BYTES`` (1 MiB) is the hard cap: verify reports any chain slot larger than that
as ``too-large`` without parsing it, and the writer treats such a slot as burned. The writer
itself never writes more than ``WRITE_LIMIT`` (256 KiB): before signing, ``fit_record``

1. makes every value representable in RFC 8785 (``canonical.jcs_safe``);
2. if still too large, shortens strings longer than ``STRING_LIMIT`` characters, saying so
   inside the string, and ``command`` to its first ``ARGV_LIMIT`` arguments plus a note;
3. if still too large, keeps only as many entries of ``plan.resources`` as fit and records
   how many it left out in ``plan.resources_omitted`` (the full list is in ``plan.json``).

A record that is still too large after that is refused with an error, never written.
"""

from __future__ import annotations

from typing import Any

from tfaudit_ci.canonical import canonical_bytes, jcs_safe

MAX_RECORD_BYTES = 1 << 20
WRITE_LIMIT = 256 << 10
# Room left for the signature block, which is added after fitting.
SIGNATURE_ROOM = 2048
# At most this many burned slots are skipped (and listed) by one append: ~90 KiB of record.
MAX_BURNED = 1024
STRING_LIMIT = 4096
ARGV_LIMIT = 256
# Fields whose values are written by tfaudit itself and must stay exact.
_EXACT = frozenset({"artifacts", "burned", "prev", "run_folder", "stream", "schema", "seq"})


def record_size(record: dict[str, Any]) -> int:
    return len(canonical_bytes(record))


def fit_record(
    unsigned: dict[str, Any], limit: int = WRITE_LIMIT - SIGNATURE_ROOM
) -> dict[str, Any]:
    """``unsigned`` made representable and trimmed to at most ``limit`` canonical bytes."""
    record: dict[str, Any] = {
        key: value if key in _EXACT else jcs_safe(value) for key, value in unsigned.items()
    }
    if record_size(record) <= limit:
        return record
    for key, value in record.items():
        if key not in _EXACT:
            record[key] = _short_strings(value)
    command = record.get("command")
    if record_size(record) > limit and isinstance(command, list) and len(command) > ARGV_LIMIT:
        omitted = len(command) - ARGV_LIMIT
        record["command"] = [*command[:ARGV_LIMIT], f"(... {omitted} more arguments omitted)"]
    if record_size(record) > limit:
        _trim_resources(record, limit)
    return record


def _trim_resources(record: dict[str, Any], limit: int) -> None:
    plan = record.get("plan")
    resources = plan.get("resources") if isinstance(plan, dict) else None
    if not isinstance(plan, dict) or not isinstance(resources, list) or not resources:
        return
    total = len(resources) + int(plan.get("resources_omitted") or 0)

    def size_with(count: int) -> int:
        plan["resources"] = resources[:count]
        plan["resources_omitted"] = total - count
        return record_size(record)

    low, high = 0, len(resources)  # the most resources that fit lies in [low, high]
    while low < high:
        mid = (low + high + 1) // 2
        if size_with(mid) <= limit:
            low = mid
        else:
            high = mid - 1
    size_with(low)


def _short_strings(value: Any) -> Any:
    if isinstance(value, str) and len(value) > STRING_LIMIT:
        omitted = len(value) - STRING_LIMIT
        return f"{value[:STRING_LIMIT]}(... {omitted} more characters omitted)"
    if isinstance(value, dict):
        return {k: _short_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_short_strings(v) for v in value]
    return value
