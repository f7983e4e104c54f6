"""Attention-aware patch offload: selection, the token-subset forward, mosaics, the edge's
patch requests and the expert's checks of them (real tiny models, no transport)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ask_expert_ros.core.inference.backends import Backend, TorchBackend
from ask_expert_ros.core.inference.engine import (
    CoInferenceEngine,
    EdgeStage,
    ExpertStage,
    ResultSource,
)
from ask_expert_ros.core.inference.image_codec import encode_image
from ask_expert_ros.core.inference.library import ExpertLibrary
from ask_expert_ros.core.inference.models import LoadedModel, ModelConfig, create_model
from ask_expert_ros.core.inference.patches import (
    PatchRequestError,
    PatchSelection,
    centre_order,
    check_layout,
    forward_tokens,
    forward_with_cls_attention,
    frame_to_patches,
    keep_count,
    mosaic_shape,
    pack_mosaic,
    resample_scores,
    select_patches,
    unpack_mosaic,
)
from ask_expert_ros.core.inference.routing import RoutingConfig
from ask_expert_ros.core.nodes.edge_logic import EdgeLogic, EdgeParams
from ask_expert_ros.core.nodes.expert_logic import ExpertLogic, ExpertParams
from ask_expert_ros.core.nodes.messages import (
    Frame,
    FrameFormat,
    Header,
    ImageData,
    PatchLayout,
    Stamp,
    Status,
)


def _vit(img_size: int = 32, patch_size: int = 8, depth: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    config = ModelConfig(
        'deit_3h', tuple('abcd'), img_size=img_size, patch_size=patch_size, depth=depth
    )
    return create_model(config).eval(), config


def _as_patches(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, N, C, p, p], row-major."""
    b, c, h, w = x.shape
    g = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return g.reshape(b, (h // p) * (w // p), c, p, p)


# -- selection ---------------------------------------------------------------------------


def test_keep_ratio_takes_the_top_patches_in_grid_order() -> None:
    """A 2x3 grid with scores (0.05, 0.4, 0.1, 0.3, 0.05, 0.1): rho = 0.5 keeps
    ceil(3) = 3 patches, the top three 1 (0.4), 3 (0.3) and then the tie 2/5 (0.1) goes
    to the lower index 2 -> [1, 2, 3] in ascending order."""
    scores = torch.tensor([[0.05, 0.4, 0.1, 0.3, 0.05, 0.1]])
    (chosen,) = select_patches(scores, PatchSelection(keep_ratio=0.5), (2, 3))
    assert chosen.tolist() == [1, 2, 3]


def test_attention_mass_keeps_the_fewest_reaching_m() -> None:
    """Scores 0.4, 0.3, 0.1, 0.1, 0.05, 0.05 (patches 1, 3, 2, 5, 0, 4): m = 0.7 is
    reached by {1, 3} exactly; m = 0.75 needs a third patch (2); m = 1 takes all six."""
    scores = torch.tensor([[0.05, 0.4, 0.1, 0.3, 0.05, 0.1]])
    grid = (2, 3)

    def pick(m):
        return select_patches(scores, PatchSelection(keep_ratio=None, attention_mass=m), grid)

    assert pick(0.7)[0].tolist() == [1, 3]
    assert pick(0.75)[0].tolist() == [1, 2, 3]
    assert pick(1.0)[0].tolist() == [0, 1, 2, 3, 4, 5]
    assert pick(0.01)[0].tolist() == [1]


def test_mass_selection_varies_per_frame() -> None:
    """One peaked and one flat frame: m = 0.5 keeps 1 patch of the first, 2 of the second."""
    scores = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]])
    sel = select_patches(scores, PatchSelection(keep_ratio=None, attention_mass=0.5), (2, 2))
    assert [s.tolist() for s in sel] == [[0], [0, 1]]


