"""Fleet benchmark (issue 21): N simulated edges against the local expert and against the
expert library served by Ray Serve with 1, 2 and 4 replicas.

    python -m ask_expert_ros.bench.fleet --work /tmp/fleet --out docs/results/fleet

Every simulated edge keeps one request outstanding (closed loop: it sends its next
uncertain frame when the last is answered), with keys drawn from a Zipf law over the
library's keys (a few hot keys, a long tail, as Top-2 routing produces). One driver
thread runs the node logic exactly as the expert node's spin loop does
(``poll(max_batches=1)``, then wait until the next batch is due): the local
:class:`ExpertLogic`, or the :class:`RemoteExpertLogic` front of the Serve application.
No DDS: this measures the expert side, not the wire.

Parts:

* ``sweep``: throughput and p50/p95 against N = 1..32 edges, local vs 1/2/4 replicas, on
  the 10-expert library, all resident (warmed up: engine overhead and replica scaling
  only);
* ``libraries``: 10/21/36-expert libraries under a budget of ``--budget`` resident experts
  (per replica; the local expert's ``max_resident``), at 8 edges: cold-load rate, LRU hit
  rate, resident memory, every answer compared with the local expert's;
* ``simulated``: replicas whose model call sleeps like an accelerator
  (:class:`~ask_expert_ros.serving.ray_serve.SimulatedAccelerator`, one device per
  replica: its calls never overlap), 1/2/4 replicas, for each device of ``--sim-devices``
  (the paper's Table 1 batch-10 latencies, ``--sim-fixed-share`` of it fixed per call):
  what the design gives where each replica has a device of its own. Each run reports
  every replica's device utilisation (its model calls' time over the window), the frames
  per model call, and the host CPU that the benchmark and Ray used (share of all cores);
* ``small``: the local expert vs 1 replica with the Fashion-MNIST-size experts (28 px,
  2 blocks), where the engine's fixed cost per call is not hidden by the model.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ask_expert_ros.core.inference.backends import factory_from_params
from ask_expert_ros.core.inference.engine import ExpertStage, FrameBatch
from ask_expert_ros.core.inference.library import ExpertLibrary, write_manifest
from ask_expert_ros.core.inference.models import LoadedModel, ModelConfig, create_model, save_model
from ask_expert_ros.core.inference.taxonomy import ExpertKey, PartitionScheme, key_slug
from ask_expert_ros.core.nodes.expert_logic import ExpertLogic, ExpertParams
from ask_expert_ros.core.nodes.messages import (
    ExpertReply,
    FrameFormat,
    Header,
    ImageData,
    OffloadRequest,
    Stamp,
    Status,
)
from ask_expert_ros.core.nodes.remote_expert import RemoteExpertLogic

logger = logging.getLogger(__name__)

BACKEND = {'backend': 'torch', 'precision': 'fp32', 'device': 'cpu', 'max_batch': 8}
SUBSETS = {10: 4, 21: 6, 36: 8}  # experts of S subsets with k = 2: S + C(S, 2)


@dataclass(frozen=True)
class ModelSize:
    variant: str = 'deit_4h'
    img_size: int = 224
    patch_size: int = 16
    depth: int = 12
    in_chans: int = 3

    @property
    def name(self) -> str:
        return f'{self.variant}_{self.img_size}px_d{self.depth}'


PAPER_EXPERT = ModelSize(img_size=112)  # DeiT-4H, 12 blocks, 49 tokens
SMALL_EXPERT = ModelSize(img_size=28, patch_size=7, depth=2)


@dataclass
class Run:
    """One measured configuration."""

    part: str
    mode: str  # local | ray
    replicas: int
    edges: int
    experts: int
    budget: int  # resident experts per replica (local: max_resident); 0: all
    model: str
    seconds: float
    replies: int = 0
    throughput_fps: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    not_ok: int = 0
    calls: int = 0
    cold_calls: int = 0  # calls that waited for their expert to load
    cold_rate: float = 0.0
    hit_rate: float = 0.0
    equal_local: int | None = None  # OK answers equal to the local expert's
    compared: int | None = None
    replica_rss_mb: list[float] = field(default_factory=list)
    device_util: list[float] = field(default_factory=list)  # per replica: busy / wall
    model_calls: int = 0  # the replicas' model calls in the window (serve.batch merged)
    frames_per_model_call: float = 0.0
    host_cpu: float = 0.0  # CPU of this process and Ray's over the window / all cores
    front_rss_mb: float = 0.0
    ray_rss_mb: float = 0.0  # every Ray process (replicas, raylet, GCS, controller ...)
    keys_per_replica: dict[str, int] = field(default_factory=dict)


def make_library(root: Path, experts: int, size: ModelSize) -> Path:
    """A library of ``experts`` random-weight experts (S subsets of 2 classes, k = 2)."""
    manifest = root / f'lib{experts}_{size.name}' / 'library.yaml'
    if manifest.is_file():
        return manifest
    s = SUBSETS[experts]
    names = tuple(f'c{i}' for i in range(2 * s))
    scheme = PartitionScheme.from_class_subsets(
        f'bench_s{s}', names, {j + 1: [2 * j, 2 * j + 1] for j in range(s)}
    )
    torch.manual_seed(experts)
    files = {}
    for key in scheme.expert_keys(2):
        cfg = ModelConfig(
            variant=size.variant,  # type: ignore[arg-type]
            class_names=scheme.class_names,
            partition=scheme.name,
            expert_key=key,
            img_size=size.img_size,
            patch_size=size.patch_size,
            depth=size.depth,
            in_chans=size.in_chans,
        )
        path = manifest.parent / f'expert_{key_slug(key)}.safetensors'
        files[key] = save_model(create_model(cfg), cfg, path)
    logger.info('library of %d experts written under %s', experts, manifest.parent)
    return write_manifest(manifest.parent, scheme, 2, files)


def zipf_weights(n: int, s: float = 1.0) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** s
    return w / w.sum()


class Edges:
    """N closed-loop edges: each sends its next request when its last is answered."""

    def __init__(self, library: ExpertLibrary, pool: int, seed: int = 0) -> None:
        self.keys = library.keys
        self.scheme = library.scheme
        rng = np.random.default_rng(seed)
        self.order = rng.permutation(len(self.keys))  # which keys are hot
        self.weights = zipf_weights(len(self.keys))
        cfg = library.config_of(self.keys[0])
        shape = (cfg.img_size, cfg.img_size) + ((3,) if cfg.in_chans == 3 else ())
        pixels = np.random.default_rng(1234)  # the same frames in every run
        self.frames = [pixels.integers(0, 256, shape, dtype=np.uint8) for _ in range(pool)]
        self.rng = rng
        self.next_id = 0

    def draw(self) -> tuple[ExpertKey, int]:
        k = self.order[self.rng.choice(len(self.keys), p=self.weights)]
        return self.keys[int(k)], int(self.rng.integers(len(self.frames)))

    def request(self, edge: int, key: ExpertKey, frame: int) -> OffloadRequest:
        pixels = self.frames[frame]
        encoding = 'rgb8' if pixels.ndim == 3 else 'mono8'
        self.next_id += 1
        return OffloadRequest(
            header=Header(Stamp(self.next_id, frame), f'edge{edge}'),
            edge_id=f'edge{edge}',
            request_id=self.next_id,
            image=ImageData(
                FrameFormat.RAW,
                pixels.tobytes(),
                pixels.shape[0],
                pixels.shape[1],
                encoding,
                pixels.strides[0],
            ),
            topk_classes=(0, 1),
            topk_scores=(0.5, 0.3),
            expert_key=key,
            partition=self.scheme.name,
            confidence=0.5,
            confidence_method='max_softmax',
            deadline=Stamp.from_ns(time.time_ns() + 30_000_000_000),
        )


def drive(
    logic: ExpertLogic,
    edges: Edges,
    n: int,
    warmup_s: float,
    seconds: float,
    check: Callable[[ExpertReply, ExpertKey, int], bool] | None = None,
    on_mark: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run ``n`` closed-loop edges for ``warmup_s`` + ``seconds``; figures of the latter.
    ``on_mark`` is called with ``'start'`` and ``'end'`` as the window opens and closes."""
    sent: dict[int, tuple[int, float, ExpertKey, int]] = {}
    latencies: list[float] = []
    replies_in_window = not_ok = equal = compared = 0
    start = time.perf_counter()
    measure_from = start + warmup_s
    end = measure_from + seconds
    calls0 = cold0 = 0

    def send(edge: int) -> None:
        key, frame = edges.draw()
        request = edges.request(edge, key, frame)
        sent[request.request_id] = (edge, time.perf_counter(), key, frame)
        reply = logic.submit(request)
        if reply is not None:
            handle(reply)

    def handle(reply: ExpertReply) -> None:
        nonlocal replies_in_window, not_ok, equal, compared
        edge, t_sent, key, frame = sent.pop(reply.request_id)
        now = time.perf_counter()
        if measure_from <= now < end:
            replies_in_window += 1
            if t_sent >= measure_from:
                latencies.append((now - t_sent) * 1e3)
            if reply.status != Status.OK:
                not_ok += 1
            elif check is not None:
                compared += 1
                equal += check(reply, key, frame)
        if now < end:
            send(edge)

    def counters() -> tuple[int, int]:
        c = logic.counters
        return getattr(c, 'calls', c.batches), getattr(c, 'cold_loads', 0)

    for edge in range(n):
        send(edge)
    marked = ended = False
    while sent:
        now = time.perf_counter()
        if not marked and now >= measure_from:
            calls0, cold0 = counters()
            marked = True
            if on_mark is not None:
                on_mark('start')
        if not ended and now >= end:
            ended = True
            if on_mark is not None:
                on_mark('end')
        if now >= end + 120:
            raise RuntimeError(f'{len(sent)} requests unanswered 120 s after the run')
        replies = logic.poll(max_batches=1)
        for reply in replies:
            handle(reply)
        if not replies:
            due = logic.next_due_ns()
            wait = 0.05 if due is None else (due - time.monotonic_ns()) / 1e9
            logic.wait(min(0.05, wait))
    calls, cold = counters()
    lat = np.array(latencies) if latencies else np.zeros(1)
    return {
        'replies': replies_in_window,
        'throughput_fps': replies_in_window / seconds,
        'p50_ms': float(np.percentile(lat, 50)),
        'p95_ms': float(np.percentile(lat, 95)),
        'not_ok': not_ok,
        'calls': calls - calls0,
        'cold_calls': cold - cold0,
        'equal_local': equal if check is not None else None,
        'compared': compared if check is not None else None,
    }


