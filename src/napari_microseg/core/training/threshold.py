"""The session's threshold, chosen on the annotated pixels of a fine-tune (#21).

A card's fixed threshold (``recommended["postprocess"]``, method ``"threshold"``)
was chosen on the model's training data. A new session moves the probabilities:
under blur, object edges spread and a higher threshold puts them back where the
annotation has them. ``benchmarks/bench_adapt.py`` (mito-em, blur and noise,
slices 4 and 6 annotated) measured foreground Dice on the unseen slices of
0.908 at the card's 0.75 and 0.922 at 0.9 for the fine-tuned model, which
chooses 0.9 on its annotated pixels.

So a fine-tune of a threshold model tries :data:`THRESHOLD_CHOICES` on **all**
its annotated pixels, post-processing each annotated plane with the card's
pipeline as the Segment widget would, and keeps the card's threshold unless
another scores at least :data:`THRESHOLD_MIN_GAIN` more foreground Dice there.
All the annotated pixels, not only the held-out strip: one number is chosen, so
the pixels the weights learnt from bias it little. In the 4 mito-em fine-tunes
where another threshold gained 0.01 or more on the unseen slices, the strip
alone (a fifth of two slices) kept the card's each time; all the annotated
pixels found it each time (+0.011 to +0.014), and in the others changed little
(-0.001 to +0.004; docs/benchmarks.md, session 21). A fine-tune that
keeps the parent's weights still saves the parent with the session's threshold
when that threshold gains the margin (``"threshold parent"``).
Watershed cards are left alone: their threshold and marker height act together
on objects, which two annotated images cannot judge (re-choosing nuclei-fluo's
watershed threshold on its annotated images did not help on unseen images,
docs/benchmarks.md, session 16).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..inference.segment import recommended_pipeline
from ..progress import Job, Progress
from .scoring import capped_regions, region_probabilities

if TYPE_CHECKING:
    from ..models.base import SegmentationModel
    from .data import Region

__all__ = [
    "THRESHOLD_CHOICES",
    "THRESHOLD_MAX_PIXELS",
    "THRESHOLD_MIN_GAIN",
    "ThresholdChoice",
    "choose_threshold",
    "chooses_threshold",
    "session_threshold",
]

#: Thresholds a fine-tune tries on its annotated pixels (the card's own is always tried too).
THRESHOLD_CHOICES = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: Foreground Dice on the annotated pixels another threshold must gain over the card's:
#: every later segmentation changes, so a tie keeps what the model was tuned with.
THRESHOLD_MIN_GAIN = 0.005
#: Annotated pixels scored at most (whole planes, evenly spread): two 768 x 1024 slices fit.
THRESHOLD_MAX_PIXELS = 4_000_000


@dataclass(frozen=True)
class ThresholdChoice:
    """The threshold chosen for a session, with the scores that chose it.

    Attributes
    ----------
    card : float
        The card's threshold before.
    chosen : float
        The threshold to segment with (``card`` when none gained enough).
    dice : dict of float to float
        Foreground Dice of the post-processed labels on the annotated pixels, at
        each threshold tried.
    pixels : int
        Annotated pixels scored.
    """

    card: float
    chosen: float
    dice: dict[float, float]
    pixels: int

    @property
    def changed(self) -> bool:
        return self.chosen != self.card

    def describe(self) -> str:
        """One sentence for the user and the lineage."""
        before, after = self.dice[self.card], self.dice[self.chosen]
        if not self.changed:
            return (
                f"Threshold {self.card:g} kept: no other scored {THRESHOLD_MIN_GAIN:g} more "
                f"foreground Dice on the annotated pixels ({before:.3f})."
            )
        return (
            f"Threshold {self.card:g} -> {self.chosen:g}, chosen on the annotated pixels "
            f"(foreground Dice of the segmented labels {before:.3f} -> {after:.3f})."
        )

    def record(self) -> dict[str, Any]:
        """JSON-ready, for the new card's lineage."""
        return {
            "card": self.card,
            "chosen": self.chosen,
            "dice": {f"{t:g}": round(d, 4) for t, d in sorted(self.dice.items())},
            "pixels": self.pixels,
        }


