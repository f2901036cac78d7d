"""The terraform or OpenTofu binary a run uses: bundled, cached, or downloaded and verified.

The Docker action's image bundles one terraform and one OpenTofu release. The ``tool`` input
picks one; ``terraform-version`` asks for a version, or ``auto`` (what the configuration asks
for, see ``tool_versions``). A version the image does not bundle is downloaded from the
vendor's release site and installed only after

1. the release's ``SHA256SUMS`` verifies against the vendor's detached signature, made by the
   vendor's public key baked into the package (``tfaudit_ci/keys``), and
2. the zip's SHA-256 equals its line in those checksums.

Downloads land in a cache (``$HOME/.cache/tfaudit/tools``: ``/github/home`` in a Docker action,
which outlives the step's container), so later steps of the job reuse them.

    python -m tfaudit_ci.toolchain install --tool terraform --version 1.9.8 --into DIR
    python -m tfaudit_ci.toolchain select --tool tofu --version auto [--dir PATH]
    python -m tfaudit_ci.toolchain path --tool tofu --version auto [--dir PATH]

``install`` is what the Dockerfile runs to bundle the default releases; ``select`` prints the
binary ``auto`` resolves to (for debugging a workflow); ``path`` prints the folder the GitLab
templates put first on PATH (the Docker action's entrypoint does the same in-process).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import stat
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tfaudit_ci.errors import ConfigError, PreflightError, TfauditError
from tfaudit_ci.release_signature import TrustedKey, verify_detached
from tfaudit_ci.tool_versions import (
    TOOLS,
    Request,
    Tool,
    Version,
    detect_request,
    newest,
)

KEYS_DIR = Path(__file__).resolve().parent / "keys"
HTTP_TIMEOUT_SECONDS = 60
MAX_SUMS_BYTES = 1024 * 1024
MAX_INDEX_BYTES = 32 * 1024 * 1024
MAX_ZIP_BYTES = 512 * 1024 * 1024
CHUNK = 1024 * 1024
# Where the image puts its bundled releases (<root>/<tool>/<version>/<tool>).
BUNDLED_ENV = "TFAUDIT_BUNDLED_TOOLS"
CACHE_ENV = "TFAUDIT_TOOL_CACHE"


class ToolchainError(PreflightError):
    """The requested terraform/OpenTofu could not be found, downloaded or verified."""


@dataclass(frozen=True)
class Vendor:
    """Where a tool's releases live and whose key signs them."""

    tool: Tool
    product: str
    owner: str  # the key's owner, for messages
    key_file: str
    fingerprint: str
    release_url: str  # a template with {version}
    index_url: str  # every published version (JSON)
    signature_suffix: str

    def mirror_env(self) -> str:
        return f"TFAUDIT_{self.tool.upper()}_RELEASES"

    def index_env(self) -> str:
        return f"TFAUDIT_{self.tool.upper()}_INDEX"

    def release_base(self, version: Version, env: Mapping[str, str]) -> str:
        template = env.get(self.mirror_env()) or self.release_url
        return template.replace("{version}", str(version)).rstrip("/")

    def zip_name(self, version: Version, arch: str) -> str:
        return f"{self.tool}_{version}_linux_{arch}.zip"

    def sums_name(self, version: Version) -> str:
        return f"{self.tool}_{version}_SHA256SUMS"

    def trusted_key(self) -> TrustedKey:
        return TrustedKey.load(
            KEYS_DIR / self.key_file, owner=self.owner, fingerprint=self.fingerprint
        )


# tool, product, key owner, key file, key fingerprint, release folder, version index, signature
_VENDOR_TABLE: tuple[tuple[Tool, str, str, str, str, str, str, str], ...] = (
    ("terraform", "Terraform", "HashiCorp", "hashicorp.asc",
     "C874011F0AB405110D02105534365D9472D7468F",
     "https://releases.hashicorp.com/terraform/{version}",
     "https://releases.hashicorp.com/terraform/index.json", ".sig"),
    ("tofu", "OpenTofu", "OpenTofu", "opentofu.asc",
     "E3E6E43D84CB852EADB0051D0C0AF313E5FD9F80",
     "https://github.com/opentofu/opentofu/releases/download/v{version}",
     "https://get.opentofu.org/tofu/api.json", ".gpgsig"),
)  # fmt: skip
VENDORS: dict[Tool, Vendor] = {row[0]: Vendor(*row) for row in _VENDOR_TABLE}


