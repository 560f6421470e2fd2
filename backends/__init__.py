"""Backends: one module per training script (sd-scripts, SimpleTuner) behind the protocol in ``base``."""
