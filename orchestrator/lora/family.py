"""Which model family a LoRA is for, and how that was told: what the file says first (loraforge's own entry,
modelspec.architecture, sd-scripts' ss_* entries), else its module names, else the widths of its modules.

Module names a family alone has:
- Kohya layout: SD3 ``lora_unet_joint_blocks_``, Lumina 2 ``lora_unet_{layers,noise_refiner,context_refiner}_N_``,
  Flux / Chroma / FLUX.2 Black Forest Labs' ``lora_unet_{double,single}_blocks_N_`` (FLUX.2's MLPs are gated, so its
  linear1 has 9 x hidden rows and its mlp_0 6 x, against FLUX.1's 7 x and 4 x; Flux has per-block modulation Linears
  (``img_mod_lin``...) where Chroma has none), Qwen-Image ``lora_unet_transformer_blocks_N_{img,txt}_...`` (musubi-
  tuner's names; sd-scripts does not train it), SDXL ``lora_unet_input_blocks_`` and two CLIP encoders, SD 1.5 the rest.
- diffusers layout (``transformer.``): FLUX.2 ``attn.to_qkv_mlp_proj``, ``ff.linear_in``; Chroma
  ``distilled_guidance_layer``; Lumina 2 ``layers.N`` and its refiners; Qwen-Image ``img_mod``, ``img_mlp``...; SD3
  ``pos_embed``, ``attn2`` or a 2 x hidden context modulation; Flux ``single_transformer_blocks`` or the guidance
  embedder. A file of only ``transformer_blocks.N.attn.to_q/k/v/out`` (SimpleTuner's default targets) fits SD3, Flux,
  Chroma and Qwen-Image alike: the widths of the released models tell them apart (SD3 1536 / 2432; Qwen-Image 3072
  with 60 blocks; Flux and Chroma 3072 with 19), and anything else is left unknown rather than guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

FAMILIES = ("sd15", "sdxl", "flux", "chroma", "sd3", "lumina2", "qwen_image", "flux2")
# modelspec.architecture (sd-scripts: "stable-diffusion-3-5-large/lora", "lumina-2/lora", "chroma/lora"; SimpleTuner:
# "<model_family>[-<flavour>]/lora", "qwen_image-v1.0/lora", "flux2-dev/lora") and ss_base_model_version ("5-large",
# "flux1", "chroma", "lumina2", "sdxl_base_v1-0", "sd_v1") values, most specific first
_NAMED = (
    ("flux2", r"flux[.\-_]?2"),
    ("chroma", r"chroma"),
    ("flux", r"flux"),
    ("sd3", r"stable-diffusion-3|sd-?3|^[35]-(large|medium)"),
    ("lumina2", r"lumina"),
    ("qwen_image", r"qwen"),
    ("sdxl", r"sdxl|stable-diffusion-xl"),
    ("sd15", r"^sd_v1|stable-diffusion-v1|sd-?1[.-]?5"),
)
_METADATA = ("modelspec.architecture", "ss_base_model_version", "ss_model_type")
# diffusers module paths (under transformer.) only one family has
_DIFFUSERS_NAMES = (
    ("flux2", r"\.attn\.to_qkv_mlp_proj$|^(double|single)_stream_modulation|^time_guidance_embed\."),
    ("flux2", r"\.ff(_context)?\.linear_(in|out)$"),
    ("chroma", r"^distilled_guidance_layer\."),
    ("lumina2", r"^(layers|noise_refiner|context_refiner)\.\d+\.|^time_caption_embed\."),
    ("qwen_image", r"\.(img|txt)_(mod|mlp)\.|^(img|txt)_in$"),
)
_FLUX_MODULATION = ("_mod_lin", "_modulation_lin", "guidance_in_", "time_in_", "vector_in_", "final_layer_adaLN")


@dataclass(frozen=True)
class Reading:
    family: str | None
    source: str  # what told it: "metadata ss_base_model_version", "module names", "module widths"
    alternatives: tuple[str, ...] = field(default=())  # families whose LoRAs look exactly the same

    def describe(self) -> str:
        also = f" (a {' or '.join(self.alternatives)} LoRA has the same)" if self.alternatives else ""
        return f"{self.source}{also}"


def named(text: str) -> str | None:
    """The family a model name or architecture string names, if any."""
    lowered = text.lower()
    return next((family for family, pattern in _NAMED if re.search(pattern, lowered)), None)


def lora_family(shapes: dict[str, list[int]], metadata: dict[str, str]) -> Reading:
    """The family of a LoRA from its tensors' names and shapes and its metadata."""
    own = metadata.get("loraforge_family", "")
    if own in FAMILIES:
        return Reading(own, "metadata loraforge_family")
    for key in _METADATA:
        family = named(metadata.get(key, ""))
        if family:
            return Reading(family, f"metadata {key}")
    modules = {_module(k): k for k in shapes}
    if any(m.startswith("lora_") for m in modules):
        return _kohya(modules, shapes)
    return _diffusers(modules, shapes)


def _module(key: str) -> str:
    for part in (".lora_down.weight", ".lora_up.weight", ".alpha", ".lora_A.weight", ".lora_B.weight"):
        if key.endswith(part):
            return key[: -len(part)]
    return key


