"""The nodes' parameters, declared once for both adapters.

The rclpy adapter declares each :class:`ParamSpec` as a ROS parameter (with its
description and range); the Cyclone DDS adapter reads the same names from the
same ROS params YAML (``config/edge.yaml``, ``config/expert.yaml``). Both build the
typed :class:`EdgeParams` / :class:`ExpertParams` with the functions below, so a
value is validated by one rule wherever it comes from.
"""

from __future__ import annotations

import importlib
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ask_expert_ros.core.errors import AskExpertError, format_key
from ask_expert_ros.core.inference.backends import (
    PRECISIONS,
    BackendFactory,
    backend_kinds,
    factory_from_params,
)
from ask_expert_ros.core.inference.engine import EdgeStage, ExpertStage, FrameBatch
from ask_expert_ros.core.inference.library import ExpertLibrary
from ask_expert_ros.core.inference.models import ModelConfig
from ask_expert_ros.core.inference.patches import (
    ATTENTION_SOURCES,
    SELECTION_METHODS,
    PatchSelection,
)
from ask_expert_ros.core.inference.routing import CONFIDENCE_METHODS, MAX_ETA_BITS, RoutingConfig
from ask_expert_ros.core.nodes.edge_logic import EdgeLogic, EdgeParams
from ask_expert_ros.core.nodes.expert_logic import ExpertLogic, ExpertParams
from ask_expert_ros.core.nodes.remote_expert import RemoteExpertLogic


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter.

    Attributes:
        name: Parameter name (ROS naming, snake_case).
        default: Default value; its Python type is the parameter's type.
        description: Shown by ``ros2 param describe``.
        choices: Allowed values for a string parameter.
        choices_from: Reads the allowed values when a value is checked, for a table that
            others extend (the backend registry); used when ``choices`` is empty.
        low / high: Inclusive range for a number.
        dynamic: Whether it may change at run time (``ros2 param set``).
    """

    name: str
    default: bool | int | float | str
    description: str
    choices: tuple[str, ...] = ()
    choices_from: Callable[[], tuple[str, ...]] | None = None
    low: float | None = None
    high: float | None = None
    dynamic: bool = True

    def allowed(self) -> tuple[str, ...]:
        """The values a string parameter may take (() for any)."""
        if self.choices or self.choices_from is None:
            return self.choices
        return self.choices_from()

    def check(self, value: Any) -> bool | int | float | str:
        """``value`` converted to this parameter's type, or ValueError saying why not."""
        kind = type(self.default)
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f'{self.name} must be true or false, got {value!r}')
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f'{self.name} must be an integer, got {value!r}')
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f'{self.name} must be a number, got {value!r}')
            value = float(value)
        elif not isinstance(value, str):
            raise ValueError(f'{self.name} must be a string, got {value!r}')
        allowed = self.allowed()
        if allowed and value not in allowed:
            raise ValueError(f'{self.name} must be one of {list(allowed)}, got {value!r}')
        if self.low is not None and value < self.low:
            raise ValueError(f'{self.name} must be >= {self.low}, got {value}')
        if self.high is not None and value > self.high:
            raise ValueError(f'{self.name} must be <= {self.high}, got {value}')
        return value


QOS_RELIABILITY = ('best_effort', 'reliable')

# serving engine -> 'module:function' building its ExpertService from the node's
# parameters, imported only when asked for (the core imports no engine)
SERVING_ENGINES = ('local', 'ray')
_SERVICE_BUILDERS = {'ray': 'ask_expert_ros.serving.ray_serve:service_from_params'}

