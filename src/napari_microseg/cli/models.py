"""``microseg models``: list models, show one's card, print the user folder, import a state dict.

Examples
--------
::

    microseg models                      # the table: bundled, user and broken models
    microseg models --json               # the same, for scripts
    microseg models info mito-em         # the full model card (JSON)
    microseg models folder               # where your own models are kept
    microseg models import net.pth --architecture unet --name my-unet --in-channels 1
    microseg models import model.zip --name zoo-model   # a bioimage.io package
    microseg models export mito-em --bioimageio mito-em.zip
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .models_bioimageio import is_package_path, register_export, run_import_package

_COLUMNS = ("name", "family", "modality", "ch", "MB", "source", "lineage", "metrics")


def register(subparsers: Any) -> None:
    """Add the ``models`` sub-command and its actions."""
    parser = subparsers.add_parser(
        "models",
        help="list models (list), show a model card (info), print the user model folder "
        "(folder), import a state dict or bioimage.io package (import), export (export)",
        description="List the bundled and user models (list, the default), show a model's "
        "card as JSON (info NAME), print the user model folder (folder: "
        "$NAPARI_MICROSEG_MODELS, else a per-user data folder), or import a PyTorch state "
        "dict or a bioimage.io package safely (import), or export a model as a bioimage.io "
        "package (export).",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--usable", action="store_true", help="hide broken and foreign files")
    parser.set_defaults(func=run_list)
    actions = parser.add_subparsers(dest="models_action", metavar="ACTION")

    listing = actions.add_parser("list", help="list models (the default)")
    listing.add_argument("paths", nargs="*", help="extra model files to list")
    # SUPPRESS: an option left out after "list" must not reset one given before it.
    flags = (("--json", "print JSON instead of a table"), ("--usable", "hide broken files"))
    for flag, text in flags:
        listing.add_argument(flag, action="store_true", default=argparse.SUPPRESS, help=text)
    listing.set_defaults(func=run_list)

    info = actions.add_parser("info", help="show a model card (JSON)")
    info.add_argument("model", help="registry name or .safetensors/.json path")
    info.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print JSON (what info always prints; accepted as with list)",
    )
    info.set_defaults(func=run_info)

    folder = actions.add_parser("folder", help="print the user model folder")
    folder.set_defaults(func=run_folder)

    importer = actions.add_parser(
        "import",
        help="import a PyTorch .pt/.pth state dict or a bioimage.io package (.zip, rdf.yaml)",
        description="Read a plain state dict with torch.load(weights_only=True) (files that "
        "would run code are refused) and save it as safetensors + JSON card in the user folder; "
        "or import a locally downloaded bioimage.io package (.zip or its rdf.yaml) of a 2D/3D "
        "semantic model with PyTorch state-dict or TorchScript weights.",
    )
    importer.add_argument("file", help="the .pt/.pth file, or the package .zip / rdf.yaml")
    importer.add_argument(
        "--architecture", help="unet, segnet, micronet, maskrcnn (state dicts only)"
    )
    importer.add_argument("--name", help="registry name (default: the file name)")
    importer.add_argument("--in-channels", type=int, default=1, help="1 (EM, fluo) or 3 (RGB)")
    importer.add_argument(
        "--classes", default="background,foreground", help="comma-separated class names"
    )
    importer.add_argument(
        "--hyperparameters", default="{}", help='JSON, e.g. \'{"depth": 5, "base_width": 64}\''
    )
    importer.add_argument("--pixel-size", type=float, help="pixel size in µm of the training data")
    importer.add_argument("--modality", default="", help="EM, fluorescence, H&E...")
    importer.add_argument("--float16", action="store_true", help="store the weights as float16")
    importer.set_defaults(func=run_import)
    register_export(actions)


def _metrics_text(metrics: dict[str, Any]) -> str:
    values = [
        f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}"
        for key, value in metrics.items()
        if key != "data"
    ]
    data = str(metrics.get("data", ""))
    if len(data) > 80:  # a held-out list can name a hundred images; `models show` has it all
        data = data[:79] + "…"
    return ", ".join(values[:3]) + (f" ({data})" if data and values else "")


def format_table(entries: list[Any]) -> str:
    """The model list as a plain-text table, unusable models last with their reason."""
    rows = [
        (
            e.name,
            e.family,
            e.modality,
            str(e.in_channels),
            e.size_text,
            e.source,
            " <- ".join(e.lineage) or "-",
            _metrics_text(e.metrics) or "-",
        )
        for e in entries
        if e.usable
    ]
    lines = []
    if rows:
        widths = [max(len(str(r[i])) for r in [_COLUMNS, *rows]) for i in range(len(_COLUMNS))]
        for row in [_COLUMNS, *rows]:
            lines.append("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
    else:
        lines.append("No usable models yet. Train or fine-tune one, or import a state dict.")
    broken = [e for e in entries if not e.usable]
    if broken:
        lines.append("")
        lines.append("Unusable files:")
        lines += [f"  {e.path}: {e.problem}" for e in broken]
    return "\n".join(lines)


def run_list(args: argparse.Namespace) -> int:
    from ..core.models.registry import list_models, user_models_dir

    entries = list_models(getattr(args, "paths", None) or (), include_unusable=not args.usable)
    if args.json:
        print(json.dumps([entry.as_dict() for entry in entries], indent=2, ensure_ascii=False))
    else:
        print(format_table(entries))
        print(f"\nUser model folder: {user_models_dir()}", file=sys.stderr)
    return 0


def run_info(args: argparse.Namespace) -> int:
    from ..core.models.base import ModelError
    from ..core.models.registry import find_model

    entry = find_model(args.model)
    if not entry.usable:
        raise ModelError(f"Model {entry.name!r} cannot be used: {entry.problem}")
    details = {**entry.as_dict(), "card": entry.card.to_dict() if entry.card else None}
    print(json.dumps(details, indent=2, ensure_ascii=False))
    return 0


def run_folder(args: argparse.Namespace) -> int:
    from ..core.models.registry import user_models_dir

    print(user_models_dir())
    return 0


def run_import(args: argparse.Namespace) -> int:
    from ..core.models.registry import save_user_model
    from ..core.models.state_dict_import import import_state_dict

    if is_package_path(args.file):
        return run_import_package(args)
    if not args.architecture:
        raise ValueError("--architecture is needed to import a state dict (unet, segnet...).")
    try:
        hyperparameters = json.loads(args.hyperparameters)
    except ValueError as error:
        raise ValueError(f"--hyperparameters is not valid JSON: {error}") from error
    classes = [name.strip() for name in args.classes.split(",") if name.strip()]
    model = import_state_dict(
        args.file,
        args.architecture,
        name=args.name,
        in_channels=args.in_channels,
        classes=classes,
        hyperparameters=hyperparameters,
        pixel_size_um=args.pixel_size,
        modality=args.modality,
    )
    path = save_user_model(model, dtype="float16" if args.float16 else "float32")
    print(f"Imported {model.name!r} into {path}")
    return 0
