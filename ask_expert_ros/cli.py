"""The ``ask-expert`` command line (entry-point layer: may import everything)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ask_expert_ros import __version__
from ask_expert_ros.bags import commands as bag_commands
from ask_expert_ros.bench import cli as bench_cli
from ask_expert_ros.bench import patches_cli
from ask_expert_ros.core.data import digits
from ask_expert_ros.core.demo import DemoConfig, format_table, run_demo
from ask_expert_ros.core.errors import AskExpertError
from ask_expert_ros.core.inference.routing import CONFIDENCE_METHODS
from ask_expert_ros.core.inference.taxonomy import num_experts, resolve_scheme
from ask_expert_ros.field.cli import register as register_field
from ask_expert_ros.patch_training_cli import register as register_patch_training
from ask_expert_ros.planning_cli import register as register_planning
from ask_expert_ros.runtime import cli as runtime_cli


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(',') if t.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f'expected comma-separated numbers, got {text!r}'
        ) from exc


def _cmd_demo(args: argparse.Namespace) -> int:
    config = DemoConfig(
        out_dir=args.out,
        taus=args.tau,
        k=args.k,
        confidence=args.confidence,
        edge_epochs=args.edge_epochs,
        generalist_epochs=args.generalist_epochs,
        expert_epochs=args.expert_epochs,
        seed=args.seed,
        threads=args.threads,
    )
    from ask_expert_ros.core.inference.backends import backend_factory

    factory = backend_factory(args.backend, args.precision)
    report = run_demo(config, progress=not args.quiet, backend_factory=factory)
    print(format_table(report))
    if args.live_tau is not None:
        from ask_expert_ros.dds.live import run_live  # needs cyclonedds

        data = digits(seed=args.seed)
        live = run_live(
            Path(report['models']['zoo']),
            data.test_images,
            data.test_labels,
            data.class_names,
            tau=args.live_tau,
            log_dir=Path(args.out) / 'logs',
        )
        report['live'] = live
        (Path(args.out) / 'report.json').write_text(json.dumps(report, indent=2) + '\n')
        lat = live['latency_ms']
        print(
            f'live, edge + expert processes over Cyclone DDS at tau={live["tau"]:.2f}: '
            f'{live["results"]}/{live["frames_sent"]} frames answered, accuracy '
            f'{live["accuracy"]:.2%}, offload {live["offload_ratio"]:.1%}, camera->result '
            f'latency p50 {lat["p50"]:.1f} ms, p95 {lat["p95"]:.1f} ms, max {lat["max"]:.1f} ms'
        )
    print(f'report: {Path(args.out) / "report.json"}')
    return 0


def _overrides(pairs: Sequence[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition('=')
        if not sep:
            raise ValueError(f'--set expects name=value, got {pair!r}')
        out[name.strip()] = yaml.safe_load(value)
    return out


def _node_command(args: argparse.Namespace, node: str) -> int:
    from ask_expert_ros.core.nodes.node_config import EDGE_PARAMS, EXPERT_PARAMS
    from ask_expert_ros.dds import app, security

    overrides = _overrides(args.set)
    if args.library:
        overrides['library'] = str(args.library)
    specs = EDGE_PARAMS if node == 'edge' else EXPERT_PARAMS
    values = app.node_values(specs, node, args.params_file, overrides)
    remaps = dict(_remap(r) for r in args.remap)
    secure = security.request_from(node, args.security_keystore, args.enclave)
    return app.run_node(
        node,
        values,
        args.domain,
        args.loopback,
        args.namespace,
        remaps,
        secure,
        app.WARN_AFTER_S if args.warn_no_peer_after is None else args.warn_no_peer_after,
        args.ros_distro,
    )


def _security_arguments(parser: argparse.ArgumentParser, node: str) -> None:
    """``--security-keystore``/``--enclave``, without importing the DDS adapter here."""
    parser.add_argument(
        '--security-keystore',
        type=Path,
        default=None,
        metavar='DIR',
        help='SROS2 keystore: authenticate, apply its permissions and encrypt with DDS '
        'Security, or refuse to start (docs/security.md); default: the ROS_SECURITY_* '
        'variables as rcl reads them',
    )
    parser.add_argument(
        '--enclave',
        default=None,
        help=f'enclave in the keystore (default /ask_expert/{node})',
    )


def _remap(text: str) -> tuple[str, str]:
    old, sep, new = text.partition(':=')
    if not sep or not old or not new:
        raise ValueError(f'--remap expects from:=to, got {text!r}')
    return old, new


def _cmd_edge(args: argparse.Namespace) -> int:
    return _node_command(args, 'edge')


def _cmd_expert(args: argparse.Namespace) -> int:
    return _node_command(args, 'expert')


def _cmd_partitions(args: argparse.Namespace) -> int:
    scheme = resolve_scheme(args.scheme)
    keys = scheme.expert_keys(args.k)
    summary = {
        'name': scheme.name,
        'classes': scheme.num_classes,
        'subsets': {
            s: [scheme.class_names[c] for c in scheme.classes_of_subset(s)]
            for s in range(1, scheme.num_subsets + 1)
        },
        'k': args.k,
        'num_experts': num_experts(scheme.num_subsets, args.k),
        'expert_keys': [list(key) for key in keys],
    }
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from ask_expert_ros.core.inference.taxonomy import parse_key
    from ask_expert_ros.core.training.recipe import RecipeConfig, init_distributed, run_recipe

    config = RecipeConfig.from_file(args.config, _overrides(args.set))
    joined = init_distributed()
    try:
        summary = run_recipe(
            config,
            args.out,
            keys=[parse_key(k) for k in args.keys] or None,
            device=args.device,
            progress=not args.quiet,
            evaluate=not args.no_eval,
        )
    finally:
        if joined:
            import torch.distributed as dist

            dist.destroy_process_group()
    if 'manifest' in summary:
        print(f'model zoo: {summary["manifest"]}')
        if summary['missing_keys']:
            print(f'experts still missing for keys: {", ".join(summary["missing_keys"])}')
    if 'eval' in summary:
        print((Path(args.out) / 'eval.md').read_text(encoding='utf-8'))
    return 0


def _cmd_experiment(args: argparse.Namespace) -> int:
    from ask_expert_ros.core.training.experiment import ExperimentConfig, run_experiment

    config = ExperimentConfig.from_file(args.config)
    run_experiment(config, args.out, progress=not args.quiet)
    print((Path(args.out) / 'results.md').read_text(encoding='utf-8'))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ask_expert_ros.core.evaluation.recipe_eval import evaluate_zoo, write_report
    from ask_expert_ros.core.training.datasets import load_dataset

    data = load_dataset(args.dataset, seed=args.seed)
    report = evaluate_zoo(args.models, data, taus=args.tau)
    json_path, md_path = write_report(report, args.out or args.models)
    print(md_path.read_text(encoding='utf-8'))
    print(f'report: {json_path}')
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='ask-expert', description='Edge/near-edge ViT co-inference (Ask the Expert).'
    )
    parser.add_argument('--version', action='version', version=f'%(prog)s {__version__}')
    parser.add_argument('-v', '--verbose', action='store_true', help='log at INFO level')
    sub = parser.add_subparsers(dest='command', required=True)

    demo = sub.add_parser(
        'demo', help='train on the built-in digits and sweep tau through the co-inference engine'
    )
    demo.add_argument(
        '--out',
        type=Path,
        default=Path('demo_out'),
        help='output directory for the model zoo and report.json',
    )
    demo.add_argument(
        '--tau',
        type=_floats,
        default=(0.99, 0.9, 0.8, 0.7, 0.6, 0.5),
        help="comma-separated thresholds to sweep (default: the paper's)",
    )
    demo.add_argument('--k', type=int, default=2, help='Top-k of the router (default 2)')
    demo.add_argument(
        '--confidence',
        choices=CONFIDENCE_METHODS,
        default='max_softmax',
        help='confidence score compared with tau',
    )
    demo.add_argument('--edge-epochs', type=int, default=15)
    demo.add_argument('--generalist-epochs', type=int, default=15)
    demo.add_argument('--expert-epochs', type=int, default=4)
    demo.add_argument('--seed', type=int, default=0)
    demo.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    demo.add_argument('--quiet', action='store_true', help='no progress bars')
    runtime_cli.add_backend_arguments(demo)
    demo.add_argument(
        '--live-tau',
        type=float,
        default=0.8,
        help='then run edge and expert as processes over DDS at this tau (default 0.8)',
    )
    demo.add_argument(
        '--no-live', dest='live_tau', action='store_const', const=None, help='skip the live run'
    )
    demo.set_defaults(func=_cmd_demo)

    for name, helptext in (
        ('edge', 'run the edge node over Cyclone DDS (no ROS install needed)'),
        ('expert', 'run the expert node over Cyclone DDS (no ROS install needed)'),
    ):
        node = sub.add_parser(name, help=helptext)
        node.add_argument('--library', type=Path, help='expert library (library.yaml or dir)')
        node.add_argument(
            '--params-file',
            type=Path,
            default=None,
            help=f'ROS 2 params YAML (section {name!r}), e.g. config/{name}.yaml',
        )
        node.add_argument(
            '--set',
            action='append',
            default=[],
            metavar='NAME=VALUE',
            help='override one parameter (repeatable), e.g. --set tau=0.6',
        )
        node.add_argument('--domain', type=int, default=0, help='DDS domain id (ROS_DOMAIN_ID)')
        node.add_argument('--namespace', default='', help='ROS namespace of the topics')
        node.add_argument(
            '--remap',
            '-r',
            action='append',
            default=[],
            metavar='FROM:=TO',
            help='rename a topic as ros2 run -r does, e.g. expert/requests:=/expert/requests',
        )
        node.add_argument(
            '--loopback',
            action='store_true',
            help='keep DDS traffic on 127.0.0.1 (both nodes on one machine)',
        )
        node.add_argument(
            '--warn-no-peer-after',
            type=float,
            default=None,
            metavar='SECONDS',
            help=f'log a warning when no {"expert" if name == "edge" else "edge"} has matched '
            'on expert/requests after this long (default 5): domain, topic and Cyclone '
            'config to check',
        )
        node.add_argument(
            '--ros-distro',
            choices=('humble', 'jazzy'),
            default=None,
            help="announce the node on ros_discovery_info in this distro's format, so "
            'ros2 node list shows it (gids of 24 bytes in Humble, 16 from Jazzy on); '
            'default $ROS_DISTRO, else jazzy',
        )
        _security_arguments(node, name)
        node.set_defaults(func=_cmd_edge if name == 'edge' else _cmd_expert)

    train = sub.add_parser(
        'train',
        help="train the paper's recipe (teachers, pruned students, experts) into a model zoo",
        description='Resumable: run the same command again to continue a killed run. '
        'Multi-GPU: torchrun --nproc_per_node N -m ask_expert_ros.cli train ...',
    )
    train.add_argument(
        '--config', type=Path, required=True, help='recipe YAML, e.g. config/recipe_digits.yaml'
    )
    train.add_argument('--out', type=Path, required=True, help='model zoo directory')
    train.add_argument(
        '--keys',
        nargs='*',
        default=[],
        metavar='KEY',
        help='train only these expert keys, e.g. --keys 1 1,3 (default: all)',
    )
    train.add_argument(
        '--set',
        action='append',
        default=[],
        metavar='NAME=VALUE',
        help='override a recipe setting, dotted for stages: --set stages.teacher.epochs=5',
    )
    train.add_argument('--device', default=None, help='cpu, cuda, cuda:1 (default: CUDA if any)')
    train.add_argument('--no-eval', action='store_true', help='skip the evaluation at the end')
    train.add_argument('--quiet', action='store_true', help='no progress bars')
    train.set_defaults(func=_cmd_train)

    experiment = sub.add_parser(
        'experiment',
        help='the recipe over several seeds and partition schemes, summarised with spreads',
    )
    experiment.add_argument(
        '--config',
        type=Path,
        required=True,
        help='experiment YAML, e.g. config/experiment_fashion_mnist.yaml',
    )
    experiment.add_argument('--out', type=Path, required=True, help='output directory')
    experiment.add_argument('--quiet', action='store_true', help='no progress bars')
    experiment.set_defaults(func=_cmd_experiment)

    evaluate = sub.add_parser(
        'evaluate', help='evaluate a model zoo: Top-k, experts on target/overall, tau sweep'
    )
    evaluate.add_argument('--models', type=Path, required=True, help='zoo directory')
    evaluate.add_argument(
        '--dataset', default='digits', help='data set spec, e.g. cifar100:/data/cifar-100-python'
    )
    evaluate.add_argument('--seed', type=int, default=0, help='split seed (digits, folders)')
    evaluate.add_argument('--tau', type=_floats, default=(0.99, 0.9, 0.8, 0.7, 0.6, 0.5))
    evaluate.add_argument('--out', type=Path, default=None, help='default: the zoo directory')
    evaluate.set_defaults(func=_cmd_evaluate)

    parts = sub.add_parser('partitions', help='show a partition scheme and its expert keys')
    parts.add_argument(
        'scheme', help='built-in name (cifar100_s8, digits_s4, ...), file.yaml or file.yaml:SCHEME'
    )
    parts.add_argument('--k', type=int, default=2)
    parts.set_defaults(func=_cmd_partitions)
    bag_commands.register(sub)
    register_planning(sub)
    register_patch_training(sub)
    runtime_cli.register(sub)
    bench_cli.register(sub)
    patches_cli.register(sub)
    register_field(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format='%(levelname)s %(name)s: %(message)s',
    )
    try:
        return int(args.func(args))
    except (AskExpertError, ValueError, OSError) as exc:
        print(f'ask-expert: error: {exc}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
