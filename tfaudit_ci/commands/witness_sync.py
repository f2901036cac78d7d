"""``tfaudit witness-sync``: backfill a stream's checkpoints in the witness (docs/witness.md).

It vouches only for a chain that verifies: the whole verify walk runs first, cross-checked
against the witness itself, and any error refuses the sync (exit 24, every problem listed,
nothing written). Then it writes the checkpoints missing *before the first* and *after the
last* checkpoint the witness holds, oldest first, each linked to the one before. Gaps between
two checkpoints stay as they are (``unwitnessed``): the later checkpoint already pins those
records through the hash chain, the record after each gap names it, and writing them late
would only blur that the witness missed them at the time.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tfaudit_ci import errors
from tfaudit_ci.config import Config
from tfaudit_ci.errors import ConfigError, TfauditError, VerifyError

if TYPE_CHECKING:
    from tfaudit_ci.signing import Verifier


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", metavar="SPEC", help="trusted HMAC key: hmac:env:VAR")
    parser.add_argument("--public-key", metavar="FILE", help="trusted public key (PEM)")
    parser.add_argument("--kms-key", metavar="ID", help="trusted AWS KMS key id or ARN")
    parser.add_argument("--jwks", metavar="FILE", help="trusted JWKS for identity evidence")
    parser.add_argument(
        "--parallelism", metavar="N", type=int, default=16, help="concurrent reads (default 16)"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def trusted_verifier(
    ns: argparse.Namespace, config: Config, env: Mapping[str, str]
) -> Verifier | None:
    """The key the chain is verified with before anything is vouched for: the one given,
    or, for an HMAC signing key, that same secret. A chain signed with a private key needs
    its public key given: the sync never vouches for signatures it did not check."""
    from tfaudit_ci.signing import make_verifier

    given = make_verifier(key=ns.key, public_key=ns.public_key, kms_key=ns.kms_key, env=env)
    spec = config.signing_key
    if given is not None or not spec or spec == "none":
        return given
    if spec.startswith("hmac:"):
        return make_verifier(key=spec, public_key=None, kms_key=None, env=env)
    raise ConfigError(
        f"the chain is signed ({spec}); witness-sync checks every signature before it vouches "
        "for a record",
        fix="pass the trusted key: --public-key FILE or --kms-key ID",
    )


def backfill_plan(present: Sequence[int], witnessed: frozenset[int]) -> list[int]:
    """The seqs to checkpoint: before the first and after the last existing checkpoint."""
    if not witnessed:
        return sorted(present)
    first, last = min(witnessed), max(witnessed)
    return [seq for seq in sorted(present) if seq < first or seq > last]


def main_witness_sync(ns: argparse.Namespace, config: Config, env: Mapping[str, str]) -> int:
    from tfaudit_ci.ci import resolve_stream
    from tfaudit_ci.commands.verify import load_jwks
    from tfaudit_ci.console import print_json
    from tfaudit_ci.signing import make_signer
    from tfaudit_ci.stores import open_store
    from tfaudit_ci.verify.model import VerifyOptions
    from tfaudit_ci.verify.report import text_lines, to_json
    from tfaudit_ci.verify.walk import verify_stream
    from tfaudit_ci.verify.witness import WitnessCheck
    from tfaudit_ci.witness import (
        describe_ranges,
        open_witness,
        ranges,
        read_listing,
        witness_spec,
    )

    spec = witness_spec(config)
    if spec is None:
        raise ConfigError(
            "witness-sync needs a witness", fix="pass --witness URL or set `witness:` in config"
        )
    if not 1 <= ns.parallelism <= 256:
        raise ConfigError(f"--parallelism {ns.parallelism} is out of range", fix="use 1..256")
    stream = resolve_stream(config.stream, env, Path.cwd())
    signer = make_signer(config.signing_key, env)
    verifier = trusted_verifier(ns, config, env)
    store = open_store(config.require_store(), config.store_options())
    witness = open_witness(
        dataclasses.replace(spec, required=True), stream, config.policy, config.on_unlocked
    )
    if witness.warning:
        sys.stderr.write(f"tfaudit: warning: {witness.warning}\n")
    assert witness.store is not None  # a required witness is available or raised
    check = WitnessCheck(
        stream, read_listing(witness.store, stream, ns.parallelism), verifier=verifier
    )
    options = VerifyOptions(
        stream=stream,
        policy=config.policy,
        verifier=verifier,
        trusted_jwks=load_jwks(ns.jwks) if ns.jwks else None,
        parallelism=ns.parallelism,
    )
    try:
        result = verify_stream(store, options, check)
    except TfauditError:
        raise
    except Exception as exc:  # the listing failed: nothing could be verified
        raise VerifyError(f"listing stream {stream!r} in {store.uri}: {exc}") from None
    if not result.ok or check.facts is None or check.findings is None:
        sys.stderr.write("\n".join(text_lines(result)) + "\n")
        sys.stderr.write(
            f"tfaudit witness-sync: refused: stream {stream} does not verify, so nothing was "
            "written to the witness; fix or explain every error above first\n"
        )
        if ns.json:
            print_json({"ok": False, "written": [], "verify": to_json(result)})
        return errors.EXIT_VERIFY
    facts, witnessed = check.facts, check.findings.witnessed
    plan = backfill_plan(sorted(facts.present), witnessed)
    for seq in plan:
        witness.write(seq, facts.record_sha256[seq], signer)
    gaps = ranges(seq for seq in facts.present if seq not in witnessed and seq not in plan)
    wrote = f"{len(plan)} checkpoint(s), {describe_ranges(ranges(plan))}" if plan else "nothing"
    sys.stderr.write(
        f"tfaudit witness-sync: wrote {wrote} to {witness.uri} (stream {stream})"
        + (f"; gaps left unwitnessed: {describe_ranges(gaps)}" if gaps else "")
        + "\n"
    )
    if ns.json:
        print_json(
            {
                "ok": True,
                "witness": witness.uri,
                "written": [list(run) for run in ranges(plan)],
                "gaps": [list(run) for run in gaps],
                "verify": to_json(result),
            }
        )
    return 0
