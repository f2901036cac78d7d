"""What one ``tfaudit run`` registers for redaction, and what it does not store at all.

Kept apart from ``commands/run.py`` so that the run and recover paths only call it:

* the rules: registered environment variables, the command line's ``-var``/``-backend-config``
  values (argv and ``TF_CLI_ARGS*``), the workflow's own patterns and ``env:NAME`` entries;
* the command as recorded: values replaced, names kept, then every rule applied;
* stdout of a command that prints state: withheld unless ``store-state-output`` is set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tfaudit_ci.redact import RuleSet, build_rules, redact_text
from tfaudit_ci.tfargs import TfInvocation, argument_secrets, redact_arguments, state_output_reason


def split_redact(entries: Sequence[str]) -> tuple[list[str], list[str]]:
    """``redact`` entries: regex patterns, and ``env:NAME`` names of extra secret variables."""
    patterns = [e for e in entries if not e.startswith("env:")]
    names = [e.removeprefix("env:") for e in entries if e.startswith("env:")]
    return patterns, names


def run_rules(command: Sequence[str], env: Mapping[str, str], redact: Sequence[str]) -> RuleSet:
    """The rules a run redacts its output with (first pass)."""
    patterns, names = split_redact(redact)
    secrets, warnings = argument_secrets(command, env)
    return build_rules(
        env, extra_patterns=patterns, extra_env_names=names, secrets=secrets, warnings=warnings
    )


def redact_command(command: Sequence[str], rules: RuleSet) -> list[str]:
    """The command line as the record and the spool keep it."""
    return [redact_text(arg, rules)[0] for arg in redact_arguments(command)]


@dataclass(frozen=True)
class StdoutPolicy:
    """``withheld``: why stdout is not stored (None: it is). ``state_output``: the command
    prints state and its stdout is stored anyway (store-state-output), redacted."""

    withheld: str | None
    state_output: bool


def stdout_policy(inv: TfInvocation, store_state_output: bool) -> StdoutPolicy:
    reason = state_output_reason(inv)
    if reason is None:
        return StdoutPolicy(None, False)
    if store_state_output:
        return StdoutPolicy(None, True)
    return StdoutPolicy(f"{reason}; set store-state-output to keep it, redacted", False)
