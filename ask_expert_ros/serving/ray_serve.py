"""The expert library as one Ray Serve application, and the expert node's way to it.

One deployment, :class:`ExpertLibraryServer`, holds the whole library. Its replicas
load experts on demand with Serve's model multiplexing, keyed by the expert key
(``'1,3'``): at most ``max_resident`` stay loaded per replica, the least recently used
goes first. Serve routes a call carrying ``multiplexed_model_id`` to a replica that has
that expert loaded; when those are busy, to the replica with the fewest experts, which
loads it too -- so a hot key ends up on more replicas, a cold one on one. Calls of one
key that reach a replica together are merged into one model call by ``serve.batch``
(Serve splits batches by model id). With ``replicas: 0`` Serve's autoscaler sets the
replica count from the queue length. Replicas take ``num_cpus`` (fractional is fine)
and ``num_gpus`` where there are GPUs.

How the node reaches Serve: it joins the Ray cluster as a driver (``ray.init``) and
calls the application through a deployment handle, not through Serve's HTTP or gRPC
ingress. The handle sends the decoded frame arrays to the replica directly (the
object store; no proxy hop, no HTTP framing or base64 of pixels), routes with the
replicas' loaded experts in view, and a replica dying mid-call surfaces as an
``ActorDiedError`` on that call, which the front turns into a retry or a fallback. The
price: the front runs Ray (same Ray and Python versions as the cluster) on a machine
that is a cluster node or reaches it -- which the expert node, on the accelerator
box, is. The robots never see Ray: they speak DDS to the front as before.

Ray is imported here only; nothing else imports this module unless ``serving: ray``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

try:
    import ray
    from ray import serve
    from ray.exceptions import RayActorError, RayError, RayTaskError
    from ray.serve.exceptions import RequestCancelledError
except ImportError as exc:  # pragma: no cover - depends on the machine
    raise ImportError(
        "serving: ray needs Ray Serve: pip install 'ray[serve]' (or the package's "
        f'fleet extra: pip install "ask_expert_ros[fleet]"): {exc}'
    ) from exc
import torch

from ask_expert_ros.core.errors import AskExpertError
from ask_expert_ros.core.inference.backends import factory_from_params
from ask_expert_ros.core.inference.engine import ExpertStage
from ask_expert_ros.core.inference.library import ExpertLibrary
from ask_expert_ros.core.inference.models import LoadedModel
from ask_expert_ros.core.inference.taxonomy import ExpertKey, parse_key
from ask_expert_ros.core.nodes.expert_logic import EXPIRED_PREFIX, run_items
from ask_expert_ros.core.nodes.remote_expert import (
    Done,
    EngineError,
    ServeAnswer,
    ServeCall,
)

logger = logging.getLogger(__name__)

DEPLOYMENT = 'experts'
# the replica settings the backend factory reads from the node's parameters
_BACKEND_VALUES = ('device', 'backend', 'auto_probe_s', 'precision', 'cache_dir', 'max_batch')


# the paper's Table 1: execution latency (ms) of a batch of 10 frames, per device
PAPER_BATCH10_MS: dict[str, dict[str, float]] = {
    'orin_nano': {'deit_3h': 45.5, 'deit_4h': 57.1, 'deit_6h': 88.7, 'deit_base': 223.0},
    'agx_orin': {'deit_3h': 17.9, 'deit_4h': 20.0, 'deit_6h': 27.6, 'deit_base': 57.7},
    'v100': {'deit_3h': 11.0, 'deit_4h': 11.2, 'deit_6h': 15.1, 'deit_base': 34.0},
}


@dataclass(frozen=True)
class SimulatedAccelerator:
    """For the fleet benchmark only: each model call of a replica sleeps
    ``fixed_ms + per_item_ms * frames`` instead of computing (the host CPU idles, as it
    does while an accelerator computes), and answers class 0. Experts still load.

    A replica is one device: its model calls run one at a time on the replica's single
    model thread, so their device times never overlap (``test_ray_serving.py`` checks).
    """

    fixed_ms: float
    per_item_ms: float
    name: str = ''

    @classmethod
    def from_paper(
        cls, device: str, variant: str, fixed_share: float = 0.2
    ) -> SimulatedAccelerator:
        """A device of the paper's Table 1: ``fixed_share`` of the batch-10 latency is a
        fixed cost per call, the rest is shared by the 10 frames (linear in frames)."""
        if not 0.0 <= fixed_share < 1.0:
            raise ValueError(f'fixed_share must be in [0, 1), got {fixed_share}')
        try:
            batch10 = PAPER_BATCH10_MS[device][variant]
        except KeyError:
            raise ValueError(
                f'no Table 1 latency for {device}/{variant}: devices {sorted(PAPER_BATCH10_MS)},'
                f' variants {sorted(PAPER_BATCH10_MS["agx_orin"])}'
            ) from None
        fixed = fixed_share * batch10
        return cls(fixed, (batch10 - fixed) / 10, f'{device}/{variant}')

    def call_ms(self, frames: int) -> float:
        """One model call's device time."""
        return self.fixed_ms + self.per_item_ms * frames


