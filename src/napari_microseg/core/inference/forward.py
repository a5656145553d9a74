"""Run batches of tiles through a network: device, AMP, TTA, compile and out-of-memory fallback.

:class:`TileRunner` turns a batch of normalized tiles ``(B, C, h, w)`` already
on the device into probabilities ``(B, K, h, w)`` on the device
(:meth:`TileRunner.semantic_tensor`; :meth:`TileRunner.semantic` is the NumPy
twin), or into per-tile instance detections. It owns everything that depends
on the device:

* ``torch.inference_mode`` always; channels-last memory where it helps (CPU
  convolutions through oneDNN, and tensor cores on CUDA); cuDNN's autotuner
  on CUDA (tiles all have one shape);
* automatic mixed precision on CUDA by default (bfloat16 where the GPU has
  it, float16 otherwise); on the CPU where the processor computes bfloat16
  natively (AVX512-BF16, AMX): about twice as fast there, at bfloat16's
  precision (probabilities within ~1e-3);
* optionally ``torch.compile``; when compiling fails the run goes on without
  it, and says so;
* test-time augmentation: the 8 flips and rotations of each tile run as one
  batch (two for non-square tiles), each undone on the output before averaging;
* on an out-of-memory error the batch is halved, then the tile is split into
  halves (run as a small tiled prediction of its own, blended on the device),
  and the run goes on; every such step is recorded in
  :attr:`TileRunner.notices` for the user.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ..models.base import ModelError, SegmentationModel
from .device_tiles import DeviceMerger
from .dihedral import dihedral
from .inplace import inplace_activations
from .tiling import Blend, TilePlan

if TYPE_CHECKING:
    import torch

T = TypeVar("T")

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
    batch_size : int or None
        Tiles per forward pass; halved on out-of-memory errors. None: chosen
        for the device when the run starts (:mod:`.batch_size`).
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
    compile : bool
        Run the network through ``torch.compile`` (dropped, with a notice, if it fails).
    """

    device: Any
    batch_size: int | None = 4
    amp: bool = False
    channels_last: bool = False
    tta: bool = False
    activation: str = BY_CLASSES
    overlap: float = 0.25
    blend: Blend = "gaussian"
    min_tile: int = 1
    compile: bool = False


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


