"""Make the README screenshots: napari with the sample data, results and our widgets docked.

Run under a display: ``xvfb-run -a python scripts/make_screenshots.py``.
Writes PNGs to docs/images/.
"""

from __future__ import annotations

import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def main() -> None:
    from napari.qt import get_qapp

    from napari_microseg.core.classical import segment_dark_objects
    from napari_microseg.demo_gui import open_demo_viewer

    OUT.mkdir(parents=True, exist_ok=True)
    viewer = open_demo_viewer(show=True)
    image = viewer.layers["fibsem_mitochondria"]
    labels = segment_dark_objects(image.data)
    viewer.add_labels(labels, name="classical labels", scale=image.scale, opacity=0.5)
    viewer.dims.set_point(0, image.data.shape[0] // 2 * image.scale[0])
    viewer.window._qt_window.resize(1400, 860)
    get_qapp().processEvents()
    viewer.screenshot(str(OUT / "demo.png"), canvas_only=False)
    print(OUT / "demo.png")
    viewer.close()


if __name__ == "__main__":
    sys.exit(main())
