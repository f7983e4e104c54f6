"""``ask-expert bench-speed`` as a whole: every section run in turn, summed up against the
targets, written as JSON and a table."""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from ask_expert_ros.bench.speed.batching import bench_expert_batching
from ask_expert_ros.bench.speed.common import (
    TARGETS,
    SpeedConfig,
    bench_scheme,
    machine_info,
    model_config,
)
from ask_expert_ros.bench.speed.dds import bench_dds
from ask_expert_ros.bench.speed.models import bench_models, matmul_peak
from ask_expert_ros.bench.speed.pipeline import bench_edge_pipeline
from ask_expert_ros.bench.speed.startup import bench_startup
from ask_expert_ros.core.inference.backends import available_backends
from ask_expert_ros.core.inference.models import (
    LoadedModel,
    create_model,
    save_model,
)

logger = logging.getLogger(__name__)


def run_speed(config: SpeedConfig) -> dict[str, Any]:
    """Every section, in one process, one after the other (``startup`` in children)."""
    if config.aoti_dir is None and (config.compiled or config.startup):
        with tempfile.TemporaryDirectory(prefix='bench_speed_') as tmp:
            return run_speed(replace(config, aoti_dir=Path(tmp)))
    torch.set_num_threads(config.threads)
    scheme = bench_scheme(config.num_classes)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}
    report: dict[str, Any] = {'machine': machine_info(config.threads), 'config': settings}
    t0 = time.perf_counter()
    peak = matmul_peak(config)
    report['matmul_peak'] = peak
    report['models'] = bench_models(config, scheme, peak['peak'])
    edge_cfg = model_config(config.variants[0], scheme, config)
    torch.manual_seed(0)
    edge = LoadedModel(create_model(edge_cfg).eval(), edge_cfg)
    report['edge_pipeline'] = bench_edge_pipeline(config, edge, scheme)
    report['dds'] = bench_dds(config, report['edge_pipeline']['edge_inference_ms_batch1'])
    expert_variant = config.variants[1] if len(config.variants) > 1 else config.variants[0]
    report['expert_batching'] = bench_expert_batching(config, expert_variant, scheme)
    if config.startup:
        report['startup'] = _startup(config, scheme, expert_variant)
    report['summary'] = summary(report)
    report['elapsed_s'] = time.perf_counter() - t0
    return report


def _startup(config: SpeedConfig, scheme: Any, expert_variant: str) -> list[dict[str, Any]]:
    """The models of the ``models`` section (same seed, same weights, so the packages it
    built are found) saved as files, each backend started from them in a fresh process."""
    assert config.aoti_dir is not None
    files = {}
    for name, variant in (('edge', config.variants[0]), ('expert', expert_variant)):
        cfg = model_config(variant, scheme, config)  # type: ignore[arg-type]
        torch.manual_seed(0)
        path = config.aoti_dir / 'models' / f'{name}.safetensors'
        path.parent.mkdir(parents=True, exist_ok=True)
        save_model(create_model(cfg).eval(), cfg, path)
        files[name] = path
    usable = set(available_backends('cpu'))
    cases = [('torch', 'fp32'), ('torch', 'bf16'), ('onnxruntime', 'fp32')]
    if config.compiled:
        cases += [('aoti', 'fp32'), ('aoti', 'bf16'), ('torch_compile', 'bf16')]
    cases = [c for c in cases if c in usable] + [('auto', 'auto')]
    return bench_startup(
        files,
        config.aoti_dir,
        cases,
        {'edge': 1, 'expert': config.max_batch},
        threads=config.threads,
    )


def startup_summary(report: dict[str, Any]) -> dict[str, Any] | None:
    """Issue 19's figures: ``auto`` on the edge model (what it picked, its first result,
    its speed at batch 1 from the side-by-side ``models`` rows), the fastest ready
    backend of the expert at its largest batch, and bf16 memory against fp32."""
    rows = report.get('startup')
    if not rows:
        return None
    variants = report['config']['variants']
    expert_variant = variants[1] if len(variants) > 1 else variants[0]

    def model_row(variant: str, kind: str, precision: str) -> dict[str, Any] | None:
        return next(
            (
                r
                for r in report['models']
                if (r['variant'], r['backend'], r['precision']) == (variant, kind, precision)
            ),
            None,
        )

    def started(model: str, asked: str) -> dict[str, Any] | None:
        return next((r for r in rows if r['model'] == model and r['asked'] == asked), None)

    out: dict[str, Any] = {}
    auto = started('edge', 'auto/auto')
    base = model_row(variants[0], 'torch', 'fp32')
    if auto is not None and base is not None:
        picked = model_row(variants[0], auto['kind'], auto['precision'])
        out['edge_auto'] = {
            'picked': f'{auto["kind"]}/{auto["precision"]}',
            'first_result_s': auto['first_result_s'],
            'process_s': auto['process_s'],
            'speedup_b1': (
                base['latency_ms_p50']['1'] / picked['latency_ms_p50']['1'] if picked else None
            ),
        }
    big = str(max(int(b) for b in report['models'][0]['latency_ms_p50']))
    expert_rows = [r for r in report['models'] if r['variant'] == expert_variant]
    expert_base = model_row(expert_variant, 'torch', 'fp32')
    ready = [r for r in expert_rows if r['backend'] != 'torch_compile']
    if expert_base is not None and ready:
        best = min(ready, key=lambda r: r['latency_ms_p50'][big])
        out['expert_batched'] = {
            'batch': int(big),
            'backend': f'{best["backend"]}/{best["precision"]}',
            'speedup': expert_base['latency_ms_p50'][big] / best['latency_ms_p50'][big],
        }
    memory = {}
    for model in ('edge', 'expert'):
        fp32 = started(model, 'torch/fp32')
        for asked in ('torch/bf16', 'aoti/bf16'):
            low = started(model, asked)
            if fp32 is not None and low is not None and fp32['model_mb'] > 0:
                memory[f'{model} {asked}'] = low['model_mb'] / fp32['model_mb']
    out['bf16_memory_over_fp32'] = memory
    return out


