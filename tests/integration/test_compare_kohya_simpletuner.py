"""`loraforge compare --backends kohya,simpletuner` for real on SDXL, the family both backends train.

Both arms train the same base model: sd-scripts converts the diffusers UNet into its own SDXL UNet, whose full size
(2.57 B parameters) is fixed in its source, so the tiny SDXL cannot be used; ``tiny_sdxl_kohya`` keeps that UNet and
shrinks the rest (5 GB, built once in the machine's loraforge cache). 2 steps at 64 px each; every arm needs about
16 GiB of RAM (one at a time) and the whole comparison about 4 minutes on 2 cores. Marked slow: `pytest -m slow`.

Needs both backends set up, the sd-scripts checkout included (third_party/sd-scripts is empty in CI): skipped
otherwise, with the reason. One comparison per module; the tests check what its report says.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from compare_runs import ReportPage, child_env, final_loss_in, pixel_spread, real_env

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]

SETUP = {
    "kohya": "`git submodule update --init third_party/sd-scripts` then `loraforge setup kohya`",
    "simpletuner": "`loraforge setup simpletuner`",
}
NEEDED_RAM = 16 * 2**30  # the peak of one arm: SDXL's full UNet in fp32 plus the trainer around it
ARMS = ("kohya", "simpletuner")


def available_ram() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A home whose registry has both backends, the sd-scripts-sized SDXL, a drawn dataset and a job file."""
    pytest.importorskip("matplotlib", reason="pip install -e '.[report]'")
    envs = {}
    for backend in ARMS:
        env, why = real_env(backend)
        if env is None:
            pytest.skip(f"{backend} not usable ({why}): run {SETUP[backend]}")
        envs[backend] = env
    free = available_ram()
    if free is not None and free < NEEDED_RAM:
        pytest.skip(f"needs ~{NEEDED_RAM / 2**30:.0f} GiB of free RAM for SDXL's full UNet; {free / 2**30:.1f} free")
    from conftest import _REAL_HOME

    from orchestrator.tiny import tiny_sdxl_kohya
    from orchestrator.tiny.dataset import make_dataset

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORAFORGE_HOME", str(_REAL_HOME))
        model = tiny_sdxl_kohya(envs["kohya"].python)  # 5 GB: built once per machine, in its loraforge cache
    root = tmp_path_factory.mktemp("compare-kohya-st")
    home = root / "home"
    registry = home / "loraforge" / "envs.json"
    registry.parent.mkdir(parents=True)
    registry.write_text(json.dumps({name: env.to_json() for name, env in envs.items()}))
    job = {
        "name": "cmp",
        "base_model": str(model),
        "family": "sdxl",
        "subject": "object",
        "trigger": "ohwx shape",
        "add_trigger": True,  # the drawn captions describe the shapes; the run's copy gets the trigger in front
        "dataset": str(make_dataset(root / "data", count=4, size=64)),
        "network": {"rank": 4},
        "training": {"steps": 2, "resolution": 64, "gradient_checkpointing": False},  # precision: bf16 (default)
        "sampling": {"steps": 2},
    }
    job_file = root / "job.yaml"
    job_file.write_text(yaml.safe_dump(job))
    return {"root": root, "home": home, "job": job_file}


@pytest.fixture(scope="module")
def comparison(setup: dict[str, Path]) -> dict[str, Any]:
    out = setup["root"] / "out"
    argv = [sys.executable, "-m", "orchestrator.cli", "compare", str(setup["job"])]
    argv += ["--backends", ",".join(ARMS), "-o", str(out), "--json"]
    result = subprocess.run(argv, capture_output=True, text=True, env=child_env(setup["home"]), timeout=2400)
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
    return {"result": result, "out": out, "json": json.loads(result.stdout)}