def out_of_memory_message(settings: RunnerSettings, shape: tuple[int, ...]) -> str:
    """What to do when even one tile at a time does not fit in the device's memory."""
    smaller = max(min(shape[-2:]) // 2, settings.min_tile, 1)
    where = settings.device
    cpu = "" if where.type == "cpu" else ", or run on the CPU (device='cpu', `--device cpu`)"
    return (
        f"Out of memory on {where} even for one {shape[-2]}x{shape[-1]} tile at a time (split "
        f"down to the network's minimum input). Use a smaller tile (tile_size={smaller}, "
        f"`microseg predict --tile {smaller}`), free memory on the device{cpu}. "
        "Nothing was written."
    )


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
        self.batch_size = max(int(settings.batch_size or 1), 1)
        self.split_level = 0
        self.notices: list[str] = []
        self.n_classes: int | None = None
        self._checked = False
        self._compiled: Callable[..., Any] | None = None
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
        benchmark = torch.backends.cudnn.benchmark
        if self.settings.device.type == "cuda":
            # Every tile has one shape: let cuDNN time its algorithms once and keep the fastest.
            torch.backends.cudnn.benchmark = True
        if self.settings.compile:
            self._compiled = torch.compile(module)

        def restore() -> None:
            torch.backends.cudnn.benchmark = benchmark
            self._compiled = None
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
        """Probabilities for a NumPy batch of tiles (a convenience twin of :meth:`semantic_tensor`).

        Parameters
        ----------
        tiles : (B, C, h, w) ndarray of float32
            Normalized tiles.

        Returns
        -------
        (B, K, h, w) ndarray of float32
            Per-class probabilities (or logits with activation ``"none"``).
        """
        import torch

        x = torch.from_numpy(np.ascontiguousarray(tiles, dtype=np.float32))
        return self.semantic_tensor(x.to(self.settings.device)).cpu().numpy()

    def semantic_tensor(self, tiles: torch.Tensor) -> torch.Tensor:
        """Probabilities for a batch of tiles on the device, halving the batch on out-of-memory.

        Parameters
        ----------
        tiles : (B, C, h, w) float32 tensor
            Normalized tiles on the runner's device.

        Returns
        -------
        (B, K, h, w) float32 tensor
            On the device.
        """
        import torch

        results: list[torch.Tensor] = []
        start = 0
        while start < len(tiles):
            chunk = tiles[start : start + self.batch_size]
            values = self._attempt(self._split_forward, chunk)
            if values is None:
                self._shrink(chunk.shape)
                continue
            results.append(values)
            start += len(chunk)
        return results[0] if len(results) == 1 else torch.cat(results)

    def _attempt(self, run: Callable[[Any], T], chunk: Any) -> T | None:
        """``run(chunk)``, or None when it ran out of memory.

        Returning (not handling the error in the caller's ``except``) drops the
        traceback, and with it the failed pass's tensors, before memory is freed.
        """
        try:
            return run(chunk)
        except Exception as error:
            if not is_out_of_memory(error):
                raise
        return None

    def probe(self, tiles: torch.Tensor) -> torch.Tensor:
        """One pass as the run makes them (TTA, AMP...), without any out-of-memory handling."""
        return self._forward(tiles)

    def _shrink(self, shape: tuple[int, ...]) -> None:
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
        raise ModelError(out_of_memory_message(self.settings, shape))

    def _notice(self, message: str) -> None:
        self.notices.append(message)
        warnings.warn(message, InferenceWarning, stacklevel=4)

    def _free_memory(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _split_forward(self, chunk: torch.Tensor) -> torch.Tensor:
        import torch

        if self.split_level == 0:
            return self._forward(chunk)
        rows, cols = chunk.shape[-2:]
        sub = (max(rows >> self.split_level, 1), max(cols >> self.split_level, 1))
        plan = TilePlan.create((rows, cols), sub, self.settings.overlap)
        blocks = []
        for tile in chunk:
            merger = None
            # One piece at a time: the batch is already down to 1 when tiles get split.
            for y, x in plan:
                value = self._forward(tile[None, :, y : y + sub[0], x : x + sub[1]])[0]
                if merger is None:
                    merger = DeviceMerger(
                        plan,
                        n_planes=1,
                        n_channels=value.shape[0],
                        height=rows,
                        width=cols,
                        blend=self.settings.blend,
                        device=value.device,
                    )
                merger.aggregate(value, (0, y, x))
            assert merger is not None
            blocks.append(merger.result()[:, 0])
        with torch.inference_mode():
            return torch.stack(blocks)

    def _forward(self, chunk: torch.Tensor) -> torch.Tensor:
        import torch

        with torch.inference_mode(), self._autocast():
            x = chunk
            if self.settings.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if not self.settings.tta:
                return self._probabilities(self._call(x), x)
            return self._tta(x)

    def _tta(self, x: torch.Tensor) -> torch.Tensor:
        """The mean probabilities of the 8 dihedral transforms, each undone; one or two passes."""
        import torch

        square = x.shape[-2] == x.shape[-1]
        # A quarter turn swaps rows and columns: such transforms batch together.
        passes = [range(8)] if square else [range(0, 8, 2), range(1, 8, 2)]
        total = None
        for indices in passes:
            batch = torch.cat([dihedral(x, index) for index in indices])
            logits = self._call(batch)
            self._check_output(logits, batch)
            for part, index in zip(logits.split(len(x)), indices):
                probs = self._probabilities(dihedral(part, index, inverse=True), x)
                total = probs if total is None else total.add_(probs)
        assert total is not None
        return total.div_(8.0)

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
                f"The network turned a batch {tuple(x.shape)} (N, C, H, W) into "
                f"{tuple(getattr(logits, 'shape', ()))}; tiled inference needs logits "
                "(N, K, H, W) of the input's H and W (a network without padding, or one that "
                "down-samples, does not fit). Nothing was written."
            )
        if self.n_classes is None:
            self.n_classes = int(logits.shape[1])

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        try:
            out = self._run_module(x)
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

    def _run_module(self, x: torch.Tensor) -> Any:
        if self._compiled is None:
            return self.model.module(x)
        try:
            return self._compiled(x)
        except Exception as error:
            if is_out_of_memory(error):
                raise
            # Compiling needs a compiler toolchain and a supported network; eager always works.
            self._compiled = None
            self._notice(
                f"torch.compile failed ({type(error).__name__}: {str(error).splitlines()[0]}); "
                "running the network without it."
            )
            return self.model.module(x)

    def _to_device(self, chunk: np.ndarray | torch.Tensor) -> torch.Tensor:
        import torch

        device = self.settings.device
        if isinstance(chunk, torch.Tensor):
            x = chunk.to(device)
        else:
            x = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32))
            x = x.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else x
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

    def instances(self, tiles: np.ndarray | torch.Tensor) -> list[dict[str, np.ndarray]]:
        """Instance detections for a batch of tiles, halving the batch on out-of-memory.

        Parameters
        ----------
        tiles : (B, C, h, w) ndarray or tensor of float32
            Normalized tiles; a tensor already on the device is used as it is.

        Returns
        -------
        list of dict
            Per tile: ``masks`` ``(M, h, w)``, ``scores`` ``(M,)`` as NumPy arrays.
        """
        results: list[dict[str, np.ndarray]] = []
        start = 0
        while start < len(tiles):
            chunk = tiles[start : start + self.batch_size]
            found = self._attempt(self._detect, chunk)
            if found is None:
                self._free_memory()
                if self.batch_size == 1:
                    raise ModelError(out_of_memory_message(self.settings, tuple(chunk.shape)))
                self.batch_size //= 2
                self._notice(f"Out of memory with {len(chunk)} tiles; now {self.batch_size}.")
                continue
            results.extend(found)
            start += len(chunk)
        return results

    def _detect(self, chunk: np.ndarray | torch.Tensor) -> list[dict[str, np.ndarray]]:
        import torch

        x = self._to_device(chunk)
        with torch.inference_mode(), self._autocast():
            found = self.model.predict_instances(x)
        return [{key: _numpy(value) for key, value in item.items()} for item in found]


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy() if value.is_floating_point() else value.cpu()
    return np.asarray(value)
