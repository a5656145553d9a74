"""The training data pipeline: batches of augmented patches made in worker processes.

:class:`BatchLoader` hands the training loop batch after batch of
:meth:`~.sampling.PatchSampler.batch`, made ahead of time by
``torch.utils.data`` worker processes (persistent, prefetching, with pinned
memory when training on CUDA), or in the training process itself with
``workers=0``. Batch ``i`` is seeded with ``(seed, i)``, so the batches are
the same with any number of workers, in-process included, and a resumed run
continues with the batch after the last one it used.

What can go wrong, and what happens:

* a worker dies (killed for memory, a crash in a library): a
  :class:`~.settings.TrainingError` saying so, within 5 seconds, never a hang;
* shared memory (``/dev/shm``, small in containers) cannot hold the batches
  in flight: fewer workers, or none, with a notice, before starting; and if it
  still runs out, the pipeline continues in-process from the same batch;
* Cancel or Ctrl-C: :meth:`BatchLoader.close` stops the workers at once
  (they are terminated rather than waited for).
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .settings import TrainingError

if TYPE_CHECKING:
    import torch

    from .sampling import PatchSampler

#: Batches each worker prepares ahead of the one the loop is using.
PREFETCH = 4
#: Most workers chosen automatically (more rarely helps one GPU).
MAX_AUTO_WORKERS = 8
#: Where worker processes put the batches they hand over (Linux).
SHM = "/dev/shm"
#: Text of the errors that mean shared memory ran out.
SHM_ERRORS = ("shared memory", "No space left on device", "Bus error", "shm")


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def auto_workers(device_kind: str, cores: int | None = None) -> int:
    """The number of data workers for ``data_workers="auto"``.

    On a GPU the training process needs about one core to drive it, and every
    other core can make patches: ``cores - 1`` (at least 1, at most
    :data:`MAX_AUTO_WORKERS`). On the CPU the network's own threads use every
    core, so one core in four makes patches, and at least one: a worker is what
    lets the next batch be cut and augmented while the network trains.
    ``benchmarks/bench_training.py`` measured one worker as fast as in-process
    patches with the bundled U-Nets on a 2-core machine (docs/benchmarks.md,
    "Training data pipeline"); ``data_workers: 0`` makes them in-process.
    """
    cores = available_cores() if cores is None else cores
    if device_kind == "cpu":
        return max(1, cores // 4)
    return max(1, min(cores - 1, MAX_AUTO_WORKERS))


def shm_free_bytes(path: str = SHM) -> int | None:
    """Free bytes of the shared-memory file system, None where there is none to check."""
    try:
        stats = os.statvfs(path)
    except (OSError, AttributeError):
        return None
    return int(stats.f_bavail * stats.f_frsize)


def batch_bytes(batch: dict[str, Any]) -> int:
    """Bytes of one batch of tensors."""
    return int(sum(t.element_size() * t.nelement() for t in batch.values()))


def fitting_workers(requested: int, per_batch: int, free: int | None) -> int:
    """How many workers fit in ``free`` bytes of shared memory, each with its batches in flight.

    A worker holds up to :data:`PREFETCH` batches plus the one being handed over,
    and each needs room twice while it is copied; a quarter of the space stays free
    for everyone else.
    """
    if free is None or requested <= 0:
        return max(requested, 0)
    per_worker = 2 * (PREFETCH + 1) * per_batch
    return int(max(0, min(requested, (0.75 * free) // max(per_worker, 1))))


class _Batches:
    """Map-style dataset whose item ``i`` is batch ``i`` (picklable, for worker processes)."""

    def __init__(self, sampler: PatchSampler, size: int) -> None:
        self.sampler = sampler
        self.size = size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.sampler.batch(index, self.size)


def _one_thread(worker_id: int) -> None:
    # A worker makes one patch at a time: more threads would only fight for the cores.
    import torch

    torch.set_num_threads(1)


class BatchLoader:
    """Batches ``start``, ``start + 1``... of ``sampler``, made by ``workers`` processes.

    Parameters
    ----------
    sampler : PatchSampler
        Its weight maps must be computed (:meth:`~.sampling.PatchSampler.prepare`).
    batch_size : int
    workers : int
        Worker processes; 0 makes the batches in this process.
    start : int
        Index of the first batch.
    pin_memory : bool
        Page-locked batches, for fast copies to a CUDA device.

    Attributes
    ----------
    workers : int
        The workers actually used (fewer than asked when shared memory is short).
    notices : list of str
        What was changed and why, for the user and the model card.
    """

    def __init__(
        self,
        sampler: PatchSampler,
        *,
        batch_size: int,
        workers: int,
        start: int = 0,
        pin_memory: bool = False,
    ) -> None:
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.next_index = int(start)
        self.pin_memory = pin_memory
        self.notices: list[str] = []
        self.workers = max(int(workers), 0)
        self._iterator: Iterator[Any] | None = None
        self._loader: Any = None
        if self.workers:
            self.workers = self._fit_shared_memory(self.workers)
        if self.workers:
            self._start()

    # ------------------------------------------------------------------ set-up

    def _fit_shared_memory(self, requested: int) -> int:
        sample = self.sampler.batch(self.next_index, self.batch_size)
        per_batch = batch_bytes(sample)
        free = shm_free_bytes()
        workers = fitting_workers(requested, per_batch, free)
        if workers < requested:
            mib = (free or 0) / 2**20
            self.notices.append(
                f"Only {mib:.0f} MiB of shared memory ({SHM}) are free, too little for "
                f"{requested} data worker(s) with batches of {per_batch / 2**20:.1f} MiB: "
                + (
                    f"using {workers} worker(s)."
                    if workers
                    else "making the patches in the training process (slower; give the "
                    "container more shared memory, e.g. docker run --shm-size=2g)."
                )
            )
        return workers

    def _start(self) -> None:
        import torch
        from torch.utils.data import DataLoader

        dataset = _Batches(self.sampler, self.batch_size)
        context = None
        if sys.platform.startswith("linux") and "fork" in _start_methods():
            # Fork shares the prepared planes copy-on-write: no pickling of the data and no
            # second import of torch, so workers start in milliseconds.
            import multiprocessing

            context = multiprocessing.get_context("fork")
        self._loader = DataLoader(
            dataset,  # type: ignore[arg-type]
            batch_size=None,
            sampler=itertools.count(self.next_index),  # type: ignore[arg-type]
            num_workers=self.workers,
            persistent_workers=True,
            prefetch_factor=PREFETCH,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            worker_init_fn=_one_thread,
            multiprocessing_context=context,
            # No timeout: without one, the loader checks every 5 s that its workers live.
            timeout=0,
        )
        self._iterator = iter(self._loader)
        # torch's SIGCHLD handler would raise a dead worker's error wherever the training
        # process happens to be (inside a forward pass...); off its list, the death is found
        # by the loader itself within MP_STATUS_CHECK_INTERVAL (5 s), inside :meth:`next`,
        # which names it clearly.
        _forget_workers(self._iterator)

    # ------------------------------------------------------------------ batches

    def next(self) -> dict[str, torch.Tensor]:
        """The next batch (``image`` (N, C, P, P) float32, ``target`` (N, P, P) int64...)."""
        if self._iterator is None:
            batch = self.sampler.batch(self.next_index, self.batch_size)
            if self.pin_memory:
                batch = {k: v.pin_memory() for k, v in batch.items()}
        else:
            batch = self._from_workers()
        self.next_index += 1
        return batch

    def _from_workers(self) -> dict[str, torch.Tensor]:
        assert self._iterator is not None
        try:
            return next(self._iterator)
        except (ConnectionError, EOFError) as error:
            # A worker killed while handing a batch over leaves a broken connection; the
            # process may take a moment longer to be gone.
            workers = list(getattr(self._iterator, "_workers", []))
            for process in workers:
                process.join(timeout=2.0 / max(len(workers), 1))
            dead = [p.pid for p in workers if not p.is_alive()]
            self.close()
            detail = f"worker pid {dead[0]} ended mid-batch" if dead else type(error).__name__
            raise TrainingError(_stopped(detail)) from error
        except RuntimeError as error:
            text = str(error)
            if any(s in text for s in SHM_ERRORS):
                # The same batch index made in-process is the same batch: nothing changes.
                self.close()
                self.notices.append(
                    f"The data workers ran out of shared memory ({SHM}); the patches are made "
                    "in the training process from now on (slower)."
                )
                self.workers = 0
                return self.sampler.batch(self.next_index, self.batch_size)
            self.close()
            failure = worker_failure(error)
            if failure is not None:
                raise failure from error
            raise

    # ------------------------------------------------------------------ shutdown

    def close(self) -> None:
        """Stop the workers now (within a fraction of a second); safe to call twice."""
        iterator, self._iterator = self._iterator, None
        self._loader = None
        if iterator is None:
            return
        processes = list(getattr(iterator, "_workers", []))
        _forget_workers(iterator)  # ended on purpose: no SIGCHLD alarm (see _start)
        # A worker busy with a batch would finish it before it reads the stop signal; nothing
        # it makes is needed any more, so end it at once.
        for process in processes:
            if process.is_alive():
                process.terminate()
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        for process in processes:
            process.join(timeout=1.0)

    def __enter__(self) -> BatchLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to report to
            pass


def _forget_workers(iterator: Any) -> None:
    """Take the iterator's workers off torch's watch list (torch internals; best effort)."""
    if not getattr(iterator, "_worker_pids_set", False):
        return
    try:
        from torch.utils.data._utils import signal_handling

        signal_handling._remove_worker_pids(id(iterator))
        iterator._worker_pids_set = False
    except (ImportError, AttributeError, ValueError):  # another torch: its shutdown copes
        pass


def worker_failure(error: BaseException) -> TrainingError | None:
    """The clear error for a data worker's death reported anywhere in the training process.

    torch reports a dead worker from a signal handler, in whatever the training
    process is doing then (a forward pass...), as a ``RuntimeError``; None for
    any other error.
    """
    text = str(error)
    if not isinstance(error, RuntimeError) or "DataLoader worker" not in text:
        return None
    return TrainingError(_stopped(_first_line(text)))


def _stopped(detail: str) -> str:
    return (
        f"A data worker process stopped making training patches ({detail}). It may have run "
        "out of memory. Train again with fewer data workers (data_workers: 0 makes the "
        "patches in the training process)."
    )


def _start_methods() -> list[str]:
    import multiprocessing

    return multiprocessing.get_all_start_methods()


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0].rstrip(".") if text.strip() else "no message"
