"""Run the real ``tfaudit`` CLI as a separate process, the way CI runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def tfaudit(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    timeout: float = 300,
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "tfaudit_ci", *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def result_json(proc: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    """The ``--json`` document: the last JSON object printed on stdout."""
    text = proc.stdout.decode("utf-8", "replace")
    start = text.rfind("\n{\n")
    start = 0 if start < 0 and text.startswith("{") else start + 1
    data: dict[str, Any] = json.loads(text[start:])
    return data


def chain_records(client: Any, bucket: str, stream: str, prefix: str = "") -> list[dict[str, Any]]:
    """Every chain record of a stream (oldest version of each slot), in seq order."""
    base = f"{prefix}/{stream}/chain/" if prefix else f"{stream}/chain/"
    listing = client.list_object_versions(Bucket=bucket, Prefix=base)
    oldest: dict[str, str] = {}
    for version in listing.get("Versions", []):
        oldest[version["Key"]] = version["VersionId"]  # listed newest first: last wins = oldest
    records = []
    for key in sorted(oldest):
        body = client.get_object(Bucket=bucket, Key=key, VersionId=oldest[key])["Body"].read()
        records.append(json.loads(body))
    return records
