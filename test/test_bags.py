"""rosbag2 in and out, the offline bag benchmark and its plots, and a short live replay.

Real parts throughout: bags written and read with ``rosbags`` in both storage
formats, real (tiny, random-weight) torch models, the real planner and device
profiles, real Cyclone DDS between two processes for ``--live``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config
from rosbags.rosbag2 import StoragePlugin, Writer

from ask_expert_ros.bags.bench import bench_bag, live_bench
from ask_expert_ros.bags.reader import BagError, read_bag
from ask_expert_ros.bags.types import COMPRESSED_IMAGE, IMAGE, typestore
from ask_expert_ros.bags.writer import BagWriteConfig, make_bag
from ask_expert_ros.cli import main
from ask_expert_ros.core.data import digits
from ask_expert_ros.core.evaluation.bench_plots import PLOT_FILES, figures
from ask_expert_ros.core.evaluation.benchmark import SCENARIOS, BenchConfig, offload_configs
from ask_expert_ros.core.evaluation.evaluation import tau_sweep
from ask_expert_ros.core.inference.engine import CoInferenceEngine, EdgeStage, ExpertStage
from ask_expert_ros.core.inference.image_codec import decode_compressed, encode_compressed
from ask_expert_ros.core.inference.library import ExpertLibrary, write_manifest
from ask_expert_ros.core.inference.models import create_model, save_model
from ask_expert_ros.core.inference.patches import PatchSelection
from ask_expert_ros.core.inference.routing import RoutingConfig
from ask_expert_ros.core.inference.taxonomy import key_slug, resolve_scheme
from ask_expert_ros.core.planning.devices import load_profile

N = 30
# random tiny models on 10 classes are unsure: max softmax ~0.1-0.2. tau = 1 offloads
# every frame, tau = 0 none; the two in between offload some.
TAUS = (1.0, 0.15, 0.13, 0.0)


@pytest.fixture(scope='module')
def digits_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits_s4 zoo of random tiny models: edge (deit_3h), generalist and experts (deit_4h)."""
    out = tmp_path_factory.mktemp('zoo')
    scheme = resolve_scheme('digits_s4')
    torch.manual_seed(0)
    edge_cfg = tiny_config(scheme)
    edge = save_model(create_model(edge_cfg), edge_cfg, out / 'edge.safetensors')
    gen_cfg = tiny_config(scheme, None, 'deit_4h')
    gen = save_model(create_model(gen_cfg), gen_cfg, out / 'generalist.safetensors')
    experts = {}
    for key in scheme.expert_keys(2):
        cfg = tiny_config(scheme, key, 'deit_4h')
        experts[key] = save_model(create_model(cfg), cfg, out / f'expert_{key_slug(key)}')
    return write_manifest(out, scheme, 2, experts, edge=edge, generalist=gen)


@pytest.fixture(scope='module')
def data():
    return digits()


