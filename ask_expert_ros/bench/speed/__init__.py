"""``ask-expert bench-speed``: how fast each part runs, as ratios measured side by side.

Every figure this writes is a ratio of two timings taken in the same run on the same
machine, so a loaded or slow machine shifts both sides alike:

* ``matmul_peak`` -- GFLOP/s of one large square matmul, per method: torch's default
  fp32 path, oneDNN fp32 (``torch.utils.mkldnn.to_mkldnn`` on an ``nn.Linear``, the
  documented way to run a layer on oneDNN tensors), ONNX Runtime's ``MatMul`` (MLAS)
  and torch bf16 (oneDNN, AMX/avx512_bf16 when the CPU has them);
* ``models`` -- per variant and backend: p50 latency at batch 1 and 10, GFLOP/s achieved
  (FLOPs counted by ``torch.utils.flop_counter.FlopCounterMode``) and that as a fraction
  of the matmul peak of the same precision;
* ``edge_pipeline`` -- frames/s from received ``sensor_msgs/Image`` objects through
  :class:`EdgeLogic` (decode, preprocess, infer, route) to the ``Classification`` and
  ``ExpertRequest`` objects to publish, over the bare model's frames/s at the same batch;
* ``dds`` -- one DDS hop (serialise + Cyclone loopback UDP + deserialise, half of a
  ping-pong with an echo process) for an ``Image`` and an ``ExpertRequest`` of one
  frame, over the edge model's batch-1 inference time;
* ``expert_batching`` -- 1, 4 and 8 edge threads submitting requests at a steady rate
  with realistic routing keys into :class:`ExpertLogic` served by a worker thread, with
  micro-batching (``max_batch`` 8) over one-at-a-time (``max_batch`` 1): throughput and
  latency percentiles.

Targets (issue 6) are reported next to the ratios, never asserted: a benchmark, not a test.

The sections live one module each: :mod:`.models` (``matmul_peak``, ``models``),
:mod:`.pipeline`, :mod:`.dds`, :mod:`.batching`; :mod:`.common` holds the config and
timing helpers, :mod:`.report` runs them all and writes the report.
"""

from ask_expert_ros.bench.speed.batching import bench_expert_batching, realistic_keys
from ask_expert_ros.bench.speed.common import (
    TARGETS,
    SpeedConfig,
    bench_scheme,
    machine_info,
    model_config,
)
from ask_expert_ros.bench.speed.dds import bench_dds
from ask_expert_ros.bench.speed.models import bench_models, matmul_peak
from ask_expert_ros.bench.speed.pipeline import bench_edge_pipeline
from ask_expert_ros.bench.speed.report import (
    edge_speedup,
    format_table,
    run_speed,
    summary,
    write_report,
)

__all__ = [
    'TARGETS',
    'SpeedConfig',
    'bench_dds',
    'bench_edge_pipeline',
    'bench_expert_batching',
    'bench_models',
    'bench_scheme',
    'edge_speedup',
    'format_table',
    'machine_info',
    'matmul_peak',
    'model_config',
    'realistic_keys',
    'run_speed',
    'summary',
    'write_report',
]
