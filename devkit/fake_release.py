"""Release-shaped folders signed with a throwaway key, served over HTTP on 127.0.0.1.

Vendor release sites are unreachable here, so the toolchain tests and the image build use a
folder laid out like releases.hashicorp.com (``<tool>/<version>/<tool>_<v>_linux_<arch>.zip``,
``<tool>_<v>_SHA256SUMS`` and its detached signature) plus a version index, signed by a key
made with real ``gpg`` for the test. The code under test fetches from it exactly as it fetches
from the vendor (same file names, same signature check): only the base URL and the trusted
key differ, and both differences are explicit where a test makes them.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import threading
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from devkit.proc import run_tool

SIGNATURE_SUFFIX = {"terraform": ".sig", "tofu": ".gpgsig"}


class GpgUnavailable(RuntimeError):
    """gpg is not installed: no test key can be made."""


@dataclass(frozen=True)
class SigningKey:
    """A test OpenPGP key in its own GnuPG home."""

    home: Path
    fingerprint: str
    public_file: Path  # armored

    def sign(self, data: Path, signature: Path) -> None:
        """A detached binary signature, like the vendors publish."""
        _gpg(
            self.home,
            "--local-user",
            self.fingerprint,
            "--output",
            str(signature),
            "--detach-sign",
            str(data),
        )


def _gpg(home: Path, *args: str) -> str:
    if shutil.which("gpg") is None:
        raise GpgUnavailable("gpg is not installed (apt-get install gnupg)")
    return run_tool(
        [
            "gpg",
            "--homedir",
            str(home),
            "--batch",
            "--yes",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            *args,
        ],
        timeout=120,
        what=f"gpg {' '.join(args[:2])}",
        tail=800,
    )


def make_signing_key(home: Path, name: str = "tfaudit test release key") -> SigningKey:
    """An ed25519 signing key (fast to make), exported armored to ``home/public.asc``."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    _gpg(
        home,
        "--quick-generate-key",
        f"{name} <release-test@example.invalid>",
        "ed25519",
        "sign",
        "never",
    )
    listing = _gpg(home, "--with-colons", "--list-keys")
    fingerprint = next(
        line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
    )
    public = home / "public.asc"
    _gpg(home, "--armor", "--output", str(public), "--export", fingerprint)
    return SigningKey(home, fingerprint, public)


@dataclass(frozen=True)
class FakeRelease:
    """One release folder: its zip, checksums and signature, and where they are."""

    folder: Path
    zip_path: Path
    sums_path: Path
    signature_path: Path


def add_release(
    root: Path,
    tool: str,
    version: str,
    binary: bytes,
    key: SigningKey,
    *,
    arch: str = "amd64",
    extra_platforms: Sequence[str] = ("darwin_arm64", "windows_amd64"),
) -> FakeRelease:
    """``root/<tool>/<version>/`` with a zip holding ``binary`` as ``<tool>``, signed."""
    folder = root / tool / version
    folder.mkdir(parents=True, exist_ok=True)
    zip_path = folder / f"{tool}_{version}_linux_{arch}.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo(tool)
        info.external_attr = 0o755 << 16
        archive.writestr(info, binary)
        archive.writestr("LICENSE.txt", "stand-in release for tests\n")
    lines = [f"{'0' * 64}  {tool}_{version}_{platform}.zip" for platform in extra_platforms]
    lines.append(f"{hashlib.sha256(zip_path.read_bytes()).hexdigest()}  {zip_path.name}")
    sums = folder / f"{tool}_{version}_SHA256SUMS"
    sums.write_text("\n".join(sorted(lines)) + "\n", encoding="utf-8")
    signature = folder / (sums.name + SIGNATURE_SUFFIX[tool])
    key.sign(sums, signature)
    return FakeRelease(folder, zip_path, sums, signature)


def write_index(root: Path, tool: str, versions: Sequence[str]) -> Path:
    """The version index: HashiCorp's index.json shape for terraform, OpenTofu's api.json."""
    path = root / tool / "index.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if tool == "terraform":
        data: object = {"name": "terraform", "versions": {v: {"version": v} for v in versions}}
    else:
        data = {"versions": [{"id": v, "files": []} for v in versions]}
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def script_binary(tool: str, version: str) -> bytes:
    """A stand-in binary: a shell script answering `version` like the real tool would."""
    product = "OpenTofu" if tool == "tofu" else "Terraform"
    return (
        "#!/bin/sh\n"
        f'if [ "$1" = version ]; then echo "{product} v{version}"; exit 0; fi\n'
        f'echo "{tool} {version} stand-in: $*"\n'
    ).encode()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        del format, args


@contextmanager
def serve(root: Path) -> Iterator[str]:
    """Serve ``root`` on 127.0.0.1 (a free port) for the duration; yields the base URL."""

    def handler(*args: object) -> _QuietHandler:
        return _QuietHandler(*args, directory=str(root))  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
