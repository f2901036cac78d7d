"""The host composite action (``uses: ./tfaudit/host``) end to end under nektos/act.

The job container is the stand-in base image with the host's terraform mounted on PATH (what
hashicorp/setup-terraform gives a real job). The action installs tfaudit-ci with its pinned
uv into a venv, offline here: uv's wheel and every package come from a wheelhouse served on
127.0.0.1 (``TFAUDIT_WHEELHOUSE``; uv's wheel hash is still checked).

``actions/cache`` needs GitHub's cache service and its own code from GitHub, neither reachable
here. act's ``--local-repository`` replaces it with a stand-in that keeps each key as a tar file
in a folder (``CACHE_STANDIN`` below): the action's own logic (the key, skipping restore when
the venv is already set up, skipping install on a hit, saving after an install) runs for real;
the storage behind the cache is the stand-in's. Two act runs share that folder: the first
installs and saves, the second restores and installs nothing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.fake_release import serve
from devkit.servers import S3Server, make_lock_bucket, start_moto, unique_bucket
from tests.support.act_runner import make_repo, run_act, selftest_workflow, verify_stream

CACHE_SHA = "27d5ce7f107fe9357f9df03efb73ab90386fccae"  # the actions/cache pin in host/action.yml

CACHE_STANDIN = {
    "restore/action.yml": """\
name: stand-in for actions/cache/restore (tests only)
inputs:
  path: {required: true}
  key: {required: true}
outputs:
  cache-hit:
    value: ${{ steps.restore.outputs.hit }}
runs:
  using: composite
  steps:
    - id: restore
      shell: bash
      env: {CACHE_PATH: "${{ inputs.path }}", CACHE_KEY: "${{ inputs.key }}"}
      run: |
        if [ -f "/cache/$CACHE_KEY.tar" ]; then
          mkdir -p "$CACHE_PATH" && tar -xf "/cache/$CACHE_KEY.tar" -C "$CACHE_PATH"
          echo "hit=true" >> "$GITHUB_OUTPUT"; echo "stand-in cache: restored $CACHE_KEY"
        else
          echo "hit=false" >> "$GITHUB_OUTPUT"; echo "stand-in cache: miss $CACHE_KEY"
        fi
""",
    "save/action.yml": """\
name: stand-in for actions/cache/save (tests only)
inputs:
  path: {required: true}
  key: {required: true}
runs:
  using: composite
  steps:
    - shell: bash
      env: {CACHE_PATH: "${{ inputs.path }}", CACHE_KEY: "${{ inputs.key }}"}
      run: |
        tar -cf "/cache/$CACHE_KEY.tar" -C "$CACHE_PATH" .
        echo "stand-in cache: saved $CACHE_KEY"
""",
}


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_moto(tmp_path_factory.mktemp("moto-act-host"))
    yield server
    server.stop()


def test_composite_action_installs_once_then_restores(
    docker_engine: None, wheelhouse: Path, moto: S3Server, tmp_path: Path
) -> None:
    terraform = shutil.which("terraform")
    assert terraform is not None, "terraform is not on PATH"
    bucket = unique_bucket()
    make_lock_bucket(moto.client(), bucket, days=1)
    standin = tmp_path / "cache-action"
    for name, text in CACHE_STANDIN.items():
        (standin / name).parent.mkdir(parents=True, exist_ok=True)
        (standin / name).write_text(text)
    cache = tmp_path / "cache"
    cache.mkdir()

    with serve(wheelhouse) as wheels:
        workflow = selftest_workflow(
            "./tfaudit/host", "host", bucket, moto.endpoint, env={"TFAUDIT_WHEELHOUSE": wheels}
        )
        # Later steps can run tfaudit: the action put its venv on GITHUB_PATH.
        workflow += (
            "      - name: tfaudit is on PATH for later steps\n        run: tfaudit --version\n"
        )
        repo = make_repo(tmp_path, workflow)
        args = [
            "--local-repository", f"actions/cache@{CACHE_SHA}={standin}",
            # /tmp (act's RUNNER_TEMP and workspace) on tmpfs: unpacking thousands of small
            # files into Docker's overlay file system takes ~10x longer on these machines.
            "--container-options",
            f"--tmpfs /tmp:exec -v {cache}:/cache "
            f"-v {Path(terraform).resolve()}:/usr/local/bin/terraform:ro",
        ]  # fmt: skip
        cold = run_act(repo, tmp_path / "home", args=args)
        warm = run_act(repo, tmp_path / "home", args=args)

    for run in (cold, warm):
        assert run.returncode == 0, run.log[-8000:]
        assert "checked: status=succeeded audit-ok=true exit-code=0 to-add=0" in run.log
        assert "tfaudit-ci 0.1.0" in run.log  # `tfaudit --version` from GITHUB_PATH
    # Cold: a miss, one install, one save; the second use in the job is already set up.
    assert cold.log.count("| stand-in cache: miss tfaudit-ci-venv") == 1, cold.log[-6000:]
    assert cold.log.count("tfaudit-ci: installed") == 1
    assert cold.log.count("| stand-in cache: saved tfaudit-ci-venv") == 1
    assert "(already set up in this job)" in cold.log
    # Warm: restored under the same key, nothing installed, nothing saved.
    assert warm.log.count("| stand-in cache: restored tfaudit-ci-venv") == 1, warm.log[-6000:]
    assert "tfaudit-ci: installed" not in warm.log
    assert "| stand-in cache: saved tfaudit" not in warm.log
    assert len(list(cache.glob("tfaudit-ci-venv-v1-*-no-extras-*.tar"))) == 1
    verify_stream(f"s3://{bucket}/ci", "host", moto.endpoint, records=4)
