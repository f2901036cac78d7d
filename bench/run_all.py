"""Run every benchmark (``make bench``) and print the results table.

    .venv/bin/python bench/run_all.py [--smoke] [--update-readme]
        [--only overhead,pipeline,stream,chain,verify,farslot,redact,read,setup]

Writes ``bench/results/latest.md`` and ``latest.json``; ``--update-readme`` also replaces the
table in ``bench/README.md``. A benchmark that cannot run (e.g. ``tfaudit verify`` missing from
the build) is reported as not measured, and the exit code is 1. Takes about 10 minutes on a
2-core machine (budget: 15).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import (
    bench_chain,
    bench_far_slot,
    bench_overhead,
    bench_pipeline,
    bench_read,
    bench_redact,
    bench_setup,
    bench_stream,
    bench_verify,
)
from bench.common import BenchError, Figure, figures_json, machine_info, markdown_table
from devkit.servers import S3Server, start_moto
from devkit.tfhelpers import terraform_binaries

BENCH_DIR = Path(__file__).resolve().parent
README = BENCH_DIR / "README.md"
START_MARK = "<!-- results:start -->"
END_MARK = "<!-- results:end -->"
NAMES = (
    "overhead",
    "pipeline",
    "stream",
    "chain",
    "verify",
    "farslot",
    "redact",
    "read",
    "setup",
)
# `make bench` (15-minute budget): all but setup, which builds the image (--only setup).
DEFAULT_NAMES = NAMES[:-1]

Runner = Callable[[Path, S3Server, bool], list[Figure]]


def _overhead(work: Path, server: S3Server, smoke: bool) -> list[Figure]:
    params = bench_overhead.SMOKE if smoke else bench_overhead.FULL
    return bench_overhead.run(params, work, server)


def _pipeline(work: Path, server: S3Server, smoke: bool) -> list[Figure]:
    params = bench_pipeline.SMOKE if smoke else bench_pipeline.FULL
    return bench_pipeline.run(params, work, server)


def _stream(work: Path, server: S3Server, smoke: bool) -> list[Figure]:
    del server
    return bench_stream.run(bench_stream.SMOKE if smoke else bench_stream.FULL, work)


def _chain(work: Path, server: S3Server, smoke: bool) -> list[Figure]:
    del server
    return bench_chain.run(bench_chain.SMOKE if smoke else bench_chain.FULL, work)


def _verify(work: Path, server: S3Server, smoke: bool) -> list[Figure]:
    del server
    return bench_verify.run(bench_verify.SMOKE if smoke else bench_verify.FULL, work)


def _far_slot(work: Path, server: S3Server, smoke: bool) -> list[Figure]:
    del server
    return bench_far_slot.run(bench_far_slot.SMOKE if smoke else bench_far_slot.FULL, work)


def _redact(work: Path, server: S3Server, smoke: bool) -> list[Figure]:
    del server
    return bench_redact.run(bench_redact.SMOKE if smoke else bench_redact.FULL, work)


def _read(work: Path, server: S3Server, smoke: bool) -> list[Figure]:
    del server
    return bench_read.run(bench_read.SMOKE if smoke else bench_read.FULL, work)


def _setup(work: Path, server: S3Server, smoke: bool) -> list[Figure]:
    del server
    return bench_setup.run_standalone(bench_setup.SMOKE if smoke else bench_setup.FULL, work)


RUNNERS: dict[str, tuple[str, Runner]] = {
    "overhead": (bench_overhead.BENCH, _overhead),
    "pipeline": (bench_pipeline.BENCH, _pipeline),
    "stream": (bench_stream.BENCH, _stream),
    "chain": (bench_chain.BENCH, _chain),
    "verify": (bench_verify.BENCH, _verify),
    "farslot": (bench_far_slot.BENCH, _far_slot),
    "redact": (bench_redact.BENCH, _redact),
    "read": (bench_read.BENCH, _read),
    "setup": (bench_setup.BENCH, _setup),
}


def not_measured(bench: str, reason: str) -> Figure:
    return Figure(bench, "not measured", float("nan"), "", 0, detail=reason.replace("\n", " "))


def run_all(names: list[str], smoke: bool, work: Path) -> tuple[list[Figure], bool]:
    figures: list[Figure] = []
    ok = True
    server = start_moto(work / "moto")  # one moto process for overhead and pipeline
    try:
        for name in names:
            bench, runner = RUNNERS[name]
            started = time.monotonic()
            print(f"-- {name} ...", file=sys.stderr, flush=True)
            try:
                found = runner(work / name, server, smoke)
            except BenchError as exc:
                ok = False
                found = [not_measured(bench, str(exc)[:300])]
            except Exception as exc:
                ok = False
                traceback.print_exc()
                found = [not_measured(bench, f"{type(exc).__name__}: {exc}"[:300])]
            print(f"   {name}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
            figures += found
    finally:
        server.stop()
    return figures, ok


def render(figures: list[Figure], info: dict[str, str], elapsed: float) -> str:
    lines = [f"- **{key}**: {value}" for key, value in info.items()]
    lines.append(f"- **bench wall time**: {elapsed / 60:.1f} min")
    return "\n".join(lines) + "\n\n" + markdown_table(figures) + "\n"


def update_readme(block: str) -> None:
    text = README.read_text(encoding="utf-8")
    start, end = text.index(START_MARK) + len(START_MARK), text.index(END_MARK)
    README.write_text(text[:start] + "\n" + block + text[end:], encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run each")
    parser.add_argument(
        "--only", default=",".join(DEFAULT_NAMES), help=f"comma-separated subset of {NAMES}"
    )
    parser.add_argument("--update-readme", action="store_true", help="rewrite the README table")
    args = parser.parse_args()
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(names) - set(NAMES))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    info = machine_info([version for version, _ in terraform_binaries()])
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tfaudit-bench-") as tmp:
        figures, ok = run_all(names, args.smoke, Path(tmp))
    block = render(figures, info, time.monotonic() - started)
    print(block)
    results = BENCH_DIR / "results"
    results.mkdir(exist_ok=True)
    (results / "latest.md").write_text(block, encoding="utf-8")
    (results / "latest.json").write_text(figures_json(figures, info) + "\n", encoding="utf-8")
    if args.update_readme:
        update_readme(block)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
