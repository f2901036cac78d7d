"""Throughput of the streaming redactor on TF_LOG=trace-like text, and of the second pass.

    .venv/bin/python bench/bench_redact.py [--mb 200] [--secrets 0,10,100] [--tee]
    .venv/bin/python bench/bench_redact.py --second-pass [--smoke]

Prints MB/s for 0, 10 and 100 env secrets (64 KiB reads, as from a pipe), and with ``--tee``
the throughput of ``tee`` copying the same bytes from a pipe to a file, for comparison.

``--second-pass`` (benchmark 7, also run by ``run_all.py``): the cost of redacting a spooled
100 MiB log again with the strings a plan marks sensitive (``secondpass.redact_file``: read,
redact, write, hash, fsync, replace), for 10 and 1,000 sensitive values, next to a plain copy
of the same file.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import string
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BenchError, Figure, markdown_table, median
from tfaudit_ci.redact import RuleSet, Secret, StreamRedactor, build_rules, secret_rules
from tfaudit_ci.secondpass import SENSITIVE_RULE, redact_file

BENCH = "7. second pass"
MIB = 1024 * 1024

WORDS = (
    b"provider aws_s3_bucket ReadResource tf_req_id schema planned value attribute computed "
    b"null_resource diagnostics GetProviderSchema terraform hashicorp region us-east-1 bucket "
    b"tags arn:aws:s3:::example-bucket true false @module=sdk.proto tf_rpc=PlanResourceChange "
    b'"timeouts":null "force_destroy":false http.response.body="<ListBucketResult>"'
).split()


def trace_text(size: int, seed: int = 1) -> bytes:
    """Synthetic trace log: timestamps, levels, provider names, key=value noise, uuids."""
    rnd = random.Random(seed)
    lines: list[bytes] = []
    total = 0
    while total < size:
        stamp = b"2024-05-01T12:%02d:%02d.%03dZ" % (
            rnd.randrange(60),
            rnd.randrange(60),
            rnd.randrange(1000),
        )
        level = rnd.choice((b"[TRACE]", b"[DEBUG]", b"[INFO]"))
        body = b" ".join(
            rnd.choice(WORDS) + b"=" + rnd.choice(WORDS) for _ in range(rnd.randrange(3, 12))
        )
        line = b"%s %s provider.terraform-provider-aws_v5.31.0_x5: %s tf_req_id=%032x\n" % (
            stamp,
            level,
            body,
            rnd.getrandbits(128),
        )
        lines.append(line)
        total += len(line)
    return b"".join(lines)


def secret_env(count: int, seed: int = 7) -> dict[str, str]:
    rnd = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "+/-_"
    return {
        f"BENCH_{index}_TOKEN": "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(16, 48)))
        for index in range(count)
    }


def measure(data: bytes, repeats: int, secrets: int, read_size: int) -> tuple[float, int]:
    ruleset = build_rules(secret_env(secrets))
    redactor = StreamRedactor(ruleset)
    view = memoryview(data)
    written = 0
    started = time.perf_counter()
    for _ in range(repeats):
        for offset in range(0, len(data), read_size):
            written += len(redactor.feed(bytes(view[offset : offset + read_size])))
    written += len(redactor.flush())
    elapsed = time.perf_counter() - started
    assert written == len(data) * repeats, "trace text must not be redacted"
    return len(data) * repeats / elapsed / 1e6, len(ruleset.rules)


def measure_tee(data: bytes, repeats: int, read_size: int) -> float:
    tee = shutil.which("tee")
    if tee is None:
        return float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        target = os.path.join(tmp, "out")
        started = time.perf_counter()
        proc = subprocess.Popen([tee, target], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        assert proc.stdin is not None
        view = memoryview(data)
        for _ in range(repeats):
            for offset in range(0, len(data), read_size):
                proc.stdin.write(view[offset : offset + read_size])
        proc.stdin.close()
        proc.wait()
        elapsed = time.perf_counter() - started
    return len(data) * repeats / elapsed / 1e6


@dataclass(frozen=True)
class SecondPassParams:
    log_mib: int = 100
    runs: int = 5
    # (sensitive values, whether the log holds them): the log holds none of them in the common
    # case (terraform masks what it marks): a read-only scan, no rewrite.
    cases: tuple[tuple[int, bool], ...] = ((10, True), (1000, True), (1000, False))


FULL = SecondPassParams()
SMOKE = SecondPassParams(log_mib=2, runs=1, cases=((10, True),))


def _sensitive_values(count: int, seed: int = 11) -> list[str]:
    rnd = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "-_.!"
    return [
        "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(8, 40))) for _ in range(count)
    ]


def _write_log(path: Path, mib: int, values: list[str]) -> int:
    """A trace-like log of ``mib`` MiB with one of ``values`` in every MiB (none if ``values``
    is empty); returns how many were planted."""
    block = trace_text(MIB)[:MIB]
    with path.open("wb") as handle:
        for index in range(mib):
            value = values[index % len(values)].encode() if values else b"(sensitive value)"
            handle.write(block[: MIB // 2] + b' password = "' + value + b'"\n' + block[MIB // 2 :])
    return mib if values else 0


def run(params: SecondPassParams, work: Path) -> list[Figure]:
    """Median time of the second pass over a spooled log, per number of sensitive values."""
    work.mkdir(parents=True, exist_ok=True)
    figures = []
    for count, present in params.cases:
        values = _sensitive_values(count)
        master, log = work / f"master-{count}.log", work / "output.log"
        planted = _write_log(master, params.log_mib, values if present else [])
        started = time.perf_counter()
        ruleset = RuleSet(secret_rules([Secret(SENSITIVE_RULE, v, full=False) for v in values]))
        compiled = time.perf_counter() - started
        passes, copies, cpu = [], [], []
        for _ in range(params.runs):
            started = time.perf_counter()
            shutil.copyfile(master, log)
            with log.open("rb+") as handle:
                os.fsync(handle.fileno())
            copies.append(time.perf_counter() - started)
            started, started_cpu = time.perf_counter(), time.process_time()
            _, counts = redact_file(log, ruleset)
            passes.append(time.perf_counter() - started + compiled)
            cpu.append(time.process_time() - started_cpu)
            if counts[SENSITIVE_RULE] != planted:
                raise BenchError(f"expected {planted} redactions, got {dict(counts)}")
        seconds = median(passes)
        size = params.log_mib * MIB
        found = f"{planted} found and redacted (scan + rewrite)" if present else "none found"
        figures.append(
            Figure(
                BENCH,
                f"second pass, {params.log_mib} MiB log, {count:,} sensitive values, {found}",
                seconds,
                "s",
                params.runs,
                detail=f"{size / seconds / 1e6:.0f} MB/s incl. {compiled * 1000:.0f} ms to "
                f"compile the rules; {median(cpu):.2f} s of CPU; a plain copy of the file "
                f"(+ fsync) takes {median(copies):.2f} s",
            )
        )
        master.unlink()
        log.unlink()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=200, help="total megabytes per measurement")
    parser.add_argument("--secrets", default="0,10,100", help="comma-separated secret counts")
    parser.add_argument("--read-size", type=int, default=64 * 1024)
    parser.add_argument("--tee", action="store_true", help="also measure tee for comparison")
    parser.add_argument("--second-pass", action="store_true", help="benchmark 7 instead")
    parser.add_argument("--smoke", action="store_true", help="with --second-pass: tiny sizes")
    args = parser.parse_args()
    if args.second_pass:
        with tempfile.TemporaryDirectory(prefix="tfaudit-bench-") as tmp:
            print(markdown_table(run(SMOKE if args.smoke else FULL, Path(tmp))))
        return
    block = trace_text(20 * 1000 * 1000)
    repeats = max(1, round(args.mb * 1000 * 1000 / len(block)))
    print(f"{len(block) * repeats / 1e6:.0f} MB of trace-like text, {args.read_size} B reads")
    for count in (int(item) for item in args.secrets.split(",")):
        rate, rules = measure(block, repeats, count, args.read_size)
        print(f"  {count:4d} env secrets ({rules:3d} rules): {rate:7.0f} MB/s")
    if args.tee:
        rate = measure_tee(block, repeats, args.read_size)
        print(f"  tee (pipe -> file):             {rate:7.0f} MB/s")


if __name__ == "__main__":
    main()
