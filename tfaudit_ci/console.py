"""Where tfaudit writes: the wrapped command's bytes pass through untouched; tfaudit's own
lines go to stderr and always start on a line of their own; JSON goes where it is asked."""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO


class TrackingStream:
    """A binary console stream that remembers whether its last byte ended a line."""

    def __init__(self, inner: BinaryIO, shared: _LineState) -> None:
        self._inner = inner
        self._state = shared

    def write(self, data: bytes) -> int:
        written = self._inner.write(data)
        if data:
            self._state.at_line_start = data.endswith(b"\n")
        return written

    def flush(self) -> None:
        self._inner.flush()


class _LineState:
    def __init__(self) -> None:
        self.at_line_start = True
        self.lock = threading.Lock()


@dataclass
class Console:
    """The command's stdout and stderr (bytes, passed through) and tfaudit's messages."""

    stdout: BinaryIO
    stderr: BinaryIO
    messages: TextIO
    _state: _LineState

    @classmethod
    def wrap(cls, stdout: BinaryIO, stderr: BinaryIO, messages: TextIO) -> Console:
        state = _LineState()
        return cls(
            TrackingStream(stdout, state),  # type: ignore[arg-type]
            TrackingStream(stderr, state),  # type: ignore[arg-type]
            messages,
            state,
        )

    @classmethod
    def system(cls) -> Console:
        return cls.wrap(sys.stdout.buffer, sys.stderr.buffer, sys.stderr)

    def say(self, line: str) -> None:
        """One line of tfaudit's own, never glued to the command's unterminated last line."""
        with self._state.lock:
            prefix = "" if self._state.at_line_start else "\n"
            self._state.at_line_start = True
        self.messages.write(prefix + line.rstrip("\n") + "\n")
        self.messages.flush()


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


def write_json_file(path: Path, data: Any) -> None:
    """Write a machine-readable result next to, never into, the command's own output."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
