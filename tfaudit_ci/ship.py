"""Ship a spool: upload its artifacts with the lock on the PUT, read them back, append the
record, read the record back. The one path from spool to store, for ``run`` and ``recover``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tfaudit_ci import head_hint
from tfaudit_ci.chain import DUPLICATE_LOOKBACK, Chain, Link
from tfaudit_ci.errors import ReadbackError
from tfaudit_ci.locking import LockDecision
from tfaudit_ci.record import build_record, iso, parse_iso, run_key
from tfaudit_ci.signing import Signer
from tfaudit_ci.spool import LOG_FILE, file_digests, merge_tails
from tfaudit_ci.spoolstate import Receipt, SpoolArtifact, SpoolState
from tfaudit_ci.stores.base import ObjectState, Policy, Store, StoredObject

if TYPE_CHECKING:
    from tfaudit_ci.witness import Witness

# Clock differences between this machine and the store, and rounding to whole seconds.
RETAIN_SLACK = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class Expected:
    """What a read-back must find: the bytes sent, locked as decided."""

    size: int
    sha256: str
    md5_candidates: Callable[[], set[str]]


def multipart_etag(path: Path, part_size: int) -> str:
    digests: list[bytes] = []
    with path.open("rb") as handle:
        while chunk := handle.read(part_size):
            digests.append(hashlib.md5(chunk, usedforsecurity=False).digest())
    combined = hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest()
    return f"{combined}-{len(digests)}"


def check_state(
    state: ObjectState | None,
    *,
    what: str,
    expected: Expected,
    policy: Policy,
    minimum_retain: dt.datetime,
    check_lock: bool,
) -> None:
    """Raise ReadbackError unless the stored version is the bytes we sent, locked as required."""
    if state is None:
        raise ReadbackError(
            f"read-back: {what} is missing at its version", fix="check the bucket's versioning"
        )
    if state.size != expected.size:
        raise ReadbackError(f"read-back: {what} has {state.size} bytes, expected {expected.size}")
    if state.sha256 is not None and state.sha256 != expected.sha256:
        raise ReadbackError(f"read-back: {what} sha256 differs from what was uploaded")
    # The candidates (a multipart ETag means re-reading the file) only when they are needed.
    if (
        state.sha256 is None
        and state.md5 is not None
        and state.md5 not in expected.md5_candidates()
    ):
        raise ReadbackError(f"read-back: {what} MD5/ETag differs from what was uploaded")
    if not check_lock:
        return
    if not policy.mode_ok(state.lock_mode):
        raise ReadbackError(
            f"read-back: {what} lock mode is {state.lock_mode or 'none'}, policy requires "
            f"{policy.lock_mode}",
            fix="the store did not apply the lock: check Object Lock on the bucket and the "
            "writer's s3:PutObjectRetention permission",
        )
    if state.retain_until is None or state.retain_until < minimum_retain:
        got = iso(state.retain_until) if state.retain_until else "none"
        raise ReadbackError(
            f"read-back: {what} is retained until {got}, policy requires {iso(minimum_retain)}",
            fix="raise the bucket's default retention and check the machine's clock",
        )


@dataclass
class Shipper:
    """One shipment of one spool to one store."""

    store: Store
    spool: SpoolState
    spool_dir: Path
    decision: LockDecision
    signer: Signer
    witness: Witness | None = None

    def __post_init__(self) -> None:
        self.retain_until = self.decision.retain_until()
        self.lock = self.decision.lock(self.retain_until)
        # What the record states: this shipment's lock, or less when it pins an earlier
        # upload whose lock (within the slack) ends sooner; verify holds every artifact to it.
        self.stated_retain_until = self.retain_until

    def _read_back(self, key: str, version_id: str, expected: Expected) -> ObjectState | None:
        state = self.store.head(key, version_id)
        check_state(
            state,
            what=key,
            expected=expected,
            policy=self.decision.policy,
            minimum_retain=self.retain_until - RETAIN_SLACK,
            check_lock=self.decision.readback,
        )
        return state

    def _earlier_upload(self, key: str, artifact: SpoolArtifact) -> StoredObject | None:
        for version in self.store.versions(key):
            if version.is_delete_marker or version.size not in (0, artifact.size):
                continue
            state = self.store.head(key, version.version_id)
            if state is None or state.size != artifact.size:
                continue
            same = state.sha256 == artifact.sha256 if state.sha256 else state.md5 == artifact.md5
            if same:
                return StoredObject(key, version.version_id, artifact.sha256, artifact.size)
        return None

    def upload_artifacts(self, again: bool = False) -> list[dict[str, Any]]:
        """Upload and read back every artifact; ``again``: an earlier ship of this spool may
        have uploaded some already."""
        options = self.spool.store_options
        stored = []
        for artifact in self.spool.artifacts:
            key = run_key(self.spool.stream, self.spool.run_folder, artifact.name)
            path = _artifact_path(artifact, self.spool_dir)
            # A second ship of this spool finds its first upload and pins that version: a
            # second version would be an unpinned object in the run folder.
            earlier = self._earlier_upload(key, artifact) if again else None
            stored.append(
                (
                    artifact,
                    path,
                    earlier or self.store.put_file(key, path, artifact.digests, self.lock),
                )
            )
        entries: list[dict[str, Any]] = []
        for artifact, path, obj in stored:

            def candidates(artifact: SpoolArtifact = artifact, path: Path = path) -> set[str]:
                found = {artifact.md5}
                if artifact.size > options.multipart_threshold:
                    found.add(multipart_etag(path, options.multipart_chunksize))
                return found

            state = self._read_back(
                obj.key, obj.version_id, Expected(artifact.size, artifact.sha256, candidates)
            )
            if state is not None and state.retain_until is not None:
                self.stated_retain_until = min(self.stated_retain_until, state.retain_until)
            entries.append(
                {
                    "name": artifact.name,
                    "key": obj.key,
                    "version_id": obj.version_id,
                    "sha256": artifact.sha256,
                    "size": artifact.size,
                }
            )
        return entries

    def append(self, entries: list[dict[str, Any]]) -> Receipt:
        spool = self.spool
        # With a signing key, the writer checks what it chains onto with the same key.
        chain = Chain(self.store, spool.stream, self.signer.verifier())
        retention = self.decision.record_fields(self.stated_retain_until)
        finished = parse_iso(spool.finished_at) if spool.finished_at else None

        def build(link: Link) -> dict[str, Any]:
            return build_record(
                stream=spool.stream,
                seq=link.seq,
                prev=link.prev,
                burned=link.burned,
                run_folder=spool.run_folder,
                command=spool.command,
                cwd=spool.cwd,
                tool={
                    "name": spool.tool.name,
                    "binary": spool.tool.binary,
                    "version": spool.tool.version,
                },
                workspace=spool.workspace,
                status=str(spool.status),
                exit_code=spool.exit_code,
                started_at=parse_iso(spool.started_at),
                finished_at=finished or parse_iso(spool.started_at),
                ci=spool.ci,
                artifacts=entries,
                plan=spool.plan,
                redactions=spool.redactions,
                retention=retention,
                identity=spool.identity,
                redaction=spool.redaction,
                withheld=spool.withheld,
                witness=self.witness.note(link.seq) if self.witness is not None else None,
            )

        appended = chain.append(build, self.signer, run_folder=spool.run_folder, lock=self.lock)
        slot, obj = appended.slot, appended.stored
        for entry in appended.burned:
            why = appended.reasons.get(entry["seq"], "no valid record")
            sys.stderr.write(
                f"tfaudit: warning: chain slot {entry['seq']} of {spool.stream} holds no valid "
                f"record ({why}): burned, the record goes to seq {slot.seq}; run "
                "`tfaudit verify`\n"
            )
        data = slot.data or b""
        self._read_back(
            obj.key,
            obj.version_id,
            Expected(
                slot.size,
                slot.sha256,
                lambda: {hashlib.md5(data, usedforsecurity=False).hexdigest()},
            ),
        )
        # Only once the record is confirmed: where the next appender starts probing.
        head_hint.write(self.store, spool.stream, slot.seq)
        return self.receipt(slot.seq, obj.key, obj.version_id, slot.sha256)

    def receipt(self, seq: int, key: str, version_id: str, sha256: str) -> Receipt:
        return Receipt(
            seq=seq,
            record_key=key,
            record_uri=f"{self.store.uri.rstrip('/')}/{key}",
            record_sha256=sha256,
            version_id=version_id,
        )


def _artifact_path(artifact: SpoolArtifact, spool_dir: Path) -> Path:
    path = Path(artifact.path)
    return path if path.is_absolute() else spool_dir / path


def already_recorded(
    store: Store, spool: SpoolState, signer: Signer
) -> tuple[int, str, str, str] | None:
    """(seq, key, version id, sha256) of a valid record this run already appended, looking
    back from the head a little way (later runs may have appended after it)."""
    chain = Chain(store, spool.stream, signer.verifier())
    slot = chain.find_run(spool.run_folder, DUPLICATE_LOOKBACK)
    if slot is None:
        return None
    return slot.seq, chain.key(slot.seq), slot.version_id, slot.sha256


def ship_spool(
    store: Store,
    spool: SpoolState,
    spool_dir: Path,
    decision: LockDecision,
    signer: Signer,
    witness: Witness | None = None,
) -> Receipt:
    """Upload and confirm the artifacts, then append and confirm the record, then its
    checkpoint in the witness. Idempotent: a spool whose record already landed (a lost
    answer, a killed run, a failed checkpoint) gets that receipt, and its checkpoint."""
    shipper = Shipper(store, spool, spool_dir, decision, signer, witness)
    if spool.record_attempted:
        found = already_recorded(store, spool, signer)
        if found is not None:
            return _confirmed(shipper.receipt(*found), spool_dir, signer, witness)
    log = spool_dir / LOG_FILE
    if merge_tails(log):  # the output a killed run still held in memory
        spool.artifacts = [
            SpoolArtifact.of(a.name, a.path, file_digests(log)) if a.path == LOG_FILE else a
            for a in spool.artifacts
        ]
        spool.save(spool_dir)
    again = spool.upload_attempted
    if not again:
        spool.upload_attempted = True
        spool.save(spool_dir)
    entries = shipper.upload_artifacts(again)
    if not spool.record_attempted:
        spool.record_attempted = True
        spool.save(spool_dir)
    return _confirmed(shipper.append(entries), spool_dir, signer, witness)


def _confirmed(
    receipt: Receipt, spool_dir: Path, signer: Signer, witness: Witness | None
) -> Receipt:
    """The receipt, once the witness holds the record's checkpoint. Without a receipt on
    disk, ``recover`` comes back to this spool."""
    if witness is not None:
        receipt = witness.attest(receipt, signer)
    receipt.save(spool_dir)
    return receipt
