"""INPUT_* -> tfaudit argv: the pure mapping behind entrypoint.py and the GitLab templates."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tfaudit_ci.action_inputs import (
    LIST_INPUTS,
    SWITCH_INPUTS,
    VALUE_INPUTS,
    build_invocation,
    split_command,
)
from tfaudit_ci.errors import EXIT_USAGE, ConfigError
from tfaudit_ci.report.outputs import OUTPUT_NAMES

REPO = Path(__file__).resolve().parent.parent


def github_env(**inputs: str) -> dict[str, str]:
    """Inputs as the runner passes them to a container: INPUT_ + upper-case, hyphens kept."""
    env = {f"INPUT_{name.replace('_', '-').upper()}": value for name, value in inputs.items()}
    env.setdefault("INPUT_TERRAFORM-BIN", "terraform")
    return env


def test_terraform_arguments_get_the_terraform_bin() -> None:
    invocation = build_invocation(github_env(command="plan -out=tfplan -var 'name=a b'"))
    assert invocation.argv == ["run", "--", "terraform", "plan", "-out=tfplan", "-var", "name=a b"]
    assert invocation.working_directory is None


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("terraform fmt -check", ["terraform", "fmt", "-check"]),
        ("tofu plan", ["tofu", "plan"]),
        ("terragrunt run-all plan", ["terragrunt", "run-all", "plan"]),
        ("/opt/tf/bin/terraform apply tfplan", ["/opt/tf/bin/terraform", "apply", "tfplan"]),
    ],
)
def test_full_command_lines_are_kept(command: str, expected: list[str]) -> None:
    assert build_invocation(github_env(command=command)).argv == ["run", "--", *expected]


def test_custom_terraform_bin() -> None:
    env = github_env(command="plan", terraform_bin="tofu")
    assert build_invocation(env).argv == ["run", "--", "tofu", "plan"]
    assert split_command("my-tf plan", "my-tf") == ["my-tf", "plan"]


def test_every_input_maps_to_its_flag_and_empty_inputs_are_dropped() -> None:
    env = github_env(
        command="apply tfplan",
        working_directory="infra/prod",
        config=".tfaudit.prod.yml",
        store="s3://audit/tf",
        stream="acme/prod",
        retention_days="400",
        lock_mode="COMPLIANCE",
        on_unlocked="warn",
        redact="env:DB_PASSWORD\n\n  secret-[0-9]+  \n",
        signing_key="ed25519:/keys/audit.pem",
        upload_plan_file="true",
        endpoint_url="http://minio:9000",
        region="",
        work_dir="",
    )
    invocation = build_invocation(env)
    assert invocation.working_directory == "infra/prod"
    assert invocation.argv == [
        "run",
        "--config",
        ".tfaudit.prod.yml",
        "--store",
        "s3://audit/tf",
        "--stream",
        "acme/prod",
        "--retention-days",
        "400",
        "--lock-mode",
        "COMPLIANCE",
        "--on-unlocked",
        "warn",
        "--signing-key",
        "ed25519:/keys/audit.pem",
        "--endpoint-url",
        "http://minio:9000",
        "--upload-plan-file",
        "--redact",
        "env:DB_PASSWORD",
        "--redact",
        "secret-[0-9]+",
        "--",
        "terraform",
        "apply",
        "tfplan",
    ]


def test_gitlab_underscore_spelling_is_accepted() -> None:
    env = {
        "INPUT_COMMAND": "plan",
        "INPUT_RETENTION_DAYS": "30",
        "INPUT_WORKING_DIRECTORY": "infra",
        "INPUT_UPLOAD_PLAN_FILE": "false",
    }
    invocation = build_invocation(env)
    assert invocation.argv == ["run", "--retention-days", "30", "--", "terraform", "plan"]
    assert invocation.working_directory == "infra"


def test_hyphenated_spelling_wins_over_underscore() -> None:
    env = {"INPUT_COMMAND": "plan", "INPUT_STREAM": "old", "INPUT_STREAM-X": "", "INPUT_STORE": ""}
    env["INPUT_RETENTION-DAYS"] = "7"
    env["INPUT_RETENTION_DAYS"] = "99"
    assert build_invocation(env).argv[:3] == ["run", "--stream", "old"]
    assert "7" in build_invocation(env).argv and "99" not in build_invocation(env).argv


def test_post_mode_recovers_with_the_store_options_only() -> None:
    env = github_env(
        command="plan",
        store="s3://audit/tf",
        signing_key="kms:alias/audit",
        redact="env:X",
        upload_plan_file="true",
        working_directory="infra",
    )
    invocation = build_invocation(env, post=True)
    assert invocation.argv == [
        "recover",
        "--store",
        "s3://audit/tf",
        "--signing-key",
        "kms:alias/audit",
    ]
    assert invocation.working_directory == "infra"


def test_post_mode_needs_no_command() -> None:
    assert build_invocation({"INPUT_STORE": "s3://a/b"}, post=True).argv[0] == "recover"


def test_container_action_keeps_its_spool_in_the_workspace() -> None:
    env = github_env(command="plan")
    env.update({"GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": "/github/workspace"})
    assert build_invocation(env).argv == [
        "run",
        "--work-dir",
        "/github/workspace/.tfaudit",
        "--",
        "terraform",
        "plan",
    ]
    assert "--work-dir" in build_invocation(env, post=True).argv  # post finds the same spool
    env["TFAUDIT_WORK_DIR"] = "/elsewhere"  # the user's explicit choice wins
    assert "--work-dir" not in build_invocation(env).argv
    host = github_env(command="plan")
    host.update({"GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": "/home/runner/_work/r/r"})
    assert "--work-dir" not in build_invocation(host).argv


@pytest.mark.parametrize(
    ("command", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("plan -var 'x=1", "not a valid command line"),
        ("init && terraform plan", "shell syntax '&&'"),
        ("plan | tee out.txt", "shell syntax '|'"),
    ],
)
def test_bad_commands_are_usage_errors(command: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_invocation(github_env(command=command))
    assert fragment in caught.value.diagnostics()
    assert caught.value.exit_code == EXIT_USAGE


def test_bad_switch_value_names_the_input() -> None:
    with pytest.raises(ConfigError, match="upload-plan-file"):
        build_invocation(github_env(command="plan", upload_plan_file="maybe"))


def test_action_metadata_and_mapping_agree() -> None:
    """Every action input reaches the CLI (or the entrypoint itself), none is forgotten."""
    inputs = yaml.safe_load((REPO / "action.yml").read_text())["inputs"]
    handled_by_entrypoint = {"command", "working-directory", "terraform-bin", "tool"}
    handled_by_entrypoint |= {"terraform-version"}
    for name in set(inputs) - handled_by_entrypoint:
        value = "true" if name in SWITCH_INPUTS else "some-value"
        argv = build_invocation(github_env(command="plan", **{name: value})).argv
        assert f"--{name}" in argv, name


def test_every_front_end_declares_every_input_and_output() -> None:
    """The Docker action, the host composite and both GitLab templates declare every input
    the mapping takes (the witness's included) and every output a run publishes."""
    mapped = {*VALUE_INPUTS, *SWITCH_INPUTS, *LIST_INPUTS}
    variables = {"INPUT_" + name.upper().replace("-", "_") for name in mapped}
    docker = yaml.safe_load((REPO / "action.yml").read_text())
    host = yaml.safe_load((REPO / "host" / "action.yml").read_text())
    for meta in (docker, host):
        assert mapped <= set(meta["inputs"]), mapped - set(meta["inputs"])
        assert set(meta["outputs"]) == set(OUTPUT_NAMES)
    host_env = next(step["env"] for step in host["runs"]["steps"] if step.get("id") == "run")
    assert variables <= set(host_env), variables - set(host_env)
    assert all(host["outputs"][name]["value"] == f"${{{{ steps.run.outputs.{name} }}}}"
               for name in OUTPUT_NAMES)  # fmt: skip
    spec, job = yaml.safe_load_all((REPO / "templates" / "tfaudit.yml").read_text())
    assert mapped <= set(spec["spec"]["inputs"]), mapped - set(spec["spec"]["inputs"])
    (component_job,) = (value for key, value in job.items() if "inputs.as" in key)
    assert variables <= set(component_job["variables"])
    include = yaml.safe_load((REPO / "templates" / "tfaudit.gitlab-ci.yml").read_text())
    declared = {name for value in include.values() if isinstance(value, dict)
                for name in value.get("variables", {})}  # fmt: skip
    assert variables <= declared, variables - declared


def test_docker_action_spool_follows_the_workspace_under_act() -> None:
    """Under nektos/act GITHUB_WORKSPACE is the host's path, mounted at that same path."""
    env = github_env(command="plan")
    env.update({"GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": "/tmp/act/repo"})
    argv = build_invocation(env, docker_action=True).argv
    assert argv[:3] == ["run", "--work-dir", "/tmp/act/repo/.tfaudit"]
    assert build_invocation(env, post=True, docker_action=True).argv == [
        "recover",
        "--work-dir",
        "/tmp/act/repo/.tfaudit",
    ]
    assert "--work-dir" not in build_invocation(env).argv  # the host action keeps the default


@pytest.mark.parametrize(
    ("tool", "terraform_bin", "expected"),
    [
        ("tofu", "terraform", ["tofu", "plan"]),
        ("opentofu", "terraform", ["tofu", "plan"]),
        ("terraform", "terraform", ["terraform", "plan"]),
        ("tofu", "terragrunt", ["terragrunt", "plan"]),  # an explicit terraform-bin wins
    ],
)
def test_docker_action_tool_input_picks_the_program(
    tool: str, terraform_bin: str, expected: list[str]
) -> None:
    env = github_env(command="plan", tool=tool, terraform_bin=terraform_bin)
    assert build_invocation(env, docker_action=True).argv == ["run", "--", *expected]


def test_docker_action_rejects_an_unknown_tool() -> None:
    with pytest.raises(ConfigError, match="must be terraform or tofu"):
        build_invocation(github_env(command="plan", tool="pulumi"), docker_action=True)
