"""Is this run as fast as it should be? Expected seconds per step by card, family, resolution, batch and backend
(``expected.tsv``, every row with its source), the matching of a run to the closest comparable figure
(:mod:`orchestrator.speed.table`), what nvidia-smi says about the card (:mod:`orchestrator.speed.nvsmi`) and the
check that watches a run's progress and warns once when it is much slower (:mod:`orchestrator.speed.check`)."""
