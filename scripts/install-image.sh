#!/bin/sh
# The install steps of the action image. The Dockerfile runs this script; the tests run its
# download-and-verify path against a fake local release (no Docker, no network).
#
#   install-image.sh packages              apt: tini (PID 1), git + ssh (module sources)
#   install-image.sh tool                  download $TOOL at its pinned version, check it
#                                          against the release's SHA256SUMS, install it
#   install-image.sh verify ZIP SUMS       only the checksum check (exit 1 on mismatch)
#   install-image.sh python SRC CONSTRAINTS  pip install SRC[gcs,azure,signing], pinned
#
# Environment:
#   TOOL               terraform (default) or tofu
#   TERRAFORM_VERSION  pinned terraform version        TOFU_VERSION  pinned OpenTofu version
#   TARGETARCH         amd64 / arm64 (Docker sets it; default: this machine's)
#   RELEASE_BASE_URL   where releases live (default: the vendor's site; file:// for tests)
#   INSTALL_DIR        where the binary goes (default /usr/local/bin)
set -eu

TOOL=${TOOL:-terraform}
TERRAFORM_VERSION=${TERRAFORM_VERSION:-1.9.8}
TOFU_VERSION=${TOFU_VERSION:-1.8.5}
INSTALL_DIR=${INSTALL_DIR:-/usr/local/bin}

die() {
    echo "install-image: $*" >&2
    exit 1
}

target_arch() {
    if [ -n "${TARGETARCH:-}" ]; then
        echo "$TARGETARCH"
        return
    fi
    case "$(uname -m)" in
    x86_64) echo amd64 ;;
    aarch64 | arm64) echo arm64 ;;
    *) die "unsupported machine $(uname -m); set TARGETARCH" ;;
    esac
}

# Fetch a URL (https:// or file://) to a file; Python is in the image, curl is not.
fetch() {
    echo "install-image: fetching $1" >&2
    python3 - "$1" "$2" <<'EOF'
import shutil, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=60) as response, open(sys.argv[2], "wb") as out:
    shutil.copyfileobj(response, out)
EOF
}

# Check ZIP against its line in SUMS (the `sha256  name` format of sha256sum).
verify_checksum() {
    zip_path=$1
    sums_path=$2
    name=$(basename "$zip_path")
    expected=$(awk -v n="$name" '$2 == n || $2 == "*" n { print $1 }' "$sums_path")
    [ -n "$expected" ] || die "no checksum for $name in $(basename "$sums_path")"
    [ "$(echo "$expected" | wc -l)" -eq 1 ] || die "more than one checksum for $name"
    actual=$(sha256sum "$zip_path" | cut -d ' ' -f 1)
    [ "$actual" = "$expected" ] || die "checksum mismatch for $name: expected $expected, got $actual"
    echo "install-image: $name: checksum OK" >&2
}

install_tool() {
    arch=$(target_arch)
    case "$TOOL" in
    terraform)
        version=$TERRAFORM_VERSION
        base=${RELEASE_BASE_URL:-https://releases.hashicorp.com/terraform/$version}
        ;;
    tofu)
        version=$TOFU_VERSION
        base=${RELEASE_BASE_URL:-https://github.com/opentofu/opentofu/releases/download/v$version}
        ;;
    *) die "TOOL must be terraform or tofu, got '$TOOL'" ;;
    esac
    zip_name="${TOOL}_${version}_linux_${arch}.zip"
    sums_name="${TOOL}_${version}_SHA256SUMS"

    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    fetch "$base/$sums_name" "$work/$sums_name"
    fetch "$base/$zip_name" "$work/$zip_name"
    verify_checksum "$work/$zip_name" "$work/$sums_name"

    python3 -m zipfile -e "$work/$zip_name" "$work/unpacked"
    [ -f "$work/unpacked/$TOOL" ] || die "$zip_name holds no '$TOOL' binary"
    mkdir -p "$INSTALL_DIR"
    install -m 0755 "$work/unpacked/$TOOL" "$INSTALL_DIR/$TOOL"
    if [ "$TOOL" = tofu ]; then
        # The action's default terraform-bin is `terraform`; make it mean tofu in this image.
        ln -sf tofu "$INSTALL_DIR/terraform"
    fi
    "$INSTALL_DIR/$TOOL" version
}

install_packages() {
    apt-get update
    apt-get install -y --no-install-recommends tini git openssh-client
    rm -rf /var/lib/apt/lists/*
}

install_python() {
    src=$1
    constraints=$2
    python3 -m pip install --no-cache-dir --constraint "$constraints" "${src}[gcs,azure,signing]"
}

case "${1:-}" in
packages) install_packages ;;
tool) install_tool ;;
verify)
    [ $# -eq 3 ] || die "usage: install-image.sh verify ZIP SUMS"
    verify_checksum "$2" "$3"
    ;;
python)
    [ $# -eq 3 ] || die "usage: install-image.sh python SRC CONSTRAINTS"
    install_python "$2" "$3"
    ;;
*) die "usage: install-image.sh packages|tool|verify ZIP SUMS|python SRC CONSTRAINTS" ;;
esac
