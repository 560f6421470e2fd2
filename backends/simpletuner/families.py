"""What each model family needs in SimpleTuner's config beyond ``model_family``, and what it ignores.

Facts from SimpleTuner 4.10.1's own model classes (``simpletuner/helpers/models/<family>/model.py`` in the wheel
loraforge installs) and from real CPU runs on the tiny models (tests/fixtures/simpletuner/<family>/README.md):

- the flavour matters only where it picks other classes: Qwen-Image (4.10.1's default ``v2.1`` loads a Qwen3-VL
  text encoder, its own transformer and VAE, and fetches an "assistant" LoRA and a texture-fix VAE from the hub)
  and FLUX.2 (default ``klein-9b``: a Qwen3 text encoder from the model folder; ``dev``: Mistral-3). For SD3,
  Chroma and Lumina 2 the flavour only names the hub repository to load when no model is given, which loraforge
  always gives;
- FLUX.2-dev's Mistral-3 text encoder is loaded by its hub id only (``MISTRAL_PATH`` in flux2/model.py; the code
  reads ``pretrained_text_encoder_model_name_or_path``, which 4.10.1's option parser does not accept);
- every family here but SDXL is flow matching (``PREDICTION_TYPE``): SimpleTuner applies ``snr_gamma`` only to
  epsilon and v-prediction losses, and ``noise_offset`` only with ``offset_noise`` on a model that is not flow
  matching (models/common.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import LoraforgeError
from orchestrator.job import JobSpec
from orchestrator.userpath import user_path

FLOW_MATCHING = frozenset({"flux", "sd3", "chroma", "lumina2", "qwen_image", "flux2"})

# Text encoder sequence length, written out so `render --explain` shows it (each is SimpleTuner's own default):
TOKENIZER_MAX_LENGTH = {
    "sd3": 154,  # sd3/model.py: 4.10.1 caps T5 at 154 (quickstart/SD3.md says 256; the code lowers it, warning)
    "chroma": 512,  # chroma/model.py: max_sequence_length = tokenizer_max_length or 512 (the most it supports)
    "lumina2": 256,  # lumina2/model.py: None -> 256, at most 512
}
# flux2: 4.10.1 sets 512 whatever is given (flux2/model.py MAX_SEQUENCE_LENGTH); qwen_image reads no length.

# model_flavour by hub id (HUGGINGFACE_PATHS in each model.py), where the flavour picks the classes
HUB_FLAVOURS: dict[str, dict[str, str]] = {
    "qwen_image": {
        "Qwen/Qwen-Image": "v1.0",
        "Qwen/Qwen-Image-2512": "v2.0",
        "Qwen/Qwen-Image-2.1": "v2.1",
    },
    "flux2": {
        "black-forest-labs/FLUX.2-dev": "dev",
        "black-forest-labs/FLUX.2-klein-base-4B": "klein-4b",
        "black-forest-labs/FLUX.2-klein-base-9B": "klein-9b",
    },
}
# A model folder's text encoder class -> flavour (model_index.json). Qwen2.5-VL is Qwen-Image 1.0's layout (2512
# shares it); Qwen3-VL is 2.1's. Mistral-3 is FLUX.2-dev's; Qwen3 is Klein's (4B: 5 double blocks, 9B: 8).
ENCODER_FLAVOURS = {
    "qwen_image": {"Qwen2_5_VLForConditionalGeneration": "v1.0", "Qwen3VLForConditionalGeneration": "v2.1"},
    "flux2": {"Mistral3ForConditionalGeneration": "dev", "Qwen3ForCausalLM": "klein"},
}
# Neither 4.10.1 default fits a model given by path or an unknown hub id: v2.1 needs the hub, klein-9b is another
# model. Qwen-Image 1.0 and FLUX.2-dev are the published base models most fine-tunes start from.
DEFAULT_FLAVOURS = {"qwen_image": "v1.0", "flux2": "dev"}
# The families whose SimpleTuner LoRA (diffusers keys) loraforge can write in Kohya's layout: orchestrator/lora
# converts U-Net and FLUX.1-layout transformer modules (Chroma's are FLUX.1's) and refuses the rest, which would
# only show after training; so a job asking for Kohya's layout on another family is refused before it starts.
KOHYA_LAYOUT = frozenset({"sdxl", "flux", "chroma"})
MISTRAL_HUB_ID = "mistralai/Mistral-Small-3.1-24B-Instruct-2503"  # flux2/model.py MISTRAL_PATH
QWEN_21_HUB = "SimpleTuner/Qwen-Image-2.1-training-assistant-v3 and madebyollin/texture-fix-vae-for-qwen-image-2.1"


@dataclass
class FamilyOptions:
    config: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def family_options(job: JobSpec, *, offline: bool) -> FamilyOptions:
    """The config entries ``job.family`` needs, and notes on job settings it cannot use."""
    family = job.family or ""
    out = FamilyOptions()
    t = job.training
    if job.saving.format == "kohya" and family not in KOHYA_LAYOUT:
        raise LoraforgeError(
            f"saving.format=kohya: loraforge cannot write SimpleTuner's {family} LoRA in Kohya's layout (it converts "
            "SDXL, Flux and Chroma LoRAs)",
            "set saving.format: diffusers (--set saving.format=diffusers); diffusers and ComfyUI load that layout",
        )
    if family in TOKENIZER_MAX_LENGTH:
        out.config["tokenizer_max_length"] = TOKENIZER_MAX_LENGTH[family]
    if family in DEFAULT_FLAVOURS:
        given = job.backend_args.get("simpletuner", {}).get("model_flavour")
        flavour = str(given) if given is not None else model_flavour(job.base_model, family, out.notes)
        out.config["model_flavour"] = flavour
        out.notes += _flavour_notes(job, family, flavour, offline=offline)
    if family in FLOW_MATCHING:
        if t.min_snr_gamma is not None:
            out.notes.append(
                f"training.min_snr_gamma={t.min_snr_gamma}: {family} is a flow-matching model; SimpleTuner weights "
                "only epsilon and v-prediction losses by SNR, so it is not passed"
            )
        if t.noise_offset:
            out.notes.append(
                f"training.noise_offset={t.noise_offset}: {family} is a flow-matching model; SimpleTuner applies noise "
                "offset only to epsilon and v-prediction models, so it is not passed"
            )
    else:
        if t.min_snr_gamma is not None:
            out.config["snr_gamma"] = t.min_snr_gamma
        out.config["noise_offset"] = t.noise_offset or 0.0
        if t.noise_offset:
            out.config["offset_noise"] = True  # noise_offset alone is only the magnitude: SimpleTuner needs both
    if family == "qwen_image" and t.batch_size > 1:
        out.notes.append(
            f"training.batch_size={t.batch_size}: SimpleTuner's Qwen-Image guide says batches above 1 do not train "
            "correctly yet; it suggests batch_size 1 with gradient_accumulation instead"
        )
    return out


def model_flavour(base_model: str, family: str, notes: list[str]) -> str:
    """The flavour of a Qwen-Image or FLUX.2 model: by its hub id, or by the text encoder its folder holds; the
    family's default (with a note) when neither tells."""
    known = HUB_FLAVOURS[family].get(base_model)
    if known is not None:
        return known
    folder = user_path(base_model)
    index = _model_index(folder)
    if index is not None:
        name = str(index.get("_class_name", ""))
        if "Edit" in name:
            raise LoraforgeError(
                f"{base_model} is an edit model ({name}): it trains on pairs of source and edited images, which "
                "loraforge's datasets do not hold",
                "train the text-to-image model of the family instead",
            )
        encoder = index.get("text_encoder")
        encoder_class = encoder[1] if isinstance(encoder, list) and len(encoder) == 2 else None
        flavour = ENCODER_FLAVOURS[family].get(str(encoder_class))
        if flavour == "klein":
            return "klein-4b" if _transformer_layers(folder) == 5 else "klein-9b"
        if flavour is not None:
            return flavour
    default = DEFAULT_FLAVOURS[family]
    notes.append(
        f"model_flavour: cannot tell which {family} model {base_model} is; training it as SimpleTuner's {default!r} "
        "(set backend_args.simpletuner.model_flavour for another)"
    )
    return default


def _flavour_notes(job: JobSpec, family: str, flavour: str, *, offline: bool) -> list[str]:
    local = user_path(job.base_model).exists()
    if family == "flux2" and flavour == "dev" and (local or offline):
        return [
            f"FLUX.2-dev: SimpleTuner loads its Mistral-3 text encoder by the hub id {MISTRAL_HUB_ID}, never from the "
            "model folder: it is downloaded once (a 24B model), or read from the Hugging Face cache (HF_HUB_CACHE) offline"
        ]
    if family == "qwen_image" and flavour == "v2.1":
        return [f"Qwen-Image 2.1: SimpleTuner fetches {QWEN_21_HUB} from the hub (offline they must be in its cache)"]
    return []


def _model_index(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _transformer_layers(folder: Path) -> int | None:
    try:
        config = json.loads((folder / "transformer" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    layers = config.get("num_layers") if isinstance(config, dict) else None
    return layers if isinstance(layers, int) else None