def rss_mb(pid: int | str = 'self') -> float:
    try:
        with open(f'/proc/{pid}/statm', encoding='ascii') as statm:
            return int(statm.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
    except OSError:
        return 0.0


def _ray_pids() -> list[str]:
    """Every Ray process of this machine (by command line)."""
    pids = []
    for entry in Path('/proc').iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / 'cmdline').read_bytes().replace(b'\0', b' ')
        except OSError:
            continue
        if b'ray' in cmdline and (b'ray::' in cmdline or b'/ray/' in cmdline):
            pids.append(entry.name)
    return pids


def ray_rss_mb() -> float:
    """Resident memory of every Ray process of this machine."""
    return sum(rss_mb(pid) for pid in _ray_pids())


def own_cpu_s() -> dict[str, float]:
    """CPU seconds (user + system) so far of this process and of every Ray process, by
    pid: the benchmark's share of the host, whatever else runs on it."""
    out = {}
    tick = os.sysconf('SC_CLK_TCK')
    for pid in [str(os.getpid()), *_ray_pids()]:
        try:
            with open(f'/proc/{pid}/stat', encoding='ascii') as stat:
                fields = stat.read().rsplit(')', 1)[1].split()
        except (OSError, IndexError):
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return out


class _CountingFactory:
    """The backend factory, counting the experts it builds (each one a load)."""

    def __init__(self) -> None:
        self.base = factory_from_params(BACKEND, probe_batch=8)
        self.loads = 0

    def __call__(self, model: LoadedModel) -> Any:
        self.loads += 1
        return self.base(model)


