"""The ``microseg`` command line: one sub-command per module in this package.

Each sub-command module defines ``register(subparsers)``, which adds its
parser and sets ``func`` to a callable taking the parsed arguments and
returning an exit code. Heavy imports happen inside ``func`` so that
``microseg --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib import import_module

from .._version import __version__

#: Sub-command modules, in the order ``--help`` lists them.
COMMANDS = ["demo", "models", "predict", "postprocess", "evaluate", "train", "finetune"]


class CommandError(Exception):
    """A user-facing error: printed as one clear line, exit code 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    """The ``microseg`` argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="microseg",
        description="Segment microscopy images with deep learning: predict, post-process, "
        "evaluate, train and fine-tune, headless or in napari.",
    )
    parser.add_argument("--version", action="version", version=f"napari-microseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``microseg`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("Interrupted; nothing half-written was kept.", file=sys.stderr)
        return 130
    except (CommandError, ValueError, FileNotFoundError, FileExistsError, PermissionError) as error:
        if args.verbose:
            raise
        print(f"microseg {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
