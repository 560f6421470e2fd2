"""The `loraforge` command. Thin: pick the subcommand, import only its module, run it, map errors to exit codes.

Each subcommand lives in ``orchestrator/commands/<name>.py`` with ``add_arguments(parser)`` and ``run(args) -> int``.
Nothing heavy (torch, jinja, a backend) is imported for ``--help``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Order is the order shown in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("orchestrator.commands.demo", "train a tiny LoRA end to end on a built-in demo (sets everything up)"),
    "train": ("orchestrator.commands.train", "train a LoRA from a job file, or from a photo folder in one shot"),
    "render": ("orchestrator.commands.render", "write a backend's config files and print its command; launch nothing"),
    "resume": ("orchestrator.commands.resume", "continue an interrupted run from its last checkpoint"),
    "prep": ("orchestrator.commands.prep", "validate, fix, crop and resize photos into a dataset, with a report"),
    "caption": ("orchestrator.commands.caption", "write a caption per image with a trigger token"),
    "captions": ("orchestrator.commands.captions", "review, edit, export or import a dataset's captions"),
    "presets": ("orchestrator.commands.presets", "list, show, import and export hyperparameter presets"),
    "runs": ("orchestrator.commands.runs", "list runs, or show one run's checkpoints and losses"),
    "inspect": ("orchestrator.commands.inspect", "show a LoRA file's family, rank, alpha, keys and metadata"),
    "convert": ("orchestrator.commands.convert", "convert a LoRA between Kohya and diffusers key layouts"),
    "sample": ("orchestrator.commands.sample", "generate images with a LoRA on a base model"),
    "compare": ("orchestrator.commands.compare", "train several backends or settings on one dataset and report"),
    "serve": ("orchestrator.commands.serve", "a local web app: photos to LoRA, runs live, the queue, compare"),
    "submit": ("orchestrator.commands.submit", "submit a job to a cluster (Slurm, Ray)"),
    "status": ("orchestrator.commands.status", "show a cluster job's state and progress"),
    "logs": ("orchestrator.commands.logs", "print (or follow) a cluster job's unified progress"),
    "cancel": ("orchestrator.commands.cancel", "cancel a cluster job"),
    "setup": ("orchestrator.commands.setup", "create or register a backend's Python environment"),
    "doctor": ("orchestrator.commands.doctor", "check each backend's environment and say how to fix it"),
    "parse-log": ("orchestrator.commands.parse_log", "replay a saved backend log as unified events (JSON lines)"),
}


def _available() -> dict[str, tuple[str, str]]:
    """Commands whose module exists (so a partial checkout never offers a command that cannot run)."""
    import importlib.util

    return {name: spec for name, spec in COMMANDS.items() if importlib.util.find_spec(spec[0]) is not None}


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loraforge",
        description="Train LoRA adapters (Flux, SDXL, SD 1.5) with sd-scripts or SimpleTuner.",
    )
    from orchestrator import __version__

    parser.add_argument("--version", action="version", version=f"loraforge {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in _available().items():
        child = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module).add_arguments(child)
    return parser


# Exit status: 0 done; 1 the run failed (or a failure of the world: disk full, a read-only folder); 2 bad input
# (an invalid job, a missing or unreadable file, a backend not set up): nothing was started; 130 interrupted.
EXIT_DONE, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_DONE
    try:
        return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)
    except Exception as exc:  # the one error boundary: every failure becomes one line and an exit status
        if args.debug:
            raise
        return _report(exc)
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED


def _report(exc: BaseException) -> int:
    from orchestrator.errors import LoraforgeError, describe_os_error

    if isinstance(exc, LoraforgeError):
        _error(str(exc))
        return EXIT_BAD_INPUT
    if isinstance(exc, BrokenPipeError):  # `loraforge runs | head`: the reader left; nothing to say
        return EXIT_DONE
    if isinstance(exc, OSError):
        _error(describe_os_error(exc))
        return EXIT_FAILED
    import traceback

    traceback.print_exception(exc)
    _error(
        f"internal error: {type(exc).__name__}: {str(exc)[:300]}\n"
        "  this is a bug in loraforge: please report it, with the traceback above and the command you ran"
    )
    return EXIT_FAILED


def _error(text: str) -> None:
    from rich.text import Text

    from orchestrator.display import console

    console().print(Text("error: ", style="red") + Text(text))


if __name__ == "__main__":
    sys.exit(main())
