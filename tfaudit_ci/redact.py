"""Streaming redaction of secrets in command output (pure logic, no I/O).

Logs end up in WORM storage where a leaked secret cannot be erased, so everything written to
the spool passes through a :class:`StreamRedactor` first.

Matching semantics (identical for any chunking of the input):

* Rules are tried at each position in priority order: registered-secret literals (longest
  first), then the built-in token shapes (``redact_shapes``), then custom patterns. The leftmost
  match wins; at the same start the higher-priority rule wins; scanning resumes after the
  match (no overlaps).
* Every match is cut at a bounded reach (``Rule.max_len``: exact for fixed shapes,
  ``LONG_MATCH_CAP`` for open-ended ones such as private keys, ``CUSTOM_MAX_MATCH`` for custom
  patterns such as ``\\S+``). That is what lets the stream be cut anywhere: a match is only
  committed once the bytes it depends on are buffered, so the carry never exceeds
  ``RuleSet.max_match`` (+ one block).
* A private key cut at the cap is continued: right after it, the rest of its body (up to its
  END line) is redacted in further capped steps, so a PEM/PGP block of any length goes whole.
* A rule may redact only part of its match: a group named ``secret`` (``label=(?P<secret>…)``)
  keeps the label readable and replaces just the value.

Matching runs on RE2 (google-re2) in Latin-1 mode, one combined DFA scan for all literal and
built-in rules: Python's ``re`` tries every alternative at every position, which is ~50x slower
on an alternation like this one. Patterns therefore use the RE2/Python common syntax (no
look-around, no back-references).
"""

from __future__ import annotations

import functools
import importlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from tfaudit_ci.errors import ConfigError
from tfaudit_ci.redact_env import Secret, env_secrets, is_secret_env_name, value_secrets
from tfaudit_ci.redact_forms import MIN_SECRET_LENGTH, Form, normalized, secret_forms
from tfaudit_ci.redact_shapes import BUILTIN_SHAPES, LONG_MATCH_CAP, PEM_CONTINUATION, PEM_RULE

__all__ = [
    "CUSTOM_MAX_MATCH",
    "LONG_MATCH_CAP",
    "MIN_SECRET_LENGTH",
    "Rule",
    "RuleSet",
    "Secret",
    "StreamRedactor",
    "build_rules",
    "is_secret_env_name",
    "marker",
    "redact_bytes",
    "redact_text",
    "secret_forms",
    "secret_rules",
    "value_secrets",
]

# Custom patterns may be unbounded; their matches are cut here so the carry stays bounded.
CUSTOM_MAX_MATCH = 4096
# The stream is scanned in blocks of at least this many new bytes (amortises the rescan of the
# carry); memory is bounded by max_match + SCAN_BLOCK + the size of one fed chunk.
SCAN_BLOCK = 256 * 1024
# RE2's budget for one compiled scanner (program + lazily built DFA). Gap-tolerant literals of
# 100 secrets need ~100 MB of DFA states to stay on the DFA; with less RE2 drops to its NFA,
# which is ~500x slower. It is a ceiling, not an allocation: typical logs touch a few MB.
_RE2_MAX_MEM = 256 << 20
# Registered literals are split into scanners of at most this many regex bytes each (RE2
# refuses programs past its budget; a plan can register thousands of sensitive values).
_LITERAL_SOURCE_BUDGET = 1 << 20

_re2: Any = importlib.import_module("re2")


class _Match(Protocol):
    def start(self, group: int = 0) -> int: ...
    def end(self, group: int = 0) -> int: ...
    def span(self, group: int = 0) -> tuple[int, int]: ...


class _Regex(Protocol):
    groupindex: Mapping[bytes | str, int]

    def search(self, text: bytes, pos: int = ..., endpos: int = ...) -> _Match | None: ...
    def match(self, text: bytes, pos: int = ..., endpos: int = ...) -> _Match | None: ...


def _re2_compile(source: bytes, capture: bool = True) -> _Regex:
    options = _re2.Options()
    options.never_capture = not capture
    options.encoding = _re2.Options.Encoding.LATIN1  # bytes in, bytes out: no UTF-8 decoding
    options.log_errors = False
    options.max_mem = _RE2_MAX_MEM
    return cast(_Regex, _re2.compile(source, options=options))


# --- rules -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One redaction rule: a name, its (RE2/Python-compatible) regex source and its reach."""

    name: str
    source: bytes
    max_len: int  # longest span the rule can match (custom rules are cut to this)
    literals: tuple[Form, ...] = ()  # registered-secret rules: their forms, longest first

    @property
    def custom(self) -> bool:
        return self.name.startswith("custom:")

    @functools.cached_property
    def pattern(self) -> re.Pattern[bytes]:
        """The Python view of the regex (tests compare the engine against it)."""
        return re.compile(self.source)


