"""Ship a spool: upload artifacts with the lock on the PUT, read them back, append the record,
read the record back. Shared by ``run`` and ``recover``."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tfaudit_ci.chain import Chain, Link, RecordBuilder
from tfaudit_ci.errors import ReadbackError
from tfaudit_ci.record import build_record, iso, run_key, utc_now
from tfaudit_ci.signing import Signer
from tfaudit_ci.stores.base import Digests, ObjectState, Policy, Store, StoredObject

# Clock differences between this machine and the store, and rounding to whole seconds.
RETAIN_SLACK = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class Artifact:
    name: str
    path: Path
    digests: Digests


@dataclass
class Shipment:
    seq: int
    record_key: str
    record_version_id: str
    record_sha256: str
    artifacts: list[dict[str, Any]]
    retain_until: dt.datetime
    burned: list[dict[str, Any]] = field(default_factory=list)  # slots this append skipped


def retain_until_for(policy: Policy, now: dt.datetime | None = None) -> dt.datetime:
    moment = (now or utc_now()) + dt.timedelta(days=policy.retention_days)
    return moment.replace(microsecond=0) + dt.timedelta(seconds=1)


def multipart_etag(path: Path, part_size: int) -> str:
    import hashlib

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
    size: int,
    sha256: str,
    md5_candidates: Callable[[], set[str]],
    policy: Policy,
    minimum_retain: dt.datetime,
    check_lock: bool,
) -> None:
    """Raise ReadbackError unless the stored version is the bytes we sent, locked as required."""
    if state is None:
        raise ReadbackError(
            f"read-back: {what} is missing at its version", fix="check the bucket's versioning"
        )
    if state.size != size:
        raise ReadbackError(f"read-back: {what} has {state.size} bytes, expected {size}")
    if state.sha256 is not None and state.sha256 != sha256:
        raise ReadbackError(f"read-back: {what} sha256 differs from what was uploaded")
    # The candidates (a multipart ETag means re-reading the file) only when they are needed.
    if state.sha256 is None and state.md5 is not None and state.md5 not in md5_candidates():
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


def upload_artifacts(
    store: Store,
    stream: str,
    run_folder: str,
    artifacts: list[Artifact],
    *,
    policy: Policy,
    retain_until: dt.datetime,
    check_lock: bool,
    part_size: int,
    multipart_threshold: int,
) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    stored: list[tuple[Artifact, StoredObject]] = []
    for artifact in artifacts:
        key = run_key(stream, run_folder, artifact.name)
        obj = store.put_file(key, artifact.path, artifact.digests, retain_until, policy)
        stored.append((artifact, obj))
    for artifact, obj in stored:

        def candidates(artifact: Artifact = artifact) -> set[str]:
            found = {artifact.digests.md5}
            if artifact.digests.size > multipart_threshold:
                found.add(multipart_etag(artifact.path, part_size))
            return found

        check_state(
            store.head(obj.key, obj.version_id),
            what=obj.key,
            size=artifact.digests.size,
            sha256=artifact.digests.sha256,
            md5_candidates=candidates,
            policy=policy,
            minimum_retain=retain_until - RETAIN_SLACK,
            check_lock=check_lock,
        )
        entries.append(
            {
                "name": artifact.name,
                "key": obj.key,
                "version_id": obj.version_id,
                "sha256": artifact.digests.sha256,
                "size": artifact.digests.size,
            }
        )
    return entries


def append_record(
    store: Store,
    stream: str,
    run_folder: str,
    build: RecordBuilder,
    *,
    signer: Signer,
    policy: Policy,
    retain_until: dt.datetime,
    check_lock: bool,
) -> Shipment:
    import hashlib

    chain = Chain(store, stream, signer.verifier())
    appended = chain.append(
        build, signer, run_folder=run_folder, retain_until=retain_until, policy=policy
    )
    slot, obj = appended.slot, appended.stored
    for entry in appended.burned:
        why = appended.reasons.get(entry["seq"], "no valid record")
        sys.stderr.write(
            f"tfaudit: warning: chain slot {entry['seq']} of {stream} holds no valid record "
            f"({why}): burned, the record goes to seq {slot.seq}; run `tfaudit verify`\n"
        )
    data = slot.data or b""
    check_state(
        store.head(obj.key, obj.version_id),
        what=obj.key,
        size=slot.size,
        sha256=slot.sha256,
        md5_candidates=lambda: {hashlib.md5(data, usedforsecurity=False).hexdigest()},
        policy=policy,
        minimum_retain=retain_until - RETAIN_SLACK,
        check_lock=check_lock,
    )
    return Shipment(
        slot.seq, obj.key, obj.version_id, slot.sha256, [], retain_until, appended.burned
    )


def ship_record(
    store: Store,
    stream: str,
    run_folder: str,
    artifacts: list[Artifact],
    fields: dict[str, Any],
    *,
    policy: Policy,
    check_lock: bool,
    signer: Signer,
    part_size: int,
    multipart_threshold: int,
) -> Shipment:
    """Upload and confirm the artifacts, then append and confirm the record built from
    ``fields`` (every build_record argument except stream, seq, prev, artifacts, retention)."""
    retain_until = retain_until_for(policy)
    entries = upload_artifacts(
        store,
        stream,
        run_folder,
        artifacts,
        policy=policy,
        retain_until=retain_until,
        check_lock=check_lock,
        part_size=part_size,
        multipart_threshold=multipart_threshold,
    )
    retention = {
        "mode": policy.lock_mode if check_lock else None,
        "retain_until": iso(retain_until) if check_lock else None,
        "store_worm": check_lock,
    }

    def build(link: Link) -> dict[str, Any]:
        return build_record(
            stream=stream,
            seq=link.seq,
            prev=link.prev,
            burned=link.burned,
            run_folder=run_folder,
            artifacts=entries,
            retention=retention,
            **fields,
        )

    shipment = append_record(
        store,
        stream,
        run_folder,
        build,
        signer=signer,
        policy=policy,
        retain_until=retain_until,
        check_lock=check_lock,
    )
    shipment.artifacts = entries
    return shipment
