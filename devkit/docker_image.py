"""Build the action image offline, once per test session, from local inputs only.

No image registry, PyPI inside a build, or vendor download site is used, so the build is fed
everything from this machine:

* the base image ``python:3.12-slim-bookworm`` is a local stand-in that
  ``scripts/install-docker.sh`` makes with mmdebstrap (Debian's Python 3.11 inside);
* the package is the wheel ``python -m build`` makes, put in the context's ``dist/`` exactly
  as the release workflow does, and its dependencies come from a wheelhouse that ``pip
  download`` fills on the host (served over HTTP as ``WHEELHOUSE``);
* terraform and OpenTofu come from a stand-in release folder on 127.0.0.1, signed with a key
  made for the purpose and passed as ``STANDIN_RELEASE_KEY`` (the Dockerfile uses it for the
  bundled downloads only; the image still trusts only the vendors' keys at run time). The
  terraform zip holds the real terraform binary from PATH. No OpenTofu binary can be had
  here: the stand-in OpenTofu release holds that same terraform binary under the name
  ``tofu``, so tests of ``tool: tofu`` prove the selection and wiring, not OpenTofu itself.

Everything else is the Dockerfile as it is built on GitHub. The result is tagged with a
digest of its inputs; a later session with the same inputs reuses it.

    python -m devkit.docker_image        # build (or reuse) and print the tag
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from devkit.proc import run_tool

REPO_ROOT = Path(__file__).resolve().parents[1]
BASE_IMAGE = "python:3.12-slim-bookworm"
IMAGE_REPO = "tfaudit-ci-test"
CONTEXT_DIGEST_LABEL = "org.tfaudit-ci.test-inputs"
# What the .dockerignore lets into a build context (the Dockerfile copies nothing else).
CONTEXT_FILES = (
    "Dockerfile",
    ".dockerignore",
    "constraints.txt",
    "pyproject.toml",
    "README.md",
    "entrypoint.py",
    "scripts/install-image.sh",
)
CONTEXT_DIRS = ("tfaudit_ci",)
STANDIN_TOFU_VERSION = "1.9.1"  # the Dockerfile's default TOFU_VERSION
REQUIRE_ENV = "TFAUDIT_REQUIRE_DOCKER"


class DockerUnavailable(RuntimeError):
    """No Docker engine (or no stand-in base image) here; the message says how to fix it."""


def docker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["DOCKER_BUILDKIT"] = "0"  # Debian's engine has no buildx; the legacy builder works
    return env


def docker(
    *args: str, timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=docker_env(),
        check=False,
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} failed: {done.stderr[-2000:]}")
    return done


def engine_problem() -> str | None:
    """Why the tests cannot use Docker here, or None when they can."""
    if shutil.which("docker") is None:
        return "the docker client is not installed (run scripts/install-docker.sh)"
    try:
        done = docker("version", "--format", "{{.Server.Version}}", timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return "the Docker engine does not answer (run scripts/install-docker.sh)"
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no answer"])[-1]
        return f"no Docker engine answers: {reason} (run scripts/install-docker.sh)"
    if docker("image", "inspect", BASE_IMAGE, check=False, timeout=30).returncode != 0:
        return f"the base image {BASE_IMAGE} is missing (scripts/install-docker.sh builds it)"
    return None


def docker_required() -> bool:
    return os.environ.get(REQUIRE_ENV) == "1"


def terraform_binary() -> Path:
    found = shutil.which("terraform")
    if found is None:
        raise DockerUnavailable("no terraform on PATH to put in the stand-in release")
    return Path(found).resolve()


def terraform_version(binary: Path) -> str:
    done = subprocess.run(
        [str(binary), "version", "-json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", ""), "CHECKPOINT_DISABLE": "1"},
        check=True,
    )
    return str(json.loads(done.stdout)["terraform_version"])


# -- the package and its dependencies ---------------------------------------------------------


def build_dist(out_dir: Path) -> tuple[Path, Path]:
    """``python -m build``: (wheel, sdist), reproducible (SOURCE_DATE_EPOCH fixed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, SOURCE_DATE_EPOCH="1700000000")
    with tempfile.TemporaryDirectory(prefix="tfaudit-build-") as tmp:
        source = Path(tmp, "src")
        copy_checkout(source)  # never writes build/ or *.egg-info into the checkout
        done = subprocess.run(
            [sys.executable, "-m", "build", "--outdir", str(out_dir), str(source)],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"python -m build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    wheels = sorted(out_dir.glob("tfaudit_ci-*.whl"))
    sdists = sorted(out_dir.glob("tfaudit_ci-*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        raise RuntimeError(
            f"expected one wheel and one sdist in {out_dir}, found {wheels + sdists}"
        )
    return wheels[0], sdists[0]


def fill_wheelhouse(target: Path, requirements: Sequence[str]) -> Path:
    """``pip download`` binary wheels of ``requirements`` (pinned by constraints.txt)."""
    target.mkdir(parents=True, exist_ok=True)
    run_tool(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "--dest",
            str(target),
            "--constraint",
            str(REPO_ROOT / "constraints.txt"),
            *requirements,
        ],
        timeout=900,
        what="pip download",
    )
    return target


def pinned_uv_version() -> str:
    """The uv version host/setup_env.py pins (that file is not part of a package)."""
    text = (REPO_ROOT / "host" / "setup_env.py").read_text(encoding="utf-8")
    match = re.search(r'^UV_VERSION = "([^"]+)"$', text, re.M)
    assert match, "host/setup_env.py no longer pins UV_VERSION"
    return match.group(1)


def wheelhouse_extras() -> list[str]:
    """Beyond tfaudit-ci's dependencies: what the host action needs offline (uv, and the
    build backend for installing from a source tree)."""
    return [f"uv=={pinned_uv_version()}", "setuptools>=77", "wheel"]


def tools_dir() -> Path:
    return Path(os.environ.get("TFAUDIT_TOOLS_DIR") or REPO_ROOT / ".tools")


def shared_wheelhouse(wheel: Path, extra: Sequence[str] = ()) -> Path:
    """A wheelhouse kept between sessions (``.tools/wheelhouse-<constraints digest>``)."""
    digest = hashlib.sha256((REPO_ROOT / "constraints.txt").read_bytes())
    digest.update(("\0".join(extra)).encode())
    target = tools_dir() / f"wheelhouse-{digest.hexdigest()[:16]}"
    fill_wheelhouse(target, [f"tfaudit-ci[gcs,azure] @ {wheel.as_uri()}", *extra])
    for stale in target.glob("tfaudit_ci-*.whl"):
        stale.unlink()  # the project's own wheel is never taken from here
    return target


# -- the stand-in release --------------------------------------------------------------------


def _zip_binary(path: Path, name: str, binary: Path) -> None:
    """A deterministic zip (fixed timestamp), so an unchanged input keeps Docker's cache."""
    info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
    info.external_attr = 0o755 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    with (
        zipfile.ZipFile(path, "w") as archive,
        binary.open("rb") as source,
        archive.open(info, "w") as target,
    ):
        shutil.copyfileobj(source, target, 1024 * 1024)


def standin_releases(root: Path, key_home: Path) -> tuple[dict[str, str], Path]:
    """Signed terraform and OpenTofu releases under ``root``; ({tool: version}, public key)."""
    from devkit.fake_release import SIGNATURE_SUFFIX, make_signing_key

    key = make_signing_key(key_home, "tfaudit stand-in release key (tests only)")
    binary = terraform_binary()
    versions = {"terraform": terraform_version(binary), "tofu": STANDIN_TOFU_VERSION}
    for tool, version in versions.items():
        folder = root / tool / version
        folder.mkdir(parents=True)
        zip_path = folder / f"{tool}_{version}_linux_amd64.zip"
        _zip_binary(zip_path, tool, binary)
        sums = folder / f"{tool}_{version}_SHA256SUMS"
        digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()
        sums.write_text(f"{digest}  {zip_path.name}\n", encoding="utf-8")
        key.sign(sums, folder / (sums.name + SIGNATURE_SUFFIX[tool]))
    return versions, key.public_file


@contextmanager
def http_folder(root: Path) -> Iterator[str]:
    from devkit.fake_release import serve

    with serve(root) as url:
        yield url


# -- the build -------------------------------------------------------------------------------


# What a clean checkout does not have (the .gitignore'd folders, and git's own).
_NOT_IN_CHECKOUT = (".git", ".venv", ".tools", "dist", "build", "*.egg-info", "__pycache__",
                    ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis", ".demo",
                    ".tfaudit", "results")  # fmt: skip


def copy_checkout(target: Path) -> None:
    """The project as a fresh clone has it (what the release workflow builds from)."""
    shutil.copytree(REPO_ROOT, target, ignore=shutil.ignore_patterns(*_NOT_IN_CHECKOUT))


def copy_context(target: Path) -> None:
    """The files the Dockerfile may copy (what .dockerignore admits), nothing else."""
    for name in CONTEXT_FILES:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, target / name)
    for name in CONTEXT_DIRS:
        shutil.copytree(
            REPO_ROOT / name, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )


def context_digest() -> str:
    digest = hashlib.sha256()
    paths = [REPO_ROOT / name for name in CONTEXT_FILES]
    for name in CONTEXT_DIRS:
        paths += sorted(
            p for p in (REPO_ROOT / name).rglob("*") if p.is_file() and "__pycache__" not in p.parts
        )
    for path in paths:
        digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes())
    digest.update(str(terraform_binary()).encode())
    base = docker("image", "inspect", "--format", "{{.Id}}", BASE_IMAGE).stdout.strip()
    digest.update(base.encode())
    return digest.hexdigest()[:20]


@dataclass(frozen=True)
class ActionImage:
    """The built image and the bundled versions in it."""

    tag: str
    terraform_version: str
    tofu_version: str
    built: bool  # False when an image with the same inputs was reused
    build_seconds: float = 0.0  # the `docker build` alone


def _existing(tag: str, digest: str) -> dict[str, str] | None:
    done = docker("image", "inspect", "--format", "{{json .Config.Labels}}", tag, check=False)
    if done.returncode != 0:
        return None
    labels = json.loads(done.stdout or "null") or {}
    return labels if labels.get(CONTEXT_DIGEST_LABEL) == digest else None


# Gives (the project's wheel, a wheelhouse of its dependencies) when called.
PackageSource = Callable[[], tuple[Path, Path]]