class RuleSet:
    """An immutable set of rules compiled for scanning. Safe to share between threads."""

    def __init__(
        self,
        rules: Iterable[Rule],
        secret_values: Iterable[str] = (),
        warnings: Iterable[str] = (),
    ) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self._secret_values = tuple(sorted(set(secret_values)))
        self.warnings: tuple[str, ...] = tuple(dict.fromkeys(warnings))
        self.max_match: int = max((rule.max_len for rule in self.rules), default=1)
        self._scanners: tuple[_Scanner, ...] = _compile_scanners(self.rules)
        self._continuation: _Regex | None = (
            _re2_compile(PEM_CONTINUATION.encode("ascii"), False)
            if any(rule.name == PEM_RULE for rule in self.rules)
            else None
        )

    def masked_values(self) -> list[str]:
        """The registered secret values long enough to mask, e.g. for GitHub's ``::add-mask::``
        (which masks substrings: a short value would mask parts of every word)."""
        return [value for value in self._secret_values if len(value) >= MIN_SECRET_LENGTH]


def secret_rules(secrets: Iterable[Secret]) -> list[Rule]:
    """One literal rule per rule name, holding every form of every value registered under it."""
    by_rule: dict[str, dict[bytes, Form]] = {}
    for secret in secrets:
        forms = by_rule.setdefault(secret.rule, {})
        for form in secret_forms(secret.value, full=secret.full):
            forms.setdefault(form.data, form)
    rules = []
    for name, found in sorted(by_rule.items()):
        if found:
            ordered = tuple(sorted(found.values(), key=lambda form: (-len(form.data), form.data)))
            source = b"|".join(form.source() for form in ordered)
            rules.append(Rule(name, source, max(form.max_len for form in ordered), ordered))
    return rules


def build_rules(
    env: Mapping[str, str],
    *,
    extra_patterns: Sequence[str] = (),
    extra_env_names: Sequence[str] = (),
    secrets: Sequence[Secret] = (),
    warnings: Sequence[str] = (),
) -> RuleSet:
    """Rules for the registered secrets (those of ``env`` plus ``secrets``), the built-in
    shapes and custom patterns. ``warnings`` are carried into ``RuleSet.warnings``."""
    registered, env_warnings = env_secrets(env, extra_env_names)
    registered += secrets
    rules = secret_rules(registered)
    for name, source, max_len in BUILTIN_SHAPES:
        rules.append(Rule(name, source.encode("ascii"), max_len))
    for index, source in enumerate(extra_patterns, start=1):
        rules.append(_custom_rule(index, source))
    values = [secret.value for secret in registered]
    return RuleSet(rules, values, [*env_warnings, *warnings])


def _custom_rule(index: int, source: str) -> Rule:
    encoded = source.encode("utf-8")
    fix = "use a regex without look-around or back-references, e.g. password=(?P<secret>\\S+)"
    try:
        pattern = re.compile(encoded)
        compiled = _re2_compile(encoded)
    except (re.error, _re2.error) as exc:
        reason = exc.args[0] if exc.args else exc
        reason = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else reason
        raise ConfigError(f"redact pattern {source!r} does not compile: {reason}", fix=fix) from exc
    if compiled.match(b"") is not None:
        raise ConfigError(
            f"redact pattern {source!r} matches the empty string",
            fix="make the pattern require at least one character",
        )
    del pattern  # compiled above only to reject what Python's re cannot read
    return Rule(f"custom:{index}", encoded, CUSTOM_MAX_MATCH)


# --- scanning engine -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Hit:
    start: int
    end: int
    cut_start: int  # the part that is replaced by the marker
    cut_end: int
    rule: str
    capped: bool = False  # the match reached the scanner's reach: it may go on


@dataclass(frozen=True)
class _Branch:
    """One rule, matched anchored at a located start. ``rule`` None: a literal branch, whose
    rule is looked up from the matched bytes."""

    regex: _Regex
    rule: str | None
    secret_group: int | None


