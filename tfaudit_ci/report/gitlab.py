"""GitLab CI reporting: the ``artifacts:reports:terraform`` JSON and a ``dotenv`` report.

The job's template lists both files under ``artifacts:reports`` so GitLab shows the plan
counts in the merge request widget and passes the outputs to later jobs as variables.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

from tfaudit_ci.report.outputs import OUTPUT_NAMES, output_values
from tfaudit_ci.result import RunResult

DEFAULT_DOTENV = "tfaudit.env"
DEFAULT_PLAN_REPORT = "tfaudit-plan.json"

# GitLab's dotenv parser takes one KEY=VALUE per line, with no quoting or escapes it undoes:
# anything that could start a new line or be read as a quote or comment is replaced.
_DOTENV_UNSAFE = re.compile(r"[\x00-\x1f\x7f\"'`#]")


def dotenv_name(output: str) -> str:
    """``record-uri`` -> ``TFAUDIT_RECORD_URI``."""
    return "TFAUDIT_" + output.upper().replace("-", "_")


def terraform_report(result: RunResult) -> dict[str, int]:
    """GitLab's terraform report: counts of resources to create, update and delete."""
    plan = result.plan
    if plan is None:
        return {"create": 0, "update": 0, "delete": 0}
    return {"create": plan.add, "update": plan.change, "delete": plan.destroy}


def dotenv(result: RunResult, *, path_base: str | None = None) -> str:
    """The same outputs as on GitHub, as ``TFAUDIT_*`` dotenv lines."""
    values = output_values(result, path_base=path_base)
    lines = [
        f"{dotenv_name(name)}={_DOTENV_UNSAFE.sub('_', values[name]).strip()}"
        for name in OUTPUT_NAMES
    ]
    return "\n".join(lines) + "\n"


def report_paths(env: Mapping[str, str]) -> tuple[Path, Path]:
    """(dotenv path, plan report path); relative names resolve in the project folder."""
    base = Path(env.get("CI_PROJECT_DIR") or os.getcwd())
    dotenv_path = Path(env.get("TFAUDIT_GITLAB_DOTENV") or DEFAULT_DOTENV)
    plan_path = Path(env.get("TFAUDIT_GITLAB_PLAN_REPORT") or DEFAULT_PLAN_REPORT)
    return base / dotenv_path, base / plan_path


def report(result: RunResult, env: Mapping[str, str]) -> None:
    """Write the dotenv report, and the terraform report when the run produced a plan.

    Without a plan (``init``, ``fmt``, a failed run) no terraform report is written: an
    all-zero one would tell reviewers "no changes", which nobody checked.
    """
    dotenv_path, plan_path = report_paths(env)
    # Artifacts must lie inside the project folder, so paths are given relative to it.
    project_dir = env.get("CI_PROJECT_DIR") or None
    dotenv_path.parent.mkdir(parents=True, exist_ok=True)
    dotenv_path.write_text(dotenv(result, path_base=project_dir), encoding="utf-8")
    if result.plan is not None:
        plan_path.parent.mkdir(parents=True, exist_ok=True)
        plan_path.write_text(json.dumps(terraform_report(result)) + "\n", encoding="utf-8")
