"""Annotated frames and health records."""

from __future__ import annotations

import numpy as np

from ask_expert_ros.core.annotate import COLOURS, annotate
from ask_expert_ros.core.diagnostics import HealthMonitor, Level
from ask_expert_ros.core.engine import ResultSource
from ask_expert_ros.core.messages import FinalResult, Header


def result(source: ResultSource) -> FinalResult:
    return FinalResult(Header(), 3, 'three', 0.91, source)


def test_annotate_enlarges_small_frames_and_marks_the_source() -> None:
    grey = np.zeros((8, 8), dtype=np.uint8)
    out = annotate(grey, result(ResultSource.EXPERT))
    assert out.shape == (160, 160, 3) and out.dtype == np.uint8
    assert tuple(out[-1, 80]) == COLOURS[ResultSource.EXPERT]  # the frame border
    assert grey.max() == 0  # input untouched


def test_annotate_keeps_big_frames_size() -> None:
    frame = np.full((480, 640, 3), 128, dtype=np.uint8)
    out = annotate(frame, result(ResultSource.FALLBACK))
    assert out.shape == frame.shape and not np.array_equal(out, frame)
    assert (frame == 128).all()


def test_health_levels_follow_the_period() -> None:
    monitor = HealthMonitor('edge robot1', 'host')
    first = monitor.update({'frames': 10, 'offloaded': 4, 'fallback_deadline': 0}, 0.0)
    assert first.level == Level.OK and first.values['frames'] == 10
    warn = monitor.update({'frames': 30, 'offloaded': 8, 'fallback_deadline': 1}, 2.0)
    assert warn.level == Level.WARN and warn.values['frames_per_s'] == 10.0
    error = monitor.update({'frames': 40, 'offloaded': 10, 'fallback_deadline': 3}, 3.0)
    assert error.level == Level.ERROR and 'all 2 offloaded' in error.message
    ok = monitor.update({'frames': 50, 'offloaded': 10, 'fallback_deadline': 3}, 4.0)
    assert ok.level == Level.OK
