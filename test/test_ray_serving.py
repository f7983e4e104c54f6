"""The expert library served by a real, local Ray Serve (``serving: ray``).

One Ray instance for the whole module (2 CPUs, started once: a few seconds), two Serve
applications of one tiny library (6 experts, S = 3, k = 2): ``lru`` (1 replica holding
2 experts) and ``pair`` (2 replicas; a replica holds a call up to 0.4 s to merge more,
so a test can kill it while calls are inside it). The node logic is the real front
(:class:`RemoteExpertLogic`); answers are compared with the in-process expert's.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip('ray.serve', reason="serving: ray needs `pip install 'ray[serve]'`")

import ray
from conftest import fresh_domain_id, tiny_config
from test_dds_nodes import (
    EDGE_ARGS,
    START_TIMEOUT_S,
    Graph,
    collect,
    expected_labels,
    publish,
    running,
    spawn,
    wait_for,
)

from ask_expert_ros.core.errors import AskExpertError
from ask_expert_ros.core.inference.engine import ExpertStage
from ask_expert_ros.core.inference.library import ExpertLibrary, write_manifest
from ask_expert_ros.core.inference.models import create_model, save_model
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
from ask_expert_ros.core.nodes.node_config import EXPERT_PARAMS, build_expert_logic, resolve
from ask_expert_ros.core.nodes.remote_expert import RemoteExpertLogic
from ask_expert_ros.dds import msgs
from ask_expert_ros.serving import ray_serve

pytestmark = pytest.mark.timeout(180)
SCHEME = PartitionScheme.from_class_subsets(
    'toy_s3', ('a', 'b', 'c', 'd', 'e', 'f'), {1: [0, 1], 2: [2, 3], 3: [4, 5]}
)
KEYS = SCHEME.expert_keys(2)  # (1,) (2,) (3,) (1, 2) (1, 3) (2, 3)
BACKEND = {'backend': 'torch', 'precision': 'fp32', 'device': 'cpu', 'max_batch': 8}


@pytest.fixture(scope='module')
def library_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 tiny experts with random weights (and an edge model, for the DDS test)."""
    root = tmp_path_factory.mktemp('ray_zoo')
    torch.manual_seed(0)
    edge = save_model(
        create_model(tiny_config(SCHEME)), tiny_config(SCHEME), root / 'edge.safetensors'
    )
    experts = {}
    for key in KEYS:
        cfg = tiny_config(SCHEME, key, 'deit_4h')
        experts[key] = save_model(create_model(cfg), cfg, root / f'expert_{key_slug(key)}')
    return write_manifest(root, SCHEME, 2, experts, edge=edge)


@pytest.fixture(scope='module')
def cluster() -> Iterator[str]:
    """A private local Ray with 2 CPUs; yields its GCS address (for other processes)."""
    from ray import serve

    try:
        ray.init(
            address='local',
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            logging_level='error',
        )
    except Exception as exc:  # no /dev/shm, no free ports, a sandbox
        pytest.skip(f'a local Ray cannot start here: {type(exc).__name__}: {exc}')
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        serve.shutdown()
        ray.shutdown()


def options(library: Path, app: str, **kw) -> ray_serve.ServeOptions:
    return ray_serve.ServeOptions(library=str(library), backend_values=BACKEND, app_name=app, **kw)


@pytest.fixture(scope='module')
def lru_app(cluster: str, library_dir: Path) -> str:
    """1 replica with room for 2 of the 6 experts; merges no calls (sequence is exact)."""
    ray_serve.deploy(options(library_dir, 'lru', replica_cpus=0.5, max_resident=2, batch_calls=1))
    return 'lru'


@pytest.fixture(scope='module')
def pair_app(cluster: str, library_dir: Path) -> str:
    """2 replicas; each holds a call up to 0.4 s waiting for more to merge."""
    ray_serve.deploy(
        options(
            library_dir, 'pair', replicas=2, replica_cpus=0.5, batch_calls=64, batch_wait_ms=400
        )
    )
    return 'pair'


