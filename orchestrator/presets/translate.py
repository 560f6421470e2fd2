"""What an imported Kohya preset means for SimpleTuner: the settings it cannot express, listed, never dropped."""

from __future__ import annotations

from typing import Any

# Network types SimpleTuner's LoRA trainer offers (PEFT LoRA; LyCORIS through its lycoris config file).
_SIMPLETUNER_TYPES = {"lora", "locon", "loha", "lokr"}


def not_expressible_by_simpletuner(layer: dict[str, Any]) -> list[str]:
    lines = []
    for option, value in sorted(layer.get("backend_args", {}).get("kohya", {}).items()):
        lines.append(f"backend_args.kohya.{option} = {value!r} (an sd-scripts option; SimpleTuner ignores it)")
    network_type = layer.get("network", {}).get("type", "lora")
    if network_type not in _SIMPLETUNER_TYPES:
        lines.append(f"network.type = {network_type!r} (SimpleTuner trains lora, locon, loha, lokr)")
    if layer.get("family") == "sd15":
        lines.append("family = 'sd15' (SimpleTuner 4.10.1 cannot train SD 1.5: use --backend kohya)")
    return lines
