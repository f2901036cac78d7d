"""A repository config file can only tighten the workflow's settings (issue 13, item 11).

Any pull request can change ``.tfaudit.yml``; the workflow (flags, action inputs, environment)
is what was reviewed. Table tests pin each key's class through ``load_config``; an end-to-end
run against the local S3 server shows a hostile file changing nothing that matters.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from devkit.servers import S3Server
from devkit.tfhelpers import isolated_env, pinned_terraform, terraform_on_path, tf_init
from tests.support.tfaudit_proc import chain_records, tfaudit
from tfaudit_ci.config import KEYS, Config, load_config
from tfaudit_ci.config_trust import TRUST_ENV, Trust, key_trust
from tfaudit_ci.record import parse_iso, utc_now

TRUSTED = {TRUST_ENV: "1"}


def load(
    file_text: str, tmp_path: Path, env: dict[str, str] | None = None, **flags: Any
) -> tuple[Config, list[str]]:
    (tmp_path / ".tfaudit.yml").write_text(file_text, encoding="utf-8")
    warnings: list[str] = []
    config = load_config(flags, env or {}, cwd=tmp_path, warn=warnings.append)
    return config, warnings


@pytest.mark.parametrize(
    ("line", "attribute", "workflow_value"),
    [
        ("upload-plan-file: true", "upload_plan_file", False),
        ("store-state-output: true", "store_state_output", False),
        ("on-unlocked: warn", "on_unlocked", "fail"),
        ("retention-days: 30", "retention_days", 365),
        ("lock-mode: GOVERNANCE", "lock_mode", "COMPLIANCE"),
        ("store: s3://attacker-bucket/x", "store", None),
        ("stream: prod/other", "stream", None),
        ("endpoint-url: https://attacker.example", "endpoint_url", None),
        ("region: eu-west-9", "region", None),
        ("signing-key: none", "signing_key", None),
        ("oidc-audience: attacker", "oidc_audience", "tfaudit"),
        ("work-dir: ./public", "work_dir", None),
        ("gcs-mode: object-retention", "gcs_mode", "bucket-policy"),
    ],
)
def test_weakening_key_is_ignored_with_a_warning_naming_it(
    line: str, attribute: str, workflow_value: Any, tmp_path: Path
) -> None:
    key = line.split(":", 1)[0]
    config, warnings = load(line + "\n", tmp_path)
    assert getattr(config, attribute) == workflow_value
    (warning,) = warnings
    assert repr(key) in warning and ".tfaudit.yml" in warning and TRUST_ENV in warning
    trusted, none = load(line + "\n", tmp_path, env=TRUSTED)
    assert getattr(trusted, attribute) != workflow_value and none == []


def test_stricter_values_win_even_over_the_workflow(tmp_path: Path) -> None:
    text = (
        "retention-days: 2555\nlock-mode: compliance\non-unlocked: fail\nupload-plan-file: false\n"
    )
    env = {"TFAUDIT_LOCK_MODE": "GOVERNANCE", "TFAUDIT_ON_UNLOCKED": "warn"}
    config, warnings = load(text, tmp_path, env=env, **{"retention-days": "400"})
    assert (config.retention_days, config.lock_mode, config.on_unlocked) == (
        2555,
        "COMPLIANCE",
        "fail",
    )
    assert config.sources["retention-days"] == "config file .tfaudit.yml"
    assert warnings == []


def test_a_weaker_file_never_lowers_what_the_workflow_set(tmp_path: Path) -> None:
    config, warnings = load("retention-days: 400\n", tmp_path, **{"retention-days": "3650"})
    assert config.retention_days == 3650 and len(warnings) == 1


def test_redaction_rules_are_added_and_free_keys_apply(tmp_path: Path) -> None:
    env = {"TFAUDIT_REDACT": "env:WORKFLOW_SECRET"}
    config, warnings = load(
        "redact:\n  - 'corp-[0-9]+'\n  - env:WORKFLOW_SECRET\nmax-attempts: 2\n", tmp_path, env=env
    )
    assert config.redact == ["env:WORKFLOW_SECRET", "corp-[0-9]+"]
    assert config.max_attempts == 2 and warnings == []


def test_the_same_value_as_the_workflow_is_no_news(tmp_path: Path) -> None:
    _, warnings = load("stream: acme/infra\n", tmp_path, env={"TFAUDIT_STREAM": "acme/infra"})
    assert warnings == []


def test_every_key_has_a_class_and_new_keys_are_workflow_only() -> None:
    relaxed = {key for key in KEYS if key_trust(key).trust is not Trust.WORKFLOW}
    assert relaxed == {
        "retention-days",
        "lock-mode",
        "on-unlocked",
        "upload-plan-file",
        "store-state-output",
        "redact",
        "multipart-threshold",
        "connect-timeout",
        "read-timeout",
        "max-attempts",
    }
    for future in ("witness", "witness-endpoint-url", "witness-required"):
        assert key_trust(future).trust is Trust.WORKFLOW


def test_hostile_repo_config_changes_nothing_that_matters(
    s3_server: S3Server, lock_bucket: str, tmp_path: Path
) -> None:
    """A pull request's .tfaudit.yml asks for the binary plan (sensitive values in clear), a
    different stream, bucket and endpoint, GOVERNANCE, and warn-on-unlocked: the record lands
    where the workflow said, locked as it said, and the plan file stays on the runner."""
    terraform = terraform_on_path() or pinned_terraform()
    env = isolated_env(tmp_path / "env")
    work = tmp_path / "work"
    work.mkdir()
    (work / "main.tf").write_text(
        'variable "pw" {\n  type = string\n  sensitive = true\n  default = "PlanFileSecret-1"\n}\n'
        'output "pw" {\n  value = var.pw\n  sensitive = true\n}\n',
        encoding="utf-8",
    )
    tf_init(terraform, work, env)
    (work / ".tfaudit.yml").write_text(
        "upload-plan-file: true\nstream: attacker/stream\nstore: s3://attacker-bucket/x\n"
        "endpoint-url: http://127.0.0.1:9\nlock-mode: GOVERNANCE\non-unlocked: warn\n"
        "retention-days: 1\n",
        encoding="utf-8",
    )
    env = {
        **env,
        **s3_server.env(),
        "TFAUDIT_WORK_DIR": str(tmp_path / "spools"),
        "TFAUDIT_STORE": f"s3://{lock_bucket}/audit",
        "TFAUDIT_STREAM": "acme/prod",
    }
    proc = tfaudit(["run", "--", str(terraform), "plan", "-out=tfplan"], env=env, cwd=work)
    assert proc.returncode == 0, proc.stderr.decode()
    for key in ("upload-plan-file", "stream", "store", "endpoint-url", "lock-mode", "on-unlocked"):
        assert f"ignored '{key}'".encode() in proc.stderr
    client = s3_server.client()
    (record,) = chain_records(client, lock_bucket, "acme/prod", prefix="audit")
    assert [a["name"] for a in record["artifacts"]] == ["output.log", "plan.json"]
    assert record["retention"]["mode"] == "COMPLIANCE"
    keys = [v["Key"] for v in client.list_object_versions(Bucket=lock_bucket).get("Versions", [])]
    assert keys and all(key.startswith("audit/acme/prod/") for key in keys)
    assert not any("tfplan" in key for key in keys)
    retained = parse_iso(record["retention"]["retain_until"]) - utc_now()
    assert retained > dt.timedelta(days=364)  # "retention-days: 1" was ignored