def parse_tool(text: str) -> Tool:
    word = text.strip().lower() or "terraform"
    if word in ("opentofu", "tofu"):
        return "tofu"
    if word == "terraform":
        return "terraform"
    raise ConfigError(
        f"input 'tool' must be terraform or tofu, got {text.strip()!r}",
        fix="set `tool: terraform` or `tool: tofu`",
    )


def machine_arch() -> str:
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return "amd64"
    if machine in ("aarch64", "arm64"):
        return "arm64"
    raise ToolchainError(f"no terraform/OpenTofu builds for machine type {machine!r}")


# -- where binaries live -------------------------------------------------------------------


def installed(root: Path, tool: Tool) -> dict[Version, Path]:
    """Every ``<root>/<tool>/<version>/<tool>`` that is an executable file."""
    found: dict[Version, Path] = {}
    try:
        folders = list((root / tool).iterdir())
    except OSError:
        return found
    for folder in folders:
        binary = folder / tool
        try:
            version = Version.parse(folder.name)
        except ConfigError:
            continue
        if binary.is_file() and os.access(binary, os.X_OK):
            found[version] = binary
    return found


def bundled_root(env: Mapping[str, str]) -> Path | None:
    value = env.get(BUNDLED_ENV)
    return Path(value) if value else None


def cache_root(env: Mapping[str, str]) -> Path:
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV])
    home = env.get("HOME") or str(Path.home())
    return Path(home, ".cache", "tfaudit", "tools")


# -- HTTP ----------------------------------------------------------------------------------