def test_baselines_random_and_centre() -> None:
    """Random: ceil(rho N) distinct ascending indices, other per frame, reproducible per
    seed. Centre on a 4x4 grid: the four middle patches 5, 6, 9, 10 come first."""
    picks = select_patches(
        None, PatchSelection('random', keep_ratio=0.25), (4, 4), np.random.default_rng(3), 50
    )
    assert all(len(p) == 4 and len(set(p)) == 4 and list(p) == sorted(p) for p in picks)
    assert len({tuple(p) for p in picks}) > 10
    again = select_patches(
        None, PatchSelection('random', keep_ratio=0.25), (4, 4), np.random.default_rng(3), 50
    )
    assert [p.tolist() for p in picks] == [p.tolist() for p in again]
    assert sorted(centre_order((4, 4))[:4].tolist()) == [5, 6, 9, 10]
    (centre,) = select_patches(None, PatchSelection('centre', keep_ratio=0.25), (4, 4), batch=1)
    assert centre.tolist() == [5, 6, 9, 10]


@pytest.mark.parametrize(
    'kwargs',
    [
        {'keep_ratio': 0.0},
        {'keep_ratio': 1.5},
        {'keep_ratio': None},
        {'keep_ratio': 0.3, 'attention_mass': 0.9},
        {'method': 'random', 'keep_ratio': None, 'attention_mass': 0.9},
        {'method': 'best'},
        {'source': 'first'},
    ],
)
def test_selection_config_is_validated(kwargs) -> None:
    with pytest.raises(ValueError):
        PatchSelection(**kwargs)


def test_keep_count_rounds_up() -> None:
    """ceil(0.3 * 10) = 3 (not 4 from float error), ceil(0.3 * 196) = 59, never 0."""
    assert keep_count(10, 0.3) == 3
    assert keep_count(196, 0.3) == 59
    assert keep_count(16, 0.01) == 1


def test_scores_resample_to_another_grid() -> None:
    """A 4x4 map with all mass in the top-left 2x2 block -> 2x2 grid: all in patch 0."""
    scores = torch.zeros(1, 16)
    scores[0, [0, 1, 4, 5]] = 0.25
    out = resample_scores(scores, (4, 4), (2, 2))
    assert out[0].tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0])


# -- forward passes ------------------------------------------------------------------------


@pytest.mark.parametrize('source', ['last', 'rollout'])
def test_forward_with_attention_gives_the_models_logits(source) -> None:
    """The unrolled forward equals timm's; scores are a distribution over the 16 patches."""
    model, _ = _vit()
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        logits, scores = forward_with_cls_attention(model, x, source)
        ref = model(x)
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-5)
    assert scores.shape == (3, 16)
    torch.testing.assert_close(scores.sum(1), torch.ones(3))
    assert bool((scores >= 0).all())


def test_last_block_scores_are_the_cls_row_mean_over_heads() -> None:
    """Worked out by hand from the last block's qkv: softmax(q_cls k^T / sqrt(d)), mean
    over the 3 heads, patch columns only, renormalised."""
    model, _ = _vit(depth=1)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        _, scores = forward_with_cls_attention(model, x, 'last')
        tokens = model.norm_pre(model._pos_embed(model.patch_embed(x)))
        block = model.blocks[0]
        qkv = block.attn.qkv(block.norm1(tokens)).reshape(2, 17, 3, 3, 64).permute(2, 0, 3, 1, 4)
        q, k = qkv[0], qkv[1]
        attn = ((q @ k.transpose(-2, -1)) * 64**-0.5).softmax(-1)
        row = attn[:, :, 0, 1:].mean(1)
        row = row / row.sum(1, keepdim=True)
    torch.testing.assert_close(scores, row, atol=1e-6, rtol=1e-5)


def test_token_subset_equals_full_forward_with_every_patch() -> None:
    """All 16 patches in order through forward_tokens == model(x)."""
    model, _ = _vit()
    x = torch.randn(2, 3, 32, 32)
    idx = torch.arange(16).expand(2, 16)
    with torch.inference_mode():
        torch.testing.assert_close(
            forward_tokens(model, _as_patches(x, 8), idx), model(x), atol=1e-5, rtol=1e-5
        )


