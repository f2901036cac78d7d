"""Redact and summarise ``terraform show -json PLANFILE`` output (pure logic).

Plan JSON carries every sensitive value in clear, next to a *marker* that says which
parts are sensitive. A marker mirrors the value: ``true`` (the whole subtree is
sensitive), ``false``, an object of markers keyed like the value, or a list of markers
indexed like the value. Records are permanent, so wherever the value and its marker
disagree in shape we redact the whole subtree rather than guess.

Marker conventions found in real plans (terraform 1.0 to 1.11, tofu alike):

* ``before``/``after`` with ``before_sensitive``/``after_sensitive``: resource_changes,
  resource_drift, deferred_changes, output_changes.
* ``values`` with ``sensitive_values``: resources in planned_values and prior_state,
  including nested ``child_modules``.
* ``{"sensitive": true, "value": ...}``: outputs in planned_values / prior_state; also
  ``{"sensitive": true, "default": ...}`` for variable declarations and
  ``{"sensitive": true, "expression": {"constant_value": ...}}`` for output declarations
  in ``configuration``.
* root ``variables`` hold bare values; sensitivity is declared in
  ``configuration.root_module.variables``. A literal passed to a sensitive child-module
  variable shows up in ``module_calls.*.expressions.*.constant_value``.

These rules are applied wherever the pattern occurs, so new plan sections that follow the
same conventions are covered too; the same walk reads a state (``show -json`` without a plan
file). Finally, terraform does not mark values a provider derives from a sensitive input
(e.g. ``null_data_source.outputs`` echoing a sensitive ``inputs``), so every occurrence of an
already-redacted string elsewhere in the plan is replaced as well (sensitive strings of at
least MIN_PROPAGATED_LENGTH characters; see ``_Redactor.replace`` for which ones).

Every string the plan marks sensitive (elements of sensitive maps, lists and sets included) is
also returned, in memory only, for the log's second redaction pass (``secondpass``).

``configuration`` is the source code: every literal in it (``constant_value``, variable
defaults; provider blocks included) is replaced by ``(redacted literal)`` even where nothing
marks it sensitive, since a provider's ``secret_key = "..."`` or a resource's
``connection_properties = { PASSWORD = "..." }`` is marked nowhere in configuration.
Addresses, references, types, names and the summary stay.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from tfaudit_ci.result import PlanCounts

SENSITIVE = "(sensitive value)"
LITERAL = "(redacted literal)"
# Keys of ``configuration`` whose value is a literal written in the source.
_LITERAL_KEYS = ("constant_value", "default")

# Shorter sensitive strings are not searched for elsewhere: replacing every "1" or "yes"
# in a plan would destroy it while protecting nothing worth protecting.
MIN_PROPAGATED_LENGTH = 6

_MARKED_PAIRS = (
    ("before", "before_sensitive"),
    ("after", "after_sensitive"),
    ("values", "sensitive_values"),
)
# Keys of a ``"sensitive": true`` object that hold (or may hold) the value itself.
_SENSITIVE_OBJECT_VALUE_KEYS = ("value", "default")  # output value, variable default


@dataclass
class PlanSummary(PlanCounts):
    forget: int = 0  # terraform >= 1.7 "removed" blocks with destroy = false
    resources: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "forget": self.forget,
            "resources": [dict(r) for r in self.resources],
        }

    def counts_line(self) -> str:
        """The same wording as terraform's own "Plan:" line (newer-release style)."""
        parts = []
        if self.import_:
            parts.append(f"{self.import_} to import")
        parts += [f"{self.add} to add", f"{self.change} to change", f"{self.destroy} to destroy"]
        if self.forget:
            parts.append(f"{self.forget} to forget")
        return "Plan: " + ", ".join(parts) + "."


@dataclass
class PlanRedaction:
    """The redacted plan, its counts, and (memory only) every string it marks sensitive."""

    plan: dict[str, Any]
    sensitive_count: int
    literal_count: int
    sensitive: frozenset[str] = field(default=frozenset(), repr=False)


