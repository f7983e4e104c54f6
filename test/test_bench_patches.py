"""``ask-expert bench-patches`` end to end on the tiny zoo (8 px frames, 4 px patches: a
2x2 grid), through the real edge and expert node logic and the ExpertRequest CDR."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_config

from ask_expert_ros.bags.bench import request_size
from ask_expert_ros.bench.attention_offload import (
    TABLE_COLUMNS,
    PatchBenchConfig,
    RealTokenConfig,
    format_markdown,
    real_token_timing,
    run_bench_patches,
    table_rows,
    write_report,
)
from ask_expert_ros.cli import build_parser
from ask_expert_ros.core.inference.library import ExpertLibrary, write_manifest
from ask_expert_ros.core.inference.models import create_model, save_model
from ask_expert_ros.core.inference.patches import PatchSelection
from ask_expert_ros.core.inference.taxonomy import PartitionScheme, key_slug

CONFIG = PatchBenchConfig(
    report_tau=0.5,
    keep_ratios=(0.5, 1.0),
    masses=(0.7,),
    methods=('attention', 'random'),
    transports=('raw', 'compressed'),
    rollout_ratios=(0.5,),
    edge_batch=8,
    bootstrap=50,
    timing_repeats=3,
)


@pytest.fixture(scope='module')
def one_thread():
    """Tiny models run fastest on one thread, and a shared machine does not stall them."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope='module')
def report(tmp_path_factory: pytest.TempPathFactory, one_thread) -> dict:
    """The conftest ``zoo`` (untrained, k = 2 over {a, b} {c, d} {e, f}) and 20 random
    8x8 frames with random labels, built once for the module."""
    root = tmp_path_factory.mktemp('zoo')
    scheme = PartitionScheme.from_class_subsets(
        'toy_s3', ('a', 'b', 'c', 'd', 'e', 'f'), {1: [0, 1], 2: [2, 3], 3: [4, 5]}
    )
    torch.manual_seed(0)
    edge = save_model(create_model(tiny_config(scheme)), tiny_config(scheme), root / 'edge')
    experts = {}
    for key in scheme.expert_keys(2):
        cfg = tiny_config(scheme, key, 'deit_4h')
        experts[key] = save_model(create_model(cfg), cfg, root / f'expert_{key_slug(key)}')
    zoo = write_manifest(root, scheme, 2, experts, edge=edge)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(20, 8, 8), dtype=np.uint8)
    labels = rng.integers(0, 6, size=len(frames))
    return run_bench_patches(ExpertLibrary(zoo), frames, labels, CONFIG, request_size, 'toy')


def _row(report: dict, name: str) -> dict:
    return next(r for r in report['rows'] if r['name'] == name)


def test_every_row_and_column_is_reported(report, tmp_path) -> None:
    """2 frame rows + per transport (attention: 2 rho + 1 m, random: 2 rho) + 1 rollout
    row = 13 rows, each with the issue's 8 columns; JSON, markdown and plot written."""
    assert len(report['rows']) == 2 + 2 * (3 + 2) + 1
    assert report['grid'] == [2, 2] and report['frames'] == 20
    for cells in table_rows(report):
        assert len(cells) == len(TABLE_COLUMNS)
        assert 'nan' not in ' '.join(cells)
    for row in report['rows']:
        for tau in ('tau=1.01', 'tau=0.5'):
            summary = row[tau]
            for key in (
                'accuracy',
                'accuracy_ci95',
                'delta_vs_full',
                'delta_ci95',
                'request_bytes_per_offloaded_frame',
                'payload_bytes_per_offloaded_frame',
                'expert_ms_per_request',
                'patches_sent_mean',
            ):
                assert key in summary
            lo, hi = summary['accuracy_ci95']
            assert lo <= summary['accuracy'] <= hi
        assert {'bytes_over_full_raw', 'expert_ms_over_full', 'payload_over_full_raw'} <= set(row)
        assert row['edge_selection_over_inference'] == 0.0 or row['offload'] == 'patches'
    # tau 1.01 offloads every frame, and each is answered by an expert
    assert all(r['tau=1.01']['offloaded_fraction'] == 1.0 for r in report['rows'])
    assert all(r['tau=1.01']['sources']['expert'] == 20 for r in report['rows'])
    written = write_report(report, tmp_path)
    assert json.loads(written['json'].read_text())['rows'][0]['name'] == 'frame/raw'
    assert '| ' + ' | '.join(TABLE_COLUMNS) + ' |' in written['markdown'].read_text()
    assert written['plot'].stat().st_size > 0


