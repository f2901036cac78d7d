"""``tfaudit check``: preflight only."""

from __future__ import annotations

import sys

from tfaudit_ci import errors
from tfaudit_ci.config import Config
from tfaudit_ci.stores import open_store


def main_check(config: Config, *, as_json: bool) -> int:
    store = open_store(config.require_store(), config.store_options())
    report = store.preflight(config.policy)
    if as_json:
        from tfaudit_ci.cli import print_json

        print_json(
            {
                "store": report.store,
                "worm": report.worm,
                "ok": report.ok,
                "checks": [{"name": n, "ok": ok, "detail": d} for n, ok, d in report.checks],
            }
        )
    for name, ok, detail in report.checks:
        sys.stderr.write(
            f"tfaudit: {'ok  ' if ok else 'FAIL'} {name}" + ("" if ok else f": {detail}") + "\n"
        )
    if report.ok:
        sys.stderr.write(f"tfaudit: {store.uri} is locked as policy requires\n")
        return 0
    if config.on_unlocked == "warn":
        sys.stderr.write(f"tfaudit: warning: {store.uri} is not WORM (--on-unlocked warn)\n")
        return 0
    sys.stderr.write(f"tfaudit: error: {store.uri} is not locked as policy requires\n")
    return errors.EXIT_PREFLIGHT
