"""Closed vocabularies shared across modules: run statuses, lock modes, store modes.

Each is a ``StrEnum`` so it serialises as its plain value in records, outputs and JSON.
"""

from __future__ import annotations

import sys
from enum import Enum

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - Python 3.10

    class StrEnum(str, Enum):
        """``enum.StrEnum`` for Python 3.10: members are their string values."""

        def __str__(self) -> str:
            return str(self.value)


class RunStatus(StrEnum):
    """What happened to the wrapped command (``status`` in records and step outputs)."""

    RUNNING = "running"  # only in a spool: the run had not finished when it was last written
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    CRASHED = "crashed"
    INTERRUPTED = "interrupted"  # tfaudit itself died; `recover` shipped what it had
    NOT_RUN = "not-run"  # the command never started (configuration or preflight failed)


class LockMode(StrEnum):
    COMPLIANCE = "COMPLIANCE"
    GOVERNANCE = "GOVERNANCE"


class OnUnlocked(StrEnum):
    FAIL = "fail"
    WARN = "warn"


class GcsMode(StrEnum):
    BUCKET_POLICY = "bucket-policy"
    OBJECT_RETENTION = "object-retention"


class AzureMode(StrEnum):
    VERSION_IMMUTABILITY = "version-immutability"
    CONTAINER_POLICY = "container-policy"


def values(enum: type[Enum]) -> tuple[str, ...]:
    """The members' values, in definition order (for messages and argument choices)."""
    return tuple(str(member.value) for member in enum)