def edge_speedup(report: dict[str, Any]) -> dict[str, Any]:
    """The edge variant's fastest backend at batch 1 against torch eager fp32."""
    edge = report['config']['variants'][0]
    rows = [r for r in report['models'] if r['variant'] == edge]
    base = next(r for r in rows if (r['backend'], r['precision']) == ('torch', 'fp32'))
    best = min(rows, key=lambda r: r['latency_ms_p50']['1'])
    return {
        'variant': edge,
        'backend': f'{best["backend"]}/{best["precision"]}',
        'torch_fp32_ms': base['latency_ms_p50']['1'],
        'best_ms': best['latency_ms_p50']['1'],
        'speedup': base['latency_ms_p50']['1'] / best['latency_ms_p50']['1'],
    }


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The headline ratios next to the issue's targets."""
    speedup = edge_speedup(report) if '1' in report['models'][0]['latency_ms_p50'] else None
    pipe = min(r['ratio'] for r in report['edge_pipeline']['rows'])
    dds = max(r['ratio'] for r in report['dds']['rows'])
    rows = report['expert_batching']['rows']
    most = max(rows, key=lambda r: r['edges'])
    out: dict[str, Any] = {
        'edge_model_speedup_b1': speedup,
        'edge_pipeline_over_bare_fps_min': pipe,
        'dds_hop_over_edge_inference_max': dds,
        f'expert_throughput_gain_{most["edges"]}_edges': most['throughput_gain'],
        f'expert_p95_batched_over_single_{most["edges"]}_edges': most['p95_batched_over_single'],
        'targets': TARGETS,
        'startup': startup_summary(report),
    }
    out['meets'] = {
        'edge_model': speedup is not None
        and speedup['speedup'] >= TARGETS['edge_model_speedup_over_torch_fp32_b1_min'],
        'edge_pipeline': pipe >= TARGETS['edge_pipeline_over_bare_fps_min'],
        'dds': dds <= TARGETS['dds_hop_over_edge_inference_max'],
        'expert_batching': (
            most['edges'] >= 8
            and most['throughput_gain'] >= TARGETS['expert_throughput_gain_8_edges_min']
            and most['p95_batched_over_single']
            <= TARGETS['expert_p95_batched_over_single_8_edges_max']
        ),
    }
    start = out['startup']
    if start and start.get('edge_auto'):
        auto = start['edge_auto']
        out['meets']['edge_auto'] = (
            auto['speedup_b1'] is not None
            and auto['speedup_b1'] >= TARGETS['edge_auto_speedup_b1_min']
            and auto['first_result_s'] <= TARGETS['edge_auto_first_result_s_max']
        )
    if start and start.get('expert_batched'):
        out['meets']['expert_compiled'] = (
            start['expert_batched']['speedup'] >= TARGETS['expert_compiled_speedup_batched_min']
        )
    if start and start.get('bf16_memory_over_fp32'):
        out['meets']['bf16_memory'] = all(
            v <= TARGETS['bf16_model_memory_over_fp32_max']
            for v in start['bf16_memory_over_fp32'].values()
        )
    return out


