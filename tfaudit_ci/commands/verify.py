"""``tfaudit verify``: walk a stream's chain and report every problem (exit 24 on any).

``verify_command`` is the whole verdict (the walk, the store's lock rules, the witness and the
``--require-reviewed-plan`` policy); ``tfaudit report`` shows the same verdict for its period.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tfaudit_ci import errors
from tfaudit_ci.config import Config
from tfaudit_ci.errors import ConfigError

if TYPE_CHECKING:
    from tfaudit_ci.signing import Verifier
    from tfaudit_ci.stores.base import Store
    from tfaudit_ci.verify.checkpoint import Checkpoint
    from tfaudit_ci.verify.model import CheckedRecord, VerifyOptions, VerifyResult

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
_UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_time(text: str, flag: str) -> dt.datetime:
    """ISO-8601 (a date, or a date and time; no zone means UTC)."""
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{flag} {text!r} is not an ISO-8601 time", fix=f"e.g. {flag} 2024-05-01T12:00:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def parse_duration(text: str, flag: str = "--max-age") -> dt.timedelta:
    """``2d``, ``12h``, ``30m``, ``1d12h``, ``1w``."""
    compact = text.strip().lower()
    parts = _DURATION_PART.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ConfigError(f"{flag} {text!r} is not a duration", fix="use e.g. 2d, 12h, 30m")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if not 0 < seconds < 1e9:
        raise ConfigError(
            f"{flag} {text!r} must be positive (and under 30 years)", fix="use e.g. 2d"
        )
    return dt.timedelta(seconds=seconds)


def load_jwks(path_text: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path_text).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read --jwks {path_text}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(f"--jwks {path_text} is not JSON", fix="save the issuer's JWKS") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ConfigError(
            f'--jwks {path_text} is not a JWKS (no "keys" list)',
            fix="e.g. curl https://token.actions.githubusercontent.com/.well-known/jwks",
        )
    return data


def _stream(config: Config, env: Mapping[str, str]) -> str:
    from tfaudit_ci.ci import resolve_stream

    return resolve_stream(config.stream, env, Path.cwd())


def trusted_key(ns: argparse.Namespace, config: Config, env: Mapping[str, str]) -> Verifier | None:
    """The trusted key: --key, --public-key or --kms-key; else the verifier of the configured
    signing key (``--signing-key``, the same setting `run` signs with)."""
    from tfaudit_ci.signing import make_signer, make_verifier

    given = make_verifier(key=ns.key, public_key=ns.public_key, kms_key=ns.kms_key, env=env)
    if not config.signing_key or config.signing_key == "none":
        return given
    if (
        given is not None
        and "signing-key" in config.sources
        and "flag" in str(config.sources["signing-key"])
    ):
        raise ConfigError(
            "--signing-key and a trusted key (--key, --public-key or --kms-key) given together",
            fix="pass one: --signing-key verifies with the key runs sign with",
        )
    return given if given is not None else make_signer(config.signing_key, env).verifier()


def build_options(ns: argparse.Namespace, config: Config, env: Mapping[str, str]) -> VerifyOptions:
    from tfaudit_ci.verify.model import VerifyOptions

    if ns.parallelism < 1 or ns.parallelism > 256:
        raise ConfigError(f"--parallelism {ns.parallelism} is out of range", fix="use 1..256")
    if ns.min_remaining_days < 0:
        raise ConfigError("--min-remaining-days must not be negative")
    since = parse_time(ns.since, "--since") if ns.since else None
    until = parse_time(ns.until, "--until") if ns.until else None
    if since and until and since >= until:
        raise ConfigError("--since must be before --until")
    if getattr(ns, "checkpoint", None) and (since or until):
        raise ConfigError(
            "--checkpoint with --since/--until: a checkpoint covers the whole chain up to it",
            fix="drop --since/--until (or --checkpoint)",
        )
    return VerifyOptions(
        stream=_stream(config, env),
        policy=config.policy,
        since=since,
        until=until,
        min_remaining_days=ns.min_remaining_days,
        max_age=parse_duration(ns.max_age) if ns.max_age else None,
        max_overlap=parse_duration(ns.max_overlap, "--max-overlap"),
        verifier=trusted_key(ns, config, env),
        trusted_jwks=load_jwks(ns.jwks) if ns.jwks else None,
        parallelism=ns.parallelism,
        deep=bool(getattr(ns, "deep", False)),
    )


def verify_command(
    ns: argparse.Namespace,
    config: Config,
    env: Mapping[str, str],
    store: Store | None = None,
    *,
    on_record: Callable[[CheckedRecord], None] | None = None,
    keep_artifacts: Mapping[str, int] | None = None,
) -> VerifyResult:
    """The verdict of ``tfaudit verify`` (and of ``report`` for its period, which passes
    ``on_record``/``keep_artifacts``: see ``VerifyOptions``); never raises for anything the
    store holds."""
    from tfaudit_ci.locking import verify_locks
    from tfaudit_ci.stores import open_store
    from tfaudit_ci.verify.model import Code, warning
    from tfaudit_ci.verify.walk import verify_stream
    from tfaudit_ci.witness import verify_witness

    options = build_options(ns, config, env)
    options.on_record, options.keep_artifacts = on_record, dict(keep_artifacts or {})
    if store is None:
        store = open_store(config.require_store(), config.store_options())
    path = Path(ns.checkpoint) if getattr(ns, "checkpoint", None) else None
    started = checkpoint_start(path, store.uri, options) if path is not None else None
    rules = verify_locks(store, config.policy, config.on_unlocked)
    options.check_locks, options.lock_note = rules.check, rules.note
    # The witness's checkpoints and --head-from are read before the chain (docs/witness.md).
    witness = verify_witness(
        ns, config, stream=options.stream, verifier=options.verifier, parallelism=ns.parallelism
    )
    result = verify_stream(store, options, witness)
    if rules.unlocked is not None:
        result.problems.insert(0, warning(Code.UNLOCKED_STORE, rules.unlocked))
    if ns.require_reviewed_plan:
        _reviewed_plans(result, store, ns)
    if path is not None:
        advance_checkpoint(path, result, options, started)
    return result


def checkpoint_start(path: Path, store_uri: str, options: VerifyOptions) -> Checkpoint | None:
    """The checkpoint in ``path`` (None: there is none yet), refused when written for another
    stream, store or trusted key; sets ``options.checkpoint``."""
    from tfaudit_ci.verify import checkpoint

    found = checkpoint.load(path)
    if found is None:
        return None
    verifier = options.verifier.description if options.verifier is not None else None
    why = found.refusal(store=store_uri, stream=options.stream, verifier=verifier)
    if why is not None:
        raise ConfigError(
            f"--checkpoint {path} is refused: {why}",
            fix="pass this stream's checkpoint with the key it was verified with, or another "
            "path to verify the whole stream",
        )
    options.checkpoint = found.tip
    return found


def advance_checkpoint(
    path: Path, result: VerifyResult, options: VerifyOptions, started: Checkpoint | None
) -> None:
    """Write the checkpoint of a passing verify (atomically); never over errors."""
    from tfaudit_ci.record import iso, utc_now
    from tfaudit_ci.verify import checkpoint
    from tfaudit_ci.verify.model import Code, error

    where = f"checkpoint {path}"
    if started is None:
        result.notes.append(f"{where} not found: verified the whole stream")
    if not result.ok or result.tip is None:
        result.notes.append(f"{where} not advanced: the stream did not verify")
        return
    verifier = options.verifier.description if options.verifier is not None else None
    new = checkpoint.Checkpoint(result.store, result.stream, verifier, result.tip, iso(utc_now()))
    try:
        checkpoint.save(path, new)
    except errors.TfauditError as exc:
        result.problems.append(
            error(Code.CHECKPOINT, f"the stream verified, but {exc.diagnostics()}")
        )
        return
    result.notes.append(f"{where} written at seq {new.tip.seq}")


def _reviewed_plans(result: VerifyResult, store: Store, ns: argparse.Namespace) -> None:
    """``--require-reviewed-plan``: each apply of the window that did not apply a reviewed
    plan is an ``unreviewed-plan`` error (docs/reading.md, "Reviewed plan = applied plan")."""
    import traceback

    from tfaudit_ci.trail.planscope import reviewed_plan_problems
    from tfaudit_ci.verify.model import Code, error

    try:
        found = reviewed_plan_problems(
            store,
            result.stream,
            result.first_seq,
            result.last_seq,
            parallelism=ns.parallelism,
            other_streams=ns.plan_stream,
        )
    except Exception as exc:  # e.g. a --plan-stream that cannot be read: still a report
        why = exc.diagnostics() if isinstance(exc, errors.TfauditError) else repr(exc)
        found = [
            error(
                Code.INTERNAL,
                f"--require-reviewed-plan could not be checked: {why[:300]}",
                traceback=traceback.format_exc(),
            )
        ]
    result.problems.extend(found)
    unreviewed = sum(1 for p in found if p.code is Code.UNREVIEWED_PLAN)
    result.notes.append(
        f"--require-reviewed-plan: {unreviewed} apply(s) without a reviewed plan"
        if unreviewed
        else "--require-reviewed-plan: every apply applied a reviewed plan"
    )


def main_verify(ns: argparse.Namespace, config: Config, env: Mapping[str, str]) -> int:
    """Always a complete report (and with --json one document), whatever the stream holds."""
    from tfaudit_ci.verify.report import summary_line, text_lines, to_json

    result = verify_command(ns, config, env)
    verbose = bool(getattr(ns, "verbose", False))
    if ns.json:
        from tfaudit_ci.console import print_json

        print_json(to_json(result, verbose=verbose))
        sys.stderr.write(summary_line(result) + "\n")
    else:
        sys.stdout.write("\n".join(text_lines(result, verbose=verbose)) + "\n")
        sys.stdout.flush()
    return 0 if result.ok else errors.EXIT_VERIFY