COMMON_PARAMS = (
    ParamSpec(
        'library',
        '',
        'Expert library manifest (library.yaml) or its directory; the '
        'edge node takes its model and partition scheme from it.',
        dynamic=False,
    ),
    ParamSpec(
        'device', 'cpu', "Torch device for inference: 'cpu', 'cuda', 'cuda:1' ...", dynamic=False
    ),
    ParamSpec(
        'backend',
        'auto',
        'Inference runtime: auto (the fastest backend that is ready here, timed at start '
        'for auto_probe_s, logged), torch, torch_compile (compiles 30-95 s per model at '
        'start), aoti (AOTInductor packages from ask-expert export --format aoti, loaded in '
        'under a second; built into cache_dir at first start if missing), onnxruntime or '
        'tensorrt (CUDA/Jetson).',
        choices_from=backend_kinds,
        dynamic=False,
    ),
    ParamSpec(
        'auto_probe_s',
        2.0,
        'With backend auto: seconds spent at start timing every ready backend (eager torch, '
        'AOTInductor packages, exported ONNX, cached TensorRT engines) on the real batch '
        'size before keeping the fastest; 0: a fixed order, no timing.',
        low=0.0,
        high=60.0,
        dynamic=False,
    ),
    ParamSpec(
        'precision',
        'auto',
        'Inference precision: auto, fp32, bf16 (CPUs with avx512_bf16/AMX, CUDA) or fp16 (CUDA).',
        choices=PRECISIONS,
        dynamic=False,
    ),
    ParamSpec(
        'cache_dir',
        '',
        'Directory for exported ONNX files, TensorRT engines, AOTInductor packages (aoti/) '
        'and torch_compile builds; '
        'empty: the library directory is searched (ask-expert export output) and ONNX '
        'Runtime exports in memory, TensorRT and torch_compile cache under '
        '~/.cache/ask_expert_ros.',
        dynamic=False,
    ),
    ParamSpec(
        'request_qos_depth',
        100,
        'History depth of the reliable ExpertRequest '
        'endpoints. Deep on purpose: a shallow reliable queue drops large samples '
        'when the writer outruns the reader.',
        low=1,
        high=10000,
        dynamic=False,
    ),
    ParamSpec(
        'response_qos_depth',
        100,
        'History depth of the reliable ExpertResponse endpoints.',
        low=1,
        high=10000,
        dynamic=False,
    ),
    ParamSpec(
        'diagnostics_period_s',
        1.0,
        'Period of /diagnostics messages, seconds.',
        low=0.05,
        high=60.0,
        dynamic=False,
    ),
)

EDGE_PARAMS = (
    *COMMON_PARAMS,
    ParamSpec(
        'edge_id',
        '',
        'Unique id among the edges sharing an expert node; empty: <hostname>-<pid>.',
        dynamic=False,
    ),
    ParamSpec(
        'tau',
        0.8,
        'Confidence threshold: frames with confidence < tau go to the '
        'expert. 0 never offloads; > 1 always does. With confidence min_entropy it is '
        'eta in bits: frames with -log2(max softmax) >= eta go (eta = -log2 of the '
        'max_softmax tau: 1 bit = 0.5).',
        low=0.0,
        high=MAX_ETA_BITS,
    ),
    ParamSpec('k', 2, 'Top-k classes that form the routing key.', low=1, high=16),
    ParamSpec(
        'confidence',
        'max_softmax',
        'Confidence score compared with tau: max_softmax (the paper), margin, entropy, '
        "or min_entropy (Im et al.'s gate; tau in bits).",
        choices=CONFIDENCE_METHODS,
    ),
    ParamSpec(
        'deadline_ms',
        250.0,
        'How long to wait for the expert before publishing the '
        'edge Top-1 as a fallback, milliseconds.',
        low=1.0,
        high=60000.0,
    ),
    ParamSpec('offload', True, 'Send uncertain frames to the expert at all.'),
    ParamSpec(
        'down_after_misses',
        3,
        'Expert misses in a row (deadline passed, send failed) after which the edge '
        'treats the expert as down: uncertain frames are answered by the edge at once '
        '(no deadline wait) and only probes go out; 0: never, every frame waits out its '
        'deadline.',
        low=0,
        high=1000,
    ),
    ParamSpec(
        'probe_interval_ms',
        500.0,
        'While the expert is down, one uncertain frame per this long is sent as a probe; '
        'the first probe answered within its deadline resumes offloading, milliseconds.',
        low=10.0,
        high=600000.0,
    ),
    ParamSpec(
        'offload_budget_mbps',
        0.0,
        'Offload bandwidth budget, Mbit/s of ExpertRequest payload: > 0 moves tau online '
        "(within the confidence method's range, starting at tau) so the offload traffic "
        'measured over 2 s stays just under it; diagnostics show the tau in use and why. '
        '0: no budget, tau as set.',
        low=0.0,
        high=100000.0,
    ),
    ParamSpec(
        'transport',
        'raw',
        'How frames travel to the expert: raw sensor_msgs/Image '
        'or JPEG sensor_msgs/CompressedImage.',
        choices=('raw', 'compressed'),
    ),
    ParamSpec('jpeg_quality', 90, 'JPEG quality when transport is compressed.', low=1, high=100),
    ParamSpec(
        'offload_mode',
        'frame',
        "What travels to the expert, always at the expert's input resolution: frame "
        '(the whole frame) or patches (only the patches the edge model attended to, '
        'as one mosaic; the expert runs on those tokens only).',
        choices=('frame', 'patches'),
        dynamic=False,
    ),
    ParamSpec(
        'keep_ratio',
        0.5,
        'Patch mode: fraction rho of the patches sent (the top ceil(rho N)); '
        'ignored when attention_mass > 0.',
        low=0.01,
        high=1.0,
    ),
    ParamSpec(
        'attention_mass',
        0.0,
        'Patch mode: send the fewest patches whose attention sums to >= this '
        '(Im et al. use 0.97); 0: use keep_ratio.',
        low=0.0,
        high=1.0,
    ),
    ParamSpec(
        'patch_selection',
        'attention',
        "Patch mode: which patches: attention (the edge model's class-token attention), "
        'random or centre (baselines, keep_ratio only).',
        choices=SELECTION_METHODS,
    ),
    ParamSpec(
        'attention_source',
        'last',
        'Patch mode: attention of the last block (mean over heads, Im et al.) or '
        'rollout over all blocks.',
        choices=ATTENTION_SOURCES,
        dynamic=False,
    ),
    ParamSpec(
        'max_batch',
        16,
        'Most frames per edge model call; a larger backlog runs in chunks of this size. '
        'Every batch size up to it is run once at configure: backends keep per-shape '
        "state (the digits edge on CPU: about 3 MB per size, half of it oneDNN's kernel "
        'cache), so memory does not grow while serving.',
        low=1,
        high=1024,
        dynamic=False,
    ),
    ParamSpec('publish_annotated', True, 'Publish the annotated image for rviz.'),
    ParamSpec(
        'image_qos_reliability',
        'best_effort',
        'Camera subscription reliability. '
        'best_effort (sensor data) matches both kinds of publisher (REP-2003).',
        choices=QOS_RELIABILITY,
        dynamic=False,
    ),
    ParamSpec(
        'image_qos_depth', 5, 'Camera subscription history depth.', low=1, high=1000, dynamic=False
    ),
)

