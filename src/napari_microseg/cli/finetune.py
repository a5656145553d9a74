"""``microseg finetune``: fine-tune a model on corrected labels and save it as a new version.

Examples
--------
::

    microseg finetune --model mito-em --image stack.tif --labels corrected.tif \\
        --slices 12,40 --name mito-em-mine --minutes 2
    microseg finetune --model gland-he --image a.png --labels a_fixed.tif \\
        --image b.png --labels b_fixed.tif --name gland-he-mine   # two separate images
    microseg predict --model mito-em-mine ...      # usable by name at once
    microseg adapt --model mito-em --image new-session.tif --name mito-em-session2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``finetune`` and ``adapt`` sub-commands."""
    register_adapt(subparsers)
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a model on corrected labels (a few slices suffice)",
        description="Fine-tune a model on hand-corrected labels and save the result under a new "
        "name in the user's model folder ($NAPARI_MICROSEG_MODELS or a per-user data folder), "
        "with its lineage. Only annotated slices count: the non-empty label slices, or those "
        "given with --slices. The parent model is never changed. Ctrl-C stops and keeps the "
        "best weights so far as NAME-draft (exit code 130). The same --steps and --seed on "
        "the same machine's CPU give the same weights.",
    )
    parser.add_argument("--model", required=True, help="parent model: registry name or file")
    parser.add_argument(
        "--image",
        required=True,
        type=Path,
        action="append",
        help="the image (TIFF, PNG...); repeat it, each with its --labels, to learn from "
        "several separate images of the session at once",
    )
    parser.add_argument(
        "--labels",
        required=True,
        type=Path,
        action="append",
        help="the corrected labels (one per --image, in the same order)",
    )
    parser.add_argument(
        "--annotated",
        type=Path,
        action="append",
        help="mask of the annotated region (default: annotated slices); with several images, "
        "one per --image or none",
    )
    parser.add_argument(
        "--slices", help="annotated slices of a stack, e.g. 3,10-12 (one image only)"
    )
    parser.add_argument(
        "--unlabelled",
        type=Path,
        action="append",
        default=[],
        metavar="IMAGE",
        help="an image of the same session nobody corrected (repeatable): the label-free start "
        "measures its batch-norm statistics on it too; nothing is trained on it",
    )
    parser.add_argument("--name", required=True, help="registry name of the new model")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="number of training steps (reproducible)")
    budget.add_argument("--minutes", type=float, help="time budget in minutes")
    parser.add_argument("--freeze-encoder", action="store_true", help="train the decoder only")
    parser.add_argument(
        "--lr",
        type=float,
        help="learning rate of the decoder (default: the model's recommendation, else 1e-3)",
    )
    parser.add_argument(
        "--no-adapt",
        action="store_true",
        help="skip re-estimating the batch-norm statistics on the image first",
    )
    parser.add_argument(
        "--always-save",
        action="store_true",
        help="save the fine-tuned model even when held-back annotated pixels score the "
        "parent better (by default the parent is kept and nothing is saved)",
    )
    parser.add_argument(
        "--keep-threshold",
        action="store_true",
        help="keep the base model's segmentation threshold (by default a model segmented at a "
        "fixed threshold gets the one that segments the annotated pixels best)",
    )
    parser.add_argument(
        "--train-one-image",
        action="store_true",
        help="train even when all annotations are in one slice or image and the base model's "
        "card advises against it (its benchmark found one image's fine-tunes worse than not "
        "adapting; by default such a run only tries the smoothing and the threshold)",
    )
    parser.add_argument("--patch-size", type=int, help="patch side in pixels (default 128)")
    parser.add_argument("--batch-size", type=int, help="patches per step (default 4)")
    parser.add_argument(
        "--augment", choices=("default", "light", "none"), help="augmentation preset"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace, card: Any = None) -> Any:
    """The fine-tune :class:`~napari_microseg.core.training.TrainSettings` the options ask for.

    ``card`` is the base model's; what the options leave open follows its recommendations.
    """
    from ..core.training.settings import TrainSettings

    overrides: dict[str, Any] = {"seed": args.seed, "freeze_encoder": args.freeze_encoder}
    if getattr(args, "no_adapt", False):
        overrides["adapt_batchnorm"] = False
    if getattr(args, "always_save", False):
        overrides["keep_better_start"] = False
    if getattr(args, "keep_threshold", False):
        overrides["choose_threshold"] = False
    if getattr(args, "train_one_image", False):
        overrides["train_one_plane"] = True
    # One budget given: it alone limits the run (steps alone are reproducible).
    if args.steps is not None:
        overrides.update(steps=args.steps, minutes=None)
    if args.minutes is not None:
        overrides.update(minutes=args.minutes, steps=None)
    optional = {
        "learning_rate": args.lr,
        "patch_size": args.patch_size,
        "batch_size": args.batch_size,
        "augment": args.augment,
    }
    overrides.update({key: value for key, value in optional.items() if value is not None})
    return TrainSettings.for_finetune(card, **overrides)


