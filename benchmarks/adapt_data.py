"""The data of ``bench_adapt.py``: each bundled model's annotation pool and evaluation set,
and the simulated new sessions (shifts). See ``bench_adapt.py``'s docstring for the splits."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import numpy as np

MODELS = ("mito-em", "membrane-em", "nuclei-fluo", "gland-he")
SHIFTS = ("gamma", "blur_noise", "pixel_size", "illumination", "stain")

#: The ``pixel_size`` shift's zoom: images resampled to 60 %, pixels 1 / 0.6 times larger.
PIXEL_SIZE_ZOOM = 0.6


# ----------------------------------------------------------------------------- data


def card_names(model: str, pattern: str) -> list[str]:
    """Names of the held-out items listed in a bundled card's metrics."""
    from napari_microseg.core.models.checkpoint import read_card
    from napari_microseg.core.models.registry import find_model

    card = read_card(find_model(model).path)
    text = card.metrics.get("data", "")
    inside = text[text.rfind("(") + 1 : text.rfind(")")]
    return [name.strip() for name in inside.split(",") if re.fullmatch(pattern, name.strip())]


def first_four_pooled(images: np.ndarray, ids: np.ndarray, axes: str, what: str) -> dict[str, Any]:
    """The first four images are the annotation pool, the rest the evaluation set.

    ``separate``: the images are unrelated 2D images stacked for convenience, not the
    slices of one volume; one of them annotated alone is given as a user opens it, by
    itself (normalised on its own, as each evaluation image is).
    """
    return {
        "pool_images": images[:4],
        "pool_labels": ids[:4].astype(np.int32),
        "eval_images": images[4:],
        "eval_labels": ids[4:].astype(np.int32),
        "axes": axes,
        "what": what,
        "separate": True,
    }


def load_data(model: str, root: Path) -> dict[str, Any]:
    """Pool and evaluation stacks: ``(Z, Y, X[, C])`` images and ``(Z, Y, X)`` instance ids."""
    import tifffile
    from PIL import Image
    from skimage.measure import label

    if model == "mito-em":
        images = tifffile.imread(root / "lucchi" / "val_images.tif")
        masks = tifffile.imread(root / "lucchi" / "val_masks.tif") > 0
        ids = np.stack([label(m) for m in masks]).astype(np.int32)
        pool, evaluation = list(range(10)), [11, 15, 19]
        return {
            "pool_images": images[pool],
            "pool_labels": ids[pool],
            "eval_images": images[evaluation],
            "eval_labels": ids[evaluation],
            "axes": "ZYX",
            "what": "Lucchi val slices 0-9 (pool) / 11, 15, 19 (evaluation)",
        }
    if model == "membrane-em":
        images = tifffile.imread(root / "isbi2012" / "train_images.tif")
        cells = tifffile.imread(root / "isbi2012" / "train_labels.tif") > 0
        planes = [4, 8, 12, 15, 19]  # the planes its training held out
        ids = np.stack([label(c, connectivity=1) for c in cells[planes]]).astype(np.int32)
        half = images.shape[1] // 2
        return {
            "pool_images": images[planes, :half],
            "pool_labels": ids[:, :half],
            "eval_images": images[planes, half:],
            "eval_labels": ids[:, half:],
            "axes": "ZYX",
            "what": "ISBI 2012 planes 4, 8, 12, 15, 19: top halves (pool) / bottom halves",
        }
    if model == "nuclei-fluo":
        held = set(card_names(model, r"[0-9a-f]{64}"))
        with open(root / "dsb2018" / "index.csv") as handle:
            rows = [
                r["image_id"]
                for r in csv.DictReader(handle)
                if r["image_id"] in held
                and r["height"] == "256"
                and r["width"] == "256"
                and r["grayscale_rgb"] == "True"
            ]
        rows = sorted(rows)[:16]
        images = np.stack(
            [np.asarray(Image.open(root / "dsb2018" / "images" / f"{r}.png"))[..., 0] for r in rows]
        )
        ids = np.stack([tifffile.imread(root / "dsb2018" / "labels" / f"{r}.tif") for r in rows])
        what = f"DSB 2018 held-out grey 256x256: {len(rows)} images (4 pool, rest eval)"
        return first_four_pooled(images, ids, "ZYX", what)
    if model == "gland-he":
        held = card_names(model, r"train_\d+")
        chosen = []
        for name in held:
            image = np.asarray(Image.open(root / "glas" / "images" / f"{name}.png"))
            if image.shape[:2] == (522, 775):
                chosen.append((name, image))
        chosen = chosen[:12]
        images = np.stack([image for _, image in chosen])
        ids = np.stack([tifffile.imread(root / "glas" / "labels" / f"{n}.tif") for n, _ in chosen])
        what = f"GlaS held-out 522x775: {', '.join(n for n, _ in chosen)} (4 pool, rest eval)"
        return first_four_pooled(images, ids, "ZYXC", what)
    raise SystemExit(f"unknown model {model!r}; choose from {', '.join(MODELS)}")


# ----------------------------------------------------------------------------- shifts


def shift(kind: str, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A simulated new session: the images (and, for pixel size, labels) changed."""
    from scipy import ndimage as ndi

    x = images.astype(np.float32)
    colour = x.ndim == 4
    spatial = (0, 1, 1, 0) if colour else (0, 1, 1)
    h, w = x.shape[1:3]
    if kind == "gamma":
        x = 255.0 * (x / 255.0) ** 2.2 * 0.6 + 40.0
    elif kind == "blur_noise":
        x = ndi.gaussian_filter(x, [2.0 * s for s in spatial])
        x = x + np.random.default_rng(0).normal(0.0, 15.0, x.shape).astype(np.float32)
    elif kind == "illumination":
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        field = 0.45 + 0.9 * np.exp(-2.0 * (((yy - 0.2 * h) / h) ** 2 + ((xx - 0.8 * w) / w) ** 2))
        x = x * (field[..., None] if colour else field)
    elif kind == "pixel_size":
        factor = [PIXEL_SIZE_ZOOM if s else 1.0 for s in spatial]
        x = ndi.zoom(x, factor, order=1)
        labels = ndi.zoom(labels, factor[:3], order=0)
    elif kind == "stain":
        if not colour:
            raise ValueError("the stain shift needs RGB (H&E) images")
        from skimage.color import hed2rgb, rgb2hed

        hed = rgb2hed(np.clip(x / 255.0, 0, 1))
        hed[..., 0] *= 1.5
        hed[..., 1] *= 0.6
        x = hed2rgb(hed).astype(np.float32) * 255.0
    else:
        raise ValueError(f"unknown shift {kind!r}")
    return np.clip(np.round(x), 0, 255).astype(np.uint8), labels
