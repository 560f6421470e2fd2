"""loraforge: a thin orchestrator that turns photos + a trigger word into a LoRA, with the trainer you trust."""

__version__ = "0.1.0"
