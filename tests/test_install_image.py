"""scripts/install-image.sh `tools`, the Dockerfile's bundling step, without Docker.

The step runs ``tfaudit_ci.toolchain install`` for terraform and OpenTofu and links both on
PATH. Here it runs on the host against a stand-in release served on 127.0.0.1 and signed with
a test key (vendor sites are unreachable), through the same shell code as in the image build;
the image build itself is exercised by tests/test_docker_action.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.fake_release import (
    SigningKey,
    add_release,
    make_signing_key,
    script_binary,
    serve,
)

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "install-image.sh"

pytestmark = pytest.mark.skipif(
    shutil.which("gpg") is None or shutil.which("gpgv") is None, reason="needs gpg and gpgv"
)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return make_signing_key(tmp_path_factory.mktemp("gnupg"))


@pytest.fixture
def releases(tmp_path: Path, key: SigningKey) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "releases"
    add_release(root, "terraform", "1.11.4", script_binary("terraform", "1.11.4"), key)
    add_release(root, "tofu", "1.9.1", script_binary("tofu", "1.9.1"), key)
    with serve(root) as url:
        yield root, url


def bundle(tmp_path: Path, url: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "TOOLS_DIR": str(tmp_path / "tools"),
        "LINK_DIR": str(tmp_path / "bin"),
        "TERRAFORM_VERSION": "1.11.4",
        "TOFU_VERSION": "1.9.1",
        "TERRAFORM_RELEASES": f"{url}/terraform/{{version}}",
        "TOFU_RELEASES": f"{url}/tofu/{{version}}",
        "TARGETARCH": "amd64",
        **extra,
    }
    return subprocess.run(
        ["sh", str(SCRIPT), "tools", str(REPO)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_both_tools_are_bundled_verified_and_linked(
    tmp_path: Path, releases: tuple[Path, str], key: SigningKey
) -> None:
    _, url = releases
    proc = bundle(tmp_path, url, STANDIN_RELEASE_KEY=key.public_file.read_text())
    assert proc.returncode == 0, proc.stderr
    assert "terraform_1.11.4_SHA256SUMS: signed by" in proc.stderr
    assert "tofu_1.9.1_linux_amd64.zip: checksum OK" in proc.stderr
    assert "instead of HashiCorp's key (stand-in release)" in proc.stderr
    for tool, version, product in (
        ("terraform", "1.11.4", "Terraform"),
        ("tofu", "1.9.1", "OpenTofu"),
    ):
        link = tmp_path / "bin" / tool
        assert os.readlink(link) == str(tmp_path / "tools" / tool / version / tool)
        assert f"{product} v{version}" in proc.stdout  # the script ran each installed binary


def test_without_the_stand_in_key_only_the_vendors_signature_counts(
    tmp_path: Path, releases: tuple[Path, str]
) -> None:
    _, url = releases
    proc = bundle(tmp_path, url)
    assert proc.returncode == 21
    assert "not made by HashiCorp's key C874011F0AB405110D02105534365D9472D7468F" in proc.stderr
    assert not (tmp_path / "bin" / "terraform").exists()


def test_a_tampered_zip_stops_the_build(
    tmp_path: Path, releases: tuple[Path, str], key: SigningKey
) -> None:
    root, url = releases
    zip_path = root / "tofu" / "1.9.1" / "tofu_1.9.1_linux_amd64.zip"
    zip_path.write_bytes(zip_path.read_bytes() + b"\0")
    proc = bundle(tmp_path, url, STANDIN_RELEASE_KEY=key.public_file.read_text())
    assert proc.returncode == 21
    assert "checksum mismatch for tofu_1.9.1_linux_amd64.zip" in proc.stderr
    assert not (tmp_path / "bin" / "tofu").exists()


def test_a_missing_version_is_refused(
    tmp_path: Path, releases: tuple[Path, str], key: SigningKey
) -> None:
    _, url = releases
    proc = bundle(tmp_path, url, TOFU_VERSION="", STANDIN_RELEASE_KEY=key.public_file.read_text())
    assert proc.returncode == 1
    assert "no version given for" in proc.stderr


def test_unknown_step_prints_usage(tmp_path: Path) -> None:
    proc = subprocess.run(["sh", str(SCRIPT), "tool"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "usage: install-image.sh packages|tools BOOTSTRAP|python SRC" in proc.stderr
