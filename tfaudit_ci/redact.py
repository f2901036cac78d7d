"""Streaming redaction of secrets in command output (pure logic, no I/O).

Logs end up in WORM storage where a leaked secret cannot be erased, so everything written to
the spool passes through a :class:`StreamRedactor` first.

Matching semantics (identical for any chunking of the input):

* Rules are tried at each position in priority order: env-secret literals (longest first),
  then the built-in token shapes, then custom patterns. The leftmost match wins; at the same
  start the higher-priority rule wins; scanning resumes after the match (no overlaps).
* Every match is cut at a bounded reach (``Rule.max_len``: exact for fixed shapes,
  ``LONG_MATCH_CAP`` for open-ended ones such as private keys, ``CUSTOM_MAX_MATCH`` for custom
  patterns such as ``\\S+``). That is what lets the stream be cut anywhere: a match is only
  committed once the bytes it depends on are buffered, so the carry never exceeds
  ``RuleSet.max_match`` (+ one block).
* A rule may redact only part of its match: a group named ``secret`` (``label=(?P<secret>…)``)
  keeps the label readable and replaces just the value.

Matching runs on RE2 (google-re2) in Latin-1 mode, one combined DFA scan for all literal and
built-in rules: Python's ``re`` tries every alternative at every position, which is ~50x slower
on an alternation like this one. Patterns therefore use the RE2/Python common syntax (no
look-around, no back-references).
"""

from __future__ import annotations

import base64
import importlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast
from urllib.parse import quote, quote_plus

from tfaudit_ci.errors import ConfigError

# Values shorter than this are not treated as secrets: a 3-character "secret" such as "dev" or
# "true" would redact random words all over the log and make it useless, while offering no real
# protection (such values are guessable anyway).
MIN_SECRET_LENGTH = 8
# Custom patterns may be unbounded; their matches are cut here so the carry stays bounded.
CUSTOM_MAX_MATCH = 4096
# Built-in rules with open-ended bodies (private keys, JWTs, Authorization values) are cut
# here: 16 KiB holds an RSA-8192 PEM key. The DFA scans an open-ended body at full speed,
# where a counted repetition of this size would build one DFA state per byte.
LONG_MATCH_CAP = 16384
# The stream is scanned in blocks of at least this many new bytes (amortises the rescan of the
# carry); memory is bounded by max_match + SCAN_BLOCK + the size of one fed chunk.
SCAN_BLOCK = 256 * 1024
_RE2_MAX_MEM = 64 << 20

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


# PEM body characters, including the header lines of encrypted keys (Proc-Type: 4,ENCRYPTED)
# and JSON-escaped newlines (\n). A dash is only taken before a letter or digit, so the body
# stops right at the "-----END" line; without an END line, a bounded stretch of key-like text
# after BEGIN is still redacted.
_PEM_BODY = r"(?:[A-Za-z0-9+/=\\\r\n\t :,]|-[A-Za-z0-9])"
_PEM_LABEL = r"[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----"
_PEM = rf"-----BEGIN{_PEM_LABEL}{_PEM_BODY}*(?:-----END{_PEM_LABEL})?"
_B64URL = "[A-Za-z0-9_-]"
_QUOTE = r"(?:\\?[\"'])?"  # an optional quote, possibly JSON-escaped (\")
_ASSIGN = r"[ \t]{0,4}(?:=>|[:=])[ \t]{0,4}"

# (name, source, max_len). Order is priority at equal start positions. max_len is checked
# against Python's own width computation in the tests.
_BUILTIN_SHAPES: tuple[tuple[str, str, int], ...] = (
    ("private-key", _PEM, LONG_MATCH_CAP),
    (
        "aws-access-key-id",
        r"(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA|ASCA)[A-Z0-9]{16}",
        20,
    ),
    (
        "aws-secret-access-key",
        r"(?i:aws_?secret_?access_?key|secret_?access_?key|aws_?secret_?key|secret_?key)"
        rf"{_QUOTE}{_ASSIGN}{_QUOTE}(?P<secret>[A-Za-z0-9/+]{{40}})",
        75,
    ),
    ("github-token", r"gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,251}", 262),
    (
        "gitlab-token",
        r"(?:glpat|gldt|glrt|glptt|glcbt|glft|glimt|glsoat|gloas|glagent)-[A-Za-z0-9_-]{20,250}",
        258,
    ),
    ("slack-token", r"xox[baprs]-[A-Za-z0-9-]{10,250}", 255),
    (
        "jwt",
        rf"eyJ{_B64URL}{{4,}}\.{_B64URL}{{4,}}\.{_B64URL}*",
        LONG_MATCH_CAP,
    ),
    (
        "azure-account-key",
        r"(?:AccountKey|SharedAccessKey)=(?P<secret>[A-Za-z0-9+/]{20,200}={0,2})",
        218,
    ),
    (
        "authorization-header",
        r"(?i:authorization)[\"'\]]?[ \t]{0,4}[:=][ \t]{0,4}[\[\"']{0,2}"
        r"(?i:bearer|basic|token)[ \t]{1,4}(?P<secret>[A-Za-z0-9._~+/=-]{8,})",
        LONG_MATCH_CAP,
    ),
)

