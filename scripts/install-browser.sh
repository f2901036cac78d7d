#!/usr/bin/env bash
# install-browser.sh -- install Debian's `chromium` for the HTML report tests
# (tests/test_read_report_browser.py drives it headless through Playwright, pointed at this
# binary; Playwright's own browser downloads are never used).
#
# Idempotent: exits 0 quietly when a chromium binary is already on PATH.
# Fails (exit 1) when it cannot install: the browser tests are part of CI, and without a
# browser they would fail later with a less clear message.
set -uo pipefail

find_chromium() {
  local name
  for name in chromium chromium-browser; do
    if command -v "$name" >/dev/null 2>&1; then
      command -v "$name"
      return 0
    fi
  done
  return 1
}

fail() {
  echo "install-browser: $* (install it by hand: apt-get install -y chromium)" >&2
  exit 1
}

find_chromium >/dev/null && exit 0
command -v apt-get >/dev/null 2>&1 || fail "apt-get not found (not a Debian-like system)"

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    fail "not root and no password-less sudo"
  fi
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-browser: installing chromium" >&2
"${SUDO[@]}" apt-get update -qq >/dev/null || fail "apt-get update failed"
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null \
  || fail "apt-get install chromium failed"
binary="$(find_chromium)" || fail "chromium installed but not found on PATH"
"$binary" --headless --no-sandbox --disable-gpu --version >&2 || fail "$binary does not start"
echo "install-browser: done ($binary)" >&2