def test_padded_batch_equals_each_request_alone() -> None:
    """Rows with 16, 5 and 9 patches padded to 16 with a mask give each row's own logits."""
    model, _ = _vit()
    x = torch.randn(3, 3, 32, 32)
    patches = _as_patches(x, 8)
    rng = np.random.default_rng(0)
    subsets = [np.arange(16), np.sort(rng.permutation(16)[:5]), np.sort(rng.permutation(16)[:9])]
    padded = torch.zeros(3, 16, 3, 8, 8)
    idx = torch.zeros(3, 16, dtype=torch.long)
    for row, subset in enumerate(subsets):
        padded[row, : len(subset)] = patches[row, subset]
        idx[row, : len(subset)] = torch.from_numpy(subset)
    lengths = torch.tensor([len(s) for s in subsets])
    with torch.inference_mode():
        together = forward_tokens(model, padded, idx, lengths)
        for row, subset in enumerate(subsets):
            alone = forward_tokens(
                model, patches[row : row + 1, subset], torch.from_numpy(subset)[None]
            )
            torch.testing.assert_close(together[row : row + 1], alone, atol=1e-5, rtol=1e-5)


def test_whole_image_backends_fill_missing_patches_with_mean_grey() -> None:
    """The default run_tokens (ONNX Runtime, TensorRT) puts the patches back in place: with
    every patch it equals the full forward; with a subset, the model on an image whose
    other patches are 0 (the normalised mean)."""
    model, config = _vit()
    backend = TorchBackend(LoadedModel(model, config))
    x = torch.randn(1, 3, 32, 32)
    patches = _as_patches(x, 8)
    every = Backend.run_tokens(backend, patches, torch.arange(16)[None])
    torch.testing.assert_close(every, backend.run_tensor(x), atol=1e-5, rtol=1e-5)
    keep = torch.tensor([[0, 5, 15]])
    filled = _as_patches(torch.zeros_like(x), 8)
    filled[0, keep[0]] = patches[0, keep[0]]
    image = filled.reshape(1, 4, 4, 3, 8, 8).permute(0, 3, 1, 4, 2, 5).reshape(1, 3, 32, 32)
    torch.testing.assert_close(
        Backend.run_tokens(backend, patches[:, keep[0]], keep),
        backend.run_tensor(image),
        atol=1e-5,
        rtol=1e-5,
    )


# -- pixels --------------------------------------------------------------------------------


@pytest.mark.parametrize('count', [1, 3, 4, 5, 6, 16])
def test_mosaic_round_trip(count) -> None:
    """n patches -> a mosaic of exactly n tiles, as square as n allows -> the same patches."""
    frame = np.random.default_rng(count).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    patches = frame_to_patches(frame, 8)
    assert patches.shape == (16, 8, 8, 3)
    np.testing.assert_array_equal(patches[5], frame[8:16, 8:16])
    chosen = patches[np.arange(count)]
    mosaic = pack_mosaic(chosen)
    rows, cols = mosaic_shape(count)
    assert mosaic.shape == (rows * 8, cols * 8, 3)
    np.testing.assert_array_equal(unpack_mosaic(mosaic, 8, count), chosen)


def test_mosaic_has_no_unused_tile() -> None:
    """Every tile carries a patch; the shape is the squarest that divides the count."""
    shapes = {n: mosaic_shape(n) for n in range(1, 200)}
    assert all(r * c == n and r <= c for n, (r, c) in shapes.items())
    assert shapes[49] == (7, 7) and shapes[60] == (6, 10) and shapes[59] == (1, 59)
    assert shapes[12] == (3, 4) and shapes[98] == (7, 14)


def test_mosaic_of_wrong_size_is_refused() -> None:
    mosaic = pack_mosaic(np.zeros((6, 4, 4), np.uint8))  # 2 x 3 tiles
    with pytest.raises(PatchRequestError, match='does not hold'):
        unpack_mosaic(mosaic, 4, 5)
    with pytest.raises(PatchRequestError, match='whole number'):
        unpack_mosaic(mosaic[:-1], 4, 6)


# -- the nodes' logic ------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000_000_000

    def __call__(self) -> int:
        return self.now


def _edge(zoo: Path, clock: Clock, **kwargs) -> EdgeLogic:
    library = ExpertLibrary(zoo)
    routing = RoutingConfig(tau=1.01, k=2)
    stage = EdgeStage(library.load_edge(), library.scheme, routing)
    params = EdgeParams(edge_id='robot1', routing=routing, **kwargs)
    return EdgeLogic(
        stage, params, monotonic_ns=clock, wall_ns=clock, expert_input=library.input_config()
    )


