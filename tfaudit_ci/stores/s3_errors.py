"""Turn botocore exceptions into one-line messages that say how to fix the problem."""

from __future__ import annotations

import datetime as dt
import email.utils
from typing import Any

# S3 refuses requests more than 15 minutes off; warn well before that.
CLOCK_SKEW_LIMIT = dt.timedelta(minutes=5)

_FIXES: dict[str, str] = {
    "NoSuchBucket": "create the bucket with Object Lock enabled, or fix the bucket name",
    "AccessDenied": "grant the writer role the permissions listed in docs/stores.md (IAM)",
    "AllAccessDisabled": "grant the writer role the permissions listed in docs/stores.md",
    "InvalidAccessKeyId": "the AWS access key is not known to this endpoint: check credentials",
    "SignatureDoesNotMatch": "the AWS secret key is wrong: check credentials",
    "AuthorizationHeaderMalformed": "the region is wrong: set --region or AWS_REGION to the "
    "bucket's region",
    "PermanentRedirect": "the bucket is in another region: set --region to the bucket's region",
    "IllegalLocationConstraintException": "set --region to the bucket's region",
    "RequestTimeTooSkewed": "the machine's clock is off: sync it (NTP) and retry",
    "ExpiredToken": "the session credentials expired: refresh them (OIDC role session)",
    "InvalidToken": "the session token is invalid: refresh the credentials",
    "ObjectLockConfigurationNotFoundError": "enable Object Lock on the bucket (it can only be "
    "turned on at creation time on older buckets)",
    "InvalidRequest": "check the bucket supports Object Lock and the request parameters",
    "SlowDown": "the store throttled every retry: retry later or raise --max-attempts",
    "ServiceUnavailable": "the store is unavailable: retry later",
    "InternalError": "the store failed: retry later",
    # HEAD answers carry no error document: only the status code is known.
    "403": "grant the writer role the permissions listed in docs/stores.md (IAM)",
    "500": "the store failed: retry later",
    "503": "the store is unavailable or throttling: retry later or raise --max-attempts",
}


def error_code(exc: BaseException) -> str | None:
    response: Any = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if code:
            return str(code)
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status:
            return str(status)
    return None


def http_status(exc: BaseException) -> int | None:
    response: Any = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(status, int):
            return status
    return None


def clock_skew(exc: BaseException, now: dt.datetime | None = None) -> dt.timedelta | None:
    """How far this machine's clock is from the store's ``Date``, if beyond the limit.

    A skewed request to HeadBucket/HeadObject fails with a bare 403 (no error code), which
    would otherwise read as a permissions problem.
    """
    response: Any = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    try:
        server = email.utils.parsedate_to_datetime(str(headers.get("date", "")))
    except (TypeError, ValueError):
        return None
    if server.tzinfo is None:
        return None
    skew = (now or dt.datetime.now(dt.timezone.utc)) - server
    return skew if abs(skew) > CLOCK_SKEW_LIMIT else None


def describe(exc: BaseException, action: str) -> tuple[str, str]:
    """(summary, fix) for an exception raised by boto3 during ``action``."""
    from botocore import exceptions as bx

    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return (
            f"{action}: no AWS credentials found",
            "configure credentials (OIDC role, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "or AWS_PROFILE)",
        )
    if isinstance(exc, bx.EndpointConnectionError | bx.ConnectionClosedError):
        return (
            f"{action}: cannot reach the store ({exc})",
            "check the endpoint URL and the network, then retry",
        )
    if isinstance(exc, bx.ReadTimeoutError | bx.ConnectTimeoutError):
        return (
            f"{action}: the store timed out ({exc})",
            "retry; raise --read-timeout if it persists",
        )
    if isinstance(exc, bx.ClientError) and http_status(exc) == 403:
        skew = clock_skew(exc)
        if skew is not None:
            minutes = round(skew.total_seconds() / 60)
            return (
                f"{action}: RequestTimeTooSkewed (this machine's clock is {abs(minutes)} minutes "
                f"{'ahead of' if minutes > 0 else 'behind'} the store's)",
                _FIXES["RequestTimeTooSkewed"],
            )
    if isinstance(exc, bx.ClientError):
        code = error_code(exc) or "error"
        message = exc.response.get("Error", {}).get("Message") or ""
        summary = f"{action}: {code}" + (f" ({message})" if message and message != code else "")
        return summary, _FIXES.get(code, "see the store's error code above")
    if isinstance(exc, bx.BotoCoreError):
        return f"{action}: {exc}", "check the store configuration"
    return f"{action}: {type(exc).__name__}: {exc}", "retry with -v for details"
