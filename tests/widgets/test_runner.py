"""JobRunner: results on the GUI thread, errors as notifications, Cancel closes the job."""

from __future__ import annotations

import time

from napari_microseg._widgets._runner import JobRunner
from napari_microseg.core.progress import Progress


def slow_job(n, cleanup, delay=0.02):
    try:
        for step in range(n):
            time.sleep(delay)
            yield Progress(step + 1, n, "working")
        return "result"
    finally:
        cleanup.append("closed")


def test_result_arrives_and_state_toggles(qtbot):
    states, results, cleanup = [], [], []
    runner = JobRunner("Test", on_state=states.append)
    runner.start(slow_job(3, cleanup), results.append)
    qtbot.waitUntil(lambda: runner.worker is None, timeout=5000)
    assert results == ["result"] and states == [True, False] and cleanup == ["closed"]


def test_cancel_closes_the_job_within_one_step(qtbot):
    results, cleanup, cancelled = [], [], []
    runner = JobRunner("Test")
    runner.start(slow_job(1000, cleanup), results.append, on_cancel=lambda: cancelled.append(1))
    qtbot.wait(100)
    runner.cancel()
    qtbot.waitUntil(lambda: runner.worker is None, timeout=5000)
    assert results == [] and cleanup == ["closed"] and cancelled == [1]


def test_errors_become_one_sentence(qtbot, monkeypatch):
    messages = []
    monkeypatch.setattr("napari_microseg._widgets._runner.show_error", messages.append)

    def failing():
        yield Progress(1, 2)
        raise ValueError("The image is empty; open another one.")

    runner = JobRunner("Test")
    runner.start(failing(), lambda result: None)
    qtbot.waitUntil(lambda: runner.worker is None, timeout=5000)
    assert messages == ["Test failed: The image is empty; open another one."]
