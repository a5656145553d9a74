"""The Segment widget's "Export to bioimage.io…" action: a save dialog, then a core job.

The package is written off the GUI thread by
:func:`~napari_microseg.core.models.bioimageio_export.export_bioimageio_job`; a file
that is not one of our packages is never replaced (the job refuses it, and the
runner shows why in one sentence).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from napari.utils.notifications import show_info, show_warning

if TYPE_CHECKING:
    from qtpy.QtWidgets import QWidget

    from ..core.models.entries import ModelEntry
    from ._runner import JobRunner


class ExportHost(Protocol):
    """What the export uses of the Segment widget: its runner and its Qt widget."""

    runner: JobRunner
    native: QWidget


def ask_package_path(parent: QWidget, entry: ModelEntry) -> Path | None:
    """Ask where to write the package (tests replace this function); None when cancelled."""
    from qtpy.QtWidgets import QFileDialog

    path, _ = QFileDialog.getSaveFileName(
        parent,
        "Export to bioimage.io",
        str(Path.cwd() / f"{entry.name}.bioimageio.zip"),
        "bioimage.io model package (*.zip)",
    )
    return Path(path) if path else None


def export_model_package(host: ExportHost, entry: ModelEntry | None) -> None:
    """Export ``entry`` as a bioimage.io package where the user chooses.

    The save dialog has already asked before an existing file is replaced, so an
    existing package of ours is overwritten; any other file is refused by the job.
    """
    if entry is None or not entry.usable:
        show_warning("Choose a usable model to export.")
        return
    if entry.task != "semantic":
        show_warning(
            f"{entry.name} is an instance model; bioimage.io export covers 2D semantic models."
        )
        return
    out = ask_package_path(host.native, entry)
    if out is None:
        return
    if out.suffix.lower() != ".zip":
        out = out.with_name(out.name + ".zip")
    from ..core.models.bioimageio_export import export_bioimageio_job

    job = export_bioimageio_job(entry.path, out, overwrite=out.exists())
    host.runner.start(
        job,
        lambda path: show_info(
            f"Wrote {path}: bioimage.io tools open it, and `microseg models import` reads it."
        ),
        cancel_message=None,
    )
