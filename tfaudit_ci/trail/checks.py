"""One record's own checks, for ``tfaudit show``: the verifier's pure per-record checks,
grouped and marked pass / fail / warn / skip, each with its reasons.

Nothing here re-implements a check: canonical form, location, prev link and signature come
from ``verify.checks.record_problems``; forks from ``extra_version_problems``; artifacts from
``artifact_problems``; locks from ``lock_problems``; identity from ``identity_problems``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tfaudit_ci.canonical import sha256_hex
from tfaudit_ci.identity import IDENTITY_ARTIFACT
from tfaudit_ci.identity_verify import identity_problems
from tfaudit_ci.record import chain_key
from tfaudit_ci.signing import Verifier
from tfaudit_ci.stores.base import ObjectState, Policy
from tfaudit_ci.trail.binding import PlanBinding
from tfaudit_ci.trail.model import safe_record
from tfaudit_ci.trail.reader import SlotRead, TrailReader
from tfaudit_ci.verify import checks
from tfaudit_ci.verify.model import ERROR, Fetched, Problem

State = Literal["pass", "fail", "warn", "skip"]
MARKS: dict[State, str] = {"pass": "✓", "fail": "✗", "warn": "!", "skip": "-"}

# verify problem codes -> the check of ``show`` they belong to (others: "record").
_GROUPS = {
    "prev-link": "prev",
    "prev-mismatch": "prev",
    "prev-unchecked": "prev",
    "fork": "prev",
    "signature": "signature",
    "signature-unchecked": "signature",
}
CHECK_ORDER = ("record", "prev", "signature", "versions", "artifacts", "locks", "identity")


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


@dataclass(frozen=True)
class CheckOptions:
    policy: Policy = field(default_factory=Policy)
    verifier: Verifier | None = None
    trusted_jwks: Mapping[str, Any] | None = None
    now: dt.datetime | None = None


def from_problems(name: str, problems: Sequence[Problem], passed: str) -> CheckResult:
    if any(p.severity == ERROR for p in problems):
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


class RecordChecker:
    """Runs the checks of one slot, reading what they need (the predecessor, the slot's other
    versions, the artifacts) in parallel through ``reader``."""

    def __init__(self, reader: TrailReader, options: CheckOptions) -> None:
        self.reader = reader
        self.options = options
        self.store = reader.store
        self.stream = reader.stream
        self.check_locks = getattr(self.store, "worm", True) is not False

    def run(self, slot: SlotRead) -> list[CheckResult]:
        try:
            return self._run(slot)
        except Exception as exc:  # hostile content is a finding, never a crash
            reason = f"could not be checked: {type(exc).__name__}: {exc}"[:300]
            return [CheckResult("record", "fail", (reason,))]

    def _run(self, slot: SlotRead) -> list[CheckResult]:
        if slot.data is None or slot.version_id is None:
            return [CheckResult("record", "fail", (slot.row.error or "unreadable",))]
        record = safe_record(slot.data)
        if record is None:
            return [CheckResult("record", "fail", ("the record is not a JSON object",))]
        prev = self._neighbour(slot.seq - 1) if slot.seq > 0 else None
        problems = checks.record_problems(
            slot.seq,
            slot.data,
            record,
            stream=self.stream,
            prev=prev,
            copies={},
            verifier=self.options.verifier,
        )
        grouped: dict[str, list[Problem]] = {"record": [], "prev": [], "signature": []}
        for problem in problems:
            grouped[_GROUPS.get(problem.code, "record")].append(problem)
        results = [
            from_problems("record", grouped["record"], "canonical, schema and location hold"),
            from_problems("prev", grouped["prev"], _prev_passed(slot.seq)),
        ]
        if self.options.verifier is None:
            results.append(
                CheckResult(
                    "signature",
                    "skip",
                    ("not checked: pass a trusted key (--key, --public-key or --kms-key)",),
                )
            )
        else:
            results.append(
                from_problems(
                    "signature",
                    grouped["signature"],
                    f"valid ({self.options.verifier.description})",
                )
            )
        results.append(self._versions(slot))
        results.extend(self._artifacts(slot, record))
        return results

    def _neighbour(self, seq: int) -> checks.Neighbour:
        versions = self._versions_of(seq)
        if not versions:
            return checks.Neighbour(seq, None, None)
        (_, winner), *extras = versions
        losers = {sha256_hex(d): vid for vid, d in extras if d is not None}
        record = safe_record(winner)
        return checks.Neighbour(seq, sha256_hex(winner) if winner else None, record, losers)

    def _versions_of(self, seq: int) -> list[tuple[str, bytes | None]]:
        """Every real version of a slot with its bytes, oldest (the winner) first."""
        key = chain_key(self.stream, seq)
        try:
            found = [v for v in self.store.versions(key) if not v.is_delete_marker]
        except Exception:
            return []
        return [(v.version_id, self.reader.fetch(key, v.version_id, keep=True).data) for v in found]

    def _versions(self, slot: SlotRead) -> CheckResult:
        versions = self._versions_of(slot.seq)
        extras = versions[1:]
        if not extras:
            return CheckResult("versions", "pass", ("one version: no fork, no overwrite",))
        # A race loser is appended again within a few slots: look there for its run folder.
        later = self.reader.slots(list(range(slot.seq + 1, slot.seq + 9)))
        folders = {s.row.run_folder: s.seq for s in later if s.row.run_folder}
        problems = checks.extra_version_problems(slot.seq, slot.data, extras, folders)
        return from_problems("versions", problems, "")

    def _artifacts(self, slot: SlotRead, record: Mapping[str, Any]) -> list[CheckResult]:
        entries = record.get("artifacts")
        entries = entries if isinstance(entries, list) else []
        assert slot.version_id is not None
        key = chain_key(self.stream, slot.seq)

        def fetch(entry: Any) -> Fetched | None:
            if not isinstance(entry, Mapping) or not isinstance(entry.get("key"), str):
                return None
            keep = entry.get("name") == IDENTITY_ARTIFACT
            return self.reader.fetch(str(entry["key"]), str(entry.get("version_id")), keep=keep)

        from tfaudit_ci.verify.reader import parallel_map

        own = self.reader.fetch(key, slot.version_id, keep=False)
        fetched = parallel_map(fetch, entries, self.reader.parallelism)
        artifact_texts: list[str] = []
        lock_texts: list[str] = []
        evidence: bytes | None = None
        if own.state is not None:
            lock_texts += [f"record: {t}" for t in self._lock(own.state, record)]
        for entry, item in zip(entries, fetched, strict=True):
            name = entry.get("name") if isinstance(entry, Mapping) else "?"
            found = checks.artifact_problems(
                entry, item, stream=self.stream, run_folder=record.get("run_folder")
            )
            artifact_texts += [f"{name}: {text}" for text in found]
            if item is not None and item.state is not None:
                lock_texts += [f"{name}: {t}" for t in self._lock(item.state, record)]
            if name == IDENTITY_ARTIFACT and item is not None and not found:
                evidence = item.data
        if not entries:
            artifact_texts.append("the record lists no artifacts (not even its output log)")
        results = [
            from_texts("artifacts", artifact_texts, f"{len(entries)} present, digests match")
        ]
        if self.check_locks:
            results.append(
                from_texts("locks", lock_texts, f"locked as policy requires ({self._policy()})")
            )
        else:
            results.append(
                CheckResult("locks", "skip", (f"not checked: {self.store.uri} is not WORM",))
            )
        results.append(self._identity(record, evidence))
        return results

    def _policy(self) -> str:
        policy = self.options.policy
        return f"{policy.lock_mode}, {policy.retention_days} days"

    def _lock(self, state: ObjectState, record: Mapping[str, Any]) -> list[str]:
        if not self.check_locks:
            return []
        retention = record.get("retention")
        recorded = (
            checks.moment(retention.get("retain_until")) if isinstance(retention, Mapping) else None
        )
        return checks.lock_problems(
            state,
            policy=self.options.policy,
            finished_at=checks.moment(record.get("finished_at")),
            recorded_until=recorded,
            min_remaining_days=0,
            now=self.options.now or dt.datetime.now(dt.timezone.utc),
        )

    def _identity(self, record: Mapping[str, Any], evidence: bytes | None) -> CheckResult:
        summary = record.get("identity")
        if not isinstance(summary, Mapping):
            return CheckResult("identity", "skip", ("the run recorded no identity evidence",))
        if "unavailable" in summary:
            return CheckResult(
                "identity", "warn", (f"no identity evidence: {summary['unavailable']}",)
            )
        texts = identity_problems(record, evidence, self.options.trusted_jwks)
        where = "and the trusted JWKS" if self.options.trusted_jwks else "(stored JWKS only)"
        return from_texts("identity", texts, f"OIDC token matches the record {where}")


def _prev_passed(seq: int) -> str:
    return "first record of the stream" if seq == 0 else f"links to seq {seq - 1}"
