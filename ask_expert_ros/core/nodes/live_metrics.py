"""End-to-end measurement of a running edge/expert graph, transport-free.

An observer on the graph (the DDS live runner, the rclpy recorder node) tells a
:class:`LiveRecorder` what it sees, each with its own receive time; frames are
matched across topics by their camera header stamp, which every message of a frame
carries unchanged. The summary gives, per frame and as statistics:

* ``end_to_end_ms``: camera frame seen (or sent) -> final ``Classification`` seen;
* ``edge_ms``: the edge's preprocessing + inference (from the ``ExpertRequest``
  fields; for a frame answered on the edge: its whole end-to-end time);
* ``expert_queue_ms`` / ``expert_inference_ms``: from the ``ExpertResponse``;
* ``network_ms``: what is left of an offloaded frame's end-to-end time -- DDS
  transit both ways, serialisation, the edge's wait and publish;
* drops: frames with no result, results for frames never seen, duplicate results.

An observer may see a frame's result (or request) before the frame itself: the
recorder node serves its subscriptions one at a time, in whatever order its executor
takes them. Such a frame counts as answered, not dropped, and is left out of the
latency figures, which this observer cannot measure for it (``seen_out_of_order``).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STATUS_OK = 0


@dataclass
class FrameTrace:
    """What was seen of one camera frame (times in ns on the observer's clock)."""

    index: int
    seen_ns: int
    request_ns: int | None = None
    edge_ms: float | None = None
    response_status: int | None = None
    expert_queue_ms: float | None = None
    expert_inference_ms: float | None = None
    expert_batch: int | None = None
    result_ns: int | None = None
    result_label: str | None = None
    results: int = 0
    seen_out_of_order: bool = False  # a later message of the frame was seen first


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    a = np.asarray(values, np.float64)
    return {
        'count': len(values),
        'mean': float(a.mean()),
        'p50': float(np.percentile(a, 50)),
        'p95': float(np.percentile(a, 95)),
        'max': float(a.max()),
    }


@dataclass
class LiveRecorder:
    """Collects frame, request, response and result observations; thread-safe.

    Attributes:
        edge_id: Only requests/responses of this edge count ('' : any edge).
    """

    edge_id: str = ''
    _frames: dict[int, FrameTrace] = field(default_factory=dict)
    # what was seen of frames not (yet) seen themselves, by stamp
    _unseen: dict[int, FrameTrace] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _trace(self, stamp_ns: int) -> FrameTrace:
        trace = self._frames.get(stamp_ns) or self._unseen.get(stamp_ns)
        if trace is None:
            trace = self._unseen[stamp_ns] = FrameTrace(-1, 0)
        return trace

    def on_frame(self, stamp_ns: int, seen_ns: int) -> None:
        """A camera frame with this stamp was sent or seen at ``seen_ns``."""
        with self._lock:
            if stamp_ns in self._frames:
                return
            trace = self._unseen.pop(stamp_ns, None)
            if trace is None:
                trace = FrameTrace(len(self._frames), seen_ns)
            else:
                trace.index = len(self._frames)
                trace.seen_ns = seen_ns
                trace.seen_out_of_order = True
            self._frames[stamp_ns] = trace

    def on_request(
        self, stamp_ns: int, seen_ns: int, edge_id: str, preprocess_ms: float, inference_ms: float
    ) -> None:
        """An ``ExpertRequest`` for the frame was seen (edge timing fields, ms)."""
        if self.edge_id and edge_id != self.edge_id:
            return
        with self._lock:
            trace = self._trace(stamp_ns)
            if trace.request_ns is None:
                trace.request_ns = seen_ns
                trace.edge_ms = float(preprocess_ms) + float(inference_ms)

    def on_response(
        self,
        stamp_ns: int,
        edge_id: str,
        status: int,
        queue_ms: float,
        inference_ms: float,
        batch_size: int,
    ) -> None:
        """An ``ExpertResponse`` for the frame was seen (expert timing fields, ms)."""
        if self.edge_id and edge_id != self.edge_id:
            return
        with self._lock:
            trace = self._trace(stamp_ns)
            if trace.response_status is None:
                trace.response_status = int(status)
                trace.expert_queue_ms = float(queue_ms)
                trace.expert_inference_ms = float(inference_ms)
                trace.expert_batch = int(batch_size)

    def on_result(self, stamp_ns: int, seen_ns: int, label: str) -> None:
        """A final ``Classification`` for the frame was seen ('' label: no hypothesis)."""
        with self._lock:
            trace = self._trace(stamp_ns)
            trace.results += 1
            if trace.result_ns is None:
                trace.result_ns = seen_ns
                trace.result_label = label

    @property
    def frames_seen(self) -> int:
        with self._lock:
            return len(self._frames)

    @property
    def results_seen(self) -> int:
        with self._lock:
            return sum(t.result_ns is not None for t in self._frames.values())

    def summary(self, labels: Mapping[int, str] | None = None) -> dict[str, Any]:
        """Counts, accuracy (when ``labels``: stamp -> class name) and latency splits, ms."""
        with self._lock:
            traces = sorted(self._frames.items(), key=lambda item: item[1].index)
            unexpected = sum(t.results for t in self._unseen.values())
        per_frame = []
        e2e: list[float] = []
        edge: list[float] = []
        network: list[float] = []
        queue: list[float] = []
        expert: list[float] = []
        correct = labelled = 0
        for stamp, t in traces:
            row: dict[str, Any] = {
                'stamp_ns': stamp,
                'offloaded': t.request_ns is not None,
                'expert_status': t.response_status,
                'label': t.result_label,
            }
            if t.result_ns is not None and not t.seen_out_of_order:
                total = (t.result_ns - t.seen_ns) / 1e6
                row['end_to_end_ms'] = total
                e2e.append(total)
                if t.edge_ms is None:
                    row['edge_ms'] = total  # answered on the edge: all of it was edge time
                    edge.append(total)
                else:
                    row['edge_ms'] = t.edge_ms
                    edge.append(t.edge_ms)
                    expert_part = 0.0
                    if t.response_status is not None:
                        row['expert_queue_ms'] = t.expert_queue_ms
                        row['expert_inference_ms'] = t.expert_inference_ms
                        queue.append(t.expert_queue_ms or 0.0)
                        expert.append(t.expert_inference_ms or 0.0)
                        expert_part = (t.expert_queue_ms or 0.0) + (t.expert_inference_ms or 0.0)
                    rest = total - t.edge_ms - expert_part
                    row['network_ms'] = rest
                    network.append(rest)
            if labels is not None and stamp in labels:
                labelled += 1
                correct += int(t.result_label == labels[stamp])
            per_frame.append(row)
        n = len(traces)
        offloaded = sum(t.request_ns is not None for _, t in traces)
        answered = sum(t.result_ns is not None for _, t in traces)
        return {
            'frames_sent': n,
            'results': answered,
            'dropped': n - answered,
            'duplicate_results': sum(max(t.results - 1, 0) for _, t in traces),
            'unexpected_results': unexpected,
            'seen_out_of_order': sum(t.seen_out_of_order for _, t in traces),
            'offloaded': offloaded,
            'offload_ratio': offloaded / n if n else 0.0,
            'expert_answers': sum(t.response_status == STATUS_OK for _, t in traces),
            'expert_failures': sum(
                t.request_ns is not None and t.response_status != STATUS_OK for _, t in traces
            ),
            'labelled_frames': labelled,
            'accuracy': correct / labelled if labelled else None,
            'latency_ms': _stats(e2e),
            'split_ms': {
                'edge': _stats(edge),
                'network': _stats(network),
                'expert_queue': _stats(queue),
                'expert_inference': _stats(expert),
            },
            'per_frame': per_frame,
        }
