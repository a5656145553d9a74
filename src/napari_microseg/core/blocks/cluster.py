"""Run block tasks on a Dask cluster: clients, a worker-side model cache, retries.

The chunked jobs (:mod:`.predict`, :mod:`.labels`) hand their block
tasks to an executor. :class:`DaskExecutor` submits them to a
``dask.distributed`` cluster: the model and the job's settings are sent to
each worker once (or, for a :class:`ModelRef`, each worker loads the model
file itself, once), every task is retried when it fails or its worker dies,
and the driver, only, records finished blocks. GPUs on workers are used
when present (device ``"auto"``).

``dask.distributed`` is imported inside functions, so importing this module
stays light.

Examples
--------
>>> with cluster_client(workers=2, processes=False) as client:  # doctest: +SKIP
...     result = drain(predict_to_zarr(model, volume, "out.zarr",
...                                    executor=DaskExecutor(client)))
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..progress import Job, Progress, drain

#: Seconds to wait for a scheduler before saying it cannot be reached.
CONNECT_TIMEOUT_S = 10.0


class DistributedError(ValueError):
    """A cluster that cannot be reached or a task that keeps failing; the message says why."""


# ----------------------------------------------------------------------------- models on workers


@dataclass(frozen=True)
class ModelRef:
    """A model each worker loads itself, once: a registry name or a model file.

    Attributes
    ----------
    name_or_path : str
        As for :func:`~.models.registry.load_model`; a file must be readable
        at the same path on every worker (a shared file system).
    device : str
        ``"auto"`` uses the worker's GPU when it has one.
    """

    name_or_path: str
    device: str = "auto"


_CACHE: dict[ModelRef, Any] = {}
_CACHE_LOCK = threading.Lock()
_MODEL_LOCKS: dict[int, threading.Lock] = {}
#: How many models this process loaded from a :class:`ModelRef` (for tests and logs).
LOADS: list[ModelRef] = []


def resolve_model(model: Any) -> Any:
    """The loaded model for a task: a :class:`ModelRef` is loaded once per process.

    Parameters
    ----------
    model : ModelRef, SegmentationModel or torch.nn.Module
        What the task was given.

    Returns
    -------
    SegmentationModel
    """
    from ..inference.job import as_model

    if not isinstance(model, ModelRef):
        return as_model(model)
    with _CACHE_LOCK:
        loaded = _CACHE.get(model)
        if loaded is None:
            from ..models.registry import load_model

            loaded = load_model(model.name_or_path, device=model.device)
            _CACHE[model] = loaded
            LOADS.append(model)
    return loaded


def model_lock(model: Any) -> threading.Lock:
    """One lock per model object: tasks sharing a worker's model take turns on it."""
    with _CACHE_LOCK:
        return _MODEL_LOCKS.setdefault(id(model), threading.Lock())


def clear_model_cache() -> None:
    """Forget the models loaded in this process."""
    with _CACHE_LOCK:
        _CACHE.clear()
        LOADS.clear()


# ----------------------------------------------------------------------------- clients


