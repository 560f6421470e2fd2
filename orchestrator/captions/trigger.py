"""The trigger token, prepended exactly once.

Rules: a caption that already contains the trigger (as a whole phrase, any case) is left alone; otherwise the result
is ``trigger + separator + caption``, which itself starts with the trigger, so applying it again changes nothing.
"""

from __future__ import annotations

import re


def normalise_trigger(trigger: str | None) -> str | None:
    """None or blank means no trigger (e.g. a style LoRA); inner whitespace collapsed. A control character (a line
    break would split every caption file in two) is refused."""
    if trigger is None:
        return None
    if re.search(r"[\x00-\x1f\x7f\x85\u2028\u2029]", trigger):
        from orchestrator.errors import LoraforgeError

        raise LoraforgeError(
            f"the trigger {trigger[:40]!r} holds a line break or control character", 'write it on one line, e.g. "ohwx person"'
        )
    trigger = " ".join(trigger.split())
    return trigger or None


def has_trigger(caption: str, trigger: str, separator: str = ", ") -> bool:
    if caption == trigger or (separator and caption.startswith(trigger + separator)):
        return True  # what apply_trigger itself writes
    # whole-phrase match: "ohwx" is not found inside "ohwxman"
    pattern = r"(?<!\w)" + re.escape(trigger) + r"(?!\w)"
    return re.search(pattern, caption, flags=re.IGNORECASE) is not None


def apply_trigger(caption: str, trigger: str | None, separator: str = ", ") -> str:
    caption = caption.strip()
    trigger = normalise_trigger(trigger)
    if trigger is None or has_trigger(caption, trigger, separator):
        return caption
    if not caption:
        return trigger
    return f"{trigger}{separator}{caption}"
