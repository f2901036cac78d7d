"""`tfaudit recover` never ships the spool of a run that is still going (issue 7)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.support.tfaudit_proc import tfaudit


def test_recover_leaves_a_live_run_alone(tmp_path: Path) -> None:
    store = (tmp_path / "store").as_uri()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TFAUDIT_WORK_DIR": str(tmp_path / "w")}
    common = ["--store", store, "--stream", "s", "--on-unlocked", "warn"]
    script = "import time; print('working', flush=True); time.sleep(3); print('done')"
    run = subprocess.Popen(
        [sys.executable, "-m", "tfaudit_ci", "run", *common, "--", sys.executable, "-c", script],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert run.stdout is not None
    assert run.stdout.readline() == b"working\n"
    recover = tfaudit(["recover", *common], env=env, cwd=tmp_path)
    assert recover.returncode == 0, recover.stderr.decode()
    assert b"in use by another tfaudit; skipped" in recover.stderr
    assert not (tmp_path / "store" / "s" / "chain").exists()
    assert run.wait(timeout=60) == 0
    time.sleep(0.1)
    chain = sorted((tmp_path / "store" / "s" / "chain").iterdir())
    assert [p.name for p in chain] == ["000000000000.json"]
    again = tfaudit(["recover", *common], env=env, cwd=tmp_path)
    assert b"nothing to recover" in again.stderr
