"""A scenario builder for verify tests, in the spirit of aws-cli's ``create_scenario``.

It writes a stream the way ``tfaudit run`` does (artifacts uploaded with the lock, then the
record, canonical and signed, appended create-only) through the real Store backends, then
lets a test damage it the ways an attacker or a broken store could: skipped slots, new
versions at existing keys, records copied or swapped, forged or re-signed records, orphan
run folders, weak retention, identity evidence minted by a local issuer.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devkit.filestore import tamperable
from tfaudit_ci.canonical import canonical_bytes, sha256_hex
from tfaudit_ci.ci import CiInfo
from tfaudit_ci.record import build_record, chain_key, iso, run_key, utc_now
from tfaudit_ci.signing import NoSigner, Signer, sign_record
from tfaudit_ci.stores.base import Digests, Lock, Policy, Store
from tfaudit_ci.stores.file import FileStore

# (seq, ci dict, started, finished) -> (the record's identity field, identity.json bytes)
IdentityFactory = Callable[[int, dict[str, Any], dt.datetime, dt.datetime], tuple[Any, bytes]]


@dataclass
class Built:
    seq: int
    run_folder: str
    record: dict[str, Any]
    data: bytes  # the canonical, signed record bytes
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> entry
    version_id: str | None = None  # of the chain slot, once written
    contents: dict[str, bytes] = field(default_factory=dict)  # name -> artifact bytes

    @property
    def key(self) -> str:
        return chain_key(str(self.record["stream"]), self.seq)

    @property
    def sha256(self) -> str:
        return sha256_hex(self.data)


def plain_record(
    *,
    stream: str,
    seq: int,
    prev: dict[str, Any] | None,
    run_folder: str,
    started: dt.datetime,
    **fields: Any,
) -> dict[str, Any]:
    """An unsigned record of a plain ``terraform plan`` run; ``fields`` override the rest."""
    values: dict[str, Any] = {
        "command": ["terraform", "plan", "-out=tfplan"],
        "cwd": "/work",
        "tool": {"name": "terraform", "binary": "terraform", "version": "1.0.3"},
        "workspace": "default",
        "status": "succeeded",
        "exit_code": 0,
        "finished_at": started + dt.timedelta(minutes=1),
        "ci": {"provider": "generic"},
        "artifacts": [],
        "plan": None,
        "redactions": {},
        "retention": {"mode": None, "retain_until": None, "store_worm": False},
        **fields,
    }
    return build_record(
        stream=stream, seq=seq, prev=prev, run_folder=run_folder, started_at=started, **values
    )


def _digests(data: bytes) -> Digests:
    return Digests(
        hashlib.sha256(data).hexdigest(),
        hashlib.md5(data, usedforsecurity=False).hexdigest(),
        len(data),
    )


class Scenario:
    def __init__(
        self,
        store: Store,
        spool: Path,
        *,
        stream: str = "acme/infra",
        signer: Signer | None = None,
        policy: Policy | None = None,
        retain_until: dt.datetime | None = None,
        start: dt.datetime | None = None,
        step: dt.timedelta = dt.timedelta(minutes=5),
        identity: IdentityFactory | None = None,
        ci: dict[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.spool = spool
        self.spool.mkdir(parents=True, exist_ok=True)
        self.stream = stream
        self.signer: Signer = signer or NoSigner()
        self.policy = policy or Policy()
        self.retain_until = retain_until or (
            utc_now() + dt.timedelta(days=self.policy.retention_days + 1)
        ).replace(microsecond=0)
        self.lock = Lock(self.policy.lock_mode, self.retain_until)
        self.clock = start or utc_now() - dt.timedelta(hours=2)
        self.step = step
        self.identity = identity
        self.ci = ci
        self.built: list[Built] = []

    # -- building --------------------------------------------------------------------------
    def ci_for(self, seq: int) -> dict[str, Any]:
        if self.ci is not None:
            return dict(self.ci)
        return CiInfo(
            provider="github",
            repository="acme/infra",
            commit=hashlib.sha1(f"commit-{seq}".encode(), usedforsecurity=False).hexdigest(),
            ref="refs/heads/main",
            actor="alice",
            run_id=str(9000 + seq),
            attempt="1",
            job="terraform",
            event="push",
        ).to_dict()

    def upload(self, key: str, data: bytes) -> str:
        path = self.spool / uuid.uuid4().hex
        path.write_bytes(data)
        stored = self.store.put_file(key, path, _digests(data), self.lock)
        path.unlink()
        return stored.version_id

    def build(
        self,
        *,
        signer: Signer | None = None,
        prev: Built | str | None = "last",
        artifacts: dict[str, bytes] | None = None,
        upload: bool = True,
        edit: Callable[[dict[str, Any]], None] | None = None,
    ) -> Built:
        """The next record, its artifacts uploaded (unless ``upload`` is False)."""
        seq = len(self.built)
        previous = self.built[-1] if prev == "last" and self.built else None
        if isinstance(prev, Built):
            previous = prev
        started = self.clock
        finished = started + dt.timedelta(minutes=1)
        self.clock += self.step
        stamp = started.strftime("%Y%m%dT%H%M%SZ")
        folder = f"{stamp}-{9000 + seq}-1-{uuid.uuid4().hex[:8]}"
        ci = self.ci_for(seq)
        contents = dict(
            artifacts
            if artifacts is not None
            else {
                "output.log": f"terraform plan #{seq}\nPlan: 1 to add.\n".encode(),
                "plan.json": canonical_bytes({"seq": seq, "resource_changes": []}),
            }
        )
        identity_field = None
        if self.identity is not None:
            identity_field, evidence = self.identity(seq, ci, started, finished)
            if evidence:
                contents["identity.json"] = evidence
        entries: dict[str, dict[str, Any]] = {}
        for name, data in contents.items():
            key = run_key(self.stream, folder, name)
            version = self.upload(key, data) if upload else "unwritten"
            entries[name] = {
                "name": name,
                "key": key,
                "version_id": version,
                "sha256": sha256_hex(data),
                "size": len(data),
            }
        unsigned = plain_record(
            stream=self.stream,
            seq=seq,
            prev={"seq": previous.seq, "sha256": previous.sha256} if previous else None,
            run_folder=folder,
            started=started,
            finished_at=finished,
            ci=ci,
            artifacts=list(entries.values()),
            plan={"summary": {"add": 1, "change": 0, "destroy": 0, "import": 0}},
            redactions={},
            retention={
                "mode": self.policy.lock_mode,
                "retain_until": iso(self.retain_until),
                "store_worm": not isinstance(self.store, FileStore),
            },
            identity=identity_field,
        )
        if edit is not None:
            edit(unsigned)
        prev_record = json.loads(previous.data) if previous else None
        data = sign_record(unsigned, prev_record, signer or self.signer)
        built = Built(seq, folder, json.loads(data), data, entries, contents=contents)
        self.built.append(built)
        return built

    def write(self, built: Built, *, at: int | None = None, data: bytes | None = None) -> str:
        """Write a record create-only into its slot (or slot ``at``); returns the version."""
        key = chain_key(self.stream, built.seq if at is None else at)
        stored = self.store.put_create_only(
            key, data if data is not None else built.data, self.lock
        )
        assert stored is not None, f"slot {key} was already taken"
        built.version_id = stored.version_id if at is None else built.version_id
        return stored.version_id

    def append(self, **kwargs: Any) -> Built:
        built = self.build(**kwargs)
        self.write(built)
        return built

    def create(self, count: int, *, parallelism: int = 1) -> list[Built]:
        """``count`` records; with ``parallelism`` > 1 the uploads run concurrently."""
        if parallelism <= 1:
            return [self.append() for _ in range(count)]
        first = len(self.built)
        staged = [self.build(upload=False) for _ in range(count)]
        uploads = [(b, name) for b in staged for name in b.contents]
        with ThreadPoolExecutor(parallelism) as pool:
            versions = list(
                pool.map(
                    lambda job: self.upload(
                        job[0].artifacts[job[1]]["key"], job[0].contents[job[1]]
                    ),
                    uploads,
                )
            )
            for (item, name), version in zip(uploads, versions, strict=True):
                item.artifacts[name]["version_id"] = version
            # Artifact version ids are part of the record: sign again, in chain order.
            self.built = self.built[:first]
            for item in staged:
                self._resign(item)
            written = self.built[first:]
            list(pool.map(self.write, written))
        return written

    def _resign(self, item: Built) -> Built:
        previous = self.built[-1] if self.built else None
        unsigned = {k: v for k, v in item.record.items() if k != "signature"}
        unsigned["artifacts"] = list(item.artifacts.values())
        unsigned["prev"] = {"seq": previous.seq, "sha256": previous.sha256} if previous else None
        prev_record = json.loads(previous.data) if previous else None
        data = sign_record(unsigned, prev_record, self.signer)
        built = Built(item.seq, item.run_folder, json.loads(data), data, item.artifacts)
        self.built.append(built)
        return built

    # -- damage ----------------------------------------------------------------------------
    def new_version(self, key: str, data: bytes) -> str:
        """A later version at an existing key: allowed on a versioned bucket, even locked."""
        if isinstance(self.store, FileStore):
            return tamperable(self.store).put_version(key, data)
        client, bucket, full = _s3_target(self.store, key)
        response = client.put_object(
            Bucket=bucket,
            Key=full,
            Body=data,
            ContentMD5=base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode(),
            ObjectLockMode=self.policy.lock_mode,
            ObjectLockRetainUntilDate=self.retain_until,
        )
        return str(response["VersionId"])

    def delete_marker(self, key: str) -> None:
        if isinstance(self.store, FileStore):
            tamperable(self.store).put_delete_marker(key)
            return
        client, bucket, full = _s3_target(self.store, key)
        client.delete_object(Bucket=bucket, Key=full)  # no VersionId: adds a marker

    def orphan_folder(self, folder: str | None = None) -> str:
        """A run folder whose record never made it (the job died after uploading)."""
        folder = folder or f"{self.clock.strftime('%Y%m%dT%H%M%SZ')}-77-1-{uuid.uuid4().hex[:8]}"
        self.upload(run_key(self.stream, folder, "output.log"), b"killed before the record\n")
        return folder

    def rewrite_in_place(self, key: str, data: bytes) -> None:
        """File store only: an attacker with write access to the directory."""
        assert isinstance(self.store, FileStore)
        path = self.store.root / key
        path.chmod(0o644)
        path.write_bytes(data)

    def remove_in_place(self, key: str) -> None:
        assert isinstance(self.store, FileStore)
        (self.store.root / key).unlink()


def _s3_target(store: Any, key: str) -> tuple[Any, str, str]:
    full = f"{store.prefix}/{key}" if store.prefix else key
    return store.client, store.bucket, full


# -- attacker helpers (tests/test_adversarial.py) -----------------------------------------------


def slot_record(store: Store, stream: str, seq: int) -> dict[str, Any]:
    """The record in a chain slot's winning version (which must parse)."""
    from tfaudit_ci.chain import Chain

    slot = Chain(store, stream).read_slot(seq)
    assert slot is not None and slot.data is not None, f"no record at seq {seq}"
    record: dict[str, Any] = json.loads(slot.data)
    return record