class _Scanner:
    """Finds the leftmost hit of a group of rules in the buffer.

    The locator is the alternation of all the rules compiled without capture groups, so RE2
    finds match bounds with its DFA alone; submatch extraction over a 16 KB private-key match
    would cost milliseconds per match. The rule that matched, and its ``secret`` group, are
    then found by trying each branch anchored at the start, in priority order: the first that
    matches there is the one the alternation chose.
    """

    def __init__(
        self,
        locator: _Regex,
        branches: Sequence[_Branch],
        reach: int,
        owners: Mapping[bytes, str],
    ) -> None:
        self.locator = locator
        self.branches = tuple(branches)
        self.reach = reach  # no match is longer: matches are cut here
        self.owners = owners

    def find(self, buf: bytes, pos: int, safe_end: int, final: bool) -> _Hit | None:
        """Leftmost hit at or after ``pos``; None: no hit starts before ``safe_end``.

        A hit is only returned when the bytes it depends on (its reach, plus one byte of
        context for end assertions) are in ``buf``, or at the end of the stream.
        """
        while True:
            found = self.locator.search(buf, pos)
            if found is None:
                return None
            start = found.start()
            if not final and start >= safe_end:
                return None
            # The unanchored search never skips a start where the cut-off match exists (the
            # same span matches there too: RE2 has no look-around), so it is a sound locator;
            # the anchored match within ``reach`` (RE2 still sees the bytes after it as
            # context for \b and $) defines the result.
            hit = self._identify(buf, start, min(len(buf), start + self.reach))
            if hit is not None:
                return hit
            pos = start + 1

    def _identify(self, buf: bytes, start: int, end: int) -> _Hit | None:
        for branch in self.branches:
            found = branch.regex.match(buf, start, end)
            if found is None:
                continue
            stop = found.end()
            cut = (start, stop)
            if branch.secret_group is not None and found.span(branch.secret_group)[0] >= 0:
                cut = found.span(branch.secret_group)
            if cut[1] == cut[0]:  # empty (custom patterns only): no hit at this start
                return None
            rule = branch.rule or self._owner(buf[start:stop])
            return _Hit(start, stop, cut[0], cut[1], rule, stop == start + self.reach)
        return None

    def _owner(self, matched: bytes) -> str:
        """The rule of a literal match, which may carry ANSI codes or a line wrap inside."""
        for form in normalized(matched):
            if form in self.owners:
                return self.owners[form]
        return "secret"  # unreachable: every literal match normalises to a registered form


def _secret_group(regex: _Regex) -> int | None:
    index = regex.groupindex.get(b"secret")
    return index if index is not None else regex.groupindex.get("secret")


def _literal_groups(rules: Sequence[Rule]) -> tuple[list[list[Form]], dict[bytes, str]]:
    """Every registered form once (longest first), split into groups RE2 can compile, and the
    rule that owns each form."""
    owners: dict[bytes, str] = {}
    forms: list[Form] = []
    for rule in rules:
        for form in rule.literals:
            if form.data not in owners:
                owners[form.data] = rule.name
                forms.append(form)
    forms.sort(key=lambda form: (-len(form.data), form.data))
    groups: list[list[Form]] = []
    size = 0
    for form in forms:
        if not groups or size + len(form.source()) > _LITERAL_SOURCE_BUDGET:
            groups.append([])
            size = 0
        groups[-1].append(form)
        size += len(form.source()) + 1
    return groups, owners


def _scanner(
    sources: Sequence[tuple[bytes, str | None]], reach: int, owners: Mapping[bytes, str]
) -> _Scanner:
    locator = _re2_compile(b"|".join(b"(?:" + source + b")" for source, _ in sources), False)
    branches = []
    for source, name in sources:
        regex = _re2_compile(source)
        branches.append(_Branch(regex, name, _secret_group(regex)))
    return _Scanner(locator, branches, reach, owners)


def _compile_scanners(rules: Sequence[Rule]) -> tuple[_Scanner, ...]:
    """One combined scanner for literals and built-ins, plus one per custom pattern.

    Thousands of registered values (a big plan's sensitive strings) are split over several
    literal scanners; at an equal start the earlier scanner (longer forms) wins.
    """
    groups, owners = _literal_groups(rules)
    shapes = [(rule.source, rule) for rule in rules if not rule.literals and not rule.custom]
    scanners: list[_Scanner] = []
    for index, group in enumerate(groups or [[]]):
        sources: list[tuple[bytes, str | None]] = []
        if group:
            sources.append((b"|".join(form.source() for form in group), None))
        reach = max((form.max_len for form in group), default=1)
        if index == 0:
            sources += [(source, rule.name) for source, rule in shapes]
            reach = max([reach, *(rule.max_len for _, rule in shapes)])
        if sources:
            scanners.append(_scanner(sources, reach, owners))
    for rule in rules:
        if rule.custom:
            scanners.append(_scanner([(rule.source, rule.name)], rule.max_len, {}))
    return tuple(scanners)


def marker(rule_name: str) -> bytes:
    """The replacement text; it carries the rule name, never the value."""
    return b"[REDACTED:" + rule_name.encode("utf-8", "surrogateescape") + b"]"


