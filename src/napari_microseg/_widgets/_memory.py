"""What the widgets remember between sessions (the last export folder), in one small file.

The file is ``widgets.json`` in the user's configuration folder
(``~/.config/napari-microseg`` on Linux), or in ``NAPARI_MICROSEG_CONFIG`` when set.
A missing or unreadable file is an empty memory, never an error: forgetting a
folder must not stop an export.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

#: Environment variable naming another folder for the widgets' memory.
ENV_FOLDER = "NAPARI_MICROSEG_CONFIG"


def memory_file() -> Path:
    """Where the widgets' memory is kept."""
    folder = os.environ.get(ENV_FOLDER)
    if not folder:
        from platformdirs import user_config_path

        folder = user_config_path("napari-microseg")
    return Path(folder) / "widgets.json"


def recall(key: str) -> Any:
    """The value remembered under ``key``, or None."""
    try:
        return json.loads(memory_file().read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def remember(key: str, value: Any) -> None:
    """Keep ``value`` under ``key`` (best effort: a read-only home only forgets it)."""
    path = memory_file()
    try:
        known = json.loads(path.read_text()) if path.exists() else {}
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    known[key] = value
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(known, indent=1))
        os.replace(temporary, path)
    except OSError:
        pass
