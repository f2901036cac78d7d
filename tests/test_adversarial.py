"""Verify fails closed (issue 12): one scenario per attack, on ``file://`` and on the local S3
server (moto; Ceph RGW too with ``--s3-server both``), by an attacker who holds only what a
CI job holds: create-only writes, no delete, no overwrite, no signing key.

Each chain-slot attack shows three things:

* ``tfaudit verify`` (in-process) names the attack with the right problem code;
* ``tfaudit recover`` (shipping the spool of a SIGKILLed run) and ``tfaudit run`` still ship
  the next record, exit 0, and list the junk they skipped in ``burned``;
* ``tfaudit verify --json`` (the real CLI) exits 24 with one complete JSON document that
  reports every burned slot, and counts only the records that hold as valid.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devkit.servers import S3Server, make_lock_bucket, unique_bucket
from tests.support.scenarios import (
    Scenario,
    forge,
    slot_record,
    slot_sha256,
    write_raw,
)
from tests.support.tfaudit_proc import result_json, tfaudit
from tfaudit_ci.canonical import canonical_bytes
from tfaudit_ci.chain import Chain
from tfaudit_ci.record import chain_key, iso, run_key, utc_now
from tfaudit_ci.signing import HmacSigner, HmacVerifier, NoSigner, hmac_key_id
from tfaudit_ci.stores import StoreOptions, open_store
from tfaudit_ci.stores.base import Store
from tfaudit_ci.stores.file import FileStore
from tfaudit_ci.verify.model import VerifyOptions, VerifyResult
from tfaudit_ci.verify.walk import verify_stream

STREAM = "acme/infra"
KEY = b"trusted-hmac-key"
SIGNER = HmacSigner(KEY, hmac_key_id(KEY))
REPORT_KEYS = {
    "ok",
    "store",
    "stream",
    "head",
    "first_seq",
    "last_seq",
    "records",
    "artifacts",
    "requests",
    "errors",
    "warnings",
    "problems",
    "notes",
    "summary",
}


@dataclass
class Target:
    """A stream under attack, and the real CLI pointed at it."""

    kind: str
    store: Store
    flags: list[str]  # --store URL and what else this store needs
    env: dict[str, str]
    cwd: Path

    def cli(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return tfaudit(list(args), env=self.env, cwd=self.cwd, timeout=120)

    def write(self, seq: int, data: bytes) -> None:
        write_raw(self.store, chain_key(STREAM, seq), data)

    def verify(self, **kwargs: Any) -> VerifyResult:
        kwargs.setdefault("verifier", HmacVerifier(KEY))
        return verify_stream(self.store, VerifyOptions(stream=STREAM, **kwargs))


@pytest.fixture(params=["file", "s3"])
def target(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    s3_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
) -> Target:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path / "home"),
        "K": KEY.decode(),
        "TFAUDIT_WORK_DIR": str(tmp_path / "spools"),
    }
    store: Store
    if request.param == "file":
        store = FileStore(tmp_path / "store")
        flags = ["--store", store.uri, "--on-unlocked", "warn"]
    else:
        for name, value in s3_server.env().items():
            monkeypatch.setenv(name, value)
        bucket = unique_bucket()
        make_lock_bucket(s3_server.client(), bucket)
        url = f"s3://{bucket}/audit"
        store = open_store(
            url, StoreOptions(endpoint_url=s3_server.endpoint, region=s3_server.region)
        )
        flags = ["--store", url, "--endpoint-url", s3_server.endpoint]
        env.update(s3_server.env())
    return Target(str(request.param), store, flags, env, tmp_path)


def _chain(target: Target, count: int = 3, **kwargs: Any) -> Scenario:
    scenario = Scenario(
        target.store, target.cwd / "scenario", stream=STREAM, signer=SIGNER, **kwargs
    )
    scenario.create(count)
    return scenario


def _codes(result: VerifyResult) -> list[tuple[int | None, str]]:
    return sorted(
        ((p.seq, p.code.value) for p in result.errors),
        key=lambda item: (item[0] if item[0] is not None else -1, item[1]),
    )


# -- the writers ship past the junk -----------------------------------------------------------


def _recover_ships_past(target: Target, seq: int) -> dict[str, Any]:
    """A run SIGKILLed mid-command leaves its spool; ``recover`` ships it past slot ``seq``."""
    killed = target.cli(
        "run", *target.flags, "--stream", STREAM, "--", "sh", "-c", "kill -KILL $PPID"
    )
    assert killed.returncode == -9, killed.stderr.decode()
    proc = target.cli("recover", *target.flags, "--signing-key", "hmac:env:K", "--json")
    assert proc.returncode == 0, proc.stderr.decode()
    receipt = result_json(proc)["recovered"][0]
    assert receipt["seq"] == seq + 1, receipt
    return slot_record(target.store, STREAM, seq + 1)


def _run_ships_past(target: Target, seq: int) -> dict[str, Any]:
    proc = target.cli(
        "run",
        *target.flags,
        "--stream",
        STREAM,
        "--signing-key",
        "hmac:env:K",
        "--json",
        "--",
        "true",
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert result_json(proc)["seq"] == seq + 1
    assert f"chain slot {seq} of {STREAM} holds no valid record" in proc.stderr.decode()
    return slot_record(target.store, STREAM, seq + 1)


def _burned(record: dict[str, Any]) -> list[tuple[int, str | None]]:
    return [(entry["seq"], entry["sha256"]) for entry in record["burned"]]


def _cli_report(target: Target) -> dict[str, Any]:
    """``tfaudit verify --json``: exit 24 and one complete, well-formed document."""
    proc = target.cli("verify", *target.flags, "--stream", STREAM, "--key", "hmac:env:K", "--json")
    assert proc.returncode == 24, proc.stdout.decode() + proc.stderr.decode()
    report = json.loads(proc.stdout)  # the whole of stdout is one document
    assert set(report) == REPORT_KEYS
    assert report["ok"] is False and report["errors"] == len(
        [p for p in report["problems"] if p["severity"] == "error"]
    )
    assert report["summary"].startswith("tfaudit verify FAILED")
    assert report["summary"] in proc.stderr.decode()
    return report


def _error_codes(report: dict[str, Any]) -> set[tuple[int | None, str]]:
    return {(p["seq"], p["code"]) for p in report["problems"] if p["severity"] == "error"}


# -- junk in the next slot --------------------------------------------------------------------


def _unsigned(target: Target, seq: int) -> bytes:
    return forge(target.store, STREAM, seq)


def _pretty(target: Target, seq: int) -> bytes:
    return json.dumps(
        json.loads(forge(target.store, STREAM, seq, signer=SIGNER)), indent=1
    ).encode()


def _oversized(target: Target, seq: int) -> bytes:
    def pad(record: dict[str, Any]) -> None:
        record["command"] = ["terraform", "apply", "x" * (5 << 20)]

    return forge(target.store, STREAM, seq, edit=pad)


def _wrong_types(target: Target, seq: int) -> bytes:
    def scramble(record: dict[str, Any]) -> None:
        record.update(seq=str(seq), prev="latest", artifacts={}, exit_code="0")

    return forge(target.store, STREAM, seq, signer=SIGNER, edit=scramble)


def _burn_claims(target: Target, seq: int) -> bytes:
    """A forged record that claims the legitimate records below it were junk."""

    def claim(record: dict[str, Any]) -> None:
        record["prev"] = {"seq": 0, "sha256": slot_sha256(target.store, STREAM, 0)}
        record["burned"] = [
            {"seq": n, "sha256": slot_sha256(target.store, STREAM, n)} for n in range(1, seq)
        ]

    return forge(target.store, STREAM, seq, edit=claim)


JUNK: dict[str, tuple[Callable[[Target, int], bytes], str]] = {
    "not-json": (lambda t, s: b"not json", "unparseable"),
    "nested-200000-deep": (lambda t, s: b"[" * 200_000 + b"]" * 200_000, "unparseable"),
    "duplicate-key": (lambda t, s: b'{"seq":0,' + _unsigned(t, s)[1:], "unparseable"),
    "nan": (
        lambda t, s: _unsigned(t, s).replace(b'"exit_code":0', b'"exit_code":NaN'),
        "unparseable",
    ),
    "invalid-utf8": (
        lambda t, s: _unsigned(t, s).replace(b'"cwd":"/', b'"cwd":"\xff/'),
        "unparseable",
    ),
    "not-canonical": (_pretty, "not-canonical"),
    "number-out-of-range": (
        lambda t, s: _unsigned(t, s).replace(b'"exit_code":0', b'"exit_code":1e400'),
        "not-canonical",
    ),
    "wrong-types": (_wrong_types, "schema"),
    "other-stream": (
        lambda t, s: forge(t.store, STREAM, s, signer=SIGNER, record_stream="acme/other"),
        "location",
    ),
    "replay-of-seq-1": (lambda t, s: canonical_bytes(slot_record(t.store, STREAM, 1)), "location"),
    "forged-unsigned": (_unsigned, "signature"),
    "forged-with-another-key": (
        lambda t, s: forge(t.store, STREAM, s, signer=HmacSigner(b"guess", hmac_key_id(b"guess"))),
        "signature",
    ),
    "forged-burn-claims": (_burn_claims, "signature"),
    "oversized-5MiB": (_oversized, "too-large"),
}


@pytest.mark.parametrize("attack", sorted(JUNK))
def test_junk_in_the_next_slot_is_named_and_never_chained_onto(target: Target, attack: str) -> None:
    payload, code = JUNK[attack]
    _chain(target)
    target.write(3, payload(target, 3))
    result = target.verify()
    assert (3, code) in _codes(result), result.problems
    assert {seq for seq, _ in _codes(result)} == {3}, result.problems  # nothing else blamed
    assert (result.records_valid, result.records_total) == (3, 4)
    # What the writer (run and recover alike) makes of it: seq 2 is what it chains onto.
    pred, burned = Chain(target.store, STREAM, SIGNER.verifier()).predecessor(3)
    assert pred is not None and pred.seq == 2
    assert [v.seq for v in burned] == [3]


def test_run_and_recover_ship_past_every_kind_of_junk(target: Target) -> None:
    """Every kind of junk above, one after the other: `recover` burns them all and ships,
    then again after `run`; verify reports each burned slot and nothing else."""
    _chain(target)
    kinds = sorted(JUNK)

    def plant(first: int) -> list[int]:
        seqs = list(range(first, first + len(kinds)))
        for seq, kind in zip(seqs, kinds, strict=True):
            target.write(seq, JUNK[kind][0](target, seq))
        return seqs

    first_batch = plant(3)
    shas = {seq: slot_sha256(target.store, STREAM, seq) for seq in first_batch}
    recovered = _recover_ships_past(target, first_batch[-1])
    assert _burned(recovered) == [(seq, shas[seq]) for seq in first_batch]
    assert recovered["prev"] == {"seq": 2, "sha256": slot_sha256(target.store, STREAM, 2)}

    second_batch = plant(first_batch[-1] + 2)
    ran = _run_ships_past(target, second_batch[-1])
    assert [seq for seq, _ in _burned(ran)] == second_batch
    assert ran["prev"]["seq"] == first_batch[-1] + 1

    report = _cli_report(target)
    assert _error_codes(report) == {(seq, "burned") for seq in first_batch + second_batch}
    total = 3 + 2 * len(kinds) + 2
    assert report["records"] == {"valid": 5, "total": total}
    messages = {p["seq"]: p["message"] for p in report["problems"]}
    for seq, kind in zip(first_batch, kinds, strict=True):
        assert f"skipped by the writer of seq {first_batch[-1] + 1}" in messages[seq], kind


def test_a_forged_oversized_record_never_passes(target: Target) -> None:
    """The issue's first case: three signed runs, an unsigned 5 MiB record, a real run."""
    _chain(target)
    target.write(3, _oversized(target, 3))
    ran = _run_ships_past(target, 3)
    assert _burned(ran) == [(3, slot_sha256(target.store, STREAM, 3))]
    proc = target.cli("verify", *target.flags, "--stream", STREAM, "--key", "hmac:env:K")
    out = proc.stdout.decode()
    assert proc.returncode == 24, out
    assert "4/5 records valid" in out.splitlines()[-1]
    assert "[burned]" in out and "over the 1,048,576-byte cap" in out