class StreamRedactor:
    """Redacts a byte stream fed in arbitrary chunks; output is independent of the chunking."""

    def __init__(self, ruleset: RuleSet, *, scan_block: int | None = None) -> None:
        """``scan_block``: scan once this many new bytes are buffered (tests use tiny ones)."""
        self._scanners = ruleset._scanners
        self._continuation = ruleset._continuation
        self._open = False  # a private key was cut at the cap right where _buf's decided part ends
        self.counts: Counter[str] = Counter()
        self._buf = b""  # [context byte][undecided bytes]
        self._pos = 0  # start of the undecided bytes in _buf
        self._pending: list[bytes] = []
        self._pending_size = 0
        # The carry (up to max_match) is rescanned each block: keep blocks well above it.
        self._minimum_block = scan_block or max(SCAN_BLOCK, 4 * ruleset.max_match)

    @property
    def buffered_bytes(self) -> int:
        """Bytes held back right now (bounded by max_match + SCAN_BLOCK + one chunk)."""
        return len(self._buf) - self._pos + self._pending_size

    def feed(self, chunk: bytes) -> bytes:
        """Take the next chunk; return the redacted bytes that are final (may be empty)."""
        if chunk:
            self._pending.append(bytes(chunk))
            self._pending_size += len(chunk)
        if self._pending_size < self._minimum_block:
            return b""
        return self._scan(final=False)

    def flush(self) -> bytes:
        """End of stream: return the rest, redacted. The redactor can then be reused."""
        out = self._scan(final=True)
        self._buf, self._pos, self._open = b"", 0, False
        return out

    def _scan(self, *, final: bool) -> bytes:
        buf = self._buf + b"".join(self._pending)
        self._pending, self._pending_size = [], 0
        pos, size = self._pos, len(buf)
        out: list[bytes] = []
        safe_ends = [size - scanner.reach - 1 for scanner in self._scanners]
        hits: list[_Hit | None] = [None] * len(self._scanners)
        stale = [True] * len(self._scanners)
        while True:
            if self._open:
                # The rest of a private key cut at the cap: its body, in capped steps too.
                step = self._continue_key(buf, pos, final)
                if step is None:  # not decidable before more bytes arrive
                    break
                pos = step
                continue
            best: _Hit | None = None
            bound = size
            for index, scanner in enumerate(self._scanners):
                hit = hits[index]
                if stale[index] or (hit is not None and hit.start < pos):
                    hit = hits[index] = scanner.find(buf, pos, safe_ends[index], final)
                    stale[index] = False
                if hit is None:
                    if not final:
                        bound = min(bound, safe_ends[index])
                elif best is None or hit.start < best.start:  # ties: earlier scanner wins
                    best = hit
            if best is not None and best.start < bound:
                out += (buf[pos : best.cut_start], marker(best.rule), buf[best.cut_end : best.end])
                self.counts[best.rule] += 1
                pos = best.end
                self._open = best.capped and best.rule == PEM_RULE and not _ends_key(buf, pos)
                continue
            emit_to = size if final else max(pos, min(bound, best.start if best else bound))
            out.append(buf[pos:emit_to])
            pos = emit_to
            break
        keep = max(pos - 1, 0)  # one byte of context for \b and ^ at the next start
        self._buf, self._pos = buf[keep:], pos - keep
        return b"".join(out)

    def _continue_key(self, buf: bytes, pos: int, final: bool) -> int | None:
        """Where the continued private key ends (``pos``: it does not go on), or None."""
        assert self._continuation is not None
        if not final and pos + LONG_MATCH_CAP + 1 > len(buf):
            return None
        found = self._continuation.match(buf, pos, min(len(buf), pos + LONG_MATCH_CAP))
        end = found.end() if found is not None else pos
        self._open = end == pos + LONG_MATCH_CAP and not _ends_key(buf, end)
        return end


def _ends_key(buf: bytes, end: int) -> bool:
    return buf[max(end - 5, 0) : end] == b"-----"


def redact_bytes(data: bytes, ruleset: RuleSet) -> tuple[bytes, Counter[str]]:
    """Redact a whole byte string (same result as streaming it in any chunks)."""
    redactor = StreamRedactor(ruleset, scan_block=len(data) + 1)
    out = redactor.feed(data) + redactor.flush()
    return out, redactor.counts


def redact_text(text: str, ruleset: RuleSet) -> tuple[str, Counter[str]]:
    """Redact a string (argv items, JSON string values)."""
    out, counts = redact_bytes(text.encode("utf-8", "surrogateescape"), ruleset)
    # A custom pattern may cut a multi-byte character in half; "replace" keeps the result
    # valid text for JSON records.
    return out.decode("utf-8", "replace"), counts
