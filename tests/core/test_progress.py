"""The progress-generator convention and drain()."""

from __future__ import annotations

import io

import pytest

from napari_microseg.core.progress import EtaClock, Progress, drain, format_seconds


def counting_job(n, cleanup):
    try:
        for i in range(n):
            yield Progress(i + 1, n, "counting")
        return "done"
    finally:
        cleanup.append("closed")


def test_drain_returns_the_result_and_reports_every_event():
    events, cleanup = [], []
    assert drain(counting_job(4, cleanup), show=False, on_progress=events.append) == "done"
    assert [e.step for e in events] == [1, 2, 3, 4]
    assert cleanup == ["closed"]


def test_drain_draws_a_bar_and_ends_with_the_last_step():
    stream = io.StringIO()
    drain(counting_job(3, []), stream=stream)
    assert "3/3" in stream.getvalue()


def test_closing_a_job_runs_its_cleanup():
    cleanup = []
    job = counting_job(10, cleanup)
    next(job)
    job.close()
    assert cleanup == ["closed"]


def test_an_error_in_the_callback_closes_the_job():
    cleanup = []

    def boom(event):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        drain(counting_job(5, cleanup), show=False, on_progress=boom)
    assert cleanup == ["closed"]


def test_eta_from_a_fake_clock():
    times = iter([0.0, 10.0])
    clock = EtaClock(total=4, clock=lambda: next(times))
    event = clock.progress(1, "tile", loss=0.5)
    assert event.eta_s == pytest.approx(30.0)
    assert event.info == {"loss": 0.5}
    assert event.fraction == pytest.approx(0.25)
    assert "ETA 30.0s" in str(event)


def test_unknown_total_has_no_fraction():
    assert Progress(3).fraction is None
    assert str(Progress(3, message="step")) == "step [3]"


@pytest.mark.parametrize(("seconds", "text"), [(4.25, "4.2s"), (65, "1m05s"), (3725, "1h02m")])
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text
