"""CI metadata from recorded GitHub/GitLab environments, and from a real git repository.

The GitHub and GitLab fixtures are full environment dumps of the shape the runners export
(values invented, credentials fake). The generic adapter runs the real ``git`` on
temporary repositories, isolated from the machine's git configuration.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tfaudit_ci.ci import CiInfo, default_stream, detect, sanitize_stream
from tfaudit_ci.ci.generic import os_user, parse_remote_url

FIXTURES = Path(__file__).parent / "fixtures" / "ci"
GITHUB_EVENT = FIXTURES / "github_event_pull_request.json"

# Variables whose values may legitimately appear in the metadata. Everything else in the
# dumps (tokens, passwords, JWTs, CI_REPOSITORY_URL, e-mails, TF_VAR_*) must not.
GITHUB_ALLOWED = {
    "GITHUB_REPOSITORY", "GITHUB_SHA", "GITHUB_REF", "GITHUB_ACTOR", "GITHUB_TRIGGERING_ACTOR",
    "GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT", "GITHUB_JOB", "GITHUB_WORKFLOW", "GITHUB_EVENT_NAME",
    "GITHUB_SERVER_URL", "RUNNER_NAME", "RUNNER_OS", "RUNNER_ARCH", "RUNNER_ENVIRONMENT",
    "GITHUB_REPOSITORY_ID", "GITHUB_REPOSITORY_OWNER", "GITHUB_REPOSITORY_OWNER_ID",
    "GITHUB_ACTOR_ID", "GITHUB_WORKFLOW_REF", "GITHUB_WORKFLOW_SHA", "GITHUB_RUN_NUMBER",
    "GITHUB_REF_NAME", "GITHUB_REF_TYPE", "GITHUB_HEAD_REF", "GITHUB_BASE_REF", "GITHUB_ACTION",
}  # fmt: skip
GITLAB_ALLOWED = {
    "CI_PROJECT_PATH", "CI_COMMIT_SHA", "CI_COMMIT_REF_NAME", "GITLAB_USER_LOGIN",
    "CI_PIPELINE_ID", "CI_JOB_ID", "CI_JOB_NAME", "CI_PIPELINE_NAME", "CI_PIPELINE_SOURCE",
    "CI_MERGE_REQUEST_IID", "CI_JOB_URL", "CI_PIPELINE_URL", "CI_RUNNER_DESCRIPTION",
    "CI_RUNNER_ID", "CI_SERVER_URL", "CI_PROJECT_ID", "CI_PIPELINE_IID", "CI_JOB_STAGE",
    "GITLAB_USER_ID", "CI_COMMIT_TAG", "CI_COMMIT_BEFORE_SHA", "CI_RUNNER_TAGS",
    "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME", "CI_MERGE_REQUEST_TARGET_BRANCH_NAME",
    "CI_MERGE_REQUEST_PROJECT_PATH", "CI_ENVIRONMENT_NAME", "CI_CONFIG_PATH",
    # Not read, but their values equal ones that are (the MR's project is the project...).
    "CI_MERGE_REQUEST_PROJECT_ID", "CI_DEFAULT_BRANCH", "CI_MERGE_REQUEST_ASSIGNEES",
    "CI_COMMIT_BRANCH",
}  # fmt: skip


def load_env(name: str) -> dict[str, str]:
    env = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    assert isinstance(env, dict)
    return {str(k): str(v) for k, v in env.items()}


def assert_only_allowed_values(info: CiInfo, env: dict[str, str], allowed: set[str]) -> None:
    """No value of a variable outside ``allowed`` (tokens...) appears in the metadata."""
    data = info.to_dict()
    leaves = {v for v in [*data.values(), *data["extra"].values()] if isinstance(v, str)}
    copied = {name for name, value in env.items() if value in leaves}
    assert copied - allowed == set()
    text = json.dumps(data)
    for name, value in env.items():
        if any(word in name for word in ("TOKEN", "PASSWORD", "JWT", "SECRET", "TF_VAR")):
            assert value not in text, name
    assert "FAKE" not in text


# --- GitHub ----------------------------------------------------------------------------


def test_github_pull_request(tmp_path: Path) -> None:
    env = load_env("github_pull_request_env.json")
    env["GITHUB_EVENT_PATH"] = str(GITHUB_EVENT)

    info = detect(env, cwd=tmp_path)

    assert info.to_dict() == {
        "provider": "github",
        "repository": "acme-corp/infra-live",
        "commit": "6dcb09b5b57875f334f61aebed695e2e4193db5e",
        "ref": "refs/pull/42/merge",
        "actor": "octocat",
        "triggering_actor": "mona",
        "run_id": "9876543210",
        "attempt": "2",
        "job": "terraform-plan",
        "workflow": "Terraform",
        "event": "pull_request",
        "pull_request": "42",
        "run_url": "https://github.com/acme-corp/infra-live/actions/runs/9876543210/attempts/2",
        "runner": "GitHub Actions 17",
        "server_url": "https://github.com",
        "extra": {
            "repository_id": "712345678",
            "repository_owner": "acme-corp",
            "repository_owner_id": "98765432",
            "actor_id": "583231",
            "workflow_ref": (
                "acme-corp/infra-live/.github/workflows/terraform.yml@refs/pull/42/merge"
            ),
            "workflow_sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e",
            "run_number": "317",
            "ref_name": "42/merge",
            "ref_type": "branch",
            "head_ref": "feature/add-bucket",
            "base_ref": "main",
            "action": "__run_2",
            "runner_os": "Linux",
            "runner_arch": "X64",
            "runner_environment": "github-hosted",
            "pull_request_head_sha": "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c",
        },
    }
    assert_only_allowed_values(info, env, GITHUB_ALLOWED)


def test_github_pr_number_from_the_event_even_when_the_ref_is_the_base(tmp_path: Path) -> None:
    """pull_request_target runs on the base branch: only the payload knows the PR."""
    env = load_env("github_pull_request_env.json")
    env.update(
        GITHUB_EVENT_PATH=str(GITHUB_EVENT),
        GITHUB_EVENT_NAME="pull_request_target",
        GITHUB_REF="refs/heads/main",
    )
    assert detect(env, cwd=tmp_path).pull_request == "42"


@pytest.mark.parametrize("event_file", ["missing", "not-json", "list"])
def test_github_pr_number_falls_back_to_the_ref(tmp_path: Path, event_file: str) -> None:
    env = load_env("github_pull_request_env.json")
    path = tmp_path / "event.json"
    if event_file == "not-json":
        path.write_text("{truncated", encoding="utf-8")
    elif event_file == "list":
        path.write_text("[1, 2]", encoding="utf-8")
    env["GITHUB_EVENT_PATH"] = str(path)
    info = detect(env, cwd=tmp_path)
    assert info.pull_request == "42"
    assert info.extra["pull_request_head_sha"] is None


def test_github_push_on_enterprise_server(tmp_path: Path) -> None:
    env = load_env("github_push_env.json")
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"ref": "refs/heads/main", "after": "0f1e"}), encoding="utf-8")
    env["GITHUB_EVENT_PATH"] = str(event)

    info = detect(env, cwd=tmp_path)

    assert info.provider == "github"
    assert info.pull_request is None
    assert info.event == "push"
    assert info.server_url == "https://github.example.com"
    assert info.run_url == (
        "https://github.example.com/acme-corp/infra-live/actions/runs/9876543299/attempts/1"
    )
    assert info.runner == "acme-arm-runner-03"
    # Exported as "" on push events: recorded as null, not as an empty string.
    assert info.extra["head_ref"] is None and info.extra["base_ref"] is None
    assert info.extra["runner_environment"] == "self-hosted"
    assert_only_allowed_values(info, env, GITHUB_ALLOWED)


def test_github_with_almost_nothing_set(tmp_path: Path) -> None:
    info = detect({"GITHUB_ACTIONS": "true"}, cwd=tmp_path)
    assert info.provider == "github"
    assert info.repository is None and info.run_url is None and info.pull_request is None
    assert info.server_url == "https://github.com"
    assert all(value is None for value in info.extra.values())


# --- GitLab ----------------------------------------------------------------------------


def test_gitlab_merge_request(tmp_path: Path) -> None:
    env = load_env("gitlab_merge_request_env.json")

    info = detect(env, cwd=tmp_path)

    assert info.to_dict() == {
        "provider": "gitlab",
        "repository": "platform/infra/live",
        "commit": "1a2b3c4d5e6f708192a3b4c5d6e7f80912a3b4c5",
        "ref": "feature/add-bucket",
        "actor": "jdoe",
        "triggering_actor": "jdoe",
        "run_id": "1598765432",
        "attempt": "8812345678",  # GitLab has no attempt counter: the job id (see gitlab.py)
        "job": "terraform:plan",
        "workflow": "MR pipeline: Add the audit bucket",
        "event": "merge_request_event",
        "pull_request": "17",
        "run_url": "https://gitlab.example.com/platform/infra/live/-/jobs/8812345678",
        "runner": "shared-runner-k8s-eu-2",
        "server_url": "https://gitlab.example.com",
        "extra": {
            "project_id": "48123456",
            "pipeline_id": "1598765432",
            "pipeline_iid": "2211",
            "pipeline_url": "https://gitlab.example.com/platform/infra/live/-/pipelines/1598765432",
            "job_id": "8812345678",
            "job_stage": "plan",
            "user_id": "4242",
            "commit_tag": None,
            "commit_before_sha": "0000000000000000000000000000000000000000",
            "merge_request_source_branch": "feature/add-bucket",
            "merge_request_target_branch": "main",
            "merge_request_project_path": "platform/infra/live",
            "runner_id": "31415",
            "runner_tags": '["k8s", "eu"]',
            "environment": None,
            "config_path": ".gitlab-ci.yml",
        },
    }
    assert_only_allowed_values(info, env, GITLAB_ALLOWED)
    assert "jane.doe@example.com" not in json.dumps(info.to_dict())


def test_gitlab_push_with_fallbacks(tmp_path: Path) -> None:
    env = load_env("gitlab_push_env.json")
    info = detect(env, cwd=tmp_path)
    assert info.provider == "gitlab"
    assert (info.ref, info.event, info.pull_request) == ("main", "push", None)
    assert info.run_url == "https://gitlab.com/platform/infra/live/-/pipelines/1598765500"
    assert info.runner == "27182"  # no runner description: its id
    assert info.workflow is None
    assert_only_allowed_values(info, env, GITLAB_ALLOWED)


def test_detection_order(tmp_path: Path) -> None:
    both = {"GITHUB_ACTIONS": "true", "GITLAB_CI": "true", "PATH": ""}
    assert detect(both, cwd=tmp_path).provider == "github"
    assert detect({"GITHUB_ACTIONS": "false", "GITLAB_CI": "true"}, cwd=tmp_path).provider == (
        "gitlab"
    )
    assert detect({"GITLAB_CI": "1", "PATH": ""}, cwd=tmp_path).provider == "generic"


# --- generic, on real git repositories -----------------------------------------------------


@pytest.fixture
def git_env(tmp_path: Path) -> dict[str, str]:
    """git isolated from this machine's configuration; author set for commits."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed (needed to build the test repositories)")
    home = tmp_path / "home"
    home.mkdir()
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
        # A directory under tmp is never taken for part of an enclosing repository.
        "GIT_CEILING_DIRECTORIES": str(tmp_path),
        "USER": "ci-builder",
    }