def _engines(zoo: Path) -> tuple[CoInferenceEngine, CoInferenceEngine]:
    library = ExpertLibrary(zoo)
    routing = RoutingConfig(tau=1.0, k=2)
    edge = EdgeStage(library.load_edge(), library.scheme, routing)
    generalist = CoInferenceEngine(
        EdgeStage(edge.model, library.scheme, routing), ExpertStage(library.generalist_library())
    )
    return CoInferenceEngine(edge, ExpertStage(library)), generalist


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_make_bag_then_bench_matches_the_engine(
    storage: str, digits_zoo: Path, data, tmp_path: Path
) -> None:
    """make-bag -> bench (both CLI) reports what the engine computes on the same frames.

    Worked cost example: at tau = 0 nothing is offloaded, so the planner's latency is
    the orin_nano profile's deit_3h latency at B = 10 and the energy per frame is its
    busy power times that over B; no bytes go on the link.
    """
    bag, out = tmp_path / 'bag', tmp_path / 'out'
    assert main(['make-bag', '--out', str(bag), '--storage', storage, '--limit', str(N)]) == 0
    meta = (bag / 'metadata.yaml').read_text()
    assert ('mcap' if storage == 'mcap' else 'sqlite3') in meta
    taus = ','.join(map(str, TAUS))
    assert main(['bench', '--bag', str(bag), '--models', str(digits_zoo), '--out', str(out),
                 '--tau', taus]) == 0  # fmt: skip
    report = json.loads((out / 'report.json').read_text())
    assert report['metric'] == 'accuracy' and report['frames'] == N
    assert report['bag']['labelled_frames'] == N and report['bag']['skipped'] == 0

    engine, generalist = _engines(digits_zoo)
    frames, labels = data.test_images[:N], data.test_labels[:N]
    expected = tau_sweep(engine, frames, labels, TAUS, 10, generalist=generalist)
    for got, want in zip(report['sweep'], expected['sweep'], strict=True):
        for name in ('tau', 'offloaded', 'offload_ratio', 'co_inference_accuracy',
                     'edge_only_accuracy', 'expert_only_accuracy', 'near_edge_only_accuracy',
                     'generalist_co_inference_accuracy'):  # fmt: skip
            assert got[name] == want[name], name
    alphas = [row['offload_ratio'] for row in report['sweep']]
    assert alphas[0] == 1.0 and alphas[-1] == 0.0 and 0 < alphas[1] < 1  # a real sweep
    assert report['series']['offload_ratio'] == alphas
    assert report['series']['accuracy']['specialist_co_inference'] == [
        row['co_inference_accuracy'] for row in expected['sweep']
    ]

    # bytes: a mono8 8x8 frame (64 bytes) plus header, Top-k and key in CDR
    size = report['request_bytes']
    assert 64 + 100 < size['min'] <= size['max'] < 64 + 400
    first, last = report['sweep'][0], report['sweep'][-1]
    assert first['bytes_offloaded_per_frame'] == pytest.approx(size['mean'])
    assert last['bytes_offloaded_per_frame'] == 0.0
    nano = load_profile('orin_nano')
    assert last['latency_ms'] == pytest.approx(nano.latency('deit_3h', 10))
    assert last['energy_j'] == pytest.approx(nano.power_w['busy'] * nano.latency('deit_3h', 10)
                                             / 1e3 / 10)  # fmt: skip
    assert last['comm_ms'] == 0.0 and first['comm_ms'] > 5.0  # RTT plus transfer
    latencies = [row['latency_ms'] for row in report['sweep']]
    assert latencies == sorted(latencies, reverse=True)  # less offload, less time


def test_plots_exist_and_show_the_report_series(digits_zoo: Path, data, tmp_path: Path) -> None:
    bag = make_bag(tmp_path / 'bag', data.test_images[:N], data.test_labels[:N],
                   data.class_names)  # fmt: skip
    report = bench_bag(bag, digits_zoo, BenchConfig(taus=TAUS), tmp_path / 'out')
    for name in PLOT_FILES:
        path = tmp_path / 'out' / f'{name}.png'
        assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b'\x89PNG'
    assert set(report['series']['accuracy']) == set(SCENARIOS)
    assert set(report['series']['normalised_latency']) == {
        'edge_only', 'edge_only_generalist', 'near_edge_only', 'co_inference'
    }  # fmt: skip
    # Fig. 5 normalises to the expert-sized generalist on the edge device
    assert report['series']['normalised_latency']['edge_only_generalist'] == [1.0] * len(TAUS)
    figs = figures(report)
    try:
        lines = {ln.get_label(): ln for ln in figs['accuracy_vs_tau'].axes[0].get_lines()}
        assert set(lines) == set(SCENARIOS)
        spec = lines['specialist_co_inference']
        assert list(spec.get_xdata()) == list(TAUS)
        assert list(spec.get_ydata()) == pytest.approx(
            [100 * v for v in report['series']['accuracy']['specialist_co_inference']]
        )
        pareto = {ln.get_label() for ln in figs['pareto'].axes[0].get_lines()}
        assert {'pareto_front', 'specialist_co_inference', 'edge_only'} <= pareto
        ratios = {ln.get_label() for ln in figs['efficiency_ratios'].axes[1].get_lines()}
        assert ratios == {'specialist_co_inference', 'generalist_co_inference', 'near_edge_only'}
    finally:
        import matplotlib.pyplot as plt

        for fig in figs.values():
            plt.close(fig)
    # every front point is undominated, and the cheapest point is on it
    points = report['pareto']
    front = [p for p in points if p['on_latency_front']]
    cheapest = min(points, key=lambda p: p['latency'])
    assert cheapest['on_latency_front']
    for p in front:
        assert not any(q['latency'] < p['latency'] and q['accuracy'] > p['accuracy']
                       for q in points)  # fmt: skip


