"""Fine-tune widget: teach a model from corrected labels, in the background, with live curves.

Pick the base model, the image and the corrected labels layer (the Segment
widget's labels after the user fixed them); the annotated slices are found
automatically and can be edited. Training runs in a worker thread; the dock
shows training and validation loss and validation Dice/F1 as they come. At
the end it shows "before -> after" validation metrics and offers to segment
again with the new model, which every model picker lists at once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
    create_widget,
)
from napari.layers import Image, Labels
from napari.utils.notifications import show_info, show_warning

from ._dock import DockedContainer
from ._runner import JobRunner
from .segment import NO_MODEL, image_axes

if TYPE_CHECKING:
    import napari

    from ..core.models.base import SegmentationModel
    from ..core.progress import Progress

LOG = logging.getLogger(__name__)


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


class FinetuneWidget(DockedContainer):
    """Dock widget that fine-tunes a model on corrected labels."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.model_combo = ComboBox(label="base model", choices=[NO_MODEL])
        self.image_combo: ComboBox = create_widget(annotation=Image, label="image")
        self.labels_combo: ComboBox = create_widget(annotation=Labels, label="corrected labels")
        self.slices = LineEdit(value="", label="annotated slices")
        self.new_name = LineEdit(value="", label="new model name")
        self.minutes = FloatSpinBox(value=2.5, min=0.1, max=600.0, step=0.5, label="minutes")
        self.steps = SpinBox(value=400, min=1, max=1_000_000, label="max steps")
        self.learning_rate = FloatSpinBox(
            value=5e-4, min=1e-6, max=1.0, step=1e-4, label="learning rate"
        )
        self.freeze = CheckBox(value=False, text="freeze the encoder")
        self.device_combo = ComboBox(choices=["auto", "cpu", "cuda", "mps"], label="device")
        self.start_button = PushButton(text="Start fine-tuning")
        self.cancel_button = PushButton(
            text="Cancel (keeps the best so far as a draft)", enabled=False
        )
        self.result_label = Label(value="")
        self.segment_again = PushButton(text="Segment again with the new model", visible=False)
        self.extend(
            [
                self.model_combo,
                self.image_combo,
                self.labels_combo,
                self.slices,
                self.new_name,
                self.minutes,
                self.steps,
                self.learning_rate,
                self.freeze,
                self.device_combo,
                self.start_button,
                self.cancel_button,
                self.result_label,
                self.segment_again,
            ]
        )
        self.curves = TrainingCurves()
        self.content.layout().addWidget(self.curves.canvas)
        self.runner = JobRunner("Fine-tune", on_state=self._set_running, status=self.result_label)
        self.append(self.runner.panel)
        self.new_model: SegmentationModel | None = None
        self.start_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.runner.cancel)
        self.segment_again.changed.connect(self.segment_with_new_model)
        self.labels_combo.changed.connect(self.detect_slices)
        self.model_combo.changed.connect(self._suggest_name)
        self.refresh_models()
        self.detect_slices()
        self.wrap_for_dock()

    # ------------------------------------------------------------------ inputs
    def refresh_models(self, keep: str | None = None) -> None:
        from ..core.models.registry import list_models

        usable = [e for e in list_models() if e.usable and e.task == "semantic"]
        current = keep if keep is not None else self.model_combo.value
        choices = [(f"{e.name} — {e.family}, {e.modality}", e.name) for e in usable]
        self.model_combo.choices = choices or [NO_MODEL]
        if current in [value for _, value in choices]:
            self.model_combo.value = current
        self._suggest_name()

    def reset_choices(self, event: Any = None) -> None:
        # magicgui resets every ComboBox to its constructor choices; keep the chosen model.
        keep = self.model_combo.value
        super().reset_choices(event)
        if hasattr(self, "curves"):
            self.refresh_models(keep=keep)

    def _suggest_name(self, event: Any = None) -> None:
        base = self.model_combo.value
        # A name the user typed stays; our own suggestion follows the chosen model.
        ours = self.new_name.value in ("", getattr(self, "_suggested_name", ""))
        if base and base != NO_MODEL and ours:
            from ..core.models.registry import unique_model_name

            self._suggested_name = unique_model_name(f"{base}-ft")
            self.new_name.value = self._suggested_name

    def detect_slices(self, event: Any = None) -> None:
        """Fill in the annotated slices of a label stack (non-empty slices)."""
        layer = self.labels_combo.value
        if layer is None or layer.data.ndim < 3:
            self.slices.value = ""
            return
        from ..core.training.data import annotated_slices

        found = annotated_slices(np.asarray(layer.data))
        self.slices.value = ",".join(map(str, found))

    # --------------------------------------------------------------------- run
    def _set_running(self, running: bool) -> None:
        self.start_button.enabled = not running
        self.cancel_button.enabled = running

    def start(self) -> None:
        """Check the inputs and start fine-tuning in the background."""
        base = self.model_combo.value
        image, labels = self.image_combo.value, self.labels_combo.value
        if not base or base == NO_MODEL:
            show_warning("Choose the base model to fine-tune.")
            return
        if (
            image is None
            or labels is None
            or image not in self.viewer.layers
            or (labels not in self.viewer.layers)
        ):
            show_warning("Choose the image and its corrected labels layer.")
            return
        try:
            axes = image_axes(image)
        except ValueError as error:
            show_warning(str(error))
            return
        spatial = image.data.shape[:-1] if image.rgb else image.data.shape
        if tuple(spatial) != tuple(labels.data.shape):
            show_warning(
                f"The labels {labels.data.shape} and the image {tuple(spatial)} differ in shape; "
                "correct the labels made from this image."
            )
            return
        from ..core.training.jobs import finetune
        from ..core.training.settings import TrainSettings

        settings = TrainSettings.for_finetune(
            minutes=float(self.minutes.value),
            steps=int(self.steps.value),
            learning_rate=float(self.learning_rate.value),
            freeze_encoder=bool(self.freeze.value),
        )
        # Snapshots: the user may keep painting while the model trains.
        job = finetune(
            base,
            np.array(image.data, copy=True),
            np.array(labels.data, copy=True),
            slices=self.slices.value or None,
            axes=axes,
            name=self.new_name.value or None,
            settings=settings,
            device=self.device_combo.value,
        )
        self.curves.clear()
        self.result_label.value = "training…"
        self.segment_again.visible = False
        self.runner.start(
            job, self._on_done, on_cancel=self._on_cancel, on_progress=self._on_progress
        )

    def _on_progress(self, event: Progress) -> None:
        self.curves.add(event)
        phase = event.info.get("phase", "")
        if phase != "train" or event.step % 10 == 0:
            self.curves.draw()

    def _on_done(self, model: SegmentationModel) -> None:
        self.new_model = model
        self.curves.draw()
        before = model.card.lineage.get("metrics_before", {})
        after = model.card.lineage.get("metrics_after", {})
        parts = [
            f"{key.replace('_', ' ')}: {before[key]:.3f} → {after[key]:.3f}"
            for key in ("dice", "object_f1")
            if isinstance(before.get(key), (int, float))
            and isinstance(after.get(key), (int, float))
        ]
        self.result_label.value = f"saved as {model.name!r}. " + "; ".join(parts)
        self.segment_again.visible = True
        self.new_name.value = ""
        self.refresh_models()
        show_info(f"Fine-tuned model {model.name!r} saved; it is in every model list now.")

    def _on_cancel(self) -> None:
        self.result_label.value = "cancelled: the best model so far is kept as a draft"
        self.refresh_models()

    def segment_with_new_model(self) -> None:
        """Open the Segment widget on the same image with the new model and run it."""
        from .segment import SegmentWidget

        if self.new_model is None:
            return
        widget = next(
            (w for w in _docked_widgets(self.viewer) if isinstance(w, SegmentWidget)), None
        )
        if widget is None:
            widget = SegmentWidget(self.viewer)
            self.viewer.window.add_dock_widget(widget, name="Segment")
        widget.refresh_models()
        widget.image_combo.value = self.image_combo.value
        widget.model_combo.value = self.new_model.name
        widget.run()


def _docked_widgets(viewer: napari.Viewer) -> list[Any]:
    docked = getattr(viewer.window, "dock_widgets", None)  # newer napari: the inner widgets
    if docked is not None:
        return list(docked.values())
    found = []
    for dock in viewer.window._dock_widgets.values():
        inner = dock.widget()
        magic = getattr(inner, "_magic_widget", None)
        found.append(magic if magic is not None else inner)
    return found
