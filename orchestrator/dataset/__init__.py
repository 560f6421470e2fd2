"""Datasets: ``model`` is what a trainer will see in a folder (read once per run, shared by every stage); ``prep``
turns photos into such a folder."""
