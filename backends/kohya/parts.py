"""Where a model's files come from. A job names one ``base_model``; for Flux, SD3, Chroma and Lumina 2 sd-scripts
loads single files instead: the checkpoint (--pretrained_model_name_or_path) and its parts, each through its own
option (--clip_l, --clip_g, --t5xxl, --vae, --ae, --gemma2). The names each family's files go by are in
families.toml. The rule:

The checkpoint is ``base_model`` when that is a file. When it is a folder, it is the one file with one of the
family's checkpoint names in the first of these that has one: ``kohya/`` (what loraforge's tiny builders write),
the folder itself (Stability's SD3.5, BFL's FLUX.1, lodestones' Chroma repos), ``split_files/diffusion_models/``
(Comfy-Org's repackaged downloads). A folder with none is refused: sd-scripts cannot read a diffusers folder.

Each part, in order:
1. ``backend_args.kohya.<option>`` when the job sets it;
2. nothing, when the checkpoint holds the part itself (SD3.5's files hold their VAE, some SD3 files their text
   encoders: sd-scripts then reads it from there);
3. the first file with one of the part's names in the checkpoint's folder, its ``text_encoders/`` (Stability's
   repos), or beside it in ``../text_encoders``, ``../clip``, ``../vae`` (ComfyUI's models/ folder, Comfy-Org's
   split_files/).
Whatever is still missing is refused before launch, in one line naming each missing part and how to pass it.

Tokenizers: sd-scripts reads them from --tokenizer_cache_dir when they are there, else fetches them from the hub.
Each one comes from ``backend_args.kohya.tokenizer_cache_dir`` (then nothing is looked for), the family's cache
folder beside the checkpoint (``tokenizers/`` holding sd-scripts' ``<hub id with / as _>`` entries;
``tokenizer_cache/`` a hub cache for Lumina 2's Gemma), or a diffusers folder's ``tokenizer*/`` subfolders; the run
gets a copy, so sd-scripts never writes into a model folder.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

from backends.kohya.families import Family, Part
from orchestrator.basemodel import safetensors_keys
from orchestrator.errors import LoraforgeError
from orchestrator.job import JobSpec
from orchestrator.userpath import user_path

CHECKPOINT_PLACES = ("kohya", ".", "split_files/diffusion_models")  # inside a base_model folder, in order
PART_PLACES = (".", "text_encoders", "../text_encoders", "../clip", "../vae")  # from the checkpoint's folder


@dataclass(frozen=True)
class Resolved:
    """The files a run hands sd-scripts: option -> path (the checkpoint first), the tokenizer cache entries to copy
    into the run (entry name -> source folder), and notes (tokenizers the hub will be asked for)."""

    options: dict[str, str] = field(default_factory=dict)
    tokenizers: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def resolve(job: JobSpec, spec: Family) -> Resolved:
    """The family's files for this job, or a LoraforgeError saying what is missing and how to pass it."""
    given = job.backend_args.get("kohya", {})
    model = _local(job.base_model)
    if spec.checkpoint is None:  # sd15, sdxl: sd-scripts takes base_model as it is (file, diffusers folder, hub id)
        if model is None or not model.is_dir() or "tokenizer_cache_dir" in given:
            return Resolved()
        return Resolved(tokenizers=_diffusers_tokenizers(spec, [model]))
    checkpoint = _checkpoint(job, spec, model, given.get("pretrained_model_name_or_path"))
    options = {"pretrained_model_name_or_path": str(checkpoint)}
    keys = _keys(checkpoint) if any(part.inside for part in spec.parts) else []
    missing: list[Part] = []
    for part in spec.parts:
        if part.option in given:
            options[part.option] = str(_given_file(part.option, given[part.option]))
        elif part.inside and any(key.startswith(part.inside) for key in keys):
            continue  # sd-scripts reads it from the checkpoint
        elif (found := _find(checkpoint.parent, PART_PLACES, part.files)) is not None:
            options[part.option] = str(found)
        else:
            missing.append(part)
    if missing:
        names = ", ".join(f"{part.what} ({part.files[0]})" for part in missing)
        sets = " ".join(f"--set backend_args.kohya.{part.option}=FILE" for part in missing)
        raise LoraforgeError(
            f"sd-scripts needs the {spec.name} model's {names}: not found beside {checkpoint}",
            f"put {'them' if len(missing) > 1 else 'it'} beside the checkpoint or in text_encoders/, or pass "
            f"{sets} ({'; '.join(part.get for part in missing)})",
        )
    if "tokenizer_cache_dir" in given:
        return Resolved(options)
    tokenizers = _cached_tokenizers(spec, checkpoint.parent)
    folders = [p for p in (model, checkpoint.parent) if p is not None and p.is_dir()]
    for entry, source in _diffusers_tokenizers(spec, folders).items():
        tokenizers.setdefault(entry, source)
    notes = []
    absent = [entry for entry in spec.cache_entries if entry not in tokenizers]
    if absent:
        notes.append(
            f"tokenizers {', '.join(absent)} not found beside the model: sd-scripts loads them from the Hugging Face "
            f"hub (or its cache); to use local ones put them in {checkpoint.parent / spec.cache_folder}"
        )
    return Resolved(options, tokenizers, notes)


