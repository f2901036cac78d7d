"""Turn CI action inputs (``INPUT_*`` environment variables) into a ``tfaudit`` command line.

GitHub passes an action's inputs to a container as ``INPUT_<NAME>`` with the name upper-cased
and its hyphens kept (``INPUT_RETENTION-DAYS``). GitLab variable names cannot hold hyphens, so
the GitLab templates set ``INPUT_RETENTION_DAYS``; both spellings are accepted here.

The mapping is pure (environment in, argv out) so it can be tested without a runner; ``main``
is the thin I/O shell around it that ``entrypoint.py`` and ``python -m`` call.

``--docker-action`` (what ``entrypoint.py`` passes) adds what only the Docker action does:
the ``tool`` and ``terraform-version`` inputs pick the binary (``toolchain``), and the spool
goes where the post step's new container can find it again.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tfaudit_ci.errors import ConfigError, TfauditError
from tfaudit_ci.toolchain import parse_tool

# Inputs that become `--flag VALUE` when not empty (an unset action input arrives as "").
# `tfaudit recover` takes the same ones: it needs the store, the signing key and the spool.
VALUE_INPUTS: tuple[str, ...] = (
    "config",
    "store",
    "stream",
    "retention-days",
    "lock-mode",
    "on-unlocked",
    "signing-key",
    "endpoint-url",
    "region",
    "work-dir",
    "witness",
    "witness-endpoint-url",
    "witness-profile",
    "witness-required",
)
# Inputs the Docker action's entrypoint handles itself (choosing the binary).
TOOLCHAIN_INPUTS: tuple[str, ...] = ("tool", "terraform-version")
# Inputs that become a bare `--flag` when true.
SWITCH_INPUTS: tuple[str, ...] = ("upload-plan-file", "store-state-output")
# Inputs that become one `--flag VALUE` per non-empty line.
LIST_INPUTS: tuple[str, ...] = ("redact",)

# A full command line is recognised by its program name; anything else is terraform arguments.
KNOWN_TOOLS = frozenset({"terraform", "tofu", "terragrunt"})
# The command is executed directly, never by a shell: reject shell syntax instead of passing
# `&&` to terraform as an argument and failing in a confusing way.
SHELL_OPERATORS = frozenset({"&&", "||", "|", ";", "&", ">", ">>", "<", "2>", "2>&1"})

# Where the runner mounts the workspace inside a Docker container action.
CONTAINER_WORKSPACE = "/github/workspace"

TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
FALSE_WORDS = frozenset({"false", "no", "off", "0", ""})


@dataclass(frozen=True)
class Invocation:
    """What the entrypoint does: chdir (if asked), then ``tfaudit`` with ``argv``."""

    argv: list[str]
    working_directory: str | None


def read_input(env: Mapping[str, str], name: str) -> str:
    """The input's value, hyphenated (GitHub) spelling first, stripped; "" when unset."""
    upper = name.upper()
    for key in (f"INPUT_{upper}", f"INPUT_{upper.replace('-', '_')}"):
        if key in env:
            return env[key].strip()
    return ""


def parse_switch(name: str, text: str) -> bool:
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(
        f"input {name!r} must be true or false, got {text!r}",
        fix=f"set `{name}: true` or `{name}: false`",
    )


def split_command(command_text: str, terraform_bin: str) -> list[str]:
    """``plan -out=tfplan`` -> ``[terraform_bin, "plan", "-out=tfplan"]``; full lines kept."""
    try:
        words = shlex.split(command_text)
    except ValueError as exc:
        raise ConfigError(
            f"input 'command' is not a valid command line: {exc}",
            fix="balance the quotes in `command`",
        ) from None
    if not words:
        raise ConfigError(
            "input 'command' is empty",
            fix="set `command:` to terraform arguments, e.g. `plan -out=tfplan`",
        )
    operators = [word for word in words if word in SHELL_OPERATORS]
    if operators:
        raise ConfigError(
            f"input 'command' contains shell syntax {operators[0]!r}; it is not run by a shell",
            fix="run one terraform command per step",
        )
    program = words[0]
    if os.path.basename(program) in KNOWN_TOOLS or program == terraform_bin:
        return words
    return [terraform_bin, *words]


