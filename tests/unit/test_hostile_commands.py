"""Hostile presets (Kohya GUI JSON, sd-scripts TOML, YAML), captions, and the commands around a run (train without a
backend, setup, doctor, cluster job ids, sample): one line naming the file and the fix, or the right result; a secret
in a preset is reported by name and never printed or written."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from test_hostile_harness import SECRET, Case, Result, Setup, World, dataset, job_file, params, run_case

GUI = {
    "LoRA_type": "Standard",
    "learning_rate": 0.0001,
    "max_resolution": "1024,1024",
    "network_dim": 16,
    "network_alpha": 8,
    "optimizer": "AdamW",
    "lr_scheduler": "constant",
    "max_train_steps": 1000,
    "train_batch_size": 1,
    "seed": 42,
}


def gui_preset(changes: dict[str, object] | None = None, *, name: str = "preset.json") -> Setup:
    def setup(world: World) -> None:
        (world.inputs / name).write_text(json.dumps({**GUI, **(changes or {})}), encoding="utf-8")

    return setup


def file_bytes(name: str, content: bytes) -> Setup:
    return lambda world: (world.inputs / name).write_bytes(content)


IMPORT = ["presets", "import", "{in}/preset.json"]
IMPORT_TOML = ["presets", "import", "{in}/config.toml"]
IMPORT_TO = ["presets", "import", "{in}/preset.json", "-o", "{out}/mine.yaml"]
EXPORT = ["presets", "export", "{in}/job.yaml", "--to", "kohya-gui", "-o", "{out}/preset.json"]
EXPORT_TOML = ["presets", "export", "{in}/job.yaml", "--to", "sd-scripts", "-o", "{out}/config.toml"]

DEEP_JSON = b'{"LoRA_type": "Standard", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
DEEP_TOML = b"x = " + b"[" * 100_000 + b"]" * 100_000 + b"\n"
DEEP_TOML_TABLES = b"x = " + b"{a = " * 5_000 + b"1" + b"}" * 5_000 + b"\n"


def no_file(name: str) -> Callable[[World, Result], None]:
    def check(world: World, result: Result) -> None:
        leftovers = sorted(p.name for p in world.out.iterdir() if p.name != ".filler")
        assert name not in leftovers and not [n for n in leftovers if name in n], f"left behind: {leftovers}"

    return check


def job_with_secret_for_export(world: World) -> None:
    job_file(world, f"backend_args: {{kohya: {{huggingface_token: {SECRET}}}}}\n")


def nothing_there(world: World, result: Result) -> None:
    assert not any(world.out.iterdir()), "a refused command wrote something"


def captions_import(lines: list[str]) -> Setup:
    def setup(world: World) -> None:
        dataset(world.inputs / "ds")
        (world.inputs / "captions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")

    return setup


def a_dataset(world: World) -> None:
    dataset(world.inputs / "ds")


def garbage_registry(content: bytes) -> Setup:
    def setup(world: World) -> None:
        world.home.mkdir(parents=True, exist_ok=True)
        (world.home / "envs.json").write_bytes(content)

    return setup


CASES = [
    # --- presets import: Kohya GUI JSON
    Case("preset-json-nested-deeply", IMPORT, 2, r"preset\.json", file_bytes("preset.json", DEEP_JSON)),
    Case("preset-json-infinity", IMPORT, 2, r"learning_rate|Infinity", file_bytes("preset.json", json.dumps(GUI).replace("0.0001", "Infinity").encode())),
    Case("preset-json-nan", IMPORT, 2, r"learning_rate|NaN", file_bytes("preset.json", json.dumps(GUI).replace("0.0001", "NaN").encode())),
    Case("preset-json-max-resolution-null-512", IMPORT, 2, r"max_resolution", gui_preset({"max_resolution": [None, 512]})),
    Case("preset-json-max-resolution-text", IMPORT, 2, r"max_resolution", gui_preset({"max_resolution": "big"})),
    Case("preset-json-network-dim-text", IMPORT, 2, r"network_dim", gui_preset({"network_dim": "sixteen"})),
    Case("preset-json-network-dim-a-dict", IMPORT, 2, r"network_dim", gui_preset({"network_dim": {"a": 1}})),
    Case("preset-json-learning-rate-negative", IMPORT, 2, r"learning_rate", gui_preset({"learning_rate": -1})),
    Case("preset-json-a-list", IMPORT, 2, r"expected a JSON object", file_bytes("preset.json", b"[1, 2]")),
    Case("preset-json-not-json", IMPORT, 2, r"cannot be read", file_bytes("preset.json", b"{not json")),
    Case("preset-json-not-utf8", IMPORT, 2, r"preset\.json.*(UTF-8|cannot be read)", file_bytes("preset.json", b'{"LoRA_type": "\xff"}')),
    Case("preset-json-empty", IMPORT, 2, r"preset\.json", file_bytes("preset.json", b"")),
    Case("preset-json-huge-value-ignored", IMPORT, 0, r"ignored x", file_bytes("preset.json", b'{"x": "' + b"a" * 50_000_000 + b'"}')),
    Case("preset-json-secret-in-additional-parameters", IMPORT, 0, r"secret: not imported", gui_preset({"additional_parameters": f"--wandb_api_key={SECRET} --huggingface_token {SECRET}"})),
    Case("preset-json-secret-keys", IMPORT_TO, 0, r"secret: not imported", gui_preset({"wandb_api_key": SECRET, "huggingface_token": SECRET, "hf_token": SECRET})),
    Case("preset-json-additional-parameters-garbage", IMPORT, (0, 2), r"additional_parameters", gui_preset({"additional_parameters": '--a "unclosed --b'})),
    Case("preset-missing-file", ["presets", "import", "{in}/nope.json"], 2, r"nope\.json does not exist"),
    Case("preset-a-folder", ["presets", "import", "{in}"], 2, r"folder|unknown preset format"),
    Case("preset-unknown-suffix", ["presets", "import", "{in}/preset.ini"], 2, r"unknown preset format", file_bytes("preset.ini", b"[x]\n")),
    # --- presets import: sd-scripts TOML
    Case("preset-toml-nested-deeply", IMPORT_TOML, 2, r"config\.toml", file_bytes("config.toml", DEEP_TOML)),
    Case("preset-toml-nested-tables", IMPORT_TOML, 2, r"config\.toml", file_bytes("config.toml", DEEP_TOML_TABLES)),
    Case("preset-toml-inf", IMPORT_TOML, 2, r"learning_rate", file_bytes("config.toml", b"learning_rate = inf\nnetwork_dim = 16\n")),
    Case("preset-toml-nan", IMPORT_TOML, 2, r"learning_rate", file_bytes("config.toml", b"learning_rate = nan\nnetwork_dim = 16\n")),
    Case("preset-toml-secret", IMPORT_TOML, 0, r"secret: not imported", file_bytes("config.toml", f'wandb_api_key = "{SECRET}"\nlearning_rate = 1e-4\n'.encode())),
    Case("preset-toml-not-toml", IMPORT_TOML, 2, r"cannot be read", file_bytes("config.toml", b"= = =\n")),
    Case("preset-toml-not-utf8", IMPORT_TOML, 2, r"config\.toml", file_bytes("config.toml", b'output_name = "\xff"\n')),
    Case("preset-toml-resolution-garbage", IMPORT_TOML, 2, r"resolution", file_bytes("config.toml", b'resolution = [1, 2, 3, "x"]\n')),
    # --- presets -o
    Case("preset-import-into-a-missing-folder", ["presets", "import", "{in}/preset.json", "-o", "{out}/no/such/mine.yaml"], (1, 2), r"no/such.*fix", gui_preset()),
    Case("preset-import-onto-a-folder", ["presets", "import", "{in}/preset.json", "-o", "{out}"], (1, 2), r"folder.*fix", gui_preset()),
    Case("preset-import-read-only", IMPORT_TO, 1, r"read-only.*fix", gui_preset(), disk="ro"),
    Case("preset-import-disk-full", IMPORT_TO, 1, r"no space left.*fix", gui_preset(), no_file("mine.yaml"), disk="full"),
    Case("preset-export-into-a-missing-folder", ["presets", "export", "{in}/job.yaml", "--to", "kohya-gui", "-o", "{out}/no/such/p.json"], (1, 2), r"no/such.*fix", lambda w: job_file(w)),
    Case("preset-export-onto-a-folder", ["presets", "export", "{in}/job.yaml", "--to", "kohya-gui", "-o", "{out}"], (1, 2), r"folder.*fix", lambda w: job_file(w)),
    Case("preset-export-read-only", EXPORT, 1, r"read-only.*fix", lambda w: job_file(w), disk="ro"),
    Case("preset-export-disk-full", EXPORT, 1, r"no space left.*fix", lambda w: job_file(w), no_file("preset.json"), disk="full"),
    Case("preset-export-toml-disk-full", EXPORT_TOML, 1, r"no space left.*fix", lambda w: job_file(w), no_file("config.toml"), disk="full"),
    Case("preset-export-refuses-a-secret", EXPORT, 2, r"secret", job_with_secret_for_export, nothing_there),
    Case("preset-export-of-a-broken-job", EXPORT, 2, r"job\.yaml", file_bytes("job.yaml", b"name: [\n")),
    Case("preset-show-unknown", ["presets", "show", "nosuch-preset"], 2, r"nosuch-preset"),
    Case("preset-show-a-path-escape", ["presets", "show", "../../../../etc/passwd"], 2, r"passwd"),
    Case("train-with-a-preset-nested-deeply", ["train", "{in}/job.yaml", "--preset", "{in}/preset.json", "--backend", "kohya"], 2, r"preset\.json", lambda w: (job_file(w), (w.inputs / "preset.json").write_bytes(DEEP_JSON))),
    # --- captions
    Case("captions-import-malformed-jsonl", ["captions", "{in}/ds", "--import", "{in}/captions.jsonl"], 2, r"captions\.jsonl.*line", captions_import(["{not json"])),
    Case("captions-import-path-escape", ["captions", "{in}/ds", "--import", "{in}/captions.jsonl"], 2, r"\.\./", captions_import([json.dumps({"image": "../../evil.png", "caption": "x"})])),
    Case("captions-import-wrong-types", ["captions", "{in}/ds", "--import", "{in}/captions.jsonl"], 2, r"captions\.jsonl", captions_import([json.dumps({"image": 7, "caption": ["x"]})])),
    Case("captions-import-missing-file", ["captions", "{in}/ds", "--import", "{in}/nope.jsonl"], 2, r"nope\.jsonl", a_dataset),
    Case("captions-on-a-missing-folder", ["captions", "{in}/nope"], 2, r"nope"),
    Case("captions-export-read-only", ["captions", "{in}/ds", "--export", "{out}/c.jsonl"], 1, r"read-only.*fix", a_dataset, disk="ro"),
    Case("captions-export-disk-full", ["captions", "{in}/ds", "--export", "{out}/c.jsonl"], 1, r"no space left.*fix", a_dataset, disk="full"),
    Case("caption-template-on-a-missing-folder", ["caption", "{in}/nope", "--captioner", "template", "--trigger", "ohwx"], 2, r"nope"),
    Case("caption-template-trigger-with-newline", ["caption", "{in}/ds", "--captioner", "template", "--trigger", "ohwx\nperson"], 2, r"trigger", a_dataset),
    # --- the commands around a run
    Case("train-without-the-backend-set-up", ["train", "{in}/job.yaml", "--backend", "kohya"], 2, r"kohya.*(setup|set up)", lambda w: job_file(w)),
    Case("setup-with-a-missing-venv", ["setup", "kohya", "--venv", "{in}/novenv"], 2, r"novenv"),
    Case("setup-with-a-venv-that-is-a-file", ["setup", "kohya", "--venv", "{in}/file"], 2, r"file", lambda w: (w.inputs / "file").write_text("x")),
    Case("doctor-with-a-garbage-registry", ["doctor"], 1, r"kohya.*not set up.*loraforge setup kohya", garbage_registry(b"{not json")),
    Case("doctor-with-a-registry-of-the-wrong-shape", ["doctor"], (1, 2), r"envs\.json|kohya", garbage_registry(b'{"kohya": 7, "simpletuner": {"python": 7}}')),
    Case("doctor-with-a-registry-pointing-nowhere", ["doctor"], 1, r"interpreter /nonexistent/python does.*loraforge setup kohya", garbage_registry(json.dumps({"kohya": {"backend": "kohya", "python": "/nonexistent/python", "root": None, "versions": {}, "managed": True}}).encode())),
    Case("status-of-an-unknown-job", ["status", "12345"], 2, r"12345"),
    Case("logs-of-an-unknown-job", ["logs", "12345"], 2, r"12345"),
    Case("cancel-an-unknown-job", ["cancel", "12345"], 2, r"12345"),
    Case("status-with-a-garbage-job-table", ["status", "12345"], 2, r"12345|jobs", lambda w: (w.home.mkdir(parents=True, exist_ok=True), (w.home / "jobs.json").write_bytes(b"\xff{not json"))),
    Case("sample-with-a-missing-lora", ["sample", "{in}/nope.safetensors", "--base-model", "org/m", "--prompt", "x"], 2, r"nope\.safetensors|no Python with diffusers.*fix"),
    Case("inspect-of-a-job-file", ["inspect", "{in}/job.yaml"], 2, r"job\.yaml", lambda w: job_file(w)),
]  # fmt: skip


@pytest.mark.parametrize("case", params(CASES))
def test_hostile_command(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_case(case, tmp_path, monkeypatch)