def register_adapt(subparsers: Any) -> None:
    """Add the ``adapt`` sub-command: label-free adaptation to a new session."""
    parser = subparsers.add_parser(
        "adapt",
        help="adapt a model to new images without labels (batch-norm statistics)",
        description="Adapt a model to images of a new session (another microscope, staining or "
        "acquisition) without any labels: its batch-norm statistics are re-estimated on them "
        "(and, with --match, their intensity histogram is matched to the model's training "
        "data). The result is saved under "
        "a new name with its lineage; the parent is never changed. Takes about a second. Correct "
        "a few objects and run `microseg finetune` for more.",
    )
    parser.add_argument("--model", required=True, help="parent model: registry name or file")
    parser.add_argument("--image", required=True, type=Path, help="an image of the new session")
    parser.add_argument("--name", help="registry name of the new model (default MODEL-adapted)")
    parser.add_argument("--slices", help="slices of a stack to measure on, e.g. 0-20")
    parser.add_argument("--device", default="cpu", help="cpu (default), auto, cuda...")
    parser.add_argument(
        "--match",
        action="store_true",
        help="also match the image's intensities to the model's training reference (helps a "
        "gamma or contrast change on EM; harms fluorescence, see docs/benchmarks.md)",
    )
    parser.add_argument(
        "--flat-field",
        action="store_true",
        help="also correct uneven illumination: the new model divides each plane by its "
        "smoothed brightness before segmenting (vignetting, a lamp off centre; costs up to 0.01 "
        "Dice on evenly lit images, see docs/benchmarks.md)",
    )
    parser.add_argument(
        "--smooth",
        default="auto",
        metavar="{auto,on,off,SIGMA}",
        help="smooth a noisy session: auto (default) when the image is 1.5 times as noisy as the "
        "model's training data or more; on, off, or a Gaussian sigma in pixels",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run_adapt)


def smooth_choice(text: str) -> bool | float | None:
    """``--smooth``'s value as :func:`~..core.training.adapt.adapt` takes it."""
    from . import CommandError

    choices = {"auto": None, "on": True, "off": False}
    if text in choices:
        return choices[text]
    try:
        return float(text)
    except ValueError:
        raise CommandError(
            f"--smooth {text!r}: use auto, on, off or a Gaussian sigma in pixels (e.g. 0.7)."
        ) from None


