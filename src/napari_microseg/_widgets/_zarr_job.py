"""Segment a zarr-backed or very large layer block by block into zarr, shown while it fills.

The Segment widget predicts in memory, which a volume larger than memory
does not allow. For such a layer (data that is not a NumPy array, e.g. the
dask array our reader makes of an OME-Zarr, or probabilities estimated above
:data:`._block_plan.IN_MEMORY_LIMIT_BYTES`) it hands over to :func:`run_block_by_block`:

* the probabilities go block by block into a zarr store
  (:func:`~napari_microseg.core.blocks.predict.predict_to_zarr`) in a folder the
  user can see: next to the input when it is a zarr on disk in a writable
  folder, else in :func:`predictions_dir`; the store is named after the layer
  and the model (:func:`output_paths`);
* a probability Image layer whose data is that zarr array, opened read-only,
  appears as soon as the store exists, named ``"... probabilities (filling)"``;
  it is refreshed on the GUI thread as blocks complete (only the displayed
  slice is read), and renamed ``"... probabilities"`` when every block is done;
* the labels follow block by block into a second store
  (:func:`~napari_microseg.core.blocks.labels.label_to_zarr`, the model's
  recommended post-processing) and appear as a zarr-backed Labels layer when
  complete (their block-local ids are renumbered in the last pass, so they are
  not shown before).

Cancel stops within one block (at the next batch of tiles); the blocks done
are recorded in the store, the layer is renamed ``"... probabilities
(incomplete)"`` and a notification says how much is saved. Running again on
the same layer, model and settings resumes; after a change of settings the
store is started over. No model code runs on the GUI thread: the job itself is
in :mod:`._zarr_worker`; this module keeps the layers up to date. It needs of the
widget only what :class:`SegmentHost` lists, so the widget imports this module and
not the other way round.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from napari.utils.notifications import show_info, show_warning

from ..core.blocks.segment import PHASE, READY
from ..core.blocks.store import ClassView
from ..core.progress import Progress
from . import _block_plan
from ._block_plan import (
    BlockOutputs,
    OutputFolderError,
    estimated_bytes,
    layer_array,
    output_chunks,
    output_folder,
    output_paths,
    wants_blocks,
)
from ._zarr_worker import BlockOutcome, block_segment_job

if TYPE_CHECKING:
    from magicgui.widgets import CheckBox, Label
    from napari import Viewer
    from napari.layers import Image, Layer

    from ..core.inference.options import PredictOptions
    from ..core.models.base import SegmentationModel
    from ..core.models.entries import ModelEntry
    from ._runner import JobRunner

#: Least seconds between two refreshes of the filling layer.
REFRESH_INTERVAL_S = 0.5
#: Name suffixes of a probability layer that is not complete.
FILLING = " (filling)"
INCOMPLETE = " (incomplete)"


# ----------------------------------------------------------------------------- GUI side


class SegmentHost(Protocol):
    """What a block-by-block run uses of the Segment widget.

    Attributes
    ----------
    viewer : Viewer
        Where the layers go.
    status : Label
        The widget's status line.
    runner : JobRunner
        Runs the job on a worker thread.
    warm_models : dict
        The warm models by ``(model, device)``; the run reuses one and keeps its own.
    all_classes : CheckBox
        Ticked: the probabilities are shown with every class (and a class slider).
    """

    viewer: Viewer
    status: Label
    runner: JobRunner
    warm_models: dict[tuple[str, str], SegmentationModel]
    all_classes: CheckBox


class BlockRun:
    """The GUI side of one block-by-block job: the lazy layers, refreshes and messages.

    Every method runs on the GUI thread (slots of the worker's signals).

    Parameters
    ----------
    widget : SegmentHost
        The Segment widget (its viewer, status label and warm models are used).
    layer : Image
        The input layer.
    entry : ModelEntry
        The model.
    key : tuple
        The widget's warm-model key.
    axes : str
        The input's axis letters.
    outputs : BlockOutputs
        Where the job writes.
    all_classes : bool
        Show the whole class stack (with a class slider) instead of the foreground
        class alone.
    """

    def __init__(
        self,
        widget: SegmentHost,
        layer: Image,
        entry: ModelEntry,
        key: tuple[str, str],
        axes: str,
        outputs: BlockOutputs,
        all_classes: bool = False,
    ) -> None:
        self.widget = widget
        self.viewer = widget.viewer
        self.source = layer
        self.entry = entry
        self.key = key
        self.outputs = outputs
        spatial_ndim = len(axes.replace("C", ""))
        self.scale = tuple(float(s) for s in layer.scale)[-spatial_ndim:]
        self.translate = tuple(float(t) for t in layer.translate)[-spatial_ndim:]
        self.base = f"{layer.name} {entry.name}"
        self.all_classes = all_classes
        self.foreground = foreground_class(entry)
        self.prob_layer: Image | None = None
        self.predicted = False
        self._step = -1
        self._refreshed = 0.0

    @property
    def prob_name(self) -> str:
        return f"{self.base} probabilities"

    # -- worker signals
    def on_progress(self, event: Progress) -> None:
        """Add the lazy layer once the store exists; refresh it as blocks complete."""
        info = getattr(event, "info", None) or {}
        phase = info.get(PHASE)
        if phase == "predict":
            if self.prob_layer is None and info.get(READY):
                self._add_prob_layer()
            if self.prob_layer is not None and event.total and event.step > self._step:
                self._step = event.step
                self.widget.status.value = (
                    f"{event.step}/{event.total} blocks → {self.outputs.probabilities}"
                )
                if time.monotonic() - self._refreshed >= REFRESH_INTERVAL_S:
                    self._refresh()
        elif phase == "predicted":
            if self.prob_layer is None:
                self._add_prob_layer()
            self._mark_complete()
            self.widget.status.value = f"labels → {self.outputs.labels}…"

    def on_result(self, outcome: BlockOutcome) -> None:
        """Show the complete probabilities and the labels (both zarr-backed)."""
        import zarr

        self.widget.warm_models = {self.key: outcome.model}  # keep one model warm
        if self.prob_layer is None or self.prob_layer not in self.viewer.layers:
            self._add_prob_layer()
        result = outcome.result
        self._mark_complete(result.pipeline)
        prediction = result.prediction
        found = f", {prediction.skipped} found done" if prediction.skipped else ""
        summary = f"{prediction.blocks} blocks{found}; results in {self.outputs.folder}"
        if result.labels is None:
            self.widget.status.value = (
                f"{summary}; labels: use Post-process on one time point at a time"
            )
            return
        labels = zarr.open_array(str(self.outputs.labels), mode="r+")
        name = f"{self.base} labels"
        self._remove(name)
        self.viewer.add_labels(
            labels,
            name=name,
            scale=self.scale,
            translate=self.translate,
            opacity=0.5,
            metadata={"path": str(self.outputs.labels), "model": self.entry.name},
        )
        self.widget.status.value = f"{result.labels.n_objects} objects ({summary})"

    def on_cancel(self) -> None:
        """Say what is kept on disk and that running again resumes."""
        if self.predicted:
            show_info(
                f"Segment cancelled: the probabilities are complete in "
                f"{self.outputs.probabilities}; run again to make the labels."
            )
        else:
            done, total = self.blocks_done()
            if total is None:
                show_info("Segment cancelled before any block was written.")
            else:
                show_info(
                    f"Segment stopped: {done} of {total} blocks are saved in "
                    f"{self.outputs.probabilities}; run again to resume."
                )
        self.widget.status.value = "cancelled: run again to resume"

    def on_end(self) -> None:
        """However the job ended: a probability layer that is not complete says so."""
        layer = self.prob_layer
        if layer is None or self.predicted or layer not in self.viewer.layers:
            return
        layer.metadata = {**layer.metadata, "complete": False}
        self._remove(self.prob_name + INCOMPLETE, keep=layer)
        layer.name = self.prob_name + INCOMPLETE
        self._refresh()

    def blocks_done(self) -> tuple[int, int | None]:
        """Blocks recorded done in the probability store, and blocks in all (None: no store)."""
        import zarr

        from ..core.blocks.store import resume_state

        try:
            state = resume_state(zarr.open_array(str(self.outputs.probabilities), mode="r"))
        except Exception:  # no store yet, or not readable
            return 0, None
        return len(state.get("done", [])), state.get("n_blocks")

    # -- layers
    def _remove(self, name: str, keep: Layer | None = None) -> None:
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            if layer is not self.source and layer is not keep:
                self.viewer.layers.remove(layer)

    def _add_prob_layer(self) -> None:
        import zarr

        try:
            array = zarr.open_array(str(self.outputs.probabilities), mode="r")
        except Exception:  # not written yet: the next event tries again
            return
        for suffix in ("", FILLING, INCOMPLETE):
            self._remove(self.prob_name + suffix)
        self._remove(f"{self.base} labels")  # its store is rewritten by this run
        common = {
            "classes": list(self.entry.classes),
            "model": self.entry.name,
            "path": str(self.outputs.probabilities),
            "complete": False,
        }
        look = {"colormap": "magenta", "contrast_limits": (0.0, 1.0), "blending": "additive"}
        if self.all_classes:
            self.prob_layer = self.viewer.add_image(
                array,
                name=self.prob_name + FILLING,
                scale=(1.0, *self.scale),
                translate=(0.0, *self.translate),
                metadata={"class_axis": 0, **common},
                opacity=0.5,
                **look,
            )
        else:
            # One class, read lazily: no class slider, and the background class does not
            # wash the image out (as the in-memory path shows it).
            self.prob_layer = self.viewer.add_image(
                ClassView(array, self.foreground),
                name=self.prob_name + FILLING,
                scale=self.scale,
                translate=self.translate,
                metadata={"foreground_class": self.foreground, **common},
                opacity=0.4,
                **look,
            )
        self._refreshed = time.monotonic()

    def _mark_complete(self, pipeline: dict[str, Any] | None = None) -> None:
        layer = self.prob_layer
        if layer is None:
            return
        self.predicted = True
        if pipeline is not None and not self.all_classes:
            # The layer holds the foreground class alone: its pipeline reads class 0.
            pipeline = {**pipeline, "foreground_class": 0, "boundary_class": None}
        extra = {"postprocess": pipeline} if pipeline is not None else {}
        layer.metadata = {**layer.metadata, "complete": True, **extra}
        if layer.name != self.prob_name:
            self._remove(self.prob_name, keep=layer)
            layer.name = self.prob_name
        self._refresh()

    def _refresh(self) -> None:
        """Re-read the displayed slice of the filling layer (never the whole array)."""
        self._refreshed = time.monotonic()
        layer = self.prob_layer
        if layer is not None and layer in self.viewer.layers:
            layer.refresh()


def foreground_class(entry: ModelEntry) -> int:
    """The class a model's card post-processes as foreground (1, or 0 for one class)."""
    n_classes = max(len(entry.classes), 1)
    recommended = entry.card.recommended if entry.card is not None else {}
    pipeline = recommended.get("postprocess") or {}
    foreground = int(pipeline.get("foreground_class", 1 if n_classes > 1 else 0))
    return min(max(foreground, 0), n_classes - 1)


def run_block_by_block(
    widget: SegmentHost,
    layer: Image,
    entry: ModelEntry,
    key: tuple[str, str],
    axes: str,
    options: PredictOptions,
    spacing: tuple[float, ...] | None,
) -> bool:
    """Segment the whole layer block by block into zarr when it is lazy or large.

    Parameters
    ----------
    widget : SegmentHost
        The Segment widget (its runner runs the job).
    layer : Image
        The input layer.
    entry : ModelEntry
        The chosen model.
    key : tuple
        The widget's warm-model key ``(model, device)``.
    axes : str
        The layer's axis letters.
    options : PredictOptions
        Tiling and device settings.
    spacing : tuple of float or None
        Voxel size in µm.

    Returns
    -------
    bool
        True when handled here (started, or refused with a notification);
        False when the in-memory path should run.
    """
    data = layer_array(layer)
    if not wants_blocks(data, axes):
        return False
    if entry.task == "instance" or options.ortho:
        if estimated_bytes(data, axes) <= _block_plan.IN_MEMORY_LIMIT_BYTES:
            return False  # small enough for the in-memory path, which runs these
        what = "instance models" if entry.task == "instance" else "the ortho-plane mode"
        show_warning(
            f"{layer.name} is too large to segment in memory and {what} cannot run block by "
            "block; run on the current slice or the field of view"
            + (", or choose the slice-wise 3D mode." if options.ortho else ".")
        )
        return True
    try:
        folder = output_folder(layer)
    except OutputFolderError as error:
        show_warning(str(error))
        return True
    outputs = output_paths(folder, layer.name, entry.name)
    run = BlockRun(widget, layer, entry, key, axes, outputs, bool(widget.all_classes.value))
    job = block_segment_job(
        widget.warm_models.get(key),
        str(entry.path),
        data,
        axes,
        options,
        outputs,
        spacing,
        output_chunks(data, axes),
    )
    widget.status.value = f"running {entry.name} on {layer.name} block by block into {folder}…"
    widget.runner.start(
        job,
        run.on_result,
        on_cancel=run.on_cancel,
        on_progress=run.on_progress,
        on_end=run.on_end,
        cancel_message=None,
    )
    return True