def test_rho_one_equals_the_full_frame(report) -> None:
    """Every patch sent (rho = 1) gives the full frame's accuracy: a paired difference of
    exactly 0 on every frame, so its interval is [0, 0]."""
    full = _row(report, 'frame/raw')['tau=1.01']
    for transport in ('raw', 'compressed'):
        every = _row(report, f'patches/{transport}/attention-last/rho=1')['tau=1.01']
        reference = _row(report, f'frame/{transport}')['tau=1.01']
        assert every['accuracy'] == reference['accuracy']
    raw_every = _row(report, 'patches/raw/attention-last/rho=1')['tau=1.01']
    assert raw_every['accuracy'] == full['accuracy']
    assert raw_every['delta_vs_full'] == 0.0 and raw_every['delta_ci95'] == (0.0, 0.0)


def test_fewer_patches_cost_fewer_bytes(report) -> None:
    """rho = 0.5 of 4 patches: 2 raw 4x4 mono8 patches = 32 pixel bytes of the frame's 64;
    the whole request (header, indices, fields) is smaller than the full raw frame's."""
    for method in ('attention-last', 'random'):
        row = _row(report, f'patches/raw/{method}/rho=0.5')
        assert row['tau=1.01']['payload_bytes_per_offloaded_frame'] == 32
        assert row['tau=1.01']['patches_sent_mean'] == 2
        assert row['bytes_over_full_raw'] < 1
        assert row['payload_over_full_raw'] == 0.5
    assert _row(report, 'frame/raw')['tau=1.01']['payload_bytes_per_offloaded_frame'] == 64


def test_rows_follow_the_config() -> None:
    rows = PatchBenchConfig().rows()
    names = [r.name for r in rows]
    # 2 frame rows, per transport: attention 6 rho + 4 m, random 6, centre 6; 2 rollout
    assert len(rows) == 2 + 2 * (10 + 6 + 6) + 2
    assert names[:2] == ['frame/raw', 'frame/compressed']
    assert 'patches/compressed/attention-last/m=0.97' in names
    assert names[-1] == 'patches/raw/attention-rollout/rho=0.3'
    assert rows[-1].selection == PatchSelection(keep_ratio=0.3, source='rollout')


def test_real_token_timing_small(one_thread) -> None:
    """The 224 px timing's shape on a 32 px model (8 px patches: 16 tokens), 1 repeat."""
    config = RealTokenConfig(
        img_size=32,
        patch_size=8,
        keep_ratios=(0.25, 1.0),
        batches=(1, 2),
        repeats=1,
        ragged_fractions=(0.25, 0.5, 1.0),
    )
    out = real_token_timing(config)
    assert out['tokens'] == 16
    assert 'fp32' in out['expert']
    entry = out['expert']['fp32']['batch=2']
    assert set(entry['speedup_vs_full']) == {'rho=0.25', 'rho=1'}
    assert entry['tokens'] == {'rho=0.25': 4, 'rho=1': 16}
    assert out['ragged']['fp32']['counts'] == [4, 8, 16]
    assert set(out['edge']['fp32']['batch=1']['cost_over_inference']) == {
        'attention-last-rho=0.3',
        'attention-rollout-rho=0.3',
        'attention-last-m=0.9',
    }
    text = format_markdown({'real_tokens': out})
    assert 'pad + mask' in text and 'cost / inference' in text


def test_cli_registers_bench_patches() -> None:
    args = build_parser().parse_args(
        ['bench-patches', '--library', 'zoo', '--rho', '0.2,0.3', '--report-tau', 'none']
    )
    assert args.rho == (0.2, 0.3) and args.report_tau is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(['bench-patches', '--rho', '1.5'])
