"""`loraforge parse-log --backend kohya STDERR [--stdout FILE]`: replay a saved log into events (JSON lines)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from backends.base import names

    parser.add_argument("log", help="saved stderr log (or a combined log)")
    parser.add_argument("--backend", "-b", choices=names(), required=True)
    parser.add_argument("--stdout", dest="stdout_log", help="the saved stdout log of the same run, if separate")
    parser.add_argument(
        "--returncode",
        type=int,
        default=None,
        help="the run's exit status, if known; without it a log that ends in an uncaught traceback is a failure",
    )
    parser.add_argument("--chunk", type=int, default=65536, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from orchestrator.replay import replay

    streams = [("stderr", Path(args.log))]
    if args.stdout_log:
        streams.insert(0, ("stdout", Path(args.stdout_log)))
    for line in replay(args.backend, streams, args.returncode, chunk=max(1, args.chunk)):
        sys.stdout.write(line + "\n")
    return 0
