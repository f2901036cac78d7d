"""The writer policy shipped in examples/ is enough for `tfaudit run`, and no more (issue 7).

moto's server enforces IAM policies when started with ``INITIAL_NO_AUTH_ACTION_COUNT``: the
first N requests (the bucket and the IAM user are set up with them) are unauthenticated,
everything after is checked against the caller's IAM policy. moto enforces the object
actions (s3:PutObject, s3:GetObject, s3:DeleteObject, ...) but not every bucket-level read
(it lets s3:GetBucketObjectLockConfiguration through): those parts of the policy are checked
statically by tests/test_examples_policy.py instead. moto also names HeadBucket's permission
differently from AWS (see _writer_policy).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from devkit.servers import S3Server, start_moto
from tests.support.tfaudit_proc import chain_records, tfaudit

BUCKET = "least-privilege-audit"
POLICIES = Path(__file__).parent.parent / "examples" / "terraform" / "locked-bucket" / "policies"
# start_moto's readiness probe (one ListBuckets), then: create bucket, lock configuration,
# IAM user, its policy, its access key. Every later request is checked against IAM.
SETUP_REQUESTS = 1 + 5


def _writer_policy(drop: str | None = None) -> str:
    text = (POLICIES / "writer.json.tftpl").read_text()
    text = text.replace("${bucket_arn}", f"arn:aws:s3:::{BUCKET}")
    text = text.replace("${kms_arn}", "arn:aws:kms:us-east-1:123456789012:key/audit")
    policy = json.loads(text)
    # moto authorizes HeadBucket as "s3:HeadBucket", which is not an IAM action: AWS checks
    # s3:ListBucket (already granted). Added for moto only, never in the shipped policy.
    policy["Statement"][0]["Action"].append("s3:HeadBucket")
    if drop is not None:
        for statement in policy["Statement"]:
            statement["Action"] = [a for a in statement["Action"] if a != drop]
    return json.dumps(policy)


@pytest.fixture(params=[None, "s3:PutObject"], ids=["writer-policy", "without-PutObject"])
def iam_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[S3Server, Any]]:
    server = start_moto(
        tmp_path / "moto", extra_env={"INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_REQUESTS)}
    )
    try:
        admin = {
            "endpoint_url": server.endpoint,
            "region_name": server.region,
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }
        s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}), **admin)
        iam = boto3.client("iam", **admin)
        s3.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
        s3.put_object_lock_configuration(
            Bucket=BUCKET,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 365}},
            },
        )
        iam.create_user(UserName="ci-writer")
        iam.put_user_policy(
            UserName="ci-writer",
            PolicyName="tfaudit-writer",
            PolicyDocument=_writer_policy(drop=request.param),
        )
        key = iam.create_access_key(UserName="ci-writer")["AccessKey"]
        yield server, key
    finally:
        server.stop()


def test_writer_policy_is_enough_and_cannot_delete(
    iam_server: tuple[S3Server, Any], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server, key = iam_server
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AWS_ENDPOINT_URL_S3": server.endpoint,
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        "AWS_DEFAULT_REGION": server.region,
        "AWS_EC2_METADATA_DISABLED": "true",
        "TFAUDIT_WORK_DIR": str(tmp_path / "spools"),
        "TFAUDIT_MAX_ATTEMPTS": "2",
    }
    proc = tfaudit(
        [
            "run",
            "--store",
            f"s3://{BUCKET}/audit",
            "--stream",
            "acme/lp",
            "--",
            sys.executable,
            "-c",
            "print('plan output')",
        ],
        env=env,
        cwd=tmp_path,
    )
    writer = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        region_name=server.region,
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
        config=Config(s3={"addressing_style": "path"}),
    )
    if "without-PutObject" in request.node.callspec.id:
        assert proc.returncode == 22, proc.stderr.decode()
        assert b"s3:PutObject" in proc.stderr  # the fix names the missing permission
        return
    assert proc.returncode == 0, proc.stderr.decode()
    (record,) = chain_records(writer, BUCKET, "acme/lp", prefix="audit")
    log = next(a for a in record["artifacts"] if a["name"] == "output.log")
    with pytest.raises(ClientError) as denied:
        writer.delete_object(Bucket=BUCKET, Key=f"audit/{log['key']}", VersionId=log["version_id"])
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