EXPERT_PARAMS = (
    *COMMON_PARAMS,
    ParamSpec('max_batch', 8, 'Largest micro-batch per expert call.', low=1, high=1024),
    ParamSpec(
        'max_wait_ms',
        5.0,
        'Longest a request waits for its micro-batch to fill, milliseconds.',
        low=0.0,
        high=10000.0,
    ),
    ParamSpec(
        'honor_deadline',
        True,
        'Answer EXPIRED instead of running requests whose '
        "deadline has passed (needs the boards' clocks in sync).",
    ),
    ParamSpec(
        'restrict_to_key', False, "Take the expert's argmax only over the classes of its key."
    ),
    ParamSpec(
        'ragged',
        'pad',
        'Patch requests with different patch counts in one micro-batch: pad (one call, '
        'attention mask) or group (one call per count).',
        choices=('pad', 'group'),
    ),
    ParamSpec(
        'max_queue_per_edge',
        64,
        'Requests of one edge (edge_id) that may wait; its next ones are answered '
        'OVERLOADED at once, so a flooding edge fills only its own share.',
        low=1,
        high=100000,
    ),
    ParamSpec(
        'max_rate_per_edge',
        0.0,
        'Requests per second one edge (edge_id) may send; more are answered OVERLOADED on '
        'arrival, before they are decoded (a token bucket holding one second of them). A '
        'flood the node could absorb otherwise still slows every edge a little; this caps '
        "it. Set it above a robot's camera rate. 0: no quota.",
        low=0.0,
        high=1e6,
    ),
    ParamSpec(
        'max_queued',
        512,
        'Requests that may wait in all; beyond it the newest request of the edge with the '
        'most waiting is answered OVERLOADED to make room.',
        low=1,
        high=1000000,
    ),
    ParamSpec(
        'max_resident',
        0,
        'Keep at most this many experts loaded, the least recently used dropped first '
        '(0: all). With serving ray: per replica (its memory budget, in models).',
        low=0,
        high=100000,
        dynamic=False,
    ),
    ParamSpec(
        'preload',
        True,
        'Load and warm up every expert at start instead of on first use (serving ray: '
        'every replica, where max_resident holds the whole library; otherwise replicas '
        'load on first use and report the load time).',
        dynamic=False,
    ),
    ParamSpec(
        'serving',
        'local',
        'Where the experts run: local (in this process) or ray (one Ray Serve application '
        'holding the library, replicas loading experts on demand; this node validates, '
        'queues fairly and forwards). Needs ray[serve] (the fleet extra).',
        choices=SERVING_ENGINES,
        dynamic=False,
    ),
    ParamSpec(
        'ray_address',
        '',
        "serving ray: the cluster to join: '' (RAY_ADDRESS, else one started here with "
        "ray start, else a private one), 'auto', 'host:6379' or 'ray://host:10001'.",
        dynamic=False,
    ),
    ParamSpec(
        'ray_app',
        'ask_expert',
        'serving ray: the Serve application of the library; fronts naming the same one '
        'share its replicas.',
        dynamic=False,
    ),
    ParamSpec(
        'ray_deploy',
        True,
        'serving ray: deploy the application from these parameters unless it is running; '
        'false: only attach to it (more fronts of one application).',
        dynamic=False,
    ),
    ParamSpec(
        'ray_replicas',
        1,
        'serving ray: replicas of the library; 0: Serve autoscales them between 1 and '
        'ray_max_replicas on the calls waiting per replica.',
        low=0,
        high=1024,
        dynamic=False,
    ),
    ParamSpec(
        'ray_max_replicas', 4, 'serving ray: autoscaling bound.', low=1, high=1024, dynamic=False
    ),
    ParamSpec(
        'ray_replica_cpus',
        1.0,
        'serving ray: CPUs per replica, fractions allowed (its torch threads: this rounded, '
        'at least 1). Start fails with the reason where the cluster cannot place them.',
        low=0.01,
        high=1024.0,
        dynamic=False,
    ),
    ParamSpec(
        'ray_replica_gpus',
        0.0,
        'serving ray: GPUs per replica (1, or a fraction to share one); 0 without GPUs.',
        low=0.0,
        high=64.0,
        dynamic=False,
    ),
    ParamSpec(
        'ray_batch_calls',
        4,
        'serving ray: micro-batches of one key a replica merges into one model call '
        '(serve.batch).',
        low=1,
        high=1024,
        dynamic=False,
    ),
    ParamSpec(
        'ray_batch_wait_ms',
        2.0,
        'serving ray: how long a replica waits for more micro-batches to merge, ms.',
        low=0.0,
        high=1000.0,
        dynamic=False,
    ),
    ParamSpec(
        'ray_max_ongoing',
        8,
        "serving ray: calls one replica takes at once (Serve's max_ongoing_requests); "
        'the router sends more elsewhere.',
        low=1,
        high=10000,
        dynamic=False,
    ),
    ParamSpec(
        'ray_max_in_flight',
        8,
        'serving ray: micro-batches this node keeps outstanding in the engine; more wait '
        "in its fair queues. Give every replica's ray_max_ongoing room.",
        low=1,
        high=100000,
        dynamic=False,
    ),
)


