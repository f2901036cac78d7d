"""Benchmark 6: how long the actions take to be ready, before any terraform runs.

* Host composite action, cold: a fresh runner with no cache: ``host/setup_env.py prepare``
  then ``install`` (the pinned uv's wheel fetched and hash-checked, a venv, tfaudit-ci and its
  dependencies) into an empty RUNNER_TEMP with an empty uv cache, for both forms of the
  action: a release ref (``host/release-requirement.txt``: the released wheel; tfaudit-ci is
  not on PyPI yet, so its wheel comes from a local folder and only its dependencies from PyPI)
  and any other ref (the action's source tree, built). Full runs fetch from PyPI, as a runner
  does; ``--smoke`` runs offline from a local wheelhouse. Extras: those an S3 store needs
  (none).
* Host composite action, warm: the venv an earlier job saved, restored (GNU tar extracting
  the archive actions/cache would download; the download itself from GitHub's cache service
  is not measured here), then ``prepare`` finding it ready.
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
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO_ROOT, BenchError, Figure, at_most, bench_main, median

BENCH = "9. setup"
COLD_LIMIT_S = 6.0
WARM_LIMIT_S = 1.0
SETUP = REPO_ROOT / "host" / "setup_env.py"


@dataclass(frozen=True)
class Params:
    runs: int
    offline: bool  # install from a local wheelhouse instead of PyPI
    image_runs: int  # 0: no Docker rows
    build: bool  # time a build from scratch (the smoke run reuses the tests' image instead)
    source_form: bool  # also the source-tree form (tests/test_act_composite.py covers it)


SMOKE = Params(runs=1, offline=True, image_runs=1, build=False, source_form=False)
FULL = Params(runs=3, offline=False, image_runs=1, build=True, source_form=True)


def _setup(step: str, env: dict[str, str], script: Path = SETUP) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(script), step],
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


def release_checkout(work: Path, wheel: Path) -> tuple[Path, Path]:
    """The action as a release ref has it: host/release-requirement.txt, and the wheel
    (standing in for its PyPI release) alone in a folder uv searches besides the index."""
    checkout = work / "release-checkout"
    for name in ("pyproject.toml", "constraints.txt"):
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, checkout / name)
    shutil.copytree(REPO_ROOT / "tfaudit_ci", checkout / "tfaudit_ci")
    shutil.copytree(REPO_ROOT / "host", checkout / "host")
    version = wheel.name.split("-")[1]
    (checkout / "host" / "release-requirement.txt").write_text(f"tfaudit-ci=={version}\n")
    links = work / "release-wheel"
    links.mkdir()
    shutil.copy2(wheel, links / wheel.name)
    return checkout / "host" / "setup_env.py", links


def _cold_and_warm(
    work: Path, env: dict[str, str], script: Path, archive: Path
) -> tuple[float, float]:
    temp = Path(env["RUNNER_TEMP"])
    (temp / "home").mkdir(parents=True)
    cold = _setup("prepare", env, script) + _setup("install", env, script)
    venv = temp / "tfaudit-ci" / "venv"
    check = subprocess.run([str(venv / "bin" / "tfaudit"), "--version"], capture_output=True)
    if check.returncode != 0:
        raise BenchError("the installed venv does not run tfaudit")
    # What actions/cache/save archives, and what its restore extracts with GNU tar.
    subprocess.run(["tar", "-cf", str(archive), "-C", str(venv), "."], check=True)
    shutil.rmtree(temp)  # the next job's runner starts empty
    (temp / "home").mkdir(parents=True)
    os.sync()  # a new job's runner does not inherit this one's unwritten pages
    started = time.perf_counter()
    venv.mkdir(parents=True)
    subprocess.run(["tar", "-xf", str(archive), "-C", str(venv)], check=True)
    warm = time.perf_counter() - started + _setup("prepare", env, script)
    if "ready=true" not in (temp / "output").read_text():
        raise BenchError("the restored venv was not recognised as ready")
    shutil.rmtree(temp)
    archive.unlink()
    return cold, warm


def host_setup(params: Params, work: Path, wheelhouse: Path | None, wheel: Path) -> list[Figure]:
    release_script, release_links = release_checkout(work, wheel)
    cold: list[float] = []
    cold_source: list[float] = []
    warm: list[float] = []
    release_house = None
    if params.offline and wheelhouse is not None:  # the wheelhouse plus the released wheel
        release_house = work / "release-wheelhouse"
        release_house.mkdir()
        for path in [*wheelhouse.iterdir(), *release_links.iterdir()]:
            (release_house / path.name).symlink_to(path)
    for round_ in range(params.runs):  # the two forms alternate within each round
        env = _runner_env(work / f"runner-{round_}", release_house)
        if not params.offline:
            env["UV_FIND_LINKS"] = str(release_links)
        seconds, restored = _cold_and_warm(work, env, release_script, work / "cache.tar")
        cold.append(seconds)
        warm.append(restored)
        if params.source_form:
            env = _runner_env(work / f"source-{round_}", wheelhouse if params.offline else None)
            cold_source.append(_cold_and_warm(work, env, SETUP, work / "cache.tar")[0])
    source = "a local wheelhouse (offline)" if params.offline else "PyPI"
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    figures = [
        Figure(
            BENCH, "host action: cold setup (no cache), release ref", median(cold), "s",
            len(cold), f"≤ {COLD_LIMIT_S:.0f} s", at_most(median(cold), COLD_LIMIT_S),
            f"pinned uv fetched and hash-checked, venv, the released wheel and its "
            f"dependencies from {source}; empty uv cache; load average {load}",
        ),
        Figure(
            BENCH, "host action: warm setup (cache hit)", median(warm), "s", len(warm),
            f"≤ {WARM_LIMIT_S:.0f} s", at_most(median(warm), WARM_LIMIT_S),
            "the saved venv (56 MB, ~3,700 files) extracted by GNU tar as actions/cache "
            "restores it (its download from GitHub's cache service not included) + prepare",
        ),
    ]  # fmt: skip
    if cold_source:
        figures.append(
            Figure(
                BENCH, "host action: cold setup (no cache), other refs", median(cold_source),
                "s", len(cold_source), None, None,
                f"as above, but tfaudit-ci built from the action's source tree (setuptools "
                f"fetched too); from {source}",
            )
        )  # fmt: skip
    return figures


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
    from devkit.docker_image import build_action_image, engine_problem, image_tags

    problem = engine_problem()
    if problem:
        raise BenchError(f"no Docker engine: {problem}")
    work.mkdir(parents=True, exist_ok=True)
    builds: list[float] = []
    loads: list[float] = []
    for round_ in range(params.image_runs):
        image = build_action_image(
            work / f"build-{round_}", reuse=not params.build, no_cache=params.build
        )
        if params.build:
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
    load = Figure(
        BENCH, "Docker action: image load + first start (`image: docker://…@sha256`)",
        median(loads), "s", len(loads), None, None,
        "`docker load` of the saved image + `tfaudit --version`; registry download not "
        "included, nor the base image's layers (present for the build too)",
    )  # fmt: skip
    if not builds:
        return [load]
    build = Figure(
        BENCH, "Docker action: image build, no cache (`image: Dockerfile`)", median(builds),
        "s", len(builds), None, None,
        "offline build from local inputs: vendor and PyPI downloads not included; "
        f"{median(builds) / median(loads):.1f}x the load + start",
    )  # fmt: skip
    return [build, load]


def run(params: Params, work: Path, wheelhouse: Path | None, wheel: Path) -> list[Figure]:
    if params.offline and wheelhouse is None:
        raise BenchError("an offline run needs a wheelhouse (devkit/docker_image.py makes one)")
    (work / "host").mkdir(parents=True)
    figures = host_setup(params, work / "host", wheelhouse, wheel)
    if params.image_runs:
        figures += image_rows(params, work / "docker")
    return figures


def run_standalone(params: Params, work: Path) -> list[Figure]:
    from devkit.docker_image import build_dist, shared_wheelhouse, wheelhouse_extras

    wheel, _ = build_dist(work / "dist")
    wheelhouse = shared_wheelhouse(wheel, wheelhouse_extras()) if params.offline else None
    return run(params, work, wheelhouse, wheel)


if __name__ == "__main__":
    bench_main(__doc__, run_standalone, SMOKE, FULL)