def _expert(zoo: Path, clock: Clock) -> ExpertLogic:
    return ExpertLogic(
        ExpertStage(ExpertLibrary(zoo)), ExpertParams(), monotonic_ns=clock, wall_ns=clock
    )


def _camera_frames(n: int) -> list[Frame]:
    """Camera-sized 48x64 RGB frames (the tiny experts take 8x8 grey)."""
    rng = np.random.default_rng(1)
    return [
        Frame(Header(Stamp(i, 0), 'cam'), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
        for i in range(n)
    ]


@pytest.mark.parametrize('transport', ['raw', 'compressed'])
def test_frame_mode_sends_the_experts_resolution(zoo, transport) -> None:
    """A 64x48 RGB camera frame travels as the experts' 8x8 grey input (64 raw bytes),
    not as its own 9216 bytes."""
    edge = _edge(zoo, Clock(), transport=transport)
    step = edge.process(_camera_frames(3))
    assert len(step.requests) == 3
    for request in step.requests:
        assert request.patches is None
        if transport == 'raw':
            assert (request.image.height, request.image.width) == (8, 8)
            assert request.image.encoding == 'mono8' and len(request.image.data) == 64
        else:
            assert request.image.format == FrameFormat.COMPRESSED


@pytest.mark.parametrize('transport', ['raw', 'compressed'])
def test_patch_mode_answers_every_frame_through_the_expert(zoo, transport) -> None:
    """rho = 0.5 of the experts' 2x2 grid: 2 patches of 4x4 per request (a 1x2 mosaic, 32
    raw bytes); the expert answers each, and every frame gets one EXPERT result that
    names the patches sent."""
    clock = Clock()
    edge = _edge(
        zoo, clock, offload_mode='patches', transport=transport,
        patches=PatchSelection(keep_ratio=0.5),
    )  # fmt: skip
    expert = _expert(zoo, clock)
    step = edge.process(_camera_frames(4))
    assert len(step.requests) == 4 and not step.results
    for request in step.requests:
        assert request.patches is not None
        assert (request.patches.patch_size, request.patches.grid) == (4, (2, 2))
        assert len(request.patches.indices) == 2
        if transport == 'raw':
            assert request.image.format == FrameFormat.PATCHES_RAW
            assert (request.image.height, request.image.width) == (4, 8)
        else:
            assert request.image.format == FrameFormat.PATCHES_COMPRESSED
        assert expert.submit(request) is None
    replies = expert.poll(flush=True)
    assert [r.status for r in replies] == [Status.OK] * 4
    results = [edge.on_reply(r) for r in replies]
    assert all(r is not None and r.source == ResultSource.EXPERT for r in results)
    assert [len(r.sent_patches) for r in results] == [2, 2, 2, 2]
    assert edge.counters.results == edge.counters.frames == 4


def test_patch_mode_with_every_patch_reproduces_frame_mode(zoo) -> None:
    """rho = 1 sends all 4 patches: the expert's label and score equal frame mode's."""
    clock = Clock()
    frames = _camera_frames(5)
    answers = {}
    for mode in ('frame', 'patches'):
        edge = _edge(zoo, clock, offload_mode=mode, patches=PatchSelection(keep_ratio=1.0))
        expert = _expert(zoo, clock)
        for request in edge.process(frames).requests:
            assert expert.submit(request) is None
        answers[mode] = [(r.label, r.score) for r in expert.poll(flush=True)]
    assert [a[0] for a in answers['patches']] == [a[0] for a in answers['frame']]
    np.testing.assert_allclose(
        [a[1] for a in answers['patches']], [a[1] for a in answers['frame']], atol=1e-5
    )


def test_engine_patch_mode_rho_one_equals_frame_mode(zoo, frames) -> None:
    """In process (the benchmarks' path): rho = 1 gives frame mode's labels."""
    library = ExpertLibrary(zoo)
    routing = RoutingConfig(tau=1.01, k=2)
    edge = EdgeStage(library.load_edge(), library.scheme, routing)
    whole = CoInferenceEngine(edge, ExpertStage(library)).infer(frames)
    patched = CoInferenceEngine(
        edge, ExpertStage(library), patches=PatchSelection(keep_ratio=1.0)
    ).infer(frames)
    np.testing.assert_array_equal(patched.labels, whole.labels)
    assert (patched.sources == ResultSource.EXPERT).all()


def _patch_request(zoo: Path, clock: Clock):
    edge = _edge(zoo, clock, offload_mode='patches', patches=PatchSelection(keep_ratio=0.5))
    return edge, edge.process(_camera_frames(1)).requests[0]


def _mosaic(n: int, p: int = 4) -> ImageData:
    h, w, enc, step, raw = encode_image(pack_mosaic(np.zeros((n, p, p), np.uint8)))
    return ImageData(FrameFormat.PATCHES_RAW, raw, h, w, enc, step)


@pytest.mark.parametrize(
    ('change', 'reason'),
    [
        (lambda r: replace(r, patches=replace(r.patches, indices=(1, 4))), 'outside the grid'),
        (lambda r: replace(r, patches=replace(r.patches, indices=(2, 2))), 'duplicate'),
        (lambda r: replace(r, patches=replace(r.patches, indices=(3, 1))), 'ascending'),
        (lambda r: replace(r, patches=replace(r.patches, indices=())), 'at least one'),
        (lambda r: replace(r, patches=replace(r.patches, patch_size=2)), 'patch size'),
        (lambda r: replace(r, patches=replace(r.patches, grid_rows=3)), 'grid'),
        (lambda r: replace(r, image=_mosaic(3)), 'does not hold'),
        (lambda r: replace(r, patches=None), 'without a patch layout'),
    ],
    ids=['out-of-grid', 'duplicate', 'unordered', 'empty', 'patch-size', 'grid', 'pixels', 'none'],
)
def test_malformed_patch_request_is_bad_request_and_edge_falls_back(zoo, change, reason) -> None:
    """Each inconsistency -> STATUS_BAD_REQUEST with the reason, counted; the edge then
    publishes its own Top-1 as the frame's one result (FALLBACK)."""
    clock = Clock()
    edge, request = _patch_request(zoo, clock)
    expert = _expert(zoo, clock)
    reply = expert.submit(change(request))
    assert reply is not None and reply.status == Status.BAD_REQUEST
    assert reason in reply.error
    assert expert.counters.bad_request == 1 and expert.queued == 0
    result = edge.on_reply(reply)
    assert result is not None and result.source == ResultSource.FALLBACK
    assert edge.counters.results == edge.counters.frames == 1


def test_corrupt_compressed_mosaic_is_bad_frame(zoo) -> None:
    clock = Clock()
    _, request = _patch_request(zoo, clock)
    broken = ImageData(FrameFormat.PATCHES_COMPRESSED, b'not a jpeg', encoding='jpeg')
    reply = _expert(zoo, clock).submit(replace(request, image=broken))
    assert reply is not None and reply.status == Status.BAD_FRAME


def test_mixed_batch_of_frames_and_patches_answers_all_in_order(zoo) -> None:
    """One key's queue holding full-frame and patch requests: one reply each, FIFO."""
    clock = Clock()
    frame_edge = _edge(zoo, clock)
    patch_edge = _edge(zoo, clock, offload_mode='patches', patches=PatchSelection(keep_ratio=0.25))
    frames = _camera_frames(1)
    requests = [frame_edge.process(frames).requests[0], patch_edge.process(frames).requests[0]]
    requests[1] = replace(requests[1], request_id=99)
    expert = _expert(zoo, clock)
    for request in requests:
        assert expert.submit(request) is None
    replies = expert.poll(flush=True)
    assert [r.request_id for r in replies] == [requests[0].request_id, 99]
    assert all(r.status == Status.OK for r in replies)


def test_check_layout_accepts_a_good_layout() -> None:
    layout = PatchLayout(4, 2, 2, (0, 3))
    idx = check_layout(layout.indices, layout.grid, layout.patch_size, (2, 2), 4)
    assert idx.tolist() == [0, 3]
