"""Publish a run's result to the CI it runs in (GitHub Actions, GitLab CI), or nowhere."""

from __future__ import annotations

from collections.abc import Mapping

from tfaudit_ci.report import github, gitlab
from tfaudit_ci.result import RunResult


def detect_ci(env: Mapping[str, str]) -> str | None:
    """``"github"``, ``"gitlab"`` or None, from the variables each CI documents as always set."""
    if env.get("GITHUB_ACTIONS") == "true":
        return "github"
    if env.get("GITLAB_CI") == "true":
        return "gitlab"
    return None


def publish(result: RunResult, env: Mapping[str, str]) -> None:
    """Write the outputs, summary and report files of the CI detected from ``env``."""
    ci = detect_ci(env)
    if ci == "github":
        github.report(result, env)
    elif ci == "gitlab":
        gitlab.report(result, env)
