"""Parse the command line and dispatch to one module per subcommand."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tfaudit_ci import __version__, errors
from tfaudit_ci.errors import ConfigError, TfauditError

# Flags shared by every command that talks to a store; dest is the config key.
STORE_FLAGS: list[tuple[str, dict[str, Any]]] = [
    ("--store", {"metavar": "URL", "help": "s3://B/P, gs://B/P, azblob://A/C/P or file:///PATH"}),
    ("--stream", {"metavar": "NAME", "help": "record stream (default: repository slug)"}),
    ("--retention-days", {"metavar": "N", "help": "minimum retention (default 365)"}),
    ("--lock-mode", {"metavar": "MODE", "help": "COMPLIANCE (default) or GOVERNANCE"}),
    ("--on-unlocked", {"metavar": "fail|warn", "help": "when the store is not WORM"}),
    ("--endpoint-url", {"metavar": "URL", "help": "S3-compatible endpoint"}),
    ("--region", {"metavar": "REGION"}),
    ("--work-dir", {"metavar": "DIR", "help": "where spools are kept"}),
    ("--connect-timeout", {"metavar": "SECONDS"}),
    ("--read-timeout", {"metavar": "SECONDS"}),
    ("--max-attempts", {"metavar": "N"}),
    ("--multipart-threshold", {"metavar": "BYTES"}),
    ("--gcs-mode", {"metavar": "MODE", "help": "bucket-policy or object-retention"}),
    ("--azure-mode", {"metavar": "MODE", "help": "version-immutability or container-policy"}),
    ("--signing-key", {"metavar": "SPEC", "help": "none, hmac:env:VAR, ed25519:FILE, kms:ID"}),
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # exit 20 with a one-line message, not argparse's 2
        raise ConfigError(f"{self.prog}: {message}", fix=f"see `{self.prog} --help`")


def _add_store_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="config file (default .tfaudit.yml)")
    for flag, kwargs in STORE_FLAGS:
        parser.add_argument(flag, dest=flag[2:], default=argparse.SUPPRESS, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tfaudit", description="Audit trail for Terraform runs in CI.")
    parser.add_argument("--version", action="version", version=f"tfaudit-ci {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="tracebacks on errors")
    sub = parser.add_subparsers(dest="cmd", parser_class=_Parser)

    run = sub.add_parser("run", help="run a command and ship its audit record")
    _add_store_flags(run)
    run.add_argument(
        "--redact",
        action="append",
        metavar="PATTERN",
        default=argparse.SUPPRESS,
        help="extra regex to redact; env:NAME marks a secret env var (repeatable)",
    )
    run.add_argument(
        "--upload-plan-file",
        action="store_const",
        const=True,
        default=argparse.SUPPRESS,
        help="also upload the binary plan (unredacted!)",
    )
    run.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")

    check = sub.add_parser("check", help="preflight only: is the store locked as required?")
    _add_store_flags(check)
    check.add_argument("--json", action="store_true")

    verify = sub.add_parser("verify", help="verify a stream's chain, signatures and artifacts")
    _add_store_flags(verify)
    from tfaudit_ci.commands.verify_args import add_verify_arguments

    add_verify_arguments(verify)

    recover = sub.add_parser("recover", help="ship spools left behind by an interrupted run")
    _add_store_flags(recover)
    recover.add_argument("--json", action="store_true")

    from tfaudit_ci.commands.read_args import add_read_commands

    add_read_commands(sub, _add_store_flags)
    return parser


def _config_flags(ns: argparse.Namespace) -> dict[str, Any]:
    keys = [flag[2:] for flag, _ in STORE_FLAGS] + ["redact", "upload-plan-file"]
    return {key: getattr(ns, key) for key in keys if hasattr(ns, key)}


def _dispatch(ns: argparse.Namespace, env: Mapping[str, str]) -> int:
    from tfaudit_ci.config import load_config

    cwd = Path.cwd()
    config = load_config(_config_flags(ns), env, cwd=cwd, config_path=ns.config)
    if ns.cmd == "run":
        from tfaudit_ci.commands.run import main_run

        command = list(ns.command)
        if command and command[0] == "--":
            command = command[1:]
        if not command:
            raise ConfigError("no command to run", fix="tfaudit run [options] -- terraform plan")
        return main_run(command, config, env, cwd, as_json=ns.json)
    if ns.cmd == "check":
        from tfaudit_ci.commands.check import main_check

        return main_check(config, as_json=ns.json)
    if ns.cmd == "verify":
        from tfaudit_ci.commands.verify import main_verify

        return main_verify(ns, config, env)
    if ns.cmd == "recover":
        from tfaudit_ci.commands.recover import main_recover

        return main_recover(config, env, cwd, as_json=ns.json)
    if ns.cmd in ("log", "show", "history", "report"):
        from tfaudit_ci.commands.read_args import run_read_command

        return run_read_command(ns, config, env)
    raise ConfigError("no command given", fix="use one of: run, check, verify, recover")


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    environ: Mapping[str, str] = dict(os.environ) if env is None else env
    verbose = "-v" in args[:1] or "--verbose" in args[:1]
    try:
        ns = build_parser().parse_args(args)
        return _dispatch(ns, environ)
    except TfauditError as exc:
        if verbose:
            import traceback

            traceback.print_exc()
        sys.stderr.write(f"tfaudit: error: {exc.diagnostics()}\n")
        if environ.get("GITHUB_ACTIONS") == "true":
            from tfaudit_ci.report.github import annotate_error

            annotate_error(exc.diagnostics(), sys.stdout)
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("tfaudit: interrupted\n")
        return errors.EXIT_SIGINT


def main_entry() -> None:
    code = main()
    # The work is done and its exit code decided: a late signal (a CI's second SIGTERM during
    # interpreter shutdown) must not turn it into a death by signal.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    sys.exit(code)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()
