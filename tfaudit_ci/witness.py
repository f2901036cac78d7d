"""The independent witness (docs/witness.md): checkpoints of a stream's chain in a second store.

After every append, ``ship_spool`` (so ``run`` and ``recover`` alike) writes a checkpoint to
the witness at ``checkpoints/{stream}/{seq:012d}.json``: a small, signed, canonical statement
that the record at ``seq`` had these bytes, linked to the newest checkpoint below it. The
write is create-only, goes through the same WORM preflight and read-back as the primary's,
and a failure fails the job (exit 22) unless ``witness-required: false``; then the run warns,
and the next record names the checkpoints it could not find (its ``witness`` block).

This module holds the checkpoint format (built and parsed here, checked in
``verify/witness.py``), the writer (``Witness``) and the readers ``verify`` and
``witness-sync`` use (``read_listing``, ``read_heads``).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tfaudit_ci import __version__
from tfaudit_ci.canonical import JsonRejected, canonical_bytes, parse_strict, sha256_hex
from tfaudit_ci.errors import ConfigError, PreflightError, TfauditError, UploadError
from tfaudit_ci.locking import LockDecision, preflight
from tfaudit_ci.record import iso, utc_now
from tfaudit_ci.ship import RETAIN_SLACK, Expected, check_state
from tfaudit_ci.signing import Signer
from tfaudit_ci.spoolstate import Receipt, WitnessSpec
from tfaudit_ci.stores import open_store
from tfaudit_ci.stores.base import Policy, Store, VersionInfo
from tfaudit_ci.vocab import OnUnlocked

if TYPE_CHECKING:
    from tfaudit_ci.config import Config
    from tfaudit_ci.signing import Verifier
    from tfaudit_ci.verify.witness import HeadClaim, WitnessCheck, WitnessListing

CHECKPOINT_SCHEMA = "tfaudit.checkpoint/v1"
# A checkpoint is about 500 bytes (700 with a KMS signature); anything over this is not read,
# and is a finding. Memory for a hostile witness stays bounded by its number of objects.
CHECKPOINT_MAX_BYTES = 4096
# Signatures cover this prefix and the canonical checkpoint without ``signature``, so a
# checkpoint's signature can never pass for a record's (whose message starts with ``{``).
SIGNING_PREFIX = b"tfaudit.checkpoint/v1\n"
# How many slots below a new checkpoint are probed for its predecessor before listing all.
PROBE_BACK = 4
# A concurrent run may still be writing its predecessor's checkpoint: look once more after
# this long before the record names that checkpoint as missing.
GRACE_SECONDS = 1.0
_FIELDS = frozenset(
    {"schema", "stream", "seq", "record_sha256", "prev", "time", "tfaudit_version", "signature"}
)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEY_SEQ = re.compile(r"(\d{12})\.json")


def checkpoint_prefix(stream: str) -> str:
    return f"checkpoints/{stream}/"


def checkpoint_key(stream: str, seq: int) -> str:
    return f"{checkpoint_prefix(stream)}{seq:012d}.json"


def seq_from_checkpoint_key(stream: str, key: str) -> int | None:
    prefix = checkpoint_prefix(stream)
    match = _KEY_SEQ.fullmatch(key[len(prefix) :]) if key.startswith(prefix) else None
    return int(match.group(1)) if match else None


def ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted, distinct seqs as inclusive ``(first, last)`` runs."""
    out: list[tuple[int, int]] = []
    for seq in sorted(set(seqs)):
        if out and out[-1][1] == seq - 1:
            out[-1] = (out[-1][0], seq)
        else:
            out.append((seq, seq))
    return out


def describe_ranges(runs: Sequence[tuple[int, int]]) -> str:
    """``seq 3``, ``seqs 5..9``, ``seqs 3, 5..9``."""
    count = sum(last - first + 1 for first, last in runs)
    parts = [str(first) if first == last else f"{first}..{last}" for first, last in runs]
    return ("seq " if count == 1 else "seqs ") + ", ".join(parts)


