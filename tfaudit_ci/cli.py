"""Parse the command line and dispatch to one module per subcommand.

Options are never abbreviated (``--stor`` is an error with a suggestion, not ``--store``),
a mistyped option or subcommand gets "did you mean", and every usage error exits 20.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from tfaudit_ci import __version__, errors
from tfaudit_ci.errors import ConfigError, TfauditError

# Flags shared by every command that talks to a store, one per line: the flag (its dest is
# the config key of the same name), its metavar, then its help, if any.
_STORE_FLAGS_TABLE = """
--store URL s3://B/P, gs://B/P, azblob://A/C/P or file:///PATH
--stream NAME record stream (default: repository slug)
--retention-days N minimum retention (default 365)
--lock-mode MODE COMPLIANCE (default) or GOVERNANCE
--on-unlocked fail|warn when the store is not WORM
--endpoint-url URL S3-compatible endpoint
--region REGION
--work-dir DIR where spools are kept
--connect-timeout SECONDS
--read-timeout SECONDS
--max-attempts N
--multipart-threshold SIZE bytes, or e.g. 64MiB
--gcs-mode MODE bucket-policy or object-retention
--azure-mode MODE version-immutability or container-policy
--signing-key SPEC none, hmac:env:VAR, ed25519:FILE, kms:ID
--witness URL second store for checkpoints (docs/witness.md)
--witness-endpoint-url URL the witness's S3-compatible endpoint
--witness-profile NAME AWS profile for an S3 witness
--witness-required true|false fail on a missed checkpoint
"""


def _flag_table(table: str) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    for line in table.strip().splitlines():
        flag, metavar, *text = line.split(None, 2)
        rows.append((flag, {"metavar": metavar, **({"help": text[0]} if text else {})}))
    return rows


STORE_FLAGS = _flag_table(_STORE_FLAGS_TABLE)
# Flags of `run` alone; dest is the config key, as for STORE_FLAGS.
RUN_FLAGS: list[tuple[str, dict[str, Any]]] = [
    (
        "--redact",
        {
            "action": "append",
            "metavar": "PATTERN",
            "help": "extra regex to redact; env:NAME marks a secret env var (repeatable)",
        },
    ),
    (
        "--upload-plan-file",
        {
            "action": "store_const",
            "const": True,
            "help": "also upload the binary plan (unredacted!)",
        },
    ),
]

EXIT_CODES_TEXT = {
    "run": """exit codes:
  the command's own  the audit succeeded; the command's exit code passes through
  20                 usage or configuration error (nothing was run)
  21                 preflight failed: the store is not locked as policy requires (not run)
  22                 upload failed after retries (the spool is kept; `tfaudit recover`)
  23                 read-back of digest or retention failed (the spool is kept)
  130, 143           interrupted by SIGINT / SIGTERM (after the partial record shipped)""",
    "check": """exit codes:
  0   the store is locked as policy requires (or accepted with --on-unlocked warn)
  20  usage or configuration error
  21  the store is not locked as policy requires""",
    "verify": """exit codes:
  0   every record in the range was checked and holds
  20  usage or configuration error
  24  verification found at least one error (each is listed)""",
    "recover": """exit codes:
  0   nothing to recover, or every spool was shipped
  20  usage or configuration error
  21  a spool's store is not locked as policy requires (the spool is kept)
  22  an upload failed (the spool is kept)
  23  a read-back failed (the spool is kept)""",
    "witness-sync": """exit codes:
  0   the witness holds every checkpoint it should (gaps between checkpoints stay)
  20  usage or configuration error
  21  the witness is not locked as policy requires
  22  writing a checkpoint failed
  23  reading a checkpoint back failed
  24  the stream does not verify: nothing was written (each problem is listed)""",
    "log": """exit codes:
  0   the runs were listed (records that could not be read are listed as such)
  20  usage or configuration error""",
    "show": """exit codes:
  0   the record was shown and every one of its checks holds
  20  usage or configuration error, or no such record
  24  at least one of the record's checks failed (each is marked)""",
    "history": """exit codes:
  0   the runs that changed the address were listed
  20  usage or configuration error""",
    "report": """exit codes:
  0   the report was written and the period verifies
  20  usage or configuration error
  24  the report was written, and the period does not verify (its verdict lists why)""",
}

