"""The ``microseg`` command line: one sub-command per module in this package.

Each sub-command module defines ``register(subparsers)``, which adds its
parser and sets ``func`` to a callable taking the parsed arguments and
returning an exit code. Heavy imports happen inside ``func`` so that
``microseg --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Callable
from importlib import import_module
from typing import Any

from .._version import __version__

#: Sub-command modules, in the order ``--help`` lists them.
COMMANDS = ["demo", "models", "predict", "postprocess", "evaluate", "measure", "train", "finetune"]


class CommandError(Exception):
    """A user-facing error: printed as one clear line, exit code 2, no traceback."""


def add_overwrite_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--overwrite``: every command that writes follows the one rule of
    :func:`napari_microseg.core.io.outputs.check_outputs`."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace outputs written earlier by napari-microseg; never an input, never a file "
        "it did not write",
    )


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
        with warnings.catch_warnings():
            if not args.verbose:
                warnings.showwarning = _notes_for(args.command)
            code = int(args.func(args) or 0)
        sys.stdout.flush()  # a reader that stopped early (`| head`) shows up here at the latest
        return code
    except BrokenPipeError:
        # The reader has all it wanted. Python flushes stdout again at exit, which would
        # fail anew with a traceback, so the rest goes to devnull and we exit quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("Interrupted; nothing half-written was kept.", file=sys.stderr)
        return 130
    except (CommandError, ValueError, OSError) as error:  # OSError: e.g. a full disk
        if args.verbose:
            raise
        print(f"microseg {args.command}: error: {error}", file=sys.stderr)
        return 2


def _notes_for(command: str) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints each warning as one line, without source code."""

    def show(
        message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        print(f"microseg {command}: note: {message}", file=file or sys.stderr)

    return show


if __name__ == "__main__":
    sys.exit(main())
