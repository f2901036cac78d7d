"""Benchmark 3: streaming throughput, memory and redaction cost of ``tfaudit run``.

A generator prints N MiB of terraform-trace-like lines (a pre-built 8 MiB block of
``bench_redact.trace_text``, written repeatedly). It runs through ``tfaudit run`` on the file
store, and through ``tee``/``cat`` into a file as the physical limit, alternating in each round.

* Throughput: bytes / the wrapped command's duration (the record's ``finished_at -
  started_at``, i.e. spawn to the last byte spooled, before shipping); the end-to-end time
  including shipping is shown too.
* Peak RSS: ``wait4()`` on tfaudit's process tree at 100 MiB and 1 GiB (the generator's own
  peak is measured separately and shown; it is far below tfaudit's).
* Redaction cost: the same run with 0, 10 and 100 secret environment variables registered.

    .venv/bin/python bench/bench_stream.py [--smoke]
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_redact import secret_env, trace_text
from bench.common import (
    BenchError,
    Figure,
    Usage,
    at_least,
    at_most,
    bench_env,
    bench_main,
    median,
    tfaudit_cmd,
    timed,
    timed_rusage,
)
from tfaudit_ci.record import parse_iso

BENCH = "3. streaming"
MIB = 1024 * 1024
THROUGHPUT_SHARE = 0.50
RSS_LIMIT_MB = 80.0
RSS_FLAT_MB = 10.0  # "flat": 1 GiB may use at most this much more than 100 MiB

# Writes argv[2] MiB to stdout by repeating the block file argv[1]; tiny and fast itself.
GENERATOR = """
import sys
block = open(sys.argv[1], "rb").read()
remaining = int(sys.argv[2]) * 1048576
out = sys.stdout.buffer
while remaining > 0:
    piece = block[:remaining]
    out.write(piece)
    remaining -= len(piece)
