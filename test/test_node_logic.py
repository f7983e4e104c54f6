"""Edge and expert node logic without any transport: the contracts, on real tiny models."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ask_expert_ros.core.inference.engine import EdgeStage, ExpertStage, ResultSource
from ask_expert_ros.core.inference.image_codec import encode_image
from ask_expert_ros.core.inference.library import ExpertLibrary
from ask_expert_ros.core.inference.routing import RoutingConfig
from ask_expert_ros.core.nodes.edge_logic import EdgeLogic, EdgeParams
from ask_expert_ros.core.nodes.expert_logic import ExpertLogic, ExpertParams
from ask_expert_ros.core.nodes.messages import (
    ExpertReply,
    Frame,
    FrameFormat,
    Header,
    ImageData,
    Stamp,
    Status,
)


class FakeClock:
    """Monotonic and wall clocks the test moves by hand (nanoseconds)."""

    def __init__(self) -> None:
        self.now = 1_000_000_000_000

    def __call__(self) -> int:
        return self.now

    def advance_ms(self, ms: float) -> None:
        self.now += int(ms * 1e6)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_edge(
    zoo: Path, clock: FakeClock, tau: float = 1.01, edge_id: str = 'robot1', **kwargs
) -> EdgeLogic:
    library = ExpertLibrary(zoo)
    stage = EdgeStage(library.load_edge(), library.scheme, RoutingConfig(tau=tau, k=2))
    params = EdgeParams(edge_id=edge_id, routing=RoutingConfig(tau=tau, k=2), **kwargs)
    return EdgeLogic(stage, params, monotonic_ns=clock, wall_ns=clock)


def make_expert(zoo: Path, clock: FakeClock, **kwargs) -> ExpertLogic:
    return ExpertLogic(
        ExpertStage(ExpertLibrary(zoo)), ExpertParams(**kwargs), monotonic_ns=clock, wall_ns=clock
    )


def as_frames(pixels: np.ndarray) -> list[Frame]:
    return [Frame(Header(Stamp(100 + i, 7), 'cam'), p) for i, p in enumerate(pixels)]


def test_every_frame_gets_one_result_through_the_expert(zoo, frames, clock) -> None:
    edge = make_edge(zoo, clock)
    expert = make_expert(zoo, clock, max_batch=4, max_wait_ms=1.0)
    step = edge.process(as_frames(frames))
    assert step.results == [] and len(step.requests) == len(frames)
    for request in step.requests:
        assert expert.submit(request) is None
    clock.advance_ms(2)
    replies = expert.poll()
    assert len(replies) == len(frames)
    results = [edge.on_reply(r) for r in replies]
    assert all(r is not None and r.source == ResultSource.EXPERT for r in results)
    stamps = sorted(r.header.stamp.sec for r in results)
    assert stamps == list(range(100, 100 + len(frames)))  # camera stamps carried through
    assert edge.counters.results == edge.counters.frames == len(frames)
    assert edge.pending_count == 0
    for request, reply in zip(
        step.requests, sorted(replies, key=lambda r: r.request_id), strict=True
    ):
        assert reply.expert_key == request.expert_key  # the expert Algorithm 1 chose
        assert 1 <= reply.batch_size <= 4


def test_confident_frames_answered_at_once(zoo, frames, clock) -> None:
    edge = make_edge(zoo, clock, tau=0.0)
    step = edge.process(as_frames(frames))
    assert step.requests == [] and len(step.results) == len(frames)
    assert {r.source for r in step.results} == {ResultSource.EDGE}
    assert edge.counters.accepted == len(frames)


def test_deadline_fallback_and_late_reply_dropped(zoo, frames, clock) -> None:
    edge = make_edge(zoo, clock, deadline_ms=50)
    step = edge.process(as_frames(frames[:3]))
    clock.advance_ms(49)
    assert edge.expire() == []
    clock.advance_ms(1)
    fallbacks = edge.expire()
    assert len(fallbacks) == 3 and {r.source for r in fallbacks} == {ResultSource.FALLBACK}
    assert all(r.reason == 'expert deadline passed' for r in fallbacks)
    late = ExpertReply(
        step.requests[0].header, 'robot1', step.requests[0].request_id, Status.OK, label=1
    )
    assert edge.on_reply(late) is None
    assert edge.counters.late_replies == 1 and edge.counters.results == 3


def test_foreign_replies_never_become_results(zoo, frames, clock) -> None:
    a = make_edge(zoo, clock, edge_id='a')
    step = a.process(as_frames(frames[:1]))
    other = ExpertReply(Header(), 'b', step.requests[0].request_id, Status.OK, label=0)
    assert a.on_reply(other) is None and a.counters.foreign_replies == 1
    assert a.pending_count == 1


def test_error_reply_falls_back(zoo, frames, clock) -> None:
    edge = make_edge(zoo, clock)
    request = edge.process(as_frames(frames[:1])).requests[0]
    reply = ExpertReply(
        request.header, 'robot1', request.request_id, Status.MODEL_ERROR, error='boom'
    )
    result = edge.on_reply(reply)
    assert result.source == ResultSource.FALLBACK and 'MODEL_ERROR: boom' in result.reason
    assert edge.counters.fallback_error == 1


def test_send_failure_falls_back_now(zoo, frames, clock) -> None:
    edge = make_edge(zoo, clock)
    request = edge.process(as_frames(frames[:1])).requests[0]
    result = edge.fail(request.request_id, 'no expert node matched')
    assert result.source == ResultSource.FALLBACK and edge.fail(request.request_id, 'x') is None
    assert edge.counters.fallback_unavailable == 1 and edge.counters.results == 1


def test_bad_frame_and_nan_model_are_invalid_results(zoo, frames, clock) -> None:
    edge = make_edge(zoo, clock)
    assert edge.reject(Header(Stamp(5, 0), 'cam'), 'bad encoding').source == ResultSource.INVALID
    edge.stage.model.model.head.bias.data[:] = float('nan')
    step = edge.process(as_frames(frames[:2]))
    assert [r.source for r in step.results] == [ResultSource.INVALID] * 2
    assert edge.counters.results == edge.counters.frames == 3


def test_failing_edge_model_answers_every_frame_and_the_next_batch_runs(
    zoo, frames, clock
) -> None:
    """A model that raises (here: a head whose weight lost its shape, as a corrupted
    swap would leave it; on a GPU, out of memory) gives 3 INVALID results, not an
    exception that would end the node; once the model is whole, frames route again."""
    edge = make_edge(zoo, clock)
    head = edge.stage.model.model.head
    weight = head.weight.data
    head.weight.data = weight[:, :3].clone()
    step = edge.process(as_frames(frames[:3]))
    assert [r.source for r in step.results] == [ResultSource.INVALID] * 3 and not step.requests
    assert all(r.reason.startswith('edge model failed:') for r in step.results)
    assert edge.counters.model_errors == 3 and edge.counters.results == edge.counters.frames
    head.weight.data = weight
    assert len(edge.process(as_frames(frames[3:5])).requests) == 2  # tau 1.01: all offloaded
    assert edge.counters.frames == 5 and edge.counters.offloaded == 2


def test_a_frame_the_model_cannot_take_spoils_only_itself(zoo, frames, clock) -> None:
    """Frames of one batch: good, two-channel (no model takes that), good. Expected: the
    middle one INVALID (bad_input), the others offloaded as usual (tau 1.01)."""
    edge = make_edge(zoo, clock)
    batch = as_frames(frames[:3])
    batch[1] = Frame(batch[1].header, np.zeros((8, 8, 2), np.uint8))
    step = edge.process(batch)
    assert [r.header for r in step.results] == [batch[1].header]
    assert step.results[0].source == ResultSource.INVALID and 'channels' in step.results[0].reason
    assert [r.header for r in step.requests] == [batch[0].header, batch[2].header]
    assert edge.counters.frames == 3 and edge.counters.bad_input == 1


def model_batch_sizes(edge: EdgeLogic, monkeypatch) -> list[int]:
    """The batch size of every edge model call from now on, in order."""
    sizes: list[int] = []
    run = edge.stage.run

    def recording(batch):
        sizes.append(len(batch))
        return run(batch)

    monkeypatch.setattr(edge.stage, 'run', recording)
    return sizes


def test_a_backlog_runs_in_batches_of_at_most_max_batch(zoo, frames, clock, monkeypatch) -> None:
    """20 frames handed over at once with max_batch 8: the model runs on 8, 8 and 4
    (never a shape above 8, whose per-shape backend state would stay in memory), and
    the step is the one a single batch of 20 gives: 20 requests (tau 1.01) in frame
    order, with the same top-k, since each frame's output does not depend on its batch."""
    whole = make_edge(zoo, clock, max_batch=20).process(as_frames(frames))
    edge = make_edge(zoo, clock, max_batch=8)
    sizes = model_batch_sizes(edge, monkeypatch)
    step = edge.process(as_frames(frames))
    assert sizes == [8, 8, 4]
    assert [r.header for r in step.requests] == [r.header for r in whole.requests]
    assert [r.topk_classes for r in step.requests] == [r.topk_classes for r in whole.requests]
    assert edge.counters.frames == edge.counters.offloaded == 20


