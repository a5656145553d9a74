"""Choose a model's recommended post-processing on images it was trained on.

A grid of post-processing settings (for example a Mask R-CNN's score and pixel
thresholds, or a U-Net's watershed threshold) is tried on training images, each
segmented as the Segment widget would segment it, and scored with the metric
its model card reports. The grid may also try test-time augmentation
(``tta``), the one prediction option a card recommends beside tile size and
overlap: each point is timed, so its gain can be weighed against its cost
(:func:`tta_worth_it`). A semantic model predicts each image once per TTA
setting and every point post-processes that prediction, so a grid of nine
watershed settings costs about one prediction per image, not nine. The
validation labels are never read, so the card's
validation score stays an honest estimate of new data. Used by
``scripts/tune_postprocess.py``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..core.progress import Job, Progress, drain

if TYPE_CHECKING:
    from ..core.models.base import SegmentationModel
    from .split import ValidationItem

#: Grid keys that are prediction options, not post-processing options.
PREDICTION_KEYS = ("tta",)

#: The least gain in a card's target metric for which test-time augmentation, at
#: about 8 times the prediction time, becomes a model's default: one point.
TTA_MIN_GAIN = 0.01


def tta_worth_it(without: float, with_tta: float, *, min_gain: float = TTA_MIN_GAIN) -> bool:
    """Whether test-time augmentation gains enough to be a model's default.

    Parameters
    ----------
    without, with_tta : float
        The target metric (higher is better) without and with TTA, on training images.
    min_gain : float
        The least gain that pays for about 8 times the prediction time.

    Examples
    --------
    >>> tta_worth_it(0.930, 0.945), tta_worth_it(0.930, 0.935)
    (True, False)
    """
    return with_tta - without >= min_gain


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in the grid's order.

    Parameters
    ----------
    grid : mapping of str to sequence
        Post-processing option -> the values to try.

    Returns
    -------
    list of dict

    Examples
    --------
    >>> grid_points({"a": [1, 2], "b": [0.5]})
    [{'a': 1, 'b': 0.5}, {'a': 2, 'b': 0.5}]
    """
    if not grid:
        return [{}]
    for key, values in grid.items():
        if len(values) == 0:
            raise ValueError(f"The grid gives no value to try for {key!r}.")
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


