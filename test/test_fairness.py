"""One expert, many edges: per-edge queues served in turn, bounded, shed with OVERLOADED.

Real tiny expert models (``conftest.py``), a clock the test moves by hand, and an expert
that runs one micro-batch per tick: a fixed capacity the edges share.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from ask_expert_ros.core.inference.engine import ExpertStage
from ask_expert_ros.core.inference.image_codec import encode_image
from ask_expert_ros.core.inference.library import ExpertLibrary
from ask_expert_ros.core.inference.taxonomy import ExpertKey
from ask_expert_ros.core.nodes.expert_logic import MAX_TRACKED_EDGES, ExpertLogic, ExpertParams
from ask_expert_ros.core.nodes.messages import (
    ExpertReply,
    FrameFormat,
    Header,
    ImageData,
    OffloadRequest,
    Stamp,
    Status,
)

FAR_FUTURE_NS = 10**18
TICK_MS = 10


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000_000_000

    def __call__(self) -> int:
        return self.now


def request(edge_id: str, request_id: int, key: ExpertKey) -> OffloadRequest:
    pixels = np.full((8, 8), request_id % 256, np.uint8)
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
        deadline=Stamp.from_ns(FAR_FUTURE_NS),
    )


@pytest.fixture
def library(zoo) -> ExpertLibrary:
    return ExpertLibrary(zoo)


def expert(library: ExpertLibrary, clock: Clock, **kwargs) -> ExpertLogic:
    return ExpertLogic(ExpertStage(library), ExpertParams(**kwargs), clock, clock)


def test_a_flooding_edge_at_10x_its_share_does_not_starve_another(library) -> None:
    """The expert runs one batch of 2 per 10 ms tick: 2 requests per tick for two edges,
    a share of 1 each. Edge 'calm' sends 1 per tick (its share), edge 'flood' 10 per
    tick (10x), for 20 ticks, over mixed keys; each edge may have 8 waiting.

    Expected: every request gets exactly one reply; every one of calm's is answered OK,
    in the order sent, within one tick of arriving (queue_ms <= 10) -- as if flood were
    not there; flood's excess is shed OVERLOADED at once, and flood is served too: at
    least its share of 1 per tick over the run, less the slots of batches calm led with
    a key flood had none of (batches are per key).
    """
    clock = Clock()
    logic = expert(library, clock, max_batch=2, max_wait_ms=0.0, max_queue_per_edge=8)
    keys = library.scheme.expert_keys(2)
    replies: list[ExpertReply] = []
    sent = Counter[str]()
    for tick in range(20):
        calm = request('calm', tick, keys[tick % 2])
        floods = [request('flood', 10 * tick + i, keys[i % len(keys)]) for i in range(10)]
        for r in [floods[0], calm, *floods[1:]]:  # calm's arrives inside the burst
            sent[r.edge_id] += 1
            reply = logic.submit(r)
            if reply is not None:
                replies.append(reply)
        replies += logic.poll(max_batches=1)
        clock.now += TICK_MS * 1_000_000
    while logic.queued:
        replies += logic.poll(max_batches=1)
        clock.now += TICK_MS * 1_000_000

    ids = Counter((r.edge_id, r.request_id) for r in replies)
    assert set(ids.values()) == {1} and Counter(e for e, _ in ids) == sent
    calm = [r for r in replies if r.edge_id == 'calm']
    assert [r.request_id for r in calm] == list(range(20))
    assert {r.status for r in calm} == {Status.OK}
    assert max(r.queue_ms for r in calm) <= TICK_MS
    flood = [r for r in replies if r.edge_id == 'flood']
    shed = [r for r in flood if r.status == Status.OVERLOADED]
    served = [r for r in flood if r.status == Status.OK]
    assert len(shed) + len(served) == 200 and len(served) >= 10
    assert all(r.error.startswith('shed:') for r in shed)
    assert logic.counters.shed == len(shed) and logic.counters.answered == 20 + len(served)
    stats = logic.edge_stats()
    assert (stats['calm'].shed, stats['flood'].shed) == (0, len(shed))
    assert logic.queue_status()['queued'] == 0


def test_full_node_sheds_the_edge_with_the_most_waiting_not_the_newcomer(library) -> None:
    """10 requests may wait in all, 10 per edge. 'flood' fills all 10; 'calm' sends 3:
    each makes room by shedding flood's newest (9, 8, 7: OVERLOADED, out with the next
    poll), so calm is never shed while flood has more waiting. Batches of 2 are then
    shared one each (equal counts served; calm, with fewer waiting, first) until calm
    has nothing left; flood gets the rest."""
    clock = Clock()
    logic = expert(library, clock, max_batch=2, max_wait_ms=0.0, max_queued=10)
    for i in range(10):
        assert logic.submit(request('flood', i, (1,))) is None
    for i in range(3):
        assert logic.submit(request('calm', i, (1,))) is None
    assert logic.queued == 10 and logic.next_due_ns() <= clock.now
    first = logic.poll(max_batches=1)
    shed = [(r.edge_id, r.request_id) for r in first if r.status == Status.OVERLOADED]
    assert shed == [('flood', 9), ('flood', 8), ('flood', 7)]
    batch = [(r.edge_id, r.request_id) for r in first if r.status == Status.OK]
    assert batch == [('calm', 0), ('flood', 0)]
    rest = [(r.edge_id, r.request_id) for r in logic.poll()]
    assert rest == [('calm', 1), ('flood', 1), ('calm', 2), ('flood', 2)] + [
        ('flood', i) for i in range(3, 7)
    ]
    # with calm and flood at 1 waiting each, a full node refuses the arriving one
    logic = expert(library, clock, max_wait_ms=1000.0, max_queued=2)
    assert logic.submit(request('a', 0, (1,))) is None
    assert logic.submit(request('b', 0, (1,))) is None
    reply = logic.submit(request('b', 1, (1,)))
    assert reply is not None and reply.status == Status.OVERLOADED and reply.request_id == 1


def test_memory_stays_bounded_over_many_edges(library) -> None:
    """200 edges, each sending 3 requests (2 may wait), all answered: nothing is left
    queued, and the per-edge figures keep only the most recent MAX_TRACKED_EDGES edges."""
    clock = Clock()
    logic = expert(library, clock, max_batch=64, max_wait_ms=0.0, max_queue_per_edge=2)
    replies = []
    for e in range(200):
        for i in range(3):
            reply = logic.submit(request(f'edge{e}', i, (1,)))
            replies += [reply] if reply is not None else []
        if e % 50 == 49:
            replies += logic.poll()
    replies += logic.poll(flush=True)
    assert len(replies) == 600 and logic.counters.shed == 200  # the 3rd of each
    assert logic.queued == 0 and logic.queue_status()['edges_waiting'] == 0
    assert len(logic.edge_stats()) == MAX_TRACKED_EDGES
    assert 'edge199' in logic.edge_stats() and 'edge0' not in logic.edge_stats()


def test_rate_quota_sheds_what_an_edge_sends_above_it_before_decoding(library) -> None:
    """A quota of 20 requests/s per edge (a bucket of 20, full at start). Over 1 s in
    10 ms ticks, 'flood' sends 3 per tick (300/s) and 'calm' 1 per 100 ms (10/s).

    Expected: calm is never shed; flood gets its bucket (20) plus 20/s over the 0.99 s
    the ticks span (19.8 tokens: 19 whole ones with the 20th not refilled yet at the
    last tick, so 39), the rest (261) shed OVERLOADED on arrival with the quota named.
    A shed request is never decoded: flood's requests from the 22nd on (tick 7, when its
    bucket has run dry) carry undecodable pixels; the 18 of them the quota lets through
    are answered BAD_FRAME, the 261 shed ones OVERLOADED, each request exactly once."""
    clock = Clock()
    logic = expert(library, clock, max_wait_ms=0.0, max_rate_per_edge=20.0)
    shed: Counter[str] = Counter()
    replies = []
    for tick in range(100):
        batch = [request('flood', 3 * tick + i, (1,)) for i in range(3)]
        if tick >= 7:  # the bucket is empty by now: these must never reach the decoder
            batch = [
                OffloadRequest(**{**r.__dict__, 'image': ImageData(FrameFormat.RAW, b'x')})
                for r in batch
            ]
        if tick % 10 == 0:
            batch.append(request('calm', tick, (1,)))
        for r in batch:
            reply = logic.submit(r)
            if reply is not None and reply.status == Status.OVERLOADED:
                assert 'quota of 20 requests/s' in reply.error
                shed[r.edge_id] += 1
            elif reply is not None:
                replies.append(reply)
        replies += logic.poll()
        clock.now += TICK_MS * 1_000_000
    assert shed == Counter({'flood': 261})
    statuses = Counter((r.edge_id, r.status) for r in replies)
    assert statuses == Counter(
        {('flood', Status.OK): 21, ('flood', Status.BAD_FRAME): 18, ('calm', Status.OK): 10}
    )
    assert logic.counters.bad_frame == 18 and logic.counters.shed == 261


def test_rate_quota_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match='max_rate_per_edge'):
        ExpertParams(max_rate_per_edge=-1.0)


@pytest.mark.parametrize(('name', 'value'), [('max_queue_per_edge', 0), ('max_queued', 0)])
def test_queue_bounds_must_be_positive(name: str, value: int) -> None:
    with pytest.raises(ValueError, match=name):
        ExpertParams(**{name: value})