def _arms(comparison: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {arm["label"]: arm for arm in comparison["json"]["arms"]}


def test_both_backends_train_the_same_sdxl_and_finish(comparison: dict[str, Any]) -> None:
    arms = _arms(comparison)
    assert list(arms) == list(ARMS)
    assert json.loads((comparison["out"] / "report.json").read_text())["arms"] == comparison["json"]["arms"]
    for label in ARMS:
        arm = arms[label]
        assert arm["status"] == "finished", arm["reason"]
        assert arm["backend"] == label and arm["reason"] is None
        assert (arm["step"], arm["total"]) == (2, 2)
        events = Path(arm["run_dir"]) / "events.jsonl"
        assert arm["final_loss"] is not None and arm["final_loss"] == final_loss_in(events)
        assert [s for s, _ in arm["loss_curve"]] == [1, 2] and arm["loss_curve"][-1][1] == arm["final_loss"]
        assert 0 < arm["first_step_s"] <= arm["wall_s"]
        assert arm["steps_per_s"] > 0
        assert arm["peak_ram_bytes"] > 8 * 2**30  # SDXL's full UNet was really loaded, measured while it ran
    assert comparison["result"].returncode == 0, comparison["result"].stderr[-3000:]
    assert "[kohya] finished" in comparison["result"].stderr
    assert "[simpletuner] finished" in comparison["result"].stderr


def test_each_arm_reports_its_lora_file(comparison: dict[str, Any]) -> None:
    arms = _arms(comparison)
    for label in ARMS:
        lora = arms[label]["lora"]
        assert Path(lora["path"]).parent == Path(arms[label]["run_dir"]) / "output"
        assert lora["size_bytes"] == Path(lora["path"]).stat().st_size > 0
        # saving.format: kohya (the default) also turns SimpleTuner's diffusers-named LoRA into lora_unet_* keys
        assert lora["rank"] == 4 and lora["layout"] == "kohya"
        assert lora["keys"] > lora["modules"] > 0
        assert lora["dtype"] == "F32"  # trained and saved in fp32 on a CPU
        assert lora["metadata_keys"] > 0


def test_each_arm_has_samples_from_the_same_prompts(comparison: dict[str, Any]) -> None:
    from PIL import Image

    arms = _arms(comparison)
    plans = []
    for label in ARMS:
        arm = arms[label]
        assert arm["samples_note"] is None and arm["samples"]
        for sample in arm["samples"]:
            with Image.open(sample["path"]) as image:
                assert image.size == (64, 64)  # at the training resolution, not the sampler's 1024
                assert pixel_spread(image) > 5  # drawn (noise from a random model), not blank
        plans.append([(s["prompt"], s["seed"], s["trigger"]) for s in arm["samples"]])
    assert plans[0] == plans[1] and any(trigger for *_, trigger in plans[0])
    assert not all(trigger for *_, trigger in plans[0])  # a prompt without the trigger: the leakage check


def test_equivalence_lists_the_mapping_and_what_differs(comparison: dict[str, Any]) -> None:
    equivalence = comparison["json"]["equivalence"]
    assert equivalence["backends"] == list(ARMS) and equivalence["unavailable"] == {}
    mapping = {row["field"]: row for row in equivalence["mapping"]}
    assert mapping["network.rank"]["options"]["kohya"]["network_dim"] == 4
    assert mapping["network.rank"]["options"]["simpletuner"]["lora_rank"] == 4
    assert mapping["training.steps"]["options"] == {
        "kohya": {"max_train_steps": 2},
        "simpletuner": {"max_train_steps": 2},
    }
    assert (
        mapping["training.learning_rate"]["options"]["kohya"]
        and mapping["training.learning_rate"]["options"]["simpletuner"]
    )
    neq = equivalence["not_equivalent"]
    for backend in ARMS:  # neither trains in bf16 on a CPU, and each says so
        assert any(line.startswith(f"{backend}: training.precision=bf16") for line in neq), neq
    assert any("not expressed by" in line for line in neq), neq  # a setting one backend sets and the other cannot
    assert comparison["json"]["differing_settings"] == {}  # one job for both: only the backend differs


def test_report_html_says_the_same(comparison: dict[str, Any]) -> None:
    arms = _arms(comparison)
    html = (comparison["out"] / "report.html").read_text()
    page = ReportPage(html)
    assert page.external == []  # self-contained
    assert set(page.rows) == set(ARMS)
    assert 'id="mapping"' in html  # the mapping table, one column per backend
    assert "<code>network_dim</code> = 4" in html and "<code>lora_rank</code> = 4" in html
    for label in ARMS:
        assert page.rows[label]["status"] == "finished"
        assert page.rows[label]["final_loss"] == arms[label]["final_loss"]
        cells = page.rows[label]["cells"]
        assert "2/2" in cells and str(arms[label]["lora"]["keys"]) in cells and "F32" in cells
        assert f"{arms[label]['wall_s']:.1f} s" in cells  # wall time
        shown = [img for img in page.images if img.get("alt", "").startswith(f"{label}: ")]
        assert len(shown) == len(arms[label]["samples"]) and all(i["src"].startswith("data:image/") for i in shown)
    assert page.image("loss-curves") is not None
    assert page.not_equivalent == comparison["json"]["equivalence"]["not_equivalent"]
