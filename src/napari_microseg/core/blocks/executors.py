"""Running block tasks in this process: one after another, with a chosen torch thread count.

:class:`LocalExecutor` runs the block tasks of :mod:`.predict` and
:mod:`.labels` one after another (the out-of-core path, no Dask);
:func:`run_tasks` hands them to any executor (this one or
:class:`~.cluster.DaskExecutor`). :func:`torch_threads` sets torch's
thread count for the length of a job.

Examples
--------
>>> from napari_microseg.core.progress import drain
>>> drain(LocalExecutor().run(lambda k, i: k * i, [1, 2], 10), show=False)
{1: 10, 2: 20}
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..progress import Job, Progress


class LocalExecutor:
    """Runs block tasks one after another in this process (the out-of-core path).

    A task may be a generator (yielding :class:`Progress`); its events are
    passed on, so closing the job stops within one batch of tiles.
    """

    def run(
        self,
        fn: Callable[..., Any],
        items: Sequence[int],
        *args: Any,
        on_result: Callable[[int, Any], None] | None = None,
        label: str = "block",
    ) -> Job[dict[int, Any]]:
        """Call ``fn(*args, item)`` for every item; returns ``{item: result}``.

        Yields one :class:`Progress` per item done (and the task's own events).
        """
        results: dict[int, Any] = {}
        total = len(items)
        started = time.perf_counter()
        for done, item in enumerate(items):
            value = fn(*args, item)
            if hasattr(value, "send"):
                inner = value
                try:
                    while True:
                        event = next(inner)
                        yield Progress(done, total, f"{label} {done + 1}/{total}: {event}")
                except StopIteration as stop:
                    value = stop.value
            results[item] = value
            if on_result is not None:
                on_result(item, value)
            elapsed = time.perf_counter() - started
            eta = elapsed / (done + 1) * (total - done - 1)
            yield Progress(done + 1, total, f"{label} {done + 1}/{total} done", eta)
        return results


def run_tasks(
    executor: Any,
    fn: Callable[..., Any],
    items: Sequence[int],
    *args: Any,
    on_result: Callable[[int, Any], None] | None = None,
    label: str = "block",
) -> Job[dict[int, Any]]:
    """Run tasks on an executor (:class:`LocalExecutor` or :class:`~.cluster.DaskExecutor`)."""
    return executor.run(fn, items, *args, on_result=on_result, label=label)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Torch's intra-op threads set to ``threads`` inside the block (None: left alone).

    On a machine whose cores are busy with other processes, one thread per
    process can be many times faster than one per core: the threads of a
    parallel region wait for the slowest, which waits for a core.
    """
    if threads is None:
        yield
        return
    import torch

    if int(threads) < 1:
        raise ValueError(f"threads must be at least 1, got {threads}.")
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)
