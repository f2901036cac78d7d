"""The GitLab component and the include template, run by gitlab-ci-local (npm, 4.70.1).

gitlab-ci-local runs a job's script in the job's image with the Docker engine, collects its
artifacts and reports, as a GitLab runner does. The image is the one the Dockerfile builds
here, tagged as the component's *default* image, so the test uses the default unchanged.
Defaults this test sets, and why:

* ``GITLAB_CI=true``: gitlab-ci-local sets it to false unless told, and tfaudit reports to
  GitLab (the dotenv and terraform reports) only inside GitLab CI;
* ``--helper-image``: gitlab-ci-local's own helper image cannot be pulled here; the stand-in
  base image does its job (copying files in and out of volumes);
* ``--network host``: S3 is moto on 127.0.0.1.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from devkit.docker_image import (
    BASE_IMAGE,
    REPO_ROOT,
    ActionImage,
    docker_env,
    tag_as,
    tools_dir,
)
from devkit.servers import S3Server, make_lock_bucket, start_moto, unique_bucket
from tests.support.act_runner import verify_stream

CONFIG = 'output "greeting" {\n  value = "hello"\n}\n'
SECRETS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def gitlab_ci_local() -> Path:
    binary = tools_dir() / "gitlab-ci-local" / "node_modules" / ".bin" / "gitlab-ci-local"
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: run scripts/install-runners.sh")
    return binary


def component_default_image() -> str:
    spec = next(yaml.safe_load_all((REPO_ROOT / "templates" / "tfaudit.yml").read_text()))
    return str(spec["spec"]["inputs"]["image"]["default"])


@pytest.fixture
def default_image(action_image: ActionImage) -> str:
    name = component_default_image()
    tag_as(action_image, [name])
    return name


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[S3Server]:
    server = start_moto(tmp_path / "moto")
    yield server
    server.stop()


def make_project(root: Path, pipeline: str) -> Path:
    project = root / "project"
    (project / "templates").mkdir(parents=True)
    for name in ("tfaudit.yml", "tfaudit.gitlab-ci.yml"):
        (project / "templates" / name).write_text((REPO_ROOT / "templates" / name).read_text())
    (project / "infra").mkdir()
    (project / "infra" / "main.tf").write_text(CONFIG)
    (project / ".gitlab-ci.yml").write_text(pipeline)
    git = ["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "test"]):
        subprocess.run([*git, *args], check=True, capture_output=True, timeout=60)
    return project


def command(project: Path, job: str) -> list[str]:
    variables = {"GITLAB_CI": "true", **SECRETS}
    return [
        str(gitlab_ci_local()), "--home", str(project.parent / "home"),
        "--pull-policy", "if-not-present", "--network", "host", "--helper-image", BASE_IMAGE,
        *[item for name, value in variables.items() for item in ("--variable", f"{name}={value}")],
        job,
    ]  # fmt: skip


def run_pipeline(project: Path, job: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(project, job),
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
        env=docker_env(),
        check=False,
    )


def artifacts(project: Path, job: str) -> Path:
    return project / ".gitlab-ci-local" / "artifacts" / job


def dotenv(project: Path, job: str) -> dict[str, str]:
    path = artifacts(project, job) / ".gitlab-ci-reports" / "dotenv" / "tfaudit.env"
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return dict(pairs)


def test_component_with_its_default_image(
    default_image: str, moto: S3Server, tmp_path: Path
) -> None:
    bucket = unique_bucket()
    make_lock_bucket(moto.client(), bucket, days=1)
    pipeline = f"""\
include:
  - local: templates/tfaudit.yml
    inputs:
      as: plan
      command: plan -input=false -out=tfplan
      working-directory: infra
      store: s3://{bucket}/ci
      stream: component
      endpoint-url: {moto.endpoint}
      retention-days: "1"
      tool: tofu
"""
    project = make_project(tmp_path, pipeline)
    done = run_pipeline(project, "plan")
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-6000:]
    assert f"plan starting {default_image}" in log
    # tool: tofu put the bundled (stand-in) OpenTofu first on PATH for init and the command.
    assert "/opt/tfaudit/tools/tofu/" in log and "(bundled)" in log
    assert "PASS" in log and "plan" in log
    env = dotenv(project, "plan")
    assert (env["TFAUDIT_STATUS"], env["TFAUDIT_AUDIT_OK"], env["TFAUDIT_EXIT_CODE"]) == (
        "succeeded",
        "true",
        "0",
    )
    assert env["TFAUDIT_RECORD_URI"].startswith(f"s3://{bucket}/ci/")
    # (gitlab-ci-local collects only dotenv reports; the terraform report it ignores.)
    verify_stream(f"s3://{bucket}/ci", "component", moto.endpoint, records=1)


def test_include_template_keeps_an_unshipped_spool_at_its_work_dir(
    default_image: str, moto: S3Server, tmp_path: Path
) -> None:
    """The store goes away mid-run: the spool stays in work-dir, and the artifacts carry it."""
    del default_image
    bucket = unique_bucket()
    make_lock_bucket(moto.client(), bucket, days=1)
    pipeline = f"""\
include:
  - local: templates/tfaudit.gitlab-ci.yml

plan:
  extends: .tfaudit
  variables:
    INPUT_INIT_COMMAND: ""
    INPUT_TERRAFORM_BIN: sh
    INPUT_COMMAND: -c 'echo job-is-running; sleep 8; echo job-done'
    INPUT_WORKING_DIRECTORY: infra
    INPUT_STORE: s3://{bucket}/ci
    INPUT_STREAM: include
    INPUT_ENDPOINT_URL: {moto.endpoint}
    INPUT_RETENTION_DAYS: "1"
    INPUT_WORK_DIR: audit-spool
"""
    project = make_project(tmp_path, pipeline)
    output = tmp_path / "gitlab-ci-local.log"
    with output.open("w") as sink:
        process = subprocess.Popen(
            command(project, "plan"),
            cwd=project,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=docker_env(),
        )
        deadline = time.monotonic() + 180
        while "job-is-running" not in output.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "job-is-running" in output.read_text(), output.read_text()[-4000:]
        moto.stop()  # the store is unreachable from here on: shipping must fail
        process.wait(timeout=300)
    log = output.read_text()
    assert process.returncode != 0, log[-4000:]
    assert "job-done" in log
    assert "tfaudit recover failed" in log or "could not" in log.lower(), log[-4000:]
    expanded = yaml.safe_load((project / ".gitlab-ci-local" / "expanded-gitlab-ci.yml").read_text())
    assert expanded["plan"]["artifacts"]["paths"] == ["${INPUT_WORK_DIR}/"]
    kept = sorted(artifacts(project, "plan").glob("audit-spool/spool/*/output.log"))
    assert len(kept) == 1, sorted(str(p) for p in artifacts(project, "plan").rglob("*"))
    assert re.search(r"job-is-running", kept[0].read_text())
