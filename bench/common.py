"""Shared pieces of the benchmarks: figures with their brackets, timed processes, environment.

Every comparison is made inside one run (alternating the two sides), because the benchmark
machines are small and shared: a ratio measured side by side means more than a lone time.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `python bench/run_all.py` puts bench/, not the repo, first
    sys.path.insert(0, str(REPO_ROOT))

from devkit.tfhelpers import isolated_env  # noqa: E402

P = TypeVar("P")  # a benchmark's parameter set


class BenchError(RuntimeError):
    """A benchmarked command failed: the figure would be meaningless."""


@dataclass(frozen=True)
class Figure:
    """One result line: a median over ``runs`` runs and whether it meets its bracket."""

    bench: str
    metric: str
    value: float
    unit: str
    runs: int
    bracket: str | None = None
    met: bool | None = None
    detail: str = ""

    def status(self) -> str:
        if self.met is None:
            return "—"
        return "met" if self.met else "**missed**"

    def shown_value(self) -> str:
        if math.isnan(self.value):
            return "—"
        if self.unit == "x":
            return f"{self.value:.2f}x"
        if abs(self.value) >= 100 or self.value == int(self.value):
            return f"{self.value:,.0f} {self.unit}"
        return f"{self.value:.2f} {self.unit}"


def at_most(value: float, limit: float) -> bool:
    return value <= limit


def at_least(value: float, limit: float) -> bool:
    return value >= limit


def median(values: Sequence[float]) -> float:
    if not values:
        raise BenchError("no measurements")
    return float(statistics.median(values))


def tfaudit_cmd() -> list[str]:
    """The ``tfaudit`` console script next to this interpreter, as CI runs it."""
    script = Path(sys.executable).parent / "tfaudit"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "tfaudit_ci"]


def bench_env(tmp: Path) -> dict[str, str]:
    """An isolated environment (no CI variables, no ~/.terraformrc, fake AWS credentials)
    with this virtualenv's bin directory first on PATH (tfaudit, aws)."""
    env = isolated_env(tmp)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["TFAUDIT_WORK_DIR"] = str(tmp / "spools")
    return env


def timed(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    timeout: float = 900,
    stdout: int | None = subprocess.DEVNULL,
) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    """Run ``argv`` to completion; wall seconds and the result. A failure raises BenchError."""
    started = time.perf_counter()
    done = subprocess.run(
        list(argv),
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.PIPE,
        timeout=timeout,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchError(
            f"{' '.join(argv[:6])} ... exited {done.returncode}: "
            f"{done.stderr.decode('utf-8', 'replace')[-1500:]}"
        )
    return elapsed, done


@dataclass(frozen=True)
class Usage:
    seconds: float
    max_rss_kib: int  # the process's peak RSS, or a descendant's if that was higher


# A fresh, tiny interpreter starts the measured command and reports wait4()'s ru_maxrss.
# Not done from this process: a child's ru_maxrss starts at its parent's peak RSS (the
# fork/vfork image counts until exec), and the benchmark process itself can be large.
_RSS_HARNESS = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""


def timed_rusage(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, timeout: float = 900
) -> Usage:
    """Like :func:`timed` (stdout discarded), plus the peak RSS of the command's process tree."""
    report = cwd / ".rusage"
    harness = [sys.executable, "-I", "-S", "-c", _RSS_HARNESS, str(report), *argv]
    started = time.perf_counter()
    done = subprocess.run(
        harness,
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=timeout,
        check=False,
    )
    elapsed = time.perf_counter() - started
    code, max_rss = (int(item) for item in report.read_text().split())
    report.unlink()
    if done.returncode != 0 or code != 0:
        raise BenchError(
            f"{' '.join(argv[:6])} ... exited {code}: "
            f"{done.stderr.decode('utf-8', 'replace')[-1500:]}"
        )
    return Usage(elapsed, max_rss)


def last_json(stdout: bytes) -> dict[str, Any]:
    """The ``--json`` document tfaudit prints last on stdout."""
    text = stdout.decode("utf-8", "replace")
    start = text.rfind("\n{\n")
    start = 0 if start < 0 else start + 1
    data: dict[str, Any] = json.loads(text[start:])
    return data


def _version_of(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def machine_info(terraform_versions: Sequence[str] = ()) -> dict[str, str]:
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{_cpu_model()}, {os.cpu_count()} CPUs, {_memory_gib():.0f} GiB RAM",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "terraform": ", ".join(terraform_versions) or "n/a",
        "tfaudit-ci": _version_of("tfaudit-ci"),
        "boto3": _version_of("boto3"),
        "botocore": _version_of("botocore"),
        "moto": _version_of("moto"),
        "awscli": _version_of("awscli"),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def markdown_table(figures: Sequence[Figure]) -> str:
    lines = [
        "| benchmark | figure | median | runs | bracket | status | details |",
        "|---|---|---|---|---|---|---|",
    ]
    for fig in figures:
        cells = [fig.bench, fig.metric, fig.shown_value(), str(fig.runs), fig.bracket or "—"]
        cells += [fig.status(), fig.detail]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def figures_json(figures: Sequence[Figure], info: Mapping[str, str]) -> str:
    return json.dumps(
        {"machine": dict(info), "figures": [asdict(f) for f in figures]}, indent=2, sort_keys=True
    )


def bench_main(doc: str | None, run: Callable[[P, Path], list[Figure]], smoke: P, full: P) -> None:
    """The command line every benchmark module shares: ``[--smoke]``, a table on stdout."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tfaudit-bench-") as tmp:
        print(markdown_table(run(smoke if args.smoke else full, Path(tmp))))
