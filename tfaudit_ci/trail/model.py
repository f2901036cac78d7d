"""Typed rows built from record JSON (pure).

Records are attacker-influenced: every field is type-checked where it enters, a field of the
wrong type reads as absent, and the row keeps a note of what it could not use. Nothing here
raises on bad content.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from tfaudit_ci.canonical import JsonRejected, parse_strict, sha256_hex
from tfaudit_ci.ci.info import CiInfo
from tfaudit_ci.record import iso
from tfaudit_ci.result import PlanCounts
from tfaudit_ci.tfargs import parse_invocation
from tfaudit_ci.verify.checks import moment


class Action(str, Enum):
    """What a run did (or planned to do) to one resource address."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    REPLACE = "replace"
    IMPORT = "import"
    FORGET = "forget"
    MOVE = "move"
    READ = "read"
    OTHER = "other"


# Subcommands that change infrastructure when they succeed (or partly, when they fail).
APPLYING = frozenset({"apply", "destroy", "import"})
Source = Literal["plan", "command", "log"]


def action_of(actions: Sequence[str], importing: bool, moved: bool) -> Action:
    """Terraform's action list for one resource change as one word."""
    wanted = set(actions) - {"no-op"}
    if {"create", "delete"} <= wanted:
        return Action.REPLACE
    for name, action in (
        ("create", Action.CREATE),
        ("delete", Action.DELETE),
        ("update", Action.UPDATE),
        ("forget", Action.FORGET),
    ):
        if name in wanted:
            return action
    if importing:
        return Action.IMPORT
    if moved:
        return Action.MOVE
    if "read" in wanted:
        return Action.READ
    return Action.OTHER


@dataclass(frozen=True)
class ResourceChange:
    address: str
    action: Action
    importing: bool = False
    previous_address: str | None = None
    source: Source = "plan"  # "command": `terraform import ADDR`; "log": progress lines

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "action": self.action.value}


@dataclass(frozen=True)
class PlanInfo:
    """The record's ``plan`` block: the plan file's digest and terraform's counts."""

    plan_file: str | None
    plan_file_sha256: str | None
    counts: PlanCounts | None  # None when the plan could not be summarised
    resources: tuple[ResourceChange, ...]
    error: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "plan_file": self.plan_file,
            "plan_file_sha256": self.plan_file_sha256,
            "counts": self.counts.to_dict() if self.counts else None,
            "error": self.error,
        }


@dataclass(frozen=True)
class ArtifactRef:
    name: str
    key: str
    version_id: str
    sha256: str
    size: int | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)  # the record's own artifact entry shape


@dataclass(frozen=True)
class RunRow:
    """One chain slot as a person reads it: who ran what, where, and how it ended."""

    seq: int
    record_sha256: str | None
    stream: str | None = None
    run_folder: str | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    status: str | None = None
    exit_code: int | None = None
    ci: CiInfo = field(default_factory=lambda: CiInfo(provider="unknown"))
    command: tuple[str, ...] = ()
    subcommand: str | None = None
    tool_name: str | None = None
    tool_version: str | None = None
    workspace: str | None = None
    plan: PlanInfo | None = None
    artifacts: tuple[ArtifactRef, ...] = ()
    signature_alg: str | None = None
    identity: str | None = None  # "provider: issuer/subject", or why there is none
    tfaudit_version: str | None = None
    error: str | None = None  # why the slot could not be read as a record
    notes: tuple[str, ...] = ()  # fields that were present but unusable

    @property
    def readable(self) -> bool:
        return self.error is None

    @property
    def applies(self) -> bool:
        """An apply, destroy or import: a run meant to change infrastructure."""
        return self.subcommand in APPLYING

    @property
    def resources(self) -> tuple[ResourceChange, ...]:
        if self.plan is not None and self.plan.resources:
            return self.plan.resources
        return _command_resources(self)

    def artifact(self, name: str) -> ArtifactRef | None:
        return next((a for a in self.artifacts if a.name == name), None)

    def command_text(self) -> str:
        """The command as a person reads it: the tool's name, not its install path."""
        if not self.command:
            return ""
        first = self.command[0].replace("\\", "/").rsplit("/", 1)[-1] or self.command[0]
        return " ".join(_display_arg(arg) for arg in (first, *self.command[1:]))

    def to_json(self) -> dict[str, Any]:
        """The stable ``--json`` shape of a run (documented in docs/reading.md)."""
        counts = self.plan.counts if self.plan is not None else None
        return {
            "seq": self.seq,
            "record_sha256": self.record_sha256,
            "stream": self.stream,
            "run_folder": self.run_folder,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "status": self.status,
            "exit_code": self.exit_code,
            "actor": self.ci.actor,
            "triggering_actor": self.ci.triggering_actor,
            "provider": self.ci.provider,
            "repository": self.ci.repository,
            "commit": self.ci.commit,
            "ref": self.ci.ref,
            "pull_request": self.ci.pull_request,
            "run_url": self.ci.run_url,
            "command": list(self.command),
            "subcommand": self.subcommand,
            "tool": {"name": self.tool_name, "version": self.tool_version},
            "workspace": self.workspace,
            "changes": counts.to_dict() if counts else None,
            "plan": self.plan.to_json() if self.plan else None,
            "error": self.error,
            "notes": list(self.notes),
        }


