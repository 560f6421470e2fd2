"""LoRA files: layouts (Kohya, diffusers/PEFT), lossless conversion, inspection, the final file of a run."""
