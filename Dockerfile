# The tfaudit-ci GitHub Action image (also the GitLab component's default image).
# GitHub's rules for action images: no USER (the runner needs root to write the workspace
# and file commands), no WORKDIR (the runner sets it to the workspace).
#
# Releases publish it to ghcr.io and pin action.yml to its digest, so users pull it and never
# build it. Every input is a build argument with the published default; offline builds (the
# tests) point them at a local stand-in release, a local wheelhouse and a local base image,
# and nothing else changes (see docs/github-action.md, "How the image is built").
FROM python:3.12-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_IN_AUTOMATION=1 \
    CHECKPOINT_DISABLE=1 \
    TFAUDIT_BUNDLED_TOOLS=/opt/tfaudit/tools

COPY scripts/install-image.sh /usr/local/lib/tfaudit/install-image.sh
RUN sh /usr/local/lib/tfaudit/install-image.sh packages

# terraform and OpenTofu, both bundled; the `tool` input picks one, `terraform-version` any
# other release (downloaded and verified the same way at run time).
ARG TERRAFORM_VERSION=1.11.4
ARG TOFU_VERSION=1.9.1
ARG TERRAFORM_RELEASES=""
ARG TOFU_RELEASES=""
ARG STANDIN_RELEASE_KEY=""
ARG TARGETARCH=""
# Only the stdlib-only toolchain modules: this layer stays cached while the package changes.
COPY tfaudit_ci/__init__.py tfaudit_ci/errors.py tfaudit_ci/toolchain.py \
     tfaudit_ci/tool_versions.py tfaudit_ci/release_signature.py \
     /usr/local/lib/tfaudit/bootstrap/tfaudit_ci/
COPY tfaudit_ci/keys /usr/local/lib/tfaudit/bootstrap/tfaudit_ci/keys
RUN sh /usr/local/lib/tfaudit/install-image.sh tools /usr/local/lib/tfaudit/bootstrap \
    && rm -rf /usr/local/lib/tfaudit/bootstrap

# The package: the release's own wheel when dist/ holds it, else this source tree.
ARG WHEELHOUSE=""
COPY . /usr/local/src/tfaudit-ci/
RUN sh /usr/local/lib/tfaudit/install-image.sh python /usr/local/src/tfaudit-ci \
    && rm -rf /usr/local/src/tfaudit-ci

COPY entrypoint.py /entrypoint.py
RUN chmod 0755 /entrypoint.py \
    && ln -s /entrypoint.py /usr/local/bin/tfaudit-action-post

# tini as PID 1 passes the runner's SIGINT/SIGTERM to tfaudit (not to the whole group:
# tfaudit forwards it to terraform exactly once) and reaps orphaned provider processes.
ENTRYPOINT ["/usr/bin/tini", "--", "python", "/entrypoint.py"]
