"""Benchmark 4: the cost of appending the next record to streams of 10, 1,000 and 100,000.

Each stream is seeded straight into the in-process moto store (``bench/seed.py``: records
built and chained by the product's own code, one ``moto`` put per record, no HTTP), in its own
bucket. Then ``tfaudit run --store s3://... -- true`` appends one record, several times; the
server counts every request of that run, split into those touching the chain (``chain/`` keys
and the head hint ``chain-head.json``: reading the hint, the block listing that confirms it,
reading the head and its predecessor, the create-only PUT, its version check and read-back,
rewriting the hint) and the rest (preflight, the log upload and its read-back). The first
append to a seeded stream finds no hint and probes from scratch: it is the warm-up, reported
in the details; the measured appends each start from the hint the one before wrote.

    .venv/bin/python bench/bench_chain.py [--smoke]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    BenchError,
    Figure,
    at_most,
    bench_env,
    bench_main,
    median,
    tfaudit_cmd,
    timed,
)
from bench.fast_moto import FastMoto, index_bucket
from bench.seed import seed_stream
from devkit.servers import make_lock_bucket, unique_bucket

BENCH = "4. chain append"
STREAM = "bench/append"  # no "/chain/" in it: run keys must not count as chain requests
REQUEST_LIMIT = 8  # issue 17: at every size


@dataclass(frozen=True)
class ChainParams:
    sizes: tuple[int, ...] = (10, 1_000, 100_000)
    runs: int = 5


FULL = ChainParams()
SMOKE = ChainParams(sizes=(3, 40), runs=1)


@dataclass(frozen=True)
class Append:
    seconds: float
    chain_requests: int
    total_requests: int
    list_versions: int


def _append_once(server: FastMoto, bucket: str, env: dict[str, str], cwd: Path) -> Append:
    argv = [*tfaudit_cmd(), "run", "--store", f"s3://{bucket}/audit", "--stream", STREAM]
    total0, chain0, counts0 = server.requests.snapshot()
    seconds, _ = timed([*argv, "--", "true"], env=env, cwd=cwd)
    total1, chain1, counts1 = server.requests.snapshot()
    lists = counts1["ListObjectVersions"] - counts0["ListObjectVersions"]
    return Append(seconds, chain1 - chain0, total1 - total0, lists)


def run(params: ChainParams, work: Path) -> list[Figure]:
    work.mkdir(parents=True, exist_ok=True)
    env = bench_env(work)
    server = FastMoto()
    figures: list[Figure] = []
    try:
        env.update(server.env())
        client = server.client()
        for size in params.sizes:
            bucket = unique_bucket("bench-chain")
            make_lock_bucket(client, bucket)
            index_bucket(bucket)
            seed_seconds = seed_stream(bucket, "audit", STREAM, size, artifacts=False)
            cold = _append_once(server, bucket, env, work)  # no hint yet: probes from scratch
            appends = [_append_once(server, bucket, env, work) for _ in range(params.runs)]
            head = client.list_objects_v2(
                Bucket=bucket,
                Prefix=f"audit/{STREAM}/chain/",
                StartAfter=f"audit/{STREAM}/chain/{size:012d}",
            )
            landed = len(head.get("Contents", []))
            if landed != params.runs + 1:
                raise BenchError(f"expected {params.runs + 1} appended records, found {landed}")
            chain_requests = median([a.chain_requests for a in appends])
            figures.append(
                Figure(
                    BENCH,
                    f"chain requests to append to {size:,} records",
                    chain_requests,
                    "requests",
                    params.runs,
                    bracket=f"≤ {REQUEST_LIMIT}",
                    met=at_most(chain_requests, REQUEST_LIMIT),
                    detail=(
                        f"max {max(a.chain_requests for a in appends)}; "
                        f"{median([a.list_versions for a in appends]):.0f} ListObjectVersions; "
                        f"whole run {median([a.total_requests for a in appends]):.0f} requests, "
                        f"{median([a.seconds for a in appends]):.2f} s "
                        f"(`tfaudit run -- true`); seeded in {seed_seconds:.1f} s"
                    ),
                )
            )
            figures.append(
                Figure(
                    BENCH,
                    f"chain requests to append to {size:,} records, no hint",
                    cold.chain_requests,
                    "requests",
                    1,
                    detail=(
                        "the first append to the seeded stream: no hint yet, so it probes "
                        f"from scratch; {cold.list_versions} ListObjectVersions"
                    ),
                )
            )
    finally:
        server.stop()
    return figures


def main() -> None:
    bench_main(__doc__, run, SMOKE, FULL)


if __name__ == "__main__":
    main()
