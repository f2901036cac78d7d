"""GitHub Actions metadata, from the documented default environment variables."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from tfaudit_ci.ci.info import CiInfo, env_value, env_values

# Only ids and names: never GITHUB_TOKEN, ACTIONS_RUNTIME_TOKEN, ACTIONS_ID_TOKEN_* etc.
_EXTRA = {
    "repository_id": "GITHUB_REPOSITORY_ID",
    "repository_owner": "GITHUB_REPOSITORY_OWNER",
    "repository_owner_id": "GITHUB_REPOSITORY_OWNER_ID",
    "actor_id": "GITHUB_ACTOR_ID",
    "workflow_ref": "GITHUB_WORKFLOW_REF",
    "workflow_sha": "GITHUB_WORKFLOW_SHA",
    "run_number": "GITHUB_RUN_NUMBER",
    "ref_name": "GITHUB_REF_NAME",
    "ref_type": "GITHUB_REF_TYPE",
    "head_ref": "GITHUB_HEAD_REF",
    "base_ref": "GITHUB_BASE_REF",
    "action": "GITHUB_ACTION",
    "runner_os": "RUNNER_OS",
    "runner_arch": "RUNNER_ARCH",
    "runner_environment": "RUNNER_ENVIRONMENT",
}
_PULL_REF = re.compile(r"refs/pull/(\d+)/(?:merge|head)")
# Event payloads can be large (pushes list commits); this is far above any real one.
_MAX_EVENT_BYTES = 64 * 1024 * 1024


def collect(env: Mapping[str, str]) -> CiInfo:
    repository = env_value(env, "GITHUB_REPOSITORY")
    run_id = env_value(env, "GITHUB_RUN_ID")
    attempt = env_value(env, "GITHUB_RUN_ATTEMPT")
    server_url = (env_value(env, "GITHUB_SERVER_URL") or "https://github.com").rstrip("/")
    ref = env_value(env, "GITHUB_REF")
    payload = _event_payload(env_value(env, "GITHUB_EVENT_PATH"))

    pull_request: str | None = None
    head_sha: str | None = None
    pr = payload.get("pull_request")
    if isinstance(pr, dict):
        number = pr.get("number")
        if isinstance(number, int) and not isinstance(number, bool):
            pull_request = str(number)
        head = pr.get("head")
        if isinstance(head, dict) and isinstance(head.get("sha"), str):
            head_sha = head["sha"]
    if pull_request is None and ref:
        match = _PULL_REF.fullmatch(ref)
        if match:
            pull_request = match.group(1)

    run_url: str | None = None
    if repository and run_id:
        run_url = f"{server_url}/{repository}/actions/runs/{run_id}"
        if attempt:
            run_url += f"/attempts/{attempt}"

    extra = env_values(env, _EXTRA)
    # For pull_request events GITHUB_SHA is the test merge commit; the reviewed head differs.
    extra["pull_request_head_sha"] = head_sha
    return CiInfo(
        provider="github",
        repository=repository,
        commit=env_value(env, "GITHUB_SHA"),
        ref=ref,
        actor=env_value(env, "GITHUB_ACTOR"),
        # Re-runs keep GITHUB_ACTOR of the first run; the re-running user is here.
        triggering_actor=env_value(env, "GITHUB_TRIGGERING_ACTOR")
        or env_value(env, "GITHUB_ACTOR"),
        run_id=run_id,
        attempt=attempt,
        job=env_value(env, "GITHUB_JOB"),
        workflow=env_value(env, "GITHUB_WORKFLOW"),
        event=env_value(env, "GITHUB_EVENT_NAME"),
        pull_request=pull_request,
        run_url=run_url,
        runner=env_value(env, "RUNNER_NAME"),
        server_url=server_url,
        extra=extra,
    )


def _event_payload(path: str | None) -> dict[str, Any]:
    """The webhook payload GitHub writes for the job; {} when absent or unreadable."""
    if not path:
        return {}
    try:
        with open(path, "rb") as handle:
            data = handle.read(_MAX_EVENT_BYTES + 1)
    except OSError:
        return {}
    if len(data) > _MAX_EVENT_BYTES:
        return {}
    try:
        payload = json.loads(data)
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}
