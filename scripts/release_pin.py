#!/usr/bin/env python3
"""Turn a tagged source tree into the release ref users pin (.github/workflows/release.yml).

    python scripts/release_pin.py --image ghcr.io/OWNER/REPO@sha256:DIGEST --version X.Y.Z
    python scripts/release_pin.py --notes X.Y.Z     # the CHANGELOG section, for the release

On the release ref:

* ``action.yml`` runs ``image: docker://IMAGE@sha256:DIGEST``: the multi-arch image the
  release pushed, by digest, so every job pulls exactly that image and never builds one;
* ``host/release-requirement.txt`` holds ``tfaudit-ci==X.Y.Z``: the host action installs the
  released wheel from PyPI instead of building the source tree;
* the GitLab component and include template default to ``IMAGE:X.Y.Z@sha256:DIGEST``.

Each rewrite must change exactly what it expects, or the script fails: a release ref that
still builds its image would be worse than no release at all.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_IMAGE = re.compile(r"^(?P<name>[a-z0-9./_-]+)@(?P<digest>sha256:[0-9a-f]{64})$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+(?:[-.]?(?:a|b|rc)\d+)?$")


class PinError(Exception):
    """The tree is not what a release expects; the message says what differs."""


def replace_once(path: Path, pattern: str, replacement: str) -> None:
    text = path.read_text(encoding="utf-8")
    new, count = re.subn(pattern, replacement, text, flags=re.M)
    if count != 1:
        raise PinError(f"{path.name}: expected one match of {pattern!r}, got {count}")
    path.write_text(new, encoding="utf-8")


def pin(root: Path, image: str, version: str) -> list[Path]:
    match = _IMAGE.fullmatch(image)
    if not match:
        raise PinError(f"--image must be NAME@sha256:<64 hex>, got {image!r}")
    if not _VERSION.fullmatch(version):
        raise PinError(f"--version must be a release version, got {version!r}")
    source_version = re.search(
        r'^__version__ = "([^"]+)"$', (root / "tfaudit_ci" / "__init__.py").read_text(), re.M
    )
    if source_version is None or source_version.group(1) != version:
        found = source_version.group(1) if source_version else "none"
        raise PinError(f"the tag says {version} but tfaudit_ci/__init__.py says {found}")
    name, digest = match.group("name"), match.group("digest")
    changed = [root / "action.yml"]
    replace_once(
        root / "action.yml", r"^  image: Dockerfile$", f"  image: docker://{name}@{digest}"
    )
    requirement = root / "host" / "release-requirement.txt"
    requirement.write_text(f"tfaudit-ci=={version}\n", encoding="utf-8")
    changed.append(requirement)
    pinned = f"{name}:{version}@{digest}"
    for template, pattern in (
        ("templates/tfaudit.yml", r"^      default: ghcr\.io/\S+$"),
        ("templates/tfaudit.gitlab-ci.yml", r"^    TFAUDIT_CI_IMAGE: \S+$"),
    ):
        path = root / template
        prefix = "      default: " if template.endswith("tfaudit.yml") else "    TFAUDIT_CI_IMAGE: "
        replace_once(path, pattern, prefix + pinned)
        changed.append(path)
    return changed


def notes(root: Path, version: str) -> str:
    """The CHANGELOG's ``## [X.Y.Z]`` section (without its heading)."""
    text = (root / "CHANGELOG.md").read_text(encoding="utf-8")
    match = re.search(rf"^## \[{re.escape(version)}\][^\n]*\n(.*?)(?=^## \[|\Z)", text, re.M | re.S)
    if match is None or not match.group(1).strip():
        raise PinError(f"CHANGELOG.md has no section for [{version}]")
    return match.group(1).strip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--image", help="NAME@sha256:DIGEST of the pushed image")
    parser.add_argument("--version", help="the release version (the tag without its v)")
    parser.add_argument("--notes", metavar="VERSION", help="print the CHANGELOG section")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        if args.notes:
            sys.stdout.write(notes(args.root, args.notes))
            return 0
        if not (args.image and args.version):
            parser.error("--image and --version are required (or --notes VERSION)")
        for path in pin(args.root, args.image, args.version):
            print(f"pinned {path.relative_to(args.root)}")
    except PinError as exc:
        print(f"release_pin: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
