"""Import Kohya GUI JSON presets and sd-scripts ``--config_file`` TOML files as loraforge preset layers.

Every key of the file ends up in the report exactly once: mapped (to which setting) or ignored (and why); a secret
(a key, token, password or secret by its name) is ignored by name, its value never shown or written. The GUI's
rules are in kohya_gui_import, the TOML's in sd_scripts_import, what they share in kohya_values.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from orchestrator.errors import LoraforgeError
from orchestrator.presets.kohya_gui_import import import_kohya_gui
from orchestrator.presets.kohya_values import ImportReport
from orchestrator.presets.sd_scripts_import import import_sd_scripts_toml

__all__ = ["ImportReport", "import_file", "import_kohya_gui", "import_sd_scripts_toml"]


def import_file(path: Path) -> ImportReport:
    """Import a Kohya GUI .json preset or an sd-scripts .toml config file."""
    if not path.exists():
        raise LoraforgeError(f"preset file {path} does not exist", "check the path")
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise LoraforgeError(f"{path} is not a Kohya GUI preset (expected a JSON object)")
            return import_kohya_gui(data, path.name)
        if suffix == ".toml":
            return import_sd_scripts_toml(tomllib.loads(path.read_text(encoding="utf-8")), path.name)
    except (ValueError, tomllib.TOMLDecodeError) as exc:  # not JSON / TOML, not UTF-8
        raise LoraforgeError(
            f"{path} cannot be read: {exc}", "is it a Kohya GUI .json preset or an sd-scripts .toml?"
        ) from None
    except RecursionError:  # the parsers recurse per level of [ or {
        raise LoraforgeError(
            f"{path} cannot be read: it nests too deeply to be a preset", "is it a Kohya GUI .json or sd-scripts .toml?"
        ) from None
    raise LoraforgeError(
        f"{path}: unknown preset format {suffix!r}", "use a Kohya GUI .json, an sd-scripts .toml or a .yaml preset"
    )
