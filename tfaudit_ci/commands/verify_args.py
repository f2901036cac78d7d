"""Flags of ``tfaudit verify`` (kept apart so the parser does not import the verifier)."""

from __future__ import annotations

import argparse


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since", metavar="TIME", help="from the chain position where records start at TIME (ISO)"
    )
    parser.add_argument(
        "--until", metavar="TIME", help="to the chain position where records start at TIME (ISO)"
    )
    parser.add_argument("--key", metavar="SPEC", help="trusted HMAC key: hmac:env:VAR")
    parser.add_argument(
        "--public-key", metavar="FILE", help="trusted Ed25519 or EC P-256 public key (PEM)"
    )
    parser.add_argument(
        "--kms-key", metavar="ID", help="trusted AWS KMS key id or ARN (public key fetched once)"
    )
    parser.add_argument("--jwks", metavar="FILE", help="trusted JWKS for identity evidence")
    parser.add_argument(
        "--min-remaining-days",
        metavar="N",
        type=int,
        default=0,
        help="fail objects whose retention ends within N days",
    )
    parser.add_argument(
        "--max-age", metavar="DURATION", help="fail if the newest record is older (2d, 12h, 30m)"
    )
    parser.add_argument(
        "--max-overlap",
        metavar="DURATION",
        default="6h",
        help="how long concurrent runs may overlap (default 6h): a record may start this much "
        "before its predecessor, and --since/--until windows widen by it",
    )
    parser.add_argument(
        "--parallelism", metavar="N", type=int, default=16, help="concurrent reads (default 16)"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    # Issue 17 (docs/verify.md, "Incremental verify" and "Speed").
    parser.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="verify only what follows the checkpoint an earlier verify wrote to FILE, then "
        "advance it (a missing FILE: verify the whole stream, then write it)",
    )
    parser.add_argument(
        "--deep",
        action="store_true",
        help="hash every artifact's bytes, even where the store keeps a SHA-256 checksum",
    )
    # Issue 16 (docs/reading.md, "Reviewed plan = applied plan").
    parser.add_argument(
        "--require-reviewed-plan",
        action="store_true",
        help="applies that did not apply a plan recorded earlier by a successful plan run of "
        "the stream are errors (unreviewed-plan)",
    )
    add_plan_stream_argument(parser)
    # Issue 14 (docs/witness.md); --witness itself is a config key, like --store.
    parser.add_argument(
        "--require-witness",
        action="store_true",
        help="records without a checkpoint in the witness are errors, not warnings",
    )
    parser.add_argument(
        "--head-from",
        metavar="FILE",
        action="append",
        help="(seq, sha256) heads seen elsewhere, e.g. grepped from CI job logs (repeatable)",
    )


def add_plan_stream_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plan-stream",
        metavar="NAME",
        action="append",
        default=[],
        help="also look for reviewed plans in this stream (repeatable)",
    )
