"""Post-process widget: probabilities to labels with a live preview, no re-inference.

It works on probability Image layers: the layers the Segment widget makes
carry their class axis and the model's recommended pipeline in
``layer.metadata``; any other floating-point image in [0, 1] works too. Only
those are offered (never the raw image), the newest first, and a new one is
picked as soon as it appears.
Moving a slider re-runs the pipeline on the current slice only (thresholds
derived once from the whole map, so the preview matches the final result);
"Apply to all slices" runs the whole map in the background with Cancel.

No edit is lost here: the result goes into a new labels layer unless the user
asks to write into the existing one, and then a layer edited since it was made
is replaced only after a confirmation, as one step that Ctrl+Z undoes. The
preview only ever rewrites its own layer, and leaves it alone once edited.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    FloatSlider,
    FloatSpinBox,
    Label,
    PushButton,
)
from napari.layers import Image, Labels
from napari.utils.notifications import show_info, show_warning
from qtpy.QtWidgets import QMessageBox

from ..core.postprocess import METHODS, PostprocessPipeline
from ._dock import DockedContainer
from ._layer_edits import edited_since_made, fingerprint, mark_made, replace_undoably
from ._runner import JobRunner, user_message

if TYPE_CHECKING:
    import napari

LOG = logging.getLogger(__name__)


def is_probability_layer(layer: Any) -> bool:
    """Whether Post-process can read ``layer`` as probabilities.

    A layer the Segment widget made (its metadata names the model's post-processing
    or class axis), or a floating-point Image whose values lie in [0, 1] (napari's
    contrast-limit range, which it measures when the layer is added).
    """
    if not isinstance(layer, Image) or layer.rgb:
        return False
    made_by_segment = {"postprocess", "class_axis", "foreground_class"} & set(layer.metadata)
    if made_by_segment:
        return True
    if np.dtype(layer.dtype).kind != "f":
        return False
    low, high = (float(v) for v in layer.contrast_limits_range)
    return low >= -1e-6 and high <= 1.0 + 1e-6


def probability_layers(viewer: napari.Viewer) -> list[Image]:
    """The viewer's probability layers (see :func:`is_probability_layer`), newest first."""
    return [layer for layer in reversed(list(viewer.layers)) if is_probability_layer(layer)]


def class_axis_of(layer: Image) -> int | None:
    """The class axis of a probability layer made by the Segment widget, else None."""
    axis = layer.metadata.get("class_axis")
    return int(axis) if axis is not None else None


def spatial_scale(layer: Image) -> tuple[float, ...]:
    """The layer's scale without the class axis."""
    axis = class_axis_of(layer)
    return tuple(float(s) for i, s in enumerate(layer.scale) if i != axis)