DESCRIPTIONS = {
    "run": "Run COMMAND (terraform, tofu, terragrunt), stream its output to the console, "
    "and ship its redacted output, plan and CI metadata to the WORM store as the next "
    "record of the stream's hash chain. Preflight checks the store's lock before the command "
    "starts; an audit failure fails the job.",
    "check": "Preflight only: is the store locked as the policy requires? Runs nothing.",
    "verify": "Verify a stream: every record in the range, its place in the hash chain, its "
    "signature, its artifacts' digests and locks, and its identity evidence. Reports every "
    "problem, not just the first.",
    "recover": "Ship the spools that an interrupted or failed run left behind, each to the "
    "store and stream recorded in it.",
    "witness-sync": "Backfill a stream's checkpoints in the witness (docs/witness.md): verify "
    "the whole stream first, refuse if anything fails, then checkpoint the records before "
    "the first and after the last checkpoint the witness holds.",
    "log": "List a stream's runs, newest first: when, status, actor, commit, PR/MR, the "
    "command, the plan's changes and the CI run (docs/reading.md).",
    "show": "Show one record (a seq, or latest) for people, with its own checks: signature, "
    "link to its predecessor, artifacts, locks and identity evidence; --log and --plan print "
    "the stored output and plan.",
    "history": "Every run that planned or applied a change to a resource address (globs such "
    "as module.db.* work), newest first.",
    "report": "Write an evidence pack for a period: one self-contained HTML file (or JSON, or "
    "CSV) with the verification verdict, the applies and whether each applied the reviewed "
    "plan, the resources changed most, and each run's detail.",
}


class _Parser(argparse.ArgumentParser):
    """Exit 20 with one line and a suggestion, instead of argparse's exit 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        hint = ""
        if match := re.search(r"invalid choice: '([^']+)'", message):
            hint = _did_you_mean([match.group(1)], list(_subparsers(self)))
        raise ConfigError(f"{message}{hint}", fix=f"see `{self.prog} --help`")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _did_you_mean(words: Sequence[str], known: Sequence[str]) -> str:
    hints = []
    for word in words:
        close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
        if close:
            hints.append(f"{word} -> {close[0]}")
    return f" (did you mean: {', '.join(hints)}?)" if hints else ""


def parse(args: Sequence[str]) -> argparse.Namespace:
    """Parse, refusing unknown options with a suggestion from the subcommand's own."""
    parser = build_parser()
    ns, extras = parser.parse_known_args(args)
    if extras:
        sub = _subparsers(parser).get(ns.cmd) if ns.cmd else None
        target = sub or parser
        options = [o for action in target._actions for o in action.option_strings]
        unknown = [word.split("=", 1)[0] for word in extras if word.startswith("-")]
        raise ConfigError(
            f"unrecognized arguments: {' '.join(extras)}{_did_you_mean(unknown, options)}",
            fix=f"see `{target.prog} --help`",
        )
    return ns


def _add_config_flags(
    parser: argparse.ArgumentParser, flags: list[tuple[str, dict[str, Any]]]
) -> None:
    """Flags that set a config key: absent from the namespace unless given."""
    for flag, kwargs in flags:
        parser.add_argument(flag, dest=flag[2:], default=argparse.SUPPRESS, **kwargs)


def _add_store_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="config file (default .tfaudit.yml)")
    _add_config_flags(parser, STORE_FLAGS)