def request(i: int, key: ExpertKey, deadline_s: float = 10.0, edge: str = 'e1') -> OffloadRequest:
    pixels = np.random.default_rng(i).integers(0, 256, (8, 8), dtype=np.uint8)
    return OffloadRequest(
        header=Header(Stamp(i, 0), 'cam'),
        edge_id=edge,
        request_id=i,
        image=ImageData(FrameFormat.RAW, pixels.tobytes(), 8, 8, 'mono8', 8),
        topk_classes=(0, 1),
        topk_scores=(0.5, 0.4),
        expert_key=key,
        partition=SCHEME.name,
        confidence=0.5,
        confidence_method='max_softmax',
        deadline=Stamp.from_ns(time.time_ns() + int(deadline_s * 1e9)),
    )


def front(library: Path, app: str, **kw) -> RemoteExpertLogic:
    library_ = ExpertLibrary(library)
    service = ray_serve.RayExpertService(app)
    return RemoteExpertLogic(ExpertStage(library_), service, ExpertParams(max_wait_ms=0), **kw)


def local_replies(library: Path, requests: list[OffloadRequest]) -> dict[int, ExpertReply]:
    logic = ExpertLogic(ExpertStage(ExpertLibrary(library)), ExpertParams(max_wait_ms=0))
    for r in requests:
        assert logic.submit(r) is None
    return {r.request_id: r for r in logic.poll(flush=True)}


def drain(logic: RemoteExpertLogic, count: int, timeout_s: float) -> list[ExpertReply]:
    """Poll until ``count`` replies came or the deadline; then once more for extras."""
    replies: list[ExpertReply] = []
    deadline = time.monotonic() + timeout_s
    while len(replies) < count and time.monotonic() < deadline:
        replies += logic.poll(flush=True)
        logic.wait(0.02)
    return replies


def test_answers_equal_the_local_experts_and_lru_evicts_and_reloads(
    lru_app: str, library_dir: Path
) -> None:
    """One call at a time through a replica holding 2 experts. Keys (1) (2) (1) (3) (2)
    (1): LRU with room for 2 gives miss, miss, hit, miss (evicts 2), miss (evicts 1),
    miss (evicts 3) -- a cold load (load_ms > 0) exactly where a miss is, never more
    than 2 resident, and every answer (a reloaded expert's too) equal to the local
    expert's for the same request."""
    order = [(1,), (2,), (1,), (3,), (2,), (1,)]
    requests = [request(i, key) for i, key in enumerate(order)]
    logic = front(library_dir, lru_app)
    try:
        got: list[ExpertReply] = []
        for r in requests:
            assert logic.submit(r) is None
            got += drain(logic, 1, 30.0)
        assert [g.request_id for g in got] == list(range(len(order)))
        assert [g.load_ms > 0 for g in got] == [True, True, False, True, True, True]
        status = logic.queue_status()
        residents = [v for k, v in status.items() if str(k).startswith('replica[')]
        assert residents and all(str(v).startswith('2 experts') for v in residents)
        assert logic.counters.cold_loads == 5 and logic.counters.calls == 6
        assert status['expert_hit_rate'] == round(1 / 6, 4)
    finally:
        logic.close()
    local = local_replies(library_dir, requests)
    for g in got:
        want = local[g.request_id]
        assert g.status == Status.OK and g.label == want.label and g.expert_key == want.expert_key
        assert g.score == pytest.approx(want.score, abs=1e-6)
        assert g.inference_ms >= g.load_ms


def test_many_edges_every_key_answered_once_equal_to_local(
    pair_app: str, library_dir: Path
) -> None:
    """60 requests from 3 edges over all 6 keys through 2 replicas, several calls in
    flight: one OK reply per request, each equal to the local expert's."""
    requests = [request(i, KEYS[i % 6], edge=f'e{i % 3}') for i in range(60)]
    logic = front(library_dir, pair_app, max_in_flight=8)
    try:
        for r in requests:
            assert logic.submit(r) is None
        got = drain(logic, len(requests), 60.0)
    finally:
        logic.close()
    assert sorted(g.request_id for g in got) == list(range(60))
    local = local_replies(library_dir, requests)
    assert all(g.status == Status.OK for g in got), {g.error for g in got}
    assert {g.request_id: g.label for g in got} == {i: r.label for i, r in local.items()}
    assert {g.edge_id for g in got} == {'e0', 'e1', 'e2'}


