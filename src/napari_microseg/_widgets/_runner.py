"""Run a core job (a generator of Progress events) off the GUI thread, with progress and Cancel.

The GUI thread never runs model code, training or file export: a job is
driven in napari's ``thread_worker``; each :class:`~napari_microseg.core.progress.Progress`
it yields updates a ``napari.utils.progress`` bar in the activity dock;
``cancel()`` asks the worker to stop (``quit()``), which takes effect at the
job's next ``yield``, and then closes the job so its ``finally`` blocks
remove anything half-written. Errors become a one-sentence notification;
the traceback goes to the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from typing import Any

from napari.qt.threading import GeneratorWorker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info

from ..core.progress import Progress, format_seconds

LOG = logging.getLogger(__name__)
#: What a cancelled job leaves, by default (its ``finally`` blocks remove partial output).
CANCEL_MESSAGE = "nothing partial was kept."


def user_message(error: BaseException) -> str:
    """One clear sentence for a notification (the traceback stays in the log)."""
    text = str(error).strip() or error.__class__.__name__
    if isinstance(error, MemoryError):
        return "Out of memory: try a smaller tile size or batch, or run on the current slice."
    return text


class JobRunner:
    """Runs at most one job at a time for a widget.

    Parameters
    ----------
    description : str
        Shown on the progress bar.
    on_state : callable, optional
        Called with True when a job starts and False when it ends (to enable
        Run/Cancel buttons).
    """

    def __init__(self, description: str, on_state: Callable[[bool], None] | None = None) -> None:
        self.description = description
        self.on_state = on_state
        self.worker: GeneratorWorker | None = None
        self._job: Generator[Progress, None, Any] | None = None
        self._bar: progress | None = None
        self.cancelled = False

    @property
    def running(self) -> bool:
        return self.worker is not None

    def start(
        self,
        job: Generator[Progress, None, Any],
        on_result: Callable[[Any], None],
        *,
        on_cancel: Callable[[], None] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        on_end: Callable[[], None] | None = None,
        cancel_message: str | None = CANCEL_MESSAGE,
    ) -> GeneratorWorker:
        """Start ``job`` in a worker thread; ``on_result`` gets its result on the GUI thread.

        Parameters
        ----------
        job : generator
            Yields :class:`Progress` events and returns the result.
        on_result : callable
            Called with the result, on the GUI thread.
        on_cancel : callable, optional
            Called after a cancelled job was closed.
        on_progress : callable, optional
            Called with every event, on the GUI thread (connected before the job starts).
        on_end : callable, optional
            Called last, however the job ended (result, error or cancel).
        cancel_message : str or None
            Shown after "<description> cancelled; " when the job is cancelled; None
            shows nothing (``on_cancel`` reports instead).
        """
        if self.worker is not None:
            raise RuntimeError("A job is already running; cancel it first.")
        self._job = job
        self.cancelled = False
        worker = GeneratorWorker(_drive, job)
        self.worker = worker
        self._bar = progress(total=0, desc=self.description)
        worker.yielded.connect(self._on_progress)
        if on_progress is not None:
            worker.yielded.connect(on_progress)
        worker.returned.connect(lambda result: self._on_returned(result, on_result))
        worker.errored.connect(self._on_error)
        worker.aborted.connect(lambda: self._on_aborted(on_cancel, cancel_message))
        worker.finished.connect(lambda: self._on_finished(on_end))
        if self.on_state is not None:
            self.on_state(True)
        worker.start()
        return worker

    def cancel(self) -> None:
        """Ask the running job to stop at its next progress event."""
        if self.worker is not None:
            self.cancelled = True
            self.worker.quit()

    # -- slots, all on the GUI thread
    def _on_progress(self, event: Progress) -> None:
        bar = self._bar  # a local: updating the bar can process events that close it
        if bar is None or not isinstance(event, Progress):
            return
        if event.total and bar.total != event.total:
            bar.total = event.total
        bar.n = event.step
        eta = f" (ETA {format_seconds(event.eta_s)})" if event.eta_s is not None else ""
        bar.set_description(f"{self.description}: {event.message}{eta}".strip())

    def _on_returned(self, result: Any, on_result: Callable[[Any], None]) -> None:
        try:
            on_result(result)
        except Exception as error:  # a failing result handler must not kill napari
            self._on_error(error)

    def _on_error(self, error: BaseException) -> None:
        LOG.error("%s failed", self.description, exc_info=error)
        show_error(f"{self.description} failed: {user_message(error)}")

    def _on_aborted(self, on_cancel: Callable[[], None] | None, message: str | None) -> None:
        # The worker stopped between two yields: the job is suspended, so closing it here
        # runs its cleanup (removing partial output) before we report.
        if self._job is not None:
            self._job.close()
        if message:
            show_info(f"{self.description} cancelled; {message}")
        if on_cancel is not None:
            on_cancel()

    def _on_finished(self, on_end: Callable[[], None] | None = None) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar = None
        self.worker = None
        self._job = None
        if self.on_state is not None:
            self.on_state(False)
        if on_end is not None:
            try:
                on_end()
            except Exception as error:  # like a result handler: never kill napari
                self._on_error(error)


def _drive(job: Generator[Progress, None, Any]) -> Generator[Progress, None, Any]:
    """Re-yield a job's events and return its result (what the worker thread runs)."""
    return (yield from job)