def local_logic(manifest: Path, budget: int) -> tuple[ExpertLogic, _CountingFactory]:
    """The in-process expert; every expert loaded first when the budget holds them all."""
    factory = _CountingFactory()
    library = ExpertLibrary(manifest, max_resident=budget or None, backend_factory=factory)
    if not budget:  # loaded and run once, as the node's preload does
        for key in library.keys:
            library.backend(key).warmup((1,))
    return ExpertLogic(ExpertStage(library), ExpertParams()), factory


def reference_labels(manifest: Path, edges: Edges) -> dict[tuple[ExpertKey, int], int]:
    """The local expert's label of every pool frame for every key (no budget)."""
    library = ExpertLibrary(manifest, backend_factory=factory_from_params(BACKEND))
    stage = ExpertStage(library)
    out = {}
    for key in library.keys:
        result = stage.run(FrameBatch(edges.frames), {key: np.arange(len(edges.frames))})
        out.update({(key, i): label for i, label in result.labels.items()})
        library.release(key)
    return out


@contextmanager
def serve_app(
    manifest: Path,
    name: str,
    replicas: int,
    budget: int,
    simulate: Any = None,
    preload: bool = False,
) -> Iterator[RemoteExpertLogic]:
    """A Serve application of ``manifest`` and its front; deleted on the way out."""
    from ray import serve

    from ask_expert_ros.serving import ray_serve

    options = ray_serve.ServeOptions(
        library=str(manifest),
        backend_values=BACKEND,
        app_name=name,
        replicas=replicas,
        replica_cpus=2.0 / replicas,
        max_resident=budget,
        simulate=simulate,
        preload=preload,
    )
    ray_serve.deploy(options)
    library = ExpertLibrary(manifest)
    logic = RemoteExpertLogic(
        ExpertStage(library),
        ray_serve.RayExpertService(name),
        ExpertParams(),
        max_in_flight=8 * replicas,
    )
    try:
        yield logic
    finally:
        logic.close()
        serve.delete(name)


