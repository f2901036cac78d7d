"""GitLab CI metadata, from the predefined CI/CD variables.

GitLab has no attempt counter: retrying a job creates a new job (new ``CI_JOB_ID``) in the
same pipeline. So ``attempt`` records ``CI_JOB_ID``: it is unique per try and grows with
each retry, which is what the record and the run folder need to tell attempts apart.
"""

from __future__ import annotations

from collections.abc import Mapping

from tfaudit_ci.ci.info import CiInfo, env_value, env_values

# Only ids and names: never CI_JOB_TOKEN, CI_JOB_JWT*, CI_REGISTRY_PASSWORD,
# CI_REPOSITORY_URL (it embeds the job token) or the user's e-mail.
_EXTRA = {
    "project_id": "CI_PROJECT_ID",
    "pipeline_id": "CI_PIPELINE_ID",
    "pipeline_iid": "CI_PIPELINE_IID",
    "pipeline_url": "CI_PIPELINE_URL",
    "job_id": "CI_JOB_ID",
    "job_stage": "CI_JOB_STAGE",
    "user_id": "GITLAB_USER_ID",
    "commit_tag": "CI_COMMIT_TAG",
    "commit_before_sha": "CI_COMMIT_BEFORE_SHA",
    "merge_request_source_branch": "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME",
    "merge_request_target_branch": "CI_MERGE_REQUEST_TARGET_BRANCH_NAME",
    "merge_request_project_path": "CI_MERGE_REQUEST_PROJECT_PATH",
    "runner_id": "CI_RUNNER_ID",
    "runner_tags": "CI_RUNNER_TAGS",
    "environment": "CI_ENVIRONMENT_NAME",
    "config_path": "CI_CONFIG_PATH",
}


# CiInfo fields read straight from one variable each.
_FIELDS = {
    "repository": "CI_PROJECT_PATH",
    "commit": "CI_COMMIT_SHA",
    "ref": "CI_COMMIT_REF_NAME",
    "run_id": "CI_PIPELINE_ID",
    "attempt": "CI_JOB_ID",
    "job": "CI_JOB_NAME",
    "workflow": "CI_PIPELINE_NAME",
    "event": "CI_PIPELINE_SOURCE",
    "pull_request": "CI_MERGE_REQUEST_IID",
    "server_url": "CI_SERVER_URL",
}


def collect(env: Mapping[str, str]) -> CiInfo:
    # GITLAB_USER_LOGIN is whoever started the pipeline, or the job for manual and retried
    # jobs: GitLab does not keep the two apart, so both actor fields get it.
    user = env_value(env, "GITLAB_USER_LOGIN")
    return CiInfo(
        "gitlab",
        actor=user,
        triggering_actor=user,
        run_url=env_value(env, "CI_JOB_URL") or env_value(env, "CI_PIPELINE_URL"),
        runner=env_value(env, "CI_RUNNER_DESCRIPTION") or env_value(env, "CI_RUNNER_ID"),
        extra=env_values(env, _EXTRA),
        **env_values(env, _FIELDS),
    )
