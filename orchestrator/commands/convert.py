"""`loraforge convert IN OUT --to kohya|diffusers [--family F]`: change the key layout, weights copied bit for bit
(SD 1.5, SDXL, Flux, Chroma, SD3, Lumina 2; Qwen-Image and FLUX.2 have no Kohya layout to convert to)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="LoRA .safetensors to read")
    parser.add_argument("target", help=".safetensors to write")
    parser.add_argument("--to", choices=["kohya", "diffusers"], required=True)
    parser.add_argument(
        "--family",
        choices=["sd15", "sdxl", "flux", "chroma", "sd3", "lumina2"],
        help="the model family, where the file's metadata and module names leave it open (see `loraforge inspect`)",
    )


def run(args: argparse.Namespace) -> int:
    from orchestrator.errors import LoraforgeError
    from orchestrator.lora.convert import convert

    source, target = Path(args.source), Path(args.target)
    if source.resolve() == target.resolve():
        raise LoraforgeError("the output would overwrite the input", "write the converted file under another name")
    convert(source, target, args.to, args.family)
    print(f"wrote {target} ({args.to} layout)")
    return 0
