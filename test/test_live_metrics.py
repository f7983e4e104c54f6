"""The transport-free measurement behind ``bench --live`` and the recorder node, and the
Pareto front of the bench report."""

from __future__ import annotations

import math
import threading

import pytest

from ask_expert_ros.core.evaluation.benchmark import pareto_front
from ask_expert_ros.core.nodes.live_metrics import LiveRecorder

MS = 1_000_000  # ns


def _graph() -> LiveRecorder:
    """Three frames, stamps 100, 200, 300 (ns), seen at t = 0, 10, 20 ms.

    * 100: offloaded; edge 2 + 3 ms, expert queue 1 ms + inference 4 ms, result at
      t = 20 ms -> end to end 20, network 20 - 5 - 1 - 4 = 10 ms.
    * 200: answered on the edge, result at t = 17 ms -> end to end = edge = 7 ms.
    * 300: offloaded, the expert said MODEL_ERROR (3), no result -> one drop.
    Plus a result for stamp 999 nobody sent, a second result for 200, and a request
    and a response from another edge, which must not count.
    """
    r = LiveRecorder(edge_id='e1')
    r.on_frame(100, 0)
    r.on_frame(200, 10 * MS)
    r.on_frame(300, 20 * MS)
    r.on_frame(100, 30 * MS)  # seen twice (e.g. two subscriptions): the first counts
    r.on_request(100, 5 * MS, 'e1', 2.0, 3.0)
    r.on_request(200, 12 * MS, 'other', 1.0, 1.0)
    r.on_response(100, 'e1', 0, 1.0, 4.0, 2)
    r.on_response(200, 'other', 0, 1.0, 1.0, 1)
    r.on_request(300, 25 * MS, 'e1', 2.0, 3.0)
    r.on_response(300, 'e1', 3, 0.0, 0.0, 1)
    r.on_result(100, 20 * MS, 'cat')
    r.on_result(200, 17 * MS, 'dog')
    r.on_result(200, 18 * MS, 'dog')
    r.on_result(999, 19 * MS, 'cat')
    return r


def test_summary_of_a_worked_example() -> None:
    s = _graph().summary({100: 'cat', 200: 'cat', 300: 'dog'})
    assert (s['frames_sent'], s['results'], s['dropped']) == (3, 2, 1)
    assert (s['duplicate_results'], s['unexpected_results']) == (1, 1)
    assert (s['offloaded'], s['expert_answers'], s['expert_failures']) == (2, 1, 1)
    assert s['offload_ratio'] == pytest.approx(2 / 3)
    assert s['labelled_frames'] == 3 and s['accuracy'] == pytest.approx(1 / 3)
    first, second, third = s['per_frame']
    assert first['end_to_end_ms'] == 20.0 and first['edge_ms'] == 5.0
    assert first['network_ms'] == pytest.approx(10.0)
    assert second == {'stamp_ns': 200, 'offloaded': False, 'expert_status': None,
                      'label': 'dog', 'end_to_end_ms': 7.0, 'edge_ms': 7.0}  # fmt: skip
    assert 'end_to_end_ms' not in third and third['expert_status'] == 3
    assert s['latency_ms']['count'] == 2 and s['latency_ms']['max'] == 20.0
    assert s['latency_ms']['p50'] == pytest.approx(13.5)
    assert s['split_ms']['network']['mean'] == pytest.approx(10.0)
    assert s['split_ms']['expert_inference']['mean'] == 4.0


def test_without_labels_or_frames() -> None:
    assert _graph().summary()['accuracy'] is None
    empty = LiveRecorder().summary()
    assert empty['frames_sent'] == 0 and empty['latency_ms'] is None
    assert empty['offload_ratio'] == 0.0


def test_threads_record_without_losing_frames() -> None:
    r = LiveRecorder()

    def feed(base: int) -> None:
        for i in range(500):
            r.on_frame(base + i, i)
            r.on_result(base + i, i + 1000, 'x')

    threads = [threading.Thread(target=feed, args=(k * 10_000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = r.summary()
    assert s['frames_sent'] == s['results'] == 2000 and s['unexpected_results'] == 0


def test_a_result_seen_before_its_frame_is_answered_not_dropped() -> None:
    """The recorder node's executor took a result (and request) before the frame.

    * 100: result at t = 4 ms, request at 3 ms, frame seen only at 5 ms: answered,
      offloaded, not dropped, not unexpected; no latency (it would be negative).
    * 200: frame at 6 ms, result at 9 ms: 3 ms end to end, the only latency.
    * 300: a result, and no frame ever seen: unexpected.
    """
    r = LiveRecorder()
    r.on_request(100, 3 * MS, 'e', 1.0, 1.0)
    r.on_result(100, 4 * MS, 'cat')
    r.on_frame(100, 5 * MS)
    r.on_frame(200, 6 * MS)
    r.on_result(200, 9 * MS, 'dog')
    r.on_result(300, 9 * MS, 'dog')
    s = r.summary({100: 'cat', 200: 'cat'})
    assert (s['frames_sent'], s['results'], s['dropped']) == (2, 2, 0)
    assert (s['unexpected_results'], s['seen_out_of_order'], s['offloaded']) == (1, 1, 1)
    assert s['accuracy'] == pytest.approx(1 / 2)
    assert s['latency_ms']['count'] == 1 and s['latency_ms']['max'] == 3.0
    assert s['per_frame'][0] == {'stamp_ns': 100, 'offloaded': True, 'expert_status': None,
                                 'label': 'cat'}  # fmt: skip


def test_pareto_front() -> None:
    """(cost, accuracy): a (1, .5) and c (2, .9) are on it; b (2, .4) is beaten by a;
    d (3, .9) by c (same accuracy, dearer); e has an unknown cost."""
    points = [
        {'latency': 1.0, 'accuracy': 0.5},
        {'latency': 2.0, 'accuracy': 0.4},
        {'latency': 2.0, 'accuracy': 0.9},
        {'latency': 3.0, 'accuracy': 0.9},
        {'latency': math.nan, 'accuracy': 1.0},
    ]
    assert pareto_front(points, 'latency') == [True, False, True, False, False]
