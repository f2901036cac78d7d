"""host/setup_env.py: the composite action's cache key, extras and pinned uv, without a runner.

The whole action runs under nektos/act in tests/test_act_composite.py; here the pieces whose
mistakes would be silent there: a key that misses an input (a stale venv restored), extras
installed that the store does not need, an unverified uv.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def setup_env() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("setup_env", REPO / "host" / "setup_env.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["setup_env"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules["setup_env"]


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "RUNNER_TEMP": str(tmp_path / "temp"),
        "RUNNER_OS": "Linux",
        "RUNNER_ARCH": "X64",
        "TFAUDIT_ACTION_REF": "v1.2.3",
        **extra,
    }


@pytest.mark.parametrize(
    ("explicit", "store", "expected"),
    [
        ("", "s3://bucket/tf", ()),
        ("", "file:///tmp/x", ()),
        ("", "gs://bucket/tf", ("gcs",)),
        ("", "azblob://acct/container/tf", ("azure",)),
        ("azure, gcs", "s3://b/p", ("azure", "gcs")),
    ],
)
def test_extras_follow_the_store(
    setup_env: ModuleType, explicit: str, store: str, expected: tuple[str, ...]
) -> None:
    assert setup_env.choose_extras(explicit, store) == expected


def test_unknown_extras_are_refused(setup_env: ModuleType) -> None:
    with pytest.raises(setup_env.SetupError, match="unknown extras gcp"):
        setup_env.choose_extras("gcp", "")


def test_the_key_changes_with_every_input(setup_env: ModuleType, tmp_path: Path) -> None:
    base = base_env(tmp_path)
    key = setup_env.make_plan(base, sys.executable).key
    assert key.startswith("tfaudit-ci-venv-v1-Linux-X64-v1.2.3-py")
    assert key == setup_env.make_plan(dict(base), sys.executable).key  # stable
    variants = [
        {"TFAUDIT_ACTION_REF": "v1.2.4"},
        {"RUNNER_ARCH": "ARM64"},
        {"TFAUDIT_STORE_URL": "gs://b/p"},
        {"RUNNER_TEMP": str(tmp_path / "elsewhere")},  # the venv's absolute path
    ]
    keys = {setup_env.make_plan({**base, **change}, sys.executable).key for change in variants}
    assert key not in keys and len(keys) == len(variants)


def test_prepare_writes_outputs_and_path(setup_env: ModuleType, tmp_path: Path) -> None:
    outputs, path = tmp_path / "out", tmp_path / "path"
    env = base_env(tmp_path, GITHUB_OUTPUT=str(outputs), GITHUB_PATH=str(path))
    assert setup_env.prepare(env) == 0
    plan = setup_env.make_plan(env, sys.executable)
    assert outputs.read_text() == f"venv={plan.venv}\nkey={plan.key}\nready=false\n"
    assert path.read_text() == f"{plan.venv / 'bin'}\n"
    (plan.venv / "bin").mkdir(parents=True)
    (plan.venv / "bin" / "python").touch()
    (plan.venv / setup_env.MARKER).write_text(plan.key + "\n")
    assert setup_env.prepare(env) == 0
    assert outputs.read_text().endswith("ready=true\n")


def test_a_uv_wheel_without_the_pinned_hash_is_refused(
    setup_env: ModuleType, tmp_path: Path
) -> None:
    path, sha256 = setup_env.uv_wheel()
    house = tmp_path / "wheels"
    house.mkdir()
    forged = house / path.rsplit("/", 1)[1]
    with zipfile.ZipFile(forged, "w") as archive:
        archive.writestr(f"uv-{setup_env.UV_VERSION}.data/scripts/uv", "#!/bin/sh\necho pwned\n")
    assert hashlib.sha256(forged.read_bytes()).hexdigest() != sha256
    with pytest.raises(setup_env.SetupError, match="does not have the pinned SHA-256"):
        setup_env.fetch_uv(tmp_path / "uv", {"TFAUDIT_WHEELHOUSE": str(house)})
    assert not (tmp_path / "uv" / setup_env.UV_VERSION / "uv").exists()
