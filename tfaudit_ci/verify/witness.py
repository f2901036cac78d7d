"""Cross-check a chain against its witness (docs/witness.md). Pure: no I/O.

In: facts about the chain (the seqs that hold a record, the SHA-256 of those read, the seqs
verified), the witness's listing (the bytes of every version under the stream's checkpoint
prefix, read by ``tfaudit_ci.witness.read_listing``) and heads gathered elsewhere
(``--head-from``). Out: every problem, CloudTrail style. Nothing here raises on hostile
input: junk, oversized, deeply nested or forged checkpoints are findings.

Codes: ``witness-mismatch`` (a checkpoint or head disagrees with the record in its slot, or a
checkpoint slot was written twice with different statements), ``truncated`` (the witness
saw seqs beyond the chain's head), ``witness-chain`` (a checkpoint's link to its predecessor
does not resolve), ``witness-invalid``, ``witness-signature``, ``witness-unreadable``, and
``unwitnessed`` (records without a checkpoint: a warning, an error under ``--require-witness``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tfaudit_ci.canonical import sha256_hex
from tfaudit_ci.signing import Verifier
from tfaudit_ci.verify.model import Code, Problem, error, warning
from tfaudit_ci.witness import (
    Checkpoint,
    describe_ranges,
    parse_checkpoint,
    ranges,
    seq_from_checkpoint_key,
)


@dataclass(frozen=True)
class CheckpointVersion:
    """One version of a checkpoint key as listed: its bytes (None when deleted, unreadable
    or over the cap, with ``error`` saying which)."""

    version_id: str
    data: bytes | None
    deleted: bool = False
    error: str | None = None


@dataclass
class WitnessListing:
    uri: str
    slots: dict[str, list[CheckpointVersion]]  # key -> its versions, oldest first
    error: str | None = None  # the listing itself failed


@dataclass(frozen=True)
class HeadClaim:
    """A (seq, record sha256) pair seen elsewhere, e.g. in a CI job's log."""

    seq: int
    sha256: str
    source: str  # FILE:LINE


@dataclass(frozen=True)
class ChainFacts:
    present: frozenset[int]  # seqs whose slot holds a record
    record_sha256: Mapping[int, str]  # SHA-256 of each record read
    checked: Sequence[int]  # the seqs verified (the window)

    @classmethod
    def of(
        cls,
        records: Mapping[int, tuple[bytes | None, Any]],
        present: Sequence[int],
        checked: Sequence[int],
    ) -> ChainFacts:
        shas = {seq: sha256_hex(data) for seq, (data, _) in records.items() if data is not None}
        return cls(frozenset(present), shas, list(checked))


@dataclass
class Findings:
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    witnessed: frozenset[int] = frozenset()  # seqs with a valid checkpoint


def _winners(
    listing: WitnessListing, stream: str, verifier: Verifier | None, problems: list[Problem]
) -> tuple[dict[int, Checkpoint], dict[int, str]]:
    """(valid checkpoints by seq, SHA-256 of every slot's first version by seq)."""
    valid: dict[int, Checkpoint] = {}
    slot_sha: dict[int, str] = {}
    for key, versions in sorted(listing.slots.items()):
        seq = seq_from_checkpoint_key(stream, key)
        if seq is None:
            problems.append(
                error(
                    Code.WITNESS_INVALID,
                    "an object in the witness that tfaudit never writes",
                    key=key,
                )
            )
            continue
        real = [v for v in versions if not v.deleted]
        if not real:
            problems.append(
                error(
                    Code.WITNESS_CHAIN,
                    "the checkpoint was deleted (only delete markers)",
                    seq=seq,
                    key=key,
                )
            )
            continue
        if len(real) < len(versions):
            problems.append(
                warning(
                    Code.DELETE_MARKER,
                    "someone tried to delete the checkpoint (its first version is intact)",
                    seq=seq,
                    key=key,
                )
            )
        first = real[0]
        if first.data is None:
            problems.append(
                error(
                    Code.WITNESS_INVALID,
                    f"the checkpoint {first.error or 'is unreadable'}",
                    seq=seq,
                    key=key,
                )
            )
            continue
        slot_sha[seq] = sha256_hex(first.data)
        parsed = parse_checkpoint(first.data, stream=stream, seq=seq)
        if isinstance(parsed, str):
            problems.append(
                error(Code.WITNESS_INVALID, f"the checkpoint {parsed}", seq=seq, key=key)
            )
            continue
        problems.extend(_later_versions(parsed, real[1:], stream, seq, key))
        if verifier is not None:
            problem = verifier.check(parsed.signature, parsed.message)
            if problem is not None:
                problems.append(
                    error(Code.WITNESS_SIGNATURE, f"checkpoint: {problem}", seq=seq, key=key)
                )
                continue
        valid[seq] = parsed
    return valid, slot_sha


def _later_versions(
    first: Checkpoint, later: Sequence[CheckpointVersion], stream: str, seq: int, key: str
) -> list[Problem]:
    """A checkpoint slot written again: the same statement is harmless, another is a fork."""
    problems = []
    for version in later:
        parsed = (
            parse_checkpoint(version.data, stream=stream, seq=seq)
            if version.data is not None
            else (version.error or "is unreadable")
        )
        if isinstance(parsed, str):
            problems.append(
                error(
                    Code.WITNESS_INVALID,
                    f"a later version of the checkpoint {parsed}",
                    seq=seq,
                    key=key,
                )
            )
        elif parsed.record_sha256 != first.record_sha256:
            problems.append(
                error(
                    Code.WITNESS_MISMATCH,
                    f"forked checkpoint: a later version vouches for record sha256 "
                    f"{parsed.record_sha256}, the first for {first.record_sha256}",
                    seq=seq,
                    key=key,
                )
            )
    return problems


