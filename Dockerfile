# The tfaudit-ci GitHub Action image (also the GitLab component's default image).
# GitHub's rules for action images: no USER (the runner needs root to write the workspace
# and file commands), no WORKDIR (the runner sets it to the workspace).
FROM python:3.12-slim-bookworm

# terraform (default) or tofu; each has its own pinned version.
ARG TOOL=terraform
ARG TERRAFORM_VERSION=1.9.8
ARG TOFU_VERSION=1.8.5
ARG TARGETARCH

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_IN_AUTOMATION=1

COPY scripts/install-image.sh /usr/local/lib/tfaudit/install-image.sh
RUN sh /usr/local/lib/tfaudit/install-image.sh packages \
    && TOOL="${TOOL}" TERRAFORM_VERSION="${TERRAFORM_VERSION}" TOFU_VERSION="${TOFU_VERSION}" \
       TARGETARCH="${TARGETARCH}" sh /usr/local/lib/tfaudit/install-image.sh tool

COPY constraints.txt pyproject.toml README.md /usr/local/src/tfaudit-ci/
COPY tfaudit_ci /usr/local/src/tfaudit-ci/tfaudit_ci
RUN sh /usr/local/lib/tfaudit/install-image.sh python \
       /usr/local/src/tfaudit-ci /usr/local/src/tfaudit-ci/constraints.txt \
    && rm -rf /usr/local/src/tfaudit-ci

COPY entrypoint.py /entrypoint.py
RUN chmod 0755 /entrypoint.py \
    && ln -s /entrypoint.py /usr/local/bin/tfaudit-action-post

# tini as PID 1 passes the runner's SIGINT/SIGTERM to tfaudit (not to the whole group:
# tfaudit forwards it to terraform exactly once) and reaps orphaned provider processes.
ENTRYPOINT ["/usr/bin/tini", "--", "python", "/entrypoint.py"]
