"""Pure parts of the reading commands: rows from hostile JSON, actions, address globs, the
reviewed-plan binding, terminal tables, CSV and HTML escaping."""

from __future__ import annotations

import datetime as dt

from tfaudit_ci.canonical import canonical_bytes
from tfaudit_ci.stores.base import Policy
from tfaudit_ci.trail.binding import Binding, PlanRef, bind_applies, binding_problems
from tfaudit_ci.trail.evidence import Evidence, RunDetail, to_csv
from tfaudit_ci.trail.html import link, render
from tfaudit_ci.trail.model import Action, action_of, row_from_bytes, row_from_record
from tfaudit_ci.trail.query import address_pattern, log_changes
from tfaudit_ci.trail.render import LOG_COLUMNS, Painter, log_cells, table
from tfaudit_ci.verify.model import VerifyResult


def _record(seq: int, command: list[str], **extra: object) -> dict[str, object]:
    return {
        "seq": seq,
        "stream": "s",
        "command": command,
        "cwd": "/w",
        "status": "succeeded",
        "started_at": f"2026-01-0{seq + 1}T10:00:00Z",
        "ci": {"provider": "github", "actor": "alice"},
        **extra,
    }


def _plan(digest: str | None, plan_file: str = "tfplan") -> dict[str, object]:
    return {
        "plan_file": plan_file,
        "plan_file_sha256": digest,
        "add": 1,
        "change": 0,
        "destroy": 0,
        "import": 0,
        "resources": [],
    }


def test_actions() -> None:
    assert action_of(["delete", "create"], False, False) is Action.REPLACE
    assert action_of(["create", "delete"], False, False) is Action.REPLACE
    assert action_of(["no-op"], True, False) is Action.IMPORT
    assert action_of(["update"], True, False) is Action.UPDATE
    assert action_of(["no-op"], False, True) is Action.MOVE


def test_hostile_rows_never_raise() -> None:
    for data in (
        b"not json",
        b"[]",
        b"{}",
        b'{"ci": 5, "plan": [], "artifacts": {}}',
        canonical_bytes(
            {
                "command": [1, None],
                "exit_code": True,
                "started_at": "x",
                "plan": {"resources": [5, {"address": 3}], "add": "1"},
            }
        ),
    ):
        row = row_from_bytes(7, data)
        assert row.seq == 7
        assert row.to_json()["seq"] == 7
    row = row_from_bytes(7, b'{"exit_code": true, "started_at": "yesterday"}')
    assert row.exit_code is None and row.started_at is None
    assert any("exit_code" in note for note in row.notes)
    assert not row_from_bytes(1, b"junk").readable


def test_address_globs() -> None:
    assert address_pattern("aws_iam_role.*").fullmatch('aws_iam_role.x["a"]')
    assert address_pattern("module.db.*").fullmatch("module.db.aws_db_instance.main")
    assert not address_pattern("module.db.*").fullmatch("module.dbx.a.b")
    exact = address_pattern("null_resource.item[0]")
    assert exact.fullmatch("null_resource.item[0]") and not exact.fullmatch("null_resource.item0")
    assert address_pattern("aws_iam_role.admin").fullmatch("aws_iam_role.admin[3]")
    assert not address_pattern("aws_iam_role.admin").fullmatch("aws_iam_role.admins")


def test_log_changes() -> None:
    text = (
        "a.b: Destroying... [id=1]\na.b: Creating...\nc.d[0]: Modifying... [id=2]\n"
        "e.f: Importing... [id=3]\nPlan: nothing\n"
    )
    found = {c.address: c.action for c in log_changes(text)}
    assert found == {"a.b": Action.REPLACE, "c.d[0]": Action.UPDATE, "e.f": Action.IMPORT}


def test_bindings() -> None:
    rows = [
        row_from_record(0, _record(0, ["terraform", "plan", "-out=tfplan"], plan=_plan("aa")), "0"),
        row_from_record(1, _record(1, ["terraform", "apply", "tfplan"], plan=_plan("aa")), "1"),
        row_from_record(2, _record(2, ["terraform", "apply", "-auto-approve"]), "2"),
        row_from_record(3, _record(3, ["terraform", "apply", "x"], plan=_plan("bb")), "3"),
        row_from_record(4, _record(4, ["terraform", "apply", "x"], plan=_plan("cc")), "4"),
        row_from_record(5, _record(5, ["terraform", "apply", "x"], plan=_plan("dd")), "5"),
        row_from_record(6, _record(6, ["terraform", "destroy", "-auto-approve"]), "6"),
    ]
    plans = [
        PlanRef("s", 0, "succeeded", "aa"),
        PlanRef("other", 0, "succeeded", "bb"),
        PlanRef("s", 2, "failed", "cc"),
        PlanRef("s", 9, "succeeded", "dd"),
    ]
    found = {b.apply_seq: b for b in bind_applies(rows, "s", plans)}
    assert {k: b.binding for k, b in found.items()} == {
        1: Binding.REVIEWED,
        2: Binding.NO_PLAN_FILE,
        3: Binding.OTHER_STREAM,
        4: Binding.FAILED_PLAN,
        5: Binding.UNRECORDED,
        6: Binding.NO_PLAN_FILE,
    }
    assert "only after it, at seq 9" in found[5].message
    problems = binding_problems(found.values())
    assert [p.seq for p in problems] == [2, 3, 4, 5, 6]
    assert {p.code for p in problems} == {"unreviewed-plan"}


def test_table_strips_terminal_escapes_from_records() -> None:
    row = row_from_record(0, _record(0, ["terraform", "plan", "\x1b]0;pwned\x07\x1b[2J"]), "x")
    lines = table(LOG_COLUMNS, [log_cells(row)], paint=Painter(False), width=None)
    assert "\x1b" not in "\n".join(lines) and "\x07" not in "\n".join(lines)


def test_csv_and_html_escape_hostile_values() -> None:
    hostile = '=HYPERLINK("http://x")<script>alert(1)</script>'
    record = _record(0, ["terraform", "apply"], ci={"actor": hostile, "run_url": "javascript:x"})
    row = row_from_record(0, record, "x")
    moment = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    evidence = Evidence(
        "file:///s",
        "s",
        moment,
        moment + dt.timedelta(days=2),
        Policy(),
        VerifyResult("file:///s", "s"),
        [RunDetail(row)],
        moment,
    )
    assert "'=HYPERLINK" in to_csv(evidence)
    page = render(evidence)
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page
    assert link("javascript:alert(1)") == "javascript:alert(1)"
    assert link("https://ci/x?a=1&b=2").startswith('<a href="https://ci/x?a=1&amp;b=2"')


def test_parallel_head_probe_finds_what_find_head_finds() -> None:
    """Same answer as the appenders' probing, gaps and stray slots included."""
    import random

    from tfaudit_ci.slots import probe_head
    from tfaudit_ci.trail.reader import parallel_probe_head

    rng = random.Random(7)
    for _ in range(500):
        size = rng.choice([0, 1, 2, 3, 5, 17, 100, 1000, 65536, 100_000])
        taken = set(range(size))
        for _ in range(rng.choice([0, 1, 3])):
            if size:
                taken.discard(rng.randrange(size))
        if rng.random() < 0.3:
            taken.add(rng.randrange(2 * size + 5))
        width = rng.choice([1, 2, 4, 16])
        assert parallel_probe_head(taken.__contains__, width) == probe_head(taken.__contains__)