def test_edge_params_refuse_a_batch_below_one() -> None:
    with pytest.raises(ValueError, match='max_batch must be >= 1'):
        EdgeParams('robot1', max_batch=0)


def test_warm_up_runs_every_batch_size_once_and_counts_nothing(zoo, clock, monkeypatch) -> None:
    """max_batch 5: the model runs at 1, 2, 3, 4 and 5 frames, then no frame is counted."""
    edge = make_edge(zoo, clock, max_batch=5)
    sizes = model_batch_sizes(edge, monkeypatch)
    edge.warm_up()
    assert sizes == [1, 2, 3, 4, 5]
    assert edge.counters.frames == edge.counters.results == 0


def test_built_edge_is_warmed_up_at_every_batch_size(zoo, monkeypatch) -> None:
    """The node's ``max_batch`` parameter reaches the logic, and configure (which calls
    build_edge_logic) runs the model at every size up to it: 1, 2, 3."""
    from ask_expert_ros.core.nodes.node_config import EDGE_PARAMS, build_edge_logic, resolve

    sizes: list[int] = []
    run = EdgeStage.run

    def recording(self, batch):
        sizes.append(len(batch))
        return run(self, batch)

    monkeypatch.setattr(EdgeStage, 'run', recording)
    logic = build_edge_logic(resolve(EDGE_PARAMS, {'library': str(zoo), 'max_batch': 3}))
    assert logic.params.max_batch == 3 and sizes == [1, 2, 3]


