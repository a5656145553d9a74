"""Progress events for long-running jobs, and the helper that drains them.

Every long job in the core (inference, training, export) is written as a
generator that ``yield``\\ s :class:`Progress` events and ``return``\\ s its
result. The CLI drains such a generator with :func:`drain`; napari widgets run
it in a ``thread_worker`` and cancel it with ``worker.quit()``, which takes
effect at the next ``yield``. Closing the generator (``gen.close()``) raises
``GeneratorExit`` inside it, so a job cleans up in a ``try/finally`` and
leaves nothing half-written.

Examples
--------
>>> def count(n):
...     for i in range(n):
...         yield Progress(i + 1, n, "counting")
...     return n * 10
>>> drain(count(3), show=False)
30
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TextIO, TypeVar

ResultT = TypeVar("ResultT")

#: The type of every long-running core job.
Job = Generator["Progress", None, ResultT]


@dataclass(frozen=True)
class Progress:
    """One progress event of a long-running job.

    Parameters
    ----------
    step : int
        Units of work done so far (tiles, slices, training steps...).
    total : int or None
        Units of work in the whole job, or None when unknown.
    message : str
        A short human-readable description of the current stage.
    eta_s : float or None
        Estimated seconds left, when the job can tell.
    info : dict
        Extra values for live displays (for example ``{"loss": 0.31}``).
    """

    step: int
    total: int | None = None
    message: str = ""
    eta_s: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float | None:
        """Fraction of the job done, in [0, 1], or None when the total is unknown."""
        if not self.total:
            return None
        return min(max(self.step / self.total, 0.0), 1.0)

    def __str__(self) -> str:
        done = f"{self.step}/{self.total}" if self.total else f"{self.step}"
        eta = f", ETA {format_seconds(self.eta_s)}" if self.eta_s is not None else ""
        text = f"{self.message} " if self.message else ""
        return f"{text}[{done}{eta}]"


class EtaClock:
    """Estimate the time left from the rate of work done so far.

    Parameters
    ----------
    total : int
        Units of work in the whole job.
    clock : callable, optional
        A monotonic clock in seconds; injectable for tests.
    """

    def __init__(self, total: int, clock: Callable[[], float] = time.perf_counter) -> None:
        self.total = total
        self._clock = clock
        self._start = clock()

    def progress(self, step: int, message: str = "", **info: Any) -> Progress:
        """Return a :class:`Progress` for ``step`` units done, with an ETA."""
        elapsed = self._clock() - self._start
        eta = None
        if step > 0 and self.total:
            eta = elapsed / step * max(self.total - step, 0)
        return Progress(step, self.total, message, eta, dict(info))


def format_seconds(seconds: float) -> str:
    """Format a duration as ``"1h02m"``, ``"3m05s"`` or ``"4.2s"``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def drain(
    job: Job[ResultT],
    *,
    show: bool = True,
    stream: TextIO | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> ResultT:
    """Run a progress generator to the end and return its result.

    Parameters
    ----------
    job : generator
        Yields :class:`Progress` events and returns the result.
    show : bool
        Draw a one-line text progress bar on ``stream``.
    stream : file-like, optional
        Where the bar goes; standard error by default.
    on_progress : callable, optional
        Called with every event (for logging or tests).

    Returns
    -------
    result
        Whatever the generator returned.

    Notes
    -----
    On ``KeyboardInterrupt`` the generator is closed, so it can clean up, and
    the interrupt propagates.
    """
    out = stream if stream is not None else sys.stderr
    bar = _TextBar(out) if show else None
    try:
        while True:
            event = next(job)
            if on_progress is not None:
                on_progress(event)
            if bar is not None:
                bar.update(event)
    except StopIteration as stop:
        if bar is not None:
            bar.finish()
        return stop.value
    except BaseException:
        job.close()
        if bar is not None:
            bar.finish()
        raise


class _TextBar:
    """A dependency-free progress bar that redraws one line."""

    width = 28

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.interactive = bool(getattr(stream, "isatty", lambda: False)())
        self._last_len = 0
        self._last_print = 0.0
        self._drawn = False

    def update(self, event: Progress) -> None:
        fraction = event.fraction
        if fraction is None:
            bar = ""
        else:
            filled = round(fraction * self.width)
            bar = "|" + "#" * filled + "-" * (self.width - filled) + f"| {fraction:4.0%} "
        line = f"{bar}{event}"
        if self.interactive:
            pad = " " * max(self._last_len - len(line), 0)
            self.stream.write("\r" + line + pad)
            self._last_len = len(line)
        else:
            # Logs and CI: print at most once a second, and always the last step.
            now = time.perf_counter()
            if now - self._last_print < 1.0 and event.step != event.total:
                return
            self._last_print = now
            self.stream.write(line + "\n")
        self._drawn = True
        self.stream.flush()

    def finish(self) -> None:
        if self._drawn and self.interactive:
            self.stream.write("\n")
            self.stream.flush()
