"""The device side of tiled inference: bands in, blended bands out, one copy each way.

A GPU is only busy when the host does not make it wait. So everything between
reading pixels and writing probabilities happens where the network runs:

* :func:`stage` (host, in a reader thread) turns a band of raw pixels into a
  tensor in pinned memory, in the image's own dtype when torch has it
  (uint8/uint16 travel at 1-2 bytes per pixel, not 4);
* :func:`upload` is the one host-to-device copy of that band (non-blocking
  from pinned memory on CUDA);
* :class:`DeviceNormalizer` maps it to float32 on the device, with the
  statistics fitted once on the whole image, and :func:`with_context` makes
  neighbouring slices into channels (2.5D models) there too;
* :class:`DeviceMerger` blends the tiles' probabilities into a band of rows
  in float32 on the device and releases finished rows;
* :func:`download` is the one device-to-host copy of a finished band
  (asynchronous on CUDA: the device goes on with the next band meanwhile).

Blending identical values is exact: tile ``i`` is folded in as
``acc = lerp(acc, values, w_i / W_i)``, where ``W_i`` is the running sum of the
(normalised) weights at each pixel. The first tile to reach a pixel has
``w / W = 1`` (an IEEE division of a number by itself), so it is copied
exactly; a later tile with the same values changes nothing, because
``lerp(v, v, r) == v``. So ``f(x) = x + 1`` comes back as exactly ``x + 1`` with
float32 accumulators, which the host merger needed float64 for. For different
values it is the weighted mean ``sum(w_i v_i) / sum(w_i)``, to float32 rounding.

Examples
--------
>>> import torch
>>> from napari_microseg.core.inference.tiling import TilePlan
>>> plan = TilePlan.create((5, 7), tile=4, overlap=0.5)
>>> merger = DeviceMerger(plan, n_planes=1, n_channels=1, height=5, width=7, device="cpu")
>>> for y0, x0 in plan:
...     merger.aggregate(torch.full((1, 4, 4), 0.3), (0, y0, x0))
>>> [(start, pending)] = merger.pop_ready()
>>> block = pending.result()
>>> start, block.shape, bool((block == np.float32(0.3)).all())
(0, (1, 1, 5, 7), True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from .normalize import Normalizer
from .tiling import Blend, RowRelease, TilePlan, check_blend, normalized_windows

if TYPE_CHECKING:
    import torch

T = TypeVar("T")

#: Dtypes that travel to the device as they are; anything else is sent as float32.
TRAVELLING_DTYPES = ("uint8", "int8", "uint16", "int16", "float16", "float32")


def stage(block: np.ndarray, device: torch.device) -> torch.Tensor:
    """A band as it travels to ``device``: a host tensor, pinned when the device is CUDA.

    Parameters
    ----------
    block : (P, C, rows, cols) ndarray
        Raw pixels of a band (any dtype); may be a view of the caller's image.
    device : torch.device
        Where the band is going.

    Returns
    -------
    (P, C, rows, cols) tensor
        In ``block``'s dtype when torch moves it as is, else float32; never
        sharing memory with ``block`` when it may be written to later.
    """
    import torch

    if block.dtype == bool:
        block = block.view(np.uint8)
    if block.dtype.name not in TRAVELLING_DTYPES:
        block = block.astype(np.float32)  # int32/64, float64...: as the host normalizer does
    tensor = torch.from_numpy(np.ascontiguousarray(block))
    if device.type == "cuda":
        return tensor.pin_memory()  # a page-locked copy: the upload can then run asynchronously
    return tensor


def upload(staged: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The one host-to-device copy of a band (non-blocking from pinned memory).

    On the CPU this moves nothing; the caller then must not write into the
    result in place, since it may share memory with the image.
    """
    if staged.device == device:
        return staged
    return staged.to(device, non_blocking=staged.is_pinned())


class Download:
    """A finished band on its way to the host; :meth:`result` waits for it.

    On CUDA the copy goes into pinned memory asynchronously and an event marks
    its end, so the host queues the next band's work before it waits.
    """

    def __init__(self, host: torch.Tensor, event: Any = None) -> None:
        self._host = host
        self._event = event

    def result(self) -> np.ndarray:
        """The band as a float32 ndarray, once the copy has finished."""
        if self._event is not None:
            self._event.synchronize()
        return self._host.numpy()


