"""What the Fine-tune widget shows of a run: live training curves and the held-out summary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..core.progress import Progress

#: Where every metric of the summary is measured.
WHERE = "on held-out annotated pixels"
#: How the saved model came about, by the lineage's ``recipe.kept``.
HOW = {
    "trained": "fine-tuned",
    "adapted": "batch-norm adapted (training did not help)",
    "flat-field parent": "illumination corrected (training did not help)",
    "smoothed parent": "noisy images smoothed (training did not help)",
    "threshold parent": "the parent with a threshold chosen on your annotations (training did "
    "not help)",
}

#: The same for a one-image run that took no gradient step (the card advised it).
UNTRAINED_HOW = {
    "smoothed parent": "noisy images smoothed",
    "threshold parent": "the parent with a threshold chosen on your annotations",
}


class TrainingCurves:
    """A small matplotlib canvas with loss and validation-metric curves."""

    def __init__(self) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4, 2.6), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(220)
        self.loss_axes = self.figure.add_subplot(1, 2, 1)
        self.metric_axes = self.figure.add_subplot(1, 2, 2)
        self.clear()

    def clear(self) -> None:
        self.train: list[tuple[int, float]] = []
        self.val: list[tuple[int, float]] = []
        self.dice: list[tuple[int, float]] = []
        self.f1: list[tuple[int, float]] = []
        self.draw()

    def add(self, event: Progress) -> None:
        info = event.info
        if "loss" in info:
            self.train.append((event.step, float(info["loss"])))
        if "val_loss" in info:
            self.val.append((event.step, float(info["val_loss"])))
        if "val_dice" in info:
            self.dice.append((event.step, float(info["val_dice"])))
        if "val_object_f1" in info:
            self.f1.append((event.step, float(info["val_object_f1"])))

    def draw(self) -> None:
        for axes, series, title in (
            (self.loss_axes, (("train", self.train), ("validation", self.val)), "loss"),
            (self.metric_axes, (("Dice", self.dice), ("object F1", self.f1)), "validation"),
        ):
            axes.clear()
            axes.set_title(title, fontsize=8)
            axes.tick_params(labelsize=7)
            for label, points in series:
                if points:
                    steps, values = zip(*points)
                    axes.plot(steps, values, label=label, marker="." if len(points) < 30 else "")
            if any(points for _, points in series):
                axes.legend(fontsize=7)
        self.canvas.draw_idle()


@dataclass
class FinetuneSummary:
    """The held-out metrics of a fine-tune, step by step, and what was kept.

    Attributes
    ----------
    kept : str
        ``"trained"``, ``"adapted"``, ``"flat-field parent"``, ``"smoothed
        parent"``, ``"threshold parent"`` or ``"parent"`` (nothing beat the
        parent; nothing was saved).
    metrics : str
        Per metric: the parent, the illumination-corrected parent, the adapted
        model and the result, as far as the run measured them.
    corrected : bool
        The run learnt from flat-field corrected images.
    smoothed : float, optional
        The Gaussian sigma (px) of a run that learnt from smoothed (noisy) images.
    threshold : (float, float), optional
        The card's segmentation threshold and the one chosen on the annotated
        pixels, when they differ.
    """

    kept: str
    metrics: str
    corrected: bool = False
    smoothed: float | None = None
    threshold: tuple[float, float] | None = None
    trained: bool = True

    @classmethod
    def of(
        cls,
        lineage: dict[str, Any],
        adapt_info: dict[str, Any],
        illumination_info: dict[str, Any],
    ) -> FinetuneSummary:
        """The summary of a finished run.

        Parameters
        ----------
        lineage : dict
            The result's ``card.lineage`` (``metrics_before``, ``metrics_after``,
            ``recipe.kept``).
        adapt_info, illumination_info : dict
            The run's ``phase="adapt"`` and ``phase="illumination"`` progress
            information ({} when it had none).
        """
        before = lineage.get("metrics_before", {})
        after = lineage.get("metrics_after", {})
        adapted = adapt_info.get("metrics_adapted", {})
        # The statistics may fit the held-out pixels yet be refused by the cross-fit (recipe.py).
        unused = "" if adapt_info.get("start") == "adapted" else " (not used)"
        flat = illumination_info.get("metrics_flat", {}) if illumination_info.get("flat") else {}
        parts = []
        for key in ("dice", "object_f1"):
            if not isinstance(before.get(key), (int, float)):
                continue
            steps = [f"parent {before[key]:.3f}"]
            if isinstance(flat.get(key), (int, float)):
                steps.append(f"illumination corrected {flat[key]:.3f}")
            if isinstance(adapted.get(key), (int, float)):
                steps.append(f"adapted {adapted[key]:.3f}{unused}")
            if isinstance(after.get(key), (int, float)):
                steps.append(f"result {after[key]:.3f}")
            parts.append(f"{key.replace('_', ' ')}: " + " → ".join(steps))
        recipe = lineage.get("recipe") or {}
        chosen = lineage.get("threshold") or {}
        changed = chosen.get("chosen") is not None and chosen.get("chosen") != chosen.get("card")
        return cls(
            kept=recipe.get("kept", "trained"),
            metrics="; ".join(parts),
            corrected=bool(flat),
            smoothed=recipe.get("smooth"),
            threshold=(chosen["card"], chosen["chosen"]) if changed else None,
            trained=recipe.get("gradient_steps") is not False,
        )

    def text(self, name: str) -> str:
        """The result line of the dock, for the model ``name`` (the parent's when kept)."""
        if not self.trained:
            return self.untrained_text(name)
        if self.kept == "parent":
            return (
                f"kept the parent {name!r}: neither adaptation nor fine-tuning beat it "
                f"{WHERE} ({self.metrics}). Nothing was saved."
            )
        how = HOW.get(self.kept, self.kept)
        if self.corrected and self.kept != "flat-field parent":
            how += "; it corrects uneven illumination, as the held-out pixels asked"
        if self.smoothed and self.kept != "smoothed parent":
            how += f"; it smooths its input (sigma {self.smoothed:g} px): the session is noisy"
        if self.threshold:
            how += (
                f"; it segments at threshold {self.threshold[1]:g}, not {self.threshold[0]:g}, "
                "as your annotated pixels prefer"
            )
        return f"saved as {name!r} ({how}). {WHERE}: {self.metrics}"

    def untrained_text(self, name: str) -> str:
        """The result line of a one-image run without gradient steps (the card advised it)."""
        where = "on all your annotated pixels"
        if self.kept == "parent":
            return (
                f"kept the parent {name!r}: one image, so no training (its card advises a "
                f"second image); no label-free correction beat it {where} ({self.metrics}). "
                "Nothing was saved."
            )
        how = [UNTRAINED_HOW.get(self.kept, self.kept)]
        if self.smoothed and self.kept != "smoothed parent":
            how.append(f"it smooths its input (sigma {self.smoothed:g} px)")
        if self.threshold:
            how.append(f"it segments at threshold {self.threshold[1]:g}, not {self.threshold[0]:g}")
        return (
            f"saved as {name!r} ({'; '.join(how)}; one image, so no training: correct a second "
            f"image to fine-tune). {where}: {self.metrics}"
        )
