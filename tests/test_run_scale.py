"""Memory and concurrency of `tfaudit run` (issue 2)."""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from devkit.servers import S3Server
from tests.support.tfaudit_proc import chain_records

STREAM = "acme/scale"

# Runs tfaudit as a child and prints the child's peak RSS (KiB) as reported by wait4().
_RSS_HARNESS = """
import os, subprocess, sys
proc = subprocess.Popen([sys.executable, "-m", "tfaudit_ci", *sys.argv[1:]],
                        stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""

# Prints N MiB of terraform-trace-like lines from a preallocated block (small RSS itself).
_GENERATOR = """
import sys
line = (b"2026-11-29T12:00:00.000Z [TRACE] provider.terraform-provider-null: "
        b"Received request: tf_rpc=ReadResource tf_req_id=4c2b a=" + b"x" * 40 + b"\\n")
block = line * (1048576 // len(line) + 1)
block = block[:1048576]
out = sys.stdout.buffer
for _ in range(int(sys.argv[1])):
    out.write(block)
out.flush()
"""


def _peak_rss_kib(megabytes: int, store: str, env: dict[str, str], cwd: Path) -> tuple[int, int]:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _RSS_HARNESS,
            "run",
            "--store",
            store,
            "--stream",
            STREAM,
            "--",
            sys.executable,
            "-c",
            _GENERATOR,
            str(megabytes),
        ],
        env=env,
        cwd=cwd,
        capture_output=True,
        check=False,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    code, rss = done.stdout.split()
    return int(code), int(rss)


@pytest.mark.slow
def test_300mb_output_streams_with_flat_memory(
    s3_server: S3Server, lock_bucket: str, tf_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**tf_env, **s3_server.env(), "TFAUDIT_WORK_DIR": str(tmp_path / "spools")}
    store = f"s3://{lock_bucket}/audit"
    small_code, small_rss = _peak_rss_kib(1, store, env, tmp_path)
    big_code, big_rss = _peak_rss_kib(300, store, env, tmp_path)
    assert (small_code, big_code) == (0, 0)
    growth_mib = (big_rss - small_rss) / 1024
    print(
        f"peak RSS: 1 MiB run {small_rss / 1024:.1f} MiB, 300 MiB run {big_rss / 1024:.1f} MiB, "
        f"growth {growth_mib:.1f} MiB"
    )
    assert growth_mib < 100
    records = chain_records(s3_server.client(), lock_bucket, STREAM, prefix="audit")
    log = next(a for a in records[-1]["artifacts"] if a["name"] == "output.log")
    assert log["size"] == 300 * 1048576
    head = s3_server.client().head_object(
        Bucket=lock_bucket, Key=f"audit/{log['key']}", VersionId=log["version_id"]
    )
    assert head["ContentLength"] == log["size"]
    assert head["ObjectLockMode"] == "COMPLIANCE"  # multipart: retention put explicitly


def test_eight_concurrent_runs_make_a_gapless_chain(
    s3_server: S3Server,
    lock_bucket: str,
    terraform_bin: Path,
    tf_env: dict[str, str],
    tmp_path: Path,
) -> None:
    env = {**tf_env, **s3_server.env(), "TFAUDIT_WORK_DIR": str(tmp_path / "spools")}
    store = f"s3://{lock_bucket}/audit"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tfaudit_ci",
                "run",
                "--store",
                store,
                "--stream",
                STREAM,
                "--",
                str(terraform_bin),
                "version",
            ],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(8)
    ]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
    client = s3_server.client()
    records = chain_records(client, lock_bucket, STREAM, prefix="audit")
    assert [r["seq"] for r in records] == list(range(8))
    assert len({r["run_folder"] for r in records}) == 8
    for before, after in itertools.pairwise(records):
        key = f"audit/{STREAM}/chain/{before['seq']:012d}.json"
        versions = client.list_object_versions(Bucket=lock_bucket, Prefix=key)["Versions"]
        oldest = versions[-1]["VersionId"]
        raw = client.get_object(Bucket=lock_bucket, Key=key, VersionId=oldest)["Body"].read()
        assert after["prev"] == {"seq": before["seq"], "sha256": hashlib.sha256(raw).hexdigest()}
    assert json.loads(raw)["seq"] == 6