def test_replica_killed_mid_request_every_request_answered_once(
    pair_app: str, library_dir: Path
) -> None:
    """A warm-up call loads expert (2) on one replica; the router then sends that key's
    calls there, where they wait up to 0.4 s to merge. That replica's process is
    killed (SIGKILL) while 8 calls are inside it: each fails with the actor's death and
    is sent once more, to the other replica (or answered MODEL_ERROR / EXPIRED, which
    the edge turns into its fallback). Every request gets exactly one reply; those
    answered OK equal the local expert's."""
    logic = front(library_dir, pair_app, max_in_flight=16)
    try:
        assert logic.submit(request(1000, (2,))) is None
        (warm,) = drain(logic, 1, 30.0)
        assert warm.status == Status.OK
        (seen,) = logic.replicas().values()
        pid = seen.pid
        requests = [request(i, (2,)) for i in range(8)]
        for r in requests:
            assert logic.submit(r) is None
            assert logic.poll(flush=True) == []  # sent, one call each
        deadline = time.monotonic() + 5
        while logic.in_flight < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # the calls reach the replica, which waits to merge them
        os.kill(pid, signal.SIGKILL)
        got = drain(logic, len(requests), 60.0)
        time.sleep(0.3)
        got += logic.poll(flush=True)  # nothing more may come
    finally:
        logic.close()
    assert sorted(g.request_id for g in got) == list(range(8))
    assert logic.counters.engine_failures >= 1
    assert all(g.status in (Status.OK, Status.MODEL_ERROR, Status.EXPIRED) for g in got)
    local = local_replies(library_dir, requests)
    ok = [g for g in got if g.status == Status.OK]
    assert all(g.label == local[g.request_id].label for g in ok)
    assert logic.counters.retried >= 1 or not ok  # an OK after the kill was a retry


def test_engine_slower_than_the_deadline_answers_expired_once(
    pair_app: str, library_dir: Path
) -> None:
    """A replica holds a call 0.4 s to merge; the request's deadline is 0.1 s and the
    front's grace 0.05 s: EXPIRED at about 0.15 s, and the engine's late answer is
    dropped (one reply only)."""
    logic = front(library_dir, pair_app, grace_ms=50)
    try:
        assert logic.submit(request(7, (1, 3), deadline_s=0.1)) is None
        start = time.monotonic()
        (reply,) = drain(logic, 1, 5.0)
        took = time.monotonic() - start
        time.sleep(0.6)  # the engine answers meanwhile
        late = logic.poll(flush=True)
    finally:
        logic.close()
    assert reply.status == Status.EXPIRED and 'engine' in reply.error
    assert took < 0.39
    assert late == []
    assert logic.queued == 0


def test_simulated_replica_is_one_device_its_calls_never_overlap(
    cluster: str, library_dir: Path
) -> None:
    """The fleet benchmark's simulated accelerator: 12 calls over the 6 keys sent at once
    to 1 replica, which merges up to 4 calls and runs their keys' sub-batches
    concurrently (serve.batch). Each model call sleeps 40 ms of "device" time; the
    replica is one device, so the calls' device intervals never overlap, its busy time
    is their sum, and 12 calls take at least 6 x 40 ms (a device serving the sub-batches
    at once would take about half)."""
    from ray import serve

    from ask_expert_ros.core.nodes.remote_expert import ServeAnswer, ServeCall, ServeItem

    sim = ray_serve.SimulatedAccelerator(fixed_ms=30.0, per_item_ms=10.0)
    assert ray_serve.SimulatedAccelerator.from_paper('orin_nano', 'deit_6h').call_ms(
        10
    ) == pytest.approx(88.7)
    ray_serve.deploy(
        options(library_dir, 'sim', replica_cpus=0.5, batch_calls=4, batch_wait_ms=5, simulate=sim)
    )
    service = ray_serve.RayExpertService('sim')
    answers: list[ServeAnswer | BaseException] = []
    try:
        pixels = np.zeros((8, 8), np.uint8)
        warm = [ServeCall(key, (ServeItem(pixels),)) for key in KEYS]  # loads: not timed
        calls = [ServeCall(KEYS[i % 6], (ServeItem(pixels),)) for i in range(12)]
        for batch in (warm, calls):
            answers.clear()
            start = time.monotonic()
            for call in batch:
                service.call(call, answers.append)
            deadline = start + 30
            while len(answers) < len(batch) and time.monotonic() < deadline:
                time.sleep(0.005)
            took = time.monotonic() - start
    finally:
        service.close()
        serve.delete('sim')
    assert len(answers) == 12 and all(isinstance(a, ServeAnswer) for a in answers)
    got = [a for a in answers if isinstance(a, ServeAnswer)]
    assert all(not a.errors and a.labels == {0: 0} for a in got)
    # one interval per model call (answers of merged calls share it)
    spans = sorted({(a.clock_ms - a.elapsed_ms + a.load_ms, a.clock_ms) for a in got})
    assert all(end - begin >= 39.0 for begin, end in spans)
    assert all(b[0] >= a[1] - 0.01 for a, b in itertools.pairwise(spans)), spans
    assert sum(a.batch_size for a in {a.clock_ms: a for a in got}.values()) == 12
    last = max(got, key=lambda a: a.clock_ms)
    assert last.model_calls == 6 + len(spans)  # the warm-up's 6, then these
    assert last.frames_run == 6 + 12
    assert last.busy_ms >= 6 * 40.0 + sum(end - begin for begin, end in spans) - 1.0
    assert took >= len(spans) * 0.04


