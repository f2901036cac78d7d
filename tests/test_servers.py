"""The test infrastructure itself is real: S3 servers over HTTP and an offline terraform.

These tests also pin down the Object Lock behaviours of each server that the product has
to cope with (see scripts/ceph-rgw/README.md): if a server upgrade changes one, a test here
fails and says which.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from devkit.servers import (
    S3Server,
    ServerUnavailable,
    make_lock_bucket,
    make_plain_bucket,
    start_ceph,
    unique_bucket,
)
from devkit.tfhelpers import (
    NULL_PROVIDER_VERSION,
    PINNED_TERRAFORM_VERSION,
    isolated_env,
    terraform_binaries,
    terraform_version,
    tf_init,
    write_null_config,
)

TESTS_DIR = Path(__file__).resolve().parent


def _status(exc: ClientError) -> int:
    status: int = exc.response["ResponseMetadata"]["HTTPStatusCode"]
    return status


def _put(server: S3Server, bucket: str, key: str, body: bytes, *, create_only: bool = False) -> str:
    client = server.client()
    if create_only:
        response = client.put_object(
            Bucket=bucket, Key=key, Body=body, ChecksumAlgorithm="SHA256", IfNoneMatch="*"
        )
    else:
        response = client.put_object(Bucket=bucket, Key=key, Body=body, ChecksumAlgorithm="SHA256")
    return response["VersionId"]


# --- S3 servers -------------------------------------------------------------------------


def test_lock_bucket_has_versioning_and_object_lock(s3_server: S3Server, lock_bucket: str) -> None:
    client = s3_server.client()
    assert client.get_bucket_versioning(Bucket=lock_bucket)["Status"] == "Enabled"
    config = client.get_object_lock_configuration(Bucket=lock_bucket)["ObjectLockConfiguration"]
    assert config["ObjectLockEnabled"] == "Enabled"
    assert config["Rule"]["DefaultRetention"]["Mode"] == "COMPLIANCE"
    assert config["Rule"]["DefaultRetention"]["Days"] == 365


def test_object_gets_the_default_retention(s3_server: S3Server, lock_bucket: str) -> None:
    version = _put(s3_server, lock_bucket, "log.txt", b"hello")
    head = s3_server.client().head_object(Bucket=lock_bucket, Key="log.txt", VersionId=version)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    earliest = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=364)
    assert head["ObjectLockRetainUntilDate"] > earliest


def test_compliance_version_cannot_be_deleted(s3_server: S3Server, lock_bucket: str) -> None:
    client = s3_server.client()
    version = _put(s3_server, lock_bucket, "log.txt", b"evidence")
    with pytest.raises(ClientError) as refused:
        client.delete_object(
            Bucket=lock_bucket, Key="log.txt", VersionId=version, BypassGovernanceRetention=True
        )
    assert _status(refused.value) == 403
    body = client.get_object(Bucket=lock_bucket, Key="log.txt", VersionId=version)["Body"]
    assert body.read() == b"evidence"


def test_plain_bucket_has_no_object_lock(s3_server: S3Server) -> None:
    client = s3_server.client()
    name = unique_bucket()
    make_plain_bucket(client, name)
    client.head_bucket(Bucket=name)
    with pytest.raises(ClientError) as missing:
        client.get_object_lock_configuration(Bucket=name)
    assert _status(missing.value) == 404


def test_lock_bucket_with_short_governance_retention(s3_server: S3Server) -> None:
    client = s3_server.client()
    name = unique_bucket()
    make_lock_bucket(client, name, mode="GOVERNANCE", days=1)
    rule = client.get_object_lock_configuration(Bucket=name)["ObjectLockConfiguration"]["Rule"]
    assert rule["DefaultRetention"]["Mode"] == "GOVERNANCE"
    assert rule["DefaultRetention"]["Days"] == 1


def test_server_env_reaches_boto3_in_a_subprocess(
    s3_server: S3Server, lock_bucket: str, tmp_path: Path
) -> None:
    """env() alone (no endpoint in code) must point a fresh process's boto3 at the server."""
    script = textwrap.dedent(
        """
        import json, sys, boto3
        client = boto3.client("s3")
        config = client.get_object_lock_configuration(Bucket=sys.argv[1])
        print(json.dumps(config["ObjectLockConfiguration"]["ObjectLockEnabled"]))
        """
    )
    env = {**isolated_env(tmp_path), **s3_server.env()}
    proc = subprocess.run(
        [sys.executable, "-c", script, lock_bucket],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == "Enabled"


@pytest.mark.moto
def test_moto_honours_if_none_match(s3_server: S3Server, lock_bucket: str) -> None:
    _put(s3_server, lock_bucket, "chain/0", b"first", create_only=True)
    with pytest.raises(ClientError) as conflict:
        _put(s3_server, lock_bucket, "chain/0", b"second", create_only=True)
    assert _status(conflict.value) == 412
    versions = s3_server.client().list_object_versions(Bucket=lock_bucket, Prefix="chain/0")
    assert len(versions["Versions"]) == 1


@pytest.mark.ceph
def test_ceph_ignores_if_none_match(s3_server: S3Server, lock_bucket: str) -> None:
    """Ceph 16 accepts a second create-only put: it silently becomes a newer version.

    The product must arbitrate by listing versions (the oldest one wins), not trust a 412.
    """
    first = _put(s3_server, lock_bucket, "chain/0", b"first", create_only=True)
    second = _put(s3_server, lock_bucket, "chain/0", b"second", create_only=True)
    assert first != second
    versions = s3_server.client().list_object_versions(Bucket=lock_bucket, Prefix="chain/0")
    assert {v["VersionId"] for v in versions["Versions"]} == {first, second}


@pytest.mark.ceph
def test_ceph_refuses_weakening_compliance_retention(s3_server: S3Server, lock_bucket: str) -> None:
    client = s3_server.client()
    version = _put(s3_server, lock_bucket, "log.txt", b"evidence")
    tomorrow = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    for mode in ("COMPLIANCE", "GOVERNANCE"):
        with pytest.raises(ClientError) as refused:
            client.put_object_retention(
                Bucket=lock_bucket,
                Key="log.txt",
                VersionId=version,
                Retention={"Mode": mode, "RetainUntilDate": tomorrow},
                BypassGovernanceRetention=True,
            )
        assert _status(refused.value) == 403, mode
    retention = client.get_object_retention(Bucket=lock_bucket, Key="log.txt", VersionId=version)
    assert retention["Retention"]["Mode"] == "COMPLIANCE"
    assert retention["Retention"]["RetainUntilDate"] > tomorrow


@pytest.mark.ceph
def test_ceph_refuses_suspending_versioning(s3_server: S3Server, lock_bucket: str) -> None:
    client = s3_server.client()
    with pytest.raises(ClientError) as refused:
        client.put_bucket_versioning(
            Bucket=lock_bucket, VersioningConfiguration={"Status": "Suspended"}
        )
    assert _status(refused.value) == 409
    assert client.get_bucket_versioning(Bucket=lock_bucket)["Status"] == "Enabled"


def test_moto_server_stop_and_restart(moto_server: S3Server) -> None:
    client = moto_server.client()
    make_plain_bucket(client, "before-stop")
    moto_server.stop()
    assert not moto_server.is_running()
    with pytest.raises(EndpointConnectionError):
        client.list_buckets()
    moto_server.restart()
    assert moto_server.is_running()
    # Same endpoint, fresh state.
    assert moto_server.client().list_buckets()["Buckets"] == []


def test_start_ceph_without_packages_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    with pytest.raises(ServerUnavailable, match=r"install-ceph\.sh"):
        start_ceph(tmp_path / "ceph")


def _cluster_pids(state_dir: Path) -> list[int]:
    # The daemons' command lines name their config file inside the state dir.
    conf = str(state_dir / "ceph.conf").encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if conf in cmdline and state != "Z":
                pids.append(int(proc.name))
    return pids


@pytest.mark.ceph
@pytest.mark.slow
def test_ceph_stop_kills_daemons_and_deletes_state(s3_server: S3Server, tmp_path: Path) -> None:
    """A second, private cluster (the session one stays up): stop() leaves nothing behind."""
    server = start_ceph(tmp_path / "ceph")
    try:
        state_dirs = list((tmp_path / "ceph").glob("ceph-state-*"))
        assert len(state_dirs) == 1
        assert len(_cluster_pids(state_dirs[0])) == 3  # mon, osd, rgw
        assert server.is_running()
    finally:
        server.stop()
    assert not server.is_running()
    assert _cluster_pids(state_dirs[0]) == []
    assert not state_dirs[0].exists()


@pytest.mark.ceph
@pytest.mark.slow
def test_ceph_watchdog_cleans_up_after_a_killed_owner(s3_server: S3Server, tmp_path: Path) -> None:
    """If the Python process that started Ceph dies without stop(), the daemons go too."""
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(TESTS_DIR.parent)!r})
        from devkit.servers import start_ceph
        start_ceph(__import__("pathlib").Path(sys.argv[1]))
        os._exit(0)  # no stop(), no finalizers
        """
    )
    workdir = tmp_path / "ceph"
    proc = subprocess.run(
        [sys.executable, "-c", script, str(workdir)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    state_dir = workdir / "ceph-state-0"
    # Polls for the watchdog (1 s period); the deadline only bounds a broken watchdog.
    deadline = time.monotonic() + 60
    while (_cluster_pids(state_dir) or state_dir.exists()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _cluster_pids(state_dir) == []
    assert not state_dir.exists()


# --- terraform ----------------------------------------------------------------------------


def test_terraform_binaries_report_their_versions() -> None:
    binaries = terraform_binaries()
    assert binaries[0][0] == PINNED_TERRAFORM_VERSION
    for version, path in binaries:
        assert path.is_file()
        assert terraform_version(path) == version
    assert len({path.resolve() for _, path in binaries}) == len(binaries)


def test_isolated_env_keeps_nothing_from_ci(tmp_path: Path) -> None:
    base = {
        "PATH": "/usr/bin:/bin",
        "GITHUB_ACTIONS": "true",
        "GITHUB_TOKEN": "ghp_should_not_leak",
        "GITLAB_CI": "true",
        "CI": "true",
        "CI_JOB_TOKEN": "glcbt-should-not-leak",
        "TF_PLUGIN_CACHE_DIR": "/somewhere",
        "AWS_PROFILE": "prod",
        "AWS_SESSION_TOKEN": "real-token",
        "HOME": "/home/ci",
    }
    env = isolated_env(tmp_path, base)
    assert env["PATH"] == "/usr/bin:/bin"
    assert not [k for k in env if k.startswith(("GITHUB_", "GITLAB_", "CI"))]
    assert set(base) & set(env) == {"PATH", "HOME"}
    assert env["HOME"] == str(tmp_path.resolve() / "home")
    assert "TF_PLUGIN_CACHE_DIR" not in env
    assert "AWS_PROFILE" not in env and "AWS_SESSION_TOKEN" not in env
    assert env["AWS_ACCESS_KEY_ID"] == "testing"
    assert Path(env["AWS_SHARED_CREDENTIALS_FILE"]).read_text() == ""
    assert "filesystem_mirror" in Path(env["TF_CLI_CONFIG_FILE"]).read_text()


def _terraform(
    terraform: Path, workdir: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(terraform), args[0], "-no-color", *args[1:]],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_terraform_runs_offline_plan_apply_destroy(
    terraform_bin: Path, tf_workdir: Path, tf_env: dict[str, str]
) -> None:
    lock = (tf_workdir / ".terraform.lock.hcl").read_text()
    assert f'version     = "{NULL_PROVIDER_VERSION}"' in lock
    plan = _terraform(
        terraform_bin,
        tf_workdir,
        tf_env,
        "plan",
        "-input=false",
        "-out=tfplan",
        "-detailed-exitcode",
    )
    assert plan.returncode == 2, plan.stderr
    assert "1 to add" in plan.stdout
    apply = _terraform(terraform_bin, tf_workdir, tf_env, "apply", "-input=false", "tfplan")
    assert apply.returncode == 0, apply.stderr
    again = _terraform(
        terraform_bin, tf_workdir, tf_env, "plan", "-input=false", "-detailed-exitcode"
    )
    assert again.returncode == 0, again.stderr
    destroy = _terraform(
        terraform_bin, tf_workdir, tf_env, "destroy", "-input=false", "-auto-approve"
    )
    assert destroy.returncode == 0, destroy.stderr
    assert "1 destroyed" in destroy.stdout


def test_failing_config_inits_but_plan_exits_1(
    terraform_bin: Path, tmp_path: Path, tf_env: dict[str, str]
) -> None:
    workdir = tmp_path / "broken"
    write_null_config(workdir, fail=True)
    tf_init(terraform_bin, workdir, tf_env)
    plan = _terraform(terraform_bin, workdir, tf_env, "plan", "-input=false", "-detailed-exitcode")
    assert plan.returncode == 1
    assert "undeclared resource" in plan.stderr


def test_sensitive_secret_is_masked_by_terraform_but_stored(
    terraform_bin: Path, tmp_path: Path, tf_env: dict[str, str]
) -> None:
    secret = 'hunter2-${not-a-template}-"quoted"'
    workdir = tmp_path / "secret"
    write_null_config(workdir, count=3, sensitive_secret=secret)
    tf_init(terraform_bin, workdir, tf_env)
    apply = _terraform(terraform_bin, workdir, tf_env, "apply", "-input=false", "-auto-approve")
    assert apply.returncode == 0, apply.stderr
    assert "3 added" in apply.stdout
    assert secret not in apply.stdout + apply.stderr
    output = _terraform(terraform_bin, workdir, tf_env, "output", "-json")
    assert json.loads(output.stdout)["secret"] == {
        "sensitive": True,
        "type": "string",
        "value": secret,
    }


def test_init_fails_loudly_without_the_provider(
    terraform_bin: Path, tmp_path: Path, tf_env: dict[str, str]
) -> None:
    """An empty plugin dir: init must fail (no silent network fallback) with its output."""
    workdir = tmp_path / "work"
    write_null_config(workdir)
    empty = tmp_path / "empty-plugins"
    empty.mkdir()
    with pytest.raises(RuntimeError, match="terraform init failed"):
        tf_init(terraform_bin, workdir, tf_env, plugin_dir=empty)
