"""Segment widget: "Export model to bioimage.io…" writes a package off the GUI thread."""

from __future__ import annotations

import zipfile

import pytest

from napari_microseg._widgets import _model_export
from napari_microseg._widgets.segment import SegmentWidget

pytest.importorskip("bioimageio.spec", reason="the [bioimageio] extra is not installed")


@pytest.fixture
def widget(make_napari_viewer, model_registry):
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model_combo.value = "tiny-grey"
    return widget


def click_and_wait(widget, qtbot):
    widget.export_model_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.runner.worker is None, timeout=120000)


@pytest.mark.slow
def test_export_button_writes_a_package_the_importer_reads(widget, qtbot, tmp_path, monkeypatch):
    from napari_microseg.core.models.bioimageio_import import import_bioimageio

    asked = []
    monkeypatch.setattr(
        _model_export,
        "ask_package_path",
        lambda parent, entry: (
            asked.append(entry.name) or tmp_path / "tiny"
        ),  # no suffix typed: .zip is added
    )
    click_and_wait(widget, qtbot)
    package = tmp_path / "tiny.zip"
    assert asked == ["tiny-grey"] and package.exists()
    assert "rdf.yaml" in zipfile.ZipFile(package).namelist()
    imported = import_bioimageio(package, name="tiny-back", folder=tmp_path / "models")
    assert imported.exists()


def test_a_foreign_file_is_never_replaced(widget, qtbot, tmp_path, monkeypatch):
    errors = []
    monkeypatch.setattr(_model_export, "ask_package_path", lambda parent, entry: tmp_path / "x.zip")
    monkeypatch.setattr("napari_microseg._widgets._runner.show_error", errors.append)
    (tmp_path / "x.zip").write_bytes(b"the user's own archive")
    click_and_wait(widget, qtbot)
    assert (tmp_path / "x.zip").read_bytes() == b"the user's own archive"
    assert errors and "not written by napari-microseg" in errors[0]


def test_cancelled_dialog_does_nothing(widget, qtbot, monkeypatch):
    monkeypatch.setattr(_model_export, "ask_package_path", lambda parent, entry: None)
    widget.export_model_button.clicked.emit()
    assert widget.runner.worker is None
