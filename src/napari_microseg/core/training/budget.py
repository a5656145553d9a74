"""The step and time budget of a training run, and its learning-rate schedule.

A run stops at whichever comes first: its step budget, or its time budget
(everything counted, preparation and the final validation and save too). The
:class:`Budget` measures the steps as they go, so it can tell how many more
fit in the time left, when training must stop to leave room for the last
validation, and how long is left (the ETA of the progress events).
"""

from __future__ import annotations

import math
import time

import numpy as np

#: Steps whose duration estimates the next ones (the first steps are slower).
RECENT = 20


class Budget:
    """Steps and seconds of one run.

    Parameters
    ----------
    steps : int or None
        Most steps; None for no step limit.
    deadline : float or None
        ``time.monotonic()`` by which the run must have finished.
    started : float
        ``time.monotonic()`` when the job started.
    reserve_s : float
        Seconds kept back for the final validation and saving; updated as
        validations are timed.
    """

    def __init__(
        self, *, steps: int | None, deadline: float | None, started: float, reserve_s: float = 3.0
    ) -> None:
        self.steps = steps
        self.deadline = deadline
        self.started = started
        self.reserve_s = reserve_s
        self.step_times: list[float] = []

    def record(self, seconds: float) -> None:
        """Note the duration of one training step."""
        self.step_times.append(seconds)

    @property
    def per_step(self) -> float | None:
        """Typical seconds per step (median of the recent ones), None before the first."""
        if not self.step_times:
            return None
        return float(np.median(self.step_times[-RECENT:]))

    def elapsed(self) -> float:
        """Seconds since the job started."""
        return time.monotonic() - self.started

    def exhausted(self, step: int) -> str | None:
        """``"steps"`` or ``"time"`` when another step would break the budget, else None."""
        if self.steps is not None and step >= self.steps:
            return "steps"
        if self.deadline is not None:
            if time.monotonic() + (self.per_step or 0.0) + self.reserve_s > self.deadline:
                return "time"
        return None

    def planned(self, step: int) -> int | None:
        """The total steps the run will probably take (None when unknown yet)."""
        planned = self.steps
        if self.deadline is not None and len(self.step_times) >= 3 and self.per_step:
            left = self.deadline - time.monotonic() - self.reserve_s
            by_time = step + max(int(left / self.per_step), 0)
            planned = by_time if planned is None else min(planned, by_time)
        return planned

    def eta(self, step: int) -> float | None:
        """Seconds left, from the steps left and the time budget."""
        if self.per_step is None:
            return None
        planned = self.planned(step)
        eta = None if planned is None else max(planned - step, 0) * self.per_step
        if self.deadline is not None:
            left = max(self.deadline - time.monotonic(), 0.0)
            eta = left if eta is None else min(eta, left)
        return eta


def lr_factor(
    step: int,
    planned: int | None,
    *,
    warmup: int = 0,
    schedule: str = "cosine",
    min_factor: float = 0.05,
) -> float:
    """Multiplier of the base learning rate at ``step``.

    Parameters
    ----------
    step : int
        Steps done so far.
    planned : int or None
        Total steps expected; without it only the warm-up applies.
    warmup : int
        Linear warm-up over this many steps (Adam's first steps are large).
    schedule : {"cosine", "step", "constant"}
        Cosine decay to ``min_factor``; or division by 10 after one and two thirds.
    min_factor : float
        The cosine schedule's final multiplier.

    Examples
    --------
    >>> lr_factor(0, 100, warmup=10)
    0.1
    >>> round(lr_factor(100, 100), 3)
    0.05
    """
    factor = 1.0
    if warmup > 0 and step < warmup:
        factor = (step + 1) / warmup
    if planned and schedule != "constant":
        progress = min(step / max(planned, 1), 1.0)
        if schedule == "cosine":
            factor *= min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
        elif schedule == "step":
            factor *= 0.1 ** int(progress * 3)
    return factor
