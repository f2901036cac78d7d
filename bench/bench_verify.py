"""Benchmark 5: ``tfaudit verify`` over 1,000 and 10,000 records with 2 artifacts each, and
the incremental verify of the 100 newest records of a 100,000-record stream.

The streams are seeded straight into the in-process moto store (``bench/seed.py``), each in
its own bucket; ``tfaudit verify --store s3://... --stream S --parallelism N --json`` then runs
as its own process over HTTP and must find every record valid (exit 0). The incremental row
starts each run from the same checkpoint at seq 99,899 (written by the product's own
``verify.checkpoint`` from the record the seeding stored: a full verify of 100,000 records
would take longer than the whole benchmark budget) and must find the 100 records after it
valid, and advance the checkpoint to seq 99,999.

    .venv/bin/python bench/bench_verify.py [--smoke]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    BenchError,
    Figure,
    at_most,
    bench_env,
    bench_main,
    last_json,
    median,
    tfaudit_cmd,
    timed,
)
from bench.fast_moto import FastMoto, index_bucket
from bench.seed import seed_stream
from devkit.servers import make_lock_bucket, unique_bucket

BENCH = "5. verify"
STREAM = "bench/verify"
SECONDS_LIMIT = 60.0
UNAVAILABLE = "not available in this build"


@dataclass(frozen=True)
class VerifyParams:
    sizes: tuple[int, ...] = (1_000, 10_000)
    runs: int = 5
    # 10,000 records take ~2 minutes per run on moto; 5 runs would break the 15-minute budget.
    big_runs: int = 3
    parallelism: int = 16
    bracket_size: int = 10_000
    incremental: tuple[int, int] = (100_000, 100)  # stream size, records after the checkpoint


FULL = VerifyParams()
SMOKE = VerifyParams(
    sizes=(5,), runs=1, big_runs=1, parallelism=4, bracket_size=5, incremental=(8, 3)
)
INCREMENTAL_LIMIT = 5.0


def verify_available(env: dict[str, str], cwd: Path) -> bool:
    """False while this build's ``tfaudit verify`` is the placeholder that refuses to run."""
    import subprocess

    done = subprocess.run(
        [*tfaudit_cmd(), "verify", "--store", (cwd / "none").as_uri(), "--stream", "x"],
        env=env,
        cwd=cwd,
        capture_output=True,
        check=False,
        timeout=120,
    )
    return UNAVAILABLE not in done.stderr.decode("utf-8", "replace")


def all_valid(report: dict[str, Any], size: int) -> bool:
    """The ``--json`` report says every record (and both artifacts of each) checked out."""
    records = report.get("records") or {}
    artifacts = report.get("artifacts") or {}
    return (
        report.get("ok") is True
        and records.get("total") == records.get("valid") == size
        and artifacts.get("total") == artifacts.get("valid") == 2 * size
    )


def run(params: VerifyParams, work: Path) -> list[Figure]:
    work.mkdir(parents=True, exist_ok=True)
    env = bench_env(work)
    server = FastMoto()
    figures: list[Figure] = []
    try:
        env.update(server.env())
        if not verify_available(env, work):
            raise BenchError(f"tfaudit verify is {UNAVAILABLE}")
        client = server.client()
        for size in params.sizes:
            bucket = unique_bucket("bench-verify")
            make_lock_bucket(client, bucket)
            index_bucket(bucket)
            seed_seconds = seed_stream(bucket, "audit", STREAM, size, artifacts=True)
            argv = _verify_argv(bucket, params.parallelism)
            times: list[float] = []
            requests: list[int] = []
            runs = params.big_runs if size >= 10_000 else params.runs
            for _ in range(runs):
                before, _, _ = server.requests.snapshot()
                seconds, done = timed(argv, env=env, cwd=work, stdout=-1)
                after, _, _ = server.requests.snapshot()
                report = last_json(done.stdout)
                if not all_valid(report, size):
                    raise BenchError(f"verify did not find {size} valid records: {report}")
                times.append(seconds)
                requests.append(after - before)
            elapsed = median(times)
            headline = size == params.bracket_size
            figures.append(
                Figure(
                    BENCH,
                    f"verify {size:,} records x 2 artifacts, --parallelism {params.parallelism}",
                    size / elapsed,
                    "records/s",
                    runs,
                    bracket=f"{size:,} in ≤ {SECONDS_LIMIT:.0f} s" if headline else None,
                    met=at_most(elapsed, SECONDS_LIMIT) if headline else None,
                    detail=(
                        f"{elapsed:.1f} s, {median(requests):,.0f} requests "
                        f"({median(requests) / size:.1f} per record); "
                        f"seeded in {seed_seconds:.1f} s"
                    ),
                )
            )
        figures.append(_incremental(params, server, env, work))
    finally:
        server.stop()
    return figures


