"""``ask-expert bench-speed --quick``: every section present, finite, and self-consistent.

A smoke test of the benchmark, not a speed test: no figure is compared with a target.
What it checks is that every ratio in the JSON is the ratio of the raw numbers next to
it, so a reader can trust the report's arithmetic whatever machine wrote it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ask_expert_ros.cli import main

pytest.importorskip('cyclonedds', reason='the DDS section needs `pip install cyclonedds`')

SECTIONS = ('machine', 'config', 'matmul_peak', 'models', 'edge_pipeline', 'dds',
            'expert_batching', 'summary')  # fmt: skip
# figures that may legitimately be 0 (a batch in which no frame was offloaded)
MAY_BE_ZERO = {'offload_fraction', 'max_abs_diff_vs_torch_fp32'}


def numbers(node: object, path: str = '') -> list[tuple[str, float]]:
    """Every int/float leaf (booleans excluded) with its dotted path."""
    if isinstance(node, bool):
        return []
    if isinstance(node, int | float):
        return [(path, float(node))]
    if isinstance(node, dict):
        return [x for k, v in node.items() for x in numbers(v, f'{path}.{k}')]
    if isinstance(node, list):
        return [x for i, v in enumerate(node) for x in numbers(v, f'{path}[{i}]')]
    return []


@pytest.fixture(scope='module')
def report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp('speed') / 'speed.json'
    argv = ['bench-speed', '--quick', '--quiet', '--variants', 'deit_3h', '--repeats', '2']
    assert main([*argv, '--out', str(out)]) == 0
    return json.loads(Path(out).read_text())


@pytest.mark.timeout(120)
def test_every_section_with_finite_positive_numbers(report) -> None:
    assert set(SECTIONS) <= set(report)
    for section in SECTIONS[2:]:
        for where, value in numbers(report[section], section):
            assert math.isfinite(value), where
            if where.rsplit('.', 1)[-1] not in MAY_BE_ZERO:
                assert value > 0, where
    assert report['machine']['torch'] and report['machine']['threads'] == 1
    assert {'fp32', 'bf16'} == set(report['matmul_peak']['peak'])
    assert [r['edges'] for r in report['expert_batching']['rows']] == [1, 4, 8]
    assert [r['batch'] for r in report['edge_pipeline']['rows']] == [1, 10]
    assert {r['type'] for r in report['dds']['rows']} == {'Image', 'ExpertRequest'}
    assert ('torch', 'fp32') in {(r['backend'], r['precision']) for r in report['models']}
    assert all(r['backend'] != 'torch_compile' for r in report['models'])  # --quick: none
    for row in report['models']:  # every backend agrees with torch within its precision
        assert row['max_abs_diff_vs_torch_fp32'] <= (1e-4 if row['precision'] == 'fp32' else 0.5)


def test_ratios_are_computed_from_the_raw_numbers(report) -> None:
    """Each ratio recomputed here from the raw figures beside it (relative 1e-9)."""
    same = lambda a, b: math.isclose(a, b, rel_tol=1e-9)  # noqa: E731
    peak = report['matmul_peak']
    fp32 = {k: v for k, v in peak['gflops'].items() if k.endswith('_fp32')}
    assert same(peak['peak']['fp32'], max(fp32.values()))
    assert same(peak['peak']['bf16'], peak['gflops']['torch_bf16'])
    for row in report['models']:
        assert same(row['peak_gflops_used'], peak['peak'].get(row['precision'], 0) or 0)
        for b, ms in row['latency_ms_p50'].items():
            gflops = row['gflop_per_image'] * int(b) / (ms / 1e3)
            assert same(row['gflops'][b], gflops)
            assert same(row['fraction_of_peak'][b], gflops / row['peak_gflops_used'])
    edge = report['edge_pipeline']
    for row in edge['rows']:
        assert same(row['pipeline_fps'], row['batch'] / (row['pipeline_ms_p50'] / 1e3))
        assert same(row['bare_fps'], row['batch'] / (row['bare_ms_p50'] / 1e3))
        assert same(row['ratio'], row['pipeline_fps'] / row['bare_fps'])
    batch1 = next(r for r in edge['rows'] if r['batch'] == 1)
    assert same(edge['edge_inference_ms_batch1'], batch1['bare_ms_p50'])
    for row in report['dds']['rows']:
        assert same(row['hop_ms'], row['round_trip_ms_p50'] / 2)
        assert same(row['edge_inference_ms'], edge['edge_inference_ms_batch1'])
        assert same(row['ratio'], row['hop_ms'] / row['edge_inference_ms'])
        assert row['bytes'] > 3 * 32 * 32  # a whole 32x32 rgb8 frame went over the wire
    per_edge = report['config']['requests_per_edge']
    for row in report['expert_batching']['rows']:
        single, batched = row['one_at_a_time'], row['batched']
        for mode in (single, batched):
            assert mode['requests'] == row['edges'] * per_edge
            assert same(mode['throughput_rps'], mode['requests'] / mode['span_s'])
            assert 1 <= mode['mean_batch'] <= report['config']['max_batch']
        assert single['mean_batch'] == 1  # max_batch 1 really ran one at a time
        assert same(row['throughput_gain'], batched['throughput_rps'] / single['throughput_rps'])
        assert same(
            row['p95_batched_over_single'], batched['latency_ms_p95'] / single['latency_ms_p95']
        )
    summary = report['summary']
    assert same(summary['edge_pipeline_over_bare_fps_min'], min(r['ratio'] for r in edge['rows']))
    assert same(
        summary['dds_hop_over_edge_inference_max'], max(r['ratio'] for r in report['dds']['rows'])
    )
    assert (
        summary['expert_throughput_gain_8_edges']
        == report['expert_batching']['rows'][-1]['throughput_gain']
    )
    speedup = summary['edge_model_speedup_b1']
    edge_rows = [r for r in report['models'] if r['variant'] == speedup['variant']]
    fastest = min(r['latency_ms_p50']['1'] for r in edge_rows)
    eager = next(r for r in edge_rows if (r['backend'], r['precision']) == ('torch', 'fp32'))
    assert same(speedup['best_ms'], fastest)
    assert same(speedup['torch_fp32_ms'], eager['latency_ms_p50']['1'])
    assert same(speedup['speedup'], speedup['torch_fp32_ms'] / speedup['best_ms'])
    assert summary['meets']['edge_model'] == (speedup['speedup'] >= 2.0)
