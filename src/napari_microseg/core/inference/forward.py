"""Run batches of tiles through a network: device, AMP, TTA and out-of-memory fallback.

:class:`TileRunner` turns a NumPy batch of normalized tiles ``(B, C, h, w)``
into NumPy probabilities ``(B, K, h, w)`` (or per-tile instance detections).
It owns everything that depends on the device:

* ``torch.inference_mode`` always; channels-last memory where it helps (CPU
  convolutions through oneDNN, and tensor cores on CUDA);
* automatic mixed precision on CUDA by default (bfloat16 where the GPU has
  it, float16 otherwise); on the CPU only when asked (``amp=True``) and the
  processor computes bfloat16 natively (AVX512-BF16, AMX): about twice as
  fast there, at bfloat16's precision (probabilities within ~1e-3);
* test-time augmentation: the 8 flips and rotations of each tile, each undone
  on the output before averaging;
* on an out-of-memory error the batch is halved, then the tile is split into
  halves (run as a small tiled prediction of its own), and the run goes on;
  every such step is recorded in :attr:`TileRunner.notices` for the user.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..models.base import ModelError, SegmentationModel
from .tiling import Blend, TileMerger, TilePlan

if TYPE_CHECKING:
    import torch

#: ``activation`` value meaning softmax over K, or sigmoid when K == 1, decided from the output.
BY_CLASSES = "by-classes"


class InferenceWarning(UserWarning):
    """Inference went on differently than asked (smaller batches, split tiles...); says why."""


@dataclass
class RunnerSettings:
    """How tiles are run; filled in by :func:`~.predict.iter_predict`.

    Attributes
    ----------
    device : torch.device
        Where the network runs.
    batch_size : int
        Tiles per forward pass; halved on out-of-memory errors.
    amp : bool
        Mixed precision: bfloat16/float16 on CUDA, bfloat16 on the CPU.
    channels_last : bool
        Run convolutions on NHWC memory.
    tta : bool
        Average the 8 dihedral transforms of each tile.
    activation : str
        ``"softmax"``, ``"sigmoid"``, ``"none"`` or :data:`BY_CLASSES`.
    overlap : float
        Overlap of the sub-tiles when a tile has to be split.
    blend : {"gaussian", "average"}
        Blending of the sub-tiles.
    min_tile : int
        Smallest tile side the network accepts; tiles are never split below it.
    """

    device: Any
    batch_size: int = 4
    amp: bool = False
    channels_last: bool = False
    tta: bool = False
    activation: str = BY_CLASSES
    overlap: float = 0.25
    blend: Blend = "gaussian"
    min_tile: int = 1


def cpu_has_fast_bfloat16() -> bool:
    """True when oneDNN computes bfloat16 natively here (AVX512-BF16 or AMX)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA, MPS and CPU allocation failures."""
    import torch

    if isinstance(error, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def inplace_activations(module: torch.nn.Module) -> list[torch.nn.Module]:
    """Switch activations to in-place where that is provably safe; return those switched.

    An activation in an ``nn.Sequential`` right after a convolution, batch norm
    or linear layer receives a fresh tensor that nothing else holds, so
    overwriting it changes no result and saves a full-size allocation and a
    memory pass per layer (about 10% of a U-Net's time on the CPU). An
    activation registered anywhere else too (it may be called on other
    tensors in ``forward``) is left alone.
    """
    import itertools
    from collections import Counter

    import torch
    from torch import nn

    producers = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.GroupNorm, nn.Linear)
    activations = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.Hardtanh, nn.Hardswish)
    uses = Counter(id(m) for _, m in module.named_modules(remove_duplicate=False))
    switched = []
    for sequence in module.modules():
        if not isinstance(sequence, torch.nn.Sequential):
            continue
        children = list(sequence.children())
        for before, layer in itertools.pairwise(children):
            if (
                isinstance(layer, activations)
                and isinstance(before, producers)
                and not getattr(layer, "inplace", True)
                and uses[id(layer)] == 1
            ):
                layer.inplace = True
                switched.append(layer)
    return switched


def dihedral(x: torch.Tensor, index: int, *, inverse: bool = False) -> torch.Tensor:
    """Apply (or undo) the ``index``-th of the 8 flips/rotations to the last two axes."""
    import torch

    flip, turns = divmod(index, 4)
    if not inverse:
        if flip:
            x = torch.flip(x, dims=(-1,))
        return torch.rot90(x, turns, dims=(-2, -1))
    x = torch.rot90(x, -turns, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if flip else x


class TileRunner:
    """Runs tiles through a :class:`SegmentationModel` on one device.

    Use it as a context manager: entering moves the module to the device,
    switches it to eval mode (and channels-last); leaving restores the
    module's device, memory layout and training flag, so the caller's model is
    left as it was given.

    Parameters
    ----------
    model : SegmentationModel
        The network and its card.
    settings : RunnerSettings
        Device, batch size, AMP, TTA...
    """

    def __init__(self, model: SegmentationModel, settings: RunnerSettings) -> None:
        self.model = model
        self.settings = settings
        self.batch_size = max(int(settings.batch_size), 1)
        self.split_level = 0
        self.notices: list[str] = []
        self.n_classes: int | None = None
        self._checked = False
        self._restore: Callable[[], None] | None = None

    # ------------------------------------------------------------------ context

    def __enter__(self) -> TileRunner:
        import torch

        module = self.model.module
        was_training = module.training
        first = next(iter(module.parameters()), None)
        old_device = first.device if first is not None else torch.device("cpu")
        module.eval()
        module.to(self.settings.device)
        if self.settings.channels_last:
            module.to(memory_format=torch.channels_last)
        switched = inplace_activations(module)

        def restore() -> None:
            for activation in switched:
                activation.inplace = False
            if self.settings.channels_last:
                module.to(memory_format=torch.contiguous_format)
            module.to(old_device)
            module.train(was_training)

        self._restore = restore
        return self

    def __exit__(self, *exc: object) -> None:
        if self._restore is not None:
            self._restore()
            self._restore = None

    # ------------------------------------------------------------------ semantic

    def semantic(self, tiles: np.ndarray) -> np.ndarray:
        """Probabilities for a batch of tiles.

        Parameters
        ----------
        tiles : (B, C, h, w) ndarray of float32
            Normalized tiles.

        Returns
        -------
        (B, K, h, w) ndarray of float32
            Per-class probabilities (or logits with activation ``"none"``).
        """
        results: list[np.ndarray] = []
        start = 0
        while start < len(tiles):
            chunk = tiles[start : start + self.batch_size]
            try:
                results.append(self._split_forward(chunk))
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                self._shrink(error, chunk.shape)
                continue
            start += len(chunk)
        return np.concatenate(results)

    def _shrink(self, error: BaseException, shape: tuple[int, ...]) -> None:
        """Halve the batch, else the tile; raise when neither can shrink."""
        self._free_memory()
        if self.batch_size > 1:
            self.batch_size = max(self.batch_size // 2, 1)
            self._notice(f"Out of memory with {shape[0]} tiles per batch; now {self.batch_size}.")
            return
        side = min(shape[-2:]) // 2 ** (self.split_level + 1)
        if side >= max(self.settings.min_tile, 1) and side >= 1:
            self.split_level += 1
            self._notice(
                f"Out of memory on one {shape[-2]}x{shape[-1]} tile; splitting each tile into "
                f"{4**self.split_level} overlapping parts of about {side}x{side}."
            )
            return
        raise ModelError(
            f"Out of memory even for one {shape[-2]}x{shape[-1]} tile split down to the "
            f"network's minimum; free memory on {self.settings.device} or use device='cpu'."
        ) from error

    def _notice(self, message: str) -> None:
        self.notices.append(message)
        warnings.warn(message, InferenceWarning, stacklevel=4)

    def _free_memory(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _split_forward(self, chunk: np.ndarray) -> np.ndarray:
        if self.split_level == 0:
            return self._forward(chunk)
        rows, cols = chunk.shape[-2:]
        sub = (max(rows >> self.split_level, 1), max(cols >> self.split_level, 1))
        plan = TilePlan.create((rows, cols), sub, self.settings.overlap)
        out = None
        for index, tile in enumerate(chunk):
            pieces = np.stack([tile[:, y : y + sub[0], x : x + sub[1]] for y, x in plan])
            # One piece at a time: the batch is already down to 1 when tiles get split.
            values = np.concatenate([self._forward(piece[None]) for piece in pieces])
            merger = TileMerger(
                plan,
                n_planes=1,
                n_channels=values.shape[1],
                height=rows,
                width=cols,
                blend=self.settings.blend,
            )
            for value, origin in zip(values, plan):
                merger.aggregate(value, (0, *origin))
            (_, block), *_ = merger.finalize()
            if out is None:
                out = np.empty((len(chunk), values.shape[1], rows, cols), np.float32)
            out[index] = block[:, 0]
        assert out is not None
        return out

    def _forward(self, chunk: np.ndarray) -> np.ndarray:
        import torch

        x = self._to_device(chunk)
        with torch.inference_mode(), self._autocast():
            if not self.settings.tta:
                probs = self._probabilities(self._call(x), x)
            else:
                probs = None
                for index in range(8):
                    y = self._call(dihedral(x, index))
                    y = self._probabilities(dihedral(y, index, inverse=True), x)
                    probs = y if probs is None else probs + y
                probs = probs / 8.0
        return probs.float().cpu().numpy()

    def _probabilities(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self._check_output(logits, x)
        logits = logits.float()
        activation = self.settings.activation
        if activation == BY_CLASSES:
            activation = "sigmoid" if logits.shape[1] == 1 else "softmax"
        if activation == "softmax":
            return logits.softmax(dim=1)
        if activation == "sigmoid":
            return logits.sigmoid()
        return logits

    def _check_output(self, logits: Any, x: torch.Tensor) -> None:
        if getattr(logits, "ndim", 0) != 4 or tuple(logits.shape[-2:]) != tuple(x.shape[-2:]):
            raise ModelError(
                f"The network turned a batch {tuple(x.shape)} into "
                f"{tuple(getattr(logits, 'shape', ()))}; tiled inference needs logits "
                "(N, K, H, W) of the input's H and W."
            )
        if self.n_classes is None:
            self.n_classes = int(logits.shape[1])

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        try:
            out = self.model.module(x)
        except RuntimeError as error:
            if self._checked or is_out_of_memory(error):
                raise
            raise ModelError(
                f"The network failed on a batch of shape {tuple(x.shape)} (N, C, H, W): {error}. "
                f"Check that it takes {x.shape[1]} input channel(s) and that the tile size "
                f"{x.shape[-2]}x{x.shape[-1]} is at least the network's minimum input."
            ) from error
        self._checked = True
        # Torchvision segmentation nets return {"out": ...}; deep supervision returns a tuple.
        if isinstance(out, dict):
            out = out.get("out", next(iter(out.values())))
        elif isinstance(out, list | tuple):
            out = out[0]
        return out

    def _to_device(self, chunk: np.ndarray) -> torch.Tensor:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32))
        device = self.settings.device
        if device.type == "cuda":
            x = x.pin_memory().to(device, non_blocking=True)
        else:
            x = x.to(device)
        if self.settings.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _autocast(self) -> Any:
        import contextlib

        import torch

        kind = self.settings.device.type
        if not self.settings.amp or kind not in ("cuda", "cpu"):
            return contextlib.nullcontext()
        if kind == "cpu":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    # ------------------------------------------------------------------ instances

    def instances(self, tiles: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Instance detections for a batch of tiles, halving the batch on out-of-memory.

        Returns
        -------
        list of dict
            Per tile: ``masks`` ``(M, h, w)``, ``scores`` ``(M,)`` as NumPy arrays.
        """
        results: list[dict[str, np.ndarray]] = []
        start = 0
        while start < len(tiles):
            chunk = tiles[start : start + self.batch_size]
            try:
                results.extend(self._detect(chunk))
            except Exception as error:
                if not is_out_of_memory(error) or self.batch_size == 1:
                    raise
                self._free_memory()
                self.batch_size //= 2
                self._notice(f"Out of memory with {len(chunk)} tiles; now {self.batch_size}.")
                continue
            start += len(chunk)
        return results

    def _detect(self, chunk: np.ndarray) -> list[dict[str, np.ndarray]]:
        import torch

        x = self._to_device(chunk)
        with torch.inference_mode(), self._autocast():
            found = self.model.predict_instances(x)
        return [{key: _numpy(value) for key, value in item.items()} for item in found]


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy() if value.is_floating_point() else value.cpu()
    return np.asarray(value)