def measure(
    part: str,
    logic: ExpertLogic,
    manifest: Path,
    n: int,
    args: argparse.Namespace,
    *,
    mode: str,
    replicas: int,
    experts: int,
    budget: int,
    model: str,
    check: Callable[[ExpertReply, ExpertKey, int], bool] | None = None,
    local_loads: _CountingFactory | None = None,
    warmup_s: float | None = None,
    seconds: float | None = None,
) -> Run:
    library = ExpertLibrary(manifest)
    edges = Edges(library, pool=args.pool, seed=n)
    loads0 = local_loads.loads if local_loads is not None else 0
    if local_loads is not None:  # the local node has no cold-load counter of its own
        before = logic.counters.batches
    seconds = args.seconds if seconds is None else seconds
    warmup_s = args.warmup if warmup_s is None else warmup_s
    marks: dict[str, tuple[float, dict[str, float], dict[str, Any]]] = {}

    def on_mark(which: str) -> None:
        seen = logic.replicas() if isinstance(logic, RemoteExpertLogic) else {}
        marks[which] = (time.perf_counter(), own_cpu_s(), seen)

    figures = drive(logic, edges, n, warmup_s, seconds, check, on_mark)
    run = Run(part, mode, replicas, n, experts, budget, model, seconds, **figures)
    if 'start' in marks and 'end' in marks:
        t0, cpu0, seen0 = marks['start']
        t1, cpu1, seen1 = marks['end']
        used = sum(cpu1[pid] - cpu0.get(pid, 0.0) for pid in cpu1)
        run.host_cpu = round(used / ((t1 - t0) * (os.cpu_count() or 1)), 3)
        frames = 0
        for replica, last in seen1.items():
            first = seen0.get(replica)
            if first is None or last.clock_ms <= first.clock_ms:
                continue
            busy = last.busy_ms - first.busy_ms
            run.device_util.append(round(busy / (last.clock_ms - first.clock_ms), 3))
            run.model_calls += last.model_calls - first.model_calls
            frames += last.frames_run - first.frames_run
        run.frames_per_model_call = round(frames / run.model_calls, 2) if run.model_calls else 0
    if local_loads is not None:
        run.calls = logic.counters.batches - before
        run.cold_calls = local_loads.loads - loads0
    run.cold_rate = run.cold_calls / run.calls if run.calls else 0.0
    run.hit_rate = 1.0 - run.cold_rate
    run.front_rss_mb = rss_mb()
    if isinstance(logic, RemoteExpertLogic):
        seen = logic.replicas()
        run.replica_rss_mb = [round(s.rss_mb, 1) for s in seen.values()]
        run.keys_per_replica = {r: s.resident for r, s in seen.items()}
        run.ray_rss_mb = ray_rss_mb()
    logger.info(
        '%s %s x%d N=%d lib=%d budget=%d: %.1f fps p50 %.1f p95 %.1f ms cold %.3f eq %s/%s'
        ' device util %s, %.2f frames/model call, host CPU %.2f',
        part,
        mode,
        replicas,
        n,
        experts,
        budget,
        run.throughput_fps,
        run.p50_ms,
        run.p95_ms,
        run.cold_rate,
        run.equal_local,
        run.compared,
        run.device_util,
        run.frames_per_model_call,
        run.host_cpu,
    )
    return run


