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
        result = pipe(prompt, num_inference_steps=steps, height=size, width=size, generator=generator, output_type="np")
        return np.asarray(result.images[0])

    plain = generate()
    pipe.load_lora_weights(str(lora.parent), weight_name=lora.name)
    styled = generate()
    image = (np.clip(styled, 0, 1) * 255).round().astype("uint8")
    from PIL import Image

    tmp = out.with_suffix(".partial.png")
    Image.fromarray(image).save(tmp)
    tmp.replace(out)
    print(f"sample written to {out}; mean pixel change from the LoRA: {float(np.abs(styled - plain).mean()):.6f}")


if __name__ == "__main__":
    main()
