"""The outputs both CIs publish, as plain strings: one definition, two spellings.

Only short, structured values go here (codes, counts, URIs, digests, paths): never log or plan
text, which stays in files (outputs and env vars end up in places nobody redacts).
"""

from __future__ import annotations

import os

from tfaudit_ci.result import RunResult

# Output names in GitHub's kebab-case; GitLab's dotenv uses TFAUDIT_UPPER_SNAKE of the same.
OUTPUT_NAMES: tuple[str, ...] = (
    "exit-code",
    "status",
    "audit-ok",
    "seq",
    "record-uri",
    "record-sha256",
    "checkpoint-uri",
    "log-path",
    "plan-json-path",
    "to-add",
    "to-change",
    "to-destroy",
)


def _relative_to(path: str | None, base: str | None) -> str | None:
    """``path`` relative to ``base`` when it lies inside it, else unchanged."""
    if not path or not base:
        return path
    base_abs = os.path.abspath(base)
    path_abs = os.path.abspath(path)
    if os.path.commonpath([base_abs, path_abs]) != base_abs:
        return path
    return os.path.relpath(path_abs, base_abs)


def output_values(result: RunResult, *, path_base: str | None = None) -> dict[str, str]:
    """Every output as a string ("" when unknown), paths made relative to ``path_base``.

    ``exit-code`` is the wrapped command's own code (2 = changes present under
    ``-detailed-exitcode``), empty when it never ran; the step's own exit code is tfaudit's.
    """
    command_code = result.command_exit_code
    plan = result.plan
    return {
        "exit-code": "" if command_code is None else str(command_code),
        "status": result.status,
        "audit-ok": "true" if result.audit_ok else "false",
        "seq": str(result.seq) if result.seq is not None else "",
        "record-uri": result.record_uri or "",
        "record-sha256": result.record_sha256 or "",
        "checkpoint-uri": result.checkpoint_uri or "",
        "log-path": _relative_to(result.log_path, path_base) or "",
        "plan-json-path": _relative_to(result.plan_json_path, path_base) or "",
        "to-add": str(plan.add) if plan else "",
        "to-change": str(plan.change) if plan else "",
        "to-destroy": str(plan.destroy) if plan else "",
    }
