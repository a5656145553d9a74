"""How a training run uses a GPU: memory layout, batch size, and the pipeline's settings in words.

On CUDA a run trains in mixed precision (:attr:`~.settings.TrainSettings.amp`)
with the network and its batches in the channels-last layout, and with a
larger batch when the GPU has room (:func:`gpu_batch_size`). On the CPU
nothing changes: the config's batch, the default layout, float32.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from .settings import TrainSettings

#: Multiples of the config's batch tried on a GPU, largest first.
GPU_BATCH_FACTORS = (4, 2, 1)
#: Share of the GPU's free memory a probe step may use.
GPU_MEMORY_SHARE = 0.5


def use_channels_last(settings: TrainSettings, device_kind: str, instance: bool) -> bool:
    """Whether the network and its batches use the channels-last layout.

    Only on CUDA by default (tensor-core convolutions want it; on the CPU it
    changes the kernels and the results' last bits); never for Mask R-CNN,
    whose inputs are lists of images of different sizes.
    """
    if instance or device_kind != "cuda":
        return False
    return settings.channels_last is not False


def gpu_batch_size(
    module: torch.nn.Module,
    settings: TrainSettings,
    device: torch.device,
    *,
    in_channels: int,
    amp: bool,
    channels_last: bool,
    instance: bool,
) -> tuple[int, str]:
    """The batch size of a run and how it was chosen.

    Parameters
    ----------
    module : torch.nn.Module
        The network, on ``device``; its weights and batch-norm statistics are
        left as they were.
    settings : TrainSettings
    device : torch.device
    in_channels : int
        C of the batches ``(N, C, P, P)``.
    amp, channels_last : bool
        As the run trains.
    instance : bool
        Mask R-CNN: the config's batch (or ``batch_size_gpu``), never probed.

    Returns
    -------
    (int, str)
        The batch and ``"config"``, ``"batch_size_gpu"`` or ``"automatic"``.
    """
    if device.type != "cuda":
        return settings.batch_size, "config"
    if settings.batch_size_gpu is not None:
        return settings.batch_size_gpu, "batch_size_gpu"
    if instance:
        return settings.batch_size, "config"
    import torch

    free, _ = torch.cuda.mem_get_info(device)
    budget = GPU_MEMORY_SHARE * free
    saved = {k: v.detach().clone() for k, v in module.state_dict().items()}
    try:
        for factor in GPU_BATCH_FACTORS:
            size = settings.batch_size * factor
            if (
                factor == 1
                or _probe(module, size, settings, device, in_channels, amp, channels_last) <= budget
            ):
                return size, "automatic"
        return settings.batch_size, "automatic"
    finally:
        # A probe's forward pass in training mode moves the batch-norm statistics: undo it.
        module.load_state_dict(saved)
        module.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()


def _probe(
    module: torch.nn.Module,
    size: int,
    settings: TrainSettings,
    device: torch.device,
    in_channels: int,
    amp: bool,
    channels_last: bool,
) -> float:
    """Peak bytes of one forward and backward pass of a batch of ``size``; inf when it fails."""
    import torch

    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    try:
        x = torch.zeros(size, in_channels, settings.patch_size, settings.patch_size, device=device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        module.train()
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            out = module(x)
        out.float().mean().backward()
        torch.cuda.synchronize(device)
        return float(torch.cuda.max_memory_allocated(device) - base)
    except torch.cuda.OutOfMemoryError:
        return float("inf")
    finally:
        module.zero_grad(set_to_none=True)


def pipeline_facts(
    *,
    device: Any,
    workers: int,
    batch_size: int,
    batch_choice: str,
    amp: bool,
    channels_last: bool,
    validation_s: float,
    run_s: float,
) -> dict[str, Any]:
    """What the model card records about how the run used its machine."""
    return {
        "device": str(device),
        "data_workers": workers,
        "batch_size_used": batch_size,
        "batch_size_choice": batch_choice,
        "amp": amp,
        "channels_last": channels_last,
        "validation_s": round(validation_s, 2),
        "validation_share": round(validation_s / run_s, 4) if run_s > 0 else None,
    }
