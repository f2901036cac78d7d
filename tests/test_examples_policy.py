"""The locked-bucket example: the settings an auditor expects, and least-privilege policies.

The policies are rendered by real terraform (`terraform console` evaluates ``templatefile``
offline, no provider needed). The AWS provider itself cannot be downloaded here, so
`terraform validate`/`plan` are out of reach; the resource settings are checked on the parsed
HCL instead, and `terraform fmt -check` proves the files parse.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest

from tests.tfhelpers import isolated_env, pinned_terraform

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