@contextlib.contextmanager
def cluster_client(
    scheduler: str | None = None,
    *,
    workers: int | None = None,
    threads_per_worker: int = 1,
    processes: bool = True,
    timeout: float | None = None,
    memory_limit: str | float | None = "auto",
) -> Iterator[Any]:
    """A ``dask.distributed`` client: to a running scheduler, or a local cluster.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``), or a
        ``scheduler.json`` file written by ``dask scheduler --scheduler-file``.
    workers : int, optional
        Without ``scheduler``: start a local cluster of this many workers.
    threads_per_worker : int
        Threads of each local worker; each worker process's torch uses
        ``cpu_count // workers`` threads so the workers do not oversubscribe.
    processes : bool
        Local workers in their own processes (True) or threads of this one.
    timeout : float, optional
        Seconds to wait for the scheduler (:data:`CONNECT_TIMEOUT_S` by default).
    memory_limit : str or float, optional
        Per local worker (``"4GB"``), ``"auto"`` for an equal share.

    Yields
    ------
    distributed.Client

    Raises
    ------
    DistributedError
        When the scheduler cannot be reached, or neither argument is given.
    """
    from distributed import Client, LocalCluster

    if scheduler is None and not workers:
        raise DistributedError("Give a scheduler address or a number of local workers (>= 1).")
    cluster = None
    timeout = CONNECT_TIMEOUT_S if timeout is None else float(timeout)
    try:
        if scheduler is not None:
            kwargs: dict[str, Any] = {"timeout": f"{timeout}s"}
            if scheduler.endswith(".json"):
                kwargs["scheduler_file"] = scheduler
            else:
                kwargs["address"] = scheduler
            try:
                client = Client(**kwargs)
            except (OSError, TimeoutError, ValueError) as error:
                raise DistributedError(
                    f"Could not reach the Dask scheduler at {scheduler} within {timeout:g} s; "
                    "check the address (tcp://host:8786) and that `dask scheduler` runs there, "
                    "or use --workers N for a local cluster."
                ) from error
        else:
            threads = max((os.cpu_count() or 1) // int(workers or 1), 1)
            env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
            extra: dict[str, Any] = {"env": env} if processes else {}
            cluster = LocalCluster(
                n_workers=int(workers or 1),
                threads_per_worker=threads_per_worker,
                processes=processes,
                dashboard_address=None,
                memory_limit=memory_limit,
                **extra,
            )
            client = Client(cluster)
            client.wait_for_workers(int(workers or 1), timeout=60)
        try:
            yield client
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()


# ----------------------------------------------------------------------------- executor


def _identity(value: Any) -> Any:
    return value


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a task on a worker; a generator task is drained there."""
    value = fn(*args)
    if hasattr(value, "send"):
        value = drain(value, show=False)
    return value


class DaskExecutor:
    """Runs block tasks on a ``dask.distributed`` cluster.

    Parameters
    ----------
    client : distributed.Client
        Connected client (:func:`cluster_client`).
    retries : int
        Extra attempts of a task that raised; a task whose worker died is
        rescheduled by the scheduler on its own (up to its ``allowed-failures``).
    """

    def __init__(self, client: Any, *, retries: int = 2) -> None:
        self.client = client
        self.retries = int(retries)

    @property
    def n_workers(self) -> int:
        return len(self.client.scheduler_info().get("workers", {}))

    def run(
        self,
        fn: Callable[..., Any],
        items: Sequence[int],
        *args: Any,
        on_result: Callable[[int, Any], None] | None = None,
        label: str = "block",
    ) -> Job[dict[int, Any]]:
        """Call ``fn(*args, item)`` on the cluster for every item; returns ``{item: result}``.

        The shared ``args`` go to each worker that needs them once. Results arrive in any
        order; ``on_result`` runs here, in the driver, as each one arrives.
        Closing the generator cancels the tasks not yet done.
        """
        import uuid

        from distributed import as_completed

        results: dict[int, Any] = {}
        total = len(items)
        if not total:
            return results
        token = uuid.uuid4().hex[:8]
        # Shared arguments become tasks of their own (not scattered data), so a worker that
        # dies with the only copy does not lose them: the scheduler recomputes them.
        shared = [
            self.client.submit(_identity, a, key=f"microseg-{label}-args{i}-{token}", pure=False)
            for i, a in enumerate(args)
        ]
        if shared:
            # A copy on every worker up front: tasks then go where there is room, not where
            # the shared data happened to be computed.
            from distributed import wait

            wait(shared)
            self.client.replicate(shared)
        futures = {
            self.client.submit(
                _call,
                fn,
                *shared,
                item,
                key=f"microseg-{label}-{item}-{token}",
                retries=self.retries,
                pure=False,
            ): item
            for item in items
        }
        pending = set(futures)
        yield Progress(0, total, f"{total} {label} task(s) sent to {self.n_workers} worker(s)")
        try:
            for future in as_completed(futures):
                item = futures[future]
                pending.discard(future)
                value = self._result(future, item, label)
                results[item] = value
                future.release()
                if on_result is not None:
                    on_result(item, value)
                yield Progress(len(results), total, f"{label} {item} done")
        finally:
            if pending:
                self.client.cancel(list(pending))
        return results

    def _result(self, future: Any, item: int, label: str) -> Any:
        from distributed import KilledWorker

        try:
            return future.result()
        except KilledWorker as error:
            raise DistributedError(
                f"{label} {item} was running on workers that died repeatedly (out of memory?); "
                "give the workers more memory or use smaller blocks."
            ) from error
        except Exception as error:
            raise DistributedError(
                f"{label} {item} failed after {self.retries} retries: "
                f"{type(error).__name__}: {error}"
            ) from error
