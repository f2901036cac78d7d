"""Awkward bytes survive the whole path byte-exact, apart from redaction (issue 7, section 3).

Command output -> console (unchanged) and spool (redacted) -> S3 (multipart above the
threshold) -> read back. Covered: a single 100 MB line, NUL bytes, invalid UTF-8 (lone
continuation bytes, overlong forms, encoded surrogates), CR/LF mixtures, and output that
does not end in a newline; a registered secret inside them is the only thing that changes.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devkit.servers import S3Server
from tests.support.tfaudit_proc import chain_records, tfaudit

STREAM = "acme/bytes"
SECRET = "rt-S3cret-value-0f1e2d3c"
MARKER = re.compile(rb"\[REDACTED:[^\]]{1,80}\]")
MIB = 1024 * 1024

# Each case: a Python expression for the bytes the command writes to stdout.
CASES = {
    "nul-bytes": "b'before\\x00\\x00after\\x00\\n' * 1000",
    "invalid-utf8": (
        "b'lone \\x80 cont, \\xc3 truncated, overlong \\xc0\\xaf, surrogate \\xed\\xa0\\x80, "
        "\\xff\\xfe bom-ish\\n' * 500"
    ),
    "crlf-and-cr": "b'progress 10%\\rprogress 20%\\r\\nline\\r\\n' * 700",
    "no-final-newline": "b'last line without a newline' * 3000",
    "secret-in-binary": (
        f"b'\\x00\\xff' + {SECRET!r}.encode() + b'\\x00\\xfe\\x80 tail without newline'"
    ),
}

WRITER = "import os, sys\ndata = {expr}\nsys.stdout.buffer.write(data)\nsys.stdout.flush()\n"


def _env(tf_env: dict[str, str], server: S3Server, tmp_path: Path) -> dict[str, str]:
    return {
        **tf_env,
        **server.env(),
        "TFAUDIT_WORK_DIR": str(tmp_path / "spools"),
        "TFAUDIT_READ_TIMEOUT": "60",
        "DEPLOY_TOKEN": SECRET,  # a secret-looking env var: its value must be redacted
    }


def _stored_log(server: S3Server, bucket: str) -> tuple[dict[str, Any], bytes]:
    (record,) = chain_records(server.client(), bucket, STREAM, prefix="audit")
    (log,) = record["artifacts"]
    body: bytes = (
        server.client()
        .get_object(Bucket=bucket, Key=f"audit/{log['key']}", VersionId=log["version_id"])["Body"]
        .read()
    )
    assert hashlib.sha256(body).hexdigest() == log["sha256"] and len(body) == log["size"]
    return record, body


def _run(
    server: S3Server, bucket: str, script: str, cwd: Path, tf_env: dict[str, str]
) -> tuple[bytes, dict[str, Any], bytes]:
    """Console bytes, the record, and the stored log (checked equal to the spool)."""
    env = _env(tf_env, server, cwd)
    store = f"s3://{bucket}/audit"
    proc = tfaudit(
        ["run", "--store", store, "--stream", STREAM, "--", sys.executable, "-c", script],
        env=env,
        cwd=cwd,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    record, body = _stored_log(server, bucket)
    spooled = next((cwd / "spools" / "shipped").iterdir()) / "output.log"
    assert spooled.read_bytes() == body
    return proc.stdout, record, body


@pytest.mark.parametrize("case", list(CASES))
def test_awkward_bytes_round_trip_exactly(
    case: str, s3_server: S3Server, lock_bucket: str, tf_env: dict[str, str], tmp_path: Path
) -> None:
    expr = CASES[case]
    script = WRITER.format(expr=expr)
    original = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, check=True
    ).stdout  # what the command writes when nothing sits in between
    console, record, stored = _run(s3_server, lock_bucket, script, tmp_path, tf_env)
    assert console == original  # the job log shows the command's bytes unchanged
    if SECRET.encode() in original:
        assert SECRET.encode() not in stored
        assert len(MARKER.findall(stored)) == 1 and sum(record["redactions"].values()) == 1
        stored = MARKER.sub(SECRET.encode(), stored)
    assert stored == original


def test_single_100_mb_line_round_trips(
    s3_server: S3Server, lock_bucket: str, tf_env: dict[str, str], tmp_path: Path
) -> None:
    """One 100 MB line (no newline until the very end) with a secret in the middle."""
    script = (
        "import sys\n"
        "out = sys.stdout.buffer\n"
        "block = bytes(range(32, 127)) * (1024 * 1024 // 95)\n"
        "for i in range(50):\n"
        "    out.write(block[: 1024 * 1024])\n"
        f"out.write({SECRET!r}.encode())\n"
        "for i in range(50):\n"
        "    out.write(block[: 1024 * 1024])\n"
        "out.write(b'\\n')\n"
        "out.flush()\n"
    )
    console, _, stored = _run(s3_server, lock_bucket, script, tmp_path, tf_env)
    block = bytes(range(32, 127)) * (MIB // 95)
    half = block[:MIB] * 50
    expected = half + SECRET.encode() + half + b"\n"
    assert hashlib.sha256(console).digest() == hashlib.sha256(expected).digest()
    assert len(stored) > 100_000_000 and stored.count(b"\n") == 1
    assert SECRET.encode() not in stored
    assert MARKER.sub(SECRET.encode(), stored) == expected