def resolve(specs: tuple[ParamSpec, ...], values: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with ``values``, each checked; unknown names are an error."""
    known = {s.name: s for s in specs}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f'unknown parameters {unknown}; known: {sorted(known)}')
    out = {s.name: s.default for s in specs}
    for name, value in values.items():
        out[name] = known[name].check(value)
    return out


def default_edge_id() -> str:
    return f'{socket.gethostname()}-{os.getpid()}'


def edge_params(values: Mapping[str, Any]) -> EdgeParams:
    """Typed edge settings from resolved parameter values."""
    return EdgeParams(
        edge_id=values['edge_id'] or default_edge_id(),
        routing=RoutingConfig(tau=values['tau'], k=values['k'], confidence=values['confidence']),
        deadline_ms=values['deadline_ms'],
        offload=values['offload'],
        transport=values['transport'],
        jpeg_quality=values['jpeg_quality'],
        offload_mode=values['offload_mode'],
        patches=patch_selection(values),
        down_after_misses=values['down_after_misses'],
        probe_interval_ms=values['probe_interval_ms'],
        offload_budget_mbps=values['offload_budget_mbps'],
        max_batch=values['max_batch'],
    )


def patch_selection(values: Mapping[str, Any]) -> PatchSelection:
    """The patch selection of the edge parameters (keep_ratio unless attention_mass > 0)."""
    mass = float(values['attention_mass'])
    return PatchSelection(
        method=values['patch_selection'],
        keep_ratio=None if mass > 0 else float(values['keep_ratio']),
        attention_mass=mass if mass > 0 else None,
        source=values['attention_source'],
    )


def expert_params(values: Mapping[str, Any]) -> ExpertParams:
    """Typed expert settings from resolved parameter values."""
    return ExpertParams(
        max_batch=values['max_batch'],
        max_wait_ms=values['max_wait_ms'],
        honor_deadline=values['honor_deadline'],
        restrict_to_key=values['restrict_to_key'],
        ragged=values['ragged'],
        max_queue_per_edge=values['max_queue_per_edge'],
        max_queued=values['max_queued'],
        max_rate_per_edge=values['max_rate_per_edge'],
    )


def load_params_file(path: str | Path, node_name: str) -> dict[str, Any]:
    """Parameters for ``node_name`` from a ROS 2 params YAML (``/**`` entries apply too)."""
    data = yaml.safe_load(Path(path).read_text(encoding='utf-8')) or {}
    out: dict[str, Any] = {}
    for key in ('/**', node_name, f'/{node_name}'):
        section = data.get(key) or {}
        out.update(section.get('ros__parameters') or {})
    return out


def _blank_frame(config: ModelConfig) -> np.ndarray:
    shape = (1, config.img_size, config.img_size) + ((3,) if config.in_chans == 3 else ())
    return np.zeros(shape, dtype=np.uint8)


def _factory(
    values: Mapping[str, Any], backend_factory: BackendFactory | None, probe_batch: int = 1
) -> BackendFactory:
    if backend_factory is not None:
        return backend_factory
    return factory_from_params(values, probe_batch=probe_batch)


def build_edge_logic(
    values: Mapping[str, Any], backend_factory: BackendFactory | None = None
) -> EdgeLogic:
    """The edge model named by the library, on its backend, warmed up once, in its logic.

    Args:
        values: Resolved edge parameters.
        backend_factory: Builds the edge backend; None: the one the parameters ask for
            (``backend``, ``precision``, any registered kind, through
            :func:`~ask_expert_ros.core.inference.backends.factory_from_params`).
    """
    params = edge_params(values)
    factory = _factory(values, backend_factory)
    library = ExpertLibrary(values['library'], device=values['device'])
    model = library.load_edge(values['device'])
    stage = EdgeStage(model, library.scheme, params.routing, backend=factory(model))
    logic = EdgeLogic(stage, params, expert_input=library.input_config())
    logic.warm_up()
    return logic


def build_expert_logic(
    values: Mapping[str, Any], backend_factory: BackendFactory | None = None
) -> ExpertLogic:
    """The expert library; with ``preload``, every expert loaded and warmed up now.

    Args:
        values: Resolved expert parameters.
        backend_factory: Builds each expert's backend; None: the one the parameters ask
            for (any registered kind, through
            :func:`~ask_expert_ros.core.inference.backends.factory_from_params`).

    With ``serving: ray`` the experts run in a Ray Serve application instead (deployed
    unless running, ``ray_deploy``) and this returns its front
    (:class:`~ask_expert_ros.core.nodes.remote_expert.RemoteExpertLogic`), which reads
    only the manifest and model headers here.

    Raises:
        AskExpertError: An expert cannot be loaded or does not run; the engine cannot
            be reached or deployed, or its package is not installed.
    """
    if values.get('serving', 'local') != 'local':
        return _remote_expert_logic(values)
    library = ExpertLibrary(
        values['library'],
        device=values['device'],
        max_resident=values['max_resident'] or None,
        backend_factory=_factory(values, backend_factory, probe_batch=values['max_batch']),
    )
    stage = ExpertStage(library)
    if values['preload']:
        for key in library.keys:
            blank = _blank_frame(library.get(key).config)
            output = stage.run(FrameBatch(blank, library.device), {key: np.arange(1)})
            if output.errors:
                raise AskExpertError(f'expert {format_key(key)}: {output.errors[0]}')
    return ExpertLogic(stage, expert_params(values))


def _remote_expert_logic(values: Mapping[str, Any]) -> RemoteExpertLogic:
    engine = values['serving']
    module, _, name = _SERVICE_BUILDERS[engine].partition(':')
    try:
        build = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise AskExpertError(f'serving {engine}: {exc}') from exc
    library = ExpertLibrary(values['library'])  # headers only: no expert loads here
    service = build(values)
    return RemoteExpertLogic(
        ExpertStage(library),
        service,
        expert_params(values),
        max_in_flight=values['ray_max_in_flight'],
    )
