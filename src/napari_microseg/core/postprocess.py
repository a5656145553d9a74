"""From probability maps to label images: the post-processing palette and its pipeline.

Plain functions on NumPy arrays, 2D and 3D (re-exported here from the modules
that hold them):

* thresholds (:mod:`.thresholds`): :func:`threshold_otsu`, :func:`apply_threshold`
  (fixed value or Otsu), :func:`hysteresis`;
* splitting (:mod:`.watershed`): :func:`watershed_split`;
* cleanup (:mod:`.cleanup`): :func:`fill_holes`, :func:`remove_small_objects`,
  :func:`remove_small_holes`, :func:`opening`, :func:`closing`,
  :func:`label_components`, :func:`relabel_sequential`.

:class:`PostprocessPipeline` strings them together in a fixed order. It is a
small JSON-serialisable description (:mod:`.postprocess_pipeline`) that a
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

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from .cleanup import (
    closing,
    fill_holes,
    label_components,
    opening,
    pixels_for,
    relabel_sequential,
    remove_small_holes,
    remove_small_objects,
)
from .postprocess_pipeline import METHODS, PostprocessPipeline
from .thresholds import (
    ProbabilityError,
    apply_threshold,
    check_probability,
    hysteresis,
    threshold_otsu,
)
from .watershed import watershed_split

__all__ = [
    "METHODS",
    "PostprocessPipeline",
    "ProbabilityError",
    "apply_threshold",
    "check_probability",
    "closing",
    "fill_holes",
    "hysteresis",
    "label_components",
    "opening",
    "pixels_for",
    "postprocess",
    "relabel_sequential",
    "remove_small_holes",
    "remove_small_objects",
    "threshold_otsu",
    "watershed_split",
]


def postprocess(
    prob: np.ndarray,
    pipeline: PostprocessPipeline | dict[str, Any] | None = None,
    *,
    class_axis: int | None = None,
    spacing: Sequence[float] | None = None,
    **settings: Any,
) -> np.ndarray:
    """Post-process a probability map with a pipeline, a stored dict, or keyword settings.

    Parameters
    ----------
    prob : (M, N[, P]) or (K, M, N[, P]) ndarray
        Probabilities in [0, 1].
    pipeline : PostprocessPipeline or dict, optional
        The recipe; a dict as stored in a model card. Default: Otsu.
    class_axis : int, optional
        The class axis of a ``(K, ...)`` stack.
    spacing : sequence of float, optional
        Voxel size in µm.
    **settings
        Fields of :class:`PostprocessPipeline` (override ``pipeline``'s).

    Returns
    -------
    labels : (M, N[, P]) ndarray of uint32

    Examples
    --------
    >>> prob = np.array([[0.9, 0.9, 0.0, 0.7]], np.float32)
    >>> postprocess(prob, method="threshold", threshold=0.5)
    array([[1, 1, 0, 2]], dtype=uint32)
    """
    if pipeline is None:
        pipeline = PostprocessPipeline(**settings)
    else:
        if isinstance(pipeline, dict):
            pipeline = PostprocessPipeline.from_dict(pipeline)
        if settings:
            pipeline = replace(pipeline, **settings)
    return pipeline.run(prob, class_axis=class_axis, spacing=spacing)