def _links(valid: Mapping[int, Checkpoint], slot_sha: Mapping[int, str]) -> list[Problem]:
    problems = []
    for seq, checkpoint in sorted(valid.items()):
        prev = checkpoint.prev
        if prev is None:
            continue
        found = slot_sha.get(prev.seq)
        if found is None:
            problems.append(
                error(
                    Code.WITNESS_CHAIN,
                    f"the checkpoint links to the checkpoint of seq {prev.seq}, which the witness "
                    "does not hold (deleted, or never readable)",
                    seq=seq,
                )
            )
        elif found != prev.sha256:
            problems.append(
                error(
                    Code.WITNESS_CHAIN,
                    f"the checkpoint links to the checkpoint of seq {prev.seq} with sha256 "
                    f"{prev.sha256}, but that slot's bytes hash to {found} (altered or replaced)",
                    seq=seq,
                )
            )
    return problems


def _against_chain(
    facts: ChainFacts, valid: Mapping[int, Checkpoint], heads: Sequence[HeadClaim], uri: str
) -> list[Problem]:
    head = max(facts.present, default=-1)
    claims: list[tuple[int, str, str]] = [
        (seq, cp.record_sha256, f"the checkpoint in {uri}") for seq, cp in valid.items()
    ]
    claims += [(h.seq, h.sha256, f"the head from {h.source}") for h in heads]
    problems = []
    beyond = sorted({seq for seq, _, _ in claims if seq > head})
    if beyond:
        newest = beyond[-1]
        sources = sorted({source for seq, _, source in claims if seq == newest})
        chain_end = f"seq {head}" if head >= 0 else "nothing (it is empty)"
        problems.append(
            error(
                Code.TRUNCATED,
                f"{' and '.join(sources)} saw seq {newest}, but the chain ends at {chain_end}: "
                f"{describe_ranges([(head + 1, newest)])} missing (a truncated tail, deleted "
                "newest records, or a re-created store)",
                seq=head + 1,
            )
        )
    for seq, sha, source in sorted(claims):
        if seq > head:
            continue
        if seq not in facts.present:
            problems.append(
                error(
                    Code.WITNESS_MISMATCH,
                    f"{source} vouches for record sha256 {sha}, but the chain has no record "
                    "at this seq",
                    seq=seq,
                )
            )
            continue
        found = facts.record_sha256.get(seq)
        if found is not None and found != sha:
            problems.append(
                error(
                    Code.WITNESS_MISMATCH,
                    f"the record's bytes hash to {found}, but {source} saw {sha}: the record "
                    "was rewritten after it was witnessed (or the store was re-created)",
                    seq=seq,
                )
            )
    return problems


def _unwitnessed(
    facts: ChainFacts, valid: Mapping[int, Checkpoint], require: bool, uri: str
) -> list[Problem]:
    newest = max(valid, default=-1)
    lacking = [seq for seq in facts.checked if seq in facts.present and seq not in valid]
    problems = []
    for first, last in ranges(lacking):
        which = describe_ranges([(first, last)])
        if newest > last:
            why = (
                f"covered only through the hash chain by the checkpoint of seq {newest} "
                "(`tfaudit witness-sync` leaves such gaps as they are)"
            )
        else:
            why = (
                "nothing after them is witnessed, so a truncation or rewrite here would go "
                "unnoticed (`tfaudit witness-sync` backfills them)"
            )
        text = ("" if first == last else f"{which}: ") + f"no checkpoint in {uri}; {why}"
        make = error if require else warning
        problems.append(make(Code.UNWITNESSED, text, seq=first))
    return problems


def check_witness(
    facts: ChainFacts,
    listing: WitnessListing | None,
    heads: Sequence[HeadClaim],
    *,
    stream: str,
    verifier: Verifier | None,
    require: bool,
) -> Findings:
    """Every problem the witness (and ``heads``) reveal about the chain in ``facts``."""
    findings = Findings()
    valid: dict[int, Checkpoint] = {}
    uri = listing.uri if listing is not None else "the witness"
    if listing is not None and listing.error is not None:
        findings.problems.append(
            error(Code.WITNESS_UNREADABLE, f"the witness {uri} cannot be listed: {listing.error}")
        )
    elif listing is not None:
        valid, slot_sha = _winners(listing, stream, verifier, findings.problems)
        findings.problems.extend(_links(valid, slot_sha))
        findings.problems.extend(_unwitnessed(facts, valid, require, uri))
        newest = f", newest seq {max(valid)}" if valid else ""
        findings.notes.append(f"witness {uri}: {len(valid)} valid checkpoints{newest}")
        if verifier is None:
            findings.notes.append("checkpoint signatures not checked (no trusted key)")
    if heads:
        findings.notes.append(f"{len(heads)} head(s) from --head-from compared")
    findings.problems.extend(_against_chain(facts, valid, heads, uri))
    findings.witnessed = frozenset(valid)
    return findings


@dataclass
class WitnessCheck:
    """What ``verify`` (and ``witness-sync``) check a chain against; the walk calls
    ``check`` with its facts once it has read the records."""

    stream: str
    listing: WitnessListing | None
    heads: Sequence[HeadClaim] = ()
    verifier: Verifier | None = None
    require: bool = False
    facts: ChainFacts | None = None  # the facts last checked (witness-sync backfills from them)
    findings: Findings | None = None

    def check(self, facts: ChainFacts) -> Findings:
        self.facts = facts
        self.findings = check_witness(
            facts,
            self.listing,
            self.heads,
            stream=self.stream,
            verifier=self.verifier,
            require=self.require,
        )
        return self.findings
