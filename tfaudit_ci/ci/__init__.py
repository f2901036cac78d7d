"""CI metadata: detect the CI from its environment and describe the run.

Adapters read only the environment mapping they are given (never ``os.environ``) and
copy only ids and names, never a credential.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from tfaudit_ci.ci import generic, github, gitlab
from tfaudit_ci.ci.info import CiInfo
from tfaudit_ci.errors import ConfigError

__all__ = ["CiInfo", "checked_stream", "default_stream", "detect", "resolve_stream"]

_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
FALLBACK_STREAM = "default"


def detect(env: Mapping[str, str], *, cwd: Path) -> CiInfo:
    """GitHub if GITHUB_ACTIONS=="true", GitLab if GITLAB_CI=="true", else generic."""
    if env.get("GITHUB_ACTIONS") == "true":
        return github.collect(env)
    if env.get("GITLAB_CI") == "true":
        return gitlab.collect(env)
    return generic.collect(env, cwd=cwd)


def default_stream(info: CiInfo, cwd: Path, *, env: Mapping[str, str] | None = None) -> str:
    """The stream a run goes to when none is configured.

    The repository slug, else the origin remote's repository, else the directory name.
    The result is a safe object-key fragment: ``[A-Za-z0-9._-]`` segments joined by "/",
    with no empty, "." or ".." segment (a stream must never escape its prefix).
    """
    candidates = [info.repository]
    if not info.repository:
        remote = generic.git(["remote", "get-url", "origin"], cwd=cwd, env=env)
        candidates.append(generic.parse_remote_url(remote)[1] if remote else None)
    candidates.append(cwd.resolve().name)
    for candidate in candidates:
        stream = sanitize_stream(candidate or "")
        if stream:
            return stream
    return FALLBACK_STREAM


def sanitize_stream(raw: str) -> str:
    segments = []
    for segment in re.split(r"[/\\]+", raw):
        cleaned = _UNSAFE_CHARS.sub("-", segment).strip("-")
        if cleaned.strip("."):
            segments.append(cleaned)
    return "/".join(segments)


def checked_stream(stream: str) -> str:
    """A configured stream name, refused unless it is already a safe key."""
    if sanitize_stream(stream) != stream:
        raise ConfigError(
            f"stream name {stream!r} is not a safe key",
            fix="use letters, digits, '.', '_', '-' in segments joined by '/'",
        )
    return stream


def resolve_stream(
    configured: str | None, env: Mapping[str, str], cwd: Path, info: CiInfo | None = None
) -> str:
    """The configured stream (checked), else the default for this CI run."""
    if configured:
        return checked_stream(configured)
    return default_stream(info or detect(env, cwd=cwd), cwd, env=env)