# -- the checkpoint format -------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointRef:
    """A link to a checkpoint: its seq and the SHA-256 of its stored bytes."""

    seq: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "sha256": self.sha256}


@dataclass(frozen=True)
class Checkpoint:
    """A parsed checkpoint whose shape, stream, seq and canonical form hold."""

    seq: int
    record_sha256: str
    prev: CheckpointRef | None
    signature: Mapping[str, Any]
    message: bytes  # what the signature covers
    sha256: str  # of the stored bytes


def checkpoint_message(unsigned: Mapping[str, Any]) -> bytes:
    return SIGNING_PREFIX + canonical_bytes(dict(unsigned))


def build_checkpoint(
    *,
    stream: str,
    seq: int,
    record_sha256: str,
    prev: CheckpointRef | None,
    signer: Signer,
) -> bytes:
    """The canonical, signed checkpoint bytes."""
    unsigned = {
        "schema": CHECKPOINT_SCHEMA,
        "stream": stream,
        "seq": seq,
        "record_sha256": record_sha256,
        "prev": prev.to_dict() if prev is not None else None,
        "time": iso(utc_now()),
        "tfaudit_version": __version__,
    }
    signature = signer.sign(checkpoint_message(unsigned))
    return canonical_bytes({**unsigned, "signature": signature})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shape_problem(raw: Any, stream: str, seq: int) -> str | None:
    if not isinstance(raw, dict):
        return f"is a JSON {type(raw).__name__}, not an object"
    if set(raw) != _FIELDS:
        extra, absent = sorted(set(raw) - _FIELDS), sorted(_FIELDS - set(raw))
        return (
            "has the wrong fields"
            + (f"; unexpected: {', '.join(extra)}" if extra else "")
            + (f"; missing: {', '.join(absent)}" if absent else "")
        )
    if raw["schema"] != CHECKPOINT_SCHEMA:
        return f"has schema {str(raw['schema'])[:80]!r}, not {CHECKPOINT_SCHEMA}"
    if raw["stream"] != stream:
        return f"is for stream {str(raw['stream'])[:200]!r}, not {stream!r}"
    if not _is_int(raw["seq"]) or raw["seq"] != seq:
        return f"says seq {str(raw['seq'])[:40]}, but sits in the slot of seq {seq}"
    if not isinstance(raw["record_sha256"], str) or not _HEX64.fullmatch(raw["record_sha256"]):
        return "has no valid record_sha256"
    prev = raw["prev"]
    if prev is not None and not (
        isinstance(prev, dict)
        and set(prev) == {"seq", "sha256"}
        and _is_int(prev["seq"])
        and 0 <= prev["seq"] < seq
        and isinstance(prev["sha256"], str)
        and _HEX64.fullmatch(prev["sha256"])
    ):
        return "has a malformed prev link (it must name a lower seq and a SHA-256)"
    if not isinstance(raw["time"], str) or not isinstance(raw["tfaudit_version"], str):
        return "has a malformed time or tfaudit_version"
    if not isinstance(raw["signature"], dict):
        return "has no signature block"
    return None


def parse_checkpoint(data: bytes, *, stream: str, seq: int) -> Checkpoint | str:
    """The checkpoint in ``data``, or what is wrong with it (never raises)."""
    if len(data) > CHECKPOINT_MAX_BYTES:
        return f"is {len(data)} bytes, over the {CHECKPOINT_MAX_BYTES}-byte cap"
    try:
        raw = parse_strict(data)
    except JsonRejected as exc:
        return f"is not JSON ({exc})"
    problem = _shape_problem(raw, stream, seq)
    if problem is not None:
        return problem
    try:
        canonical = canonical_bytes(raw)
    except (ValueError, TypeError, RecursionError) as exc:
        return f"cannot be put in canonical form ({type(exc).__name__})"
    if canonical != data:
        return "is not in canonical form (its bytes were not written by tfaudit)"
    prev = raw["prev"]
    unsigned = {key: value for key, value in raw.items() if key != "signature"}
    return Checkpoint(
        seq=seq,
        record_sha256=raw["record_sha256"],
        prev=CheckpointRef(prev["seq"], prev["sha256"]) if prev is not None else None,
        signature=raw["signature"],
        message=checkpoint_message(unsigned),
        sha256=sha256_hex(data),
    )


