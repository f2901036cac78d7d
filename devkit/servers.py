"""Real S3 servers on 127.0.0.1 for the tests: moto's server and a single-node Ceph RGW.

moto is quick and always available but lax about WORM rules; Ceph RGW enforces Object Lock
like AWS does (see scripts/ceph-rgw/README.md for what differs). Both run as separate
processes on free ports and are reached over real HTTP.
"""

from __future__ import annotations

import ctypes
import http.client
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.literals import ObjectLockRetentionModeType

REPO_ROOT = Path(__file__).resolve().parents[1]
CEPH_SCRIPTS = REPO_ROOT / "scripts" / "ceph-rgw"
CEPH_BINARIES = (
    "ceph-mon",
    "ceph-osd",
    "radosgw",
    "radosgw-admin",
    "ceph",
    "ceph-authtool",
    "monmaptool",
    "curl",
    "uuidgen",
)
REGION = "us-east-1"

_MOTO_START_TIMEOUT = 60.0
_CEPH_START_TIMEOUT = 240.0
_START_ATTEMPTS = 3


class ServerUnavailable(Exception):
    """The server could not be started here; ``str(exc)`` says why and how to fix it."""


@dataclass
class S3Server:
    """A running S3-compatible server and the credentials to use it."""

    kind: str  # "moto" | "ceph"
    endpoint: str  # http://127.0.0.1:PORT
    access_key: str
    secret_key: str
    region: str
    workdir: Path
    port: int
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _ceph_dir: Path | None = field(default=None, repr=False)
    _mon_port: int = field(default=0, repr=False)

    def client(self, *, read_timeout: float = 10.0) -> S3Client:
        """A boto3 S3 client: path-style, short timeouts, one retry.

        Short timeouts matter on Ceph: after RGW refuses a PutObject early, botocore's
        ``Expect: 100-continue`` can stall the next request until ``read_timeout``.
        botocore's default checksum behaviour is kept (checked on Ceph 16 over http).
        """
        config = Config(
            region_name=self.region,
            s3={"addressing_style": "path"},
            connect_timeout=3,
            read_timeout=read_timeout,
            retries={"max_attempts": 2, "mode": "standard"},
        )
        client: S3Client = boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=config,
        )
        return client

    def env(self) -> dict[str, str]:
        """Environment variables that point boto3 (and tfaudit) at this server."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }

    def is_running(self) -> bool:
        return answers_http(self.port)

    def stop(self) -> None:
        """Stop the server now (idempotent). Ceph's state directory is deleted too."""
        if self.kind == "moto":
            stop_process(self._process)
            self._process = None
        elif self._ceph_dir is not None:
            _stop_ceph(self._ceph_dir)

    def restart(self) -> None:
        """Stop, then start again on the same port(s). Stored objects are lost."""
        self.stop()
        if self.kind == "moto":
            self._process = _spawn_moto(self.workdir, self.port)
            _wait_for_moto(self._process, self.port, self.workdir)
        else:
            assert self._ceph_dir is not None
            _run_start_rgw(
                self._ceph_dir, self._mon_port, self.port, self.access_key, self.secret_key
            )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_moto(workdir: Path, *, extra_env: Mapping[str, str] | None = None) -> S3Server:
    """Start ``python -m moto.server`` on a free port; its output goes to ``workdir``.

    ``extra_env`` configures moto itself (e.g. ``INITIAL_NO_AUTH_ACTION_COUNT`` for IAM auth).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    last_error: ServerUnavailable | None = None
    for _ in range(_START_ATTEMPTS):
        port = free_port()
        process = _spawn_moto(workdir, port, extra_env)
        try:
            _wait_for_moto(process, port, workdir)
        except ServerUnavailable as exc:
            # Most likely another process grabbed the port between free_port() and bind.
            stop_process(process)
            last_error = exc
            continue
        return S3Server(
            kind="moto",
            endpoint=f"http://127.0.0.1:{port}",
            access_key="testing",
            secret_key="testing",
            region=REGION,
            workdir=workdir,
            port=port,
            _process=process,
        )
    assert last_error is not None
    raise last_error


def start_ceph(workdir: Path) -> S3Server:
    """Start a throwaway Ceph cluster + RGW (scripts/ceph-rgw/start-rgw.sh) on free ports.

    Its state lives in ``workdir/ceph-state`` and is deleted by ``stop()``. A watchdog
    also tears it down if this Python process dies without calling ``stop()``.
    Raises ServerUnavailable if the packages are missing or the cluster does not come up.
    """
    missing = [name for name in CEPH_BINARIES if shutil.which(name) is None]
    if missing:
        raise ServerUnavailable(
            f"Ceph RGW is not installed (missing {', '.join(missing)}); "
            "run scripts/install-ceph.sh as root"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    access_key = "CI" + "".join(secrets.choice(string.ascii_uppercase) for _ in range(18))
    secret_key = secrets.token_hex(20)
    last_error: ServerUnavailable | None = None
    for attempt in range(_START_ATTEMPTS):
        ceph_dir = workdir / f"ceph-state-{attempt}"
        mon_port, rgw_port = free_port(), free_port()
        try:
            _run_start_rgw(ceph_dir, mon_port, rgw_port, access_key, secret_key)
        except ServerUnavailable as exc:
            last_error = exc
            if "already in use" not in str(exc):
                break
            continue
        return S3Server(
            kind="ceph",
            endpoint=f"http://127.0.0.1:{rgw_port}",
            access_key=access_key,
            secret_key=secret_key,
            region=REGION,
            workdir=workdir,
            port=rgw_port,
            _ceph_dir=ceph_dir,
            _mon_port=mon_port,
        )
    assert last_error is not None
    raise last_error


def make_lock_bucket(
    client: S3Client, name: str, *, mode: str = "COMPLIANCE", days: int = 365
) -> None:
    """Create a bucket with versioning, Object Lock and a default retention rule."""
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    client.put_object_lock_configuration(
        Bucket=name,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {
                "DefaultRetention": {
                    "Mode": cast("ObjectLockRetentionModeType", mode),
                    "Days": days,
                }
            },
        },
    )


def make_plain_bucket(client: S3Client, name: str, *, object_lock: bool = False) -> None:
    """Create a bucket with no default retention (and, by default, no Object Lock)."""
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=object_lock)


def unique_bucket(prefix: str = "tfa") -> str:
    """A fresh, DNS-valid bucket name, so tests never share buckets on a session server."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


