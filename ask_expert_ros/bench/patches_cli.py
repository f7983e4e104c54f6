"""``ask-expert bench-patches``: the attention-aware offload benchmark's command line."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(t) for t in text.split(',') if t.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f'expected comma-separated numbers, got {text!r}'
        ) from exc
    if not all(0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f'every value must be in (0, 1], got {text!r}')
    return values


def _names(allowed: tuple[str, ...]) -> Any:
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(t.strip() for t in text.split(',') if t.strip())
        unknown = [n for n in names if n not in allowed]
        if not names or unknown:
            raise argparse.ArgumentTypeError(
                f'unknown {unknown}; choose from {", ".join(allowed)}'
            )
        return names

    return parse


def _tau(text: str) -> float | None:
    return None if text.lower() == 'none' else float(text)


def _cmd_bench_patches(args: argparse.Namespace) -> int:
    from ask_expert_ros.bench.attention_offload import (
        PatchBenchConfig,
        RealTokenConfig,
        format_markdown,
        real_token_timing,
        run_bench_patches,
        with_overrides,
        write_report,
    )
    from ask_expert_ros.core.inference.library import ExpertLibrary
    from ask_expert_ros.core.training.datasets import load_dataset

    if args.library is None and not args.real_tokens:
        raise ValueError('give --library (a zoo to run the rows on) and/or --real-tokens')
    if not args.quiet:  # progress, whatever the root logger's level
        logging.getLogger('ask_expert_ros.bench').setLevel(logging.INFO)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    report: dict[str, Any] = {}
    if args.library is not None:
        config = with_overrides(
            PatchBenchConfig(report_tau=args.report_tau),
            tau=args.tau,
            keep_ratios=args.rho,
            masses=args.mass,
            methods=args.selection,
            transports=args.transport,
            jpeg_quality=args.jpeg_quality,
            rollout_ratios=args.rollout_rho,
            max_frames=args.max_frames,
            bootstrap=args.bootstrap,
            ragged=args.ragged,
            timing_repeats=args.selection_repeats,
        )
        data = load_dataset(args.dataset, seed=args.split_seed)
        library = ExpertLibrary(args.library)
        if tuple(data.class_names) != library.scheme.class_names:
            raise ValueError(
                f'data set {args.dataset!r} classes {list(data.class_names)[:10]} differ '
                f'from those of the zoo {library.scheme.name!r} '
                f'{list(library.scheme.class_names)[:10]}: give the data set the zoo was '
                'trained on'
            )
        report = run_bench_patches(
            library, data.test_images, data.test_labels, config, dataset=args.dataset
        )
    if args.real_tokens:
        report['real_tokens'] = real_token_timing(
            RealTokenConfig(repeats=args.repeats, threads=args.threads)
        )
    report['args'] = {
        k: v if isinstance(v, (int, float, str, type(None))) else str(v)
        for k, v in vars(args).items()
        if k != 'func'
    }
    written = write_report(report, args.out)
    print(format_markdown(report))
    for kind, path in written.items():
        print(f'{kind}: {path}')
    return 0


def register(subparsers: Any) -> None:
    """Add ``bench-patches`` to the ``ask-expert`` command line."""
    parser = subparsers.add_parser(
        'bench-patches',
        help='attention-aware patch offload: accuracy vs bytes per selection method and rho',
        description='Run the test frames of a data set through the edge and expert node '
        'logic in process, full frame and patch mode (attention, random, centre; keep ratio '
        'rho and attention mass m; raw and JPEG), and write JSON, markdown and a plot of '
        'accuracy against bytes per offloaded frame. --real-tokens adds the expert '
        "token-subset timing and the edge's selection cost at 224 px (196 tokens).",
    )
    parser.add_argument('--library', type=Path, default=None, help='zoo: library.yaml or dir')
    parser.add_argument(
        '--dataset', default='digits', help='data set spec (digits, fashion_mnist[:DIR], ...)'
    )
    parser.add_argument('--split-seed', type=int, default=0, help='split seed (digits: 0)')
    parser.add_argument('--out', type=Path, default=Path('bench_patches'), help='output dir')
    parser.add_argument(
        '--tau', type=float, default=None, help='gate of the main rows (1.01: offload all)'
    )
    parser.add_argument(
        '--report-tau',
        type=_tau,
        default=0.8,
        help="operating point also run for each row ('none': skip; default 0.8)",
    )
    parser.add_argument('--rho', type=_floats, default=None, help='keep ratios, comma-separated')
    parser.add_argument('--mass', type=_floats, default=None, help='attention masses m')
    parser.add_argument(
        '--selection',
        type=_names(('attention', 'random', 'centre')),
        default=None,
        help='selection methods (default attention,random,centre)',
    )
    parser.add_argument(
        '--transport',
        type=_names(('raw', 'compressed')),
        default=None,
        help='raw and/or compressed (JPEG) rows (default both)',
    )
    parser.add_argument('--jpeg-quality', type=int, default=None, help='JPEG quality (90)')
    parser.add_argument(
        '--rollout-rho', type=_floats, default=None, help='rho of the rollout rows (0.2,0.3)'
    )
    parser.add_argument('--max-frames', type=int, default=None, help='first N test frames')
    parser.add_argument('--bootstrap', type=int, default=None, help='bootstrap resamples')
    parser.add_argument(
        '--ragged', choices=('pad', 'group'), default=None, help="expert's ragged batching"
    )
    parser.add_argument(
        '--selection-repeats', type=int, default=None, help='repeats of the selection timing'
    )
    parser.add_argument(
        '--real-tokens',
        action='store_true',
        help='time DeiT-4H token subsets and DeiT-3H selection at 224 px (a few minutes)',
    )
    parser.add_argument('--repeats', type=int, default=15, help='repeats of the 224 px timing')
    parser.add_argument(
        '--threads',
        type=int,
        default=None,
        help="torch intra-op threads of every part (the nodes' threads_per_node; default torch's)",
    )
    parser.add_argument('--quiet', action='store_true', help='no progress lines')
    parser.set_defaults(func=_cmd_bench_patches)