def _verify_argv(bucket: str, parallelism: int, *extra: str) -> list[str]:
    return [
        *tfaudit_cmd(),
        "verify",
        "--store",
        f"s3://{bucket}/audit",
        "--stream",
        STREAM,
        "--parallelism",
        str(parallelism),
        "--json",
        *extra,
    ]


def _checkpoint_at(bucket: str, seq: int, path: Path) -> None:
    """The checkpoint a passing verify through ``seq`` writes, from the seeded record."""
    import json

    from bench.fast_moto import backend
    from tfaudit_ci.canonical import sha256_hex
    from tfaudit_ci.record import chain_key, iso, utc_now
    from tfaudit_ci.verify.checkpoint import Checkpoint, save
    from tfaudit_ci.verify.model import ChainTip

    stored = backend().get_object(bucket, f"audit/{chain_key(STREAM, seq)}")
    assert stored is not None
    data = bytes(stored.value)
    signature = json.loads(data).get("signature")
    tip = ChainTip(seq, sha256_hex(data), str(stored.version_id), signature, 1)
    save(path, Checkpoint(f"s3://{bucket}/audit", STREAM, None, tip, iso(utc_now())))


def _incremental(params: VerifyParams, server: FastMoto, env: dict[str, str], work: Path) -> Figure:
    size, new = params.incremental
    bucket = unique_bucket("bench-verify-inc")
    make_lock_bucket(server.client(), bucket)
    index_bucket(bucket)
    seed_seconds = seed_stream(bucket, "audit", STREAM, size, artifacts=True)
    path = work / "checkpoint.json"
    argv = _verify_argv(bucket, params.parallelism, "--checkpoint", str(path))
    times: list[float] = []
    requests: list[int] = []
    for _ in range(params.runs):
        _checkpoint_at(bucket, size - new - 1, path)
        before, _, _ = server.requests.snapshot()
        seconds, done = timed(argv, env=env, cwd=work, stdout=-1)
        after, _, _ = server.requests.snapshot()
        report = last_json(done.stdout)
        if not all_valid(report, new) or report.get("first_seq") != size - new:
            raise BenchError(f"incremental verify did not check {new} valid records: {report}")
        if f'"seq":{size - 1},' not in path.read_text(encoding="utf-8"):
            raise BenchError("incremental verify did not advance the checkpoint")
        times.append(seconds)
        requests.append(after - before)
    elapsed = median(times)
    return Figure(
        BENCH,
        f"incremental verify: {new:,} new records on a {size:,}-record stream (x 2 artifacts)",
        elapsed,
        "s",
        params.runs,
        bracket=f"≤ {INCREMENTAL_LIMIT:.0f} s",
        met=at_most(elapsed, INCREMENTAL_LIMIT),
        detail=(
            f"--checkpoint at seq {size - new - 1:,}; {median(requests):,.0f} requests "
            f"({median(requests) / new:.1f} per new record); seeded in {seed_seconds:.1f} s"
        ),
    )


def main() -> None:
    bench_main(__doc__, run, SMOKE, FULL)


if __name__ == "__main__":
    main()
