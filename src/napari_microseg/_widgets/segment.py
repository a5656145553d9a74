"""Segment widget: pick an image and a model, run tiled inference in the background.

The model list comes from the registry (bundled, the user's own and fine-tuned
models, or a file opened here) and shows each model's card. Inference and the
model's recommended post-processing run in a worker thread with progress and
Cancel; the results land as a probability layer (the foreground class only,
unless "all classes" is ticked) and a labels layer on top, selected, with the
image's scale, translate and units (µm once the voxel size is known),
replacing the previous result of the same name
unless that labels layer was edited since (then the new one goes beside it).
A zarr-backed or very large image goes block by block into zarr stores shown
as lazy layers while they fill (:mod:`._zarr_job`).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    FloatSpinBox,
    Label,
    PushButton,
    SpinBox,
    create_widget,
)
from napari.layers import Image
from napari.utils.notifications import show_info, show_warning

from .._reader import VoxelSize, layer_voxel_size
from ..core.inference.job import match_channels
from ..core.inference.options import DEFAULT_TILE, DEFAULTS, PredictOptions
from ..core.inference.tiling import BLEND_MODES
from ._dock import DockedContainer
from ._model_export import export_model_package
from ._results import show_results
from ._runner import JobRunner
from ._zarr_job import run_block_by_block

if TYPE_CHECKING:
    from collections.abc import Iterator

    import napari

    from ..core.inference.segment import SegmentResult
    from ..core.models.base import ModelCard, SegmentationModel

LOG = logging.getLogger(__name__)
REGIONS = ("whole image", "current slice", "field of view")
NO_MODEL = "(no model: open a file or fine-tune one)"
TTA_TEXT = "test-time augmentation (8x slower)"


def image_axes(layer: Image) -> str:
    """Axis letters of an image layer's data: ``YX``, ``YXC`` (RGB), ``ZYX``..."""
    ndim = layer.data.ndim
    if layer.rgb:
        return "ZYXC"[-ndim:]
    if ndim > 4:
        raise ValueError(
            f"The layer {layer.name!r} has {ndim} dimensions; pick one time point or channel "
            "first (napari: Layers > Split stack)."
        )
    return "TZYX"[-ndim:]