def test_replicas_the_cluster_cannot_place_fail_at_once(cluster: str, library_dir: Path) -> None:
    """4 replicas x 1 CPU on a 2-CPU cluster: a clear error, not serve.run waiting."""
    start = time.monotonic()
    with pytest.raises(AskExpertError, match=r'4 replicas x 1 CPU = 4 CPU.*has 2'):
        ray_serve.deploy(options(library_dir, 'too_big', replicas=4, replica_cpus=1.0))
    assert time.monotonic() - start < 5


def test_front_without_a_running_app_and_no_deploy_says_so(cluster: str, library_dir) -> None:
    values = resolve(
        EXPERT_PARAMS,
        {'library': str(library_dir), 'serving': 'ray', 'ray_app': 'absent', 'ray_deploy': False},
    )
    with pytest.raises(AskExpertError, match=r"'absent' is not running.*ray_deploy"):
        build_expert_logic(values)


def test_dds_expert_node_as_front_of_the_running_app(
    lru_app: str, cluster: str, library_dir: Path
) -> None:
    """``ask-expert expert --set serving=ray`` in its own process joins this test's Ray
    cluster and fronts the running ``lru`` application (ray_deploy false); an edge sends
    every frame to it over DDS: one result per frame, the routed expert's label."""
    domain_id = fresh_domain_id()
    frames = np.random.default_rng(0).integers(0, 256, size=(12, 8, 8), dtype=np.uint8)
    graph = Graph(domain_id)
    camera = graph.writer('image', msgs.Image)
    results_reader = graph.reader('classification', msgs.Classification)
    responses_reader = graph.reader('expert/responses', msgs.ExpertResponse)
    ray_args = ('serving=ray', f'ray_address={cluster}', f'ray_app={lru_app}', 'ray_deploy=false')
    expert = spawn('expert', library_dir, domain_id, *[a for s in ray_args for a in ('--set', s)])
    edge = spawn('edge', library_dir, domain_id, *EDGE_ARGS, '--set', 'edge_id=robot1')
    with running(expert, edge):
        wait_for(
            lambda: (
                camera.get_matched_subscriptions() and responses_reader.get_matched_publications()
            ),
            START_TIMEOUT_S,
            'nodes to start',
        )
        time.sleep(0.5)
        secs = publish(camera, frames, first_sec=3000)
        results: list = []
        collect(results_reader, results, len(frames), 60, 'results')
        responses: list = []
        collect(responses_reader, responses, len(frames), 10, 'expert responses')
    assert sorted(r.header.stamp.sec for r in results) == secs
    assert all(r.status == msgs.ExpertResponse.STATUS_OK for r in responses)
    names = SCHEME.class_names
    expected, _ = expected_labels(library_dir, frames)
    got = {r.header.stamp.sec: r.results[0].class_id for r in results}
    assert [got[s] for s in secs] == [names[i] for i in expected]
