#!/usr/bin/env bash
# standin-base.sh -- make the local stand-in for `python:3.12-slim-bookworm`, the Dockerfile's
# base image, when no image registry can be reached: a Debian bookworm root file system from
# mmdebstrap (Debian's own mirror), imported into Docker under that name.
#
# It carries Debian's Python 3.11 (bookworm has no 3.12), pip, venv, bash and rsync (which
# gitlab-ci-local's helper containers run); the host's extra CA certificates, if any, so TLS
# through an intercepting proxy works inside containers. Nothing is done when an image of that
# name and of this recipe's RECIPE version exists. FORCE=1 rebuilds it.
set -euo pipefail

IMAGE="${IMAGE:-python:3.12-slim-bookworm}"
SUITE="${SUITE:-bookworm}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
RECIPE=2 # bump when the image's contents change
LABEL=org.tfaudit-ci.standin-base

present="$(docker image inspect --format "{{ index .Config.Labels \"$LABEL\" }}" "$IMAGE" 2>/dev/null || true)"
if [ "${FORCE:-0}" != 1 ] && [ "$present" = "$RECIPE" ]; then
  echo "standin-base: $IMAGE (recipe $RECIPE) is present" >&2
  exit 0
fi
command -v mmdebstrap >/dev/null 2>&1 || { echo "standin-base: mmdebstrap is missing" >&2; exit 1; }

log="$(mktemp)"
echo "standin-base: building $IMAGE with mmdebstrap (about a minute; log: $log)" >&2
# shellcheck disable=SC2016 # $1 is mmdebstrap's root directory, expanded by the hook's shell
mmdebstrap --variant=minbase \
  --include=python3,python3-pip,python3-venv,python-is-python3,ca-certificates,rsync \
  --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
  --customize-hook='for f in /usr/local/share/ca-certificates/*.crt; do if [ -e "$f" ]; then cp "$f" "$1/usr/local/share/ca-certificates/"; fi; done' \
  --customize-hook='chroot "$1" update-ca-certificates' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
  "$SUITE" - \
  "deb $MIRROR $SUITE main" \
  "deb $MIRROR $SUITE-updates main" \
  "deb $SECURITY_MIRROR $SUITE-security main" 2>"$log" |
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --change "LABEL $LABEL=$RECIPE" \
    - "$IMAGE" >/dev/null
docker run --rm "$IMAGE" python3 --version >&2
echo "standin-base: $IMAGE built" >&2
