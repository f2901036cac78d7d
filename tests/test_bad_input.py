"""The bad-input catalogue (issue 7, section 4).

Each case exits 20, 21, 22 or 23 with one line that says what is wrong and how to fix it,
and never a traceback without ``-v``. Where the local S3 server cannot produce the answer
real AWS gives (moto has no IAM, no clock check, no regions), the fault proxy returns the
answer AWS documents for that situation, and the test says so. ENOSPC and a read-only work
dir are real: a tiny / read-only tmpfs in a private mount namespace (root, or an
unprivileged user namespace; skipped if neither is available).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.servers import S3Server
from tests.support.faultproxy import (
    FaultProxy,
    Matcher,
    Request,
    Respond,
    access_denied,
    clock_skewed,
    running_proxy,
)
from tests.support.tfaudit_proc import chain_records, tfaudit

STREAM = "acme/bad-input"


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    with running_proxy(s3_server.endpoint) as started:
        yield started


def _env(tf_env: dict[str, str], server: S3Server, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **tf_env,
        **server.env(),
        "TFAUDIT_WORK_DIR": str(tmp_path / "spools"),
        "TFAUDIT_CONNECT_TIMEOUT": "2",
        "TFAUDIT_READ_TIMEOUT": "5",
        "TFAUDIT_MAX_ATTEMPTS": "2",
        **extra,
    }


def _via(proxy: FaultProxy, env: dict[str, str]) -> dict[str, str]:
    return {**env, "AWS_ENDPOINT_URL": proxy.endpoint, "AWS_ENDPOINT_URL_S3": proxy.endpoint}


def _marker_command(tmp_path: Path) -> list[str]:
    marker = tmp_path / "command-ran"
    return [sys.executable, "-c", f"open({str(marker)!r}, 'w').close(); print('ran')"]


def _ran(tmp_path: Path) -> bool:
    return (tmp_path / "command-ran").exists()


def _run(
    args: list[str], env: dict[str, str], cwd: Path, command: list[str]
) -> subprocess.CompletedProcess[bytes]:
    return tfaudit(["run", "--stream", STREAM, *args, "--", *command], env=env, cwd=cwd)


def assert_one_line_error(
    proc: subprocess.CompletedProcess[bytes], exit_code: int, *phrases: str
) -> str:
    """The contract: this exit code, one `tfaudit:` line naming a fix, no traceback."""
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == exit_code, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("tfaudit:")]
    errors = [line for line in lines if "error" in line or "AUDIT FAILED" in line]
    assert len(errors) == 1, stderr
    (line,) = errors
    assert "(fix: " in line, line
    for phrase in phrases:
        assert phrase in line, line
    return line


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "phrases"),
    [
        ("store: [unclosed\n", ["not valid YAML", ".tfaudit.yml"]),
        ("- just\n- a list\n", ["must be a mapping"]),
        ("stor: s3://bucket/x\n", ["unknown key 'stor'", "known keys"]),
        ("retention-days: many\n", ["retention-days", "whole number"]),
        ("lock-mode: FOREVER\n", ["lock-mode", "COMPLIANCE"]),
        ("upload-plan-file: perhaps\n", ["upload-plan-file", "true or false"]),
        ("redact: 5\n", ["redact", "list of strings"]),
    ],
    ids=["malformed-yaml", "not-a-mapping", "unknown-key", "wrong-type-int", "bad-choice",
         "wrong-type-bool", "wrong-type-list"],
)  # fmt: skip
def test_bad_config_file_exits_20(
    config: str, phrases: list[str], tf_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / ".tfaudit.yml").write_text(config, encoding="utf-8")
    proc = _run([], tf_env, tmp_path, _marker_command(tmp_path))
    assert_one_line_error(proc, 20, *phrases)
    assert not _ran(tmp_path)


def test_bad_env_value_names_the_variable(tf_env: dict[str, str], tmp_path: Path) -> None:
    env = {**tf_env, "TFAUDIT_MAX_ATTEMPTS": "0"}
    proc = _run(["--store", "file:///tmp/x"], env, tmp_path, _marker_command(tmp_path))
    assert_one_line_error(proc, 20, "TFAUDIT_MAX_ATTEMPTS", "at least 1")


@pytest.mark.parametrize(
    ("url", "phrase"),
    [
        ("ftp://bucket/x", "unsupported store URL"),
        ("s3:///no-bucket", "has no bucket"),
        ("gs://", "has no bucket"),
        ("azblob://account", "lacks an account or container"),
        ("file://host/path", "has a host"),
        ("bucket/prefix", "unsupported store URL"),
    ],
)
def test_bad_store_url_exits_20(
    url: str, phrase: str, tf_env: dict[str, str], tmp_path: Path
) -> None:
    proc = _run(["--store", url], tf_env, tmp_path, _marker_command(tmp_path))
    assert_one_line_error(proc, 20, phrase)
    assert not _ran(tmp_path)


# -- the terraform binary ------------------------------------------------------------------


def _fake_tool(path: Path, mode: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\necho fake terraform\n", encoding="utf-8")
    path.chmod(mode)
    return path


def _unusable_terraform(kind: str, tmp_path: Path) -> Path:
    if kind == "missing":
        return tmp_path / "bin" / "terraform"
    if kind == "not-executable":
        return _fake_tool(tmp_path / "bin" / "terraform", 0o644)
    # Unreadable: its directory may not be searched, so nobody can reach the file. (A mode
    # 000 file would not do: root reads and runs anything with one execute bit.)
    tool = _fake_tool(tmp_path / "locked" / "terraform", 0o755)
    tool.parent.chmod(0o000)
    return tool


@pytest.mark.parametrize("kind", ["missing", "not-executable", "unreadable"])
def test_unusable_terraform_binary_exits_20_and_leaves_nothing_to_recover(
    kind: str, s3_server: S3Server, lock_bucket: str, tf_env: dict[str, str], tmp_path: Path
) -> None:
    if kind == "unreadable" and os.geteuid() == 0 and not _can_drop_privileges(tmp_path):
        pytest.skip("root reaches any file, and this Python cannot run as an unprivileged user")
    terraform = _unusable_terraform(kind, tmp_path)
    work = _shared_dir(tmp_path) if kind == "unreadable" else tmp_path
    env = _env(tf_env, s3_server, work)
    store = ["--store", f"s3://{lock_bucket}/audit"]
    command = [str(terraform), "plan", "-input=false"]
    if kind == "unreadable":
        env = _unprivileged_env(env, work)
        proc = _run_unprivileged(["run", "--stream", STREAM, *store, "--", *command], env, work)
    else:
        proc = _run(store, env, work, command)
    if terraform.parent.exists():
        terraform.parent.chmod(0o755)
    if work != tmp_path:
        shutil.rmtree(work, ignore_errors=True)
    phrase = {"missing": "command not found", "not-executable": "not executable"}.get(kind, "")
    assert_one_line_error(proc, 20, str(terraform), phrase)
    # The hint names nothing the configuration would refuse (it once said `terraform-bin`).
    assert b"terraform-bin" not in proc.stderr
    recover = tfaudit(["recover"], env=_env(tf_env, s3_server, work), cwd=work)
    assert b"nothing to recover" in recover.stderr, recover.stderr
    assert chain_records(s3_server.client(), lock_bucket, STREAM, prefix="audit") == []


def _can_drop_privileges(tmp_path: Path) -> bool:
    """Can this interpreter run as `nobody` (it may live under root's private home)?"""
    shared = _shared_dir(tmp_path)
    try:
        probe = _run_unprivileged(["--version"], {"PATH": os.defpath}, shared)
    except OSError:
        return False
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    return probe.returncode == 0


def _shared_dir(tmp_path: Path) -> Path:
    """A directory an unprivileged user can use (pytest's tmp dirs are private to root)."""
    shared = Path(tempfile.gettempdir()) / f"tfaudit-bad-input-{os.getpid()}-{tmp_path.name}"
    shared.mkdir(mode=0o777, exist_ok=True)
    shared.chmod(0o777)
    return shared


def _unprivileged_env(env: dict[str, str], work: Path) -> dict[str, str]:
    aws = work / "aws"
    aws.mkdir(exist_ok=True)
    for name in ("config", "credentials"):
        (aws / name).touch()
    return {
        **env,
        "HOME": str(work),
        "AWS_CONFIG_FILE": str(aws / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(aws / "credentials"),
        "TFAUDIT_WORK_DIR": str(work / "spools"),
    }


def _run_unprivileged(
    args: list[str], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[bytes]:
    kwargs: dict[str, object] = {}
    if os.geteuid() == 0:
        kwargs = {"user": 65534, "group": 65534, "extra_groups": []}
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "tfaudit_ci", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        timeout=300,
        check=False,
        **kwargs,
    )


# -- credentials, region, bucket, permissions, clock -------------------------------------------


def test_missing_credentials_exit_21(
    s3_server: S3Server, lock_bucket: str, tf_env: dict[str, str], tmp_path: Path
) -> None:
    env = _env(tf_env, s3_server, tmp_path)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        env.pop(name, None)
    proc = _run(["--store", f"s3://{lock_bucket}/a"], env, tmp_path, _marker_command(tmp_path))
    assert_one_line_error(proc, 21, "no AWS credentials", "OIDC role")
    assert not _ran(tmp_path)


def test_missing_bucket_exits_21(
    s3_server: S3Server, tf_env: dict[str, str], tmp_path: Path
) -> None:
    env = _env(tf_env, s3_server, tmp_path)
    proc = _run(["--store", "s3://tfa-no-such-bucket/a"], env, tmp_path, _marker_command(tmp_path))
    assert_one_line_error(proc, 21, "tfa-no-such-bucket", "does not exist", "Object Lock")
    assert not _ran(tmp_path)


def _signed_for(region: str) -> Matcher:
    def match(request: Request) -> bool:
        return f"/{region}/s3/aws4_request" not in request.headers.get("authorization", "")

    return match


def test_wrong_region_is_followed_to_the_bucket_region(
    s3_server: S3Server, lock_bucket: str, proxy: FaultProxy, tf_env: dict[str, str],
    tmp_path: Path,
) -> None:  # fmt: skip
    """Credentials used for the wrong region.

    Emulated (moto ignores regions): like AWS, the proxy refuses any request not signed
    for the bucket's region (eu-west-1): HEAD with a bare 400 and ``x-amz-bucket-region``,
    others with ``AuthorizationHeaderMalformed`` naming the region. botocore re-signs for
    that region and retries, so the run succeeds and the record is complete.
    """
    wrong = Respond(
        400,
        "AuthorizationHeaderMalformed",
        "the region 'us-east-1' is wrong; expecting 'eu-west-1'</Message><Region>eu-west-1"
        "</Region><Message>",
        headers=(("x-amz-bucket-region", "eu-west-1"),),
    )
    gate = proxy.add(wrong, _signed_for("eu-west-1"), times=None)
    env = _via(proxy, _env(tf_env, s3_server, tmp_path))
    proc = _run(["--store", f"s3://{lock_bucket}/a"], env, tmp_path, _marker_command(tmp_path))
    assert gate.fired >= 1
    assert proc.returncode == 0, proc.stderr.decode()
    (record,) = chain_records(s3_server.client(), lock_bucket, STREAM, prefix="a")
    assert record["status"] == "succeeded"


def test_region_that_cannot_be_resolved_exits_21(
    s3_server: S3Server, lock_bucket: str, proxy: FaultProxy, tf_env: dict[str, str],
    tmp_path: Path,
) -> None:  # fmt: skip
    """Emulated: the store refuses every signature and never names the right region."""
    proxy.add(Respond(400, "AuthorizationHeaderMalformed", "region is wrong"), times=None)
    env = _via(proxy, _env(tf_env, s3_server, tmp_path))
    proc = _run(["--store", f"s3://{lock_bucket}/a"], env, tmp_path, _marker_command(tmp_path))
    assert_one_line_error(proc, 21)
    assert not _ran(tmp_path)


@pytest.mark.parametrize(
    ("op", "exit_code", "phrases"),
    [
        ("PutObject", 22, ["AccessDenied", "s3:PutObject"]),
        ("PutObjectRetention", 22, ["AccessDenied", "s3:PutObjectRetention"]),
        ("HeadObject", 23, ["reading back", "s3:GetObjectRetention"]),
    ],
)
def test_access_denied_on_an_operation(
    op: str,
    exit_code: int,
    phrases: list[str],
    s3_server: S3Server,
    lock_bucket: str,
    proxy: FaultProxy,
    tf_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """Emulated (moto has no IAM): the proxy answers AccessDenied as AWS does.

    A role without s3:PutObjectRetention is refused on the PutObject that carries the lock
    headers (and on PUT ?retention); a role without s3:GetObjectRetention/GetObjectVersion
    gets a bare 403 on HeadObject of a version.
    """

    def match(request: Request) -> bool:
        if op == "PutObjectRetention":
            locked = "x-amz-object-lock-mode" in request.headers
            return request.op == "PutObjectRetention" or (request.op == "PutObject" and locked)
        return request.op == op

    denied = proxy.add(access_denied(), match, times=None)
    env = _via(proxy, _env(tf_env, s3_server, tmp_path))
    proc = _run(["--store", f"s3://{lock_bucket}/a"], env, tmp_path, _marker_command(tmp_path))
    line = assert_one_line_error(proc, exit_code, *phrases)
    assert denied.fired >= 1 and _ran(tmp_path)
    assert "the spool is kept at" in line
    assert chain_records(s3_server.client(), lock_bucket, STREAM, prefix="a") == []


def test_clock_skew_exits_21_naming_the_clock(
    s3_server: S3Server, lock_bucket: str, proxy: FaultProxy, tf_env: dict[str, str],
    tmp_path: Path,
) -> None:  # fmt: skip
    """Emulated: the store's clock is an hour ahead; S3 answers RequestTimeTooSkewed (HEAD:
    a bare 403 whose Date header shows the store's time)."""
    skewed = proxy.add(clock_skewed(), times=None)
    env = _via(proxy, _env(tf_env, s3_server, tmp_path))
    proc = _run(["--store", f"s3://{lock_bucket}/a"], env, tmp_path, _marker_command(tmp_path))
    assert_one_line_error(proc, 21, "RequestTimeTooSkewed", "clock", "NTP")
    assert skewed.fired >= 1 and not _ran(tmp_path)


# -- the local disk -----------------------------------------------------------------------------


def _mount_namespace_prefix(mount: str) -> list[str]:
    """argv prefix that runs the rest inside a private mount namespace after ``mount``."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    flags = "-m" if os.geteuid() == 0 else "-Urm"
    probe = subprocess.run(["unshare", flags, "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"no mount namespace here: {probe.stderr.decode().strip()}")
    return ["unshare", flags, "sh", "-c", f'{mount} && exec "$@"', "sh"]


def test_full_spool_disk_exits_22_and_says_so(
    s3_server: S3Server, lock_bucket: str, tf_env: dict[str, str], tmp_path: Path
) -> None:
    """A real ENOSPC: the work dir is a 256 KiB tmpfs; the command prints 2 MiB."""
    work = tmp_path / "tiny"
    work.mkdir()
    script = (
        "import sys\nfor _ in range(20 * 1024):\n    sys.stdout.buffer.write(b'y' * 99 + b'\\n')\n"
    )
    prefix = _mount_namespace_prefix(f"mount -t tmpfs -o size=256k tmpfs {work}")
    env = _env(tf_env, s3_server, tmp_path, TFAUDIT_WORK_DIR=str(work))
    argv = ["run", "--stream", STREAM, "--store", f"s3://{lock_bucket}/a", "--"]
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "tfaudit_ci", *argv, sys.executable, "-c", script],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert_one_line_error(proc, 22, "No space left on device", "--work-dir")
    assert proc.stdout.count(b"y" * 99 + b"\n") == 20 * 1024  # the console got everything
    assert chain_records(s3_server.client(), lock_bucket, STREAM, prefix="a") == []


def test_read_only_work_dir_exits_20_before_running(
    s3_server: S3Server, lock_bucket: str, tf_env: dict[str, str], tmp_path: Path
) -> None:
    work = tmp_path / "readonly"
    work.mkdir()
    prefix = _mount_namespace_prefix(f"mount -t tmpfs -o ro,size=64k tmpfs {work}")
    env = _env(tf_env, s3_server, tmp_path, TFAUDIT_WORK_DIR=str(work))
    argv = ["run", "--stream", STREAM, "--store", f"s3://{lock_bucket}/a", "--"]
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "tfaudit_ci", *argv, *_marker_command(tmp_path)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert_one_line_error(proc, 20, "Read-only file system", "--work-dir")
    assert not _ran(tmp_path)
