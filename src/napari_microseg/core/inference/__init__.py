"""Stage 2, inference: a model and an image of any size to per-class probabilities.

:func:`predict` / :func:`iter_predict` plan tiles (:mod:`.tiling`), cut planes of
2D/3D images (:mod:`.planes`), fit the normalisation once per image
(:mod:`.normalize`), and stream bands of tiles to the device once each, where
they are normalised, run in batches sized for the device (:mod:`.forward`,
:mod:`.batch_size`) and blended (:mod:`.device_tiles`, :mod:`.tile_loop`);
finished bands come back once. :class:`PredictOptions` is the one home of the
prediction defaults.
:func:`segment_job` adds resampling to the model's pixel size and the model's
recommended post-processing.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_HOMES = {
    "predict": "predict",
    "iter_predict": "predict",
    "run_prediction": "predict",
    "PredictOptions": "options",
    "Instances": "stitching",
    "TilePlan": "tiling",
    "Normalizer": "normalize",
    "fit_normalizer": "normalize",
    "InferenceWarning": "forward",
    "segment_job": "segment",
    "SegmentResult": "segment",
    "recommended_pipeline": "segment",
}

__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
