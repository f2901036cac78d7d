"""Choosing, downloading and verifying terraform/OpenTofu releases (tfaudit_ci.toolchain).

Vendor release sites are unreachable here. Two kinds of evidence stand in for them:

* the real, vendor-signed ``SHA256SUMS`` files of terraform 1.6.6 and OpenTofu 1.8.5
  (``tests/fixtures/releases``) prove that the keys baked into the package are the vendors'
  and that ``gpgv`` verification accepts their real signatures and rejects altered ones;
* a release-shaped folder served over HTTP on 127.0.0.1, signed with a key that ``gpg`` makes
  for the test, drives the whole download path: fetch, signature, checksum, install. Only the
  base URL (an environment variable the action also honours for mirrors) and the trusted key
  (an explicit argument) differ from a real download.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devkit.fake_release import (
    SigningKey,
    add_release,
    make_signing_key,
    script_binary,
    serve,
    write_index,
)
from tfaudit_ci import toolchain
from tfaudit_ci.errors import EXIT_PREFLIGHT, EXIT_USAGE, ConfigError
from tfaudit_ci.release_signature import SignatureError, TrustedKey, dearmor, verify_detached
from tfaudit_ci.tool_versions import Version, detect_request, parse_constraints, satisfies
from tfaudit_ci.toolchain import VENDORS, ToolchainError, install_release, select

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "releases"

pytestmark = pytest.mark.skipif(
    shutil.which("gpgv") is None or shutil.which("gpg") is None,
    reason="gpg and gpgv are needed (apt-get install gnupg gpgv)",
)


# -- versions and constraints ---------------------------------------------------------------


def test_versions_order_like_releases() -> None:
    names = ["1.10.0", "1.9.8", "1.10.0-rc1", "1.10.0-alpha2", "0.15.5", "1.9.10"]
    ordered = [str(v) for v in sorted(Version.parse(n) for n in names)]
    assert ordered == ["0.15.5", "1.9.8", "1.9.10", "1.10.0-alpha2", "1.10.0-rc1", "1.10.0"]
    assert str(Version.parse("v1.6.0")) == "1.6.0"
    with pytest.raises(ConfigError, match="not a version"):
        Version.parse("1.9")


@pytest.mark.parametrize(
    ("constraint", "allowed", "refused"),
    [
        ("~> 1.9.0", ["1.9.0", "1.9.8"], ["1.10.0", "1.8.9"]),
        ("~> 1.9", ["1.9.0", "1.12.3"], ["2.0.0", "1.8.0"]),
        (">= 1.5, < 2.0", ["1.5.0", "1.99.0"], ["1.4.9", "2.0.0"]),
        ("!= 1.6.1", ["1.6.0", "1.6.2"], ["1.6.1"]),
        ("1.9.8", ["1.9.8"], ["1.9.9"]),
        ("= 1.10.0-rc1", ["1.10.0-rc1"], ["1.10.0"]),
        (">= 1.0", ["1.10.0"], ["1.10.0-rc1"]),  # pre-releases only by exact name
    ],
)
def test_constraints(constraint: str, allowed: list[str], refused: list[str]) -> None:
    clauses = parse_constraints(constraint)
    assert all(satisfies(Version.parse(v), clauses) for v in allowed)
    assert not any(satisfies(Version.parse(v), clauses) for v in refused)


def test_a_malformed_constraint_names_the_clause() -> None:
    with pytest.raises(ConfigError, match=r"'=> 1\.0'"):
        parse_constraints(">= 0.15, => 1.0")


# -- what a configuration asks for ----------------------------------------------------------


def test_required_version_is_read_and_comments_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "versions.tf").write_text(
        '# required_version = "= 0.12.0"\n'
        '/* terraform { required_version = "= 0.13.0" } */\n'
        'terraform {\n  required_version = ">= 1.5, < 2.0" // pinned\n}\n'
    )
    (tmp_path / "extra.tf.json").write_text('{"terraform": {"required_version": "!= 1.6.1"}}')
    request = detect_request(tmp_path, tmp_path, "terraform")
    assert request is not None
    # Files in name order; the JSON form counts as much as HCL.
    assert [str(c) for c in request.constraints] == ["!= 1.6.1", ">= 1.5", "< 2.0"]
    assert "versions.tf" in request.source and "extra.tf.json" in request.source


def test_version_files_in_dflook_order(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    module = repo / "infra" / "prod"
    module.mkdir(parents=True)
    (repo / ".tool-versions").write_text("python 3.12.1\nterraform 1.8.5  # team pin\n")
    (tmp_path / ".tool-versions").write_text("terraform 0.11.0\n")  # above the workspace
    first = detect_request(module, repo, "terraform")
    assert first is not None and str(first.exact) == "1.8.5"
    assert first.source == ".tool-versions"
    assert detect_request(module, repo, "tofu") is None  # no opentofu line anywhere

    (module / ".terraform-version").write_text("latest:^1\\.9\\.\n")
    second = detect_request(module, repo, "terraform")
    assert second is not None and second.latest_pattern == "^1\\.9\\."

    (module / ".opentofu-version").write_text("1.8.5\n")
    tofu = detect_request(module, repo, "tofu")
    assert tofu is not None and tofu.source == ".opentofu-version"

    (module / "main.tf").write_text('terraform {\n  required_version = "~> 1.9.0"\n}\n')
    third = detect_request(module, repo, "terraform")
    assert third is not None and third.constraints  # required_version comes first


def test_nothing_asked_for(tmp_path: Path) -> None:
    (tmp_path / "main.tf").write_text('resource "null_resource" "x" {}\n')
    assert detect_request(tmp_path, tmp_path, "terraform") is None


# -- the baked-in vendor keys against real vendor signatures --------------------------------


@pytest.mark.parametrize(
    ("tool", "sums", "signature"),
    [
        ("terraform", "terraform_1.6.6_SHA256SUMS", "terraform_1.6.6_SHA256SUMS.sig"),
        ("tofu", "tofu_1.8.5_SHA256SUMS", "tofu_1.8.5_SHA256SUMS.gpgsig"),
    ],
)
def test_baked_keys_verify_real_vendor_signatures(
    tmp_path: Path, tool: str, sums: str, signature: str
) -> None:
    vendor = VENDORS[tool]  # type: ignore[index]
    key = vendor.trusted_key()
    assert key.fingerprint == vendor.fingerprint
    verify_detached(FIXTURES / sums, FIXTURES / signature, key)

    # One flipped digit of one checksum: exactly what an attacker swapping a zip needs.
    altered = tmp_path / sums
    text = (FIXTURES / sums).read_text()
    altered.write_text(text.replace(text[0], "f" if text[0] != "f" else "e", 1))
    with pytest.raises(SignatureError, match="does not match the file"):
        verify_detached(altered, FIXTURES / signature, key)


def test_one_vendors_signature_is_refused_under_the_other_vendors_key() -> None:
    with pytest.raises(SignatureError, match="not made by HashiCorp's key"):
        verify_detached(
            FIXTURES / "tofu_1.8.5_SHA256SUMS",
            FIXTURES / "tofu_1.8.5_SHA256SUMS.gpgsig",
            VENDORS["terraform"].trusted_key(),
        )


def test_a_corrupted_key_file_fails_loudly(tmp_path: Path) -> None:
    good = (toolchain.KEYS_DIR / "hashicorp.asc").read_text()
    lines = good.splitlines()
    lines[5] = lines[5][:10] + ("A" if lines[5][10] != "A" else "B") + lines[5][11:]
    broken = tmp_path / "hashicorp.asc"
    broken.write_text("\n".join(lines) + "\n")
    with pytest.raises(SignatureError, match="armor checksum"):
        TrustedKey.load(broken, owner="HashiCorp")
    with pytest.raises(SignatureError, match="not HashiCorp's release key"):
        TrustedKey.load(
            toolchain.KEYS_DIR / "opentofu.asc",
            owner="HashiCorp",
            fingerprint=VENDORS["terraform"].fingerprint,
        )
    with pytest.raises(SignatureError, match="not an ASCII-armored"):
        dearmor("hello", name="x")


# -- download, verify, install against a local release server -------------------------------


@dataclass
class ReleaseSite:
    root: Path
    url: str
    key: SigningKey
    trusted: TrustedKey

    def install(self, version: str, into: Path) -> Path:
        """Install a terraform release from this site, trusting the site's test key."""
        env = self.env(into.parent)
        return install_release(
            VENDORS["terraform"], Version.parse(version), into, env, key=self.trusted
        )

    def env(self, tmp: Path, **extra: str) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(tmp / "home"),
            "TFAUDIT_TERRAFORM_RELEASES": f"{self.url}/terraform/{{version}}",
            "TFAUDIT_TERRAFORM_INDEX": f"{self.url}/terraform/index.json",
            "TFAUDIT_TOFU_RELEASES": f"{self.url}/tofu/{{version}}",
            "TFAUDIT_TOFU_INDEX": f"{self.url}/tofu/index.json",
            **extra,
        }


