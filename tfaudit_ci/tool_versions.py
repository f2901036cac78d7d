"""Terraform/OpenTofu versions, version constraints, and where a configuration asks for one.

``terraform-version: auto`` looks, in this order, for what the configuration itself asks for
(the order dflook's terraform actions use, less the remote-state probes that need
credentials):

1. ``required_version`` in the working directory's ``*.tf`` (and ``*.tofu`` for OpenTofu,
   and the JSON forms): a constraint, resolved to a concrete version by the caller;
2. ``.opentofu-version`` (OpenTofu only), then ``.terraform-version`` (tfenv): a version,
   ``latest`` or ``latest:REGEX``;
3. ``.tool-versions`` (asdf), looked up from the working directory to the workspace root:
   the ``terraform`` (or ``opentofu``) line.

Everything here is pure text handling: no network, no subprocess.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tfaudit_ci.errors import ConfigError

Tool = Literal["terraform", "tofu"]
TOOLS: tuple[Tool, ...] = ("terraform", "tofu")

_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?")
_CONSTRAINT = re.compile(
    r"(=|!=|>=|<=|>|<|~>)?\s*v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?"
)
# `required_version = "..."` in HCL; comments are removed before matching.
_REQUIRED_VERSION = re.compile(r"\brequired_version\s*=\s*\"([^\"]*)\"")
_HCL_COMMENTS = re.compile(r"/\*.*?\*/|(?:#|//)[^\n]*", re.S)
# A version file is a handful of bytes; anything larger is not one.
MAX_VERSION_FILE_BYTES = 64 * 1024
MAX_CONFIG_FILE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, order=True)
class Version:
    """A release version, ordered the way releases are (a pre-release sorts first)."""

    major: int
    minor: int
    patch: int
    # ("", ) sorts after ("0", "alpha1"): the release after its pre-releases.
    pre_key: tuple[int, str] = (1, "")

    @classmethod
    def parse(cls, text: str) -> Version:
        match = _VERSION.fullmatch(text.strip())
        if not match:
            raise ConfigError(
                f"{text.strip()!r} is not a version",
                fix="use a release version such as 1.9.8 (or `auto`)",
            )
        major, minor, patch, pre = match.groups()
        return cls(int(major), int(minor), int(patch), (0, pre) if pre else (1, ""))

    @property
    def pre_release(self) -> str:
        return self.pre_key[1]

    def __str__(self) -> str:
        core = f"{self.major}.{self.minor}.{self.patch}"
        return f"{core}-{self.pre_release}" if self.pre_release else core


@dataclass(frozen=True)
class Constraint:
    """One clause of a version constraint (``>= 1.5``, ``~> 1.9.0``, ``!= 1.6.1``)."""

    operator: str
    parts: tuple[int, ...]  # 1 to 3 numbers, as written
    pre_release: str = ""

    def _compare(self, version: Version) -> int:
        padded = (*self.parts, 0, 0)[:3]
        mine = (version.major, version.minor, version.patch)
        if mine != padded:
            return -1 if mine < padded else 1
        if version.pre_release == self.pre_release:
            return 0
        if not version.pre_release:
            return 1
        if not self.pre_release:
            return -1
        return -1 if version.pre_release < self.pre_release else 1

    def allows(self, version: Version) -> bool:
        # As in terraform: a pre-release matches only an exact `=` naming it.
        if version.pre_release and self.operator != "=":
            return False
        order = self._compare(version)
        if self.operator == "=":
            return order == 0
        if self.operator == "!=":
            return order != 0
        if self.operator == ">":
            return order > 0
        if self.operator == ">=":
            return order >= 0
        if self.operator == "<":
            return order < 0
        if self.operator == "<=":
            return order <= 0
        # ~> : the last number written may grow, the ones before it are fixed.
        if order < 0:
            return False
        fixed = self.parts[:-1] if len(self.parts) > 1 else self.parts[:1]
        return (version.major, version.minor, version.patch)[: len(fixed)] == fixed

    def __str__(self) -> str:
        text = ".".join(str(part) for part in self.parts)
        return f"{self.operator} {text}" + (f"-{self.pre_release}" if self.pre_release else "")


def parse_constraints(text: str) -> list[Constraint]:
    """``">= 1.5, < 2.0"`` -> its clauses; a malformed clause is a clear error."""
    clauses: list[Constraint] = []
    for raw in text.split(","):
        clause = raw.strip()
        match = _CONSTRAINT.fullmatch(clause)
        if not match:
            raise ConfigError(
                f"version constraint {text!r} has a clause {clause!r} that is not understood",
                fix="write constraints the way required_version does, e.g. `>= 1.5, < 2.0`",
            )
        operator, major, minor, patch, pre = match.groups()
        parts = tuple(int(p) for p in (major, minor, patch) if p is not None)
        clauses.append(Constraint(operator or "=", parts, pre or ""))
    return clauses


def satisfies(version: Version, constraints: Sequence[Constraint]) -> bool:
    return all(constraint.allows(version) for constraint in constraints)


def newest(versions: Iterable[Version], constraints: Sequence[Constraint] = ()) -> Version | None:
    """The newest release (never a pre-release) allowed by every constraint."""
    allowed = [v for v in versions if not v.pre_release and satisfies(v, constraints)]
    return max(allowed) if allowed else None


@dataclass(frozen=True)
class Request:
    """What a configuration asks for: an exact version, a constraint, or `latest[:regex]`."""

    source: str  # where it was found, for messages ("infra/versions.tf", ".terraform-version")
    exact: Version | None = None
    constraints: tuple[Constraint, ...] = ()
    latest_pattern: str | None = None  # "" = plain `latest`

    def describe(self) -> str:
        if self.exact is not None:
            return f"{self.exact} (from {self.source})"
        if self.latest_pattern is not None:
            suffix = f" matching {self.latest_pattern!r}" if self.latest_pattern else ""
            return f"the latest release{suffix} (from {self.source})"
        clauses = ", ".join(str(c) for c in self.constraints)
        return f"a release matching {clauses!r} (from {self.source})"


def _read_small(path: Path, limit: int) -> str | None:
    try:
        if not path.is_file() or path.stat().st_size > limit:
            return None
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _config_files(directory: Path, tool: Tool) -> list[Path]:
    suffixes = [".tf", ".tf.json"] + ([".tofu", ".tofu.json"] if tool == "tofu" else [])
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return []
    return [p for p in entries if any(p.name.endswith(s) for s in suffixes) and p.is_file()]


def _required_versions_in(path: Path) -> list[str]:
    text = _read_small(path, MAX_CONFIG_FILE_BYTES)
    if text is None:
        return []
    if path.name.endswith(".json"):
        try:
            data = json.loads(text)
        except ValueError:
            return []
        blocks = data.get("terraform") if isinstance(data, dict) else None
        found: list[str] = []
        for block in blocks if isinstance(blocks, list) else [blocks]:
            if isinstance(block, dict) and isinstance(block.get("required_version"), str):
                found.append(block["required_version"])
        return found
    return _REQUIRED_VERSION.findall(_HCL_COMMENTS.sub("", text))


def required_version(directory: Path, tool: Tool) -> Request | None:
    """Every ``required_version`` in the directory, as one combined constraint."""
    constraints: list[Constraint] = []
    sources: list[str] = []
    for path in _config_files(directory, tool):
        for text in _required_versions_in(path):
            constraints += parse_constraints(text)
            sources.append(path.name)
    if not constraints:
        return None
    return Request(
        f"required_version in {', '.join(sorted(set(sources)))}", None, tuple(constraints)
    )


def _version_file_request(text: str, source: str) -> Request | None:
    word = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not word:
        return None
    if word == "latest":
        return Request(source, latest_pattern="")
    if word.startswith("latest:"):
        pattern = word.split(":", 1)[1]
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(
                f"{source} holds an invalid regular expression {pattern!r}: {exc}",
                fix="write `latest:^1\\.9` style patterns in the version file",
            ) from None
        return Request(source, latest_pattern=pattern)
    return Request(source, exact=Version.parse(word))


def version_file(directory: Path, tool: Tool) -> Request | None:
    """``.opentofu-version`` (OpenTofu) or ``.terraform-version`` in the directory."""
    names = [".opentofu-version", ".terraform-version"] if tool == "tofu" else []
    names = names or [".terraform-version"]
    for name in names:
        text = _read_small(directory / name, MAX_VERSION_FILE_BYTES)
        if text is not None:
            found = _version_file_request(text, name)
            if found is not None:
                return found
    return None


def tool_versions_file(directory: Path, root: Path, tool: Tool) -> Request | None:
    """The asdf ``.tool-versions`` entry, from ``directory`` up to ``root`` (inclusive)."""
    plugin = "opentofu" if tool == "tofu" else "terraform"
    current = directory.resolve()
    stop = root.resolve()
    while True:
        path = current / ".tool-versions"
        text = _read_small(path, MAX_VERSION_FILE_BYTES)
        for line in (text or "").splitlines():
            words = line.split("#", 1)[0].split()
            if len(words) >= 2 and words[0] == plugin:
                shown = str(path.relative_to(stop)) if path.is_relative_to(stop) else str(path)
                return _version_file_request(words[1], shown)
        if current == stop or current.parent == current or not current.is_relative_to(stop):
            return None
        current = current.parent


def detect_request(directory: Path, root: Path, tool: Tool) -> Request | None:
    """What the configuration in ``directory`` asks for, or None (use the bundled version)."""
    return (
        required_version(directory, tool)
        or version_file(directory, tool)
        or tool_versions_file(directory, root, tool)
    )
