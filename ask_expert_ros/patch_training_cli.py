"""``ask-expert finetune-patches`` and ``ask-expert patch-robustness``: experts robust
to missing patches (issue 16, item 4), and the table that measures them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ask_expert_ros.core.training.patch_robustness import DEFAULT_RHOS, ROBUSTNESS_METHODS


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(',') if t.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f'expected comma-separated numbers, got {text!r}'
        ) from exc


def _zoo(text: str) -> tuple[str, Path]:
    label, sep, path = text.partition('=')
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f'--zoo expects LABEL=DIR, got {text!r}')
    return label, Path(path)


def _cmd_finetune(args: argparse.Namespace) -> int:
    from ask_expert_ros.core.training.patch_finetune import FinetuneConfig, finetune_zoo
    from ask_expert_ros.core.training.patch_training import PatchDropConfig

    drop = None
    if args.mode != 'none':
        drop = PatchDropConfig(
            mode=args.mode, min_keep=args.min_keep, prob=args.prob, source=args.source
        )
    config = FinetuneConfig(
        patch_drop=drop,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        warmup_epochs=args.warmup_epochs,
        data=args.data,
        max_weight=args.max_weight,
        distill=not args.no_distill,
        generalist=args.generalist,
        max_shift=args.max_shift,
        seed=args.seed,
    )
    summary = finetune_zoo(
        args.models, args.out, config, args.dataset, args.device, progress=not args.quiet
    )
    for entry in summary['trained_here']:
        print(f'{entry["model"]}: {entry["seconds"]:.1f} s, final loss {entry["loss"]:.4f}')
    print(f'model zoo: {summary["manifest"]}')
    return 0


def _cmd_robustness(args: argparse.Namespace) -> int:
    from ask_expert_ros.core.training.datasets import load_dataset
    from ask_expert_ros.core.training.patch_robustness import (
        format_robustness,
        measure_patch_robustness,
    )

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    zoos = dict(args.zoo)
    if len(zoos) != len(args.zoo):
        labels = [label for label, _ in args.zoo]
        raise ValueError(f'--zoo labels must be distinct, got {labels}')
    report = measure_patch_robustness(
        zoos,
        load_dataset(args.dataset, seed=args.seed),
        rhos=args.rhos,
        methods=args.methods,
        tau=args.tau,
        source=args.source,
        seed=args.seed,
        test_subset=args.test_subset,
        progress=not args.quiet,
    )
    report['meta']['dataset'] = args.dataset
    table = format_robustness(report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        json_path = args.out.with_suffix('.json')
        json_path.write_text(json.dumps(report, indent=2) + '\n', encoding='utf-8')
        args.out.with_suffix('.md').write_text(table, encoding='utf-8')
        print(f'report: {json_path}')
    print(table)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the two subcommands to the ``ask-expert`` parser."""
    ft = sub.add_parser(
        'finetune-patches',
        help="fine-tune a zoo's experts with patch dropping into a new zoo",
        description='Fine-tunes every expert of --models on patch subsets (keep ratio '
        'rho uniform in [min_keep, 1] on a share prob of the batches) and writes a new zoo '
        '(library.yaml, the same edge). A recipe zoo continues its expert stage (data, '
        'augmentation, progressive weights, distillation); another zoo trains each expert '
        'on its target subset. Resumable: run the same command again.',
    )
    ft.add_argument('--models', type=Path, required=True, help='source zoo (never written)')
    ft.add_argument('--out', type=Path, required=True, help='the new zoo directory')
    ft.add_argument('--dataset', default=None, help="data set spec (default: the zoo's recipe's)")
    ft.add_argument(
        '--mode',
        choices=('attention', 'random', 'none'),
        default='attention',
        help='attention: the edge CLS attention picks the patches; random; none: the '
        'same fine-tuning on whole frames (the control)',
    )
    ft.add_argument('--min-keep', type=float, default=0.2, help='smallest keep ratio rho')
    ft.add_argument('--prob', type=float, default=0.8, help='share of batches dropped')
    ft.add_argument('--source', choices=('last', 'rollout'), default='last')
    ft.add_argument('--epochs', type=int, default=3)
    ft.add_argument('--lr', type=float, default=1e-4)
    ft.add_argument('--batch-size', type=int, default=64)
    ft.add_argument('--warmup-epochs', type=int, default=0)
    ft.add_argument(
        '--data',
        choices=('auto', 'target', 'progressive'),
        default='auto',
        help='target: D_I only; progressive: all frames, D_I weighted (auto: the recipe)',
    )
    ft.add_argument('--max-weight', type=float, default=None, help="W (default: the recipe's)")
    ft.add_argument('--no-distill', action='store_true', help='ignore the specialist teachers')
    ft.add_argument('--generalist', action='store_true', help='fine-tune the generalist too')
    ft.add_argument('--max-shift', type=int, default=1, help='shift, zoos without a recipe')
    ft.add_argument('--seed', type=int, default=0)
    ft.add_argument('--device', default=None)
    ft.add_argument('--quiet', action='store_true', help='no progress bars')
    ft.set_defaults(func=_cmd_finetune)

    rb = sub.add_parser(
        'patch-robustness',
        help='expert accuracy at each keep ratio rho, attention vs random, zoo vs zoo',
    )
    rb.add_argument(
        '--zoo',
        type=_zoo,
        action='append',
        required=True,
        metavar='LABEL=DIR',
        help='a zoo to measure (repeatable); all must share the edge model',
    )
    rb.add_argument('--dataset', default='digits', help='data set spec (its test split)')
    rb.add_argument('--rhos', type=_floats, default=DEFAULT_RHOS)
    rb.add_argument(
        '--methods',
        type=lambda t: tuple(m for m in t.split(',') if m),
        default=ROBUSTNESS_METHODS,
        help='comma-separated: attention,random',
    )
    rb.add_argument('--tau', type=float, default=0.8, help='threshold of the offloaded columns')
    rb.add_argument('--source', choices=('last', 'rollout'), default='last')
    rb.add_argument('--test-subset', type=int, default=None, help='stratified test sample')
    rb.add_argument('--seed', type=int, default=0)
    rb.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    rb.add_argument('--out', type=Path, default=None, help='write OUT.json and OUT.md')
    rb.add_argument('--quiet', action='store_true')
    rb.set_defaults(func=_cmd_robustness)
