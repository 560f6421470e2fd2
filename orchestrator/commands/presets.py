"""`loraforge presets list | show NAME | import FILE [-o OUT] | export JOB_OR_PRESET --to kohya-gui|sd-scripts -o FILE`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("list", help="built-in presets")
    show = sub.add_parser("show", help="print a preset's settings")
    show.add_argument("name")
    imp = sub.add_parser("import", help="import a Kohya GUI .json preset or an sd-scripts .toml config")
    imp.add_argument("file")
    imp.add_argument("-o", "--out", help="write the preset as YAML here")
    imp.add_argument(
        "--backend",
        choices=["kohya", "simpletuner"],
        default="kohya",
        help="also list what the chosen backend cannot express",
    )
    exp = sub.add_parser("export", help="export a job file or preset to Kohya GUI JSON or sd-scripts TOML")
    exp.add_argument("source", help="job .yaml, preset name or preset file")
    exp.add_argument("--to", choices=["kohya-gui", "sd-scripts"], required=True)
    exp.add_argument("-o", "--out", required=True)


def run(args: argparse.Namespace) -> int:
    import yaml

    from orchestrator.presets import builtin_names, describe, load_preset_layer, write_preset_file

    if args.action == "list":
        names = builtin_names()
        width = max(map(len, names), default=0)
        for name in names:
            print(f"{name:<{width}}  {describe(name)}")
        return 0
    if args.action == "show":
        sys.stdout.write(yaml.safe_dump(load_preset_layer(args.name), sort_keys=False, allow_unicode=True))
        return 0
    if args.action == "import":
        from orchestrator.presets.kohya_import import import_file

        report = import_file(Path(args.file))
        sys.stdout.write(report.text())
        if args.backend == "simpletuner":
            from orchestrator.presets.translate import not_expressible_by_simpletuner

            for line in not_expressible_by_simpletuner(report.layer):
                print(f"  not for simpletuner: {line}")
        text = yaml.safe_dump(report.layer, sort_keys=False, allow_unicode=True)
        if args.out:
            header = f"# imported from {Path(args.file).name} by `loraforge presets import`\n"
            write_preset_file(Path(args.out), header + text)
            print(f"wrote {args.out}")
        else:
            sys.stdout.write(text)
        return 0
    from orchestrator.presets.kohya_export import to_kohya_gui, to_sd_scripts

    layer = load_preset_layer(args.source)
    if args.to == "kohya-gui":
        write_preset_file(Path(args.out), json.dumps(to_kohya_gui(layer), indent=4) + "\n")
    else:
        import tomli_w

        write_preset_file(Path(args.out), tomli_w.dumps(to_sd_scripts(layer)))
    print(f"wrote {args.out}")
    return 0
