"""GitLab reporting: the terraform report, the dotenv report, and the templates' job script."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tfaudit_ci.report import gitlab
from tfaudit_ci.result import PlanCounts, RunResult

REPO = Path(__file__).resolve().parent.parent
COMPONENT = REPO / "templates" / "tfaudit.yml"
PLAIN_TEMPLATE = REPO / "templates" / "tfaudit.gitlab-ci.yml"
PLACEHOLDER = re.compile(r"\$\[\[\s*inputs\.([A-Za-z0-9_-]+)\s*\]\]")


def make_result(**overrides: object) -> RunResult:
    values: dict[str, object] = {
        "exit_code": 0,
        "command_exit_code": 0,
        "status": "succeeded",
        "audit_ok": True,
        "store": "s3://audit/tf",
        "stream": "acme/infra",
        "seq": 7,
        "record_uri": "s3://audit/tf/acme/infra/chain/000000000007.json",
        "record_sha256": "cd" * 32,
        "log_path": "/builds/acme/infra/.tfaudit/run/output.log",
        "plan_json_path": "/builds/acme/infra/.tfaudit/run/plan.json",
        "plan": PlanCounts(add=2, change=0, destroy=5, import_=1),
    }
    values.update(overrides)
    return RunResult(**values)  # type: ignore[arg-type]


def parse_dotenv(text: str) -> dict[str, str]:
    """GitLab's rule: one KEY=VALUE per line, key of letters, digits and underscores."""
    parsed = {}
    for line in text.splitlines():
        assert re.fullmatch(r"[A-Za-z0-9_]+=[^\n]*", line), line
        key, value = line.split("=", 1)
        parsed[key] = value
    return parsed


def test_terraform_report_is_gitlabs_create_update_delete() -> None:
    assert gitlab.terraform_report(make_result()) == {"create": 2, "update": 0, "delete": 5}
    assert gitlab.terraform_report(make_result(plan=None)) == {
        "create": 0,
        "update": 0,
        "delete": 0,
    }


def test_dotenv_has_the_github_outputs_under_tfaudit_names() -> None:
    parsed = parse_dotenv(gitlab.dotenv(make_result(), path_base="/builds/acme/infra"))
    assert parsed == {
        "TFAUDIT_EXIT_CODE": "0",
        "TFAUDIT_STATUS": "succeeded",
        "TFAUDIT_AUDIT_OK": "true",
        "TFAUDIT_SEQ": "7",
        "TFAUDIT_RECORD_URI": "s3://audit/tf/acme/infra/chain/000000000007.json",
        "TFAUDIT_RECORD_SHA256": "cd" * 32,
        "TFAUDIT_CHECKPOINT_URI": "",
        "TFAUDIT_LOG_PATH": ".tfaudit/run/output.log",
        "TFAUDIT_PLAN_JSON_PATH": ".tfaudit/run/plan.json",
        "TFAUDIT_TO_ADD": "2",
        "TFAUDIT_TO_CHANGE": "0",
        "TFAUDIT_TO_DESTROY": "5",
    }


def test_dotenv_values_cannot_break_lines_or_quote() -> None:
    hostile = 's3://b/k\nTFAUDIT_STATUS=succeeded\r\n"quoted" #comment'
    text = gitlab.dotenv(make_result(record_uri=hostile, status="failed"))
    parsed = parse_dotenv(text)
    assert parsed["TFAUDIT_STATUS"] == "failed"
    assert "\n" not in parsed["TFAUDIT_RECORD_URI"] and '"' not in parsed["TFAUDIT_RECORD_URI"]
    assert len(text.splitlines()) == 12


