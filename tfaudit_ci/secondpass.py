"""The second redaction pass: what the plan (or state) marks sensitive leaves the spooled log.

The first pass redacts the output as it streams, knowing only the registered secrets and the
token shapes. Terraform prints values it does not mark at that moment (a sensitive variable's
earlier value in a destroy diff, a provider response in a trace log), and the plan says
afterwards which strings are sensitive. So, after the command and the plan capture, every
string the plan marks sensitive is registered and the spooled log is redacted again, streamed
in constant memory, before anything is uploaded. The console keeps what terraform printed.

``run`` and ``recover`` both call :func:`apply` on a spool directory; it is idempotent and
records in the spool (``redaction.json``: facts and counts, never a value) what it did.

Where the sensitive values come from, and what happens when they cannot be had:

* ``plan -out=F``: when the command ends, the sha256 of F is recorded if the run wrote F (it
  is newer than the run's start); ``run`` then uses its own capture of F. ``recover`` (after a
  SIGKILL) runs ``show -json F`` again if F still has that sha256, or, when the run died
  before its command ended, if F was written after the run started. A run that wrote no plan
  printed none (terraform writes the plan file before it renders the plan): nothing to learn.
* ``apply F`` / ``show F``: F's sha256 is recorded before the command starts; ``show -json F``
  is run again only if F is unchanged.
* ``output``, ``state pull``... with ``store-state-output``: ``show -json`` of the state right
  after the command (``run`` only; the state may have changed by the time ``recover`` runs).
* Anything else: there is nothing to learn (apply without a saved plan is a documented limit).

When the values are needed but cannot be had (the plan file is gone or changed, ``show -json``
fails, the state cannot be read after the fact), the log is **withheld**: it is not uploaded,
the record says so with its size and the reason, and the file stays in the spool as
``output.log.withheld``. When in doubt, withhold.
"""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tfaudit_ci.capture import sha256_file, show_json
from tfaudit_ci.plan import analyze_plan
from tfaudit_ci.redact import RuleSet, Secret, StreamRedactor, build_rules, secret_rules
from tfaudit_ci.redact_forms import MIN_SECRET_LENGTH, MIN_WORD_LENGTH
from tfaudit_ci.spool import LOG_FILE, WITHHELD_LOG, HashingWriter, read_json, write_json
from tfaudit_ci.stores.base import Digests
from tfaudit_ci.tfargs import TfInvocation

PASS_FILE = "redaction.json"
SENSITIVE_RULE = "sensitive"
CHUNK = 1 << 20
# A plan file written this long before the run's start still counts as written by the run
# (coarse file-system timestamps). Erring this way only redacts more.
FRESH_SLACK_SECONDS = 2.0
_TRACE_LEVELS = frozenset({"TRACE", "DEBUG", "JSON"})

Kind = Literal["none", "plan-out", "plan-in", "state"]
Source = Literal["plan", "state", "none", "withheld"]


@dataclass
class Withheld:
    """Something that was not uploaded, and why. ``bytes`` None: unknown (a killed run)."""

    what: str  # "stdout" | "output.log"
    bytes: int | None
    reason: str


@dataclass
class PassRecord:
    """What the pass did; stored in the spool and in the record. No value, ever."""

    source: Source
    reason: str
    values: int = 0  # sensitive strings registered
    redactions: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass
class Intent:
    """What the run said before and after its command: where sensitive values come from."""

    kind: Kind = "none"
    plan_file: str | None = None
    plan_file_sha256: str | None = None
    started_at: float = 0.0  # epoch seconds
    binary: str = ""
    chdir: str | None = None
    cwd: str = ""
    stdout_withheld: str | None = None  # why stdout is not stored
    stdout_bytes: int | None = None
    finished: bool = False  # the command ended (after_command ran)
    trace: str | None = None  # "TF_LOG=TRACE": the log holds provider traffic
    done: PassRecord | None = None
    version: int = 1


