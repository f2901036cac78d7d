"""scripts/install-image.sh, the Dockerfile's install step, against a fake local release.

No Docker engine and no network here: the release (zip + SHA256SUMS) is made in a temp dir and
served as file://, so the same download, checksum and install path as in the image runs.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import zipfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "install-image.sh"
FAKE_BINARY = '#!/bin/sh\necho "{tool} v{version} (fake)"\n'


def make_release(root: Path, tool: str, version: str, *, arch: str = "amd64") -> Path:
    release = root / "release"
    release.mkdir(parents=True)
    zip_path = release / f"{tool}_{version}_linux_{arch}.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr(tool, FAKE_BINARY.format(tool=tool, version=version))
        archive.writestr("LICENSE.txt", "not a binary")
    digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()
    other = "0" * 64
    (release / f"{tool}_{version}_SHA256SUMS").write_text(
        f"{other}  {tool}_{version}_darwin_arm64.zip\n{digest}  {zip_path.name}\n"
    )
    return release


def install(tmp_path: Path, release: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "RELEASE_BASE_URL": release.as_uri(),
        "INSTALL_DIR": str(tmp_path / "bin"),
        "TARGETARCH": "amd64",
        **env,
    }
    return subprocess.run(
        ["sh", str(SCRIPT), "tool"], env=full_env, capture_output=True, text=True, timeout=120
    )


def test_terraform_is_downloaded_verified_and_installed(tmp_path: Path) -> None:
    release = make_release(tmp_path, "terraform", "1.9.8")
    proc = install(tmp_path, release, TERRAFORM_VERSION="1.9.8")
    assert proc.returncode == 0, proc.stderr
    assert "terraform_1.9.8_linux_amd64.zip: checksum OK" in proc.stderr
    binary = tmp_path / "bin" / "terraform"
    assert binary.stat().st_mode & stat.S_IXUSR
    assert "terraform v1.9.8 (fake)" in proc.stdout  # the script ran the installed binary


def test_opentofu_build_arg_installs_tofu_and_links_terraform(tmp_path: Path) -> None:
    release = make_release(tmp_path, "tofu", "1.8.5")
    proc = install(tmp_path, release, TOOL="tofu", TOFU_VERSION="1.8.5")
    assert proc.returncode == 0, proc.stderr
    terraform = tmp_path / "bin" / "terraform"
    assert terraform.is_symlink() and os.readlink(terraform) == "tofu"
    out = subprocess.run([str(terraform)], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "tofu v1.8.5 (fake)"


def test_a_tampered_zip_is_refused_and_nothing_installed(tmp_path: Path) -> None:
    release = make_release(tmp_path, "terraform", "1.9.8")
    zip_path = release / "terraform_1.9.8_linux_amd64.zip"
    with zipfile.ZipFile(zip_path, "a") as archive:
        archive.writestr("backdoor", "#!/bin/sh\n")
    proc = install(tmp_path, release, TERRAFORM_VERSION="1.9.8")
    assert proc.returncode == 1
    assert "checksum mismatch for terraform_1.9.8_linux_amd64.zip" in proc.stderr
    assert not (tmp_path / "bin" / "terraform").exists()


def test_a_release_without_our_checksum_is_refused(tmp_path: Path) -> None:
    release = make_release(tmp_path, "terraform", "1.9.8", arch="arm64")
    (release / "terraform_1.9.8_linux_arm64.zip").rename(
        release / "terraform_1.9.8_linux_amd64.zip"
    )
    proc = install(tmp_path, release, TERRAFORM_VERSION="1.9.8")
    assert proc.returncode == 1
    assert "no checksum for terraform_1.9.8_linux_amd64.zip" in proc.stderr


@pytest.mark.parametrize(("mutate", "expected_rc"), [(False, 0), (True, 1)])
def test_verify_mode(tmp_path: Path, mutate: bool, expected_rc: int) -> None:
    release = make_release(tmp_path, "terraform", "1.9.8")
    zip_path = release / "terraform_1.9.8_linux_amd64.zip"
    if mutate:
        zip_path.write_bytes(zip_path.read_bytes() + b"\0")
    proc = subprocess.run(
        ["sh", str(SCRIPT), "verify", str(zip_path), str(release / "terraform_1.9.8_SHA256SUMS")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == expected_rc, proc.stderr


def test_unknown_tool_is_refused(tmp_path: Path) -> None:
    proc = install(tmp_path, tmp_path, TOOL="pulumi")
    assert proc.returncode == 1
    assert "TOOL must be terraform or tofu" in proc.stderr