def _rows_per_input(modules: dict[str, str], shapes: dict[str, list[int]], suffix: str) -> set[float]:
    """Output rows over input width of each module ending in ``suffix`` (up rows / down columns)."""
    ratios = set()
    for module in modules:
        up, down = shapes.get(f"{module}.lora_up.weight"), shapes.get(f"{module}.lora_down.weight")
        if module.endswith(suffix) and up and down and len(down) > 1 and down[1]:
            ratios.add(up[0] / down[1])
    return ratios


def _kohya(modules: dict[str, str], shapes: dict[str, list[int]]) -> Reading:
    names = list(modules)
    if any(m.startswith("lora_unet_joint_blocks_") for m in names):
        return Reading("sd3", "module names")
    if any(re.match(r"lora_unet_(layers|noise_refiner|context_refiner)_\d+_", m) for m in names) or any(
        m.startswith("lora_te_layers_") for m in names
    ):
        return Reading("lumina2", "module names")
    if any(re.match(r"lora_unet_transformer_blocks_\d+_(img|txt)_(mod|mlp)|lora_unet_(img|txt)_in$", m) for m in names):
        return Reading("qwen_image", "module names")
    if any(m.startswith(("lora_unet_double_blocks_", "lora_unet_single_blocks_")) for m in names):
        if any("_stream_modulation" in m for m in names):
            return Reading("flux2", "module names")
        gated = _rows_per_input(modules, shapes, "_linear1") | _rows_per_input(modules, shapes, "_mlp_0")
        if gated & {9.0, 6.0}:
            return Reading("flux2", "module widths (gated MLPs)")
        if any(marker in m for m in names for marker in _FLUX_MODULATION):
            return Reading("flux", "module names")
        return Reading("flux", "module names", ("Chroma",))
    if any(
        m.startswith(("lora_te1_", "lora_te2_", "lora_unet_input_blocks_", "lora_unet_output_blocks_")) for m in names
    ):
        return Reading("sdxl", "module names")
    if any(m.startswith(("lora_unet_", "lora_te_")) for m in names):
        return Reading("sd15", "module names")
    return Reading(None, "module names")


def _diffusers(modules: dict[str, str], shapes: dict[str, list[int]]) -> Reading:
    roots = {m.partition(".")[0] for m in modules}
    parts = [m[len("transformer.") :] for m in modules if m.startswith("transformer.")]
    if not parts:
        if "unet" in roots or "text_encoder" in roots:
            sdxl = "text_encoder_2" in roots or any(".add_embedding." in m for m in modules)
            return Reading("sdxl" if sdxl else "sd15", "module names")
        return Reading(None, "module names")
    for family, pattern in _DIFFUSERS_NAMES:
        if any(re.search(pattern, p) for p in parts):
            return Reading(family, "module names")
    if any(re.search(r"^pos_embed\.|\.attn2\.", p) for p in parts) or _pre_only_context(modules, shapes):
        return Reading("sd3", "module names")
    if any(p.startswith(("single_transformer_blocks.", "time_text_embed.guidance_embedder.")) for p in parts):
        chroma_like = not any(re.search(r"(^|\.)norm1?(_context)?\.linear$|^norm_out\.linear$|^time_text_embed\.", p)
                              for p in parts)  # fmt: skip
        return Reading("flux", "module names", ("Chroma",) if chroma_like else ())
    return _by_width(modules, shapes)


def _pre_only_context(modules: dict[str, str], shapes: dict[str, list[int]]) -> bool:
    """SD3's last block: a context modulation of 2 x hidden rows (Flux's are all 6 x)."""
    for module in modules:
        if module.endswith(".norm1_context.linear"):
            a, b = shapes.get(f"{module}.lora_A.weight"), shapes.get(f"{module}.lora_B.weight")
            if a and b and len(a) > 1 and b[0] == 2 * a[1]:
                return True
    return False


def _by_width(modules: dict[str, str], shapes: dict[str, list[int]]) -> Reading:
    """transformer_blocks of attention (and MLP) modules only: SD3, Flux, Chroma or Qwen-Image, told by the widths
    and block counts of the released models."""
    widths, blocks = set(), set()
    for module in modules:
        if match := re.match(r"transformer\.transformer_blocks\.(\d+)\.attn\.(to_q|to_k|to_v|add_q_proj)$", module):
            blocks.add(int(match.group(1)))
            a = shapes.get(f"{module}.lora_A.weight")
            if a and len(a) > 1:
                widths.add(a[1])
    if widths and widths <= {1536, 2432}:
        return Reading("sd3", "module widths (SD3's 1536 / 2432)")
    if widths == {3072} and blocks and max(blocks) >= 19:
        return Reading("qwen_image", "module widths (3072 wide, more than Flux's 19 blocks)")
    if widths == {3072}:
        return Reading("flux", "module widths (3072 wide)", ("Chroma", "Qwen-Image"))
    return Reading(None, "module names (SD3, Flux, Chroma and Qwen-Image LoRAs of these modules look alike)")
