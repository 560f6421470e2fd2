"""What the kohya backend's interpreter imports ahead of a run (orchestrator/warm.py). Light on purpose: read at a
command's start, before loraforge imports the rest of the backend, so the launcher's imports begin at once."""

from __future__ import annotations

from backends.base import Warm
from orchestrator.envs import BackendEnv


def warm(env: BackendEnv) -> Warm:
    """accelerate's launcher imports accelerate and torch (1.7 s on 2 CPU cores) only to set a few variables and
    start the training script in an interpreter of its own: that import overlaps loraforge's own work. The
    script's imports cannot be warmed this way (a new interpreter), nor need anything set before them."""
    return Warm("accelerate.commands.launch", ("accelerate.commands.launch",))
