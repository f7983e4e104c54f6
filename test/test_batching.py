"""Expert-node micro-batching: never reorders, never loses, respects max_batch and max_wait.

Two tiers, both on the tiny trained-shape zoo of ``conftest.py`` (real timm models):

* a hypothesis property test drives :class:`ExpertLogic` with a hand-moved clock through
  random arrival sequences over several edges and keys (no sleeps, deterministic);
* a concurrent test runs the expert node (:class:`ExpertRunner`) in a thread on a real
  Cyclone DDS loopback domain with several edge threads (real :class:`EdgeLogic`)
  sending to it at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest
from conftest import open_loopback_domain
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ask_expert_ros.core.inference.engine import (
    CoInferenceEngine,
    EdgeStage,
    ExpertOutput,
    ExpertStage,
    FrameBatch,
    ResultSource,
)
from ask_expert_ros.core.inference.image_codec import encode_image
from ask_expert_ros.core.inference.library import ExpertLibrary
from ask_expert_ros.core.inference.routing import RoutingConfig
from ask_expert_ros.core.inference.taxonomy import ExpertKey
from ask_expert_ros.core.nodes.edge_logic import EdgeLogic, EdgeParams
from ask_expert_ros.core.nodes.expert_logic import ExpertLogic, ExpertParams
from ask_expert_ros.core.nodes.messages import (
    ExpertReply,
    FinalResult,
    Frame,
    FrameFormat,
    Header,
    ImageData,
    OffloadRequest,
    Stamp,
    Status,
)

EDGES = ('robot_a', 'robot_b', 'robot_c')
FAR_FUTURE_NS = 10**18


class RecordingStage(ExpertStage):
    """The real expert stage, also noting which keys and how many frames each call got."""

    def __init__(self, library: ExpertLibrary) -> None:
        super().__init__(library)
        self.calls: list[tuple[tuple[ExpertKey, ...], int]] = []

    def run(self, batch: FrameBatch, groups: Mapping[ExpertKey, np.ndarray]) -> ExpertOutput:
        self.calls.append((tuple(groups), len(batch)))
        return super().run(batch, groups)


class Clock:
    """Monotonic and wall clock in one, moved by the test (nanoseconds)."""

    def __init__(self) -> None:
        self.now = 1_000_000_000_000

    def __call__(self) -> int:
        return self.now


def make_request(
    edge_id: str, request_id: int, key: ExpertKey, pixels: np.ndarray, deadline_ns: int
) -> OffloadRequest:
    height, width, encoding, step, raw = encode_image(pixels)
    return OffloadRequest(
        header=Header(Stamp(request_id, 0), edge_id),
        edge_id=edge_id,
        request_id=request_id,
        image=ImageData(FrameFormat.RAW, raw, height, width, encoding, step),
        topk_classes=(0, 1),
        topk_scores=(0.4, 0.3),
        expert_key=key,
        partition='toy_s3',
        confidence=0.4,
        confidence_method='max_softmax',
        deadline=Stamp.from_ns(deadline_ns),
    )


# one arrival: (gap since the previous arrival in µs, edge index, key index, already expired)
arrivals = st.lists(
    st.tuples(
        st.integers(0, 4_000),
        st.integers(0, len(EDGES) - 1),
        st.integers(0, 5),
        st.integers(0, 9).map(lambda v: v < 2),  # ~20 % expired
    ),
    min_size=1,
    max_size=40,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    sequence=arrivals,
    max_batch=st.integers(1, 5),
    max_wait_ms=st.sampled_from([0.0, 0.5, 2.0, 5.0]),
)
def test_batching_never_reorders_loses_mixes_or_overwaits(
    zoo: Path, sequence: list, max_batch: int, max_wait_ms: float
) -> None:
    """Random arrivals over 3 edges x 6 keys; the worker polls whenever a batch is due.

    The clock only moves between calls and the model runs in zero clock time, so a
    request's ``queue_ms`` is exactly how long it sat in its queue: never more than
    ``max_wait_ms``. Requests marked expired carry a deadline already past on arrival
    and must come back EXPIRED, in their place in the order.
    """
    library = ExpertLibrary(zoo)
    keys = library.scheme.expert_keys(2)
    stage = RecordingStage(library)
    clock = Clock()
    params = ExpertParams(max_batch=max_batch, max_wait_ms=max_wait_ms)
    logic = ExpertLogic(stage, params, monotonic_ns=clock, wall_ns=clock)
    rng = np.random.default_rng(len(sequence))
    replies: list[ExpertReply] = []

    def run_due_until(t_ns: int) -> None:
        while (due := logic.next_due_ns()) is not None and due <= t_ns:
            clock.now = max(clock.now, due)
            replies.extend(logic.poll())

    sent: dict[tuple[str, int], OffloadRequest] = {}
    order: dict[tuple[str, ExpertKey], list[int]] = {}
    expired: set[tuple[str, int]] = set()
    next_id = dict.fromkeys(EDGES, 1)
    for gap_us, edge_index, key_index, is_expired in sequence:
        arrival = clock.now + gap_us * 1_000
        run_due_until(arrival)
        clock.now = arrival
        edge, key = EDGES[edge_index], keys[key_index]
        request_id = next_id[edge]
        next_id[edge] += 1
        deadline = arrival - 1 if is_expired else FAR_FUTURE_NS
        pixels = rng.integers(0, 256, (8, 8), dtype=np.uint8)
        request = make_request(edge, request_id, key, pixels, deadline)
        sent[(edge, request_id)] = request
        order.setdefault((edge, key), []).append(request_id)
        if is_expired:
            expired.add((edge, request_id))
        assert logic.submit(request) is None
        replies.extend(logic.poll())  # a queue that just filled runs now
    run_due_until(FAR_FUTURE_NS)

    # exactly one reply per request, with the key it was sent with
    got = [(r.edge_id, r.request_id) for r in replies]
    assert sorted(got) == sorted(sent) and len(set(got)) == len(got)
    assert logic.queued == 0
    for reply in replies:
        request = sent[(reply.edge_id, reply.request_id)]
        assert reply.expert_key == request.expert_key
        assert reply.header == request.header
        wanted = Status.EXPIRED if (reply.edge_id, reply.request_id) in expired else Status.OK
        assert reply.status == wanted, reply
        if reply.status == Status.OK:
            assert 1 <= reply.batch_size <= max_batch
            assert reply.queue_ms <= max_wait_ms + 1e-9  # the clock does not move in a run
    # per (edge, key): replies in arrival order
    for (edge, key), ids in order.items():
        assert [r.request_id for r in replies if (r.edge_id, r.expert_key) == (edge, key)] == ids
    # every model call: one key, at most max_batch frames, all live requests covered
    assert all(len(call_keys) == 1 and 1 <= n <= max_batch for call_keys, n in stage.calls)
    assert sum(n for _, n in stage.calls) == len(sent) - len(expired)
    assert logic.counters.answered == len(sent) - len(expired)
    assert logic.counters.expired == len(expired)


def test_full_queue_runs_at_once_and_partial_one_waits_exactly_max_wait(zoo) -> None:
    """max_batch=3, max_wait 5 ms: three requests of one key run the moment the third
    arrives (1 ms); a lone request of another key runs at 5.0 ms after it came, not before.
    """
    library = ExpertLibrary(zoo)
    clock = Clock()
    logic = ExpertLogic(
        ExpertStage(library), ExpertParams(max_batch=3, max_wait_ms=5.0), clock, clock
    )
    pixels = np.zeros((8, 8), np.uint8)
    t0 = clock.now
    logic.submit(make_request('a', 1, (2,), pixels, FAR_FUTURE_NS))  # alone, key {2}
    for i in range(3):
        clock.now = t0 + (i + 1) * 500_000
        logic.submit(make_request('b', i + 1, (1,), pixels, FAR_FUTURE_NS))
    first = logic.poll()
    assert [(r.edge_id, r.request_id, r.batch_size) for r in first] == [
        ('b', 1, 3),
        ('b', 2, 3),
        ('b', 3, 3),
    ]
    assert logic.next_due_ns() == t0 + 5_000_000
    clock.now = t0 + 4_999_999
    assert logic.poll() == []
    clock.now = t0 + 5_000_000
    (late,) = logic.poll()
    assert (late.edge_id, late.batch_size, late.queue_ms) == ('a', 1, 5.0)


def test_expired_request_keeps_its_place_in_the_batch_order(zoo) -> None:
    """Found by the property test: a, b, c of one edge and key in one batch, b already
    expired. The replies must come back a, b (EXPIRED), c -- not b first.
    """
    clock = Clock()
    logic = ExpertLogic(
        ExpertStage(ExpertLibrary(zoo)), ExpertParams(max_batch=3, max_wait_ms=1), clock, clock
    )
    pixels = np.zeros((8, 8), np.uint8)
    for request_id, deadline in ((1, FAR_FUTURE_NS), (2, clock.now - 1), (3, FAR_FUTURE_NS)):
        logic.submit(make_request('a', request_id, (1,), pixels, deadline))
    replies = logic.poll()
    assert [(r.request_id, r.status) for r in replies] == [
        (1, Status.OK),
        (2, Status.EXPIRED),
        (3, Status.OK),
    ]
    assert [r.batch_size for r in replies] == [2, 0, 2]  # two frames went to the model


def test_failing_model_call_answers_every_request_of_the_batch(zoo) -> None:
    """A real expert whose forward pass raises (as CUDA out-of-memory does): both requests
    of the batch come back MODEL_ERROR at once, the next batch is served normally.
    """
    library = ExpertLibrary(zoo)
    clock = Clock()
    logic = ExpertLogic(ExpertStage(library), ExpertParams(max_batch=2), clock, clock)
    pixels = np.zeros((8, 8), np.uint8)

    def out_of_memory(*_: object) -> None:
        raise RuntimeError('CUDA out of memory (injected)')

    hook = library.get((1,)).model.register_forward_pre_hook(out_of_memory)
    for request_id in (1, 2):
        logic.submit(make_request('a', request_id, (1,), pixels, FAR_FUTURE_NS))
    failed = logic.poll()
    assert [(r.request_id, r.status) for r in failed] == [
        (1, Status.MODEL_ERROR),
        (2, Status.MODEL_ERROR),
    ]
    assert 'out of memory' in failed[0].error and logic.counters.model_errors == 2
    hook.remove()
    for request_id in (3, 4):
        logic.submit(make_request('a', request_id, (1,), pixels, FAR_FUTURE_NS))
    assert [r.status for r in logic.poll()] == [Status.OK, Status.OK]


# -- many edges, one expert node, real Cyclone DDS ----------------------------------------


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out after {timeout_s:.0f} s waiting for {what}')
        time.sleep(0.01)


@pytest.mark.timeout(120)
def test_concurrent_edges_over_dds_each_get_all_their_answers(zoo, frames) -> None:
    """3 edge threads (ids restart at 1 on every edge) send all 20 frames each at once to
    one expert node thread (max_batch 4, max_wait 2 ms) over Cyclone DDS on loopback.

    Every edge gets one EXPERT result per frame, with the label the in-process
    co-inference engine gives with everything offloaded, replies per key in request
    order, and every other edge's reply counted as foreign, never used.
    """
    pytest.importorskip('cyclonedds')
    from cyclonedds.domain import DomainParticipant

    from ask_expert_ros.core.nodes.node_config import EXPERT_PARAMS, resolve
    from ask_expert_ros.dds import conversions as conv
    from ask_expert_ros.dds import msgs
    from ask_expert_ros.dds.nodes import (
        ExpertRunner,
        _Endpoints,
        reliable_qos,
        take_valid,
    )

    library = ExpertLibrary(zoo)
    routing = RoutingConfig(tau=1.01, k=2)  # every frame is offloaded
    expected = (
        CoInferenceEngine(
            EdgeStage(library.load_edge(), library.scheme, routing), ExpertStage(library)
        )
        .infer(frames)
        .labels
    )
    domain_id, domain = open_loopback_domain()
    values = resolve(
        EXPERT_PARAMS,
        {
            'library': str(zoo),
            'max_batch': 4,
            'max_wait_ms': 2.0,
            'request_qos_depth': 500,
            'response_qos_depth': 500,
        },
    )
    expert_logic = ExpertLogic(
        ExpertStage(ExpertLibrary(zoo)), ExpertParams(max_batch=4, max_wait_ms=2.0)
    )
    runner = ExpertRunner(DomainParticipant(domain_id), values, lambda: expert_logic)
    stop = threading.Event()
    expert_thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    expert_thread.start()

    results: dict[str, list[FinalResult]] = {e: [] for e in EDGES}
    reply_order: dict[str, list[tuple[ExpertKey, int]]] = {e: [] for e in EDGES}
    logics: dict[str, EdgeLogic] = {}
    errors: list[BaseException] = []
    ready = threading.Barrier(len(EDGES))

    def edge(edge_id: str) -> None:
        try:
            logic = EdgeLogic(
                EdgeStage(library.load_edge(), library.scheme, routing),
                EdgeParams(edge_id=edge_id, routing=routing, deadline_ms=60_000),
            )
            logics[edge_id] = logic
            io = _Endpoints(DomainParticipant(domain_id), '')
            writer = io.writer('expert/requests', msgs.ExpertRequest, reliable_qos(500))
            reader = io.reader('expert/responses', msgs.ExpertResponse, reliable_qos(500))
            _wait_for(
                lambda: writer.get_matched_subscriptions() and reader.get_matched_publications(),
                60,
                f'{edge_id} to match the expert node',
            )
            ready.wait(timeout=60)
            step = logic.process(
                [Frame(Header(Stamp(100 + i, 0), edge_id), p) for i, p in enumerate(frames)]
            )
            assert not step.results
            for request in step.requests:
                writer.write(conv.request_to_dds(request))

            def answered() -> bool:
                for msg in take_valid(reader, 256):
                    reply = conv.reply_to_core(msg)
                    if reply.edge_id == edge_id:
                        reply_order[edge_id].append((reply.expert_key, reply.request_id))
                    result = logic.on_reply(reply)
                    if result is not None:
                        results[edge_id].append(result)
                return len(results[edge_id]) == len(frames)

            _wait_for(answered, 90, f'{edge_id} to get all its answers')
            # the other edges' replies keep arriving after ours; count them all
            _wait_for(
                lambda: answered() and logic.counters.foreign_replies >= 2 * len(frames),
                30,
                f'{edge_id} to see the other edges replies',
            )
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=edge, args=(e,)) for e in EDGES]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=110)
    finally:
        stop.set()
        expert_thread.join(timeout=10)
    if errors:
        raise errors[0]
    for edge_id in EDGES:
        got = results[edge_id]
        assert len(got) == len(frames)
        assert all(r.source == ResultSource.EXPERT for r in got)
        assert all(r.header.frame_id == edge_id for r in got)
        labels = {r.header.stamp.sec - 100: r.label for r in got}
        assert [labels[i] for i in range(len(frames))] == expected.tolist()
        counters = logics[edge_id].counters
        assert counters.expert == len(frames) and counters.late_replies == 0
        assert counters.foreign_replies == 2 * len(frames)
        for key in {k for k, _ in reply_order[edge_id]}:
            ids = [i for k, i in reply_order[edge_id] if k == key]
            assert ids == sorted(ids), (edge_id, key)
    assert expert_logic.counters.answered == len(EDGES) * len(frames)
    del domain


@pytest.mark.timeout(60)
def test_worker_wait_wakes_for_a_request_that_came_before_it(zoo) -> None:
    """A worker that polls, finds nothing due, and only then calls wait() must not sleep
    through a request submitted in between (this test would hang until its timeout).
    """
    clock = Clock()
    logic = ExpertLogic(
        ExpertStage(ExpertLibrary(zoo)), ExpertParams(max_batch=2, max_wait_ms=5), clock, clock
    )
    assert logic.poll() == []  # nothing due: the worker is about to wait
    logic.submit(make_request('a', 1, (1,), np.zeros((8, 8), np.uint8), FAR_FUTURE_NS))
    logic.wait(600.0)  # returns at once: a request arrived since the last poll
    assert logic.poll() == []  # not due yet (0 of 5 ms waited) ...
    clock.now += 5_000_000
    assert [r.request_id for r in logic.poll()] == [1]  # ... and due at max_wait