def format_table(report: dict[str, Any]) -> str:
    """The report as a few plain-text tables."""
    lines = [f'machine: {report["machine"]["cpu"]}, {report["machine"]["threads"]} threads']
    peak = report['matmul_peak']
    lines.append(f'matmul {peak["size"]}^3 GFLOP/s: ' + ', '.join(
        f'{k} {v:.0f}' for k, v in peak['gflops'].items()
    ))  # fmt: skip
    lines.append('')
    lines.append(f'{"variant":<10} {"backend":<19} {"GFLOP/img":>9} '
                 f'{"b1 ms":>8} {"b10 ms":>8} {"GFLOP/s b10":>11} {"of peak":>8} '
                 f'{"build s":>8} {"start s":>8} {"max|diff|":>9}')  # fmt: skip
    for r in report['models']:
        b = sorted(r['latency_ms_p50'], key=int)
        lo, hi = b[0], b[-1]
        lines.append(
            f'{r["variant"]:<10} {r["backend"] + "/" + r["precision"]:<19} '
            f'{r["gflop_per_image"]:9.3f} {r["latency_ms_p50"][lo]:8.2f} '
            f'{r["latency_ms_p50"][hi]:8.2f} {r["gflops"][hi]:11.1f} '
            f'{r["fraction_of_peak"][hi]:8.1%} {r["build_s"]:8.1f} '
            f'{r.get("startup_s", float("nan")):8.2f} '
            f'{r["max_abs_diff_vs_torch_fp32"]:9.1e}'
        )
    speedup = report['summary']['edge_model_speedup_b1']
    if speedup is not None:
        lines.append(
            f'edge model {speedup["variant"]} at batch 1: {speedup["backend"]} '
            f'{speedup["best_ms"]:.2f} ms vs torch eager fp32 {speedup["torch_fp32_ms"]:.2f} ms '
            f'-> {speedup["speedup"]:.2f}x'
        )
    lines.append('')
    for r in report['edge_pipeline']['rows']:
        lines.append(
            f'edge pipeline batch {r["batch"]:>2}: {r["pipeline_fps"]:8.1f} fps vs bare '
            f'{r["bare_fps"]:8.1f} fps -> {r["ratio"]:.3f} (offloaded {r["offload_fraction"]:.0%})'
        )
    for r in report['dds']['rows']:
        lines.append(
            f'DDS hop {r["type"]:<14} {r["bytes"]:>7} B: {r["hop_ms"]:.3f} ms = '
            f'{r["ratio"]:.3f} x edge inference ({r["edge_inference_ms"]:.2f} ms)'
        )
    lines.append('')
    lines.append(f'{"edges":>5} {"rps 1-at-a-time":>15} {"rps batched":>11} {"gain":>6} '
                 f'{"p95 single":>10} {"p95 batched":>11} {"mean batch":>10}')  # fmt: skip
    for r in report['expert_batching']['rows']:
        s, b = r['one_at_a_time'], r['batched']
        lines.append(
            f'{r["edges"]:>5} {s["throughput_rps"]:15.1f} {b["throughput_rps"]:11.1f} '
            f'{r["throughput_gain"]:6.2f} {s["latency_ms_p95"]:10.1f} '
            f'{b["latency_ms_p95"]:11.1f} {b["mean_batch"]:10.2f}'
        )
    if report.get('startup'):
        lines.append('')
        lines.append(f'{"model":<7} {"asked":<20} {"runs":<20} {"first s":>8} '
                     f'{"process s":>9} {"import s":>8} {"MB":>7} {"steady ms":>9}')  # fmt: skip
        for r in report['startup']:
            lines.append(
                f'{r["model"]:<7} {r["asked"]:<20} {r["kind"] + "/" + r["precision"]:<20} '
                f'{r["first_result_s"]:8.2f} {r["process_s"] or float("nan"):9.2f} '
                f'{r["import_s"]:8.2f} {r["model_mb"]:7.1f} {r["steady_ms"]:9.2f}'
            )
        start = report['summary'].get('startup') or {}
        if start.get('edge_auto'):
            a = start['edge_auto']
            speed = f'{a["speedup_b1"]:.2f}x' if a['speedup_b1'] else 'n/a'
            lines.append(
                f'edge auto -> {a["picked"]}: first result {a["first_result_s"]:.2f} s, '
                f'{speed} torch eager fp32 at batch 1'
            )
        if start.get('expert_batched'):
            e = start['expert_batched']
            lines.append(
                f'expert at batch {e["batch"]}: {e["backend"]} {e["speedup"]:.2f}x eager fp32'
            )
        for name, ratio in (start.get('bf16_memory_over_fp32') or {}).items():
            lines.append(f'memory {name} / torch fp32: {ratio:.2f}')
    lines.append('')
    lines.append('targets met: ' + ', '.join(
        f'{k} {"yes" if v else "no"}' for k, v in report['summary']['meets'].items()
    ))  # fmt: skip
    return '\n'.join(lines)


def write_report(report: dict[str, Any], out: Path) -> None:
    """JSON, after checking that every number in it is finite."""

    def check(value: Any, where: str) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f'bench-speed produced a non-finite number at {where}')
        if isinstance(value, dict):
            for k, v in value.items():
                check(v, f'{where}.{k}')
        elif isinstance(value, list):
            for i, v in enumerate(value):
                check(v, f'{where}[{i}]')

    check(report, 'report')
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + '\n', encoding='utf-8')
