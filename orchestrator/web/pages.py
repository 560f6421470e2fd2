"""The HTML pages: small shells, each with its data as JSON and one script from static/ that makes it live.

Every value is escaped; data for the script travels in ``<script type="application/json">`` (never executed, and
``<`` is escaped inside it), because the Content-Security-Policy allows no inline script. The runs table is drawn
here too, so the page is useful at its first byte and without JavaScript; the script then filters, sorts and
refreshes it.
"""

from __future__ import annotations

import json
import time
from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.web.app import App

NAV = (("/", "Runs"), ("/new", "New LoRA"), ("/compare", "Compare"))
RUN_COLUMNS = (
    ("name", "Run"),
    ("backend", "Backend"),
    ("family", "Family"),
    ("status", "Status"),
    ("step", "Step"),
    ("loss", "Loss"),
    ("it_per_s", "it/s"),
    ("eta_s", "ETA"),
    ("updated", "Updated"),
)


def layout(app: App, title: str, body: str, script: str, data: Any, current: str) -> str:
    here = ' class="here"'
    links = "".join(f'<a href="{href}"{here if href == current else ""}>{label}</a>' for href, label in NAV)
    payload = json.dumps(data, default=str).replace("<", "\\u003c")
    return (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">'
        f'<meta name="csrf" content="{escape(app.guard.csrf_token)}">'
        f"<title>{escape(title)} · loraforge</title>"
        '<link rel="icon" href="data:,"><link rel="stylesheet" href="/static/app.css">'
        '<script src="/static/common.js" defer></script><script src="/static/chart.js" defer></script>'
        f'<script src="/static/{script}" defer></script></head><body>'
        f'<header><span class="brand">loraforge</span><nav>{links}</nav>'
        f'<span class="muted where">{escape(str(app.runs_root))}</span></header>'
        f'<main>{body}</main><script type="application/json" id="page-data">{payload}</script></body></html>'
    )


def fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def run_cells(row: dict[str, Any]) -> str:
    step = f"{row['step']}/{row['total'] or '?'}" if row["step"] is not None else ""
    loss = f"{row['loss']:.4f}" if row["loss"] is not None else ""
    speed = f"{row['it_per_s']:.2f}" if row["it_per_s"] else ""
    updated = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["updated"])) if row["updated"] else ""
    status = escape(row["status"])
    name = escape(row["name"])
    return (
        f'<td><input type="checkbox" class="pick" value="{name}" aria-label="compare {name}"></td>'
        f'<td><a href="/runs/{name}">{name}</a></td><td>{escape(row["backend"])}</td>'
        f'<td>{escape(row["family"] or "")}</td><td><span class="status {status}">{status}</span></td>'
        f'<td class="num">{step}</td><td class="num">{loss}</td><td class="num">{speed}</td>'
        f'<td class="num">{fmt_eta(row["eta_s"])}</td><td class="num">{updated}</td>'
    )


def runs_page(app: App, data: dict[str, Any]) -> str:
    head = "".join(f'<th data-key="{key}" tabindex="0">{label}</th>' for key, label in RUN_COLUMNS)
    rows = "".join(f'<tr data-name="{escape(r["name"])}">{run_cells(r)}</tr>' for r in data["runs"])
    empty = '<p class="muted" id="no-runs">No runs yet: <a href="/new">train a LoRA</a>.</p>' if not rows else ""
    body = (
        '<section id="waiting"></section>'
        '<div class="toolbar"><input id="filter" type="search" placeholder="filter: name, backend, family, status">'
        '<select id="status-filter"><option value="">any status</option>'
        + "".join(f"<option>{s}</option>" for s in ("running", "finished", "failed", "interrupted", "created"))
        + '</select><button id="compare" disabled>Compare selected</button>'
        f'<span class="muted" id="count">{len(data["runs"])} runs</span></div>'
        f'<table id="runs" class="grid"><thead><tr><th></th>{head}</tr></thead><tbody>{rows}</tbody></table>{empty}'
    )
    return layout(app, "Runs", body, "runs.js", data, "/")


