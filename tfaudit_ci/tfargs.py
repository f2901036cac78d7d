"""Understand a wrapped terraform/tofu/terragrunt command line (pure logic, no I/O but is_file).

We only need a few facts from the argv: which tool and subcommand ran, whether a plan file
is written (``plan -out=F``) or consumed (``apply F``), whether ``-detailed-exitcode``
makes exit code 2 a success, and whether the command prints state (``output``, ``state pull``).
Values given on the command line (``-var NAME=VALUE``, ``-backend-config=KEY=VALUE``, also in
``TF_CLI_ARGS*``) are secrets until proven otherwise: they are registered for redaction and
kept out of the record, names and all structure preserved.

Parsing mirrors terraform's own rules: ``-chdir=DIR`` is the only global option that takes a
value and must come before the subcommand; subcommand flags follow Go's ``flag`` package
(``-x``/``--x``, ``-x=v`` or ``-x v`` for non-boolean flags, stop at the first positional
argument or ``--``).
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tfaudit_ci.redact_env import Secret, input_variable_secrets, value_secrets

# Subcommand flags that take a value. Needed to tell "-var x=y" (flag + value) from
# "-auto-approve tfplan" (boolean flag + positional plan file). Anything not listed is
# treated as boolean unless it carries "=value" itself.
_VALUE_FLAGS = frozenset(
    {
        "out",
        "var",
        "var-file",
        "target",
        "exclude",
        "replace",
        "state",
        "state-out",
        "backup",
        "lock-timeout",
        "parallelism",
        "generate-config-out",
        "config",
        "provider",
        "backend-config",
        "plugin-dir",
        "from-module",
        "test-directory",
        "filter",
    }
)

# Terragrunt's own options that take a value (old "--terragrunt-*" spelling and the newer
# unprefixed one). Its other options are boolean.
_TERRAGRUNT_VALUE_FLAGS = frozenset(
    {
        "terragrunt-working-dir",
        "working-dir",
        "terragrunt-config",
        "config",
        "terragrunt-tfpath",
        "tf-path",
        "terragrunt-source",
        "source",
        "terragrunt-iam-role",
        "iam-assume-role",
        "terragrunt-log-level",
        "log-level",
        "terragrunt-download-dir",
        "download-dir",
        "terragrunt-parallelism",
        "parallelism",
        "terragrunt-include-dir",
        "queue-include-dir",
        "terragrunt-exclude-dir",
        "queue-exclude-dir",
        "terragrunt-source-map",
        "source-map",
        "inputs-debug",
    }
)
_TERRAGRUNT_WORKDIR_FLAGS = frozenset({"terragrunt-working-dir", "working-dir"})
# "terragrunt run-all plan" / "terragrunt run -- plan": the real subcommand comes next.
_TERRAGRUNT_RUNNERS = frozenset({"run-all", "run"})

_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})

# Release assets and version managers name binaries "terraform1.5", "tofu_v1.8.0",
# "terragrunt_linux_amd64"; other tools that merely start alike ("terraform-docs") are not.
_NAME_SUFFIX = r"([-_]?v?\d[\w.]*|_(linux|darwin|windows|freebsd)_\w+)?"
_TOOL_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("terragrunt", re.compile("terragrunt" + _NAME_SUFFIX)),
    ("terraform", re.compile("terraform" + _NAME_SUFFIX)),
    ("tofu", re.compile("(open)?tofu" + _NAME_SUFFIX)),
)


@dataclass(frozen=True)
class TfInvocation:
    tool: str  # "terraform" | "tofu" | "terragrunt" | "other" (by basename of argv[0])
    binary: str  # argv[0]
    subcommand: str | None  # "plan", "apply", "destroy", "state", ... (None: not recognised)
    chdir: str | None  # absolute value of -chdir (terragrunt: its working-dir option)
    plan_out: str | None  # plan: absolute path of -out
    apply_plan_file: str | None  # apply: absolute path of the positional plan file, if a file
    detailed_exitcode: bool
    positionals: tuple[str, ...] = ()  # the subcommand's positional arguments
    json: bool = False  # -json was given
    # The command cannot change infrastructure, state or configuration, so it may start
    # while preflight is still in flight; False: strict, preflight passes first. Terragrunt
    # is always strict: before any command it may create its remote state bucket and table.
    read_only: bool = False


def detect_tool(binary: str) -> str:
    """Classify argv[0] by basename: terraform, tofu, terragrunt or other."""
    name = re.split(r"[\\/]", binary)[-1].lower()
    name = name.removesuffix(".exe")
    for tool, pattern in _TOOL_PATTERNS:
        if pattern.fullmatch(name):
            return tool
    return "other"


def parse_invocation(
    argv: Sequence[str],
    *,
    cwd: Path,
    is_file: Callable[[Path], bool] = Path.is_file,
    env: Mapping[str, str] | None = None,
) -> TfInvocation:
    """Extract the audit-relevant facts from a wrapped command line.

    ``env``, when given, is searched for ``TF_CLI_ARGS`` / ``TF_CLI_ARGS_<subcommand>``,
    which terraform and tofu splice in after the subcommand (a CI may set
    ``TF_CLI_ARGS_plan="-out=tfplan"``).
    """
    if not argv:
        return TfInvocation("other", "", None, None, None, None, False)
    binary = argv[0]
    tool = detect_tool(binary)
    if tool == "other":
        return TfInvocation(tool, binary, None, None, None, None, False)

    args = list(argv[1:])
    if tool == "terragrunt":
        chdir_raw, subcommand, rest = _split_terragrunt(args)
    else:
        chdir_raw, subcommand, rest = _split_terraform_globals(args)
    base = _absolute(cwd, chdir_raw) if chdir_raw else os.path.normpath(str(cwd))
    chdir = base if chdir_raw else None

    if subcommand is not None and env is not None and tool != "terragrunt":
        rest = _env_args(env, subcommand) + rest

    flags, positionals = _parse_flags(rest)
    plan_out: str | None = None
    apply_plan_file: str | None = None
    if subcommand == "plan" and flags.get("out"):
        plan_out = _absolute(base, flags["out"])
    if subcommand == "apply" and positionals:
        candidate = _absolute(base, positionals[0])
        # In terraform < 0.15 the positional could be a configuration directory.
        if is_file(Path(candidate)):
            apply_plan_file = candidate
    detailed = flags.get("detailed-exitcode")
    read_only = tool != "terragrunt" and _read_only(subcommand, flags, positionals)
    return TfInvocation(
        tool=tool,
        binary=binary,
        subcommand=subcommand,
        chdir=chdir,
        plan_out=plan_out,
        apply_plan_file=apply_plan_file,
        detailed_exitcode=detailed is not None and detailed in _GO_TRUE,
        positionals=tuple(positionals),
        json=flags.get("json", "false") in _GO_TRUE,
        read_only=read_only,
    )


def _split_terraform_globals(args: list[str]) -> tuple[str | None, str | None, list[str]]:
    """Return (chdir, subcommand, args after the subcommand)."""
    chdir: str | None = None
    for index, arg in enumerate(args):
        if not arg.startswith("-"):
            return chdir, arg, args[index + 1 :]
        if arg.startswith("-chdir="):
            chdir = arg.removeprefix("-chdir=")
        elif arg in ("-version", "--version", "-v"):
            # terraform rewrites these to the "version" subcommand.
            return chdir, "version", args[index + 1 :]
        elif arg == "--":
            return chdir, None, []
    return chdir, None, []


def _split_terragrunt(args: list[str]) -> tuple[str | None, str | None, list[str]]:
    """Terragrunt mixes its own options with terraform's; drop its own, find the command.

    Before the command every option is terragrunt's. After it, only the unambiguous
    ``--terragrunt-*`` / ``--working-dir`` options are (the rest go to terraform).
    """
    workdir: str | None = None
    subcommand: str | None = None
    passthrough: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--":
            continue
        if not arg.startswith("-"):
            if subcommand is None and arg in _TERRAGRUNT_RUNNERS:
                continue
            if subcommand is None:
                subcommand = arg
            else:
                passthrough.append(arg)
            continue
        name, has_value, value = _split_flag(arg)
        is_own = subcommand is None or name in _TERRAGRUNT_WORKDIR_FLAGS
        is_own = is_own or name.startswith("terragrunt-")
        if not is_own:
            passthrough.append(arg)
            continue
        if not has_value and name in _TERRAGRUNT_VALUE_FLAGS and index < len(args):
            value = args[index]
            index += 1
        if name in _TERRAGRUNT_WORKDIR_FLAGS:
            workdir = value
    return workdir, subcommand, passthrough


def _split_flag(arg: str) -> tuple[str, bool, str]:
    """'--out=x' -> ('out', True, 'x'); '-auto-approve' -> ('auto-approve', False, '')."""
    body = arg[2:] if arg.startswith("--") else arg[1:]
    name, sep, value = body.partition("=")
    return name, bool(sep), value


def _parse_flags(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """Go ``flag`` semantics: flags until the first positional or ``--``; last value wins."""
    flags: dict[str, str] = {}
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            return flags, args[index + 1 :]
        if not arg.startswith("-") or arg == "-":
            return flags, args[index:]
        name, has_value, value = _split_flag(arg)
        if not has_value:
            if name in _VALUE_FLAGS and index + 1 < len(args):
                value = args[index + 1]
                index += 1
            else:
                value = "true"
        flags[name] = value
        index += 1
    return flags, []


def _env_args(env: Mapping[str, str], subcommand: str) -> list[str]:
    # terraform inserts TF_CLI_ARGS, then TF_CLI_ARGS_<cmd> in front of it, after the command.
    specific = env.get(f"TF_CLI_ARGS_{subcommand}", "")
    general = env.get("TF_CLI_ARGS", "")
    try:
        return shlex.split(specific) + shlex.split(general)
    except ValueError:
        return []


def _absolute(base: Path | str, path: str) -> str:
    return os.path.normpath(os.path.join(str(base), path))


# --- commands that may overlap preflight -------------------------------------------------------

# Subcommands of terraform and tofu that cannot change infrastructure or state. `plan` takes
# the state lock and may refresh, but never writes state; `-out` writes a local file only.
# Everything else (apply, destroy, import, init, refresh, state *, workspace *, taint, test,
# force-unlock, get, console, login, ...) and anything unknown keeps strict preflight-first.
_READ_ONLY_SUBCOMMANDS = frozenset({"plan", "validate", "show", "version", "graph", "output"})
# `providers` prints the tree and `providers schema` the schemas; `lock` and `mirror` write.
_READ_ONLY_PROVIDERS = frozenset({"schema"})


def _read_only(subcommand: str | None, flags: Mapping[str, str], positionals: list[str]) -> bool:
    if subcommand in _READ_ONLY_SUBCOMMANDS:
        return True
    if subcommand == "providers":
        return not positionals or positionals[0] in _READ_ONLY_PROVIDERS
    if subcommand == "fmt":
        # Plain `fmt` rewrites the configuration: only checking or listing is read-only.
        return flags.get("check", "false") in _GO_TRUE or (
            "write" in flags and flags["write"] not in _GO_TRUE
        )
    return False


# --- commands that print state ----------------------------------------------------------------

# state subcommands that print values (list, mv, rm, ... print addresses only).
_STATE_PRINTING = frozenset({"pull", "show"})


def state_output_reason(inv: TfInvocation) -> str | None:
    """Why this command's stdout holds state or output values in clear, or None.

    ``output`` (any form), ``show`` of the state or with ``-json``, ``state pull``/``show`` and
    ``console`` print every sensitive value as it is: terraform only masks them in plans.
    """
    sub = inv.subcommand
    if inv.tool == "other" or sub is None:
        return None
    if sub == "output":
        return "`output` prints output values, sensitive ones included"
    if sub == "console":
        return "`console` prints any value it is asked for, sensitive ones included"
    if sub == "state" and inv.positionals[:1] and inv.positionals[0] in _STATE_PRINTING:
        return f"`state {inv.positionals[0]}` prints state values, sensitive ones included"
    if sub == "show" and (inv.json or not inv.positionals):
        what = "the state" if not inv.positionals else "the plan"
        how = " as JSON" if inv.json else ""
        return f"`show` prints {what}{how}, sensitive values included"
    return None


# --- values on the command line -----------------------------------------------------------------

_VAR_FLAGS = frozenset({"var", "backend-config"})
REDACTED_ARGUMENT = "[REDACTED:{kind}]"


@dataclass(frozen=True)
class ArgumentValue:
    """A value given on the command line: ``-var NAME=VALUE`` or ``-backend-config=K=V``."""

    kind: str  # "var" | "backend-config"
    name: str
    value: str


def _flag_value(args: Sequence[str], index: int) -> tuple[str, str | None, int]:
    """(flag name, its value if it is -var/-backend-config, index of the next argument)."""
    arg = args[index]
    if not arg.startswith("-") or arg in ("-", "--"):
        return "", None, index + 1
    name, has_value, value = _split_flag(arg)
    if name not in _VAR_FLAGS:
        return name, None, index + 1
    if has_value:
        return name, value, index + 1
    if index + 1 < len(args):
        return name, args[index + 1], index + 2
    return name, None, index + 1


def _values_in(args: Sequence[str]) -> list[ArgumentValue]:
    found: list[ArgumentValue] = []
    index = 0
    while index < len(args):
        kind, value, index = _flag_value(args, index)
        if value is None:
            continue
        name, sep, content = value.partition("=")
        if not sep:
            if kind == "backend-config":
                continue  # -backend-config=FILE: a path, not a value
            name, content = "", value
        if content:
            found.append(ArgumentValue(kind, name, content))
    return found


def _cli_args_env(env: Mapping[str, str]) -> list[str]:
    words: list[str] = []
    for key in sorted(env):
        if key == "TF_CLI_ARGS" or key.startswith("TF_CLI_ARGS_"):
            try:
                words += shlex.split(env[key])
            except ValueError:
                words += env[key].split()
    return words


def argument_values(argv: Sequence[str], env: Mapping[str, str]) -> list[ArgumentValue]:
    """Every -var / -backend-config value in ``argv[1:]`` and in ``TF_CLI_ARGS*``."""
    if not argv or detect_tool(argv[0]) == "other":
        return []
    return _values_in(list(argv[1:])) + _values_in(_cli_args_env(env))


def argument_secrets(argv: Sequence[str], env: Mapping[str, str]) -> tuple[list[Secret], list[str]]:
    """The command line's values as registered secrets (rule ``var:NAME``,
    ``backend-config:KEY``), and warnings about values too short to find safely."""
    secrets: list[Secret] = []
    warnings: list[str] = []
    for item in argument_values(argv, env):
        rule = f"{item.kind}:{item.name}" if item.name else item.kind
        label = f"the value of -{item.kind} {item.name}".rstrip()
        if item.kind == "var":
            secrets += input_variable_secrets(rule, item.name, item.value, warnings, label)
        else:
            secrets += value_secrets(rule, item.value, warnings, label)
    return secrets, warnings


def redact_arguments(argv: Sequence[str]) -> list[str]:
    """``argv`` with each -var / -backend-config value replaced, its name kept:
    ``-var=db_password=[REDACTED:var]``. Other commands' argv is returned unchanged."""
    args = list(argv)
    if not args or detect_tool(args[0]) == "other":
        return args
    index = 1
    while index < len(args):
        kind, value, following = _flag_value(args, index)
        if value is not None:
            name, sep, content = value.partition("=")
            if content or (not sep and kind == "var"):
                hidden = REDACTED_ARGUMENT.format(kind=kind)
                replaced = f"{name}={hidden}" if sep else hidden
                if following == index + 2:
                    args[index + 1] = replaced
                else:
                    args[index] = args[index][: len(args[index]) - len(value)] + replaced
        index = following
    return args
