"""``tfaudit recover``: ship spools that a killed, cancelled or failed run left behind.

Each spool is shipped by the same ``ship_spool`` that ``run`` uses, to the store, stream and
policy recorded in its ``spool.json`` (never to another). A spool that was still running is
shipped as ``status: interrupted``. Shipping is idempotent: a spool whose record already
landed is only given its receipt, never a second record.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tfaudit_ci import secondpass
from tfaudit_ci.config import Config
from tfaudit_ci.console import print_json
from tfaudit_ci.errors import TfauditError
from tfaudit_ci.identity import IDENTITY_ARTIFACT
from tfaudit_ci.locking import preflight
from tfaudit_ci.record import iso
from tfaudit_ci.ship import ship_spool
from tfaudit_ci.signing import make_signer
from tfaudit_ci.spool import (
    LOG_FILE,
    WITHHELD_LOG,
    default_work_dir,
    file_digests,
    merge_tails,
    pending_spools,
    settle,
    try_lock,
)
from tfaudit_ci.spoolstate import RECEIPT_FILE, SPOOL_FILE, Receipt, SpoolArtifact, SpoolState
from tfaudit_ci.stores import open_store
from tfaudit_ci.vocab import RunStatus
from tfaudit_ci.witness import open_witness


def _same_store(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def finish_interrupted(spool_dir: Path, spool: SpoolState, env: Mapping[str, str]) -> None:
    """Complete a spool whose run died before its spool was complete: the output up to the
    last checkpoint, through the second redaction pass (or withheld), as ``interrupted``."""
    log = spool_dir / LOG_FILE
    merge_tails(log)  # the output the killed run still held in memory
    if not log.exists() and not (spool_dir / WITHHELD_LOG).exists():
        log.touch()
    stamp = (log if log.exists() else spool_dir / SPOOL_FILE).stat().st_mtime
    passed = secondpass.apply(spool_dir, env, live=False)
    spool.record_pass(passed)
    spool.status = RunStatus.INTERRUPTED
    spool.finished_at = iso(dt.datetime.fromtimestamp(stamp, tz=dt.timezone.utc))
    spool.artifacts = []
    if not passed.log_withheld:
        spool.artifacts.append(SpoolArtifact.of("output.log", LOG_FILE, file_digests(log)))
    if (spool_dir / IDENTITY_ARTIFACT).is_file():
        spool.artifacts.append(
            SpoolArtifact.of(
                IDENTITY_ARTIFACT, IDENTITY_ARTIFACT, file_digests(spool_dir / IDENTITY_ARTIFACT)
            )
        )
    spool.phase = "complete"
    spool.save(spool_dir)


def recover_one(
    spool_dir: Path, spool: SpoolState, env: Mapping[str, str], signing_key: str | None = None
) -> Receipt:
    """Ship one spool where it belongs. The run's own signing key wins; a run configured
    without one is signed with ``signing_key`` (recover's own setting), if any."""
    store = open_store(spool.store, spool.store_options)
    checked = preflight(store, spool.policy, spool.on_unlocked)
    if checked.warning:
        sys.stderr.write(f"tfaudit: warning: {checked.warning}\n")
    witness = None
    if spool.witness is not None:
        witness = open_witness(spool.witness, spool.stream, spool.policy, spool.on_unlocked)
        if witness.warning:
            sys.stderr.write(f"tfaudit: warning: {witness.warning}\n")
    signer = make_signer(spool.signing_key or signing_key, env)
    if spool.phase == "running":
        finish_interrupted(spool_dir, spool, env)
    receipt = dataclasses.replace(
        ship_spool(store, spool, spool_dir, checked.decision, signer, witness), recovered=True
    )
    if receipt.witness_warning:
        sys.stderr.write(f"tfaudit: warning: {receipt.witness_warning}\n")
    settle(spool_dir)
    return receipt


def main_recover(
    config: Config, env: Mapping[str, str], *, as_json: bool, all_stores: bool = False
) -> int:
    work_dir = Path(config.work_dir) if config.work_dir else default_work_dir(env)
    results: list[dict[str, Any]] = []
    worst = 0
    for spool_dir in pending_spools(work_dir):
        lock = try_lock(spool_dir)
        if lock is None:
            sys.stderr.write(f"tfaudit: {spool_dir.name} is in use by another tfaudit; skipped\n")
            continue
        try:
            if (spool_dir / RECEIPT_FILE).exists():  # shipped while we waited for the listing
                continue
            spool = SpoolState.load(spool_dir)
            if config.store and not _same_store(spool.store, config.store) and not all_stores:
                sys.stderr.write(
                    f"tfaudit: {spool_dir.name} belongs to {spool.store}, not {config.store}; "
                    "skipped (pass --all-stores to ship every spool to its own store)\n"
                )
                results.append({"spool": str(spool_dir), "skipped": spool.store})
                continue
            receipt = recover_one(spool_dir, spool, env, config.signing_key)
        except TfauditError as exc:
            sys.stderr.write(
                f"tfaudit: recover {spool_dir.name}: {exc.diagnostics()}; "
                f"the spool is kept at {spool_dir}\n"
            )
            results.append({"spool": str(spool_dir), "error": exc.diagnostics()})
            worst = max(worst, exc.exit_code)
            continue
        finally:
            os.close(lock)
        sys.stderr.write(
            f"tfaudit: recovered {spool_dir.name} as seq {receipt.seq} ({receipt.record_uri})\n"
        )
        results.append({"spool": str(spool_dir), **dataclasses.asdict(receipt)})
    if not results:
        sys.stderr.write(f"tfaudit: nothing to recover under {work_dir}\n")
    if as_json:
        print_json({"recovered": results})
    return worst
