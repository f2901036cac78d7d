"""Seed long streams straight into the in-process moto store (see ``bench/fast_moto.py``).

Records are built by the product's own ``build_record`` and ``sign_record`` (no signature key),
hash-chained exactly as ``tfaudit run`` chains them, so ``tfaudit verify`` can check them and
``tfaudit run`` can append to them. With ``artifacts=True`` each record also gets an
``output.log`` and a ``plan.json`` version, locked like real uploads.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

from bench.fast_moto import seed_object
from tfaudit_ci.canonical import canonical_bytes, sha256_hex
from tfaudit_ci.record import build_record, chain_key, iso, run_key
from tfaudit_ci.signing import NoSigner, sign_record

RETENTION_DAYS = 400  # comfortably above the default policy's 365
_LOG_LINE = b"null_resource.item[%d]: Refreshing state... [id=%019d]\n"


def _log(seq: int) -> bytes:
    return b"".join(_LOG_LINE % (i, seq * 1000 + i) for i in range(40))


def _plan(seq: int) -> bytes:
    changes = [{"address": f"null_resource.item[{i}]", "actions": ["create"]} for i in range(8)]
    return canonical_bytes({"format_version": "1.2", "seq": seq, "resource_changes": changes})


def seed_stream(
    bucket: str,
    prefix: str,
    stream: str,
    count: int,
    *,
    artifacts: bool,
    step: dt.timedelta = dt.timedelta(minutes=1),
    fields: Callable[[int], dict[str, Any]] | None = None,
) -> float:
    """Write records 0..count-1 of ``stream``, ``step`` apart, the last one a ``step`` ago;
    ``fields(seq)`` may replace any ``build_record`` argument (command, ci, plan, status...).
    Returns the seconds it took."""
    started = time.perf_counter()
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    retain = now + dt.timedelta(days=RETENTION_DAYS)
    retain_text = iso(retain)
    signer = NoSigner()
    prev: dict[str, Any] | None = None
    prev_record: dict[str, Any] | None = None
    base = f"{prefix}/" if prefix else ""
    for seq in range(count):
        moment = now - step * (count - seq)
        folder = f"{moment.strftime('%Y%m%dT%H%M%SZ')}-seed-1-{seq:08x}"
        entries: list[dict[str, Any]] = []
        if artifacts:
            for name, data in (("output.log", _log(seq)), ("plan.json", _plan(seq))):
                key = run_key(stream, folder, name)
                stored = seed_object(bucket, base + key, data, retain_until=retain_text)
                entries.append(
                    {
                        "name": name,
                        "key": key,
                        "version_id": stored.version_id,
                        "sha256": stored.sha256,
                        "size": stored.size,
                    }
                )
        chosen: dict[str, Any] = dict(
            command=["terraform", "plan", "-input=false"],
            cwd="/builds/acme/infra",
            tool={"name": "terraform", "binary": "terraform", "version": "1.11.4"},
            workspace="default",
            status="succeeded",
            exit_code=0,
            started_at=moment,
            finished_at=moment + dt.timedelta(seconds=20),
            ci={"provider": "generic", "repository": "acme/infra", "run_id": str(seq)},
            artifacts=entries,
            plan=None,
            redactions={},
            retention={"mode": "COMPLIANCE", "retain_until": retain_text, "store_worm": True},
        )
        chosen.update(fields(seq) if fields is not None else {})
        unsigned = build_record(stream=stream, seq=seq, prev=prev, run_folder=folder, **chosen)
        data = sign_record(unsigned, prev_record, signer)
        seed_object(bucket, base + chain_key(stream, seq), data, retain_until=retain_text)
        prev = {"seq": seq, "sha256": sha256_hex(data)}
        prev_record = {**unsigned, "signature": signer.sign(b"")}
    return time.perf_counter() - started
