"""`tfaudit log`, `show`, `history` and `report` on a real trail (``tests/support/read_trail.py``:
real terraform runs through `tfaudit run`, two actors, creates, updates, a replacement, an
import, an apply without a plan file, a failed apply), over the file store and the local S3
server, through the real CLI."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devkit.servers import S3Server, make_lock_bucket, unique_bucket
from tests.support.read_trail import KEY, KEY_VAR, OTHER_STREAM, STREAM, Trail, session_trail
from tests.support.scenarios import Scenario
from tfaudit_ci.canonical import canonical_bytes
from tfaudit_ci.record import chain_key
from tfaudit_ci.signing import HmacSigner, NoSigner, hmac_key_id
from tfaudit_ci.stores import StoreOptions, open_store


@pytest.fixture(scope="session", params=["file", "s3"])
def trail(
    request: pytest.FixtureRequest, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Trail:
    return session_trail(str(request.param), s3_server, tmp_path_factory)


def _json(text: str) -> Any:
    return json.loads(text)


# -- log ---------------------------------------------------------------------------------------


def test_log_lists_runs_newest_first(trail: Trail) -> None:
    code, out, err = trail.run("log")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["SEQ", "FINISHED", "(UTC)"]
    seqs = [int(line.split()[0]) for line in lines[1:]]
    assert seqs == list(range(8, -1, -1))
    assert "\x1b[" not in out  # piped: plain text
    row6 = next(line for line in lines if line.startswith("6 "))
    assert "failed (1)" in row6 and "octocat" in row6 and "terraform apply -input=false p3" in row6
    row3 = next(line for line in lines if line.startswith("3 "))
    assert "jdoe" in row3 and "!17" in row3 and "+1 ~1 -1 ^1" in row3 and "03cdcdcd" in row3
    assert "https://gitlab.example.com/platform/infra/live/-/jobs/9003" in row3
    assert "head seq 8" in err


def test_log_json_and_filters(trail: Trail) -> None:
    code, out, _ = trail.run("log", "--json", "-n", "3")
    runs = _json(out)
    assert code == 0 and [r["seq"] for r in runs] == [8, 7, 6]
    first = runs[0]
    assert first["actor"] == "octocat" and first["subcommand"] == "apply"
    assert first["changes"] == {"add": 0, "change": 1, "destroy": 0, "import": 0}
    assert first["commit"].startswith("09ab") and first["ref"] == "refs/heads/main"
    assert first["run_url"].endswith("/actions/runs/7009/attempts/1")

    _, out, _ = trail.run("log", "--json", "--actor", "jdoe", "--command", "apply")
    assert [r["seq"] for r in _json(out)] == [7, 5, 3]
    _, out, _ = trail.run("log", "--json", "--status", "failed")
    assert [r["seq"] for r in _json(out)] == [6]
    _, out, _ = trail.run("log", "--json", "--ref", "feature/")
    assert [r["seq"] for r in _json(out)] == [7, 5, 3, 2]
    _, out, _ = trail.run("log", "--json")
    started = [r["started_at"] for r in _json(out)]
    _, out, _ = trail.run("log", "--json", "--since", started[5], "--until", started[1])
    assert [r["seq"] for r in _json(out)] == [6, 5, 4, 3]


def test_log_on_a_terminal_is_coloured_and_fits(trail: Trail) -> None:
    """Under a real pseudo-terminal (80 columns) rows are coloured and cut to fit."""
    controller, child = pty.openpty()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {**trail.env, "COLUMNS": "80"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfaudit_ci", *trail.args("log", "-n", "2")],
        env=env,
        cwd=trail.cwd,
        stdout=child,
        stderr=subprocess.DEVNULL,
    )
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(controller, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=120) == 0
    os.close(controller)
    text = b"".join(chunks).decode()
    assert "\x1b[32msucceeded (0)\x1b[0m" in text
    from tfaudit_ci.trail.render import strip_ansi

    assert all(len(line) <= 80 for line in strip_ansi(text).splitlines())
    code, forced, _ = trail.run("log", "-n", "1", "--color")
    assert code == 0 and "\x1b[1m" in forced


# -- show --------------------------------------------------------------------------------------


def test_show_reviewed_apply(trail: Trail) -> None:
    code, out, err = trail.run("show", "3", "--key", f"hmac:env:{KEY_VAR}")
    assert code == 0, out + err
    assert "jdoe via gitlab" in out and "!17" in out
    for line in (
        "update   terraform_data.a",
        "replace  terraform_data.b",
        "import   terraform_data.imported",
    ):
        assert line in out
    checks = out[out.index("Checks") :]
    for name in ("record", "prev", "signature", "versions", "artifacts", "identity"):
        assert f"{name} " in checks
    assert "✓ reviewed-plan  applies the plan recorded at seq 2" in checks
    assert "✓ signature" in checks and "✓ prev" in checks and "✓ artifacts" in checks
    locks = "✓ locks" if trail.store_url.startswith("s3://") else "- locks"
    assert locks in checks


def test_show_json_latest_and_findings(trail: Trail) -> None:
    code, out, _ = trail.run("show", "--json")
    data = _json(out)
    assert code == 24  # seq 8 applied a plan nobody recorded
    assert data["seq"] == 8 and data["record"]["seq"] == 8 and data["ok"] is False
    assert data["plan_binding"]["binding"] == "unrecorded"
    states = {c["name"]: c["state"] for c in data["checks"]}
    assert states["signature"] == "skip" and states["reviewed-plan"] == "fail"
    assert states["record"] == states["prev"] == states["artifacts"] == "pass"

    _, out, _ = trail.run("show", "5", "--json")
    assert _json(out)["plan_binding"]["binding"] == "no-plan-file"
    _, out, _ = trail.run("show", "7", "--json")
    assert _json(out)["plan_binding"]["binding"] == "unrecorded"
    code, out, _ = trail.run("show", "7", "--json", "--plan-stream", OTHER_STREAM)
    binding = _json(out)["plan_binding"]
    assert binding["binding"] == "other-stream" and binding["plan_stream"] == OTHER_STREAM
    code, out, _ = trail.run("show", "6", "--json")
    data = _json(out)
    assert code == 0 and data["run"]["status"] == "failed" and data["plan_binding"]["plan_seq"] == 4


def test_show_log_and_plan(trail: Trail) -> None:
    code, out, _ = trail.run("show", "3", "--log")
    assert code == 0 and "\x1b[" not in out
    assert "terraform_data.b: Destroying..." in out and "Apply complete!" in out
    code, coloured, _ = trail.run("show", "3", "--log", "--color")
    assert code == 0 and "\x1b[" in coloured
    code, out, _ = trail.run("show", "2", "--plan")
    assert code == 0
    assert "Plan: 1 to import, 1 to add, 1 to change, 1 to destroy." in out
    assert "replace  terraform_data.b" in out


def test_show_bad_target(trail: Trail) -> None:
    code, _, err = trail.run("show", "99")
    assert code == 20 and "seq 99 does not exist: the head is seq 8" in err
    code, _, err = trail.run("show", "x")
    assert code == 20 and "'x' is not a seq" in err


# -- history -----------------------------------------------------------------------------------


def test_history_glob_and_applied_only(trail: Trail) -> None:
    code, out, err = trail.run("history", "terraform_data.*", "--json")
    entries = _json(out)
    assert code == 0, err
    assert [(e["seq"], e["address"], e["action"]) for e in entries if e["seq"] in (3, 5)] == [
        (5, "terraform_data.c", "create"),
        (3, "terraform_data.a", "update"),
        (3, "terraform_data.b", "replace"),
        (3, "terraform_data.imported", "import"),
    ]
    assert next(e for e in entries if e["seq"] == 5)["source"] == "log"
    code, out, _ = trail.run("history", "terraform_data.a", "--applied-only")
    lines = out.splitlines()
    assert code == 0 and [int(line.split()[0]) for line in lines[1:]] == [8, 7, 3, 1]
    assert all(" apply " in line for line in lines[1:])
    _, out, _ = trail.run("history", "terraform_data.nothing", "--json")
    assert _json(out) == []


# -- report ------------------------------------------------------------------------------------


def test_report_json_and_csv(trail: Trail, tmp_path: Path) -> None:
    code, out, err = trail.run(
        "report", "--format", "json", "--key", f"hmac:env:{KEY_VAR}", "--plan-stream", OTHER_STREAM
    )
    data = _json(out)
    assert code == 0, err
    assert data["verdict"]["ok"] is True and data["verdict"]["records"] == {"valid": 9, "total": 9}
    assert data["applies"] == [1, 3, 5, 6, 7, 8]
    bindings = {b["apply_seq"]: b["binding"] for b in data["plan_bindings"]}
    assert bindings == {
        1: "reviewed",
        3: "reviewed",
        5: "no-plan-file",
        6: "reviewed",
        7: "other-stream",
        8: "unrecorded",
    }
    top = {r["address"]: r["changes"] for r in data["top_resources"]}
    assert top["terraform_data.a"] == 4 and top["terraform_data.imported"] == 1
    assert sum(d["succeeded"] + d["failed"] for d in data["timeline"]) == 9
    assert "Apply complete!" in data["runs"][3]["log"]

    out_file = tmp_path / "runs.csv"
    code, _, _ = trail.run("report", "--format", "csv", "--out", str(out_file))
    import csv

    rows = list(csv.DictReader(out_file.open(encoding="utf-8")))
    assert code == 0 and [r["seq"] for r in rows] == [str(n) for n in range(9)]
    assert rows[6]["status"] == "failed" and rows[8]["plan_binding"] == "unrecorded"


# -- tampering ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def file_trail(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Trail:
    return session_trail("file", s3_server, tmp_path_factory)


def test_tampered_file_trail_shows_x(file_trail: Trail, tmp_path: Path) -> None:
    """In-place rewrite is a file-store attack (the S3 case is the next test)."""
    trail = file_trail
    source = Path(trail.store_url.removeprefix("file://"))
    copy = tmp_path / "copy"
    shutil.copytree(source, copy)
    record_path = copy / chain_key(STREAM, 2)
    record = json.loads(record_path.read_bytes())
    record["ci"]["actor"] = "mallory"
    record_path.chmod(0o644)
    record_path.write_bytes(canonical_bytes(record))
    tampered = Trail(copy.as_uri(), trail.env, trail.cwd)

    code, out, _ = tampered.run("show", "2", "--key", f"hmac:env:{KEY_VAR}")
    assert code == 24 and "mallory" in out
    assert "✗ signature" in out
    code, out, _ = tampered.run("show", "3", "--key", f"hmac:env:{KEY_VAR}")
    assert code == 24 and "✗ prev" in out and "altered or replaced" in out
    report = tmp_path / "r.html"
    code, _, err = tampered.run("report", "--key", f"hmac:env:{KEY_VAR}", "--out", str(report))
    text = report.read_text(encoding="utf-8")
    assert code == 24 and "verification FAILED" in err
    assert "✗ VERIFICATION FAILED" in text and "[prev-mismatch]" in text


def _locked_store(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, prefix: str
) -> tuple[Any, str]:
    """A fresh Object-Lock bucket on the server and a store on it (credentials in the env)."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    bucket = unique_bucket(prefix)
    make_lock_bucket(s3_server.client(), bucket)
    options = StoreOptions(endpoint_url=s3_server.endpoint, region=s3_server.region)
    return open_store(f"s3://{bucket}/audit", options), bucket