def read_capped(store: Store, key: str, version_id: str) -> bytes | None:
    """A version's bytes, or None when it holds more than ``CHECKPOINT_MAX_BYTES``."""
    kept: list[bytes] = []
    size = 0
    for chunk in store.iter_version(key, version_id, CHECKPOINT_MAX_BYTES + 1):
        size += len(chunk)
        if size > CHECKPOINT_MAX_BYTES:
            return None
        kept.append(chunk)
    return b"".join(kept)


# -- the writer ------------------------------------------------------------------------------


def witness_spec(config: Config) -> WitnessSpec | None:
    """The configured witness, or None."""
    if not config.witness:
        return None
    if config.store and config.store.rstrip("/") == config.witness.rstrip("/"):
        raise ConfigError(
            f"the witness {config.witness} is the store itself, so it witnesses nothing",
            fix="use a second store: another bucket, ideally in another account",
        )
    if config.witness_profile and not config.witness.startswith("s3://"):
        raise ConfigError(
            f"witness-profile is for S3 witnesses; {config.witness} uses its SDK's usual chain",
            fix="remove witness-profile",
        )
    return WitnessSpec(config.witness, config.witness_options(), config.witness_required)


def _retitled(exc: TfauditError, what: str) -> TfauditError:
    """The same error (and exit code), saying it concerns the witness."""
    copy = type(exc)(f"{what}: {exc.summary}", fix=exc.fix)
    copy.__cause__ = exc
    return copy