def run_adapt(args: argparse.Namespace) -> int:
    from ..core.io.images import imread
    from ..core.models.base import ModelError
    from ..core.progress import drain
    from ..core.training.adapt import adapt
    from ..core.training.data import TrainingDataError
    from . import CommandError

    image = imread(args.image)
    try:
        model = drain(
            adapt(
                args.model,
                image.data,
                axes=image.axes,
                slices=args.slices,
                name=args.name,
                device=args.device,
                match_intensities=args.match,
                flat_field=True if args.flat_field else None,
                smooth=smooth_choice(args.smooth),
                spacing=image.scale,
            ),
            show=not args.json,
        )
    except (ModelError, TrainingDataError, ValueError) as error:
        raise CommandError(str(error)) from error
    lineage = model.card.lineage
    if args.json:
        summary = {
            "name": model.name,
            "parent": model.card.parent,
            "batchnorm_layers": len(lineage.get("batchnorm_layers", [])),
            "matched_intensities": bool(lineage.get("match_intensities")),
            "flat_field": bool(lineage.get("flat_field")),
            "smooth": lineage.get("smooth"),
            "pixels": lineage.get("data", {}).get("pixels"),
            "duration_s": lineage.get("duration_s"),
        }
        print(json.dumps(summary, indent=2))
        return 0
    sigma = lineage.get("smooth")
    print(
        f"Saved {model.name!r}: "
        + ("illumination corrected (flat field), " if lineage.get("flat_field") else "")
        + (f"noisy input smoothed (sigma {sigma:g} px), " if sigma else "")
        + f"{len(lineage.get('batchnorm_layers', []))} batch-norm layers "
        f"re-estimated on {lineage.get('data', {}).get('pixels')} pixels "
        f"({lineage.get('duration_s')} s)."
    )
    print(f"Use it by name: microseg predict --model {model.name} ...")
    return 0


def run(args: argparse.Namespace) -> int:
    from ..core.io.images import imread
    from ..core.training.adapt import resolve_model
    from ..core.training.data import TrainingPair
    from ..core.training.jobs import finetune

    check_image_counts(args)
    parent = resolve_model(args.model)
    settings = settings_from_args(args, parent.card)
    masks = args.annotated or [None] * len(args.image)
    pairs = []
    for image_path, labels_path, mask_path in zip(args.image, args.labels, masks, strict=True):
        image = imread(image_path)
        pairs.append(
            TrainingPair(
                image.data,
                imread(labels_path).data,
                imread(mask_path).data if mask_path else None,
                image.axes,
                name=image_path.name,
                spacing=image.scale,
            )
        )
    first, more = pairs[0], pairs[1:]
    unlabelled = []
    for path in args.unlabelled:
        image = imread(path)
        unlabelled.append(
            TrainingPair(image.data, None, axes=image.axes, name=path.name, spacing=image.scale)
        )
    job = finetune(
        parent,
        first.image,
        first.labels,
        annotated=first.annotated,
        slices=args.slices,
        axes=first.axes,
        name=args.name,
        settings=settings,
        device=args.device,
        spacing=first.spacing,
        more=more,
        unlabelled=unlabelled,
    )
    model = drain_training(job, show=not args.json)
    if model is None:
        return INTERRUPTED
    report(model, as_json=args.json)
    return 0


def check_image_counts(args: argparse.Namespace) -> None:
    """Refuse, before reading anything, --image / --labels / --annotated that do not pair up."""
    from . import CommandError

    images, labels = len(args.image), len(args.labels)
    if images != labels:
        raise CommandError(
            f"{images} --image but {labels} --labels: give one --labels per --image, in the "
            "same order."
        )
    if args.annotated and len(args.annotated) != images:
        raise CommandError(
            f"{len(args.annotated)} --annotated for {images} --image: give one mask per image, "
            "or none (every pixel of the annotated slices counts)."
        )
    if args.slices and images > 1:
        raise CommandError(
            "--slices names the slices of one stack; with several images, give each its "
            "--annotated mask instead."
        )


#: Exit code after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130


def drain_training(job: Any, *, show: bool = True, checkpoint: Path | None = None) -> Any | None:
    """Run a ``train``/``finetune`` job; after Ctrl-C, say in one line what was kept.

    Parameters
    ----------
    job : generator
        From :func:`~napari_microseg.core.training.jobs.train` or ``finetune``.
    show : bool
        Draw the progress bar.
    checkpoint : Path, optional
        The run's resumable checkpoint, named in the message when it exists.

    Returns
    -------
    SegmentationModel or None
        The saved model, or None when Ctrl-C stopped the run (the job has then
        kept the best weights so far as its draft, when it had taken a step).
    """
    from ..core.models.versions import SaveError
    from ..core.progress import drain
    from . import CommandError

    seen: dict[str, Any] = {"step": 0, "phase": None, "draft": None}

    def note(event: Any) -> None:
        phase = event.info.get("phase")
        seen["phase"] = phase
        if phase == "prepare" and event.info.get("draft_name"):
            seen["draft"] = event.info["draft_name"]
            # The draft replaces an older one of the same name: compare files, not names.
            seen["before"] = _file_stamp(seen["draft"])
        elif phase in ("train", "validate", "done"):
            seen["step"] = event.step
        if phase == "done":
            seen["path"] = event.info.get("path")

    try:
        return drain(job, show=show, on_progress=note)
    except SaveError as error:
        raise CommandError(str(error)) from error
    except KeyboardInterrupt:
        print(_interrupted_message(seen, checkpoint), file=sys.stderr)
        return None


