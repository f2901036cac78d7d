"""Benchmark 1: what wrapping costs.

* ``tfaudit run -- terraform plan`` against bare ``terraform plan`` on 300 null_resources, with
  the S3 store on a local moto server (preflight, upload, read-back and chain append included).
  The two sides alternate within each round; the figure is the median of per-round ratios.
* Startup: ``tfaudit --version``, and the fixed cost of ``tfaudit run -- true`` on the file
  store and on the S3 store.

    .venv/bin/python bench/bench_overhead.py [--smoke]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Figure,
    at_most,
    bench_env,
    bench_main,
    median,
    tfaudit_cmd,
    timed,
)
from devkit.servers import S3Server, make_lock_bucket, start_moto, unique_bucket
from devkit.tfhelpers import terraform_binaries, tf_init, write_null_config

BENCH = "1. wrapper overhead"
RATIO_LIMIT = 1.10
VERSION_LIMIT_MS = 150.0


@dataclass(frozen=True)
class OverheadParams:
    resources: int = 300
    runs: int = 5
    startup_runs: int = 15
    with_plan_out: bool = True  # also compare `plan -out=tfplan` (adds show -json capture)


FULL = OverheadParams()
SMOKE = OverheadParams(resources=2, runs=1, startup_runs=1, with_plan_out=False)


def newest_terraform() -> tuple[str, Path]:
    """The newest terraform available offline (PATH's when newer than the pinned 1.0.3)."""
    return terraform_binaries()[-1]


def _ratio_rounds(
    bare: list[str], wrapped: list[str], *, env: dict[str, str], cwd: Path, runs: int
) -> tuple[list[float], list[float], list[float]]:
    """Alternate bare and wrapped runs; per-round times and ratios (after one warm-up each)."""
    timed(bare, env=env, cwd=cwd)
    timed(wrapped, env=env, cwd=cwd)
    bare_times: list[float] = []
    wrapped_times: list[float] = []
    ratios: list[float] = []
    for _ in range(runs):
        bare_s, _ = timed(bare, env=env, cwd=cwd)
        wrapped_s, _ = timed(wrapped, env=env, cwd=cwd)
        bare_times.append(bare_s)
        wrapped_times.append(wrapped_s)
        ratios.append(wrapped_s / bare_s)
    return bare_times, wrapped_times, ratios


def wrapper_overhead(params: OverheadParams, server: S3Server, work: Path) -> list[Figure]:
    version, terraform = newest_terraform()
    env = {**bench_env(work), **server.env()}
    bucket = unique_bucket("bench-overhead")
    make_lock_bucket(server.client(), bucket)
    config_dir = work / "tf"
    write_null_config(config_dir, count=params.resources)
    tf_init(terraform, config_dir, env)
    store = ["--store", f"s3://{bucket}/audit", "--stream", "bench/overhead"]
    figures: list[Figure] = []

    variants: list[tuple[str, list[str]]] = [("plan", ["plan", "-input=false", "-no-color"])]
    if params.with_plan_out:
        variants.append(("plan -out=tfplan", ["plan", "-input=false", "-no-color", "-out=tfplan"]))
    for label, tf_args in variants:
        bare = [str(terraform), *tf_args]
        wrapped = [*tfaudit_cmd(), "run", *store, "--", *bare]
        bare_times, wrapped_times, ratios = _ratio_rounds(
            bare, wrapped, env=env, cwd=config_dir, runs=params.runs
        )
        ratio = median(ratios)
        headline = label == "plan"
        figures.append(
            Figure(
                BENCH,
                f"`tfaudit run -- terraform {label}` / bare, {params.resources} null_resources",
                ratio,
                "x",
                params.runs,
                bracket=f"≤ {RATIO_LIMIT:.2f}" if headline else None,
                met=at_most(ratio, RATIO_LIMIT) if headline else None,
                detail=(
                    f"terraform {version}; bare {median(bare_times):.2f} s, wrapped "
                    f"{median(wrapped_times):.2f} s "
                    f"(+{median(wrapped_times) - median(bare_times):.2f} s); "
                    "S3 on moto, upload + read-back + chain"
                    + (
                        "; wrapped also runs `show -json` and uploads plan.json"
                        if not headline
                        else ""
                    )
                ),
            )
        )
    return figures


def startup(params: OverheadParams, server: S3Server, work: Path) -> list[Figure]:
    env = {**bench_env(work), **server.env()}
    bucket = unique_bucket("bench-startup")
    make_lock_bucket(server.client(), bucket)
    runs = params.startup_runs
    python_s = median(
        [timed([sys.executable, "-c", "pass"], env=env, cwd=work)[0] for _ in range(runs)]
    )
    version_s = median(
        [timed([*tfaudit_cmd(), "--version"], env=env, cwd=work)[0] for _ in range(runs)]
    )
    file_run = [
        *tfaudit_cmd(),
        "run",
        "--store",
        (work / "file-store").as_uri(),
        "--on-unlocked",
        "warn",
        "--stream",
        "bench/startup",
        "--",
        "true",
    ]
    s3_run = [
        *tfaudit_cmd(),
        "run",
        "--store",
        f"s3://{bucket}/audit",
        "--stream",
        "bench/startup",
        "--",
        "true",
    ]
    timed(file_run, env=env, cwd=work)  # warm-up (creates the store directory)
    file_s = median([timed(file_run, env=env, cwd=work)[0] for _ in range(params.runs)])
    timed(s3_run, env=env, cwd=work)
    s3_s = median([timed(s3_run, env=env, cwd=work)[0] for _ in range(params.runs)])
    version_ms = version_s * 1000
    return [
        Figure(
            BENCH,
            "startup: `tfaudit --version`",
            version_ms,
            "ms",
            runs,
            bracket=f"≤ {VERSION_LIMIT_MS:.0f} ms",
            met=at_most(version_ms, VERSION_LIMIT_MS),
            detail=f"`python -c pass` takes {python_s * 1000:.0f} ms on the same machine",
        ),
        Figure(
            BENCH,
            "startup: `tfaudit run -- true`, file store",
            file_s * 1000,
            "ms",
            params.runs,
            detail="whole run: config, redaction rules, spool, record, chain append",
        ),
        Figure(
            BENCH,
            "fixed cost: `tfaudit run -- true`, S3 store (moto)",
            s3_s * 1000,
            "ms",
            params.runs,
            detail="adds boto3, preflight, upload, read-back; this is the plan overhead's floor",
        ),
    ]


def run(params: OverheadParams, work: Path, server: S3Server | None = None) -> list[Figure]:
    own_server = server is None
    if server is None:
        server = start_moto(work / "moto")
    try:
        return startup(params, server, work / "startup") + wrapper_overhead(
            params, server, work / "overhead"
        )
    finally:
        if own_server:
            server.stop()


def main() -> None:
    bench_main(__doc__, run, SMOKE, FULL)


if __name__ == "__main__":
    main()
