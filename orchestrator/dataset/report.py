"""What prep tells the user: manifest.json, a self-contained report.html contact sheet, a terminal table."""

from __future__ import annotations

import html
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from orchestrator.dataset.options import Options

VERDICT_ORDER = ("rejected", "duplicate", "accepted")


def write_manifest(path: Path, entries: list[dict[str, Any]], options: Options) -> Path:
    images = []
    for e in entries:
        images.append(
            {
                "source": e["source"],
                "sha": e.get("sha"),
                "verdict": e["verdict"],
                "reasons": e.get("reasons", []),
                "crop_box": e.get("crop_box"),
                "output": Path(e["output"]).name if e.get("output") else None,
                "output_bytes": Path(e["output"]).stat().st_size if e.get("output") else None,
                "output_size": e.get("output_size"),
                "original_size": e.get("original_size"),
                "sharpness": e.get("sharpness"),
                "faces": e.get("faces"),
                "phash": e.get("phash"),
            }
        )
    from orchestrator.dataset.prep import MANIFEST_MARK

    data = {"written_by": MANIFEST_MARK, "options": asdict(options), "images": images}
    tmp = path.with_suffix(".tmp")
    # ASCII escapes: a file name that is not UTF-8 (kept as surrogate escapes) still writes and reads back the same
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    tmp.replace(path)
    return path


def write_report(path: Path, entries: list[dict[str, Any]], options: Options) -> Path:
    sections = []
    for verdict in VERDICT_ORDER:
        group = [e for e in entries if e["verdict"] == verdict]
        if not group:
            continue
        cards = []
        for e in group:
            # accepted: the prepared image; rejected: the source photo (if readable)
            thumb = e.get("thumbnail") or ""
            img = f'<img src="{thumb}" alt="">' if thumb else '<div class="none">no preview</div>'
            reasons = "<br>".join(html.escape(r) for r in e.get("reasons", [])) or "ok"
            cards.append(
                f'<figure class="{verdict}">{img}<figcaption><b>{html.escape(Path(e["source"]).name)}</b>'
                f"<br>{reasons}</figcaption></figure>"
            )
        sections.append(f"<h2>{verdict} ({len(group)})</h2><div class=grid>{''.join(cards)}</div>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>loraforge prep report</title><style>
body{{font-family:system-ui,sans-serif;margin:24px;background:#fafafa}}
.grid{{display:flex;flex-wrap:wrap;gap:12px}}
figure{{margin:0;width:170px;background:#fff;border-radius:6px;padding:6px;box-shadow:0 1px 3px #0002;font-size:12px}}
figure.rejected{{border-top:4px solid #d33}} figure.duplicate{{border-top:4px solid #e90}}
figure.accepted{{border-top:4px solid #2a2}} img{{max-width:160px;max-height:160px;display:block;margin:auto}}
.none{{height:80px;display:flex;align-items:center;justify-content:center;color:#999}}
</style></head><body><h1>Dataset preparation</h1>
<p>subject {html.escape(options.subject)}, size {options.size}, crop {html.escape(options.crop)}:
{sum(e["verdict"] == "accepted" for e in entries)} accepted of {len(entries)} files</p>
{"".join(sections)}</body></html>"""
    path.write_text(page, encoding="utf-8", errors="backslashreplace")  # names that are not UTF-8 shown escaped
    return path


def summary_table(result: Any):  # type: ignore[no-untyped-def]
    from rich.table import Table

    table = Table("file", "verdict", "reason / output", title=f"prepared {result.accepted} images into {result.out}")
    for e in result.entries:
        detail = "; ".join(e.get("reasons", [])) or (Path(e["output"]).name if e.get("output") else "")
        table.add_row(Path(e["source"]).name, e["verdict"], detail)
    return table