@dataclass
class PassOutcome:
    """The pass's result for the record: ``record_fields()``, the counts and the warnings."""

    record: PassRecord
    withheld: list[Withheld]
    trace: str | None
    log_digests: Digests | None = None  # the rewritten log's digests, when it was rewritten

    @property
    def log_withheld(self) -> bool:
        return self.record.source == "withheld"

    def record_fields(self) -> dict[str, Any]:
        """``redaction`` and ``withheld``, as the record carries them."""
        return {
            "redaction": {
                "second_pass": self.record.source,
                "reason": self.record.reason,
                "sensitive_values": self.record.values,
                "trace_log": self.trace,
                "warnings": list(self.record.warnings),
            },
            "withheld": [asdict(item) for item in self.withheld],
        }

    def messages(self) -> list[str]:
        """One-line warnings for the console and the job summary."""
        lines = list(self.record.warnings)
        if self.trace:
            lines.append(trace_warning(self.trace))
        lines += [
            f"{item.what} was not uploaded ({_size(item.bytes)}): {item.reason}"
            for item in self.withheld
        ]
        return lines


def _size(count: int | None) -> str:
    return "size unknown" if count is None else f"{count} bytes"


def trace_level(env: Mapping[str, str]) -> str | None:
    """``TF_LOG=TRACE`` (or DEBUG/JSON, core or provider) when the log gets terraform's and the
    providers' traffic, None when it does not (no TF_LOG, or TF_LOG_PATH sends it elsewhere)."""
    if env.get("TF_LOG_PATH"):
        return None
    for name in ("TF_LOG", "TF_LOG_PROVIDER", "TF_LOG_CORE"):
        level = env.get(name, "").strip().upper()
        if level in _TRACE_LEVELS:
            return f"{name}={level}"
    return None


def trace_warning(trace: str) -> str:
    return (
        f"{trace}: the log holds provider requests and responses; they are redacted by shape "
        "and by registered values only, so a credential in a format tfaudit does not know "
        "may remain (see docs/redaction.md)"
    )


# --- the spool file --------------------------------------------------------------------------


def _load(spool_dir: Path) -> Intent | None:
    data = read_json(spool_dir / PASS_FILE)
    if data is None:
        return None
    done = data.pop("done", None)
    known = {key: value for key, value in data.items() if key in Intent.__dataclass_fields__}
    intent = Intent(**known)
    if isinstance(done, dict):
        intent.done = PassRecord(**done)
    return intent


def _save(spool_dir: Path, intent: Intent) -> None:
    write_json(spool_dir / PASS_FILE, asdict(intent))


def begin(
    spool_dir: Path,
    inv: TfInvocation,
    cwd: Path,
    env: Mapping[str, str],
    *,
    started_at: dt.datetime,
    stdout_withheld: str | None,
    state_output: bool,
) -> Intent:
    """Record, before the command starts, where its sensitive values will come from.

    ``stdout_withheld``: why the command's stdout is not stored (a state-printing command
    without ``store-state-output``). ``state_output``: it prints state and stdout is stored.
    """
    intent = Intent(
        started_at=started_at.timestamp(),
        binary=inv.binary,
        chdir=inv.chdir,
        cwd=str(cwd),
        stdout_withheld=stdout_withheld,
        trace=trace_level(env),
    )
    base = Path(inv.chdir) if inv.chdir else cwd
    shown = inv.positionals[0] if inv.subcommand == "show" and inv.positionals else None
    if inv.subcommand == "plan" and inv.plan_out:
        intent.kind, intent.plan_file = "plan-out", inv.plan_out
    elif inv.subcommand == "apply" and inv.apply_plan_file:
        intent.kind, intent.plan_file = "plan-in", inv.apply_plan_file
    elif shown is not None and (base / shown).is_file():
        intent.kind, intent.plan_file = "plan-in", str(base / shown)
    elif state_output:
        intent.kind = "state"
    if intent.kind == "plan-in" and intent.plan_file:
        intent.plan_file_sha256 = sha256_file(Path(intent.plan_file))
    _save(spool_dir, intent)
    return intent


