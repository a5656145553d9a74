"""The whole point-and-click workflow on the sample data: segment, post-process, correct, export."""

from __future__ import annotations

import numpy as np

from napari_microseg._widgets.correct import CorrectWidget
from napari_microseg._widgets.export import ExportWidget
from napari_microseg._widgets.postprocess import PostprocessWidget
from napari_microseg._widgets.segment import SegmentWidget
from napari_microseg.core.io.images import imread


def wait(widget, qtbot, timeout=120000):
    qtbot.waitUntil(lambda: widget.runner.worker is None, timeout=timeout)


def test_segment_postprocess_correct_export(
    make_napari_viewer, model_registry, qtbot, tmp_path, monkeypatch
):
    monkeypatch.setenv("NAPARI_MICROSEG_AUTOSAVE", str(tmp_path / "autosave"))
    viewer = make_napari_viewer()
    viewer.open_sample("napari-microseg", "fluorescence_nuclei")
    image = viewer.layers["fluorescence_nuclei"]
    segment, post = SegmentWidget(viewer), PostprocessWidget(viewer)
    correct, export = CorrectWidget(viewer), ExportWidget(viewer)
    for widget in (segment, post, correct, export):
        viewer.window.add_dock_widget(widget)

    # 1. Segment with the model's recommended post-processing.
    segment.image_combo.value = image
    segment.model_combo.value = "tiny-grey"
    segment.run()
    wait(segment, qtbot)
    prob = viewer.layers["fluorescence_nuclei tiny-grey probabilities"]
    segmented = viewer.layers["fluorescence_nuclei tiny-grey labels"]
    segmented_data = segmented.data.copy()

    # 2. Post-process the cached probabilities with watershed: no new inference; the result
    # is a new layer beside the Segment result, which stays as it was.
    post.prob_combo.value = prob
    post.method.value = "watershed"
    post.apply_to_all()
    wait(post, qtbot)
    labels = viewer.layers["fluorescence_nuclei tiny-grey labels [1]"]
    np.testing.assert_array_equal(segmented.data, segmented_data)
    watershed_count = len(np.unique(labels.data)) - 1
    assert watershed_count > 20

    # 3. Correct: merge two objects, split one, delete one; each can be undone.
    correct.labels_combo.value = labels
    ids = [int(i) for i in np.unique(labels.data) if i]
    correct.select(ids[0])
    correct.select(ids[1])
    correct.merge()
    correct.select(ids[2])
    correct.delete()
    biggest = int(np.argmax(np.bincount(labels.data.ravel())[1:]) + 1)
    ys, xs = np.nonzero(labels.data == biggest)
    order = np.argsort(xs)
    correct.select(biggest, (float(ys[order[0]]), float(xs[order[0]])))
    correct.select(biggest, (float(ys[order[-1]]), float(xs[order[-1]])))
    correct.split()
    assert len(np.unique(labels.data)) - 1 == watershed_count - 1

    # 4. Export labels and measurements, then read them back.
    export.labels_combo.value = labels
    export.image_combo.value = image
    export.folder.value = tmp_path
    export.export()
    wait(export, qtbot)
    labels_path, csv_path = export.targets()
    np.testing.assert_array_equal(imread(labels_path).data, labels.data)
    assert len(csv_path.read_text().splitlines()) == watershed_count  # header + objects
