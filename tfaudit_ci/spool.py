"""The spool: redacted output on local disk, hashed as it is written, kept until shipped."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any, BinaryIO

from tfaudit_ci.canonical import canonical_bytes
from tfaudit_ci.errors import ConfigError
from tfaudit_ci.stores.base import Digests

STATE_FILE = "state.json"
RECEIPT_FILE = "receipt.json"
LOG_FILE = "output.log"
PLAN_FILE = "plan.json"
# "output.log.tail-N": what stream N's redactor still holds back, redacted as if the stream
# ended at the last checkpoint. Only a killed run leaves them; recover appends them.
TAIL_SUFFIX = ".tail-"


class HashingWriter:
    """Thread-safe appender that keeps sha256, md5 and size of what it wrote."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: BinaryIO = path.open("xb")
        self._lock = threading.Lock()
        self._sha = hashlib.sha256()
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._size = 0
        self.error: OSError | None = None

    def write(self, data: bytes) -> None:
        if not data:
            return
        with self._lock:
            if self.error is not None:
                return
            try:
                self._handle.write(data)
            except OSError as exc:  # e.g. ENOSPC: remember it, keep the console flowing
                self.error = exc
                return
            self._sha.update(data)
            self._md5.update(data)
            self._size += len(data)

    def flush(self) -> None:
        """Push buffered bytes to the OS, so that a SIGKILL of this process loses none."""
        with self._lock:
            if self.error is not None:
                return
            try:
                self._handle.flush()
            except OSError as exc:
                self.error = exc

    def close(self) -> Digests:
        with self._lock:
            try:
                self._handle.flush()
                os.fsync(self._handle.fileno())
            except OSError as exc:
                self.error = self.error or exc
            self._handle.close()
            return Digests(self._sha.hexdigest(), self._md5.hexdigest(), self._size)


def file_digests(path: Path) -> Digests:
    sha = hashlib.sha256()
    md5 = hashlib.md5(usedforsecurity=False)
    size = 0
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return Digests(sha.hexdigest(), md5.hexdigest(), size)


def make_spool_dir(work_dir: Path, run_folder: str) -> Path:
    path = work_dir / "spool" / run_folder
    try:
        path.mkdir(parents=True, exist_ok=False)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the spool directory {path}: {exc.strerror}",
            fix="point --work-dir (or TFAUDIT_WORK_DIR) at a writable directory",
        ) from None
    return path


def tail_path(log: Path, stream_number: int) -> Path:
    return log.with_name(f"{log.name}{TAIL_SUFFIX}{stream_number}")


def write_tail(path: Path, data: bytes) -> None:
    """Replace a checkpoint tail atomically; best effort (a full disk only loses the tail)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        if data:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        tmp.unlink(missing_ok=True)


def merge_tails(log: Path) -> None:
    """Append the checkpoint tails a killed run left to its log, then drop them."""
    tails = sorted(log.parent.glob(log.name + TAIL_SUFFIX + "[0-9]"))
    if not tails:
        return
    with log.open("ab") as handle:
        for tail in tails:
            handle.write(tail.read_bytes())
        handle.flush()
        os.fsync(handle.fileno())
    for tail in tails:
        tail.unlink()


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(canonical_bytes(data))
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
