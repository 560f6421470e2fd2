"""What the SimpleTuner backend's interpreter imports ahead of a run (orchestrator/warm.py). Light on purpose: read
at a command's start, before loraforge imports the rest of the backend, so the trainer's imports begin at once."""

from __future__ import annotations

from backends.base import Warm
from orchestrator.envs import BackendEnv


def warm(env: BackendEnv) -> Warm:
    """Most of a start is importing the trainer (torch, diffusers, transformers: about 16 s on 2 CPU cores); those
    imports read only these settings (the rest is read when the run starts). A run of several processes goes
    through accelerate's launcher instead and starts cold."""
    settings = {"SIMPLETUNER_DISABLE_COLORS": "1"}
    if env.cpu:
        settings["CUDA_VISIBLE_DEVICES"] = ""
    # Each step calls torch.compiler.cudagraph_mark_step_begin (SimpleTuner 4.10 does whenever dynamo_backend is
    # set, and its default is "no"), and the first call imports torch's inductor: 1.3 s here before the models
    # load, 4.5 s on the first step once they are loaded (the collector walks them all as the import allocates).
    return Warm("simpletuner.train", ("simpletuner.helpers.training.trainer",), settings,
                later=("torch._inductor.cudagraph_trees",))  # fmt: skip
