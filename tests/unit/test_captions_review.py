"""`loraforge captions`: listing, editing in a real $EDITOR (a script), JSONL export and import."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from orchestrator.captions.files import caption_path
from orchestrator.captions.review import export_jsonl, import_jsonl, list_captions
from orchestrator.cli import main
from orchestrator.errors import LoraforgeError

CAPTIONS = {
    "a.jpg": "ohwx person, smiling",
    "b.png": "ohwx person, with a tab\tand a back\\slash",
    "sub/c.jpg": "ohwx person, 写真 — café ☕",
    "sub/d.jpg": None,  # no caption yet
}


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "dataset"
    for name, caption in CAPTIONS.items():
        image = root / name
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), "white").save(image)
        if caption is not None:
            caption_path(image).write_text(caption + "\n", encoding="utf-8")
    return root


def _stamps(root: Path) -> dict[str, int]:
    return {n: caption_path(root / n).stat().st_mtime_ns for n, c in CAPTIONS.items() if c is not None}


def _editor(tmp_path: Path, body: str) -> str:
    """A real editor program: a Python script that rewrites the TSV file it is given, like a person would."""
    script = tmp_path / "editor.py"
    script.write_text("import pathlib, sys\npath = pathlib.Path(sys.argv[1])\n" + body)
    return f"{sys.executable} {script}"


def test_list_captions(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert [(e.image, e.caption) for e in list_captions(dataset)] == list(CAPTIONS.items())
    assert main(["captions", str(dataset), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows == [{"image": k, "caption": v} for k, v in CAPTIONS.items()]
    assert main(["captions", str(dataset)]) == 0
    out = capsys.readouterr()
    assert "写真" in out.out and "(no caption)" in out.out and "1 without a caption" in out.err


def test_edit_writes_back_only_what_changed(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # change a.jpg's caption, give d.jpg its first one, touch nothing else
    body = (
        "text = path.read_text(encoding='utf-8')\n"
        "text = text.replace('ohwx person, smiling', 'ohwx person, laughing in the rain')\n"
        "text = text.replace('sub/d.jpg\\t\\n', 'sub/d.jpg\\tohwx person, in profile\\n')\n"
        "path.write_text(text, encoding='utf-8')\n"
    )
    monkeypatch.setenv("EDITOR", _editor(tmp_path, body))
    monkeypatch.delenv("VISUAL", raising=False)
    before = _stamps(dataset)
    assert main(["captions", str(dataset), "--edit"]) == 0
    assert "2 caption(s) changed" in capsys.readouterr().err
    assert caption_path(dataset / "a.jpg").read_text(encoding="utf-8") == "ohwx person, laughing in the rain\n"
    assert caption_path(dataset / "sub/d.jpg").read_text(encoding="utf-8") == "ohwx person, in profile\n"
    after = _stamps(dataset)
    assert after["b.png"] == before["b.png"] and after["sub/c.jpg"] == before["sub/c.jpg"]
    # the tab and backslash survived the TSV round trip untouched
    assert caption_path(dataset / "b.png").read_text(encoding="utf-8") == CAPTIONS["b.png"] + "\n"


def test_edit_with_sed(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    if shutil.which("sed") is None:
        pytest.skip("sed not installed (apt-get install sed)")
    monkeypatch.setenv("EDITOR", "sed -i s/smiling/grinning/")
    monkeypatch.delenv("VISUAL", raising=False)
    before = _stamps(dataset)
    assert main(["captions", str(dataset), "--edit"]) == 0
    assert caption_path(dataset / "a.jpg").read_text(encoding="utf-8") == "ohwx person, grinning\n"
    assert {k: v for k, v in _stamps(dataset).items() if k != "a.jpg"} == {
        k: v for k, v in before.items() if k != "a.jpg"
    }


def test_editor_failure_changes_nothing(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = "path.write_text('image\\tcaption\\na.jpg\\tchanged\\n')\nsys.exit(3)\n"
    monkeypatch.setenv("EDITOR", _editor(tmp_path, body))
    monkeypatch.delenv("VISUAL", raising=False)
    before = _stamps(dataset)
    assert main(["captions", str(dataset), "--edit"]) == 2
    assert _stamps(dataset) == before


def test_export_import_round_trip(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "captions.jsonl"
    assert export_jsonl(dataset, out) == 4
    assert "写真" in out.read_text(encoding="utf-8")  # readable UTF-8, not \u escapes
    for name, caption in CAPTIONS.items():
        if caption is not None:
            caption_path(dataset / name).write_text("scrambled\n", encoding="utf-8")
    changed = import_jsonl(dataset, out)
    assert sorted(changed) == ["a.jpg", "b.png", "sub/c.jpg"]
    assert [(e.image, e.caption) for e in list_captions(dataset)] == list(CAPTIONS.items())
    before = _stamps(dataset)
    assert import_jsonl(dataset, out) == []  # nothing differs: nothing written
    assert _stamps(dataset) == before


def test_cli_export_import(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.jsonl"
    assert main(["captions", str(dataset), "--export", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    rows[0]["caption"] = "ohwx person, edited elsewhere"
    out.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    assert main(["captions", str(dataset), "--import", str(out)]) == 0
    assert caption_path(dataset / "a.jpg").read_text(encoding="utf-8") == "ohwx person, edited elsewhere\n"


def test_import_rejects_unknown_images_and_bad_lines(dataset: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"image": "../escape.jpg", "caption": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(LoraforgeError, match="not in"):
        import_jsonl(dataset, bad)
    bad.write_text("not json\n", encoding="utf-8")
    with pytest.raises(LoraforgeError, match="line 1"):
        import_jsonl(dataset, bad)
    assert not (tmp_path / "escape.txt").exists()