@dataclass(frozen=True)
class ServeOptions:
    """The Serve application of one library.

    Attributes:
        library: The manifest (``library.yaml``), at the same path on every node.
        backend_values: The node parameters the replicas build backends from
            (``device``, ``backend``, ``precision``, ``cache_dir``, ``auto_probe_s``,
            ``max_batch``).
        app_name: Serve application name; fronts naming the same one share it.
        replicas: Replica count; 0: autoscale between 1 and ``max_replicas`` on the
            requests waiting per replica.
        max_replicas: Autoscaling's upper bound.
        replica_cpus: CPUs per replica (fractional is fine); its torch threads are
            this, rounded, at least 1.
        replica_gpus: GPUs per replica (0 without GPUs).
        max_resident: Experts a replica keeps loaded (its memory budget, in models);
            0: all of the library.
        batch_calls: Calls of one key a replica merges into one model call.
        batch_wait_ms: How long a replica waits for more calls to merge.
        max_ongoing: Calls a replica accepts at once (Serve's ``max_ongoing_requests``);
            the router sends more to other replicas.
        preload: Where ``max_resident`` holds the whole library, every replica loads
            (and runs once) every expert before it takes calls, so any replica can
            serve any key and the router balances keys by queue length; otherwise (or
            False) experts load on first use, and a key stays on the replicas that
            loaded it until they are full (``max_ongoing``).
        simulate: The benchmark's stand-in for an accelerator; None in service.
    """

    library: str
    backend_values: Mapping[str, Any] = field(default_factory=dict)
    app_name: str = 'ask_expert'
    replicas: int = 1
    max_replicas: int = 4
    replica_cpus: float = 1.0
    replica_gpus: float = 0.0
    max_resident: int = 0
    batch_calls: int = 4
    batch_wait_ms: float = 2.0
    max_ongoing: int = 8
    preload: bool = False
    simulate: SimulatedAccelerator | None = None

    def __post_init__(self) -> None:
        if self.replicas < 0:
            raise ValueError(f'replicas must be >= 0 (0: autoscale), got {self.replicas}')
        if self.max_replicas < max(1, self.replicas):
            raise ValueError(f'max_replicas must be >= replicas, got {self.max_replicas}')
        if not self.replica_cpus > 0:
            raise ValueError(f'replica_cpus must be > 0, got {self.replica_cpus}')
        if self.replica_gpus < 0:
            raise ValueError(f'replica_gpus must be >= 0, got {self.replica_gpus}')
        if self.max_resident < 0:
            raise ValueError(f'max_resident must be >= 0 (0: all), got {self.max_resident}')
        if self.batch_calls < 1 or self.max_ongoing < 1:
            raise ValueError('batch_calls and max_ongoing must be >= 1')


def model_id(key: ExpertKey) -> str:
    """The multiplexed model id of an expert key: ``(1, 3)`` -> ``'1,3'``."""
    return ','.join(str(s) for s in key)


