"""Configuration layering and validation (issue 2, point 9)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.tfaudit_proc import tfaudit
from tfaudit_ci.config import load_config
from tfaudit_ci.errors import ConfigError


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    (tmp_path / ".tfaudit.yml").write_text(
        "store: s3://from-file/p\nstream: file-stream\nretention-days: 400\nlock-mode: governance\n"
    )
    env = {"TFAUDIT_STREAM": "env-stream", "TFAUDIT_RETENTION_DAYS": "500"}
    env["TFAUDIT_TRUST_REPO_CONFIG"] = "1"  # plain layering (tests/test_config_trust.py: else)
    config = load_config({"retention-days": "600"}, env, cwd=tmp_path)
    assert config.store == "s3://from-file/p"
    assert config.stream == "env-stream"
    assert config.retention_days == 600
    assert config.lock_mode == "GOVERNANCE"
    assert config.on_unlocked == "fail" and config.max_attempts == 5
    assert config.sources["retention-days"] == "flag --retention-days"
    assert config.sources["stream"] == "environment variable TFAUDIT_STREAM"


def test_explicit_config_file_and_redact_list(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "audit.yml"
    path.parent.mkdir()
    path.write_text("redact:\n  - env:MY_SECRET\n  - 'corp-[0-9]+'\nupload-plan-file: true\n")
    trusted = {"TFAUDIT_TRUST_REPO_CONFIG": "1"}  # (tests/test_config_trust.py: else)
    config = load_config({}, trusted, cwd=tmp_path, config_path="conf/audit.yml")
    assert config.redact == ["env:MY_SECRET", "corp-[0-9]+"]
    assert config.upload_plan_file is True
    env_list = load_config({}, {"TFAUDIT_REDACT": "a+\nenv:B\n"}, cwd=tmp_path)
    assert env_list.redact == ["a+", "env:B"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("store: [unclosed\n", "not valid YAML at line"),
        ("stor: s3://typo/p\n", "unknown key 'stor'"),
        ("retention-days: many\n", "bad value for 'retention-days'"),
        ("retention-days: true\n", "bad value for 'retention-days'"),
        ("lock-mode: LEGAL_HOLD\n", "expected one of COMPLIANCE, GOVERNANCE"),
        ("redact: 5\n", "bad value for 'redact'"),
        ("- just\n- a list\n", "must be a mapping"),
    ],
)
def test_bad_config_file_names_key_and_file(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / ".tfaudit.yml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config({}, {}, cwd=tmp_path)
    message = info.value.diagnostics()
    assert needle in message
    assert ".tfaudit.yml" in message


def test_bad_env_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TFAUDIT_MAX_ATTEMPTS"):
        load_config({}, {"TFAUDIT_MAX_ATTEMPTS": "0"}, cwd=tmp_path)


def test_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config({}, {}, cwd=tmp_path, config_path="nope.yml")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "--store", "s3://b/p", "--retention-days", "x", "--", "true"], b"retention-days"),
        (["run", "--store", "ftp://host/x", "--", "true"], b"unsupported store URL"),
        (["run", "--store", "file://relative/x", "--", "true"], b"has a host"),
        (["run", "--store", "s3://b/p"], b"no command to run"),
        (["run", "--", "true"], b"no store configured"),
        (["run", "--bogus", "--", "true"], b"unrecognized arguments"),
        (["frobnicate"], b"invalid choice"),
    ],
)
def test_cli_usage_errors_exit_20_with_one_line(
    tmp_path: Path, args: list[str], needle: bytes
) -> None:
    proc = tfaudit(args, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, cwd=tmp_path)
    assert proc.returncode == 20, proc.stderr
    assert needle in proc.stderr
    assert b"Traceback" not in proc.stderr
    assert proc.stderr.count(b"\n") == 1


def test_bad_yaml_through_the_cli_exits_20(tmp_path: Path) -> None:
    (tmp_path / ".tfaudit.yml").write_text("store: s3://b/p\nunknown-key: 1\n")
    proc = tfaudit(["check"], env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, cwd=tmp_path)
    assert proc.returncode == 20
    assert b"unknown key 'unknown-key' in config file .tfaudit.yml" in proc.stderr


def test_version_is_fast_path(tmp_path: Path) -> None:
    proc = tfaudit(["--version"], env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith(b"tfaudit-ci ")