def part_sweep(args: argparse.Namespace, runs: list[Run]) -> None:
    manifest = make_library(args.work, 10, PAPER_EXPERT)
    kw = {'experts': 10, 'budget': 0, 'model': PAPER_EXPERT.name}
    logic, loads = local_logic(manifest, 0)
    for n in args.edges:
        runs.append(measure('sweep', logic, manifest, n, args, mode='local', replicas=1,
                            local_loads=loads, **kw))  # fmt: skip
    for replicas in args.replicas:
        with serve_app(manifest, f'sweep{replicas}', replicas, 0) as front:
            for i, n in enumerate(args.edges):
                warm = args.warmup + (4.0 if i == 0 else 0.0)  # first: every replica loads
                runs.append(measure('sweep', front, manifest, n, args, mode='ray',
                                    replicas=replicas, warmup_s=warm, **kw))  # fmt: skip


def part_libraries(args: argparse.Namespace, runs: list[Run]) -> None:
    for experts in args.libraries:
        manifest = make_library(args.work, experts, PAPER_EXPERT)
        library = ExpertLibrary(manifest)
        reference = reference_labels(manifest, Edges(library, pool=args.pool))

        def check(
            reply: ExpertReply, key: ExpertKey, frame: int, reference: dict = reference
        ) -> bool:
            return reply.label == reference[(key, frame)]

        kw = {
            'experts': experts,
            'budget': args.budget,
            'model': PAPER_EXPERT.name,
            'warmup_s': args.lib_warmup,  # the budget fills, LRU reaches its steady state
            'seconds': args.lib_seconds,
        }
        logic, loads = local_logic(manifest, args.budget)
        runs.append(measure('libraries', logic, manifest, 8, args, mode='local', replicas=1,
                            check=check, local_loads=loads, **kw))  # fmt: skip
        del logic
        with serve_app(manifest, f'lib{experts}', 2, args.budget) as front:
            runs.append(measure('libraries', front, manifest, 8, args, mode='ray', replicas=2,
                                check=check, **kw))  # fmt: skip


def part_simulated(args: argparse.Namespace, runs: list[Run]) -> None:
    from ask_expert_ros.serving.ray_serve import SimulatedAccelerator

    manifest = make_library(args.work, 10, SMALL_EXPERT)  # loads are real; calls sleep
    for device in args.sim_devices.split(','):
        sim = SimulatedAccelerator.from_paper(*device.split('/'), args.sim_fixed_share)
        model = f'simulated {sim.name}: {sim.fixed_ms:.2f} + {sim.per_item_ms:.3f} ms/frame'
        for replicas in args.replicas:
            app = serve_app(manifest, f'sim{replicas}', replicas, 0, sim, args.sim_preload)
            with app as front:
                for i, n in enumerate(args.sim_edges):
                    warm = args.warmup + (3.0 if i == 0 else 0.0)  # first: every replica loads
                    runs.append(measure('simulated', front, manifest, n, args, mode='ray',
                                        replicas=replicas, experts=10, budget=0, model=model,
                                        warmup_s=warm))  # fmt: skip


def part_small(args: argparse.Namespace, runs: list[Run]) -> None:
    manifest = make_library(args.work, 10, SMALL_EXPERT)
    kw = {'experts': 10, 'budget': 0, 'model': SMALL_EXPERT.name}
    logic, loads = local_logic(manifest, 0)
    runs.append(measure('small', logic, manifest, 8, args, mode='local', replicas=1,
                        local_loads=loads, **kw))  # fmt: skip
    with serve_app(manifest, 'small1', 1, 0) as front:
        runs.append(measure('small', front, manifest, 8, args, mode='ray', replicas=1,
                            warmup_s=args.warmup + 3.0, **kw))  # fmt: skip


PARTS = {
    'sweep': part_sweep,
    'libraries': part_libraries,
    'simulated': part_simulated,
    'small': part_small,
}