class _Resident:
    """An expert a replica holds; Serve's multiplexing calls ``__del__`` on eviction."""

    def __init__(self, library: ExpertLibrary, key: ExpertKey, load_ms: float) -> None:
        self.library = library
        self.key = key
        self.model: LoadedModel | None = library.get(key)
        self.load_ms = load_ms  # reported by the first call that uses it, then 0

    def take_load_ms(self) -> float:
        load_ms, self.load_ms = self.load_ms, 0.0
        return load_ms

    def __del__(self) -> None:
        model, self.model = self.model, None
        if model is not None:  # only this load: the key may have been loaded again
            self.library.release(self.key, model)


def _rss_mb() -> float:
    """This process's resident memory now (``/proc``), else its peak."""
    try:
        with open('/proc/self/statm', encoding='ascii') as statm:
            return int(statm.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class ExpertLibraryServer:
    """One replica of the library (a Ray Serve deployment; see the module doc)."""

    async def __init__(self, options: ServeOptions) -> None:  # type: ignore[misc]
        # (Serve awaits an async constructor: the replica is up once it has preloaded)
        torch.set_num_threads(max(1, round(options.replica_cpus)))
        values = dict(options.backend_values)
        self.options = options
        self.library = ExpertLibrary(
            options.library,
            device=values.get('device', 'cpu'),
            backend_factory=factory_from_params(values, probe_batch=values.get('max_batch', 1)),
        )
        self.stage = ExpertStage(self.library)
        # one thread runs every model load and call: torch keeps an OpenMP pool per
        # thread, and rotating threads is slow on CPU (batch_worker.py); and a replica is
        # one device: serve.batch runs the sub-batches of different keys concurrently,
        # this thread runs their model calls one after the other
        self._pool = ThreadPoolExecutor(1, thread_name_prefix='expert')
        context = serve.get_replica_context()
        self.replica = context.replica_id.unique_id if context is not None else 'local'
        self.loads = 0
        # model calls so far (the thread of self._pool only updates them): their time is
        # the device's busy time, which the benchmark turns into a utilisation
        self.busy_s = 0.0
        self.model_calls = 0
        self.frames_run = 0
        library, pool = self.library, self._pool

        def load(key: ExpertKey) -> None:
            # one untimed call, as the local node's preload does: a model's first call
            # costs 0.1-3 s on CPU (measured at 224 px), which is part of its cold load
            library.backend(key).warmup((1,))

        async def load_expert(expert_id: str) -> _Resident:
            key = parse_key(expert_id)
            start = time.perf_counter()
            await asyncio.get_running_loop().run_in_executor(pool, load, key)
            self.loads += 1
            return _Resident(library, key, (time.perf_counter() - start) * 1e3)

        budget = options.max_resident or len(self.library.keys) or 1
        self._expert = serve.multiplexed(max_num_models_per_replica=budget)(load_expert)
        merged: Any = self._merged  # serve.batch's handle: its setters are not typed
        merged.set_max_batch_size(options.batch_calls)
        merged.set_batch_wait_timeout_s(options.batch_wait_ms / 1e3)
        if options.preload and budget >= len(self.library.keys):
            for key in self.library.keys:  # through the multiplexer: the router learns
                (await self._expert(model_id(key))).take_load_ms()

    async def __call__(self, call: ServeCall) -> ServeAnswer:
        return await self._merged(call)

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.002)
    async def _merged(self, calls: list[ServeCall]) -> list[ServeAnswer]:
        """Calls of one key (Serve splits batches by model id), one model call."""
        key = calls[0].key
        try:
            resident = await self._expert(model_id(key))
        except (AskExpertError, ValueError) as exc:  # unknown key, unreadable file
            reason, replica = str(exc), self.replica
            return [
                ServeAnswer({}, {}, dict.fromkeys(range(len(c.items)), reason), replica=replica)
                for c in calls
            ]
        load_ms = resident.take_load_ms()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._run, key, calls, load_ms)

    def _run(self, key: ExpertKey, calls: list[ServeCall], load_ms: float) -> list[ServeAnswer]:
        start = time.perf_counter()
        now = time.time_ns()
        errors: list[dict[int, str]] = [{} for _ in calls]
        groups: dict[tuple[bool, str], list[tuple[int, int]]] = {}
        for c, call in enumerate(calls):
            for i, item in enumerate(call.items):
                if item.deadline_ns and item.deadline_ns < now:
                    errors[c][i] = f'{EXPIRED_PREFIX} waiting in the engine'
                else:
                    groups.setdefault((call.restrict_to_key, call.ragged), []).append((c, i))
        labels: list[dict[int, int]] = [{} for _ in calls]
        scores: list[dict[int, float]] = [{} for _ in calls]
        frames = 0
        for (restrict, ragged), members in groups.items():
            frames += len(members)
            items = [(calls[c].items[i].pixels, calls[c].items[i].indices) for c, i in members]
            if self.options.simulate is not None:
                # the device computes, the host idles; one call at a time (one thread)
                time.sleep(self.options.simulate.call_ms(len(items)) / 1e3)
                out_labels = dict.fromkeys(range(len(items)), 0)
                out_scores = dict.fromkeys(range(len(items)), 1.0)
                out_errors: dict[int, str] = {}
            else:
                self.stage.restrict_to_key = restrict
                out = run_items(self.stage, key, items, ragged)  # type: ignore[arg-type]
                out_labels, out_scores, out_errors = out.labels, out.scores, out.errors
            for pos, (c, i) in enumerate(members):
                if pos in out_labels:
                    labels[c][i], scores[c][i] = out_labels[pos], out_scores[pos]
                if pos in out_errors:
                    errors[c][i] = out_errors[pos]
        end = time.perf_counter()
        elapsed = (end - start) * 1e3 + load_ms
        if frames:
            self.busy_s += end - start
            self.model_calls += len(groups)
            self.frames_run += frames
        rss, resident = _rss_mb(), len(self.library.loaded_keys)
        return [
            ServeAnswer(
                labels[c],
                scores[c],
                errors[c],
                elapsed_ms=elapsed,
                load_ms=load_ms,
                batch_size=frames,
                replica=self.replica,
                pid=os.getpid(),
                rss_mb=rss,
                resident=resident,
                busy_ms=self.busy_s * 1e3,
                model_calls=self.model_calls,
                frames_run=self.frames_run,
                clock_ms=end * 1e3,
            )
            for c in range(len(calls))
        ]


