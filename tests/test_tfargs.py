"""Parsing wrapped terraform/tofu/terragrunt command lines.

Table tests pin the parsing rules; the live tests run the real terraform with the same
argv and check that the plan file lands exactly where ``parse_invocation`` said it would
(and that terraform accepts the apply argv we treat as "apply this plan file").
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from tfaudit_ci.tfargs import (
    TfInvocation,
    argument_secrets,
    detect_tool,
    parse_invocation,
    redact_arguments,
    state_output_reason,
)

CWD = Path("/ci/build")


def _existing(*paths: str) -> Callable[[Path], bool]:
    wanted = {Path(p) for p in paths}
    return lambda path: path in wanted


def parse(argv: list[str], *files: str, env: Mapping[str, str] | None = None) -> TfInvocation:
    return parse_invocation(argv, cwd=CWD, is_file=_existing(*files), env=env)


@pytest.mark.parametrize(
    ("binary", "tool"),
    [
        ("terraform", "terraform"),
        ("/usr/local/bin/terraform", "terraform"),
        ("C:\\tools\\terraform.exe", "terraform"),
        ("terraform1.5", "terraform"),
        ("terraform-1.11.4", "terraform"),
        ("tofu", "tofu"),
        ("/opt/bin/opentofu", "tofu"),
        ("tofu_v1.8.0", "tofu"),
        ("terragrunt", "terragrunt"),
        ("./bin/terragrunt_linux_amd64", "terragrunt"),
        ("terraform-docs", "other"),
        ("make", "other"),
        ("bash", "other"),
    ],
)
def test_detect_tool(binary: str, tool: str) -> None:
    assert detect_tool(binary) == tool


def test_chdir_and_out_with_equals() -> None:
    inv = parse(["terraform", "-chdir=infra/prod", "plan", "-out=tfplan", "-input=false"])
    assert inv == TfInvocation(
        tool="terraform",
        binary="terraform",
        subcommand="plan",
        chdir="/ci/build/infra/prod",
        plan_out="/ci/build/infra/prod/tfplan",
        apply_plan_file=None,
        detailed_exitcode=False,
        read_only=True,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["terraform", "plan", "-out", "tfplan"],
        ["terraform", "plan", "--out=tfplan"],
        ["terraform", "plan", "--out", "tfplan"],
        ["terraform", "plan", "-var", "x=-out=nope", "-out=tfplan"],
        ["terraform", "plan", "-out=first", "-out=tfplan"],  # Go flags: the last one wins
        ["tofu", "plan", "-lock=false", "-out=tfplan"],
        ["terraform", "plan", "-target", "null_resource.a", "-out", "./sub/../tfplan"],
    ],
)
def test_plan_out_spellings(argv: list[str]) -> None:
    inv = parse(argv)
    assert inv.subcommand == "plan"
    assert inv.plan_out == "/ci/build/tfplan"
    assert inv.chdir is None


def test_absolute_out_ignores_chdir() -> None:
    inv = parse(["terraform", "-chdir=/elsewhere", "plan", "-out=/tmp/p.tfplan"])
    assert (inv.chdir, inv.plan_out) == ("/elsewhere", "/tmp/p.tfplan")


def test_value_flag_followed_by_option_like_value() -> None:
    """``-var-file -out.tfvars``: the value is consumed, so no plan file is written."""
    inv = parse(["terraform", "plan", "-var-file", "-out.tfvars"])
    assert inv.plan_out is None


def test_detailed_exitcode() -> None:
    assert parse(["terraform", "plan", "-detailed-exitcode"]).detailed_exitcode
    assert parse(["terraform", "plan", "--detailed-exitcode=true"]).detailed_exitcode
    assert not parse(["terraform", "plan", "-detailed-exitcode=false"]).detailed_exitcode
    assert not parse(["terraform", "plan"]).detailed_exitcode


def test_apply_with_plan_file() -> None:
    inv = parse(
        ["terraform", "-chdir=infra", "apply", "-auto-approve", "-input=false", "tfplan"],
        "/ci/build/infra/tfplan",
    )
    assert inv.subcommand == "apply"
    assert inv.apply_plan_file == "/ci/build/infra/tfplan"
    assert inv.plan_out is None


def test_apply_positional_that_is_not_a_file() -> None:
    # terraform < 0.15 accepted a configuration directory here.
    assert parse(["terraform", "apply", "-auto-approve", "configdir"]).apply_plan_file is None


def test_apply_without_plan_file_and_value_flags_before_it() -> None:
    inv = parse(["terraform", "apply", "-var", "a=b", "-parallelism", "3"], "/ci/build/a=b")
    assert inv.apply_plan_file is None
    inv = parse(["terraform", "apply", "-lock-timeout=5m", "--", "p.tfplan"], "/ci/build/p.tfplan")
    assert inv.apply_plan_file == "/ci/build/p.tfplan"


@pytest.mark.parametrize(
    ("argv", "subcommand"),
    [
        (["terraform", "destroy", "-auto-approve"], "destroy"),
        (["terraform", "import", "null_resource.a", "id-1"], "import"),
        (["terraform", "state", "rm", "null_resource.a"], "state"),
        (["tofu", "-chdir=x", "fmt", "-check"], "fmt"),
        (["terraform", "-version"], "version"),
        (["terraform"], None),
        (["terraform", "-chdir=x"], None),
    ],
)
def test_subcommands(argv: list[str], subcommand: str | None) -> None:
    inv = parse(argv)
    assert inv.subcommand == subcommand
    assert inv.plan_out is None and inv.apply_plan_file is None


def test_destroy_has_no_plan_file_even_with_positional() -> None:
    assert parse(["terraform", "destroy", "tfplan"], "/ci/build/tfplan").apply_plan_file is None


def test_other_commands_are_not_parsed() -> None:
    inv = parse(["make", "plan", "-out=tfplan"])
    assert inv == TfInvocation("other", "make", None, None, None, None, False)
    assert parse([]).tool == "other"


def test_tf_cli_args_env() -> None:
    env = {"TF_CLI_ARGS_plan": "-out=from-env -detailed-exitcode", "TF_CLI_ARGS": "-no-color"}
    inv = parse(["terraform", "plan"], env=env)
    assert (inv.plan_out, inv.detailed_exitcode) == ("/ci/build/from-env", True)
    # Explicit command-line flags come after the env ones, so they win.
    assert parse(["terraform", "plan", "-out=cli"], env=env).plan_out == "/ci/build/cli"
    assert parse(["terraform", "plan"], env={"TF_CLI_ARGS": "'unbalanced"}).plan_out is None
    # Without env (the default) the environment is not consulted at all.
    assert parse(["terraform", "plan"]).plan_out is None


@pytest.mark.parametrize(
    "argv",
    [
        ["terragrunt", "plan", "-out=tfplan"],
        ["terragrunt", "--terragrunt-log-level", "debug", "plan", "-out", "tfplan"],
        ["terragrunt", "run-all", "plan", "-out=tfplan"],
        ["terragrunt", "run", "--all", "--", "plan", "-out=tfplan"],
        ["terragrunt", "plan", "--terragrunt-non-interactive", "-out=tfplan"],
    ],
)
def test_terragrunt(argv: list[str]) -> None:
    inv = parse(argv)
    assert (inv.tool, inv.subcommand, inv.plan_out) == ("terragrunt", "plan", "/ci/build/tfplan")


def test_terragrunt_working_dir() -> None:
    inv = parse(["terragrunt", "--terragrunt-working-dir", "live/prod", "plan", "-out=p"])
    assert (inv.chdir, inv.plan_out) == ("/ci/build/live/prod", "/ci/build/live/prod/p")
    inv = parse(["terragrunt", "apply", "--working-dir=live", "p"], "/ci/build/live/p")
    assert (inv.chdir, inv.apply_plan_file) == ("/ci/build/live", "/ci/build/live/p")


def test_default_is_file_uses_the_filesystem(tmp_path: Path) -> None:
    (tmp_path / "tfplan").write_bytes(b"plan")
    (tmp_path / "dir").mkdir()
    inv = parse_invocation(["terraform", "apply", "tfplan"], cwd=tmp_path)
    assert inv.apply_plan_file == str(tmp_path / "tfplan")
    assert parse_invocation(["terraform", "apply", "dir"], cwd=tmp_path).apply_plan_file is None


# --- against the real terraform ------------------------------------------------------


def _run(argv: list[str], cwd: Path, env: Mapping[str, str]) -> None:
    proc = subprocess.run(
        argv, cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, f"{argv} failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.mark.parametrize(
    ("args", "env_args"),
    [
        (["-chdir=work", "plan", "-input=false", "-out=rel.tfplan"], None),
        (["-chdir=work", "plan", "-input=false", "-out", "../outside.tfplan"], None),
        (["-chdir=work", "plan", "--out=dashes.tfplan", "-lock=false"], None),
        (["-chdir=work", "plan", "-input=false"], "-out=from-env.tfplan"),
    ],
    ids=["equals", "space-parent", "double-dash", "tf-cli-args"],
)
def test_real_terraform_writes_plan_where_predicted(
    terraform_bin: Path,
    tf_workdir: Path,
    tf_env: dict[str, str],
    args: list[str],
    env_args: str | None,
) -> None:
    base = tf_workdir.parent
    env = dict(tf_env)
    if env_args:
        env["TF_CLI_ARGS_plan"] = env_args
    argv = [str(terraform_bin), *args]
    inv = parse_invocation(argv, cwd=base, env=env)
    assert inv.plan_out is not None and not os.path.exists(inv.plan_out)

    _run(argv, base, env)

    assert Path(inv.plan_out).is_file()
    written = sorted(p.name for p in base.rglob("*.tfplan"))
    assert written == [Path(inv.plan_out).name]

    apply_argv = [str(terraform_bin), *args[:1], "apply", "-auto-approve", "-input=false"]
    apply_argv.append(os.path.relpath(inv.plan_out, tf_workdir))
    applied = parse_invocation(apply_argv, cwd=base)
    assert applied.apply_plan_file == inv.plan_out
    _run(apply_argv, base, tf_env)  # terraform agrees it is a plan file to apply


# --- issue 13: values on the command line (item 2) and state-printing commands (item 4) --------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["terraform", "plan", "-var", "db_password=hunter2-x", "-out=tfplan"],
            ["terraform", "plan", "-var", "db_password=[REDACTED:var]", "-out=tfplan"],
        ),
        (
            ["terraform", "apply", "-var=token=abc=def", "--var=region=eu-west-1", "tfplan"],
            [
                "terraform",
                "apply",
                "-var=token=[REDACTED:var]",
                "--var=region=[REDACTED:var]",
                "tfplan",
            ],
        ),
        (
            ["terraform", "init", "-backend-config=password=s3cret-pw", "-backend-config=prod.hcl"],
            [
                "terraform",
                "init",
                "-backend-config=password=[REDACTED:backend-config]",
                "-backend-config=prod.hcl",
            ],
        ),
        (
            ["terraform", "init", "-backend-config", "access_key=AKIAEXAMPLE"],
            ["terraform", "init", "-backend-config", "access_key=[REDACTED:backend-config]"],
        ),
        (
            ["terragrunt", "run-all", "plan", "-var", "x=1", "-var-file=prod.tfvars"],
            ["terragrunt", "run-all", "plan", "-var", "x=[REDACTED:var]", "-var-file=prod.tfvars"],
        ),
        (["python", "-var", "x=secret"], ["python", "-var", "x=secret"]),  # not terraform
    ],
)
def test_redact_arguments_keeps_names(argv: list[str], expected: list[str]) -> None:
    assert redact_arguments(argv) == expected


def test_argument_secrets_come_from_argv_and_tf_cli_args() -> None:
    env = {
        "TF_CLI_ARGS_plan": "-var 'api_token=from env args' -lock=false",
        "TF_CLI_ARGS": "-backend-config=secret_key=bc-secret-value",
    }
    argv = ["terraform", "plan", "-var", "db_password=argv-secret-1", "-var", "count=3"]
    secrets, warnings = argument_secrets(argv, env)
    assert {(s.rule, s.value) for s in secrets} == {
        ("var:db_password", "argv-secret-1"),
        ("var:api_token", "from env args"),
        ("backend-config:secret_key", "bc-secret-value"),
    }
    assert warnings == []  # count=3: a number of a non-secret name is not a credential


@pytest.mark.parametrize(
    ("argv", "withheld"),
    [
        (["terraform", "output"], True),
        (["terraform", "output", "-json"], True),
        (["terraform", "output", "-raw", "db_password"], True),
        (["tofu", "show"], True),
        (["terraform", "show", "-json"], True),
        (["terraform", "show", "-json", "tfplan"], True),
        (["terraform", "show", "tfplan"], False),  # the plan as terraform renders it: masked
        (["terraform", "state", "pull"], True),
        (["terraform", "state", "show", "aws_db_instance.main"], True),
        (["terraform", "state", "list"], False),
        (["terraform", "console"], True),
        (["terragrunt", "run-all", "output", "-json"], True),
        (["terraform", "plan"], False),
        (["terraform", "apply", "-auto-approve"], False),
        (["bash", "-c", "terraform output"], False),  # not parsed: see docs/redaction.md
    ],
)
def test_state_printing_commands(argv: list[str], withheld: bool) -> None:
    assert (state_output_reason(parse(argv)) is not None) == withheld
