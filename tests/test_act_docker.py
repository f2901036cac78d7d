"""The Docker action (``uses: ./tfaudit``) end to end under nektos/act.

act gives the step its inputs, reads its outputs and step summary, and runs the
post-entrypoint in a new container, as GitHub's runner does; the image is the one the
Dockerfile builds here (devkit/docker_image.py). Under act ``GITHUB_WORKSPACE`` is the host's
path, not /github/workspace: the action keeps its spool in the workspace either way, so the
post step's container finds it. S3 is moto on 127.0.0.1 (act's host networking).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.docker_image import ActionImage, tag_as
from devkit.servers import (
    S3Server,
    make_lock_bucket,
    make_plain_bucket,
    start_moto,
    unique_bucket,
)
from tests.support.act_runner import (
    ActUnavailable,
    act_binary,
    make_repo,
    run_act,
    selftest_workflow,
    verify_stream,
)

ACT_IMAGE = "act-tfaudit-dockeraction:latest"  # act's name for the image of `uses: ./tfaudit`

UNLOCKED_WORKFLOW = """\
name: unlocked
on: push
jobs:
  unlocked:
    runs-on: ubuntu-latest
    env:
      AWS_ACCESS_KEY_ID: testing
      AWS_SECRET_ACCESS_KEY: testing
      AWS_DEFAULT_REGION: us-east-1
    steps:
      - uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2
      - name: plan against an unlocked bucket
        id: plan
        continue-on-error: true
        uses: ./tfaudit
        with:
          # Not read-only (version or plan would start beside preflight): it waits for it.
          command: workspace show
          store: s3://BUCKET/ci
          stream: unlocked
          endpoint-url: ENDPOINT
      - name: Check the outputs of a run that never started
        env:
          STATUS: ${{ steps.plan.outputs.status }}
          AUDIT_OK: ${{ steps.plan.outputs.audit-ok }}
        run: |
          echo "checked: status=$STATUS audit-ok=$AUDIT_OK"
          test "$STATUS" = not-run
          test "$AUDIT_OK" = false
"""


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_moto(tmp_path_factory.mktemp("moto-act"))
    yield server
    server.stop()


@pytest.fixture
def act_image(action_image: ActionImage) -> ActionImage:
    try:
        act_binary()
    except ActUnavailable as exc:
        pytest.fail(str(exc))  # a dev dependency: missing means a broken environment
    tag_as(action_image, [ACT_IMAGE])
    return action_image


def fill(text: str, bucket: str, endpoint: str) -> str:
    return text.replace("BUCKET", bucket).replace("ENDPOINT", endpoint)


def test_docker_action_under_act(act_image: ActionImage, moto: S3Server, tmp_path: Path) -> None:
    bucket = unique_bucket()
    make_lock_bucket(moto.client(), bucket, days=1)
    repo = make_repo(tmp_path, selftest_workflow("./tfaudit", "selftest", bucket, moto.endpoint))
    run = run_act(repo, tmp_path / "home")
    assert run.returncode == 0, run.log[-8000:]
    assert "checked: status=succeeded audit-ok=true exit-code=0 to-add=0" in run.log
    # act shows what the step wrote to GITHUB_STEP_SUMMARY.
    assert "Summary - ### tfaudit: ✅ succeeded, audit recorded" in run.log
    # The post-entrypoint ran, in its own container, once per use of the action.
    assert run.log.count("Success - Post plan") == 1, run.log[-4000:]
    assert run.log.count("Success - Post init") == 1
    assert "nothing to recover under" in run.log
    verify_stream(f"s3://{bucket}/ci", "selftest", moto.endpoint, records=2)


def test_a_run_that_cannot_start_still_reports_under_act(
    act_image: ActionImage, moto: S3Server, tmp_path: Path
) -> None:
    """Exit 21 (the store is not WORM): the outputs still say not-run and audit-ok false."""
    bucket = unique_bucket()
    make_plain_bucket(moto.client(), bucket)
    repo = make_repo(tmp_path, fill(UNLOCKED_WORKFLOW, bucket, moto.endpoint))
    run = run_act(repo, tmp_path / "home")
    assert "is not locked as policy requires" in run.log
    assert "checked: status=not-run audit-ok=false" in run.log, run.log[-6000:]
    assert run.returncode == 0, run.log[-6000:]
