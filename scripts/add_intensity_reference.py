"""Record the intensity reference and noise level of each bundled model's training data.

Models trained by napari-microseg record the quantiles 0-100 % of their
normalized training inputs (``normalization["reference"]``) so that images of
another session can be matched to them ("Adapt to this image", ``microseg
adapt``). The bundled models were trained before that; this script reads each
one's training data as its config does, normalizes it with the model's card
and writes the reference into the shipped card (``src/napari_microseg/models/
NAME.json``), atomically. The weights are not touched. It also records the
training inputs' noise level (``normalization["noise"]``), which tells a noisy
session to be smoothed (:mod:`napari_microseg.core.inference.denoise`);
``--only noise`` leaves an existing intensity reference as it is.

Examples
--------
::

    python scripts/add_intensity_reference.py --data ../shared/data
    python scripts/add_intensity_reference.py --data ../shared/data --models mito-em --limit 40
    python scripts/add_intensity_reference.py --data ../shared/data --only noise
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "src" / "napari_microseg" / "models"
#: Bundled model -> (training config, data folder under --data).
SOURCES = {
    "mito-em": ("mito-em.yaml", "lucchi"),
    "membrane-em": ("isbi-membrane.yaml", "isbi2012"),
    "membrane-em-segnet": ("membrane-em-segnet.yaml", "isbi2012"),
    "nuclei-fluo": ("dsb-nuclei.yaml", "dsb2018"),
    "nuclei-maskrcnn": ("dsb-maskrcnn.yaml", "dsb2018"),
    "gland-he": ("glas-unet.yaml", "glas"),
}


def reference_for(name: str, data_root: Path, limit: int | None) -> tuple[list[float], float]:
    """The intensity reference and noise level of bundled model ``name``'s training data."""
    import yaml

    from napari_microseg.bundling.split import load_training_data
    from napari_microseg.core.models.registry import load_model
    from napari_microseg.core.training.data import input_noise, input_reference, prepare

    config_name, folder = SOURCES[name]
    config = yaml.safe_load((ROOT / "configs" / config_name).read_text(encoding="utf-8"))
    model = load_model(name, device="cpu")
    dataset = load_training_data(data_root / folder, config=config, limit=limit)
    prepared = prepare(dataset.pairs, model)
    context = int(model.card.context_slices or 0)
    return input_reference(prepared.planes), input_noise(prepared.planes, context)


def write_reference(name: str, reference: list[float] | None, noise: float | None) -> Path:
    """Put ``reference`` and ``noise`` (None: leave as is) into the shipped card of ``name``."""
    from napari_microseg.core.io.atomic import atomic_path

    path = BUNDLED / f"{name}.json"
    card = json.loads(path.read_text(encoding="utf-8"))
    normalization = dict(card["normalization"])
    if reference is not None:
        normalization["reference"] = reference
    if noise is not None:
        normalization["noise"] = noise
    card["normalization"] = normalization
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the shared data folder")
    parser.add_argument("--models", default=",".join(SOURCES), help="comma-separated")
    parser.add_argument("--limit", type=int, default=40, help="images or slices read per set")
    parser.add_argument(
        "--only", choices=("reference", "noise"), help="write only this (default: both)"
    )
    args = parser.parse_args(argv)
    for name in [m for m in args.models.split(",") if m]:
        if name not in SOURCES:
            print(f"{name}: not a bundled model ({', '.join(SOURCES)})", file=sys.stderr)
            return 2
        reference, noise = reference_for(name, args.data, args.limit)
        path = write_reference(
            name,
            None if args.only == "noise" else reference,
            None if args.only == "reference" else noise,
        )
        print(
            f"{name}: quantiles 1/50/99 % = {reference[1]:.3f} / {reference[50]:.3f} / "
            f"{reference[99]:.3f}, noise {noise} -> {path.relative_to(ROOT)}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
