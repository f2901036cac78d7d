"""Benchmark 1: what wrapping costs.

* ``tfaudit run -- terraform plan`` against bare ``terraform plan`` on 300 null_resources, with
  the S3 store on a local moto server (preflight, upload, read-back and chain append included).
  The two sides alternate within each round; the figure is the median of per-round ratios.
* The same on a realistic plan: the ``hashicorp/aws`` provider (the machine's filesystem
  mirror) refreshing ~50 resources it created in moto. Skipped, saying so loudly, without
  the mirror.
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
from devkit.aws_mirror import AWS_PROVIDER_VERSION, MIRROR_ENV, aws_cli_config, aws_mirror
from devkit.servers import S3Server, make_lock_bucket, start_moto, unique_bucket
from devkit.tfhelpers import terraform_binaries, tf_init, write_null_config

BENCH = "1. wrapper overhead"
RATIO_LIMIT = 1.30
REALISTIC_LIMIT = 1.05
VERSION_LIMIT_MS = 150.0
FIXED_COST_LIMIT_MS = 200.0
# One of each per group: ~50 resources the aws provider refreshes against moto in a plan.
REALISTIC_KINDS = (
    ('aws_s3_bucket', 'bucket = "bench-realistic-${count.index}"'),
    ('aws_sqs_queue', 'name = "bench-realistic-${count.index}"'),
    ('aws_sns_topic', 'name = "bench-realistic-${count.index}"'),
    ('aws_iam_role', 'name = "bench-realistic-${count.index}"\n  assume_role_policy = '
     'jsonencode({Version = "2012-10-17", Statement = [{Effect = "Allow", Action = '
     '"sts:AssumeRole", Principal = {Service = "ec2.amazonaws.com"}}]})'),
    ('aws_ssm_parameter', 'name = "/bench/realistic/${count.index}"\n  type = "String"\n'
     '  value = "v${count.index}"'),
)  # fmt: skip


@dataclass(frozen=True)
class OverheadParams:
    resources: int = 300
    runs: int = 5
    startup_runs: int = 15
    with_plan_out: bool = True  # also compare `plan -out=tfplan` (adds show -json capture)
    realistic_per_kind: int = 10  # x 5 kinds of aws resources
    # The aws provider alone takes ~15 s of CPU to start and load its schema: 3 rounds.
    # 0: not measured (the smoke run, which would spend minutes starting the provider).
    realistic_runs: int = 3


FULL = OverheadParams()
SMOKE = OverheadParams(resources=2, runs=1, startup_runs=1, with_plan_out=False, realistic_runs=0)


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
                    "S3 on moto, upload + read-back + chain; plan runs beside preflight"
                    + (
                        "; wrapped also runs `show -json` and uploads plan.json"
                        if not headline
                        else ""
                    )
                ),
            )
        )
    return figures


def _aws_provider(endpoint: str) -> str:
    endpoints = "".join(
        f'    {name} = "{endpoint}"\n' for name in ("s3", "sqs", "sns", "iam", "ssm")
    )
    return (
        "terraform {\n  required_providers {\n"
        f'    aws = {{ source = "hashicorp/aws", version = "{AWS_PROVIDER_VERSION}" }}\n'
        "  }\n}\n"
        'provider "aws" {\n  region = "us-east-1"\n'
        '  access_key = "testing"\n  secret_key = "testing"\n'
        "  skip_credentials_validation = true\n  skip_requesting_account_id = true\n"
        "  skip_metadata_api_check = true\n  s3_use_path_style = true\n"
        f"  endpoints {{\n{endpoints}  }}\n}}\n"
    )


def _realistic_config(directory: Path, endpoint: str, per_kind: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    resources = "".join(
        f'resource "{kind}" "r" {{\n  count = {per_kind}\n  {body}\n}}\n'
        for kind, body in REALISTIC_KINDS
    )
    (directory / "main.tf").write_text(_aws_provider(endpoint) + resources, encoding="utf-8")


def realistic_plan(params: OverheadParams, server: S3Server, work: Path) -> list[Figure]:
    """`run -- terraform plan` / bare with the aws provider refreshing what it created."""
    if not params.realistic_runs:
        return []
    mirror = aws_mirror()
    if mirror is None:
        print(
            f"SKIPPED: the realistic-plan row was NOT measured: hashicorp/aws "
            f"{AWS_PROVIDER_VERSION} is not on this machine as a filesystem mirror "
            f"(set {MIRROR_ENV}=<the folder holding registry.terraform.io>)",
            file=sys.stderr,
        )
        return []
    version, terraform = newest_terraform()
    env = {**bench_env(work), **server.env()}
    env["TF_CLI_CONFIG_FILE"] = str(aws_cli_config(work, mirror))
    bucket = unique_bucket("bench-realistic")
    make_lock_bucket(server.client(), bucket)
    config_dir = work / "tf"
    _realistic_config(config_dir, server.endpoint, params.realistic_per_kind)
    tf_init(terraform, config_dir, env, plugin_dir=mirror)
    timed(
        [str(terraform), "apply", "-auto-approve", "-input=false", "-no-color"],
        env=env,
        cwd=config_dir,
    )
    count = params.realistic_per_kind * len(REALISTIC_KINDS)
    bare = [str(terraform), "plan", "-input=false", "-no-color"]
    store = ["--store", f"s3://{bucket}/audit", "--stream", "bench/realistic"]
    wrapped = [*tfaudit_cmd(), "run", *store, "--", *bare]
    bare_times, wrapped_times, ratios = _ratio_rounds(
        bare, wrapped, env=env, cwd=config_dir, runs=params.realistic_runs
    )
    ratio = median(ratios)
    return [
        Figure(
            BENCH,
            f"`tfaudit run -- terraform plan` / bare, hashicorp/aws refreshing {count} "
            "resources in moto",
            ratio,
            "x",
            params.realistic_runs,
            bracket=f"≤ {REALISTIC_LIMIT:.2f}",
            met=at_most(ratio, REALISTIC_LIMIT),
            detail=(
                f"terraform {version}, hashicorp/aws {AWS_PROVIDER_VERSION} (filesystem mirror); "
                f"bare {median(bare_times):.2f} s, wrapped {median(wrapped_times):.2f} s "
                f"(+{median(wrapped_times) - median(bare_times):.2f} s); S3 bucket, SQS queue, "
                "SNS topic, IAM role, SSM parameter x "
                f"{params.realistic_per_kind}, applied first, then refreshed by each plan"
            ),
        )
    ]


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
            bracket=f"≤ {FIXED_COST_LIMIT_MS:.0f} ms",
            met=at_most(s3_s * 1000, FIXED_COST_LIMIT_MS),
            detail="adds botocore, preflight, upload, read-back; `true` is not read-only, so "
            "preflight comes first: the floor of a strict (apply) run",
        ),
    ]


def run(params: OverheadParams, work: Path, server: S3Server | None = None) -> list[Figure]:
    own_server = server is None
    if server is None:
        server = start_moto(work / "moto")
    try:
        return (
            startup(params, server, work / "startup")
            + wrapper_overhead(params, server, work / "overhead")
            + realistic_plan(params, server, work / "realistic")
        )
    finally:
        if own_server:
            server.stop()


def main() -> None:
    bench_main(__doc__, run, SMOKE, FULL)


if __name__ == "__main__":
    main()