def test_compressed_transport_encodes_jpeg(zoo, frames, clock) -> None:
    edge = make_edge(zoo, clock, transport='compressed')
    request = edge.process(as_frames(frames[:1])).requests[0]
    assert request.image.format == FrameFormat.COMPRESSED
    assert bytes(request.image.data[:2]) == b'\xff\xd8'  # JPEG SOI marker
    expert = make_expert(zoo, clock, max_wait_ms=0)
    assert expert.submit(request) is None and len(expert.poll()) == 1


def test_raw_camera_bytes_forwarded_untouched(zoo, frames, clock) -> None:
    edge = make_edge(zoo, clock)
    h, w, enc, step_, data = encode_image(frames[0])
    source = ImageData(FrameFormat.RAW, data, h, w, enc, step_)
    request = edge.process([Frame(Header(), frames[0], source)]).requests[0]
    assert request.image is source


def test_params_swap_at_runtime(zoo, frames, clock) -> None:
    edge = make_edge(zoo, clock, tau=1.01)
    assert len(edge.process(as_frames(frames[:4])).requests) == 4
    edge.params = replace(edge.params, routing=RoutingConfig(tau=0.0))
    assert edge.process(as_frames(frames[:4])).requests == []


# -- expert side --------------------------------------------------------------------------


def offload_all(zoo, frames, clock, n=None):
    return make_edge(zoo, clock).process(as_frames(frames[:n] if n else frames)).requests


def test_micro_batching_respects_max_batch_and_max_wait(zoo, frames, clock) -> None:
    requests = offload_all(zoo, frames, clock)
    key = requests[0].expert_key
    same_key = [r for r in requests if r.expert_key == key]
    expert = make_expert(zoo, clock, max_batch=2, max_wait_ms=10)
    expert.submit(same_key[0])
    assert expert.poll() == []  # one request, not full, not waited long enough
    assert expert.next_due_ns() == clock.now + 10_000_000
    clock.advance_ms(10)
    replies = expert.poll()
    assert [r.request_id for r in replies] == [same_key[0].request_id]
    assert replies[0].queue_ms == pytest.approx(10.0)


def test_one_batch_per_poll_oldest_key_first_and_a_full_queue_is_due_now(
    zoo, frames, clock
) -> None:
    """max_batch 2, max_wait 10 ms. Key A gets 2 requests at t=0 (full: due at once),
    key B 1 request at t=0 and A 1 more at t=1 ms. poll(max_batches=1) at t=1 ms runs A's
    full pair only; B is due at t=10 ms, A's third at t=11 ms. The nodes publish each
    batch's replies before the next, so a backlog never holds back computed replies."""
    requests = offload_all(zoo, frames, clock)
    by_key: dict = {}
    for request in requests:
        by_key.setdefault(request.expert_key, []).append(request)
    (key_a, a), (_, b) = sorted(by_key.items(), key=lambda kv: -len(kv[1]))[:2]
    assert len(a) >= 3, 'the fixture routes 3 or more frames to one key'
    expert = make_expert(zoo, clock, max_batch=2, max_wait_ms=10)
    start = clock.now
    for request in (a[0], a[1], b[0]):
        expert.submit(request)
    assert expert.next_due_ns() == start  # A is full: due now, not after max_wait
    clock.advance_ms(1)
    expert.submit(a[2])
    first = expert.poll(max_batches=1)
    assert [r.request_id for r in first] == [a[0].request_id, a[1].request_id]
    assert expert.poll(max_batches=1) == [] and expert.next_due_ns() == start + 10_000_000
    clock.advance_ms(9)
    assert [r.request_id for r in expert.poll(max_batches=1)] == [b[0].request_id]
    assert expert.poll(max_batches=1) == []  # A's third waits until t = 11 ms
    clock.advance_ms(1)
    assert [r.request_id for r in expert.poll(max_batches=1)] == [a[2].request_id]
    assert expert.queued == 0 and {r.expert_key for r in first} == {key_a}


