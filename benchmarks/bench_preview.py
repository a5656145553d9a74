"""Live-preview latency of the Post-process widget on a 1024x1024 slice (target < 300 ms).

Run under a display: ``xvfb-run -a python benchmarks/bench_preview.py``. It drives the real
widget in a napari viewer and times one slider change (pipeline on the slice + layer update).
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
    for method, extra in (("otsu", {}), ("hysteresis", {}), ("watershed", {"h": 2.0})):
        widget.method.value = method
        for key, value in extra.items():
            getattr(widget, key).value = value
        timings = []
        for min_size in (10, 20, 30, 40, 50, 60):
            start = time.perf_counter()
            widget.min_size.value = min_size
            timings.append(time.perf_counter() - start)
        rows.append((method, statistics.median(timings), max(timings)))
    print("| method | median ms | max ms |\n|---|---|---|")
    for method, median, worst in rows:
        print(f"| {method} | {median * 1e3:.0f} | {worst * 1e3:.0f} |")
    viewer.close()


if __name__ == "__main__":
    main()
