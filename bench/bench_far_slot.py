"""Benchmark 6: ``tfaudit verify`` on a stream with one object at ``chain/999999999999.json``.

Issue 12: verify used to build the list of every missing seq up to the largest one and died
of MemoryError with no report. Gaps are now kept as ranges, so time and memory grow with the
number of objects, not with the largest seq. The same ``file://`` stream is verified with
and without the far-away slot (each run its own process, ``wait4`` for the peak RSS); the far
one must finish in seconds, report the slot (exit 24) and use no more memory.

    .venv/bin/python bench/bench_far_slot.py [--smoke]
"""

from __future__ import annotations

import datetime as dt
import shutil
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
    timed_rusage,
)
from tfaudit_ci.chain import Chain, Link
from tfaudit_ci.record import build_record, chain_key
from tfaudit_ci.signing import NoSigner
from tfaudit_ci.stores.file import FileStore

BENCH = "6. verify far slot"
STREAM = "bench/far"
FAR = 999_999_999_999
SECONDS_LIMIT = 10.0
RSS_FLAT_MB = 10.0


@dataclass(frozen=True)
class FarParams:
    records: int = 200
    runs: int = 5


FULL = FarParams()
SMOKE = FarParams(records=5, runs=1)


def seed(root: Path, count: int) -> FileStore:
    """``count`` records appended the way ``tfaudit run`` appends them (no artifacts)."""
    store = FileStore(root)
    chain = Chain(store, STREAM)
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=count + 1)
    for n in range(count):

        def build(link: Link, n: int = n) -> dict[str, Any]:
            moment = start + dt.timedelta(minutes=n)
            return build_record(
                stream=STREAM,
                seq=link.seq,
                prev=link.prev,
                burned=link.burned,
                run_folder=f"{moment.strftime('%Y%m%dT%H%M%SZ')}-far-1-{n:08x}",
                command=["terraform", "plan"],
                cwd="/work",
                tool={"name": "terraform", "binary": "terraform", "version": "1.11.4"},
                workspace="default",
                status="succeeded",
                exit_code=0,
                started_at=moment,
                finished_at=moment + dt.timedelta(seconds=20),
                ci={"provider": "generic", "run_id": str(n)},
                artifacts=[],
                plan=None,
                redactions={},
                retention={"mode": None, "retain_until": None, "store_worm": False},
            )

        chain.append(build, NoSigner(), run_folder=f"far-{n}", lock=None)
    return store


def _verify_argv(store: FileStore, expect: int) -> list[str]:
    # sh turns the expected exit code into 0 (the far stream must fail with 24).
    command = [*tfaudit_cmd(), "verify", "--store", store.uri, "--stream", STREAM, "--json"]
    return ["sh", "-c", f'"$@" >/dev/null; test $? -eq {expect}', "sh", *command]


def run(params: FarParams, work: Path) -> list[Figure]:
    work.mkdir(parents=True, exist_ok=True)
    env = bench_env(work)
    plain = seed(work / "plain", params.records)
    shutil.copytree(plain.root, work / "far")
    far = FileStore(work / "far")
    stored = far.put_create_only(
        chain_key(STREAM, FAR),
        b'{"junk": "far away"}',
        None,
    )
    if stored is None:
        raise BenchError("could not write the far-away slot")
    plain_runs, far_runs = [], []
    for _ in range(params.runs):  # alternating, so both sides see the same machine load
        plain_runs.append(timed_rusage(_verify_argv(plain, 0), env=env, cwd=work))
        far_runs.append(timed_rusage(_verify_argv(far, 24), env=env, cwd=work))
    seconds = median([u.seconds for u in far_runs])
    base_seconds = median([u.seconds for u in plain_runs])
    rss = median([u.max_rss_kib / 1024 for u in far_runs])
    base_rss = median([u.max_rss_kib / 1024 for u in plain_runs])
    return [
        Figure(
            BENCH,
            f"verify {params.records} records + an object at seq {FAR:,} (file store)",
            seconds,
            "s",
            params.runs,
            bracket=f"≤ {SECONDS_LIMIT:.0f} s",
            met=at_most(seconds, SECONDS_LIMIT),
            detail=f"reports gap + after-head, exit 24; without the far slot {base_seconds:.2f} s",
        ),
        Figure(
            BENCH,
            "peak RSS growth from the far slot",
            rss - base_rss,
            "MiB",
            params.runs,
            bracket=f"≤ {RSS_FLAT_MB:.0f} MB (flat)",
            met=at_most(rss - base_rss, RSS_FLAT_MB),
            detail=f"{rss:.1f} MiB with it, {base_rss:.1f} MiB without (wait4 ru_maxrss)",
        ),
    ]


def main() -> None:
    bench_main(__doc__, run, SMOKE, FULL)


if __name__ == "__main__":
    main()