def _open(url: str) -> IO[bytes]:
    request = urllib.request.Request(url, headers={"User-Agent": "tfaudit-ci"})
    try:
        response: IO[bytes] = urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS)
        return response
    except urllib.error.HTTPError as exc:
        raise ToolchainError(
            f"download of {url} failed: HTTP {exc.code}",
            fix="check that this version exists for linux (a 404 means it does not)",
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ToolchainError(
            f"cannot download {url}: {reason}",
            fix="allow the runner to reach the vendor's release site, or pin a version the "
            "image bundles",
        ) from None


def fetch(url: str, target: Path, *, limit: int) -> str:
    """Stream ``url`` to ``target`` (at most ``limit`` bytes); its SHA-256."""
    digest = hashlib.sha256()
    size = 0
    with _open(url) as response, target.open("wb") as out:
        while chunk := response.read(CHUNK):
            size += len(chunk)
            if size > limit:
                raise ToolchainError(f"{url} is larger than {limit} bytes; refusing it")
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def published_versions(vendor: Vendor, env: Mapping[str, str]) -> list[Version]:
    """Every version in the vendor's index (HashiCorp's index.json or OpenTofu's api.json)."""
    url = env.get(vendor.index_env()) or vendor.index_url
    with tempfile.TemporaryDirectory(prefix="tfaudit-index-") as tmp:
        path = Path(tmp, "index.json")
        fetch(url, path, limit=MAX_INDEX_BYTES)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            raise ToolchainError(f"the version index {url} is not JSON") from None
    entries = data.get("versions") if isinstance(data, dict) else None
    if isinstance(entries, dict):  # HashiCorp: {"versions": {"1.9.8": {...}}}
        names = [str(name) for name in entries]
    elif isinstance(entries, list):  # OpenTofu: {"versions": [{"id": "1.8.5"}]}
        names = [str(e.get("id", "")) for e in entries if isinstance(e, dict)]
    else:
        raise ToolchainError(f"the version index {url} lists no versions")
    versions = []
    for name in names:
        try:
            versions.append(Version.parse(name))
        except ConfigError:
            continue
    return versions


# -- download and verify -------------------------------------------------------------------


def expected_sha256(sums: Path, zip_name: str) -> str:
    """The one checksum that ``sums`` gives for ``zip_name`` (sha256sum's format)."""
    matches = []
    for line in sums.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == zip_name:
            matches.append(parts[0].lower())
    if len(matches) != 1:
        problem = "no checksum" if not matches else "more than one checksum"
        raise ToolchainError(f"{sums.name} has {problem} for {zip_name}")
    if not re.fullmatch(r"[0-9a-f]{64}", matches[0]):
        raise ToolchainError(f"{sums.name} has a malformed checksum for {zip_name}")
    return matches[0]


def install_release(
    vendor: Vendor,
    version: Version,
    into: Path,
    env: Mapping[str, str],
    *,
    key: TrustedKey | None = None,
    arch: str | None = None,
) -> Path:
    """Download, verify and install one release to ``into/<tool>/<version>/<tool>``."""
    arch = arch or machine_arch()
    key = key or vendor.trusted_key()
    base = vendor.release_base(version, env)
    zip_name = vendor.zip_name(version, arch)
    sums_name = vendor.sums_name(version)
    target_dir = into / vendor.tool / str(version)
    into.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{vendor.tool}-", dir=into) as tmp:
        work = Path(tmp)
        sums = work / sums_name
        signature = work / (sums_name + vendor.signature_suffix)
        progress(f"fetching {vendor.product} {version} from {base}/")
        fetch(f"{base}/{sums_name}", sums, limit=MAX_SUMS_BYTES)
        fetch(f"{base}/{signature.name}", signature, limit=MAX_SUMS_BYTES)
        verify_detached(sums, signature, key)
        progress(f"{sums_name}: signed by {key.name} ({key.fingerprint})")
        wanted = expected_sha256(sums, zip_name)
        actual = fetch(f"{base}/{zip_name}", work / zip_name, limit=MAX_ZIP_BYTES)
        if actual != wanted:
            raise ToolchainError(
                f"checksum mismatch for {zip_name}: the signed {sums_name} says {wanted}, "
                f"the download is {actual}",
                fix="do not use this download; check the release source (a mirror or proxy "
                "may have altered it)",
            )
        progress(f"{zip_name}: checksum OK")
        staged = work / "out" / vendor.tool
        _extract_binary(work / zip_name, vendor.tool, staged)
        if target_dir.exists():
            shutil.rmtree(target_dir)
        target_dir.parent.mkdir(parents=True, exist_ok=True)
        (work / "out").rename(target_dir)
    return target_dir / vendor.tool


def _extract_binary(archive: Path, member: str, target: Path) -> None:
    """Copy only ``member`` out of the zip (no paths from the archive are ever used)."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            try:
                info = zipped.getinfo(member)
            except KeyError:
                raise ToolchainError(f"{archive.name} holds no {member!r} binary") from None
            if info.file_size > MAX_ZIP_BYTES:
                raise ToolchainError(f"{member} in {archive.name} is implausibly large")
            target.parent.mkdir(parents=True, exist_ok=True)
            with zipped.open(info) as source, target.open("wb") as out:
                shutil.copyfileobj(source, out, CHUNK)
    except zipfile.BadZipFile:
        raise ToolchainError(f"{archive.name} is not a valid zip archive") from None
    target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def progress(message: str) -> None:
    sys.stderr.write(f"tfaudit: toolchain: {message}\n")
    sys.stderr.flush()


# -- choosing a version --------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """The binary a run uses, and why."""

    tool: Tool
    version: Version
    binary: Path
    origin: str  # "bundled", "cached" or "downloaded"
    reason: str


def _resolve(
    request: Request | None, local: Sequence[Version], vendor: Vendor, env: Mapping[str, str]
) -> tuple[Version, str]:
    """A concrete version for ``request``; a locally present one when it is good enough."""
    if request is None:
        if not local:
            raise ToolchainError(
                f"no {vendor.product} is bundled here and none was asked for",
                fix="set `terraform-version` to a version",
            )
        bundled = max(local)
        return bundled, f"the bundled {vendor.product} {bundled} (no version asked for)"
    if request.exact is not None:
        return request.exact, f"{vendor.product} {request.describe()}"
    if request.constraints:
        present = newest(local, request.constraints)
        if present is not None:
            return present, f"{vendor.product} {present}, present here, for {request.describe()}"
    candidates = published_versions(vendor, env)
    if request.latest_pattern:
        pattern = re.compile(request.latest_pattern)
        candidates = [v for v in candidates if pattern.search(str(v))]
    found = newest(candidates, request.constraints)
    if found is None:
        raise ConfigError(
            f"no {vendor.product} release matches {request.describe()}",
            fix="relax the constraint, or set `terraform-version` to a version",
        )
    return found, f"{vendor.product} {found} for {request.describe()}"


def select(
    tool: Tool,
    version_text: str,
    *,
    directory: Path,
    root: Path,
    env: Mapping[str, str],
    key: TrustedKey | None = None,
) -> Selection:
    """Find (or download) the binary for ``tool`` at ``version_text`` (a version or auto).

    ``key`` replaces the vendor's baked-in key (tests of a stand-in release only).
    """
    vendor = VENDORS[tool]
    bundled_dir = bundled_root(env)
    bundled = installed(bundled_dir, tool) if bundled_dir else {}
    cache = cache_root(env)
    cached = installed(cache, tool)
    text = version_text.strip().lower()
    if text in ("", "auto"):
        request = detect_request(directory, root, tool)
    else:
        request = Request("the terraform-version input", exact=Version.parse(version_text))
    version, reason = _resolve(request, sorted({*bundled, *cached}), vendor, env)
    if version in bundled:
        return Selection(tool, version, bundled[version], "bundled", reason)
    if version in cached:
        return Selection(tool, version, cached[version], "cached", reason)
    binary = install_release(vendor, version, cache, env, key=key)
    return Selection(tool, version, binary, "downloaded", reason)


def tool_path_dir(selection: Selection, env: Mapping[str, str]) -> Path:
    """A folder to put first on PATH: the tool under its name (and as terraform, for tofu).

    With ``tool: tofu`` a command written as ``terraform plan`` runs OpenTofu, as in every
    image that ships only OpenTofu; ``tofu`` works too.
    """
    folder = cache_root(env) / "bin" / f"{selection.tool}-{selection.version}"
    folder.mkdir(parents=True, exist_ok=True)
    names = [selection.tool] + (["terraform"] if selection.tool == "tofu" else [])
    for name in names:
        link = folder / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(selection.binary)
    return folder


def path_for(
    tool_text: str, version_text: str, directory: Path, env: Mapping[str, str]
) -> Path | None:
    """The folder to put first on PATH for the ``tool`` and ``terraform-version`` inputs.

    None outside the image (no bundled releases) when ``auto`` is asked: the terraform on
    PATH is used as it is. An explicit version is downloaded and verified anywhere.
    """
    tool = parse_tool(tool_text)
    version = version_text.strip() or "auto"
    if BUNDLED_ENV not in env and version.lower() == "auto":
        return None
    root = Path(env.get("GITHUB_WORKSPACE") or env.get("CI_PROJECT_DIR") or directory)
    chosen = select(tool, version, directory=directory, root=root, env=env)
    progress(f"using {chosen.binary} ({chosen.origin}): {chosen.reason}")
    return tool_path_dir(chosen, env)


# -- command line --------------------------------------------------------------------------


def _install_command(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    vendor = VENDORS[parse_tool(args.tool)]
    key = None
    if args.trust_key:
        key = TrustedKey.load(Path(args.trust_key), owner=f"the test key for {vendor.product}")
        progress(f"trusting {key.fingerprint} instead of {vendor.owner}'s key (stand-in release)")
    binary = install_release(
        vendor, Version.parse(args.version), Path(args.into), env, key=key, arch=args.arch
    )
    print(binary)
    return 0


def _path_command(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    folder = path_for(args.tool, args.version, Path(args.dir).resolve(), env)
    print(folder or "")
    return 0


def _select_command(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    directory = Path(args.dir).resolve()
    root = Path(env.get("GITHUB_WORKSPACE") or env.get("CI_PROJECT_DIR") or directory)
    chosen = select(parse_tool(args.tool), args.version, directory=directory, root=root, env=env)
    print(f"{chosen.binary}\t{chosen.origin}\t{chosen.reason}")
    return 0


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tfaudit_ci.toolchain",
        description="Install or select a verified terraform/OpenTofu release.",
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    install = sub.add_parser("install", help="download, verify and install one release")
    install.add_argument("--tool", choices=TOOLS, required=True)
    install.add_argument("--version", required=True)
    install.add_argument("--into", required=True, help="root folder: <into>/<tool>/<version>/")
    install.add_argument("--arch", choices=("amd64", "arm64"), help="default: this machine's")
    install.add_argument(
        "--trust-key",
        metavar="FILE",
        help="trust this armored key instead of the vendor's (offline stand-in releases only)",
    )
    for name, text in (
        ("select", "print the binary that `auto` (or VERSION) picks, and why"),
        ("path", "print the folder to put first on PATH for it (empty: keep PATH)"),
    ):
        chooser = sub.add_parser(name, help=text)
        chooser.add_argument("--tool", default="terraform")
        chooser.add_argument("--version", default="auto")
        chooser.add_argument("--dir", default=".")
    args = parser.parse_args(argv)
    environ = os.environ if env is None else env
    try:
        if args.command == "install":
            return _install_command(args, environ)
        if args.command == "path":
            return _path_command(args, environ)
        return _select_command(args, environ)
    except TfauditError as exc:
        sys.stderr.write(f"tfaudit: error: {exc.diagnostics()}\n")
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
