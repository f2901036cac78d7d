#!/usr/bin/env python3
"""Set up tfaudit-ci for the host composite action (``host/action.yml``): fast, and cached.

    setup_env.py prepare    the venv's path, its cache key, and whether it is ready already
                            (a second tfaudit step in the same job); writes step outputs and
                            puts the venv on GITHUB_PATH
    setup_env.py install    a pinned uv (its wheel checked against a pinned SHA-256) makes the
                            venv and installs tfaudit-ci into it

Between the two, ``actions/cache/restore`` brings back a venv saved under the same key by an
earlier job, so most jobs never install at all. The key covers everything the venv depends
on: the runner's OS and architecture, the action's ref, the Python interpreter (version and
path), the venv's path, the extras, uv's version and a digest of the package's sources.

What gets installed: the action's own source tree, or, on a release ref, the released
``tfaudit-ci==VERSION`` from PyPI (``host/release-requirement.txt``, written by the release
workflow). Extras: the ``extras`` input, else only what the store needs (``gs://`` -> gcs,
``azblob://`` -> azure; S3 and file stores need none).

Standard library only: this runs before anything is installed. A mirror of PyPI is uv's own
setting (``UV_DEFAULT_INDEX``); an offline runner sets ``TFAUDIT_WHEELHOUSE`` to a folder (or
its URL) of wheels, uv's among them (its hash is still checked), and nothing else is fetched.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

UV_VERSION = "0.13.9"
# (system, machine) -> the uv wheel on PyPI and its SHA-256.
_UV_WHEELS = {
    ("linux", "x86_64"): (
        "3d/aa/26d64642d808de4a652579ef950d7cd2d37f080a8babf9c67c6b75fc4c3f/"
        "uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "d7f459fe4fd247d830351c75686d3996ace3c6f3f728eb0e85a30b7ada0cef19",
    ),
    ("linux", "aarch64"): (
        "57/15/94b6cd62ac3ff6550288328e8035288875197cbc183f51554b266a69877b/"
        "uv-0.13.9-py3-none-manylinux_2_17_aarch64.manylinux2014_aarch64.musllinux_1_1_aarch64.whl",
        "5435c5ce14a56431208ca0996416d310f1598e8c2c8ba707688985a16bb82dbe",
    ),
    ("darwin", "x86_64"): (
        "1e/db/08e9ef4879bd667e6d7b4705e594e5bd3e4585f10fc63cb16b9fa2fac63e/"
        "uv-0.13.9-py3-none-macosx_10_12_x86_64.whl",
        "c16ed11e013557536b3e60065f1b912f6407bd6518e041b961e23ef9e6b4fbf5",
    ),
    ("darwin", "arm64"): (
        "f3/a7/a8d7b074798c7fb3b26b37584b8fe2e29df2ccdc24ce7902caab2a53edbf/"
        "uv-0.13.9-py3-none-macosx_11_0_arm64.whl",
        "66c512266d633bef48384a1f53003f41f2a8e7b36fe6e7fbfd3e0fd52d96fa63",
    ),
}
_PYPI_FILES = "https://files.pythonhosted.org/packages"
KEY_VERSION = "v1"  # bump to orphan every cached venv
STORE_EXTRAS = {"gs://": "gcs", "azblob://": "azure"}
KNOWN_EXTRAS = frozenset({"gcs", "azure", "signing"})
MARKER = ".tfaudit-cache-key"
ACTION_DIR = Path(__file__).resolve().parent
SOURCE_DIR = ACTION_DIR.parent


class SetupError(Exception):
    """Setup cannot continue; the message says what to fix."""


@dataclass(frozen=True)
class Plan:
    venv: Path
    key: str
    extras: tuple[str, ...]
    requirement: str  # what uv installs (a path or tfaudit-ci==X)

    def spec(self) -> str:
        if not self.extras:
            return self.requirement
        extras = ",".join(self.extras)
        if self.requirement.startswith("tfaudit-ci=="):
            return self.requirement.replace("tfaudit-ci", f"tfaudit-ci[{extras}]", 1)
        return f"{self.requirement}[{extras}]"


def choose_extras(explicit: str, store: str) -> tuple[str, ...]:
    words = [w.strip() for w in explicit.replace(" ", ",").split(",") if w.strip()]
    unknown = sorted(set(words) - KNOWN_EXTRAS)
    if unknown:
        raise SetupError(
            f"unknown extras {', '.join(unknown)}: choose from {', '.join(sorted(KNOWN_EXTRAS))}"
        )
    if words:
        return tuple(sorted(set(words)))
    return tuple(extra for prefix, extra in STORE_EXTRAS.items() if store.startswith(prefix))


def source_digest(root: Path) -> str:
    """A digest of everything the installed venv is built from."""
    digest = hashlib.sha256()
    files = [root / "pyproject.toml", root / "constraints.txt", Path(__file__)]
    package = root / "tfaudit_ci"
    files += sorted(package.rglob("*.py")) + sorted(package.rglob("*.asc"))
    files.append(ACTION_DIR / "release-requirement.txt")
    for path in files:
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def make_plan(env: Mapping[str, str], python: str) -> Plan:
    temp = env.get("RUNNER_TEMP") or tempfile.gettempdir()
    venv = Path(temp, "tfaudit-ci", "venv")
    extras = choose_extras(env.get("TFAUDIT_EXTRAS", ""), env.get("TFAUDIT_STORE_URL", ""))
    pinned = ACTION_DIR / "release-requirement.txt"
    requirement = pinned.read_text().strip() if pinned.is_file() else str(SOURCE_DIR)
    interpreter = os.path.realpath(python)
    digest = hashlib.sha256()
    for part in (interpreter, str(venv), UV_VERSION, requirement, source_digest(SOURCE_DIR)):
        digest.update(part.encode() + b"\0")
    version = platform.python_version()
    raw_ref = env.get("TFAUDIT_ACTION_REF", "")
    ref = "".join(c if c.isalnum() or c in "._-" else "-" for c in raw_ref)
    runner_os = env.get("RUNNER_OS", platform.system())
    system = f"{runner_os}-{env.get('RUNNER_ARCH', platform.machine())}"
    key = "-".join(
        [
            "tfaudit-ci-venv",
            KEY_VERSION,
            system,
            ref or "local",
            f"py{version}",
            "+".join(extras) or "no-extras",
            digest.hexdigest()[:16],
        ]
    )
    return Plan(venv, key, extras, requirement)


def is_ready(plan: Plan) -> bool:
    marker = plan.venv / MARKER
    try:
        return marker.read_text().strip() == plan.key and (plan.venv / "bin" / "python").exists()
    except OSError:
        return False


def append(path_text: str | None, text: str) -> None:
    if path_text:
        with open(path_text, "a", encoding="utf-8") as handle:
            handle.write(text)


def prepare(env: Mapping[str, str]) -> int:
    plan = make_plan(env, sys.executable)
    ready = is_ready(plan)
    append(
        env.get("GITHUB_OUTPUT"),
        f"venv={plan.venv}\nkey={plan.key}\nready={'true' if ready else 'false'}\n",
    )
    append(env.get("GITHUB_PATH"), f"{plan.venv / 'bin'}\n")
    state = "already set up in this job" if ready else "to restore or install"
    print(f"tfaudit-ci: {plan.spec()} in {plan.venv} ({state}); cache key {plan.key}")
    return 0


# -- install ---------------------------------------------------------------------------------


def uv_wheel() -> tuple[str, str]:
    system, machine = platform.system().lower(), platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "arm64" if system == "darwin" else "aarch64"}.get(
        machine, machine
    )
    try:
        return _UV_WHEELS[(system, machine)]
    except KeyError:
        raise SetupError(f"no pinned uv for {system}/{machine}; use the Docker action") from None


def fetch_uv(target_dir: Path, env: Mapping[str, str]) -> Path:
    """The pinned uv binary, from its wheel, after checking the wheel's SHA-256."""
    binary = target_dir / UV_VERSION / "uv"
    if binary.is_file():
        return binary
    path, sha256 = uv_wheel()
    name = path.rsplit("/", 1)[1]
    base = env.get("TFAUDIT_WHEELHOUSE", "")
    if base and "://" not in base:
        base = Path(base).resolve().as_uri()  # a local folder
    url = f"{base.rstrip('/')}/{name}" if base else f"{_PYPI_FILES}/{path}"
    with tempfile.TemporaryDirectory(prefix="tfaudit-uv-") as tmp:
        wheel = Path(tmp, name)
        digest = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=60) as response, wheel.open("wb") as out:
            while chunk := response.read(1024 * 1024):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            raise SetupError(f"{url} does not have the pinned SHA-256 {sha256}; refusing it")
        member = f"uv-{UV_VERSION}.data/scripts/uv"
        binary.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as src:
            staged = binary.with_suffix(".partial")
            with staged.open("wb") as dst:
                shutil.copyfileobj(src, dst)
        staged.chmod(0o755)
        staged.rename(binary)
    return binary


