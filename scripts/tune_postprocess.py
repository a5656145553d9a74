"""Choose a trained model's post-processing on its training images, before bundling it.

The validation split training held out is rebuilt (and checked) as
``scripts/bundle_model.py`` rebuilds it; the images are drawn from the rest, so
the validation labels are never read. A run that held tuning images out of
training (the config's ``tune_fraction``) is scored on those instead: the
network is surer on images it learnt from, so settings that win there need not
win on new ones. Every combination of the ``--try``
values is scored with the metric the model's issue #8 target uses, and the
best is printed as the JSON to pass to ``bundle_model.py --postprocess``.

Examples
--------
::

    python scripts/tune_postprocess.py nuclei-maskrcnn --data ../shared/data/dsb2018 \\
        --try score_threshold=0.3,0.5,0.7,0.8 --try pixel_threshold=0.3,0.5 --images 60
    python scripts/tune_postprocess.py mito-em --data ../shared/data/lucchi --try tta=false,true
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def parse_try(text: str) -> tuple[str, list[Any]]:
    """``"key=v1,v2"`` -> ``("key", [v1, v2])``, the values read as JSON where they can be."""
    key, sep, values = text.partition("=")
    if not sep or not key.strip() or not values.strip():
        raise argparse.ArgumentTypeError(f"--try wants KEY=V1,V2,..., got {text!r}.")
    parsed: list[Any] = []
    for value in values.split(","):
        try:
            parsed.append(json.loads(value))
        except json.JSONDecodeError:
            parsed.append(value.strip())
    return key.strip(), parsed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tune_postprocess.py",
        description="Score a grid of post-processing settings on a trained model's training "
        "images (never its validation split) and print the best.",
    )
    parser.add_argument("name", help="trained model: user-folder name or weights file")
    parser.add_argument("--data", type=Path, required=True, help="the data set training used")
    parser.add_argument("--config", type=Path, help="training config (default: configs/*.yaml "
                        "whose name is the model's)")  # fmt: skip
    parser.add_argument("--limit", type=int, help="the --limit training ran with, if any")
    parser.add_argument(
        "--try",
        dest="grid",
        type=parse_try,
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="values to try for one post-processing option, or tta=false,true (repeatable)",
    )
    parser.add_argument("--images", type=int, default=60, help="training images to score on")
    parser.add_argument(
        "--training-images",
        action="store_true",
        help="score on training images even when the run held tuning images out",
    )
    parser.add_argument("--seed", type=int, default=0, help="which training images are drawn")
    parser.add_argument("--device", default="cpu", help="where the model runs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import yaml
    from bundle_model import find_config, find_source

    from napari_microseg.bundling.split import (
        BundleError,
        training_items,
        tuning_items,
        validation_split,
    )
    from napari_microseg.bundling.tuning import TTA_MIN_GAIN, tta_verdict, tune_postprocess
    from napari_microseg.core.models.bundled import TARGETS
    from napari_microseg.core.models.checkpoint import load_checkpoint
    from napari_microseg.core.progress import drain

    model = load_checkpoint(find_source(args.name), device="cpu")
    config_path = args.config or find_config(model.name, args.name)
    if config_path is None:
        raise SystemExit(f"No config names {model.name!r}; give --config.")
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    try:
        split = validation_split(model, args.data, config=config, limit=args.limit)
    except BundleError as error:
        raise SystemExit(f"tune_postprocess: {error}") from error
    if split.tuning_regions and not args.training_images:
        items, which = tuning_items(split), "tuning image(s), never trained on"
    else:
        items, which = training_items(split, args.images, seed=args.seed), "training image(s)"
    held_out = {item.name for item in split.items}
    if held_out & {item.name for item in items}:
        raise SystemExit("tune_postprocess: a drawn training image is in the validation split.")
    metric = TARGETS[split.kind].metric
    grid = dict(args.grid)
    print(f"{model.name}: {len(items)} {which}, {metric}, grid {grid}")
    try:
        rows = drain(
            tune_postprocess(
                model, items, grid, metric=metric, pixel_size_um=split.pixel_size_um,
                device=args.device,
            )
        )  # fmt: skip
    except ValueError as error:
        raise SystemExit(f"tune_postprocess: {error}") from error
    for row in rows:
        shown = ", ".join(f"{k} {row[k]}" for k in grid)
        print(f"{metric} {row[metric]:.4f}  {row['seconds']:7.1f} s  {shown}")
    best = rows[0]
    verdict = tta_verdict(rows, metric) if "tta" in grid else None
    if verdict is not None:
        print(
            f"\nTest-time augmentation: {metric} {verdict['gain']:+.4f} at {verdict['cost']:.1f}x "
            f"the time; {'worth it' if verdict['worth'] else 'not worth it'} (needs "
            f"+{TTA_MIN_GAIN}): bundle_model.py --tta {'on' if verdict['worth'] else 'off'}"
        )
        best = verdict["best"]
    print("\nBest, for bundle_model.py --postprocess:")
    print(json.dumps(best["postprocess"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