def _subcommand(sub: Any, name: str, summary: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=summary, description=DESCRIPTIONS[name], epilog=EXIT_CODES_TEXT[name]
    )
    _add_store_flags(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tfaudit",
        description="A WORM audit trail for Terraform/OpenTofu runs in CI.",
        epilog="`tfaudit COMMAND --help` describes each command and its exit codes.",
    )
    parser.add_argument("--version", action="version", version=f"tfaudit-ci {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="tracebacks on errors")
    sub = parser.add_subparsers(dest="cmd", parser_class=_Parser, metavar="COMMAND")

    run = _subcommand(sub, "run", "run a command and ship its audit record")
    _add_config_flags(run, RUN_FLAGS)
    run.add_argument(
        "--result",
        metavar="FILE",
        type=Path,
        help="write the run's result as JSON to FILE (stdout carries only the command's bytes)",
    )
    run.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")

    check = _subcommand(sub, "check", "preflight only: is the store locked as required?")
    check.add_argument("--json", action="store_true", help="machine-readable output on stdout")

    verify = _subcommand(sub, "verify", "verify a stream's chain, signatures and artifacts")
    from tfaudit_ci.commands.verify_args import add_verify_arguments

    add_verify_arguments(verify)

    recover = _subcommand(sub, "recover", "ship spools left behind by an interrupted run")
    recover.add_argument(
        "--all-stores",
        action="store_true",
        help="also ship spools recorded for a store other than --store",
    )
    recover.add_argument("--json", action="store_true", help="machine-readable output on stdout")

    sync = _subcommand(sub, "witness-sync", "backfill a stream's checkpoints in the witness")
    from tfaudit_ci.commands.witness_sync import add_arguments

    add_arguments(sync)

    from tfaudit_ci.commands.read_args import add_read_commands

    add_read_commands(lambda name, summary: _subcommand(sub, name, summary))
    return parser


def _config_flags(ns: argparse.Namespace) -> dict[str, Any]:
    keys = [flag[2:] for flag, _ in STORE_FLAGS + RUN_FLAGS]
    return {key: getattr(ns, key) for key in keys if hasattr(ns, key)}


def _run_command(ns: argparse.Namespace) -> list[str]:
    if ns.json:
        raise ConfigError(
            "tfaudit run: --json would mix tfaudit's JSON with the command's own output",
            fix="use --result FILE: the result is written there as JSON",
        )
    command = list(ns.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise ConfigError("no command to run", fix="tfaudit run [options] -- terraform plan")
    return command


def _dispatch(ns: argparse.Namespace, env: Mapping[str, str]) -> int:
    from tfaudit_ci.config import load_config

    if ns.cmd is None:
        build_parser().print_usage(sys.stderr)
        raise ConfigError(
            "no command given",
            fix="use one of: run, check, verify, recover, witness-sync, log, show, history, report",
        )
    cwd = Path.cwd()
    command = _run_command(ns) if ns.cmd == "run" else []
    config = load_config(_config_flags(ns), env, cwd=cwd, config_path=ns.config)
    handlers: dict[str, Callable[[], int]] = {
        "run": lambda: _main_run(command, config, env, cwd, ns),
        "check": lambda: _main_check(config, ns.json),
        "verify": lambda: _main_verify(ns, config, env),
        "recover": lambda: _main_recover(config, env, ns),
        "witness-sync": lambda: _main_witness_sync(ns, config, env),
    }
    if ns.cmd in handlers:
        return handlers[ns.cmd]()
    from tfaudit_ci.commands.read_args import run_read_command

    return run_read_command(ns, config, env)


def _main_run(
    command: list[str], config: Any, env: Mapping[str, str], cwd: Path, ns: argparse.Namespace
) -> int:
    from tfaudit_ci.commands.run import main_run

    return main_run(command, config, env, cwd, result_file=ns.result, verbose=ns.verbose)


def _main_check(config: Any, as_json: bool) -> int:
    from tfaudit_ci.commands.check import main_check

    return main_check(config, as_json=as_json)


def _main_verify(ns: argparse.Namespace, config: Any, env: Mapping[str, str]) -> int:
    from tfaudit_ci.commands.verify import main_verify

    return main_verify(ns, config, env)


def _main_recover(config: Any, env: Mapping[str, str], ns: argparse.Namespace) -> int:
    from tfaudit_ci.commands.recover import main_recover

    return main_recover(config, env, as_json=ns.json, all_stores=ns.all_stores)


def _main_witness_sync(ns: argparse.Namespace, config: Any, env: Mapping[str, str]) -> int:
    from tfaudit_ci.commands.witness_sync import main_witness_sync

    return main_witness_sync(ns, config, env)


def _is_run(args: Sequence[str]) -> bool:
    """Whether the command line names the ``run`` subcommand (for failures before parsing
    finished, which must still report like any other failed run)."""
    for arg in args:
        if arg in ("-v", "--verbose"):
            continue
        return arg == "run"
    return False


def _report_failed_run(exc: TfauditError, env: Mapping[str, str], args: Sequence[str]) -> None:
    from tfaudit_ci.commands.run import finish
    from tfaudit_ci.console import Console
    from tfaudit_ci.result import RunResult

    result_file = None
    if "--result" in args and args.index("--result") + 1 < len(args):
        result_file = Path(args[args.index("--result") + 1])
    finish(RunResult.not_run(exc.exit_code, exc.diagnostics()), env, Console.system(), result_file)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    environ: Mapping[str, str] = dict(os.environ) if env is None else env
    verbose = "-v" in args[:1] or "--verbose" in args[:1]
    try:
        ns = parse(args)
        return _dispatch(ns, environ)
    except TfauditError as exc:
        if verbose:
            import traceback

            traceback.print_exc()
        if _is_run(args):
            _report_failed_run(exc, environ, args)
            return exc.exit_code
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
