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
    """S3 Object Lock's retention modes; GCS and Azure locks count as COMPLIANCE."""

    COMPLIANCE = "COMPLIANCE"
    GOVERNANCE = "GOVERNANCE"


class OnUnlocked(StrEnum):
    """What a run does on a store that cannot lock: refuse to start (exit 21), or ship plain
    objects and say in the record that the run was not WORM-protected."""

    FAIL = "fail"
    WARN = "warn"


class GcsMode(StrEnum):
    """How a GCS bucket locks: its locked retention policy, or a retention on each object."""

    BUCKET_POLICY = "bucket-policy"
    OBJECT_RETENTION = "object-retention"


class AzureMode(StrEnum):
    """How an Azure container locks: an immutability policy on each blob version (readable
    from the data plane), or one policy on the container (readable only with management
    access: docs/stores.md)."""

    VERSION_IMMUTABILITY = "version-immutability"
    CONTAINER_POLICY = "container-policy"


def values(enum: type[Enum]) -> tuple[str, ...]:
    """The members' values, in definition order (for messages and argument choices)."""
    return tuple(str(member.value) for member in enum)
