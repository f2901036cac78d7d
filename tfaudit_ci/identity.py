"""CI identity evidence: an OIDC token minted for the job, stored with its issuer's JWKS.

GitHub mints a token on request (``ACTIONS_ID_TOKEN_REQUEST_URL`` + ``..._TOKEN``, given to
jobs with ``permissions: id-token: write``); GitLab mints one per ``id_tokens:`` entry into a
variable whose name is configured (``gitlab-id-token-var``). The token's audience must be the
configured one (``oidc-audience``, default ``tfaudit``): a token for any other audience could
be replayed against that service, and a token for AWS STS would unlock AWS roles, so such
tokens are never stored. The evidence (claims, raw JWT, JWKS) becomes the ``identity.json``
artifact; the record's ``identity`` field summarises it and pins its hash.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tfaudit_ci.record import iso, utc_now

IDENTITY_ARTIFACT = "identity.json"
IDENTITY_SCHEMA = "tfaudit.identity/v1"
DEFAULT_AUDIENCE = "tfaudit"
TIMEOUT = (3.0, 10.0)  # (connect, read) seconds: the run must not hang on the issuer
MAX_RESPONSE = 1 << 20
_STS_AUDIENCE = re.compile(r"sts(\.[a-z0-9-]+)?\.amazonaws\.com(\.cn)?", re.IGNORECASE)


class IdentityUnavailable(Exception):
    """No evidence can be stored; ``str(exc)`` is the warning to print."""


@dataclass
class Evidence:
    summary: dict[str, Any]  # the record's ``identity`` field
    document: dict[str, Any]  # identity.json
    warnings: list[str]


def audiences(claims: Mapping[str, Any]) -> list[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list):
        return [str(a) for a in aud]
    return []


def is_sts_audience(audience: str) -> bool:
    return _STS_AUDIENCE.fullmatch(audience.strip()) is not None


def audience_problem(claims: Mapping[str, Any], expected: str) -> str | None:
    """Why a token must not be stored, or None."""
    found = audiences(claims)
    if any(is_sts_audience(a) for a in found):
        return (
            f"the OIDC token's audience {found} is AWS STS: storing it would let anyone "
            f"who reads the bucket assume your AWS roles; request audience {expected!r}"
        )
    if found != [expected]:
        return f"the OIDC token's audience is {found}, not exactly [{expected!r}]"
    return None


def _get_json(session: Any, url: str, headers: Mapping[str, str] | None = None) -> Any:
    import requests

    try:
        response = session.get(url, headers=dict(headers or {}), timeout=TIMEOUT, stream=True)
        body = response.raw.read(MAX_RESPONSE + 1, decode_content=True)
    except requests.RequestException as exc:
        raise IdentityUnavailable(
            f"cannot reach {url.split('?')[0]}: {type(exc).__name__}"
        ) from None
    if response.status_code != 200:
        raise IdentityUnavailable(f"{url.split('?')[0]} answered HTTP {response.status_code}")
    if len(body) > MAX_RESPONSE:
        raise IdentityUnavailable(f"{url.split('?')[0]} sent more than {MAX_RESPONSE} bytes")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise IdentityUnavailable(f"{url.split('?')[0]} did not answer JSON") from None


def obtain_token(
    env: Mapping[str, str], audience: str, gitlab_var: str | None, session: Any
) -> tuple[str, str] | None:
    """(provider, raw JWT), or None when this job cannot mint a token."""
    url = env.get("ACTIONS_ID_TOKEN_REQUEST_URL")
    request_token = env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
    if url and request_token:
        joiner = "&" if "?" in url else "?"
        answer = _get_json(
            session,
            f"{url}{joiner}audience={quote(audience, safe='')}",
            {"Authorization": f"Bearer {request_token}", "Accept": "application/json"},
        )
        value = answer.get("value") if isinstance(answer, dict) else None
        if not isinstance(value, str) or not value:
            raise IdentityUnavailable("the GitHub token endpoint returned no token value")
        return "github", value
    if gitlab_var:
        value = env.get(gitlab_var)
        if not value:
            raise IdentityUnavailable(
                f"{gitlab_var} is not set: add it under the job's id_tokens: with aud: {audience}"
            )
        return "gitlab", value
    return None


def fetch_jwks(issuer: str, session: Any) -> tuple[str, dict[str, Any]]:
    """(jwks_uri, JWKS) from the issuer's OpenID discovery document."""
    config = _get_json(session, issuer.rstrip("/") + "/.well-known/openid-configuration")
    jwks_uri = config.get("jwks_uri") if isinstance(config, dict) else None
    if not isinstance(jwks_uri, str) or not jwks_uri:
        raise IdentityUnavailable(f"{issuer} publishes no jwks_uri")
    jwks = _get_json(session, jwks_uri)
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise IdentityUnavailable(f"{jwks_uri} is not a JWKS")
    return jwks_uri, jwks


