"""Benchmark 8: reading the trail back (``tfaudit log``, ``history``, ``report``).

Streams are seeded straight into the in-process moto store (``bench/seed.py``), each in its own
bucket, then the real CLI runs as its own process over HTTP:

* ``tfaudit log -n 20 --json`` on a 100,000-record stream (head by probing, 20 slots read);
* ``tfaudit history aws_iam_role.admin --json`` over 10,000 records whose plans each change
  one of 100 resources: cold (``--no-cache``: one listing, one GET per record) and warm (the
  local record cache, vouched for by the chain's hash links: a head probe and the head);
* ``tfaudit report --format html`` for a month holding 1,000 records with 2 artifacts each
  (verify's walk over the window; the records and logs it shows are the ones the walk read).

    .venv/bin/python bench/bench_read.py [--smoke]
"""

from __future__ import annotations

import datetime as dt
import json
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
    median,
    tfaudit_cmd,
    timed,
)
from bench.fast_moto import FastMoto, index_bucket
from bench.seed import seed_stream
from devkit.servers import make_lock_bucket, unique_bucket

BENCH = "8. read"
STREAM = "bench/read"
ADDRESS = "aws_iam_role.admin"
RESOURCES = 100  # distinct addresses in the history stream


@dataclass(frozen=True)
class ReadParams:
    log_size: int = 100_000
    history_size: int = 10_000
    report_size: int = 1_000
    runs: int = 5
    slow_runs: int = 3  # history and report
    log_limit: float = 2.0
    history_limit: float = 30.0
    report_limit: float = 30.0


FULL = ReadParams()
SMOKE = ReadParams(log_size=60, history_size=200, report_size=20, runs=1, slow_runs=1)


def _address(seq: int) -> str:
    index = seq % RESOURCES
    return ADDRESS if index == 0 else f"aws_s3_bucket.data[{index}]"


