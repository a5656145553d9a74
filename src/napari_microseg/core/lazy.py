"""Public names of a package, imported on first use (PEP 562).

A stage's ``__init__`` lists its public names and the module that defines each;
nothing is imported until a name is used, so ``import napari_microseg`` and the
CLI's ``--help`` stay free of torch, and a stage's ``__init__`` never takes part
in an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_exports(
    package: str, homes: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a package whose names live in its modules.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    homes : dict of str to str
        Public name -> module that defines it, relative to ``package``
        (``"images"``) or absolute (``"napari_microseg.core.io.images"``).

    Returns
    -------
    getattr_, dir_ : callable
        To bind as the package's module-level ``__getattr__`` and ``__dir__``.

    Examples
    --------
    >>> get, names = lazy_exports("json", {"dumps": "json"})
    >>> get("dumps")({"a": 1})
    '{"a": 1}'
    """

    def getattr_(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = import_module(home if "." in home or home == package else f"{package}.{home}")
        return getattr(module, name)

    def dir_() -> list[str]:
        return sorted(homes)

    return getattr_, dir_