def new_page(app: App) -> str:
    session = app.session_json()
    body = f"""
<h1>New LoRA from photos</h1>
<section class="step" id="step-photos"><h2>1 · Photos</h2>
<div id="drop" class="drop" tabindex="0">Drop photos or a .zip here, or <label class="button">choose files
<input id="files" type="file" multiple accept="image/*,.zip,.txt,.caption" hidden></label></div>
<ul id="uploaded" class="files"></ul><p id="upload-error" class="error"></p>
<div class="row">
<label>Subject <select id="subject"><option>face</option><option>object</option><option>style</option></select></label>
<label>Size <input id="size" type="number" value="1024" step="64" min="256"></label>
<label>Crop <select id="crop"><option>auto</option><option>face</option><option>center</option><option>none</option></select></label>
<button id="prep" disabled>Prepare photos</button></div></section>
<section class="step" id="step-prep" hidden><h2>2 · Prep report</h2><p id="advice"></p><div id="report" class="cards"></div></section>
<section class="step" id="step-captions" hidden><h2>3 · Captions</h2>
<div class="row"><label>Trigger <input id="trigger" placeholder="ohwx person"></label>
<label>Captioner <select id="captioner">{"".join(f"<option>{escape(c)}</option>" for c in session["captioners"])}</select></label>
<label>Template <input id="template" value="photo of {{trigger}}"></label>
<label><input id="overwrite" type="checkbox"> replace existing</label><button id="autocaption">Write captions</button></div>
<table id="captions" class="grid captions"><tbody></tbody></table>
<div class="row"><button id="save-captions">Save captions</button><span id="captions-saved" class="muted"></span></div></section>
<section class="step" id="step-plan" hidden><h2>4 · Training</h2>
<div class="row"><label>Name <input id="name" placeholder="me"></label>
<label>Base model <input id="base_model" size="50" placeholder="a .safetensors file, a diffusers folder or a hub id"></label>
<label>Family <select id="family"><option value="">auto</option><option>sd15</option><option>sdxl</option><option>flux</option></select></label></div>
<div class="row"><label>Backend <select id="backend">{"".join(f"<option>{escape(b)}</option>" for b in session["backends"])}</select></label>
<label>Preset <select id="preset"><option value="">auto (subject x family)</option>{"".join(f"<option>{escape(p)}</option>" for p in session["presets"])}</select></label>
<label>Steps <input id="steps" type="number" min="1" placeholder="preset"></label>
<label>Rank <input id="rank" type="number" min="1" placeholder="preset"></label>
<label>Learning rate <input id="learning_rate" placeholder="preset"></label>
<label>Resolution <input id="resolution" type="number" step="64" placeholder="preset"></label></div>
<label class="block">More settings, one KEY=VALUE a line (like --set)<textarea id="set" rows="3" placeholder="training.optimizer=prodigy"></textarea></label>
<div class="row"><label>Run on <select id="executor"><option value="local">this machine</option><option value="slurm">Slurm</option><option value="ray">Ray</option></select></label>
<label class="cluster slurm" hidden>Partition <input id="partition"></label><label class="cluster slurm" hidden>Time <input id="time" placeholder="04:00:00"></label>
<label class="cluster ray" hidden>Ray address <input id="address" placeholder="http://HEAD:8265"></label>
<label class="cluster slurm ray" hidden>GPUs <input id="gpus" type="number" min="1" value="1"></label>
<button id="plan">Show the step plan</button></div>
<p id="plan-error" class="error"></p><pre id="plan-text" hidden></pre><ul id="plan-notes"></ul>
<details id="plan-job" hidden><summary>The job as it will run</summary><pre></pre></details>
<button id="start" class="primary" disabled>Start training</button></section>
"""
    return layout(app, "New LoRA", body, "new.js", {"session": session}, "/new")


def run_page(app: App, name: str) -> str:
    body = f"""
<div class="runhead"><h1 id="run-name">{escape(name)}</h1><span id="status" class="status"></span>
<span id="actions"></span></div>
<div class="stats"><div><b id="step">–</b><span>step</span></div><div><b id="loss">–</b><span>loss</span></div>
<div><b id="speed">–</b><span>it/s</span></div><div><b id="eta">–</b><span>ETA</span></div>
<div><b id="epoch">–</b><span>epoch</span></div></div>
<ol id="phases" class="phases"></ol><div id="failure" class="failure" hidden></div><p id="queue-note" class="muted"></p>
<section><h2>Loss</h2><div class="row"><label>Smoothing <input id="smoothing" type="range" min="0" max="0.99" step="0.01" value="0.6"></label>
<label><input id="logscale" type="checkbox"> log scale</label><span id="overfit" class="warn" hidden></span></div>
<canvas id="chart" width="900" height="300"></canvas></section>
<section><h2>Samples</h2><div id="samples"><p class="muted">No samples yet.</p></div></section>
<section><h2>Checkpoints and LoRA</h2><div id="loras"></div><table id="checkpoints" class="grid"><thead><tr>
<th>Step</th><th>Mean train loss</th><th>Validation loss</th><th>File</th></tr></thead><tbody></tbody></table></section>
<section><h2>Log</h2><div class="row"><select id="log-stream"><option>stderr</option><option>stdout</option><option value="events">events</option></select></div>
<pre id="log" class="log"></pre></section>
<section><h2>Job and rendered files</h2><details><summary>job.yaml (resolved)</summary><pre id="job-yaml"></pre></details>
<div id="rendered"></div><pre id="rendered-text" hidden></pre></section>
"""
    return layout(app, name, body, "run.js", {"name": name}, "")


def compare_page(app: App, names: list[str]) -> str:
    body = """
<h1>Compare runs</h1><p class="muted" id="pick-note">Pick 2 to 4 runs on the <a href="/">runs page</a>.</p>
<table id="summary" class="grid"><thead></thead><tbody></tbody></table>
<section><h2>Loss curves</h2><div class="row"><label>Smoothing <input id="smoothing" type="range" min="0" max="0.99" step="0.01" value="0.6"></label>
<label><input id="logscale" type="checkbox"> log scale</label></div><canvas id="chart" width="900" height="300"></canvas>
<p class="muted" id="loss-note"></p></section>
<section><h2>Settings that differ</h2><table id="differ" class="grid"><tbody></tbody></table></section>
<section><h2>Samples</h2><div id="samples"></div></section>
"""
    return layout(app, "Compare", body, "compare.js", {"runs": names}, "/compare")


def job_page(app: App, job_id: str) -> str:
    body = (
        '<h1>Queued job</h1><p id="job-status" class="muted">waiting…</p><p id="job-message"></p>'
        '<button id="cancel">Cancel</button>'
    )
    return layout(app, "Job", body, "job.js", {"id": job_id}, "")
