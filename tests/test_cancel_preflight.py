"""A signal that arrives during preflight: the command must never start (issue 7)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from devkit.servers import S3Server
from tests.support.faultproxy import Delay, op_is, running_proxy


def test_sigint_during_preflight_never_starts_the_command(
    s3_server: S3Server, lock_bucket: str, tf_env: dict[str, str], tmp_path: Path
) -> None:
    marker = tmp_path / "command-ran"
    with running_proxy(s3_server.endpoint) as proxy:
        # Preflight's Object Lock read is slowed so the signal lands while it is in flight.
        proxy.add(Delay(5.0), op_is("GetObjectLockConfiguration"))
        env = {
            **tf_env,
            **s3_server.env(),
            "AWS_ENDPOINT_URL_S3": proxy.endpoint,
            "AWS_ENDPOINT_URL": proxy.endpoint,
            "TFAUDIT_WORK_DIR": str(tmp_path / "spools"),
        }
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tfaudit_ci",
                "run",
                "--store",
                f"s3://{lock_bucket}/a",
                "--",
                sys.executable,
                "-c",
                f"open({str(marker)!r}, 'w').close()",
            ],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        # The proxy logs a request once answered: the one before the slowed read is the cue.
        while "GetBucketVersioning" not in proxy.ops() and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert not marker.exists()
    assert b"interrupted before the command started" in err
    assert not (tmp_path / "spools" / "spool").exists() or not any(
        (tmp_path / "spools" / "spool").iterdir()
    )
