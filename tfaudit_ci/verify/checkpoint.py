"""The checkpoint file of ``tfaudit verify --checkpoint FILE`` (docs/verify.md, "Incremental
verify"): what an earlier passing verify proved, so that the next one checks only what came
after it.

A checkpoint names the stream, the store and the trusted key it was verified with (one from
another stream, store or key is refused), the last verified seq with its winning version id,
the SHA-256 and signature of its record, and how many versions (delete markers included) that
slot held. The walk checks all of that against the store before it
trusts the checkpoint; whatever does not match is a ``checkpoint`` error, never a reason to
skip. The file is read defensively (a symlink, a huge or malformed file is a ConfigError)
and written atomically (a temporary file in the same folder, then a rename).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfaudit_ci.canonical import JsonRejected, canonical_bytes, parse_strict
from tfaudit_ci.errors import ConfigError
from tfaudit_ci.verify.model import ChainTip

FORMAT = "tfaudit-verify-checkpoint/1"
MAX_BYTES = 64 * 1024  # a checkpoint is well under 4 KiB
_FIX = "pass the checkpoint this stream's verify wrote, or delete it to verify the whole stream"


@dataclass(frozen=True)
class Checkpoint:
    store: str
    stream: str
    verifier: str | None  # the trusted key's description; None: signatures were not checked
    tip: ChainTip
    verified_at: str

    def to_bytes(self) -> bytes:
        tip = self.tip
        return canonical_bytes(
            {
                "format": FORMAT,
                "store": self.store,
                "stream": self.stream,
                "verifier": self.verifier,
                "seq": tip.seq,
                "sha256": tip.sha256,
                "version_id": tip.version_id,
                "signature": dict(tip.signature) if tip.signature is not None else None,
                "slot_versions": tip.slot_versions,
                "verified_at": self.verified_at,
            }
        )

    def refusal(self, *, store: str, stream: str, verifier: str | None) -> str | None:
        """Why this checkpoint cannot start a verify of ``stream`` in ``store`` with
        ``verifier``; None when it can."""
        for what, mine, theirs in (
            ("stream", self.stream, stream),
            ("store", self.store, store),
            ("trusted key", self.verifier, verifier),
        ):
            if mine != theirs:
                return f"it was written for {what} {mine!r}, not {theirs!r}"
        return None


def _nonneg_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _parse(data: bytes, where: str) -> Checkpoint:
    try:
        value = parse_strict(data)
    except JsonRejected as exc:
        raise ConfigError(f"{where} is not a checkpoint: {exc}", fix=_FIX) from None
    if not isinstance(value, dict) or value.get("format") != FORMAT:
        raise ConfigError(f"{where} is not a {FORMAT} file", fix=_FIX)
    wrong = [
        name
        for name, ok in (
            ("store", isinstance(value.get("store"), str)),
            ("stream", isinstance(value.get("stream"), str)),
            ("verifier", value.get("verifier") is None or isinstance(value.get("verifier"), str)),
            ("seq", _nonneg_int(value.get("seq"))),
            ("sha256", isinstance(value.get("sha256"), str) and len(value["sha256"]) == 64),
            ("version_id", isinstance(value.get("version_id"), str)),
            ("signature", value.get("signature") is None or isinstance(value["signature"], dict)),
            ("slot_versions", _nonneg_int(value.get("slot_versions"))),
            ("verified_at", isinstance(value.get("verified_at"), str)),
        )
        if not ok
    ]
    if wrong:
        raise ConfigError(f"{where} is malformed: bad or missing {', '.join(wrong)}", fix=_FIX)
    tip = ChainTip(
        value["seq"],
        value["sha256"],
        value["version_id"],
        value["signature"],
        value["slot_versions"],
    )
    return Checkpoint(value["store"], value["stream"], value["verifier"], tip, value["verified_at"])


def load(path: Path) -> Checkpoint | None:
    """The checkpoint in ``path``; None when there is none yet. Anything else that is not a
    plain, small checkpoint file (a symlink, a folder, too large, malformed) is a
    ConfigError."""
    where = f"--checkpoint {path}"
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {where}: {exc.strerror}", fix=_FIX) from None
    if stat.S_ISLNK(info.st_mode):
        raise ConfigError(f"{where} is a symlink: refused", fix="pass the file itself")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{where} is not a regular file", fix=_FIX)
    if info.st_size > MAX_BYTES:
        raise ConfigError(
            f"{where} holds {info.st_size:,} bytes, over the {MAX_BYTES:,}-byte cap", fix=_FIX
        )
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {where}: {exc.strerror}", fix=_FIX) from None
    if len(data) > MAX_BYTES:
        raise ConfigError(f"{where} is over the {MAX_BYTES:,}-byte cap", fix=_FIX)
    return _parse(data, where)


def save(path: Path, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` to ``path`` atomically: readers see the old file or the new one."""
    folder = path.parent
    try:
        fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConfigError(
            f"cannot write --checkpoint {path}: {exc.strerror}",
            fix="pass a path in a writable folder",
        ) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(checkpoint.to_bytes())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise ConfigError(
            f"cannot write --checkpoint {path}: {exc.strerror}",
            fix="pass a path in a writable folder",
        ) from None
