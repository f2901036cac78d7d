"""The spool contract: ``spool.json``, everything needed to ship a run, typed and versioned.

``tfaudit run`` writes it before the command starts (phase ``running``) and again once the
command has finished and its plan was captured (phase ``complete``). ``tfaudit recover``
ships a spool from this file alone, to the store, stream and policy recorded in it. It never
holds a secret: the signing key is recorded by its spec (``hmac:env:NAME``, a key file, a KMS
key id), and the command line is stored redacted.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tfaudit_ci.errors import UploadError
from tfaudit_ci.spool import write_json
from tfaudit_ci.stores import StoreOptions
from tfaudit_ci.stores.base import Digests, Policy
from tfaudit_ci.vocab import AzureMode, GcsMode, LockMode, OnUnlocked, RunStatus

if TYPE_CHECKING:
    from tfaudit_ci.secondpass import PassOutcome

SPOOL_VERSION = 1
SPOOL_FILE = "spool.json"
RECEIPT_FILE = "receipt.json"

Phase = Literal["running", "complete"]


@dataclass(frozen=True)
class SpoolArtifact:
    """A file to upload into the run folder as ``name``."""

    name: str
    path: str  # relative to the spool directory, or absolute (the binary plan file)
    sha256: str
    md5: str
    size: int

    @classmethod
    def of(cls, name: str, path: str, digests: Digests) -> SpoolArtifact:
        return cls(name, path, digests.sha256, digests.md5, digests.size)

    @property
    def digests(self) -> Digests:
        return Digests(self.sha256, self.md5, self.size)

    def file(self, spool_dir: Path) -> Path:
        return spool_dir / self.path


@dataclass(frozen=True)
class ToolInfo:
    name: str | None = None
    binary: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class WitnessSpec:
    """Where checkpoints go (docs/witness.md): a second store with its own options, and
    whether a missed checkpoint fails the job. Credentials come from the SDK's chain (or
    ``options.profile``), never from here."""

    url: str
    options: StoreOptions
    required: bool = True


@dataclass
class SpoolState:
    """Everything ``ship_spool`` needs; nothing else assembles a record."""

    store: str
    store_options: StoreOptions
    stream: str
    policy: Policy
    on_unlocked: OnUnlocked
    signing_key: str | None  # the key's spec, never key material
    run_folder: str
    command: list[str]  # redacted
    cwd: str
    ci: dict[str, Any]
    started_at: str
    phase: Phase = "running"
    status: RunStatus = RunStatus.RUNNING
    exit_code: int | None = None
    finished_at: str | None = None
    tool: ToolInfo = field(default_factory=ToolInfo)
    workspace: str | None = None
    plan: dict[str, Any] | None = None
    redactions: dict[str, int] = field(default_factory=dict)
    identity: dict[str, Any] | None = None
    redaction: dict[str, Any] | None = None  # the second pass: source, counts, warnings
    withheld: list[dict[str, Any]] = field(default_factory=list)  # not uploaded, and why
    artifacts: list[SpoolArtifact] = field(default_factory=list)
    witness: WitnessSpec | None = None
    # Set just before the record is written: a later `recover` must then first look for a
    # record this run already appended, instead of appending it twice.
    record_attempted: bool = False
    upload_attempted: bool = False  # likewise for the artifacts: reuse an earlier upload
    version: int = SPOOL_VERSION

    def save(self, spool_dir: Path) -> None:
        write_json(spool_dir / SPOOL_FILE, asdict(self))

    def record_pass(self, passed: PassOutcome) -> None:
        """The second pass's facts for the record, and its redaction counts."""
        fields = passed.record_fields()
        self.redaction, self.withheld = fields["redaction"], fields["withheld"]
        counts = dict(self.redactions)
        for rule, count in passed.record.redactions.items():
            counts[rule] = counts.get(rule, 0) + count
        self.redactions = dict(sorted(counts.items()))

    @classmethod
    def load(cls, spool_dir: Path) -> SpoolState:
        path = spool_dir / SPOOL_FILE
        try:
            raw = json.loads(path.read_bytes())
            return cls.from_dict(raw)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise UploadError(
                f"spool state {path} is unreadable ({type(exc).__name__}: {exc})",
                fix="inspect the spool by hand; its output.log is the run's redacted output",
            ) from None

    @classmethod
    def from_dict(cls, raw: Any) -> SpoolState:
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        if raw.get("version") != SPOOL_VERSION:
            raise ValueError(
                f"spool version {raw.get('version')!r}; this tfaudit reads {SPOOL_VERSION}"
            )
        known = {f.name for f in fields(cls)}
        data = {key: value for key, value in raw.items() if key in known}
        data["store_options"] = _store_options(data["store_options"])
        witness = data.get("witness")
        if witness is not None:
            data["witness"] = WitnessSpec(
                str(witness["url"]), _store_options(witness["options"]), bool(witness["required"])
            )
        policy = data["policy"]
        data["policy"] = Policy(int(policy["retention_days"]), LockMode(policy["lock_mode"]))
        data["on_unlocked"] = OnUnlocked(data["on_unlocked"])
        data["status"] = RunStatus(data.get("status", RunStatus.RUNNING))
        data["tool"] = ToolInfo(**data.get("tool") or {})
        data["artifacts"] = [SpoolArtifact(**item) for item in data.get("artifacts", [])]
        if data.get("phase", "running") not in ("running", "complete"):
            raise ValueError(f"unknown phase {data['phase']!r}")
        return cls(**data)


def _store_options(raw: Any) -> StoreOptions:
    options = dict(raw)
    options["gcs_mode"] = GcsMode(options["gcs_mode"])
    options["azure_mode"] = AzureMode(options["azure_mode"])
    return StoreOptions(**options)


@dataclass(frozen=True)
class Receipt:
    """What a successful ship left in the store."""

    seq: int
    record_key: str
    record_uri: str
    record_sha256: str
    version_id: str
    recovered: bool = False
    checkpoint_uri: str | None = None  # the witness's checkpoint of this record
    witness_warning: str | None = None  # a checkpoint missed (witness-required: false)

    def save(self, spool_dir: Path) -> None:
        write_json(spool_dir / RECEIPT_FILE, asdict(self))