def container_work_dir(env: Mapping[str, str], *, docker_action: bool = False) -> str | None:
    """The spool folder for the Docker action, or None to keep tfaudit's own default.

    A container action's /tmp dies with its container, so the post step (a new container) could
    not recover a spool left there. The workspace is mounted into both (at /github/workspace
    on GitHub, at the host's own path under nektos/act: ``GITHUB_WORKSPACE`` names it either
    way), and a path inside it is also meaningful to later steps on the host once made
    workspace-relative (see report.github).
    """
    if env.get("GITHUB_ACTIONS") != "true":
        return None
    workspace = env.get("GITHUB_WORKSPACE", "")
    if workspace == CONTAINER_WORKSPACE or (docker_action and workspace):
        return f"{workspace.rstrip('/')}/.tfaudit"
    return None


def build_invocation(
    env: Mapping[str, str], *, post: bool = False, docker_action: bool = False
) -> Invocation:
    """Map the inputs in ``env`` to a ``tfaudit run`` (or, for the post step, ``recover``)."""
    flags: list[str] = []
    for name in VALUE_INPUTS:
        value = read_input(env, name)
        if value:
            flags += [f"--{name}", value]
    if not read_input(env, "work-dir") and "TFAUDIT_WORK_DIR" not in env:
        default_dir = container_work_dir(env, docker_action=docker_action)
        if default_dir:
            flags += ["--work-dir", default_dir]
    if not post:
        for name in SWITCH_INPUTS:
            if parse_switch(name, read_input(env, name)):
                flags.append(f"--{name}")
        for name in LIST_INPUTS:
            for line in read_input(env, name).splitlines():
                if line.strip():
                    flags += [f"--{name}", line.strip()]

    working_directory = read_input(env, "working-directory") or None
    if post:
        return Invocation(["recover", *flags], working_directory)

    terraform_bin = read_input(env, "terraform-bin") or "terraform"
    if docker_action and terraform_bin == "terraform":
        terraform_bin = parse_tool(read_input(env, "tool"))
    command = split_command(read_input(env, "command"), terraform_bin)
    return Invocation(["run", *flags, "--", *command], working_directory)


def with_toolchain(env: Mapping[str, str], cwd: Path) -> dict[str, str]:
    """``env`` with the chosen terraform/OpenTofu first on PATH (see ``toolchain.path_for``)."""
    from tfaudit_ci.toolchain import path_for

    folder = path_for(read_input(env, "tool"), read_input(env, "terraform-version"), cwd, env)
    updated = dict(env)
    if folder is not None:
        updated["PATH"] = os.pathsep.join([str(folder), env.get("PATH", "")])
    return updated


def report_not_run(error: TfauditError, env: Mapping[str, str]) -> None:
    """Outputs, summary and annotation for a run that could not start (no binary): the same
    report every exit of ``tfaudit run`` writes."""
    from tfaudit_ci.report import publish
    from tfaudit_ci.result import RunResult

    store = read_input(env, "store") or env.get("TFAUDIT_STORE") or None
    stream = read_input(env, "stream") or None
    publish(
        RunResult.not_run(error.exit_code, error.diagnostics(), store=store, stream=stream), env
    )


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Read the inputs from the environment, chdir, and run ``tfaudit``; returns its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    environ: Mapping[str, str] = os.environ if env is None else env
    post = "--post" in args
    docker_action = "--docker-action" in args
    try:
        invocation = build_invocation(environ, post=post, docker_action=docker_action)
        if invocation.working_directory:
            try:
                os.chdir(invocation.working_directory)
            except OSError as exc:
                raise ConfigError(
                    f"cannot enter working-directory {invocation.working_directory!r}: "
                    f"{exc.strerror}",
                    fix="set `working-directory` to a folder of the checked-out repository",
                ) from None
    except TfauditError as exc:
        print(f"tfaudit: {exc.diagnostics()}", file=sys.stderr)
        return exc.exit_code
    if docker_action and not post:
        try:
            environ = with_toolchain(environ, Path.cwd())
        except TfauditError as exc:
            print(f"tfaudit: error: {exc.diagnostics()}", file=sys.stderr)
            report_not_run(exc, environ)
            return exc.exit_code

    # Imported late: the mapping above must work (and be testable) without the core's deps.
    from tfaudit_ci.cli import main as tfaudit_main

    return tfaudit_main(invocation.argv, environ)


if __name__ == "__main__":
    sys.exit(main())
