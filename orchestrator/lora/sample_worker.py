"""Images from a LoRA through diffusers; run as a script in a Python that has diffusers (never imported by loraforge):

    python sample_worker.py '{"base_model": ..., "lora": ..., "prompts": [...], "seeds": [...], "out_dir": ...,
                              "steps": 20, "size": 1024, "scale": 1.0, "guidance": 7.0}'

Loads the pipeline once for every (prompt, seed). Prints one JSON line per image with the mean absolute pixel
difference against the same seed without the LoRA, so callers see that the weights really applied.
"""

from __future__ import annotations

import sys

# Run as a script, this folder is sys.path[0], and its inspect.py would shadow the standard library's (numpy and
# torch import it): drop it before anything else is imported.
if sys.path and sys.path[0] and __file__.startswith(sys.path[0].rstrip("/") + "/"):
    sys.path.pop(0)

import json  # noqa: E402
from pathlib import Path  # noqa: E402


def main() -> None:
    import numpy as np
    import torch
    from diffusers import DiffusionPipeline
    from PIL import Image

    args = json.loads(sys.argv[1])
    lora, out_dir, scale = Path(args["lora"]), Path(args["out_dir"]), float(args.get("scale", 1.0))
    pipe = DiffusionPipeline.from_pretrained(args["base_model"], torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)

    def render(prompt: str, seed: int) -> np.ndarray:
        result = pipe(
            prompt,
            num_inference_steps=int(args.get("steps", 20)),
            guidance_scale=float(args.get("guidance", 7.0)),
            height=int(args.get("size", 1024)),
            width=int(args.get("size", 1024)),
            generator=torch.Generator("cpu").manual_seed(seed),
            output_type="np",
        )
        return np.asarray(result.images[0])

    jobs = [(i, prompt, seed) for i, prompt in enumerate(args["prompts"]) for seed in args["seeds"]]
    plain = {(i, seed): render(prompt, seed) for i, prompt, seed in jobs}
    try:
        import peft  # noqa: F401  (diffusers' LoRA loader needs it)

        pipe.load_lora_weights(str(lora.parent), weight_name=lora.name, adapter_name="loraforge")
        pipe.set_adapters(["loraforge"], adapter_weights=[scale])
    except ImportError:  # sd-scripts' venv has no peft: merge the Kohya-format weights into the modules directly
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tiny"))
        from sample_script import merge_kohya_lora

        merge_kohya_lora(pipe, lora, scale)
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, prompt, seed in jobs:
        styled = render(prompt, seed)
        out = out_dir / f"sample-{i:02d}-seed{seed}.png"
        tmp = out.with_suffix(".partial.png")
        Image.fromarray((np.clip(styled, 0, 1) * 255).round().astype("uint8")).save(tmp)
        tmp.replace(out)
        change = float(np.abs(styled - plain[(i, seed)]).mean())
        print(json.dumps({"path": str(out), "prompt": prompt, "seed": seed, "pixel_change": change}), flush=True)


if __name__ == "__main__":
    main()