# --- secret environment variable names -------------------------------------------------------

_SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASSPHRASE", "CREDENTIAL", "JWT")
_SECRET_KEY_SUFFIXES = (
    "PRIVATE_KEY", "API_KEY", "APIKEY", "ACCESS_KEY", "SECRET_KEY", "ACCOUNT_KEY", "MASTER_KEY",
    "SIGNING_KEY", "ENCRYPTION_KEY", "CLIENT_KEY", "SHARED_KEY", "SAS_KEY", "AUTH_KEY",
    "LICENSE_KEY", "HMAC_KEY", "SSH_KEY", "DEPLOY_KEY", "SESSION_KEY", "STORAGE_KEY",
    "SUBSCRIPTION_KEY", "CONSUMER_KEY",
)  # fmt: skip
# Names whose values are locations or identifiers, not credentials, even though they contain a
# secret-looking word (ACTIONS_ID_TOKEN_REQUEST_URL, AWS_WEB_IDENTITY_TOKEN_FILE, …).
_PUBLIC_SUFFIXES = ("_URL", "_URI", "_FILE", "_PATH", "_DIR", "_ENDPOINT", "_ID", "_NAME", "_TYPE")
_PUBLIC_NAMES = frozenset({"GOOGLE_APPLICATION_CREDENTIALS", "AWS_ACCESS_KEY_ID"})
_TF_VAR_WORDS = ("secret", "password", "passwd", "token", "key", "credential")


def is_secret_env_name(name: str) -> bool:
    """Whether an environment variable's value should be treated as a secret (by its name)."""
    upper = name.upper()
    if upper.startswith("TF_VAR_"):
        return any(word in upper[7:].lower() for word in _TF_VAR_WORDS)
    if upper.startswith("TF_TOKEN_"):  # Terraform registry/host credentials
        return True
    if upper in _PUBLIC_NAMES or upper.endswith(_PUBLIC_SUFFIXES):
        return False
    if any(word in upper for word in _SECRET_WORDS):
        return True
    return upper.endswith(_SECRET_KEY_SUFFIXES) or upper == "KEY"


def _base64_forms(raw: bytes) -> set[bytes]:
    """Base64 (standard and url-safe) of ``raw``, on its own and embedded mid-stream.

    Mid-stream, the encoding of ``raw`` depends on its alignment within the encoded data; for
    each of the three alignments only the characters fully determined by ``raw`` are fixed, so
    those are registered too.
    """
    forms: set[bytes] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(raw)
        forms.update({whole, whole.rstrip(b"=")})
        for offset in range(3):
            encoded = encode(b"\0" * offset + raw)
            first = -(-8 * offset // 6)  # ceil: first char made only of raw's bits
            last = (8 * offset + 8 * len(raw)) // 6  # exclusive
            forms.add(encoded[first:last])
    return forms


def secret_forms(value: str) -> tuple[bytes, ...]:
    """The byte forms of an env secret that are redacted, longest first."""
    raw = value.encode("utf-8", "surrogateescape")
    forms = {raw} | _base64_forms(raw)
    for safe in ("", "/"):
        for encoded in (quote(raw, safe=safe), quote_plus(raw, safe=safe)):
            # Percent-encoders disagree on hex case; register both spellings.
            forms.add(encoded.encode("ascii"))
            forms.add(re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), encoded).encode())
    for ensure_ascii in (True, False):
        escaped = json.dumps(value, ensure_ascii=ensure_ascii)[1:-1]
        forms.add(escaped.encode("utf-8", "surrogateescape"))
    kept = (form for form in forms if len(form) >= MIN_SECRET_LENGTH)
    return tuple(sorted(kept, key=lambda form: (-len(form), form)))


def _literal(form: bytes) -> bytes:
    """A regex for exactly ``form`` that Python and RE2 read alike (re.escape's "\\<newline>"
    is not valid RE2)."""
    return b"".join(
        bytes((byte,)) if chr(byte).isalnum() and byte < 128 else b"\\x%02x" % byte for byte in form
    )


# --- rules -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One redaction rule. ``pattern`` is the Python view of the rule's (RE2-compatible) regex."""

    name: str
    pattern: re.Pattern[bytes]
    max_len: int  # longest span the rule can match (custom rules are cut to this)
    literals: tuple[bytes, ...] = ()  # env-secret rules: the exact byte forms, longest first

    @property
    def custom(self) -> bool:
        return self.name.startswith("custom:")


