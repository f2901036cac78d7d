"""The canonical form of records: RFC 8785, the JSON Canonicalization Scheme (JCS).

A record's bytes are exactly ``canonical_bytes(record)``: keys sorted by their UTF-16 code
units, no insignificant whitespace, UTF-8, strings escaped as RFC 8785 says, numbers in the
ECMAScript form (integers within +-(2**53 - 1); no NaN or Infinity).

Verify and the writer read records with ``parse_strict``, which refuses invalid UTF-8,
duplicate keys, NaN/Infinity and nesting deeper than ``MAX_DEPTH`` (hostile input never
raises anything but ``JsonRejected``); ``canonical_problem`` then refuses any bytes that are
not exactly the canonical form of what they parse to.

Other JSON documents tfaudit writes (the spool's state, ``plan.json``) need no canonical
form; ``compact_bytes`` gives them deterministic, compact bytes for any JSON value.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any

import rfc8785

# Records are a few levels deep; anything deeper than this is not a record.
MAX_DEPTH = 64
# Integers beyond this cannot round-trip through an IEEE double: JCS refuses them.
MAX_SAFE_INTEGER = 2**53 - 1
_SURROGATE = re.compile("[\ud800-\udfff]")


class JsonRejected(ValueError):
    """Bytes that are not a strict JSON document; ``str(exc)`` says why."""


def canonical_bytes(obj: Any) -> bytes:
    """RFC 8785 bytes of ``obj``; ValueError for values JCS cannot represent."""
    data: bytes = rfc8785.dumps(obj)
    return data


def compact_bytes(obj: Any) -> bytes:
    """Deterministic compact JSON (sorted keys, UTF-8) for documents that are not records."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise JsonRejected(f"duplicate key {key[:80]!r}")
        found[key] = value
    return found


def _no_constants(name: str) -> Any:
    raise JsonRejected(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


def _too_deep(value: Any, limit: int) -> bool:
    """True when ``value`` nests containers deeper than ``limit`` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children: Iterator[Any]
        if isinstance(item, dict):
            children = iter(item.values())
        elif isinstance(item, list):
            children = iter(item)
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def parse_strict(data: bytes) -> Any:
    """Parse ``data`` as strict JSON (I-JSON, RFC 7493); raises JsonRejected."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonRejected(f"invalid UTF-8 at byte {exc.start}") from None
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constants)
    except JsonRejected:
        raise
    except json.JSONDecodeError as exc:
        raise JsonRejected(f"not JSON: {exc.msg} at byte {exc.pos}") from None
    except RecursionError:
        raise JsonRejected(f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise JsonRejected(f"not JSON: {str(exc)[:120]}") from None
    if _too_deep(value, MAX_DEPTH):
        raise JsonRejected(f"nested deeper than {MAX_DEPTH} levels")
    return value


def canonical_problem(value: Any, data: bytes) -> str | None:
    """Why ``data`` (which parsed to ``value``) is not its RFC 8785 form, or None."""
    try:
        canonical = canonical_bytes(value)
    except ValueError as exc:
        return f"not canonical (RFC 8785): {str(exc)[:160]}"
    if canonical != data:
        return "not the canonical form (RFC 8785) of what it holds: tfaudit never wrote these bytes"
    return None


def jcs_safe(value: Any, depth: int = 0) -> Any:
    """``value`` with what JCS (or a record) cannot hold made representable: integers beyond
    +-(2**53 - 1) become their decimal string, non-finite floats become null, lone surrogates
    become U+FFFD, containers nested below ``MAX_DEPTH // 4`` levels become a note. The writer
    applies it to what it copies from outside (an OIDC token's claims, CI variables)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, int):
        return value if abs(value) <= MAX_SAFE_INTEGER else str(value)
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, (dict, list, tuple)) and depth >= MAX_DEPTH // 4:
        return "(nested too deep: omitted)"
    if isinstance(value, dict):
        return {jcs_safe(str(k)): jcs_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jcs_safe(v, depth + 1) for v in value]
    return jcs_safe(str(value))
