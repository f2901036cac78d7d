#!/bin/sh
# The install steps of the action image. The Dockerfile runs this script; the tests run its
# `tools` step against a local stand-in release (tests/test_install_image.py).
#
#   install-image.sh packages          apt: tini (PID 1), git + ssh (module sources),
#                                      gpgv (release signatures)
#   install-image.sh tools BOOTSTRAP   bundle terraform and OpenTofu into $TOOLS_DIR, each
#                                      verified against its vendor's signed SHA256SUMS by
#                                      tfaudit_ci.toolchain (copied alone to BOOTSTRAP)
#   install-image.sh python SRC        pip install tfaudit-ci[gcs,azure] with SRC/constraints.txt:
#                                      the wheel in SRC/dist/ when there is one (a release
#                                      builds once), else the source tree SRC
#
# Environment (the Dockerfile's build arguments):
#   TERRAFORM_VERSION, TOFU_VERSION   the bundled releases
#   TERRAFORM_RELEASES, TOFU_RELEASES release folder URL templates with {version}
#                                     (default: the vendors' sites)
#   STANDIN_RELEASE_KEY               an armored public key trusted *instead of* the vendors'
#                                     for the bundled downloads: only for offline builds from a
#                                     stand-in release; the image itself trusts the vendors'
#   TARGETARCH                        amd64 / arm64 (Docker sets it; default: this machine's)
#   TOOLS_DIR                         default /opt/tfaudit/tools
#   LINK_DIR                          where terraform and tofu are linked (default /usr/local/bin)
#   WHEELHOUSE                        a pip --find-links URL to install from instead of PyPI
set -eu

TOOLS_DIR=${TOOLS_DIR:-/opt/tfaudit/tools}
LINK_DIR=${LINK_DIR:-/usr/local/bin}

die() {
    echo "install-image: $*" >&2
    exit 1
}

install_packages() {
    apt-get update
    apt-get install -y --no-install-recommends tini git openssh-client gpgv
    rm -rf /var/lib/apt/lists/*
}

# install_tool TOOL VERSION RELEASES_TEMPLATE
install_tool() {
    tool=$1
    version=$2
    releases=$3
    [ -n "$version" ] || die "no version given for $tool"
    set -- --tool "$tool" --version "$version" --into "$TOOLS_DIR"
    if [ -n "${TARGETARCH:-}" ]; then
        set -- "$@" --arch "$TARGETARCH"
    fi
    if [ -n "${STANDIN_RELEASE_KEY:-}" ]; then
        key_file=$(mktemp)
        printf '%s\n' "$STANDIN_RELEASE_KEY" >"$key_file"
        set -- "$@" --trust-key "$key_file"
    fi
    upper=$(echo "$tool" | tr '[:lower:]' '[:upper:]')
    binary=$(env "TFAUDIT_${upper}_RELEASES=$releases" PYTHONPATH="$BOOTSTRAP" \
        python3 -m tfaudit_ci.toolchain install "$@")
    mkdir -p "$LINK_DIR"
    ln -sf "$binary" "$LINK_DIR/$tool"
    "$LINK_DIR/$tool" version
}

install_tools() {
    install_tool terraform "${TERRAFORM_VERSION:-}" "${TERRAFORM_RELEASES:-}"
    install_tool tofu "${TOFU_VERSION:-}" "${TOFU_RELEASES:-}"
}

install_python() {
    src=$1
    set -- --no-cache-dir --constraint "$src/constraints.txt"
    if [ -n "${WHEELHOUSE:-}" ]; then
        set -- "$@" --no-index --find-links "$WHEELHOUSE"
    fi
    wheels=$(find "$src/dist" -maxdepth 1 -name 'tfaudit_ci-*-py3-none-any.whl' 2>/dev/null || true)
    count=$(printf '%s' "$wheels" | grep -c . || true)
    [ "$count" -le 1 ] || die "more than one tfaudit-ci wheel in $src/dist: $wheels"
    if [ "$count" -eq 1 ]; then
        version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$src/tfaudit_ci/__init__.py")
        case "$(basename "$wheels")" in
        "tfaudit_ci-$version-"*) ;;
        *) die "$(basename "$wheels") is not version $version of the source tree" ;;
        esac
        python3 -m pip install "$@" "tfaudit-ci[gcs,azure] @ file://$wheels"
    else
        python3 -m pip install "$@" "${src}[gcs,azure]"
    fi
    python3 -m tfaudit_ci --version
}

case "${1:-}" in
packages) install_packages ;;
tools)
    [ $# -eq 2 ] || die "usage: install-image.sh tools BOOTSTRAP"
    BOOTSTRAP=$2
    install_tools
    ;;
python)
    [ $# -eq 2 ] || die "usage: install-image.sh python SRC"
    install_python "$2"
    ;;
*) die "usage: install-image.sh packages|tools BOOTSTRAP|python SRC" ;;
esac
