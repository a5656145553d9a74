"""Export widget: labels to TIFF/PNG/OME-Zarr and per-object measurements to CSV.

The export runs in a worker thread (never on the GUI thread), every file is
written atomically, and nothing is overwritten without asking. Sizes are in µm
when the voxel size is known: the layer's scale, the voxel size the Segment
widget recorded, or the layer's source file when another reader opened it
with scale 1 (the widget says which); otherwise they are in pixels, and the
widget says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    FileEdit,
    Label,
    PushButton,
    create_widget,
)
from napari.layers import Image, Labels
from napari.utils.notifications import show_info, show_warning
from qtpy.QtWidgets import QMessageBox

from .._reader import VoxelSize, layer_voxel_size
from ..core.evaluation.export import LABEL_FORMATS, ExportResult, export_job
from ..core.evaluation.measure import is_measurements_header, summary_path_for
from ..core.io.ome_labels import labels_target_in_image
from ..core.io.outputs import Output, check_outputs
from ._dock import DockedContainer
from ._memory import recall, remember
from ._runner import JobRunner

if TYPE_CHECKING:
    import napari

#: The widgets' memory key of the last export folder.
FOLDER_KEY = "export_folder"


class ExportWidget(DockedContainer):
    """Dock widget that exports a labels layer and its measurements."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.labels_combo: ComboBox = create_widget(annotation=Labels, label="labels")
        self.voxel_label = Label(value="")
        self.voxel_label.native.setWordWrap(True)  # a long note does not widen the dock
        self.image_combo: ComboBox = create_widget(
            annotation=Image | None, label="intensity from", options={"nullable": True}
        )
        self.folder = FileEdit(mode="d", label="folder", value=Path.cwd())
        # A folder the user picked (by hand, or by exporting to it) stays; until then the
        # folder follows the chosen layer's file.
        self._folder_chosen = False
        self._setting_folder = False
        self.format = ComboBox(choices=list(LABEL_FORMATS), value="TIFF", label="labels as")
        self.write_labels = CheckBox(value=True, text="write labels")
        self.write_csv = CheckBox(value=True, text="write measurements (CSV)")
        self.export_button = PushButton(text="Export")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.summary = Label(value="")
        self.extend(
            [
                self.labels_combo,
                self.voxel_label,
                self.image_combo,
                self.folder,
                self.format,
                self.write_labels,
                self.write_csv,
                self.export_button,
                self.cancel_button,
                self.summary,
            ]
        )
        self.runner = JobRunner("Export", on_state=self._set_running, status=self.summary)
        self.append(self.runner.panel)
        self.export_button.changed.connect(self.export)
        self.labels_combo.changed.connect(self.show_voxel_size)
        self.labels_combo.changed.connect(self.follow_layer_folder)
        self.folder.changed.connect(self._on_folder_changed)
        self.cancel_button.changed.connect(self.runner.cancel)
        self.last_result: ExportResult | None = None
        self.show_voxel_size()
        self.follow_layer_folder()
        self.wrap_for_dock()

    def follow_layer_folder(self, event: object = None) -> None:
        """Point the folder at the chosen layer's file, unless the user picked one.

        In order: a folder picked in this widget; the folder of the layer's file (or
        of the image it was segmented from); the folder of the last export, remembered
        across sessions; the current directory.
        """
        if self._folder_chosen:
            return
        source = layer_source_file(self.viewer, self.labels_combo.value)
        remembered = recall(FOLDER_KEY)
        if source is not None and source.parent.is_dir():
            folder = source.parent
        elif remembered and Path(remembered).is_dir():
            folder = Path(remembered)
        else:
            folder = Path.cwd()
        self._setting_folder = True
        try:
            self.folder.value = folder
        finally:
            self._setting_folder = False

    def _on_folder_changed(self, value: object = None) -> None:
        if not self._setting_folder:
            self._folder_chosen = True

    def show_voxel_size(self, event: object = None) -> VoxelSize | None:
        """Say under the labels picker which voxel size sizes are measured in, and why.

        Returns
        -------
        VoxelSize or None
            The chosen labels layer's voxel size; None when no layer is chosen.
        """
        layer = self.labels_combo.value
        voxel = layer_voxel_size(layer, layer.data.ndim) if layer is not None else None
        self.voxel_label.value = voxel.note if voxel is not None else ""
        return voxel

    def _set_running(self, running: bool) -> None:
        self.export_button.enabled = not running
        self.cancel_button.enabled = running

    def targets(self) -> tuple[Path | None, Path | None]:
        """The label file and CSV file an export would write now."""
        layer = self.labels_combo.value
        folder = Path(self.folder.value)
        stem = layer.name if layer is not None else "labels"
        labels_path = folder / f"{stem}{LABEL_FORMATS[self.format.value]}"
        if self.format.value == "OME-Zarr" and layer is not None:
            # Labels of an OME-Zarr image go into its labels/ group (NGFF), where other tools
            # look for them; the folder still takes the CSV.
            source = layer_source_file(self.viewer, layer)
            inside = labels_target_in_image(source, stem, layer.data.shape) if source else None
            labels_path = inside or labels_path
        csv_path = folder / f"{stem}_measurements.csv"
        return (
            labels_path if self.write_labels.value else None,
            csv_path if self.write_csv.value else None,
        )

    def confirm_overwrite(self, existing: list[Path]) -> bool:
        """Ask before replacing files (tests replace this method)."""
        names = "\n".join(str(p) for p in existing)
        answer = QMessageBox.question(
            self.native, "Overwrite?", f"These files exist and would be replaced:\n{names}"
        )
        return answer == QMessageBox.StandardButton.Yes

    def export(self) -> None:
        """Check the inputs, ask before overwriting, and start the export job."""
        layer = self.labels_combo.value
        if layer is None or layer not in self.viewer.layers:
            show_warning("Choose a labels layer to export.")
            return
        labels_path, csv_path = self.targets()
        summary_path = None if csv_path is None else summary_path_for(csv_path)
        if labels_path is None and csv_path is None:
            show_warning("Tick 'write labels' or 'write measurements'.")
            return
        folder = Path(self.folder.value)
        if not folder.is_dir():
            show_warning(f"The folder {folder} does not exist; choose another one.")
            return
        if self.format.value == "PNG" and layer.data.ndim != 2 and labels_path is not None:
            show_warning("PNG holds 2D labels only; choose TIFF or OME-Zarr for a stack.")
            return
        outputs = [
            Output(path, flag, csv_header=is_measurements_header)
            for path, flag in (
                (labels_path, "The labels file"),
                (csv_path, "The table"),
                (summary_path, "The summary"),
            )
            if path is not None
        ]
        try:
            # Files we did not write, and the layers' own files, are never replaced.
            check_outputs(
                outputs, _source_files(self.viewer), overwrite=True, permission="your confirmation"
            )
        except FileExistsError as error:
            show_warning(str(error))
            return
        existing = [o.path for o in outputs if o.path.exists()]
        if existing and not self.confirm_overwrite(existing):
            show_info("Export cancelled; nothing was overwritten.")
            return
        intensity = self._intensity_for(layer)
        voxel = self.show_voxel_size()
        physical = voxel.size_um if voxel is not None else None
        if physical is None and voxel is not None:
            show_warning(voxel.note)  # the table and summary will be in pixels
        # A snapshot, so painting during the export cannot tear the written file.
        labels = np.array(layer.data, copy=True)
        job = export_job(
            labels,
            labels_path,
            scale=physical,
            csv_path=csv_path,
            summary_path=summary_path,
            intensity=intensity,
        )
        self.runner.start(job, self._on_done)

    def _intensity_for(self, layer: Labels) -> np.ndarray | None:
        image = self.image_combo.value
        if image is None or image not in self.viewer.layers:
            return None
        data = np.asarray(image.data)
        spatial = data.shape[:-1] if image.rgb else data.shape
        if spatial != layer.data.shape:
            show_warning(
                f"The image {image.name!r} {spatial} and the labels {layer.data.shape} differ in "
                "shape; measuring without intensities."
            )
            return None
        return data

    def _on_done(self, result: ExportResult) -> None:
        self.last_result = result
        self._folder_chosen = True
        remember(FOLDER_KEY, str(Path(self.folder.value).resolve()))
        parts = [f"{k.replace('_', ' ')}: {v:.4g}" for k, v in result.summary.items()]
        self.summary.value = "; ".join(parts)
        written = ", ".join(p.name for p in result.files)
        show_info(f"Exported {written}." if written else "Measured; nothing written.")


def layer_source_file(viewer: napari.Viewer, layer: Labels | None) -> Path | None:
    """The file a labels layer, or the image it was segmented from, was opened from.

    The layer's own source; else the ``image_path`` the Segment widget records;
    else the file of the image layer whose name starts the labels layer's name
    (``"<image> <model> labels"``). None when there is none.
    """
    if layer is None:
        return None
    if layer.source.path:
        return Path(layer.source.path)
    if layer.metadata.get("image_path"):
        return Path(layer.metadata["image_path"])
    images = [
        other
        for other in viewer.layers
        if isinstance(other, Image) and other.source.path and layer.name.startswith(other.name)
    ]
    if images:
        best = max(images, key=lambda image: len(image.name))  # the most specific name
        return Path(best.source.path)
    return None


def _source_files(viewer: napari.Viewer) -> list[Path]:
    """The files the viewer's layers were opened from: never an export target."""
    return [Path(layer.source.path) for layer in viewer.layers if layer.source.path]
