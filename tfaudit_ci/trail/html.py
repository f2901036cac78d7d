"""The evidence pack as ONE self-contained HTML file: inline CSS, inline SVG, one small inline
script, no external asset, works offline, prints cleanly to PDF.

Records are attacker-influenced, so every value goes through ``esc`` (text and attributes),
links are kept only for ``http(s)`` URLs, and a Content-Security-Policy allows no network,
no other script than ours (pinned by its hash) and no plugin: a record that got past the
escaping still could not run code or call home.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from tfaudit_ci.record import iso
from tfaudit_ci.trail.evidence import STATUSES, DayCount, Evidence, RunDetail
from tfaudit_ci.trail.render import change_request, counts, short_ref, status_text, when
from tfaudit_ci.verify.model import ERROR
from tfaudit_ci.verify.report import problem_line

COLORS = {
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "cancelled": "#f9a825",
    "crashed": "#6a1b9a",
    "other": "#757575",
}

CSS = """
:root { --fg:#1b1f23; --muted:#5f6b76; --line:#d8dee4; --ok:#2e7d32; --bad:#c62828;
  --warn:#9a6700; --bg:#fff; --soft:#f6f8fa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  color: var(--fg); background: var(--bg); margin: 0 auto; max-width: 1200px; padding: 24px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px;
  border-bottom: 1px solid var(--line); padding-bottom: 4px; }
.muted { color: var(--muted); } code, pre, .mono { font-family: "DejaVu Sans Mono",
  ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 12px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line);
  vertical-align: top; overflow-wrap: break-word; }
