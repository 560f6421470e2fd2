"""`loraforge serve [--host 127.0.0.1] [--port 7860] [--runs DIR] [--token TOKEN]`: the local web app."""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=7860, help="port (0: any free one; default: 7860)")
    parser.add_argument("--runs", default="runs", help="folder holding run folders (default: runs, as the CLI)")
    parser.add_argument(
        "--token",
        default=os.environ.get("LORAFORGE_TOKEN"),
        help="token every request must carry (default: $LORAFORGE_TOKEN; none on loopback; generated and printed "
        "on any other address)",
    )
    parser.add_argument(
        "--gpus",
        default=None,
        help="GPU ids local jobs run on, one job per GPU (e.g. 0,1; 'none': one job at a time on CPU; "
        "default: the GPUs this machine shows)",
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from orchestrator.web.app import serve

    gpus = None if args.gpus is None else [g for g in args.gpus.split(",") if g.strip() and g != "none"]
    return serve(Path(args.runs), host=args.host, port=args.port, token=args.token, gpus=gpus)
