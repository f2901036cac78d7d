"""Offline checks of a record's identity evidence (pure: bytes and dicts in, problems out).

The token, not the stored ``claims`` copy, is the evidence: claims are decoded from the JWT,
whose signature must verify with the JWKS stored next to it and, when the auditor gives one,
with a trusted JWKS (``--jwks``); a forger controls the stored JWKS, not the trusted one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from typing import Any

from tfaudit_ci import jwt
from tfaudit_ci.canonical import JsonRejected, parse_strict
from tfaudit_ci.identity import IDENTITY_SCHEMA, audiences, is_sts_audience
from tfaudit_ci.record import iso, parse_iso

# Clock differences between the runner, the issuer and the recorded timestamps.
SKEW = dt.timedelta(minutes=5)

# record ``ci`` field -> the claim that must equal it, per provider
CLAIMS_BY_PROVIDER: dict[str, dict[str, str]] = {
    "github": {
        "repository": "repository",
        "commit": "sha",
        "run_id": "run_id",
        "attempt": "run_attempt",
    },
    # tfaudit records GitLab's pipeline id as run_id and the job id as attempt.
    "gitlab": {
        "repository": "project_path",
        "commit": "sha",
        "run_id": "pipeline_id",
        "attempt": "job_id",
    },
}


def _moment(value: Any) -> dt.datetime | None:
    """A NumericDate as a time; None when it is not a number or no date (e.g. ``1e300``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return dt.datetime.fromtimestamp(value, tz=dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def _record_time(record: Mapping[str, Any], field: str) -> dt.datetime | None:
    try:
        return parse_iso(str(record.get(field)))
    except ValueError:
        return None


def claim_problems(
    claims: Mapping[str, Any], record: Mapping[str, Any], provider: str
) -> list[str]:
    """The record's who/what must be what the issuer attested."""
    mapping = CLAIMS_BY_PROVIDER.get(provider)
    if mapping is None:
        return [f"identity provider {provider!r} is unknown; its claims cannot be matched"]
    ci = record.get("ci") if isinstance(record.get("ci"), Mapping) else {}
    assert isinstance(ci, Mapping)
    problems = []
    for field, claim in mapping.items():
        recorded = ci.get(field)
        attested = claims.get(claim)
        if attested is None:
            problems.append(f"the token has no {claim!r} claim to attest ci.{field}")
        elif recorded is None or str(recorded) != str(attested):
            problems.append(f"ci.{field} is {recorded!r} but the token says {claim}={attested!r}")
    return problems


def time_problems(claims: Mapping[str, Any], record: Mapping[str, Any], provider: str) -> list[str]:
    """The token must have been issued for this run, not replayed from an older one."""
    started = _record_time(record, "started_at")
    finished = _record_time(record, "finished_at")
    issued = _moment(claims.get("iat"))
    expires = _moment(claims.get("exp"))
    if started is None or finished is None:
        return ["the record's started_at/finished_at are unreadable: the window cannot be checked"]
    if issued is None or expires is None:
        return ["the token has no iat/exp that is a date (missing, not a number, or out of range)"]
    problems = []
    if expires <= issued:
        problems.append(f"the token expired at issue (exp {iso(expires)} <= iat {iso(issued)})")
    if expires < started - SKEW:
        problems.append(
            f"the token had expired ({iso(expires)}) before the run started ({iso(started)})"
        )
    # GitHub tokens are minted when tfaudit asks, at the start of the run; GitLab mints
    # id_tokens when the job starts, possibly long before this step.
    earliest = started - SKEW if provider == "github" else None
    if issued > finished + SKEW or (earliest is not None and issued < earliest):
        problems.append(
            f"the token was issued at {iso(issued)}, outside the run "
            f"({iso(started)} .. {iso(finished)})"
        )
    not_before = _moment(claims.get("nbf"))
    if not_before is not None and not_before > finished + SKEW:
        problems.append(f"the token was not valid before {iso(not_before)}, after the run")
    return problems


def identity_problems(
    record: Mapping[str, Any],
    evidence_bytes: bytes | None,
    trusted_jwks: Mapping[str, Any] | None,
) -> list[str]:
    """Every problem with the record's identity evidence (empty when it all holds)."""
    summary = record.get("identity")
    if not isinstance(summary, Mapping):
        return []
    if evidence_bytes is None:
        return ["the identity evidence artifact could not be read"]
    try:
        document = parse_strict(evidence_bytes)
    except JsonRejected as exc:
        return [f"identity.json is not JSON: {exc}"]
    if not isinstance(document, dict) or document.get("schema") != IDENTITY_SCHEMA:
        return [f"identity.json is not a {IDENTITY_SCHEMA} document"]
    token = document.get("jwt")
    if not isinstance(token, str):
        return ["identity.json holds no JWT"]
    if hashlib.sha256(token.encode("ascii", "replace")).hexdigest() != summary.get("jwt_sha256"):
        return ["the stored JWT is not the one the record pins (jwt_sha256 differs)"]
    try:
        parsed = jwt.decode(token)
    except jwt.JwtError as exc:
        return [f"the stored JWT is malformed: {exc}"]

    problems: list[str] = []
    stored_jwks = document.get("jwks")
    if isinstance(stored_jwks, Mapping):
        failed = jwt.verify_signature(parsed, stored_jwks)
        if failed:
            problems.append(f"stored JWKS: {failed}")
    elif trusted_jwks is None:
        problems.append("no JWKS was stored with the token; pass --jwks to check it")
    if trusted_jwks is not None:
        failed = jwt.verify_signature(parsed, trusted_jwks)
        if failed:
            problems.append(f"trusted JWKS (--jwks): {failed}")

    claims = parsed.claims
    found_audiences = audiences(claims)
    if any(is_sts_audience(a) for a in found_audiences):
        problems.append(f"the stored token has an AWS STS audience {found_audiences}")
    elif summary.get("audience") not in found_audiences:
        recorded = summary.get("audience")
        problems.append(f"the token's audience {found_audiences} is not the recorded {recorded!r}")
    if claims.get("iss") != summary.get("issuer"):
        problems.append(f"the token's issuer {claims.get('iss')!r} is not the recorded one")
    if claims.get("sub") != summary.get("subject"):
        problems.append(f"the token's subject {claims.get('sub')!r} is not the recorded one")
    provider = str(summary.get("provider"))
    problems.extend(claim_problems(claims, record, provider))
    problems.extend(time_problems(claims, record, provider))
    return problems
