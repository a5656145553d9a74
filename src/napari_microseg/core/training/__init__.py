"""Stage 5, training: (image, corrected labels) to a new model version with its lineage.

:func:`train` and :func:`finetune` are the jobs (:mod:`.jobs`); the loop and its
resumable state are :mod:`.loop` and :mod:`.checkpoints`; the data are prepared
(:mod:`.data`), split for validation (:mod:`.split`), sampled into patches
(:mod:`.sampling`), augmented (:mod:`.augment`) and turned into targets and losses
(:mod:`.targets`, :mod:`.losses`); the data pipeline (:mod:`.loader`) makes the
batches in worker processes while the network trains, and :mod:`.accelerate`
sets up a GPU (channels-last, batch size); :mod:`.settings` holds every
hyper-parameter.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_HOMES = {
    "train": "jobs",
    "finetune": "jobs",
    "TrainSettings": "settings",
    "TrainingError": "settings",
    "TrainingWarning": "settings",
    "TrainingPair": "data",
    "TrainingDataError": "data",
    "annotated_slices": "data",
    "split_validation": "split",
    "load_dataset": "datasets",
    "AugmentConfig": "augment",
}

__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
