"""The GUI runs on a current Qt: PyQt6 or PySide6, and napari starts without Qt warnings."""

from __future__ import annotations

import warnings


def test_qt_binding_is_qt6():
    import qtpy

    assert qtpy.API_NAME in {"PyQt6", "PySide6"}, (
        f"GUI tests run on {qtpy.API_NAME}; install the test extra (PyQt6) or set QT_API=pyqt6"
    )


def test_napari_starts_without_a_qt_deprecation_notice(make_napari_viewer):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_napari_viewer()
    about_qt = [str(w.message) for w in caught if "qt" in str(w.message).lower()]
    assert about_qt == []
