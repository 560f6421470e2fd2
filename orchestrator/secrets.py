"""Which settings hold secrets: by name, the same rule everywhere (job files, preset import and export, rendering).

A secret-named option (``wandb_api_key``, ``huggingface_token``, ``--hf-token``, ``apiKey``, ``password``) is never
imported, written into a job, rendered or exported: files loraforge writes are shared and outlive the run. Secrets
reach trainers through their environment (wandb reads WANDB_API_KEY, the Hugging Face hub HF_TOKEN).
"""

from __future__ import annotations

import re

_SECRET = re.compile(
    r"(?:^|_)(?:password|passwd|secret)(?:_|$)|(?:^|_)(?:key|token|apikey)$|api_?key|access_?key|private_?key|"
    r"(?:auth|access|bearer)_?token"
)
HOW_TO_PASS = "pass it through the environment instead (wandb reads WANDB_API_KEY, the Hugging Face hub HF_TOKEN)"


def is_secret(name: str) -> bool:
    """Whether an option's name says it holds a key, token, password or secret."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name.strip().lstrip("-")).lower().replace("-", "_")
    return _SECRET.search(snake) is not None
