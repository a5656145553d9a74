"""Domain shift and few-shot adaptation of the bundled models (issue #21), on the CPU.

Run from the repository root::

    python benchmarks/bench_adapt.py --data /work/shared/data --out /tmp/adapt/bench_adapt.json \\
        --models mito-em,membrane-em --shifts gamma,blur_noise,illumination --shots 1,2,4

For every bundled semantic model (mito-em, membrane-em, nuclei-fluo, gland-he)
the validation data it never trained on are split into an *annotation pool*
(what a user would correct) and an *evaluation* set (never used for training,
adaptation or model selection):

=============  ==========================================================================
model          pool / evaluation
=============  ==========================================================================
mito-em        Lucchi val slices 0-9 / slices 11, 15, 19 (768 x 1024 each)
membrane-em    ISBI 2012 held-out planes 4, 8, 12, 15, 19: top halves / bottom halves
nuclei-fluo    DSB 2018 held-out grey 256 x 256 images: the first 4 / the next 12
gland-he       GlaS held-out 522 x 775 images: the first 4 / the next 8
=============  ==========================================================================

A *shift* simulates a new session on both (``--shifts``): ``gamma`` (gamma 2.2,
contrast x 0.6, offset +40), ``blur_noise`` (Gaussian blur sigma 2 px, noise sd
15 grey levels), ``pixel_size`` (pixels 1/0.6 times larger: the image resampled
to 60 %), ``illumination`` (a smooth multiplicative field from 0.45 to 1.35),
``stain`` (H&E only: haematoxylin x 1.5, eosin x 0.6 in HED colour space).
Images are 8-bit again after the shift, as a microscope would write them.

Per model and shift it reports the foreground Dice (every class but the
background, argmax of the logits, pooled over the evaluation pixels, as the
fine-tune validation scores it) of:

* ``source``: the unshifted evaluation set;
* ``shifted``: the shifted one;
* ``adapted``: after label-free adaptation of the batch-norm statistics alone
  (:func:`~napari_microseg.core.training.adapt.adapt` with ``match_intensities=False``,
  statistics of the shifted pool images, no labels);
* ``matched``: the model with ``normalization["match"]``: each shifted image's histogram
  mapped onto the model's training reference (its card's ``reference``; for a card
  without one, the unshifted pool's, a stand-in), no batch-norm change;
* ``adapted_matched``: both, what "Adapt to this image" and ``microseg adapt`` do by
  default when the card has a reference;
* ``pixel_size_given`` (``pixel_size`` shift, models whose card has a pixel size): no
  adaptation, the new pixel size given as a user types it into the layer's scale, so
  the Segment widget resamples each image to the model's pixel size (``segmented`` only);
* ``shots=n``: :func:`~napari_microseg.core.training.jobs.finetune` with the defaults
  of ``TrainSettings.for_finetune`` (the few-shot recipe) on n annotated pool
  slices/images (with ``--given-pixel-size``, under the pixel-size shift, these and
  ``adapted`` are told the new pixel size and segmented with it, as after a user sets
  the layer's scale). The pool is given as one stack, normalised as a whole, with the
  chosen slices annotated, except one DSB or GlaS image annotated alone (``shots=1``;
  since session 22): it is given by itself, as a user opens one 2D image, normalised
  on its own as every evaluation image is (the four pool images are unrelated
  pictures stacked for convenience),

with wall and CPU seconds of each adaptation. The source, shifted, adapted and
``shots=n`` entries also hold ``segmented``: the evaluation images segmented as
the Segment widget segments them (the card's prediction options and
post-processing, tuned for the parent) and scored per image with the card's
target metric (``score``: foreground Dice for mito-em, pixel accuracy for
membrane-em, mean AP for nuclei-fluo, object F1 for gland-he), pixel F1, object
F1 and mean AP. ``target`` judges issue #21's target on the argmax Dice,
``target_segmented`` on that score. The 2-core machine may be shared:
the load is recorded with every run. Results are written after every run, so
an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from adapt_data import MODELS, PIXEL_SIZE_ZOOM, SHIFTS, load_data, shift
from adapt_report import segmented_score, segmented_table, table, target


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def spread(n: int, size: int, seed: int | None = None) -> list[int]:
    """``n`` indices evenly spread over ``size`` (centres of equal bins).

    With ``seed``, one index drawn at random in each of the ``n`` equal bins
    instead: another choice of annotated slices, still spread over the pool.

    Examples
    --------
    >>> spread(2, 10)
    [2, 7]
    >>> picks = spread(2, 10, seed=1)
    >>> 0 <= picks[0] < 5 <= picks[1] < 10
    True
    """
    if seed is None:
        return [int((2 * i + 1) * size / (2 * n)) for i in range(n)]
    rng = np.random.default_rng(seed)
    edges = [int(i * size / n) for i in range(n + 1)]
    return [int(rng.integers(low, max(low + 1, high))) for low, high in itertools.pairwise(edges)]


# ----------------------------------------------------------------------------- scoring


def evaluate(model: Any, images: np.ndarray, labels: np.ndarray, axes: str) -> dict[str, Any]:
    """Foreground Dice over every evaluation pixel (each image normalised on its own)."""
    import torch

    from napari_microseg.core.training.data import Region, TrainingPair, prepare
    from napari_microseg.core.training.scoring import evaluate_regions

    start = time.perf_counter()
    pairs = [
        TrainingPair(images[i], labels[i], np.ones(labels[i].shape, bool), axes[1:], name=f"{i}")
        for i in range(len(images))
    ]
    data = prepare(pairs, model)
    regions = [Region(p, p.annotated) for p in data.planes]
    metrics = evaluate_regions(model, regions, device=torch.device("cpu"))
    return {
        "dice": round(metrics["dice"], 4),
        "object_f1": round(metrics["object_f1"], 4),
        "seconds": round(time.perf_counter() - start, 1),
    }


def segmented(
    model: Any,
    images: np.ndarray,
    labels: np.ndarray,
    axes: str,
    metric: str,
    *,
    spacing: tuple[float, ...] | None = None,
) -> dict[str, Any]:
    """What a user sees: each image segmented as the Segment widget segments it, scored.

    The card's recommended prediction options and post-processing (Otsu, watershed...),
    then ``microseg evaluate``'s metrics per image, averaged over the images: ``metric``
    (the bundled card's target metric, e.g. mean AP for nuclei-fluo, passed in because a
    fine-tuned model's card may name another), pixel F1, object F1 and mean AP. The argmax
    Dice of :func:`evaluate` scores the network alone; this scores the product, whose
    post-processing was tuned for the parent. ``spacing`` is each image's pixel size in µm
    (Y, X), as a user would type it into the layer's scale: the Segment widget then resamples
    the image to the model's pixel size.
    """
    from napari_microseg.core.evaluation.evaluate import evaluate_images
    from napari_microseg.core.inference.segment import segment_job
    from napari_microseg.core.progress import drain

    start = time.perf_counter()
    names = sorted({metric, "pixel_f1", "object_f1", "ap_50_95"})
    rows = []
    for image, truth in zip(images, labels, strict=True):
        result = drain(segment_job(model, image, axes=axes[1:], spacing=spacing), show=False)
        rows.append(evaluate_images(truth, result.labels, metrics=names))
    scores = {name: round(float(np.mean([row[name] for row in rows])), 4) for name in names}
    return {
        "metric": metric,
        "score": scores[metric],
        **scores,
        "seconds": round(time.perf_counter() - start, 1),
    }


def with_pool_reference(model: Any, images: np.ndarray, axes: str) -> Any:
    """A copy of ``model`` whose card takes ``images`` (normalized) as its intensity reference."""
    from napari_microseg.core.training.data import TrainingPair, input_reference, prepare

    pairs = [
        TrainingPair(images[i], np.ones(images[i].shape[:2], np.int32), None, axes[1:], name=f"{i}")
        for i in range(len(images))
    ]
    planes = prepare(pairs, model).planes
    copied = copy.copy(model)
    copied.card = dataclasses.replace(
        model.card,
        normalization={**model.card.normalization, "reference": input_reference(planes)},
    )
    return copied


def timed(function: Any, *args: Any, **kwargs: Any) -> tuple[Any, float, float]:
    """``function(*args, **kwargs)`` with its wall and CPU seconds (a job runs inside it)."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = function(*args, **kwargs)
    return result, round(time.perf_counter() - wall, 2), round(cpu_seconds() - cpu, 2)


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the shared data folder")
    parser.add_argument("--out", type=Path, default=Path("bench_adapt.json"), help="JSON")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--shifts", default=None, help="default: all that fit the model")
    parser.add_argument("--shots", default="1,2,4", help="annotated slices/images")
    parser.add_argument("--minutes", type=float, default=None, help="override the budget")
    parser.add_argument(
        "--steps", type=int, default=None, help="override the fine-tune's step limit"
    )
    parser.add_argument(
        "--lr", type=float, default=None, help="override the card's fine-tune learning rate"
    )
    parser.add_argument(
        "--patch-size",
        type=int,
        default=None,
        help="override the fine-tune's patch side, in image pixels (TrainSettings.patch_size)",
    )
    parser.add_argument(
        "--anchor-decay",
        type=float,
        default=None,
        help="share of the way back to the start taken per fine-tune step "
        "(TrainSettings.anchor_decay, 0-1)",
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=None,
        help="validations without improvement before the fine-tune stops early "
        "(TrainSettings.patience)",
    )
    parser.add_argument(
        "--no-flat-field-check",
        action="store_true",
        help="fine-tune without trying the flat-field correction (TrainSettings.try_flat_field)",
    )
    parser.add_argument(
        "--flat-field",
        action="store_true",
        help="start every adaptation from the model with flat-field correction on "
        "(normalization['flat_field'], what `microseg adapt --flat-field` gives)",
    )
    parser.add_argument(
        "--flat-field-fraction",
        type=float,
        default=None,
        help="with --flat-field: the background's sigma as a fraction of the shorter side "
        "(default: the product's FLAT_FIELD_FRACTION)",
    )
    parser.add_argument(
        "--no-smoothing",
        action="store_true",
        help="never smooth a noisy session (TrainSettings.try_smoothing off, adapt smooth=False)",
    )
    parser.add_argument(
        "--train-one-image",
        action="store_true",
        help="fine-tunes on one image take gradient steps even where the card advises "
        "against it (TrainSettings.train_one_plane; what scripts/record_adaptation.py "
        "decides that advice from)",
    )
    parser.add_argument(
        "--pick-seed",
        type=int,
        default=None,
        help="another replicate: annotated slices drawn at random, one per equal part of the "
        "pool, and the fine-tune seeded with this (default: the parts' centres, seed 0)",
    )
    parser.add_argument(
        "--given-pixel-size",
        action="store_true",
        help="pixel_size shift: label-free adaptation and the fine-tunes get the new pixel "
        "size (resampled to the model's) and are segmented with it, as after a user sets "
        "the scale",
    )
    parser.add_argument(
        "--separate-images",
        action="store_true",
        help="DSB and GlaS: give n >= 2 annotated pool images as separate images, each "
        "normalised on its own (finetune's `more`, `microseg finetune --image A --image B`), "
        "not as one stack",
    )
    parser.add_argument(
        "--stack-annotated-only",
        action="store_true",
        help="give only the n annotated pool images, as one stack (the others left out), to "
        "tell --separate-images' effect from that of the stack's unannotated images",
    )
    parser.add_argument(
        "--unlabelled-pool",
        action="store_true",
        help="with --separate-images: give the pool images nobody annotated as the fine-tune's "
        "unlabelled images (label-free statistics only), as the stack gives its other slices",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from napari_microseg.core.inference.illumination import FLAT_FIELD_FRACTION
    from napari_microseg.core.models.registry import load_model
    from napari_microseg.core.progress import drain
    from napari_microseg.core.training.adapt import adapt
    from napari_microseg.core.training.data import TrainingPair
    from napari_microseg.core.training.jobs import finetune
    from napari_microseg.core.training.settings import TrainSettings

    fraction = args.flat_field_fraction or FLAT_FIELD_FRACTION

    workdir = Path(tempfile.mkdtemp(prefix="bench-adapt-", dir=args.out.parent))
    # Keep the user's model folder out of it.
    os.environ["NAPARI_MICROSEG_MODELS"] = str(workdir / "registry")
    shots = [int(n) for n in args.shots.split(",") if n]
    result: dict[str, Any] = {
        "benchmark": "bench_adapt",
        "command": " ".join(["python", Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "load_at_start": loadavg(),
        "runs": [],
    }

    def write() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))

    for name in args.models.split(","):
        model = load_model(name, device="cpu")
        data = load_data(name, args.data)
        axes = data["axes"]
        colour = axes.endswith("C")
        wanted = (
            args.shifts.split(",") if args.shifts else [s for s in SHIFTS if s != "stain" or colour]
        )
        boundary = int(model.card.lineage.get("settings", {}).get("boundary_width", 1))
        overrides: dict[str, Any] = {"boundary_width": boundary}
        if args.minutes is not None:
            overrides["minutes"] = args.minutes
        if args.steps is not None:
            overrides["steps"] = args.steps
        if args.lr is not None:
            overrides["learning_rate"] = args.lr
        if args.patch_size is not None:
            overrides["patch_size"] = args.patch_size
        if args.anchor_decay is not None:
            overrides["anchor_decay"] = args.anchor_decay
        if args.patience is not None:
            overrides["patience"] = args.patience
        if args.no_flat_field_check:
            overrides["try_flat_field"] = False
        if args.no_smoothing:
            overrides["try_smoothing"] = False
        smooth = False if args.no_smoothing else None
        if args.train_one_image:
            overrides["train_one_plane"] = True
        if args.pick_seed is not None:
            overrides["seed"] = args.pick_seed
        settings = TrainSettings.for_finetune(model.card, **overrides)
        source = evaluate(model, data["eval_images"], data["eval_labels"], axes)
        metric = model.card.metrics.get("target", {}).get("metric", "pixel_f1")
        source["segmented"] = segmented(
            model, data["eval_images"], data["eval_labels"], axes, metric
        )
        reference_from = "the model's card"
        if "reference" not in model.card.normalization:
            # Models bundled before cards recorded one: the unshifted pool stands in for the
            # training data (scripts/add_intensity_reference.py records the real one).
            model = with_pool_reference(model, data["pool_images"], axes)
            reference_from = "the unshifted annotation pool (stand-in)"
        unflattened = model
        if args.flat_field:
            model = copy.copy(model)
            model.card = dataclasses.replace(
                model.card,
                normalization={**model.card.normalization, "flat_field": fraction},
            )
            flat_source = evaluate(model, data["eval_images"], data["eval_labels"], axes)
        matching = copy.copy(model)
        matching.card = dataclasses.replace(
            model.card, normalization={**model.card.normalization, "match": True}
        )
        print(
            f"{name}: source Dice {source['dice']:.4f}, segmented "
            f"{source['segmented']['metric']} {source['segmented']['score']:.4f} "
            f"({data['what']})",
            flush=True,
        )
        for kind in wanted:
            pool, pool_labels = shift(kind, data["pool_images"], data["pool_labels"])
            evaluation, eval_labels = shift(kind, data["eval_images"], data["eval_labels"])
            run: dict[str, Any] = {
                "model": name,
                "learning_rate": settings.learning_rate,
                "patch_size": settings.patch_size,
                "separate_images": bool(args.separate_images and data.get("separate")),
                "stack_annotated_only": bool(args.stack_annotated_only),
                "unlabelled_pool": bool(
                    args.unlabelled_pool and args.separate_images and data.get("separate")
                ),
                "anchor_decay": settings.anchor_decay,
                "steps": settings.steps,
                "shift": kind,
                "data": data["what"],
                "source": source,
                "shifted": {
                    **evaluate(unflattened, evaluation, eval_labels, axes),
                    "segmented": segmented(unflattened, evaluation, eval_labels, axes, metric),
                },
                "loadavg_start": loadavg(),
            }
            given: tuple[float, ...] | None = None
            if kind == "pixel_size" and model.card.pixel_size_um is not None:
                # The lever before any adaptation: the user gives the new pixel size.
                given = (model.card.pixel_size_um / PIXEL_SIZE_ZOOM,) * 2
                run["pixel_size_given"] = {
                    "spacing_um": [round(v, 6) for v in given],
                    "segmented": segmented(
                        unflattened, evaluation, eval_labels, axes, metric, spacing=given
                    ),
                }
                print(
                    f"  {kind}: pixel size given ({given[0]:.4g} um), segmented "
                    f"{segmented_score(run['pixel_size_given']):.4f}",
                    flush=True,
                )
            if args.flat_field:
                # What the correction alone gives, and what it costs on the source images.
                run["flat_field"] = {
                    "fraction": fraction,
                    "source": flat_source,
                    "shifted": evaluate(model, evaluation, eval_labels, axes),
                }
            # A job runs only when drained, so timing the drain times the whole job.
            tune_spacing = given if args.given_pixel_size else None
            # The pool is a stack: its slices keep their place, Y and X get the new pixel size.
            pool_spacing = None if tune_spacing is None else (1.0, *tune_spacing)
            job = adapt(
                model,
                pool,
                axes=axes,
                save=False,
                match_intensities=False,
                smooth=smooth,
                spacing=pool_spacing,
            )
            adapted, wall, cpu = timed(drain, job, show=False)
            run["adapted"] = {
                **evaluate(adapted, evaluation, eval_labels, axes),
                "segmented": segmented(
                    adapted, evaluation, eval_labels, axes, metric, spacing=tune_spacing
                ),
                "pixel_size_given": tune_spacing is not None,
                "wall_s": wall,
                "cpu_s": cpu,
                "smooth": adapted.card.normalization.get("smooth"),
            }
            run["matched"] = evaluate(matching, evaluation, eval_labels, axes)
            run["matched"]["reference"] = reference_from
            # What "Adapt to this image" does by default: match, then batch-norm statistics.
            job = adapt(model, pool, axes=axes, save=False, match_intensities=True, smooth=smooth)
            both, wall_both, cpu_both = timed(drain, job, show=False)
            run["adapted_matched"] = {
                **evaluate(both, evaluation, eval_labels, axes),
                "wall_s": wall_both,
                "cpu_s": cpu_both,
            }
            if args.flat_field:
                print(
                    f"  {kind}: flat field alone {run['flat_field']['shifted']['dice']:.4f} "
                    f"(source {flat_source['dice']:.4f})",
                    flush=True,
                )
            print(
                f"  {kind}: shifted {run['shifted']['dice']:.4f} (segmented "
                f"{segmented_score(run['shifted']):.4f}), adapted "
                f"{run['adapted']['dice']:.4f} (segmented {segmented_score(run['adapted']):.4f}; "
                f"{wall:.1f} s, smooth "
                f"{run['adapted']['smooth']}), matched "
                f"{run['matched']['dice']:.4f}, both {run['adapted_matched']['dice']:.4f} "
                f"({wall_both:.1f} s)",
                flush=True,
            )
            for n in shots:
                chosen = spread(n, len(pool), args.pick_seed)
                labels = np.zeros(pool_labels.shape, np.int32)
                labels[chosen] = pool_labels[chosen]
                events: list[Any] = []
                image, annotated, slices, image_axes, spacing = (
                    pool, labels, chosen, axes, pool_spacing
                )  # fmt: skip
                more: list[TrainingPair] = []
                unlabelled: list[TrainingPair] = []
                if args.stack_annotated_only:
                    # The annotated pool images alone, stacked: against --separate-images.
                    image, annotated, slices = pool[chosen], labels[chosen], list(range(n))
                if data.get("separate") and (n == 1 or args.separate_images):
                    # 2D images annotated alone: the user opens each by itself.
                    image, annotated = pool[chosen[0]], labels[chosen[0]]
                    slices, image_axes = None, axes[1:]
                    spacing = None if pool_spacing is None else pool_spacing[1:]
                    more = [
                        TrainingPair(
                            pool[c], labels[c], axes=image_axes, name=f"image {c}", spacing=spacing
                        )
                        for c in chosen[1:]
                    ]
                    if args.unlabelled_pool:
                        unlabelled = [
                            TrainingPair(
                                pool[c], None, axes=image_axes, name=f"image {c}", spacing=spacing
                            )
                            for c in range(len(pool))
                            if c not in chosen
                        ]
                job = finetune(
                    model,
                    image,
                    annotated,
                    slices=slices,
                    axes=image_axes,
                    name=f"{name}-{kind}-{n}",
                    settings=settings,
                    device="cpu",
                    folder=workdir / "saved",
                    spacing=spacing,
                    more=more,
                    unlabelled=unlabelled,
                )
                tuned, wall, cpu = timed(drain, job, show=False, on_progress=events.append)
                done = [e.info for e in events if e.info.get("phase") == "done"][-1]
                adapt_info = next((e.info for e in events if "metrics_adapted" in e.info), {})
                lit = next((e.info for e in events if e.info.get("phase") == "illumination"), {})
                noise = next((e.info for e in events if e.info.get("phase") == "noise"), {})
                run[f"shots={n}"] = {
                    **evaluate(tuned, evaluation, eval_labels, axes),
                    "segmented": segmented(
                        tuned, evaluation, eval_labels, axes, metric, spacing=tune_spacing
                    ),
                    "pixel_size_given": tune_spacing is not None,
                    "slices": chosen,
                    "wall_s": wall,
                    "cpu_s": cpu,
                    "steps": done["steps"],
                    "stopped": done["stopped"],
                    "start": done.get("start"),
                    "kept": done.get("kept"),
                    "flat_field": lit.get("flat"),
                    "heldout_plain": lit.get("metrics_plain", {}).get("dice"),
                    "heldout_flat": lit.get("metrics_flat", {}).get("dice"),
                    "light_range": lit.get("light_range"),
                    "smooth": noise.get("smooth"),
                    "noise": noise.get("noise"),
                    "training_noise": noise.get("training_noise"),
                    "heldout_unsmoothed": noise.get("metrics_plain", {}).get("dice"),
                    "heldout_parent": adapt_info.get("metrics_parent", {}).get("dice"),
                    "heldout_adapted": adapt_info.get("metrics_adapted", {}).get("dice"),
                    "heldout_after": done["metrics_after"].get("dice"),
                    "loadavg_end": loadavg(),
                }
                r = run[f"shots={n}"]
                print(
                    f"    {n} shot(s): Dice {r['dice']:.4f} (segmented {segmented_score(r):.4f}) "
                    f"in {wall:.0f} s wall / {cpu:.0f} s "
                    f"CPU, {r['steps']} steps ({r['stopped']}), flat field {r['flat_field']}, "
                    f"smooth {r['smooth']}, "
                    f"start {r['start']}, kept "
                    f"{r['kept']}, load {r['loadavg_end']}",
                    flush=True,
                )
            run["target"] = target(run)
            run["target_segmented"] = target(run, segmented_score)
            result["runs"].append(run)
            write()
    result["settings"] = TrainSettings.for_finetune().to_dict()
    result["load_at_end"] = loadavg()
    write()
    print()
    print(table(result["runs"], shots))
    print()
    print("Segmented as the Segment widget does (the card's post-processing and metric):")
    print(segmented_table(result["runs"], shots))
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
