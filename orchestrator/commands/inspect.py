"""`loraforge inspect LORA [--json]`: layout, family (and what told it), the layout `convert` writes from it, rank,
alpha, modules, size, dtype, trigger, metadata."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("lora", help="a LoRA .safetensors file")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--all-metadata", action="store_true", help="print every metadata key in full")


def run(args: argparse.Namespace) -> int:
    import json

    from orchestrator.lora.inspect import describe

    info = describe(Path(args.lora))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key in (
        "file",
        "layout",
        "family",
        "family_from",
        "converts_to",
        "rank",
        "alpha",
        "modules",
        "text_encoder",
        "size_bytes",
        "dtypes",
        "trigger",
    ):
        print(f"{key:<13} {info[key] if info[key] is not None else '-'}")
    print(f"metadata      {len(info['metadata'])} keys")
    for key, value in sorted(info["metadata"].items()):
        text = value if args.all_metadata else (value if len(value) <= 80 else value[:77] + "...")
        print(f"  {key}: {text}")
    return 0