def download(tensor: torch.Tensor) -> Download:
    """The one device-to-host copy of a finished band.

    Parameters
    ----------
    tensor : (K, S, rows, cols) tensor
        The finished rows; copied now (in stream order), so the caller may
        overwrite ``tensor`` right after.

    Returns
    -------
    Download
    """
    import torch

    if tensor.device.type == "cuda":
        host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        host.copy_(tensor, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return Download(host, event)
    return Download(tensor.to("cpu", copy=True))


class DeviceNormalizer:
    """A fitted :class:`~.normalize.Normalizer` applied on the device.

    Gives the same float32 values as the host normalizer: ``x - offset``, then
    times ``1 / scale`` (computed in float64, rounded to float32), then the clip
    and, for floating-point input, NaN to 0 and infinities to 0 or 1.

    Parameters
    ----------
    normalizer : Normalizer
        Fitted on the whole image.
    device : torch.device
        Where bands are normalized.
    """

    def __init__(self, normalizer: Normalizer, device: torch.device) -> None:
        import torch

        offset = np.asarray(normalizer.offset, np.float64)
        inverse = (1.0 / np.asarray(normalizer.scale, np.float64)).astype(np.float32)
        shape = (1, -1, 1, 1) if offset.size > 1 else ()
        self.offset = torch.tensor(offset.astype(np.float32), device=device).reshape(shape)
        self.inverse = torch.tensor(inverse, device=device).reshape(shape)
        self.clip = bool(normalizer.clip)
        self.curve = (
            None
            if normalizer.curve is None
            else torch.tensor(np.asarray(normalizer.curve, np.float32), device=device)
        )

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        """Normalize a band ``(P, C, rows, cols)`` to a new float32 tensor."""
        import torch

        with torch.inference_mode():
            # Out of place first: on the CPU ``raw`` may share memory with the image.
            x = raw.to(torch.float32) - self.offset
            x.mul_(self.inverse)
            if self.curve is not None:
                x = apply_curve(x, self.curve)
            if self.clip:
                x.clamp_(0.0, 1.0)
            if raw.is_floating_point():
                torch.nan_to_num_(x, nan=0.0, posinf=1.0, neginf=0.0)
        return x


def apply_curve(x: torch.Tensor, curve: torch.Tensor) -> torch.Tensor:
    """``np.interp(x, curve[0], curve[1])`` on the device (ends held flat beyond the curve).

    Parameters
    ----------
    x : tensor of float32
        Any shape.
    curve : (2, K) tensor of float32
        Row 0 strictly increasing.

    Returns
    -------
    tensor of float32
        The shape of ``x``.
    """
    import torch

    xs, ys = curve[0].contiguous(), curve[1].contiguous()
    if xs.numel() == 1:
        return torch.full_like(x, float(ys[0]))
    right = torch.bucketize(x, xs).clamp_(1, xs.numel() - 1)
    left = right - 1
    x0, x1, y0, y1 = xs[left], xs[right], ys[left], ys[right]
    t = ((x - x0) / (x1 - x0)).clamp_(0.0, 1.0)
    out = torch.lerp(y0, y1, t)
    # NaN stays NaN, as np.interp leaves it (the caller turns it into 0).
    return torch.where(torch.isnan(x), x, out)


def with_context(x: torch.Tensor, context: int) -> torch.Tensor:
    """Planes with ``context`` neighbours on each side as extra channels.

    Parameters
    ----------
    x : (S + 2 * context, C, rows, cols) tensor
        A band of consecutive planes, ``context`` extra on each side.
    context : int
        Neighbours per side.

    Returns
    -------
    (S, C * (2 * context + 1), rows, cols) tensor
        Channels neighbour by neighbour (plane ``-context`` first), as
        :meth:`.planes.View.read_band` orders them.
    """
    if not context:
        return x
    import torch

    count = x.shape[0] - 2 * context
    with torch.inference_mode():
        return torch.cat([x[i : i + count] for i in range(2 * context + 1)], dim=1)


def device_band(
    staged: torch.Tensor, device: torch.device, normalizer: DeviceNormalizer, context: int
) -> torch.Tensor:
    """A staged band on the device, ready to cut into tiles.

    Parameters
    ----------
    staged : (S + 2 * context, C, rows, cols) tensor
        From :func:`stage`.
    device : torch.device
        Where the network runs.
    normalizer : DeviceNormalizer
        The image's normalization.
    context : int
        Neighbouring planes per side that become channels.

    Returns
    -------
    (S, C * (2 * context + 1), rows, cols) float32 tensor
        Uploaded once (:func:`upload`), normalized and with context channels, on ``device``.
    """
    return with_context(normalizer(upload(staged, device)), context)


def read_ahead(items: Iterable[T], read: Callable[[T], Any], *, threaded: bool) -> Iterator[Any]:
    """``(item, read(item))`` in order, reading the next item in a thread meanwhile.

    Closing the iterator waits for the read in flight (one band at most) and
    starts no other.
    """
    if not threaded:
        for item in items:
            yield item, read(item)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="microseg-band") as pool:
        iterator = iter(items)
        pending = None
        try:
            first = next(iterator, None)
            if first is None:
                return
            pending = (first, pool.submit(read, first))
            for item in iterator:
                current, future = pending
                value = future.result()
                pending = (item, pool.submit(read, item))
                yield current, value
            current, future = pending
            pending = None
            yield current, future.result()
        finally:
            if pending is not None:
                pending[1].cancel()


