"""The core never imports napari or Qt; the package root stays light."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import napari_microseg.core as core

FORBIDDEN = ("napari", "qtpy", "magicgui", "PyQt5", "PyQt6", "PySide2", "PySide6", "vispy")


def core_modules() -> list[str]:
    return sorted(
        m.name for m in pkgutil.walk_packages(core.__path__, prefix="napari_microseg.core.")
    )


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


def test_every_core_module_imports_without_napari_or_qt():
    modules = core_modules()
    assert "napari_microseg.core.io.images" in modules
    statement = "; ".join(f"import {m}" for m in modules)
    loaded = _loaded_after(statement)
    bad = sorted(m for m in loaded if m.split(".")[0] in FORBIDDEN)
    assert not bad, f"core pulled in {bad[:5]}"


def test_package_root_and_cli_do_not_import_torch_or_napari():
    loaded = _loaded_after(
        "import napari_microseg, napari_microseg.cli; napari_microseg.cli.build_parser()"
    )
    heavy = sorted(m for m in loaded if m.split(".")[0] in ("torch", "napari", "qtpy"))
    assert not heavy, f"light imports pulled in {heavy[:5]}"


def test_every_public_name_resolves():
    import napari_microseg

    for name in napari_microseg.__all__:
        assert getattr(napari_microseg, name) is not None, name
