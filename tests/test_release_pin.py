"""scripts/release_pin.py: what the release workflow does to the tagged tree (and refuses)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tfaudit_ci import __version__

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "release_pin.py"
DIGEST = "sha256:" + "ab" * 32
IMAGE = f"ghcr.io/tfaudit-ci/tfaudit-ci@{DIGEST}"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    for name in ("action.yml", "CHANGELOG.md", "tfaudit_ci/__init__.py", "host/action.yml",
                 "templates/tfaudit.yml", "templates/tfaudit.gitlab-ci.yml"):  # fmt: skip
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, root / name)
    return root


def pin(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(root), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_the_release_ref_runs_the_pushed_image_by_digest(tree: Path) -> None:
    done = pin(tree, "--image", IMAGE, "--version", __version__)
    assert done.returncode == 0, done.stderr
    action = yaml.safe_load((tree / "action.yml").read_text())
    assert action["runs"]["image"] == f"docker://{IMAGE}"
    assert action["runs"]["post-entrypoint"] == "/usr/local/bin/tfaudit-action-post"
    assert (tree / "host" / "release-requirement.txt").read_text() == f"tfaudit-ci=={__version__}\n"
    pinned = f"ghcr.io/tfaudit-ci/tfaudit-ci:{__version__}@{DIGEST}"
    spec = next(yaml.safe_load_all((tree / "templates" / "tfaudit.yml").read_text()))
    assert spec["spec"]["inputs"]["image"]["default"] == pinned
    include = yaml.safe_load((tree / "templates" / "tfaudit.gitlab-ci.yml").read_text())
    assert include[".tfaudit"]["variables"]["TFAUDIT_CI_IMAGE"] == pinned
    again = pin(tree, "--image", IMAGE, "--version", __version__)
    assert again.returncode == 1 and "expected one match" in again.stderr  # nothing half-done


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--image", "ghcr.io/x/y:latest", "--version", __version__], "NAME@sha256"),
        (["--image", IMAGE, "--version", "9.9.9"], f"says {__version__}"),
        (["--image", IMAGE, "--version", "main"], "release version"),
    ],
)
def test_a_wrong_tag_or_image_is_refused(tree: Path, args: list[str], message: str) -> None:
    done = pin(tree, *args)
    assert done.returncode == 1
    assert message in done.stderr
    assert yaml.safe_load((tree / "action.yml").read_text())["runs"]["image"] == "Dockerfile"


def test_release_notes_come_from_the_changelog(tree: Path) -> None:
    (tree / "CHANGELOG.md").write_text(
        "# Changelog\n\n## [Unreleased]\n\n## [1.2.3] - 2027-01-01\n\n### Added\n- a thing\n\n"
        "## [1.2.2]\n- older\n"
    )
    done = pin(tree, "--notes", "1.2.3")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "### Added\n- a thing\n"
    missing = pin(tree, "--notes", "4.5.6")
    assert missing.returncode == 1 and "no section for [4.5.6]" in missing.stderr


def test_the_in_tree_defaults_name_this_version() -> None:
    """Unreleased trees build their image; the GitLab default names the package's version."""
    assert yaml.safe_load((REPO / "action.yml").read_text())["runs"]["image"] == "Dockerfile"
    assert not (REPO / "host" / "release-requirement.txt").exists()
    spec = next(yaml.safe_load_all((REPO / "templates" / "tfaudit.yml").read_text()))
    assert (
        spec["spec"]["inputs"]["image"]["default"] == f"ghcr.io/tfaudit-ci/tfaudit-ci:{__version__}"
    )
    include = yaml.safe_load((REPO / "templates" / "tfaudit.gitlab-ci.yml").read_text())
    assert (
        include[".tfaudit"]["variables"]["TFAUDIT_CI_IMAGE"]
        == spec["spec"]["inputs"]["image"]["default"]
    )