class DeviceMerger:
    """Blend 2D tiles of a group of planes on the device, releasing finished rows.

    The device twin of :class:`.tiling.TileMerger`: same plan, windows and
    release rule, float32 accumulators (exact for identical values, see the
    module docstring) and one download per release.

    Parameters
    ----------
    plan : TilePlan
        The 2D plan (rows, columns) of every plane of the group.
    n_planes : int
        Planes in the group.
    n_channels : int
        K, the channels of every tile's values.
    height, width : int
        True size of a plane; padding rows and columns are dropped.
    blend : {"gaussian", "average"}
        How overlapping tiles are weighted.
    row_align : int
        Release rows in multiples of this (a zarr chunk's height), except at the end.
    device : torch.device or str
        Where the accumulators live.
    """

    def __init__(
        self,
        plan: TilePlan,
        *,
        n_planes: int,
        n_channels: int,
        height: int,
        width: int,
        blend: Blend = "gaussian",
        row_align: int = 1,
        device: Any = "cpu",
    ) -> None:
        import torch

        if len(plan.shape) != 2:
            raise ValueError("DeviceMerger blends 2D tiles; plan a 2D (rows, columns) shape.")
        self.plan = plan
        self.n_planes = n_planes
        self.n_channels = n_channels
        self.height = min(height, plan.shape[0])
        self.width = min(width, plan.shape[1])
        self.row_align = max(int(row_align), 1)
        self.device = torch.device(device)
        rows, cols = normalized_windows(plan, check_blend(blend))

        def on_device(windows: dict[int, np.ndarray]) -> dict[int, torch.Tensor]:
            return {
                start: torch.tensor(w.astype(np.float32), device=self.device)
                for start, w in windows.items()
            }

        self._rows, self._cols = on_device(rows), on_device(cols)
        self.rows = RowRelease(plan, n_planes=n_planes, height=height, row_align=row_align)
        with torch.inference_mode():
            self._acc = torch.zeros((n_channels, n_planes, 0, plan.shape[1]), device=self.device)
            self._weight = torch.zeros((n_planes, 0, plan.shape[1]), device=self.device)

    @property
    def complete(self) -> bool:
        """True once every tile of every plane was aggregated."""
        return self.rows.complete

    def aggregate(self, values: torch.Tensor, location: tuple[int, int, int]) -> None:
        """Fold in one tile.

        Parameters
        ----------
        values : (K, tile_rows, tile_cols) float32 tensor
            The tile's probabilities, on the merger's device.
        location : (int, int, int)
            ``(plane, y0, x0)``.
        """
        import torch

        plane, y0, x0 = location
        rows, cols = self.plan.tile
        if tuple(values.shape) != (self.n_channels, rows, cols):
            raise ValueError(
                f"A tile's values have shape {tuple(values.shape)}; expected "
                f"{(self.n_channels, rows, cols)}."
            )
        top = self.rows.top(y0)
        with torch.inference_mode():
            self._grow(top + rows)
            weight = torch.outer(self._rows[y0], self._cols[x0])
            total = self._weight[plane, top : top + rows, x0 : x0 + cols]
            total += weight
            # w / W is exactly 1 where this tile is the first: the value is copied, not scaled.
            ratio = weight.div_(total)
            self._acc[:, plane, top : top + rows, x0 : x0 + cols].lerp_(values.float(), ratio)
        self.rows.count(y0)

    def _grow(self, rows: int) -> None:
        import torch

        held = self._acc.shape[2]
        if rows <= held:
            return
        size = max(rows, 2 * held)
        acc = torch.zeros((*self._acc.shape[:2], size, self._acc.shape[3]), device=self.device)
        weight = torch.zeros((self.n_planes, size, self._acc.shape[3]), device=self.device)
        acc[:, :, :held] = self._acc
        weight[:, :held] = self._weight
        self._acc, self._weight = acc, weight

    def pop_ready(self, scale: float = 1.0) -> list[tuple[int, Download]]:
        """Start the download of the rows no later tile can touch.

        Parameters
        ----------
        scale : float
            Multiplies the rows before they leave (an ortho view's share).

        Returns
        -------
        list of (int, Download)
            ``(first_row, download)``; the download's result is float32
            ``(K, n_planes, rows, width)``, cropped to the true plane size.
            Empty when nothing new is final.
        """
        import torch

        released = self.rows.release()
        if released is None:
            return []
        start, stop = released
        count = stop - start
        with torch.inference_mode():
            block = self._acc[:, :, :count, : self.width]
            if scale != 1.0:
                block = block * scale
            pending = download(block)
            # Shift the band up; the freed rows start again from zero.
            held = self._acc.shape[2]
            keep = max(held - count, 0)
            if keep:
                self._acc[:, :, :keep] = self._acc[:, :, count:held].clone()
                self._weight[:, :keep] = self._weight[:, count:held].clone()
            self._acc[:, :, keep:] = 0
            self._weight[:, keep:] = 0
        return [(start, pending)]

    def result(self) -> torch.Tensor:
        """The whole blended group ``(K, n_planes, height, width)``, kept on the device.

        For a merger whose rows were never released (a tile split into parts).
        """
        if not self.complete or self.rows.origin:
            raise RuntimeError("result() needs every tile aggregated and no row released.")
        return self._acc[:, :, : self.height, : self.width]

    def finalize(self) -> list[tuple[int, Download]]:
        """Release every remaining row; raise if some tile never arrived."""
        self.rows.check_complete()
        return self.pop_ready()
