"""``ask-expert make-bag`` and ``ask-expert bench`` (entry-point layer)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

_PAPER_TAUS = (0.99, 0.9, 0.8, 0.7, 0.6, 0.5)
_STORAGES = ('mcap', 'sqlite3')
_ENCODINGS = ('rgb8', 'bgr8', 'mono8', 'rgba8', 'bgra8')
_COMPRESSIONS = ('jpeg', 'png')
_SELECTIONS = ('attention', 'random', 'centre')


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(t) for t in text.split(',') if t.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f'expected comma-separated numbers, got {text!r}'
        ) from exc
    if not values:
        raise argparse.ArgumentTypeError('give at least one number')
    return values


def _names(allowed: tuple[str, ...]) -> Any:
    """An argparse type: comma-separated names, each one of ``allowed``."""

    def parse(text: str) -> tuple[str, ...]:
        names = tuple(t.strip() for t in text.split(',') if t.strip())
        wrong = [n for n in names if n not in allowed]
        if wrong or not names:
            raise argparse.ArgumentTypeError(
                f'expected comma-separated names among {", ".join(allowed)}, got {text!r}'
            )
        return names

    return parse


def _cmd_make_bag(args: argparse.Namespace) -> int:
    from ask_expert_ros.bags.writer import BagWriteConfig, make_bag
    from ask_expert_ros.core.training.datasets import load_dataset

    data = load_dataset(args.dataset, seed=args.seed)
    images = data.test_images if args.split == 'test' else data.train_images
    labels = data.test_labels if args.split == 'test' else data.train_labels
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError(f'--limit must be >= 1, got {args.limit}')
        images, labels = images[: args.limit], labels[: args.limit]
    config = BagWriteConfig(
        storage=args.storage,
        encoding=args.encoding,
        compressed=args.compressed,
        jpeg_quality=args.jpeg_quality,
        rate_hz=args.rate,
        topic=args.topic,
        label_topic=None if args.no_labels else args.label_topic,
        frame_id=args.frame_id,
    )
    out = make_bag(args.out, images, None if args.no_labels else labels, data.class_names, config)
    kind = f'CompressedImage ({args.compressed})' if args.compressed else 'Image'
    truth = 'no ground truth' if args.no_labels else f'ground truth on {args.label_topic}'
    print(
        f'{out}: {len(images)} frames of {args.dataset} ({args.split}) as {kind} on '
        f'{args.topic} at {args.rate:g} Hz, {truth}, storage {args.storage}'
    )
    return 0


def _print_offline(report: dict[str, Any]) -> None:
    what = 'acc' if report['metric'] == 'accuracy' else 'agree'
    print(f'{report["frames"]} frames, {report["metric"]}: {report["metric_note"]}')
    # frame mode alone prints as it always did; patch rows add their configuration
    patches = any(row.get('offload', 'frame') != 'frame' for row in report['sweep'])
    extra = f' {"bytes/offl":>10} {"offload":<26}' if patches else ''
    print(
        f'{"tau":>5} {"alpha":>6} {what + "_spec":>10} {what + "_gen":>9} {"bytes/fr":>9} '
        f'{"lat_ms/B":>9} {"E_J/fr":>7}{extra}'
    )
    for row in report['sweep']:
        gen = row.get('generalist_co_inference_accuracy')
        more = (
            f' {row["request_bytes_per_offloaded_frame"]:10.0f} {row["offload_label"]:<26}'
            if patches
            else ''
        )
        print(
            f'{row["tau"]:5.2f} {row["offload_ratio"]:6.1%} {row["co_inference_accuracy"]:10.2%} '
            f'{"-" if gen is None else f"{gen:.2%}":>9} {row["bytes_offloaded_per_frame"]:9.0f} '
            f'{row["latency_ms"]:9.1f} {row["energy_j"]:7.3f}{more}'
        )


def _cmd_bench(args: argparse.Namespace) -> int:
    from ask_expert_ros.bags.bench import REPORT_NAME, bench_bag, live_bench
    from ask_expert_ros.core.evaluation.benchmark import BenchConfig, offload_configs

    offloads = offload_configs(
        args.offload, args.keep_ratio, args.attention_mass, args.selection, args.attention_source
    )
    if args.live:
        if len(args.tau) != 1:
            raise ValueError('--live runs at one threshold: give one --tau value')
        if len(offloads) != 1:
            raise ValueError(
                '--live runs one offload configuration: give one --offload mode and at '
                'most one --keep-ratio / --attention-mass and --selection'
            )
        report = live_bench(
            args.bag,
            args.models,
            args.tau[0],
            args.out,
            args.topic,
            args.label_topic,
            args.limit,
            rate_hz=args.rate,
            deadline_ms=args.deadline_ms,
            offload=offloads[0],
            transport=args.transport or 'raw',
            jpeg_quality=args.jpeg_quality,
        )
        live = report['live']
        lat = live['latency_ms'] or {}
        acc = live['accuracy']
        print(
            f'live at tau={live["tau"]:.2f}: {live["results"]}/{live["frames_sent"]} frames '
            f'answered ({live["dropped"]} dropped), offload {live["offload_ratio"]:.1%}, '
            f'accuracy {"-" if acc is None else f"{acc:.2%}"}, camera->result p50 '
            f'{lat.get("p50", float("nan")):.1f} ms, p95 {lat.get("p95", float("nan")):.1f} ms'
            + (
                f', {live["offload"]["offload_label"]}'
                if live['offload']['offload'] != 'frame'
                else ''
            )
        )
    else:
        config = BenchConfig(
            taus=args.tau,
            batch_size=args.batch,
            edge_device=args.edge_device,
            expert_device=args.expert_device,
            rtt_ms=args.rtt_ms,
            bandwidth_mbps=args.bandwidth_mbps,
            frame_rate_hz=args.frame_rate,
            offloads=offloads,
            transport=args.transport,
            jpeg_quality=args.jpeg_quality,
        )
        report = bench_bag(
            args.bag, args.models, config, args.out, args.topic, args.label_topic, args.limit
        )
        _print_offline(report)
    skipped = report.get('bag', report.get('live', {}).get('bag', {})).get('skipped', 0)
    if skipped:
        print(f'{skipped} corrupt or unusable messages skipped (reasons in the report)')
    print(f'report: {Path(args.out) / REPORT_NAME}')
    return 0


def register(subparsers: Any) -> None:
    """Add ``make-bag`` and ``bench`` to the ``ask-expert`` sub-commands."""
    make = subparsers.add_parser(
        'make-bag', help='write a labelled data set as a rosbag2 folder (camera + ground truth)'
    )
    make.add_argument('--dataset', default='digits', help='digits, cifar100:DIR, folder:DIR, ...')
    make.add_argument('--split', choices=('test', 'train'), default='test')
    make.add_argument('--seed', type=int, default=0, help='split seed (digits, flat folders)')
    make.add_argument('--out', type=Path, required=True, help='bag folder to create')
    make.add_argument('--storage', choices=_STORAGES, default='mcap')
    make.add_argument(
        '--encoding',
        choices=_ENCODINGS,
        default=None,
        help='sensor_msgs/Image encoding (default: mono8 for grey, rgb8 for colour)',
    )
    make.add_argument(
        '--compressed', choices=_COMPRESSIONS, default=None, help='write CompressedImage instead'
    )
    make.add_argument('--jpeg-quality', type=int, default=90)
    make.add_argument('--rate', type=float, default=30.0, help='camera rate in Hz (stamps)')
    make.add_argument('--topic', default='/image', help='camera topic')
    make.add_argument('--label-topic', default='/ground_truth', help='ground-truth topic')
    make.add_argument('--no-labels', action='store_true', help='write no ground truth')
    make.add_argument('--frame-id', default='camera')
    make.add_argument('--limit', type=int, default=None, help='first N frames only')
    make.set_defaults(func=_cmd_make_bag)

    bench = subparsers.add_parser(
        'bench',
        help='replay a camera bag: accuracy, offload, bytes, latency and energy across tau',
        description='Offline: the engine in this process over every tau, report.json and '
        'plots. --live: the bag through edge and expert processes over Cyclone DDS.',
    )
    bench.add_argument('--bag', type=Path, required=True, help='rosbag2 folder')
    bench.add_argument('--topic', default=None, help='camera topic (default: the only one)')
    bench.add_argument(
        '--label-topic',
        default=None,
        help='vision_msgs/Classification ground truth (default: the only one; "" for none)',
    )
    bench.add_argument('--models', type=Path, required=True, help='zoo library.yaml or folder')
    bench.add_argument('--tau', type=_floats, default=_PAPER_TAUS, help='comma-separated')
    bench.add_argument('--out', type=Path, default=Path('bench_out'), help='output folder')
    bench.add_argument('--limit', type=int, default=None, help='first N frames only')
    bench.add_argument('--batch', type=int, default=10, help='frames per batch B (paper: 10)')
    bench.add_argument('--edge-device', default='orin_nano', help='profile name or YAML')
    bench.add_argument('--expert-device', default='agx_orin', help='profile name or YAML')
    bench.add_argument('--rtt-ms', type=float, default=5.0, help='link round trip, ms')
    bench.add_argument('--bandwidth-mbps', type=float, default=100.0, help='link, Mbit/s')
    bench.add_argument(
        '--frame-rate', type=float, default=30.0, help='camera rate for offload Mbit/s'
    )
    bench.add_argument(
        '--offload',
        type=_names(('frame', 'patches')),
        default=('frame',),
        help='offload modes, comma-separated: frame (whole frames), patches (the patches '
        'the edge attended to); frame,patches runs both',
    )
    bench.add_argument(
        '--keep-ratio',
        type=_floats,
        default=None,
        help='patches: keep ratios rho to sweep, comma-separated (default 0.5)',
    )
    bench.add_argument(
        '--attention-mass',
        type=_floats,
        default=None,
        help='patches: attention masses m to sweep (attention selection only)',
    )
    bench.add_argument(
        '--selection',
        type=_names(_SELECTIONS),
        default=('attention',),
        help='patches: selection methods to sweep: attention, random, centre (baselines)',
    )
    bench.add_argument(
        '--attention-source',
        choices=('last', 'rollout'),
        default='last',
        help="patches: the edge's attention of the last block or rollout over all blocks",
    )
    bench.add_argument(
        '--transport',
        choices=('raw', 'compressed'),
        default=None,
        help='how requests carry pixels (default: as recorded offline, raw --live)',
    )
    bench.add_argument(
        '--jpeg-quality', type=int, default=90, help='JPEG quality of --transport compressed'
    )
    bench.add_argument(
        '--live', action='store_true', help='run edge and expert processes over DDS'
    )
    bench.add_argument(
        '--rate',
        type=float,
        default=None,
        help="--live: publish at this many Hz (default: the bag stamps' spacing)",
    )
    bench.add_argument('--deadline-ms', type=float, default=500.0, help='--live: edge deadline')
    bench.set_defaults(func=_cmd_bench)
