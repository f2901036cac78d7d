"""The command line, in process (``cli.main(argv, env)``): usage, typos, help, sizes,
and a failed ``run`` that still reports (issues 11 and 15)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tfaudit_ci import cli
from tfaudit_ci.config import load_config


def _main(
    argv: list[str], capsys: pytest.CaptureFixture[str], env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    code = cli.main(argv, env or {"PATH": "/usr/bin:/bin"})
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("argv", [[], ["-v"], ["--verbose"]])
def test_no_command_prints_usage_and_exits_20(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _main(argv, capsys)
    assert code == 20
    assert "usage: tfaudit" in err and "no command given" in err
    assert "AttributeError" not in err


def test_options_are_never_abbreviated_and_typos_get_a_suggestion(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = _main(["check", "--stor", f"file://{tmp_path}"], capsys)
    assert code == 20
    assert "unrecognized arguments: --stor" in err and "--stor -> --store" in err
    assert "tfaudit check --help" in err
    code, _, err = _main(["verfy"], capsys)
    assert code == 20 and "verfy -> verify" in err


@pytest.mark.parametrize("command", ["run", "check", "verify", "recover"])
def test_each_subcommand_help_has_a_description_and_its_exit_codes(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"], {})
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert cli.DESCRIPTIONS[command].split(":")[0][:30] in out.replace("\n", " ")
    assert "exit codes:" in out and "20 " in out


def test_run_json_on_stdout_is_refused_for_result_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = _main(["run", "--store", f"file://{tmp_path}", "--json", "--", "true"], capsys)
    assert code == 20 and out == ""
    assert "--result FILE" in err


def test_a_run_that_never_started_still_writes_every_report(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Exit 20 before anything ran: the outputs say not-run, the summary and ::error:: are
    written, the GitLab dotenv too, and so is --result."""
    outputs, summary = tmp_path / "out", tmp_path / "summary"
    outputs.touch()
    summary.touch()
    result = tmp_path / "result.json"
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_OUTPUT": str(outputs),
        "GITHUB_STEP_SUMMARY": str(summary),
        "TFAUDIT_RETENTION_DAYS": "soon",  # a bad value: exit 20 while loading the config
    }
    code, out, err = _main(
        ["run", "--store", f"file://{tmp_path}/s", "--result", str(result), "--", "true"],
        capsys,
        env,
    )
    assert code == 20
    assert "::error title=tfaudit::" in out and "retention-days" in out
    text = outputs.read_text()
    assert "status<<" in text and "\nnot-run\n" in text and "\nfalse\n" in text
    assert "not-run" in summary.read_text()
    document = json.loads(result.read_text())
    assert document["status"] == "not-run" and document["exit_code"] == 20
    assert "retention-days" in err
    gitlab_dir = tmp_path / "gitlab"
    gitlab_dir.mkdir()
    code, _, _ = _main(
        ["run", "--store", "nope://x", "--", "true"],
        capsys,
        {"GITLAB_CI": "true", "CI_PROJECT_DIR": str(gitlab_dir)},
    )
    assert code == 20
    dotenv = (gitlab_dir / "tfaudit.env").read_text()
    assert "TFAUDIT_STATUS=not-run" in dotenv and "TFAUDIT_AUDIT_OK=false" in dotenv


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("67108864", 64 * 1024 * 1024),
        ("64MiB", 64 * 1024 * 1024),
        ("64 MiB", 64 * 1024 * 1024),
        ("100MB", 100_000_000),
        ("1GiB", 1024**3),
        ("8m", 8_000_000),  # without "i", units are decimal (as in Kubernetes)
    ],
)
def test_multipart_threshold_takes_sizes(text: str, expected: int, tmp_path: Path) -> None:
    config = load_config({"multipart-threshold": text}, {}, cwd=tmp_path)
    assert config.multipart_threshold == expected


def test_bad_size_names_the_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = _main(["check", "--store", f"file://{tmp_path}", "--multipart-threshold",
                          "lots"], capsys)  # fmt: skip
    assert code == 20 and "multipart-threshold" in err and "64MiB" in err


def test_run_flags_reach_the_config(tmp_path: Path) -> None:
    """`--redact` and `--upload-plan-file` on the command line set their config keys (the
    second was once parsed into an attribute nothing read, and silently ignored)."""
    args = ["run", "--store", f"file://{tmp_path}", "--upload-plan-file",
            "--redact", "corp-[0-9]+", "--", "true"]  # fmt: skip
    config = load_config(cli._config_flags(cli.parse(args)), {}, cwd=tmp_path)
    assert config.upload_plan_file is True
    assert "corp-[0-9]+" in config.redact
    bare_args = [*args[:3], "--", "true"]
    bare = load_config(cli._config_flags(cli.parse(bare_args)), {}, cwd=tmp_path)
    assert bare.upload_plan_file is False