def git(repo: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path, git_env: dict[str, str]) -> Path:
    path = tmp_path / "my app"
    path.mkdir()
    git(path, git_env, "init", "-q")
    git(path, git_env, "symbolic-ref", "HEAD", "refs/heads/main")
    (path / "main.tf").write_text("# infra\n", encoding="utf-8")
    git(path, git_env, "add", "main.tf")
    git(path, git_env, "commit", "-q", "-m", "first")
    return path


def test_generic_in_a_git_repository(repo: Path, git_env: dict[str, str]) -> None:
    remote = "https://deploy-user:s3cr3t-pat-9911@git.example.com:8443/team/sub/app.git"
    git(repo, git_env, "remote", "add", "origin", remote)

    info = detect(git_env, cwd=repo)

    assert info.provider == "generic"
    assert info.commit == git(repo, git_env, "rev-parse", "HEAD")
    assert info.ref == "refs/heads/main"
    assert info.repository == "team/sub/app"
    assert info.server_url == "https://git.example.com:8443"
    assert info.actor == info.triggering_actor == "ci-builder"
    assert info.run_id is None and info.pull_request is None and info.run_url is None
    text = json.dumps(info.to_dict())
    assert "s3cr3t-pat-9911" not in text and "deploy-user" not in text
    assert default_stream(info, repo, env=git_env) == "team/sub/app"