def _iso(value: dt.datetime | None) -> str | None:
    return iso(value) if value is not None else None


def _display_arg(arg: str) -> str:
    if arg and all(c.isalnum() or c in "-_=./:,@+%" for c in arg):
        return arg
    return json.dumps(arg, ensure_ascii=False)


class _Fields:
    """Typed access to one JSON object, noting every field of the wrong type."""

    def __init__(self, data: Mapping[str, Any], where: str, notes: list[str]) -> None:
        self.data = data
        self.where = where
        self.notes = notes

    def _wrong(self, name: str, wanted: str) -> None:
        value = self.data.get(name)
        self.notes.append(f"{self.where}{name} is a {type(value).__name__}, not {wanted}")

    def text(self, name: str) -> str | None:
        value = self.data.get(name)
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # ids written as numbers by another writer
        self._wrong(name, "a string")
        return None

    def integer(self, name: str) -> int | None:
        value = self.data.get(name)
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        self._wrong(name, "an integer")
        return None

    def mapping(self, name: str) -> Mapping[str, Any] | None:
        value = self.data.get(name)
        if value is None or isinstance(value, Mapping):
            return value
        self._wrong(name, "an object")
        return None

    def items(self, name: str) -> list[Any]:
        value = self.data.get(name)
        if value is None:
            return []
        if isinstance(value, list):
            return value
        self._wrong(name, "a list")
        return []

    def time(self, name: str) -> dt.datetime | None:
        value = self.data.get(name)
        if value is None:
            return None
        parsed = moment(value)
        if parsed is None:
            self.notes.append(f"{self.where}{name} is not an ISO-8601 time")
        return parsed


_CI_FIELDS = (
    "repository",
    "commit",
    "ref",
    "actor",
    "triggering_actor",
    "run_id",
    "attempt",
    "job",
    "workflow",
    "event",
    "pull_request",
    "run_url",
    "runner",
    "server_url",
)


def _ci(raw: Mapping[str, Any] | None, notes: list[str]) -> CiInfo:
    if raw is None:
        return CiInfo(provider="unknown")
    fields = _Fields(raw, "ci.", notes)
    values = {name: fields.text(name) for name in _CI_FIELDS}
    extra_raw = fields.mapping("extra") or {}
    extra = {str(k): v for k, v in extra_raw.items() if v is None or isinstance(v, str)}
    return CiInfo(provider=fields.text("provider") or "unknown", extra=extra, **values)


def _resources(raw: list[Any], notes: list[str]) -> tuple[ResourceChange, ...]:
    found = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("address"), str):
            notes.append(f"plan.resources[{index}] has no address")
            continue
        actions = entry.get("actions")
        names = [a for a in actions if isinstance(a, str)] if isinstance(actions, list) else []
        importing = entry.get("importing") is True
        previous = entry.get("previous_address")
        previous = previous if isinstance(previous, str) else None
        found.append(
            ResourceChange(
                entry["address"],
                action_of(names, importing, previous is not None),
                importing,
                previous,
            )
        )
    return tuple(found)


def _plan(raw: Mapping[str, Any] | None, notes: list[str]) -> PlanInfo | None:
    if raw is None:
        return None
    fields = _Fields(raw, "plan.", notes)
    counted = [fields.integer(name) for name in ("add", "change", "destroy", "import")]
    counts = None
    if all(value is not None for value in counted[:3]):
        add, change, destroy, imported = (value or 0 for value in counted)
        counts = PlanCounts(add, change, destroy, imported)
    return PlanInfo(
        plan_file=fields.text("plan_file"),
        plan_file_sha256=fields.text("plan_file_sha256"),
        counts=counts,
        resources=_resources(fields.items("resources"), notes),
        error=fields.text("error"),
    )


