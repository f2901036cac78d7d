"""One way to run a helper tool and fail loudly: its stdout, or an error with the tail of its
stderr (pip, gpg, terraform ...)."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence


def run_tool(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    what: str | None = None,
    error: type[Exception] = RuntimeError,
    tail: int = 3000,
) -> str:
    """Run ``argv``; its stdout, or ``error("<what> failed: <stderr tail>")``."""
    done = subprocess.run(
        list(argv),
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise error(f"{what or argv[0]} failed: {done.stderr.strip()[-tail:]}")
    return done.stdout
