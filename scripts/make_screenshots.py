"""Make the README screenshots from the bundled models on the real validation data.

Run under a display (about a minute on a 2-core CPU)::

    nice xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/make_screenshots.py

Writes PNGs to ``docs/images/``:

* ``widget_segment.png``, ``widget_postprocess.png``, ``widget_correct.png``,
  ``widget_finetune.png``, ``widget_export.png`` and ``demo.png``: each widget docked
  beside a Lucchi++ validation slice segmented with ``mito-em`` through the widgets, with
  their default settings.
* ``result_<model>.png`` for every bundled model: a held-out image of the model's own
  validation split (rebuilt with :mod:`napari_microseg.bundling.split`, exactly as the
  training run chose it), segmented by the Segment widget with its default settings, the
  ground truth drawn as yellow outlines. The caption is stored in the PNG (``Description``).

Then it rewrites the ``<!-- results -->`` blocks of README.md and docs/models.md from the
``result_*.png`` present. Models not bundled, or whose data folder is missing, are skipped
with a note. The data are read at run time only (``--data``, else ``$MICROSEG_DATA``, else
``../shared/data`` beside the checkout); only the PNGs are written.

``--only NAME[,NAME]`` makes just some: widget names (``segment``, ``postprocess``,
``correct``, ``finetune``, ``export``, ``demo``; ``widgets`` for all of them) or model names
(``results`` for all bundled models).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"
DOCS = {ROOT / "README.md": "docs/images/", ROOT / "docs" / "models.md": "images/"}
WIDGETS = ("segment", "postprocess", "correct", "finetune", "export", "demo")
WIDGET_MODEL = "mito-em"
#: Largest PNG written; bigger screenshots are palette-quantised, then downscaled.
MAX_BYTES = 400_000
WINDOW = (1600, 960)
DOCK_WIDTH = 440
CAPTION_KEY = "Description"
FAMILIES = {"unet": "U-Net", "segnet": "SegNet", "micronet": "Micro-Net", "maskrcnn": "Mask R-CNN"}


def default_data() -> Path:
    """``$MICROSEG_DATA``, else ``../shared/data`` beside the checkout."""
    return Path(os.environ.get("MICROSEG_DATA") or ROOT.parent / "shared" / "data")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="folder holding lucchi/, isbi2012/, dsb2018/, glas/ (default: $MICROSEG_DATA, "
        "else ../shared/data beside the checkout)",
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated screenshots to make: widget names (segment, postprocess, correct, "
        "finetune, export, demo, or 'widgets'), model names (or 'results'); default: all",
    )
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the PNGs")
    parser.add_argument(
        "--no-docs",
        action="store_true",
        help="do not rewrite the <!-- results --> blocks of README.md and docs/models.md",
    )
    return parser


def wanted(only: str, bundled: list[str]) -> tuple[list[str], list[str]]:
    """The widget shots and the models to make, from ``--only``."""
    names = [n.strip() for n in only.split(",") if n.strip()]
    if not names:
        return list(WIDGETS), list(bundled)
    widgets: list[str] = []
    models: list[str] = []
    for name in names:
        if name == "widgets":
            widgets += WIDGETS
        elif name == "results":
            models += bundled
        elif name in WIDGETS:
            widgets.append(name)
        elif name.removeprefix("result_") in bundled:
            models.append(name.removeprefix("result_"))
        else:
            print(f"note: {name!r} is neither a widget ({', '.join(WIDGETS)}) nor a bundled "
                  f"model ({', '.join(bundled) or 'none'}); skipped.")  # fmt: skip
    return list(dict.fromkeys(widgets)), list(dict.fromkeys(models))


# ----------------------------------------------------------------------------- data


@dataclass
class Shown:
    """One held-out image of a model's validation split, ready for napari."""

    model: str
    name: str
    image: np.ndarray
    rgb: bool
    truth: np.ndarray
    scale: tuple[float, float]
    caption: str


def bundled_models() -> dict[str, Any]:
    """Usable bundled model entries by name, in the documentation's order."""
    from napari_microseg.core.models.bundled import BUNDLED
    from napari_microseg.core.models.registry import bundled_entries

    entries = {}
    for entry in bundled_entries():
        if entry.usable:
            entries[entry.name] = entry
        else:
            print(f"note: bundled model {entry.name} is not usable ({entry.problem}); skipped.")
    order = [n for n in BUNDLED if n in entries] + sorted(set(entries) - set(BUNDLED))
    for name in BUNDLED:
        if name not in entries:
            print(f"note: {name} is not bundled (yet); no result_{name}.png.")
    return {name: entries[name] for name in order}