@pytest.fixture(scope="module")
def release_key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return make_signing_key(tmp_path_factory.mktemp("gnupg"))


@pytest.fixture
def site(tmp_path: Path, release_key: SigningKey) -> Iterator[ReleaseSite]:
    root = tmp_path / "releases"
    for version in ("1.9.8", "1.10.2", "1.11.0"):
        add_release(root, "terraform", version, script_binary("terraform", version), release_key)
    write_index(root, "terraform", ["1.9.8", "1.10.2", "1.11.0", "1.12.0-rc1"])
    add_release(root, "tofu", "1.8.5", script_binary("tofu", "1.8.5"), release_key)
    write_index(root, "tofu", ["1.8.5"])
    with serve(root) as url:
        trusted = TrustedKey.load(release_key.public_file, owner="the test")
        yield ReleaseSite(root, url, release_key, trusted)


def run_version(binary: Path) -> str:
    return subprocess.run(
        [str(binary), "version"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()


def test_a_release_is_downloaded_verified_and_installed(tmp_path: Path, site: ReleaseSite) -> None:
    into = tmp_path / "tools"
    binary = install_release(
        VENDORS["terraform"], Version.parse("1.10.2"), into, site.env(tmp_path), key=site.trusted
    )
    assert binary == into / "terraform" / "1.10.2" / "terraform"
    assert run_version(binary) == "Terraform v1.10.2"
    assert [p.name for p in into.iterdir()] == ["terraform"]  # no temp files left behind


def test_a_tampered_zip_is_refused_and_nothing_installed(tmp_path: Path, site: ReleaseSite) -> None:
    zip_path = site.root / "terraform" / "1.9.8" / "terraform_1.9.8_linux_amd64.zip"
    zip_path.write_bytes(zip_path.read_bytes() + b"backdoor")
    into = tmp_path / "tools"
    with pytest.raises(ToolchainError) as caught:
        install_release(
            VENDORS["terraform"], Version.parse("1.9.8"), into, site.env(tmp_path), key=site.trusted
        )
    message = caught.value.diagnostics()
    assert "checksum mismatch for terraform_1.9.8_linux_amd64.zip" in message
    assert "fix:" in message
    assert caught.value.exit_code == EXIT_PREFLIGHT
    assert not (into / "terraform" / "1.9.8").exists()


def test_checksums_signed_by_another_key_are_refused(tmp_path: Path, site: ReleaseSite) -> None:
    impostor = make_signing_key(tmp_path / "impostor-gnupg", "someone else")
    release = site.root / "terraform" / "1.9.8"
    sums = release / "terraform_1.9.8_SHA256SUMS"
    impostor.sign(sums, release / "terraform_1.9.8_SHA256SUMS.sig")
    with pytest.raises(SignatureError) as caught:
        site.install("1.9.8", tmp_path / "t")
    assert f"not made by the test's key {site.trusted.fingerprint}" in str(caught.value)


def test_altered_checksums_under_a_valid_signature_are_refused(
    tmp_path: Path, site: ReleaseSite
) -> None:
    sums = site.root / "terraform" / "1.9.8" / "terraform_1.9.8_SHA256SUMS"
    zip_path = site.root / "terraform" / "1.9.8" / "terraform_1.9.8_linux_amd64.zip"
    zip_path.write_bytes(zip_path.read_bytes() + b"x")
    lines = sums.read_text().splitlines()
    lines[-1] = f"{hashlib.sha256(zip_path.read_bytes()).hexdigest()}  {zip_path.name}"
    sums.write_text("\n".join(lines) + "\n")  # the signature now covers other bytes
    with pytest.raises(SignatureError, match="does not match the file"):
        site.install("1.9.8", tmp_path / "t")


def test_a_garbled_or_missing_signature_is_refused(tmp_path: Path, site: ReleaseSite) -> None:
    signature = site.root / "terraform" / "1.9.8" / "terraform_1.9.8_SHA256SUMS.sig"
    signature.write_bytes(b"not a signature at all")
    with pytest.raises(SignatureError, match="is not valid"):
        site.install("1.9.8", tmp_path / "t")
    signature.unlink()
    with pytest.raises(ToolchainError, match="HTTP 404"):
        site.install("1.9.8", tmp_path / "t")


def test_the_baked_key_refuses_a_test_signed_release(tmp_path: Path, site: ReleaseSite) -> None:
    """Without an explicit key, only HashiCorp's own signature is accepted."""
    with pytest.raises(SignatureError, match="not made by HashiCorp's key C874011F"):
        install_release(
            VENDORS["terraform"], Version.parse("1.9.8"), tmp_path / "t", site.env(tmp_path)
        )


# -- selection: bundled, cached, downloaded -------------------------------------------------


def bundle(root: Path, tool: str, version: str) -> Path:
    binary = root / tool / version / tool
    binary.parent.mkdir(parents=True)
    binary.write_bytes(script_binary(tool, version))
    binary.chmod(0o755)
    return binary


def test_auto_uses_the_bundled_release_when_nothing_is_asked(
    tmp_path: Path, site: ReleaseSite
) -> None:
    bundled = bundle(tmp_path / "bundled", "terraform", "1.9.8")
    env = site.env(tmp_path, TFAUDIT_BUNDLED_TOOLS=str(tmp_path / "bundled"))
    work = tmp_path / "work"
    work.mkdir()
    chosen = select("terraform", "auto", directory=work, root=work, env=env, key=site.trusted)
    assert (chosen.binary, chosen.origin) == (bundled, "bundled")
    assert "no version asked for" in chosen.reason


def test_a_constraint_the_bundle_meets_needs_no_network(tmp_path: Path) -> None:
    bundled = bundle(tmp_path / "bundled", "terraform", "1.9.8")
    env = {
        "HOME": str(tmp_path / "home"),
        "TFAUDIT_BUNDLED_TOOLS": str(tmp_path / "bundled"),
        # Nothing listens here: any download attempt would fail the test.
        "TFAUDIT_TERRAFORM_INDEX": "http://127.0.0.1:9/index.json",
        "TFAUDIT_TERRAFORM_RELEASES": "http://127.0.0.1:9/{version}",
    }
    (tmp_path / "main.tf").write_text('terraform {\n  required_version = "~> 1.9.0"\n}\n')
    chosen = select("terraform", "auto", directory=tmp_path, root=tmp_path, env=env)
    assert chosen.binary == bundled
    assert "required_version in main.tf" in chosen.reason


def test_auto_downloads_the_newest_release_matching_required_version(
    tmp_path: Path, site: ReleaseSite
) -> None:
    bundle(tmp_path / "bundled", "terraform", "1.9.8")
    env = site.env(tmp_path, TFAUDIT_BUNDLED_TOOLS=str(tmp_path / "bundled"))
    work = tmp_path / "work"
    work.mkdir()
    (work / "versions.tf").write_text('terraform {\n  required_version = ">= 1.10, < 1.12"\n}\n')
    first = select("terraform", "auto", directory=work, root=work, env=env, key=site.trusted)
    assert (str(first.version), first.origin) == ("1.11.0", "downloaded")  # never the rc
    assert run_version(first.binary) == "Terraform v1.11.0"
    again = select("terraform", "auto", directory=work, root=work, env=env, key=site.trusted)
    assert (again.binary, again.origin) == (first.binary, "cached")

    folder = toolchain.tool_path_dir(again, env)
    assert run_version(folder / "terraform") == "Terraform v1.11.0"


def test_tofu_is_selected_and_also_answers_as_terraform(tmp_path: Path, site: ReleaseSite) -> None:
    env = site.env(tmp_path)
    chosen = select("tofu", "1.8.5", directory=tmp_path, root=tmp_path, env=env, key=site.trusted)
    assert chosen.origin == "downloaded"
    folder = toolchain.tool_path_dir(chosen, env)
    assert run_version(folder / "tofu") == "OpenTofu v1.8.5"
    assert run_version(folder / "terraform") == "OpenTofu v1.8.5"


def test_an_unsatisfiable_constraint_is_a_usage_error(tmp_path: Path, site: ReleaseSite) -> None:
    (tmp_path / "main.tf").write_text('terraform {\n  required_version = ">= 7.0"\n}\n')
    with pytest.raises(ConfigError) as caught:
        select("terraform", "auto", directory=tmp_path, root=tmp_path, env=site.env(tmp_path))
    assert "no Terraform release matches a release matching '>= 7.0'" in str(caught.value)
    assert "relax the constraint" in caught.value.diagnostics()
    assert caught.value.exit_code == EXIT_USAGE


def test_an_unknown_version_names_the_404(tmp_path: Path, site: ReleaseSite) -> None:
    with pytest.raises(ToolchainError) as caught:
        select(
            "terraform",
            "1.2.3",
            directory=tmp_path,
            root=tmp_path,
            env=site.env(tmp_path),
            key=site.trusted,
        )
    assert "terraform_1.2.3_SHA256SUMS failed: HTTP 404" in caught.value.diagnostics()
    assert "check that this version exists" in caught.value.diagnostics()


def test_tool_names(tmp_path: Path) -> None:
    assert toolchain.parse_tool("OpenTofu") == "tofu"
    assert toolchain.parse_tool("") == "terraform"
    with pytest.raises(ConfigError, match="must be terraform or tofu"):
        toolchain.parse_tool("pulumi")


def test_install_command_line_with_a_stand_in_key(
    tmp_path: Path, site: ReleaseSite, capsys: pytest.CaptureFixture[str]
) -> None:
    into = tmp_path / "bundle"
    argv = [
        "install",
        "--tool",
        "tofu",
        "--version",
        "1.8.5",
        "--into",
        str(into),
        "--trust-key",
        str(site.key.public_file),
    ]
    assert toolchain.main(argv, site.env(tmp_path)) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(into / "tofu" / "1.8.5" / "tofu")
    assert "instead of OpenTofu's key (stand-in release)" in err
    # Without the stand-in key the same release is refused, with exit 21 and a reason.
    assert toolchain.main(argv[:-2], site.env(tmp_path)) == EXIT_PREFLIGHT
    assert "not made by OpenTofu's key E3E6E43D" in capsys.readouterr().err


def test_path_for_keeps_path_outside_the_image_unless_a_version_is_asked(
    tmp_path: Path, site: ReleaseSite
) -> None:
    env = site.env(tmp_path)
    assert toolchain.path_for("terraform", "auto", tmp_path, env) is None
    bundle(tmp_path / "bundled", "tofu", "1.8.5")
    in_image = {**env, "TFAUDIT_BUNDLED_TOOLS": str(tmp_path / "bundled")}
    folder = toolchain.path_for("tofu", "auto", tmp_path, in_image)
    assert folder is not None
    assert run_version(folder / "terraform") == "OpenTofu v1.8.5"
