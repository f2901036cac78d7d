"""``tfaudit recover``: ship spools that a killed or crashed run left behind.

A spool without a receipt is shipped as ``status: interrupted`` (or the status the run had
reached). Shipping is idempotent: a spool whose run folder already has a record near the
head of its stream is only given its receipt, never a second record.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tfaudit_ci import errors, secondpass
from tfaudit_ci.chain import Chain
from tfaudit_ci.commands.run import default_work_dir
from tfaudit_ci.config import Config
from tfaudit_ci.errors import TfauditError
from tfaudit_ci.identity import IDENTITY_ARTIFACT
from tfaudit_ci.record import parse_iso, utc_now
from tfaudit_ci.ship import Artifact, ship_record
from tfaudit_ci.signing import make_signer
from tfaudit_ci.spool import (
    LOG_FILE,
    PLAN_FILE,
    RECEIPT_FILE,
    STATE_FILE,
    file_digests,
    merge_tails,
    read_json,
    try_lock,
    write_json,
)
from tfaudit_ci.stores import open_store
from tfaudit_ci.stores.base import Store

# How far back from the head to look for a record this spool already produced.
DUPLICATE_LOOKBACK = 32


def pending_spools(work_dir: Path) -> list[Path]:
    root = work_dir / "spool"
    if not root.is_dir():
        return []
    return sorted(
        path
        for path in root.iterdir()
        if (path / STATE_FILE).is_file() and not (path / RECEIPT_FILE).exists()
    )


def already_recorded(store: Store, stream: str, run_folder: str) -> dict[str, Any] | None:
    chain = Chain(store, stream)
    head = chain.find_head()
    for seq in range(head, max(-1, head - DUPLICATE_LOOKBACK), -1):
        slot = chain.read_slot(seq)
        if slot is not None and slot.record().get("run_folder") == run_folder:
            return {
                "seq": seq,
                "record_sha256": slot.sha256,
                "version_id": slot.version_id,
                "record_key": chain.key(seq),
            }
    return None


def recover_one(spool: Path, config: Config, env: Mapping[str, str]) -> dict[str, Any]:
    state = read_json(spool / STATE_FILE)
    if state is None:
        raise errors.UploadError(f"{spool / STATE_FILE} is unreadable", fix="inspect it by hand")
    store = open_store(config.store or str(state["store"]), config.store_options())
    report = store.preflight(config.policy)
    check_lock = report.worm and report.ok
    if not report.ok and config.on_unlocked != "warn":
        raise errors.PreflightError(
            f"{store.uri} is not locked as policy requires: {'; '.join(report.problems())}",
            fix="fix the bucket, or pass --on-unlocked warn",
        )
    stream = str(state["stream"])
    run_folder = str(state["run_folder"])
    existing = already_recorded(store, stream, run_folder)
    if existing is None:
        merge_tails(spool / LOG_FILE)  # the output a killed run still held in memory
        passed = secondpass.apply(spool, env, live=False)  # or the log is withheld (issue 13)
        artifacts = [
            Artifact(name, spool / name, file_digests(spool / name))
            for name in (LOG_FILE, PLAN_FILE, IDENTITY_ARTIFACT)
            if (spool / name).is_file()
        ]
        status = state.get("status") or "interrupted"
        fields: dict[str, Any] = {
            "command": state.get("command") or [],
            "cwd": state.get("cwd") or "",
            "tool": state.get("tool") or {"name": None, "binary": None, "version": None},
            "workspace": state.get("workspace"),
            "status": "interrupted" if status == "running" else status,
            "exit_code": state.get("exit_code"),
            "started_at": parse_iso(str(state["started_at"])),
            "finished_at": parse_iso(str(state["finished_at"]))
            if state.get("finished_at")
            else utc_now(),
            "ci": state.get("ci") or {},
            "plan": None,
            "redactions": {},
            "identity": state.get("identity"),
            **passed.record_fields(),
        }
        options = config.store_options()
        shipment = ship_record(
            store,
            stream,
            run_folder,
            artifacts,
            fields,
            policy=config.policy,
            check_lock=check_lock,
            signer=make_signer(config.signing_key, env),
            part_size=options.multipart_chunksize,
            multipart_threshold=options.multipart_threshold,
        )
        existing = {
            "seq": shipment.seq,
            "record_sha256": shipment.record_sha256,
            "version_id": shipment.record_version_id,
            "record_key": shipment.record_key,
        }
    receipt = {
        **existing,
        "record_uri": f"{store.uri.rstrip('/')}/{existing['record_key']}",
        "recovered": True,
    }
    write_json(spool / RECEIPT_FILE, receipt)
    return receipt


def main_recover(config: Config, env: Mapping[str, str], cwd: Path, *, as_json: bool) -> int:
    work_dir = Path(config.work_dir) if config.work_dir else default_work_dir(env, cwd)
    results: list[dict[str, Any]] = []
    worst = 0
    for spool in pending_spools(work_dir):
        lock = try_lock(spool)
        if lock is None:
            sys.stderr.write(f"tfaudit: {spool.name} is in use by another tfaudit; skipped\n")
            continue
        if (spool / RECEIPT_FILE).exists():  # shipped while we waited for the listing
            os.close(lock)
            continue
        try:
            receipt = recover_one(spool, config, env)
        except TfauditError as exc:
            sys.stderr.write(
                f"tfaudit: recover {spool.name}: {exc.diagnostics()}; "
                f"the spool is kept at {spool}\n"
            )
            results.append({"spool": str(spool), "error": exc.diagnostics()})
            worst = max(worst, exc.exit_code)
            continue
        finally:
            os.close(lock)
        sys.stderr.write(
            f"tfaudit: recovered {spool.name} as seq {receipt['seq']} ({receipt['record_uri']})\n"
        )
        results.append({"spool": str(spool), **receipt})
    if not results:
        sys.stderr.write(f"tfaudit: nothing to recover under {work_dir}\n")
    if as_json:
        from tfaudit_ci.cli import print_json

        print_json({"recovered": results})
    return worst
