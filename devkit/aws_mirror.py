"""The ``hashicorp/aws`` provider as a filesystem mirror, for tests that need a real provider.

The machine image may carry it (``<dir>/registry.terraform.io/hashicorp/aws/<version>/...``);
``TFAUDIT_AWS_PROVIDER_MIRROR`` names the ``<dir>`` explicitly. Without it the tests that need
it are skipped with a reason that says so, never silently passed.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

AWS_PROVIDER_VERSION = "5.100.0"
MIRROR_ENV = "TFAUDIT_AWS_PROVIDER_MIRROR"
_PROVIDER = Path("registry.terraform.io", "hashicorp", "aws")
# Trees that never hold a plugin mirror, or are too big to walk.
_SKIP = frozenset({"proc", "sys", "dev", "run", "tmp", "boot", "snap", "lost+found"})
_MAX_DEPTH = 5


def _has_provider(directory: Path) -> bool:
    found = directory / _PROVIDER / AWS_PROVIDER_VERSION
    return any(found.glob("*/terraform-provider-aws*"))


def _walk_for_mirror() -> Path | None:
    frontier = [Path("/")]
    for depth in range(_MAX_DEPTH):
        deeper: list[Path] = []
        for directory in frontier:
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False) or entry.name.startswith("."):
                    continue
                if depth == 0 and entry.name in _SKIP:
                    continue
                if entry.name == "registry.terraform.io":
                    if _has_provider(directory):
                        return directory
                    continue
                if entry.name not in ("site-packages", "node_modules", "__pycache__"):
                    deeper.append(Path(entry.path))
        frontier = deeper
    return None


@functools.cache
def aws_mirror() -> Path | None:
    """The mirror directory (the one holding ``registry.terraform.io``), or None."""
    named = os.environ.get(MIRROR_ENV)
    if named:
        return Path(named) if _has_provider(Path(named)) else None
    return _walk_for_mirror()


def require_aws_mirror() -> Path:
    """The mirror, or skip the calling test loudly (tests only)."""
    import pytest

    mirror = aws_mirror()
    if mirror is None:
        pytest.skip(
            f"AWS PROVIDER MIRROR MISSING: hashicorp/aws {AWS_PROVIDER_VERSION} was not found as "
            f"a filesystem mirror; set {MIRROR_ENV}=<dir holding registry.terraform.io>. "
            "This test did NOT run."
        )
    return mirror


def aws_cli_config(tmp: Path, mirror: Path) -> Path:
    """A terraform CLI config that installs providers from ``mirror`` only."""
    config = tmp / "terraformrc-aws"
    config.write_text(
        f'provider_installation {{\n  filesystem_mirror {{\n    path = "{mirror}"\n  }}\n}}\n',
        encoding="utf-8",
    )
    return config
