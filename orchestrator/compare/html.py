"""report.html: one self-contained file (inline CSS, images as data URIs, no script, nothing fetched)."""

from __future__ import annotations

import base64
import json
from html import escape
from typing import Any

from orchestrator.compare.fmt import format_bytes, format_loss, format_seconds
from orchestrator.compare.rundata import ArmData

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1200px;padding:0 16px;
color:#1d2430;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde2ea;padding-bottom:4px}
.muted{color:#667085}table{border-collapse:collapse;width:100%;margin:6px 0}
th,td{border:1px solid #dde2ea;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f9;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.best{font-weight:700;color:#166534}
.status{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.finished{background:#dcfce7;color:#166534}.failed{background:#fee2e2;color:#991b1b}
.skipped{background:#fef3c7;color:#92400e}.interrupted{background:#e0e7ff;color:#3730a3}
img.plot{max-width:100%;border:1px solid #dde2ea}table.grid td{text-align:center}table.grid td:first-child{text-align:left;width:240px}
table.grid img{width:220px;height:auto;display:block;margin:auto}
.badge{display:inline-block;background:#fde68a;color:#78350f;border-radius:4px;padding:0 6px;font-size:12px}
code{background:#f3f5f9;padding:0 3px;border-radius:3px}ul.neq li{margin:3px 0}
"""

SUMMARY_COLUMNS = [
    "Arm",
    "Status",
    "Steps",
    "Final loss",
    "Wall",
    "First step",
    "Steps/s",
    "Peak RAM",
    "Peak GPU",
    "LoRA size",
    "Keys",
    "Dtype",
    "Rank",
    "Note",
]


def render_html(
    data: dict[str, Any], arms: list[ArmData], plot: bytes | None, plot_note: str | None, thumbs: dict[int, str | None]
) -> str:
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(data['title'])}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(data['title'])}</h1>",
        f'<p class="muted">{len(arms)} arms · created {escape(data["created"])} · loraforge compare</p>',
        "<h2>Summary</h2>",
        _summary(arms),
        '<p class="muted">Green: the best time, speed or memory among the finished arms.</p>',
        "<h2>Loss curves</h2>",
        _plot(plot, plot_note),
        f'<p class="muted">{escape(data["loss_note"])}</p>',
        "<h2>Settings that differ between arms</h2>",
        _settings(data["differing_settings"]),
        "<h2>Samples</h2>",
        _samples(arms, thumbs),
        "<h2>Equivalence of settings</h2>",
        _equivalence(data.get("equivalence")),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _best(arms: list[ArmData]) -> dict[str, int]:
    """Column -> index of the arm with the best figure among finished arms (fastest, least memory)."""
    done = [(i, arm) for i, arm in enumerate(arms) if arm.status == "finished"]
    best: dict[str, int] = {}
    for name, sign in (
        ("wall_s", 1),
        ("first_step_s", 1),
        ("steps_per_s", -1),
        ("peak_ram_bytes", 1),
        ("peak_gpu_bytes", 1),
    ):
        known = [(sign * getattr(arm, name), i) for i, arm in done if getattr(arm, name) is not None]
        if len(known) >= 2:
            best[name] = min(known)[1]
    return best


def _summary(arms: list[ArmData]) -> str:
    head = "".join(f"<th>{c}</th>" for c in SUMMARY_COLUMNS)
    best = _best(arms)
    rows = []
    for index, arm in enumerate(arms):

        def num(name: str, text: str, index: int = index) -> str:
            return f'<td class="num{" best" if best.get(name) == index else ""}">{text}</td>'

        lora = arm.lora
        steps = f"{arm.step}/{arm.total}" if arm.step is not None and arm.total else _v(arm.step)
        cells = [
            f"<td><b>{escape(arm.label)}</b>"
            + (f'<br><span class="muted">GPU {escape(arm.gpu)}</span>' if arm.gpu else "")
            + "</td>",
            f'<td><span class="status {escape(arm.status)}">{escape(arm.status)}</span></td>',
            f'<td class="num">{escape(steps)}</td>',
            f'<td class="num" data-final-loss="{escape(json.dumps(arm.final_loss))}">{format_loss(arm.final_loss)}</td>',
            num("wall_s", format_seconds(arm.wall_s)),
            num("first_step_s", format_seconds(arm.first_step_s)),
            num("steps_per_s", "—" if arm.steps_per_s is None else f"{arm.steps_per_s:.2f}"),
            num("peak_ram_bytes", format_bytes(arm.peak_ram_bytes)),
            num("peak_gpu_bytes", format_bytes(arm.peak_gpu_bytes)),
            f'<td class="num">{format_bytes(lora.size_bytes) if lora else "—"}</td>',
            f'<td class="num">{lora.keys if lora else "—"}</td>',
            f"<td>{escape(lora.dtype) if lora else '—'}</td>",
            f'<td class="num">{_v(lora.rank) if lora else "—"}</td>',
            f"<td>{escape(arm.reason or arm.lora_error or '')}</td>",
        ]
        rows.append(f'<tr data-arm="{escape(arm.label)}" data-status="{escape(arm.status)}">{"".join(cells)}</tr>')
    return f'<table id="summary"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _plot(plot: bytes | None, note: str | None) -> str:
    if plot is None:
        return f'<p class="muted" id="loss-curves-missing">{escape(note or "no loss curves")}</p>'
    uri = "data:image/png;base64," + base64.b64encode(plot).decode("ascii")
    return f'<img id="loss-curves" class="plot" alt="training loss per step, one line per arm" src="{uri}">'


def _settings(differing: dict[str, dict[str, Any]]) -> str:
    if not differing:
        return '<p class="muted">The arms ran the same job settings (apart from the backend).</p>'
    labels = list(next(iter(differing.values())))
    head = "<th>Setting</th>" + "".join(f"<th>{escape(label)}</th>" for label in labels)
    rows = "".join(
        f"<tr><td><code>{escape(key)}</code></td>"
        + "".join(f"<td>{escape(_show(values.get(label)))}</td>" for label in labels)
        + "</tr>"
        for key, values in differing.items()
    )
    return f'<table id="settings"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def _samples(arms: list[ArmData], thumbs: dict[int, str | None]) -> str:
    notes = "".join(f"<li>{escape(arm.label)}: {escape(arm.samples_note)}</li>" for arm in arms if arm.samples_note)
    notes_html = f'<ul class="muted">{notes}</ul>' if notes else ""
    with_samples = [arm for arm in arms if arm.samples]
    if not with_samples:
        return f'<p class="muted" id="samples-missing">No sample images.</p>{notes_html}'
    keys: list[tuple[str, int, bool]] = []
    for arm in with_samples:
        for s in arm.samples:
            if (s.prompt, s.seed, s.trigger) not in keys:
                keys.append((s.prompt, s.seed, s.trigger))
    head = "<th>Prompt · seed</th>" + "".join(f"<th>{escape(arm.label)}</th>" for arm in with_samples)
    rows = []
    for prompt, seed, trigger in keys:
        badge = "" if trigger else ' <span class="badge">no trigger: leakage check</span>'
        cells = [f"<td>{escape(prompt)}{badge}<br><span class='muted'>seed {seed}</span></td>"]
        for arm in with_samples:
            match = next((s for s in arm.samples if (s.prompt, s.seed) == (prompt, seed)), None)
            uri = thumbs.get(id(match)) if match else None
            alt = escape(f"{arm.label}: {prompt} (seed {seed})")
            cells.append(f'<td><img alt="{alt}" src="{uri}"></td>' if uri else '<td class="muted">—</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f'<table id="samples" class="grid"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>{notes_html}'


def _equivalence(eq: dict[str, Any] | None) -> str:
    if not eq:
        return '<p class="muted">Not checked (this report was built from run folders alone).</p>'
    items = "".join(f"<li>{escape(line)}</li>" for line in eq.get("not_equivalent") or [])
    neq = (
        f'<p>Not equivalent:</p><ul id="not-equivalent" class="neq">{items}</ul>'
        if items
        else '<p id="not-equivalent">Nothing found that is not equivalent.</p>'
    )
    backends = [b for b in eq.get("backends", []) if b not in (eq.get("unavailable") or {})]
    head = "<th>Job setting</th><th>Value</th>" + "".join(f"<th>{escape(b)}</th>" for b in backends)
    rows = []
    for row in eq.get("mapping") or []:
        cells = [f"<td><code>{escape(row['field'])}</code></td><td>{escape(_show(row['value']))}</td>"]
        for backend in backends:
            options = (row.get("options") or {}).get(backend)
            if options:
                text = "<br>".join(f"<code>{escape(k)}</code> = {escape(_show(v))}" for k, v in options.items())
            else:
                text = '<span class="muted">—</span>' if options is not None else '<span class="muted">?</span>'
            cells.append(f"<td>{text}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    table = f'<table id="mapping"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    legend = '<p class="muted">— : the setting changes nothing in that backend\'s rendered files. ? : not known.</p>'
    return neq + table + legend


def _show(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def _v(value: Any) -> str:
    return "—" if value is None else escape(str(value))
