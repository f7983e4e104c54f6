"""Annotated frames (core/annotate.py) and health records (core/diagnostics.py)."""

from __future__ import annotations

import numpy as np
import pytest

from ask_expert_ros.core.annotate import COLOURS, annotate, caption, scale_for
from ask_expert_ros.core.diagnostics import HealthMonitor, Level, assess
from ask_expert_ros.core.engine import ResultSource
from ask_expert_ros.core.errors import UnsupportedImageError
from ask_expert_ros.core.messages import FinalResult, Header


def result(source: ResultSource, label: int = 3, name: str = 'three') -> FinalResult:
    return FinalResult(Header(), label, name, 0.91, source)


def test_annotate_enlarges_small_frames_and_marks_the_source() -> None:
    """8x8 -> x20 = 160x160 (MIN_SIDE); the bottom row is the border, in EXPERT blue."""
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


@pytest.mark.parametrize('source', list(ResultSource), ids=lambda s: s.name)
def test_every_source_has_its_own_border_colour(source: ResultSource) -> None:
    out = annotate(np.full((64, 64, 3), 200, np.uint8), result(source, -1 if source == 3 else 2))
    assert tuple(out[-1, 32]) == COLOURS[source]
    assert len(set(COLOURS.values())) == len(ResultSource)


@pytest.mark.parametrize(
    ('height', 'width', 'expected'),
    [
        (8, 8, 20),  # ceil(160 / 8)
        (1, 1, 160),
        (100, 100, 2),  # ceil(160 / 100)
        (480, 640, 1),
        (8, 640, 3),  # wants 20, but 640 * 3 = 1920 is the cap
        (2, 4000, 1),  # already wider than MAX_SIDE: never shrunk, never enlarged
    ],
)
def test_scale_is_bounded_by_both_sides(height: int, width: int, expected: int) -> None:
    assert scale_for(height, width) == expected


def test_annotate_does_not_touch_a_non_contiguous_view() -> None:
    base = np.zeros((200, 300, 3), np.uint8)
    view = base[::2, ::2]  # 100x150, strided
    out = annotate(view, result(ResultSource.EDGE))
    assert out.shape == (200, 300, 3) and base.max() == 0


def test_caption_names_label_score_and_source() -> None:
    assert caption(result(ResultSource.EXPERT)) == 'three 0.91 [expert]'
    invalid = FinalResult(Header(), -1, '', 0.0, ResultSource.INVALID)
    assert caption(invalid) == '? [invalid]'


@pytest.mark.parametrize(
    'pixels',
    [np.zeros((0, 4), np.uint8), np.zeros((4, 4), np.float32), np.zeros((4, 4, 4), np.uint8)],
    ids=['empty', 'float', 'rgba'],
)
def test_annotate_rejects_what_it_cannot_draw_on(pixels: np.ndarray) -> None:
    with pytest.raises(UnsupportedImageError):
        annotate(pixels, result(ResultSource.EDGE))


def test_health_levels_follow_the_period() -> None:
    monitor = HealthMonitor('edge robot1', 'host')
    first = monitor.update({'frames': 10, 'offloaded': 4, 'fallback_deadline': 0}, 0.0)
    assert first.level == Level.OK and first.values['frames'] == 10
    assert 'frames_per_s' not in first.values  # no period yet
    warn = monitor.update({'frames': 30, 'offloaded': 8, 'fallback_deadline': 1}, 2.0)
    assert warn.level == Level.WARN and warn.values['frames_per_s'] == 10.0
    error = monitor.update({'frames': 40, 'offloaded': 10, 'fallback_deadline': 3}, 3.0)
    assert error.level == Level.ERROR and 'all 2 offloaded' in error.message
    ok = monitor.update({'frames': 50, 'offloaded': 10, 'fallback_deadline': 3}, 4.0)
    assert ok.level == Level.OK and ok.hardware_id == 'host'


def test_assess_edge_period_rates_and_ratio() -> None:
    """Period: 40 frames, 10 offloaded, 2 s -> 20 frames/s, 5 offloaded/s, ratio 0.25."""
    before = {'frames': 60, 'offloaded': 20, 'expert': 18, 'fallback_deadline': 2}
    now = {'frames': 100, 'offloaded': 30, 'expert': 28, 'fallback_deadline': 2}
    record = assess('ask_expert: edge e1', now, before, 2.0)
    assert record.level == Level.OK and record.message == 'ok'
    assert record.values['frames_per_s'] == 20.0
    assert record.values['offloaded_per_s'] == 5.0
    assert record.values['offload_ratio'] == 0.25
    assert record.values['frames'] == 100  # totals, not the period


@pytest.mark.parametrize(
    ('delta', 'level'),
    [
        ({}, Level.OK),
        ({'foreign_replies': 5}, Level.OK),  # another edge's answers: normal
        ({'bad_input': 1}, Level.WARN),
        ({'offloaded': 4, 'fallback_unavailable': 1}, Level.WARN),
        ({'offloaded': 4, 'fallback_unavailable': 4}, Level.ERROR),
        ({'requests': 3, 'unknown_key': 1}, Level.WARN),  # expert side
        ({'requests': 3, 'model_errors': 3}, Level.ERROR),  # a failing model is no input fault
        ({'frames': 5, 'model_errors': 5}, Level.ERROR),  # edge side: its model failed
        ({'requests': 3, 'expired': 1}, Level.WARN),
    ],
)
def test_assess_levels(delta: dict[str, int], level: Level) -> None:
    keys = [
        'frames',
        'offloaded',
        'foreign_replies',
        'bad_input',
        'fallback_unavailable',
        'requests',
        'unknown_key',
        'model_errors',
        'expired',
    ]
    before = dict.fromkeys(keys, 7)
    now = {k: before[k] + delta.get(k, 0) for k in keys}
    assert assess('n', now, before, 1.0).level == level


def test_assess_without_a_period_has_no_rates() -> None:
    record = assess('n', {'requests': 4, 'answered': 4}, None, None)
    assert record.level == Level.OK
    assert not any(k.endswith('_per_s') for k in record.values)
    assert assess('n', {'requests': 4}, None, 0.0).values == {'requests': 4}
