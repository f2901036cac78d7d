"""The byte forms in which a registered secret may show up in a log, as regex sources.

A secret of at least ``MIN_SECRET_LENGTH`` characters is matched anywhere, in every encoding a
log is likely to carry it in: raw; base64 and base64url at every alignment (also wrapped at any
column, and base64 of its base64); hex in both cases; UTF-16LE/BE; URL-encoding; JSON, Go
(``\\u0026``) and HCL string escaping. The raw form also matches with ANSI colour sequences
inserted anywhere inside it (terraform colours its output).

A shorter secret (``MIN_WORD_LENGTH`` to ``MIN_SECRET_LENGTH - 1`` characters) is matched only
as a whole word, raw or escaped: as a substring, "dev" or "admin" would redact every word that
contains it. Shorter still cannot be redacted without destroying the log; the caller warns.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import quote, quote_plus

MIN_SECRET_LENGTH = 8
MIN_WORD_LENGTH = 3
# Gaps (ANSI codes, line wraps) are allowed inside forms up to this size; longer forms (a whole
# service-account key) are matched as plain literals, which keeps the automaton small.
GAP_MAX_FORM = 512

# Up to two SGR sequences ("\x1b[0m\x1b[1m") between any two characters of the raw secret.
_ANSI_GAP = rb"(?:\x1b\[[0-9;]{0,6}m){0,2}"
_ANSI_GAP_MAX = 2 * len(b"\x1b[000000m")
# One line break between any two characters of a base64 form (wrapped at 64 or 76 columns).
_WRAP_GAP = rb"(?:\r?\n)?"
_WRAP_GAP_MAX = 2
_ANSI = re.compile(rb"\x1b\[[0-9;]{0,6}m")
_WRAP = re.compile(rb"\r?\n")
_WORD = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


@dataclass(frozen=True)
class Form:
    """One byte form of a secret and how loosely it is matched."""

    data: bytes
    gap: bytes = b""  # regex allowed between any two bytes
    gap_max: int = 0  # the most bytes one gap can match
    word: bool = False  # only as a whole word

    def source(self) -> bytes:
        """RE2/Python-compatible regex for this form."""
        parts = map(_ESCAPED.__getitem__, self.data)
        body = self.gap.join(parts) if self.gap else b"".join(parts)
        if self.word:
            # Not next to a word character on either side: \b after a word character, \B
            # (no boundary, so the neighbour is not one either) after any other.
            body = _edge(self.data[0]) + body + _edge(self.data[-1])
        return body

    @property
    def max_len(self) -> int:
        return len(self.data) + max(len(self.data) - 1, 0) * self.gap_max


def _edge(byte: int) -> bytes:
    return rb"\b" if byte in _WORD else rb"\B"


# Each byte as a regex Python and RE2 read alike (re.escape's "\\<newline>" is not valid RE2).
_ESCAPED = tuple(
    bytes((byte,)) if chr(byte).isalnum() and byte < 128 else b"\\x%02x" % byte
    for byte in range(256)
)


def literal(form: bytes) -> bytes:
    """A regex for exactly ``form``."""
    return b"".join(map(_ESCAPED.__getitem__, form))


def normalized(matched: bytes) -> tuple[bytes, ...]:
    """The form a match may stand for: as is, without ANSI codes, without line breaks."""
    return (matched, _ANSI.sub(b"", matched), _WRAP.sub(b"", matched))


def _fragments(raw: bytes, encode: Callable[[bytes], bytes]) -> set[bytes]:
    """The characters fully determined by ``raw`` at each of the three alignments it can have
    inside a longer encoded value."""
    fragments = set()
    for offset in range(3):
        encoded = encode(b"\0" * offset + raw)
        first = -(-8 * offset // 6)  # ceil: first char made only of raw's bits
        last = (8 * offset + 8 * len(raw)) // 6  # exclusive
        fragments.add(encoded[first:last])
    return fragments


def base64_forms(raw: bytes, *, url: bool = True) -> set[bytes]:
    """Base64 (standard and url-safe) of ``raw``, whole and at every alignment mid-stream."""
    forms: set[bytes] = set()
    encoders = (base64.b64encode, base64.urlsafe_b64encode) if url else (base64.b64encode,)
    for encode in encoders:
        whole = encode(raw)
        forms |= {whole, whole.rstrip(b"=")} | _fragments(raw, encode)
    return forms


def _percent_forms(raw: bytes) -> set[bytes]:
    forms: set[bytes] = set()
    for safe in ("", "/"):
        for encoded in (quote(raw, safe=safe), quote_plus(raw, safe=safe)):
            # Percent-encoders disagree on hex case; register both spellings.
            forms.add(encoded.encode("ascii"))
            forms.add(re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), encoded).encode())
    return forms


_GO_HTML = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_GO_CONTROL = {7: "\\a", 8: "\\b", 9: "\\t", 10: "\\n", 11: "\\v", 12: "\\f", 13: "\\r"}


def _escaped_forms(value: str) -> set[bytes]:
    """JSON (both ensure_ascii), Go's json.Marshal (HTML-safe \\u00XX), upper-case \\u hex, Go's
    %q, and HCL (terraform's diffs: JSON escaping plus $${ and %%{)."""
    texts: set[str] = set()
    for ensure_ascii in (True, False):
        escaped = json.dumps(value, ensure_ascii=ensure_ascii)[1:-1]
        texts.add(escaped)
        texts.add("".join(_GO_HTML.get(char, char) for char in escaped))
        texts.add(escaped.replace("${", "$${").replace("%{", "%%{"))
    texts |= {re.sub(r"\\u([0-9a-f]{4})", lambda m: "\\u" + m.group(1).upper(), t) for t in texts}
    go = "".join(
        _GO_CONTROL.get(ord(c), f"\\x{ord(c):02x}") if ord(c) < 32 or ord(c) == 127
        else "\\" + c if c in '"\\' else c
        for c in value
    )  # fmt: skip
    texts.add(go)
    return {text.encode("utf-8", "surrogateescape") for text in texts}


def secret_forms(value: str, *, full: bool = True) -> tuple[Form, ...]:
    """The forms of a registered secret that are redacted, longest first (none if too short).

    ``full=False`` (sensitive values a plan reveals, which terraform prints itself) keeps the
    forms terraform and its providers print: raw, escaped, URL-encoded and base64; it drops
    ANSI codes inside the value (terraform colours around values, not inside them), hex,
    UTF-16, base64 of base64 and wrapped base64. Gap-tolerant forms of thousands of values
    would outgrow RE2's DFA budget and fall back to its NFA, ~100x slower.
    """
    length = len(value)
    if length < MIN_WORD_LENGTH:
        return ()
    raw = value.encode("utf-8", "surrogateescape")
    ansi = Form(raw, _ANSI_GAP, _ANSI_GAP_MAX, word=length < MIN_SECRET_LENGTH)
    if len(raw) > GAP_MAX_FORM or not full:
        ansi = Form(raw, word=length < MIN_SECRET_LENGTH)
    plain = _escaped_forms(value) | _percent_forms(raw)
    if length < MIN_SECRET_LENGTH:
        words = {data: Form(data, word=True) for data in plain}
        return _ordered({**words, raw: ansi}.values())
    plain |= base64_forms(raw)
    wrapped: set[bytes] = set()
    if full:
        # Only standard base64 is wrapped (MIME at 76 columns, PEM at 64), mid-stream: its
        # alignment fragments take a line break anywhere.
        wrapped = {f for f in _fragments(raw, base64.b64encode) if len(f) <= GAP_MAX_FORM}
        plain |= base64_forms(base64.b64encode(raw), url=False)  # base64 of its base64
        plain |= {raw.hex().encode(), raw.hex().upper().encode()}
        text = raw.decode("utf-8", "replace")
        plain |= {text.encode("utf-16-le"), text.encode("utf-16-be")}
    found = {data: Form(data) for data in plain - wrapped}
    found |= {data: Form(data, _WRAP_GAP, _WRAP_GAP_MAX) for data in wrapped}
    found[raw] = ansi
    kept = (form for data, form in found.items() if len(data) >= MIN_SECRET_LENGTH or data == raw)
    return _ordered(kept)


def _ordered(forms: Iterable[Form]) -> tuple[Form, ...]:
    return tuple(sorted(forms, key=lambda form: (-len(form.data), form.data)))