def build_evidence(provider: str, token: str, audience: str, session: Any) -> Evidence:
    from tfaudit_ci import jwt  # PyJWT and cryptography: only when there is a token

    try:
        parsed = jwt.decode(token)
    except jwt.JwtError as exc:
        raise IdentityUnavailable(f"the {provider} OIDC token is malformed: {exc}") from None
    refused = audience_problem(parsed.claims, audience)
    if refused:
        raise IdentityUnavailable(refused)
    issuer = parsed.claims.get("iss")
    if not isinstance(issuer, str) or not issuer:
        raise IdentityUnavailable("the OIDC token names no issuer")
    warnings: list[str] = []
    jwks_uri: str | None = None
    jwks: dict[str, Any] | None = None
    try:
        jwks_uri, jwks = fetch_jwks(issuer, session)
    except IdentityUnavailable as exc:
        # The token alone is still evidence: an auditor can check it with a trusted JWKS.
        warnings.append(f"identity evidence stored without the issuer's JWKS: {exc}")
    if jwks is not None:
        problem = jwt.verify_signature(parsed, jwks)
        if problem:
            warnings.append(f"the OIDC token does not verify with its issuer's JWKS: {problem}")
    jwt_sha256 = hashlib.sha256(token.encode("ascii", "replace")).hexdigest()
    claims = parsed.claims
    summary = {
        "artifact": IDENTITY_ARTIFACT,
        "provider": provider,
        "issuer": issuer,
        "subject": claims.get("sub"),
        "audience": audience,
        "issued_at": claims.get("iat"),
        "expires_at": claims.get("exp"),
        "kid": parsed.header.get("kid"),
        "alg": parsed.header.get("alg"),
        "jwt_sha256": jwt_sha256,
    }
    document = {
        "schema": IDENTITY_SCHEMA,
        "provider": provider,
        "audience": audience,
        "issuer": issuer,
        "claims": claims,
        "header": parsed.header,
        "jwt": token,
        "jwt_sha256": jwt_sha256,
        "jwks_uri": jwks_uri,
        "jwks": jwks,
        "fetched_at": iso(utc_now()),
    }
    return Evidence(summary, document, warnings)


def collect_identity(
    env: Mapping[str, str],
    *,
    audience: str,
    gitlab_var: str | None,
    session: Any = None,
) -> Evidence | None:
    """Evidence for this job, or None when it cannot mint tokens. Raises IdentityUnavailable."""
    github = env.get("ACTIONS_ID_TOKEN_REQUEST_URL") and env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
    if not github and not gitlab_var:
        return None  # the common case outside OIDC-enabled jobs: no network, no imports
    import requests

    http = session or requests.Session()
    try:
        obtained = obtain_token(env, audience, gitlab_var, http)
        if obtained is None:
            return None
        return build_evidence(obtained[0], obtained[1], audience, http)
    finally:
        if session is None:
            http.close()


def write_evidence(evidence: Evidence, spool_dir: Path) -> Path:
    path = spool_dir / IDENTITY_ARTIFACT
    path.write_text(json.dumps(evidence.document, indent=2, sort_keys=True) + "\n", "utf-8")
    return path


def identity_for_run(
    env: Mapping[str, str],
    *,
    audience: str,
    gitlab_var: str | None,
    spool_dir: Path,
    warn: Any,
) -> tuple[dict[str, Any] | None, Path | None]:
    """(the record's ``identity`` field, identity.json in the spool) for ``tfaudit run``.

    Never fails the run: missing evidence is recorded as ``{"unavailable": why}``.
    """
    try:
        evidence = collect_identity(env, audience=audience, gitlab_var=gitlab_var)
    except IdentityUnavailable as exc:
        warn(f"tfaudit: warning: no CI identity evidence: {exc}\n")
        return {"unavailable": str(exc)}, None
    if evidence is None:
        return None, None
    for warning in evidence.warnings:
        warn(f"tfaudit: warning: {warning}\n")
    return evidence.summary, write_evidence(evidence, spool_dir)
