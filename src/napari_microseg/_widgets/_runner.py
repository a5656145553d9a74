"""Run a core job (a generator of Progress events) off the GUI thread, with progress and Cancel.

The GUI thread never runs model code, training or file export: a job is
driven in napari's ``thread_worker``; each :class:`~napari_microseg.core.progress.Progress`
it yields updates a ``napari.utils.progress`` bar in the activity dock and the
runner's own :attr:`JobRunner.panel` (a progress bar with the message and ETA
that the widget puts in its dock, where the user looks). ``cancel()`` asks the
worker to stop (``quit()``), which takes effect at the job's next ``yield``,
and then closes the job so its ``finally`` blocks remove anything
half-written. Errors become a one-sentence notification, and the whole
sentence stays in the panel (a toast may cut it off); the traceback goes to
the log. A second start while a job runs is refused with a message, and when
the widget is destroyed (the viewer closed) a running job is stopped and
closed before its results could reach a widget that no longer exists.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Generator
from typing import Any

from magicgui.widgets import Container, Label, ProgressBar
from napari.qt.threading import GeneratorWorker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QEvent, QObject

from ..core.progress import Progress, format_seconds

LOG = logging.getLogger(__name__)
#: What a cancelled job leaves, by default (its ``finally`` blocks remove partial output).
CANCEL_MESSAGE = "nothing partial was kept."
#: How long closing the viewer waits for a running job to reach its next progress event.
SHUTDOWN_WAIT_S = 30.0


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
        Shown on the progress bars and in messages ("Segment", "Fine-tune"...).
    on_state : callable, optional
        Called with True when a job starts and False when it ends (to enable
        Run/Cancel buttons).
    status : magicgui Label, optional
        The widget's status line; a failed or cancelled job resets it, so a stale
        "running..." never stays.

    Attributes
    ----------
    panel : magicgui Container
        Progress bar and message (with ETA) for the widget's dock; shown while a job
        runs, and after a failure with the whole error message.
    """

    def __init__(
        self,
        description: str,
        on_state: Callable[[bool], None] | None = None,
        status: Label | None = None,
    ) -> None:
        self.description = description
        self.on_state = on_state
        self.status = status
        self.worker: GeneratorWorker | None = None
        self._job: Generator[Progress, None, Any] | None = None
        self._bar: progress | None = None
        self.cancelled = False
        self.progress_bar = ProgressBar(value=0, min=0, max=0)
        self.message = Label(value="")
        self.message.native.setWordWrap(True)  # long errors wrap instead of being cut off
        self.panel = Container(widgets=[self.progress_bar, self.message], labels=False)
        self.panel.visible = False
        self._close_watcher = _CloseWatcher(self)
        self._watched: QObject | None = None

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
    ) -> GeneratorWorker | None:
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

        Returns
        -------
        GeneratorWorker or None
            The worker, or None when a job was already running (the user is told, and
            ``job`` is closed unstarted).
        """
        if self.worker is not None:
            job.close()
            show_warning(
                f"{self.description} is already running; wait for it to finish or press Cancel."
            )
            return None
        self._job = job
        self.cancelled = False
        worker = GeneratorWorker(_drive, job)
        self.worker = worker
        self._bar = progress(total=0, desc=self.description)
        self._show_progress(Progress(0, None, "starting"))
        worker.yielded.connect(self._on_progress)
        if on_progress is not None:
            worker.yielded.connect(on_progress)
        worker.returned.connect(lambda result: self._on_returned(result, on_result))
        worker.errored.connect(self._on_error)
        worker.aborted.connect(lambda: self._on_aborted(on_cancel, cancel_message))
        worker.finished.connect(lambda: self._on_finished(on_end))
        if self.on_state is not None:
            self.on_state(True)
        # Closing the viewer's window stops the job (see `shutdown`); a runner outside a
        # window (tests) has nothing to watch.
        window = self.panel.native.window()
        if window is not self.panel.native:
            window.installEventFilter(self._close_watcher)
            self._watched = window
        worker.start()
        return worker

    def cancel(self) -> None:
        """Ask the running job to stop at its next progress event."""
        if self.worker is not None:
            self.cancelled = True
            self.worker.quit()

    def shutdown(self, timeout_s: float = SHUTDOWN_WAIT_S) -> None:
        """Stop a running job now and close it, touching no widget (they may be gone).

        The worker's signals are cut first, so no result or error reaches a deleted
        widget; the job is closed (its ``finally`` blocks remove partial output) once
        the worker thread has left it, waiting at most ``timeout_s``.
        """
        worker, job = self.worker, self._job
        if worker is None:
            return
        self.cancelled = True
        for signal in (worker.yielded, worker.returned, worker.errored, worker.aborted):
            signal.disconnect()
        worker.finished.disconnect()
        worker.quit()
        deadline = time.monotonic() + timeout_s
        while worker.is_running and time.monotonic() < deadline:
            time.sleep(0.01)
        if worker.is_running:
            LOG.warning("%s did not stop within %.0f s of closing", self.description, timeout_s)
        elif job is not None:
            job.close()
        if self._bar is not None:
            self._bar.close()
        self.worker, self._job, self._bar = None, None, None
        self._unwatch()

    def _unwatch(self) -> None:
        if self._watched is not None:
            self._watched.removeEventFilter(self._close_watcher)
        self._watched = None

    # -- slots, all on the GUI thread
    def _on_progress(self, event: Progress) -> None:
        bar = self._bar  # a local: updating the bar can process events that close it
        if bar is None or not isinstance(event, Progress):
            return
        if event.total and bar.total != event.total:
            bar.total = event.total
        bar.n = event.step
        text = progress_text(event)
        bar.set_description(f"{self.description}: {text}" if text else self.description)
        self._show_progress(event)

    def _show_progress(self, event: Progress) -> None:
        """Show ``event`` in the dock panel (an unknown total gives a busy bar)."""
        total = event.total or 0
        self.progress_bar.max = total
        self.progress_bar.value = min(event.step, total)
        self.message.value = progress_text(event)
        self.progress_bar.visible = True
        self.panel.visible = True

    def _on_returned(self, result: Any, on_result: Callable[[Any], None]) -> None:
        try:
            on_result(result)
        except Exception as error:  # a failing result handler must not kill napari
            self._on_error(error)

    def _on_error(self, error: BaseException) -> None:
        LOG.error("%s failed", self.description, exc_info=error)
        message = f"{self.description} failed: {user_message(error)}"
        show_error(message)
        # The toast may be cut off and goes away: the whole sentence stays in the dock.
        self.progress_bar.visible = False
        self.message.value = message
        self.panel.visible = True
        if self.status is not None:
            self.status.value = "failed (see below)"

    def _on_aborted(self, on_cancel: Callable[[], None] | None, message: str | None) -> None:
        # The worker stopped between two yields: the job is suspended, so closing it here
        # runs its cleanup (removing partial output) before we report.
        if self._job is not None:
            self._job.close()
        if self.status is not None:
            self.status.value = "cancelled"
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
        self._unwatch()
        if self.progress_bar.visible:  # no error to keep on show
            self.panel.visible = False
        if self.on_state is not None:
            self.on_state(False)
        if on_end is not None:
            try:
                on_end()
            except Exception as error:  # like a result handler: never kill napari
                self._on_error(error)


def progress_text(event: Progress) -> str:
    """The message, steps and ETA of a progress event, e.g. ``"tiles 3/12, ETA 4.2s"``."""
    steps = f"{event.step}/{event.total}" if event.total else ""
    eta = f"ETA {format_seconds(event.eta_s)}" if event.eta_s is not None else ""
    head = " ".join(part for part in (event.message, steps) if part)
    return ", ".join(part for part in (head, eta) if part)


class _CloseWatcher(QObject):
    """Event filter on the viewer's window: its Close event shuts the runner's job down."""

    def __init__(self, runner: JobRunner) -> None:
        super().__init__()
        self._runner = weakref.ref(runner)  # the runner owns the watcher: no cycle

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        runner = self._runner()
        if event.type() == QEvent.Type.Close and runner is not None:
            runner.shutdown()
        return False


def _drive(job: Generator[Progress, None, Any]) -> Generator[Progress, None, Any]:
    """Re-yield a job's events and return its result (what the worker thread runs)."""
    return (yield from job)