def connect(address: str = '') -> None:
    """Join the Ray cluster at ``address`` (once per process).

    Args:
        address: ``''``: Ray's own rule (``$RAY_ADDRESS``, else a cluster started on
            this machine with ``ray start``, else a private one); ``'local'``: a private
            one; ``'auto'``, ``'host:6379'`` or ``'ray://host:10001'``: that cluster.
    """
    if ray.is_initialized():
        return
    ray.init(
        address=address or None,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
        configure_logging=False,
    )


def _check_resources(options: ServeOptions) -> None:
    """A clear error instead of ``serve.run`` waiting forever for replicas that the
    cluster cannot place."""
    total = ray.cluster_resources()
    replicas = max(1, options.replicas)
    for name, per in (('CPU', options.replica_cpus), ('GPU', options.replica_gpus)):
        need, have = replicas * per, float(total.get(name, 0.0))
        if need > have + 1e-9:
            what = 'ray_replica_cpus' if name == 'CPU' else 'ray_replica_gpus'
            raise AskExpertError(
                f'{replicas} replicas x {per:g} {name} = {need:g} {name}, but the Ray '
                f'cluster has {have:g}: Serve would wait forever to place them; lower '
                f'{what} (fractions are fine) or ray_replicas, or add nodes'
            )


def deploy(options: ServeOptions) -> None:
    """Run (or update) the application on the connected cluster; returns when every
    replica is up.

    Raises:
        AskExpertError: The cluster cannot place the replicas.
    """
    _check_resources(options)
    sizing: dict[str, Any] = {'num_replicas': options.replicas}
    if options.replicas == 0:
        sizing = {
            'autoscaling_config': {
                'min_replicas': 1,
                'max_replicas': options.max_replicas,
                'target_ongoing_requests': max(1, options.max_ongoing // 2),
            }
        }
    deployment: Any = serve.deployment(ExpertLibraryServer)  # a Deployment (typed loosely)
    app = deployment.options(
        name=DEPLOYMENT,
        ray_actor_options={
            'num_cpus': options.replica_cpus,
            'num_gpus': options.replica_gpus,
        },
        max_ongoing_requests=options.max_ongoing,
        **sizing,
    ).bind(options)
    start = time.monotonic()
    serve.run(app, name=options.app_name, route_prefix=None)
    logger.info(
        'Serve application %r up in %.1f s: %s replicas of %s',
        options.app_name,
        time.monotonic() - start,
        options.replicas or f'1..{options.max_replicas}',
        options.library,
    )


def app_running(app_name: str) -> bool:
    """Whether the connected cluster runs Serve application ``app_name``."""
    try:
        status = serve.status()
    except RayError:
        return False
    app = status.applications.get(app_name)
    return app is not None and str(app.status).endswith('RUNNING')


class RayExpertService:
    """The front's side of the application: calls through a deployment handle.

    Each call runs as a task on one event loop thread of this object's own; its answer
    (or failure) goes to the call's ``done``. A replica that dies mid-call, or one the
    router cannot reach, is a retryable :class:`EngineError`.
    """

    def __init__(self, app_name: str, address: str = '') -> None:
        self.app_name = app_name
        self.address = address
        self._handle = serve.get_app_handle(app_name)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name='ray-serve-calls', daemon=True
        )
        self._thread.start()

    def call(self, call: ServeCall, done: Done) -> Callable[[], None]:
        handle = self._handle.options(multiplexed_model_id=model_id(call.key))
        box: list[Any] = []

        async def run() -> None:
            try:
                response = handle.remote(call)
                box.append(response)
                answer = await response
            except (RequestCancelledError, asyncio.CancelledError):
                done(EngineError('call cancelled', retryable=False))
            except RayTaskError as exc:  # the replica's code raised: another try would too
                done(EngineError(f'replica failed: {exc}', retryable=False))
            except RayActorError as exc:  # the replica died or cannot be reached
                done(EngineError(f'replica lost: {type(exc).__name__}', retryable=True))
            except Exception as exc:  # routing, backpressure, a cluster going away
                done(EngineError(f'{type(exc).__name__}: {exc}', retryable=True))
            else:
                done(answer)

        future = asyncio.run_coroutine_threadsafe(run(), self._loop)

        def cancel() -> None:
            if box:
                box[0].cancel()
            future.cancel()

        return cancel

    def describe(self) -> dict[str, str | int | float]:
        return {'engine': 'ray_serve', 'app': self.app_name, 'address': self.address or 'auto'}

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5.0)


