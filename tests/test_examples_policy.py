"""The locked-bucket example: the settings an auditor expects, and least-privilege policies.

The policies are rendered by real terraform (`terraform console` evaluates ``templatefile``
offline, no provider needed). The AWS provider itself cannot be downloaded here, so
`terraform validate`/`plan` are out of reach; the resource settings are checked on the parsed
HCL instead, and `terraform fmt -check` proves the files parse.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest

from tests.tfhelpers import isolated_env, pinned_terraform, terraform_on_path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "terraform" / "locked-bucket"
BUCKET_ARN = "arn:aws:s3:::acme-audit"
KMS_ARN = "arn:aws:kms:eu-west-1:123456789012:key/0000"
TEMPLATE_VARS = {"bucket_arn": BUCKET_ARN, "kms_arn": KMS_ARN, "account_id": "123456789012"}
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
    ["bucket.json.tftpl", "writer.json.tftpl", "auditor.json.tftpl", "kms-key.json.tftpl"],
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


def _aws_provider_mirror() -> Path | None:
    """A filesystem mirror holding hashicorp/aws, if this machine has one."""
    configured = os.environ.get("TFAUDIT_TF_PLUGIN_MIRROR")
    if configured:
        return Path(configured)
    try:
        found = subprocess.run(
            ["find", "/", "-maxdepth", "5", "-type", "d", "-path",
             "*/registry.terraform.io/hashicorp/aws", "-not", "-path", "/proc/*"],
            capture_output=True, text=True, timeout=60, check=False,
        ).stdout.split()  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return Path(found[0]).parent.parent.parent if found else None


def test_example_validates_against_the_real_aws_provider(tmp_path: Path) -> None:
    """`terraform validate` with hashicorp/aws from a local mirror: the provider alias, every
    resource and argument as the provider's schema defines them (no credentials needed)."""
    mirror = _aws_provider_mirror()
    if mirror is None:
        pytest.skip(
            "NO hashicorp/aws PROVIDER MIRROR FOUND: the example was not validated; set "
            "TFAUDIT_TF_PLUGIN_MIRROR to a folder holding registry.terraform.io/hashicorp/aws"
        )
    env = isolated_env(tmp_path / "env")
    Path(env["TF_CLI_CONFIG_FILE"]).write_text(
        f'provider_installation {{\n  filesystem_mirror {{\n    path = "{mirror}"\n  }}\n}}\n'
    )
    workdir = tmp_path / "example"
    shutil.copytree(EXAMPLE, workdir)
    terraform = terraform_on_path() or pinned_terraform()
    for command in (["init", "-backend=false", "-input=false"], ["validate", "-no-color"]):
        done = subprocess.run(
            [str(terraform), *command], cwd=workdir, env=env, capture_output=True, text=True,
            timeout=600, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