class RuleSet:
    """An immutable set of rules compiled for scanning. Safe to share between threads."""

    def __init__(self, rules: Iterable[Rule], secret_values: Iterable[str] = ()) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self._secret_values = tuple(sorted(set(secret_values)))
        self.max_match: int = max((rule.max_len for rule in self.rules), default=1)
        self._scanners: tuple[_Scanner, ...] = _compile_scanners(self.rules)

    def masked_values(self) -> list[str]:
        """The literal env secret values, e.g. for GitHub's ``::add-mask::``."""
        return list(self._secret_values)


def build_rules(
    env: Mapping[str, str],
    *,
    extra_patterns: Sequence[str] = (),
    extra_env_names: Sequence[str] = (),
) -> RuleSet:
    """Rules for secret env values in ``env``, the built-in shapes and custom patterns."""
    forced = set(extra_env_names)
    rules: list[Rule] = []
    values: list[str] = []
    for name in sorted(env):
        value = env[name]
        if not (name in forced or is_secret_env_name(name)) or len(value) < MIN_SECRET_LENGTH:
            continue
        forms = secret_forms(value)
        pattern = re.compile(b"|".join(map(_literal, forms)))
        rules.append(Rule(f"env:{name}", pattern, max(map(len, forms)), forms))
        values.append(value)
    for name, source, max_len in _BUILTIN_SHAPES:
        rules.append(Rule(name, re.compile(source.encode("ascii")), max_len))
    for index, source in enumerate(extra_patterns, start=1):
        rules.append(_custom_rule(index, source))
    return RuleSet(rules, values)


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
    return Rule(f"custom:{index}", pattern, CUSTOM_MAX_MATCH)


# --- scanning engine -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Hit:
    start: int
    end: int
    cut_start: int  # the part that is replaced by the marker
    cut_end: int
    rule: str


@dataclass(frozen=True)
class _Branch:
    """One rule, matched anchored at a located start. ``rule`` None: the env-literal branch,
    whose rule is looked up from the matched bytes."""

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
            rule = branch.rule or self.owners[buf[start:stop]]
            return _Hit(start, stop, cut[0], cut[1], rule)
        return None


def _secret_group(regex: _Regex) -> int | None:
    index = regex.groupindex.get(b"secret")
    return index if index is not None else regex.groupindex.get("secret")


def _compile_scanners(rules: Sequence[Rule]) -> tuple[_Scanner, ...]:
    """One combined scanner for literals and built-ins, plus one per custom pattern."""
    owners: dict[bytes, str] = {}
    for rule in rules:
        for form in rule.literals:
            owners.setdefault(form, rule.name)
    sources: list[tuple[bytes, str | None]] = []
    if owners:
        ordered = sorted(owners, key=lambda form: (-len(form), form))
        sources.append((b"|".join(map(_literal, ordered)), None))
    for rule in rules:
        if not rule.literals and not rule.custom:
            sources.append((rule.pattern.pattern, rule.name))
    scanners: list[_Scanner] = []
    if sources:
        locator = _re2_compile(b"|".join(b"(?:" + source + b")" for source, _ in sources), False)
        branches = []
        for source, name in sources:
            regex = _re2_compile(source)
            branches.append(_Branch(regex, name, _secret_group(regex)))
        reach = max(rule.max_len for rule in rules if not rule.custom)
        scanners.append(_Scanner(locator, branches, reach, owners))
    for rule in rules:
        if rule.custom:
            regex = _re2_compile(rule.pattern.pattern)
            branch = _Branch(regex, rule.name, _secret_group(regex))
            locator = _re2_compile(rule.pattern.pattern, False)
            scanners.append(_Scanner(locator, [branch], rule.max_len, {}))
    return tuple(scanners)


def marker(rule_name: str) -> bytes:
    """The replacement text; it carries the rule name, never the value."""
    return b"[REDACTED:" + rule_name.encode("utf-8", "surrogateescape") + b"]"


class StreamRedactor:
    """Redacts a byte stream fed in arbitrary chunks; output is independent of the chunking."""

    def __init__(self, ruleset: RuleSet, *, scan_block: int | None = None) -> None:
        """``scan_block``: scan once this many new bytes are buffered (tests use tiny ones)."""
        self._scanners = ruleset._scanners
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
        self._buf, self._pos = b"", 0
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
                continue
            emit_to = size if final else max(pos, min(bound, best.start if best else bound))
            out.append(buf[pos:emit_to])
            pos = emit_to
            break
        keep = max(pos - 1, 0)  # one byte of context for \b and ^ at the next start
        self._buf, self._pos = buf[keep:], pos - keep
        return b"".join(out)


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