#: Objects smaller than this (median, pixels) are hard to see in a screenshot.
VISIBLE_OBJECT_PIXELS = 200


def _object_sizes(truth: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    sizes = np.bincount((truth if truth.max() > 1 else ndimage.label(truth > 0)[0]).ravel())
    return sizes[1:][sizes[1:] > 0]


def _pick(items: list[Any]) -> Any:
    """The validation item to show: up to 1024 x 1024 pixels, the most objects whose median
    size is at least :data:`VISIBLE_OBJECT_PIXELS` (a field of tiny nuclei shows little)."""
    small = [i for i in items if i.truth.shape[-2] * i.truth.shape[-1] <= 1024 * 1024] or items
    sizes = [_object_sizes(i.truth) for i in small]
    visible = [bool(s.size) and np.median(s) >= VISIBLE_OBJECT_PIXELS for s in sizes]
    counts = [s.size if seen or not any(visible) else -1 for s, seen in zip(sizes, visible)]
    return small[int(np.argmax(counts))]


def validation_view(name: str, data: Path) -> Shown | None:
    """A held-out image of ``name``'s validation split, or None (with a note) when unavailable."""
    from napari_microseg.bundling.split import BundleError, validation_split
    from napari_microseg.core.models.registry import load_model

    model = load_model(name, device="cpu")
    card = model.card
    dataset = card.lineage.get("dataset") or {}
    folder = data / str(dataset.get("folder", ""))
    if not dataset.get("folder") or not folder.is_dir():
        print(f"note: no data folder {folder} for {name}; result_{name}.png skipped.")
        return None
    try:
        split = validation_split(model, folder, config={"data": dataset.get("read_as") or {}})
    except (BundleError, OSError, ValueError) as error:
        print(f"note: cannot rebuild the validation split of {name} from {folder}: {error}")
        return None
    item = _pick(split.items)
    image, truth, axes, label = item.image, item.truth, item.axes, item.name
    own = "own validation part" in split.description
    if "Z" in axes:  # a validation volume: its middle plane
        depth = image.shape[axes.index("Z")]
        z = depth // 2
        image, truth = np.take(image, z, axis=axes.index("Z")), truth[z]
        axes, label = axes.replace("Z", ""), f"{item.name} z={z}"
        where = f"slice {z} of the {depth}-slice validation volume"
    else:
        count = len(split.items)
        where = f"'{item.name}', 1 of {count} {'validation' if own else 'held-out'} images"
    rgb = axes.endswith("C") and image.shape[-1] in (3, 4)
    if axes.endswith("C") and not rgb:
        image = image[..., 0]
    pixel = split.pixel_size_um or card.pixel_size_um
    scale = (float(pixel), float(pixel)) if pixel else (1.0, 1.0)
    target = card.metrics.get("target") or {}
    verdict = "met" if target.get("met") else "not met"
    value = float(target.get("value", "nan"))
    family = FAMILIES.get(card.architecture, card.architecture)
    caption = (
        f"**{name}** ({family}) · {dataset.get('description', split.kind)} · {where} · "
        f"{target.get('label', 'metric')} {value:.3f} on the whole validation split "
        f"(target {target.get('minimum')}: {verdict})"
    )
    return Shown(name, label.replace("_", " "), image, rgb, truth, scale, caption)


# ----------------------------------------------------------------------------- PNGs


def save_png(array: np.ndarray, path: Path, caption: str = "") -> None:
    """Write a screenshot, at most :data:`MAX_BYTES` (palette, then smaller), with its caption."""
    import io

    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from napari_microseg.core.io.atomic import atomic_path

    info = PngInfo()
    if caption:
        info.add_text(CAPTION_KEY, caption)
    image = Image.fromarray(np.ascontiguousarray(array[..., :3]))

    def encode(picture: Image.Image) -> bytes:
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG", optimize=True, pnginfo=info)
        return buffer.getvalue()

    blob = encode(image)
    if len(blob) > MAX_BYTES:
        image = image.quantize(
            colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
        blob = encode(image)
    while len(blob) > MAX_BYTES and image.width > 600:
        image = image.convert("RGB")
        image = image.resize(
            (image.width * 4 // 5, image.height * 4 // 5), Image.Resampling.LANCZOS
        )
        image = image.quantize(
            colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
        blob = encode(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(blob)
    print(f"{path} ({len(blob) // 1000} kB, {image.width}x{image.height})")


def read_caption(path: Path) -> str:
    from PIL import Image

    with Image.open(path) as image:
        return str(image.info.get(CAPTION_KEY, ""))


def results_markdown(prefix: str, names: list[str], folder: Path) -> str:
    """The ``<!-- results -->`` block: one captioned image per bundled model's result PNG."""
    parts = []
    for name in names:
        path = folder / f"result_{name}.png"
        if not path.is_file():
            continue
        caption = read_caption(path) or name
        parts.append(f"{caption}\n\n![{name} on its validation data]({prefix}{path.name})")
    if not parts:
        parts.append("*No result screenshots yet: run `scripts/make_screenshots.py`.*")
    return "<!-- results -->\n" + "\n\n".join(parts) + "\n<!-- /results -->"


def update_docs(names: list[str], folder: Path) -> None:
    """Rewrite the ``<!-- results -->`` block of README.md and docs/models.md."""
    block = re.compile(r"<!-- results -->\n.*?<!-- /results -->", re.S)
    for path, prefix in DOCS.items():
        text = path.read_text(encoding="utf-8")
        match = block.search(text)
        if match is None:
            print(f"note: {path} has no <!-- results --> block; not updated.")
            continue
        markdown = results_markdown(prefix, names, folder)
        new = text[: match.start()] + markdown + text[match.end() :]
        if new != text:
            path.write_text(new, encoding="utf-8")
            print(f"updated {path}")


# ----------------------------------------------------------------------------- napari


class Session:
    """One napari window, driven like a user would, and its screenshots."""

    def __init__(self, out: Path) -> None:
        import napari
        import napari._qt.qt_main_window as qt_main_window
        from napari.qt import get_qapp

        # The "PyQt5 backend is deprecated" toast must not be in the screenshots.
        qt_main_window.SHOW_QT_WARNING = False
        self.out = out
        self.viewer = napari.Viewer(title="napari-microseg")
        self.viewer.window._qt_window.resize(*WINDOW)
        self.app = get_qapp()
        self.docks: dict[str, Any] = {}

    def settle(self, seconds: float = 0.5) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            self.app.processEvents()
            time.sleep(0.02)

    def close_notifications(self) -> None:
        from napari._qt.dialogs.qt_notification import NapariQtNotification

        for toast in list(NapariQtNotification._instances):
            toast.close()
        self.settle(0.3)

    def shot(self, file_name: str, caption: str = "") -> None:
        self.close_notifications()
        self.viewer.reset_view()
        self.settle()
        save_png(self.viewer.screenshot(canvas_only=False), self.out / file_name, caption)

    def dock(self, name: str, widget: Any) -> Any:
        """Dock ``widget`` on the right, :data:`DOCK_WIDTH` wide (long texts wrap)."""
        from qtpy.QtCore import Qt
        from qtpy.QtWidgets import QLabel

        self.undock()
        dock = self.viewer.window.add_dock_widget(widget, name=name, area="right")
        for label in dock.findChildren(QLabel):
            label.setWordWrap(True)
        window = self.viewer.window._qt_window
        window.resize(*WINDOW)
        window.resizeDocks([dock], [DOCK_WIDTH], Qt.Orientation.Horizontal)
        self.docks[name] = dock
        return widget

    def undock(self) -> None:
        for dock in self.docks.values():
            self.viewer.window.remove_dock_widget(dock)
        self.docks = {}

    def clear(self) -> None:
        self.undock()
        self.viewer.layers.clear()
        self.settle(0.2)

    def segment(self, layer: Any, model: str) -> tuple[Any | None, Any]:
        """Run the Segment widget as a user would (pick the image and model, press Run)."""
        from napari_microseg._widgets.segment import SegmentWidget

        widget = self.dock("Segment", SegmentWidget(self.viewer))
        widget.reset_choices()
        widget.image_combo.value = layer
        widget.model_combo.value = model
        self.settle(0.2)
        started = time.perf_counter()
        widget.run()
        while widget.runner.running:
            self.settle(0.2)
            if time.perf_counter() - started > 600:
                raise SystemExit(f"Segmenting {layer.name} with {model} took over 10 minutes.")
        self.settle(0.3)
        base = f"{layer.name} {model}"
        if f"{base} labels" not in self.viewer.layers:
            raise SystemExit(
                f"The Segment widget gave no labels for {layer.name} ({widget.status.value})."
            )
        prob = (
            self.viewer.layers[f"{base} probabilities"]
            if f"{base} probabilities" in self.viewer.layers
            else None
        )  # instance models (Mask R-CNN) give labels only
        if prob is not None:
            prob.visible = False
        print(f"{model} on {layer.name}: {widget.status.value} "
              f"({time.perf_counter() - started:.0f} s)")  # fmt: skip
        return prob, self.viewer.layers[f"{base} labels"]

    def add_view(self, shown: Shown, *, truth: bool) -> Any:
        layer = self.viewer.add_image(
            shown.image, name=shown.name, rgb=shown.rgb, scale=shown.scale
        )
        if truth:
            from napari.utils.colormaps import DirectLabelColormap

            outline = self.viewer.add_labels(
                shown.truth.astype(np.int32),
                name="ground truth",
                scale=shown.scale,
                colormap=DirectLabelColormap(color_dict={None: "yellow", 0: "transparent"}),
                opacity=0.9,
            )
            outline.contour = 2
        return layer

    # ------------------------------------------------------------------------- shots

    def widget_shots(self, shown: Shown, which: list[str]) -> None:
        """Each widget docked beside the Lucchi slice segmented by ``mito-em``."""
        from napari_microseg._widgets.correct import CorrectWidget
        from napari_microseg._widgets.export import ExportWidget
        from napari_microseg._widgets.finetune import FinetuneWidget
        from napari_microseg._widgets.postprocess import PostprocessWidget

        self.clear()
        image = self.add_view(shown, truth=False)
        prob, labels = self.segment(image, shown.model)
        if "segment" in which:
            self.shot("widget_segment.png")
        if "postprocess" in which and prob is not None:
            post = self.dock("Post-process", PostprocessWidget(self.viewer))
            post.prob_combo.value = prob  # the model's recommended pipeline, previewed
            self.settle()
            self.shot("widget_postprocess.png")
            self.undock()
            preview = f"{prob.name} preview"
            if preview in self.viewer.layers:
                self.viewer.layers.remove(preview)
        self.viewer.layers.selection.active = labels
        if "correct" in which:
            correct = self.dock("Correct", CorrectWidget(self.viewer))
            correct.labels_combo.value = labels
            self.settle()
            self.shot("widget_correct.png")
        if "finetune" in which:
            finetune = self.dock("Fine-tune", FinetuneWidget(self.viewer))
            finetune.image_combo.value = image
            finetune.labels_combo.value = labels
            finetune.model_combo.value = shown.model
            self.settle()
            self.shot("widget_finetune.png")
        if "export" in which:
            export = self.dock("Export", ExportWidget(self.viewer))
            export.labels_combo.value = labels
            export.image_combo.value = image
            self.settle()
            self.shot("widget_export.png")
        if "demo" in which:  # the README's overview: the Correct dock beside the model's labels
            final = self.dock("Correct", CorrectWidget(self.viewer))
            final.labels_combo.value = labels
            self.settle()
            self.shot("demo.png")

    def result_shot(self, shown: Shown) -> None:
        """The model's validation image, labels from the Segment widget, outlines of the truth."""
        self.clear()
        image = self.add_view(shown, truth=True)
        _, labels = self.segment(image, shown.model)
        # The ground-truth outlines on top of the model's labels.
        self.viewer.layers.move(self.viewer.layers.index("ground truth"), len(self.viewer.layers))
        self.viewer.layers.selection.active = labels
        self.shot(f"result_{shown.model}.png", shown.caption)

    def close(self) -> None:
        self.undock()
        self.viewer.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    data = (args.data or default_data()).resolve()
    if not data.is_dir():
        print(f"note: no data folder {data}; give --data or set MICROSEG_DATA.")
    entries = bundled_models()
    widget_shots, models = wanted(args.only, list(entries))
    views: dict[str, Shown] = {}
    for name in dict.fromkeys([*models, *([WIDGET_MODEL] if widget_shots else [])]):
        if name not in entries:
            print(f"note: {name} is not bundled; skipped.")
            continue
        shown = validation_view(name, data)
        if shown is not None:
            views[name] = shown
    started = time.perf_counter()
    if not views:
        print("note: nothing to make (no bundled model with its data).")
        return 0
    session = Session(args.out)
    try:
        if widget_shots:
            if WIDGET_MODEL in views:
                session.widget_shots(views[WIDGET_MODEL], widget_shots)
            else:
                print(f"note: widget screenshots need {WIDGET_MODEL} and its data; skipped.")
        for name in models:
            if name in views:
                session.result_shot(views[name])
    finally:
        session.close()
    print(f"screenshots done in {time.perf_counter() - started:.0f} s")
    if not args.no_docs:
        update_docs(list(entries), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