def _artifacts(raw: list[Any], notes: list[str]) -> tuple[ArtifactRef, ...]:
    found = []
    for index, entry in enumerate(raw):
        names = ("name", "key", "version_id", "sha256")
        if not isinstance(entry, Mapping) or not all(isinstance(entry.get(n), str) for n in names):
            notes.append(f"artifacts[{index}] is malformed")
            continue
        size = entry.get("size")
        found.append(
            ArtifactRef(
                entry["name"],
                entry["key"],
                entry["version_id"],
                entry["sha256"],
                size if isinstance(size, int) and not isinstance(size, bool) else None,
            )
        )
    return tuple(found)


def _identity(raw: Mapping[str, Any] | None) -> str | None:
    if raw is None:
        return None
    if "unavailable" in raw:
        return f"unavailable: {raw.get('unavailable')}"
    return f"{raw.get('provider')}: {raw.get('issuer')} {raw.get('subject')}"


def _subcommand(command: Sequence[str], cwd: str | None) -> str | None:
    if not command:
        return None
    # Recorded paths may not exist here: every positional of apply counts as a plan file.
    try:
        invocation = parse_invocation(list(command), cwd=Path(cwd or "/"), is_file=lambda _: True)
    except ValueError:
        return None
    return invocation.subcommand


def _command_resources(row: RunRow) -> tuple[ResourceChange, ...]:
    """``terraform import ADDRESS ID`` names its resource on the command line."""
    if row.subcommand != "import":
        return ()
    args = list(row.command)
    index = args.index("import") if "import" in args else -1
    positionals = [a for a in args[index + 1 :] if not a.startswith("-")]
    if index < 0 or len(positionals) < 2:
        return ()
    return (ResourceChange(positionals[-2], Action.IMPORT, True, None, "command"),)


def safe_record(data: bytes | None) -> dict[str, Any] | None:
    """``data`` parsed strictly (``canonical.parse_strict``, as verify parses records) as a
    JSON object; None for anything else, hostile input included (too deep, duplicate keys,
    invalid UTF-8, NaN), never an exception."""
    if data is None:
        return None
    try:
        value = parse_strict(data)
    except (JsonRejected, MemoryError):
        return None
    return value if isinstance(value, dict) else None


def row_from_bytes(seq: int, data: bytes | None, error: str | None = None) -> RunRow:
    """The row for slot ``seq``; an unreadable or non-record slot becomes a row with ``error``."""
    if data is None:
        return RunRow(seq, None, error=error or "the slot could not be read")
    try:
        record = parse_strict(data)
    except (JsonRejected, MemoryError) as exc:
        return RunRow(seq, sha256_hex(data), error=f"the slot holds no record: {exc}"[:300])
    if not isinstance(record, dict):
        kind = type(record).__name__
        return RunRow(seq, sha256_hex(data), error=f"the slot holds a JSON {kind}, not a record")
    return row_from_record(seq, record, sha256_hex(data))


def row_from_record(seq: int, record: Mapping[str, Any], record_sha256: str | None) -> RunRow:
    notes: list[str] = []
    fields = _Fields(record, "", notes)
    command = tuple(str(a) for a in fields.items("command") if isinstance(a, str))
    tool = _Fields(fields.mapping("tool") or {}, "tool.", notes)
    signature = fields.mapping("signature") or {}
    alg = signature.get("alg")
    return RunRow(
        seq=seq,
        record_sha256=record_sha256,
        stream=fields.text("stream"),
        run_folder=fields.text("run_folder"),
        started_at=fields.time("started_at"),
        finished_at=fields.time("finished_at"),
        status=fields.text("status"),
        exit_code=fields.integer("exit_code"),
        ci=_ci(fields.mapping("ci"), notes),
        command=command,
        subcommand=_subcommand(command, fields.text("cwd")),
        tool_name=tool.text("name"),
        tool_version=tool.text("version"),
        workspace=fields.text("workspace"),
        plan=_plan(fields.mapping("plan"), notes),
        artifacts=_artifacts(fields.items("artifacts"), notes),
        signature_alg=alg if isinstance(alg, str) else None,
        identity=_identity(fields.mapping("identity")),
        tfaudit_version=fields.text("tfaudit_version"),
        notes=tuple(notes),
    )
