"""``ask-expert bench-speed``: the speed benchmark's command line."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, get_args

from ask_expert_ros.core.inference.models import VariantName


def _variants(text: str) -> tuple[Any, ...]:
    names = tuple(t.strip() for t in text.split(',') if t.strip())
    unknown = [n for n in names if n not in get_args(VariantName)]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f'unknown variants {unknown}; choose from {", ".join(get_args(VariantName))}'
        )
    return names


def _cmd_bench_speed(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ask_expert_ros.bench.speed import SpeedConfig, format_table, run_speed, write_report

    config = SpeedConfig.quick(args.variants) if args.quick else SpeedConfig()
    overrides: dict[str, Any] = {
        name: getattr(args, name)
        for name in ('variants', 'img_size', 'depth', 'threads', 'repeats')
        if getattr(args, name) is not None
    }
    if args.no_compile:
        overrides['compiled'] = False
    if args.no_autotune:
        overrides['max_autotune'] = False
    if args.no_startup:
        overrides['startup'] = False
    if args.aoti_dir is not None:
        overrides['aoti_dir'] = args.aoti_dir
    config = replace(config, **overrides)
    if not args.quiet:  # progress, whatever the root logger's level
        logging.getLogger('ask_expert_ros.bench').setLevel(logging.INFO)
    report = run_speed(config)
    write_report(report, args.out)
    print(format_table(report))
    print(f'report: {args.out}')
    return 0


def register(subparsers: Any) -> None:
    """Add ``bench-speed`` to the ``ask-expert`` command line."""
    parser = subparsers.add_parser(
        'bench-speed',
        help='speed of every part (matmul peak, models, edge pipeline, DDS, expert batching)',
        description='Measure the speed of every part as ratios taken side by side in one run '
        'and write them as JSON. Run it on a quiet machine: other load distorts the figures.',
    )
    parser.add_argument('--out', type=Path, default=Path('speed.json'), help='JSON report path')
    parser.add_argument(
        '--variants',
        type=_variants,
        default=None,
        help='comma-separated model variants; the first is the edge model, the second the '
        'expert (default deit_3h,deit_4h,deit_base)',
    )
    parser.add_argument('--img-size', type=int, default=None, help='frame and model side, px')
    parser.add_argument('--depth', type=int, default=None, help='transformer blocks per model')
    parser.add_argument('--threads', type=int, default=None, help='intra-op threads (2)')
    parser.add_argument('--repeats', type=int, default=None, help='timed runs per figure')
    parser.add_argument(
        '--quick', action='store_true', help='smoke run: 32 px, 1 block, few repeats (< 60 s)'
    )
    compiled = parser.add_mutually_exclusive_group()
    compiled.add_argument(
        '--no-compile',
        action='store_true',
        help='leave out the torch_compile and aoti backends (they compile for 10-60 s per model)',
    )
    compiled.add_argument(
        '--no-autotune',
        action='store_true',
        help="build torch_compile's batch-1 graphs without inductor's max-autotune (on by "
        'default on CPU: about 3 s more build, faster at batch 1)',
    )
    parser.add_argument(
        '--no-startup',
        action='store_true',
        help='leave out the startup section (each backend started in a fresh process)',
    )
    parser.add_argument(
        '--aoti-dir',
        type=Path,
        default=None,
        help='keep the AOTInductor packages (and model files) here, so a rerun loads them '
        'instead of compiling (default: a temporary directory)',
    )
    parser.add_argument('--quiet', action='store_true', help='no progress log')
    parser.set_defaults(func=_cmd_bench_speed)