def _local(base_model: str) -> Path | None:
    try:
        path = user_path(base_model)
        return path if path.exists() else None
    except OSError:  # a name too long for this file system: not a local path
        return None


def _checkpoint(job: JobSpec, spec: Family, model: Path | None, given: object) -> Path:
    assert spec.checkpoint is not None
    if given is not None:
        return _given_file("pretrained_model_name_or_path", given)
    if model is None:
        raise LoraforgeError(
            f"base model {job.base_model}: sd-scripts trains {spec.name} from local files, not a hub id",
            f"download it (e.g. {spec.checkpoint.get}, with its text encoders and autoencoder) and pass the file "
            "or its folder as base_model",
        )
    if model.is_file():
        return model
    for place in CHECKPOINT_PLACES:
        folder = (model / place).resolve()
        found = _matches(folder, spec.checkpoint.files) if folder.is_dir() else []
        if len(found) > 1:
            raise LoraforgeError(
                f"base model {model} holds {len(found)} {spec.checkpoint.what}s ({', '.join(p.name for p in found)})",
                "pass the one to train as base_model (the file's path)",
            )
        if found:
            return found[0]
    kind = "a diffusers folder" if (model / "model_index.json").exists() else "a folder"
    raise LoraforgeError(
        f"base model {model} is {kind} with no {spec.checkpoint.what} ({', '.join(spec.checkpoint.files)}): "
        f"sd-scripts trains {spec.name} from single files, never a diffusers folder",
        f"pass the checkpoint file as base_model (e.g. {spec.checkpoint.get}) with its text encoders and "
        "autoencoder beside it, or train this folder with --backend simpletuner",
    )


def _given_file(option: str, value: object) -> Path:
    path = user_path(str(value))
    if not path.is_file():
        state = "is a folder" if path.is_dir() else "does not exist"
        raise LoraforgeError(
            f"backend_args.kohya.{option}: {path} {state}",
            f"set it to the part's .safetensors file (sd-scripts reads --{option} as one file)",
        )
    return path


def _matches(folder: Path, patterns: tuple[str, ...]) -> list[Path]:
    """The files in ``folder`` with the first of ``patterns`` that matches any (case-insensitive), sorted."""
    try:
        files = sorted(p for p in folder.iterdir() if p.is_file())
    except OSError:
        return []
    for pattern in patterns:
        found = [p for p in files if fnmatch.fnmatch(p.name.lower(), pattern.lower())]
        if found:
            return found
    return []


def _find(base: Path, places: tuple[str, ...], patterns: tuple[str, ...]) -> Path | None:
    for place in places:
        folder = base / place
        if folder.is_dir() and (found := _matches(folder, patterns)):
            return found[0].resolve()
    return None


def _keys(checkpoint: Path) -> list[str]:
    """The checkpoint's tensor names (its header only): a broken file is refused here, naming it, before sd-scripts
    would fail on it minutes later."""
    return safetensors_keys(checkpoint) if checkpoint.suffix.lower() == ".safetensors" else []


def _cached_tokenizers(spec: Family, folder: Path) -> dict[str, Path]:
    cache = folder / spec.cache_folder
    return {entry: cache / entry for entry in spec.cache_entries if (cache / entry).is_dir()}


def _diffusers_tokenizers(spec: Family, folders: list[Path]) -> dict[str, Path]:
    """A diffusers folder's tokenizer subfolders as sd-scripts' cache entries (tokenizer -> openai_clip-...)."""
    found: dict[str, Path] = {}
    for folder in folders:
        for sub, entry in spec.tokenizers.items():
            if entry not in found and (folder / sub).is_dir():
                found[entry] = folder / sub
    return found