class _Redactor:
    def __init__(self) -> None:
        self.count = 0
        self.secrets: set[str] = set()
        self.everything: set[str] = set()  # every sensitive string, inner ones included

    def replace(self, value: Any, *, remember_inner: bool = False) -> str:
        """Count a replacement and remember the secret to scrub its copies elsewhere.

        A sensitive scalar string is remembered. Strings *inside* a sensitive container
        (a whole output or resource marked sensitive) are only remembered for variable
        values: a sensitive output holding a whole object would otherwise scrub every
        "us-east-1" or "postgres" from the plan, while its truly secret parts are marked
        individually where they come from.
        """
        self.count += 1
        if isinstance(value, str) or remember_inner:
            self._remember(value)
        self.everything.update(_strings(value))
        return SENSITIVE

    def _remember(self, value: Any) -> None:
        if isinstance(value, str):
            if len(value) >= MIN_PROPAGATED_LENGTH and value not in SENSITIVE:
                self.secrets.add(value)
        elif isinstance(value, dict):
            for item in value.values():
                self._remember(item)
        elif isinstance(value, list):
            for item in value:
                self._remember(item)

    def apply_marker(self, value: Any, marker: Any) -> Any:
        """Return ``value`` with every part ``marker`` flags replaced by SENSITIVE."""
        if marker is True:
            return self.replace(value)
        if not _any_sensitive(marker):
            return value
        if isinstance(marker, dict) and isinstance(value, dict):
            return {
                key: self.apply_marker(item, marker.get(key, False)) for key, item in value.items()
            }
        if isinstance(marker, list) and isinstance(value, list) and len(marker) == len(value):
            return [self.apply_marker(item, mark) for item, mark in zip(value, marker, strict=True)]
        if value is None:
            # Unknown or absent value: nothing to leak.
            return None
        # Shape mismatch (or an unexpected marker type) with something sensitive inside.
        return self.replace(value)

    def walk(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self.walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        node = dict(node)
        for value_key, marker_key in _MARKED_PAIRS:
            if value_key in node and marker_key in node:
                node[value_key] = self.apply_marker(node[value_key], node[marker_key])
        if node.get("sensitive") is True:
            for key in _SENSITIVE_OBJECT_VALUE_KEYS:
                if key in node and node[key] != SENSITIVE:
                    # A variable's default is a secret input: remember all of it.
                    node[key] = self.replace(node[key], remember_inner=key == "default")
            expression = node.get("expression")
            if isinstance(expression, dict) and "constant_value" in expression:
                node["expression"] = {**expression, "constant_value": SENSITIVE}
                self.replace(expression["constant_value"])
        return {key: self.walk(item) for key, item in node.items()}

    def scrub_strings(self, node: Any) -> Any:
        """Replace leftover occurrences of known sensitive strings anywhere."""
        if not self.secrets:
            return node
        # Longest first, so a secret that contains another is replaced whole.
        ordered = sorted(self.secrets, key=lambda secret: (-len(secret), secret))
        pattern = re.compile("|".join(re.escape(secret) for secret in ordered))
        return self._scrub(node, pattern)

    def _scrub(self, node: Any, pattern: re.Pattern[str]) -> Any:
        if isinstance(node, str):
            if node == SENSITIVE:
                return node
            text, hits = pattern.subn(SENSITIVE, node)
            self.count += hits
            return text
        if isinstance(node, list):
            return [self._scrub(item, pattern) for item in node]
        if isinstance(node, dict):
            return {key: self._scrub(item, pattern) for key, item in node.items()}
        return node


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [] if node == SENSITIVE else [node]
    if isinstance(node, dict):
        return [text for item in node.values() for text in _strings(item)]
    if isinstance(node, list):
        return [text for item in node for text in _strings(item)]
    return []


def _replace_literals(node: Any) -> tuple[Any, int]:
    """Every scalar in ``node`` (but null and an already redacted value) -> LITERAL; map keys
    and list lengths are kept."""
    if isinstance(node, dict):
        pairs = [(key, _replace_literals(item)) for key, item in node.items()]
        return {key: item for key, (item, _) in pairs}, sum(count for _, (_, count) in pairs)
    if isinstance(node, list):
        pairs_ = [_replace_literals(item) for item in node]
        return [item for item, _ in pairs_], sum(count for _, count in pairs_)
    if node is None or node in (SENSITIVE, LITERAL):
        return node, 0
    return LITERAL, 1


def _redact_configuration_literals(node: Any) -> tuple[Any, int]:
    """Walk ``configuration``: literal-holding keys lose their values, nothing else does."""
    if isinstance(node, list):
        pairs = [_redact_configuration_literals(item) for item in node]
        return [item for item, _ in pairs], sum(count for _, count in pairs)
    if not isinstance(node, dict):
        return node, 0
    result: dict[str, Any] = {}
    total = 0
    for key, item in node.items():
        if key in _LITERAL_KEYS:
            result[key], count = _replace_literals(item)
        else:
            result[key], count = _redact_configuration_literals(item)
        total += count
    return result, total


def _any_sensitive(marker: Any) -> bool:
    if marker is True:
        return True
    if isinstance(marker, dict):
        return any(_any_sensitive(item) for item in marker.values())
    if isinstance(marker, list):
        return any(_any_sensitive(item) for item in marker)
    # Unexpected truthy marker types (a future format?) count as sensitive: be conservative.
    return marker not in (False, None) and bool(marker)


def _declared_sensitive(holder: Any, key: str, declaration: Any) -> TypeGuard[dict[str, Any]]:
    """``holder[key]`` is given to a variable whose declaration says ``sensitive = true``."""
    return (
        isinstance(holder, dict)
        and key in holder
        and isinstance(declaration, dict)
        and declaration.get("sensitive") is True
    )


def _redact_declared_variables(plan: dict[str, Any], redactor: _Redactor) -> None:
    """Root ``variables`` have no marker of their own; their declaration has it."""
    variables = plan.get("variables")
    configuration = plan.get("configuration")
    if not isinstance(variables, dict) or not isinstance(configuration, dict):
        return
    root = configuration.get("root_module")
    declarations = root.get("variables") if isinstance(root, dict) else None
    if not isinstance(declarations, dict):
        return
    for name, declaration in declarations.items():
        entry = variables.get(name)
        if _declared_sensitive(entry, "value", declaration):
            redacted = redactor.replace(entry["value"], remember_inner=True)
            variables[name] = {**entry, "value": redacted}


def _redact_module_call_literals(module: Any, redactor: _Redactor) -> None:
    """A literal passed to a sensitive child-module variable is a ``constant_value``."""
    if not isinstance(module, dict):
        return
    calls = module.get("module_calls")
    if not isinstance(calls, dict):
        return
    for call in calls.values():
        if not isinstance(call, dict):
            continue
        child = call.get("module")
        expressions = call.get("expressions")
        declarations = child.get("variables") if isinstance(child, dict) else None
        if isinstance(expressions, dict) and isinstance(declarations, dict):
            for name, declaration in declarations.items():
                expression = expressions.get(name)
                if _declared_sensitive(expression, "constant_value", declaration):
                    redacted = redactor.replace(expression["constant_value"])
                    expressions[name] = {**expression, "constant_value": redacted}
        _redact_module_call_literals(child, redactor)


def analyze_plan(plan: dict[str, Any]) -> PlanRedaction:
    """Redact a plan (or a state) as described above; the input is not modified."""
    redactor = _Redactor()
    working = copy.deepcopy(plan)
    _redact_declared_variables(working, redactor)
    configuration = working.get("configuration")
    if isinstance(configuration, dict):
        _redact_module_call_literals(configuration.get("root_module"), redactor)
    walked = redactor.scrub_strings(redactor.walk(working))
    literals = 0
    if isinstance(walked.get("configuration"), dict):
        walked["configuration"], literals = _redact_configuration_literals(walked["configuration"])
    return PlanRedaction(walked, redactor.count, literals, frozenset(redactor.everything))


def redact_plan(plan: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Deep copy of ``plan`` with every value terraform marks sensitive replaced, and every
    configuration literal. Returns the copy and the number of sensitive values replaced."""
    result = analyze_plan(plan)
    return result.plan, result.sensitive_count


def _actions(change: Any) -> list[str]:
    if not isinstance(change, dict):
        return []
    actions = change.get("actions")
    if not isinstance(actions, list):
        return []
    return [str(action) for action in actions]


def summarize_plan(plan: dict[str, Any]) -> PlanSummary:
    """Count changes exactly like terraform's "Plan: X to add, ..." line.

    Replacement counts as one add and one destroy; reads and no-ops count nothing; data
    sources never count; an import counts even when the resource is otherwise unchanged.
    """
    summary = PlanSummary()
    changes = plan.get("resource_changes")
    if not isinstance(changes, list):
        return summary
    for resource in changes:
        if not isinstance(resource, dict):
            continue
        change = resource.get("change")
        actions = _actions(change)
        importing = isinstance(change, dict) and change.get("importing") is not None
        previous = resource.get("previous_address")
        moved = isinstance(previous, str) and previous != resource.get("address")
        if resource.get("mode", "managed") == "managed":
            _count(summary, actions, importing)
        if (actions and actions != ["no-op"]) or importing or moved:
            entry: dict[str, Any] = {
                "address": resource.get("address"),
                "actions": actions,
                "importing": importing,
            }
            if moved:
                entry["previous_address"] = previous
            reason = resource.get("action_reason")
            if isinstance(reason, str):
                entry["action_reason"] = reason
            summary.resources.append(entry)
    return summary


def _count(summary: PlanSummary, actions: list[str], importing: bool) -> None:
    if importing:
        summary.import_ += 1
    if "create" in actions:
        summary.add += 1
    if "delete" in actions:
        summary.destroy += 1
    if "update" in actions:
        summary.change += 1
    if "forget" in actions:
        summary.forget += 1
