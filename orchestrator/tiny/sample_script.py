"""Generate one image with a LoRA applied, through diffusers. Run in a backend venv (never imported):

    python sample_script.py BASE_MODEL LORA OUT.png PROMPT [STEPS] [SIZE] [SEED]

Prints the mean absolute pixel difference against the same seed without the LoRA, so callers can see that the
weights really applied.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> None:
    import numpy as np
    import torch
    from diffusers import DiffusionPipeline

    base, lora, out, prompt = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    steps = int(sys.argv[5]) if len(sys.argv) > 5 else 4
    size = int(sys.argv[6]) if len(sys.argv) > 6 else 128
    seed = int(sys.argv[7]) if len(sys.argv) > 7 else 42
    pipe = DiffusionPipeline.from_pretrained(base, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)

    def generate() -> np.ndarray:
        generator = torch.Generator("cpu").manual_seed(seed)
        result = pipe(  # guidance 1: no classifier-free pass, half the UNet calls (the demo's model is random anyway)
            prompt,
            num_inference_steps=steps,
            guidance_scale=1.0,
            height=size,
            width=size,
            generator=generator,
            output_type="np",
        )
        return np.asarray(result.images[0])

    plain = generate()
    try:
        import peft  # noqa: F401  (diffusers' LoRA loader needs it)

        pipe.load_lora_weights(str(lora.parent), weight_name=lora.name)
    except ImportError:  # sd-scripts' venv has no peft: merge the Kohya-format weights into the modules directly
        merge_kohya_lora(pipe, lora)
    styled = generate()
    image = (np.clip(styled, 0, 1) * 255).round().astype("uint8")
    from PIL import Image

    tmp = out.with_suffix(".partial.png")
    Image.fromarray(image).save(tmp)
    tmp.replace(out)
    print(f"sample written to {out}; mean pixel change from the LoRA: {float(np.abs(styled - plain).mean()):.6f}")


def merge_kohya_lora(pipe, lora: Path, scale: float = 1.0) -> None:  # type: ignore[no-untyped-def]
    """W += scale * alpha/rank * up @ down for every ``lora_unet_*`` / ``lora_te_*`` module of a Kohya-format file.
    Kohya names a module by its dotted path with dots as underscores, so names are matched that way."""
    import torch
    from safetensors.torch import load_file

    weights = load_file(str(lora))
    roots = {"lora_unet_": pipe.unet, "lora_te_": pipe.text_encoder, "lora_te1_": pipe.text_encoder}
    merged = 0
    for prefix, model in roots.items():
        modules = {name.replace(".", "_"): module for name, module in model.named_modules()}
        for key, down in weights.items():
            if not (key.startswith(prefix) and key.endswith(".lora_down.weight")):
                continue
            stem = key[: -len(".lora_down.weight")]
            module = modules.get(stem[len(prefix) :])
            if module is None or not hasattr(module, "weight"):
                continue
            up = weights[f"{stem}.lora_up.weight"].float()
            rank = down.shape[0]
            alpha = float(weights.get(f"{stem}.alpha", torch.tensor(rank)))
            delta = up.flatten(1) @ down.float().flatten(1)
            with torch.no_grad():
                module.weight += (scale * alpha / rank * delta).reshape(module.weight.shape).to(module.weight.dtype)
            merged += 1
    if merged == 0:
        raise SystemExit(f"{lora}: no Kohya-format LoRA modules matched this model")


if __name__ == "__main__":
    main()