def after_command(spool_dir: Path, *, stdout_bytes: int | None) -> None:
    """Record, as soon as the command ends, how much stdout was withheld and which plan file
    (by sha256) this run wrote, if any."""
    intent = _load(spool_dir) or Intent()
    intent.stdout_bytes = stdout_bytes
    intent.finished = True
    if intent.kind == "plan-out" and intent.plan_file and _fresh(Path(intent.plan_file), intent):
        intent.plan_file_sha256 = sha256_file(Path(intent.plan_file))
    _save(spool_dir, intent)


def _fresh(path: Path, intent: Intent) -> bool:
    """Whether ``path`` exists and was written after the run started."""
    try:
        return path.stat().st_mtime >= intent.started_at - FRESH_SLACK_SECONDS
    except OSError:
        return False


# --- the pass --------------------------------------------------------------------------------


def apply(
    spool_dir: Path,
    env: Mapping[str, str],
    *,
    sensitive: frozenset[str] | None = None,
    live: bool = False,
) -> PassOutcome:
    """Redact the spooled log with every string the plan/state marks sensitive, or withhold it.

    ``sensitive``: the values ``run`` already has from its capture (None: find them here).
    ``live``: called right after the command (``run``), so the state it printed is still the
    state; ``recover`` passes False. Idempotent: a pass already done is only reported.
    """
    intent = _load(spool_dir) or Intent()
    digests = None
    if intent.done is None:
        intent.done, digests = _run_pass(spool_dir, intent, env, sensitive, live)
        _save(spool_dir, intent)
    return PassOutcome(intent.done, _withheld(spool_dir, intent), intent.trace, digests)


def _withheld(spool_dir: Path, intent: Intent) -> list[Withheld]:
    items = []
    if intent.stdout_withheld:
        items.append(Withheld("stdout", intent.stdout_bytes, intent.stdout_withheld))
    withheld_log = spool_dir / WITHHELD_LOG
    if intent.done is not None and intent.done.source == "withheld" and withheld_log.exists():
        size = withheld_log.stat().st_size
        items.append(Withheld(LOG_FILE, size, intent.done.reason))
    return items


def _run_pass(
    spool_dir: Path,
    intent: Intent,
    env: Mapping[str, str],
    sensitive: frozenset[str] | None,
    live: bool,
) -> tuple[PassRecord, Digests | None]:
    if sensitive is not None:
        values: frozenset[str] | None = sensitive
        source: Source = "state" if intent.kind == "state" else "plan"
        reason = f"sensitive values of the {source}"
    else:
        values, source, reason = _obtain(intent, env, live)
    log = spool_dir / LOG_FILE
    if values is None:
        if log.exists():
            os.replace(log, spool_dir / WITHHELD_LOG)
        return PassRecord("withheld", reason), None
    if source == "none" or not values:
        return PassRecord(source, reason), None
    secrets, warnings = _sensitive_secrets(values)
    counts: Counter[str] = Counter()
    digests = None
    if secrets and log.exists():
        digests, counts = redact_file(log, RuleSet(secret_rules(secrets)))
    return PassRecord(source, reason, len(values), dict(counts), warnings), digests