def _file_stamp(name: str) -> tuple[int, int, int] | None:
    """Inode, modification time and size of the model file called ``name``, if any."""
    from ..core.models.base import ModelError
    from ..core.models.registry import find_model

    try:
        stat = find_model(name).path.stat()
    except (ModelError, OSError):
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def _interrupted_message(seen: dict[str, Any], checkpoint: Path | None) -> str:
    step, draft = seen["step"], seen["draft"]
    if seen["phase"] == "done":
        text = f"Interrupted after the model was saved ({seen.get('path')})."
    elif not step:
        text = "Interrupted before the first training step; no model or draft was saved."
    elif draft and _file_stamp(draft) not in (None, seen.get("before")):
        text = (
            f"Interrupted at step {step}; the best weights so far were kept as {draft!r} "
            f"(microseg predict --model {draft} ...)."
        )
    else:
        text = f"Interrupted at step {step}; no draft could be kept (see the warning above)."
    if checkpoint is not None and checkpoint.exists() and seen["phase"] != "done":
        text = text[:-1] + f"; add --resume to continue from the checkpoint {checkpoint}."
    return text


def report(model: Any, *, as_json: bool = False) -> None:
    """Print what was trained and where it went."""
    lineage = model.card.lineage
    before, after = lineage.get("metrics_before") or {}, lineage.get("metrics_after") or {}
    if as_json:
        summary = {
            "name": model.name,
            "parent": model.card.parent,
            "steps": lineage.get("steps"),
            "stopped": lineage.get("stopped"),
            "duration_s": lineage.get("duration_s"),
            "metrics_before": before,
            "metrics_after": after,
            "data_sha256": lineage.get("data_sha256"),
            "recipe": lineage.get("recipe"),
            "threshold": lineage.get("threshold"),
        }
        print(json.dumps(summary, indent=2))
        return
    recipe = lineage.get("recipe") or {}
    # A one-image fine-tune of a card that advises against training on one image (#21).
    untrained = recipe.get("gradient_steps") is False
    if recipe.get("kept") == "parent":
        why = (
            "no label-free correction beat it on the annotated pixels (one image: no training)"
            if untrained
            else "neither adaptation nor fine-tuning beat it on the held-out annotated pixels"
        )
        print(
            f"Kept the parent {model.name!r}: {why} (Dice {after.get('dice', float('nan')):.3f}); "
            "nothing was saved."
        )
        return
    if untrained:
        print(
            f"Saved {model.name!r} (no gradient steps: one annotated image, as the parent's "
            f"card advises; {lineage.get('duration_s')} s)."
        )
    else:
        print(
            f"Saved {model.name!r} ({lineage.get('steps')} steps, stopped by "
            f"{lineage.get('stopped')}, {lineage.get('duration_s')} s)."
        )
    for key in ("dice", "iou", "object_f1"):
        if key in after:
            old = f"{before[key]:.3f} -> " if key in before else ""
            print(f"  validation {key}: {old}{after[key]:.3f}")
    print(f"  validation data: {lineage.get('validation')}")
    threshold = lineage.get("threshold") or {}
    if threshold.get("chosen") is not None and threshold.get("chosen") != threshold.get("card"):
        print(
            f"  segmentation threshold {threshold['card']:g} -> {threshold['chosen']:g}, chosen "
            "on the annotated pixels (the new model's card recommends it)"
        )
    sigma = recipe.get("smooth")
    if sigma:
        print(
            f"  the images were noisier than the training data: the new model smooths its "
            f"input (Gaussian sigma {sigma:g} px)"
        )
    print(f"Use it by name: microseg predict --model {model.name} ...")
