"""`loraforge sample LORA --base-model M --prompt "..." [--seed S] [--scale W] [--steps N] [--size PX] [-o DIR]`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("lora", help="LoRA .safetensors (Kohya or diffusers layout)")
    parser.add_argument("--base-model", required=True, help="the model the LoRA was trained on (folder or hub id)")
    parser.add_argument("--prompt", action="append", required=True, help="repeatable")
    parser.add_argument("--seed", type=int, action="append", help="repeatable (default 42)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--scale", type=float, default=1.0, help="LoRA weight (0 = the base model alone)")
    parser.add_argument(
        "--guidance",
        type=float,
        help="guidance scale (default: the pipeline's own; 1 = no classifier-free guidance, faster; Flux and FLUX.2: "
        "their distilled guidance; Qwen-Image: true_cfg_scale)",
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        help="prompt tokens for T5 / Gemma / Mistral / Qwen encoders (default: the pipeline's, 256-512; fewer is faster)",
    )
    parser.add_argument("-o", "--out", default="samples")
    parser.add_argument("--python", help="a Python with diffusers (default: a backend's venv)")


def run(args: argparse.Namespace) -> int:
    from orchestrator.lora.sample import samples

    found = samples(
        Path(args.lora),
        args.base_model,
        args.prompt,
        args.seed or [42],
        Path(args.out),
        Path(args.python) if args.python else None,
        steps=args.steps,
        size=args.size,
        scale=args.scale,
        guidance=args.guidance,
        max_tokens=args.max_tokens,
    )
    for sample in found:  # how far the LoRA moved the image: 0 would mean it did not apply
        change = sample["pixel_change"] * 255
        print(f"{sample['path']}  (the LoRA changes it by {change:.2f} levels of 255 on average)")
    return 0
