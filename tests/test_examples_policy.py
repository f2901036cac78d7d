"""The locked-bucket example: the settings an auditor expects, and least-privilege policies.

The policies are rendered by real terraform (`terraform console` evaluates ``templatefile``
offline, no provider needed). The resource settings are checked on the parsed HCL,
`terraform fmt -check` proves the files parse, and `terraform validate` runs with the
``hashicorp/aws`` filesystem mirror where the machine has one (skipped, saying so, otherwise).

Issue 13, item 12: pull-request plan jobs write to their own stream prefix with their own role,
and only the apply role writes the production stream. moto's server enforces the identity
policies (``INITIAL_NO_AUTH_ACTION_COUNT``): a PR-role write into the production chain is
refused there, by the real PutObject. moto evaluates no ``aws:PrincipalArn`` condition in a
bucket policy, so the bucket policy's deny (which also stops any other principal) is checked
by evaluating the rendered policy here, statement by statement, as IAM does.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import hcl2
import pytest
import yaml
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from devkit.aws_mirror import aws_cli_config, require_aws_mirror
from devkit.servers import S3Server, make_lock_bucket, start_moto
from devkit.tfhelpers import isolated_env, pinned_terraform, terraform_on_path
from tests.support.tfaudit_proc import chain_records, tfaudit

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXAMPLE = EXAMPLES / "terraform" / "locked-bucket"
BUCKET_ARN = "arn:aws:s3:::acme-audit"
KMS_ARN = "arn:aws:kms:eu-west-1:123456789012:key/0000"
APPLY_ROLE = "arn:aws:iam::123456789012:role/terraform-apply"
PLAN_ROLE = "arn:aws:iam::123456789012:role/terraform-plan"
TEMPLATE_VARS = {
    "bucket_arn": BUCKET_ARN,
    "kms_arn": KMS_ARN,
    "account_id": "123456789012",
    "pr_prefix": "terraform/pr/",
    "production_prefix": "terraform/acme/infra/",
    "apply_role_arn": APPLY_ROLE,
}
DESTRUCTIVE = ("s3:Delete", "s3:PutBucket", "s3:PutLifecycle", "s3:Bypass", "s3:PutObjectAcl")


def render(template: str, tmp_path: Path) -> dict[str, Any]:
    """Render a policy template with terraform's own templatefile()."""
    terraform = pinned_terraform()
    variables = ", ".join(f'{key} = "{value}"' for key, value in TEMPLATE_VARS.items())
    expression = f'jsonencode(jsondecode(templatefile("{EXAMPLE / "policies" / template}", '
    expression += f"{{ {variables} }})))\n"
    completed = subprocess.run(
        [str(terraform), "console"],
        input=expression,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=isolated_env(tmp_path),
        check=True,
    )
    # console prints the string as an HCL string literal: a JSON string of the JSON.
    document: dict[str, Any] = json.loads(json.loads(completed.stdout.strip()))
    return document


def statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    found = policy["Statement"]
    return found if isinstance(found, list) else [found]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def principals(statement: dict[str, Any]) -> list[str]:
    principal = statement.get("Principal")
    if principal is None:
        return []
    if isinstance(principal, str):
        return [principal]
    return [item for value in principal.values() for item in as_list(value)]


@pytest.fixture(scope="module")
def resources() -> dict[str, dict[str, Any]]:
    parsed: dict[str, dict[str, Any]] = {}
    for tf_file in sorted(EXAMPLE.glob("*.tf")):
        with tf_file.open(encoding="utf-8") as handle:
            document = hcl2.load(handle)
        for block in document.get("resource", []):
            for rtype, named in block.items():
                for name, body in named.items():
                    parsed[f"{rtype.strip(chr(34))}.{name.strip(chr(34))}"] = body
    return parsed


