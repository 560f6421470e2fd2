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
    parser.add_argument("--guidance", type=float, default=7.0, help="classifier-free guidance (1 = off, faster)")
    parser.add_argument("-o", "--out", default="samples")
    parser.add_argument("--python", help="a Python with diffusers (default: a backend's venv)")


def run(args: argparse.Namespace) -> int:
    from orchestrator.lora.sample import generate

    paths = generate(
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
    )
    for path in paths:
        print(path)
    return 0
