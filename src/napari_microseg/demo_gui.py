"""Open napari with the sample FIB-SEM stack loaded and every napari-microseg widget docked."""

from __future__ import annotations

import os
import sys
from typing import Any

PLUGIN_NAME = "napari-microseg"


class NoDisplayError(RuntimeError):
    """napari needs a display and none is available."""


def plugin_widget_names() -> list[str]:
    """Display names of the dock widgets contributed by our manifest."""
    from npe2 import PluginManager

    manager = PluginManager.instance()
    manifest = manager.get_manifest(PLUGIN_NAME)
    return [widget.display_name for widget in (manifest.contributions.widgets or [])]


def open_demo_viewer(*, run_event_loop: bool = False, show: bool = True) -> Any:
    """Create a viewer with the FIB-SEM sample and our widgets; optionally run napari.

    Returns
    -------
    napari.Viewer
        The viewer (already closed again if ``run_event_loop`` was True).
    """
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        raise NoDisplayError(
            "No display found, so napari cannot open a window. Run `microseg demo` without "
            "--gui for the headless demo, or start it under a display (e.g. `xvfb-run -a`)."
        )
    import napari

    viewer = napari.Viewer(title="napari-microseg demo", show=show)
    viewer.open_sample(PLUGIN_NAME, "fibsem_mitochondria")
    for name in plugin_widget_names():
        viewer.window.add_plugin_dock_widget(PLUGIN_NAME, name)
    if run_event_loop:
        napari.run()
    return viewer
