"""WORM end to end on a server that really enforces Object Lock (issue 6).

After a real `tfaudit run`, an attacker holding the writer's credentials tries to destroy
the evidence. Ceph RGW refuses every attempt, as AWS does. moto accepts some of them (it
lets COMPLIANCE retention be shortened or switched, and versioning be suspended), so the
attack test runs on Ceph only; the moto test documents the gaps instead of hiding them.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from devkit.servers import S3Server
from tests.support.tfaudit_proc import chain_records, result_json, tfaudit

STREAM = "acme/worm"


def _audited_run(
    server: S3Server, bucket: str, tf_env: dict[str, str], tmp_path: Path, *extra: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    env = {**tf_env, **server.env(), "TFAUDIT_WORK_DIR": str(tmp_path / "spools")}
    script = "import sys; sys.stdout.write('terraform-like line\\n' * 400000)"  # ~7.6 MB
    proc = tfaudit(
        [
            "run",
            "--store",
            f"s3://{bucket}/audit",
            "--stream",
            STREAM,
            "--json",
            *extra,
            "--",
            sys.executable,
            "-c",
            script,
        ],
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    record = chain_records(server.client(), bucket, STREAM, prefix="audit")[-1]
    log = next(a for a in record["artifacts"] if a["name"] == "output.log")
    return result_json(proc), {**log, "key": f"audit/{log['key']}"}


def _verify(server: S3Server, bucket: str, tf_env: dict[str, str], tmp_path: Path) -> Any:
    env = {**tf_env, **server.env()}
    return tfaudit(
        ["verify", "--store", f"s3://{bucket}/audit", "--stream", STREAM], env=env, cwd=tmp_path
    )


def _refused(call: Any, **kwargs: Any) -> str:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    return str(info.value.response["Error"]["Code"])


@pytest.mark.ceph
def test_multipart_log_is_locked_and_every_attack_is_refused(
    s3_server: S3Server, lock_bucket: str, tf_env: dict[str, str], tmp_path: Path
) -> None:
    # Above the 5 MiB threshold: multipart, whose lock headers Ceph ignores (it applies the
    # bucket default); tfaudit puts the retention on the version, then reads it back.
    _, log = _audited_run(
        s3_server, lock_bucket, tf_env, tmp_path, "--multipart-threshold", str(5 * 1024 * 1024)
    )
    client = s3_server.client()
    head = client.head_object(Bucket=lock_bucket, Key=log["key"], VersionId=log["version_id"])
    assert "-" in head["ETag"]  # it really was a multipart upload
    assert head["ObjectLockMode"] == "COMPLIANCE"
    remaining = head["ObjectLockRetainUntilDate"] - dt.datetime.now(dt.timezone.utc)
    assert remaining > dt.timedelta(days=364)
    target = {"Bucket": lock_bucket, "Key": log["key"], "VersionId": log["version_id"]}

    assert _refused(client.delete_object, **target) == "AccessDenied"
    assert _refused(client.delete_object, BypassGovernanceRetention=True, **target) == (
        "AccessDenied"
    )
    shorter = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    assert (
        _refused(
            client.put_object_retention,
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": shorter},
            **target,
        )
        == "AccessDenied"
    )
    assert (
        _refused(
            client.put_object_retention,
            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": head["ObjectLockRetainUntilDate"]},
            **target,
        )
        == "AccessDenied"
    )
    code = _refused(
        client.put_bucket_versioning,
        Bucket=lock_bucket,
        VersioningConfiguration={"Status": "Suspended"},
    )
    assert code in {"InvalidBucketState", "409"}
    assert client.get_bucket_versioning(Bucket=lock_bucket)["Status"] == "Enabled"
    body = client.get_object(**target)["Body"].read()
    assert len(body) == log["size"]

    # A plain DELETE is accepted: it only adds a delete marker. The trail still verifies,
    # and verify reports the attempt.
    client.delete_object(Bucket=lock_bucket, Key=log["key"])
    proc = _verify(s3_server, lock_bucket, tf_env, tmp_path)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert b"delete-marker" in proc.stdout and b"1/1 records valid" in proc.stdout


@pytest.mark.moto
def test_moto_lets_through_what_aws_refuses(
    s3_server: S3Server, lock_bucket: str, tf_env: dict[str, str], tmp_path: Path
) -> None:
    """moto is no judge of WORM: the product must not rely on what moto allows."""
    _, log = _audited_run(s3_server, lock_bucket, tf_env, tmp_path)
    client = s3_server.client()
    target = {"Bucket": lock_bucket, "Key": log["key"], "VersionId": log["version_id"]}
    assert _refused(client.delete_object, **target) == "AccessDenied"  # this much holds
    shorter = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    # Accepted by moto, refused by AWS and Ceph (see the Ceph test above).
    client.put_object_retention(
        Retention={"Mode": "COMPLIANCE", "RetainUntilDate": shorter}, **target
    )
    head = client.head_object(**target)
    assert head["ObjectLockRetainUntilDate"] < dt.datetime.now(dt.timezone.utc) + dt.timedelta(
        days=2
    )


def test_delete_marker_on_the_head_neither_hides_nor_frees_the_slot(
    s3_server: S3Server, lock_bucket: str, tf_env: dict[str, str], tmp_path: Path
) -> None:
    first, _ = _audited_run(s3_server, lock_bucket, tf_env, tmp_path)
    client = s3_server.client()
    head_key = f"audit/{STREAM}/chain/{first['seq']:012d}.json"
    client.delete_object(Bucket=lock_bucket, Key=head_key)  # a plain DELETE: a delete marker
    with pytest.raises(ClientError):
        client.get_object(Bucket=lock_bucket, Key=head_key)  # "latest" is now hidden
    second, _ = _audited_run(s3_server, lock_bucket, tf_env, tmp_path)
    assert second["seq"] == first["seq"] + 1
    records = chain_records(client, lock_bucket, STREAM, prefix="audit")
    assert records[-1]["prev"]["seq"] == first["seq"]
    assert records[-1]["prev"]["sha256"] == first["record_sha256"]
    proc = _verify(s3_server, lock_bucket, tf_env, tmp_path)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert b"delete-marker" in proc.stdout and b"2/2 records valid" in proc.stdout
