"""The Docker action's image, run the way the GitHub runner runs a container action.

The image is the one the Dockerfile builds (offline, from local inputs:
devkit/docker_image.py).
Each step is a ``docker run`` with what the runner gives a container action: the workspace at
/github/workspace, HOME at /github/home, the file-command folder, ``GITHUB_*`` variables and
the inputs as ``INPUT_<NAME>`` (hyphens kept). The post step is a *new* container with the
entrypoint ``tfaudit-action-post``, as ``post-entrypoint`` makes it. S3 is moto on 127.0.0.1
(host networking). tests/test_act_docker.py runs the same image under nektos/act.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devkit.docker_image import ActionImage, docker, run_env_args
from devkit.fake_release import add_release, make_signing_key, serve
from devkit.servers import S3Server, make_lock_bucket, start_moto, unique_bucket
from tests.test_report_github import parse_github_output

BASE_CONFIG = (
    'terraform {\n  required_version = ">= 1.0"\n}\n\noutput "greeting" {\n  value = "hello"\n}\n'
)


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_moto(tmp_path_factory.mktemp("moto-docker"))
    yield server
    server.stop()


@dataclass
class Runner:
    """One job: a workspace, a runner HOME, a file-command folder, steps in containers."""

    image: ActionImage
    moto: S3Server
    root: Path
    bucket: str
    inputs: dict[str, str] = field(default_factory=dict)
    containers: list[str] = field(default_factory=list)

    @property
    def workspace(self) -> Path:
        return self.root / "workspace"

    def store(self) -> str:
        return f"s3://{self.bucket}/ci"

    def base_inputs(self) -> dict[str, str]:
        return {
            "working-directory": ".selftest",
            "store": self.store(),
            "stream": "selftest",
            "retention-days": "1",
            "endpoint-url": self.moto.endpoint,
            "terraform-bin": "terraform",
            **self.inputs,
        }

    def docker_args(
        self, step: str, inputs: dict[str, str], extra_env: dict[str, str]
    ) -> list[str]:
        files = self.root / "file_commands"
        (files / f"out_{step}").write_text("")
        (files / f"sum_{step}").write_text("")
        env = {
            "HOME": "/github/home",
            "GITHUB_ACTIONS": "true",
            "CI": "true",
            "GITHUB_WORKSPACE": "/github/workspace",
            "GITHUB_REPOSITORY": "acme/infra",
            "GITHUB_RUN_ID": "4242",
            "GITHUB_RUN_ATTEMPT": "1",
            "GITHUB_SHA": "0" * 40,
            "GITHUB_OUTPUT": f"/github/file_commands/out_{step}",
            "GITHUB_STEP_SUMMARY": f"/github/file_commands/sum_{step}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            **{f"INPUT_{name.upper()}": value for name, value in inputs.items()},
            **extra_env,
        }
        name = f"tfaudit-test-{step}-{uuid.uuid4().hex[:8]}"
        self.containers.append(name)
        return [
            "run", "--name", name, "--network", "host", "--workdir", "/github/workspace",
            "-v", f"{self.workspace}:/github/workspace",
            "-v", f"{self.root / 'home'}:/github/home",
            "-v", f"{files}:/github/file_commands",
            *run_env_args(env),
        ]  # fmt: skip

    def step(
        self, step: str, command: str = "", *, post: bool = False, **inputs: str
    ) -> subprocess.CompletedProcess[str]:
        merged = {**self.base_inputs(), "command": command, **inputs}
        args = self.docker_args(step, merged, {})
        if post:
            args += ["--entrypoint", "/usr/local/bin/tfaudit-action-post"]
        return docker(*args, self.image.tag, timeout=300, check=False)

    def start(self, step: str, command: str, **inputs: str) -> tuple[str, subprocess.Popen[str]]:
        merged = {**self.base_inputs(), "command": command, **inputs}
        args = self.docker_args(step, merged, {})
        process = subprocess.Popen(
            ["docker", *args, self.image.tag],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return self.containers[-1], process

    def outputs(self, step: str) -> dict[str, str]:
        return parse_github_output((self.root / "file_commands" / f"out_{step}").read_text())

    def summary(self, step: str) -> str:
        return (self.root / "file_commands" / f"sum_{step}").read_text()

    def verify(self, records: int) -> subprocess.CompletedProcess[str]:
        done = docker(
            "run", "--rm", "--network", "host", "--entrypoint", "tfaudit",
            *run_env_args({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": "us-east-1"}),
            self.image.tag, "verify", "--store", self.store(), "--stream", "selftest",
            "--endpoint-url", self.moto.endpoint, "--retention-days", "1",
            timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"{records}/{records} records valid" in done.stdout + done.stderr
        return done

    def remove_containers(self) -> None:
        for name in self.containers:
            docker("rm", "-f", name, check=False)


@pytest.fixture
def runner(action_image: ActionImage, moto: S3Server, tmp_path: Path) -> Iterator[Runner]:
    bucket = unique_bucket()
    make_lock_bucket(moto.client(), bucket, days=1)
    job = Runner(action_image, moto, tmp_path, bucket)
    for folder in ("workspace/.selftest", "home", "file_commands"):
        (tmp_path / folder).mkdir(parents=True)
    (job.workspace / ".selftest" / "main.tf").write_text(BASE_CONFIG)
    yield job
    job.remove_containers()
    # Files the container wrote as root: remove them through a container, not as this user.
    if os.geteuid() != 0:
        docker("run", "--rm", "-v", f"{tmp_path}:/t", "--entrypoint", "rm", action_image.tag,
               "-rf", "/t/workspace", "/t/home", check=False)  # fmt: skip


def test_init_plan_and_post_like_the_github_runner(runner: Runner) -> None:
    init = runner.step("init", "init -input=false")
    assert init.returncode == 0, init.stdout + init.stderr
    # `auto`: main.tf asks for >= 1.0, which the bundled terraform meets (no download).
    assert (
        f"using /opt/tfaudit/tools/terraform/{runner.image.terraform_version}/terraform (bundled)"
        in init.stderr
    )
    assert "required_version in main.tf" in init.stderr

    plan = runner.step("plan", "plan -input=false -out=tfplan")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    out = runner.outputs("plan")
    assert (out["status"], out["audit-ok"], out["exit-code"]) == ("succeeded", "true", "0")
    assert out["record-uri"].startswith(f"{runner.store()}/")
    assert len(out["record-sha256"]) == 64
    assert out["to-add"] == "0"
    # Paths are workspace-relative: the container's /github/workspace means nothing on the host.
    assert not out["log-path"].startswith("/")
    assert runner.summary("plan").startswith("### tfaudit: ✅ succeeded, audit recorded")
    assert "tfaudit verify --store" in runner.summary("plan")

    post = runner.step("post", post=True)
    assert post.returncode == 0, post.stdout + post.stderr
    assert "nothing to recover" in post.stderr
    runner.verify(records=2)


def test_a_killed_main_step_is_shipped_by_the_post_step(runner: Runner) -> None:
    """The runner kills a cancelled step's container; the post step's container recovers."""
    name, process = runner.start(
        "main", "-c 'echo started-$((6*7)); exec sleep 120'", **{"terraform-bin": "sh"}
    )
    spool_root = runner.workspace / ".tfaudit" / "spool"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(spool_root.glob("*/output.log")):
        time.sleep(0.2)
    assert any(spool_root.glob("*/output.log")), "the main step never started its spool"
    time.sleep(2)  # past a spool checkpoint of the echoed line
    docker("kill", "--signal", "KILL", name)
    process.communicate(timeout=60)
    assert process.returncode != 0

    post = runner.step("post", post=True)
    assert post.returncode == 0, post.stdout + post.stderr
    assert "recovered" in (post.stdout + post.stderr).lower()
    runner.verify(records=1)


def test_tool_tofu_runs_the_bundled_opentofu(runner: Runner) -> None:
    """Stand-in OpenTofu (see devkit/docker_image.py): proves selection and wiring only."""
    done = runner.step("tofu", "version", tool="tofu")
    assert done.returncode == 0, done.stdout + done.stderr
    version = runner.image.tofu_version
    assert f"using /opt/tfaudit/tools/tofu/{version}/tofu (bundled)" in done.stderr
    out = runner.outputs("tofu")
    assert (out["status"], out["audit-ok"]) == ("succeeded", "true")


def test_an_unbundled_version_must_carry_the_vendors_signature(
    runner: Runner, tmp_path: Path
) -> None:
    """A release signed by any key but HashiCorp's baked-in one is refused, before running."""
    key = make_signing_key(tmp_path / "gnupg", "not hashicorp")
    releases = tmp_path / "releases"
    add_release(releases, "terraform", "1.10.2", b"#!/bin/sh\necho pwned\n", key)
    with serve(releases) as url:
        args = runner.docker_args(
            "other",
            {**runner.base_inputs(), "command": "plan", "terraform-version": "1.10.2"},
            {"TFAUDIT_TERRAFORM_RELEASES": f"{url}/terraform/{{version}}"},
        )
        done = docker(*args, runner.image.tag, timeout=300, check=False)
    assert done.returncode == 21, done.stdout + done.stderr
    assert "not made by HashiCorp's key C874011F0AB405110D02105534365D9472D7468F" in done.stderr
    assert "pwned" not in done.stdout + done.stderr
    out = runner.outputs("other")
    assert (out["status"], out["audit-ok"], out["exit-code"]) == ("not-run", "false", "")
    assert "::error" in done.stdout
    assert "not-run" in runner.summary("other")