def chooses_threshold(model: SegmentationModel) -> bool:
    """Whether a fine-tune of ``model`` re-chooses its threshold.

    A semantic model of one foreground class (no boundary class, whose pixels
    the threshold's labels leave out) whose card recommends a fixed
    ``"threshold"`` in pixels.
    """
    stored = model.card.recommended.get("postprocess")
    return (
        model.task != "instance"
        and len(model.classes) <= 2
        and isinstance(stored, dict)
        and stored.get("method") == "threshold"
        and isinstance(stored.get("threshold"), int | float)
        and not stored.get("physical_units")
    )


def choose_threshold(
    model: SegmentationModel,
    regions: Sequence[Region],
    *,
    device: Any,
    choices: Sequence[float] = THRESHOLD_CHOICES,
) -> ThresholdChoice | None:
    """The threshold that segments ``model``'s annotated ``regions`` best.

    Parameters
    ----------
    model : SegmentationModel
        A semantic model whose card recommends a fixed threshold
        (:func:`chooses_threshold`).
    regions : sequence of Region
        Annotated regions, on planes at the model's pixel size
        (:func:`~.split.annotated_regions`); at most :data:`THRESHOLD_MAX_PIXELS`
        of them are scored, spread over the planes.
    device : torch.device
        Where the module is.
    choices : sequence of float
        Thresholds tried besides the card's.

    Returns
    -------
    ThresholdChoice or None
        None when the model does not take a threshold or no pixel is annotated.
    """
    if not chooses_threshold(model) or not regions:
        return None
    pipeline = recommended_pipeline(model.card, len(model.classes))
    card = float(pipeline.threshold)
    tried = sorted({card, *(float(t) for t in choices)})
    counts = {t: np.zeros(3, np.int64) for t in tried}  # tp, fp, fn
    pixels = 0
    scored = capped_regions(regions, THRESHOLD_MAX_PIXELS)
    for mask, target, prob in region_probabilities(model, scored, device=device):
        truth = (target != 0) & mask
        pixels += int(mask.sum())
        for t in tried:
            found = (replace(pipeline, threshold=t).run(prob, class_axis=0) != 0) & mask
            counts[t] += (
                np.count_nonzero(found & truth),
                np.count_nonzero(found & ~truth),
                np.count_nonzero(~found & truth),
            )
    if not pixels:
        return None
    dice = {t: _dice(*(int(v) for v in c)) for t, c in counts.items()}
    best = max(tried, key=lambda t: (dice[t], -abs(t - card)))
    chosen = best if dice[best] >= dice[card] + THRESHOLD_MIN_GAIN else card
    return ThresholdChoice(card, chosen, dice, pixels)


def _dice(tp: int, fp: int, fn: int) -> float:
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def session_threshold(
    model: SegmentationModel,
    regions: Sequence[Region],
    device: Any,
    steps: int,
    *,
    found: ThresholdChoice | None = None,
) -> Job[ThresholdChoice | None]:
    """Choose ``model``'s threshold on the annotated ``regions`` and write it into its card.

    The card's ``recommended["postprocess"]`` takes the chosen threshold, and its
    lineage the scores (``lineage["threshold"]``), changed or not; a model that
    does not take a threshold is left as it is. ``found``: a choice already made
    for these weights and regions (nothing is predicted again).

    Yields
    ------
    Progress
        ``phase="threshold"`` with the choice's record.
    """
    found = found or choose_threshold(model, regions, device=device)
    if found is None:
        return None
    if found.changed:
        stored = dict(model.card.recommended["postprocess"])
        stored["threshold"] = found.chosen
        model.card.recommended = {**model.card.recommended, "postprocess": stored}
    model.card.lineage = {**model.card.lineage, "threshold": found.record()}
    yield Progress(steps, steps, found.describe(), None, {"phase": "threshold", **found.record()})
    return found
