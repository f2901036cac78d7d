"""CI identity evidence end to end: a real ``tfaudit run`` asks a local OIDC issuer (serving
GitHub's endpoints on 127.0.0.1) for a token, stores it with the issuer's JWKS, and
``tfaudit verify`` checks it offline: signature, claims against the record, time window."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devkit.servers import S3Server
from tests.support.oidc_issuer import Issuer, SigningKey, running_issuer
from tests.support.tfaudit_proc import chain_records, result_json, tfaudit
from tfaudit_ci import jwt
from tfaudit_ci.identity import audience_problem, is_sts_audience
from tfaudit_ci.identity_verify import identity_problems

STREAM = "acme/infra"
SHA = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c"


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    with running_issuer() as running:
        running.claims = {
            "repository": "acme/infra",
            "sha": SHA,
            "run_id": "4242",
            "run_attempt": "2",
            "ref": "refs/heads/main",
        }
        yield running


def _github_env(issuer: Issuer, tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path / "home"),
        "GITHUB_ACTIONS": "true",
        "GITHUB_REPOSITORY": "acme/infra",
        "GITHUB_SHA": SHA,
        "GITHUB_RUN_ID": "4242",
        "GITHUB_RUN_ATTEMPT": "2",
        "GITHUB_REF": "refs/heads/main",
        "GITHUB_EVENT_NAME": "push",
        "GITHUB_OUTPUT": str(tmp_path / "gh-output"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "gh-summary"),
        "RUNNER_TEMP": str(tmp_path / "runner-temp"),
        **issuer.github_env(),
    }


def _file_run(env: dict[str, str], tmp_path: Path) -> tuple[Any, str]:
    store = (tmp_path / "store").as_uri()
    proc = tfaudit(
        [
            "run",
            "--store",
            store,
            "--stream",
            STREAM,
            "--on-unlocked",
            "warn",
            "--json",
            "--",
            sys.executable,
            "-c",
            "print('terraform would run here')",
        ],
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return proc, store


def _verify(store: str, env: dict[str, str], tmp_path: Path, *args: str) -> Any:
    return tfaudit(["verify", "--store", store, "--stream", STREAM, *args], env=env, cwd=tmp_path)


def _jwks_file(tmp_path: Path, jwks: dict[str, Any], name: str = "trusted-jwks.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(jwks))
    return str(path)


def _record(tmp_path: Path, seq: int = 0) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (tmp_path / "store" / STREAM / "chain" / f"{seq:012d}.json").read_bytes()
    )
    return data


def test_run_on_s3_stores_evidence_and_verify_checks_it(
    s3_server: S3Server,
    lock_bucket: str,
    terraform_bin: Path,
    tf_workdir: Path,
    tf_env: dict[str, str],
    issuer: Issuer,
    tmp_path: Path,
) -> None:
    env = {**tf_env, **s3_server.env(), **_github_env(issuer, tmp_path), "PATH": tf_env["PATH"]}
    store = f"s3://{lock_bucket}/audit"
    plan = tfaudit(
        [
            "run",
            "--store",
            store,
            "--stream",
            STREAM,
            "--json",
            "--",
            str(terraform_bin),
            "plan",
            "-input=false",
            "-out=tfplan",
        ],
        env=env,
        cwd=tf_workdir,
    )
    assert plan.returncode == 0, plan.stderr.decode()
    assert result_json(plan)["audit_ok"] is True
    assert [r.get("audience") for r in issuer.token_requests] == ["tfaudit"]

    record = chain_records(s3_server.client(), lock_bucket, STREAM, prefix="audit")[0]
    identity = record["identity"]
    assert identity["issuer"] == issuer.url and identity["artifact"] == "identity.json"
    assert identity["subject"] == "repo:acme/infra:ref:refs/heads/main"
    names = [a["name"] for a in record["artifacts"]]
    assert "identity.json" in names and "output.log" in names
    # The request token (a runner secret) is never stored.
    entry = next(a for a in record["artifacts"] if a["name"] == "identity.json")
    body = (
        s3_server.client()
        .get_object(Bucket=lock_bucket, Key=f"audit/{entry['key']}", VersionId=entry["version_id"])[
            "Body"
        ]
        .read()
    )
    assert issuer.request_token.encode() not in body
    assert json.loads(body)["jwks"] == issuer.jwks()

    trusted = _jwks_file(tmp_path, issuer.jwks())
    ok = _verify(store, env, tmp_path, "--jwks", trusted)
    assert ok.returncode == 0, ok.stdout.decode() + ok.stderr.decode()
    assert "1/1 records valid" in ok.stdout.decode()

    stranger = _jwks_file(tmp_path, {"keys": [SigningKey("RS256", kid=issuer.key.kid).jwk()]}, "x")
    bad = _verify(store, env, tmp_path, "--jwks", stranger)
    assert bad.returncode == 24
    assert "trusted JWKS (--jwks)" in bad.stdout.decode() and "[identity]" in bad.stdout.decode()


def test_expired_token_is_flagged(issuer: Issuer, tmp_path: Path) -> None:
    issuer.issued_offset = -7200  # minted two hours ago, valid for ten minutes
    issuer.lifetime = 600
    env = _github_env(issuer, tmp_path)
    _, store = _file_run(env, tmp_path)
    proc = _verify(store, env, tmp_path)
    out = proc.stdout.decode()
    assert proc.returncode == 24, out
    assert "had expired" in out and "outside the run" in out


def test_mismatched_claims_are_flagged(issuer: Issuer, tmp_path: Path) -> None:
    issuer.claims["sha"] = "d" * 40  # the issuer attests another commit than the record says
    issuer.claims["run_attempt"] = "1"
    env = _github_env(issuer, tmp_path)
    _, store = _file_run(env, tmp_path)
    proc = _verify(store, env, tmp_path)
    out = proc.stdout.decode()
    assert proc.returncode == 24, out
    assert "ci.commit" in out and "ci.attempt" in out


def test_jwks_that_does_not_sign_the_token(issuer: Issuer, tmp_path: Path) -> None:
    issuer.signing_key = SigningKey("RS256")  # signs with a key the JWKS does not serve
    env = _github_env(issuer, tmp_path)
    proc, store = _file_run(env, tmp_path)
    assert b"does not verify with its issuer's JWKS" in proc.stderr  # warned at run time
    out = _verify(store, env, tmp_path)
    assert out.returncode == 24 and "stored JWKS" in out.stdout.decode()


def test_valid_es256_token_verifies(tmp_path: Path) -> None:
    with running_issuer("ES256") as issuer:
        issuer.claims = {
            "repository": "acme/infra",
            "sha": SHA,
            "run_id": "4242",
            "run_attempt": "2",
        }
        env = _github_env(issuer, tmp_path)
        _, store = _file_run(env, tmp_path)
        trusted = _jwks_file(tmp_path, issuer.jwks())
    proc = _verify(store, env, tmp_path, "--jwks", trusted)  # offline: the issuer is gone
    assert proc.returncode == 0, proc.stdout.decode()
    assert _record(tmp_path)["identity"]["alg"] == "ES256"


def test_sts_audience_token_is_never_stored(issuer: Issuer, tmp_path: Path) -> None:
    issuer.audience_override = "sts.amazonaws.com"
    env = _github_env(issuer, tmp_path)
    proc, store = _file_run(env, tmp_path)
    assert b"AWS STS" in proc.stderr
    record = _record(tmp_path)
    assert "AWS STS" in record["identity"]["unavailable"]
    assert "identity.json" not in [a["name"] for a in record["artifacts"]]
    for path in (tmp_path / "store").rglob("*"):
        if path.is_file():
            assert b"eyJ" not in path.read_bytes(), path  # no JWT anywhere in the trail
    verified = _verify(store, env, tmp_path)
    assert verified.returncode == 0 and "[identity]" in verified.stdout.decode()


def test_gitlab_id_token_variable(issuer: Issuer, tmp_path: Path) -> None:
    issuer.claims = {
        "project_path": "acme/infra",
        "sha": SHA,
        "pipeline_id": "777",
        "job_id": "31337",
    }
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path / "home"),
        "GITLAB_CI": "true",
        "CI_PROJECT_PATH": "acme/infra",
        "CI_COMMIT_SHA": SHA,
        "CI_PIPELINE_ID": "777",
        "CI_JOB_ID": "31337",
        "TFAUDIT_GITLAB_ID_TOKEN_VAR": "TFAUDIT_ID_TOKEN",
        "TFAUDIT_ID_TOKEN": issuer.mint("tfaudit"),
    }
    _, store = _file_run(env, tmp_path)
    assert _record(tmp_path)["identity"]["provider"] == "gitlab"
    proc = _verify(store, env, tmp_path, "--jwks", _jwks_file(tmp_path, issuer.jwks()))
    assert proc.returncode == 0, proc.stdout.decode()


def test_unreachable_issuer_does_not_fail_the_run(issuer: Issuer, tmp_path: Path) -> None:
    env = {**_github_env(issuer, tmp_path), "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "wrong"}
    proc, _ = _file_run(env, tmp_path)
    assert b"no CI identity evidence" in proc.stderr and b"HTTP 401" in proc.stderr
    assert "unavailable" in _record(tmp_path)["identity"]


# -- pure checks ------------------------------------------------------------------------------


def test_sts_audiences_are_recognised() -> None:
    assert is_sts_audience("sts.amazonaws.com")
    assert is_sts_audience("sts.eu-west-1.amazonaws.com")
    assert is_sts_audience("sts.cn-north-1.amazonaws.com.cn")
    assert not is_sts_audience("tfaudit")
    assert audience_problem({"aud": ["tfaudit", "sts.amazonaws.com"]}, "tfaudit") is not None
    assert audience_problem({"aud": "vault"}, "tfaudit") is not None
    assert audience_problem({"aud": "tfaudit"}, "tfaudit") is None


def test_alg_none_and_tampered_claims_never_verify(issuer: Issuer) -> None:
    token = issuer.mint("tfaudit")
    parsed = jwt.decode(token)
    assert jwt.verify_signature(parsed, issuer.jwks()) is None
    head, body, signature = token.split(".")
    claims = dict(parsed.claims, sha="f" * 40)
    from tests.support.oidc_issuer import b64url

    forged = f"{head}.{b64url(json.dumps(claims).encode())}.{signature}"
    assert jwt.verify_signature(jwt.decode(forged), issuer.jwks()) is not None
    none_head = b64url(json.dumps({"alg": "none", "kid": issuer.key.kid}).encode())
    unsigned = jwt.decode(f"{none_head}.{body}.")
    assert "unsupported" in str(jwt.verify_signature(unsigned, issuer.jwks()))


def test_evidence_must_be_the_pinned_token(issuer: Issuer) -> None:
    token = issuer.mint("tfaudit")
    record = {
        "identity": {"jwt_sha256": "0" * 64, "audience": "tfaudit", "provider": "github"},
        "ci": {},
    }
    document = {"schema": "tfaudit.identity/v1", "jwt": token, "jwks": issuer.jwks()}
    problems = identity_problems(record, json.dumps(document).encode(), None)
    assert problems == ["the stored JWT is not the one the record pins (jwt_sha256 differs)"]