def unquote(value: Any) -> Any:
    """python-hcl2 keeps a string literal's quotes; expressions come as ``${...}``."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def first(body: dict[str, Any], key: str) -> Any:
    value = body[key]
    return value[0] if isinstance(value, list) and value and isinstance(value[0], dict) else value


def test_example_is_formatted_and_parses(tmp_path: Path) -> None:
    terraform = pinned_terraform()
    completed = subprocess.run(
        [str(terraform), "fmt", "-check", "-recursive", "-diff", str(EXAMPLE)],
        capture_output=True,
        text=True,
        env=isolated_env(tmp_path),
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_bucket_is_object_locked_in_compliance_mode(resources: dict[str, dict[str, Any]]) -> None:
    assert resources["aws_s3_bucket.audit"]["object_lock_enabled"] is True
    lock = resources["aws_s3_bucket_object_lock_configuration.audit"]
    retention = first(first(lock, "rule"), "default_retention")
    assert unquote(retention["mode"]) == "COMPLIANCE"
    versioning = resources["aws_s3_bucket_versioning.audit"]
    assert unquote(first(versioning, "versioning_configuration")["status"]) == "Enabled"


def test_bucket_is_kms_encrypted_private_and_rotating(resources: dict[str, dict[str, Any]]) -> None:
    sse = resources["aws_s3_bucket_server_side_encryption_configuration.audit"]
    default = first(first(sse, "rule"), "apply_server_side_encryption_by_default")
    assert unquote(default["sse_algorithm"]) == "aws:kms"
    assert "aws_kms_key.audit" in default["kms_master_key_id"]
    assert resources["aws_kms_key.audit"]["enable_key_rotation"] is True
    block = resources["aws_s3_bucket_public_access_block.audit"]
    for flag in ("block_public_acls", "block_public_policy", "ignore_public_acls"):
        assert block[flag] is True, flag
    assert block["restrict_public_buckets"] is True


@pytest.mark.parametrize(
    "template",
    [
        "bucket.json.tftpl",
        "writer.json.tftpl",
        "pr-writer.json.tftpl",
        "auditor.json.tftpl",
        "kms-key.json.tftpl",
    ],
)
def test_no_policy_allows_everyone(template: str, tmp_path: Path) -> None:
    for statement in statements(render(template, tmp_path)):
        if statement["Effect"] == "Allow":
            assert "*" not in principals(statement), statement


def test_bucket_policy_is_tls_only_and_forbids_deletes(tmp_path: Path) -> None:
    policy = statements(render("bucket.json.tftpl", tmp_path))
    tls = [s for s in policy if s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport")]
    assert tls and all(s["Effect"] == "Deny" and s["Action"] == "s3:*" for s in tls)
    assert all(s["Condition"]["Bool"]["aws:SecureTransport"] == "false" for s in tls)
    denied = {a for s in policy if s["Effect"] == "Deny" for a in as_list(s["Action"])}
    assert {"s3:DeleteObject", "s3:DeleteObjectVersion", "s3:BypassGovernanceRetention"} <= denied
    assert all(s["Effect"] == "Deny" for s in policy)  # the bucket policy grants nothing


def allowed_actions(policy: dict[str, Any]) -> list[str]:
    return [a for s in statements(policy) if s["Effect"] == "Allow" for a in as_list(s["Action"])]


def test_writer_can_write_locked_objects_but_never_delete(tmp_path: Path) -> None:
    policy = render("writer.json.tftpl", tmp_path)
    actions = allowed_actions(policy)
    # PutObjectRetention is what lets a PUT carry its own lock (mode + retain-until).
    assert {"s3:PutObject", "s3:PutObjectRetention", "s3:ListBucketVersions"} <= set(actions)
    assert not [a for a in actions if "*" in a], actions
    assert not [a for a in actions if a.startswith(DESTRUCTIVE)], actions
    for statement in statements(policy):
        for resource in as_list(statement["Resource"]):
            assert resource in (BUCKET_ARN, f"{BUCKET_ARN}/*", KMS_ARN), resource


def test_auditor_is_read_only(tmp_path: Path) -> None:
    actions = allowed_actions(render("auditor.json.tftpl", tmp_path))
    read_prefixes = ("s3:Get", "s3:List", "kms:Decrypt")
    assert actions and all(a.startswith(read_prefixes) for a in actions), actions


def test_every_template_variable_is_passed(tmp_path: Path) -> None:
    """A placeholder the .tf forgets to pass would fail only at apply time."""
    tf_text = "".join(path.read_text() for path in EXAMPLE.glob("*.tf"))
    for template in (EXAMPLE / "policies").glob("*.tftpl"):
        assert f"policies/{template.name}" in tf_text
        call = tf_text.split(f"policies/{template.name}", 1)[1].split("})", 1)[0]
        for variable in set(re.findall(r"\$\{(\w+)\}", template.read_text())):
            assert re.search(rf"\b{variable}\s*=", call), (template.name, variable)


# --- issue 13, item 12: pull requests cannot write the production stream ----------------------


def _matches(pattern: str, value: str) -> bool:
    return re.fullmatch(re.escape(pattern).replace(r"\*", ".*"), value) is not None


def bucket_policy_denies(policy: dict[str, Any], principal: str, action: str, key: str) -> bool:
    """IAM's reading of the rendered bucket policy's Deny statements for one request."""
    resource = f"{BUCKET_ARN}/{key}"
    for statement in statements(policy):
        if statement["Effect"] != "Deny" or action not in as_list(statement["Action"]):
            continue
        if not any(_matches(r, resource) for r in as_list(statement["Resource"])):
            continue
        conditions = statement.get("Condition", {})
        if "Bool" in conditions:
            continue  # aws:SecureTransport: the requests here are over TLS
        not_equals = conditions.get("ArnNotEquals", {}).get("aws:PrincipalArn")
        if not_equals is None or principal not in as_list(not_equals):
            return True
    return False


def test_bucket_policy_lets_only_the_apply_role_write_the_production_stream(
    tmp_path: Path,
) -> None:
    policy = render("bucket.json.tftpl", tmp_path)
    chain = "terraform/acme/infra/chain/000000000007.json"
    runs = "terraform/acme/infra/runs/20240501T000000Z-1-1-abcd/output.log"
    pr_chain = "terraform/pr/acme/infra/chain/000000000000.json"
    for key in (chain, runs):
        assert bucket_policy_denies(policy, PLAN_ROLE, "s3:PutObject", key)
        assert bucket_policy_denies(policy, "arn:aws:iam::123456789012:user/x", "s3:PutObject", key)
        assert not bucket_policy_denies(policy, APPLY_ROLE, "s3:PutObject", key)
    assert not bucket_policy_denies(policy, PLAN_ROLE, "s3:PutObject", pr_chain)


def test_pr_writer_writes_only_the_pull_request_streams(tmp_path: Path) -> None:
    policy = render("pr-writer.json.tftpl", tmp_path)
    for statement in statements(policy):
        writes = [a for a in as_list(statement["Action"]) if a.startswith("s3:Put")]
        if writes:
            assert as_list(statement["Resource"]) == [f"{BUCKET_ARN}/terraform/pr/*"]
    actions = allowed_actions(policy)
    assert not [a for a in actions if a.startswith(DESTRUCTIVE) or "*" in a], actions


def test_plan_apply_workflow_gives_pull_requests_their_own_role_and_stream() -> None:
    workflow = yaml.safe_load((EXAMPLES / "github" / "plan-apply.yml").read_text())
    jobs = workflow["jobs"]

    def steps_of(job: str, uses: str) -> list[dict[str, Any]]:
        return [step for step in jobs[job]["steps"] if str(step.get("uses", "")).startswith(uses)]

    plan_role = steps_of("plan", "aws-actions/")[0]["with"]["role-to-assume"]
    apply_role = steps_of("apply", "aws-actions/")[0]["with"]["role-to-assume"]
    assert "PLAN" in plan_role and "APPLY" in apply_role
    for step in steps_of("plan", "tfaudit-ci/"):
        assert step["with"]["stream"].startswith("pr/")
    for step in steps_of("apply", "tfaudit-ci/"):
        assert not step["with"]["stream"].startswith("pr/")


def test_every_pull_request_workflow_writes_only_pull_request_streams() -> None:
    """A job that runs on `pull_request` runs the pull request's code: every tfaudit step in
    it names a `pr/` stream (the default, the repository slug, is production's)."""
    for path in sorted((EXAMPLES / "github").glob("*.yml")):
        workflow = yaml.safe_load(path.read_text())
        events = workflow.get(True, workflow.get("on")) or {}  # YAML 1.1 reads `on` as True
        for name, job in workflow["jobs"].items():
            condition = str(job.get("if", ""))
            if "pull_request" not in events or ("pull_request" not in condition and condition):
                continue
            for step in job.get("steps", []):
                if str(step.get("uses", "")).startswith("tfaudit-ci/"):
                    stream = str(step.get("with", {}).get("stream", ""))
                    assert stream.startswith("pr/"), f"{path.name}: job {name}: {step}"


# start_moto's readiness probe, then: the locked bucket (make_lock_bucket: 3 requests), then a
# user, its policy and its access key for each role. Every later request is checked by IAM.
_ROLES = {"apply": "writer.json.tftpl", "pr-plan": "pr-writer.json.tftpl"}
_IAM_SETUP_REQUESTS = 1 + 3 + 3 * len(_ROLES)
_MOTO_BUCKET = "pr-policy-audit"


def _moto_policy(template: str) -> str:
    text = (EXAMPLE / "policies" / template).read_text()
    values = {
        **TEMPLATE_VARS,
        "bucket_arn": f"arn:aws:s3:::{_MOTO_BUCKET}",
        "pr_prefix": "audit/pr/",
    }
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    policy = json.loads(text)
    for statement in policy["Statement"]:
        # moto authorizes HeadBucket as "s3:HeadBucket" (AWS checks s3:ListBucket), and cannot
        # evaluate an s3:prefix condition: both adjusted for moto only, never in the example.
        statement.pop("Condition", None)
        if statement["Resource"] == f"arn:aws:s3:::{_MOTO_BUCKET}":
            statement["Action"] = [*as_list(statement["Action"]), "s3:HeadBucket"]
    return json.dumps(policy)


def _s3(server: S3Server, key_id: str, secret: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        region_name=server.region,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=BotoConfig(s3={"addressing_style": "path"}),
    )


@pytest.fixture
def iam_moto(tmp_path: Path) -> Iterator[tuple[S3Server, dict[str, dict[str, str]]]]:
    """moto enforcing IAM, a locked bucket, and one IAM user (with its keys) per role."""
    server = start_moto(
        tmp_path / "moto", extra_env={"INITIAL_NO_AUTH_ACTION_COUNT": str(_IAM_SETUP_REQUESTS)}
    )
    try:
        make_lock_bucket(server.client(), _MOTO_BUCKET)
        iam = boto3.client(
            "iam",
            endpoint_url=server.endpoint,
            region_name=server.region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        keys = {}
        for user, template in _ROLES.items():
            iam.create_user(UserName=user)
            iam.put_user_policy(
                UserName=user, PolicyName="tfaudit", PolicyDocument=_moto_policy(template)
            )
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = {
                "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            }
        with pytest.raises(ClientError):  # enforcement is on: the setup count was right
            _s3(server, "nobody", "nothing").list_buckets()
        yield server, keys
    finally:
        server.stop()


def test_pr_role_cannot_write_the_production_chain_under_iam_enforcement(
    iam_moto: tuple[S3Server, dict[str, dict[str, str]]], tmp_path: Path
) -> None:
    server, keys = iam_moto
    base = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AWS_ENDPOINT_URL_S3": server.endpoint,
        "AWS_DEFAULT_REGION": server.region,
        "AWS_EC2_METADATA_DISABLED": "true",
        "TFAUDIT_WORK_DIR": str(tmp_path / "spools"),
        "TFAUDIT_MAX_ATTEMPTS": "2",
        "TFAUDIT_STORE": f"s3://{_MOTO_BUCKET}/audit",
    }
    command = ["--", sys.executable, "-c", "print('plan output')"]

    def run(user: str, stream: str) -> subprocess.CompletedProcess[bytes]:
        env = {**base, **keys[user]}
        return tfaudit(["run", "--stream", stream, *command], env=env, cwd=tmp_path)

    pr_run = run("pr-plan", "pr/acme/infra")
    assert pr_run.returncode == 0, pr_run.stderr.decode()
    refused = run("pr-plan", "acme/infra")
    assert refused.returncode == 22, refused.stderr.decode()
    assert b"AccessDenied" in refused.stderr or b"Access Denied" in refused.stderr
    pr_client = _s3(server, *keys["pr-plan"].values())
    with pytest.raises(ClientError) as denied:
        pr_client.put_object(
            Bucket=_MOTO_BUCKET, Key="audit/acme/infra/chain/000000000000.json", Body=b"{}"
        )
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    applied = run("apply", "acme/infra")
    assert applied.returncode == 0, applied.stderr.decode()
    apply_client = _s3(server, *keys["apply"].values())
    (record,) = chain_records(apply_client, _MOTO_BUCKET, "acme/infra", prefix="audit")
    assert record["seq"] == 0  # the refused PR run added nothing to the production chain


def test_example_validates_with_the_aws_provider(tmp_path: Path) -> None:
    mirror = require_aws_mirror()
    work = tmp_path / "locked-bucket"
    shutil.copytree(EXAMPLE, work)
    env = {
        **isolated_env(tmp_path / "env"),
        "TF_CLI_CONFIG_FILE": str(aws_cli_config(tmp_path, mirror)),
    }
    terraform = terraform_on_path() or pinned_terraform()
    for args in (["init", "-input=false", "-backend=false"], ["validate", "-no-color"]):
        done = subprocess.run(
            [str(terraform), *args], cwd=work, env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr


# -- the witness (issue 14) ---------------------------------------------------------------------

WITNESS_CHECKPOINTS = f"{BUCKET_ARN}/terraform/checkpoints/*"
WITNESS_TEMPLATES = ("witness-bucket.json.tftpl", "witness-writer.json.tftpl",
                     "witness-auditor.json.tftpl")  # fmt: skip


def test_witness_lives_in_another_account_and_is_locked(
    resources: dict[str, dict[str, Any]],
) -> None:
    """Everything witness-side goes through the aliased provider (another account); the
    bucket is versioned and COMPLIANCE-locked like the audit bucket."""
    witness_side = [name for name in resources if ".witness" in name]
    assert {"aws_s3_bucket.witness", "aws_iam_role.witness"} <= set(witness_side)
    for name in witness_side:
        assert resources[name].get("provider") == "${aws.witness}", name
    # The audit account's roles only get leave to assume their witness counterparts.
    assume = resources["aws_iam_role_policy.assume_witness"]
    assert "provider" not in assume and "sts:AssumeRole" in json.dumps(assume)
    for name, body in resources.items():
        if name.startswith("aws_s3_bucket") and ".witness" not in name:
            assert "provider" not in body, name  # the audit bucket stays in the audit account
    assert resources["aws_s3_bucket.witness"]["object_lock_enabled"] is True
    lock = resources["aws_s3_bucket_object_lock_configuration.witness"]
    assert unquote(first(first(lock, "rule"), "default_retention")["mode"]) == "COMPLIANCE"
    versioning = resources["aws_s3_bucket_versioning.witness"]
    assert unquote(first(versioning, "versioning_configuration")["status"]) == "Enabled"


def test_witness_writer_can_only_create_checkpoints(tmp_path: Path) -> None:
    for template in WITNESS_TEMPLATES:
        for statement in statements(render(template, tmp_path)):
            if statement["Effect"] == "Allow":
                assert "*" not in principals(statement), (template, statement)
    writer = render("witness-writer.json.tftpl", tmp_path)
    actions = allowed_actions(writer)
    assert {"s3:PutObject", "s3:PutObjectRetention", "s3:ListBucketVersions"} <= set(actions)
    assert not [a for a in actions if "*" in a or a.startswith(DESTRUCTIVE)], actions
    for statement in statements(writer):
        if "s3:PutObject" in as_list(statement["Action"]):
            assert as_list(statement["Resource"]) == [WITNESS_CHECKPOINTS]
    auditor = allowed_actions(render("witness-auditor.json.tftpl", tmp_path))
    assert auditor and all(a.startswith(("s3:Get", "s3:List")) for a in auditor), auditor

    bucket = statements(render("witness-bucket.json.tftpl", tmp_path))
    assert all(s["Effect"] == "Deny" for s in bucket)  # the bucket policy grants nothing
    denied = {a for s in bucket for a in as_list(s["Action"])}
    assert {"s3:DeleteObject", "s3:DeleteObjectVersion", "s3:BypassGovernanceRetention"} <= denied
    # Create-only: a PUT without If-None-Match is refused, and none lands outside checkpoints/.
    create_only = [s for s in bucket if s.get("Condition", {}).get("Null")]
    assert create_only and create_only[0]["Action"] == "s3:PutObject"
    assert create_only[0]["Condition"]["Null"] == {"s3:if-none-match": "true"}
    outside = [s for s in bucket if "NotResource" in s]
    assert outside and outside[0]["NotResource"] == WITNESS_CHECKPOINTS
