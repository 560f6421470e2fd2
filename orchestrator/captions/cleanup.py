"""Remove captioner boilerplate so a caption describes the image, not the act of looking at it.

BLIP often starts with the hallucinated token "arafed" (and "araffe", "arafe"); Florence-2 and BLIP-2 like "The image
shows ..." or "In this image, ...". Neither teaches a LoRA anything; both eat the text encoder's 77-token window.
"""

from __future__ import annotations

import re
import unicodedata

_LEADS = [
    r"(?:the|this) (?:image|picture|photo|photograph) (?:shows|depicts|features|is of|contains|captures|displays)",
    r"in (?:the|this) (?:image|picture|photo|photograph),? (?:we can see|there is|there are|you can see)?",
    r"(?:the|this) is (?:an? )?(?:image|picture|photo|photograph) of",
    r"there (?:is|are)",
]
_LEAD = re.compile(r"^\s*(?:" + "|".join(_LEADS) + r")\s*[,:]?\s*", re.IGNORECASE)
_ARAFED = re.compile(r"\b(?:arafed|araffe|arafe|arafly|araf)\b\s*", re.IGNORECASE)
_SPECIAL = re.compile(r"</?s>|<pad>|<unk>|\[(?:CLS|SEP|PAD|UNK|DEC)\]")


def clean_caption(text: str) -> str:
    text = "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)  # control bytes from a decoder
    text = _SPECIAL.sub(" ", text)
    text = " ".join(text.split())  # newlines, tabs and runs of spaces -> one space
    for _ in range(3):  # "The image shows there is a ..." needs more than one pass
        stripped = _LEAD.sub("", text, count=1)
        if stripped == text:
            break
        text = stripped
    text = _ARAFED.sub("", text)
    text = re.sub(r"(?<=\w)\s+([,.;:!?])", r"\1", text)  # "man , smiling" -> "man, smiling"; "x, !" stays
    text = " ".join(text.split()).strip(" ,;:")
    return text
