"""What an imported Kohya preset means for SimpleTuner: the settings it cannot express, listed, never dropped."""

from __future__ import annotations

from typing import Any


def not_expressible_by_simpletuner(layer: dict[str, Any]) -> list[str]:
    # The backend's own tables: PEFT's LoRA, and LoCon/LoHa/LoKr through LyCORIS (lora_type lycoris) on SDXL.
    from backends.simpletuner.options import LYCORIS_ALGOS, LYCORIS_ARGS

    lines = []
    for option, value in sorted(layer.get("backend_args", {}).get("kohya", {}).items()):
        lines.append(f"backend_args.kohya.{option} = {value!r} (an sd-scripts option; SimpleTuner ignores it)")
    network = layer.get("network", {})
    network_type = network.get("type", "lora")
    lycoris = network_type in LYCORIS_ALGOS
    if network_type != "lora" and not lycoris:
        types = ", ".join(["lora", *sorted(LYCORIS_ALGOS)])
        lines.append(f"network.type = {network_type!r} (SimpleTuner trains {types}; it would train a standard LoRA)")
    elif lycoris and layer.get("family") not in (None, "sdxl"):
        lines.append(f"network.type = {network_type!r} (SimpleTuner trains LyCORIS networks for SDXL only here)")
    for arg, value in sorted(network.get("args", {}).items()):
        if not lycoris or arg not in LYCORIS_ARGS:
            lines.append(f"network.args.{arg} = {value!r} (an sd-scripts network argument; SimpleTuner ignores it)")
    if layer.get("family") == "sd15":
        lines.append("family = 'sd15' (SimpleTuner 4.10.1 cannot train SD 1.5: use --backend kohya)")
    return lines
