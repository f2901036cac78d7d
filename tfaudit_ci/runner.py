"""Spawn the wrapped command, stream its output live and, redacted, into the spool.

Memory stays flat: output moves in fixed-size chunks; only the redactor's bounded carry
is held back. A command whose stdout prints state (``terraform output``...) can have its stdout
withheld: it reaches the console, and only its size reaches the spool.

SIGINT/SIGTERM are forwarded to the command's process group so terraform can stop gracefully
and release its state lock; a repeated signal escalates. A ``stop`` event stops the command the
same way a first cancel does (a read-only command whose preflight failed while it ran).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import fcntl
import os
import queue
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import BinaryIO

from tfaudit_ci.errors import ConfigError
from tfaudit_ci.record import utc_now
from tfaudit_ci.redact import RuleSet, StreamRedactor
from tfaudit_ci.spool import HashingWriter, tail_path, write_tail

CHUNK = 1024 * 1024
# Linux pipes hold 64 KiB by default; a larger pipe means fewer, larger reads per byte.
PIPE_SIZE = 1024 * 1024
QUEUE_CHUNKS = 8
_F_SETPIPE_SZ = 1031
CRASH_MARKERS = (b"TERRAFORM CRASH", b"OPENTOFU CRASH", b"\npanic: ")
KILL_AFTER_SECONDS = 20.0
# How stale the spool on disk may be: if tfaudit is SIGKILLed, `recover` finds the output up
# to the last checkpoint (the log plus the redactor's held-back tail).
CHECKPOINT_SECONDS = 0.5
# After a second signal nothing may hold the job past the CI's grace window (GitHub sends
# SIGKILL 2.5 s after its SIGTERM): a command that lingers is killed so the record can ship.
KILL_AFTER_SECOND_SIGNAL_SECONDS = 1.5
STOP_POLL_SECONDS = 0.05


@dataclass
class Outcome:
    exit_code: int
    started_at: dt.datetime
    finished_at: dt.datetime
    signal_received: int | None = None  # the first SIGINT/SIGTERM tfaudit received
    crashed: bool = False
    redactions: Counter[str] = field(default_factory=Counter)
    stdout_withheld_bytes: int | None = None  # None: stdout was spooled
    stopped: bool = False  # tfaudit stopped the command itself (the ``stop`` event was set)


class _CrashScanner:
    """Finds crash markers across chunk boundaries with a tiny carry."""

    def __init__(self) -> None:
        self._tail = b"\n"  # the stream's start is a line start: a Go panic often comes first
        self.found = False

    def feed(self, chunk: bytes) -> None:
        if self.found:
            return
        # The chunk itself, then only the seam with the previous one: no copy of the chunk.
        seam = self._tail + chunk[:32]
        self.found = any(marker in chunk or marker in seam for marker in CRASH_MARKERS)
        self._tail = (self._tail + chunk)[-32:] if len(chunk) < 32 else chunk[-32:]


class _SignalForwarder:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.first: int | None = None
        self.count = 0
        self.stopped = False
        self._previous: dict[int, object] = {}
        self._timer: threading.Timer | None = None

    def __enter__(self) -> _SignalForwarder:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        if self._timer is not None:
            self._timer.cancel()

    def send(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def _kill_later(self, seconds: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = threading.Timer(seconds, self.send, (signal.SIGKILL,))
        self._timer.daemon = True
        self._timer.start()

    def stop(self) -> None:
        """Stop the command as a first cancel would (SIGINT, SIGKILL if it lingers), though
        no signal reached tfaudit."""
        if self.first is None and not self.stopped:
            self.stopped = True
            self.send(signal.SIGINT)
            self._kill_later(KILL_AFTER_SECONDS)

    def watch(
        self, stop: threading.Event, finished: threading.Event, on_stop: Callable[[], None]
    ) -> None:
        """Until the command has finished: stop it once ``stop`` is set."""
        while not finished.is_set():
            if stop.wait(STOP_POLL_SECONDS):
                if not finished.is_set():
                    on_stop()
                    self.stop()
                return

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        self.count += 1
        if self.first is None:
            self.first = signum
            # Terraform treats the first SIGINT/SIGTERM as "stop gracefully", the second as
            # "abort now"; if it is still alive long after, nothing else will stop it.
            self.send(signum)
            self._kill_later(KILL_AFTER_SECONDS)
        elif self.count == 2:
            self.send(signum)
            self._kill_later(KILL_AFTER_SECOND_SIGNAL_SECONDS)
        else:
            self.send(signal.SIGKILL)


def _provisional_tail(redactor: StreamRedactor) -> bytes:
    """What the redactor would still emit if the stream ended now, leaving it untouched."""
    probe = copy.copy(redactor)  # flush() only rebinds the probe's own buffers
    probe.counts = Counter()
    return probe.flush()


def _read(source: BinaryIO, console: BinaryIO, chunks: queue.Queue[bytes | None]) -> None:
    """Pipe -> console, unchanged and at once; and -> the redaction stage."""
    fd = source.fileno()
    with contextlib.suppress(OSError):  # not Linux, or over the user's pipe limit: keep 64 KiB
        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
    console_ok = True
    try:
        while chunk := os.read(fd, CHUNK):
            if console_ok:
                try:
                    console.write(chunk)
                    console.flush()
                except (OSError, ValueError):
                    console_ok = False  # a closed console must not stop the audit
            chunks.put(chunk)
    finally:
        chunks.put(None)


def _redact(
    chunks: queue.Queue[bytes | None],
    redactor: StreamRedactor,
    spool: HashingWriter,
    scanner: _CrashScanner,
    tail: Path,
) -> None:
    """Redaction in a stage of its own: RE2 and the spool's hashing release the GIL, so it
    overlaps with reading instead of adding to it."""
    changed = False
    checkpointed = time.monotonic()
    while True:
        try:
            chunk = chunks.get(timeout=CHECKPOINT_SECONDS)
        except queue.Empty:
            chunk = b""
        if chunk is None:
            break
        if chunk:
            spool.write(redactor.feed(chunk))
            scanner.feed(chunk)
            changed = True
        if changed and time.monotonic() - checkpointed >= CHECKPOINT_SECONDS:
            spool.flush()
            write_tail(tail, _provisional_tail(redactor))
            changed, checkpointed = False, time.monotonic()
    spool.write(redactor.flush())
    write_tail(tail, b"")  # the log is complete: no tail to merge


class _Withheld:
    """The stdout of a command whose stdout is not stored: counted (and scanned for a crash),
    never kept."""

    def __init__(self) -> None:
        self.size = 0

    def drain(self, chunks: queue.Queue[bytes | None], scanner: _CrashScanner) -> None:
        while (chunk := chunks.get()) is not None:
            self.size += len(chunk)
            scanner.feed(chunk)


def run_streaming(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    spool: HashingWriter,
    ruleset: RuleSet,
    stdout: BinaryIO,
    stderr: BinaryIO,
    withhold_stdout: bool = False,
    stop: threading.Event | None = None,
    on_stop: Callable[[], None] = lambda: None,
) -> Outcome:
    started = utc_now()
    try:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: signals reach it only through us
        )
    except FileNotFoundError:
        raise ConfigError(
            f"command not found: {argv[0]!r}",
            fix="install it, put it on PATH, or give the full path as the command",
        ) from None
    except PermissionError:
        raise ConfigError(
            f"command is not executable: {argv[0]!r}", fix=f"chmod +x {argv[0]} or fix the path"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot start {argv[0]!r}: {exc.strerror}", fix="check the command"
        ) from None
    assert proc.stdout is not None and proc.stderr is not None
    # One scanner per pipe: interleaved stdout bytes must not hide a marker on stderr.
    scanners = (_CrashScanner(), _CrashScanner())
    redactors = (StreamRedactor(ruleset), StreamRedactor(ruleset))
    withheld = _Withheld() if withhold_stdout else None
    threads: list[threading.Thread] = []
    for number, pipe, console, redactor, scanner in (
        (1, proc.stdout, stdout, redactors[0], scanners[0]),
        (2, proc.stderr, stderr, redactors[1], scanners[1]),
    ):
        # Bounded: a slow disk slows the reads (and so the command), never grows memory.
        chunks: queue.Queue[bytes | None] = queue.Queue(QUEUE_CHUNKS)
        tail = tail_path(spool.path, number)
        threads.append(threading.Thread(target=_read, args=(pipe, console, chunks), daemon=True))
        if number == 1 and withheld is not None:
            threads.append(
                threading.Thread(target=withheld.drain, args=(chunks, scanner), daemon=True)
            )
            continue
        threads.append(
            threading.Thread(
                target=_redact, args=(chunks, redactor, spool, scanner, tail), daemon=True
            )
        )
    finished = threading.Event()
    with _SignalForwarder(proc) as forwarder:
        if stop is not None:  # not joined: it ends on its own once the command has finished
            watch = (stop, finished, on_stop)
            threading.Thread(target=forwarder.watch, args=watch, daemon=True).start()
        for thread in threads:
            thread.start()
        returncode = proc.wait()
        finished.set()
        if forwarder.first is not None or forwarder.stopped:
            # Cancelled: whatever of the command's group ignored the signals (a provisioner
            # that traps them) must not outlive it, hold its pipes or keep changing things.
            forwarder.send(signal.SIGKILL)
        for thread in threads:
            thread.join()
    proc.stdout.close()
    proc.stderr.close()
    counts: Counter[str] = Counter()
    for redactor in redactors:
        counts.update(redactor.counts)
    exit_code = returncode if returncode >= 0 else 128 - returncode
    return Outcome(
        exit_code=exit_code,
        started_at=started,
        finished_at=utc_now(),
        signal_received=forwarder.first,
        crashed=any(s.found for s in scanners)
        or (returncode < 0 and forwarder.first is None and not forwarder.stopped),
        redactions=counts,
        stdout_withheld_bytes=withheld.size if withheld is not None else None,
        stopped=forwarder.stopped,
    )