def plot(runs: list[Run], out: Path) -> list[Path]:
    """Throughput and p95 against N, one line per configuration (part ``sweep``)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    paths = []
    figures = [('sweep', '', 'fleet_sweep.png')]
    for model in sorted({r.model for r in runs if r.part == 'simulated'}):
        slug = model.split(':')[0].removeprefix('simulated ').replace('/', '_')
        figures.append(('simulated', model, f'fleet_simulated_{slug}.png'))
    for part, model, filename in figures:
        rows = [r for r in runs if r.part == part and (not model or r.model == model)]
        if not rows:
            continue
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
        for label in sorted({(r.mode, r.replicas) for r in rows}):
            line = sorted(
                (r for r in rows if (r.mode, r.replicas) == label), key=lambda r: r.edges
            )
            name = 'local' if label[0] == 'local' else f'ray, {label[1]} replica(s)'
            xs = [r.edges for r in line]
            ax1.plot(xs, [r.throughput_fps for r in line], marker='o', label=name)
            ax2.plot(xs, [r.p95_ms for r in line], marker='o', label=name)
        for ax, what in ((ax1, 'throughput, frames/s'), (ax2, 'p95 latency, ms')):
            ax.set_xscale('log', base=2)
            ax.set_xlabel('simulated edges N')
            ax.set_ylabel(what)
            ax.grid(True, alpha=0.3)
        ax1.legend()
        fig.suptitle(f'{part}: {rows[0].model}, {rows[0].experts} experts, 2 CPU cores')
        fig.tight_layout()
        path = out / filename
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(',') if t.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--work', type=Path, required=True, help='libraries are built here')
    parser.add_argument('--out', type=Path, required=True, help='fleet.json and plots')
    parser.add_argument('--parts', default='sweep,libraries,simulated,small')
    parser.add_argument('--edges', type=_ints, default=[1, 2, 4, 8, 16, 32])
    parser.add_argument('--replicas', type=_ints, default=[1, 2, 4])
    parser.add_argument('--libraries', type=_ints, default=[10, 21, 36])
    parser.add_argument('--budget', type=int, default=10, help='resident experts per replica')
    parser.add_argument('--seconds', type=float, default=4.0, help='measured per point')
    parser.add_argument('--warmup', type=float, default=1.0, help='unmeasured first')
    parser.add_argument('--pool', type=int, default=16, help='distinct frames per run')
    parser.add_argument('--lib-warmup', type=float, default=4.0, help='libraries: unmeasured')
    parser.add_argument('--lib-seconds', type=float, default=8.0, help='libraries: measured')
    parser.add_argument('--sim-edges', type=_ints, default=[8, 16, 32])
    parser.add_argument(
        '--sim-devices',
        default='agx_orin/deit_4h,orin_nano/deit_6h',
        help="simulated: device/variant of the paper's Table 1, comma-separated",
    )
    parser.add_argument(
        '--sim-fixed-share', type=float, default=0.2, help='of the batch-10 latency, per call'
    )
    parser.add_argument(
        '--sim-preload',
        action=argparse.BooleanOptionalAction,
        default=True,
        help='simulated: every replica loads every expert first (ServeOptions.preload)',
    )
    parser.add_argument('--prepare', action='store_true', help='only build the libraries')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s')
    args.work.mkdir(parents=True, exist_ok=True)
    if args.prepare:
        for experts in sorted({10, *args.libraries}):
            make_library(args.work, experts, PAPER_EXPERT)
        make_library(args.work, 10, SMALL_EXPERT)
        return 0
    import ray

    ray.init(address='local', num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)  # fmt: skip
    runs: list[Run] = []
    args.out.mkdir(parents=True, exist_ok=True)
    report = args.out / 'fleet.json'
    parts = args.parts.split(',')
    # the runs of parts not run now stay in the report (one part can be measured again)
    kept: list[Run] = []
    meta: dict[str, Any] = {}
    if report.is_file():
        old = json.loads(report.read_text())
        if isinstance(old, dict):
            meta = old.get('meta', {})
            known = set(Run.__dataclass_fields__)
            kept = [
                Run(**{k: v for k, v in r.items() if k in known})
                for r in old.get('runs', [])
                if r['part'] not in parts
            ]
    partial = args.out / 'fleet.partial.json'
    try:
        for part in parts:
            PARTS[part](args, runs)
            partial.write_text(json.dumps([asdict(r) for r in runs], indent=1))
    finally:
        ray.shutdown()
    measured = meta.get('measured', {})
    measured.update(dict.fromkeys(parts, time.strftime('%Y-%m-%d')))
    meta |= {
        'torch_threads': torch.get_num_threads(),
        'cpus': os.cpu_count(),
        'ray': ray.__version__,
        'torch': torch.__version__,
        'measured': measured,
    }
    runs = kept + runs
    report.write_text(json.dumps({'meta': meta, 'runs': [asdict(r) for r in runs]}, indent=1))
    partial.unlink()
    for path in plot(runs, args.out):
        logger.info('plot: %s', path)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
