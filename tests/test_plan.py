"""Plan redaction and summary, against plan JSON from the real terraform.

Live tests run terraform (1.0.3 from PyPI, and PATH's newer release when present) on the
configurations in ``tests/fixtures/plans/{basic,modern}``, offline. The recorded
``*.plan.json`` fixtures come from the same configurations; re-record them with
``python tests/test_plan.py`` (``expected.json`` keeps terraform's own "Plan:" line).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from devkit.tfhelpers import (
    isolated_env,
    run_terraform,
    terraform_binaries,
    terraform_version,
    tf_init,
)
from tfaudit_ci.plan import LITERAL, SENSITIVE, analyze_plan, redact_plan, summarize_plan

PLANS = Path(__file__).parent / "fixtures" / "plans"
SECRET = "TOPSECRET-c0ffee-1234"  # given on the command line: -var secret=...
BASIC_SECRETS = (
    SECRET,
    "DEFAULT-SECRET-d41d8cd9",
    "dbadmin-9f3a",
    "DB-PASS-ONE-77e1",
    "DB-PASS-TWO-77e2",
    "LITERAL-MODULE-SECRET-5e6f",
    "LITERAL-OUTPUT-SECRET-a1b2",
)
MODERN_SECRETS = (SECRET,)
# Too short to be scrubbed by value (see MIN_PROPAGATED_LENGTH): proves the markers alone
# are honoured everywhere. Searched for as a whole JSON string, ids may contain digits.
SHORT_SECRET_JSON = '"Pz7"'
COUNT_KEYS = ("add", "change", "destroy", "import", "forget")

Step = tuple[str, dict[str, Any], dict[str, int]]  # (name, plan JSON, console counts)


# --- running terraform ---------------------------------------------------------------


def console_counts(stdout: str) -> dict[str, int]:
    """The counts terraform's own "Plan: ..." line prints ({} for "No changes.").

    Kinds the line does not print are absent: 1.0 never prints imports, 1.11 prints them
    only when there are some and never prints forgets.
    """
    match = re.search(r"^Plan: (.*)\.$", stdout, re.MULTILINE)
    if match is None:
        assert "No changes." in stdout, f"no Plan: line in:\n{stdout}"
        return {}
    counts: dict[str, int] = {}
    for number, kind in re.findall(r"(\d+) to (\w+)", match.group(1)):
        assert kind in COUNT_KEYS, f"unknown count kind {kind!r} in {match.group(0)!r}"
        counts[kind] = int(number)
    return counts


def assert_matches_console(plan: dict[str, Any], console: dict[str, int]) -> None:
    """Our summary equals every count terraform printed; unprinted ones are zero."""
    ours = summary_counts(plan)
    printed = {kind: ours[kind] for kind in console}
    assert printed == console
    # terraform <= 1.11 does not print forgets at all (it lists them as "no longer managed").
    unprinted = {kind: ours[kind] for kind in COUNT_KEYS if kind not in console | {"forget": 0}}
    assert unprinted == dict.fromkeys(unprinted, 0)


def _plan(terraform: Path, workdir: Path, env: Mapping[str, str], name: str, *args: str) -> Step:
    stdout = run_terraform(
        terraform, workdir, env, "plan", "-input=false", "-no-color", f"-out={name}", *args
    )
    shown = run_terraform(terraform, workdir, env, "show", "-json", name)
    return name, json.loads(shown), console_counts(stdout)


def basic_flow(terraform: Path, workdir: Path, env: Mapping[str, str]) -> list[Step]:
    """create everything; then replace one resource and destroy another; then destroy all."""
    shutil.copytree(PLANS / "basic", workdir)
    tf_init(terraform, workdir, env)
    secret = f"-var=secret={SECRET}"
    steps = [_plan(terraform, workdir, env, "create", secret)]
    run_terraform(terraform, workdir, env, "apply", "-input=false", "-no-color", "create")
    steps.append(_plan(terraform, workdir, env, "replace", secret, "-var=generation=2"))
    steps.append(_plan(terraform, workdir, env, "destroy", secret, "-destroy"))
    return steps


def modern_flow(terraform: Path, workdir: Path, env: Mapping[str, str]) -> list[Step]:
    """Apply step1.tf, then plan step2.tf: import, add, change, replace, destroy, forget."""
    workdir.mkdir(parents=True)
    shutil.copy(PLANS / "modern" / "step1.tf", workdir / "main.tf")
    tf_init(terraform, workdir, env)
    secret = f"-var=secret={SECRET}"
    run_terraform(
        terraform, workdir, env, "apply", "-input=false", "-no-color", "-auto-approve", secret
    )
    shutil.copy(PLANS / "modern" / "step2.tf", workdir / "main.tf")
    return [_plan(terraform, workdir, env, "import", secret)]


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("-")[0].split(".") if p.isdigit())


# --- shared assertions -----------------------------------------------------------------


def summary_counts(plan: dict[str, Any]) -> dict[str, int]:
    data = summarize_plan(plan).to_dict()
    return {key: data[key] for key in COUNT_KEYS}


def assert_fully_redacted(plan: dict[str, Any], secrets: tuple[str, ...]) -> dict[str, Any]:
    original_text = json.dumps(plan)
    assert SENSITIVE not in original_text
    assert SECRET in original_text, "the fixture no longer exercises redaction"
    before = copy.deepcopy(plan)

    redacted, count = redact_plan(plan)

    assert plan == before, "redact_plan must not modify its input"
    text = json.dumps(redacted)
    leaked = [secret for secret in secrets if secret in text]
    assert leaked == []
    if SHORT_SECRET_JSON in original_text:
        assert SHORT_SECRET_JSON not in text
    # Every replacement leaves exactly one marker behind: the count is honest.
    assert count == text.count(SENSITIVE) > 0
    return redacted


def _resource_change(plan: dict[str, Any], address: str) -> dict[str, Any]:
    for change in plan["resource_changes"]:
        if change["address"] == address:
            result: dict[str, Any] = change["change"]
            return result
    raise AssertionError(f"{address} not in resource_changes")


def check_basic_create(redacted: dict[str, Any]) -> None:
    """Sensitive parts replaced where they are, everything else kept as terraform wrote it."""
    keep = _resource_change(redacted, "null_resource.keep")["after"]["triggers"]
    assert keep == {"secret": SENSITIVE, "plain": "plain-value", "db": SENSITIVE, "pin": SENSITIVE}
    outputs = redacted["planned_values"]["outputs"]
    assert outputs["nested"]["value"] == SENSITIVE
    assert outputs["literal_secret"]["value"] == SENSITIVE
    assert outputs["plain"]["value"] == {"name": "plain-value", "items": ["one", "two"]}
    assert redacted["output_changes"]["nested"]["after"] == SENSITIVE
    assert redacted["output_changes"]["plain"]["after"]["name"] == "plain-value"
    variables = redacted["variables"]
    assert variables["secret"]["value"] == SENSITIVE
    assert variables["db"]["value"] == SENSITIVE
    assert variables["plain"]["value"] == "plain-value"
    assert variables["generation"]["value"] in (1, "1")
    declared = redacted["configuration"]["root_module"]["variables"]
    assert declared["default_secret"]["default"] == SENSITIVE
    # Every configuration literal goes, sensitive or not (issue 13, item 3).
    assert declared["plain"]["default"] == LITERAL
    call = redacted["configuration"]["root_module"]["module_calls"]["child"]
    assert call["expressions"]["token"]["constant_value"] == SENSITIVE


# --- live terraform ----------------------------------------------------------------------


def test_basic_plans_from_real_terraform(
    terraform_bin: Path, tf_env: dict[str, str], tmp_path: Path
) -> None:
    steps = basic_flow(terraform_bin, tmp_path / "basic", tf_env)

    expected = {
        "create": {"add": 4},
        "replace": {"add": 1, "destroy": 2},  # destroy "doomed", replace "replaced"
        "destroy": {"destroy": 4},
    }
    for name, plan, console in steps:
        assert_matches_console(plan, console)
        ours = summary_counts(plan)
        assert ours == {**dict.fromkeys(COUNT_KEYS, 0), **expected[name]}, name
        redacted = assert_fully_redacted(plan, BASIC_SECRETS)
        if name == "create":
            check_basic_create(redacted)
        else:
            # The applied state holds the secrets too: prior_state must be redacted.
            state = redacted["prior_state"]["values"]["root_module"]["resources"]
            keep = next(r for r in state if r["address"] == "null_resource.keep")
            assert keep["values"]["triggers"]["secret"] == SENSITIVE
            assert keep["values"]["triggers"]["pin"] == SENSITIVE
            assert keep["values"]["triggers"]["plain"] == "plain-value"

    replace = summarize_plan(steps[1][1]).resources
    assert {r["address"]: r["actions"] for r in replace} == {
        "null_resource.doomed[0]": ["delete"],
        "null_resource.replaced": ["delete", "create"],
    }


def test_modern_plan_import_forget_nested(
    terraform_bin: Path, tf_env: dict[str, str], tmp_path: Path
) -> None:
    version = terraform_version(terraform_bin)
    if _version_tuple(version) < (1, 7):
        pytest.skip(f"terraform {version} has no import/removed blocks (needs >= 1.7)")
    [(_, plan, console)] = modern_flow(terraform_bin, tmp_path / "modern", tf_env)

    assert_matches_console(plan, console)
    assert summary_counts(plan) == {"add": 2, "change": 1, "destroy": 2, "import": 1, "forget": 1}
    redacted = assert_fully_redacted(plan, MODERN_SECRETS)

    nested = _resource_change(redacted, "terraform_data.nested")
    assert nested["before"]["input"] == {
        "list": ["a", SENSITIVE],
        "obj": {"k": SENSITIVE, "n": 1},
    }
    assert nested["after"]["input"]["obj"] == {"k": SENSITIVE, "n": 2}
    fresh = _resource_change(redacted, "terraform_data.fresh")["after"]["input"]
    assert fresh == {"deep": {"deeper": [{"s": SENSITIVE}, {"plain": "visible"}]}}

    resources = {r["address"]: r for r in summarize_plan(plan).resources}
    assert resources["terraform_data.imported"]["importing"] is True
    assert resources["terraform_data.imported"]["actions"] == ["no-op"]
    assert resources["terraform_data.forgotten"]["actions"] == ["forget"]


# --- recorded plans ------------------------------------------------------------------


def _recorded() -> list[str]:
    return sorted(json.loads((PLANS / "expected.json").read_text(encoding="utf-8")))


def _load(name: str) -> tuple[dict[str, Any], dict[str, int]]:
    expected = json.loads((PLANS / "expected.json").read_text(encoding="utf-8"))[name]
    plan = json.loads((PLANS / f"{name}.plan.json").read_text(encoding="utf-8"))
    return plan, expected["console_counts"]


@pytest.mark.parametrize("name", _recorded())
def test_recorded_plan(name: str) -> None:
    plan, console = _load(name)
    assert console, "a recorded plan without changes tests nothing"
    assert_matches_console(plan, console)
    secrets = BASIC_SECRETS if name.startswith("basic-") else MODERN_SECRETS
    redacted = assert_fully_redacted(plan, secrets)
    if name.startswith("basic-"):
        assert SHORT_SECRET_JSON in json.dumps(plan)
    if name.startswith("basic-") and name.endswith("-create"):
        check_basic_create(redacted)


def test_provider_copy_of_a_sensitive_input_is_redacted() -> None:
    """null_data_source copies inputs to outputs, and terraform does not mark the copy."""
    plan, _ = _load("basic-1.0.3-create")
    state = plan["prior_state"]["values"]["root_module"]["resources"]
    echo = next(r for r in state if r["address"] == "data.null_data_source.echo")
    assert echo["values"]["outputs"]["s"] == SECRET
    assert "s" not in echo["sensitive_values"].get("outputs", {})

    redacted, _ = redact_plan(plan)
    state = redacted["prior_state"]["values"]["root_module"]["resources"]
    echo = next(r for r in state if r["address"] == "data.null_data_source.echo")
    assert echo["values"]["outputs"] == {"a": "plain-value", "s": SENSITIVE}


def test_drift_and_deferred_changes_follow_the_same_markers() -> None:
    """resource_drift / deferred_changes could not be produced offline with the null
    provider (its refresh never changes anything, deferral needs an unknown for_each),
    so they are built from a real resource change, in the shape terraform documents."""
    plan, _ = _load("basic-1.0.3-replace")
    real_change = next(c for c in plan["resource_changes"] if c["address"] == "null_resource.keep")
    drifted = copy.deepcopy(real_change)
    drifted["change"]["actions"] = ["update"]
    plan["resource_drift"] = [drifted]
    plan["deferred_changes"] = [{"reason": "resource_config_unknown", "resource_change": drifted}]
    plan["resource_changes"] = [c for c in plan["resource_changes"] if c is not real_change]
    assert SECRET in json.dumps(drifted)

    redacted = assert_fully_redacted(plan, BASIC_SECRETS)

    assert redacted["resource_drift"][0]["change"]["before"]["triggers"]["secret"] == SENSITIVE
    deferred = redacted["deferred_changes"][0]["resource_change"]["change"]
    assert deferred["after"]["triggers"]["plain"] == "plain-value"
    # Drift and deferred changes are not part of terraform's "Plan:" counts.
    assert summary_counts(plan)["change"] == 0


# --- marker semantics (synthetic, small) ---------------------------------------------


def _change(before: Any, before_marker: Any, after: Any, after_marker: Any) -> dict[str, Any]:
    return {
        "resource_changes": [
            {
                "address": "x.y",
                "mode": "managed",
                "change": {
                    "actions": ["update"],
                    "before": before,
                    "before_sensitive": before_marker,
                    "after": after,
                    "after_sensitive": after_marker,
                },
            }
        ]
    }


def _redacted_change(plan: dict[str, Any]) -> tuple[dict[str, Any], int]:
    redacted, count = redact_plan(plan)
    change: dict[str, Any] = redacted["resource_changes"][0]["change"]
    return change, count


def test_true_marker_replaces_the_whole_subtree() -> None:
    value = {"a": {"b": [1, 2]}, "c": "visible-text"}
    other = {"a": "x", "c": "also-visible-text"}
    change, count = _redacted_change(_change(value, {"a": True}, other, True))
    assert change["before"] == {"a": SENSITIVE, "c": "visible-text"}
    assert change["after"] == SENSITIVE
    assert count == 2


def test_list_markers_follow_indexes() -> None:
    value = {"l": ["open-0", "hush-hush-1", "open-2"]}
    marker = {"l": [False, True, False]}
    change, count = _redacted_change(_change(None, False, value, marker))
    assert change["after"] == {"l": ["open-0", SENSITIVE, "open-2"]}
    assert change["before"] is None
    assert count == 1


def test_shape_mismatch_is_redacted_whole() -> None:
    """A marker that does not fit the value (a set marked per element, a future format):
    replace the value rather than guess which part is safe."""
    plan = _change(["a", "b", "c"], [False, True], {"k": "v"}, [True])
    change, count = _redacted_change(plan)
    assert change["before"] == SENSITIVE
    assert change["after"] == SENSITIVE
    assert count == 2


def test_all_false_markers_keep_values() -> None:
    value = {"l": ["x"], "m": {"k": "v"}}
    plan = _change(value, {"l": [False], "m": {}}, value, False)
    change, count = _redacted_change(plan)
    assert change["before"] == value
    assert change["after"] == value
    assert count == 0


def test_unknown_marker_type_counts_as_sensitive() -> None:
    change, count = _redacted_change(_change("value-one", "yes", "value-two", 1))
    assert (change["before"], change["after"], count) == (SENSITIVE, SENSITIVE, 2)


def test_sensitive_strings_are_scrubbed_everywhere_but_short_ones_are_not() -> None:
    plan = _change({"pw": "hunter2-long"}, {"pw": True}, {"pw": "abc"}, {"pw": True})
    plan["resource_changes"][0]["change"]["after_unknown"] = {}
    plan["configuration"] = {"note": "prefix hunter2-long suffix", "short": "abc"}
    redacted, count = redact_plan(plan)
    assert redacted["configuration"] == {"note": f"prefix {SENSITIVE} suffix", "short": "abc"}
    assert count == 3


def test_what_is_scrubbed_by_value_elsewhere() -> None:
    """Strings of a sensitive variable are secrets wherever they appear; strings inside a
    sensitive output (a whole object) are not, or common words would vanish plan-wide."""
    plan = {
        "variables": {"db": {"value": {"user": "admin-user-1", "region": "eu-west-1"}}},
        "planned_values": {
            "outputs": {"o": {"sensitive": True, "value": {"zone": "us-east-1a"}}},
        },
        "configuration": {
            "root_module": {"variables": {"db": {"sensitive": True}}},
            "note": "admin-user-1 in us-east-1a",
        },
    }
    redacted, count = redact_plan(plan)
    assert redacted["configuration"]["note"] == f"{SENSITIVE} in us-east-1a"
    assert redacted["variables"]["db"]["value"] == SENSITIVE
    assert redacted["planned_values"]["outputs"]["o"]["value"] == SENSITIVE
    assert count == 3


def test_sensitive_output_declaration_and_variable_without_declaration() -> None:
    plan = {
        "variables": {"undeclared": {"value": "kept-as-is"}},
        "configuration": {
            "root_module": {
                "outputs": {
                    "o": {"sensitive": True, "expression": {"constant_value": "literal-x1"}}
                }
            }
        },
    }
    redacted, count = redact_plan(plan)
    output = redacted["configuration"]["root_module"]["outputs"]["o"]
    assert output["expression"]["constant_value"] == SENSITIVE
    assert redacted["variables"]["undeclared"]["value"] == "kept-as-is"
    assert count == 1


def test_summary_counts_like_terraform() -> None:
    def rc(address: str, actions: list[str], **extra: Any) -> dict[str, Any]:
        change: dict[str, Any] = {"actions": actions}
        if "importing" in extra:
            change["importing"] = extra.pop("importing")
        return {"address": address, "mode": "managed", "change": change, **extra}

    plan = {
        "resource_changes": [
            rc("a.create", ["create"]),
            rc("a.update", ["update"]),
            rc("a.delete", ["delete"]),
            rc("a.replace1", ["delete", "create"]),
            rc("a.replace2", ["create", "delete"]),
            rc("a.noop", ["no-op"]),
            rc("a.imported", ["no-op"], importing={"id": "i-1"}),
            rc("a.moved", ["no-op"], previous_address="a.old"),
            rc("a.forget", ["forget"]),
            {"address": "data.d.read", "mode": "data", "change": {"actions": ["read"]}},
            {"address": "data.d.gone", "mode": "data", "change": {"actions": ["delete"]}},
        ]
    }
    summary = summarize_plan(plan)
    assert summary_counts(plan) == {
        "add": 3,
        "change": 1,
        "destroy": 3,
        "import": 1,
        "forget": 1,
    }
    assert summary.counts_line() == (
        "Plan: 1 to import, 3 to add, 1 to change, 3 to destroy, 1 to forget."
    )
    listed = [r["address"] for r in summary.resources]
    assert "a.noop" not in listed
    assert {"a.imported", "a.moved", "data.d.read", "a.forget"} <= set(listed)
    moved = next(r for r in summary.resources if r["address"] == "a.moved")
    assert moved["previous_address"] == "a.old"


def test_summary_of_an_empty_or_odd_plan() -> None:
    assert summary_counts({}) == dict.fromkeys(COUNT_KEYS, 0)
    odd = {"resource_changes": [None, {"change": "nonsense"}, {"address": "a.b"}]}
    assert summarize_plan(odd).resources == []


# --- re-recording the fixtures ---------------------------------------------------------


def record_fixtures(scratch: Path) -> None:
    """Write ``*.plan.json`` and ``expected.json`` from every available terraform."""
    expected: dict[str, Any] = {}
    for version, terraform in terraform_binaries():
        env = isolated_env(scratch / f"env-{version}")
        flows: list[
            tuple[str, Callable[[Path, Path, Mapping[str, str]], list[Step]], tuple[str, ...]]
        ]
        flows = [("basic", basic_flow, ("create", "replace"))]
        if _version_tuple(version) >= (1, 7):
            flows.append(("modern", modern_flow, ("import",)))
        for flow_name, flow, keep in flows:
            for step, plan, counts in flow(terraform, scratch / f"{flow_name}-{version}", env):
                if step not in keep:
                    continue
                name = f"{flow_name}-{version}-{step}"
                text = json.dumps(plan, separators=(",", ":"), sort_keys=False)
                (PLANS / f"{name}.plan.json").write_text(text + "\n", encoding="utf-8")
                expected[name] = {"terraform_version": version, "console_counts": counts}
    (PLANS / "expected.json").write_text(
        json.dumps(expected, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as scratch_dir:
        record_fixtures(Path(scratch_dir))
    sys.exit(0)


# --- issue 13: every sensitive string for the second pass (item 1), literals (item 3) ---------


def test_every_sensitive_string_is_collected_inner_elements_included() -> None:
    """before/after, prior_state, variables and outputs; the elements of sensitive maps, lists
    and sets too (unlike plan-wide scrubbing, the log pass takes them all, short ones too)."""
    plan, _ = _load("basic-1.11.4-create")
    collected = analyze_plan(plan).sensitive
    assert set(BASIC_SECRETS) <= collected
    assert "Pz7" in collected  # SHORT_SECRET_JSON: too short to scrub plan-wide, not for the log
    assert "plain-value" not in collected

    synthetic = {
        "variables": {"db": {"value": {"user": "admin-user-1", "ports": ["5432"]}}},
        "prior_state": {
            "values": {
                "root_module": {
                    "resources": [
                        {
                            "values": {"tags": {"k": "tag-secret-1"}, "name": "public-name"},
                            "sensitive_values": {"tags": True},
                        }
                    ]
                }
            }
        },
        "output_changes": {
            "o": {"before": ["set-a", "set-b"], "after": None, "before_sensitive": True}
        },
        "configuration": {"root_module": {"variables": {"db": {"sensitive": True}}}},
    }
    assert analyze_plan(synthetic).sensitive == {
        "admin-user-1",
        "5432",
        "tag-secret-1",
        "set-a",
        "set-b",
    }


def test_configuration_literals_are_replaced_structure_kept() -> None:
    """Provider blocks, resource literals (nested blocks and maps), defaults, module calls and
    counts lose their values; addresses, references, names, types and the summary stay."""
    plan, console = _load("basic-1.11.4-create")
    plan = copy.deepcopy(plan)
    plan["configuration"]["provider_config"] = {
        "aws": {
            "name": "aws",
            "full_name": "registry.terraform.io/hashicorp/aws",
            "expressions": {
                "secret_key": {"constant_value": "ProviderSecretKey-abc123"},
                "assume_role": [{"role_arn": {"constant_value": "arn:aws:iam::1:role/x"}}],
                "region": {"references": ["var.region"]},
            },
        }
    }
    resources = plan["configuration"]["root_module"].setdefault("resources", [])
    resources.append(
        {
            "address": "aws_glue_connection.c",
            "mode": "managed",
            "type": "aws_glue_connection",
            "name": "c",
            "expressions": {
                "connection_properties": {"constant_value": {"PASSWORD": "glue-Pa55-x1"}},
                "count": {"constant_value": 2},
            },
        }
    )
    result = analyze_plan(plan)
    text = json.dumps(result.plan)
    for literal in ("ProviderSecretKey-abc123", "glue-Pa55-x1", "arn:aws:iam::1:role/x"):
        assert literal not in text
    provider = result.plan["configuration"]["provider_config"]["aws"]
    assert provider["full_name"] == "registry.terraform.io/hashicorp/aws"
    assert provider["expressions"]["secret_key"] == {"constant_value": LITERAL}
    assert provider["expressions"]["region"] == {"references": ["var.region"]}
    glue = result.plan["configuration"]["root_module"]["resources"][-1]
    assert glue["address"] == "aws_glue_connection.c"
    assert glue["expressions"]["connection_properties"] == {"constant_value": {"PASSWORD": LITERAL}}
    assert result.literal_count >= 4
    assert_matches_console(result.plan, console)  # the summary is untouched
