"""``edge_pipeline``: frames/s from received ``sensor_msgs/Image`` objects through
:class:`EdgeLogic` to the messages to publish, over the bare model's frames/s.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ask_expert_ros.bench.speed.common import SpeedConfig, p50, times_ms
from ask_expert_ros.bench.speed.models import auto_backend
from ask_expert_ros.core.inference.engine import EdgeStage
from ask_expert_ros.core.inference.models import (
    LoadedModel,
)
from ask_expert_ros.core.inference.preprocess import Preprocessor
from ask_expert_ros.core.inference.routing import RoutingConfig
from ask_expert_ros.core.inference.taxonomy import PartitionScheme
from ask_expert_ros.core.nodes.edge_logic import EdgeLogic, EdgeParams
from ask_expert_ros.core.nodes.messages import (
    Header,
    Stamp,
)

logger = logging.getLogger(__name__)


def _camera_images(config: SpeedConfig, count: int) -> list[Any]:
    from ask_expert_ros.dds import conversions as conv

    rng = np.random.default_rng(1)
    size = config.img_size
    return [
        conv.frame_to_image(
            rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
            Header(Stamp(1_700_000_000 + i, 0), 'camera'),
        )
        for i in range(count)
    ]


def bench_edge_pipeline(config: SpeedConfig, edge: LoadedModel, scheme: PartitionScheme) -> dict:
    """Image objects -> EdgeLogic -> objects to publish, vs the bare model, alternating."""
    from ask_expert_ros.dds import conversions as conv

    images = _camera_images(config, max(config.batches))
    frames = [conv.image_to_frame(m) for m in images]
    backend = auto_backend(edge, config.threads)
    stage = EdgeStage(edge, scheme, RoutingConfig(tau=1.01, k=2), backend)
    # tau at the median edge confidence: about half the frames are offloaded, as in
    # the paper's operating points, so both the result and the request path are timed
    confidence = stage.run(_batch(frames)).routing.confidence
    tau = float(np.median(confidence))
    routing = RoutingConfig(tau=tau, k=2)
    logic = EdgeLogic(
        EdgeStage(edge, scheme, routing, backend),
        EdgeParams(edge_id='bench', routing=routing, deadline_ms=3_600_000),
    )
    preprocess = Preprocessor(edge.config)
    rows = []
    for b in config.batches:
        batch_images = images[:b]
        x = preprocess([f.pixels for f in frames[:b]]).numpy()
        offloaded = [0, 0]

        def pipeline(
            batch_images: list[Any] = batch_images, offloaded: list[int] = offloaded
        ) -> None:
            step = logic.process([conv.image_to_frame(m) for m in batch_images])
            for result in step.results:
                conv.result_to_classification(result)
            for request in step.requests:
                conv.request_to_dds(request)
            offloaded[0] += len(step.requests)
            offloaded[1] += len(batch_images)

        def bare(x: np.ndarray = x) -> None:
            backend.run(x)  # the same backend, on the already preprocessed batch

        pipe_ms: list[float] = []
        bare_ms: list[float] = []
        pipeline()  # warm-up
        bare()
        for _ in range(config.repeats):  # alternate: both see the same machine state
            pipe_ms.extend(times_ms(pipeline, 1, warmup=0))
            bare_ms.extend(times_ms(bare, 1, warmup=0))
        pipe_fps = b / (p50(pipe_ms) * 1e-3)
        bare_fps = b / (p50(bare_ms) * 1e-3)
        rows.append(
            {
                'batch': b,
                'pipeline_ms_p50': p50(pipe_ms),
                'bare_ms_p50': p50(bare_ms),
                'pipeline_fps': pipe_fps,
                'bare_fps': bare_fps,
                'ratio': pipe_fps / bare_fps,
                'offload_fraction': offloaded[0] / offloaded[1],
            }
        )
    bare_1 = next((r['bare_ms_p50'] for r in rows if r['batch'] == 1), rows[0]['bare_ms_p50'])
    return {
        'variant': edge.config.variant,
        'backend': f'{backend.kind}/{backend.precision}',
        'tau': tau,
        'rows': rows,
        'edge_inference_ms_batch1': bare_1,
    }


def _batch(frames: list[Any]) -> Any:
    from ask_expert_ros.core.inference.engine import FrameBatch

    return FrameBatch([f.pixels for f in frames])