def layer_hints(layer: Image) -> dict[str, Any]:
    """What :func:`~napari_microseg.core.models.bundled.suggest_model` needs to know of a layer.

    Channels (3 for RGB), spatial dimensions, the pixel size in µm when the
    layer has one (a scale other than 1), and a subsampled middle slice.
    """
    data = layer.data[-1] if getattr(layer, "multiscale", False) else layer.data
    spatial_ndim = min(data.ndim - (1 if layer.rgb else 0), 3)
    scale = float(layer.scale[-1])
    pixel_size = scale if scale != 1.0 and scale > 0 else None
    view = data
    while view.ndim > (3 if layer.rgb else 2):
        view = view[view.shape[0] // 2]
    step = max(1, max(view.shape[:2]) // 256)
    return {
        "channels": 3 if layer.rgb else 1,
        "spatial_ndim": spatial_ndim,
        "pixel_size_um": pixel_size,
        "sample": np.asarray(view[::step, ::step]),
    }


class SegmentWidget(DockedContainer):
    """Dock widget that segments an image layer with a deep-learning model."""

    # The model the user picked by hand (a suggestion never replaces it), and whether the
    # picker is being changed by the widget itself. Class defaults: magicgui may reset the
    # choices before __init__ has run to its end.
    _picked: str | None = None
    _programmatic: bool = False
    # The model whose recommended tile size and overlap were last applied: a refresh of the
    # list (every layer change) keeps the user's settings, so a block-by-block run resumes.
    _recommended_for: str | None = None

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.image_combo: ComboBox = create_widget(annotation=Image, label="image")
        self.voxel_label = Label(value="")
        self.model_combo = ComboBox(label="model", choices=[NO_MODEL])
        self.open_button = PushButton(text="Open model file…")
        self.card_label = Label(value="")
        self.export_model_button = PushButton(text="Export model to bioimage.io…")
        self.device_combo = ComboBox(choices=["auto", "cpu", "cuda", "mps"], label="device")
        self.device_label = Label(value="")
        self.tile = SpinBox(value=DEFAULT_TILE, min=32, max=4096, step=32, label="tile size")
        self.overlap = FloatSpinBox(
            value=DEFAULTS.overlap, min=0.0, max=0.9, step=0.05, label="overlap"
        )
        self.blend = ComboBox(choices=BLEND_MODES, value=DEFAULTS.blend, label="blend")
        self.tta = CheckBox(value=DEFAULTS.tta, text=TTA_TEXT)
        self.match_scale = CheckBox(value=True, text="resample to the model's pixel size")
        self.mode_3d = ComboBox(choices=["slice-wise", "ortho-plane"], label="3D mode")
        self.region = ComboBox(choices=list(REGIONS), value="whole image", label="run on")
        self.all_classes = CheckBox(
            value=False, text="all classes (probabilities with a class slider)"
        )
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        self.extend(
            [
                self.image_combo,
                self.voxel_label,
                self.model_combo,
                self.open_button,
                self.card_label,
                self.export_model_button,
                self.device_combo,
                self.device_label,
                self.tile,
                self.overlap,
                self.blend,
                self.tta,
                self.match_scale,
                self.mode_3d,
                self.region,
                self.all_classes,
                self.run_button,
                self.cancel_button,
                self.status,
            ]
        )
        # Model cards and messages are long: wrap them instead of widening the dock.
        for label in (self.voxel_label, self.card_label, self.device_label, self.status):
            label.native.setWordWrap(True)
        self.runner = JobRunner("Segment", on_state=self._set_running, status=self.status)
        self.append(self.runner.panel)
        self._extra_paths: list[str] = []
        self.warm_models: dict[tuple[str, str], SegmentationModel] = {}
        self.model_combo.changed.connect(self._show_card)
        self.model_combo.changed.connect(self._remember_pick)
        self.image_combo.changed.connect(self.suggest_model)
        self.image_combo.changed.connect(self.show_voxel_size)
        self.device_combo.changed.connect(self._show_device)
        self.open_button.changed.connect(self.open_model_file)
        self.export_model_button.changed.connect(
            lambda: export_model_package(self, self._entries.get(self.model_combo.value))
        )
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.runner.cancel)
        self.refresh_models()
        self.suggest_model()
        self.show_voxel_size()
        self._show_device()
        self.wrap_for_dock()

    # ------------------------------------------------------------------ models
    def refresh_models(self, keep: str | None = None) -> None:
        """Re-read the registry (new fine-tuned models appear at once)."""
        from ..core.models.registry import list_models

        entries = list_models(self._extra_paths)
        self._entries = {e.name if e.source != "file" else str(e.path): e for e in entries}
        choices = [
            (f"{e.name} — {e.family}, {e.modality}" if e.usable else f"{e.name} (unusable)", key)
            for key, e in self._entries.items()
        ]
        current = keep if keep is not None else self.model_combo.value
        with self._by_widget():
            self.model_combo.choices = choices or [NO_MODEL]
            values = [value for _, value in choices]
            if current in values:
                self.model_combo.value = current
        self._show_card()

    @contextmanager
    def _by_widget(self) -> Iterator[None]:
        """Changes of the picker inside this block are the widget's, not the user's."""
        previous, self._programmatic = self._programmatic, True
        try:
            yield
        finally:
            self._programmatic = previous

    def _remember_pick(self, event: Any = None) -> None:
        if not self._programmatic:
            self._picked = self.model_combo.value

    def suggest_model(self, event: Any = None) -> str | None:
        """Preselect the bundled model suited to the chosen image (FIB-SEM/EM grey -> mito-em).

        A model the user picked by hand is kept. Nothing changes when no bundled
        model takes the image's channels.

        Returns
        -------
        str or None
            The model chosen, if any.
        """
        entries = getattr(self, "_entries", None)
        picked = entries.get(self._picked) if entries and self._picked is not None else None
        layer = self.image_combo.value
        if not entries or layer is None or (picked is not None and picked.usable):
            return None
        from ..core.models.bundled import suggest_model

        try:
            hints = layer_hints(layer)
        except (ValueError, TypeError, IndexError):
            return None
        name = suggest_model(entries.values(), **hints)
        if name is None or name not in entries:
            return None
        with self._by_widget():
            self.model_combo.value = name
        self._show_card()
        return name

    def reset_choices(self, event: Any = None) -> None:
        # magicgui resets every ComboBox to its constructor choices; keep the chosen model.
        keep = self.model_combo.value
        with self._by_widget():
            super().reset_choices(event)
        if hasattr(self, "_entries"):
            self.refresh_models(keep=keep)

    def _show_card(self, event: Any = None) -> None:
        entry = self._entries.get(self.model_combo.value)
        if entry is None:
            self.card_label.value = "No model yet: open a model file, or fine-tune one."
            return
        if not entry.usable:
            self.card_label.value = f"Unusable: {entry.problem}"
            return
        metrics = ", ".join(
            f"{k} {v:.3g}" for k, v in entry.metrics.items() if isinstance(v, (int, float))
        )
        card = entry.card
        target = entry.metrics.get("target")
        verdict = ""
        if isinstance(target, dict) and isinstance(target.get("value"), (int, float)):
            verdict = (
                f"validation: {target.get('label')} {target['value']:.3f} (target "
                f"{target.get('minimum')}: {'met' if target.get('met') else 'not met'})"
            )
        lines = [
            f"{entry.family} · {entry.modality} · {entry.in_channels} channel(s) · "
            f"{entry.size_mb:.1f} MB" + (" · bundled" if entry.source == "bundled" else ""),
            f"trained on: {card.trained_on or 'unknown'}" if card else "",
            f"metrics: {metrics}" if metrics else "",
            verdict,
            f"fine-tuned from: {' ← '.join(entry.lineage)}" if entry.lineage else "",
        ]
        self.card_label.value = "\n".join(line for line in lines if line)
        recommended = card.recommended if card else {}
        if self.model_combo.value == self._recommended_for:
            return
        self._recommended_for = self.model_combo.value
        if "tile_size" in recommended:
            self.tile.value = int(recommended["tile_size"])
        if "overlap" in recommended:
            self.overlap.value = float(recommended["overlap"])
        suggested = PredictOptions.for_card(card).tta if card else DEFAULTS.tta
        self.tta.value = suggested
        self.tta.text = TTA_TEXT + (" · this model's default" if suggested else "")

    def _show_device(self, event: Any = None) -> None:
        from ..core.models.device import select_device

        choice = select_device(self.device_combo.value, warn=False)
        note = f" ({choice.note})" if choice.note else ""
        self.device_label.value = f"runs on: {choice.name}{note}"

    def open_model_file(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(
            self.native, "Open a model", "", "Models (*.safetensors *.pt *.pth *.zip *.yaml)"
        )
        if path:
            self.add_model_path(path)

    def add_model_path(self, path: str) -> None:
        """Offer a model file in the picker and select it."""
        if path not in self._extra_paths:
            self._extra_paths.append(path)
        self.refresh_models()
        match = [
            key for key in self._entries if key == path or self._entries[key].path.samefile(path)
        ]
        if match:
            self.model_combo.value = match[0]

    def show_voxel_size(self, event: Any = None) -> VoxelSize | None:
        """Say under the image picker which voxel size a run will use, and where it came from.

        Returns
        -------
        VoxelSize or None
            The chosen image's voxel size; None when no usable image is chosen.
        """
        layer = self.image_combo.value
        try:
            ndim = len(image_axes(layer).replace("C", "")) if layer is not None else 0
        except ValueError:
            ndim = 0
        voxel = layer_voxel_size(layer, ndim) if ndim else None
        self.voxel_label.value = voxel.note if voxel is not None else ""
        return voxel

    # --------------------------------------------------------------------- run
    def _set_running(self, running: bool) -> None:
        self.run_button.enabled = not running
        self.cancel_button.enabled = running

    def run(self) -> None:
        """Validate the inputs and start inference in the background."""
        layer = self.image_combo.value
        if layer is None or layer not in self.viewer.layers:
            show_warning("Open or choose an image layer first.")
            return
        entry = self._entries.get(self.model_combo.value)
        if entry is None or not entry.usable:
            show_warning("Choose a usable model first (or open a model file).")
            return
        try:
            axes = image_axes(layer)
            data, offset, axes = self._region_data(layer, axes)
        except ValueError as error:
            show_warning(str(error))
            return
        options = PredictOptions(
            tile_size=int(self.tile.value),
            overlap=float(self.overlap.value),
            blend=self.blend.value,
            device=self.device_combo.value,
            tta=bool(self.tta.value),
            ortho=self.mode_3d.value == "ortho-plane" and "Z" in axes,
        )
        voxel = layer_voxel_size(layer, len(axes.replace("C", "")))
        self.voxel_label.value = voxel.note
        physical = voxel.size_um
        card = _card(entry.path)
        if physical is None and card is not None and card.pixel_size_um is not None:
            # Where it matters: the image cannot be matched to the model's pixel size.
            show_warning(
                f"{voxel.note} The model expects {card.pixel_size_um:g} µm per pixel; the "
                "image is predicted as it is."
            )
        resample = bool(self.match_scale.value)
        mismatch, note = _scale_messages(card, physical, axes, tuple(data.shape))
        # A warm model is reused only on the same device it was loaded for.
        key = (self.model_combo.value, self.device_combo.value)
        if self.region.value == "whole image" and run_block_by_block(
            self, layer, entry, key, axes, options, physical
        ):
            if mismatch:  # block by block predicts the image as it is
                show_warning(f"{mismatch} (Block-by-block runs are not resampled.)")
            return
        if resample and note:
            show_info(note)
        elif mismatch:
            show_warning(mismatch)  # the user may know better: warn, and run anyway
        if card is not None:  # RGB to a grey model or grey to an RGB one: convert, and say so
            data, axes, converted = match_channels(data, axes, card)
            if converted:
                show_info(converted)
        job = _load_and_segment(
            self.warm_models.get(key), str(entry.path), data, axes, options, physical, resample
        )
        self.status.value = f"running {entry.name} on {layer.name}…"

        def done(outcome: tuple[SegmentationModel, SegmentResult]) -> None:
            model, result = outcome
            self.warm_models = {key: model}  # keep one model warm for the next run
            status = show_results(
                self.viewer,
                layer,
                image_axes(layer),
                model,
                result,
                offset,
                physical,
                all_classes=bool(self.all_classes.value),
            )
            if status is not None:
                self.status.value = status

        self.runner.start(job, done, on_cancel=lambda: setattr(self.status, "value", "cancelled"))

    def _region_data(self, layer: Image, axes: str) -> tuple[Any, tuple[int, ...], str]:
        """The data to segment and its offset (in data pixels) inside the layer."""
        data = layer.data
        spatial = axes.replace("C", "")
        offset = [0] * len(spatial)
        region = self.region.value
        if region == "whole image" or len(spatial) < 2:
            return data, tuple(offset), axes
        point = layer.world_to_data(self.viewer.dims.point[-layer.ndim :])
        index: list[Any] = [slice(None)] * data.ndim
        kept_axes = axes
        if len(spatial) > 2:  # current slice: fix the leading (Z, T) axes
            for i in range(len(spatial) - 2):
                z = int(np.clip(round(point[i]), 0, data.shape[i] - 1))
                index[i] = slice(z, z + 1)
                offset[i] = z
        if region == "field of view":
            corners = self._visible_corners(layer)
            for i in (len(spatial) - 2, len(spatial) - 1):
                low, high = int(np.floor(corners[0][i])), int(np.ceil(corners[1][i])) + 1
                low, high = max(low, 0), min(high, data.shape[i])
                if high - low < 16:
                    raise ValueError("Zoom out: the field of view is too small to segment.")
                index[i] = slice(low, high)
                offset[i] = low
        return data[tuple(index)], tuple(offset), kept_axes

    def _visible_corners(self, layer: Image) -> tuple[np.ndarray, np.ndarray]:
        """Data coordinates of the canvas' top-left and bottom-right corners."""
        camera = self.viewer.camera
        canvas = getattr(self.viewer, "canvas", None)  # napari >= 0.6; older: _canvas_size
        height, width = canvas.size if canvas is not None else self.viewer._canvas_size
        half = np.array([height, width]) / (2 * camera.zoom)
        center = np.asarray(camera.center[-2:])
        point = np.asarray(self.viewer.dims.point, float)
        low_world, high_world = point.copy(), point.copy()
        low_world[-2:], high_world[-2:] = center - half, center + half
        low = np.asarray(layer.world_to_data(low_world[-layer.ndim :]))
        high = np.asarray(layer.world_to_data(high_world[-layer.ndim :]))
        return np.minimum(low, high), np.maximum(low, high)


def _load_and_segment(
    model: SegmentationModel | None,
    path: str,
    data: Any,
    axes: str,
    options: Any,
    spacing: tuple[float, ...] | None,
    match_pixel_size: bool = True,
) -> Any:
    """Worker-thread job: load the model (unless warm), predict, post-process.

    With ``match_pixel_size``, an image far from the model's pixel size is
    resampled in-plane to it for the prediction (results on the image's grid).
    """
    from ..core.inference.segment import segment_job
    from ..core.progress import Progress

    if model is None:
        yield Progress(0, None, "loading the model")
        from ..core.models.registry import load_model

        model = load_model(path, device=options.device)
    result = yield from segment_job(
        model, data, axes=axes, options=options, spacing=spacing, match_pixel_size=match_pixel_size
    )
    return model, result


def _card(path: Any) -> ModelCard | None:
    """The model file's card, or None when unreadable (loading it reports why)."""
    from ..core.models.checkpoint import inspect_checkpoint

    try:
        return inspect_checkpoint(path).card
    except Exception:  # loading the model reports a broken file, with the reason
        return None


def _scale_messages(
    card: ModelCard | None, spacing: tuple[float, ...] | None, axes: str, shape: tuple[int, ...]
) -> tuple[str | None, str | None]:
    """The pixel-size warning (predicting as is) and the resampling info line, or None each."""
    from ..core.inference.segment import resampling_note, scale_mismatch

    if card is None:
        return None, None
    return scale_mismatch(card, spacing), resampling_note(card, spacing, axes, shape)