# -- windows: a record cannot leave the range by lying about its time ------------------------


def _liar(target: Target, seq: int, *, signer: Any = None) -> None:
    def in_2020(record: dict[str, Any]) -> None:
        old = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
        record["started_at"], record["finished_at"] = iso(old), iso(old + dt.timedelta(minutes=1))

    target.write(seq, forge(target.store, STREAM, seq, signer=signer, edit=in_2020))


def test_since_cannot_be_dodged_by_a_record_claiming_2020(target: Target) -> None:
    """The issue's second case: a forged record that claims 2020, then a real run."""
    _chain(target, start=utc_now() - dt.timedelta(hours=10))
    _liar(target, 3)
    ran = _run_ships_past(target, 3)
    assert _burned(ran) == [(3, slot_sha256(target.store, STREAM, 3))]
    since = iso(utc_now() - dt.timedelta(hours=1))
    flags = ["--stream", STREAM, "--key", "hmac:env:K", "--since", since, "--json"]
    proc = target.cli("verify", *target.flags, *flags)
    assert proc.returncode == 24, proc.stdout.decode()
    report = json.loads(proc.stdout)
    assert _error_codes(report) == {(3, "burned")}
    assert (report["first_seq"], report["last_seq"]) == (3, 4)


def test_since_without_signatures_catches_time_going_backwards(target: Target) -> None:
    """No signing key anywhere: the writer chains onto the liar; its time gives it away."""
    start = utc_now() - dt.timedelta(hours=3)
    Scenario(target.store, target.cwd / "scenario", stream=STREAM, start=start).create(3)
    _liar(target, 3)
    proc = target.cli("run", *target.flags, "--stream", STREAM, "--", "true")
    assert proc.returncode == 0, proc.stderr.decode()
    assert slot_record(target.store, STREAM, 4)["burned"] == []  # chained on, not burned
    since = utc_now() - dt.timedelta(hours=1)
    result = target.verify(verifier=None, since=since)
    assert _codes(result) == [(3, "time")]
    assert "goes backwards" in result.errors[0].message
    assert target.verify(verifier=None).errors[0].code.value == "time"  # the whole chain too


