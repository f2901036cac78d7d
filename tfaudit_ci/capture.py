"""I/O around the wrapped tool: its version, workspace, and the plan JSON for plan/apply.

``<tool> show -json`` prints every sensitive value in clear: its output stays in memory, is
redacted before anything reaches the spool, and the sensitive strings it marks are handed to
the log's second redaction pass (``secondpass``), never written anywhere.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tfaudit_ci.canonical import compact_bytes
from tfaudit_ci.plan import PlanSummary, analyze_plan, summarize_plan
from tfaudit_ci.redact import RuleSet, redact_bytes
from tfaudit_ci.tfargs import TfInvocation

SHOW_TIMEOUT_SECONDS = 600


@dataclass
class PlanCapture:
    plan_file: str
    plan_file_sha256: str | None
    summary: PlanSummary | None
    json_bytes: bytes | None  # redacted plan JSON, ready for the spool
    sensitive_values: int = 0
    error: str | None = None
    literals: int = 0  # configuration literals replaced
    # Every string the plan marks sensitive: memory only, for the second pass.
    sensitive: frozenset[str] = field(default=frozenset(), repr=False)

    def record_fields(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "plan_file": Path(self.plan_file).name,
            "plan_file_sha256": self.plan_file_sha256,
            "sensitive_values_redacted": self.sensitive_values,
            "literals_redacted": self.literals,
            "error": self.error,
        }
        if self.summary is not None:
            data.update(self.summary.to_dict())
        return data


def tool_version(inv: TfInvocation, env: Mapping[str, str], cwd: Path) -> str | None:
    if inv.tool not in {"terraform", "tofu"}:
        return None
    try:
        done = subprocess.run(
            [inv.binary, "version", "-json"],
            cwd=cwd,
            env=dict(env),
            capture_output=True,
            timeout=30,
            check=False,
        )
        version = json.loads(done.stdout).get("terraform_version")
    except (OSError, ValueError, subprocess.TimeoutExpired, AttributeError):
        return None
    return str(version) if version else None


def workspace(inv: TfInvocation, env: Mapping[str, str], cwd: Path) -> str | None:
    if inv.tool not in {"terraform", "tofu"}:
        return None
    if env.get("TF_WORKSPACE"):
        return env["TF_WORKSPACE"]
    base = Path(inv.chdir) if inv.chdir else cwd
    data_dir = env.get("TF_DATA_DIR") or ".terraform"
    try:
        return (base / data_dir / "environment").read_text(encoding="utf-8").strip() or "default"
    except OSError:
        return "default"


def sha256_file(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def show_json(
    inv: TfInvocation,
    plan_file: Path | None,
    env: Mapping[str, str],
    cwd: Path,
    ruleset: RuleSet,
) -> dict[str, Any] | str:
    """``<tool> show -json [PLAN]`` parsed (memory only), or why it failed (redacted)."""
    argv = [inv.binary]
    if inv.chdir:
        argv.append(f"-chdir={inv.chdir}")
    argv += ["show", "-json"] + ([str(plan_file)] if plan_file is not None else [])
    try:
        done = subprocess.run(
            argv,
            cwd=cwd,
            env=dict(env),
            capture_output=True,
            timeout=SHOW_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`show -json` failed: {exc}"
    if done.returncode != 0:
        message, _ = redact_bytes(done.stderr[-2000:], ruleset)
        lines = message.decode("utf-8", "replace").strip().splitlines()
        return f"`show -json` exited {done.returncode}: {lines[-1] if lines else ''}"
    try:
        document = json.loads(done.stdout)
    except ValueError:
        return "`show -json` printed invalid JSON"
    if not isinstance(document, dict):
        return "`show -json` printed no JSON object"
    return document


def capture_plan(
    inv: TfInvocation, plan_file: str, env: Mapping[str, str], cwd: Path, ruleset: RuleSet
) -> PlanCapture:
    """``<tool> show -json PLAN``, with every sensitive value replaced, plus its summary."""
    path = Path(plan_file)
    capture = PlanCapture(plan_file, sha256_file(path), None, None)
    if capture.plan_file_sha256 is None:
        capture.error = f"plan file {path.name} not found after the run"
        return capture
    # The raw JSON holds sensitive values in clear: it stays in memory, never on disk.
    plan = show_json(inv, path, env, cwd, ruleset)
    if isinstance(plan, str):
        capture.error = plan
        return capture
    redaction = analyze_plan(plan)
    capture.summary = summarize_plan(plan)
    capture.sensitive_values = redaction.sensitive_count
    capture.literals = redaction.literal_count
    capture.sensitive = redaction.sensitive
    capture.json_bytes, _ = redact_bytes(compact_bytes(redaction.plan), ruleset)
    return capture
