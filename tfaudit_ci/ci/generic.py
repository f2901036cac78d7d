"""Fallback metadata for any other CI or a laptop: ask git and the OS.

Every lookup may fail (git missing, not a repository, detached HEAD, no remote, a user id
without a passwd entry in a container); each failure just leaves that field None.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from tfaudit_ci.ci.info import CiInfo, env_value

_GIT_TIMEOUT_SECONDS = 15
# Same order as getpass.getuser(), but read from the env mapping we were given.
_USER_VARS = ("LOGNAME", "USER", "LNAME", "USERNAME")
# scp-like syntax: [user@]host:path (no scheme, no slash before the colon).
_SCP_LIKE = re.compile(r"(?:[^@/]+@)?(?P<host>[^:/]+):(?P<path>(?!/).+)")


def collect(env: Mapping[str, str], *, cwd: Path) -> CiInfo:
    remote_url = git(["remote", "get-url", "origin"], cwd=cwd, env=env)
    server_url, repository = parse_remote_url(remote_url) if remote_url else (None, None)
    user = os_user(env)
    return CiInfo(
        provider="generic",
        repository=repository,
        commit=git(["rev-parse", "--verify", "-q", "HEAD"], cwd=cwd, env=env),
        ref=current_ref(cwd=cwd, env=env),
        actor=user,
        triggering_actor=user,
        runner=_hostname(),
        server_url=server_url,
    )


def git(args: list[str], *, cwd: Path, env: Mapping[str, str] | None = None) -> str | None:
    """stdout of a git command (stripped), or None on any failure."""
    run_env = None if env is None else {**env, "GIT_TERMINAL_PROMPT": "0"}
    try:
        completed = subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=run_env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_GIT_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if completed.returncode != 0:
        return None
    output = completed.stdout.decode("utf-8", errors="replace").strip()
    return output or None


def current_ref(*, cwd: Path, env: Mapping[str, str] | None = None) -> str | None:
    """Full ref of the checked-out branch ("refs/heads/main"); None when HEAD is detached."""
    ref = git(["symbolic-ref", "-q", "HEAD"], cwd=cwd, env=env)
    if ref:
        return ref
    # Fallback for odd setups where symbolic-ref fails but a branch name is known.
    name = git(["rev-parse", "--abbrev-ref", "HEAD"], cwd=cwd, env=env)
    if name and name != "HEAD":
        return f"refs/heads/{name}"
    return None


def parse_remote_url(url: str) -> tuple[str | None, str | None]:
    """(server URL, repository path) of a git remote, credentials dropped.

    ``https://user:tok@host/group/repo.git`` -> ("https://host", "group/repo");
    ``git@host:group/repo.git`` -> (None, "group/repo"); ``/srv/git/repo.git`` -> (None, "repo").
    The server is only reported for http(s) remotes, where it is known to be a web URL.
    """
    url = url.strip()
    if "://" in url:
        parts = urlsplit(url)
        host = parts.hostname or ""
        path = parts.path
        server: str | None = None
        if parts.scheme in ("http", "https") and host:
            port = f":{parts.port}" if parts.port else ""
            server = f"{parts.scheme}://{host}{port}"
        if parts.scheme == "file" or not host:
            return None, _repo_path(path.rsplit("/", 1)[-1])
        return server, _repo_path(path)
    match = _SCP_LIKE.fullmatch(url)
    if match:
        return None, _repo_path(match.group("path"))
    # A local path remote: only its last component names the repository.
    return None, _repo_path(url.rstrip("/").rsplit("/", 1)[-1])


def _repo_path(path: str) -> str | None:
    path = path.strip("/")
    path = path.removesuffix(".git").rstrip("/")
    return path or None


def os_user(env: Mapping[str, str]) -> str | None:
    for name in _USER_VARS:
        value = env_value(env, name)
        if value:
            return value
    try:
        import pwd  # not on Windows

        return pwd.getpwuid(os.getuid()).pw_name or None
    except (ImportError, AttributeError, KeyError, OSError):
        return None


def _hostname() -> str | None:
    try:
        return socket.gethostname() or None
    except OSError:
        return None
