"""The bioimage.io actions of ``microseg models``: export a model, import a package.

Examples
--------
::

    microseg models export mito-em --bioimageio mito-em.zip
    microseg models import mito-em.zip --name mito-em-zoo
    microseg models import downloaded/rdf.yaml
"""

from __future__ import annotations

import argparse
from typing import Any

#: File endings ``microseg models import`` treats as bioimage.io packages.
PACKAGE_ENDINGS = (".zip", ".yaml", ".yml")


def register_export(actions: Any) -> None:
    """Add ``models export``."""
    export = actions.add_parser(
        "export",
        help="export a model as a bioimage.io package (--bioimageio OUT.zip)",
        description="Write a bioimage.io model package (spec 0.5): TorchScript and PyTorch "
        "state-dict weights with the architecture's source, test tensors from our own "
        "prediction, preprocessing, training data, metrics, citation, licence and lineage. "
        "Needs the [bioimageio] extra.",
    )
    export.add_argument("model", help="registry name or .safetensors/.json path")
    export.add_argument("--bioimageio", required=True, metavar="OUT.zip", help="the package")
    export.add_argument(
        "--weights",
        default="pytorch_state_dict,torchscript",
        help="comma-separated weight formats: pytorch_state_dict, torchscript (default both)",
    )
    export.add_argument("--author", action="append", default=[], help="an author (repeatable)")
    export.add_argument("--license", help="SPDX licence of the weights (default BSD-3-Clause)")
    export.add_argument(
        "--overwrite", action="store_true", help="replace a package exported earlier"
    )
    export.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from ..core.models.bioimageio_export import export_bioimageio

    formats = [f.strip() for f in args.weights.split(",") if f.strip()]
    path = export_bioimageio(
        args.model,
        args.bioimageio,
        weight_formats=formats,
        authors=args.author,
        license=args.license,
        overwrite=args.overwrite,
    )
    print(f"Exported {args.model!r} to {path}")
    return 0


def is_package_path(path: str) -> bool:
    """Whether ``models import`` should read ``path`` as a bioimage.io package."""
    return path.lower().endswith(PACKAGE_ENDINGS)


def run_import_package(args: argparse.Namespace) -> int:
    from ..core.models.bioimageio_import import import_bioimageio

    path = import_bioimageio(args.file, args.name)
    print(f"Imported the bioimage.io package {args.file} into {path}")
    return 0
