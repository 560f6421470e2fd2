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
    parser.add_argument("--returncode", type=int, default=None, help="exit status, to emit the failure (if any)")
    parser.add_argument("--chunk", type=int, default=65536, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from backends import base
    from orchestrator.events import event_to_json

    parser = base.get(args.backend).parser()
    out = sys.stdout
    streams = [("stderr", Path(args.log))]
    if args.stdout_log:
        streams.insert(0, ("stdout", Path(args.stdout_log)))
    for stream, path in streams:
        data = path.read_bytes()
        for i in range(0, len(data), args.chunk):
            for event in parser.feed(data[i : i + args.chunk], stream):
                out.write(event_to_json(event) + "\n")
    if args.returncode is not None:
        for event in parser.finish(args.returncode):
            out.write(event_to_json(event) + "\n")
    else:
        for event in parser.finish(0):
            out.write(event_to_json(event) + "\n")
    return 0
