"""Run the real ``tfaudit`` CLI as a separate process, the way CI runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class Completed(subprocess.CompletedProcess[bytes]):
    """A finished tfaudit process, with the ``--result`` document of a ``run``."""

    result_document: dict[str, Any] | None = None


def _result_file(args: list[str]) -> Path | None:
    """``run ... --json ... -- CMD`` in a test stands for ``--result FILE`` (``run`` keeps
    stdout for the command's own bytes): a temporary FILE, read back by ``result_json``."""
    if not args or args[0] != "run":
        return None
    options = args[: args.index("--")] if "--" in args else args
    if "--json" not in options:
        return None
    handle, name = tempfile.mkstemp(prefix="tfaudit-result-", suffix=".json")
    os.close(handle)
    args[options.index("--json") : options.index("--json") + 1] = ["--result", name]
    return Path(name)


def tfaudit(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    timeout: float = 300,
) -> Completed:
    argv = list(args)
    result_file = _result_file(argv)
    done = subprocess.run(
        [sys.executable, "-m", "tfaudit_ci", *argv],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    proc = Completed(done.args, done.returncode, done.stdout, done.stderr)
    if result_file is not None:
        try:
            proc.result_document = json.loads(result_file.read_bytes())
        except (OSError, ValueError):
            proc.result_document = None
        result_file.unlink(missing_ok=True)
    return proc


def result_json(proc: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    """A run's ``--result`` document, or the ``--json`` document printed on stdout."""
    document = getattr(proc, "result_document", None)
    if document is not None:
        return dict(document)
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
