"""Run a bioimage.io package behind our model contract, loading nothing unsafely.

Our tiler hands a model normalized float32 tiles ``(N, C, H, W)`` and expects
per-class values ``(N, K, H, W)``. :class:`PackageNetwork` adapts a package's
network to that: it reorders axes to the package's, pads each tile to a size
the network accepts (and crops the result back), runs a 3D network on the
``2n + 1`` neighbouring slices our plane loop gives a model with
``context_slices = n`` and keeps the middle slice, and applies the package's
elementwise postprocessing (sigmoid, softmax, clip, scale_linear).

Weights are never unpickled: a state dict is read with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain
containers, and TorchScript with ``torch.jit.load``, whose archive reader
builds only TorchScript objects and never imports or calls Python code.
"""

from __future__ import annotations

import io
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import ModelError, SegmentationModel
from .bioimageio_package import ImportPlan, Package, check_weights, open_package, plan_package
from .build import build_model, build_module
from .checkpoint import load_state_into

__all__ = ["PackageNetwork", "load_package", "load_plan"]


def _valid(size: int, low: int, step: int) -> int:
    if step <= 0:
        return max(size, low) if low <= 1 else low
    return (
        size
        if size >= low and (size - low) % step == 0
        else low + step * max(0, -(-(size - low) // step))
    )


def _reorder(tensor: torch.Tensor, have: str, want: str) -> torch.Tensor:
    """``tensor`` with axes ``have`` as axes ``want``; axes only one side has are of size 1."""
    for letter in [a for a in have if a not in want]:
        tensor = tensor.squeeze(have.index(letter))
        have = have.replace(letter, "")
    for letter in [a for a in want if a not in have]:
        tensor = tensor.unsqueeze(0)
        have = letter + have
    return tensor.permute([have.index(a) for a in want])


class PackageNetwork(nn.Module):
    """A package's network mapping our ``(N, C·S, H, W)`` tiles to ``(N, K, H, W)``.

    Parameters
    ----------
    network : torch.nn.Module
        The loaded network (TorchScript or one of our architectures).
    plan : ImportPlan
        Axes, accepted sizes, slices (S; 1 for 2D) and postprocessing of the package.
    """

    def __init__(self, network: nn.Module, plan: ImportPlan) -> None:
        super().__init__()
        self.network = network
        self.input_axes = plan.input_axes
        self.output_axes = plan.output_axes
        self.sizes = dict(plan.sizes)
        self.z_slices = plan.z_slices
        self.context = plan.card.context_slices
        self.post = list(plan.post)
        self.spatial = "zyx" if plan.z_slices else "yx"
        # Tell the tiler the size granularity (see inference.job.min_tile), so it mirrors
        # small planes up itself, as it does for our own networks, and we rarely pad here.
        low, step = self.sizes.get("y", (1, 1))
        if step > 1 and low % step == 0 and self.sizes.get("x", (1, 1)) == (low, step):
            self.multiple = step
        for op, kwargs in self.post:
            if any(isinstance(v, list) for v in kwargs.values() if not isinstance(v, str)) and (
                op != "softmax"
            ):
                raise ModelError(f"Per-channel {op} postprocessing is not supported.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-class values ``(N, K, H, W)`` for a normalized batch."""
        if self.z_slices:
            n, stacked, height, width = x.shape
            depth = 2 * self.context + 1
            x = x.reshape(n, depth, stacked // depth, height, width).transpose(1, 2)
            x = x[:, :, : self.z_slices]  # an even slab needs one slice less
        shape = x.shape[2:]
        pads: list[int] = []
        for letter, size in zip(reversed(self.spatial), reversed(shape)):
            low, step = self.sizes.get(letter, (1, 1))
            extra = _valid(int(size), low, step) - int(size)
            if extra < 0:
                raise ModelError(
                    f"The network takes {letter} sizes of exactly {low}; a tile of {size} is too "
                    "big. Use a smaller tile size."
                )
            pads += [extra // 2, extra - extra // 2]
        if any(pads):
            small = any(p >= s for p, s in zip(pads[::2], reversed(shape)))
            x = F.pad(x, pads, mode="replicate" if small else "reflect")
        have = "bc" + self.spatial
        if "b" in self.input_axes:
            y = self._run(_reorder(x, have, self.input_axes))
            y = _reorder(y, self.output_axes, have)
        else:  # no batch axis: one image at a time
            y = torch.cat(
                [
                    _reorder(
                        self._run(_reorder(x[i], have[1:], self.input_axes)), self.output_axes, have
                    )
                    for i in range(x.shape[0])
                ]
            )
        index = [slice(None), slice(None)]
        for begin, size in zip(pads[::2][::-1], shape):
            index.append(slice(begin, begin + int(size)))
        y = y[tuple(index)]
        if self.z_slices:
            y = y[:, :, self.context]
        return self._postprocess(y.float())

    def _run(self, tensor: torch.Tensor) -> torch.Tensor:
        out = self.network(tensor)
        if isinstance(out, tuple | list):
            out = out[0]
        if isinstance(out, dict):
            out = next(iter(out.values()))
        return out

    def _postprocess(self, y: torch.Tensor) -> torch.Tensor:
        # After forward, y is (N, K, H, W): "channel" is axis 1 whatever the package's order.
        for op, kwargs in self.post:
            if op == "sigmoid":
                y = torch.sigmoid(y)
            elif op == "softmax":
                y = torch.softmax(y, dim=1)
            elif op == "clip":
                y = y.clamp(kwargs.get("min"), kwargs.get("max"))
            elif op == "scale_linear":
                y = y * float(kwargs.get("gain", 1.0)) + float(kwargs.get("offset", 0.0))
        return y


def _load_state(data: bytes, filename: str) -> dict[str, torch.Tensor]:
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ModelError(
            f"Refused to load {filename}: loading it would run code or build Python objects "
            "other than tensors. Only plain state dicts are loaded."
        ) from error
    except (RuntimeError, EOFError, ValueError) as error:
        raise ModelError(f"{filename} is not a readable PyTorch state dict ({error}).") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{filename} holds no state dict (names mapped to tensors).")
    return state


def _load_torchscript(data: bytes, filename: str) -> nn.Module:
    try:
        return torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as error:  # the archive reader raises many kinds; all mean "unusable"
        raise ModelError(
            f"{filename} is not TorchScript napari-microseg can load ({str(error)[:300]})."
        ) from error


def load_plan(package: Package, plan: ImportPlan) -> SegmentationModel:
    """The model ``plan`` describes, its weights checked and loaded safely, on the CPU."""
    data = check_weights(package, plan)
    card = plan.card
    filename = Path(plan.weights_file).name
    if plan.weights_format == "pytorch_state_dict" and plan.family:
        state = _load_state(data, filename)
        if plan.native:
            model = build_model(card)
            load_state_into(model.module, state, model=card.name)
            return model.eval()
        network = build_module(
            plan.family,
            in_channels=card.in_channels,
            n_classes=card.n_classes,
            hyperparameters=card.hyperparameters,
            model_name=card.name,
        )
        load_state_into(network, state, model=card.name)
    else:
        network = _load_torchscript(data, filename)
    return SegmentationModel(PackageNetwork(network, plan), card, activation="none").eval()


def load_package(path: str | Path, device: Any = "cpu") -> SegmentationModel:
    """Load a bioimage.io package (``.zip`` or ``rdf.yaml``) ready for inference.

    Raises
    ------
    ModelError
        Naming the problem: unknown spec version, missing weights, checksum
        mismatch, unsupported weights, axes or processing, or unsafe content.
    """
    from .device import select_device

    package = open_package(path)
    model = load_plan(package, plan_package(package))
    model.to(select_device(device).device)
    return model.eval()
