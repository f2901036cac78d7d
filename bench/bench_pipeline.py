"""Benchmark 2: the seed pipeline side by side with tfaudit.

The widely recommended ``terraform plan | aws s3 cp - s3://bucket/key`` (awscli from PyPI)
against ``tfaudit run -- terraform plan`` (preflight, redaction, lock headers, chain, read-back),
both against the same Object Lock bucket on the same moto server, alternating in each round.
The pipeline does none of the checks; it is the cost floor users compare against.

    .venv/bin/python bench/bench_pipeline.py [--smoke]
"""

from __future__ import annotations

import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_overhead import newest_terraform
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
from devkit.servers import S3Server, make_lock_bucket, start_moto, unique_bucket
from devkit.tfhelpers import tf_init, write_null_config

BENCH = "2. seed pipeline"


@dataclass(frozen=True)
class PipelineParams:
    resources: int = 300
    runs: int = 5


FULL = PipelineParams()
SMOKE = PipelineParams(resources=2, runs=1)


def aws_cli() -> Path:
    found = Path(sys.executable).parent / "aws"
    if found.is_file():
        return found
    on_path = shutil.which("aws")
    if on_path is None:
        raise BenchError("the aws CLI is not installed: pip install awscli")
    return Path(on_path)


def run(params: PipelineParams, work: Path, server: S3Server | None = None) -> list[Figure]:
    own_server = server is None
    if server is None:
        server = start_moto(work / "moto")
    try:
        return _compare(params, server, work)
    finally:
        if own_server:
            server.stop()


def _compare(params: PipelineParams, server: S3Server, work: Path) -> list[Figure]:
    version, terraform = newest_terraform()
    env = {**bench_env(work), **server.env()}
    bucket = unique_bucket("bench-pipeline")
    make_lock_bucket(server.client(), bucket)
    config_dir = work / "tf"
    write_null_config(config_dir, count=params.resources)
    tf_init(terraform, config_dir, env)
    plan = [str(terraform), "plan", "-input=false", "-no-color"]
    wrapped = [
        *tfaudit_cmd(),
        "run",
        "--store",
        f"s3://{bucket}/audit",
        "--stream",
        "bench/pipeline",
        "--",
        *plan,
    ]

    def pipeline(index: int) -> list[str]:
        # pipefail: a failing plan must fail the pipeline, as in a careful CI script.
        script = (
            f"{shlex.join(plan)} | {shlex.quote(str(aws_cli()))} s3 cp --only-show-errors - "
            f"s3://{bucket}/pipeline/plan-{index}.log"
        )
        return ["bash", "-o", "pipefail", "-c", script]

    timed(pipeline(0), env=env, cwd=config_dir)  # warm-up
    timed(wrapped, env=env, cwd=config_dir)
    pipe_times: list[float] = []
    tfaudit_times: list[float] = []
    ratios: list[float] = []
    for index in range(1, params.runs + 1):
        pipe_s, _ = timed(pipeline(index), env=env, cwd=config_dir)
        tfaudit_s, _ = timed(wrapped, env=env, cwd=config_dir)
        pipe_times.append(pipe_s)
        tfaudit_times.append(tfaudit_s)
        ratios.append(tfaudit_s / pipe_s)
    uploaded = server.client().get_object(Bucket=bucket, Key=f"pipeline/plan-{params.runs}.log")
    if not uploaded["Body"].read():
        raise BenchError("the pipeline uploaded an empty log")
    ratio = median(ratios)
    return [
        Figure(
            BENCH,
            "`tfaudit run -- terraform plan` / `terraform plan | aws s3 cp -`",
            ratio,
            "x",
            params.runs,
            bracket="≤ 1.00",
            met=at_most(ratio, 1.0),
            detail=(
                f"terraform {version}, {params.resources} null_resources; pipeline "
                f"{median(pipe_times):.2f} s, tfaudit {median(tfaudit_times):.2f} s; "
                "same moto server and Object Lock bucket"
            ),
        )
    ]


def main() -> None:
    bench_main(__doc__, run, SMOKE, FULL)


if __name__ == "__main__":
    main()
