"""Make the README screenshots: each widget docked beside real results on the sample data.

Run under a display::

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/make_screenshots.py

Until bundled models exist, the script first trains a small U-Net on a synthetic FIB-SEM stack
generated with another seed than the sample shown (about two minutes on a 2-core CPU; kept in a
temporary model folder, never shipped), then segments the sample with it through the widgets.
Writes PNGs to docs/images/.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"
MODEL_NAME = "screenshot-mito-unet"


def train_model(folder: Path) -> None:
    """Train the screenshot model unless it is already in ``folder``."""
    from napari_microseg.core.models.build import create_model
    from napari_microseg.core.models.registry import list_models
    from napari_microseg.core.progress import drain
    from napari_microseg.core.synthetic import fibsem_mitochondria
    from napari_microseg.core.training import TrainSettings, train

    if any(e.name == MODEL_NAME for e in list_models()):
        return
    model = create_model(
        "unet",
        name=MODEL_NAME,
        in_channels=1,
        depth=3,
        base_width=16,
        modality="EM",
        description="Trained on synthetic FIB-SEM for the screenshots only.",
    )
    model.card.recommended["postprocess"] = {"method": "otsu", "fill_holes": True, "min_size": 60}
    training = fibsem_mitochondria(seed=7)
    settings = TrainSettings(
        steps=300, minutes=3.0, batch_size=4, patch_size=128, learning_rate=2e-3, val_every=50
    )
    drain(train(model, [(training.image, training.labels)], settings=settings, folder=folder))


def main() -> None:
    model_folder = Path(
        os.environ.setdefault(
            "NAPARI_MICROSEG_MODELS",
            str(Path(tempfile.gettempdir()) / "microseg-screenshot-models"),
        )
    )
    model_folder.mkdir(parents=True, exist_ok=True)
    train_model(model_folder)

    import napari
    from napari.qt import get_qapp

    from napari_microseg._widgets.correct import CorrectWidget
    from napari_microseg._widgets.export import ExportWidget
    from napari_microseg._widgets.finetune import FinetuneWidget
    from napari_microseg._widgets.postprocess import PostprocessWidget
    from napari_microseg._widgets.segment import SegmentWidget

    OUT.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-microseg")
    viewer.window._qt_window.resize(1500, 900)
    viewer.open_sample("napari-microseg", "fibsem_mitochondria")
    image = viewer.layers["fibsem_mitochondria"]
    viewer.dims.set_point(0, image.data.shape[0] // 2 * image.scale[0])
    app = get_qapp()

    def settle(seconds: float = 0.5) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.02)

    segment = SegmentWidget(viewer)
    viewer.window.add_dock_widget(segment, name="Segment", area="right")
    segment.image_combo.value = image
    segment.model_combo.value = MODEL_NAME
    segment.run()
    while segment.runner.running:
        settle(0.2)
    prob = viewer.layers[f"fibsem_mitochondria {MODEL_NAME} probabilities"]
    labels = viewer.layers[f"fibsem_mitochondria {MODEL_NAME} labels"]
    prob.visible = False
    settle()
    viewer.screenshot(str(OUT / "widget_segment.png"), canvas_only=False)
    print(OUT / "widget_segment.png")
    viewer.window.remove_dock_widget(viewer.window._dock_widgets["Segment"])

    post = PostprocessWidget(viewer)
    post_dock = viewer.window.add_dock_widget(post, name="Post-process", area="right")
    post.prob_combo.value = prob
    post.method.value = "watershed"
    settle()
    viewer.screenshot(str(OUT / "widget_postprocess.png"), canvas_only=False)
    print(OUT / "widget_postprocess.png")
    viewer.window.remove_dock_widget(post_dock)
    viewer.layers.remove(f"{prob.name} preview")

    correct = CorrectWidget(viewer)
    correct_dock = viewer.window.add_dock_widget(correct, name="Correct", area="right")
    correct.labels_combo.value = labels
    settle()
    viewer.screenshot(str(OUT / "widget_correct.png"), canvas_only=False)
    print(OUT / "widget_correct.png")

    finetune = FinetuneWidget(viewer)
    finetune_dock = viewer.window.add_dock_widget(finetune, name="Fine-tune", area="right")
    finetune.image_combo.value = image
    finetune.labels_combo.value = labels
    finetune.model_combo.value = MODEL_NAME
    settle()
    viewer.screenshot(str(OUT / "widget_finetune.png"), canvas_only=False)
    print(OUT / "widget_finetune.png")
    viewer.window.remove_dock_widget(finetune_dock)

    export = ExportWidget(viewer)
    export_dock = viewer.window.add_dock_widget(export, name="Export", area="right")
    export.labels_combo.value = labels
    export.image_combo.value = image
    settle()
    viewer.screenshot(str(OUT / "widget_export.png"), canvas_only=False)
    print(OUT / "widget_export.png")
    viewer.window.remove_dock_widget(export_dock)

    # The README's overview: the Correct dock beside the model's labels.
    viewer.window.remove_dock_widget(correct_dock)
    final = CorrectWidget(viewer)
    viewer.window.add_dock_widget(final, name="Correct", area="right")
    final.labels_combo.value = labels
    settle()
    viewer.screenshot(str(OUT / "demo.png"), canvas_only=False)
    print(OUT / "demo.png")
    viewer.close()


if __name__ == "__main__":
    sys.exit(main())