td.nw, .pill { white-space: nowrap; } td { max-width: 420px; }
th { background: var(--soft); font-weight: 600; }
table.facts th { width: 180px; background: none; color: var(--muted); font-weight: 500; }
.verdict { border-radius: 8px; padding: 14px 18px; margin: 16px 0; border: 2px solid; }
.verdict.ok { border-color: var(--ok); background: #edf7ee; }
.verdict.bad { border-color: var(--bad); background: #fdecec; }
.verdict .big { font-size: 22px; font-weight: 700; }
.ok { color: var(--ok); } .bad { color: var(--bad); } .warn { color: var(--warn); }
.pill { display: inline-block; padding: 0 8px; border-radius: 10px; color: #fff;
  font-size: 12px; font-weight: 600; }
details { border: 1px solid var(--line); border-radius: 6px; margin: 6px 0; padding: 0 10px; }
details > summary { cursor: pointer; padding: 6px 0; }
details[open] > summary { border-bottom: 1px solid var(--line); margin-bottom: 6px; }
details details { background: var(--soft); }
pre { white-space: pre-wrap; overflow-wrap: anywhere; background: var(--soft); padding: 8px;
  border-radius: 4px; max-height: 480px; overflow: auto; margin: 4px 0 8px; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin: 8px 0; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 140px; }
.card .n { font-size: 22px; font-weight: 700; }
.legend span { margin-right: 14px; } .legend i { display: inline-block; width: 10px;
  height: 10px; margin-right: 4px; border-radius: 2px; }
nav { margin: 8px 0; } nav a { margin-right: 12px; }
button { font: inherit; padding: 2px 10px; margin-right: 6px; }
svg { max-width: 100%; height: auto; }
@media print {
  body { max-width: none; padding: 0; font-size: 11px; }
  nav, button, .no-print { display: none !important; }
  h2 { break-after: avoid; } tr, .card, .verdict { break-inside: avoid; }
  details { border: none; padding: 0; } pre { max-height: none; overflow: visible; }
  a { color: inherit; text-decoration: none; }
  a[href^="http"]::after { content: " <" attr(href) ">"; font-size: 9px; color: #555; }
  @page { margin: 14mm 12mm; }
}
"""

SCRIPT = """
document.querySelectorAll('button[data-open]').forEach(function (b) {
  b.addEventListener('click', function () {
    var open = b.getAttribute('data-open') === '1';
    document.querySelectorAll('details.run').forEach(function (d) { d.open = open; });
  });
});
"""


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def link(url: str | None, text: str | None = None) -> str:
    """A link only for http(s) URLs; anything else (``javascript:``...) is shown as text."""
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return esc(text or url)
    return f'<a href="{esc(url)}" rel="noopener noreferrer">{esc(text or url)}</a>'


def _csp() -> str:
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    return (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    )


def render(evidence: Evidence) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{esc(_csp())}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>tfaudit evidence: {esc(evidence.stream)} {esc(_day(evidence.since))} to "
        f"{esc(_day(evidence.until))}</title>",
        f"<style>{CSS}</style></head><body>",
        _header(evidence),
        _verdict(evidence),
        _summary(evidence),
        _timeline(evidence.timeline()),
        _applies(evidence.applies),
        _resources(evidence),
        _runs(evidence.runs),
        _about(evidence),
        f"<script>{SCRIPT}</script>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _day(moment: dt.datetime) -> str:
    return iso(moment)[:10]


def _header(ev: Evidence) -> str:
    return (
        f"<h1>Terraform audit evidence: {esc(ev.stream)}</h1>"
        f'<div class="muted">Runs started from <b>{esc(iso(ev.since))}</b> until '
        f"<b>{esc(iso(ev.until))}</b> &middot; store <code>{esc(ev.store)}</code> &middot; "
        f"generated {esc(iso(ev.generated_at))} by tfaudit-ci</div>"
        '<nav><a href="#verdict">Verdict</a><a href="#timeline">Timeline</a>'
        '<a href="#applies">Applies</a><a href="#resources">Resources</a>'
        '<a href="#runs">Runs</a><a href="#about">About</a></nav>'
    )


def _verdict(ev: Evidence) -> str:
    result = ev.verdict
    ok = result.ok
    label = "VERIFIED" if ok else "VERIFICATION FAILED"
    problems = sorted(result.problems, key=lambda p: (p.seq if p.seq is not None else -1, p.code))
    items = "".join(
        f'<li class="{"bad" if p.severity == ERROR else "warn"}">'
        f'<span class="mono">{esc(problem_line(p))}</span></li>'
        for p in problems
    )
    notes = "".join(f"<li>{esc(n)}</li>" for n in result.notes)
    return (
        f'<section id="verdict" class="verdict {"ok" if ok else "bad"}">'
        f'<div class="big" id="verdict-text">{"✓" if ok else "✗"} {label}</div>'
        f'<div class="mono" id="verdict-line">{esc(ev.verdict_line())}</div>'
        + (f'<h3>Problems ({len(problems)})</h3><ul id="problems">{items}</ul>' if items else "")
        + (f'<ul class="muted">{notes}</ul>' if notes else "")
        + "</section>"
    )


def _summary(ev: Evidence) -> str:
    bindings = ev.bindings
    unreviewed = sum(1 for b in bindings if not b.ok)
    failed = sum(1 for r in ev.runs if r.row.status in ("failed", "crashed"))
    actors = {r.row.ci.actor for r in ev.runs if r.row.ci.actor}
    cards = [
        ("runs", len(ev.runs), "runs-count"),
        ("applies", len(ev.applies), "applies-count"),
        ("applies without a reviewed plan", unreviewed, "unreviewed-count"),
        ("failed runs", failed, "failed-count"),
        ("actors", len(actors), "actors-count"),
    ]
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="n" id="{cid}">{n}</div>'
            f'<div class="muted">{esc(label)}</div></div>'
            for label, n, cid in cards
        )
        + "</div>"
    )


def _timeline(days: Sequence[DayCount]) -> str:
    width, height, left, bottom, top = 960, 220, 36, 24, 10
    peak = max((d.total for d in days), default=0) or 1
    slot = (width - left - 10) / max(len(days), 1)
    bar = max(1.0, slot * 0.8)
    scale = (height - bottom - top) / peak
    shapes = [
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 5}" y2="{height - bottom}" '
        'stroke="#999"/>',
        f'<text x="{left - 6}" y="{top + 10}" text-anchor="end" font-size="11">{peak}</text>',
        f'<text x="{left - 6}" y="{height - bottom}" text-anchor="end" font-size="11">0</text>',
    ]
    for index, day in enumerate(days):
        x = left + index * slot + (slot - bar) / 2
        y = float(height - bottom)
        for status in STATUSES:
            n = day.counts.get(status, 0)
            if not n:
                continue
            h = n * scale
            y -= h
            shapes.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{COLORS[status]}"><title>{esc(day.day.isoformat())}: {n} {status}'
                "</title></rect>"
            )
    for index in sorted({0, len(days) // 2, len(days) - 1}) if days else []:
        x = left + index * slot + slot / 2
        anchor = "start" if index == 0 else "end" if index == len(days) - 1 else "middle"
        x = left if anchor == "start" else width - 5 if anchor == "end" else x
        shapes.append(
            f'<text x="{x:.1f}" y="{height - 6}" text-anchor="{anchor}" font-size="11">'
            f"{esc(days[index].day.isoformat())}</text>"
        )
    legend = "".join(f'<span><i style="background:{COLORS[s]}"></i>{s}</span>' for s in STATUSES)
    return (
        '<h2 id="timeline">Runs per day, by status (UTC)</h2>'
        f'<svg id="timeline-chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="runs per day">{"".join(shapes)}</svg>'
        f'<div class="legend muted">{legend}</div>'
    )


def _binding_cell(run: RunDetail) -> str:
    binding = run.binding
    if binding is None:
        return '<span class="muted">n/a</span>'
    if binding.ok and binding.plan is not None:
        target = f"seq-{binding.plan.seq}"
        return (
            f'<span class="ok">✓ reviewed</span> '
            f'(<a href="#{target}">plan seq {binding.plan.seq}</a>)'
        )
    return (
        f'<span class="bad">✗ {esc(binding.binding.value)}</span>'
        f"<br><small>{esc(binding.message)}</small>"
    )


def _applies(applies: Sequence[RunDetail]) -> str:
    rows = "".join(
        f'<tr class="apply-row"><td><a href="#seq-{r.row.seq}">{r.row.seq}</a></td>'
        f'<td class="nw">{esc(when(r.row))}</td><td>{_status(r)}</td>'
        f"<td>{esc(r.row.ci.actor)}</td>"
        f'<td class="mono">{esc((r.row.ci.commit or "")[:10])}</td>'
        f"<td>{esc(short_ref(r.row.ci.ref))}</td>"
        f"<td>{esc(change_request(r.row))}</td>"
        f'<td class="nw">{esc(counts(r.row))}</td>'
        f"<td>{_binding_cell(r)}</td><td class='nw'>{link(r.row.ci.run_url, 'CI run')}</td></tr>"
        for r in sorted(applies, key=lambda r: r.row.seq, reverse=True)
    )
    head = (
        "<tr><th>seq</th><th>finished (UTC)</th><th>status</th><th>actor</th><th>commit</th>"
        "<th>ref</th><th>PR/MR</th><th>changes</th><th>plan binding</th><th>CI</th></tr>"
    )
    body = rows or '<tr><td colspan="10" class="muted">no applies in this period</td></tr>'
    return (
        f'<h2 id="applies">Applies ({len(applies)})</h2>'
        f'<table id="applies-table">{head}{body}</table>'
    )


def _resources(ev: Evidence) -> str:
    top = ev.top_resources()
    rows = "".join(
        f'<tr class="resource-row"><td class="mono">{esc(r.address)}</td><td>{r.changes}</td>'
        f"<td>{esc(', '.join(r.actions))}</td>"
        f'<td><a href="#seq-{r.last_seq}">seq {r.last_seq}</a> by {esc(r.last_actor)}</td></tr>'
        for r in top
    )
    head = "<tr><th>address</th><th>applied changes</th><th>actions</th><th>last</th></tr>"
    body = rows or '<tr><td colspan="4" class="muted">no resource changes applied</td></tr>'
    return (
        '<h2 id="resources">Resources changed most often</h2>'
        f'<table id="resources-table">{head}{body}</table>'
    )


def _status(run: RunDetail) -> str:
    status = run.row.status if run.row.readable else "other"
    color = COLORS.get(status or "other", COLORS["other"])
    return f'<span class="pill" style="background:{color}">{esc(status_text(run.row))}</span>'


def _runs(runs: Sequence[RunDetail]) -> str:
    items = "".join(_run(r) for r in sorted(runs, key=lambda r: r.row.seq, reverse=True))
    return (
        f'<h2 id="runs">Runs ({len(runs)}), newest first</h2>'
        '<div class="no-print"><button data-open="1">expand all</button>'
        '<button data-open="0">collapse all</button></div>' + items
    )


def _run(run: RunDetail) -> str:
    row = run.row
    mark = '<span class="ok">✓</span>' if run.ok else '<span class="bad">✗</span>'
    summary = (
        f"{mark} <b>seq {row.seq}</b> &middot; {esc(when(row))} &middot; {_status(run)} &middot; "
        f"{esc(row.ci.actor or '-')} &middot; <code>{esc(row.command_text() or row.error)}</code>"
    )
    facts = [
        ("started", iso(row.started_at) if row.started_at else "-"),
        ("finished", iso(row.finished_at) if row.finished_at else "-"),
        ("actor", f"{row.ci.actor or '-'} ({row.ci.provider})"),
        ("repository", row.ci.repository),
        ("commit", row.ci.commit),
        ("ref", row.ci.ref),
        ("PR/MR", change_request(row)),
        ("workspace", row.workspace),
        ("tool", f"{row.tool_name or '?'} {row.tool_version or ''}"),
        ("plan file sha256", row.plan.plan_file_sha256 if row.plan else None),
        ("identity", row.identity),
        ("record sha256", row.record_sha256),
        ("run folder", row.run_folder),
    ]
    table = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v or '-')}</td></tr>" for k, v in facts)
    table += f"<tr><th>CI run</th><td>{link(row.ci.run_url) or '-'}</td></tr>"
    return (
        f'<details class="run" id="seq-{row.seq}"><summary>{summary}</summary>'
        f'<table class="facts">{table}</table>'
        f"{_checks(run)}{_changes(run)}{_artifacts(run)}{_log(run)}</details>"
    )


def _checks(run: RunDetail) -> str:
    lines = [
        f'<li class="{"bad" if p.severity == ERROR else "warn"}">'
        f"{'✗' if p.severity == ERROR else '!'} {esc(p.message)} <code>[{esc(p.code)}]</code></li>"
        for p in run.problems
    ]
    if not run.problems:
        lines.append(
            '<li class="ok">✓ record, chain link, signature (when a key was given), artifacts, '
            "locks and identity: every check of verify passed</li>"
        )
    if run.binding is not None:
        cls, mark = ("ok", "✓") if run.binding.ok else ("bad", "✗")
        lines.append(f'<li class="{cls}">{mark} reviewed plan: {esc(run.binding.message)}</li>')
    for note in run.row.notes:
        lines.append(f'<li class="warn">! {esc(note)}</li>')
    return f'<h4>Checks</h4><ul class="checks">{"".join(lines)}</ul>'


def _changes(run: RunDetail) -> str:
    if not run.changes:
        return ""
    rows = "".join(
        f"<tr><td>{esc(c.action.value)}</td><td class='mono'>{esc(c.address)}</td>"
        f"<td>{esc(c.source)}</td></tr>"
        for c in run.changes
    )
    counts_text = counts(run.row)
    return (
        f"<details><summary>Plan: {esc(counts_text or 'resource changes')} "
        f"({len(run.changes)} resources)</summary><table><tr><th>action</th><th>address</th>"
        f"<th>from</th></tr>{rows}</table></details>"
    )


def _artifacts(run: RunDetail) -> str:
    rows = "".join(
        f"<tr><td>{esc(a.name)}</td><td class='mono'>{esc(a.key)}</td>"
        f"<td class='mono'>{esc(a.version_id)}</td><td class='mono'>{esc(a.sha256)}</td>"
        f"<td>{esc(a.size)}</td></tr>"
        for a in run.row.artifacts
    )
    if not rows:
        return ""
    return (
        "<details><summary>Artifacts</summary><table><tr><th>name</th><th>key</th>"
        f"<th>version</th><th>sha256</th><th>bytes</th></tr>{rows}</table></details>"
    )


def _log(run: RunDetail) -> str:
    note = f" ({esc(run.log_note)})" if run.log_note else ""
    if run.log is None:
        return f'<p class="muted">Output log not embedded{note}.</p>' if run.log_note else ""
    return (
        f"<details><summary>Output log (redacted){note}</summary>"
        f'<pre class="log">{esc(run.log)}</pre></details>'
    )


def _about(ev: Evidence) -> str:
    versions = "".join(
        f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in ev.tool_versions().items()
    )
    facts: Iterable[tuple[str, object]] = (
        ("store", ev.store),
        ("stream", ev.stream),
        ("period", f"{iso(ev.since)} to {iso(ev.until)} (runs started in it)"),
        ("policy", f"{ev.policy.lock_mode}, at least {ev.policy.retention_days} days"),
        ("plans searched in", ", ".join([ev.stream, *ev.plan_streams])),
        ("generated", iso(ev.generated_at)),
        ("record schema", "tfaudit.record/v1"),
    )
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts)
    return (
        '<h2 id="about">About this report</h2>'
        f'<table class="facts">{rows}{versions}</table>'
        '<p class="muted">The verdict comes from the same checks as <code>tfaudit verify</code> '
        "over this period; re-run <code>tfaudit report</code> or <code>tfaudit verify</code> "
        "to check it again against the store. The machine-readable form of this report is "
        "<code>tfaudit report --format json</code>.</p>"
    )