def test_generic_detached_head_without_remote(repo: Path, git_env: dict[str, str]) -> None:
    commit = git(repo, git_env, "rev-parse", "HEAD")
    git(repo, git_env, "checkout", "-q", "--detach", commit)

    info = detect(git_env, cwd=repo)

    assert (info.commit, info.ref, info.repository) == (commit, None, None)
    # No slug, no remote: the directory's name, made safe for an object key.
    assert default_stream(info, repo, env=git_env) == "my-app"


def test_generic_repository_without_commits(tmp_path: Path, git_env: dict[str, str]) -> None:
    empty = tmp_path / "fresh"
    empty.mkdir()
    git(empty, git_env, "init", "-q")
    git(empty, git_env, "symbolic-ref", "HEAD", "refs/heads/trunk")
    info = detect(git_env, cwd=empty)
    assert (info.commit, info.ref) == (None, "refs/heads/trunk")


def test_generic_outside_any_repository(tmp_path: Path, git_env: dict[str, str]) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    info = detect(git_env, cwd=plain)
    assert (info.commit, info.ref, info.repository, info.server_url) == (None,) * 4
    assert info.actor == "ci-builder"


def test_generic_without_git_installed(repo: Path, git_env: dict[str, str]) -> None:
    no_git = {**git_env, "PATH": str(repo.parent / "empty-bin")}
    info = detect(no_git, cwd=repo)
    assert (info.commit, info.ref, info.repository) == (None, None, None)
    assert info.actor == "ci-builder"