# -- one junk object must not block the stream; a far slot must not exhaust memory ------------


def test_a_far_away_slot_is_reported_in_bounded_time_and_memory(target: Target) -> None:
    _chain(target)
    target.write(999_999_999_999, b"junk far away")
    result = target.verify()
    far = 999_999_999_999
    assert _codes(result) == [(3, "gap"), (far, "after-head"), (far, "unparseable")]
    assert result.records_total == 1_000_000_000_000 and result.records_valid == 3
    # Appenders never see it: recover and run go on at seq 3 and 4 with nothing burned.
    killed = target.cli(
        "run", *target.flags, "--stream", STREAM, "--", "sh", "-c", "kill -KILL $PPID"
    )
    assert killed.returncode == -9
    proc = target.cli("recover", *target.flags, "--signing-key", "hmac:env:K")
    assert proc.returncode == 0, proc.stderr.decode()
    proc = target.cli(
        "run", *target.flags, "--stream", STREAM, "--signing-key", "hmac:env:K", "--", "true"
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert slot_record(target.store, STREAM, 4)["burned"] == []
    report = _cli_report(target)
    assert _error_codes(report) == {(5, "gap"), (far, "after-head"), (far, "unparseable")}


# -- hostile content inside valid-looking records ----------------------------------------------


def _hostile_identity(
    seq: int, ci: dict[str, Any], started: Any, finished: Any
) -> tuple[Any, bytes]:
    from tests.support.oidc_issuer import b64url

    del seq, ci, started, finished
    claims = {"iss": "https://issuer.invalid", "aud": "tfaudit", "iat": 1e300, "exp": 10**30}
    header = b64url(json.dumps({"alg": "RS256", "kid": "k"}).encode())
    token = f"{header}.{b64url(json.dumps(claims).encode())}.{b64url(b'sig')}"
    import hashlib

    summary = {
        "provider": "github",
        "issuer": "https://issuer.invalid",
        "audience": "tfaudit",
        "jwt_sha256": hashlib.sha256(token.encode()).hexdigest(),
    }
    document = {"schema": "tfaudit.identity/v1", "jwt": token, "jwks": {"keys": [{"kty": "RSA"}]}}
    return summary, json.dumps(document).encode()


def test_hostile_identity_evidence_is_a_finding_not_a_crash(target: Target) -> None:
    _chain(target, 2, identity=_hostile_identity)
    result = target.verify()
    texts = [p.message for p in result.errors if p.code.value == "identity"]
    assert any("out of range" in text for text in texts), texts
    assert not [p for p in result.problems if p.code.value == "internal"]
    proc = target.cli(
        "run", *target.flags, "--stream", STREAM, "--signing-key", "hmac:env:K", "--", "true"
    )
    assert proc.returncode == 0 and slot_record(target.store, STREAM, 2)["burned"] == []
    report = _cli_report(target)
    assert {code for _, code in _error_codes(report)} == {"identity"}


# -- objects dropped into a run folder ---------------------------------------------------------


def test_objects_a_record_does_not_pin_are_errors(target: Target) -> None:
    scenario = _chain(target)
    victim = scenario.built[1]
    plan = victim.artifacts["plan.json"]
    scenario.new_version(plan["key"], b'{"resource_changes": []}')  # a fake plan.json version
    dropped = run_key(STREAM, victim.run_folder, "identity.json")
    scenario.upload(dropped, b'{"schema": "tfaudit.identity/v1"}')
    result = target.verify()
    assert _codes(result) == [(1, "unpinned"), (1, "unpinned")]
    assert sorted(p.key or "" for p in result.errors) == sorted([plan["key"], dropped])
    proc = target.cli(
        "run", *target.flags, "--stream", STREAM, "--signing-key", "hmac:env:K", "--", "true"
    )
    assert proc.returncode == 0, proc.stderr.decode()
    report = _cli_report(target)
    assert _error_codes(report) == {(1, "unpinned")}


# -- file:// only: symbolic links --------------------------------------------------------------


def test_symlinks_are_findings_never_followed(tmp_path: Path, s3_server: S3Server) -> None:
    """Symbolic links exist on a file system only: this one runs on ``file://``."""
    del s3_server
    store = FileStore(tmp_path / "store")
    target = Target(
        "file",
        store,
        ["--store", store.uri, "--on-unlocked", "warn"],
        {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(tmp_path / "home"),
            "K": KEY.decode(),
            "TFAUDIT_WORK_DIR": str(tmp_path / "spools"),
        },
        tmp_path,
    )
    scenario = _chain(target)
    runs = tmp_path / "store" / STREAM / "runs"
    (runs / scenario.built[0].run_folder / "extra.log").symlink_to("/etc/hostname")
    (runs / "escape").symlink_to("/")
    (tmp_path / "store" / chain_key(STREAM, 3)).symlink_to("/etc/passwd")
    result = target.verify()
    links = sorted(p.key or "" for p in result.errors if p.code.value == "symlink")
    assert links == sorted(
        [
            f"{STREAM}/runs/{scenario.built[0].run_folder}/extra.log",
            f"{STREAM}/runs/escape",
            chain_key(STREAM, 3),
        ]
    )
    assert any("outside the store root" in p.message for p in result.errors)
    ran = _run_ships_past(target, 3)  # the linked slot is taken but never read: burned
    assert _burned(ran) == [(3, None)]
    report = _cli_report(target)
    # Verify lists no object at seq 3 (a link is not one): a gap, and the record written
    # past it lies after the head that a reader of the listing finds.
    assert _error_codes(report) - {(None, "symlink")} == {(3, "gap"), (4, "after-head")}


def _verify_with_a_bug(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: Any, name: str, exc: Exception
) -> VerifyResult:
    """Verify a clean three-record stream while ``module.name`` raises ``exc``."""
    store = FileStore(tmp_path / "store")
    Scenario(store, tmp_path / "spool", stream=STREAM, signer=SIGNER).create(3)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise exc

    monkeypatch.setattr(module, name, broken)
    return verify_stream(store, VerifyOptions(stream=STREAM, verifier=HmacVerifier(KEY)))


def test_unexpected_failures_in_a_check_are_errors_with_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever raises inside a check is an error on that seq, never a crash or a pass."""
    from tfaudit_ci.verify import checks

    result = _verify_with_a_bug(
        tmp_path, monkeypatch, checks, "time_problems", OverflowError("a bug")
    )
    assert [(p.seq, p.code.value) for p in result.errors] == [
        (0, "internal"),
        (1, "internal"),
        (2, "internal"),
    ]
    assert result.records_valid == 0
    assert all("OverflowError" in (p.traceback or "") for p in result.errors)


def test_unsigned_stream_without_a_key_still_reports_junk(target: Target) -> None:
    """No key at all: junk is still burned by the writer and reported by verify."""
    Scenario(target.store, target.cwd / "scenario", stream=STREAM, signer=NoSigner()).create(2)
    target.write(2, b"\x00\x01binary")
    proc = target.cli("run", *target.flags, "--stream", STREAM, "--", "true")
    assert proc.returncode == 0, proc.stderr.decode()
    assert _burned(slot_record(target.store, STREAM, 3)) == [
        (2, slot_sha256(target.store, STREAM, 2))
    ]
    result = target.verify(verifier=None)
    assert _codes(result) == [(2, "burned")]


def test_a_walk_that_stops_early_counts_no_record_as_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure outside any record (here in the orphan pass) is still a complete report,
    but nothing counts as valid: not every check ran."""
    from tfaudit_ci.verify import layout

    result = _verify_with_a_bug(
        tmp_path, monkeypatch, layout, "orphan_problems", MemoryError("out of memory")
    )
    assert [(p.seq, p.code.value) for p in result.errors] == [(None, "internal")]
    assert "MemoryError" in result.errors[0].message
    assert (result.records_valid, result.records_total) == (0, 3)


def test_a_forged_record_cannot_pin_what_was_dropped_into_a_run_folder(
    tmp_path: Path,
) -> None:
    """Junk dropped into a real run folder, and a forged record naming that folder and
    pinning the junk: the junk is still unpinned (only records that hold up may pin)."""
    store = FileStore(tmp_path / "store")
    scenario = Scenario(store, tmp_path / "spool", stream=STREAM, signer=SIGNER)
    scenario.create(2)
    folder = scenario.built[1].run_folder
    dropped = run_key(STREAM, folder, "evil.log")
    version = scenario.upload(dropped, b"evil\n")

    def claim(record: dict[str, Any]) -> None:
        record["run_folder"] = folder
        record["artifacts"] = [
            {
                "name": "evil.log",
                "key": dropped,
                "version_id": version,
                "sha256": "0" * 64,
                "size": 5,
            }
        ]

    write_raw(store, chain_key(STREAM, 2), forge(store, STREAM, 2, edit=claim))
    result = verify_stream(store, VerifyOptions(stream=STREAM, verifier=HmacVerifier(KEY)))
    assert (1, "unpinned") in _codes(result) and (2, "signature") in _codes(result)
    assert [p.key for p in result.errors if p.code.value == "unpinned"] == [dropped]
