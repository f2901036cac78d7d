"""``tfaudit check``: preflight only, with the same lock decision ``run`` makes."""

from __future__ import annotations

import sys

from tfaudit_ci import errors
from tfaudit_ci.config import Config
from tfaudit_ci.console import print_json
from tfaudit_ci.errors import PreflightError
from tfaudit_ci.locking import enforce, lock_decision
from tfaudit_ci.stores import open_store


def main_check(config: Config, *, as_json: bool) -> int:
    store = open_store(config.require_store(), config.store_options())
    report = store.preflight(config.policy)
    decision = lock_decision(store, report, config.policy)
    refused: PreflightError | None = None
    warning: str | None = None
    try:
        warning = enforce(decision, report, config.on_unlocked)
    except PreflightError as exc:
        refused = exc
    if as_json:
        print_json(
            {
                "store": report.store,
                "ok": refused is None,
                "worm": decision.protected,
                "lock_checked": decision.readback,
                "retention_days": decision.retention_days,
                "checks": [check.to_dict() for check in report.checks],
            }
        )
    for check in report.checks:
        sys.stderr.write(
            f"tfaudit: {'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}\n"
        )
    if refused is not None:
        sys.stderr.write(f"tfaudit: error: {refused.diagnostics()}\n")
        return errors.EXIT_PREFLIGHT
    if warning:
        sys.stderr.write(f"tfaudit: warning: {warning}\n")
    else:
        sys.stderr.write(f"tfaudit: {store.uri} is locked as policy requires\n")
    return 0