def test_report_writes_both_files_in_the_project_dir(tmp_path: Path) -> None:
    env = {"GITLAB_CI": "true", "CI_PROJECT_DIR": str(tmp_path)}
    gitlab.report(make_result(log_path=str(tmp_path / ".tfaudit/output.log")), env)
    plan_report = json.loads((tmp_path / "tfaudit-plan.json").read_text())
    assert plan_report == {"create": 2, "update": 0, "delete": 5}
    parsed = parse_dotenv((tmp_path / "tfaudit.env").read_text())
    assert parsed["TFAUDIT_LOG_PATH"] == ".tfaudit/output.log"


def test_report_paths_can_be_moved(tmp_path: Path) -> None:
    env = {
        "CI_PROJECT_DIR": str(tmp_path),
        "TFAUDIT_GITLAB_DOTENV": "reports/out.env",
        "TFAUDIT_GITLAB_PLAN_REPORT": str(tmp_path / "abs" / "plan.json"),
    }
    gitlab.report(make_result(), env)
    assert (tmp_path / "reports" / "out.env").is_file()
    assert (tmp_path / "abs" / "plan.json").is_file()


def test_no_plan_means_no_terraform_report(tmp_path: Path) -> None:
    """An all-zero report would show reviewers "no changes" for a run that planned nothing."""
    gitlab.report(make_result(plan=None), {"CI_PROJECT_DIR": str(tmp_path)})
    assert not (tmp_path / "tfaudit-plan.json").exists()
    assert parse_dotenv((tmp_path / "tfaudit.env").read_text())["TFAUDIT_TO_ADD"] == ""


# --- the templates ------------------------------------------------------------------------


def substitute(node: Any, inputs: dict[str, Any]) -> Any:
    """GitLab's input interpolation, on the parsed YAML (as GitLab does it)."""
    if isinstance(node, dict):
        return {substitute(k, inputs): substitute(v, inputs) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute(item, inputs) for item in node]
    if isinstance(node, str):
        whole = PLACEHOLDER.fullmatch(node.strip())
        if whole:
            return inputs[whole.group(1)]
        return PLACEHOLDER.sub(lambda m: str(inputs[m.group(1)]), node)
    return node


def component_job(**given: str) -> tuple[str, dict[str, Any]]:
    spec_doc, job_doc = yaml.safe_load_all(COMPONENT.read_text())
    spec = spec_doc["spec"]["inputs"]
    missing = [n for n, props in spec.items() if "default" not in (props or {}) and n not in given]
    assert not missing, f"required inputs not given: {missing}"
    inputs = {name: given.get(name, (props or {}).get("default")) for name, props in spec.items()}
    ((name, job),) = substitute(job_doc, inputs).items()
    return name, job


def test_component_inputs_mirror_the_action_inputs() -> None:
    action_inputs = set(yaml.safe_load((REPO / "action.yml").read_text())["inputs"])
    spec = yaml.safe_load_all(COMPONENT.read_text()).__next__()["spec"]["inputs"]
    assert action_inputs <= set(spec)
    # Each mirrored input reaches the job as INPUT_<NAME>, which action_inputs reads.
    _, job = component_job(command="plan")
    for name in action_inputs:
        assert f"INPUT_{name.upper().replace('-', '_')}" in job["variables"], name


def test_component_job_reports_and_oidc() -> None:
    name, job = component_job(command="plan", **{"as": "plan-prod"})
    assert name == "plan-prod"
    assert job["artifacts"]["reports"] == {
        "terraform": gitlab.DEFAULT_PLAN_REPORT,
        "dotenv": gitlab.DEFAULT_DOTENV,
    }
    assert job["artifacts"]["when"] == "always"
    assert job["id_tokens"]["AWS_OIDC_ID_TOKEN"]["aud"] == "sts.amazonaws.com"
    assert job["image"]["entrypoint"] == [""]


def test_plain_template_runs_the_same_job_as_the_component() -> None:
    _, component = component_job(command="plan")
    plain = yaml.safe_load(PLAIN_TEMPLATE.read_text())[".tfaudit"]
    for key in ("script", "after_script", "artifacts", "id_tokens"):
        assert plain[key] == component[key], key
    assert set(plain["variables"]) - {"TFAUDIT_CI_IMAGE"} == set(component["variables"])