def test_forged_s3_record_shows_x(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On S3 a CI job can only add objects: a forged, unsigned record at the next slot and a
    second version of an existing slot (readers keep the oldest)."""
    store, bucket = _locked_store(s3_server, monkeypatch, "readforge")
    key = KEY.encode()
    scenario = Scenario(
        store, tmp_path / "spool", stream=STREAM, signer=HmacSigner(key, hmac_key_id(key))
    )
    built = scenario.create(3)
    forged = scenario.build(signer=NoSigner())
    scenario.write(forged)
    scenario.new_version(built[1].key, built[1].data.replace(b'"alice"', b'"mallory"'))
    trail = Trail(
        f"s3://{bucket}/audit",
        {**s3_server.env(), "PATH": os.environ["PATH"], "HOME": str(tmp_path), KEY_VAR: KEY},
        tmp_path,
        ["--endpoint-url", s3_server.endpoint],
    )
    code, out, _ = trail.run("show", "latest", "--key", f"hmac:env:{KEY_VAR}")
    assert code == 24 and "✗ signature" in out
    code, out, _ = trail.run("show", "1", "--key", f"hmac:env:{KEY_VAR}")
    assert code == 24 and "✗ versions" in out and "fork" in out
    code, out, _ = trail.run(
        "report", "--format", "json", "--key", f"hmac:env:{KEY_VAR}", "--since", "2000-01-01"
    )
    verdict = _json(out)["verdict"]
    assert code == 24 and verdict["ok"] is False
    codes = {(p["seq"], p["code"]) for p in verdict["problems"] if p["severity"] == "error"}
    assert (3, "signature") in codes and (1, "fork") in codes


def test_history_cache_is_vouched_for_by_the_chain(trail: Trail, tmp_path: Path) -> None:
    """Second run answers from the local cache; a cache edited on disk is not believed."""
    env = {**trail.env, "TFAUDIT_CACHE_DIR": str(tmp_path / "cache")}
    cached_trail = Trail(trail.store_url, env, trail.cwd, trail.extra)
    code, first, err = cached_trail.run("history", "terraform_data.*", "--json")
    assert code == 0 and "local cache" not in err
    code, second, err = cached_trail.run("history", "terraform_data.*", "--json")
    if trail.store_url.startswith("file://"):
        assert "local cache" not in err  # not WORM: always read in full
        return
    assert code == 0 and "9 from the local cache" in err and second == first
    cache_file = next((tmp_path / "cache").glob("*/records.jsonl"))
    cache_file.write_text(cache_file.read_text().replace("jdoe", "mallory"))
    code, third, err = cached_trail.run("history", "terraform_data.*", "--json")
    assert code == 0 and "mallory" not in third and third == first
    assert "from the local cache" not in err or "2 from the local cache" in err


def test_reviewed_plan_problems_for_verify(trail: Trail) -> None:
    """The function ``verify --require-reviewed-plan`` calls, on the real trail."""
    from tfaudit_ci.trail.planscope import reviewed_plan_problems

    extra = dict(zip(trail.extra[::2], trail.extra[1::2], strict=True))
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
            if name in trail.env:
                patch.setenv(name, trail.env[name])
        options = StoreOptions(endpoint_url=extra.get("--endpoint-url"), region="us-east-1")
        store = open_store(trail.store_url, options)  # boto3 reads credentials here
        problems = reviewed_plan_problems(store, STREAM, 0, 8)
        other = reviewed_plan_problems(store, STREAM, 0, 8, other_streams=[OTHER_STREAM])
    assert [(p.seq, p.code, p.severity) for p in problems] == [
        (5, "unreviewed-plan", "error"),
        (7, "unreviewed-plan", "error"),
        (8, "unreviewed-plan", "error"),
    ]
    assert "another stream" in next(p.message for p in other if p.seq == 7)


def test_verify_require_reviewed_plan(trail: Trail) -> None:
    """The policy turns every apply without a reviewed plan into an error (exit 24); without
    it the same trail verifies."""
    key = ["--key", f"hmac:env:{KEY_VAR}"]
    code, out, err = trail.run("verify", *key, "--json")
    assert code == 0 and _json(out)["ok"] is True, out + err
    code, out, err = trail.run("verify", *key, "--json", "--require-reviewed-plan")
    report = _json(out)
    assert code == 24 and report["ok"] is False, err
    found = {p["seq"]: p for p in report["problems"] if p["severity"] == "error"}
    assert {seq: p["code"] for seq, p in found.items()} == {
        5: "unreviewed-plan",
        7: "unreviewed-plan",
        8: "unreviewed-plan",
    }
    assert "without a recorded plan file" in found[5]["message"]
    assert "no plan run recorded this plan file" in found[8]["message"]
    assert any("3 apply(s) without a reviewed plan" in n for n in report["notes"])
    code, out, _ = trail.run(
        "verify", *key, "--require-reviewed-plan", "--plan-stream", OTHER_STREAM
    )
    assert code == 24
    assert "seq 7: the plan file was recorded in another stream" in out
    assert "[unreviewed-plan]" in out and "tfaudit verify FAILED" in out
    # A stream whose applies (here: none) all applied reviewed plans holds.
    code, out, err = trail.run("verify", *key, "--require-reviewed-plan", stream=OTHER_STREAM)
    assert code == 0, out + err
    assert "every apply applied a reviewed plan" in out
    code, out, _ = trail.run("report", *key, "--format", "json", "--require-reviewed-plan")
    verdict = _json(out)["verdict"]
    assert code == 24 and {p["seq"] for p in verdict["problems"]} >= {5, 7, 8}


def test_hostile_slots_are_rows_not_crashes(tmp_path: Path) -> None:
    """Junk, a record nested 200,000 deep and numbers out of range are listed and shown as
    findings; no command prints a traceback."""
    from tfaudit_ci.stores.file import FileStore

    store = FileStore(tmp_path / "store")
    scenario = Scenario(store, tmp_path / "spool", stream=STREAM)
    scenario.create(2)
    junk = [b"not json", b'{"a":' * 200_000 + b"1" + b"}" * 200_000, b'{"exit_code": 1e999}']
    for offset, data in enumerate(junk):
        scenario.write(scenario.built[0], at=2 + offset, data=data)
    hostile = Trail(store.uri, {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}, tmp_path)
    code, out, err = hostile.run("log", "--json")
    rows = _json(out)
    assert code == 0 and [r["seq"] for r in rows] == [4, 3, 2, 1, 0], err
    assert rows[1]["error"] and rows[2]["error"] and rows[4]["error"] is None
    assert rows[0]["exit_code"] is None and "exit_code is a float" in rows[0]["notes"][0]
    for seq in ("2", "3", "4"):
        code, out, err = hostile.run("show", seq)
        assert code == 24 and "Traceback" not in err and "✗ record" in out
    code, _, err = hostile.run("history", "*", "--json")
    assert code == 0 and "Traceback" not in err
    code, _, err = hostile.run("report", "--since", "2000-01-01", "--format", "csv")
    assert code in (20, 21, 24) and "Traceback" not in err
    # The next run burns the junk slots; its record skips them and `show` says so.
    code, _, err = hostile.run("run", "--on-unlocked", "warn", "--", "true")
    assert code == 0, err
    code, out, err = hostile.run("show", "5")
    assert code == 0, out + err
    assert "! prev       links to seq 1, skipping burned slot(s) 2, 3, 4" in out


def test_presigned_reads_equal_sdk_reads(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bulk-read path returns what verify's SDK reader returns: bytes, digest, size and
    the lock state from the response headers; a missing version is missing."""
    from tfaudit_ci.trail.presigned import PresignedReader
    from tfaudit_ci.verify.reader import reader_for

    store, _ = _locked_store(s3_server, monkeypatch, "readpresign")
    built = Scenario(store, tmp_path / "spool", stream=STREAM).create(2)
    sdk = reader_for(store, 4)
    fast = PresignedReader(store, sdk, 4)
    for item in built:
        for entry in [*item.artifacts.values(), {"key": item.key, "version_id": item.version_id}]:
            a = sdk.fetch(entry["key"], entry["version_id"], keep=True)
            b = fast.fetch(entry["key"], entry["version_id"], keep=True)
            assert b.data == a.data and b.sha256 == a.sha256 and b.size == a.size
            assert b.state is not None and a.state is not None
            assert b.state.lock_mode == a.state.lock_mode == "COMPLIANCE"
            assert b.state.retain_until == a.state.retain_until
    assert fast.fetch(built[0].key, "no-such-version", keep=True).state is None
