"""Stage 4, postprocess: probability maps to label images, the palette and its pipeline.

Plain functions on NumPy arrays, 2D and 3D (public here, defined in the modules
that hold them):

* thresholds (:mod:`.thresholds`): :func:`threshold_otsu`, :func:`apply_threshold`
  (fixed value or Otsu), :func:`hysteresis`;
* splitting (:mod:`.watershed`): :func:`watershed_split`;
* cleanup (:mod:`.cleanup`): :func:`fill_holes`, :func:`remove_small_objects`,
  :func:`remove_small_holes`, :func:`opening`, :func:`closing`,
  :func:`label_components`, :func:`relabel_sequential`.

:class:`PostprocessPipeline` strings them together in a fixed order. It is a
small JSON-serialisable description (:mod:`.pipeline`) that a
widget builds, a model card stores as its recommended post-processing
(``card.recommended["postprocess"] = pipeline.to_dict()``) and anyone
re-runs on a cached probability map, with no new inference.

Examples
--------
>>> prob = np.zeros((8, 8), np.float32)
>>> prob[1:4, 1:4] = 0.9
>>> prob[5:7, 5:7] = 0.8
>>> labels = PostprocessPipeline(method="otsu", min_size=5).run(prob)
>>> int(labels.max()), labels.dtype.name
(1, 'uint32')
"""

from __future__ import annotations

from ..lazy import lazy_exports

_HOMES = {
    "METHODS": "pipeline",
    "PostprocessPipeline": "pipeline",
    "postprocess": "pipeline",
    "ProbabilityError": "thresholds",
    "apply_threshold": "thresholds",
    "check_probability": "thresholds",
    "hysteresis": "thresholds",
    "threshold_otsu": "thresholds",
    "watershed_split": "watershed",
    "closing": "cleanup",
    "fill_holes": "cleanup",
    "label_components": "cleanup",
    "opening": "cleanup",
    "pixels_for": "cleanup",
    "relabel_sequential": "cleanup",
    "remove_small_holes": "cleanup",
    "remove_small_objects": "cleanup",
    "segment_dark_objects": "classical",
}

__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
