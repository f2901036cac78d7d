"""The record's canonical form (RFC 8785) and its published JSON Schema."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tfaudit_ci.canonical import (
    JsonRejected,
    canonical_bytes,
    canonical_problem,
    jcs_safe,
    parse_strict,
)
from tfaudit_ci.chain import MAX_SEQ
from tfaudit_ci.record_limits import MAX_BURNED
from tfaudit_ci.schemas import RECORD_SCHEMA_FILE, load_schema, record_schema_problems

REPO = Path(__file__).resolve().parent.parent


def test_rfc8785_example_from_the_rfc() -> None:
    """RFC 8785, section 3.2.2 (its sample input and output)."""
    value = json.loads(
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}'
    )
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert canonical_bytes(value) == expected.encode("utf-8")


def test_keys_sort_by_utf16_code_units_not_code_points() -> None:
    """RFC 8785, section 3.2.3: U+1F600 (a surrogate pair in UTF-16) sorts before U+FB33."""
    value = {"\ufb33": 1, "\U0001f600": 2, "\u20ac": 3, "\r": 4, "1": 5, "\u0080": 6}
    order = list(json.loads(canonical_bytes(value)))
    assert order == ["\r", "1", "\u0080", "\u20ac", "\U0001f600", "\ufb33"]
    assert sorted(value) != order  # what sort_keys (the old form) would have written


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b'{"a":1,"a":2}', "duplicate key"),
        (b'{"a":NaN}', "NaN"),
        (b'{"a":-Infinity}', "Infinity"),
        (b'{"a":"\xff"}', "invalid UTF-8"),
        (b"\xef\xbb\xbf{}", "not JSON"),  # a byte-order mark
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
        (b'{"a":' + b"9" * 5000 + b"}", "not JSON"),
        (b"{", "not JSON"),
    ],
)
def test_strict_parsing_refuses_what_is_not_i_json(data: bytes, why: str) -> None:
    with pytest.raises(JsonRejected, match=why):
        parse_strict(data)


@pytest.mark.parametrize(
    "data",
    [
        b'{"b":1,"a":2}',
        b'{"a": 1}',
        b'{"a":1.0}',
        b'{"a":1e300}',
        b'{"a":"\\u00e9"}',
        b'{"a":1e400}',
    ],
)
def test_anything_but_the_canonical_bytes_is_refused(data: bytes) -> None:
    assert canonical_problem(parse_strict(data), data) is not None


def test_jcs_safe_makes_outside_values_representable() -> None:
    value = {
        "big": 2**60,
        "inf": float("inf"),
        "lone": "\ud800",
        "deep": [[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]],
    }
    safe = jcs_safe(value)
    data = canonical_bytes(safe)
    assert canonical_problem(parse_strict(data), data) is None
    assert safe["big"] == str(2**60) and safe["inf"] is None and safe["lone"] == "\ufffd"


def test_the_schema_is_valid_and_matches_the_writer() -> None:
    from jsonschema import Draft202012Validator

    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["properties"]["burned"]["maxItems"] == MAX_BURNED
    assert schema["$defs"]["seq"]["maximum"] == MAX_SEQ
    assert record_schema_problems({"schema": "tfaudit.record/v1"})  # far from complete
    # the file in the source tree is the one documented
    assert (REPO / "tfaudit_ci" / "schemas" / RECORD_SCHEMA_FILE).is_file()
    assert "schemas/record-v1.json" in (REPO / "docs" / "record-format.md").read_text()


def test_the_wheel_ships_the_schema(tmp_path: Path) -> None:
    """An installed tfaudit finds the schema: it is package data in the wheel."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(tmp_path.glob("tfaudit_ci-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert f"tfaudit_ci/schemas/{RECORD_SCHEMA_FILE}" in names
        packaged = json.loads(archive.read(f"tfaudit_ci/schemas/{RECORD_SCHEMA_FILE}"))
    assert packaged == load_schema()


def test_every_problem_code_is_documented() -> None:
    """The codes are part of the --json contract: docs/verify.md lists each, and no other."""
    import re

    from tfaudit_ci.verify.model import Code, Severity

    text = (REPO / "docs" / "verify.md").read_text(encoding="utf-8")
    table = text[text.index("## Problem codes") :]
    table = table[: table.index("\n## ", 5)]
    documented = set(re.findall(r"^\| `([a-z-]+)` \|", table, flags=re.MULTILINE))
    assert documented == {code.value for code in Code}
    severities = set(re.findall(r"^\| `[a-z-]+` \| ([a-z /]+) \|", table, flags=re.MULTILINE))
    assert {s.strip() for item in severities for s in item.split("/")} == {
        s.value for s in Severity
    }
