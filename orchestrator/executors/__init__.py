"""Cluster executors: hand a loraforge job to an existing scheduler (Slurm first). No home-made queue."""
