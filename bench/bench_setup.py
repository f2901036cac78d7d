"""Benchmark 6: how long the actions take to be ready, before any terraform runs.

* Host composite action, cold: a fresh runner with no cache: ``host/setup_env.py prepare``
  then ``install`` (the pinned uv's wheel fetched and hash-checked, a venv, tfaudit-ci from
  the action's source tree with its dependencies) into an empty RUNNER_TEMP with an empty uv
  cache. Full runs fetch from PyPI, as a runner does; ``--smoke`` runs offline from a local
  wheelhouse. tfaudit-ci's own extras are those an S3 store needs: none.
* Host composite action, warm: the venv an earlier job saved, restored (extracting the
  archive actions/cache would download: the same tar of the venv; the download itself from
  GitHub's cache service is not measured here), then ``prepare`` finding it ready.
* Docker action: building the image from the Dockerfile with no build cache (what
  ``image: Dockerfile`` costs every job) against loading the published image and starting it
  (what ``image: docker://…@sha256`` costs). No registry is reachable here: the "pull" is a
  ``docker load`` of the image as ``docker save`` wrote it, so the registry download is not
  included; the build reads its inputs from local servers, so the vendor and PyPI downloads it
  makes on GitHub are not included either. Both are lower bounds.

    .venv/bin/python bench/bench_setup.py [--smoke]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO_ROOT, BenchError, Figure, at_most, bench_main, median

BENCH = "6. setup"
COLD_LIMIT_S = 6.0
WARM_LIMIT_S = 1.0
SETUP = REPO_ROOT / "host" / "setup_env.py"


@dataclass(frozen=True)
class Params:
    runs: int
    offline: bool  # install from a local wheelhouse instead of PyPI
    image_runs: int  # 0: no Docker rows
    no_cache: bool  # build the image from scratch (the smoke run reuses the build cache)


SMOKE = Params(runs=1, offline=True, image_runs=1, no_cache=False)
FULL = Params(runs=5, offline=False, image_runs=2, no_cache=True)


def _setup(step: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(SETUP), step],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchError(f"setup_env.py {step} failed: {done.stdout[-800:]} {done.stderr[-800:]}")
    return elapsed


def _runner_env(temp: Path, wheelhouse: Path | None) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(temp / "home"),
        "RUNNER_TEMP": str(temp),
        "RUNNER_OS": "Linux",
        "RUNNER_ARCH": "X64",
        "TFAUDIT_STORE_URL": "s3://bucket/terraform",
        "GITHUB_OUTPUT": str(temp / "output"),
        "GITHUB_PATH": str(temp / "path"),
    }
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "HTTPS_PROXY", "https_proxy"):
        if name in os.environ:
            env[name] = os.environ[name]
    if wheelhouse is not None:
        env["TFAUDIT_WHEELHOUSE"] = str(wheelhouse)
    return env


def host_setup(params: Params, work: Path, wheelhouse: Path | None) -> list[Figure]:
    cold: list[float] = []
    warm: list[float] = []
    for round_ in range(params.runs):
        temp = work / f"runner-{round_}"
        (temp / "home").mkdir(parents=True)
        env = _runner_env(temp, wheelhouse if params.offline else None)
        cold.append(_setup("prepare", env) + _setup("install", env))
        venv = temp / "tfaudit-ci" / "venv"
        check = subprocess.run([str(venv / "bin" / "tfaudit"), "--version"], capture_output=True)
        if check.returncode != 0:
            raise BenchError("the installed venv does not run tfaudit")
        archive = work / f"cache-{round_}.tar"
        with tarfile.open(archive, "w") as tar:  # what actions/cache/save archives
            tar.add(venv, arcname=".")
        shutil.rmtree(temp)  # the next job's runner starts empty
        (temp / "home").mkdir(parents=True)
        started = time.perf_counter()
        venv.mkdir(parents=True)
        with tarfile.open(archive) as tar:
            tar.extractall(venv, filter="tar")
        warm.append(time.perf_counter() - started + _setup("prepare", env))
        if "ready=true" not in (temp / "output").read_text():
            raise BenchError("the restored venv was not recognised as ready")
        shutil.rmtree(temp)
    source = "a local wheelhouse (offline)" if params.offline else "PyPI"
    return [
        Figure(
            BENCH, "host action: cold setup (no cache)", median(cold), "s", len(cold),
            f"≤ {COLD_LIMIT_S:.0f} s", at_most(median(cold), COLD_LIMIT_S),
            f"pinned uv fetched and hash-checked, venv, tfaudit-ci from its source tree, no "
            f"extras (S3 store); packages from {source}; empty uv cache",
        ),
        Figure(
            BENCH, "host action: warm setup (cache hit)", median(warm), "s", len(warm),
            f"≤ {WARM_LIMIT_S:.0f} s", at_most(median(warm), WARM_LIMIT_S),
            "the saved venv extracted from its tar (as actions/cache restores it, less the "
            "download from GitHub's cache service) + prepare",
        ),
    ]  # fmt: skip


def _docker(*args: str, timeout: float = 1800) -> float:
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    started = time.perf_counter()
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"docker {' '.join(args[:2])} failed: {done.stderr[-1500:]}")
    return time.perf_counter() - started


def image_rows(params: Params, work: Path) -> list[Figure]:
    from tests.docker_image import build_action_image, engine_problem, image_tags

    problem = engine_problem()
    if problem:
        raise BenchError(f"no Docker engine: {problem}")
    builds: list[float] = []
    loads: list[float] = []
    for round_ in range(params.image_runs):
        image = build_action_image(work / f"build-{round_}", reuse=False, no_cache=params.no_cache)
        builds.append(image.build_seconds)
        saved = work / f"image-{round_}.tar"
        _docker("save", "--output", str(saved), image.tag)
        others = [name for name in image_tags(image.tag) if name != image.tag]
        for name in [*others, image.tag]:  # gone, as on a runner that never pulled it
            _docker("rmi", name)
        started = time.perf_counter()
        _docker("load", "--input", str(saved))
        _docker("run", "--rm", "--entrypoint", "tfaudit", image.tag, "--version")
        loads.append(time.perf_counter() - started)
        for name in others:
            _docker("tag", image.tag, name)
        saved.unlink()
    ratio = median(builds) / median(loads)
    return [
        Figure(
            BENCH, "Docker action: image build, no cache (`image: Dockerfile`)", median(builds),
            "s", len(builds), None, None,
            "offline build from local inputs: vendor and PyPI downloads not included"
            + ("" if params.no_cache else "; smoke run: Docker's build cache used"),
        ),
        Figure(
            BENCH, "Docker action: image load + first start (`image: docker://…@sha256`)",
            median(loads), "s", len(loads), None, None,
            f"`docker load` of the saved image + `tfaudit --version`; registry download not "
            f"included, nor the base image's layers (present for the build too); the build "
            f"takes {ratio:.1f}x as long",
        ),
    ]  # fmt: skip


def run(params: Params, work: Path, wheelhouse: Path | None = None) -> list[Figure]:
    if params.offline and wheelhouse is None:
        raise BenchError("an offline run needs a wheelhouse (tests/docker_image.py makes one)")
    figures = host_setup(params, work / "host", wheelhouse)
    if params.image_runs:
        figures += image_rows(params, work / "docker")
    return figures


def run_standalone(params: Params, work: Path) -> list[Figure]:
    wheelhouse = None
    if params.offline:
        from tests.docker_image import build_dist, shared_wheelhouse, wheelhouse_extras

        wheel, _ = build_dist(Path(tempfile.mkdtemp(prefix="tfaudit-dist-")))
        wheelhouse = shared_wheelhouse(wheel, wheelhouse_extras())
    return run(params, work, wheelhouse)


if __name__ == "__main__":
    bench_main(__doc__, run_standalone, SMOKE, FULL)