def gitlab_env(
    project: Path, job_variables: dict[str, Any], base: dict[str, str]
) -> dict[str, str]:
    """A recorded GitLab job environment (predefined variables) plus the job's variables."""
    env = dict(base)
    env.update(
        {
            "CI": "true",
            "GITLAB_CI": "true",
            "CI_SERVER_URL": "https://gitlab.example.com",
            "CI_PROJECT_DIR": str(project),
            "CI_PROJECT_ID": "4242",
            "CI_PROJECT_PATH": "acme/infra",
            "CI_PROJECT_URL": "https://gitlab.example.com/acme/infra",
            "CI_PIPELINE_ID": "1001",
            "CI_PIPELINE_SOURCE": "merge_request_event",
            "CI_JOB_ID": "5005",
            "CI_JOB_NAME": "plan",
            "CI_JOB_URL": "https://gitlab.example.com/acme/infra/-/jobs/5005",
            "CI_COMMIT_SHA": "0123456789abcdef0123456789abcdef01234567",
            "CI_COMMIT_REF_NAME": "feature/x",
            "CI_MERGE_REQUEST_IID": "12",
            "GITLAB_USER_LOGIN": "alice",
            "AWS_OIDC_ID_TOKEN": "not-used-without-a-role",
        }
    )
    for key, value in job_variables.items():
        text = value["value"] if isinstance(value, dict) else value
        env[key] = str(text).replace("${CI_PROJECT_DIR}", str(project))
    return env


def test_component_script_block_runs_and_writes_the_reports(tmp_path: Path) -> None:
    """The job's script, run by bash as the runner would, with a real terraform plan.

    The store is file:// (not WORM, so on-unlocked=warn): S3 behaviour is covered by the
    run tests; this one checks the template, the input mapping and the report files.
    """
    from devkit.tfhelpers import isolated_env, pinned_terraform, write_null_config

    project = tmp_path / "project"
    write_null_config(project / "infra", count=2)
    tool_bin = tmp_path / "bin"
    tool_bin.mkdir()
    (tool_bin / "terraform").symlink_to(pinned_terraform())
    base = isolated_env(tmp_path)
    # The job image has `python` with tfaudit-ci installed: here, this virtualenv's.
    python_dir = str(Path(sys.executable).parent)
    base["PATH"] = os.pathsep.join([str(tool_bin), python_dir, base["PATH"]])
    base["PYTHONPATH"] = str(REPO)

    _, job = component_job(
        command="plan -input=false -out=tfplan",
        **{
            "working-directory": "infra",
            "store": (tmp_path / "store").as_uri(),
            "on-unlocked": "warn",
            "retention-days": "1",
        },
    )
    env = gitlab_env(project, job["variables"], base)
    script = "set -eo pipefail\n" + "\n".join(job["script"])
    completed = subprocess.run(
        ["bash", "-c", script], cwd=project, env=env, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    dotenv = parse_dotenv((project / "tfaudit.env").read_text())
    assert dotenv["TFAUDIT_STATUS"] == "succeeded"
    assert dotenv["TFAUDIT_EXIT_CODE"] == "0"
    assert dotenv["TFAUDIT_TO_ADD"] == "2"
    assert dotenv["TFAUDIT_RECORD_URI"]
    assert (project / dotenv["TFAUDIT_LOG_PATH"]).is_file()  # relative to CI_PROJECT_DIR
    assert json.loads((project / "tfaudit-plan.json").read_text()) == {
        "create": 2,
        "update": 0,
        "delete": 0,
    }

    recover = subprocess.run(
        ["bash", "-c", "set -eo pipefail\n" + "\n".join(job["after_script"])],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert recover.returncode == 0, recover.stderr[-3000:]
    assert "recover failed" not in recover.stdout