def test_github_without_slug_uses_the_remote(repo: Path, git_env: dict[str, str]) -> None:
    git(repo, git_env, "remote", "add", "origin", "git@github.com:Acme/Infra.Live.git")
    info = detect({"GITHUB_ACTIONS": "true"}, cwd=repo)
    assert default_stream(info, repo, env=git_env) == "Acme/Infra.Live"


# --- pure helpers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://github.com/acme/infra.git", ("https://github.com", "acme/infra")),
        ("https://x-access-token:tok@github.com/acme/infra", ("https://github.com", "acme/infra")),
        ("http://gitlab.local:8080/g/sub/p.git/", ("http://gitlab.local:8080", "g/sub/p")),
        ("git@github.com:acme/infra.git", (None, "acme/infra")),
        ("gitlab.com:group/proj", (None, "group/proj")),
        ("ssh://git@git.example.com:2222/team/app.git", (None, "team/app")),
        ("file:///srv/git/app.git", (None, "app")),
        ("/srv/git/app.git", (None, "app")),
        ("../sibling", (None, "sibling")),
    ],
)
def test_parse_remote_url(url: str, expected: tuple[str | None, str | None]) -> None:
    assert parse_remote_url(url) == expected


@pytest.mark.parametrize(
    ("raw", "stream"),
    [
        ("acme/infra", "acme/infra"),
        ("Acme Corp/infra live!", "Acme-Corp/infra-live"),
        ("../../etc/passwd", "etc/passwd"),
        ("a//b/./c/", "a/b/c"),
        ("group\\sub\\proj", "group/sub/proj"),
        ("ünïcode/repo", "n-code/repo"),
        ("...", ""),
        ("", ""),
    ],
)
def test_sanitize_stream(raw: str, stream: str) -> None:
    assert sanitize_stream(raw) == stream


def test_default_stream_prefers_the_slug(tmp_path: Path) -> None:
    info = CiInfo(provider="gitlab", repository="platform/infra/live")
    assert default_stream(info, tmp_path) == "platform/infra/live"
    weird = tmp_path / "..."
    weird.mkdir()
    assert default_stream(CiInfo(provider="generic"), weird, env={"PATH": ""}) == "default"


def test_os_user() -> None:
    assert os_user({"LOGNAME": "", "USER": "from-env"}) == "from-env"
    pwd = pytest.importorskip("pwd")
    assert os_user({}) == pwd.getpwuid(os.getuid()).pw_name
