"""Flags of the reading commands (``log``, ``show``, ``history``, ``report``) and their
dispatch; kept apart so the parser imports nothing heavy."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tfaudit_ci.config import Config

READ_COMMANDS = ("log", "show", "history", "report")


def _color_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--color",
        dest="color",
        action="store_const",
        const=True,
        default=None,
        help="colour even when piped",
    )
    group.add_argument(
        "--no-color",
        dest="color",
        action="store_const",
        const=False,
        help="no colour even on a terminal (NO_COLOR does the same)",
    )


def _common(parser: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    if json_flag:
        parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--parallelism", metavar="N", type=int, default=16, help="concurrent reads (default 16)"
    )


def _trust_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", metavar="SPEC", help="trusted HMAC key: hmac:env:VAR")
    parser.add_argument("--public-key", metavar="FILE", help="trusted public key (PEM)")
    parser.add_argument("--kms-key", metavar="ID", help="trusted AWS KMS key id or ARN")
    parser.add_argument("--jwks", metavar="FILE", help="trusted JWKS for identity evidence")


def _cache_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-cache",
        dest="cache",
        action="store_false",
        help="read every record from the store (see docs/reading.md: the local cache)",
    )


def _plan_search_flags(parser: argparse.ArgumentParser, *, streams: bool = True) -> None:
    if streams:
        from tfaudit_ci.commands.verify_args import add_plan_stream_argument

        add_plan_stream_argument(parser)
    parser.add_argument(
        "--plan-lookback",
        metavar="N",
        type=int,
        help="search at most N records back for an apply's plan (default: the whole stream)",
    )


def add_read_commands(subcommand: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Add the reading commands; ``subcommand(name, summary)`` makes each parser (with the
    store flags, its description and its exit codes)."""
    log = subcommand("log", "list runs, newest first")
    log.add_argument("-n", dest="limit", metavar="N", type=int, default=20, help="runs (20)")
    log.add_argument("--since", metavar="TIME", help="runs started at/after TIME (ISO)")
    log.add_argument("--until", metavar="TIME", help="runs started before TIME (ISO)")
    for flag, help_text in (
        ("--actor", "only runs by this actor (repeatable)"),
        ("--status", "succeeded, failed, cancelled, crashed (repeatable)"),
        ("--command", "plan, apply, destroy, import, ... (repeatable)"),
        ("--ref", "only runs whose ref contains this text (repeatable)"),
    ):
        log.add_argument(flag, action="append", default=[], metavar="VALUE", help=help_text)
    _common(log)
    _color_flags(log)

    show = subcommand("show", "one record, its checks, its log or plan")
    show.add_argument("target", nargs="?", default="latest", metavar="SEQ|latest")
    what = show.add_mutually_exclusive_group()
    what.add_argument("--log", action="store_true", help="print the stored (redacted) log")
    what.add_argument("--plan", action="store_true", help="print the redacted plan summary")
    _common(show)
    _color_flags(show)
    _trust_flags(show)
    _plan_search_flags(show)

    history = subcommand("history", "every run that changed a resource address")
    history.add_argument("address", nargs="+", metavar="ADDRESS", help="address or glob")
    history.add_argument(
        "--applied-only", action="store_true", help="only applies, destroys and imports"
    )
    _common(history)
    _color_flags(history)
    _cache_flag(history)

    report = subcommand("report", "an evidence pack for a period (HTML, JSON, CSV)")
    from tfaudit_ci.commands.verify_args import add_verify_arguments

    # The same window, keys, checks and policies as verify (--json and --plan-stream too).
    add_verify_arguments(report)
    report.add_argument("--out", metavar="FILE", help="write here (default: stdout)")
    report.add_argument(
        "--format", choices=("html", "json", "csv"), help="default: html (json with --json)"
    )
    _plan_search_flags(report, streams=False)


def run_read_command(ns: argparse.Namespace, config: Config, env: Mapping[str, str]) -> int:
    if ns.cmd == "log":
        from tfaudit_ci.commands.log import main_log

        return main_log(ns, config, env)
    if ns.cmd == "show":
        from tfaudit_ci.commands.show import main_show

        return main_show(ns, config, env)
    if ns.cmd == "history":
        from tfaudit_ci.commands.history import main_history

        return main_history(ns, config, env)
    from tfaudit_ci.commands.evidence import main_report

    return main_report(ns, config, env)
