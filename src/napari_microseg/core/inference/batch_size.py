"""The batch size a device takes: from its free memory and a measured probe.

A CPU is fastest one tile at a time (a 256x256 U-Net tile's activations
already overflow its caches; measured in ``benchmarks/bench_inference.py``).
A GPU wants as many tiles per pass as fit: two probe passes (1 and 2 tiles)
measure the peak memory of one more tile and the fixed part (weights,
workspaces); the batch is then what fills :data:`MEMORY_FILL` of the free
memory, a power of two, at most :data:`MAX_AUTO_BATCH`. An estimate that is
still too large is caught like any out-of-memory error: the batch is halved
and the run goes on.

Examples
--------
>>> batch_from_memory(free_bytes=8 * 2**30, per_tile_bytes=300 * 2**20, fixed_bytes=2**30)
8
>>> batch_from_memory(free_bytes=2**30, per_tile_bytes=2**31)
1
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: Share of the free device memory an automatic batch may take (the rest: bands, blending,
#: the allocator's fragmentation, other processes).
MEMORY_FILL = 0.5
#: Largest automatic batch: past it a GPU is already busy and bands would have to wait.
MAX_AUTO_BATCH = 64
#: Batch on the CPU (and for models whose memory cannot be measured).
CPU_BATCH = 1
#: Batch on GPUs whose memory cannot be measured (Apple MPS).
UNMEASURED_GPU_BATCH = 8


def batch_from_memory(
    free_bytes: float,
    per_tile_bytes: float,
    *,
    fixed_bytes: float = 0.0,
    fill: float = MEMORY_FILL,
    cap: int = MAX_AUTO_BATCH,
) -> int:
    """The largest power of two of tiles whose memory fits ``fill`` of ``free_bytes``.

    Parameters
    ----------
    free_bytes : float
        Free device memory before the run.
    per_tile_bytes : float
        Peak memory of one more tile in a pass.
    fixed_bytes : float
        Peak memory of a pass that does not grow with the batch.
    fill : float
        Share of the free memory to use.
    cap : int
        Largest batch returned.

    Returns
    -------
    int
        At least 1.
    """
    room = free_bytes * fill - fixed_bytes
    if per_tile_bytes <= 0:
        return cap
    fits = int(room // per_tile_bytes)
    if fits < 1:
        return 1
    return min(2 ** int(math.log2(fits)), cap)


@dataclass
class DeviceMemory:
    """How to read a device's memory; CUDA's by default (:func:`device_memory`).

    Attributes
    ----------
    free : callable
        Free bytes now.
    allocated : callable
        Bytes allocated now.
    reset_peak : callable
        Start measuring a peak.
    peak : callable
        Peak bytes allocated since :attr:`reset_peak`.
    """

    free: Callable[[], int]
    allocated: Callable[[], int]
    reset_peak: Callable[[], None]
    peak: Callable[[], int]


def device_memory(device: torch.device) -> DeviceMemory | None:
    """The memory readings of a CUDA device; None where memory cannot be measured."""
    import torch

    if device.type != "cuda":
        return None

    def free() -> int:
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        return int(torch.cuda.mem_get_info(device)[0])

    def allocated() -> int:
        torch.cuda.synchronize(device)
        return int(torch.cuda.memory_allocated(device))

    def reset_peak() -> None:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)

    def peak() -> int:
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device))

    return DeviceMemory(free, allocated, reset_peak, peak)


def probe_batch_size(
    forward: Callable[[Any], Any],
    make_batch: Callable[[int], Any],
    memory: DeviceMemory | None,
    *,
    device_type: str = "cuda",
) -> int:
    """Choose a batch from two probe passes and the free memory.

    Parameters
    ----------
    forward : callable
        Runs one pass on a batch (as the real run will: TTA, AMP and all).
    make_batch : callable
        ``make_batch(n)``: a batch of n blank tiles on the device.
    memory : DeviceMemory or None
        The device's readings; None gives :data:`CPU_BATCH` on the CPU and
        :data:`UNMEASURED_GPU_BATCH` on other devices, without a probe.
    device_type : str
        ``"cpu"``, ``"cuda"``, ``"mps"``.

    Returns
    -------
    int
        The batch; 1 when even the probe runs out of memory (the run then
        splits tiles as usual).
    """
    from .forward import is_out_of_memory

    if memory is None:
        return CPU_BATCH if device_type == "cpu" else UNMEASURED_GPU_BATCH
    free = memory.free()
    base = memory.allocated()
    peaks = []
    for n in (1, 2):
        memory.reset_peak()
        try:
            forward(make_batch(n))
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            return 1
        peaks.append(memory.peak() - base)
    per_tile = max(peaks[1] - peaks[0], 1)
    fixed = max(peaks[0] - per_tile, 0)
    return batch_from_memory(free, per_tile, fixed_bytes=fixed)