@dataclass
class Witness:
    """One stream's checkpoints in the witness store, as ``run``, ``recover`` and
    ``witness-sync`` write them. ``unavailable`` says why nothing can be written this time
    (only ever set when the witness is not required)."""

    spec: WitnessSpec
    stream: str
    store: Store | None
    decision: LockDecision | None
    warning: str | None = None  # to print: a preflight warning, or why it is unavailable
    unavailable: str | None = None
    missing: list[tuple[int, int]] = field(default_factory=list)  # named in the last block
    # The predecessor the last block found, when it sits right below: the write needs no
    # second look (nothing can land between them).
    _adjacent: CheckpointRef | None = field(default=None, init=False, repr=False)

    @property
    def uri(self) -> str:
        return self.store.uri if self.store is not None else self.spec.url

    def checkpoint_uri(self, seq: int) -> str:
        return f"{self.uri.rstrip('/')}/{checkpoint_key(self.stream, seq)}"

    # -- reads ---------------------------------------------------------------------------
    def _live(self) -> tuple[Store, LockDecision]:
        if self.store is None or self.decision is None:
            raise UploadError(f"the witness is unavailable: {self.unavailable}")
        return self.store, self.decision

    def read_checkpoint(self, seq: int) -> Checkpoint | str | None:
        """The checkpoint at ``seq`` (its oldest version), what is wrong with it, or None."""
        store, _ = self._live()
        key = checkpoint_key(self.stream, seq)
        versions = [v for v in store.versions(key) if not v.is_delete_marker]
        if not versions:
            return None
        data = read_capped(store, key, versions[0].version_id)
        if data is None:
            return f"is over the {CHECKPOINT_MAX_BYTES}-byte cap"
        return parse_checkpoint(data, stream=self.stream, seq=seq)

    def newest_below(self, seq: int) -> CheckpointRef | None:
        """The newest valid checkpoint below ``seq``: the slots just below are probed first,
        the whole listing is read only when they hold none."""
        for probe in range(seq - 1, max(-1, seq - 1 - PROBE_BACK), -1):
            found = self.read_checkpoint(probe)
            if isinstance(found, Checkpoint):
                return CheckpointRef(probe, found.sha256)
        store, _ = self._live()
        prefix = checkpoint_prefix(self.stream)
        seqs = (seq_from_checkpoint_key(self.stream, key) for key in store.list_keys(prefix))
        below = sorted((s for s in seqs if s is not None and s < seq - PROBE_BACK), reverse=True)
        for probe in below:
            found = self.read_checkpoint(probe)
            if isinstance(found, Checkpoint):
                return CheckpointRef(probe, found.sha256)
        return None

    # -- the record's block --------------------------------------------------------------
    def note(self, seq: int) -> dict[str, Any]:
        """The record's ``witness`` block: where checkpoints go, and the seqs below this one
        whose checkpoints this writer could not find (``missing``, as ``[first, last]``
        ranges; null when the witness could not be read)."""
        block: dict[str, Any] = {"store": self.uri, "missing": None}
        self.missing, self._adjacent = [], None
        if self.unavailable is not None:
            return {**block, "unavailable": self.unavailable}
        try:
            newest = self.newest_below(seq)
            if seq > 0 and (newest is None or newest.seq < seq - 1):
                time.sleep(GRACE_SECONDS)
                found = self.read_checkpoint(seq - 1)
                if isinstance(found, Checkpoint):
                    newest = CheckpointRef(seq - 1, found.sha256)
        except Exception as exc:  # the record still ships; it says the witness was unread
            return {**block, "unavailable": _reason(exc)}
        first = newest.seq + 1 if newest is not None else 0
        self.missing = [(first, seq - 1)] if first < seq else []
        self._adjacent = newest if newest is not None and newest.seq == seq - 1 else None
        return {**block, "missing": [list(run) for run in self.missing]}

    # -- writes --------------------------------------------------------------------------
    def write(self, seq: int, record_sha256: str, signer: Signer) -> CheckpointRef:
        """Write the checkpoint of the record at ``seq`` (create-only, read back). A slot that
        already holds a checkpoint of the same record is accepted (a retry, ``recover``,
        ``witness-sync``); any other content is a conflict: the chain and the witness
        disagree, and appending more would hide it."""
        store, decision = self._live()
        adjacent = self._adjacent
        prev = adjacent if adjacent is not None and adjacent.seq == seq - 1 else None
        prev = prev or self.newest_below(seq)
        data = build_checkpoint(
            stream=self.stream, seq=seq, record_sha256=record_sha256, prev=prev, signer=signer
        )
        key = checkpoint_key(self.stream, seq)
        retain_until = decision.retain_until()
        stored = store.put_create_only(key, data, decision.lock(retain_until))
        if stored is None:
            found = self.read_checkpoint(seq)
            if isinstance(found, Checkpoint) and found.record_sha256 == record_sha256:
                return CheckpointRef(seq, found.sha256)
            what = (
                f"a checkpoint of another record (sha256 {found.record_sha256})"
                if isinstance(found, Checkpoint)
                else f"an object that {found}"
                if found is not None
                else "a deleted object"
            )
            raise UploadError(
                f"witness slot {self.checkpoint_uri(seq)} already holds {what}: the witness saw "
                f"another record at seq {seq} (a truncated, re-created or forked chain)",
                fix=f"run `tfaudit verify --witness {self.uri}` and investigate before "
                "appending more",
            )
        check_state(
            store.head(key, stored.version_id),
            what=f"witness {key}",
            expected=Expected(
                len(data),
                sha256_hex(data),
                lambda: {hashlib.md5(data, usedforsecurity=False).hexdigest()},
            ),
            policy=decision.policy,
            minimum_retain=retain_until - RETAIN_SLACK,
            check_lock=decision.readback,
        )
        return CheckpointRef(seq, sha256_hex(data))

    def attest(self, receipt: Receipt, signer: Signer) -> Receipt:
        """Checkpoint a shipped record. Raises when that fails and the witness is required
        (no receipt is saved then, so ``recover`` finds the record by its run folder and
        writes the checkpoint); otherwise the receipt carries a warning."""
        warnings = []
        if self.missing:
            warnings.append(
                f"witness {self.uri} has no checkpoint for {describe_ranges(self.missing)}; "
                f"record seq {receipt.seq} names the missing checkpoint(s)"
            )
        try:
            ref = self.write(receipt.seq, receipt.record_sha256, signer)
        except Exception as exc:
            if self.spec.required:
                error = (
                    _retitled(exc, "witness")
                    if isinstance(exc, TfauditError)
                    else UploadError(f"witness: {_reason(exc)}")
                )
                error.fix = (
                    f"{error.fix}; then `tfaudit recover` writes the checkpoint of record seq "
                    f"{receipt.seq} (already in the store; it is not appended twice)"
                    if error.fix
                    else f"`tfaudit recover` writes the checkpoint of record seq {receipt.seq}"
                )
                raise error from exc
            warnings.append(
                f"no checkpoint was written for seq {receipt.seq} ({_reason(exc)}); "
                "witness-required is false, so the job goes on and the next record names it"
            )
            return replace(receipt, witness_warning="; ".join(warnings))
        return replace(
            receipt,
            checkpoint_uri=self.checkpoint_uri(ref.seq),
            witness_warning="; ".join(warnings) or None,
        )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TfauditError):
        return exc.summary
    return f"{type(exc).__name__}: {exc}"[:300]


