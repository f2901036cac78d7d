"""One record's own checks, for ``tfaudit show``: verify's per-record checks run on one slot,
grouped and marked pass / fail / warn / skip, each with its reasons.

Nothing here re-implements a check; each comes from ``tfaudit_ci.verify``: the bytes
(``decode_fetched``), schema, location, prev link, time and signature (``content_problems``),
delete markers and the slot's other versions (``layout.slot_problems``,
``extra_version_problems``), artifacts (``artifact_problems``), objects the record does not
pin (``layout.unpinned_problems``), locks (``record_lock_problems``) and identity evidence
(``identity_problems``). ``tfaudit verify`` adds what needs the whole chain (gaps, burned
slots, orphans, the witness).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tfaudit_ci import slots
from tfaudit_ci.identity import IDENTITY_ARTIFACT
from tfaudit_ci.identity_verify import identity_problems
from tfaudit_ci.record import chain_key, utc_now
from tfaudit_ci.record_limits import MAX_RECORD_BYTES
from tfaudit_ci.stores.base import VersionInfo
from tfaudit_ci.trail.binding import PlanBinding
from tfaudit_ci.trail.reader import TrailReader
from tfaudit_ci.verify import checks, layout
from tfaudit_ci.verify.model import ERROR, Code, Fetched, Problem, VerifyOptions, error
from tfaudit_ci.verify.reader import EVIDENCE_LIMIT, parallel_map

State = Literal["pass", "fail", "warn", "skip"]
MARKS: dict[State, str] = {"pass": "✓", "fail": "✗", "warn": "!", "skip": "-"}

# verify problem codes -> the check of ``show`` they belong to (others: "record").
_GROUPS = {
    Code.PREV_LINK: "prev",
    Code.PREV_MISMATCH: "prev",
    Code.PREV_UNCHECKED: "prev",
    Code.FORK: "prev",
    Code.SIGNATURE: "signature",
    Code.SIGNATURE_UNCHECKED: "signature",
}
# A race loser is appended again within a few slots: its run folder is looked for there.
RACE_LOOKAHEAD = 8


@dataclass(frozen=True)
class CheckResult:
    name: str
    state: State
    reasons: tuple[str, ...] = ()

    @property
    def mark(self) -> str:
        return MARKS[self.state]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "reasons": list(self.reasons)}


def from_problems(name: str, problems: Sequence[Problem], passed: str) -> CheckResult:
    if any(p.severity is ERROR for p in problems):
        return CheckResult(name, "fail", tuple(p.message for p in problems))
    if problems:
        return CheckResult(name, "warn", tuple(p.message for p in problems))
    return CheckResult(name, "pass", (passed,))


def from_texts(name: str, texts: Sequence[str], passed: str) -> CheckResult:
    return (
        CheckResult(name, "fail", tuple(texts)) if texts else CheckResult(name, "pass", (passed,))
    )


def binding_check(binding: PlanBinding) -> CheckResult:
    return CheckResult("reviewed-plan", "pass" if binding.ok else "fail", (binding.message,))


def overall(results: Iterable[CheckResult]) -> bool:
    return all(r.state != "fail" for r in results)


@dataclass(frozen=True)
class _Version:
    """One version of a chain slot as read (its bytes up to the record cap)."""

    info: VersionInfo
    fetched: Fetched


class RecordChecker:
    """Runs the checks of one slot, reading what they need (the slot's versions, the slot its
    ``prev`` names, the artifacts, the run folder's listing) in parallel through ``reader``.

    ``options`` are verify's: the policy, the trusted key and JWKS, whether locks are checked
    (``locking.verify_locks``) and how far concurrent runs may overlap.
    """

    def __init__(self, reader: TrailReader, options: VerifyOptions) -> None:
        self.reader = reader
        self.options = options
        self.stream = reader.stream
        self.now = options.now or utc_now()

    def run(self, seq: int, head: int) -> list[CheckResult]:
        try:
            return self._run(seq, head)
        except Exception as exc:  # hostile content is a finding, never a crash
            reason = f"could not be checked: {type(exc).__name__}: {exc}"[:300]
            return [CheckResult("record", "fail", (reason,))]

    def _run(self, seq: int, head: int) -> list[CheckResult]:
        listed, versions = self._versions(seq)
        winner = versions[0] if versions else None
        if winner is None:
            return [CheckResult("record", "fail", ("the slot holds no version of a record",))]
        record, problems = checks.decode_fetched(seq, winner.fetched)
        pred = self._pred(seq, record)
        if record is not None:
            problems += checks.content_problems(
                seq,
                winner.fetched.sha256 or "",
                record,
                pred,
                stream=self.stream,
                copies={},
                written=winner.info.last_modified,
                max_overlap=self.options.max_overlap,
                verifier=self.options.verifier,
            )
        grouped: dict[str, list[Problem]] = {"record": [], "prev": [], "signature": []}
        for problem in problems:
            grouped[_GROUPS.get(problem.code, "record")].append(problem)
        record_check = from_problems(
            "record", grouped["record"], "canonical, schema, location, time hold"
        )
        if record is None:
            unchecked = ("not checked: the slot holds no record",)
            return [
                record_check,
                CheckResult("prev", "skip", unchecked),
                CheckResult("signature", "skip", unchecked),
                self._other_versions(seq, head, listed, versions),
            ]
        results = [
            record_check,
            self._prev(seq, record, grouped["prev"]),
            self._signature(grouped["signature"]),
            self._other_versions(seq, head, listed, versions),
        ]
        artifacts, texts = self._artifacts(seq, record)
        results.append(artifacts)
        results.append(self._locks(record, [("record", winner.fetched), *texts]))
        results.append(self._identity(record, texts))
        return results

    # -- reading -------------------------------------------------------------------------------
    def _versions(self, seq: int) -> tuple[list[VersionInfo], list[_Version]]:
        """Slot ``seq``'s listing (delete markers too), and each of its versions read: the
        winner first, then the later ones (none when the slot has no real version)."""
        key = chain_key(self.stream, seq)
        listed = self.reader.store.versions(key)
        winner = slots.winner(listed)
        if winner is None:
            return listed, []
        real = [winner, *(v for v in listed if not v.is_delete_marker and v is not winner)]

        def read(info: VersionInfo) -> _Version:
            return _Version(info, self.reader.fetch(key, info.version_id, keep=MAX_RECORD_BYTES))

        return listed, parallel_map(read, real, self.reader.parallelism)

    def _pred(self, seq: int, record: Mapping[str, Any] | None) -> checks.Neighbour | None:
        """The slot the record's ``prev`` names, as its checks need it (None: ``prev: null``
        or malformed; ``link_problems`` says which)."""
        target = checks.link_target(record) if record is not None else None
        if target is None or not 0 <= target < seq:
            return None
        listed, versions = self._versions(target)
        if not versions:
            return checks.Neighbour(target, bool(listed), None, None)
        winner, *later = versions
        found, _ = checks.decode_fetched(target, winner.fetched)
        superseded = {v.fetched.sha256: v.info.version_id for v in later if v.fetched.sha256}
        return checks.neighbour(
            target,
            winner.fetched.sha256,
            found,
            exists=winner.fetched.state is not None,
            superseded=superseded,
        )

    # -- the checks ----------------------------------------------------------------------------
    def _prev(self, seq: int, record: Mapping[str, Any], problems: list[Problem]) -> CheckResult:
        target = checks.link_target(record)
        if target is None or problems:
            return from_problems("prev", problems, "")
        passed = "first record of the stream" if target < 0 else f"links to seq {target}"
        burned = sorted(checks.burned_entries(record) or {})
        if not burned:
            return CheckResult("prev", "pass", (passed,))
        return CheckResult(
            "prev",
            "warn",
            (
                f"{passed}, skipping burned slot(s) {', '.join(map(str, burned[:20]))}: they held "
                "no valid record when this one was written (evidence of tampering: tfaudit "
                "verify reports each)",
            ),
        )

    def _signature(self, problems: list[Problem]) -> CheckResult:
        verifier = self.options.verifier
        if verifier is None:
            return CheckResult(
                "signature",
                "skip",
                ("not checked: pass a trusted key (--key, --public-key or --kms-key)",),
            )
        return from_problems("signature", problems, f"valid ({verifier.description})")

    def _other_versions(
        self, seq: int, head: int, listed: list[VersionInfo], versions: list[_Version]
    ) -> CheckResult:
        """Delete markers on the slot, and its later versions: retried writes, race losers
        appended again, or forks."""
        winner, *later = versions
        listing = layout.split_listing(self.stream, listed)
        problems = [
            p
            for p in layout.slot_problems(listing, seq, seq, seq)
            if p.code in (Code.DELETED, Code.DELETE_MARKER)
        ]
        folders: dict[str, int] = {}
        if any(v.fetched.sha256 != winner.fetched.sha256 for v in later):
            following = self.reader.slots(list(range(seq + 1, min(seq + RACE_LOOKAHEAD, head) + 1)))
            folders = {s.row.run_folder: s.seq for s in following if s.row.run_folder}
        for version in later:
            problems += checks.extra_version_problems(
                seq,
                version.info.version_id,
                version.fetched.sha256 == winner.fetched.sha256,
                checks.run_folder_of(version.fetched.data),
                folders,
            )
        count = len(versions)
        return from_problems(
            "versions",
            problems,
            "one version: no fork, no overwrite" if count == 1 else f"{count} versions",
        )

    def _artifacts(
        self, seq: int, record: Mapping[str, Any]
    ) -> tuple[CheckResult, list[tuple[str, Fetched]]]:
        """The artifacts against what the record pins, and every object of its run folder
        that it does not pin; also (name, version read) of each artifact, for locks and
        identity."""
        folder = record.get("run_folder")
        entries = record.get("artifacts")
        entries = entries if isinstance(entries, list) else []
        prefix = f"{self.stream}/runs/{folder}/"

        def fetch(entry: Any) -> Fetched | None:
            if not isinstance(entry, Mapping) or not isinstance(entry.get("key"), str):
                return None
            key = str(entry["key"])
            if not checks.safe_key(key) or not key.startswith(prefix):
                return None  # never read what lies outside the record's own run folder
            keep = EVIDENCE_LIMIT if entry.get("name") == IDENTITY_ARTIFACT else 0
            return self.reader.fetch(key, str(entry.get("version_id")), keep=keep)

        fetched = parallel_map(fetch, entries, self.reader.parallelism)
        problems: list[Problem] = []
        read: list[tuple[str, Fetched]] = []
        for entry, item in zip(entries, fetched, strict=True):
            name = str(entry.get("name")) if isinstance(entry, Mapping) else "?"
            found = checks.guarded_texts(
                "artifact",
                functools.partial(
                    checks.artifact_problems, entry, item, stream=self.stream, run_folder=folder
                ),
            )
            problems += [error(Code.ARTIFACT, f"{name[:80]}: {text}", seq=seq) for text in found]
            if item is not None and not found:
                read.append((name, item))
        if not entries:
            problems.append(
                error(Code.ARTIFACT, "the record lists no artifacts (not even its log)", seq=seq)
            )
        problems += checks.guarded(seq, "unpinned", lambda: self._unpinned(seq, folder, entries))
        passed = f"{len(entries)} present, digests match, nothing unpinned in the run folder"
        return from_problems("artifacts", problems, passed), read

    def _unpinned(self, seq: int, folder: Any, entries: list[Any]) -> list[Problem]:
        if not isinstance(folder, str) or not checks.safe_key(folder):
            return []  # the schema check says what is wrong with it
        pins = {
            (str(e.get("key")), str(e.get("version_id"))) for e in entries if isinstance(e, Mapping)
        }
        prefix = f"{self.stream}/runs/{folder}/"
        listing = layout.split_listing(self.stream, self.reader.list_versions(prefix))
        return layout.unpinned_problems(listing, folder, pins, seq)

    def _locks(self, record: Mapping[str, Any], read: list[tuple[str, Fetched]]) -> CheckResult:
        options = self.options
        store = self.reader.store
        check = store.lock_readback if options.check_locks is None else options.check_locks
        if not check:
            why = options.lock_note or f"retention not checked: {store.uri} is not WORM"
            return CheckResult("locks", "skip", (why,))
        texts: list[str] = []
        for name, fetched in read:
            if fetched.state is None:
                continue
            lock = functools.partial(
                checks.record_lock_problems,
                fetched.state,
                record,
                policy=options.policy,
                min_remaining_days=options.min_remaining_days,
                now=self.now,
            )
            texts += [f"{name[:80]}: {text}" for text in checks.guarded_texts("retention", lock)]
        policy = options.policy
        passed = f"locked as policy requires ({policy.lock_mode}, {policy.retention_days} days)"
        return from_texts("locks", texts, passed)

    def _identity(self, record: Mapping[str, Any], read: list[tuple[str, Fetched]]) -> CheckResult:
        summary = record.get("identity")
        if not isinstance(summary, Mapping):
            return CheckResult("identity", "skip", ("the run recorded no identity evidence",))
        if "unavailable" in summary:
            why = str(summary["unavailable"])[:300]
            return CheckResult("identity", "warn", (f"no identity evidence: {why}",))
        evidence = next((f.data for name, f in read if name == IDENTITY_ARTIFACT), None)
        texts = checks.guarded_texts(
            "identity",
            lambda: identity_problems(record, evidence, self.options.trusted_jwks),
        )
        where = "and the trusted JWKS" if self.options.trusted_jwks else "(stored JWKS only)"
        return from_texts("identity", texts, f"OIDC token matches the record {where}")
