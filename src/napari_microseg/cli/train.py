"""``microseg train``: train a model from scratch as a YAML config describes.

A config names the family, its hyper-parameters and classes, the data set
(a folder in one of the layouts of :mod:`napari_microseg.core.training.datasets`;
``--data`` overrides its path) and the training settings (the fields of
:class:`~napari_microseg.core.training.jobs.TrainSettings`). See ``configs/`` for
examples::

    microseg train --config configs/mito-em.yaml --data /data/lucchi
    microseg train --config configs/mito-em.yaml --data /data/lucchi --resume

The model goes to the user's model folder, usable by name at once, under the
config's name (or ``--name``); when a model already has the config's name
(a bundled one, or an earlier run), the next free one (``<name>-2``...). A
resumable checkpoint is written every few minutes to the user's model folder
(``.training/<name>.pt``, or ``--checkpoint``); ``--resume`` continues from it.
Ctrl-C keeps the best weights so far as ``<name>-draft`` (exit code 130).

``--steps`` alone (without ``--minutes``) replaces the config's whole budget,
time included, so the run is reproducible: the same config, seed and steps on
the same machine's CPU give the same weights, the fresh network's initial
weights included (drawn from the seed).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

#: Top-level keys a training config may hold.
CONFIG_KEYS = (
    "name",
    "family",
    "in_channels",
    "classes",
    "hyperparameters",
    "normalization",
    "pixel_size_um",
    "description",
    "recommended",
    "data",
    "training",
)
#: Keys of the config's ``data`` section.
DATA_KEYS = ("path", "kind", "split", "limit", "target", "grey")


def register(subparsers: Any) -> None:
    """Add the ``train`` sub-command."""
    parser = subparsers.add_parser(
        "train",
        help="train a model from scratch from a YAML config",
        description="Train a U-Net, SegNet, Micro-Net or Mask R-CNN as a YAML config describes "
        "(family, hyper-parameters, classes, data set, training settings; pixel_size_um trains at "
        "another pixel size than the data's, resampling them), and save it in the "
        "user's model folder with its lineage. See configs/*.yaml. Ctrl-C keeps the best "
        "weights so far as NAME-draft (exit code 130).",
    )
    parser.add_argument("--config", required=True, type=Path, help="the YAML config")
    parser.add_argument("--data", type=Path, help="data set folder (overrides data.path)")
    parser.add_argument("--name", help="registry name (overrides the config's name)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument(
        "--steps",
        type=int,
        help="training steps; without --minutes, the only budget (reproducible on the CPU)",
    )
    parser.add_argument("--minutes", type=float, help="time budget (overrides the config)")
    parser.add_argument("--limit", type=int, help="use at most this many images or slices")
    parser.add_argument("--checkpoint", type=Path, help="resumable checkpoint file")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    parser.add_argument("--seed", type=int, help="random seed (overrides the config)")
    parser.add_argument(
        "--init",
        metavar="MODEL",
        help="start from this model's weights instead of random ones (a name or a file of the "
        "config's architecture, e.g. the bundled model to train longer); its lineage is recorded",
    )
    parser.set_defaults(func=run)


def read_config(path: Path) -> dict[str, Any]:
    """Read and check a training config; a :class:`~..CommandError` names what is wrong."""
    import yaml

    from . import CommandError

    if not path.is_file():
        raise CommandError(f"The config {path} does not exist.")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise CommandError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(config, dict):
        raise CommandError(f"{path} must hold a mapping of settings.")
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise CommandError(
            f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(CONFIG_KEYS)}."
        )
    for key in ("name", "family"):
        if not config.get(key):
            raise CommandError(f"{path} needs a {key!r}.")
    data = config.get("data") or {}
    if not isinstance(data, dict) or set(data) - set(DATA_KEYS):
        raise CommandError(f"{path}: 'data' takes the keys {', '.join(DATA_KEYS)}.")
    return config


def build(config: dict[str, Any], args: argparse.Namespace, base: Path) -> tuple[Any, ...]:
    """The fresh model, the data set and the settings a config (plus options) describes."""
    import torch

    from ..core.models.build import create_model
    from ..core.training.datasets import load_dataset
    from ..core.training.settings import TrainSettings
    from . import CommandError

    data_cfg = dict(config.get("data") or {})
    data_path = args.data or data_cfg.get("path")
    if not data_path:
        raise CommandError("No data: give --data FOLDER or data.path in the config.")
    data_path = Path(data_path).expanduser()
    if not data_path.is_absolute() and not data_path.exists():
        data_path = base / data_path  # relative to the config file
    dataset = load_dataset(
        data_path,
        kind=data_cfg.get("kind"),
        split=data_cfg.get("split"),
        limit=args.limit if args.limit is not None else data_cfg.get("limit"),
        target=data_cfg.get("target"),
        grey=bool(data_cfg.get("grey", False)),
    )
    training = dict(config.get("training") or {})
    for key, value in (("steps", args.steps), ("minutes", args.minutes), ("seed", args.seed)):
        if value is not None:
            training[key] = value
    # One budget given on the command line: it alone limits the run, as in finetune (a time
    # budget ties the steps and the schedule to the machine's speed; steps alone reproduce).
    if args.minutes is not None and args.steps is None:
        training.setdefault("steps", None)
    if args.steps is not None and args.minutes is None:
        training["minutes"] = None
    settings = TrainSettings.from_dict(training).validate()
    pixel_size_um = model_pixel_size(config, dataset)
    name = args.name or _free_name(config["name"])
    # The fresh network's initial weights come from the seed too, so a rerun starts alike.
    torch.manual_seed(settings.seed)
    model = create_model(
        config["family"],
        name=name,
        in_channels=int(config.get("in_channels", 1)),
        classes=config.get("classes") or ("background", "foreground"),
        normalization=config.get("normalization"),
        pixel_size_um=pixel_size_um,
        modality=dataset.modality,
        description=config.get("description", ""),
        **(config.get("hyperparameters") or {}),
    )
    if config.get("recommended"):
        model.card.recommended = dict(config["recommended"])
    if args.init:
        initialise_from(model, args.init)
    return model, dataset, settings


def model_pixel_size(config: dict[str, Any], dataset: Any) -> float | None:
    """The pixel size (µm) the network learns at: the config's, else the data's own.

    A config's ``pixel_size_um`` other than the data's trains on resampled
    images (coarser pixels show a network more context per patch and cost
    fewer pixels per image); prediction resamples every image to it likewise.

    Raises
    ------
    CommandError
        If the value is not a positive number, or the data set has no pixel
        size to resample from.
    """
    from . import CommandError

    wanted = config.get("pixel_size_um")
    if wanted is None:
        return dataset.pixel_size_um
    if isinstance(wanted, bool) or not isinstance(wanted, int | float) or not wanted > 0:
        raise CommandError(f"pixel_size_um must be a positive number of µm, not {wanted!r}.")
    if dataset.pixel_size_um is None:
        raise CommandError(
            f"pixel_size_um {wanted} needs data with a known pixel size to resample from; "
            f"{dataset.description or dataset.kind} has none. Remove pixel_size_um from the "
            "config to train at the images' own pixels."
        )
    return float(wanted)


def initialise_from(model: Any, source: str) -> None:
    """Copy the weights of the model ``source`` into the fresh ``model`` (``--init``).

    Raises
    ------
    CommandError
        When ``source`` cannot be loaded, or its network is not the config's
        (architecture, channels, classes or layer shapes differ).
    """
    from ..core.models.base import LINEAGE_WIDENED
    from ..core.models.checkpoint import inspect_checkpoint
    from ..core.models.registry import find_model, load_model
    from . import CommandError

    start = load_model(source, device="cpu")  # an unknown name or a broken file: one line
    path = Path(source).expanduser()
    weights = path if path.exists() else find_model(source).path
    fresh, given = model.card, start.card
    for what, mine, theirs in (
        ("architecture", fresh.architecture, given.architecture),
        ("input channels", fresh.in_channels, given.in_channels),
        ("classes", list(fresh.classes), list(given.classes)),
    ):
        if mine != theirs:
            raise CommandError(
                f"--init {source}: {what} {theirs}, the config's {mine}; start from a model "
                "trained with this config."
            )
    state = start.module.state_dict()
    own = model.module.state_dict()
    differ = [k for k in own if k not in state or tuple(state[k].shape) != tuple(own[k].shape)]
    differ += sorted(set(state) - set(own))
    if differ:
        raise CommandError(
            f"--init {source}: its layers differ from the config's network ({len(differ)} "
            f"missing, extra or reshaped, e.g. {differ[0]!r}); check the config's hyperparameters."
        )
    model.module.load_state_dict(state)  # copies cast the float16 of bundled weights
    start_record: dict[str, Any] = {
        "model": given.name,
        "sha256": inspect_checkpoint(weights).sha256,
    }
    widened = given.lineage.get(LINEAGE_WIDENED) if isinstance(given.lineage, dict) else None
    if isinstance(widened, dict):
        # Made wider from a narrow model (scripts/widen_model.py): how to make it again.
        start_record[LINEAGE_WIDENED] = widened
    model.card.lineage = {**model.card.lineage, "initial_weights": start_record}
    print(f"Starting from the weights of {given.name!r}.")


def _free_name(name: str) -> str:
    """The config's name, or the next free one when a model already has it.

    Every bundled model's config carries the bundled name, so retraining one
    with the documented command must not stop at "already exists"; nothing is
    overwritten either way. An explicit ``--name`` is never changed.
    """
    from ..core.models.versions import default_name

    free = default_name(name)
    if free != name:
        print(f"A model named {name!r} already exists; this one will be saved as {free!r}.")
    return free


def run(args: argparse.Namespace) -> int:
    from ..core.models.registry import user_models_dir
    from ..core.training.jobs import train
    from . import CommandError
    from .finetune import INTERRUPTED, drain_training, report

    config = read_config(args.config)
    model, dataset, settings = build(config, args, args.config.resolve().parent)
    checkpoint = args.checkpoint or user_models_dir(create=True) / ".training" / f"{model.name}.pt"
    if args.resume and not checkpoint.exists():
        raise CommandError(f"Nothing to resume: {checkpoint} does not exist.")
    print(
        f"Training {config['family']} {model.name!r} on {dataset.description} "
        f"({len(dataset.pairs)} training item(s)"
        + (f", {len(dataset.validation)} validation item(s))" if dataset.validation else ")")
    )
    job = train(
        model,
        dataset.pairs,
        validation=dataset.validation,
        name=model.name,
        settings=settings,
        device=args.device,
        checkpoint=checkpoint,
        resume=args.resume,
    )
    trained = drain_training(job, checkpoint=checkpoint)
    if trained is None:
        return INTERRUPTED
    report(trained)
    return 0
