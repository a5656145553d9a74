"""Pick the device that runs a model: CUDA, then Apple MPS, then the CPU.

One helper for the CLI, the widgets and the trainer, so that every front end
says the same thing about what it picked and why.

Examples
--------
>>> choice = select_device("cpu")
>>> str(choice)
'cpu (CPU)'
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

#: The values a user may ask for (besides ``"cuda:N"``).
CHOICES = ("auto", "cpu", "cuda", "gpu", "mps")


class DeviceWarning(UserWarning):
    """A requested device is not available; another one is used instead."""


@dataclass(frozen=True)
class DeviceChoice:
    """The device picked, in words as well.

    Attributes
    ----------
    kind : {"cuda", "mps", "cpu"}
        The device type.
    index : int or None
        The CUDA device index.
    name : str
        The GPU's name (``"NVIDIA GeForce RTX 3060"``), ``"Apple GPU (MPS)"`` or ``"CPU"``.
    requested : str
        What was asked for.
    note : str
        Why the request could not be honoured as asked; empty when it was.
    """

    kind: str
    index: int | None = None
    name: str = "CPU"
    requested: str = "auto"
    note: str = ""

    @property
    def spec(self) -> str:
        """``"cuda:0"``, ``"mps"`` or ``"cpu"``: what ``torch.device`` takes."""
        return f"{self.kind}:{self.index}" if self.index is not None else self.kind

    @property
    def device(self) -> torch.device:
        """The ``torch.device``."""
        import torch

        return torch.device(self.spec)

    @property
    def is_gpu(self) -> bool:
        return self.kind != "cpu"

    def __str__(self) -> str:
        return f"{self.spec} ({self.name})"


def _mps_available(torch_module) -> bool:
    mps = getattr(torch_module.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _cuda(torch_module, index: int, requested: str, note: str = "") -> DeviceChoice:
    name = torch_module.cuda.get_device_name(index)
    return DeviceChoice("cuda", index, name, requested, note)


def _fallback(requested: str, note: str, *, warn: bool) -> DeviceChoice:
    if warn:
        warnings.warn(note, DeviceWarning, stacklevel=3)
    return DeviceChoice("cpu", None, "CPU", requested, note)


def select_device(
    requested: str | torch.device | None = "auto", *, warn: bool = True
) -> DeviceChoice:
    """Pick a device: the one asked for if it exists, otherwise the best available.

    Parameters
    ----------
    requested : str, torch.device or None
        ``"auto"`` (or None): CUDA, then MPS, then CPU. ``"gpu"``: CUDA or MPS.
        ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"cpu"``: that device.
    warn : bool
        Emit a :class:`DeviceWarning` when the request cannot be honoured (the
        message is in ``note`` either way).

    Returns
    -------
    DeviceChoice
        What was picked, with the GPU's name and, after a fallback, a note saying why.

    Raises
    ------
    ValueError
        For a request that names no device type (``"tpu"``).
    """
    import torch

    text = "auto" if requested is None else str(requested).strip().lower()
    kind, _, index_text = text.partition(":")
    if kind not in CHOICES or (index_text and (kind != "cuda" or not index_text.isdigit())):
        raise ValueError(
            f"Unknown device {requested!r}; choose one of {', '.join(CHOICES)} or 'cuda:N'."
        )
    cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if kind == "cpu":
        return DeviceChoice("cpu", None, "CPU", text)
    if kind in ("auto", "gpu", "cuda") and cuda_count:
        index = int(index_text) if index_text else 0
        if index >= cuda_count:
            gpus = ", ".join(f"cuda:{i}" for i in range(cuda_count))
            note = f"{text} does not exist (this machine has {gpus}); using cuda:0."
            if warn:
                warnings.warn(note, DeviceWarning, stacklevel=2)
            return _cuda(torch, 0, text, note)
        return _cuda(torch, index, text)
    if kind in ("auto", "gpu", "mps") and _mps_available(torch):
        note = "" if kind != "cuda" else "No CUDA GPU is available; using the Apple GPU (MPS)."
        return DeviceChoice("mps", None, "Apple GPU (MPS)", text, note)
    if kind == "auto":
        return DeviceChoice("cpu", None, "CPU", text)
    what = {"cuda": "A CUDA GPU", "mps": "The Apple GPU (MPS)", "gpu": "A GPU"}[kind]
    why = (
        "this PyTorch was built without CUDA"
        if kind in ("cuda", "gpu") and not torch.backends.cuda.is_built()
        else "none was found (check the driver, or CUDA_VISIBLE_DEVICES)"
        if kind != "mps"
        else "it needs macOS 12.3+ on Apple silicon"
    )
    return _fallback(
        text, f"{what} was requested but {why}; running on the CPU, which is slower.", warn=warn
    )


def available_devices() -> list[DeviceChoice]:
    """Every device this machine offers, best first, for a device picker."""
    import torch

    choices: list[DeviceChoice] = []
    if torch.cuda.is_available():
        choices += [_cuda(torch, i, f"cuda:{i}") for i in range(torch.cuda.device_count())]
    if _mps_available(torch):
        choices.append(DeviceChoice("mps", None, "Apple GPU (MPS)", "mps"))
    choices.append(DeviceChoice("cpu", None, "CPU", "cpu"))
    return choices