def run(argv: Sequence[str], env: Mapping[str, str]) -> None:
    done = subprocess.run(list(argv), env=dict(env), check=False)
    if done.returncode != 0:
        raise SetupError(f"{Path(argv[0]).name} {argv[1]} failed (exit {done.returncode})")


def install(env: Mapping[str, str]) -> int:
    plan = make_plan(env, sys.executable)
    temp = Path(env.get("RUNNER_TEMP") or tempfile.gettempdir())
    uv = fetch_uv(temp / "tfaudit-ci" / "uv", env)
    uv_env = {
        **env,
        "UV_CACHE_DIR": env.get("UV_CACHE_DIR") or str(temp / "tfaudit-ci" / "uv-cache"),
        "UV_LINK_MODE": "copy",  # the venv is archived by actions/cache: no links into uv's cache
        "UV_PYTHON_DOWNLOADS": "never",
    }
    if plan.venv.exists():
        shutil.rmtree(plan.venv)
    run([str(uv), "venv", "--quiet", "--python", sys.executable, str(plan.venv)], uv_env)
    python = plan.venv / "bin" / "python"
    constraints = SOURCE_DIR / "constraints.txt"
    wheelhouse = env.get("TFAUDIT_WHEELHOUSE")
    offline = ["--no-index", "--find-links", wheelhouse] if wheelhouse else []
    run(
        [
            str(uv), "pip", "install", "--quiet", "--python", str(python), *offline,
            "--constraint", str(constraints), plan.spec(),
        ],
        uv_env,
    )  # fmt: skip
    (plan.venv / MARKER).write_text(plan.key + "\n")
    print(f"tfaudit-ci: installed {plan.spec()} into {plan.venv} with uv {UV_VERSION}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args == ["prepare"]:
            return prepare(os.environ)
        if args == ["install"]:
            return install(os.environ)
    except SetupError as exc:
        print(f"::error title=tfaudit-ci setup::{exc}")
        return 1
    print("usage: setup_env.py prepare|install", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
