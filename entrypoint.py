#!/usr/bin/env python3
"""The Docker action's entrypoint: GitHub's ``INPUT_*`` variables -> ``tfaudit run``.

``entrypoint.py --post`` (or the ``tfaudit-action-post`` link the image makes for the action's
``post-entrypoint``) runs ``tfaudit recover`` instead: it ships any spool that a cancelled or
killed main step left behind.

Signals: as PID 1 in a container, the kernel drops any signal that has no handler, and nobody
reaps orphans. The image starts us under tini; if we are PID 1 anyway (``post-entrypoint``
overrides the image's ENTRYPOINT), we re-execute ourselves under tini. tini passes the runner's
SIGINT/SIGTERM to us only (not ``-g``): tfaudit forwards it to terraform once, and a second
SIGINT would make terraform abandon its state lock.
"""

from __future__ import annotations

import os
import shutil
import sys

POST_PROGRAM_NAME = "tfaudit-action-post"


def main() -> int:
    args = sys.argv[1:]
    if os.path.basename(sys.argv[0]) == POST_PROGRAM_NAME and "--post" not in args:
        args.append("--post")
    tini = shutil.which("tini")
    if os.getpid() == 1 and tini:
        script = os.path.realpath(__file__)
        os.execv(tini, [tini, "--", sys.executable, script, *args])

    from tfaudit_ci.action_inputs import main as run_from_inputs

    # --docker-action: choose terraform/OpenTofu from the `tool` and `terraform-version`
    # inputs, and keep the spool where the post step's container finds it.
    return run_from_inputs([*args, "--docker-action"])


if __name__ == "__main__":
    sys.exit(main())