out.flush()
"""


@dataclass(frozen=True)
class StreamParams:
    big_mib: int = 1024
    small_mib: int = 100
    runs: int = 5
    secret_counts: tuple[int, ...] = (10, 100)  # 0 is the plain small run
    block_mib: int = 8


FULL = StreamParams()
SMOKE = StreamParams(big_mib=3, small_mib=1, runs=1, secret_counts=(10,), block_mib=1)


@dataclass(frozen=True)
class WrappedRun:
    stream_seconds: float
    total_seconds: float
    max_rss_mb: float


class StreamBench:
    def __init__(self, params: StreamParams, work: Path) -> None:
        self.params = params
        self.work = work
        self.env = bench_env(work)
        self.block = work / "trace-block.txt"
        self.block.write_bytes(trace_text(params.block_mib * MIB))
        self.generator = work / "generate.py"
        self.generator.write_text(GENERATOR, encoding="utf-8")
        self.sink = work / "sink"
        self.store = work / "store"
        self.count = 0

    def gen_argv(self, mib: int) -> list[str]:
        return [sys.executable, str(self.generator), str(self.block), str(mib)]

    def shell_copy(self, tool: str, mib: int) -> float:
        """Seconds for ``generator | tool`` into a file (``tee`` also copies to /dev/null)."""
        gen = " ".join(self.gen_argv(mib))
        script = (
            f"{gen} | tee {self.sink} >/dev/null" if tool == "tee" else f"{gen} | cat >{self.sink}"
        )
        seconds, _ = timed(["bash", "-o", "pipefail", "-c", script], env=self.env, cwd=self.work)
        if self.sink.stat().st_size != mib * MIB:
            raise BenchError(f"{tool} copied {self.sink.stat().st_size} bytes, not {mib} MiB")
        self.sink.unlink()
        return seconds

    def wrapped(self, mib: int, secrets: int = 0) -> WrappedRun:
        self.count += 1
        stream = f"bench/stream-{self.count}"
        env = {**self.env, **secret_env(secrets)}
        argv = [
            *tfaudit_cmd(),
            "run",
            "--store",
            self.store.as_uri(),
            "--on-unlocked",
            "warn",
            "--stream",
            stream,
            "--",
            *self.gen_argv(mib),
        ]
        usage: Usage = timed_rusage(argv, env=env, cwd=self.work)
        record = json.loads((self.store / stream / "chain" / "000000000000.json").read_bytes())
        log = next(a for a in record["artifacts"] if a["name"] == "output.log")
        if log["size"] != mib * MIB or record["redactions"]:
            raise BenchError(
                f"the spooled log changed: {log['size']} bytes, {record['redactions']}"
            )
        spooled = parse_iso(record["finished_at"]) - parse_iso(record["started_at"])
        # Each run ships a copy of its log: drop them so 5 x 1 GiB do not pile up on disk.
        shutil.rmtree(self.store / stream)
        shutil.rmtree(self.env["TFAUDIT_WORK_DIR"], ignore_errors=True)
        return WrappedRun(spooled.total_seconds(), usage.seconds, usage.max_rss_kib / 1024)

    def generator_rss_mb(self, mib: int) -> float:
        return timed_rusage(self.gen_argv(mib), env=self.env, cwd=self.work).max_rss_kib / 1024


def run(params: StreamParams, work: Path) -> list[Figure]:
    work.mkdir(parents=True, exist_ok=True)
    bench = StreamBench(params, work)
    runs = params.runs
    big, small = params.big_mib, params.small_mib
    bench.wrapped(small)  # warm-up: page cache, imports, store directory
    tee_s: list[float] = []
    cat_s: list[float] = []
    big_runs: list[WrappedRun] = []
    for _ in range(runs):
        tee_s.append(bench.shell_copy("tee", big))
        cat_s.append(bench.shell_copy("cat", big))
        big_runs.append(bench.wrapped(big))
    small_runs = [bench.wrapped(small) for _ in range(runs)]
    secret_runs = {
        count: [bench.wrapped(small, count) for _ in range(runs)] for count in params.secret_counts
    }
    generator_mb = bench.generator_rss_mb(big)

    big_mb = big * MIB / 1e6
    tee_rate = big_mb / median(tee_s)
    cat_rate = big_mb / median(cat_s)
    ratios = [
        (big_mb / run.stream_seconds) / (big_mb / tee)
        for run, tee in zip(big_runs, tee_s, strict=True)
    ]
    rate = big_mb / median([r.stream_seconds for r in big_runs])
    end_to_end = big_mb / median([r.total_seconds for r in big_runs])
    share = median(ratios)
    rss_big = median([r.max_rss_mb for r in big_runs])
    rss_small = median([r.max_rss_mb for r in small_runs])
    figures = [
        Figure(
            BENCH,
            f"throughput through `tfaudit run`, {big} MiB, vs `tee` to a file",
            share,
            "x",
            runs,
            bracket=f"≥ {THROUGHPUT_SHARE:.2f}",
            met=at_least(share, THROUGHPUT_SHARE),
            detail=(
                f"tfaudit {rate:.0f} MB/s while streaming ({end_to_end:.0f} MB/s end to end "
                f"incl. shipping to the file store); tee {tee_rate:.0f} MB/s, cat "
                f"{cat_rate:.0f} MB/s"
            ),
        ),
        Figure(
            BENCH,
            f"peak RSS at {big} MiB",
            rss_big,
            "MiB",
            runs,
            bracket=f"≤ {RSS_LIMIT_MB:.0f} MB",
            met=at_most(rss_big, RSS_LIMIT_MB),
            detail=(
                "wait4 ru_maxrss of the process tree; the generator alone peaks at "
                f"{generator_mb:.0f} MiB"
            ),
        ),
        Figure(
            BENCH,
            f"peak RSS growth {small} MiB -> {big} MiB",
            rss_big - rss_small,
            "MiB",
            runs,
            bracket=f"≤ {RSS_FLAT_MB:.0f} MB (flat)",
            met=at_most(rss_big - rss_small, RSS_FLAT_MB) and at_most(rss_small, RSS_LIMIT_MB),
            detail=f"{rss_small:.1f} MiB at {small} MiB, {rss_big:.1f} MiB at {big} MiB",
        ),
    ]
    base_rate = small * MIB / 1e6 / median([r.stream_seconds for r in small_runs])
    figures.append(
        Figure(
            BENCH,
            f"redaction: 0 secrets, {small} MiB",
            base_rate,
            "MB/s",
            runs,
            detail="streaming throughput with only the built-in token shapes",
        )
    )
    for count, secret_list in secret_runs.items():
        with_secrets = small * MIB / 1e6 / median([r.stream_seconds for r in secret_list])
        figures.append(
            Figure(
                BENCH,
                f"redaction: {count} secrets, {small} MiB",
                with_secrets,
                "MB/s",
                runs,
                detail=f"{with_secrets / base_rate:.2f}x the 0-secret throughput",
            )
        )
    return figures


def main() -> None:
    bench_main(__doc__, run, SMOKE, FULL)


if __name__ == "__main__":
    main()
