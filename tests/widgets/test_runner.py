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


def test_progress_shows_in_the_dock_panel_with_eta(qtbot):
    seen = []
    runner = JobRunner("Test")

    def job():
        yield Progress(1, 4, "tiles", eta_s=3.0)
        time.sleep(0.2)
        return "done"

    def show(event):
        seen.append(runner.message.value)

    runner.start(job(), lambda result: None, on_progress=show)
    qtbot.waitUntil(lambda: runner.worker is None, timeout=5000)
    assert seen and "tiles" in seen[0] and "ETA" in seen[0]
    assert runner.progress_bar.max == 4 and runner.progress_bar.value == 1


def test_a_failure_resets_the_status_and_keeps_the_whole_message(qtbot, monkeypatch):
    from magicgui.widgets import Label

    monkeypatch.setattr("napari_microseg._widgets._runner.show_error", lambda message: None)
    status = Label(value="training…")
    long_reason = "The model expects 3 channels; " + "choose an RGB image. " * 20

    def failing():
        yield Progress(1, 2)
        raise ValueError(long_reason)

    runner = JobRunner("Fine-tune", status=status)
    runner.start(failing(), lambda result: None)
    qtbot.waitUntil(lambda: runner.worker is None, timeout=5000)
    assert status.value == "failed (see below)"
    assert long_reason.strip() in runner.message.value and runner.panel.visible


def test_a_second_start_is_refused_with_a_message(qtbot, monkeypatch):
    warnings, cleanup, second = [], [], []
    monkeypatch.setattr("napari_microseg._widgets._runner.show_warning", warnings.append)
    runner = JobRunner("Segment")
    runner.start(slow_job(50, cleanup), lambda result: None)
    assert runner.start(slow_job(5, second), lambda result: None) is None
    assert second == []  # closed before it ever ran: its body never started
    assert warnings == ["Segment is already running; wait for it to finish or press Cancel."]
    runner.cancel()
    qtbot.waitUntil(lambda: runner.worker is None, timeout=5000)


def test_closing_the_viewer_during_a_run_stops_the_job_and_delivers_nothing(
    make_napari_viewer, qtbot
):
    from magicgui.widgets import Container

    viewer = make_napari_viewer()
    runner = JobRunner("Segment")
    dock = Container(widgets=[runner.panel])
    viewer.window.add_dock_widget(dock)
    results, cleanup, ended = [], [], []
    runner.start(slow_job(1000, cleanup), results.append, on_end=lambda: ended.append(1))
    qtbot.waitUntil(lambda: runner.progress_bar.value > 0, timeout=5000)
    viewer.close()  # File > Close Window, or the window's X
    assert runner.worker is None and cleanup == ["closed"]  # stopped and cleaned up at once
    qtbot.wait(200)
    assert results == [] and ended == []  # nothing reaches widgets that are gone
