"""Check a vendor's detached OpenPGP signature over its release SHA256SUMS with ``gpgv``.

The trusted key is a file baked into the package (``tfaudit_ci/keys``), never one fetched
next to the release: a mirror that can replace the binary can replace a key beside it too.
``gpgv`` (Debian's ``gpgv`` package, present wherever apt is) only verifies: it has no
keyserver, no trust database and no agent. It needs a binary keyring, so the armored key is
decoded here (its CRC-24 checked), and its primary fingerprint is computed here as well, so a
swapped or corrupted key file fails loudly instead of quietly trusting something else.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tfaudit_ci.errors import PreflightError

GPGV_TIMEOUT_SECONDS = 60
_CRC24_INIT = 0xB704CE
_CRC24_POLY = 0x1864CFB


class SignatureError(PreflightError):
    """A release's signature is missing, malformed, or not made by the trusted key."""


def crc24(data: bytes) -> int:
    """The OpenPGP armor checksum (RFC 4880, section 6.1)."""
    crc = _CRC24_INIT
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= _CRC24_POLY
    return crc & 0xFFFFFF


def dearmor(text: str, *, name: str) -> bytes:
    """The binary packets of an ASCII-armored OpenPGP block, its checksum verified."""
    lines = [line.strip() for line in text.strip().splitlines()]
    if not lines or not lines[0].startswith("-----BEGIN PGP"):
        raise SignatureError(f"{name} is not an ASCII-armored OpenPGP block")
    try:
        end = next(i for i, line in enumerate(lines) if line.startswith("-----END PGP"))
        blank = lines.index("", 1, end)  # armor headers end at the first empty line
    except (StopIteration, ValueError):
        raise SignatureError(f"{name} is a truncated OpenPGP armor block") from None
    body = lines[blank + 1 : end]
    checksum = None
    if body and body[-1].startswith("="):
        checksum = body.pop()[1:]
    try:
        data = base64.b64decode("".join(body), validate=True)
    except ValueError:
        raise SignatureError(f"{name} holds invalid base64 in its armor") from None
    if checksum is not None:
        expected = int.from_bytes(base64.b64decode(checksum), "big")
        if crc24(data) != expected:
            raise SignatureError(f"{name} fails its armor checksum (corrupted key file)")
    return data


def _first_packet(data: bytes, *, name: str) -> tuple[int, bytes]:
    """(tag, body) of the first OpenPGP packet (old or new header format)."""
    if not data or not data[0] & 0x80:
        raise SignatureError(f"{name} does not start with an OpenPGP packet")
    header = data[0]
    if header & 0x40:  # new format
        tag, first = header & 0x3F, data[1]
        if first < 192:
            length, start = first, 2
        elif first < 224:
            length, start = ((first - 192) << 8) + data[2] + 192, 3
        elif first == 255:
            length, start = int.from_bytes(data[2:6], "big"), 6
        else:
            raise SignatureError(f"{name}: partial-length key packets are not supported")
    else:
        tag, kind = (header >> 2) & 0x0F, header & 0x03
        size = {0: 1, 1: 2, 2: 4}.get(kind)
        if size is None:
            raise SignatureError(f"{name}: indeterminate-length key packets are not supported")
        length, start = int.from_bytes(data[1 : 1 + size], "big"), 1 + size
    body = data[start : start + length]
    if len(body) != length:
        raise SignatureError(f"{name} is truncated")
    return tag, body


def primary_fingerprint(key: bytes, *, name: str) -> str:
    """The v4 fingerprint of the primary key: SHA-1 over 0x99, length, key packet body."""
    tag, body = _first_packet(key, name=name)
    if tag != 6 or not body or body[0] != 4:
        raise SignatureError(f"{name} does not start with a version 4 public key")
    digest = hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body, usedforsecurity=False)
    return digest.hexdigest().upper()


@dataclass(frozen=True)
class TrustedKey:
    """A vendor's release-signing key: its binary packets and its primary fingerprint."""

    name: str  # who it belongs to, for messages ("HashiCorp", "OpenTofu")
    packets: bytes
    fingerprint: str

    @classmethod
    def load(cls, path: Path, *, owner: str, fingerprint: str | None = None) -> TrustedKey:
        """Read an armored key file; with ``fingerprint``, insist that it is that key."""
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise SignatureError(
                f"cannot read {owner}'s release key {path}: {exc}",
                fix="reinstall tfaudit-ci; the key file ships inside the package",
            ) from None
        packets = dearmor(text, name=str(path))
        actual = primary_fingerprint(packets, name=str(path))
        if fingerprint is not None and actual != fingerprint.upper():
            raise SignatureError(
                f"{path} holds key {actual}, not {owner}'s release key {fingerprint}",
                fix="reinstall tfaudit-ci; the key file ships inside the package",
            )
        return cls(owner, packets, actual)


def gpgv_program() -> str:
    program = shutil.which("gpgv")
    if program is None:
        raise SignatureError(
            "gpgv is not installed: release signatures cannot be checked",
            fix="install gpgv (Debian/Ubuntu: apt-get install gpgv), or pin a version the "
            "image bundles",
        )
    return program


def verify_detached(data: Path, signature: Path, key: TrustedKey) -> None:
    """Raise SignatureError unless ``signature`` is ``key``'s valid signature over ``data``."""
    with tempfile.TemporaryDirectory(prefix="tfaudit-gpgv-") as tmp:
        keyring = Path(tmp, "trusted.gpg")
        keyring.write_bytes(key.packets)
        try:
            done = subprocess.run(
                [
                    gpgv_program(),
                    "--homedir",
                    tmp,
                    "--status-fd",
                    "1",
                    "--keyring",
                    str(keyring),
                    str(signature),
                    str(data),
                ],
                capture_output=True,
                text=True,
                timeout=GPGV_TIMEOUT_SECONDS,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SignatureError(f"gpgv could not run: {exc}") from None
    status = [line.split() for line in done.stdout.splitlines() if line.startswith("[GNUPG:] ")]
    valid = [words for words in status if len(words) >= 3 and words[1] == "VALIDSIG"]
    signer = valid[0][-1].upper() if valid else None
    if done.returncode == 0 and signer == key.fingerprint:
        return
    reasons = {words[1] for words in status if len(words) >= 2}
    if "NO_PUBKEY" in reasons or (signer is not None and signer != key.fingerprint):
        why = f"it was not made by {key.name}'s key {key.fingerprint}"
    elif "BADSIG" in reasons:
        why = "the signature does not match the file (the file or the signature was altered)"
    elif "EXPKEYSIG" in reasons or "REVKEYSIG" in reasons:
        why = f"{key.name}'s key has expired or was revoked"
    else:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        why = f"gpgv rejected it ({last})"
    raise SignatureError(
        f"the signature {signature.name} over {data.name} is not valid: {why}",
        fix="do not use this release; check the download source (a mirror or proxy may have "
        "altered it), or pin a version the image bundles",
    )
