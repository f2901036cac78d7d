"""The spool: redacted output on local disk, hashed as it is written, kept until shipped.

A work directory holds ``spool/<run folder>/`` for runs not yet shipped (``spool.json``, see
``spoolstate.py``, with ``output.log`` and friends) and ``shipped/<run folder>/`` for the
redacted output of runs that were shipped, kept for a day for later steps (``log-path``).
By default it lies outside the checkout: the CI's temporary folder, or the system's.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

from tfaudit_ci.canonical import compact_bytes
from tfaudit_ci.errors import ConfigError
from tfaudit_ci.stores.base import Digests

SPOOL_DIR = "spool"
SHIPPED_DIR = "shipped"
SHIPPED_KEEP_SECONDS = 24 * 3600
LOG_FILE = "output.log"
PLAN_FILE = "plan.json"
# "output.log.tail-N": what stream N's redactor still holds back, redacted as if the stream
# ended at the last checkpoint. Only a killed run leaves them; recover appends them.
TAIL_SUFFIX = ".tail-"


class HashingWriter:
    """Appender that keeps sha256 and size of what it wrote (and md5, at close).

    Writing and hashing happen on a worker thread behind a small bounded queue: both release
    the GIL, so they overlap with the pump threads' redaction instead of adding to it, and the
    queue bounds the memory held in flight. The MD5 some stores want is computed at close,
    from the page cache, so it never slows the wrapped command's output.
    """

    QUEUE_CHUNKS = 16

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: BinaryIO = path.open("xb")
        self._queue: queue.Queue[bytes | None] = queue.Queue(self.QUEUE_CHUNKS)
        self._sha = hashlib.sha256()
        self._size = 0
        self._closed = False
        self._md5 = ""
        self.error: OSError | None = None
        self._worker = threading.Thread(target=self._drain, name="spool-writer", daemon=True)
        self._worker.start()

    def _drain(self) -> None:
        while True:
            data = self._queue.get()
            try:
                if data is None:
                    return
                if self.error is None:
                    try:
                        self._handle.write(data)
                    except OSError as exc:  # e.g. ENOSPC: remember it, keep the console flowing
                        self.error = exc
                    else:
                        self._sha.update(data)
                        self._size += len(data)
            finally:
                self._queue.task_done()

    def write(self, data: bytes) -> None:
        if data and not self._closed:
            self._queue.put(data)

    def flush(self) -> None:
        """Push every byte written so far to the OS, so a SIGKILL of this process loses none."""
        self._queue.join()
        if self.error is not None:
            return
        try:
            self._handle.flush()
        except OSError as exc:
            self.error = exc

    def close(self) -> Digests:
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._worker.join()
            try:
                self._handle.flush()
                os.fsync(self._handle.fileno())
            except OSError as exc:
                self.error = self.error or exc
            try:
                self._handle.close()  # flushes what is still buffered: may fail again
            except OSError as exc:
                self.error = self.error or exc
            self._md5 = _md5_of(self.path) if self.error is None else ""
        return Digests(self._sha.hexdigest(), self._md5, self._size)


def _md5_of(path: Path) -> str:
    md5 = hashlib.md5(usedforsecurity=False)
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                md5.update(chunk)
    except OSError:
        return ""
    return md5.hexdigest()


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


LOCK_FILE = ".lock"


def try_lock(spool_dir: Path) -> int | None:
    """An exclusive lock on a spool, held by the run that writes it (or the `recover` that
    ships it) until that process ends; the kernel releases it even on SIGKILL. None when
    another process holds it."""
    fd = os.open(spool_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def default_work_dir(env: Mapping[str, str]) -> Path:
    """Where spools live unless ``work-dir`` says otherwise: never inside the checkout.

    GitHub: ``$RUNNER_TEMP`` (emptied after every job). GitLab: the project's temporary
    folder beside the checkout (``$CI_PROJECT_DIR.tmp``, which the runner also uses for file
    variables). Elsewhere: ``$TMPDIR`` (or the system's), per user.
    """
    if env.get("RUNNER_TEMP"):
        return Path(env["RUNNER_TEMP"]) / "tfaudit"
    if env.get("GITLAB_CI") == "true" and env.get("CI_PROJECT_DIR"):
        return Path(env["CI_PROJECT_DIR"] + ".tmp") / "tfaudit"
    base = env.get("TMPDIR") or tempfile.gettempdir()
    return Path(base) / f"tfaudit-{os.getuid()}"


def pending_spools(work_dir: Path) -> list[Path]:
    """Spools that were never shipped (no receipt), oldest run first."""
    from tfaudit_ci.spoolstate import RECEIPT_FILE, SPOOL_FILE

    root = work_dir / SPOOL_DIR
    if not root.is_dir():
        return []
    return sorted(
        path
        for path in root.iterdir()
        if (path / SPOOL_FILE).is_file() and not (path / RECEIPT_FILE).exists()
    )


# A log the second pass could not clear is withheld from the store and kept here instead.
WITHHELD_LOG = LOG_FILE + ".withheld"


def settle(spool_dir: Path, keep: tuple[str, ...] = (LOG_FILE, PLAN_FILE, WITHHELD_LOG)) -> Path:
    """After a successful ship: move the redacted outputs to ``shipped/``, remove the spool,
    and forget shipped outputs older than a day. Returns the shipped folder."""
    shipped_root = spool_dir.parent.parent / SHIPPED_DIR
    target = shipped_root / spool_dir.name
    target.mkdir(parents=True, exist_ok=True)
    for name in keep:
        if (spool_dir / name).is_file():
            os.replace(spool_dir / name, target / name)
    shutil.rmtree(spool_dir, ignore_errors=True)
    cutoff = time.time() - SHIPPED_KEEP_SECONDS
    for old in shipped_root.iterdir():
        try:
            if old != target and old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            continue
    return target


def make_spool_dir(work_dir: Path, run_folder: str) -> Path:
    path = work_dir / SPOOL_DIR / run_folder
    try:
        path.mkdir(parents=True, exist_ok=False)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the spool directory {path}: {exc.strerror}",
            fix="point --work-dir (or TFAUDIT_WORK_DIR) at a writable directory",
        ) from None
    try_lock(path)  # held for the life of this run: `recover` leaves a live spool alone
    ignore = work_dir / ".gitignore"
    if not ignore.exists():  # a work dir inside a checkout never shows as untracked files
        with contextlib.suppress(OSError):
            ignore.write_text("# tfaudit's spools and shipped outputs\n*\n", encoding="utf-8")
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


def merge_tails(log: Path) -> bool:
    """Append the checkpoint tails a killed run left to its log, then drop them; True when
    there were any."""
    tails = sorted(log.parent.glob(log.name + TAIL_SUFFIX + "[0-9]"))
    if not tails:
        return False
    with log.open("ab") as handle:
        for tail in tails:
            handle.write(tail.read_bytes())
        handle.flush()
        os.fsync(handle.fileno())
    for tail in tails:
        tail.unlink()
    return True


def write_json(path: Path, data: dict[str, Any]) -> None:
    # A temporary name of this process's own: two `recover`s may write one receipt at once.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(compact_bytes(data))
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
