"""The five dock widgets fit a 1366x768 screen: each scrolls in its dock, the canvas keeps room."""

from __future__ import annotations

import pytest

from napari_microseg._widgets._dock import PREFERRED_DOCK_WIDTH, DockScroll
from napari_microseg._widgets.segment import SegmentWidget

WIDGETS = ("Segment", "Post-process", "Fine-tune", "Correct", "Export")


@pytest.mark.slow
def test_all_widgets_docked_fit_a_1366x768_screen(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1366, 768)
    for name in WIDGETS:
        viewer.window.add_plugin_dock_widget("napari-microseg", name)
    qtbot.wait(200)
    assert window.width() <= 1366 and window.height() <= 768
    canvas = viewer.window._qt_viewer.canvas.native
    assert canvas.width() >= window.width() / 2


def test_napari_docks_a_scroll_area_around_the_content(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    assert isinstance(widget.native, DockScroll)
    assert widget.native.widget() is widget.content
    assert widget.native.sizeHint().width() <= PREFERRED_DOCK_WIDTH
    assert widget.content.layout() is not None  # rows still go into the container's layout