def tta_verdict(rows: Sequence[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    """Weigh test-time augmentation in the rows of a grid that tried it on and off.

    TTA is compared at the best post-processing found without it.

    Parameters
    ----------
    rows : sequence of dict
        :func:`tune_postprocess`'s rows (``"tta"``, ``"postprocess"``,
        ``metric`` and ``"seconds"`` each).
    metric : str
        The column compared.

    Returns
    -------
    dict or None
        ``gain`` (metric with TTA minus without), ``cost`` (time ratio),
        ``worth`` (:func:`tta_worth_it`) and ``best`` (the row to recommend);
        None when the grid did not try both.

    Examples
    --------
    >>> rows = [
    ...     {"tta": False, "postprocess": {}, "dice": 0.90, "seconds": 1.0},
    ...     {"tta": True, "postprocess": {}, "dice": 0.92, "seconds": 8.0},
    ... ]
    >>> verdict = tta_verdict(rows, "dice")
    >>> round(verdict["gain"], 3), verdict["cost"], verdict["worth"], verdict["best"]["tta"]
    (0.02, 8.0, True, True)
    """
    plain_rows = [row for row in rows if not row["tta"]]
    if not plain_rows:
        return None
    plain = max(plain_rows, key=lambda row: row[metric])
    twins = [r for r in rows if r["tta"] and r["postprocess"] == plain["postprocess"]]
    if not twins:
        return None
    twin = twins[0]
    worth = tta_worth_it(plain[metric], twin[metric])
    return {
        "gain": twin[metric] - plain[metric],
        "cost": twin["seconds"] / max(plain["seconds"], 1e-9),
        "worth": worth,
        "best": twin if worth else plain,
    }


def tune_postprocess(
    model: SegmentationModel,
    items: Sequence[ValidationItem],
    grid: Mapping[str, Sequence[Any]],
    *,
    metric: str,
    pixel_size_um: float | None = None,
    device: str = "cpu",
) -> Job[list[dict[str, Any]]]:
    """Score every grid point on ``items``; a progress generator.

    Parameters
    ----------
    model : SegmentationModel
        Its card's recommended post-processing, written out in full, is the
        base each grid point updates; the card is restored when the job ends.
    items : sequence of ValidationItem
        Training images with their labels (see
        :func:`~.split.training_items`).
    grid : mapping of str to sequence
        Post-processing option -> values to try; ``"tta"`` (booleans) tries
        test-time augmentation on and off.
    metric : str
        A column of :func:`~.evaluate.evaluate_images` (``"ap_50_95"``,
        ``"accuracy"``, ``"object_f1"``...), averaged over the items as
        ``microseg evaluate`` averages it; higher is better.
    pixel_size_um : float, optional
        The data's pixel size, so the image is resampled as the widget would.
    device : str
        Where the model runs.

    Returns
    -------
    list of dict
        One row per grid point, best first: the point's options, ``"postprocess"``
        (the whole post-processing dict to recommend), ``"tta"``, ``metric``'s
        mean and ``"seconds"`` (the wall time of segmenting every item).
    """
    from ..core.evaluation.evaluate import evaluate_images, mean_row
    from ..core.inference.options import PredictOptions
    from ..core.inference.segment import labels_on_image_grid, predict_on_image_grid
    from .bundle import postprocess_recommendation

    if not items:
        raise ValueError("No images to tune on.")
    base = postprocess_recommendation(model)
    unknown = sorted(set(grid) - set(base) - set(PREDICTION_KEYS))
    if unknown:
        raise ValueError(
            f"{model.name!r} has no post-processing option {', '.join(map(repr, unknown))}; "
            f"its options are {', '.join(sorted(base))} (and 'tta' for prediction)."
        )
    if "tta" in grid and model.task == "instance":
        raise ValueError(
            f"{model.name!r} gives objects; test-time augmentation is for semantic models only."
        )
    points = grid_points(grid)
    total = len(points) * len(items)
    # Semantic models: each image is predicted once per prediction setting and every point
    # post-processes that same prediction. A Mask R-CNN reads its thresholds while predicting,
    # so it predicts again for every point.
    reuse_prediction = model.task != "instance"
    scores: list[list[dict[str, float]]] = [[] for _ in points]
    seconds = [0.0] * len(points)
    tta = [False] * len(points)
    posts = [
        {**base, **{k: v for k, v in point.items() if k not in PREDICTION_KEYS}} for point in points
    ]
    started = time.monotonic()
    own_card = model.card
    try:
        for index, item in enumerate(items):
            spatial = item.axes.replace("C", "")
            spacing = None if pixel_size_um is None else (pixel_size_um,) * len(spatial)
            predicted: dict[bool, tuple[Any, Any, float]] = {}
            for number, point in enumerate(points):
                done = index * len(points) + number
                elapsed = time.monotonic() - started
                yield Progress(
                    done,
                    total,
                    f"Trying {point} on {item.name}",
                    elapsed / done * (total - done) if done else None,
                )
                # Mask R-CNN adapters read their thresholds from the card, so the card is swapped.
                model.card = replace(
                    own_card, recommended={**own_card.recommended, "postprocess": posts[number]}
                )
                options = PredictOptions.for_card(model.card, device=device)
                if "tta" in point:
                    options.tta = bool(point["tta"])
                tta[number] = options.tta
                if not reuse_prediction or options.tta not in predicted:
                    begun = time.perf_counter()
                    result, factor = drain(
                        predict_on_image_grid(
                            model, item.image, axes=item.axes, options=options, spacing=spacing
                        ),
                        show=False,
                    )
                    predicted[options.tta] = (result, factor, time.perf_counter() - begun)
                result, factor, predict_seconds = predicted[options.tta]
                begun = time.perf_counter()
                segmented = drain(
                    labels_on_image_grid(model, result, factor, spacing=spacing), show=False
                )
                # What segmenting the image with this point takes, as the Segment widget would.
                seconds[number] += predict_seconds + time.perf_counter() - begun
                scores[number].append(
                    evaluate_images(item.truth, segmented.labels, metrics=[metric])
                )
    finally:
        model.card = own_card
    rows = [
        {
            **point,
            "postprocess": posts[number],
            "tta": tta[number],
            metric: mean_row(scores[number])[metric],
            "seconds": round(seconds[number], 2),
        }
        for number, point in enumerate(points)
    ]
    yield Progress(total, total, "Scored every grid point")
    return sorted(rows, key=lambda row: -row[metric])