class PostprocessWidget(DockedContainer):
    """Dock widget that turns a probability layer into labels."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.prob_combo = ComboBox(
            choices=self._probability_choices, label="probabilities", nullable=True
        )
        self.method = ComboBox(choices=list(METHODS), value="otsu", label="method")
        self.threshold = FloatSlider(value=0.5, min=0.0, max=1.0, step=0.01, label="threshold")
        self.auto_threshold = CheckBox(value=True, text="automatic (Otsu / from Otsu)")
        self.low = FloatSlider(value=0.3, min=0.0, max=1.0, step=0.01, label="low")
        self.high = FloatSlider(value=0.7, min=0.0, max=1.0, step=0.01, label="high")
        self.markers = ComboBox(choices=["distance", "probability"], label="markers")
        self.h = FloatSpinBox(value=2.0, min=0.0, max=1000.0, step=0.5, label="h (maxima depth)")
        self.compactness = FloatSpinBox(
            value=0.0, min=0.0, max=100.0, step=0.01, label="compactness"
        )
        self.opening = FloatSpinBox(value=0.0, min=0.0, max=50.0, step=0.5, label="opening radius")
        self.fill_holes = CheckBox(value=True, text="fill holes")
        self.min_size = FloatSpinBox(value=0.0, min=0.0, max=1e12, step=10.0, label="min size")
        self.physical = CheckBox(value=False, text="sizes in µm (else pixels)")
        self.live = CheckBox(value=True, text="live preview on the current slice")
        self.replace = CheckBox(
            value=False, text="write into the existing labels layer (Ctrl+Z undoes)"
        )
        self.apply_button = PushButton(text="Apply to all slices")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        # Every setting re-runs the preview when it changes.
        settings = [
            self.method,
            self.auto_threshold,
            self.threshold,
            self.low,
            self.high,
            self.markers,
            self.h,
            self.compactness,
            self.opening,
            self.fill_holes,
            self.min_size,
            self.physical,
            self.live,
        ]
        self.extend(
            [
                self.prob_combo,
                *settings,
                self.replace,
                self.apply_button,
                self.cancel_button,
                self.status,
            ]
        )
        self.runner = JobRunner("Post-process", on_state=self._set_running, status=self.status)
        self.append(self.runner.panel)
        self._resolved: dict[tuple[Any, ...], PostprocessPipeline] = {}
        # The objects found on the previewed slice before cleanup: moving a cleanup
        # setting (holes, minimum size) re-runs only the cleanup, not the watershed.
        self._slice_objects: tuple[tuple[Any, ...], np.ndarray] | None = None
        # The preview layer this widget made and its probability layer: the only layer a
        # preview ever rewrites (never one found by name, which may be the user's).
        self._preview: tuple[Labels, Image] | None = None
        for control in settings:
            control.changed.connect(self.update_preview)
        self.prob_combo.changed.connect(self._on_layer_changed)
        self.apply_button.changed.connect(self.apply_to_all)
        self.cancel_button.changed.connect(self.runner.cancel)
        self.viewer.dims.events.current_step.connect(self.update_preview)
        self.viewer.layers.events.inserted.connect(self._pick_new_layer)
        self.prob_combo.value = next(iter(probability_layers(self.viewer)), None)
        self._on_layer_changed(self.prob_combo.value)
        self.wrap_for_dock()

    # -------------------------------------------------------------------- settings
    def _probability_choices(self, widget: Any = None) -> list[tuple[str, Image]]:
        return [(layer.name, layer) for layer in probability_layers(self.viewer)]

    def _pick_new_layer(self, event: Any) -> None:
        """A probability layer that just appeared (a Segment run) becomes the choice."""
        self.prob_combo.reset_choices()
        layer = getattr(event, "value", None)
        if layer is not None and is_probability_layer(layer):
            self.prob_combo.value = layer

    def _set_running(self, running: bool) -> None:
        self.apply_button.enabled = not running
        self.cancel_button.enabled = running

    def _on_layer_changed(self, layer: Image | None) -> None:
        if layer is not None and "postprocess" in layer.metadata:
            self.set_pipeline(PostprocessPipeline.from_dict(layer.metadata["postprocess"]))
        self._update_visibility()
        self.update_preview()

    def set_pipeline(self, pipeline: PostprocessPipeline) -> None:
        """Show a pipeline's settings in the controls (e.g. a model's recommendation)."""
        with self.changed.blocked():
            self.method.value = pipeline.method
            self.auto_threshold.value = pipeline.threshold is None
            if pipeline.threshold is not None:
                self.threshold.value = pipeline.threshold
            if pipeline.low is not None and pipeline.high is not None:
                self.low.value, self.high.value = pipeline.low, pipeline.high
            self.markers.value = pipeline.markers
            if pipeline.h is not None:
                self.h.value = pipeline.h
            self.compactness.value = pipeline.compactness
            self.opening.value = pipeline.opening_radius
            self.fill_holes.value = pipeline.fill_holes
            self.min_size.value = pipeline.min_size
            self.physical.value = pipeline.physical_units
        self._base = pipeline

    def _update_visibility(self) -> None:
        method = self.method.value
        self.threshold.visible = method == "threshold" or not self.auto_threshold.value
        self.auto_threshold.visible = method != "threshold"
        self.low.visible = self.high.visible = (
            method == "hysteresis" and not self.auto_threshold.value
        )
        self.markers.visible = self.h.visible = self.compactness.visible = method == "watershed"

    def pipeline(self) -> PostprocessPipeline:
        """The pipeline the controls describe."""
        method = self.method.value
        auto = self.auto_threshold.value and method != "threshold"
        base = getattr(self, "_base", None)
        layer = self.prob_combo.value
        boundary = base.boundary_class if base is not None else None
        foreground = base.foreground_class if base is not None else 1
        if layer is None or class_axis_of(layer) is None:
            boundary, foreground = None, 1
        return PostprocessPipeline(
            method=method,
            threshold=None if auto or method == "hysteresis" else float(self.threshold.value),
            low=None if auto else float(min(self.low.value, self.high.value)),
            high=None if auto else float(max(self.low.value, self.high.value)),
            foreground_class=foreground,
            boundary_class=boundary,
            markers=self.markers.value,
            h=float(self.h.value),
            compactness=float(self.compactness.value),
            opening_radius=float(self.opening.value),
            fill_holes=bool(self.fill_holes.value),
            min_size=float(self.min_size.value),
            physical_units=bool(self.physical.value),
        )

    # --------------------------------------------------------------------- preview
    def _resolved_pipeline(
        self, layer: Image, pipeline: PostprocessPipeline
    ) -> PostprocessPipeline:
        """Thresholds derived once from the whole map (cached), so a slice matches the volume."""
        key = (
            id(layer),
            pipeline.method,
            pipeline.threshold,
            pipeline.low,
            pipeline.high,
            pipeline.foreground_class,
        )
        if key not in self._resolved:
            data = np.asarray(layer.data)
            self._resolved[key] = pipeline.resolve(data, class_axis=class_axis_of(layer))
        resolved = self._resolved[key]
        return replace(pipeline, threshold=resolved.threshold, low=resolved.low, high=resolved.high)

    def current_slice(self, layer: Image) -> tuple[np.ndarray, tuple[int, ...]]:
        """The probabilities of the displayed 2D slice (class axis kept) and its index."""
        axis = class_axis_of(layer)
        data = layer.data
        point = layer.world_to_data(self.viewer.dims.point[-layer.ndim :])
        index: list[Any] = []
        picked: list[int] = []
        for i in range(data.ndim):
            if i == axis or i >= data.ndim - 2:
                index.append(slice(None))
            else:
                value = int(np.clip(round(point[i]), 0, data.shape[i] - 1))
                index.append(value)
                picked.append(value)
        return np.asarray(data[tuple(index)]), tuple(picked)

    def update_preview(self, event: Any = None) -> None:
        """Re-run the pipeline on the current slice and show it as a preview layer."""
        self._update_visibility()
        layer = self.prob_combo.value
        if not self.live.value or layer is None or layer not in self.viewer.layers:
            return
        try:
            pipeline = self._resolved_pipeline(layer, self.pipeline())
            labels = self._preview_labels(layer, pipeline)
        except ValueError as error:
            self.status.value = user_message(error)
            return
        self.status.value = f"preview: {int(labels.max())} objects on this slice"
        self._show_preview(f"{layer.name} preview", labels, layer)

    def _preview_labels(self, layer: Image, pipeline: PostprocessPipeline) -> np.ndarray:
        prob, picked = self.current_slice(layer)
        axis = class_axis_of(layer)
        spacing = spatial_scale(layer)[-2:] if pipeline.physical_units else None
        finding = pipeline.without_cleanup()
        key = (id(layer), id(layer.data), picked, repr(finding), spacing)
        if self._slice_objects is None or self._slice_objects[0] != key:
            objects = finding.run(prob, class_axis=None if axis is None else 0, spacing=spacing)
            self._slice_objects = (key, objects)
        objects = self._slice_objects[1].copy()
        return pipeline.clean(objects, spacing=spacing, sequential=True)

    def _show_preview(self, name: str, labels: np.ndarray, source: Image) -> None:
        scale, translate = _placement(source, labels.ndim)
        target = None
        if self._preview is not None and self._preview[1] is source:
            target = self._preview[0]
        if target is not None and target in self.viewer.layers and edited_since_made(target):
            # The user painted on the preview: it is theirs now; preview in a new layer.
            show_info(
                f"{target.name!r} was edited, so it is kept; the preview goes on in a new layer."
            )
            target = None
        if target is None or target not in self.viewer.layers:
            target = self.viewer.add_labels(
                labels, name=name, scale=scale, translate=translate, opacity=0.5
            )
            self._preview = (target, source)
        else:
            target.data = labels
            # Each assignment redraws the layer; a preview slider keeps the same slice.
            if not np.allclose(target.scale, scale):
                target.scale = scale
            if not np.allclose(target.translate, translate):
                target.translate = translate
        mark_made(target)

    def confirm_replace(self, layer: Labels) -> bool:
        """Ask before replacing a labels layer edited since it was made (True: replace)."""
        answer = QMessageBox.question(
            self.native,
            "Replace edited labels?",
            f"{layer.name!r} was edited since it was made. Replace it with the new result? "
            "(Ctrl+Z on the layer brings the edits back; No writes a new layer.)",
        )
        return answer == QMessageBox.StandardButton.Yes

    # ------------------------------------------------------------------- apply all
    def apply_to_all(self) -> None:
        """Post-process the whole probability map in the background."""
        layer = self.prob_combo.value
        if layer is None or layer not in self.viewer.layers:
            show_warning("Choose a probability layer first.")
            return
        try:
            pipeline = self._resolved_pipeline(layer, self.pipeline())
        except ValueError as error:
            show_warning(user_message(error))
            return
        name = f"{layer.name.removesuffix(' probabilities')} labels"
        target = self._replace_target(name)
        job = pipeline.run_job(
            np.asarray(layer.data),
            class_axis=class_axis_of(layer),
            spacing=spatial_scale(layer) if pipeline.physical_units else None,
        )
        # Where the result goes is fixed now: the probability layer may be gone by the end.
        placement = _placement(layer, len(spatial_scale(layer)))
        source_name = layer.name

        def done(labels: np.ndarray) -> None:
            self.status.value = f"{int(labels.max())} objects"
            notes = [] if layer in self.viewer.layers else [f"{source_name!r} was removed"]
            self._write_result(name, labels, target, placement, notes)

        self.runner.start(job, done)

    def _replace_target(self, name: str) -> tuple[Labels, str | None] | None:
        """The labels layer to write into, with its fingerprint now; None: a new layer.

        Asked here, before the run, when the layer was edited since it was made.
        """
        if not self.replace.value or name not in self.viewer.layers:
            return None
        layer = self.viewer.layers[name]
        if not isinstance(layer, Labels):
            return None
        if edited_since_made(layer) and not self.confirm_replace(layer):
            return None
        return layer, fingerprint(layer.data)

    def _write_result(
        self,
        name: str,
        labels: np.ndarray,
        target: tuple[Labels, str | None] | None,
        placement: tuple[tuple[float, ...], tuple[float, ...]],
        notes: list[str],
    ) -> None:
        """Put a finished result into the chosen layer, or a new one when that would lose edits.

        ``notes`` are clauses for the message (what happened during the run).
        """
        if target is not None:
            layer, seen = target
            if layer not in self.viewer.layers:
                notes.append(f"the labels layer {layer.name!r} was removed during the run")
            elif fingerprint(layer.data) != seen:
                notes.append(f"{layer.name!r} was edited during the run, so it is kept")
            elif replace_undoably(layer, labels):
                self.status.value += f" in {layer.name!r}"
                show_info(_sentence([*notes, f"replaced {layer.name!r} (Ctrl+Z undoes)"]))
                return
            else:
                notes.append(f"{layer.name!r} has another shape or type, so it is kept")
        scale, translate = placement
        new = self.viewer.add_labels(
            labels, name=name, scale=scale, translate=translate, opacity=0.5
        )
        mark_made(new)
        self.status.value += f" in {new.name!r}"
        if notes:
            show_info(_sentence([*notes, f"the result is in the new layer {new.name!r}"]))


def _placement(source: Image, ndim: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Scale and translate of the last ``ndim`` spatial axes of a probability layer."""
    scale = spatial_scale(source)[-ndim:]
    translate = tuple(float(t) for t in source.translate)[-ndim:]
    return scale, translate


def _sentence(clauses: list[str]) -> str:
    """One notification sentence from clauses: 'a; b; c.' with a capital first letter."""
    text = "; ".join(clauses)
    return f"{text[0].upper()}{text[1:]}."
