"""A real trail for the reading commands' tests, built once per store kind per session.

Every record comes from ``tfaudit run`` around the real terraform (``terraform_data``
resources: built into terraform >= 1.4, so no provider and no network), by two actors (a
GitHub push and a GitLab merge request, from ``tests/fixtures/ci``), signed with an HMAC key:

    seq 0  octocat  plan -out=p1 -detailed-exitcode   +2 (a, b)
    seq 1  octocat  apply p1                           reviewed
    seq 2  jdoe     plan -out=p2                       ~a, b replaced, imported imported
    seq 3  jdoe     apply p2                           reviewed
    seq 4  octocat  plan -out=p3                       +c
    seq 5  jdoe     apply -auto-approve                no plan file (creates c)
    seq 6  octocat  apply p3                           fails: the saved plan is stale
    seq 7  jdoe     apply p4                           p4 recorded in the OTHER stream
    seq 8  octocat  apply p5                           p5 planned outside tfaudit

and, in stream ``OTHER_STREAM``, seq 0: ``plan -out=p4``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devkit.servers import S3Server, make_lock_bucket, unique_bucket
from devkit.tfhelpers import isolated_env, terraform_binaries, terraform_version
from tests.support.tfaudit_proc import tfaudit

STREAM = "acme/infra"
OTHER_STREAM = "acme/infra-review"
KEY_VAR = "TRAIL_HMAC_KEY"
KEY = "read-trail-test-key"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ci"
# Fixture variables that describe the fixture's machine, not the CI run.
_MACHINE_VARS = {"HOME", "PATH", "USER", "HOSTNAME", "GITHUB_EVENT_PATH"}


@dataclass
class Trail:
    store_url: str
    env: dict[str, str]  # for CLI calls: isolated, with the store's credentials and the key
    cwd: Path
    extra: list[str] = field(default_factory=list)  # e.g. --endpoint-url for S3
    seqs: dict[str, int] = field(default_factory=dict)

    def args(self, command: str, *rest: str, stream: str = STREAM) -> list[str]:
        return [command, "--store", self.store_url, "--stream", stream, *self.extra, *rest]

    def run(self, command: str, *rest: str, stream: str = STREAM) -> tuple[int, str, str]:
        proc = tfaudit(self.args(command, *rest, stream=stream), env=self.env, cwd=self.cwd)
        return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


_BUILT: dict[tuple[str, str], Trail] = {}


def session_trail(
    kind: str, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Trail:
    """The trail of this store kind (and S3 server), built on first use in the session."""
    key = (kind, s3_server.endpoint if kind == "s3" else "")
    if key not in _BUILT:
        root = tmp_path_factory.mktemp(f"read-trail-{kind}")
        if kind == "file":
            _BUILT[key] = build_trail((root / "store").as_uri(), root, {}, [])
        else:
            bucket = unique_bucket("read")
            make_lock_bucket(s3_server.client(), bucket)
            extra = ["--endpoint-url", s3_server.endpoint]
            _BUILT[key] = build_trail(f"s3://{bucket}/audit", root, s3_server.env(), extra)
    return _BUILT[key]


def modern_terraform() -> Path:
    for version, path in reversed(terraform_binaries()):
        if tuple(int(p) for p in version.split(".")[:2]) >= (1, 5):
            return path
    pytest.skip(
        "READ-TRAIL TESTS SKIPPED: they need terraform >= 1.5 on PATH (terraform_data and "
        f"import blocks); found only {[v for v, _ in terraform_binaries()]}"
    )


def actor_env(kind: str, n: int) -> dict[str, str]:
    """CI facts of run ``n`` by the GitHub actor ("github") or the GitLab one ("gitlab")."""
    name = "github_push_env.json" if kind == "github" else "gitlab_merge_request_env.json"
    facts = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    env = {k: v for k, v in facts.items() if k not in _MACHINE_VARS}
    commit = f"{n:02d}" + ("ab" if kind == "github" else "cd") * 19
    if kind == "github":
        env.update(GITHUB_SHA=commit, GITHUB_RUN_ID=str(7000 + n))
    else:
        job = str(9000 + n)
        env.update(CI_COMMIT_SHA=commit, CI_PIPELINE_ID=str(8000 + n), CI_JOB_ID=job)
        env["CI_JOB_URL"] = env["CI_JOB_URL"].rsplit("/", 1)[0] + "/" + job
    return env


_CONFIGS = {
    1: {"a": '"one"', "b": "[1]"},
    2: {"a": '"two"', "b": "[2]", "import": True},
    3: {"a": '"two"', "b": "[2]", "import": True, "c": True},
    4: {"a": '"three"', "b": "[2]", "import": True, "c": True},
    5: {"a": '"four"', "b": "[2]", "import": True, "c": True},
}


def write_config(work: Path, version: int) -> None:
    spec = _CONFIGS[version]
    parts = [
        f'resource "terraform_data" "a" {{\n  input = {spec["a"]}\n}}\n',
        f'resource "terraform_data" "b" {{\n  triggers_replace = {spec["b"]}\n}}\n',
    ]
    if spec.get("import"):
        parts.append('import {\n  to = terraform_data.imported\n  id = "imported-id-1"\n}\n')
        parts.append('resource "terraform_data" "imported" {\n}\n')
    if spec.get("c"):
        parts.append('resource "terraform_data" "c" {\n  input = "c"\n}\n')
    (work / "main.tf").write_text("\n".join(parts), encoding="utf-8")


def build_trail(
    store_url: str, root: Path, store_env: Mapping[str, str], extra: list[str]
) -> Trail:
    terraform = str(modern_terraform())
    work = root / "tf"
    work.mkdir(parents=True)
    base = isolated_env(root / "env")
    base.update(store_env)
    base.update(
        {
            KEY_VAR: KEY,
            "TFAUDIT_SIGNING_KEY": f"hmac:env:{KEY_VAR}",
            "TFAUDIT_WORK_DIR": str(root / "spools"),
            "TFAUDIT_ON_UNLOCKED": "warn",  # the file store is not WORM
        }
    )
    trail = Trail(
        store_url, {k: v for k, v in base.items() if not k.startswith("TFAUDIT_")}, work, extra
    )
    trail.env[KEY_VAR] = KEY
    counter = iter(range(100))

    def run(kind: str, *argv: str, stream: str = STREAM, expect: tuple[int, ...] = (0,)) -> None:
        env = {**base, **actor_env(kind, next(counter))}
        args = ["run", "--store", store_url, "--stream", stream, *extra, "--", terraform, *argv]
        proc = tfaudit(args, env=env, cwd=work)
        assert proc.returncode in expect, (argv, proc.returncode, proc.stderr.decode()[-3000:])

    def plain(*argv: str) -> None:
        import subprocess

        subprocess.run([terraform, *argv], cwd=work, env=base, check=True, capture_output=True)

    write_config(work, 1)
    run("github", "plan", "-input=false", "-out=p1", "-detailed-exitcode", expect=(2,))
    run("github", "apply", "-input=false", "p1")
    write_config(work, 2)
    run("gitlab", "plan", "-input=false", "-out=p2")
    run("gitlab", "apply", "-input=false", "p2")
    write_config(work, 3)
    run("github", "plan", "-input=false", "-out=p3")
    run("gitlab", "apply", "-input=false", "-auto-approve")
    run("github", "apply", "-input=false", "p3", expect=(1,))
    write_config(work, 4)
    run("github", "plan", "-input=false", "-out=p4", stream=OTHER_STREAM)
    run("gitlab", "apply", "-input=false", "p4")
    write_config(work, 5)
    plain("plan", "-input=false", "-out=p5")
    run("github", "apply", "-input=false", "p5")
    assert terraform_version(Path(terraform))
    return trail
