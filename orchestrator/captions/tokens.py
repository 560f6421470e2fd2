"""How many CLIP tokens a caption takes, to warn when it overflows the text encoder's window.

SD 1.5, SDXL and Flux's CLIP encoder see 77 tokens, two of them start/end markers; the rest of a longer caption is
cut off silently by the trainer. We count with a real CLIP tokenizer when one is on this machine
(``LORAFORGE_CLIP_TOKENIZER`` = a tokenizer folder, or openai/clip-vit-large-patch14 in the Hugging Face cache), and
otherwise estimate: CLIP's BPE keeps common English words whole and splits rarer ones into about two pieces, and
every punctuation mark is its own token, so ``ceil(1.3 * words) + punctuation marks`` (within ~15% on English
captions; it errs on the high side, so a warning may come a little early, never late).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

WINDOW = 77  # CLIP text encoder positions
USABLE = WINDOW - 2  # minus start and end markers
CLIP_IDS = ("openai/clip-vit-large-patch14", "openai/clip-vit-base-patch32")
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json"]


def estimate_tokens(text: str) -> int:
    words = re.findall(r"\w+", text)
    marks = re.findall(r"[^\w\s]", text)
    return math.ceil(1.3 * len(words)) + len(marks)


def _tokenizer_folders() -> list[Path]:
    folder = os.environ.get("LORAFORGE_CLIP_TOKENIZER")
    if folder:
        return [Path(folder)]
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return []
    found = []
    for repo in CLIP_IDS:
        try:
            found.append(Path(snapshot_download(repo, allow_patterns=TOKENIZER_FILES, local_files_only=True)))
        except Exception:  # not cached here (the exact error class varies between huggingface_hub versions)
            continue
    return found


def load_clip_tokenizer() -> object | None:
    """A real CLIP tokenizer from this machine, or None. Never downloads anything."""
    try:
        from transformers import CLIPTokenizerFast
    except ImportError:
        return None
    for folder in _tokenizer_folders():
        # transformers 5 builds an empty tokenizer from a folder without vocabulary files: check they are there
        if not any((folder / name).is_file() for name in ("tokenizer.json", "vocab.json")):
            continue
        try:
            tokenizer = CLIPTokenizerFast.from_pretrained(str(folder), local_files_only=True)
        except Exception:  # a broken folder falls back to the estimate rather than stopping the captioning
            continue
        if len(tokenizer) > 2:
            return tokenizer
    return None


class TokenCounter:
    """Counts a caption's tokens (without start/end markers); ``method`` says how ("estimated" or "CLIP tokenizer").

    The real tokenizer (which costs importing transformers) is consulted only for captions whose estimate is past
    half the window: a short caption cannot overflow, so the template path never pays for it.
    """

    def __init__(self) -> None:
        self.method = "estimated"
        self._tokenizer: object | None = None
        self._looked = False

    def __call__(self, text: str) -> int:
        estimate = estimate_tokens(text)
        if estimate <= USABLE // 2:
            return estimate
        if not self._looked:
            self._tokenizer, self._looked = load_clip_tokenizer(), True
        if self._tokenizer is None:
            return estimate
        self.method = "CLIP tokenizer"
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])  # type: ignore[operator]
