"""Correct widget: merge, split, delete, clean up and navigate labels, with undo and autosave.

napari's own Labels tools do the painting; this dock adds the object-level
operations. Shift+click on the labels layer picks the object under the
cursor (and remembers the click as a split seed). Every operation is one
``Labels.data_setitem`` call, so napari's undo (Ctrl+Z) reverts it. The
layer is autosaved in the background after every operation and on a timer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Label,
    PushButton,
    SpinBox,
    create_widget,
)
from napari.layers import Image, Labels
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import QTimer

from ..core.io.autosave import list_autosaves, write_autosave
from ..core.io.images import imread
from ..core.postprocess import corrections as ops
from ._dock import DockedContainer

if TYPE_CHECKING:
    import napari

LOG = logging.getLogger(__name__)

#: (key, button text, method name) -- the shortcuts are listed in the widget.
SHORTCUTS = [
    ("Shift-M", "Merge selected", "merge"),
    ("Shift-S", "Split at seeds", "split"),
    ("Shift-D", "Delete selected", "delete"),
    ("Shift-H", "Fill holes", "fill_holes"),
    ("Shift-R", "Relabel 1..N", "relabel"),
    ("Shift-N", "Next object", "next_object"),
    ("Shift-B", "Previous object", "previous_object"),
]
AUTOSAVE_INTERVAL_S = 60


class CorrectWidget(DockedContainer):
    """Dock widget with object-level label corrections."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.labels_combo: ComboBox = create_widget(annotation=Labels, label="labels")
        self.image_combo: ComboBox = create_widget(
            annotation=Image | None, label="image (for split)", options={"nullable": True}
        )
        self.count_label = Label(value="objects: -", label="count")
        self.selection_label = Label(value="none (Shift+click objects)", label="selected")
        self.min_size = SpinBox(value=50, min=1, max=10**9, label="min size (px)")
        self.remove_small_button = PushButton(text="Delete objects under min size")
        self.clear_button = PushButton(text="Clear selection")
        self.restore_button = PushButton(text="Restore last autosave")
        self.selected_ids: list[int] = []
        self.seeds: list[tuple[float, ...]] = []
        self._current_object = 0
        self._dirty = False
        self._bound_layer: Labels | None = None
        self._selection_layer: Labels | None = None
        self._view: tuple[tuple[int, ...], int] | None = None  # the slice last refreshed
        self.buttons: dict[str, PushButton] = {}
        self.extend([self.labels_combo, self.image_combo, self.count_label, self.selection_label])
        for key, text, method in SHORTCUTS:
            button = PushButton(text=f"{text}  [{key.replace('-', '+')}]")
            button.changed.connect(getattr(self, method))
            self.buttons[method] = button
            self.append(button)
        self.extend([self.min_size, self.remove_small_button, self.clear_button])
        self.append(self.restore_button)
        self.remove_small_button.changed.connect(self.remove_small)
        self.clear_button.changed.connect(self.clear_selection)
        self.restore_button.changed.connect(self.restore_autosave)
        self.labels_combo.changed.connect(self._bind_layer)
        # Parented to the dock widget so Qt stops and frees it with the widget.
        self._timer = QTimer(self.native)
        self._timer.setInterval(AUTOSAVE_INTERVAL_S * 1000)
        self._timer.timeout.connect(self._autosave_if_dirty)
        self._timer.start()
        self._bind_layer(self.labels_combo.value)
        self.restore_button.enabled = bool(list_autosaves())
        self.wrap_for_dock()

    # ----------------------------------------------------------------- layer wiring
    @property
    def layer(self) -> Labels | None:
        layer = self.labels_combo.value
        return layer if layer is not None and layer in self.viewer.layers else None

    def _bind_layer(self, layer: Labels | None) -> None:
        old = self._bound_layer
        if old is not None:
            if self._on_click in old.mouse_drag_callbacks:
                old.mouse_drag_callbacks.remove(self._on_click)
            old.events.labels_update.disconnect(self._on_edit)
            old.events.data.disconnect(self._on_edit)
            old.events.set_data.disconnect(self._on_refresh)
        self._bound_layer = layer
        self.clear_selection()
        if layer is None:
            self.count_label.value = "objects: -"
            return
        layer.mouse_drag_callbacks.append(self._on_click)
        layer.events.labels_update.connect(self._on_edit)
        layer.events.data.connect(self._on_edit)
        layer.events.set_data.connect(self._on_refresh)
        self._view = self._view_key()
        for key, _, method in SHORTCUTS:
            layer.bind_key(key, _key_action(getattr(self, method)), overwrite=True)
        self._update_count()

    def _on_edit(self, event: Any = None) -> None:
        self._dirty = True
        self._update_count()

    def _view_key(self) -> tuple[tuple[int, ...], int]:
        return tuple(self.viewer.dims.current_step), self.viewer.dims.ndisplay

    def _on_refresh(self, event: Any = None) -> None:
        # napari's undo and redo (Ctrl+Z, Ctrl+Shift+Z) only refresh the layer, as moving to
        # another slice does: a refresh of the same view is taken as one, so the count and the
        # autosave follow an undo (restoring the autosave never brings an undone edit back).
        view = self._view_key()
        if view == self._view:
            self._on_edit()
        self._view = view

    def _update_count(self) -> None:
        layer = self.layer
        self.count_label.value = (
            "objects: -" if layer is None else f"objects: {ops.count_objects(layer.data)}"
        )

    def _on_click(self, layer: Labels, event: Any) -> None:
        if "Shift" not in event.modifiers:
            return
        position = layer.world_to_data(event.position)
        index = tuple(round(p) for p in position)
        if any(i < 0 or i >= s for i, s in zip(index, layer.data.shape)):
            return
        label_id = int(layer.data[index])
        if label_id == 0:
            return
        self.select(label_id, tuple(float(p) for p in position))

    def select(self, label_id: int, seed: tuple[float, ...] | None = None) -> None:
        """Add an object to the selection (and a seed for split)."""
        if label_id not in self.selected_ids:
            self.selected_ids.append(label_id)
        if seed is not None:
            self.seeds.append(seed)
        self.selection_label.value = (
            f"{', '.join(map(str, self.selected_ids))} ({len(self.seeds)} seeds)"
        )
        self._show_selection()

    def clear_selection(self) -> None:
        self.selected_ids, self.seeds = [], []
        self.selection_label.value = "none (Shift+click objects)"
        self._show_selection()

    def _show_selection(self) -> None:
        """Outline the selected objects on the canvas in a layer of their own.

        The labels layer itself is left as it is (its colours, its undo history); the
        outline layer goes away when the selection is cleared.
        """
        layer, overlay = self.layer, self._selection_layer
        if overlay is not None and (layer is None or not self.selected_ids):
            if overlay in self.viewer.layers:
                self.viewer.layers.remove(overlay)
            self._selection_layer = None
            return
        if layer is None or not self.selected_ids:
            return
        outline = np.isin(np.asarray(layer.data), self.selected_ids).astype(np.uint8)
        if overlay is not None and overlay in self.viewer.layers:
            overlay.data = outline
            return
        self._selection_layer = self.viewer.add_labels(
            outline,
            name=f"{layer.name} selection",
            scale=layer.scale,
            translate=layer.translate,
            opacity=1.0,
        )
        self._selection_layer.contour = 2
        self._selection_layer.editable = False
        # Adding a layer makes it active; Shift+click and painting act on the labels layer.
        self.viewer.layers.selection.active = layer

    # ------------------------------------------------------------------ operations
    def _apply(self, edit: ops.LabelEdit) -> None:
        layer = self.layer
        if layer is None:
            show_warning("Choose a labels layer first.")
            return
        if edit.n_pixels == 0:
            show_info(f"Nothing to change: {edit.description}.")
            return
        # One data_setitem call = one step in napari's undo history.
        layer.data_setitem(edit.indices, edit.values)
        LOG.info("%s: %s", layer.name, edit.description)
        self.clear_selection()
        self._on_edit()
        self.autosave()

    def _ids_or_current(self) -> list[int]:
        layer = self.layer
        if self.selected_ids:
            return list(self.selected_ids)
        return [int(layer.selected_label)] if layer is not None else []

    def merge(self) -> None:
        if len(self.selected_ids) < 2:
            show_warning("Shift+click at least two objects to merge.")
            return
        self._apply(ops.merge_labels(self.layer.data, self.selected_ids))

    def split(self) -> None:
        layer = self.layer
        if layer is None or not self.selected_ids or len(self.seeds) < 2:
            show_warning("Shift+click one object at two or more places to split it.")
            return
        image = self.image_combo.value
        intensity = None
        if image is not None and not image.rgb and image.data.shape == layer.data.shape:
            intensity = np.asarray(image.data)
        try:
            edit = ops.split_label(
                layer.data, self.selected_ids[0], np.array(self.seeds), intensity=intensity
            )
        except ValueError as error:
            show_warning(str(error))
            return
        self._apply(edit)

    def delete(self) -> None:
        ids = [i for i in self._ids_or_current() if i != 0]
        if not ids or self.layer is None:
            show_warning("Shift+click the objects to delete.")
            return
        self._apply(ops.delete_labels(self.layer.data, ids))

    def fill_holes(self) -> None:
        if self.layer is not None:
            self._apply(ops.fill_holes(self.layer.data, self.selected_ids or None))

    def relabel(self) -> None:
        if self.layer is not None:
            self._apply(ops.relabel_sequential(self.layer.data))

    def remove_small(self) -> None:
        if self.layer is not None:
            self._apply(ops.remove_small(self.layer.data, int(self.min_size.value)))

    def next_object(self) -> None:
        self._jump(+1)

    def previous_object(self) -> None:
        self._jump(-1)

    def _jump(self, step: int) -> None:
        layer = self.layer
        if layer is None:
            return
        found = ops.neighbour_object(layer.data, self._current_object, step)
        if found is None:
            show_info("This labels layer has no objects.")
            return
        self._current_object, centroid = found
        layer.selected_label = self._current_object
        world = layer.data_to_world(centroid)
        if layer.ndim > 2:
            self.viewer.dims.set_point(range(layer.ndim - 2), world[:-2])
        self.viewer.camera.center = world[-2:]

    # -------------------------------------------------------------------- autosave
    def autosave(self) -> None:
        """Write the layer's labels to the autosave folder in a background thread."""
        layer = self.layer
        if layer is None:
            return
        snapshot = np.array(layer.data, copy=True)
        scale = tuple(float(s) for s in layer.scale)
        worker = _write_autosave_worker(snapshot, layer.name, scale)
        worker.errored.connect(lambda e: show_warning(f"Autosave failed: {e}"))
        worker.start()
        self._dirty = False
        self.restore_button.enabled = True

    def _autosave_if_dirty(self) -> None:
        if self._dirty:
            self.autosave()

    def restore_autosave(self) -> None:
        saves = list_autosaves()
        if not saves:
            show_info("No autosave found.")
            return
        latest = saves[0]
        restored = imread(latest.path)
        self.viewer.add_labels(
            restored.data, name=f"{latest.layer_name} (restored)", scale=restored.layer_scale()
        )
        show_info(f"Restored {latest.describe()} as a new layer.")


@thread_worker
def _write_autosave_worker(labels: np.ndarray, name: str, scale: tuple[float, ...]) -> None:
    write_autosave(labels, name, scale=None if all(s == 1 for s in scale) else scale)


def _key_action(method: Any) -> Any:
    def action(layer: Labels) -> None:
        method()

    return action