# --- moto process ---------------------------------------------------------------------


def _spawn_moto(
    workdir: Path, port: int, extra_env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    log = (workdir / f"moto-{port}.log").open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env={**os.environ, **(extra_env or {})},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Own session: a Ctrl-C in the terminal reaches pytest, which stops it cleanly.
            start_new_session=True,
            # And if pytest is killed outright, the kernel stops moto too.
            preexec_fn=_die_with_parent,
        )
    finally:
        log.close()


def _die_with_parent() -> None:
    """In the child before exec: ask Linux for SIGTERM when the parent dies."""
    if sys.platform == "linux":
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _wait_for_moto(process: subprocess.Popen[bytes], port: int, workdir: Path) -> None:
    deadline = time.monotonic() + _MOTO_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerUnavailable(
                f"moto server exited with {process.returncode}: "
                f"{_tail(workdir / f'moto-{port}.log')}"
            )
        if answers_http(port):
            return
        time.sleep(0.1)
    raise ServerUnavailable(f"moto server did not answer on port {port} within the timeout")


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL after 10 s: every server the tests start stops this way."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def answers_http(port: int, path: str = "/") -> bool:
    """True when something on the port answers an HTTP request (any status)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", path)
        connection.getresponse().read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()
    return True


# --- ceph cluster ---------------------------------------------------------------------


def _run_start_rgw(
    ceph_dir: Path, mon_port: int, rgw_port: int, access_key: str, secret_key: str
) -> None:
    env = {
        **os.environ,
        "CEPH_DIR": str(ceph_dir),
        "MON_PORT": str(mon_port),
        "RGW_PORT": str(rgw_port),
        "S3_ACCESS_KEY": access_key,
        "S3_SECRET_KEY": secret_key,
        "READY_TIMEOUT": "60",
        "WATCH_PID": str(os.getpid()),
    }
    try:
        proc = subprocess.run(
            ["bash", str(CEPH_SCRIPTS / "start-rgw.sh")],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_CEPH_START_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        _stop_ceph(ceph_dir)
        raise ServerUnavailable(f"start-rgw.sh did not finish in {exc.timeout:.0f}s") from exc
    if proc.returncode != 0:
        # start-rgw.sh has stopped its daemons (state kept for diagnosis); clean up the rest.
        _stop_ceph(ceph_dir)
        raise ServerUnavailable(
            f"Ceph RGW did not start (start-rgw.sh exit {proc.returncode}): "
            f"{proc.stderr.strip()[-2000:]}"
        )


def _stop_ceph(ceph_dir: Path) -> None:
    if not (ceph_dir / "pids").is_dir():
        return
    subprocess.run(
        ["bash", str(CEPH_SCRIPTS / "stop-rgw.sh"), str(ceph_dir)],
        env={**os.environ, "STOP_GRACE": "5"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
        check=False,
    )


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return "(no log)"
