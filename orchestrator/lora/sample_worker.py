"""Images from a LoRA through diffusers; run as a script in a Python that has diffusers (never imported by loraforge):

    python sample_worker.py '{"base_model": ..., "lora": ..., "prompts": [...], "seeds": [...], "out_dir": ...,
                              "steps": 20, "size": 1024, "scale": 1.0, "guidance": 7.0, "max_tokens": null}'

Loads the pipeline once for every (prompt, seed). Prints one JSON line per image with the mean absolute pixel
difference against the same seed without the LoRA, so callers see that the weights really applied.

Each pipeline is called with the arguments its own signature has: the prompt always by keyword (FLUX.2's first
parameter is ``image``); guidance as ``guidance_scale`` or, where that is only for guidance-distilled checkpoints
(Qwen-Image: its default is None), as ``true_cfg_scale`` with an empty negative prompt, which that pipeline needs
for its classifier-free guidance; no guidance given ("guidance": null) leaves the pipeline's own default, as does
no "max_tokens" (the prompt's token count for pipelines with a max_sequence_length: SD3's T5, Chroma, Lumina 2...).
A LoRA of which diffusers attached no module (a layout it does not read: it says nothing) stops with that message.
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

    options = call_options(pipe, args)

    def render(prompt: str, seed: int) -> np.ndarray:
        generator = torch.Generator("cpu").manual_seed(seed)
        result = pipe(prompt=prompt, generator=generator, output_type="np", **options)
        return np.asarray(result.images[0])

    jobs = [(i, prompt, seed) for i, prompt in enumerate(args["prompts"]) for seed in args["seeds"]]
    try:
        import peft  # noqa: F401  (diffusers' LoRA loader needs it)
    except ImportError:  # sd-scripts' venv has no peft: merge the Kohya-format weights into the modules directly
        plain = {(i, seed): render(prompt, seed) for i, prompt, seed in jobs}
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tiny"))
        from sample_script import merge_kohya_lora

        merge_kohya_lora(pipe, lora, scale)
    else:  # the LoRA first, so that a file diffusers cannot apply stops before any image is drawn
        pipe.load_lora_weights(str(lora.parent), weight_name=lora.name, adapter_name="loraforge")
        if not pipe.get_list_adapters():
            sys.exit(
                f"diffusers attached none of {lora.name}'s modules to {type(pipe).__name__}: it does not read this "
                "layout or the LoRA is for another model (check the family with `loraforge inspect`)"
            )
        pipe.disable_lora()
        plain = {(i, seed): render(prompt, seed) for i, prompt, seed in jobs}
        pipe.enable_lora()
        pipe.set_adapters(["loraforge"], adapter_weights=[scale])
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, prompt, seed in jobs:
        styled = render(prompt, seed)
        out = out_dir / f"sample-{i:02d}-seed{seed}.png"
        tmp = out.with_suffix(".partial.png")
        Image.fromarray((np.clip(styled, 0, 1) * 255).round().astype("uint8")).save(tmp)
        tmp.replace(out)
        change = float(np.abs(styled - plain[(i, seed)]).mean())
        print(json.dumps({"path": str(out), "prompt": prompt, "seed": seed, "pixel_change": change}), flush=True)


def call_options(pipe, args: dict) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Steps, size and guidance under the names this pipeline's __call__ takes."""
    import inspect

    params = inspect.signature(type(pipe).__call__).parameters
    size = int(args.get("size", 1024))
    options: dict[str, object] = {"num_inference_steps": int(args.get("steps", 20)), "height": size, "width": size}
    if args.get("max_tokens") is not None:
        options["max_sequence_length"] = int(args["max_tokens"])
    guidance = args.get("guidance")
    if guidance is not None:
        distilled_only = "guidance_scale" in params and params["guidance_scale"].default is None
        if "true_cfg_scale" in params and distilled_only:
            options["true_cfg_scale"] = float(guidance)
            if float(guidance) > 1 and "negative_prompt" in params:
                options["negative_prompt"] = " "
        elif "guidance_scale" in params:
            options["guidance_scale"] = float(guidance)
    return {k: v for k, v in options.items() if k in params}


if __name__ == "__main__":
    main()