def open_witness(
    spec: WitnessSpec, stream: str, policy: Policy, on_unlocked: OnUnlocked
) -> Witness:
    """Open the witness store and run the WORM preflight on it, as on the primary. A failure
    raises when the witness is required (exit 21 before the command runs); otherwise the
    witness is marked unavailable and the run goes on with a warning."""
    try:
        store = open_store(spec.url, spec.options)
        checked = preflight(store, policy, on_unlocked)
    except Exception as exc:
        failure = (
            _retitled(exc, f"witness {spec.url}")
            if isinstance(exc, TfauditError)
            else PreflightError(f"witness {spec.url}: {_reason(exc)}")
        )
        if spec.required or isinstance(exc, ConfigError):
            raise failure from exc
        reason = failure.summary
        return Witness(
            spec,
            stream,
            None,
            None,
            warning=f"{reason}; no checkpoint will be written (witness-required is false)",
            unavailable=reason,
        )
    warning = None
    if checked.warning:
        problems = "; ".join(checked.report.problems())
        warning = f"witness {store.uri} is not locked as policy requires ({problems}); "
        warning += f"continuing with --on-unlocked {on_unlocked}"
    return Witness(spec, stream, store, checked.decision, warning=warning)


def open_witness_soon(
    spec: WitnessSpec, stream: str, policy: Policy, on_unlocked: OnUnlocked
) -> Callable[[], Witness]:
    """``open_witness`` on a thread, beside the primary's preflight; the returned call waits
    for it and raises what it raised."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tfaudit-witness")
    future = pool.submit(open_witness, spec, stream, policy, on_unlocked)
    pool.shutdown(wait=False)
    return future.result


# -- readers for verify and witness-sync ------------------------------------------------------


def read_listing(store: Store, stream: str, parallelism: int) -> WitnessListing:
    """Every version under the stream's checkpoint prefix, with the bytes of each real
    version (capped). A listing that fails is reported, never raised."""
    from tfaudit_ci.verify.reader import parallel_map
    from tfaudit_ci.verify.witness import CheckpointVersion, WitnessListing

    try:
        infos = list(store.list_versions(checkpoint_prefix(stream)))
    except Exception as exc:
        return WitnessListing(store.uri, {}, error=_reason(exc))

    def read(info: VersionInfo) -> CheckpointVersion:
        if info.is_delete_marker:
            return CheckpointVersion(info.version_id, None, deleted=True)
        try:
            data = read_capped(store, info.key, info.version_id)
        except Exception as exc:
            return CheckpointVersion(info.version_id, None, error=_reason(exc))
        if data is None:
            return CheckpointVersion(
                info.version_id, None, error=f"is over the {CHECKPOINT_MAX_BYTES}-byte cap"
            )
        return CheckpointVersion(info.version_id, data)

    slots: dict[str, list[CheckpointVersion]] = {}
    for info, version in zip(infos, parallel_map(read, infos, parallelism), strict=True):
        slots.setdefault(info.key, []).append(version)
    return WitnessListing(store.uri, slots)


_PLAIN_HEAD = re.compile(r"(\d+)\s+([0-9a-f]{64})")
_SEQ_FIELD = re.compile(r"""\bseq\b["']?\s*[:=]?\s*["']?(\d+)""")
_SHA_FIELD = re.compile(r"""\b(?:record[_-])?sha256\b["']?\s*[:=]?\s*["']?([0-9a-f]{64})\b""")
_STREAM_FIELD = re.compile(r"""\bstream\b["']?\s*[:=]\s*["']?([A-Za-z0-9._/-]+)""")


def parse_heads(lines: Iterable[str], *, stream: str, source: str) -> list[HeadClaim]:
    """(seq, sha256) pairs gathered elsewhere, one per line (docs/witness.md): ``SEQ SHA256``,
    or any line holding ``seq N`` and ``sha256 HEX`` (tfaudit's own summary line, a JSON line
    with ``seq`` and ``record_sha256``). Lines naming another ``stream`` are skipped, and
    lines with neither are ignored."""
    from tfaudit_ci.verify.witness import HeadClaim

    claims = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        plain = _PLAIN_HEAD.fullmatch(text)
        named = _STREAM_FIELD.search(text)
        if named is not None and named.group(1) != stream:
            continue
        if plain is not None:
            seq, sha = plain.group(1), plain.group(2)
        else:
            seq_match, sha_match = _SEQ_FIELD.search(text), _SHA_FIELD.search(text)
            if seq_match is None or sha_match is None:
                continue
            seq, sha = seq_match.group(1), sha_match.group(1)
        claims.append(HeadClaim(int(seq), sha, f"{source}:{number}"))
    return claims


def read_heads(path_text: str, *, stream: str) -> list[HeadClaim]:
    path = Path(path_text)
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            claims = parse_heads(handle, stream=stream, source=path.name)
    except OSError as exc:
        raise ConfigError(f"cannot read --head-from {path_text}: {exc.strerror}") from None
    if not claims:
        raise ConfigError(
            f"--head-from {path_text} holds no (seq, sha256) pair for stream {stream!r}",
            fix="one `SEQ SHA256` per line, or tfaudit's summary lines (`... record seq N ... "
            "sha256 HEX`) grepped from job logs",
        )
    return claims


def verify_witness(
    ns: argparse.Namespace,
    config: Config,
    *,
    stream: str,
    verifier: Verifier | None,
    parallelism: int,
) -> WitnessCheck | None:
    """What ``verify`` checks the chain against: the witness's listing (read before the
    chain, so a run appending meanwhile cannot look like a truncation) and ``--head-from``."""
    from tfaudit_ci.verify.witness import WitnessCheck

    heads = [claim for path in ns.head_from or [] for claim in read_heads(path, stream=stream)]
    if ns.require_witness and not config.witness:
        raise ConfigError("--require-witness needs a witness", fix="pass --witness URL")
    spec = witness_spec(config)
    if spec is None and not heads:
        return None
    listing = None
    if spec is not None:
        listing = read_listing(open_store(spec.url, spec.options), stream, parallelism)
    return WitnessCheck(
        stream=stream,
        listing=listing,
        heads=heads,
        verifier=verifier,
        require=bool(ns.require_witness),
    )