def default_package_source(work: Path) -> PackageSource:
    def provide() -> tuple[Path, Path]:
        wheel, _ = build_dist(work / "dist")
        return wheel, shared_wheelhouse(wheel, wheelhouse_extras())

    return provide


def build_action_image(
    work: Path,
    *,
    packages: PackageSource | None = None,
    log: Path | None = None,
    reuse: bool = True,
    no_cache: bool = False,
) -> ActionImage:
    """Build the image offline, or reuse one built from the same inputs (``reuse``).

    ``no_cache`` builds every layer again (Docker's build cache unused).
    """
    problem = engine_problem()
    if problem:
        raise DockerUnavailable(problem)
    digest = context_digest()
    tag = f"{IMAGE_REPO}:{digest}"
    found = _existing(tag, digest) if reuse and not no_cache else None
    if found is not None:
        return ActionImage(tag, found["terraform.version"], found["tofu.version"], built=False)

    context = work / "context"
    copy_context(context)
    wheel, wheelhouse = (packages or default_package_source(work))()
    (context / "dist").mkdir()
    shutil.copy2(wheel, context / "dist" / wheel.name)  # as a release's image gets it
    served = work / "served"
    shutil.copytree(wheelhouse, served / "wheels")
    versions, public_key = standin_releases(served / "releases", work / "gnupg")
    with http_folder(served) as url:
        args = {
            "TERRAFORM_VERSION": versions["terraform"],
            "TOFU_VERSION": versions["tofu"],
            "TERRAFORM_RELEASES": f"{url}/releases/terraform/{{version}}",
            "TOFU_RELEASES": f"{url}/releases/tofu/{{version}}",
            "STANDIN_RELEASE_KEY": public_key.read_text(encoding="ascii"),
            "WHEELHOUSE": f"{url}/wheels/",
        }
        build_args = [
            item for name, value in args.items() for item in ("--build-arg", f"{name}={value}")
        ]
        labels = {
            CONTEXT_DIGEST_LABEL: digest,
            "terraform.version": versions["terraform"],
            "tofu.version": versions["tofu"],
        }
        label_args = [
            item for name, value in labels.items() for item in ("--label", f"{name}={value}")
        ]
        cache = ["--no-cache"] if no_cache else []
        started = time.perf_counter()
        done = docker(
            "build", "--network", "host", *cache, *build_args, *label_args, "--tag", tag,
            str(context), timeout=1200, check=False,
        )  # fmt: skip
        seconds = time.perf_counter() - started
    if log is not None:
        log.write_text(done.stdout + "\n" + done.stderr, encoding="utf-8")
    if done.returncode != 0:
        raise RuntimeError(f"docker build failed:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}")
    return ActionImage(tag, versions["terraform"], versions["tofu"], True, seconds)


def image_tags(tag: str) -> list[str]:
    """Every name the image called ``tag`` has."""
    done = docker("image", "inspect", "--format", "{{json .RepoTags}}", tag)
    return list(json.loads(done.stdout))


def tag_as(image: ActionImage, names: Sequence[str]) -> None:
    for name in names:
        docker("tag", image.tag, name)


def run_env_args(env: Mapping[str, str]) -> list[str]:
    return [item for name, value in env.items() for item in ("-e", f"{name}={value}")]


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="tfaudit-image-") as tmp:
        image = build_action_image(Path(tmp), log=Path(tmp, "build.log"))
    print(image.tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