def test_bench_sweeps_patch_offload_next_to_frame_mode(
    digits_zoo: Path, data, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 24x24 rgb8 camera (the digits x3) before an 8x8 one-channel zoo with 4-pixel
    patches (a 2x2 grid). Requests are built as the edge builds them:

    * frame mode sends the 8x8 mono8 frame the expert sees: 64 pixel bytes, not the
      camera's 24·24·3 = 1,728, plus header, Top-k and key;
    * patch mode at rho 0.5 sends ceil(0.5·4) = 2 patches, a 1x2 mosaic of 2·16 = 32
      bytes plus 2 uint16 indices: 64 - 32 - 4 = 28 bytes less than frame mode (give or
      take the CDR alignment of the index sequence).

    Each configuration's accuracy is the in-process engine's with that selection.
    """
    images = np.repeat(np.repeat(data.test_images[:N], 3, axis=1), 3, axis=2)
    camera = np.stack([images] * 3, axis=-1)
    bag = make_bag(tmp_path / 'bag', camera, data.test_labels[:N], data.class_names)
    out = tmp_path / 'out'
    taus = (1.0, 0.13)
    assert main(['bench', '--bag', str(bag), '--models', str(digits_zoo), '--out', str(out),
                 '--tau', '1.0,0.13', '--offload', 'frame,patches', '--keep-ratio', '0.5',
                 '--selection', 'attention,random']) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert 'patches attention rho=0.5' in printed and 'patches random rho=0.5' in printed
    report = json.loads((out / 'report.json').read_text())
    labels = ['frame', 'patches attention rho=0.5', 'patches random rho=0.5']
    rows = report['sweep']
    assert [(r['offload_label'], r['tau']) for r in rows] == [(x, t) for x in labels for t in taus]
    assert [o['offload_label'] for o in report['offloads']] == labels
    by = {(r['offload_label'], r['tau']): r for r in rows}
    frame_bytes = by['frame', 1.0]['request_bytes_per_offloaded_frame']
    assert 64 + 100 < frame_bytes < 64 + 400  # the expert's 8x8, not the camera's 1,728
    assert report['offload']['offload'] == 'frame' and report['offload']['transport'] == 'raw'
    for label in labels[1:]:
        row = by[label, 1.0]
        assert row['offload'] == 'patches' and row['keep_ratio'] == 0.5
        assert row['selection'] == label.split()[1] and row['attention_source'] == 'last'
        assert frame_bytes - row['request_bytes_per_offloaded_frame'] == pytest.approx(28, abs=4)
        assert row['bytes_vs_full_frame'] == pytest.approx(
            row['request_bytes_per_offloaded_frame'] / frame_bytes
        )
        assert row['comm_ms'] < by['frame', 1.0]['comm_ms']  # fewer bytes on the link
    assert by['frame', 1.0]['bytes_vs_full_frame'] == 1.0
    assert by['frame', 1.0]['selection'] is None
    library = ExpertLibrary(digits_zoo)
    selections = (None, PatchSelection('attention', 0.5), PatchSelection('random', 0.5))
    for label, selection in zip(labels, selections, strict=True):
        edge = EdgeStage(library.load_edge(), library.scheme, RoutingConfig(tau=1.0, k=2))
        engine = CoInferenceEngine(edge, ExpertStage(library), selection)
        expected = tau_sweep(engine, camera, data.test_labels[:N], taus, 10)['sweep']
        for tau, want in zip(taus, expected, strict=True):
            got = by[label, tau]
            assert (got['offloaded'], got['co_inference_accuracy']) == (
                want['offloaded'],
                want['co_inference_accuracy'],
            ), label
    # the series are frame mode's; the patch configurations add their points to pareto
    assert report['series']['offload_ratio'] == [by['frame', t]['offload_ratio'] for t in taus]
    scenarios = {p['scenario'] for p in report['pareto']}
    assert 'specialist_co_inference [patches random rho=0.5]' in scenarios
    assert (out / 'pareto.png').stat().st_size > 1000


@pytest.mark.parametrize(
    ('args', 'expected'),
    [
        ((), (None,)),
        ((('patches',),), (PatchSelection('attention', 0.5),)),
        ((('frame', 'patches'), (0.3, 0.5), None, ('attention', 'centre')),
         (None, PatchSelection('attention', 0.3), PatchSelection('attention', 0.5),
          PatchSelection('centre', 0.3), PatchSelection('centre', 0.5))),
        ((('patches',), None, (0.9,), ('attention',), 'rollout'),
         (PatchSelection('attention', None, 0.9, 'rollout'),)),
        ((('patches',), (0.3,), (0.9,)),
         (PatchSelection('attention', 0.3), PatchSelection('attention', None, 0.9))),
    ],
)  # fmt: skip
def test_offload_configs_from_the_command_line_lists(args: tuple, expected: tuple) -> None:
    assert offload_configs(*args) == expected


@pytest.mark.parametrize(
    ('args', 'match'),
    [
        ((('frame',), (0.3,)), 'for patch offload'),
        ((('tiles',),), "'frame' and 'patches'"),
        ((('patches',), None, (0.9,), ('random',)), 'random baseline selects by keep ratio'),
        ((('patches',), (1.5,)), 'keep_ratio must be in'),
    ],
)
def test_offload_configs_refuse_what_cannot_run(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        offload_configs(*args)


@pytest.mark.parametrize('encoding', ['bgr8', 'rgb8', 'rgba8', 'bgra8', 'mono8'])
def test_raw_encodings_decode_to_the_written_frames(encoding: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, size=(5, 6, 7, 3), dtype=np.uint8)
    bag = make_bag(tmp_path / 'bag', frames, [0, 1, 2, 0, 1], ('a', 'b', 'c'),
                   BagWriteConfig(encoding=encoding, storage='sqlite3'))  # fmt: skip
    contents = read_bag(bag)
    assert contents.msgtype == IMAGE and [f.label for f in contents.frames] == list('abcab')
    for frame, want in zip(contents.frames, frames, strict=True):
        assert frame.source.encoding == encoding
        if encoding == 'mono8':
            grey = (want.astype(float) @ [0.299, 0.587, 0.114]).round()
            assert np.abs(frame.pixels.astype(float) - grey).max() <= 1
        else:
            np.testing.assert_array_equal(frame.pixels, want)  # back to RGB, alpha dropped


@pytest.mark.parametrize('fmt', ['jpeg', 'png'])
def test_compressed_bag_decodes_to_the_right_frames(fmt: str, tmp_path: Path) -> None:
    """The reader gives what OpenCV decodes from the bytes written (PNG: the frame itself)."""
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, size=(4, 16, 16, 3), dtype=np.uint8)
    bag = make_bag(tmp_path / 'bag', frames, None, ('a',), BagWriteConfig(compressed=fmt))
    contents = read_bag(bag)
    assert contents.msgtype == COMPRESSED_IMAGE and contents.label_topic is None
    for frame, want in zip(contents.frames, frames, strict=True):
        assert frame.label is None and fmt in frame.source.encoding
        _, data = encode_compressed(want, fmt, 90)
        np.testing.assert_array_equal(frame.pixels, decode_compressed(fmt, data))
        if fmt == 'png':
            np.testing.assert_array_equal(frame.pixels, want)


def test_stamps_follow_the_rate(tmp_path: Path) -> None:
    frames = np.zeros((3, 4, 4), np.uint8)
    bag = make_bag(tmp_path / 'bag', frames, None, ('a',), BagWriteConfig(rate_hz=20.0))
    stamps = [f.stamp_ns for f in read_bag(bag).frames]
    assert np.diff(stamps).tolist() == [50_000_000, 50_000_000]
    assert [f.bag_time_ns for f in read_bag(bag).frames] == stamps


def test_bag_without_ground_truth_reports_agreement(
    digits_zoo: Path, data, tmp_path: Path
) -> None:
    """Agreement with expert-only: 1 when every frame goes to its expert (tau = 1)."""
    bag = tmp_path / 'bag'
    assert main(['make-bag', '--out', str(bag), '--no-labels', '--limit', '20']) == 0
    report = bench_bag(bag, digits_zoo, BenchConfig(taus=TAUS), tmp_path / 'out')
    assert report['metric'] == 'agreement_with_expert_only'
    assert 'no ground truth' in report['metric_note']
    assert report['bag']['labelled_frames'] == 0
    spec = report['series']['accuracy']['specialist_co_inference']
    assert spec[0] == 1.0  # tau = 1: the expert-only answer itself
    engine, _ = _engines(digits_zoo)
    everything = engine.infer(data.test_images[:20])  # tau = 1.0 routes every frame
    edge_top1 = everything.edge.logits.argmax(axis=1)
    # tau = 0: the edge's own Top-1, scored against the expert-only answers
    assert spec[-1] == pytest.approx(float((edge_top1 == everything.labels).mean()))
    assert report['series']['accuracy']['edge_only'][0] == spec[-1]


def _corrupt_bag(path: Path, good: np.ndarray) -> None:
    """Camera topic (indices 0-4): good, truncated CDR, good, Image with short data, good."""
    store = typestore()
    t = store.types
    with Writer(path, version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        conn = writer.add_connection('/cam', IMAGE, typestore=store)
        for i, frame in enumerate(good):
            header = t['std_msgs/msg/Header'](
                stamp=t['builtin_interfaces/msg/Time'](sec=1, nanosec=i), frame_id='cam'
            )
            msg = t[IMAGE](header=header, height=8, width=8, encoding='mono8', is_bigendian=0,
                           step=8, data=frame.reshape(-1))  # fmt: skip
            writer.write(conn, 10 * i, store.serialize_cdr(msg, IMAGE))
            if i == 0:
                writer.write(conn, 10 * i + 1, store.serialize_cdr(msg, IMAGE)[:30])
            if i == 1:
                short = t[IMAGE](header=header, height=8, width=8, encoding='mono8',
                                 is_bigendian=0, step=8, data=frame.reshape(-1)[:10])  # fmt: skip
                writer.write(conn, 10 * i + 1, store.serialize_cdr(short, IMAGE))


def test_corrupt_messages_are_reported_and_skipped(
    digits_zoo: Path, data, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bag = tmp_path / 'bad'
    good = data.test_images[:3]
    _corrupt_bag(bag, good)
    contents = read_bag(bag, '/cam')
    assert len(contents.frames) == 3 and [f.index for f in contents.frames] == [0, 2, 4]
    reasons = [s.reason for s in contents.skipped]
    assert len(reasons) == 2
    assert reasons[0].startswith('bad CDR') and 'image data has 10 bytes' in reasons[1]
    assert 'skipped message 1 on /cam' in caplog.text
    for frame, want in zip(contents.frames, good, strict=True):
        np.testing.assert_array_equal(frame.pixels, want)
    report = bench_bag(bag, digits_zoo, BenchConfig(taus=(0.5,)), tmp_path / 'out', '/cam')
    assert report['frames'] == 3 and report['bag']['skipped'] == 2
    assert report['metric'] == 'agreement_with_expert_only'


def test_corrupt_jpeg_is_skipped(tmp_path: Path) -> None:
    store = typestore()
    t = store.types
    _, jpeg = encode_compressed(np.full((8, 8), 128, np.uint8), 'jpeg')
    with Writer(tmp_path / 'bag', version=9) as writer:
        conn = writer.add_connection('/cam/compressed', COMPRESSED_IMAGE, typestore=store)
        for i, payload in enumerate([jpeg, b'\xff\xd8 not really a jpeg', b'']):
            header = t['std_msgs/msg/Header'](
                stamp=t['builtin_interfaces/msg/Time'](sec=i, nanosec=0), frame_id='cam'
            )
            msg = t[COMPRESSED_IMAGE](header=header, format='jpeg',
                                      data=np.frombuffer(payload, np.uint8))  # fmt: skip
            writer.write(conn, i, store.serialize_cdr(msg, COMPRESSED_IMAGE))
    contents = read_bag(tmp_path / 'bag')
    assert [f.index for f in contents.frames] == [0]
    assert [(s.index, s.reason) for s in contents.skipped] == [
        (1, "cannot decode compressed image (format 'jpeg')"),
        (2, "empty compressed image ('jpeg')"),
    ]


def test_bad_requests_get_clear_errors(digits_zoo: Path, tmp_path: Path, capsys) -> None:
    bag = tmp_path / 'bag'
    assert main(['make-bag', '--out', str(bag), '--limit', '3']) == 0
    assert main(['make-bag', '--out', str(bag), '--limit', '3']) == 2  # exists
    assert main(['bench', '--bag', str(bag), '--topic', '/nope', '--models', str(digits_zoo),
                 '--out', str(tmp_path / 'o')]) == 2  # fmt: skip
    assert main(['bench', '--bag', str(tmp_path), '--models', str(digits_zoo)]) == 2
    err = capsys.readouterr().err
    assert "'/nope' is not an Image/CompressedImage topic" in err
    assert 'is not a rosbag2 folder' in err and 'exists' in err
    with pytest.raises(BagError, match='label topic'):
        read_bag(bag, label_topic='/image')
    with pytest.raises(ValueError, match='rate_hz'):
        BagWriteConfig(rate_hz=0)


def test_bench_live_over_dds(digits_zoo: Path, data, tmp_path: Path) -> None:
    """20 bag frames through edge and expert processes over real Cyclone DDS, the edge in
    patch mode (frame mode live is test_dds_nodes' first test): rho 0.5 of the 2x2 grid
    of 4-pixel patches is a 1x2 mosaic, 32 mono8 bytes per request."""
    bag = make_bag(tmp_path / 'bag', data.test_images[:20], data.test_labels[:20],
                   data.class_names, BagWriteConfig(rate_hz=50.0))  # fmt: skip
    report = live_bench(bag, digits_zoo, 0.15, tmp_path / 'out', deadline_ms=2000.0,
                        offload=PatchSelection('attention', 0.5))  # fmt: skip
    live = json.loads((tmp_path / 'out' / 'report.json').read_text())['live']
    assert live == json.loads(json.dumps(report['live']))
    assert live['offload']['offload_label'] == 'patches attention rho=0.5'
    assert live['edge_params']['offload_mode'] == 'patches'
    assert live['pixel_bytes_per_request'] == 32.0
    assert live['frames_sent'] == live['results'] == 20 and live['dropped'] == 0
    assert live['unexpected_results'] == 0 and live['duplicate_results'] == 0
    assert [f['stamp_ns'] for f in live['per_frame']] == [
        f.stamp_ns for f in read_bag(bag).frames
    ]  # the bag's own stamps travelled end to end
    assert 0 < live['offloaded'] < 20 and live['expert_answers'] == live['offloaded']
    assert live['latency_ms']['p50'] > 0
    split = live['split_ms']
    assert split['edge']['count'] == 20 and split['expert_inference']['count'] == live['offloaded']
    for row in live['per_frame']:
        if row['offloaded']:
            parts = row['edge_ms'] + row['network_ms'] + row['expert_queue_ms']
            assert parts + row['expert_inference_ms'] == pytest.approx(row['end_to_end_ms'])
    engine, _ = _engines(digits_zoo)
    engine.edge.routing = RoutingConfig(tau=0.15, k=2)
    offline = engine.infer(data.test_images[:20])
    assert abs(live['offloaded'] - int(offline.edge.routing.offload.sum())) <= 1
    assert live['accuracy'] is not None and 0 <= live['accuracy'] <= 1


def test_bench_live_takes_a_bag_longer_than_the_camera_depth_bound(
    digits_zoo: Path, data, tmp_path: Path
) -> None:
    """A 1,080-frame bag: the live edge's camera history is the bag, capped at the
    parameter's bound of 1,000 (it asked for 1,090 and the edge refused to start)."""
    frames = np.concatenate([data.test_images, data.test_images])
    labels = np.concatenate([data.test_labels, data.test_labels])
    bag = make_bag(tmp_path / 'bag', frames, labels, data.class_names,
                   BagWriteConfig(rate_hz=400.0))  # fmt: skip
    report = live_bench(bag, digits_zoo, 0.15, tmp_path / 'out', deadline_ms=2000.0)
    live = report['live']
    assert live['edge_params']['image_qos_depth'] == 1000
    assert live['frames_sent'] == live['results'] == len(frames) == 1080
    assert live['dropped'] == 0 and live['duplicate_results'] == 0
