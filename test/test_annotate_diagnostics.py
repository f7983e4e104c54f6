"""Annotated frames (core/nodes/annotate.py) and health records (core/nodes/diagnostics.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from ask_expert_ros.core.errors import UnsupportedImageError
from ask_expert_ros.core.inference.engine import ResultSource
from ask_expert_ros.core.inference.patches import PatchSelection
from ask_expert_ros.core.nodes.annotate import (
    COLOURS,
    PATCH_COLOUR,
    annotate,
    caption,
    patch_box,
    scale_for,
)
from ask_expert_ros.core.nodes.diagnostics import HealthMonitor, Level, assess, offload_settings
from ask_expert_ros.core.nodes.edge_logic import EdgeParams
from ask_expert_ros.core.nodes.messages import FinalResult, Header


def result(source: ResultSource, label: int = 3, name: str = 'three') -> FinalResult:
    return FinalResult(Header(), label, name, 0.91, source)


def test_annotate_enlarges_small_frames_and_marks_the_source() -> None:
    """8x8 -> x40 = 320x320 (MIN_SIDE); the bottom row is the border, in EXPERT blue."""
    grey = np.zeros((8, 8), dtype=np.uint8)
    out = annotate(grey, result(ResultSource.EXPERT))
    assert out.shape == (320, 320, 3) and out.dtype == np.uint8
    assert tuple(out[-1, 160]) == COLOURS[ResultSource.EXPERT]  # the frame border
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
        (8, 8, 40),  # ceil(320 / 8)
        (1, 1, 320),
        (100, 100, 4),  # ceil(320 / 100)
        (480, 640, 1),
        (8, 640, 3),  # wants 40, but 640 * 3 = 1920 is the cap
        (2, 4000, 1),  # already wider than MAX_SIDE: never shrunk, never enlarged
    ],
)
def test_scale_is_bounded_by_both_sides(height: int, width: int, expected: int) -> None:
    assert scale_for(height, width) == expected


def test_annotate_does_not_touch_a_non_contiguous_view() -> None:
    base = np.zeros((200, 300, 3), np.uint8)
    view = base[::2, ::2]  # 100x150, strided
    out = annotate(view, result(ResultSource.EDGE))
    assert out.shape == (400, 600, 3) and base.max() == 0  # x4: ceil(320 / 100)


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


def test_annotate_outlines_the_sent_patches_only() -> None:
    """A 64x64 frame is drawn x5 (320x320); a 4x4 patch grid stretched over it has 80-pixel
    cells. Sent patches 5 (row 1, col 1) and 10 (row 2, col 2) are the cells at
    [80, 160) x [80, 160) and [160, 240) x [160, 240): against the same result without
    patches, every changed pixel lies in one of them, and each one's outline (its edge
    rows and columns) is the patch colour. The banner and the border are drawn last, so
    they look the same either way."""
    frame = np.full((64, 64, 3), 100, np.uint8)
    plain = annotate(frame, result(ResultSource.EXPERT))
    sent = replace(result(ResultSource.EXPERT), sent_patches=(5, 10), patch_grid=(4, 4))
    out = annotate(frame, sent)
    changed = (out != plain).any(axis=2)
    inside = np.zeros_like(changed)
    for top, left in ((80, 80), (160, 160)):
        inside[top : top + 80, left : left + 80] = True
        cell = out[top : top + 80, left : left + 80]
        for edge in (cell[0], cell[-1], cell[:, 0], cell[:, -1]):
            assert (edge == PATCH_COLOUR).all()
        assert tuple(cell[40, 40]) == (100, 100, 100)  # the inside shows the frame
    assert changed.any() and not (changed & ~inside).any()


def test_patch_boxes_tile_a_frame_the_grid_does_not_divide() -> None:
    """A 2x3 grid on a 10x10 frame: rows split at 5, columns at 3 and 6."""
    boxes = [patch_box(i, (2, 3), 10, 10) for i in range(6)]
    assert boxes == [(0, 0, 5, 3), (0, 3, 5, 6), (0, 6, 5, 10),
                     (5, 0, 10, 3), (5, 3, 10, 6), (5, 6, 10, 10)]  # fmt: skip


def test_edge_status_shows_offload_mode_rho_and_bytes_per_offload() -> None:
    """Period: 4 frames offloaded, 4 x 3,000 bytes -> 3,000 bytes per offload; the patch
    settings (attention, rho 0.3) are shown as they are."""
    params = EdgeParams('e1', offload_mode='patches', patches=PatchSelection(keep_ratio=0.3))
    before = {'frames': 10, 'offloaded': 2, 'offload_bytes': 6_000}
    now = {'frames': 20, 'offloaded': 6, 'offload_bytes': 18_000}
    record = assess('edge', now, before, 1.0, settings=offload_settings(params))
    assert record.values['bytes_per_offload'] == 3_000.0
    assert record.values['offload_mode'] == 'patches'
    assert record.values['patch_selection'] == 'attention'
    assert record.values['keep_ratio'] == 0.3 and 'attention_mass' not in record.values
    mass = EdgeParams(
        'e1',
        offload_mode='patches',
        patches=PatchSelection(keep_ratio=None, attention_mass=0.9),
    )
    assert offload_settings(mass)['attention_mass'] == 0.9
    assert offload_settings(EdgeParams('e1')) == {'offload_mode': 'frame', 'transport': 'raw'}
    assert offload_settings(EdgeParams('e1', offload=False))['offload_mode'] == 'off'
    idle = assess('edge', before, before, 1.0)  # nothing offloaded: no mean to show
    assert 'bytes_per_offload' not in idle.values
