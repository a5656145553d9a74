"""Live-preview latency of the Post-process widget on a 1024x1024 slice (target < 300 ms).

Run under a display: ``xvfb-run -a python benchmarks/bench_preview.py``. It drives the real
widget in a napari viewer and times one slider change (pipeline on the slice + layer update),
for a setting of each method (objects found again) and for the minimum size (cleanup only).
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from scipy import ndimage as ndi


def main() -> None:
    import napari

    from napari_microseg._widgets.postprocess import PostprocessWidget

    rng = np.random.default_rng(0)
    prob = ndi.gaussian_filter(rng.random((8, 1024, 1024)).astype(np.float32), (0, 6, 6))
    prob = (prob - prob.min()) / np.ptp(prob)
    viewer = napari.Viewer(show=False)
    widget = PostprocessWidget(viewer)
    viewer.window.add_dock_widget(widget)
    viewer.add_image(prob, name="prob")
    widget.prob_combo.value = viewer.layers["prob"]
    rows = []
    # Per method: moving one of its own settings (objects found again) and moving the
    # minimum size (the widget re-runs only the cleanup on the cached objects).
    cases = (
        ("otsu", {}, "opening", (0.0, 1.0, 2.0, 1.0, 0.0, 1.0)),
        ("threshold", {"auto_threshold": False}, "threshold", (0.4, 0.45, 0.5, 0.55, 0.6, 0.5)),
        ("hysteresis", {"auto_threshold": False}, "high", (0.6, 0.65, 0.7, 0.75, 0.8, 0.7)),
        ("watershed", {}, "h", (1.0, 1.5, 2.0, 2.5, 3.0, 2.0)),
        # A new threshold changes the objects' extent: distance map and basins are new too.
        ("watershed", {"auto_threshold": False}, "threshold", (0.4, 0.45, 0.5, 0.55, 0.6, 0.5)),
    )
    for method, extra, setting, values in cases:
        widget.method.value = method
        for key, value in extra.items():
            getattr(widget, key).value = value
        widget.min_size.value = 0.0
        for name, control, moves in (
            (setting, getattr(widget, setting), values),
            ("min size", widget.min_size, (10.0, 20.0, 30.0, 40.0, 50.0, 60.0)),
        ):
            timings = []
            for value in moves:
                start = time.perf_counter()
                control.value = value
                timings.append(time.perf_counter() - start)
            rows.append((method, name, statistics.median(timings), max(timings)))
        widget.auto_threshold.value = True
        widget.opening.value = 0.0  # back to the default, so no case inherits an opening
    print("| method | slider moved | median ms | max ms |\n|---|---|---|---|")
    for method, name, median, worst in rows:
        print(f"| {method} | {name} | {median * 1e3:.0f} | {worst * 1e3:.0f} |")
    viewer.close()


if __name__ == "__main__":
    main()