def options_from_params(values: Mapping[str, Any]) -> ServeOptions:
    """The application the expert node's parameters describe."""
    return ServeOptions(
        library=str(values['library']),
        backend_values={k: values[k] for k in _BACKEND_VALUES if k in values},
        app_name=values['ray_app'],
        replicas=values['ray_replicas'],
        max_replicas=max(values['ray_max_replicas'], values['ray_replicas']),
        replica_cpus=values['ray_replica_cpus'],
        replica_gpus=values['ray_replica_gpus'],
        max_resident=values['max_resident'],
        batch_calls=values['ray_batch_calls'],
        batch_wait_ms=values['ray_batch_wait_ms'],
        max_ongoing=values['ray_max_ongoing'],
        preload=values['preload'],
    )


def service_from_params(values: Mapping[str, Any]) -> RayExpertService:
    """Join the cluster, deploy the application unless it runs (``ray_deploy``), and
    return the front's service.

    Raises:
        AskExpertError: The replicas cannot be placed, or ``ray_deploy`` is off and the
            application is not running.
    """
    connect(values['ray_address'])
    name = values['ray_app']
    if app_running(name):
        logger.info('Serve application %r is running: this node is one more front of it', name)
    elif values['ray_deploy']:
        deploy(options_from_params(values))
    else:
        raise AskExpertError(
            f'Serve application {name!r} is not running on the Ray cluster and ray_deploy '
            'is false: start a front with ray_deploy true, or ask-expert serve-experts'
        )
    return RayExpertService(name, values['ray_address'])
