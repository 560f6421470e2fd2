"""`loraforge doctor`: each backend found or not, its versions and python, and the exact command to fix it."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    import json

    from rich.table import Table

    from backends import base
    from orchestrator.display import console
    from orchestrator.envs import load_registry

    registry = load_registry()
    rows = []
    for name in base.names():
        backend = base.get(name)
        env = registry.get(name)
        if env is None:
            rows.append(
                {
                    "backend": name,
                    "status": "not set up",
                    "python": "-",
                    "versions": {},
                    "families": sorted(backend.families),
                    "fix": f"loraforge setup {name}",
                }
            )
            continue
        problems = backend.check(env)
        rows.append(
            {
                "backend": name,
                "status": "ok" if not problems else problems[0].message,
                "python": str(env.python),
                "versions": env.versions,
                "families": sorted(backend.families),
                "fix": (problems[0].fix or "") if problems else "",
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        table = Table("backend", "status", "trains", "python", "versions", "fix")
        for row in rows:
            table.add_row(
                row["backend"],
                row["status"],
                ", ".join(row["families"]),
                row["python"],
                ", ".join(f"{k} {v}" for k, v in row["versions"].items()),
                row["fix"],
            )
        out = console()
        out.print(table)
        for row in rows:  # each problem once more as one unwrapped line, its fix ready to paste
            if row["status"] != "ok":
                out.print(f"{row['backend']}: {row['status']}\n  fix: {row['fix']}", soft_wrap=True, markup=False)
    return 0 if all(r["status"] == "ok" for r in rows) else 1
