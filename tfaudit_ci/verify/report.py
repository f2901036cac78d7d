"""Verify output: one line per problem, an ``N/M records valid`` summary, or JSON."""

from __future__ import annotations

from typing import Any

from tfaudit_ci.verify.model import ERROR, Problem, VerifyResult


def problem_line(problem: Problem) -> str:
    # A seq says where in the chain; keys (in --json) are for problems outside any record.
    where = f"seq {problem.seq}" if problem.seq is not None else (problem.key or "stream")
    label = "ERROR" if problem.severity is ERROR else "WARNING"
    return f"{label:<7} {where}: {problem.message} [{problem.code.value}]"


def _sort_key(problem: Problem) -> tuple[int, str, str]:
    return (problem.seq if problem.seq is not None else 1 << 62, problem.key or "", problem.code)


def summary_line(result: VerifyResult) -> str:
    errors, warnings = len(result.errors), len(result.warnings)
    span = ""
    if result.first_seq is not None:
        span = f", seq {result.first_seq}..{result.last_seq}"
    verdict = "OK" if result.ok else "FAILED"
    notes = "; ".join(result.notes)
    return (
        f"tfaudit verify {verdict}: {result.records_valid}/{result.records_total} records valid, "
        f"{result.artifacts_valid}/{result.artifacts_total} artifacts valid, "
        f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)} "
        f"(stream {result.stream} at {result.store}{span})" + (f"; {notes}" if notes else "")
    )


def text_lines(result: VerifyResult, *, verbose: bool = False) -> list[str]:
    lines = []
    for problem in sorted(result.problems, key=_sort_key):
        lines.append(problem_line(problem))
        if verbose and problem.traceback:
            lines.extend("        " + line for line in problem.traceback.rstrip().splitlines())
    return [*lines, summary_line(result)]


def to_json(result: VerifyResult, *, verbose: bool = False) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "store": result.store,
        "stream": result.stream,
        "head": result.head,
        "first_seq": result.first_seq,
        "last_seq": result.last_seq,
        "records": {"valid": result.records_valid, "total": result.records_total},
        "artifacts": {"valid": result.artifacts_valid, "total": result.artifacts_total},
        "requests": {
            "total": result.requests,
            "per_record": round(result.requests / result.records_total, 2)
            if result.records_total
            else None,
        },
        "errors": len(result.errors),
        "warnings": len(result.warnings),
        "problems": [p.to_dict(verbose=verbose) for p in sorted(result.problems, key=_sort_key)],
        "notes": result.notes,
        "summary": summary_line(result),
    }
