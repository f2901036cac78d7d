#!/usr/bin/env bash
# install-ceph.sh -- install the Debian packages that scripts/ceph-rgw/start-rgw.sh needs
# (a single-node Ceph with radosgw: a real Object-Lock S3 server for the conformance tests).
#
# Idempotent: exits 0 quietly when everything is already installed.
# Never fails the caller: when it cannot install (not root, no apt, no network), it prints a
# loud warning and exits 0, because the test run then skips the ceph tests loudly itself
# (or fails them, with TFAUDIT_REQUIRE_CEPH=1).
set -uo pipefail

PACKAGES=(ceph-mon ceph-osd radosgw ceph-common curl uuid-runtime)
BINARIES=(ceph-mon ceph-osd radosgw radosgw-admin ceph ceph-authtool monmaptool curl uuidgen)

warn() {
  {
    echo "################################################################"
    echo "# WARNING: Ceph RGW is NOT installed: $*"
    echo "# The S3 conformance tests on Ceph will be SKIPPED."
    echo "# Install by hand (Debian/Ubuntu, as root):"
    echo "#   apt-get install -y --no-install-recommends ${PACKAGES[*]}"
    echo "################################################################"
  } >&2
  exit 0
}

all_present() {
  local b
  for b in "${BINARIES[@]}"; do command -v "$b" >/dev/null 2>&1 || return 1; done
}

all_present && exit 0
command -v apt-get >/dev/null 2>&1 || warn "apt-get not found (not a Debian-like system)"

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    warn "not root and no password-less sudo"
  fi
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-ceph: installing ${PACKAGES[*]}" >&2
"${SUDO[@]}" apt-get update -qq >/dev/null || warn "apt-get update failed"
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null \
  || warn "apt-get install failed"
all_present || warn "packages installed but some binaries are still missing"
echo "install-ceph: done" >&2