def slot_sha256(store: Store, stream: str, seq: int) -> str | None:
    from tfaudit_ci.chain import Chain

    slot = Chain(store, stream).read_slot(seq)
    return slot.sha256 if slot is not None else None


def forge(
    store: Store,
    stream: str,
    seq: int,
    *,
    signer: Signer | None = None,
    edit: Callable[[dict[str, Any]], None] | None = None,
    record_stream: str | None = None,
) -> bytes:
    """A record for slot ``seq`` that links to slot ``seq - 1`` exactly as a writer would
    (so only what ``signer`` and ``edit`` change is wrong with it): what a CI job that holds
    create-only write access, but not the signing key, can put in the next slot."""
    from tfaudit_ci.chain import Chain

    previous = Chain(store, stream).read_slot(seq - 1) if seq > 0 else None
    try:
        prev_record = json.loads(previous.data) if previous is not None and previous.data else None
    except (ValueError, RecursionError):
        prev_record = None  # junk before it: sign over nothing
    if not isinstance(prev_record, dict):
        prev_record = None
    started = utc_now() - dt.timedelta(minutes=1)
    unsigned = plain_record(
        stream=record_stream or stream,
        seq=seq,
        prev={"seq": seq - 1, "sha256": previous.sha256} if previous is not None else None,
        run_folder=f"{started.strftime('%Y%m%dT%H%M%SZ')}-666-1-{uuid.uuid4().hex[:8]}",
        started=started,
        command=["terraform", "apply", "-auto-approve"],
        ci={"provider": "github", "repository": "acme/infra", "actor": "mallory"},
        retention={"mode": "COMPLIANCE", "retain_until": None, "store_worm": True},
    )
    if edit is not None:
        edit(unsigned)
    return sign_record(unsigned, prev_record, signer or NoSigner())


def write_raw(store: Store, key: str, data: bytes, policy: Policy | None = None) -> None:
    """A create-only write of any bytes at any key (no delete, no overwrite)."""
    until = (utc_now() + dt.timedelta(days=400)).replace(microsecond=0)
    lock = Lock((policy or Policy()).lock_mode, until)
    stored = store.put_create_only(key, data, lock)
    assert stored is not None, f"{key} was already taken"
