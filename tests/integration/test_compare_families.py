"""`loraforge compare --backends kohya,simpletuner` for real on SD3.5, a family of the families issue both train.

One job for both arms: the tiny SD3 folder is a diffusers pipeline for SimpleTuner and holds sd-scripts' single files
under kohya/ (orchestrator.tiny.tiny_sd3). sd-scripts maps a full-size T5-XXL (a sparse file) in bf16: about 12 GiB
of RAM for its arm, a few minutes in all on 2 cores. Marked slow: `pytest -m slow`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from compare_runs import child_env, final_loss_in, real_env
from safetensors import safe_open

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]

ARMS = ("kohya", "simpletuner")


@pytest.fixture(scope="module")
def comparison(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    pytest.importorskip("matplotlib", reason="pip install -e '.[report]'")
    envs = {}
    for backend in ARMS:
        env, why = real_env(backend)
        if env is None:
            pytest.skip(f"{backend} not usable ({why}): run `loraforge setup {backend}`")
        envs[backend] = env
    from conftest import _REAL_HOME

    from orchestrator.tiny import tiny_sd3
    from orchestrator.tiny.dataset import make_dataset

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORAFORGE_HOME", str(_REAL_HOME))
        model = tiny_sd3(envs["simpletuner"].python)  # the builders need SimpleTuner's diffusers
    root = tmp_path_factory.mktemp("compare-sd3")
    home = root / "home"
    (home / "loraforge").mkdir(parents=True)
    (home / "loraforge" / "envs.json").write_text(json.dumps({name: env.to_json() for name, env in envs.items()}))
    job = {
        "name": "cmp-sd3",
        "base_model": str(model),
        "subject": "object",
        "trigger": "ohwx shape",
        "add_trigger": True,
        "dataset": str(make_dataset(root / "data", count=4, size=64)),
        "network": {"rank": 4},
        "training": {"steps": 2, "resolution": 64},
        "sampling": {"steps": 2},
        # both arms in diffusers' layout: loraforge converts sd-scripts' SD3 LoRAs, not SimpleTuner's, to Kohya's
        "saving": {"format": "diffusers"},
        # a 32-token T5: at sd-scripts' 256 the full-size T5-XXL takes minutes per caption on 2 cores
        "backend_args": {"kohya": {"t5xxl_max_token_length": 32}},
    }
    (root / "job.yaml").write_text(yaml.safe_dump(job))
    out = root / "out"
    argv = [sys.executable, "-m", "orchestrator.cli", "compare", str(root / "job.yaml")]
    argv += ["--backends", ",".join(ARMS), "-o", str(out), "--json"]
    result = subprocess.run(argv, capture_output=True, text=True, env=child_env(home), timeout=2400)
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
    assert result.returncode == 0, result.stderr[-4000:]
    return {"result": result, "out": out, "json": json.loads(result.stdout)}


def test_both_backends_train_the_same_sd3_and_say_it_is_sd3(comparison: dict[str, Any]) -> None:
    arms = {arm["label"]: arm for arm in comparison["json"]["arms"]}
    assert list(arms) == list(ARMS)
    for label in ARMS:
        arm = arms[label]
        assert arm["status"] == "finished", arm["reason"]
        assert (arm["step"], arm["total"]) == (2, 2)
        assert arm["final_loss"] is not None
        assert arm["final_loss"] == final_loss_in(Path(arm["run_dir"]) / "events.jsonl")
        with safe_open(arm["lora"]["path"], "pt") as lora:
            metadata = lora.metadata()
        assert metadata["loraforge_family"] == "sd3" and metadata["loraforge_backend"] == label
        assert arm["lora"]["rank"] == 4 and arm["lora"]["layout"] == "diffusers"


def test_the_arms_sample_the_same_prompts(comparison: dict[str, Any]) -> None:
    plans = []
    for arm in comparison["json"]["arms"]:
        assert arm["samples_note"] is None and arm["samples"], arm["samples_note"]
        plans.append([(s["prompt"], s["seed"]) for s in arm["samples"]])
    assert plans[0] == plans[1]


def test_the_mapping_names_each_backends_own_option(comparison: dict[str, Any]) -> None:
    mapping = {row["field"]: row for row in comparison["json"]["equivalence"]["mapping"]}
    assert mapping["network.rank"]["options"]["kohya"]["network_dim"] == 4
    assert mapping["network.rank"]["options"]["simpletuner"]["lora_rank"] == 4