def _sensitive_secrets(values: frozenset[str]) -> tuple[list[Secret], list[str]]:
    """Plan-sensitive strings as secrets (the printed forms only), and one warning per kind
    of value that is cut short (they have no names to give)."""
    secrets = [
        Secret(SENSITIVE_RULE, value, full=False)
        for value in sorted(values)
        if len(value.strip()) >= MIN_WORD_LENGTH
    ]
    secrets += [
        Secret(SENSITIVE_RULE, value.strip(), full=False)
        for value in sorted(values)
        if value.strip() != value and len(value.strip()) >= MIN_WORD_LENGTH
    ]
    tiny = sum(1 for value in values if 0 < len(value.strip()) < MIN_WORD_LENGTH)
    short = sum(1 for value in values if MIN_WORD_LENGTH <= len(value.strip()) < MIN_SECRET_LENGTH)
    warnings = []
    if tiny:
        warnings.append(
            f"{tiny} sensitive value(s) of the plan are 1-{MIN_WORD_LENGTH - 1} characters long: "
            "too short to find in the log without redacting all of it, so they are NOT "
            "redacted there (terraform masks them where it marks them)"
        )
    if short:
        warnings.append(
            f"{short} sensitive value(s) of the plan are shorter than {MIN_SECRET_LENGTH} "
            "characters: they are redacted from the log only where they stand as a whole word"
        )
    return secrets, warnings


def _obtain(
    intent: Intent, env: Mapping[str, str], live: bool
) -> tuple[frozenset[str] | None, Source, str]:
    """The sensitive strings (None: needed but not to be had), where from, and why."""
    if intent.kind == "none":
        return frozenset(), "none", "the command neither reads nor writes a saved plan"
    inv = TfInvocation("terraform", intent.binary, None, intent.chdir, None, None, False)
    cwd = Path(intent.cwd or ".")
    rules = build_rules(env)
    if intent.kind == "state":
        if not live:
            return None, "withheld", "the state may have changed since the run printed it"
        shown = show_json(inv, None, env, cwd, rules)
        if isinstance(shown, str):
            return None, "withheld", f"the state's sensitive values are unknown: {shown}"
        return analyze_plan(shown).sensitive, "state", "sensitive values of the state"
    path = Path(intent.plan_file or "")
    unknown = intent.kind == "plan-out" and intent.plan_file_sha256 is None
    if unknown and (intent.finished or not _fresh(path, intent)):
        return frozenset(), "none", "this run wrote no plan, so terraform printed none"
    if not unknown and sha256_file(path) != intent.plan_file_sha256:
        return None, "withheld", f"the plan file {path.name} is gone or changed since the run"
    shown = show_json(inv, path, env, cwd, rules)
    if isinstance(shown, str):
        return None, "withheld", f"the plan's sensitive values are unknown: {shown}"
    return analyze_plan(shown).sensitive, "plan", "sensitive values of the plan"


def _scan_counts(path: Path, ruleset: RuleSet) -> Counter[str]:
    """What redacting ``path`` would replace, without writing anything."""
    redactor = StreamRedactor(ruleset)
    with path.open("rb") as source:
        for chunk in iter(lambda: source.read(CHUNK), b""):
            redactor.feed(chunk)
    redactor.flush()
    return redactor.counts


def redact_file(path: Path, ruleset: RuleSet) -> tuple[Digests | None, Counter[str]]:
    """Redact ``path`` in place, streamed in constant memory; crash-safe (the old file stays
    until the new one is complete and synced). Returns the new file's digests (None: nothing
    matched, the file is untouched) and the counts.

    Most logs hold none of the plan's sensitive values (terraform masks what it marks), so a
    read-only scan comes first; the file is rewritten (written and hashed on the spool
    writer's own thread, beside the redaction) only when something matched."""
    if not _scan_counts(path, ruleset):
        return None, Counter()
    redactor = StreamRedactor(ruleset)
    tmp = path.with_name(f"{path.name}.pass-{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    writer = HashingWriter(tmp)
    try:
        with path.open("rb") as source:
            for chunk in iter(lambda: source.read(CHUNK), b""):
                writer.write(redactor.feed(chunk))
            writer.write(redactor.flush())
        digests = writer.close()  # flushed and fsynced
        if writer.error is not None:
            raise writer.error
        os.replace(tmp, path)
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)
    return digests, redactor.counts
