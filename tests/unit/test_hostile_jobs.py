"""Hostile job files and flags, through `loraforge render` (it checks a job like `train` and needs no backend set up):
every one ends in one line naming the setting or file and the fix, or renders what was meant."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from test_hostile_harness import SECRET, Case, Result, Setup, World, dataset, image, job_file, params, run_case

RENDER = ["render", "{in}/job.yaml", "--backend", "kohya", "-o", "{out}/r"]


def job(extra: str = "", **kwargs: str) -> Setup:
    """Setup: the valid job with the settings of the YAML text ``extra`` merged in."""
    return lambda world: job_file(world, extra, **kwargs)


def raw(text: bytes) -> Setup:
    """Setup: a job file holding exactly ``text`` (and the dataset and model a valid job would name)."""

    def setup(world: World) -> None:
        job_file(world)
        (world.inputs / "job.yaml").write_bytes(text)

    return setup


def rendered(world: World) -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted((world.out / "r" / "rendered").glob("*.toml")))


def renders(*fragments: str) -> Callable[[World, Result], None]:
    def check(world: World, result: Result) -> None:
        text = rendered(world)
        for fragment in fragments:
            assert fragment in text, f"{fragment!r} not in the rendered files:\n{text}"

    return check


def nothing_written(world: World, result: Result) -> None:
    assert not (world.out / "r").exists(), "a refused job must write nothing"


LAUGHS = b"a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol']\n" + b"".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n".encode() for i in range(9)
)


def other_data(build: Callable[[Path], None], extra: str = "") -> Setup:
    """Setup: the valid job pointed at a dataset folder ``in/data`` that ``build`` fills."""

    def setup(world: World) -> None:
        folder = world.inputs / "data"
        folder.mkdir()
        build(folder)
        job_file(world, extra, data="{in}/data")

    return setup


def no_trigger(folder: Path) -> None:
    dataset(folder, caption="a photo of someone")


def only_broken(folder: Path) -> None:
    (folder / "a.png").write_bytes(b"not a png at all")
    (folder / "b.jpg").write_bytes(b"")
    (folder / "a.txt").write_text("ohwx person")


def with_bomb(folder: Path) -> None:
    """Three good images and a PNG that claims 100000 x 100000 pixels (a decompression bomb: 30 GB decoded)."""
    dataset(folder, count=3)
    (folder / "bomb.png").write_bytes(_png_header(100_000, 100_000))
    (folder / "bomb.txt").write_text("ohwx person")


def _png_header(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def with_truncated(folder: Path) -> None:
    dataset(folder, count=3)
    good = image(folder / "whole.jpg", seed=9, size=(256, 256)).read_bytes()
    (folder / "whole.jpg").unlink()
    (folder / "cut.jpg").write_bytes(good[: len(good) // 3])
    (folder / "cut.txt").write_text("ohwx person")


def non_utf8_names(folder: Path) -> None:
    """Latin-1 file names, as a camera card or an old archive leaves them: not valid UTF-8."""
    dataset(folder, count=2)
    for i, raw_name in enumerate([b"caf\xe9", b"\xff\xfeimg"]):
        stem = os.fsdecode(raw_name)
        image(folder / f"{stem}.png", seed=10 + i)
        (folder / f"{stem}.txt").write_text("ohwx person, latin-1 name", encoding="utf-8")


def non_utf8_caption(folder: Path) -> None:
    dataset(folder, count=3)
    image(folder / "latin.png", seed=5)
    (folder / "latin.txt").write_bytes("ohwx person, café".encode("latin-1"))


def symlink_loop(folder: Path) -> None:
    dataset(folder, count=3)
    (folder / "sub").mkdir()
    (folder / "sub" / "loop").symlink_to(folder, target_is_directory=True)


def quoted_1e5(world: World) -> None:
    """trigger: "1e5" written by hand, quoted: a string, whatever YAML 1.1 or 1.2 say about 1e5 unquoted."""
    dataset(world.inputs / "data", caption="1e5, a photo")
    path = job_file(world, data="{in}/data")
    text = path.read_text(encoding="utf-8").replace("trigger: ohwx person", 'trigger: "1e5"')
    path.write_text(text, encoding="utf-8")


def captions_start_with(trigger: str) -> Callable[[World, Result], None]:
    def check(world: World, result: Result) -> None:
        captions = list((world.out / "r" / "data").rglob("*.txt"))
        assert captions and all(c.read_text(encoding="utf-8").startswith(trigger) for c in captions)

    return check


def caption_is_utf8(world: World, result: Result) -> None:
    """The run's copy of the captions (what the trainer reads) is UTF-8, whatever the source's encoding was."""
    copy = world.out / "r" / "data"
    captions = [p for p in copy.rglob("*.txt")]
    assert captions, "no caption in the run's copy"
    for caption in captions:
        caption.read_bytes().decode("utf-8")


def broken_base_model(content: bytes) -> Setup:
    """Setup: the valid job without a family (so it is inferred from the model file) and a broken model file."""

    def setup(world: World) -> None:
        path = job_file(world)
        (world.inputs / "model.safetensors").write_bytes(content)
        path.write_text(path.read_text(encoding="utf-8").replace("family: sd15\n", ""), encoding="utf-8")

    return setup


def render_onto_file(world: World) -> None:
    job_file(world)


CASES = [
    # --- the file itself
    Case(
        "job-invalid-utf8", RENDER, 2, r"not UTF-8.*byte", raw(b"name: me\ntrigger: \xff\xfe ohwx\n"), nothing_written
    ),
    Case("job-billion-laughs", RENDER, 2, r"aliases", raw(LAUGHS), lambda w, r: _short(r)),
    Case("job-duplicate-keys", RENDER, 2, r"name", raw(b"name: me\nname: you\n"), nothing_written),
    Case("job-missing", ["render", "{in}/nope.yaml", "-o", "{out}/r"], 2, r"nope\.yaml does not exist"),
    Case("job-is-a-folder", ["render", "{in}", "--backend", "kohya", "-o", "{out}/r"], 2, r"folder|not a file"),
    Case("job-empty-file", RENDER, 2, r"(required|mapping|empty)", raw(b"")),
    Case("job-top-level-list", RENDER, 2, r"mapping", raw(b"- name: me\n")),
    Case("job-top-level-scalar", RENDER, 2, r"mapping", raw(b"just text\n")),
    Case("job-not-yaml", RENDER, 2, r"not valid YAML", raw(b"name: [me\n  trigger: {\n")),
    Case(
        "job-deeply-nested", RENDER, 2, r"(nests too deeply|not valid YAML)", raw(b"a: " + b"[" * 20000 + b"]" * 20000)
    ),
    Case(
        "job-python-tag", RENDER, 2, r"not valid YAML", raw(b"name: !!python/object/apply:os.system ['echo pwned']\n")
    ),
    Case("job-huge-file", RENDER, 2, r"KiB", raw(b"name: me\n" + b"# padding\n" * 300_000)),
    Case("job-nul-byte", RENDER, 2, r"(not valid YAML|control)", raw(b"name: me\x00\n")),
    Case("job-binary-file", RENDER, 2, r"(not UTF-8|not valid YAML)", raw(bytes(range(256)) * 8)),
    Case("job-utf16", RENDER, 2, r"not UTF-8", raw("name: me\n".encode("utf-16"))),
    # --- values
    Case(
        "job-inf-learning-rate",
        RENDER,
        2,
        r"training\.learning_rate",
        job("training: {steps: 10, learning_rate: .inf}\n"),
    ),
    Case(
        "job-nan-learning-rate",
        RENDER,
        2,
        r"training\.learning_rate",
        job("training: {steps: 10, learning_rate: .nan}\n"),
    ),
    Case("job-infinity-text", RENDER, 2, r"network\.alpha", job("network: {alpha: Infinity}\n")),
    Case("job-negative-infinity", RENDER, 2, r"noise_offset", job("training: {steps: 10, noise_offset: -.inf}\n")),
    Case(
        "job-backend-args-infinite",
        RENDER,
        2,
        r"backend_args\.kohya\.max_grad_norm.*finite",
        job("backend_args: {kohya: {max_grad_norm: .inf}}\n"),
        nothing_written,
    ),
    Case(
        "job-network-args-nan",
        RENDER,
        2,
        r"network\.args\.conv_alpha.*finite",
        job("network: {args: {conv_alpha: .nan}}\n"),
        nothing_written,
    ),
    Case("job-quoted-1e5-trigger", RENDER, 0, r"config", quoted_1e5, captions_start_with("1e5")),
    Case("job-rank-zero", RENDER, 2, r"network\.rank.*got 0", job("network: {rank: 0}\n")),
    Case("job-rank-text", RENDER, 2, r"network\.rank", job("network: {rank: lots}\n")),
    Case("job-rank-huge", RENDER, 2, r"network\.rank", job("network: {rank: 99999999999999999999999}\n")),
    Case("job-unknown-key", RENDER, 2, r"trainng", job("trainng: {steps: 5}\n")),
    Case("job-steps-negative", RENDER, 2, r"training\.steps", job("training: {steps: -5}\n")),
    Case(
        "job-steps-bool",
        RENDER,
        2,
        r"training\.steps",
        job("training: {steps: true}\n"),
    ),
    Case("job-resolution-odd", RENDER, 2, r"multiple of 64", job("training: {steps: 10, resolution: 513}\n")),
    Case("job-name-path-escape", RENDER, 2, r"name", job("name: ../../etc/evil\n")),
    Case("job-output-name-escape", RENDER, 2, r"output\.name", job("output: {name: ../../evil}\n")),
    Case("job-output-name-hidden", RENDER, 2, r"output\.name", job("output: {name: .bashrc}\n")),
    Case(
        "job-long-value-cut",
        RENDER,
        2,
        r"network\.rank",
        job("network: {rank: '" + "9" * 5000 + "x'}\n"),
        lambda w, r: _short(r),
    ),
    Case("job-family-unknown", RENDER, 2, r"family", job("family: sd99\n")),
    Case("job-optimizer-unknown", RENDER, 2, r"optimizer", job("training: {steps: 10, optimizer: magic}\n")),
    Case(
        "job-validation-split-one",
        RENDER,
        2,
        r"validation_split",
        job("training: {steps: 10, validation_split: 1.0}\n"),
    ),
    # --- prompts in sd-scripts' prompt file
    Case(
        "prompt-carriage-return",
        RENDER,
        2,
        r"sampling\.prompts.*line break",
        job('sampling: {every_n_steps: 5, prompts: ["ohwx person\\r--w 8192"]}\n'),
        nothing_written,
    ),
    Case(
        "prompt-newline",
        RENDER,
        2,
        r"sampling\.prompts.*line break",
        job('sampling: {every_n_steps: 5, prompts: ["a\\nb"]}\n'),
        nothing_written,
    ),
    Case(
        "prompt-unicode-line-separator",
        RENDER,
        2,
        r"sampling\.prompts",
        job('sampling: {every_n_steps: 5, prompts: ["a\\u2028b"]}\n'),
    ),
    Case(
        "prompt-option-w",
        RENDER,
        2,
        r"sampling\.prompts.*--",
        job('sampling: {every_n_steps: 5, prompts: ["ohwx person --w 8192 --h 8192"]}\n'),
        nothing_written,
    ),
    Case(
        "prompt-option-negative",
        RENDER,
        2,
        r"sampling\.prompts",
        job('sampling: {every_n_steps: 5, prompts: ["ohwx person --n ugly"]}\n'),
    ),
    Case(
        "prompt-comment",
        RENDER,
        2,
        r"sampling\.prompts.*comment",
        job('sampling: {every_n_steps: 5, prompts: ["# ohwx person"]}\n'),
    ),
    Case(
        "prompt-empty", RENDER, 2, r"sampling\.prompts.*empty", job('sampling: {every_n_steps: 5, prompts: ["  "]}\n')
    ),
    Case(
        "prompt-quotes-and-unicode",
        RENDER,
        0,
        r"config",
        job('sampling: {every_n_steps: 5, prompts: ["ohwx person \\"in\\" a café, 東京 \\\\ night"]}\n'),
    ),
    # --- flags and --set
    Case("set-without-equals", [*RENDER, "--set", "network.rank"], 2, r"KEY=VALUE", job()),
    Case("set-unknown-key", [*RENDER, "--set", "network.rnak=4"], 2, r"rnak", job()),
    Case("set-wrong-type", [*RENDER, "--set", "training.steps=many"], 2, r"training\.steps", job()),
    Case("set-inf", [*RENDER, "--set", "training.learning_rate=inf"], 2, r"learning_rate", job()),
    Case("flag-steps-text", [*RENDER, "--steps", "ten"], 2, r"--steps", job()),
    Case(
        "flag-unknown-backend",
        ["render", "{in}/job.yaml", "--backend", "nosuch", "-o", "{out}/r"],
        2,
        r"invalid choice",
        job(),
    ),
    # --- what the job points at
    Case(
        "base-model-missing",
        RENDER,
        2,
        r"base model .*does not exist",
        job("base_model: /nonexistent/model.safetensors\n"),
    ),
    Case("base-model-an-empty-file", RENDER, 2, r"model\.safetensors", broken_base_model(b"")),
    Case(
        "base-model-header-nested-deeply",
        RENDER,
        2,
        r"model\.safetensors",
        broken_base_model(struct.pack("<Q", 200_000) + b"[" * 200_000),
    ),
    Case(
        "base-model-header-cut-short",
        RENDER,
        2,
        r"model\.safetensors",
        broken_base_model(struct.pack("<Q", 10**6) + b"{"),
    ),
    Case("dataset-missing", RENDER, 2, r"nothere", job(data="/nonexistent/nothere"), nothing_written),
    Case("dataset-empty", RENDER, 2, r"no images", other_data(lambda folder: None), nothing_written),
    Case("dataset-is-a-file", RENDER, 2, r"model\.safetensors", job(data="{in}/model.safetensors"), nothing_written),
    Case("dataset-captions-without-trigger", RENDER, 2, r"lack the trigger", other_data(no_trigger), nothing_written),
    Case("dataset-only-broken-images", RENDER, 2, r"no images", other_data(only_broken), nothing_written),
    Case("dataset-with-decompression-bomb", RENDER, 0, r"skipped bomb\.png", other_data(with_bomb)),
    Case(
        "dataset-truncated-image",
        RENDER,
        0,
        r"skipped cut\.jpg",
        other_data(with_truncated),
    ),
    Case("dataset-non-utf8-names", RENDER, 0, r"config", other_data(non_utf8_names)),
    Case("dataset-non-utf8-caption", RENDER, 0, r"config", other_data(non_utf8_caption), caption_is_utf8),
    Case("dataset-symlink-loop", RENDER, 0, r"config", other_data(symlink_loop)),
    Case(
        "family-the-backend-cannot-train",
        ["render", "{in}/job.yaml", "--backend", "simpletuner", "-o", "{out}/r"],
        2,
        r"cannot train sd15",
        job(),
    ),
    # --- where the output goes
    Case(
        "render-out-is-a-file",
        ["render", "{in}/job.yaml", "--backend", "kohya", "-o", "{in}/model.safetensors"],
        (1, 2),
        r"model\.safetensors.*fix",
        job(),
    ),
    Case("render-out-read-only", RENDER, 1, r"read-only.*fix", job(), disk="ro"),
    Case("render-out-disk-full", RENDER, 1, r"no space left.*fix", job(), disk="full"),
    Case(
        "render-secret-in-backend-args",
        RENDER,
        2,
        r"secret",
        job(f"backend_args: {{kohya: {{wandb_api_key: {SECRET}}}}}\n"),
    ),
]


def _short(result: Result) -> None:
    assert len(result.text) < 2000, f"a {len(result.text)}-character message"


@pytest.mark.parametrize("case", params(CASES))
def test_hostile_job(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_case(case, tmp_path, monkeypatch)
