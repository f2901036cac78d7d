"""``tfaudit verify``: walk a stream's chain and report every problem (exit 24 on any)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tfaudit_ci import errors
from tfaudit_ci.config import Config
from tfaudit_ci.errors import ConfigError

if TYPE_CHECKING:
    from tfaudit_ci.signing import Verifier
    from tfaudit_ci.verify.model import VerifyOptions

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


def _verifier(ns: argparse.Namespace, config: Config, env: Mapping[str, str]) -> Verifier | None:
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
    return VerifyOptions(
        stream=_stream(config, env),
        policy=config.policy,
        since=since,
        until=until,
        min_remaining_days=ns.min_remaining_days,
        max_age=parse_duration(ns.max_age) if ns.max_age else None,
        max_overlap=parse_duration(ns.max_overlap, "--max-overlap"),
        verifier=_verifier(ns, config, env),
        trusted_jwks=load_jwks(ns.jwks) if ns.jwks else None,
        parallelism=ns.parallelism,
    )


def main_verify(ns: argparse.Namespace, config: Config, env: Mapping[str, str]) -> int:
    """Always a complete report (and with --json one document), whatever the stream holds."""
    from tfaudit_ci.locking import verify_locks
    from tfaudit_ci.stores import open_store
    from tfaudit_ci.verify.model import Code, warning
    from tfaudit_ci.verify.report import summary_line, text_lines, to_json
    from tfaudit_ci.verify.walk import verify_stream
    from tfaudit_ci.witness import verify_witness

    options = build_options(ns, config, env)
    store = open_store(config.require_store(), config.store_options())
    rules = verify_locks(store, config.policy, config.on_unlocked)
    options.check_locks, options.lock_note = rules.check, rules.note
    # The witness's checkpoints and --head-from are read before the chain (docs/witness.md).
    witness = verify_witness(
        ns, config, stream=options.stream, verifier=options.verifier, parallelism=ns.parallelism
    )
    result = verify_stream(store, options, witness)
    if rules.unlocked is not None:
        result.problems.insert(0, warning(Code.UNLOCKED_STORE, rules.unlocked))
    verbose = bool(getattr(ns, "verbose", False))
    if ns.json:
        from tfaudit_ci.console import print_json

        print_json(to_json(result, verbose=verbose))
        sys.stderr.write(summary_line(result) + "\n")
    else:
        sys.stdout.write("\n".join(text_lines(result, verbose=verbose)) + "\n")
        sys.stdout.flush()
    return 0 if result.ok else errors.EXIT_VERIFY