def _history_fields(seq: int) -> dict[str, Any]:
    apply = seq % 2 == 1
    change = {"address": _address(seq // 2), "actions": ["update"], "importing": False}
    return {
        "command": ["terraform", "apply" if apply else "plan", "-input=false"]
        + (["tfplan"] if apply else ["-out=tfplan"]),
        "plan": {
            "plan_file": "tfplan",
            "plan_file_sha256": f"{seq // 2:064x}",
            "add": 0,
            "change": 1,
            "destroy": 0,
            "import": 0,
            "resources": [change],
        },
        "ci": {
            "provider": "github",
            "repository": "acme/infra",
            "actor": f"user{seq % 7}",
            "commit": f"{seq:040x}",
            "ref": "refs/heads/main",
            "run_id": str(seq),
        },
    }


@dataclass(frozen=True)
class Measured:
    seconds: float  # median wall time of the whole process
    requests: float  # median requests the server answered per run
    data: Any  # the last run's --json output, if any


def _figure(metric: str, got: Measured, runs: int, limit: float, detail: str) -> Figure:
    return Figure(
        BENCH,
        metric,
        got.seconds,
        "s",
        runs,
        bracket=f"≤ {limit:.0f} s",
        met=at_most(got.seconds, limit),
        detail=f"{detail}; {got.requests:,.0f} requests",
    )


def _measure(
    server: FastMoto, argv: list[str], env: dict[str, str], work: Path, runs: int
) -> Measured:
    times: list[float] = []
    counts: list[float] = []
    data: Any = None
    for _ in range(runs):
        before, _, _ = server.requests.snapshot()
        seconds, done = timed(argv, env=env, cwd=work, stdout=-1)
        after, _, _ = server.requests.snapshot()
        times.append(seconds)
        counts.append(after - before)
        data = json.loads(done.stdout) if done.stdout.strip().startswith((b"[", b"{")) else None
    return Measured(median(times), median(counts), data)


def _store(bucket: str) -> list[str]:
    return ["--store", f"s3://{bucket}/audit", "--stream", STREAM]


def _bucket(server: FastMoto) -> str:
    bucket = unique_bucket("bench-read")
    make_lock_bucket(server.client(), bucket)
    index_bucket(bucket)
    return bucket


def run(params: ReadParams, work: Path) -> list[Figure]:
    work.mkdir(parents=True, exist_ok=True)
    env = bench_env(work)
    server = FastMoto()
    figures: list[Figure] = []
    try:
        env.update(server.env())

        # log -n 20 on a long stream
        bucket = _bucket(server)
        seeded = seed_stream(bucket, "audit", STREAM, params.log_size, artifacts=False)
        argv = [*tfaudit_cmd(), "log", *_store(bucket), "-n", "20", "--json"]
        startup, _ = timed([*tfaudit_cmd(), "--version"], env=env, cwd=work)
        got = _measure(server, argv, env, work, params.runs)
        rows = got.data
        expected = list(range(params.log_size - 1, params.log_size - 21, -1))
        if not isinstance(rows, list) or [r["seq"] for r in rows] != expected[: len(rows)]:
            raise BenchError(f"log did not list the newest 20 records: {str(rows)[:300]}")
        figures.append(
            _figure(
                f"`log -n 20` on {params.log_size:,} records",
                got,
                params.runs,
                params.log_limit,
                f"whole process (`tfaudit --version` alone: {startup:.2f} s); "
                f"seeded in {seeded:.1f} s",
            )
        )

        # history over every record of a stream
        bucket = _bucket(server)
        seeded = seed_stream(
            bucket, "audit", STREAM, params.history_size, artifacts=False, fields=_history_fields
        )
        argv = [*tfaudit_cmd(), "history", *_store(bucket), ADDRESS, "--json"]
        wanted = sum(1 for seq in range(params.history_size) if _address(seq // 2) == ADDRESS)
        for label, extra, runs, how in (
            (
                "cold",
                ["--no-cache"],
                params.slow_runs,
                "a listing per 100 slots + 1 GET per record",
            ),
            ("warm", [], params.runs, "local cache vouched for by the chain: head probe + head"),
        ):
            if label == "warm":
                timed(argv, env=env, cwd=work)  # fills the cache
            got = _measure(server, [*argv, *extra], env, work, runs)
            entries = got.data
            if not isinstance(entries, list) or len(entries) != wanted:
                raise BenchError(f"history found {len(entries or [])} changes, not {wanted}")
            figures.append(
                _figure(
                    f"`history {ADDRESS}` over {params.history_size:,} records, {label}",
                    got,
                    runs,
                    params.history_limit,
                    f"{wanted} changes found; {how}; seeded in {seeded:.1f} s",
                )
            )

        # report for a month of 1,000 runs
        bucket = _bucket(server)
        month = dt.timedelta(days=30)
        seeded = seed_stream(
            bucket,
            "audit",
            STREAM,
            params.report_size,
            artifacts=True,
            step=month / params.report_size,
        )
        now = dt.datetime.now(dt.timezone.utc)
        out = work / "report.html"
        argv = [
            *tfaudit_cmd(),
            "report",
            *_store(bucket),
            "--since",
            (now - month - dt.timedelta(hours=1)).isoformat(),
            "--until",
            (now + dt.timedelta(minutes=5)).isoformat(),
            "--out",
            str(out),
        ]
        got = _measure(server, argv, env, work, params.slow_runs)
        text = out.read_text(encoding="utf-8")
        if "✓ VERIFIED" not in text or text.count('class="run"') != params.report_size:
            raise BenchError("the report did not verify and show every run")
        figures.append(
            _figure(
                f"`report` for a month of {params.report_size:,} records x 2 artifacts",
                got,
                params.slow_runs,
                params.report_limit,
                f"HTML {len(text.encode()) / 1e6:.1f} MB, every log embedded; verify's walk "
                f"(the report shows the bytes it read); seeded in {seeded:.1f} s",
            )
        )
    finally:
        server.stop()
    return figures


def main() -> None:
    bench_main(__doc__, run, SMOKE, FULL)


if __name__ == "__main__":
    main()
