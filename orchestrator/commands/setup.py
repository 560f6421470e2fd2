"""`loraforge setup kohya|simpletuner [--python PY] [--venv EXISTING] [--sd-scripts DIR]`.

Creates the backend's own virtual environment under $LORAFORGE_HOME/envs/BACKEND, or registers an existing
install (``--venv``: e.g. a kohya_ss or SimpleTuner venv you already use; it is never modified).
"""

from __future__ import annotations

import argparse

from orchestrator.userpath import user_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from backends.base import names

    parser.add_argument("backend", choices=names())
    parser.add_argument("--python", help="interpreter to build the venv with (default: found on PATH or in pyenv)")
    parser.add_argument("--venv", help="register this existing virtual environment instead of creating one")
    parser.add_argument(
        "--sd-scripts", dest="root", help="kohya: the sd-scripts checkout (default: third_party/sd-scripts)"
    )
    parser.add_argument("--force", action="store_true", help="recreate a venv loraforge created before")


def run(args: argparse.Namespace) -> int:
    from backends.base import SetupRequest
    from orchestrator.display import console
    from orchestrator.envs import setup_backend

    request = SetupRequest(
        python=args.python,
        venv=user_path(args.venv).resolve() if args.venv else None,
        root=user_path(args.root).resolve() if args.root else None,
        force=args.force,
    )
    con = console()
    env = setup_backend(args.backend, request, con)
    versions = ", ".join(f"{k} {v}" for k, v in env.versions.items())
    con.print(f"[green]{args.backend} ready[/]: {env.python} ({versions})")
    return 0