def test_batching_never_reorders_or_loses(zoo, frames, clock) -> None:
    requests = offload_all(zoo, frames, clock)
    expert = make_expert(zoo, clock, max_batch=3, max_wait_ms=5)
    for request in requests:
        expert.submit(request)
    replies = expert.poll(flush=True)
    assert sorted(r.request_id for r in replies) == sorted(r.request_id for r in requests)
    by_key: dict = {}
    for reply in replies:
        by_key.setdefault(reply.expert_key, []).append(reply.request_id)
        assert reply.batch_size <= 3 and reply.status == Status.OK
    for ids in by_key.values():
        assert ids == sorted(ids)  # FIFO within a key
    assert expert.counters.answered == len(requests) and expert.queued == 0


def test_bad_requests_answered_with_a_status(zoo, frames, clock) -> None:
    request = offload_all(zoo, frames, clock, n=1)[0]
    expert = make_expert(zoo, clock)
    cases = {
        Status.BAD_REQUEST: [
            replace(request, partition='other'),
            replace(request, expert_key=(3, 1)),
            replace(request, expert_key=(9,)),
            replace(request, topk_scores=(0.5,)),
        ],
        Status.BAD_FRAME: [
            replace(request, image=replace(request.image, encoding='yuv422')),
            replace(request, image=replace(request.image, data=b'\x00' * 3)),
            replace(request, image=ImageData(FrameFormat.COMPRESSED, b'nope')),
        ],
    }
    for status, bad in cases.items():
        for r in bad:
            reply = expert.submit(r)
            assert reply is not None and reply.status == status, r
            assert reply.error and reply.request_id == request.request_id
    assert expert.queued == 0 and expert.counters.requests == 7


def test_unknown_key_and_expired(tmp_path, zoo, frames, clock, scheme) -> None:
    from ask_expert_ros.core.inference.library import write_manifest

    full = ExpertLibrary(zoo)
    partial = write_manifest(tmp_path / 'p', scheme, 2, {(1,): full.path_of((1,))})
    expert = ExpertLogic(
        ExpertStage(ExpertLibrary(partial)),
        ExpertParams(max_wait_ms=0),
        monotonic_ns=clock,
        wall_ns=clock,
    )
    request = offload_all(zoo, frames, clock, n=1)[0]
    reply = expert.submit(replace(request, expert_key=(2, 3)))
    assert reply.status == Status.UNKNOWN_KEY and '{2,3}' in reply.error
    ok = replace(request, expert_key=(1,), deadline=Stamp.from_ns(clock.now + 1_000_000))
    assert expert.submit(ok) is None
    clock.advance_ms(2)
    assert [r.status for r in expert.poll()] == [Status.EXPIRED]


# -- parameters ---------------------------------------------------------------------------


def test_shipped_params_files_resolve() -> None:
    from ask_expert_ros.core.inference.taxonomy import config_dir
    from ask_expert_ros.core.nodes.node_config import (
        EDGE_PARAMS,
        EXPERT_PARAMS,
        edge_params,
        expert_params,
        load_params_file,
        resolve,
    )

    edge_values = resolve(EDGE_PARAMS, load_params_file(config_dir() / 'edge.yaml', 'edge'))
    assert {s.name for s in EDGE_PARAMS} == set(edge_values)
    params = edge_params(edge_values)
    assert params.routing.tau == 0.8 and params.edge_id  # hostname-pid default
    expert_values = resolve(
        EXPERT_PARAMS, load_params_file(config_dir() / 'expert.yaml', 'expert')
    )
    assert expert_params(expert_values).max_batch == 8


@pytest.mark.parametrize(
    ('values', 'error'),
    [
        ({'tau': -1.0}, 'tau must be >= 0'),
        ({'k': 1.5}, 'k must be an integer'),
        ({'confidence': 'vibes'}, 'confidence must be one of'),
        ({'offload': 'yes'}, 'true or false'),
        ({'max_batch': 0}, 'max_batch must be >= 1'),
        ({'tau_typo': 1}, 'unknown parameters'),
    ],
)
def test_bad_param_values_say_why(values, error) -> None:
    from ask_expert_ros.core.nodes.node_config import EDGE_PARAMS, resolve

    with pytest.raises(ValueError, match=error):
        resolve(EDGE_PARAMS, values)
